"""The proxy: HTTPS API and web app, SSH jump host, routing to nodes."""

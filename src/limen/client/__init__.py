"""The client library: profile on disk, trust in the proxy, API calls, SSH dialing."""

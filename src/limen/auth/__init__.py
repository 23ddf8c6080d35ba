"""Authentication: certificate authorities, signing, login, join, the auth server."""

"""Session recordings as asciicast v2 files written through to disk, and their upload
to the auth service: shared by whoever records a session (the node today)."""

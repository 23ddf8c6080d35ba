"""The node's SSH service: the server and its connections (authentication through
limen.sshauth), session channels and their contexts, the permit policy, and what a session
runs (launch) with the gate that follows file-transfer protocols."""

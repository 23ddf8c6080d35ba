"""Port forwarding on the node: local (``ssh -L``), remote (``ssh -R``) and the rules
that judge a destination by the address the node would connect to."""

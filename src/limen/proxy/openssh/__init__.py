"""Agentless OpenSSH nodes at the proxy: the proxy ends the user's SSH for them.

A stock sshd runs no Limen code, so the proxy does what a Limen node does for its
sessions. The jump host hands a channel to such a node to ``front.OpenSSHFront``, an
SSH server inside the proxy that presents a host certificate for the node's name (from
the cluster's host CA, so the user's ``@cert-authority`` line verifies it) and accepts
the same user certificates the jump hop did. Each session channel is relayed by
``relay.SessionRelay``: roles and locks are checked, a certificate for that user and
login is obtained from the auth service (``link.AuthLink``, as the proxy's identity),
``upstream.dial_sshd`` logs in to the sshd only after it proved, with a host certificate
from the cluster's host CA for that node's registered key, that it is that node; the
output is recorded (asciicast, the same store) and the session audited. ``health``
checks each node's certificate in the background for ``limen ls``.
"""

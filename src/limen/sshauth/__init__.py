"""One SSH authentication path for every Limen SSH server.

The node, the proxy's jump host and the tunnel server all authenticate certificates,
and the proxy checks a node's host certificate before it sends a user there. They share:

- ``cert``: one reader that turns a certificate's wire bytes into one facts record
  (``CertFacts``: type, serial, key id, principals, validity, critical options, every
  extension including Limen's own), after the CA signature has been checked;
- ``judge``: the decisions on top of those facts, for user certificates (logins) and
  host certificates (nodes and proxies), each refusal a sentence a person can act on;
- ``server``: the one way Limen hooks asyncssh's public-key authentication
  (``CertAuthServer``), which hands the raw certificate to the judge and lets asyncssh do
  the cryptography (proof of possession, permit-* enforcement).
"""

from limen.sshauth.cert import (
    CERT_TYPE_HOST,
    CERT_TYPE_USER,
    CertFacts,
    TrustedKeys,
    read_certificate,
)
from limen.sshauth.judge import judge_host, judge_user
from limen.sshauth.server import Accepted, CertAuthServer

__all__ = [
    "CERT_TYPE_HOST",
    "CERT_TYPE_USER",
    "Accepted",
    "CertAuthServer",
    "CertFacts",
    "TrustedKeys",
    "judge_host",
    "judge_user",
    "read_certificate",
]

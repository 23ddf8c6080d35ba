"""Decisions about certificates, each refusal a sentence a person can act on.

``judge_user`` is what the node and the jump host ask about a user certificate;
``judge_host`` is what the tunnel server asks about a node agent and what the proxy asks
about a node before sending a user to it. Both are pure: the caller passes the clock's
"now" and the revocation check, so tests and every server decide the same way.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from datetime import datetime

from limen.errors import AccessDenied
from limen.sshauth.cert import CertFacts, TrustedKeys

# Returns why a certificate may no longer be used (a removed node, ...), or None.
Revoked = Callable[[CertFacts], str | None]


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def _check_window(cert: CertFacts, now: datetime, what: str) -> None:
    if now < cert.valid_after:
        raise AccessDenied(f"the {what} is not valid before {_when(cert.valid_after)}")
    if now >= cert.valid_before:
        raise AccessDenied(f"the {what} expired at {_when(cert.valid_before)}")


def judge_user(
    cert: CertFacts,
    login: str,
    trusted: TrustedKeys,
    now: datetime,
    peer_host: str | None,
    *,
    key_id_logs_in: bool = False,
    cluster: str | None = None,
    revoked: Revoked | None = None,
) -> str:
    """The principal a user certificate logs in as, for the SSH user name ``login``.

    ``key_id_logs_in``: the jump host also accepts the Limen user name (the key id) as
    the SSH user name, and then checks the first login principal.
    """
    if not cert.is_user:
        raise AccessDenied("a host certificate cannot be used to log in")
    if cert.signing_key not in trusted:
        raise AccessDenied(
            "the certificate is not signed by this cluster's user CA (an untrusted "
            f"certificate authority, {cert.ca_fingerprint}); log in with limen login"
        )
    if cluster is not None and cert.cluster not in (None, cluster):
        raise AccessDenied(f"the certificate belongs to cluster {cert.cluster}, not {cluster}")
    _check_window(cert, now, "certificate")
    # An empty principal list would let a certificate pass as anyone (OpenSSH refuses it).
    if not cert.principals:
        raise AccessDenied("the certificate names no logins (principals)")
    if cert.source_addresses and not _source_allowed(cert.source_addresses, peer_host):
        raise AccessDenied(f"the certificate may not be used from {peer_host or 'here'}")
    if revoked is not None and (reason := revoked(cert)):
        raise AccessDenied(reason)
    if login in cert.principals:
        return login
    if key_id_logs_in:
        if login == cert.key_id:
            return cert.principals[0]
        raise AccessDenied(
            f"'{login}' is neither the certificate's user ({cert.key_id}) nor one of its "
            f"logins ({', '.join(cert.principals)})"
        )
    allowed = ", ".join(cert.principals)
    raise AccessDenied(f"the certificate does not allow login as {login!r} (it allows: {allowed})")


def judge_host(
    cert: CertFacts,
    host_cas: TrustedKeys,
    now: datetime,
    *,
    cluster: str,
    role: str = "node",
    expected_id: str | None = None,
    revoked: Revoked | None = None,
) -> str:
    """The host id (key id) a host certificate proves, for a host of ``role``.

    The key id is the node's id, chosen by the auth service: a name or an address is
    not enough, since a node chooses its own name and principals include it.
    """
    if not cert.is_host:
        raise AccessDenied("a user certificate was offered where a host certificate belongs")
    if cert.signing_key not in host_cas:
        raise AccessDenied("the host certificate is not signed by this cluster's host CA")
    if cert.role != role:
        raise AccessDenied(f"the host certificate is not a {role}'s (role@limen is {cert.role!r})")
    if cert.cluster != cluster:
        raise AccessDenied(f"the host certificate belongs to cluster {cert.cluster!r}, "
                           f"not {cluster}")
    _check_window(cert, now, "host certificate")
    if not cert.key_id or cert.key_id not in cert.principals:
        raise AccessDenied("the host certificate names no host id")
    if expected_id is not None and cert.key_id != expected_id:
        raise AccessDenied(
            f"the host certificate is {cert.key_id}'s, not {expected_id}'s"
        )
    if revoked is not None and (reason := revoked(cert)):
        raise AccessDenied(reason)
    return cert.key_id


def _source_allowed(networks: tuple[str, ...], peer_host: str | None) -> bool:
    if not peer_host:
        return False
    try:
        addr = ipaddress.ip_address(peer_host)
    except ValueError:
        return False
    for net in networks:
        try:
            if addr in ipaddress.ip_network(net, strict=False):
                return True
        except ValueError:
            continue
    return False

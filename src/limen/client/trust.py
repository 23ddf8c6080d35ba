"""Trusting the proxy's HTTPS certificate through the cluster's X.509 CA.

Nodes and people often reach the proxy by IP address, so the chain is checked
against the pinned or stored CA and the host name is not.
"""

from __future__ import annotations

import functools
import ssl

from limen.errors import AccessDenied, BadParameter


def pin_of(ca_pem: str) -> str:
    # Imported here: `limen proxy tls` needs this module's contexts and not cryptography
    # (or hashlib), whose import ssh would wait for before its first byte.
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    cert = x509.load_pem_x509_certificate(ca_pem.encode())
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def normalize_pin(pin: str) -> str:
    value = pin.strip().lower()
    if not value.startswith("sha256:") or len(value) != 7 + 64:
        raise BadParameter(
            "a CA pin looks like sha256:<64 hex digits> (limen tokens add prints it)"
        )
    return value


def check_pin(ca_pem: str, pin: str) -> None:
    if pin_of(ca_pem) != normalize_pin(pin):
        raise AccessDenied(
            "the proxy's CA does not match the pin you gave: it is "
            f"{pin_of(ca_pem)}; refusing to continue (someone may be intercepting the connection)"
        )


def verifying_context(ca_pem: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca_pem)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


@functools.lru_cache(maxsize=16)
def shared_verifying_context(ca_pem: str, alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
    """One context per CA (and ALPN list) for the process, for callers that connect
    again and again: making one costs about 0.7 ms of CPU, a cost a node reconnecting
    its tunnel paid at every try. Callers must not change it."""
    ctx = verifying_context(ca_pem)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def insecure_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx

"""TLS to identity providers: verified, against the system's CAs or the connector's own."""

from __future__ import annotations

import ssl

from limen.errors import BadParameter


def client_context(ca_file: str | None, verify: bool = True) -> ssl.SSLContext:
    """A client context that checks the certificate chain and the host name."""
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise BadParameter(f"cannot load the CA file {ca_file}: {exc}") from None
    if not verify:  # an operator's explicit choice for a lab directory (tls_verify: false)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context

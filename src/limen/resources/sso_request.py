"""A sign-in through an OpenID Connect provider while it is under way.

Kept in the cluster's store, not in one proxy's memory, so the provider's redirect may
reach any proxy of the cluster. The record is named by the ``state`` sent to the
provider and lives a few minutes; its one-time exchange code is stored only as a
SHA-256, and the record is deleted when the code is redeemed.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from limen.resources.base import Resource


class SSORequestSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    connector: str
    nonce: str  # sent to the provider; its ID token must carry it back
    code_verifier: str  # PKCE (RFC 7636): only its S256 hash went to the provider
    public_key: str  # the OpenSSH key the certificate will certify
    client_callback: str  # the CLI's one-time http://127.0.0.1:PORT/..., or the web's page
    client_nonce_hash: str  # SHA-256 of a secret only the CLI knows
    ttl: str | None = None
    remote_addr: str = ""
    # A web sign-in: the proxy's key pair and client nonce, sealed under a token only the
    # browser's cookie holds (limen.auth.web_sso). Empty for the CLI.
    web_seal: str = ""
    # Set by the first redirect from the provider: a replayed one finds it taken.
    claimed: bool = False
    # Set once the provider answered: the certificate is ready to be redeemed.
    exchange_hash: str = ""
    result: dict[str, object] | None = None


class SSORequest(Resource):
    KIND = "sso_request"
    spec: SSORequestSpec

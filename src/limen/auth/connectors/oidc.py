"""An OIDC connector: the authorization URL it sends people to, and what it makes of
the provider's answer (code -> tokens -> checked ID token -> claims -> identity).

Authorization code flow with PKCE (RFC 7636, S256), a ``state`` that names the sign-in
and a ``nonce`` the ID token must carry back.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any
from urllib.parse import urlencode

from limen.auth.connectors.identity import ExternalIdentity
from limen.auth.connectors.mapping import as_strings, offered, roles_from_claims, traits_from
from limen.auth.connectors.oidc_provider import ProviderClient
from limen.auth.connectors.secrets import read_secret
from limen.clock import Clock
from limen.durations import parse_duration
from limen.errors import AccessDenied
from limen.resources.connector import OIDCConnector


def pkce_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class Providers:
    """One client (and so one cache of discovery and keys) per issuer and CA file."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._clients: dict[tuple[str, str | None, float], ProviderClient] = {}

    def for_connector(self, connector: OIDCConnector) -> ProviderClient:
        spec = connector.spec
        timeout = parse_duration(spec.timeout).total_seconds()
        key = (spec.issuer_url, spec.ca_file, timeout)
        if key not in self._clients:
            self._clients[key] = ProviderClient(spec.issuer_url, spec.ca_file, timeout,
                                                self._clock)
        return self._clients[key]


class OIDCSignIn:
    def __init__(self, connector: OIDCConnector, provider: ProviderClient) -> None:
        self.connector = connector
        self.spec = connector.spec
        self.provider = provider

    async def authorization_url(self, state: str, nonce: str, verifier: str) -> str:
        meta = await self.provider.metadata()
        params = {
            "response_type": "code",
            "client_id": self.spec.client_id,
            "redirect_uri": self.spec.redirect_url,
            "scope": " ".join(self.spec.scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": pkce_challenge(verifier),
            "code_challenge_method": "S256",
        }
        endpoint = meta["authorization_endpoint"]
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(params)}"

    async def finish(self, code: str, nonce: str, verifier: str) -> ExternalIdentity:
        secret = read_secret(self.spec.client_secret,
                             f"connector {self.connector.name}: client_secret")
        tokens = await self.provider.exchange(code, verifier, self.spec.redirect_url,
                                              self.spec.client_id, secret)
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise AccessDenied("the identity provider answered without an ID token")
        claims = await self.provider.check_id_token(id_token, self.spec.client_id, nonce)
        if self.spec.userinfo:
            claims = await self._with_userinfo(claims, tokens.get("access_token"))
        return self.identity(claims)

    async def _with_userinfo(self, claims: dict[str, Any], access_token: Any) -> dict[str, Any]:
        if not isinstance(access_token, str):
            return claims
        info = await self.provider.userinfo(access_token)
        if not info:
            return claims
        # OpenID Connect Core 5.3.2: userinfo about another subject must not be used.
        if info.get("sub") != claims["sub"]:
            raise AccessDenied("the provider's user info is about another subject")
        return {**info, **claims}

    def identity(self, claims: dict[str, Any]) -> ExternalIdentity:
        names = as_strings(claims.get(self.spec.username_claim))
        if len(names) != 1 or not names[0]:
            raise AccessDenied(f"the ID token has no single {self.spec.username_claim!r} claim "
                               "to name the user by (the connector's username_claim)")
        roles, decided = roles_from_claims(self.spec.claims_to_roles, claims)
        return ExternalIdentity(
            connector=self.connector.name, connector_kind="oidc", username=names[0],
            subject=str(claims["sub"]), roles=roles,
            traits=traits_from(self.spec.traits, claims), decided_by=decided,
            offered=offered(claims, [m.claim for m in self.spec.claims_to_roles]),
        )

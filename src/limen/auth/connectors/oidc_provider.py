"""One OpenID Connect provider as a relying party sees it: its discovery document and
signing keys (cached, refreshed when it rotates them), the code exchange, and the checks
an ID token must pass before anything it says is believed.

Signatures are verified by PyJWT (with cryptography). Its time checks are switched off
and done here instead, against the auth service's injectable clock: PyJWT reads the
wall clock, and the tests move Limen's clock to see an expired token refused.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import jwt

from limen.auth.connectors.tls import client_context
from limen.clock import Clock
from limen.errors import AccessDenied, ConnectionProblem

log = logging.getLogger(__name__)

DISCOVERY_TTL = timedelta(hours=1)
JWKS_TTL = timedelta(hours=1)
# Clock skew allowed between Limen and the provider, as most relying parties allow.
LEEWAY = timedelta(seconds=60)
# Asymmetric signatures only: an HS* token is signed with the client secret, which the
# provider and every other holder of the secret share, and "none" is no signature at all.
ALLOWED_ALGS = frozenset({
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
})
REQUIRED_CLAIMS = ("iss", "sub", "aud", "exp", "iat")


@dataclass
class _Cached:
    value: dict[str, Any] = field(default_factory=dict)
    fetched: datetime | None = None

    def fresh(self, now: datetime, ttl: timedelta) -> bool:
        return self.fetched is not None and now - self.fetched < ttl


class ProviderClient:
    """Talks to one issuer; shared by every connector that names it."""

    def __init__(self, issuer: str, ca_file: str | None, timeout: float, clock: Clock) -> None:
        self.issuer = issuer
        self._ca_file = ca_file
        self._timeout = timeout
        self._clock = clock
        self._discovery = _Cached()
        self._jwks = _Cached()
        self._lock = asyncio.Lock()

    # -- HTTP --------------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(verify=client_context(self._ca_file), timeout=self._timeout)

    async def _fetch_json(self, method: str, url: str, what: str, **kwargs: Any) -> Any:
        try:
            async with self._http() as http:
                response = await http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise ConnectionProblem(
                f"cannot reach the identity provider {self.issuer} for its {what}: "
                f"{_reason(exc)}") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_error:
            detail = _provider_error(body) or f"HTTP {response.status_code}"
            raise AccessDenied(f"the identity provider refused the {what}: {detail}")
        if not isinstance(body, dict):
            raise ConnectionProblem(f"the identity provider's {what} is not a JSON object")
        return body

    # -- discovery and keys ------------------------------------------------------------

    async def metadata(self) -> dict[str, Any]:
        async with self._lock:
            if not self._discovery.fresh(self._clock.now(), DISCOVERY_TTL):
                url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
                doc = await self._fetch_json("GET", url, "discovery document")
                # OpenID Connect Discovery 4.3: the document must name this very issuer.
                if doc.get("issuer") != self.issuer:
                    raise AccessDenied(
                        f"the discovery document at {url} names issuer {doc.get('issuer')!r}, "
                        f"not {self.issuer!r}")
                for needed in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                    if not isinstance(doc.get(needed), str):
                        raise ConnectionProblem(f"the discovery document has no {needed}")
                self._discovery = _Cached(doc, self._clock.now())
            return self._discovery.value

    async def _key_set(self, refresh: bool) -> dict[str, Any]:
        async with self._lock:
            if refresh or not self._jwks.fresh(self._clock.now(), JWKS_TTL):
                uri = self._discovery.value["jwks_uri"]
                keys = await self._fetch_json("GET", uri, "signing keys (JWKS)")
                self._jwks = _Cached(keys, self._clock.now())
            return self._jwks.value

    async def signing_key(self, kid: str | None, alg: str) -> jwt.PyJWK:
        """The provider's key for this token; an unknown kid refetches the keys once
        (the provider rotated them), and is refused if still unknown."""
        await self.metadata()
        for refresh in (False, True):
            found = _pick(await self._key_set(refresh), kid, alg)
            if found is not None:
                return found
            log.info("identity provider %s: key %s not in the cached keys; fetching them",
                     self.issuer, kid)
        raise AccessDenied(f"the ID token is signed with a key the provider does not publish "
                           f"(kid {kid!r})")

    # -- the code flow -----------------------------------------------------------------

    async def exchange(self, code: str, verifier: str, redirect_url: str, client_id: str,
                       secret: str) -> dict[str, Any]:
        meta = await self.metadata()
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_url,
                "code_verifier": verifier}
        methods = meta.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        auth = None
        if "client_secret_basic" in methods:
            auth = httpx.BasicAuth(_form_encode(client_id), _form_encode(secret))
        else:
            form |= {"client_id": client_id, "client_secret": secret}
        return await self._fetch_json("POST", meta["token_endpoint"], "authorization code",
                                       data=form, auth=auth,
                                       headers={"accept": "application/json"})

    async def userinfo(self, access_token: str) -> dict[str, Any]:
        meta = await self.metadata()
        url = meta.get("userinfo_endpoint")
        if not isinstance(url, str) or not access_token:
            return {}
        return await self._fetch_json("GET", url, "user info",
                                      headers={"authorization": f"Bearer {access_token}"})

    async def check_id_token(self, token: str, client_id: str, nonce: str) -> dict[str, Any]:
        """The ID token's claims once signature, issuer, audience, times and nonce pass."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AccessDenied("the ID token is malformed") from None
        alg = str(header.get("alg", ""))
        if alg not in ALLOWED_ALGS:
            raise AccessDenied(f"the ID token's signature algorithm {alg!r} is not accepted")
        key = await self.signing_key(header.get("kid"), alg)
        claims = _decode(token, key, alg, client_id, self.issuer)
        self._check_times(claims)
        aud = claims["aud"]
        # OpenID Connect Core 3.1.3.7: with several audiences, azp must be this client.
        if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != client_id:
            raise AccessDenied("the ID token was issued to another client (azp)")
        if not hmac.compare_digest(str(claims.get("nonce", "")), nonce):
            raise AccessDenied("the ID token's nonce does not match this sign-in")
        return claims

    def _check_times(self, claims: dict[str, Any]) -> None:
        now = self._clock.now().timestamp()
        leeway = LEEWAY.total_seconds()
        if not isinstance(claims["exp"], int | float) or claims["exp"] + leeway < now:
            raise AccessDenied("the ID token has expired")
        if not isinstance(claims["iat"], int | float) or claims["iat"] - leeway > now:
            raise AccessDenied("the ID token was issued in the future (check the clocks)")
        nbf = claims.get("nbf")
        if isinstance(nbf, int | float) and nbf - leeway > now:
            raise AccessDenied("the ID token is not valid yet")


def _decode(token: str, key: jwt.PyJWK, alg: str, client_id: str,
            issuer: str) -> dict[str, Any]:
    options: dict[str, Any] = {"verify_exp": False, "verify_iat": False, "verify_nbf": False,
                               "require": list(REQUIRED_CLAIMS)}
    try:
        return jwt.decode(token, key.key, algorithms=[alg], audience=client_id, issuer=issuer,
                          options=options)
    except jwt.InvalidSignatureError:
        raise AccessDenied("the ID token's signature does not verify") from None
    except jwt.InvalidAudienceError:
        raise AccessDenied("the ID token was issued to another client (audience)") from None
    except jwt.InvalidIssuerError:
        raise AccessDenied("the ID token was issued by another issuer") from None
    except jwt.MissingRequiredClaimError as exc:
        raise AccessDenied(f"the ID token lacks the claim {exc.claim!r}") from None
    except jwt.PyJWTError as exc:
        raise AccessDenied(f"the ID token is not valid: {exc}") from None


def _pick(jwks: dict[str, Any], kid: str | None, alg: str) -> jwt.PyJWK | None:
    candidates = []
    for entry in jwks.get("keys", []):
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        if kid is not None and entry.get("kid") != kid:
            continue
        try:
            candidates.append(jwt.PyJWK(entry, algorithm=alg))
        except jwt.PyJWTError:
            continue
    # Without a kid, only an unambiguous key set will do.
    return candidates[0] if len(candidates) == 1 or (candidates and kid) else None


def _form_encode(value: str) -> str:
    # RFC 6749 2.3.1: client id and secret are form-encoded before Basic authentication.
    from urllib.parse import quote_plus

    return quote_plus(value)


def _provider_error(body: Any) -> str:
    if isinstance(body, dict) and body.get("error"):
        text = str(body.get("error"))
        if body.get("error_description"):
            text += f" ({str(body['error_description'])[:200]})"
        return text
    return ""


def _reason(exc: Exception) -> str:
    text = str(exc)
    if "mismatch" in text and ("Hostname" in text or "IP address" in text):
        return "its TLS certificate is for another host name"
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "its TLS certificate does not verify (set the connector's ca_file?)"
    return text or type(exc).__name__

"""Identity connectors: an OpenID Connect provider or an LDAP directory that says who
someone is, and mappings from what it says (claims, groups) to Limen roles and traits.

A connector never holds a secret: the client secret and the bind password are named by
where they live (``{file: PATH}`` or ``{env: NAME}``) and read by the auth service when it
needs them, so ``limen get`` and backups of the store show no secret.
"""

from __future__ import annotations

import json
import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from limen.durations import parse_duration
from limen.errors import BadParameter
from limen.resources.base import Resource

_TRAIT = re.compile(r"^[A-Za-z0-9_:-]+$")
CONNECTOR_KINDS = ("oidc", "ldap")


class SecretSource(BaseModel):
    """Where a secret lives: a file (first line) or an environment variable of `limen start`."""

    model_config = ConfigDict(extra="forbid")

    file: str | None = None
    env: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _not_inline(cls, value: object) -> object:
        if isinstance(value, str):
            raise ValueError(
                "a secret is never stored in the resource: give {file: PATH} or {env: NAME}"
            )
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretSource:
        if (self.file is None) == (self.env is None):
            raise ValueError("give exactly one of file or env")
        return self

    def describe(self) -> str:
        return f"file {self.file}" if self.file else f"environment variable {self.env}"


class ClaimMapping(BaseModel):
    """People whose claim `claim` holds `value` (exact, glob or ^regex$) get `roles`."""

    model_config = ConfigDict(extra="forbid")

    claim: str = Field(min_length=1)
    value: str = Field(min_length=1)
    roles: list[str] = Field(min_length=1)

    _value_ok = field_validator("value")(lambda v: _pattern_compiles(v))


class GroupMapping(BaseModel):
    """Members of `group` (its name or its DN; exact, glob or ^regex$) get `roles`."""

    model_config = ConfigDict(extra="forbid")

    group: str = Field(min_length=1)
    roles: list[str] = Field(min_length=1)

    _group_ok = field_validator("group")(lambda v: _pattern_compiles(v))


def _pattern_compiles(value: str) -> str:
    if value.startswith("^") and value.endswith("$"):
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"{value!r} is not a valid regular expression ({exc})") from None
    return value


def _traits_named_well(value: dict[str, str]) -> dict[str, str]:
    for trait in value:
        if not _TRAIT.match(trait):
            raise ValueError(f"trait {trait!r}: use letters, digits, '_', ':' or '-'")
    return value


def _duration(value: str) -> str:
    try:
        parse_duration(value)
    except BadParameter as exc:
        raise ValueError(exc.message) from None
    return value


class ConnectorCommon(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Shown on the sign-in page's button and by limen login; the name when empty.
    display: str = Field(default="", max_length=100)
    # The connector `limen login --auth` uses when none is named (at most one per cluster
    # is expected; with several, the first by name).
    default: bool = False
    # Trait name -> claim (OIDC) or attribute (LDAP) whose values become that trait;
    # `logins` feeds {{internal.logins}} in roles.
    traits: dict[str, str] = Field(default_factory=dict)
    # A CA bundle (PEM) for the provider's TLS certificate; the system's CAs when unset.
    ca_file: str | None = None
    timeout: str = "10s"

    _traits_ok = field_validator("traits")(lambda v: _traits_named_well(v))
    _timeout_ok = field_validator("timeout")(lambda v: _duration(v))


class OIDCSpec(ConnectorCommon):
    issuer_url: str
    client_id: str = Field(min_length=1)
    client_secret: SecretSource
    # The proxy's callback as registered with the provider:
    # https://PROXY_HOST:3080/v1/sso/oidc/callback
    redirect_url: str
    scopes: list[str] = Field(default_factory=lambda: ["openid", "email", "profile"])
    # The claim whose value is the Limen user name (letters, digits, '.', '_', '@', '-').
    username_claim: str = "email"
    claims_to_roles: list[ClaimMapping] = Field(min_length=1)
    # Also read the provider's userinfo endpoint (claims some providers keep out of the
    # ID token); the ID token's own claims win where both say something.
    userinfo: bool = True

    @field_validator("issuer_url", "redirect_url")
    @classmethod
    def _https(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"{value!r} must be an https:// URL")
        # Kept exactly as written: the ID token's iss must equal it (some issuers, such
        # as Auth0's, end in a slash).
        return value

    @field_validator("scopes")
    @classmethod
    def _openid_first(cls, value: list[str]) -> list[str]:
        return ["openid", *[s for s in value if s != "openid"]]


class UserSearch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_dn: str = Field(min_length=1)
    # {username} is replaced by the name typed, escaped as RFC 4515 asks.
    filter: str = "(&(objectClass=person)(uid={username}))"

    _has_placeholder = field_validator("filter")(lambda v: _needs(v, "{username}"))


class GroupSearch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_dn: str = Field(min_length=1)
    # {dn} is the user's DN and {username} the name typed, both escaped.
    filter: str = "(&(objectClass=groupOfNames)(member={dn}))"
    name_attribute: str = "cn"


def _needs(value: str, placeholder: str) -> str:
    if placeholder not in value:
        raise ValueError(f"the filter must contain {placeholder}")
    return value


class LDAPSpec(ConnectorCommon):
    # ldaps://HOST:636, or ldap://HOST:389 with start_tls: true. Passwords never cross the
    # network in clear: plain ldap:// without StartTLS is refused.
    url: str
    start_tls: bool = False
    # Verify the directory's certificate and name (on by default; off only for a lab).
    tls_verify: bool = True
    bind_dn: str = Field(min_length=1)
    bind_password: SecretSource
    user_search: UserSearch
    # Groups from a search; without one, from the user's memberOf attribute.
    group_search: GroupSearch | None = None
    groups_to_roles: list[GroupMapping] = Field(min_length=1)
    # The local TOTP code as a second factor after the directory password.
    second_factor: Literal["none", "totp"] = "none"

    @model_validator(mode="after")
    def _encrypted(self) -> LDAPSpec:
        parts = urlsplit(self.url)
        if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
            raise ValueError(f"url {self.url!r} must be ldaps://HOST[:PORT] or ldap://HOST[:PORT]")
        if parts.scheme == "ldap" and not self.start_tls:
            raise ValueError("ldap:// sends passwords in clear: use ldaps:// or start_tls: true")
        if parts.scheme == "ldaps" and self.start_tls:
            raise ValueError("start_tls is for ldap:// URLs; ldaps:// is TLS already")
        return self


class OIDCConnector(Resource):
    KIND = "oidc"
    spec: OIDCSpec


class LDAPConnector(Resource):
    KIND = "ldap"
    spec: LDAPSpec


Connector = OIDCConnector | LDAPConnector


class AnyConnector:
    """Reads a stored connector as the model its kind names (one store, names unique
    across kinds, so `limen login --auth NAME` never has to ask which kind)."""

    KIND = "connector"
    MODELS: dict[str, type[OIDCConnector] | type[LDAPConnector]] = {
        "oidc": OIDCConnector, "ldap": LDAPConnector,
    }

    @classmethod
    def from_bytes(cls, data: bytes, revision: str = "") -> Connector:
        kind = json.loads(data).get("kind", "")
        return cls.MODELS[kind].from_bytes(data, revision)

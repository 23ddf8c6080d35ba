"""What every connector hands back: one person as the provider describes them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ExternalIdentity:
    connector: str
    connector_kind: str  # oidc or ldap
    username: str  # the Limen user name
    subject: str  # the provider's own id (OIDC sub, LDAP DN)
    roles: list[str]  # from the connector's mapping; may be empty
    traits: dict[str, list[str]] = field(default_factory=dict)
    # The claims (or groups) that matched a mapping: what the audit log shows.
    decided_by: dict[str, list[str]] = field(default_factory=dict)
    # What the provider said that could have matched, for a refusal's audit event.
    offered: dict[str, list[str]] = field(default_factory=dict)

"""AccessChecker: may this identity do that? Deny wins, nothing is allowed by default."""

from __future__ import annotations

from datetime import timedelta

from limen.durations import parse_duration
from limen.errors import AccessDenied
from limen.rbac.labels import selector_matches
from limen.rbac.templates import expand
from limen.resources.role import Role, RoleConditions


def _rule_matches(conditions: RoleConditions, kind: str, verb: str) -> bool:
    return any(
        (kind in rule.resources or "*" in rule.resources)
        and (verb in rule.verbs or "*" in rule.verbs)
        for rule in conditions.rules
    )


class AccessChecker:
    """Answers questions about a set of roles and the user's traits."""

    def __init__(self, roles: list[Role], traits: dict[str, list[str]] | None = None) -> None:
        self.roles = roles
        self.traits = traits or {}

    @property
    def role_names(self) -> list[str]:
        return [r.name for r in self.roles]

    def logins(self) -> list[str]:
        """Allowed logins after template expansion, minus every denied one."""
        denied = {
            login
            for role in self.roles
            for entry in role.spec.deny.logins
            for login in expand(entry, self.traits)
        }
        allowed: list[str] = []
        for role in self.roles:
            for entry in role.spec.allow.logins:
                for login in expand(entry, self.traits):
                    if login not in denied and login not in allowed:
                        allowed.append(login)
        return allowed

    def can_access_node(self, labels: dict[str, str]) -> bool:
        """Some role's node_labels match and no role's deny node_labels do."""
        if any(selector_matches(r.spec.deny.node_labels, labels) for r in self.roles):
            return False
        return any(selector_matches(r.spec.allow.node_labels, labels) for r in self.roles)

    def check_node_login(self, node_name: str, labels: dict[str, str], login: str) -> None:
        """Raise AccessDenied unless this identity may log in as `login` on the node."""
        if not self.can_access_node(labels):
            raise AccessDenied(f"your roles do not allow access to node {node_name}")
        if login not in self.logins():
            raise AccessDenied(f"your roles do not allow the login {login!r} on node {node_name}")

    def max_session_ttl(self) -> timedelta | None:
        """Shortest max_session_ttl across roles (None when there are no roles)."""
        ttls = [parse_duration(r.spec.options.max_session_ttl) for r in self.roles]
        return min(ttls) if ttls else None

    def disconnect_expired_cert(self) -> bool:
        return any(r.spec.options.disconnect_expired_cert for r in self.roles)

    def forward_agent(self) -> bool:
        return any(r.spec.options.forward_agent for r in self.roles)

    def port_forwarding(self) -> bool:
        return any(r.spec.options.port_forwarding not in (False, []) for r in self.roles)

    def check_rule(self, kind: str, verb: str) -> None:
        """Raise AccessDenied unless some role allows `verb` on `kind` and none denies it."""
        for role in self.roles:
            if _rule_matches(role.spec.deny, kind, verb):
                raise AccessDenied(f"role {role.name!r} denies {verb} on {kind}")
        if not any(_rule_matches(role.spec.allow, kind, verb) for role in self.roles):
            roles = ", ".join(self.role_names) or "none"
            raise AccessDenied(
                f"you may not {verb} {kind} resources: no role allows it (your roles: {roles})"
            )

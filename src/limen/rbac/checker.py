"""AccessChecker: may this identity do that? Deny wins, nothing is allowed by default.

Pure: the caller loads the current roles and traits; nothing here does I/O.
Options combine across roles the way Teleport's do: the strictest limit wins for
TTLs, idle timeouts and session counts; forwarding is allowed if any role allows it;
file copy only if every role allows it.
"""

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

    # -- logins and nodes ------------------------------------------------------------

    def _expanded(self, conditions: str) -> list[tuple[str, str]]:
        return [
            (role.name, login)
            for role in self.roles
            for entry in getattr(role.spec, conditions).logins
            for login in expand(entry, self.traits)
        ]

    def logins(self) -> list[str]:
        """Allowed logins after template expansion, minus every denied one."""
        denied = {login for _, login in self._expanded("deny")}
        allowed: list[str] = []
        for _, login in self._expanded("allow"):
            if login not in denied and login not in allowed:
                allowed.append(login)
        return allowed

    def can_access_node(self, labels: dict[str, str]) -> bool:
        """Some role's node_labels match and no role's deny node_labels do."""
        if any(selector_matches(r.spec.deny.node_labels, labels) for r in self.roles):
            return False
        return any(selector_matches(r.spec.allow.node_labels, labels) for r in self.roles)

    def check_node_login(self, node_name: str, labels: dict[str, str], login: str) -> None:
        """Raise AccessDenied (naming the reason) unless `login` is allowed on the node."""
        for role in self.roles:
            if selector_matches(role.spec.deny.node_labels, labels):
                raise AccessDenied(f"role {role.name!r} denies access to node {node_name}")
        for role_name, denied in self._expanded("deny"):
            if denied == login:
                raise AccessDenied(f"role {role_name!r} denies the login {login!r}")
        granting = [
            r for r in self.roles
            if selector_matches(r.spec.allow.node_labels, labels)
            and any(login in expand(entry, self.traits) for entry in r.spec.allow.logins)
        ]
        if granting:
            return
        if not self.can_access_node(labels):
            raise AccessDenied(
                f"your roles ({', '.join(self.role_names) or 'none'}) do not allow access "
                f"to node {node_name}"
            )
        raise AccessDenied(f"your roles do not allow the login {login!r} on node {node_name}")

    # -- options -----------------------------------------------------------------------

    def max_session_ttl(self) -> timedelta | None:
        """Shortest max_session_ttl across roles (None when there are no roles)."""
        ttls = [parse_duration(r.spec.options.max_session_ttl) for r in self.roles]
        return min(ttls) if ttls else None

    def client_idle_timeout(self) -> timedelta | None:
        values = [
            parse_duration(r.spec.options.client_idle_timeout)
            for r in self.roles
            if r.spec.options.client_idle_timeout
        ]
        return min(values) if values else None

    def disconnect_expired_cert(self) -> bool:
        return any(r.spec.options.disconnect_expired_cert for r in self.roles)

    def forward_agent(self) -> bool:
        return any(r.spec.options.forward_agent for r in self.roles)

    def port_forwarding(self) -> bool | list[str]:
        """Local forwarding (ssh -L): True if any role allows every destination; else the
        union of the roles' destination patterns; else False."""
        values = [r.spec.options.forwarding().local for r in self.roles]
        if any(v is True for v in values):
            return True
        globs = [g for v in values if isinstance(v, list) for g in v]
        return list(dict.fromkeys(globs)) if globs else False

    def remote_port_forwarding(self) -> bool:
        """Remote forwarding (ssh -R): allowed if any role allows it."""
        return any(r.spec.options.forwarding().remote for r in self.roles)

    def any_port_forwarding(self) -> bool:
        """What the certificate's permit-port-forwarding says: some direction is allowed."""
        return bool(self.port_forwarding()) or self.remote_port_forwarding()

    def file_copy(self) -> bool:
        return bool(self.roles) and all(r.spec.options.ssh_file_copy for r in self.roles)

    def max_sessions(self) -> int:
        """Lowest max_sessions per connection; 0 means no limit."""
        values = [r.spec.options.max_sessions for r in self.roles if r.spec.options.max_sessions]
        return min(values) if values else 0

    def record_session(self) -> str:
        modes = {r.spec.options.record_session for r in self.roles}
        return "strict" if "strict" in modes else "best_effort"

    def options_summary(self) -> dict[str, object]:
        ttl = self.max_session_ttl()
        idle = self.client_idle_timeout()
        return {
            "max_session_ttl": str(ttl) if ttl else None,
            "client_idle_timeout": str(idle) if idle else None,
            "forward_agent": self.forward_agent(),
            "port_forwarding": self.port_forwarding(),
            "remote_port_forwarding": self.remote_port_forwarding(),
            "ssh_file_copy": self.file_copy(),
            "disconnect_expired_cert": self.disconnect_expired_cert(),
            "max_sessions": self.max_sessions(),
            "record_session": self.record_session(),
        }

    # -- resource rules ----------------------------------------------------------------

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

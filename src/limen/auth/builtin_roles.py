"""The roles every cluster starts with; ordinary roles that admins may edit later."""

from __future__ import annotations

from limen.resources.role import RESOURCE_KINDS, Role


def access() -> Role:
    return Role.model_validate(
        {
            "metadata": {"name": "access", "description": "SSH access to every node"},
            "spec": {
                "allow": {
                    "logins": ["{{internal.logins}}"],
                    "node_labels": {"*": "*"},
                    "rules": [{"resources": ["node"], "verbs": ["list", "read"]}],
                },
                "options": {"forward_agent": True, "port_forwarding": True},
            },
        }
    )


def editor() -> Role:
    return Role.model_validate(
        {
            "metadata": {"name": "editor", "description": "manage every resource"},
            "spec": {"allow": {"rules": [{"resources": list(RESOURCE_KINDS), "verbs": ["*"]}]}},
        }
    )


def auditor() -> Role:
    return Role.model_validate(
        {
            "metadata": {"name": "auditor", "description": "read events, sessions, "
                         "recordings; watch or moderate sessions"},
            "spec": {
                "allow": {
                    "rules": [
                        {"resources": ["event", "session", "recording"], "verbs": ["list", "read"]}
                    ],
                    # As Teleport's auditor preset: watch and moderate anyone's sessions.
                    "join_sessions": [{"name": "auditor oversight", "roles": ["*"],
                                       "kinds": ["*"], "modes": ["observer", "moderator"]}],
                }
            },
        }
    )


def admin_role() -> Role:
    """Held only by the data dir's admin identity; never stored."""
    return Role.model_validate(
        {
            "metadata": {"name": "admin"},
            "spec": {"allow": {"rules": [{"resources": ["*"], "verbs": ["*"]}]}},
        }
    )


def all_builtin() -> list[Role]:
    return [access(), editor(), auditor()]

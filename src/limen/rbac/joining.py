"""Who may join whose session, and in which mode (Teleport role v7's join_sessions).

A joiner's rule applies to a session when one of the owner's roles is among the rule's
``roles`` ("*": any) and the session's kind among its ``kinds``. Modes allowed by some
applying allow rule, minus every mode of an applying deny rule: deny wins. Pure: the
caller loads both users' roles.
"""

from __future__ import annotations

from limen.errors import AccessDenied
from limen.rbac.checker import AccessChecker
from limen.resources.session_policy import JOIN_MODES, JoinSessionRule, RequireSessionJoin


def _applies(rule: JoinSessionRule, owner_roles: list[str], kind: str) -> bool:
    roles_match = "*" in rule.roles or any(role in rule.roles for role in owner_roles)
    return roles_match and ("*" in rule.kinds or kind in rule.kinds)


def join_modes(joiner: AccessChecker, owner_roles: list[str], kind: str = "ssh") -> list[str]:
    """The modes the joiner may use in a session of someone holding ``owner_roles``."""
    allowed = {mode for role in joiner.roles for rule in role.spec.allow.join_sessions
               if _applies(rule, owner_roles, kind) for mode in rule.modes}
    denied = {mode for role in joiner.roles for rule in role.spec.deny.join_sessions
              if _applies(rule, owner_roles, kind) for mode in rule.modes}
    return [mode for mode in JOIN_MODES if mode in allowed - denied]


def check_join(joiner: AccessChecker, owner: str, owner_roles: list[str], mode: str,
               kind: str = "ssh") -> None:
    """Raise AccessDenied, in a sentence for the joiner, unless ``mode`` is allowed."""
    if mode not in JOIN_MODES:
        raise AccessDenied(f"{mode!r} is not a join mode: use {', '.join(JOIN_MODES)}")
    for role in joiner.roles:
        for rule in role.spec.deny.join_sessions:
            if _applies(rule, owner_roles, kind) and mode in rule.modes:
                raise AccessDenied(f"role {role.name!r} denies joining {owner}'s sessions "
                                   f"as {mode}")
    modes = join_modes(joiner, owner_roles, kind)
    if mode in modes:
        return
    if modes:
        raise AccessDenied(f"your roles let you join {owner}'s sessions only as "
                           f"{' or '.join(modes)}, not as {mode}")
    raise AccessDenied(f"your roles ({', '.join(joiner.role_names) or 'none'}) do not allow "
                       f"joining {owner}'s sessions (no join_sessions rule covers them)")


def moderation(owner: AccessChecker, kind: str = "ssh") -> list[RequireSessionJoin]:
    """The owner's requirements for moderators present in a session of ``kind``."""
    return [policy for role in owner.roles for policy in role.spec.allow.require_session_join
            if "*" in policy.kinds or kind in policy.kinds]

"""join_sessions and require_session_join: pure decisions, deny wins, and roles that say
anything else are refused when saved, by field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from limen.errors import AccessDenied
from limen.rbac import AccessChecker
from limen.rbac.joining import check_join, join_modes, moderation
from limen.resources import Role


def role(name: str, allow: dict[str, Any] | None = None,
         deny: dict[str, Any] | None = None) -> Role:
    return Role.model_validate({"metadata": {"name": name},
                                "spec": {"allow": allow or {}, "deny": deny or {}}})


def rule(roles: list[str], modes: list[str], kinds: list[str] | None = None) -> dict[str, Any]:
    return {"name": "r", "roles": roles, "modes": modes, **({"kinds": kinds} if kinds else {})}


@pytest.mark.parametrize(
    ("allow", "deny", "owner_roles", "expected"),
    [
        ([], [], ["dev"], []),
        ([rule(["dev"], ["observer"])], [], ["dev"], ["observer"]),
        ([rule(["dev"], ["observer"])], [], ["ops"], []),
        ([rule(["*"], ["observer", "peer"])], [], ["ops"], ["observer", "peer"]),
        ([rule(["*"], ["observer", "peer"])], [rule(["ops"], ["peer"])], ["ops"], ["observer"]),
        ([rule(["*"], ["moderator"])], [rule(["*"], ["moderator"])], ["x"], []),
        ([rule(["dev"], ["peer"], ["*"])], [], ["dev", "ops"], ["peer"]),
    ],
)
def test_modes_are_allowed_minus_denied(allow: list[dict[str, Any]], deny: list[dict[str, Any]],
                                        owner_roles: list[str], expected: list[str]) -> None:
    joiner = AccessChecker([role("j", {"join_sessions": allow}, {"join_sessions": deny})])
    assert join_modes(joiner, owner_roles) == expected


def test_refusals_say_why() -> None:
    observer = AccessChecker([role("watch", {"join_sessions": [rule(["dev"], ["observer"])]})])
    check_join(observer, "alice", ["dev"], "observer")
    with pytest.raises(AccessDenied, match="only as observer, not as peer"):
        check_join(observer, "alice", ["dev"], "peer")
    with pytest.raises(AccessDenied, match=r"do not allow joining alice's sessions"):
        check_join(AccessChecker([role("plain")]), "alice", ["dev"], "observer")
    with pytest.raises(AccessDenied, match="is not a join mode"):
        check_join(observer, "alice", ["dev"], "root")
    denier = AccessChecker([
        role("watch", {"join_sessions": [rule(["*"], ["observer", "peer"])]}),
        role("nope", deny={"join_sessions": [rule(["dev"], ["peer"])]}),
    ])
    with pytest.raises(AccessDenied, match="role 'nope' denies joining alice's sessions as peer"):
        check_join(denier, "alice", ["dev"], "peer")


def test_moderation_policies_and_filters() -> None:
    owner = AccessChecker([role("prod", {"require_session_join": [
        {"name": "four-eyes", "filter": 'contains(user.spec.roles, "auditor") || '
                                        'equals(user.metadata.name, "carol")',
         "kinds": ["ssh"], "count": 2, "modes": ["moderator"], "on_leave": "pause"},
    ]})])
    [policy] = moderation(owner)
    assert (policy.count, policy.on_leave) == (2, "pause")
    assert policy.admits("bob", ["auditor"])
    assert policy.admits("carol", [])
    assert not policy.admits("bob", ["dev"])
    assert moderation(AccessChecker([role("plain")])) == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"allow": {"join_sessions": [{"name": "x", "roles": ["*"], "modes": ["root"]}]}},
         "modes"),
        ({"allow": {"join_sessions": [{"name": "x", "roles": [], "modes": ["peer"]}]}},
         "roles"),
        ({"allow": {"join_sessions": [{"name": "x", "roles": ["*"], "modes": ["peer"],
                                       "kinds": ["k8s"]}]}}, "kinds"),
        ({"allow": {"require_session_join": [{"name": "x", "filter": "true"}]}},
         "is not understood"),
        ({"allow": {"require_session_join": [{"name": "x", "count": 0}]}}, "count"),
        ({"allow": {"require_session_join": [{"name": "x", "on_leave": "ignore"}]}},
         "on_leave"),
        ({"allow": {"require_session_join": [{"name": "x", "modes": ["observer"]}]}},
         "modes"),
        ({"deny": {"require_session_join": [{"name": "x"}]}}, "belongs under allow"),
    ],
)
def test_bad_sharing_rules_are_refused_by_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Role.model_validate({"metadata": {"name": "bad"}, "spec": spec})

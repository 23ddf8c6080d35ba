"""Table-driven tests of the AccessChecker: pure decisions, no I/O."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from limen.errors import AccessDenied
from limen.rbac import AccessChecker
from limen.rbac.labels import selector_matches
from limen.rbac.templates import expand
from limen.resources import Role


def role(name: str, allow: dict[str, Any] | None = None, deny: dict[str, Any] | None = None,
         options: dict[str, Any] | None = None) -> Role:
    return Role.model_validate(
        {"metadata": {"name": name},
         "spec": {"allow": allow or {}, "deny": deny or {}, "options": options or {}}}
    )


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({"*": "*"}, {}, True),
        ({"*": "*"}, {"env": "prod"}, True),
        ({}, {"env": "prod"}, False),
        ({"env": "prod"}, {"env": "prod"}, True),
        ({"env": "prod"}, {"env": "dev"}, False),
        ({"env": "prod"}, {}, False),
        ({"env": ["dev", "staging"]}, {"env": "staging"}, True),
        ({"env": "prod", "team": "web"}, {"env": "prod"}, False),
        ({"env": "prod", "team": "web"}, {"env": "prod", "team": "web"}, True),
        ({"host": "web-*"}, {"host": "web-12"}, True),
        ({"host": "web-*"}, {"host": "db-1"}, False),
        ({"host": "^db-[0-9]+$"}, {"host": "db-42"}, True),
        ({"host": "^db-[0-9]+$"}, {"host": "db-x"}, False),
        ({"env": "*"}, {"env": "anything"}, True),
    ],
)
def test_label_selectors(selector: dict, labels: dict, expected: bool) -> None:
    assert selector_matches(selector, labels) is expected


@pytest.mark.parametrize(
    ("entry", "traits", "expected"),
    [
        ("root", {}, ["root"]),
        ("{{internal.logins}}", {"logins": ["alice", "ops"]}, ["alice", "ops"]),
        ("{{internal.logins}}", {}, []),
        ("{{external.unix}}", {"unix": ["u1"]}, ["u1"]),
        ("{{email.local(external.email)}}", {"email": ["bob@example.com"]}, ["bob"]),
        ("{{email.local(external.email)}}", {"email": ["not-an-email"]}, []),
        ("{{nonsense}}", {"logins": ["x"]}, []),
    ],
)
def test_login_templates(entry: str, traits: dict, expected: list[str]) -> None:
    assert expand(entry, traits) == expected


def test_nothing_is_allowed_by_default() -> None:
    checker = AccessChecker([role("empty")])
    assert checker.logins() == []
    assert not checker.can_access_node({"env": "dev"})
    with pytest.raises(AccessDenied):
        checker.check_rule("user", "list")


def test_deny_beats_allow_for_logins_nodes_and_rules() -> None:
    allow = role("allow", allow={"logins": ["root", "web"], "node_labels": {"*": "*"},
                                  "rules": [{"resources": ["*"], "verbs": ["*"]}]})
    deny = role("deny", deny={"logins": ["root"], "node_labels": {"env": "prod"},
                               "rules": [{"resources": ["user"], "verbs": ["delete"]}]})
    checker = AccessChecker([allow, deny])
    assert checker.logins() == ["web"]
    assert checker.can_access_node({"env": "dev"})
    assert not checker.can_access_node({"env": "prod"})
    with pytest.raises(AccessDenied, match="role 'deny' denies delete on user"):
        checker.check_rule("user", "delete")
    checker.check_rule("user", "list")
    with pytest.raises(AccessDenied, match="denies the login 'root'"):
        checker.check_node_login("n1", {"env": "dev"}, "root")
    with pytest.raises(AccessDenied, match="denies access to node n1"):
        checker.check_node_login("n1", {"env": "prod"}, "web")


def test_a_login_must_come_from_a_role_that_matches_the_node() -> None:
    dev = role("dev", allow={"logins": ["dev"], "node_labels": {"env": "dev"}})
    prod = role("prod", allow={"logins": ["prodops"], "node_labels": {"env": "prod"}})
    checker = AccessChecker([dev, prod])
    checker.check_node_login("d1", {"env": "dev"}, "dev")
    with pytest.raises(AccessDenied, match="login 'prodops'"):
        checker.check_node_login("d1", {"env": "dev"}, "prodops")
    with pytest.raises(AccessDenied, match="do not allow access to node s1"):
        checker.check_node_login("s1", {"env": "staging"}, "dev")


def test_traits_feed_logins() -> None:
    access = role("access", allow={"logins": ["{{internal.logins}}"], "node_labels": {"*": "*"}})
    checker = AccessChecker([access], {"logins": ["alice"]})
    assert checker.logins() == ["alice"]
    assert AccessChecker([access], {}).logins() == []


@pytest.mark.parametrize(
    ("options_a", "options_b", "method", "expected"),
    [
        ({"max_session_ttl": "8h"}, {"max_session_ttl": "2h"}, "max_session_ttl",
         timedelta(hours=2)),
        ({"client_idle_timeout": "15m"}, {"client_idle_timeout": "5m"}, "client_idle_timeout",
         timedelta(minutes=5)),
        ({}, {}, "client_idle_timeout", None),
        ({"forward_agent": True}, {"forward_agent": False}, "forward_agent", True),
        ({"port_forwarding": False}, {"port_forwarding": True}, "port_forwarding", True),
        ({"port_forwarding": ["db:5432"]}, {"port_forwarding": ["*:80"]}, "port_forwarding",
         ["db:5432", "*:80"]),
        ({"port_forwarding": False}, {"port_forwarding": False}, "port_forwarding", False),
        ({"ssh_file_copy": True}, {"ssh_file_copy": False}, "file_copy", False),
        ({"disconnect_expired_cert": False}, {"disconnect_expired_cert": True},
         "disconnect_expired_cert", True),
        ({"max_sessions": 10}, {"max_sessions": 3}, "max_sessions", 3),
        ({}, {}, "max_sessions", 0),
        ({"record_session": "best_effort"}, {"record_session": "strict"}, "record_session",
         "strict"),
    ],
)
def test_options_combine_across_roles(options_a: dict, options_b: dict, method: str,
                                      expected: Any) -> None:
    checker = AccessChecker([role("a", options=options_a), role("b", options=options_b)])
    assert getattr(checker, method)() == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"options": {"require_session_mfa": "sometimes"}}, "require_session_mfa"),
        ({"options": {"max_session_ttl": "forever"}}, "max_session_ttl"),
        ({"options": {"max_sessions": 0}}, "max_sessions"),
        ({"allow": {"logins": ["{{internal.logins"]}}, "logins"),
        ({"allow": {"node_labels": {"host": "^db-[$"}}}, "node_labels"),
        ({"allow": {"rules": [{"resources": ["spaceship"], "verbs": ["list"]}]}}, "resources"),
        ({"allow": {"rules": [{"resources": ["user"], "verbs": ["fly"]}]}}, "verbs"),
        ({"alow": {}}, "alow"),
    ],
)
def test_invalid_roles_are_refused(spec: dict, message: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        Role.model_validate({"metadata": {"name": "bad"}, "spec": spec})

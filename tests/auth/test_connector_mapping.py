"""Claims and groups to roles and traits: the pure part of every connector."""

from __future__ import annotations

from limen.auth.connectors.mapping import (
    as_strings,
    roles_from_claims,
    roles_from_groups,
    traits_from,
)
from limen.resources.connector import ClaimMapping, GroupMapping


def test_claim_values_of_every_shape_become_strings() -> None:
    assert as_strings("ops") == ["ops"]
    assert as_strings(["ops", 7, True]) == ["ops", "7", "true"]
    assert as_strings({"nested": "no"}) == []
    assert as_strings([["nested"], "flat"]) == ["flat"]
    assert as_strings(None) == []


def test_mappings_match_exact_glob_and_regex_and_add_up() -> None:
    mappings = [
        ClaimMapping(claim="groups", value="ops", roles=["access"]),
        ClaimMapping(claim="groups", value="admins-*", roles=["access", "editor"]),
        ClaimMapping(claim="dept", value="^(sec|audit)$", roles=["auditor"]),
    ]
    roles, decided = roles_from_claims(
        mappings, {"groups": ["ops", "admins-eu", "opsx"], "dept": "audit"})
    assert roles == ["access", "editor", "auditor"]
    assert decided == {"groups": ["ops", "admins-eu"], "dept": ["audit"]}
    assert roles_from_claims(mappings, {"groups": ["op", "xadmins-eu"], "dept": "secu"}) == (
        [], {})


def test_groups_match_by_name_or_dn() -> None:
    groups = [("ops", "cn=ops,ou=groups,dc=example,dc=com"),
              ("sre", "cn=sre,ou=groups,dc=example,dc=com")]
    by_dn = [GroupMapping(group="cn=sre,ou=groups,dc=example,dc=com", roles=["auditor"])]
    assert roles_from_groups(by_dn, groups) == (["auditor"], {"groups": ["sre"]})
    by_name = [GroupMapping(group="o*", roles=["access"])]
    assert roles_from_groups(by_name, groups) == (["access"], {"groups": ["ops"]})


def test_traits_take_the_claims_values_and_skip_missing_ones() -> None:
    assert traits_from({"logins": "unix", "teams": "missing"},
                       {"unix": ["alice", "deploy"]}) == {"logins": ["alice", "deploy"]}

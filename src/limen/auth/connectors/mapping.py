"""From what a provider says (claims, groups, attributes) to Limen roles and traits.

Pure functions: a mapping matches exact values, globs (``ops-*``) and ``^regex$`` as
role label selectors do; roles add up across every mapping that matches.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from limen.rbac.labels import value_matches
from limen.resources.connector import ClaimMapping, GroupMapping


def as_strings(value: Any) -> list[str]:
    """A claim's values as strings: a string, a number or a list of them; else nothing."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, bool):
        return [str(value).lower()]
    if isinstance(value, int | float):
        return [str(value)]
    if isinstance(value, list):
        return [v for item in value for v in as_strings(item) if not isinstance(item, list)]
    return []


def roles_from_claims(
    mappings: Iterable[ClaimMapping], claims: Mapping[str, Any]
) -> tuple[list[str], dict[str, list[str]]]:
    """The roles every matching mapping grants, and the claim values that matched."""
    roles: list[str] = []
    decided: dict[str, list[str]] = {}
    for mapping in mappings:
        for value in as_strings(claims.get(mapping.claim)):
            if value_matches(mapping.value, value):
                _add(roles, mapping.roles)
                _add(decided.setdefault(mapping.claim, []), [value])
    return roles, decided


def roles_from_groups(
    mappings: Iterable[GroupMapping], groups: Iterable[tuple[str, str]]
) -> tuple[list[str], dict[str, list[str]]]:
    """Groups as (name, DN); a mapping may name either. Returns roles and groups matched."""
    roles: list[str] = []
    matched: list[str] = []
    groups = list(groups)
    for mapping in mappings:
        for name, dn in groups:
            if value_matches(mapping.group, name) or value_matches(mapping.group, dn):
                _add(roles, mapping.roles)
                _add(matched, [name or dn])
    return roles, ({"groups": matched} if matched else {})


def traits_from(spec_traits: Mapping[str, str], claims: Mapping[str, Any]) -> dict[str, list[str]]:
    """trait -> the values of the claim (or attribute) the connector names for it."""
    traits = {}
    for trait, claim in spec_traits.items():
        values = as_strings(claims.get(claim))
        if values:
            traits[trait] = values
    return traits


def offered(claims: Mapping[str, Any], names: Iterable[str]) -> dict[str, list[str]]:
    """The values of the claims the mappings look at, for a refusal's audit event."""
    return {name: as_strings(claims.get(name)) for name in dict.fromkeys(names)}


def _add(into: list[str], values: Iterable[str]) -> None:
    for value in values:
        if value not in into:
            into.append(value)

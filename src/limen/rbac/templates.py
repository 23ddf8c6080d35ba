"""Trait templates in role logins: {{internal.logins}}, {{external.NAME}}, {{email.local(...)}}."""

from __future__ import annotations

import re

_TEMPLATE = re.compile(r"^\{\{\s*(.+?)\s*\}\}$")
_EMAIL_LOCAL = re.compile(r"^email\.local\(\s*(.+?)\s*\)$")
_VAR = re.compile(r"^(internal|external)\.([A-Za-z0-9_:-]+)$")


def expand(value: str, traits: dict[str, list[str]]) -> list[str]:
    """Expand one login entry; a template that finds no trait expands to nothing."""
    match = _TEMPLATE.match(value.strip())
    if not match:
        return [value] if "{{" not in value else []
    expr = match.group(1)
    email = _EMAIL_LOCAL.match(expr)
    if email:
        return [v.split("@", 1)[0] for v in _lookup(email.group(1), traits) if "@" in v]
    return _lookup(expr, traits)


def _lookup(expr: str, traits: dict[str, list[str]]) -> list[str]:
    var = _VAR.match(expr)
    if not var:
        return []
    return [v for v in traits.get(var.group(2), []) if v]

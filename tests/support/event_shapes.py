"""What the node and proxy unit tests' observers check on every event they receive: the
shape the auth service accepts at its boundary (the cluster tests check what is written)."""

from __future__ import annotations

from typing import Any

from limen.audit.schema import proxy_report
from limen.auth.node_reports import check_node_report
from limen.errors import LimenError


def node_problem(name: str, fields: dict[str, Any]) -> str | None:
    """Why the auth service would refuse this node event, or None."""
    try:
        check_node_report(name, fields)
    except LimenError as exc:
        return exc.message
    return None


def proxy_problem(name: str, fields: dict[str, Any]) -> str | None:
    """Why the auth service would refuse this jump host or tunnel server event, or None."""
    try:
        proxy_report(name, fields)
    except LimenError as exc:
        return exc.message
    return None

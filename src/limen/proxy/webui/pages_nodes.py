"""The nodes page (search, label filters, Connect with a login chooser) and the active
sessions page (who is where since when, and Join).

Both list what the facade lists for the visitor: the nodes their roles reach, their own
sessions (or every session, with the rule to list sessions). A node's logins are those
the visitor's roles allow on that node, so the chooser offers nothing the node refuses.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI, Query, Request
from fastapi.responses import Response

from limen.errors import AccessDenied
from limen.proxy.webui.context import Visitor, WebUIState, find_visitor, render
from limen.rbac import AccessChecker
from limen.resources import Node, NodePresence, Session


@dataclass(frozen=True)
class NodeRow:
    id: str
    name: str
    labels: dict[str, str]
    connection: str
    logins: list[str]

    def matches(self, text: str, labels: list[tuple[str, str]]) -> bool:
        """The search text in its name, id or a label; every label filter holds."""
        needle = text.strip().lower()
        haystack = [self.name, self.id, *(f"{k}={v}" for k, v in self.labels.items())]
        if needle and not any(needle in item.lower() for item in haystack):
            return False
        return all(self.labels.get(key) == value for key, value in labels)


def node_logins(checker: AccessChecker, node: Node) -> list[str]:
    allowed = []
    for login in checker.logins():
        try:
            checker.check_node_login(node.spec.hostname, node.metadata.labels, login)
        except AccessDenied:
            continue
        allowed.append(login)
    return allowed


def node_rows(visitor: Visitor, nodes: list[tuple[Node, NodePresence]]) -> list[NodeRow]:
    rows = [
        NodeRow(id=node.name, name=node.spec.hostname, labels=dict(node.metadata.labels),
                connection=presence.spec.connection,
                logins=node_logins(visitor.checker, node))
        for node, presence in nodes
    ]
    return sorted(rows, key=lambda row: row.name.lower())


def parse_labels(values: list[str]) -> list[tuple[str, str]]:
    """``key=value`` filters (several in one field may be separated by commas)."""
    pairs = []
    for value in values:
        for part in value.split(","):
            key, sep, val = part.strip().partition("=")
            if sep and key.strip():
                pairs.append((key.strip(), val.strip()))
    return pairs


def add_routes(app: FastAPI, state: WebUIState) -> None:
    @app.get("/nodes")
    async def nodes(request: Request, q: str = "",
                    label: list[str] = Query(default=[])) -> Response:  # noqa: B008
        visitor = await find_visitor(state, request)
        rows = node_rows(visitor, await visitor.api.list_nodes())
        filters = parse_labels(label)
        shown = [row for row in rows if row.matches(q, filters)]
        all_labels = sorted({(k, v) for row in rows for k, v in row.labels.items()})
        return render(state, request, "nodes.html", visitor=visitor, title="Nodes",
                      rows=shown, total=len(rows), q=q, filters=filters,
                      label_text=", ".join(f"{k}={v}" for k, v in filters),
                      all_labels=all_labels)

    @app.get("/sessions")
    async def sessions(request: Request) -> Response:
        visitor = await find_visitor(state, request)
        live = sorted(await visitor.api.list_sessions(), key=lambda s: s.spec.started,
                      reverse=True)
        reachable = {node.name: node for node, _ in await visitor.api.list_nodes()}
        rows = [(session, _join_logins(visitor, session, reachable),
                 await visitor.api.join_modes(session)) for session in live]
        return render(state, request, "sessions.html", visitor=visitor, title="Sessions",
                      rows=rows, now=state.auth.ctx.clock.now(),
                      may_read_recordings=visitor.may("recording", "read"))


def _join_logins(visitor: Visitor, session: Session, reachable: dict[str, Node]) -> list[str]:
    """The logins the visitor could join another person's session with (none for their
    own sessions, or on nodes their roles do not reach)."""
    node = reachable.get(session.spec.node_id)
    if node is None or session.spec.user == visitor.user:
        return []
    return node_logins(visitor.checker, node)

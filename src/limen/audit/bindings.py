"""Which node started a session, and whom it proved started it: sid -> binding.

The auth service binds a session id to the node that reported its ``session.start``;
later reports about that session are accepted only from that node, and carry the user
and login the start established. The binding is durable because the ``session.start``
event itself is (the store indexes events by sid): after a restart, or on another auth
service sharing the store, the binding is read back from it. Recent bindings are also
kept in memory, which covers the moment between writing an event and the store's copy.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from limen.audit import events as types
from limen.audit.store import EventQuery, EventStore
from limen.errors import AccessDenied

RECENT = 50_000  # bindings kept in memory; older ones are read from the store


@dataclass(frozen=True)
class SessionBinding:
    sid: str
    server_id: str
    server_hostname: str | None = None
    user: str | None = None  # backed by the user's certificate; None when only claimed
    login: str | None = None
    claimed_user: str | None = None
    claimed_login: str | None = None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> SessionBinding:
        def text(name: str) -> str | None:
            value = record.get(name)
            return value if isinstance(value, str) else None

        return cls(str(record.get("sid")), str(record.get("server_id")),
                   text("server_hostname"), text("user"), text("login"),
                   text("claimed_user"), text("claimed_login"))


def other_node(sid: str) -> AccessDenied:
    return AccessDenied(f"session {sid} was started by another node; a node reports and "
                        "records only its own sessions")


class SessionBindings:
    def __init__(self, store: EventStore) -> None:
        self.store = store
        self._recent: OrderedDict[str, SessionBinding] = OrderedDict()

    async def absent(self, sids: Iterable[str]) -> frozenset[str]:
        """Of ``sids``, those no node has started, found with one search for a node's
        whole batch (the bindings it finds are remembered); pass it to ``owned`` and
        ``bind`` so that they do not search again. Empty when the search could not tell."""
        wanted = tuple(sid for sid in dict.fromkeys(sids) if sid not in self._recent)
        if not wanted:
            return frozenset()
        page = await self.store.search(EventQuery(
            types=(types.SESSION_START.name,), sessions=wanted, limit=2 * len(wanted)))
        if page.cursor is not None:  # more starts than it asked for: it cannot tell
            return frozenset()
        started: dict[str, SessionBinding] = {}
        for event in page.events:  # newest first, as lookup takes them
            binding = SessionBinding.from_record(json.loads(event.data))
            started.setdefault(binding.sid, binding)
        for binding in started.values():
            self._remember(binding)
        return frozenset(wanted) - started.keys()

    async def lookup(self, sid: str, absent: frozenset[str] = frozenset()
                     ) -> SessionBinding | None:
        """The session's binding, or None when no node has started it."""
        found = self._recent.get(sid)
        if found is not None:
            return found
        if sid in absent:
            return None
        page = await self.store.search(EventQuery(types=(types.SESSION_START.name,),
                                                  session=sid, limit=1))
        if not page.events:
            return None
        found = SessionBinding.from_record(json.loads(page.events[0].data))
        self._remember(found)
        return found

    async def bind(self, binding: SessionBinding, absent: frozenset[str] = frozenset()
                   ) -> None:
        """Bind a starting session to its node: AccessDenied when another node has it.

        Reserved in memory before the event is written, so two starts racing in this
        process cannot both win."""
        existing = await self.lookup(binding.sid, absent)
        existing = self._recent.get(binding.sid, existing)  # a start that raced the lookup
        if existing is not None and existing.server_id != binding.server_id:
            raise other_node(binding.sid)
        self._remember(binding)

    async def owned(self, sid: str, server_id: str, absent: frozenset[str] = frozenset()
                    ) -> SessionBinding | None:
        """The binding of a session this node started; AccessDenied if another node did;
        None when no node has started it (yet)."""
        binding = await self.lookup(sid, absent)
        if binding is not None and binding.server_id != server_id:
            raise other_node(sid)
        return binding

    def _remember(self, binding: SessionBinding) -> None:
        self._recent[binding.sid] = binding
        self._recent.move_to_end(binding.sid)
        if len(self._recent) > RECENT:
            self._recent.popitem(last=False)

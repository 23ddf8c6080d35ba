"""Which nodes may be dealt with: registrations, presence and locks, as the backend's
watch says.

The tunnel server judges an agent's host certificate synchronously, and a removed or
locked node must lose its tunnel the moment that happens, not at the next poll. So each
instance with the auth service keeps the registrations and the locks on nodes in memory,
fed by a watch on ``/nodes/`` and ``/locks/``, and tells its subscribers (the tunnel
server, the address verifier) when a node is removed, lapses or is locked. The node
registry answers the nodes' open streams from it too (``NodeRegistry.in_good_standing``):
re-reading every registration for them was most of an idle proxy's work. Node listings
come from it as well (``present``): reading and parsing every registration and presence
record for each listing cost the proxy most of a core while a fleet of hundreds joined
and something watched the listing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from limen.auth.context import Stores
from limen.auth.node_registry import GONE, locks_node
from limen.backend.base import Event, OpType
from limen.clock import Clock
from limen.errors import LimenError
from limen.resources import Lock, Node, NodePresence
from limen.sshauth import CertFacts
from limen.tasks import cancel_and_wait

log = logging.getLogger(__name__)

PREFIXES = ("/nodes/", "/node_presence/", "/locks/")
RESYNC_DELAY = 1.0

# Called with (node id, why) when a node may no longer be reached.
OnRevoked = Callable[[str, str], None]


class NodeWatch:
    def __init__(self, stores: Stores, clock: Clock) -> None:
        self.stores = stores
        self.clock = clock
        self._nodes: dict[str, Node] = {}
        self._by_name: dict[str, set[str]] = {}  # hostname -> node ids
        self._presence: dict[str, NodePresence] = {}  # node id -> its last heartbeat
        self._locks: dict[str, Lock] = {}
        self._subscribers: list[OnRevoked] = []
        self._streams: dict[str, set[Callable[[], None]]] = {}  # node id -> its streams' ends
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def matching(self, target: str) -> list[Node]:
        """The nodes whose id or name is ``target``, from memory (the jump host's routing
        asks on every connection; reading every node from the backend each time cost
        a quarter of a second per connection at 3,000 nodes). May lag the backend by
        its watch's delay: callers treat "none" as "ask the backend"."""
        node = self._nodes.get(target)
        if node is not None:
            return [node]
        return [self._nodes[i] for i in self._by_name.get(target, ()) if i in self._nodes]

    def of_kind(self, kind: str) -> list[Node]:
        """The registered nodes of one kind ("openssh": agentless), from memory."""
        return [node for node in self._nodes.values() if node.spec.kind == kind]

    def present(self) -> list[tuple[Node, NodePresence]]:
        """Registered nodes whose presence has not expired and that no lock targets, from
        memory; lags the backend by its watch's delay, as a listing may."""
        now = self.clock.now()
        found = []
        for node_id, node in self._nodes.items():
            presence = self._presence.get(node_id)
            if presence is None or (presence.metadata.expires is not None
                                    and presence.metadata.expires <= now):
                continue
            if self._lock_on(node) is None:
                found.append((node, presence))
        return found

    def node(self, node_id: str) -> Node | None:
        """The node's registration as last seen, or None."""
        return self._nodes.get(node_id)

    def presence_of(self, node_id: str) -> NodePresence | None:
        """The node's presence record as last written, expired or not."""
        return self._presence.get(node_id)

    def subscribe(self, callback: OnRevoked) -> None:
        self._subscribers.append(callback)

    def on_revoked(self, node_id: str, end: Callable[[], None]) -> Callable[[], None]:
        """Call ``end`` once if the node is removed or locked (a stream the node keeps
        open ends then, not at its next ping); returns what forgets it again."""
        self._streams.setdefault(node_id, set()).add(end)

        def forget() -> None:
            ends = self._streams.get(node_id)
            if ends is not None:
                ends.discard(end)
                if not ends:
                    del self._streams[node_id]

        return forget

    async def start(self, timeout: float = 30) -> None:
        """Watch, and return once the first snapshot is in memory."""
        self._task = asyncio.get_running_loop().create_task(self._run())
        async with asyncio.timeout(timeout):
            await self._ready.wait()

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    # -- what the proxy asks -----------------------------------------------------------

    def refusal(self, node_id: str) -> str | None:
        """Why the node may not be reached now (removed, lapsed, locked), or None."""
        node = self._nodes.get(node_id)
        if node is None:
            return GONE.format(node=node_id)
        lock = self._lock_on(node)
        return lock.refusal() if lock is not None else None

    def revoked(self, cert: CertFacts) -> str | None:
        """judge_host's ``revoked`` hook: also refuses a certificate a renewal replaced."""
        reason = self.refusal(cert.key_id)
        if reason is not None:
            return reason
        current = self._nodes[cert.key_id].spec.cert_serial
        if current and cert.serial != current:
            return (f"this host certificate (serial {cert.serial}) was replaced when node "
                    f"{cert.key_id} renewed its credentials")
        return None

    def _lock_on(self, node: Node) -> Lock | None:
        now = self.clock.now()
        names = (node.name, node.spec.hostname)
        for lock in self._locks.values():
            live = lock.metadata.expires is None or lock.metadata.expires > now
            if live and locks_node(lock, names):
                return lock
        return None

    # -- keeping up ---------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                async with self.stores.backend.watch(list(PREFIXES)) as watcher:
                    self._load(await self.stores.nodes.list(), await self.stores.locks.list())
                    self._presence = {p.name: p for p in await self.stores.node_presence.list()}
                    self._ready.set()
                    async for event in watcher:
                        self._apply(event)
            except asyncio.CancelledError:
                raise
            except LimenError as exc:  # the watch broke: read everything again
                log.warning("the node watch broke (%s); re-reading", exc.message)
            except Exception:  # noqa: BLE001 - never stop watching
                log.exception("the node watch failed; re-reading")
            await asyncio.sleep(RESYNC_DELAY)

    def _load(self, nodes: list[Node], locks: list[Lock]) -> None:
        before = set(self._nodes)
        self._nodes = {node.name: node for node in nodes}
        self._by_name = {}
        for node in nodes:
            self._by_name.setdefault(node.spec.hostname, set()).add(node.name)
        self._locks = {lock.name: lock for lock in locks if lock.spec.target.node}
        for node_id in before - set(self._nodes):
            self._revoke(node_id, GONE.format(node=node_id))
        for node in self._nodes.values():
            self._revoke_if_locked(node)

    def _apply(self, event: Event) -> None:
        key = event.item.key
        if key.startswith("/nodes/"):
            self._apply_node(key[len("/nodes/"):], event)
        elif key.startswith("/locks/"):
            self._apply_lock(key[len("/locks/"):], event)
        elif key.startswith("/node_presence/"):
            self._apply_presence(key[len("/node_presence/"):], event)

    def _apply_node(self, node_id: str, event: Event) -> None:
        old = self._nodes.get(node_id)
        if old is not None:
            self._by_name.get(old.spec.hostname, set()).discard(node_id)
        if event.type == OpType.DELETE:
            if self._nodes.pop(node_id, None) is not None:
                self._revoke(node_id, GONE.format(node=node_id))
            return
        node = Node.from_bytes(event.item.value, event.item.revision)
        self._nodes[node_id] = node
        self._by_name.setdefault(node.spec.hostname, set()).add(node_id)
        self._revoke_if_locked(node)

    def _apply_lock(self, name: str, event: Event) -> None:
        if event.type == OpType.DELETE:
            self._locks.pop(name, None)
            return
        lock = Lock.from_bytes(event.item.value)
        if not lock.spec.target.node:
            return
        self._locks[name] = lock
        for node in list(self._nodes.values()):
            self._revoke_if_locked(node)

    def _apply_presence(self, node_id: str, event: Event) -> None:
        if event.type == OpType.DELETE:
            self._presence.pop(node_id, None)
        else:
            self._presence[node_id] = NodePresence.from_bytes(event.item.value, event.item.revision)

    def _revoke_if_locked(self, node: Node) -> None:
        lock = self._lock_on(node)
        if lock is not None:
            self._revoke(node.name, lock.refusal())

    def _revoke(self, node_id: str, reason: str) -> None:
        for end in self._streams.pop(node_id, ()):
            end()
        for callback in self._subscribers:
            try:
                callback(node_id, reason)
            except Exception:  # noqa: BLE001 - one subscriber's failure spares the others
                log.exception("revoking node %s failed", node_id)

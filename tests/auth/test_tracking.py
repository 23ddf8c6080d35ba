"""Live session trackers follow what a node's batches of events say (limen.auth.tracking):
a session that starts and ends within one batch is never listed, so it costs no write."""

from __future__ import annotations

import uuid
from pathlib import Path

from limen.audit.bindings import SessionBindings
from limen.auth.identity import Identity
from limen.auth.tracking import Tracking
from limen.backend.audit_memory import MemoryAuditStore
from tests.backend.test_compliance import quiet, summary, take
from tests.support.memory_auth import memory_auth_context

NODE = Identity(user="id-1", builtin="node")
START = {"login": "root", "session_kind": "exec", "command": "true"}


async def test_a_session_over_within_its_batch_is_never_listed(tmp_path: Path) -> None:
    async with memory_auth_context(tmp_path, "tracking.test") as ctx:
        store = MemoryAuditStore()
        tracking = Tracking(ctx, SessionBindings(store.events))
        brief, lasting = str(uuid.uuid4()), str(uuid.uuid4())
        async with ctx.stores.backend.watch(["/sessions/"]) as watcher:
            answers = await tracking.report_events(NODE, [
                ("session.start", {"sid": brief, **START}), ("session.end", {"sid": brief}),
                ("session.start", {"sid": lasting, **START}),
            ])
            listed = await take(watcher, 1)
            await quiet(watcher)
            assert answers == [None, None, None]
            assert [(kind, key) for kind, key, _ in summary(listed)] == [
                ("put", f"/sessions/{lasting}")]
            # Its end, in a later batch, takes the listed one off.
            assert await tracking.report_events(NODE, [("session.end", {"sid": lasting})]) \
                == [None]
            ended = await take(watcher, 1)
        assert [(kind, key) for kind, key, _ in summary(ended)] == [
            ("delete", f"/sessions/{lasting}")]
        assert [s.name for s in await tracking.list_sessions()] == []
        # An end the auth service refuses (a field no session.end has) is not an end: the
        # session its batch started stays listed.
        kept = str(uuid.uuid4())
        answers = await tracking.report_events(NODE, [
            ("session.start", {"sid": kept, **START}),
            ("session.end", {"sid": kept, "forged": "x"}),
        ])
        assert answers[0] is None and answers[1] is not None
        assert [s.name for s in await tracking.list_sessions()] == [kept]

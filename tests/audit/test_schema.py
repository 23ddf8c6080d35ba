"""The audit schema: one typed model per event, the same in code and in the README; unknown
or mistyped fields are refused by name, refusals take their failure code, and a written
line is checked whole (common and chain fields too)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from limen.audit import events, schema
from limen.audit.log import AuditLog
from limen.audit.metadata import AuditEvent
from limen.errors import BadParameter

SID = "3f2b1c0d-9e8f-4a7b-8c6d-5e4f3a2b1c0d"
README = Path(__file__).resolve().parents[2] / "README.md"
# Fields every event may carry, described once above the README's table.
SHARED = set(AuditEvent.model_fields) | {
    name for meta in (schema.UserMeta, schema.ConnectionMeta, schema.SessionMeta,
                      schema.ServerMeta, schema.ClaimMeta, schema.CertMeta)
    for name in (f.alias or n for n, f in meta.model_fields.items())
}


def test_every_event_type_has_a_model_and_every_model_its_types() -> None:
    assert {t.name for t in events.ALL} == set(schema.MODELS)
    for model in schema.MODELS.values():
        assert set(model.types()) <= set(events.ALL), model
    assert {t for m in schema.MODELS.values() for t in m.types()} == set(events.ALL)


def test_unknown_and_mistyped_fields_are_refused_by_name() -> None:
    with pytest.raises(BadParameter, match="event 'exec' has no field 'remote_addr'"):
        schema.from_fields("exec", {"sid": SID, "remote_addr": "10.0.0.1"})
    with pytest.raises(BadParameter, match="event 'exec': field 'exit_code'"):
        schema.from_fields("exec", {"sid": SID, "exit_code": "0"})  # no silent conversion
    with pytest.raises(BadParameter, match="event 'exec' needs the field 'sid'"):
        schema.from_fields("exec", {"command": "id"})
    with pytest.raises(BadParameter, match="no audit event named 'exec.bogus'"):
        schema.from_fields("exec.bogus", {})


def test_refusals_take_their_failure_code() -> None:
    assert schema.from_fields("port", {"allowed": False}).event_type() == (
        events.PORT_FORWARD_FAILURE)
    assert schema.from_fields("port", {"allowed": True}).event_type() == events.PORT_FORWARD
    assert schema.UserLogin(success=False).event_type() == events.USER_LOGIN_FAILURE
    assert schema.Auth(success=True).event_type() == events.AUTH_SUCCESS
    named = schema.from_fields(events.EXEC_FAILURE, {"sid": SID})
    assert named.event_type() == events.EXEC_FAILURE
    with pytest.raises(BadParameter, match="T1000I is not a code of event exec"):
        schema.from_fields("exec", {"sid": SID}).choose(events.USER_LOGIN)


def test_fields_are_written_with_their_shared_names_metadata_first() -> None:
    event = schema.Exec(command="id", exit_code=0, sid=SID, addr_remote="10.0.0.1:5",
                        user="alice", server_hostname="web1", exit_signal=None)
    assert list(event.fields()) == ["user", "sid", "server_hostname", "addr.remote",
                                    "command", "exit_code"]


async def test_a_written_line_is_checked_whole(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "log" / "events", "test.limen")
    line = await log.emit(schema.Exec(sid=SID, user="alice", command="id"))
    checkpoint = await log.checkpoint()
    await log.close()
    assert isinstance(schema.check_record(line), schema.Exec)
    assert isinstance(schema.check_record(checkpoint), schema.AuditCheckpoint)
    with pytest.raises(BadParameter, match="event 'exec' has no field 'shell'"):
        schema.check_record({**line, "shell": "/bin/sh"})
    with pytest.raises(BadParameter, match="code 'T3003I' is not one of"):
        schema.check_record({**line, "code": "T3003I"})
    with pytest.raises(BadParameter, match="event 'exec': field 'seq'"):
        schema.check_record({**line, "seq": "1"})
    without_hash = {k: v for k, v in line.items() if k != "hash"}
    with pytest.raises(BadParameter, match="needs the field 'hash'"):
        schema.check_record(without_hash)


async def test_emit_checks_fields_given_without_a_model(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "log" / "events", "test.limen")
    with pytest.raises(BadParameter, match="event 'user.delete' has no field 'nmae'"):
        await log.emit(events.USER_DELETE, user="admin", nmae="bob")
    written = await log.emit(events.USER_DELETE, user="admin", name="bob", login=None)
    assert written["name"] == "bob" and log.read_all() == [written]
    await log.close()


def _readme_rows() -> dict[str, str]:
    """The README's audit table: each event name in a row's first column -> that row."""
    text = README.read_text()
    table = text[text.index("| event | code | when, and its own fields |"):]
    rows: dict[str, str] = {}
    for row in table.splitlines()[2:]:
        if not row.startswith("|"):
            break
        first = row.split("|")[1]
        for name in re.findall(r"`([a-z_.]+)`", first):
            rows[name] = row
    return rows


def test_the_readme_lists_every_event_with_its_codes_and_own_fields() -> None:
    rows = _readme_rows()
    assert set(rows) == set(schema.MODELS)
    for name, model in schema.MODELS.items():
        row = rows[name]
        for kind in model.types():
            assert kind.code in row, (name, kind.code)
        own = {f.alias or n for n, f in model.model_fields.items()} - SHARED
        missing = [field for field in own if f"`{field}`" not in row]
        assert not missing, f"the README's row for {name} lacks {missing}"

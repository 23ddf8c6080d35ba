"""The pieces `limen start` runs on, alone: JSON log lines, what a reload changes, the
data dir lock, and the sentence for an address that cannot be bound."""

from __future__ import annotations

import errno
import io
import json
import logging
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from limen.config import Config
from limen.errors import AlreadyExists, BadParameter
from limen.runtime import logs
from limen.runtime.lock import DataDirLock
from limen.runtime.ports import bind_error, listener_owner
from limen.runtime.reload import changed_keys, reload


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    logs.configure("info", "json", stream)
    yield stream
    logging.getLogger().handlers.clear()
    logs.set_level("warning")


def test_a_json_line_has_time_level_component_message_and_ids(captured: io.StringIO) -> None:
    token = logs.request_id.set("req-1")
    try:
        logging.getLogger("limen.node.ssh.server").info("hello %s", "world")
    finally:
        logs.request_id.reset(token)
    logging.getLogger("limen.node.ssh.connection").warning("x", extra={"session_id": "s-9"})
    first, second = (json.loads(line) for line in captured.getvalue().splitlines())
    assert first["message"] == "hello world" and first["level"] == "info"
    assert first["component"] == "node.ssh.server" and first["request_id"] == "req-1"
    assert first["time"].endswith("Z")
    assert second["session_id"] == "s-9" and "request_id" not in second


def test_chatty_libraries_stay_quiet_unless_debugging(captured: io.StringIO) -> None:
    logging.getLogger("httpx").info("HTTP Request: GET /v1/ping")
    assert captured.getvalue() == ""
    logs.set_level("debug")
    logging.getLogger("httpx").info("HTTP Request: GET /v1/ping")
    assert "HTTP Request" in captured.getvalue()
    logging.getLogger("aiosqlite").debug("executing")
    assert "executing" not in captured.getvalue()


def test_changed_keys_are_dotted_names() -> None:
    old = Config().model_dump(mode="json")
    new = Config.model_validate({"log_level": "debug", "auth": {"cert_ttl": "2h"}})
    assert changed_keys(old, new.model_dump(mode="json")) == ["auth.cert_ttl", "log_level"]


def test_reload_applies_log_settings_and_keeps_the_rest(captured: io.StringIO) -> None:
    running = Config()
    fresh = Config.model_validate({"log_level": "warning", "auth": {"cert_ttl": "1h"}})
    now = reload(running, lambda: fresh)
    assert now.log_level == "warning" and now.auth.cert_ttl == "12h"
    assert logging.getLogger().level == logging.WARNING


def test_a_reload_that_does_not_load_changes_nothing(captured: io.StringIO) -> None:
    running = Config()

    def broken() -> Config:
        raise BadParameter("field 'log_level' (line 1): bad")

    assert reload(running, broken) is running
    assert "configuration not reloaded: field 'log_level'" in captured.getvalue()


def test_the_data_dir_lock_names_its_holder(tmp_path: Path) -> None:
    first = DataDirLock(tmp_path)
    first.acquire()
    try:
        with pytest.raises(AlreadyExists, match=r"another limen start \(pid \d+\)"):
            DataDirLock(tmp_path).acquire()
    finally:
        first.release()
    again = DataDirLock(tmp_path)
    again.acquire()  # released: free again
    again.release()


def test_the_holders_command_line_and_its_secrets_stay_out_of_the_message() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", "import socket, sys; s = socket.create_server(('127.0.0.1', 0));"
         " print(s.getsockname()[1], flush=True); sys.stdin.read()",
         "--token", "s3cret-join-token"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    ) as holder:
        try:
            assert holder.stdout is not None
            port = int(holder.stdout.readline())
            owner = listener_owner(port)
            assert owner is not None and f"pid {holder.pid}" in owner
            assert "s3cret" not in owner and "--token" not in owner
        finally:
            holder.kill()


def test_a_taken_port_names_its_holder() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        owner = listener_owner(port)
        assert owner is not None and "pid" in owner
        error = bind_error("the HTTPS API", f"127.0.0.1:{port}",
                           OSError(errno.EADDRINUSE, "Address already in use"))
        assert isinstance(error, AlreadyExists)
        assert f"cannot listen on 127.0.0.1:{port} for the HTTPS API" in str(error)
        assert owner in str(error)


def test_other_bind_failures_are_sentences() -> None:
    denied = bind_error("the proxy's SSH port", "0.0.0.0:22", OSError(errno.EACCES, "denied"))
    assert "ports below 1024 need root" in str(denied)
    foreign = bind_error("x", "10.99.99.99:1", OSError(errno.EADDRNOTAVAIL, "no"))
    assert "not an address of this machine" in str(foreign)

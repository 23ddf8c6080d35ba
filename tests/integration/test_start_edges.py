"""`limen start` as an operator meets it: a second instance on the same data dir or a
taken port fails with a sentence and touches nothing of the running one; SIGHUP reloads
what is safe; a node-only instance prints what is true for it and stays quiet."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import ClusterHarness
from tests.support.daemon import LIMEN, Running
from tests.support.metrics import Samples, scrape, value
from tests.support.ports import free_port
from tests.support.ssh_access import wait_until
from tests.support.tunnel import NodeProcess


def _config(path: Path, data: Path, web: str = "127.0.0.1:0", extra: str = "") -> Path:
    path.write_text(
        f"cluster_name: edges.limen\ndata_dir: {data}\n{extra}"
        f"proxy:\n  web_listen_addr: {web}\n  ssh_listen_addr: 127.0.0.1:0\n"
        "  tunnel_listen_addr: 127.0.0.1:0\n"
        "ssh:\n  enabled: false\n"
    )
    return path


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    base = tmp_path_factory.mktemp("edges")
    instance = Running(_config(base / "limen.yaml", base / "data"), base / "data",
                       base / "limen.log", "--diag-addr", f"127.0.0.1:{free_port()}")
    yield instance
    instance.stop()


def _start_fails(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LIMEN, "start", *args], capture_output=True, text=True, timeout=60)


def _still_serving(running: Running, tmp_path: Path) -> None:
    """The healthy instance's run.json is intact and its admin commands work."""
    assert running.run_file()["web_addr"]
    listed = subprocess.run([*LIMEN, "users", "ls", "--data-dir", str(running.data)],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "LIMEN_HOME": str(tmp_path)})
    assert listed.returncode == 0, listed.stderr


def test_a_second_start_on_the_same_data_dir_stops_and_touches_nothing(
    running: Running, tmp_path: Path
) -> None:
    before = (running.data / "run.json").read_bytes()
    second = _start_fails("--config", str(running.config))
    assert second.returncode == 1
    assert (f"another limen start (pid {running.proc.pid}) is already using the data dir "
            f"{running.data}") in second.stderr
    assert "Traceback" not in second.stderr
    assert (running.data / "run.json").read_bytes() == before
    _still_serving(running, tmp_path)


def test_a_taken_port_is_named_with_what_holds_it(running: Running, tmp_path: Path) -> None:
    taken = running.run_file()["web_addr"]
    config = _config(tmp_path / "other.yaml", tmp_path / "other", web=taken)
    second = _start_fails("--config", str(config))
    assert second.returncode == 1
    assert f"cannot listen on {taken} for the HTTPS API: the address is already in use" \
        in second.stderr
    assert f"pid {running.proc.pid}" in second.stderr  # ss or /proc told it whose port
    assert "Traceback" not in second.stderr
    assert not (tmp_path / "other" / "run.json").exists()
    _still_serving(running, tmp_path)


def test_sighup_reloads_the_log_settings_and_names_what_needs_a_restart(
    running: Running,
) -> None:
    text = running.config.read_text()
    _config(running.config, running.data, extra="log_level: debug\nauth:\n  cert_ttl: 2h\n")
    try:
        running.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "configuration reloaded: log_level is now debug" in running.text(),
                   30, "the reload to be logged")
        wait_until(lambda: "need a restart" in running.text(), 30, "the restart note")
        assert "auth.cert_ttl" in running.text()
        assert running.proc.poll() is None
    finally:
        running.config.write_text(text)
        running.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "log_level is now info" in running.text(), 30, "the level back")


def test_a_joined_node_prints_what_is_true_for_it_and_stays_quiet(
    cluster: ClusterHarness, tmp_path: Path
) -> None:
    # The proxy's address pasted from the banner, as a URL.
    node = NodeProcess(cluster, tmp_path, "edge-node", proxy=f"https://{cluster.web_addr}/")
    node.start()
    try:
        node.wait_tunneled()
        wait_until(lambda: "joined cluster" in node.log.read_text(), 30, "the banner")
        log = node.log.read_text()
        assert "Limen node edge-node joined cluster test.limen." in log
        assert f"through a reverse tunnel to the proxy at {cluster.web_addr}" in log
        assert "users add" not in log and "HTTPS API" not in log and "?" not in log
        assert "serving SSH on \n" not in log and "serving SSH on  " not in log
        # Joining, heartbeats and the access feed are HTTP requests: none logged at INFO.
        assert "HTTP Request" not in log
    finally:
        node.stop()


def test_what_start_up_built_is_left_out_of_garbage_collections(running: Running) -> None:
    """runtime/heap.py: once started, the process freezes what start-up left, so a full
    collection under load walks only what came later (shorter pauses of the loop)."""
    diag = running.flags[running.flags.index("--diag-addr") + 1]

    def frozen() -> Samples | None:
        found = scrape(diag)
        return found if value(found, "limen_gc_frozen_objects") else None

    # The freeze follows the banner, which follows run.json: wait for it, briefly.
    samples = wait_until(frozen, 10, "start-up's objects to be frozen")
    assert value(samples, "limen_gc_frozen_objects") > 10_000
    # The collection before the freeze, and the collector's own figures for operators.
    assert value(samples, "python_gc_collections_total", generation="2") >= 1

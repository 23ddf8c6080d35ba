"""Several `limen start --roles auth,proxy` processes on one PostgreSQL schema.

An ``Instance`` is a real process with its own data dir, config file and ports; it looks
like a ClusterHarness to the helpers (cli, admin, login, signed_up), whose in-process
service it never starts. Helpers to make a schema and drop it afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from limen.client.api import APIClient
from limen.clock import FakeClock
from tests.support.cluster import CLIResult, ClusterHarness, default_config
from tests.support.ports import free_port
from tests.support.processes import stop_process
from tests.support.ssh_access import wait_until

DSN = os.environ.get("LIMEN_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
LIMEN = [sys.executable, "-m", "limen.cli.main"]
HEARTBEAT = "1s"  # instances heartbeat fast here: down after 3 s of silence


def new_schema() -> str:
    return f"limen_ha_{uuid.uuid4().hex[:12]}"


def drop_schema(schema: str) -> None:
    async def drop() -> None:
        conn = await asyncpg.connect(DSN)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())



def config_text(data: Path, schema: str, port: int = 0, cluster: str = "ha.limen") -> str:
    """The config each instance runs with: same database and schema, its own data dir."""
    return "\n".join([
        f"cluster_name: {cluster}",
        f"data_dir: {data}",
        f"storage: {{type: postgres, dsn: '{DSN}', schema: {schema}}}",
        f"auth: {{heartbeat_interval: {HEARTBEAT}}}",
        "proxy:",
        f"  web_listen_addr: 127.0.0.1:{port}",
        "  ssh_listen_addr: 127.0.0.1:0",
        "  tunnel_listen_addr: 127.0.0.1:0",
        "  rate_limit: {average_per_minute: 100000, burst: 100000}",
        "  node_networks: [127.0.0.0/8]",
        "ssh: {enabled: false}",
        "",
    ])


class Instance(ClusterHarness):
    """One auth+proxy process of the cluster."""

    def __init__(self, base: Path, name: str, schema: str, clock: FakeClock) -> None:
        self.name = name
        root = base / name
        root.mkdir(parents=True, exist_ok=True)
        super().__init__(root, config=default_config(root / "data"), clock=clock)
        self.config_path = root / "limen.yaml"
        self.schema = schema
        self.config_path.write_text(config_text(root / "data", schema, free_port()))
        self.log = root / "limen.log"
        self.proc: subprocess.Popen[bytes] | None = None

    # -- the process -------------------------------------------------------------------
    def launch(self) -> Instance:
        """Start the process (without waiting: see ``wait_ready``)."""
        (self.data_dir / "run.json").unlink(missing_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([*LIMEN, "start", "--config", str(self.config_path)],
                                         stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def wait_ready(self, timeout: float = 60) -> Instance:
        wait_until(lambda: (self.data_dir / "run.json").exists() or not self.alive(), timeout,
                   f"instance {self.name} to listen")
        assert self.alive(), self.log.read_text()
        return self

    def start(self) -> Instance:
        return self.launch().wait_ready()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown at all, as when the machine dies."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            stop_process(self.proc, timeout=30)
        if not self._loop.is_closed():
            self._loop.close()

    def run_file(self) -> dict[str, str]:
        return json.loads((self.data_dir / "run.json").read_text())

    @property
    def web_addr(self) -> str:
        return self.run_file()["web_addr"]

    @property
    def ssh_addr(self) -> str:
        return self.run_file()["ssh_addr"]

    # -- the API as this instance's admin ------------------------------------------------
    def ca_pem(self) -> str:
        return (self.data_dir / "ca" / "tls_ca.crt").read_text()

    def api(self, token: str | None = None) -> APIClient:
        admin = (self.data_dir / "admin.token").read_text().strip()
        return APIClient(self.web_addr, self.ca_pem(), token or admin)

    def get(self, path: str) -> Any:
        with self.api() as client:
            return client.get(path)

    def verify(self) -> CLIResult:
        """`limen audit verify` on this instance's host: its files, and every chain in the
        shared store (the config names the database)."""
        return self.cli("audit", "verify", "--config", str(self.config_path), "--format",
                        "json")

    def events(self) -> list[dict[str, Any]]:
        raise NotImplementedError("search the shared store: limen audit search")

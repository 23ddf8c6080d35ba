"""Benchmark: a node reached through its reverse tunnel against a direct node, same run.

Run by hand from the repository root, as root (the nodes run shells):

    .venv/bin/python bench/tunnel.py [--size-mb 200] [--transfers 3] [--runs 30]
                                     [--idle-nodes 50] [--idle-seconds 150]

It starts `limen start --roles auth,proxy` and two `limen start --roles node` processes
joined with a token: one direct (--advertise-addr: the proxy dials it) and one tunneled
(no address: it dials the proxy's tunnel server). The client is stock OpenSSH with the
config `limen config` writes, on the same path up to the proxy, so only the last hop
differs. Interleaved so drift hits both alike:

- upload and download throughput (``head -c SIZE /dev/zero | ssh ... 'cat >/dev/null'``
  and the reverse), median, handshakes included;
- median latency of sequential ``ssh ... true``;
- what an idle tunnel costs: the proxy's memory per tunnel and the node process's per
  node (--idle-nodes more tunneled nodes in one process, RSS growth divided by their
  number), and the traffic of a tunneled node doing nothing for --idle-seconds, scaled
  to an hour. That node runs in a network namespace of its own (tests/support/netns.py),
  so its veth's counters are everything it exchanges with the proxy (tunnel keepalives,
  heartbeats, the access feed), frames and all; the tunnel's share comes from the
  kernel's counters for its socket.

The proxy listens on the host's end of that namespace's veth (a local address, so the
benchmark's own traffic still never leaves the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from limen.auth import totp  # noqa: E402
from limen.client.api import APIClient  # noqa: E402
from tests.support.netns import NatNamespace  # noqa: E402

CLUSTER = "bench.limen"
PASSWORD = "correct horse battery staple"
LIMEN = [sys.executable, "-m", "limen.cli.main"]
DIRECT, TUNNELED, IDLE = "bench-direct", "bench-tunnel", "bench-idle"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=200, help="transfer size (default 200)")
    parser.add_argument("--transfers", type=int, default=3, help="runs per direction (3)")
    parser.add_argument("--runs", type=int, default=30, help="latency samples (default 30)")
    parser.add_argument("--idle-nodes", type=int, default=50,
                        help="extra tunneled nodes for the memory figure (default 50)")
    parser.add_argument("--idle-seconds", type=float, default=150,
                        help="how long to watch an idle tunnel's traffic (default 150)")
    parser.add_argument("--listener-mode", choices=("multiplex", "separate"),
                        default="multiplex",
                        help="multiplex (default): agents tunnel through the web port, SSH "
                             "inside TLS; separate: plain SSH to the dedicated tunnel port")
    return parser.parse_args()


def wait_for(predicate, timeout: float, what: str):  # noqa: ANN001, ANN201 - tiny helper
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


class Daemon:
    """A process in its own session; its output goes to a log file."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str]) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                         start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.log.name} exited:\n{self.log.read_text()}")
        return True

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@dataclass
class Cluster:
    root: Path
    env: dict[str, str]
    proxy: Daemon
    data_dir: Path
    web_addr: str
    tunnel_port: int
    daemons: list[Daemon]

    def admin(self) -> APIClient:
        token = (self.data_dir / "admin.token").read_text().strip()
        return APIClient(self.web_addr, (self.data_dir / "ca" / "tls_ca.crt").read_text(), token)

    def token(self) -> str:
        with self.admin() as admin:
            return str(admin.post("/v1/tokens", {"type": "node"})["token"])

    def nodes(self) -> list[dict]:
        with self.admin() as admin:
            return list(admin.get("/v1/nodes"))

    def start_node(self, name: str, *extra: str, netns: NatNamespace | None = None) -> Daemon:
        argv = [*LIMEN, "start", "--roles", "node", "--token", self.token(),
                "--proxy", self.web_addr, "--insecure", "--name", name,
                "--data-dir", str(self.root / name), *extra]
        daemon = Daemon(netns.exec_argv(*argv) if netns else argv, self.root / f"{name}.log",
                        self.env)
        self.daemons.append(daemon)
        wait_for(lambda: daemon.alive() and any(
            n["name"] == name and n["online"] for n in self.nodes()), 30, f"{name} online")
        return daemon

    def stop(self) -> None:
        for daemon in [*self.daemons, self.proxy]:
            daemon.stop()


def start_cluster(root: Path, env: dict[str, str], mode: str, host: str) -> Cluster:
    data = root / "auth"
    config = root / "limen.yaml"
    config.write_text(
        f"cluster_name: {CLUSTER}\n"
        f"data_dir: {data}\n"
        "log_level: warning\n"
        "auth: {listen_addr: '127.0.0.1:0'}\n"
        f"proxy: {{listener_mode: {mode}, web_listen_addr: '{host}:0',\n"
        f"        ssh_listen_addr: '{host}:0', tunnel_listen_addr: '{host}:0',\n"
        "        rate_limit: {average_per_minute: 100000, burst: 100000}}\n"
    )
    proxy = Daemon([*LIMEN, "start", "--config", str(config), "--roles", "auth,proxy"],
                   root / "proxy.log", env)
    run = data / "run.json"
    wait_for(lambda: proxy.alive() and run.exists(), 30, "the auth and proxy service")
    addrs = json.loads(run.read_text())
    cluster = Cluster(root, env, proxy, data, addrs["web_addr"], 0, [])
    with cluster.admin() as admin:  # where agents are told to dial
        cluster.tunnel_port = int(admin.get("/v1/ping")["tunnel_addr"].rsplit(":", 1)[1])
    return cluster


def log_in(cluster: Cluster, home: Path) -> Path:
    """Sign up and log in a user; returns the `limen config` file for stock ssh."""
    with cluster.admin() as admin:
        issued = admin.post("/v1/users", {"name": "bench", "roles": ["access"],
                                          "logins": ["root"]})
    now = datetime.now(UTC)
    ca = (cluster.data_dir / "ca" / "tls_ca.crt").read_text()
    with APIClient(cluster.web_addr, ca) as anonymous:
        secret = anonymous.post("/v1/signup/start", {"token": issued["token"]})["totp_secret"]
        anonymous.post("/v1/signup/finish", {"token": issued["token"], "password": PASSWORD,
                                             "otp": totp.code_at(secret, now)})
    env = {**cluster.env, "LIMEN_HOME": str(home)}
    next_code = totp.code_at(secret, now + timedelta(seconds=totp.STEP_SECONDS))
    subprocess.run([*LIMEN, "login", "--proxy", cluster.web_addr, "--user", "bench",
                    "--password-stdin", "--otp", next_code, "--insecure"],
                   input=PASSWORD + "\n", text=True, env=env, check=True, capture_output=True)
    printed = subprocess.run([*LIMEN, "config"], env=env, check=True, capture_output=True,
                             text=True).stdout
    path = home / "ssh_config"
    path.write_text(printed)
    return path


# measuring


def timed(command: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, shell=True, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"{command!r} failed ({done.returncode}): {done.stderr.decode()}")
    return time.perf_counter() - started


def ssh(config: Path, node: str, command: str) -> str:
    return shlex.join(["ssh", "-F", str(config), "-o", "BatchMode=yes",
                       f"root@{node}.{CLUSTER}", command])


def transfers(config: Path, size_mb: int, runs: int, env: dict[str, str]) -> dict:
    rates: dict[tuple[str, str], list[float]] = {}
    for _ in range(runs):
        for node in (DIRECT, TUNNELED):
            up = f"head -c {size_mb}M /dev/zero | {ssh(config, node, 'cat > /dev/null')}"
            down = f"{ssh(config, node, f'head -c {size_mb}M /dev/zero')} > /dev/null"
            rates.setdefault((node, "up"), []).append(size_mb / timed(up, env))
            rates.setdefault((node, "down"), []).append(size_mb / timed(down, env))
    return {key: statistics.median(values) for key, values in rates.items()}


def latency(config: Path, runs: int, env: dict[str, str]) -> dict:
    waits: dict[str, list[float]] = {DIRECT: [], TUNNELED: []}
    for _ in range(runs):
        for node in waits:
            waits[node].append(timed(ssh(config, node, "true"), env))
    return {node: 1000 * statistics.median(values) for node, values in waits.items()}


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def idle_memory(cluster: Cluster, count: int) -> tuple[float, float]:
    """kB per idle tunnel on the proxy, and per tunneled node in the nodes' process."""
    proxy_before = rss_kb(cluster.proxy.pid)
    agents = Daemon([sys.executable, "-m", "tests.support.agents", "--proxy", cluster.web_addr,
                     "--token", cluster.token(), "--count", str(count),
                     "--base", str(cluster.root / "idle"), "--prefix", "idle-"],
                    cluster.root / "idle.log", cluster.env)
    cluster.daemons.append(agents)
    wait_for(lambda: agents.alive() and sum(
        n["name"].startswith("idle-") and n["online"] for n in cluster.nodes()) >= count,
        120, f"{count} idle tunnels")
    time.sleep(5)  # let the handshakes' garbage go and the feeds settle
    proxy_after = rss_kb(cluster.proxy.pid)
    nodes_rss = rss_kb(agents.pid)
    agents.stop()
    one = Daemon([sys.executable, "-m", "tests.support.agents", "--proxy", cluster.web_addr,
                  "--token", cluster.token(), "--count", "1",
                  "--base", str(cluster.root / "idle1"), "--prefix", "single-"],
                 cluster.root / "idle1.log", cluster.env)
    cluster.daemons.append(one)
    wait_for(lambda: one.alive() and any(
        n["name"].startswith("single-") and n["online"] for n in cluster.nodes()), 60,
        "one idle tunnel")
    time.sleep(5)
    base_rss = rss_kb(one.pid)
    one.stop()
    return (proxy_after - proxy_before) / count, (nodes_rss - base_rss) / (count - 1)


_COUNTERS = re.compile(r"\b(bytes_acked|bytes_received|segs_out|segs_in):(\d+)")


def tunnel_counters(ns: NatNamespace, port: int) -> dict[str, int]:
    """The kernel's TCP counters of the namespace's connection to the tunnel port."""
    out = subprocess.run(ns.exec_argv("ss", "-Htin", "state", "established",
                                      "dport", f"= :{port}"),
                         capture_output=True, text=True, check=True).stdout
    totals = {"bytes_acked": 0, "bytes_received": 0, "segs_out": 0, "segs_in": 0}
    for name, value in _COUNTERS.findall(out):
        totals[name] += int(value)
    return totals


def veth_counters(ns: NatNamespace) -> dict[str, int]:
    """Bytes and frames both ways on the host's end of the namespace's veth."""
    out = subprocess.run(["ip", "-s", "-j", "link", "show", ns.host_veth],
                         capture_output=True, text=True, check=True).stdout
    stats = json.loads(out)[0]["stats64"]
    return {"bytes": stats["rx"]["bytes"] + stats["tx"]["bytes"],
            "packets": stats["rx"]["packets"] + stats["tx"]["packets"]}


def idle_traffic(ns: NatNamespace, tunnel_port: int | None,
                 seconds: float) -> dict[str, float]:
    """Per hour while nothing happens: all the idle node's traffic, and its tunnel's
    (when the tunnel has a port of its own to tell its socket by)."""
    tunnel_before = tunnel_counters(ns, tunnel_port) if tunnel_port else {}
    veth_before = veth_counters(ns)
    time.sleep(seconds)
    tunnel_after = tunnel_counters(ns, tunnel_port) if tunnel_port else {}
    veth_after = veth_counters(ns)
    hourly = 3600 / seconds
    result = {
        "all_bytes": (veth_after["bytes"] - veth_before["bytes"]) * hourly,
        "all_packets": (veth_after["packets"] - veth_before["packets"]) * hourly,
    }
    if tunnel_port:
        tunnel = {k: tunnel_after[k] - tunnel_before[k] for k in tunnel_after}
        result["tunnel_payload"] = (tunnel["bytes_acked"] + tunnel["bytes_received"]) * hourly
        result["tunnel_segments"] = (tunnel["segs_out"] + tunnel["segs_in"]) * hourly
    return result


# report


def report(args: argparse.Namespace, rates: dict, lat: dict, memory: tuple[float, float],
           traffic: dict) -> None:
    how = ("SSH in TLS to the web port" if args.listener_mode == "multiplex"
           else "plain SSH to the tunnel port")
    print(f"{args.size_mb} MB x{args.transfers} each way (median MB/s, handshakes included); "
          f"latency of ssh true x{args.runs} (median); agents dial {how}")
    print(f"{'path':<10}{'upload MB/s':>13}{'download MB/s':>15}{'latency ms':>12}")
    for label, node in (("direct", DIRECT), ("tunnel", TUNNELED)):
        print(f"{label:<10}{rates[node, 'up']:>13.1f}{rates[node, 'down']:>15.1f}"
              f"{lat[node]:>12.1f}")
    print(f"{'ratio':<10}{rates[TUNNELED, 'up'] / rates[DIRECT, 'up']:>13.2f}"
          f"{rates[TUNNELED, 'down'] / rates[DIRECT, 'down']:>15.2f}"
          f"{lat[TUNNELED] / lat[DIRECT]:>12.2f}   (tunnel / direct)")
    proxy_kb, node_kb = memory
    print(f"idle tunnel memory ({args.idle_nodes} tunneled nodes): proxy {proxy_kb:.0f} kB "
          f"per tunnel; node process {node_kb:.0f} kB per node (the whole node role)")
    share = (f"the tunnel's share {traffic['tunnel_payload'] / 1024:.1f} kB/h of TCP payload "
             f"in {traffic['tunnel_segments']:.0f} segments/h" if "tunnel_payload" in traffic
             else "the tunnel shares the web port (--listener-mode separate shows its share)")
    print(f"idle node traffic (watched {args.idle_seconds:g} s): "
          f"{traffic['all_bytes'] / 1024:.1f} kB/h in {traffic['all_packets']:.0f} frames/h "
          f"in all (tunnel, heartbeats, access feed); {share}")


def main() -> None:
    args = parse_args()
    root = Path(tempfile.mkdtemp(prefix="limen-bench-tunnel-"))
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    env["LC_ALL"] = "C"
    ns = NatNamespace.create()
    cluster = start_cluster(root, env, args.listener_mode, ns.host_addr)
    try:
        cluster.start_node(DIRECT, "--advertise-addr", "127.0.0.1", "--listen-addr",
                           "127.0.0.1:0")
        cluster.start_node(TUNNELED)
        cluster.start_node(IDLE, netns=ns)
        config = log_in(cluster, root / "home")
        for node in (DIRECT, TUNNELED):  # warm-up: page cache, first handshakes
            timed(ssh(config, node, "true"), env)
        time.sleep(5)  # let the idle node's start-up traffic pass
        web_port = int(cluster.web_addr.rsplit(":", 1)[1])
        own_port = cluster.tunnel_port if cluster.tunnel_port != web_port else None
        traffic = idle_traffic(ns, own_port, args.idle_seconds)
        rates = transfers(config, args.size_mb, args.transfers, env)
        lat = latency(config, args.runs, env)
        memory = idle_memory(cluster, args.idle_nodes)
        report(args, rates, lat, memory, traffic)
    finally:
        try:
            cluster.stop()
        finally:
            ns.remove()


if __name__ == "__main__":
    main()

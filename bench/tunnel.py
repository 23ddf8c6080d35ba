"""Benchmark: a node reached through its reverse tunnel against a direct node, same run.

Run by hand from the repository root, as root (the nodes run shells):

    .venv/bin/python bench/tunnel.py [--size-mb 200] [--transfers 3] [--runs 30]
                                     [--idle-nodes 50] [--idle-seconds 150]

It starts `limen start --roles auth,proxy` and three `limen start --roles node` processes
joined with a token: one direct (--advertise-addr: the proxy dials it) and two tunneled
(no address: they dial the proxy's tunnel server). The first tunneled one takes each
session on a connection it dials back (the default, limen.tunnel.data_link); the
second (``tunnel_data_connections: false``) inside its tunnel. The client is stock
OpenSSH with the config `limen config` writes, on the same path up to the proxy, so only
the last hop differs. Interleaved so drift hits all three alike:

- upload and download throughput (``head -c SIZE /dev/zero | ssh ... 'cat >/dev/null'``
  and the reverse), median, handshakes included, and the CPU seconds per GB the proxy
  and that node's process spent meanwhile (what a tunnel costs, even when the machine's
  other load changes the rates);
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
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import (
    LOGIN,
    Cluster,
    Daemon,
    Way,
    bench_env,
    cpu_seconds,
    latency,
    log_in,
    rss_kb,
    start_cluster,
    timed,
    upload_command,
    wait_for,
)

from tests.support.netns import NatNamespace

CLUSTER = "bench.limen"
DIRECT, TUNNELED, CHANNEL, IDLE = "bench-direct", "bench-tunnel", "bench-channel", "bench-idle"
PATHS = (("direct", DIRECT), ("tunnel", TUNNELED), ("in-tunnel", CHANNEL))


def _at_least_two(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError("needs at least 2 (memory per node is measured "
                                         "against a process holding one)")
    return value


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=200, help="transfer size (default 200)")
    parser.add_argument("--transfers", type=int, default=3, help="runs per direction (3)")
    parser.add_argument("--runs", type=int, default=30, help="latency samples (default 30)")
    parser.add_argument("--idle-nodes", type=_at_least_two, default=50,
                        help="extra tunneled nodes for the memory figure (default 50, "
                             "at least 2: the figure is a difference against one)")
    parser.add_argument("--idle-seconds", type=float, default=150,
                        help="how long to watch an idle tunnel's traffic (default 150)")
    parser.add_argument("--listener-mode", choices=("multiplex", "separate"),
                        default="multiplex",
                        help="multiplex (default): agents tunnel through the web port, SSH "
                             "inside TLS; separate: plain SSH to the dedicated tunnel port")
    return parser.parse_args()


# measuring


def way(config: Path, node: str) -> Way:
    return Way(node, ["ssh", "-F", str(config), "-o", "BatchMode=yes",
                      f"{LOGIN}@{node}.{CLUSTER}"])


@dataclass
class Transfers:
    mb_s: dict[tuple[str, str], float]  # (node, "up"/"down"): median
    cpu_s_per_gb: dict[tuple[str, str, str], float]  # (node, direction, "proxy"/"node")


def transfers(ways: list[Way], size_mb: int, runs: int, env: dict[str, str],
              proxy_pid: int, node_pids: dict[str, int]) -> Transfers:
    rates: dict[tuple[str, str], list[float]] = {}
    used: dict[tuple[str, str, str], float] = {}
    for _ in range(runs):
        for path in ways:
            down = f"{path.shell(f'head -c {size_mb}M /dev/zero')} > /dev/null"
            clocks = {"proxy": proxy_pid, "node": node_pids[path.name]}
            for direction, command in (("up", upload_command(path, size_mb)), ("down", down)):
                before = {name: cpu_seconds(pid) for name, pid in clocks.items()}
                rates.setdefault((path.name, direction), []).append(
                    size_mb / timed(command, env))
                for name, pid in clocks.items():
                    key = (path.name, direction, name)
                    used[key] = used.get(key, 0.0) + cpu_seconds(pid) - before[name]
    gigabytes = runs * size_mb / 1024
    return Transfers({key: statistics.median(values) for key, values in rates.items()},
                     {key: seconds / gigabytes for key, seconds in used.items()})


def idle_memory(cluster: Cluster, count: int) -> tuple[float, float]:
    """kB per idle tunnel on the proxy, and per tunneled node in the nodes' process."""
    proxy_before = rss_kb(cluster.proxy.pid)
    agents = Daemon([sys.executable, "-m", "tests.support.agents", "--proxy", cluster.web_addr,
                     "--token", cluster.token(count), "--count", str(count),
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


def report(args: argparse.Namespace, moved: Transfers, lat: dict,
           memory: tuple[float, float], traffic: dict) -> None:
    rates, cpu = moved.mb_s, moved.cpu_s_per_gb
    how = ("SSH in TLS to the web port" if args.listener_mode == "multiplex"
           else "plain SSH to the tunnel port")
    print(f"{args.size_mb} MB x{args.transfers} each way (median MB/s, handshakes included); "
          f"latency of ssh true x{args.runs} (median); agents dial {how}")
    print(f"{'path':<11}{'upload MB/s':>13}{'download MB/s':>15}{'latency ms':>12}")
    for label, node in PATHS:
        print(f"{label:<11}{rates[node, 'up']:>13.1f}{rates[node, 'down']:>15.1f}"
              f"{lat[node]:>12.1f}")
    for label, node in PATHS[1:]:
        print(f"{'ratio':<11}{rates[node, 'up'] / rates[DIRECT, 'up']:>13.2f}"
              f"{rates[node, 'down'] / rates[DIRECT, 'down']:>15.2f}"
              f"{lat[node] / lat[DIRECT]:>12.2f}   ({label} / direct)")
    print("CPU seconds per GB moved (the proxy's process, the node's):")
    for label, node in PATHS:
        print(f"  {label:<10}" + "; ".join(
            f"{direction} proxy {cpu[node, direction, 'proxy']:.2f}, "
            f"node {cpu[node, direction, 'node']:.2f}" for direction in ("up", "down")))
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
    env = bench_env()
    ns = NatNamespace.create()
    cluster = start_cluster(root, env, CLUSTER, args.listener_mode, ns.host_addr)
    try:
        direct = cluster.start_node(DIRECT, direct=True)
        tunneled = cluster.start_node(TUNNELED)
        channel_config = root / "channel.yaml"
        channel_config.write_text("ssh: {tunnel_data_connections: false}\n")
        channel = cluster.start_node(CHANNEL, "--config", str(channel_config))
        cluster.start_node(IDLE, launcher=lambda argv: ns.exec_argv(*argv))
        config = log_in(cluster, root / "home")
        ways = [way(config, node) for _label, node in PATHS]
        for path in ways:  # warm-up: page cache, first handshakes
            timed(path.shell("true"), env)
        time.sleep(5)  # let the idle node's start-up traffic pass
        web_port = int(cluster.web_addr.rsplit(":", 1)[1])
        own_port = cluster.tunnel_port if cluster.tunnel_port != web_port else None
        traffic = idle_traffic(ns, own_port, args.idle_seconds)
        moved = transfers(ways, args.size_mb, args.transfers, env, cluster.proxy.pid,
                          {DIRECT: direct.pid, TUNNELED: tunneled.pid, CHANNEL: channel.pid})
        lat = latency(ways, args.runs, env)
        memory = idle_memory(cluster, args.idle_nodes)
        report(args, moved, lat, memory, traffic)
    finally:
        try:
            cluster.stop()
        finally:
            ns.remove()


if __name__ == "__main__":
    main()

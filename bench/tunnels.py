"""Benchmark: many tunneled nodes on one proxy (issue 17, goal 6), in one run.

Run by hand from the repository root, as root (the nodes run shells):

    .venv/bin/python bench/tunnels.py [--nodes 50] [--idle-seconds 20]
    .venv/bin/python bench/tunnels.py --nodes 3000      # the full figure (long)
    .venv/bin/python bench/tunnels.py --nodes 3000 --skip-restart   # no restart

It starts `limen start --roles auth,proxy` on a fixed web port (agents dial it; a
restarted proxy must be found there again), then --nodes simulated nodes in one process
(tests/support/agents.py): each a whole node role with its own identity (joined with
a token, its own host certificate, heartbeats, the access feed, its SSH service) and its
reverse tunnel into the web port, SSH inside TLS (--agent-processes N splits them over N
processes). It logs a user in and prints:

- joined: the time until all nodes are online (each joins, is issued a host
  certificate, and opens its tunnel), the nodes started --rate a second;
- memory per tunnel: the proxy's RSS growth over all tunnels, divided by their number,
  and the agents' processes per node (the whole node role);
- idle CPU of the proxy while every tunnel is up and nothing happens (share of one
  core over --idle-seconds; the goal: under 5%);
- a session to a random node while all are connected (stock ssh with the config
  `limen config` writes, ``true``), against a session to a node when it is the only
  one: the baseline in the same run (ratio printed);
- reconnection after a proxy restart: the proxy is stopped (SIGTERM) and started again
  on the same port; the agents come back with jittered exponential backoff (capped at
  10 s). Printed: the time until 50%, 90% and all of the nodes are online again (the
  goal: all within 60 s), and the most nodes that came back in any one second (the
  herd the auth service sees; with no jitter it would be all of them at once).
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
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
    log_in,
    rss_kb,
    start_cluster,
    start_proxy,
    timed,
    wait_for,
)

CLUSTER = "bench.limen"
PREFIX = "tn-"
RECONNECT_GOAL = 60.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=50, help="tunneled nodes (default 50)")
    parser.add_argument("--idle-seconds", type=float, default=20,
                        help="how long to watch the idle proxy's CPU (default 20)")
    parser.add_argument("--sessions", type=int, default=5,
                        help="sessions to random nodes, and to the single node (default 5)")
    # On the 2-core reference machine one proxy admits about 5 joins a second (each: a
    # TLS handshake, the join, a host certificate, then the tunnel's SSH-in-TLS
    # handshake); started faster, joins queue until the nodes' 15 s timeout.
    parser.add_argument("--rate", type=int, default=5,
                        help="nodes started per second, as a fleet joins (default 5)")
    parser.add_argument("--max-handshakes", type=int, default=128,
                        help="the proxy's bound on handshakes in progress (its default: 128)")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="how long all nodes may take to join (default 1800 s)")
    parser.add_argument("--agent-processes", type=int, default=1,
                        help="processes the simulated nodes are split over (default 1)")
    parser.add_argument("--skip-restart", action="store_true",
                        help="stop after the idle CPU and the sessions (no proxy restart)")
    return parser.parse_args()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def online_count(cluster: Cluster, prefix: str = PREFIX) -> int:
    """Tunneled nodes online now; 0 while the proxy does not answer (restarting, or its
    bound on handshakes in progress turning the bench's own connection away)."""
    try:
        return sum(n["name"].startswith(prefix) and n["online"] for n in cluster.nodes())
    except Exception:  # noqa: BLE001 - asked again at the next look
        return 0


@dataclass
class Fleet:
    """The simulated nodes, split over one or more processes."""

    daemons: list[Daemon]
    names: list[str]

    @property
    def pids(self) -> list[int]:
        return [daemon.pid for daemon in self.daemons]

    def alive(self) -> bool:
        return all(daemon.alive() for daemon in self.daemons)

    def log(self) -> str:
        return "".join(daemon.log.read_text() for daemon in self.daemons)

    def cpu_seconds(self) -> float:
        return sum(map(cpu_seconds, self.pids))

    def rss_kb(self) -> int:
        return sum(map(rss_kb, self.pids))

    def stop(self, cluster: Cluster) -> None:
        for daemon in self.daemons:
            daemon.stop()
            cluster.daemons.remove(daemon)


def start_agents(cluster: Cluster, count: int, prefix: str, timeout: float,
                 rate: int = 0, processes: int = 1) -> tuple[Fleet, float]:
    started = time.monotonic()
    # A join that times out is tried again (up to 4 more times): the token has a use for
    # each retry of a fifth of the fleet.
    token = cluster.token(count + count // 5 + 1)
    fleet = Fleet([], [])
    for k in range(processes):
        part = _share(count, processes, k)
        names = prefix if processes == 1 else f"{prefix}{k}-"
        daemon = Daemon([sys.executable, "-m", "tests.support.agents",
                         "--proxy", cluster.web_addr, "--token", token, "--count", str(part),
                         "--base", str(cluster.root / names), "--prefix", names,
                         "--rate", str(max(1, _share(rate, processes, k)) if rate else 0),
                         "--attempts", "5"],
                        cluster.root / f"{names}agents.log", cluster.env)
        cluster.daemons.append(daemon)
        fleet.daemons.append(daemon)
        fleet.names += [f"{names}{i:02d}" for i in range(part)]
    # Once a second: each look lists every node, work the proxy would otherwise spend
    # on the joins being measured.
    wait_for(lambda: fleet.alive() and online_count(cluster, prefix) >= count,
             timeout, f"{count} tunneled nodes online", interval=1.0)
    return fleet, time.monotonic() - started


def _share(total: int, parts: int, k: int) -> int:
    """Part ``k`` of ``total`` split as evenly as can be over ``parts``."""
    return total // parts + (k < total % parts)


def sessions(way_of: list[Way], count: int, env: dict[str, str]) -> float:
    """Median ms of ``ssh ... true`` over ``count`` sessions, each to a way picked at random."""
    return 1000 * statistics.median(timed(random.choice(way_of).shell("true"), env)
                                    for _ in range(count))


@dataclass
class Reconnection:
    back: list[float]  # when each node was back, seconds after the new proxy started
    answered: float  # when the listing first showed a node (those before count then)
    proxy_cpu: float  # seconds of CPU the new proxy used until all were back (start-up too)
    proxy_cpu_answered: float  # of which until the listing first showed a node
    agents_cpu: float  # and the agents' processes in the same time


def restart(cluster: Cluster, agents: Fleet, count: int, env: dict[str, str]) -> Reconnection:
    """Stop and start the proxy; see when each node is back, by polling the node listing."""
    cluster.proxy.stop()
    started = time.monotonic()
    agents_before = agents.cpu_seconds()
    cluster.proxy = start_proxy(cluster.root, env, "proxy-restarted.log")
    back: list[float] = []
    answered = 0.0
    proxy_cpu = proxy_cpu_answered = 0.0
    while len(back) < count:
        if time.monotonic() - started > 10 * RECONNECT_GOAL:
            break
        cluster.proxy.alive()
        online = online_count(cluster)
        now = time.monotonic() - started
        proxy_cpu = cpu_seconds(cluster.proxy.pid)
        if online and not answered:
            answered, proxy_cpu_answered = now, proxy_cpu
        back.extend([now] * (online - len(back)))
        time.sleep(0.5)  # each look lists every node: not so often it slows the return
    return Reconnection(back, answered, proxy_cpu, proxy_cpu_answered,
                        agents.cpu_seconds() - agents_before)


def main() -> None:
    args = parse_args()
    root = Path(tempfile.mkdtemp(prefix="limen-bench-tunnels-"))
    env = bench_env()
    cluster = start_cluster(root, env, CLUSTER, web_port=free_port(),
                            max_handshakes=args.max_handshakes)
    try:
        config = log_in(cluster, root / "home")
        ssh = ["ssh", "-F", str(config), "-o", "BatchMode=yes"]

        def way(name: str) -> Way:
            return Way(name, [*ssh, f"{LOGIN}@{name}.{CLUSTER}"])

        # The baseline: one tunneled node on a proxy that holds nothing else.
        single, _ = start_agents(cluster, 1, "single-", 120)
        timed(way("single-00").shell("true"), env)  # warm-up
        alone_ms = sessions([way("single-00")], args.sessions, env)
        single.stop(cluster)

        proxy_before = rss_kb(cluster.proxy.pid)
        agents, joined = start_agents(cluster, args.nodes, PREFIX, args.timeout, args.rate,
                                      args.agent_processes)
        log = agents.log()
        turned_away = log.count("admitting other nodes")  # 503 + Retry-After, then back
        failed = log.count("start failed")  # a join or the tunnel failed (a timeout)
        time.sleep(5)  # let the joins' garbage go and the feeds settle
        proxy_kb = (rss_kb(cluster.proxy.pid) - proxy_before) / args.nodes
        node_kb = agents.rss_kb() / args.nodes
        cpu_before = cpu_seconds(cluster.proxy.pid)
        print(f"(all {args.nodes} joined; measuring the idle proxy, pid {cluster.proxy.pid}, "
              f"for {args.idle_seconds:g} s)", flush=True)  # a cue for a profiler
        time.sleep(args.idle_seconds)
        idle_share = (cpu_seconds(cluster.proxy.pid) - cpu_before) / args.idle_seconds
        nodes = [way(name) for name in agents.names]
        busy_ms = sessions(nodes, args.sessions, env)

        again = None if args.skip_restart else restart(cluster, agents, args.nodes, env)
        after_ms = (sessions(nodes, args.sessions, env)
                    if again is not None and len(again.back) == args.nodes else None)
        report(args, joined, proxy_kb, node_kb, idle_share, alone_ms, busy_ms, after_ms, again)
        print(f"while joining:            {turned_away} joins told to come back later (503, "
              f"Retry-After); {failed} node starts failed and were tried again")
    finally:
        cluster.stop()


def report(args: argparse.Namespace, joined: float, proxy_kb: float, node_kb: float,
           idle_share: float, alone_ms: float, busy_ms: float, after_ms: float | None,
           again: Reconnection | None) -> None:
    n = args.nodes
    where = ("one process" if args.agent_processes == 1
             else f"{args.agent_processes} processes")
    print(f"{n} tunneled nodes in {where}, SSH inside TLS to the proxy's web port "
          f"(at most {args.max_handshakes} handshakes in progress)")
    print(f"joined and online:        {joined:.1f} s ({n / joined:.1f} nodes/s, a host "
          "certificate each)")
    print(f"memory per tunnel:        proxy {proxy_kb:.0f} kB; agents "
          f"{node_kb:.0f} kB per node (the whole node role)")
    print(f"proxy idle CPU:           {idle_share:.1%} of a core over {args.idle_seconds:g} s "
          f"(goal < 5%: {'met' if idle_share < 0.05 else 'not met'})")
    print(f"ssh true, random node:    {busy_ms:.0f} ms median with all {n} connected; "
          f"{alone_ms:.0f} ms to a node alone on the proxy; ratio {busy_ms / alone_ms:.2f}")
    if again is None:
        return
    back, answered = again.back, again.answered
    if len(back) < n:
        print(f"after a proxy restart:    only {len(back)} of {n} back within "
              f"{10 * RECONNECT_GOAL:.0f} s")
        return
    herd = max(sum(1 for t in back if int(t) == second) for second in range(int(back[-1]) + 1))
    print(f"after a proxy restart:    50% back in {back[n // 2 - 1 if n > 1 else 0]:.1f} s, "
          f"90% in {back[max(0, int(0.9 * n) - 1)]:.1f} s, all in {back[-1]:.1f} s (goal "
          f"<= {RECONNECT_GOAL:g} s: {'met' if back[-1] <= RECONNECT_GOAL else 'not met'}); "
          f"at most {herd} nodes came back in one second (the restarted proxy's API "
          f"answered after {answered:.1f} s: nodes back before then count at that second)")
    # Real nodes reconnect on their own machines; here one process plays them all, on the
    # same two cores as the proxy. Its share says whether it, not the proxy, set the pace.
    early = sum(1 for t in back if t <= answered)  # back when the listing first answered
    later_ms = 1000 * (again.proxy_cpu - again.proxy_cpu_answered) / max(1, n - early)
    print(f"CPU until all were back:  proxy {again.proxy_cpu:.1f} s, "
          f"{again.proxy_cpu_answered:.1f} s of it until its listing first answered "
          f"({early} nodes back by then), "
          f"{later_ms:.0f} ms per node after that; agents {again.agents_cpu:.1f} s "
          f"({again.agents_cpu / back[-1]:.0%} of a core over those {back[-1]:.0f} s)")
    if after_ms is not None:
        print(f"ssh true, random node, after the restart: {after_ms:.0f} ms median")


if __name__ == "__main__":
    main()

"""Benchmark: new SSH sessions per second through Limen (proxy + node) against OpenSSH
(jump sshd + sshd), same run, with the set-up latency at that rate.

Run by hand from the repository root, as root (the node and the sshds run commands):

    .venv/bin/python bench/sessions.py [--concurrency 8,16,32] [--seconds 20] [--rounds 2]

It starts `limen start --roles auth,proxy`, a direct `limen start --roles node` joined
with a token, logs a user in, and starts two stock sshds that trust the cluster's user
CA (as bench/ssh.py does). The load generator is asyncssh in this process, the same
client on both paths: N workers each loop on a whole session for --seconds: log in at
the jump host, open a channel to the node through it, log in at the node, run ``true``,
wait for its exit status, close both connections. The paths alternate for --rounds
rounds so that drift in the machine's load hits them alike.

How many sessions a second a path sustains is its rate once the cores are busy: with too
few workers a path waits on its own latency with CPU to spare, and its rate says how fast
one session is, not how many the servers take. So each path runs at each of the
--concurrency levels (8, 16 and 32 workers by default, as OpenSSH's own sshd keeps up to
MaxStartups handshakes going), and the goal compares each path's best level with the
other's: its capacity, with the p99 set-up latency at that rate.

Printed per path and level: sessions/s (completed sessions over the wall time of its
rounds), the set-up latency (start of the jump connection to the exit status) at p50 and
p99, and where that time goes (median of each step: jump login, node login through the
jump host, the command), the CPU the servers used per session (and each of the two), and
the CPU the load generator used per session (it shares the cores); then the ratios
Limen / OpenSSH at each level, and the best level of each against the other's: the goal
of issue 17 is sessions/s >= 2x OpenSSH's ``ssh -J``. Last, the sessions each path gets
from a CPU-second (servers and load generator together) at its best level: where the run
keeps the cores busy, the rate ratio follows it, and it moves less from run to run than
the rates do when the machine's other load comes and goes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

# common first: it puts the repository root on sys.path for tests.proxy.support.
from common import LOGIN, Cluster, bench_env, log_in, memory_kb, start_cluster
from ssh import openssh_servers

from limen.client.ssh import client_algs

CLUSTER = "test.limen"  # tests.proxy.support names sshd host certificates for it
NODE_NAME = "bench-node"
STEPS = ("jump login", "node login", "command")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=levels, default=[8, 16, 32],
                        help="workers, or several levels comma-separated (default 8,16,32)")
    parser.add_argument("--seconds", type=float, default=20, help="per path and round (20)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per path (default 2)")
    return parser.parse_args()


def levels(text: str) -> list[int]:
    """``8`` or ``8,16,32``: the numbers of workers each path runs with."""
    try:
        found = [int(part) for part in text.split(",")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"not a number or a comma-separated list: {text!r}") from exc
    if not found or min(found) < 1:
        raise argparse.ArgumentTypeError("each level needs at least one worker")
    return found


@dataclass
class Target:
    """Where a session goes: the jump host, then the node behind it."""

    name: str
    jump: tuple[str, int]
    node: tuple[str, int]
    server_pids: list[int]  # whose CPU counts as the servers': the jump host's, the node's


@dataclass
class Tally:
    sessions: int = 0
    failures: int = 0
    wall: float = 0.0
    cpu: list[float] = field(default_factory=lambda: [0.0, 0.0])  # jump host, node
    client_cpu: float = 0.0  # this process: the load generator
    setups: list[float] = field(default_factory=list)
    steps: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STEPS})


@dataclass
class Credentials:
    key: asyncssh.SSHKey
    cert: asyncssh.SSHCertificate
    known_hosts: asyncssh.SSHKnownHosts


def credentials(config: Path) -> Credentials:
    """The key, certificate and known_hosts the `limen config` file names."""
    values = dict(line.split(None, 1) for line in config.read_text().splitlines()
                  if line.startswith("    ") and " " in line.strip())
    values = {k.strip(): v.strip().strip('"') for k, v in values.items()}
    return Credentials(asyncssh.read_private_key(values["IdentityFile"]),
                       asyncssh.read_certificate(values["CertificateFile"]),
                       asyncssh.read_known_hosts(values["UserKnownHostsFile"]))


async def one_session(target: Target, creds: Credentials, tally: Tally) -> None:
    options = {"username": LOGIN, "client_keys": [(creds.key, creds.cert)],
               "known_hosts": creds.known_hosts, "agent_path": None, "config": [],
               "preferred_auth": "publickey", **client_algs()}
    started = time.perf_counter()
    async with asyncssh.connect(*target.jump, **options) as jump:
        jumped = time.perf_counter()
        async with asyncssh.connect(*target.node, tunnel=jump, **options) as node:
            logged_in = time.perf_counter()
            result = await node.run("true", check=True)
            done = time.perf_counter()
    assert result.exit_status == 0
    tally.setups.append(done - started)
    for step, seconds in zip(STEPS, (jumped - started, logged_in - jumped, done - logged_in),
                             strict=True):
        tally.steps[step].append(seconds)


async def load(target: Target, creds: Credentials, workers: int, seconds: float,
               tally: Tally) -> None:
    """``workers`` loops of whole sessions for ``seconds``."""
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            try:
                await one_session(target, creds, tally)
                tally.sessions += 1
            except (OSError, asyncssh.Error) as exc:
                tally.failures += 1
                if tally.failures <= 3:
                    print(f"  {target.name}: a session failed: {exc!r}")

    cpu_before = [tree_cpu(pid) for pid in target.server_pids]
    client_before = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    tally.wall += time.perf_counter() - started
    tally.client_cpu += time.process_time() - client_before
    for side, (pid, before) in enumerate(zip(target.server_pids, cpu_before, strict=True)):
        tally.cpu[side] += tree_cpu(pid) - before


def tree_cpu(pid: int) -> float:
    """User + system CPU of a server and of its children it has reaped (an sshd's
    per-connection processes, the sessions' commands on either server)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def rate(tally: Tally) -> float:
    return tally.sessions / tally.wall if tally.wall else 0.0


def cost(tally: Tally) -> float:
    """CPU seconds per session, servers and load generator together."""
    return (sum(tally.cpu) + tally.client_cpu) / max(tally.sessions, 1)


def report(args: argparse.Namespace, tallies: dict[tuple[str, int], Tally]) -> None:
    print(f"asyncssh clients at {', '.join(map(str, args.concurrency))} workers, "
          f"{args.seconds:g} s x{args.rounds} per path and level (interleaved); a session = "
          "jump login + node login + `true`")
    print(f"{'path':<10}{'workers':>8}{'sessions/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'failed':>8}"
          + "".join(f"{s + ' ms':>15}" for s in STEPS) + f"{'server CPU ms/session':>24}"
          + f"{'(jump':>7}{'node)':>7}{'client CPU':>12}")
    for (name, workers), tally in tallies.items():
        if not tally.sessions:
            print(f"{name:<10}{workers:>8}{'no session completed':>31}{tally.failures:>8}")
            continue
        steps = "".join(f"{1000 * statistics.median(tally.steps[s]):>15.1f}" for s in STEPS)
        per = 1000 / tally.sessions
        cpu = (f"{per * sum(tally.cpu):>24.1f}" + "".join(f"{per * c:>7.1f}" for c in tally.cpu)
               + f"{per * tally.client_cpu:>12.1f}")
        print(f"{name:<10}{workers:>8}{rate(tally):>11.1f}"
              f"{1000 * statistics.median(tally.setups):>9.1f}{1000 * p99(tally.setups):>9.1f}"
              f"{tally.failures:>8}{steps}{cpu}")
    for workers in args.concurrency:
        limen, openssh = tallies["Limen", workers], tallies["OpenSSH", workers]
        if rate(openssh):
            print(f"with {workers} workers: sessions/s Limen / OpenSSH "
                  f"{rate(limen) / rate(openssh):.2f}")
    best = {name: max(((t, w) for (n, w), t in tallies.items() if n == name),
                      key=lambda pair: rate(pair[0]))
            for name in ("Limen", "OpenSSH")}
    (limen, at), (openssh, their_at) = best["Limen"], best["OpenSSH"]
    if not (limen.setups and openssh.setups):
        print("a path completed no session: no ratio")
        return
    ratio = rate(limen) / rate(openssh)
    print(f"each path at its best level: Limen {rate(limen):.1f} sessions/s with {at} workers "
          f"(p99 {1000 * p99(limen.setups):.0f} ms), OpenSSH {rate(openssh):.1f} with "
          f"{their_at} (p99 {1000 * p99(openssh.setups):.0f} ms)")
    print(f"ratio sessions/s Limen / OpenSSH: {ratio:.2f} (goal >= 2.0: "
          f"{'met' if ratio >= 2 else 'not met'}); p99 ratio "
          f"{p99(limen.setups) / p99(openssh.setups):.2f}")
    print(f"CPU per session, servers and load generator together, at those levels: Limen "
          f"{1000 * cost(limen):.1f} ms, OpenSSH {1000 * cost(openssh):.1f} ms; sessions per "
          f"CPU-second Limen / OpenSSH: {cost(openssh) / cost(limen):.2f} (on cores the run "
          "keeps busy, the rate ratio follows this one)")
    print("server CPU: the auth+proxy and node processes / the two sshds, with the "
          "children each reaped (sshd's per-connection processes, the commands); client "
          "CPU: this process, the asyncssh load generator, on the same cores")


async def run(args: argparse.Namespace, cluster: Cluster, node_pid: int, root: Path) -> None:
    config = log_in(cluster, root / "home")
    creds = credentials(config)
    node_sshd, jump_sshd = openssh_servers(cluster, root)
    assert node_sshd.proc is not None and jump_sshd.proc is not None
    try:
        proxy_host, proxy_port = cluster.ssh_addr.rsplit(":", 1)
        targets = [
            Target("Limen", (proxy_host, int(proxy_port)), (f"{NODE_NAME}.{CLUSTER}", 22),
                   [cluster.proxy.pid, node_pid]),
            Target("OpenSSH", ("127.0.0.1", jump_sshd.port), ("127.0.0.1", node_sshd.port),
                   [jump_sshd.proc.pid, node_sshd.proc.pid]),
        ]
        tallies = {(t.name, workers): Tally() for workers in args.concurrency for t in targets}
        for target in targets:  # warm-up
            await load(target, creds, 1, 0.5, Tally())
        for workers in args.concurrency:
            for _ in range(args.rounds):
                for target in targets:
                    await load(target, creds, workers, args.seconds,
                               tallies[target.name, workers])
        report(args, tallies)
        print(f"Limen node memory after the run: {memory_kb(node_pid)[0] / 1024:.1f} MB RSS")
    finally:
        node_sshd.stop()
        jump_sshd.stop()


def main() -> None:
    args = parse_args()
    root = Path(tempfile.mkdtemp(prefix="limen-bench-sessions-"))
    env = bench_env()
    cluster = start_cluster(root, env, CLUSTER)
    try:
        node = cluster.start_node(NODE_NAME, direct=True)
        asyncio.run(run(args, cluster, node.pid, root))
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()

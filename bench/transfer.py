"""Benchmark: file transfers through Limen (proxy + node) against OpenSSH (jump sshd + sshd).

Run by hand from the repository root, as root (the sshds and the node run as root):

    .venv/bin/python bench/transfer.py [--size-mb 200] [--runs 3]

It starts `limen start --roles auth,proxy`, a direct `limen start --roles node` joined
with a token, and two stock sshds trusting the cluster's CAs (as bench/ssh.py does).
The client is stock OpenSSH on both paths with the config `limen config` writes; only
the servers differ. Each figure is the median MB/s of ``--runs`` copies of a
``--size-mb`` file kept in /dev/shm (so neither end's disk takes part), handshakes
included, the ways interleaved so drift in the machine's load hits them alike. The
Limen node's CPU seconds per GB moved are printed too: on a busy machine they move
less than throughput does.

- sftp put / get (`sftp -b`), the SFTP protocol the node audits packet by packet;
- scp (modern scp speaks SFTP) up / down;
- scp -O (the legacy scp protocol) up / down.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import asyncssh

# common first: it puts the repository root on sys.path for tests.proxy.support.
from common import LOGIN, Cluster, bench_env, cpu_seconds, log_in, start_cluster

from tests.proxy.support import Pki, Sshd

CLUSTER = "test.limen"  # tests.proxy.support names sshd host certificates for it
NODE_NAME = "bench-xfer"
SHM = Path("/dev/shm")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=200, help="file size (default 200)")
    parser.add_argument("--runs", type=int, default=3, help="copies per figure (default 3)")
    return parser.parse_args()


def openssh_servers(cluster: Cluster, root: Path) -> tuple[Sshd, Sshd]:
    cas = cluster.data_dir / "ca"
    pki = Pki(root / "pki", user_ca=asyncssh.read_private_key(str(cas / "user_ca")),
              host_ca=asyncssh.read_private_key(str(cas / "host_ca")))
    sftp = "Subsystem sftp /usr/lib/openssh/sftp-server\n"
    return Sshd(pki, root / "sshd-node", "osnode", extra=sftp).start(), \
        Sshd(pki, root / "sshd-jump", "osjump").start()


class Way:
    """One path to a node: ssh options and the host, for sftp and scp alike."""

    def __init__(self, name: str, options: list[str], host: str) -> None:
        self.name = name
        self.options = options
        self.host = host

    def sftp(self, batch: str) -> list[str]:
        return ["sftp", *self.options, "-b", batch, self.host]

    def scp(self, *args: str, legacy: bool = False) -> list[str]:
        return ["scp", *self.options, *(["-O"] if legacy else []), *args]


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} failed: {done.stderr.decode()}")
    return time.perf_counter() - started


def cases(way: Way, local: Path, back: Path, remote: str, batch_dir: Path
          ) -> dict[str, Callable[[], list[str]]]:
    put = batch_dir / "put"
    get = batch_dir / "get"
    put.write_text(f"put {local} {remote}\n")
    get.write_text(f"get {remote} {back}\n")
    target = f"{way.host}:{remote}"
    return {
        "sftp put": lambda: way.sftp(str(put)),
        "sftp get": lambda: way.sftp(str(get)),
        "scp up": lambda: way.scp(str(local), target),
        "scp down": lambda: way.scp(target, str(back)),
        "scp -O up": lambda: way.scp(str(local), target, legacy=True),
        "scp -O down": lambda: way.scp(target, str(back), legacy=True),
    }


def main() -> None:
    args = parse_args()
    root = Path(tempfile.mkdtemp(prefix="limen-bench-xfer-"))
    work = Path(tempfile.mkdtemp(prefix="limen-bench-xfer-", dir=SHM))
    env = bench_env()
    local = work / "payload.bin"
    with local.open("wb") as out:
        for _ in range(args.size_mb):
            out.write(os.urandom(1 << 20))
    cluster = start_cluster(root, env, CLUSTER)
    servers: tuple[Sshd, ...] = ()
    try:
        limen_node = cluster.start_node(NODE_NAME, "--labels", "env=bench", direct=True)
        config = log_in(cluster, root / "home")
        servers = openssh_servers(cluster, root)
        node, jump = servers
        base = ["-F", str(config), "-o", "BatchMode=yes"]
        ways = [
            Way("Limen", [*base, "-o", f"ProxyJump={LOGIN}@{cluster.ssh_addr}"],
                f"{LOGIN}@{NODE_NAME}.{CLUSTER}"),
            Way("OpenSSH", [*base, "-o", f"ProxyJump={LOGIN}@127.0.0.1:{jump.port}",
                            "-P", str(node.port)], f"{LOGIN}@127.0.0.1"),
        ]
        # sftp takes -P too; the port goes with the options on both tools.
        plans = {way.name: cases(way, local, work / f"back-{way.name}.bin",
                                 str(work / f"remote-{way.name}.bin"),
                                 Path(tempfile.mkdtemp(dir=work)))
                 for way in ways}
        rates: dict[str, dict[str, list[float]]] = {w.name: {} for w in ways}
        node_cpu: dict[str, float] = {}
        for _ in range(args.runs):
            for case in plans[ways[0].name]:
                for way in ways:
                    before = cpu_seconds(limen_node.pid)
                    seconds = timed(plans[way.name][case](), env)
                    rates[way.name].setdefault(case, []).append(args.size_mb / seconds)
                    if way.name == "Limen":
                        used = cpu_seconds(limen_node.pid) - before
                        node_cpu[case] = node_cpu.get(case, 0.0) + used
        gigabytes = args.runs * args.size_mb / 1024
        print(f"{args.size_mb} MB x{args.runs} (median MB/s, handshakes included; "
              "Limen node CPU s/GB)")
        print(f"{'case':<14}" + "".join(f"{w.name:>10}" for w in ways)
              + f"{'ratio':>8}{'node s/GB':>11}")
        for case in plans[ways[0].name]:
            figures = [statistics.median(rates[w.name][case]) for w in ways]
            print(f"{case:<14}" + "".join(f"{f:>10.1f}" for f in figures)
                  + f"{figures[0] / figures[1]:>8.2f}{node_cpu[case] / gigabytes:>11.2f}")
    finally:
        for server in servers:
            server.stop()
        cluster.stop()
        for path in sorted(work.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        work.rmdir()


if __name__ == "__main__":
    main()

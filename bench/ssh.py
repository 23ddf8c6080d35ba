"""Benchmark: SSH through Limen (proxy + node) against OpenSSH (jump sshd + sshd), same run.

Run by hand from the repository root, as root (the sshds and the node run shells):

    .venv/bin/python bench/ssh.py [--size-mb 500] [--uploads 3] [--runs 50] [--idle 100]

It starts `limen start --roles auth,proxy` and a `limen start --roles node` joined with
a token (separate processes, so the node's memory is its own), logs a user in, and
starts two stock sshds on loopback that trust the cluster's user CA and present host
certificates from its host CA. The client is stock OpenSSH on both paths, with the
config `limen config` writes, so only the servers differ:

- Limen:   ssh -F CFG -o ProxyJump=LOGIN@PROXY_SSH LOGIN@NODE.CLUSTER  (the proxy's SSH port)
- Limen, web port: ssh -F CFG LOGIN@NODE.CLUSTER (where `limen config` points, when that
  is the web port shared by HTTPS and SSH)
- OpenSSH: ssh -F CFG -J LOGIN@JUMP -p PORT LOGIN@127.0.0.1

LOGIN is bench/common.py's account (not root: see there why).

Figures, interleaved so drift hits both alike: upload throughput (``head -c SIZE
/dev/zero | ssh ... 'cat > /dev/null'``, median, handshakes included), median latency of
sequential ``ssh ... true``, and server memory per --idle idle sessions (RSS and PSS
summed over the server's processes, the sessions' own commands left out).

Then issue 17's goal 1, interleaved: ``limen ssh LOGIN@NODE true`` (which hands over to
OpenSSH's ssh) through the checkout's `limen` (the launcher scripts/install writes) and
through pip's own console script, the same with LIMEN_SSH_CLIENT=native (the asyncssh
client), against a stock ``ssh -F CFG LOGIN@NODE.CLUSTER true`` with the config
`limen config` prints, the same proxy and node. ``--cli-only`` measures that alone.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncssh

# common first: it puts the repository root on sys.path for tests.proxy.support.
from common import (
    LIMEN,
    LOGIN,
    Cluster,
    Way,
    bench_env,
    cpu_seconds,
    home_env,
    latency,
    log_in,
    memory_kb,
    start_cluster,
    throughput,
    timed,
)

from tests.proxy.support import Pki, Sshd

CLUSTER = "test.limen"  # tests.proxy.support names sshd host certificates for it
NODE_NAME = "bench-node"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=500, help="upload size (default 500)")
    parser.add_argument("--uploads", type=int, default=3, help="upload runs (default 3)")
    parser.add_argument("--runs", type=int, default=50, help="latency samples (default 50)")
    parser.add_argument("--idle", type=int, default=100, help="idle sessions (default 100)")
    parser.add_argument("--cipher", help="one cipher on every hop, e.g. aes128-gcm@openssh.com")
    parser.add_argument("--cli-runs", type=int, default=20,
                        help="samples of limen ssh against stock ssh (default 20)")
    parser.add_argument("--cli-only", action="store_true",
                        help="only limen ssh against stock ssh (no uploads, latency, memory)")
    return parser.parse_args()


def cli_ways(config: Path) -> list[Way]:
    """Goal 1's commands; stock ssh with `limen config`'s file is the baseline. `limen`
    is the installed command people run (not ``python -m``, which adds runpy): the
    launcher scripts/install writes, and pip's own console script beside it."""
    target = f"{LOGIN}@{NODE_NAME}"
    script = Path(sys.executable).with_name("limen")
    limen = [str(script)] if script.exists() else LIMEN
    return [
        Way("stock ssh", ["ssh", "-F", str(config), "-o", "BatchMode=yes",
                          f"{target}.{CLUSTER}"]),
        Way("limen ssh", [*limen, "ssh", target]),
        Way("limen ssh (pip's script)", [str(pips_script(config.parent)), "ssh", target]),
        Way("limen ssh (asyncssh)", ["env", "LIMEN_SSH_CLIENT=native", *limen, "ssh", target]),
    ]


def pips_script(directory: Path) -> Path:
    """`limen` as pip writes it for [project.scripts]: the interpreter with `site`."""
    path = directory / "limen-pip"
    path.write_text(f"#!{sys.executable}\nimport sys\nfrom limen.cli.main import main\n"
                    "sys.exit(main())\n")
    path.chmod(0o755)
    return path


def report_cli(runs: int, medians: dict[str, float]) -> None:
    base = medians["stock ssh"]
    print(f"`ssh ... true` x{runs}, interleaved (median ms, ratio to stock ssh with the "
          "config `limen config` prints, same proxy and node):")
    for name, ms in medians.items():
        print(f"  {name:<24}{ms:>8.1f} ms{ms / base:>8.2f}x")


# OpenSSH: a jump sshd and a node sshd, trusting the cluster's CAs


def openssh_servers(cluster: Cluster, root: Path) -> tuple[Sshd, Sshd]:
    cas = cluster.data_dir / "ca"
    pki = Pki(root / "pki", user_ca=asyncssh.read_private_key(str(cas / "user_ca")),
              host_ca=asyncssh.read_private_key(str(cas / "host_ca")))
    return Sshd(pki, root / "sshd-node", "osnode").start(), \
        Sshd(pki, root / "sshd-jump", "osjump").start()


# measuring


def idle_memory(way: Way, leader: int, count: int, env: dict[str, str]) -> tuple[int, int]:
    """Server memory growth (kB) for ``count`` idle sessions on ``way``."""
    before = memory_kb(leader)
    clients: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            clients.append(subprocess.Popen([*way.argv, "echo ready; exec sleep 600"],
                                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, env=env))
            if len(clients) % 10 == 0:  # let handshakes finish: MaxStartups, 2 cores
                _await_ready(clients[-10:])
        _await_ready(clients[len(clients) // 10 * 10 :])
        time.sleep(1)  # let allocations settle after the last handshake
        after = memory_kb(leader)
    finally:
        for client in clients:
            client.terminate()
        for client in clients:
            client.communicate()
    return after[0] - before[0], after[1] - before[1]


def _await_ready(clients: list[subprocess.Popen[bytes]]) -> None:
    for client in clients:
        assert client.stdout is not None
        line = client.stdout.readline()
        if line != b"ready\n":
            raise RuntimeError(f"an idle session did not start: {client.stderr.read()!r}")


# report


def report(args: argparse.Namespace, mb_s: dict, lat: dict, mem: dict, cores: dict,
           per_gb: dict) -> None:
    oss = "OpenSSH"
    print(f"upload {args.size_mb} MB x{args.uploads} (median); latency x{args.runs} (median); "
          f"memory per {args.idle} idle sessions; cipher {args.cipher or 'default'}")
    print(f"{'path':<24}{'upload MB/s':>13}{'latency ms':>12}{'RSS MB':>9}{'PSS MB':>9}")
    for name in mb_s:
        rss, pss = (f"{kb / 1024:>9.1f}" for kb in mem[name]) if name in mem else ("-", "-")
        print(f"{name:<24}{mb_s[name]:>13.1f}{lat[name]:>12.1f}{rss:>9}{pss:>9}")
    for name in (n for n in mb_s if n != oss):
        memory = (f"{mem[name][0] / mem[oss][0]:>9.2f}{mem[name][1] / mem[oss][1]:>9.2f}"
                  if name in mem else "")
        print(f"{'ratio ' + name:<24}{mb_s[name] / mb_s[oss]:>13.2f}"
              f"{lat[name] / lat[oss]:>12.2f}{memory}   (/ OpenSSH)")
    print("Limen upload CPU (SSH port), share of one core: "
          + ", ".join(f"{name} {share:.0%}" for name, share in cores.items())
          + "; CPU seconds per GB: "
          + ", ".join(f"{name} {seconds:.1f}" for name, seconds in per_gb.items()))


def main() -> None:
    args = parse_args()
    root = Path(tempfile.mkdtemp(prefix="limen-bench-ssh-"))
    env = bench_env()
    cluster = start_cluster(root, env, CLUSTER)
    servers: tuple[Sshd, ...] = ()
    try:
        # Direct, as the OpenSSH node is: the proxy dials it (bench/tunnel.py compares
        # a tunneled node with a direct one).
        limen_node = cluster.start_node(NODE_NAME, "--labels", "env=bench", direct=True)
        config = log_in(cluster, root / "home")
        if args.cipher:
            config.write_text(f"Ciphers {args.cipher}\n" + config.read_text())
        servers = openssh_servers(cluster, root)
        node, jump = servers
        ssh = ["ssh", "-F", str(config), "-o", "BatchMode=yes"]
        target = f"{LOGIN}@{NODE_NAME}.{CLUSTER}"
        ways = [
            # The proxy's dedicated SSH port, as in the issue; the jump hop reads the config.
            Way("Limen", [*ssh, "-o", f"ProxyJump={LOGIN}@{cluster.ssh_addr}", target]),
            Way("OpenSSH", [*ssh, "-J", f"{LOGIN}@127.0.0.1:{jump.port}", "-p", str(node.port),
                            f"{LOGIN}@127.0.0.1"]),
        ]
        if f"ProxyJump {LOGIN}@{cluster.ssh_addr}\n" not in config.read_text():
            # limen config points elsewhere (the web port, shared by HTTPS and SSH).
            ways.insert(1, Way("Limen, web port", [*ssh, target]))
        cli_env = home_env(env, root / "home")
        for way in ways + cli_ways(config):  # warm-up: page cache, first handshakes
            timed(way.shell("true"), cli_env)
        if not args.cli_only:
            measure_servers(args, cluster, limen_node.pid, node, ways, env)
        report_cli(args.cli_runs, latency(cli_ways(config), args.cli_runs, cli_env))
    finally:
        for server in servers:
            server.stop()
        cluster.stop()


def measure_servers(args: argparse.Namespace, cluster: Cluster, node_pid: int, node: Sshd,
                    ways: list[Way], env: dict[str, str]) -> None:
    assert node.proc is not None
    watch = {"proxy": lambda: cpu_seconds(cluster.proxy.pid),
             "node": lambda: cpu_seconds(node_pid)}
    uploads = throughput(ways, args.size_mb, args.uploads, env, watch)
    lat = latency(ways, args.runs, env)
    mem = {"Limen": idle_memory(ways[0], node_pid, args.idle, env),
           "OpenSSH": idle_memory(ways[-1], node.proc.pid, args.idle, env)}
    report(args, uploads.mb_s, lat, mem, uploads.shares["Limen"],
           uploads.cpu_s_per_gb["Limen"])


if __name__ == "__main__":
    main()

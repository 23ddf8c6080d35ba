"""Benchmark (issue 7): what reaching nodes through the one web port costs, against the
proxy's dedicated SSH port, same run.

Run by hand from the repository root, as root (the node runs shells):

    .venv/bin/python bench/one_port.py [--size-mb 500] [--uploads 3] [--runs 30]
                                       [--node direct|tunnel] [--openssl] [--proxy-ssh]

It starts `limen start --roles auth,proxy` (listener_mode multiplex, the default) and a
`limen start --roles node` joined with a token, all on 127.0.0.1, and logs a user in.
The client is stock OpenSSH with the configs `limen config` prints; only the hop to the
proxy differs:

- (a) SSH port:  ssh -F CFG -o ProxyJump=LOGIN@SSH_ADDR LOGIN@NODE.CLUSTER  (run.json's
  ssh_addr, the dedicated port);
- (b) web port:  ssh -F CFG LOGIN@NODE.CLUSTER  (`limen config`: ProxyJump to the web
  port, plain SSH recognised by its banner);
- (c) web port in TLS: ssh -F CFG_TLS LOGIN@NODE.CLUSTER  (`limen config --tls-routing`:
  `limen proxy tls --node` as the ProxyCommand, a direct connection to the node inside
  TLS with ALPN limen-node, no SSH layer at the proxy);
- (d) with --jump-tls: the jump inside TLS, as configs of 2026-12-03 to -05 made it:
  OpenSSH's own jump hop (ssh -W) whose ProxyCommand `limen proxy tls "[%h]:%p"` carries
  it inside TLS with ALPN limen-ssh;
- (e) with --openssl: the TLS of (d) made by `openssl s_client` instead, so that (d)
  against (e) tells our relay from OpenSSL's own;
- (f) with --proxy-ssh: the hop as configs before those made it, `limen proxy ssh` (the
  jump in asyncssh inside TLS) as the ProxyCommand.

Figures, the paths interleaved so drift in the machine's load hits them alike: median
upload throughput (``head -c SIZE /dev/zero | ssh ... 'cat > /dev/null'``, handshakes
included), median latency of sequential ``ssh ... true``, and the CPU the proxy, the
node and the client side (ssh, its ProxyCommand, head) used per GB uploaded and per
second of upload (CPU per GB holds when other load on the machine slows everything). The
goal of the issue: TLS wrapping costs under 10% of throughput, (c)/(a) >= 0.90.
"""

from __future__ import annotations

import argparse
import os
import shlex
import tempfile
from pathlib import Path

from common import (
    LOGIN,
    Cluster,
    Uploads,
    Way,
    adopt_orphans,
    bench_env,
    children_cpu_seconds,
    cpu_seconds,
    latency,
    log_in,
    openssh_config,
    start_cluster,
    throughput,
    timed,
)

CLUSTER = "bench.limen"
NODE_NAME = "bench-node"
GOAL = 0.90  # (c)/(a) throughput: TLS wrapping costs under 10%
SSH_PORT, WEB, WEB_TLS, WEB_JUMP_TLS, WEB_OPENSSL, WEB_PROXY_SSH = (
    "(a) SSH port", "(b) web port, SSH", "(c) web port, TLS", "(d) jump inside TLS",
    "(e) jump, openssl TLS", "(f) limen proxy ssh")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=500, help="upload size (default 500)")
    parser.add_argument("--uploads", type=int, default=3, help="upload runs (default 3)")
    parser.add_argument("--runs", type=int, default=30, help="latency samples (default 30)")
    parser.add_argument("--node", choices=("direct", "tunnel"), default="direct",
                        help="direct (default): the proxy dials the node, so the only TLS "
                             "on the way is the client's; tunnel: the node dials the proxy")
    parser.add_argument("--jump-tls", action="store_true",
                        help="also (d): OpenSSH's jump inside TLS by `limen proxy tls`")
    parser.add_argument("--openssl", action="store_true",
                        help="also (e): the jump inside TLS by openssl s_client")
    parser.add_argument("--proxy-ssh", action="store_true",
                        help="also (f): the hop of earlier configs, `limen proxy ssh`")
    return parser.parse_args()


# the three (or four) ways to the node


def ways(cluster: Cluster, plain: Path, tls: Path, args: argparse.Namespace) -> list[Way]:
    target = f"{LOGIN}@{NODE_NAME}.{CLUSTER}"
    ssh = ["ssh", "-o", "BatchMode=yes"]
    found = [
        # -o on the command line wins over the config's ProxyJump (first value wins).
        Way(SSH_PORT, [*ssh, "-F", str(plain), "-o", f"ProxyJump={LOGIN}@{cluster.ssh_addr}",
                       target]),
        Way(WEB, [*ssh, "-F", str(plain), target]),
        Way(WEB_TLS, [*ssh, "-F", str(tls), target]),
    ]
    # A ProxyCommand on the command line wins over the config's jump.
    hops: dict[str, str] = {}
    if args.jump_tls:
        hops[WEB_JUMP_TLS] = jump_hop(cluster, plain,
                                      f'{launcher(tls)} proxy tls "{cluster.web_addr}"')
    if args.openssl:
        hops[WEB_OPENSSL] = jump_hop(cluster, plain, openssl_tls(cluster))
    if args.proxy_ssh:
        hops[WEB_PROXY_SSH] = f"{launcher(tls)} proxy ssh %r@%h:%p"
    found += [Way(name, [*ssh, "-F", str(plain), "-o", f"ProxyCommand={hop}", target])
              for name, hop in hops.items()]
    return found


def launcher(tls: Path) -> str:
    """How the config starts limen (env LIMEN_HOME=... python -m limen.cli.main)."""
    line = next(line for line in tls.read_text().splitlines() if "ProxyCommand" in line)
    return line.split("ProxyCommand", 1)[1].split(" proxy tls ", 1)[0].strip()


def openssl_tls(cluster: Cluster) -> str:
    """openssl s_client with ALPN limen-ssh and the cluster's TLS CA, to the web port."""
    host, port = cluster.web_addr.rsplit(":", 1)
    ca = cluster.data_dir / "ca" / "tls_ca.crt"
    return shlex.join(["openssl", "s_client", "-quiet", "-verify_quiet", "-verify_return_error",
                       "-CAfile", str(ca), "-alpn", "limen-ssh", "-connect", f"{host}:{port}"])


def jump_hop(cluster: Cluster, plain: Path, tls_command: str) -> str:
    """A ProxyCommand for (d) and (e): OpenSSH's own jump hop (ssh -W) to the web port,
    itself carried in TLS by ``tls_command``."""
    host, port = cluster.web_addr.rsplit(":", 1)
    # The outer ssh expands %h:%p to the node; the inner one reads the config's first
    # block for 127.0.0.1 (key, certificate, known hosts), not its ProxyJump. The
    # address is spelled out: the outer ssh would expand %h:%p in it to the node's.
    return shlex.join(["ssh", "-F", str(plain), "-o", "BatchMode=yes", "-o",
                       f"ProxyCommand={tls_command}", "-p", port, "-W", "%h:%p",
                       f"{LOGIN}@{host}"])


def check_configs(cluster: Cluster, plain: Path, tls: Path) -> None:
    """(b) and (c) measure the web port only if the configs send ssh there."""
    if f"ProxyJump {LOGIN}@{cluster.web_addr}\n" not in plain.read_text():
        raise RuntimeError(f"limen config does not jump to the web port {cluster.web_addr}:\n"
                           f"{plain.read_text()}")
    if f'limen.cli.main proxy tls --node "%r@%h:%p" "{cluster.web_addr}"' not in tls.read_text():
        raise RuntimeError(f"limen config --tls-routing has no ProxyCommand:\n{tls.read_text()}")


# report


def report(args: argparse.Namespace, uploads: Uploads, lat: dict) -> None:
    mb_s = uploads.mb_s
    print(f"upload {args.size_mb} MB x{args.uploads} (median, handshakes included); "
          f"latency of ssh true x{args.runs} (median); {args.node} node; "
          f"load average now {load_average()}")
    print(f"{'path':<24}{'upload MB/s':>13}{'latency ms':>12}{'CPU s/GB':>10}"
          "   CPU s/GB (share of a core while uploading)")
    for name in mb_s:
        per_gb = uploads.cpu_s_per_gb[name]
        parts = ", ".join(f"{who} {per_gb[who]:.1f} ({share:.0%})"
                          for who, share in uploads.shares[name].items())
        print(f"{name:<24}{mb_s[name]:>13.1f}{lat[name]:>12.1f}{sum(per_gb.values()):>10.1f}"
              f"   {parts}")
    for name in (n for n in mb_s if n != SSH_PORT):
        cpu = sum(uploads.cpu_s_per_gb[name].values()) / sum(
            uploads.cpu_s_per_gb[SSH_PORT].values())
        print(f"{'ratio ' + name[:3] + '/(a)':<24}{mb_s[name] / mb_s[SSH_PORT]:>13.2f}"
              f"{lat[name] / lat[SSH_PORT]:>12.2f}{cpu:>10.2f}")
    ratio = mb_s[WEB_TLS] / mb_s[SSH_PORT]
    print(f"TLS wrapping costs {1 - ratio:.0%} of throughput (goal: under {1 - GOAL:.0%}): "
          f"{'met' if ratio >= GOAL else 'not met'}")


def load_average() -> str:
    return " ".join(f"{load:.2f}" for load in os.getloadavg())


def main() -> None:
    args = parse_args()
    adopt_orphans()  # before any ssh runs: ProxyCommands outlive their ssh
    root = Path(tempfile.mkdtemp(prefix="limen-bench-one-port-"))
    env = bench_env()
    cluster = start_cluster(root, env, CLUSTER)
    try:
        node = cluster.start_node(NODE_NAME, direct=args.node == "direct")
        home = root / "home"
        plain = log_in(cluster, home)
        tls = openssh_config(env, home, tls_routing=True)
        check_configs(cluster, plain, tls)
        paths = ways(cluster, plain, tls, args)
        for way in paths:  # warm-up: page cache, first handshakes, Python's bytecode
            timed(way.shell("true"), env)
        daemons = [cluster.proxy.pid, *(d.pid for d in cluster.daemons)]
        print(f"load average before measuring: {load_average()}")
        watch = {"proxy": lambda: cpu_seconds(cluster.proxy.pid),
                 "node": lambda: cpu_seconds(node.pid),
                 "client": lambda: children_cpu_seconds(daemons)}
        uploads = throughput(paths, args.size_mb, args.uploads, env, watch)
        lat = latency(paths, args.runs, env)
        report(args, uploads, lat)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()

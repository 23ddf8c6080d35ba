"""Benchmark: Limen's jump host against OpenSSH's, both in front of one stock sshd node.

Run by hand from the repository root:

    .venv/bin/python bench/ssh_jump.py [--size-mb 500] [--runs 30] [--uploads 3]

Measures, in the same run and interleaved so that drift hits both alike:
- throughput: ``head -c SIZE /dev/zero | ssh -J JUMP NODE 'cat > /dev/null'``
  (median of --uploads runs; the figure includes the two handshakes);
- latency: the median of --runs sequential ``ssh -J JUMP NODE true``.
The OpenSSH path is a second stock sshd used as the jump host. The certificate
carries permit-port-forwarding, which OpenSSH's jump host needs and Limen's ignores.
Prints each figure and the ratio Limen / OpenSSH.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from limen.proxy.ssh_jump import JumpHost, JumpSettings, StaticRouter  # noqa: E402
from tests.proxy.support import CLUSTER, SSH, Pki, Sshd, UserFiles  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=500, help="upload size (default 500)")
    parser.add_argument("--runs", type=int, default=30, help="latency samples (default 30)")
    parser.add_argument("--uploads", type=int, default=3, help="upload runs (default 3)")
    parser.add_argument("--cipher", help="one cipher on every hop, e.g. aes128-gcm@openssh.com")
    return parser.parse_args()


class Way:
    """One way to the node: how to build the ssh command line."""

    def __init__(self, name: str, user: UserFiles, jump: str, target: list[str]) -> None:
        self.name, self.user, self.jump, self.target = name, user, jump, target

    def argv(self, command: str) -> str:
        words = [SSH, "-F", str(self.user.config), "-J", self.jump, *self.target, command]
        return shlex.join(words)


async def shell(command: str) -> float:
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_shell(
        command, stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{command!r} failed ({proc.returncode}): {err.decode()}")
    return time.perf_counter() - started


async def upload_mb_s(path: Way, size_mb: int) -> float:
    seconds = await shell(f"head -c {size_mb}M /dev/zero | {path.argv('cat > /dev/null')}")
    return size_mb / seconds


async def measure(paths: list[Way], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    rates: dict[str, list[float]] = {p.name: [] for p in paths}
    waits: dict[str, list[float]] = {p.name: [] for p in paths}
    for path in paths:  # warm-up: page cache, first handshakes
        await shell(path.argv("true"))
    for _ in range(args.uploads):
        for path in paths:
            rates[path.name].append(await upload_mb_s(path, args.size_mb))
    for _ in range(args.runs):
        for path in paths:
            waits[path.name].append(await shell(path.argv("true")))
    return {
        name: {"mb_s": statistics.median(rates[name]),
               "latency_ms": 1000 * statistics.median(waits[name])}
        for name in rates
    }


def report(results: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    print(f"upload {args.size_mb} MB x{args.uploads} (median), latency x{args.runs} (median)"
          f"{', cipher ' + args.cipher if args.cipher else ''}")
    print(f"{'path':<24}{'upload MB/s':>14}{'latency ms':>14}")
    for name, figures in results.items():
        print(f"{name:<24}{figures['mb_s']:>14.1f}{figures['latency_ms']:>14.1f}")
    limen, openssh = results["Limen jump host"], results["OpenSSH jump host"]
    print(f"{'ratio Limen/OpenSSH':<24}{limen['mb_s'] / openssh['mb_s']:>14.2f}"
          f"{limen['latency_ms'] / openssh['latency_ms']:>14.2f}")


async def main() -> None:
    args = parse_args()
    root = Path(tempfile.mkdtemp(prefix="limen-bench-"))
    pki = Pki(root / "pki")
    node = Sshd(pki, root / "node", "node1").start()
    openssh_jump = Sshd(pki, root / "jump", "jump").start()
    user = pki.user("bench", principals=("alice", "root"), port_forwarding=True)
    if args.cipher:
        with user.config.open("a") as config:
            config.write(f"  Ciphers {args.cipher}\n")
    key, cert = pki.host_identity("proxy", ["proxy", "127.0.0.1", "localhost"])
    limen = JumpHost(JumpSettings("127.0.0.1", 0, key, [cert], [pki.user_ca], CLUSTER),
                     StaticRouter([node.route()]))
    await limen.start()
    try:
        paths = [
            Way("Limen jump host", user, f"alice@127.0.0.1:{limen.port}", ["root@node1"]),
            Way("OpenSSH jump host", user, f"root@127.0.0.1:{openssh_jump.port}",
                  ["-p", str(node.port), "root@127.0.0.1"]),
        ]
        report(await measure(paths, args), args)
    finally:
        await limen.stop()
        openssh_jump.stop()
        node.stop()


if __name__ == "__main__":
    asyncio.run(main())

"""Benchmark: SSH through Limen (proxy + node) against OpenSSH (jump sshd + sshd), same run.

Run by hand from the repository root, as root (the sshds and the node run shells):

    .venv/bin/python bench/ssh.py [--size-mb 500] [--uploads 3] [--runs 50] [--idle 100]

It starts `limen start --roles auth,proxy` and a `limen start --roles node` joined with
a token (separate processes, so the node's memory is its own), logs a user in, and
starts two stock sshds on loopback that trust the cluster's user CA and present host
certificates from its host CA. The client is stock OpenSSH on both paths, with the
config `limen config` writes, so only the servers differ:

- Limen:   ssh -F CFG -o ProxyJump=root@PROXY_SSH root@NODE.CLUSTER  (the proxy's SSH port)
- Limen, web port: ssh -F CFG root@NODE.CLUSTER (where `limen config` points, when that
  is the web port shared by HTTPS and SSH)
- OpenSSH: ssh -F CFG -J root@JUMP -p PORT root@127.0.0.1

Figures, interleaved so drift hits both alike: upload throughput (``head -c SIZE
/dev/zero | ssh ... 'cat > /dev/null'``, median, handshakes included), median latency of
sequential ``ssh ... true``, and server memory per --idle idle sessions (RSS and PSS
summed over the server's processes, the sessions' own commands left out). Also the
median latency of ``limen ssh NODE true`` (Python start-up included), for reference.
"""

from __future__ import annotations

import argparse
import json
import os
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

import asyncssh  # noqa: E402

from limen.auth import totp  # noqa: E402
from limen.client.api import APIClient  # noqa: E402
from tests.proxy.support import Pki, Sshd  # noqa: E402

CLUSTER = "test.limen"  # tests.proxy.support names sshd host certificates for it
PASSWORD = "correct horse battery staple"
NODE_NAME = "bench-node"
LIMEN = [sys.executable, "-m", "limen.cli.main"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=500, help="upload size (default 500)")
    parser.add_argument("--uploads", type=int, default=3, help="upload runs (default 3)")
    parser.add_argument("--runs", type=int, default=50, help="latency samples (default 50)")
    parser.add_argument("--idle", type=int, default=100, help="idle sessions (default 100)")
    parser.add_argument("--cipher", help="one cipher on every hop, e.g. aes128-gcm@openssh.com")
    return parser.parse_args()


# the Limen cluster, as processes


def wait_for(predicate, timeout: float, what: str):  # noqa: ANN001, ANN201 - tiny helper
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


class Daemon:
    """`limen start ...` in its own session; its output goes to a log file."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen([*LIMEN, "start", *args], stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.log.name} exited:\n{self.log.read_text()}")
        return True

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@dataclass
class Cluster:
    auth: Daemon
    node: Daemon | None
    data_dir: Path
    web_addr: str
    ssh_addr: str

    def admin(self) -> APIClient:
        token = (self.data_dir / "admin.token").read_text().strip()
        return APIClient(self.web_addr, self.tls_ca(), token)

    def tls_ca(self) -> str:
        return (self.data_dir / "ca" / "tls_ca.crt").read_text()

    def stop(self) -> None:
        for daemon in (self.node, self.auth):
            if daemon is not None:
                daemon.stop()


def start_cluster(root: Path, env: dict[str, str]) -> Cluster:
    data = root / "auth"
    config = root / "limen.yaml"
    config.write_text(
        f"cluster_name: {CLUSTER}\n"
        f"data_dir: {data}\n"
        "log_level: warning\n"
        "auth: {listen_addr: '127.0.0.1:0'}\n"
        "proxy: {web_listen_addr: '127.0.0.1:0', ssh_listen_addr: '127.0.0.1:0',\n"
        "        rate_limit: {average_per_minute: 100000, burst: 100000}}\n"
    )
    auth = Daemon(["--config", str(config), "--roles", "auth,proxy"], root / "auth.log", env)
    run = data / "run.json"
    wait_for(lambda: auth.alive() and run.exists(), 30, "the auth and proxy service")
    addrs = json.loads(run.read_text())
    cluster = Cluster(auth, None, data, addrs["web_addr"], addrs["ssh_addr"])
    with cluster.admin() as admin:
        token = admin.post("/v1/tokens", {"type": "node"})["token"]
    cluster.node = Daemon(
        ["--roles", "node", "--token", token, "--proxy", cluster.web_addr, "--insecure",
         "--name", NODE_NAME, "--labels", "env=bench", "--listen-addr", "127.0.0.1:0",
         "--data-dir", str(root / "node")], root / "node.log", env)
    wait_for(lambda: cluster.node.alive() and _node_listed(cluster), 30, "the node to join")
    return cluster


def _node_listed(cluster: Cluster) -> bool:
    with cluster.admin() as admin:
        return any(n["name"] == NODE_NAME for n in admin.get("/v1/nodes"))


def log_in(cluster: Cluster, home: Path) -> Path:
    """Sign up and log in a user; returns the `limen config` file for stock ssh."""
    with cluster.admin() as admin:
        issued = admin.post("/v1/users", {"name": "bench", "roles": ["access"],
                                          "logins": ["root"]})
    now = datetime.now(UTC)
    with APIClient(cluster.web_addr, cluster.tls_ca()) as anonymous:
        secret = anonymous.post("/v1/signup/start", {"token": issued["token"]})["totp_secret"]
        anonymous.post("/v1/signup/finish", {"token": issued["token"], "password": PASSWORD,
                                             "otp": totp.code_at(secret, now)})
    env = {**os.environ, "LIMEN_HOME": str(home)}
    env.pop("SSH_AUTH_SOCK", None)
    next_code = totp.code_at(secret, now + timedelta(seconds=totp.STEP_SECONDS))
    subprocess.run([*LIMEN, "login", "--proxy", cluster.web_addr, "--user", "bench",
                    "--password-stdin", "--otp", next_code, "--insecure"],
                   input=PASSWORD + "\n", text=True, env=env, check=True,
                   capture_output=True)
    printed = subprocess.run([*LIMEN, "config"], env=env, check=True, capture_output=True,
                             text=True).stdout
    path = home / "ssh_config"
    path.write_text(printed)
    return path


# OpenSSH: a jump sshd and a node sshd, trusting the cluster's CAs


def openssh_servers(cluster: Cluster, root: Path) -> tuple[Sshd, Sshd]:
    cas = cluster.data_dir / "ca"
    pki = Pki(root / "pki", user_ca=asyncssh.read_private_key(str(cas / "user_ca")),
              host_ca=asyncssh.read_private_key(str(cas / "host_ca")))
    return Sshd(pki, root / "sshd-node", "osnode").start(), \
        Sshd(pki, root / "sshd-jump", "osjump").start()


# measuring


@dataclass
class Way:
    name: str
    argv: list[str]  # ssh ... up to the command

    def shell(self, command: str) -> str:
        return shlex.join([*self.argv, command])


def timed(command: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, shell=True, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"{command!r} failed ({done.returncode}): {done.stderr.decode()}")
    return time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(ways: list[Way], size_mb: int, runs: int, env: dict[str, str],
               watch: dict[str, int]) -> tuple[dict, dict]:
    """Median MB/s per way, and the share of one core each watched Limen process used
    while Limen's uploads ran (which one saturates tells what limits the copy)."""
    rates: dict[str, list[float]] = {w.name: [] for w in ways}
    busy = dict.fromkeys(watch, 0.0)
    limen_wall = 0.0
    for _ in range(runs):
        for way in ways:
            before = {name: cpu_seconds(pid) for name, pid in watch.items()}
            seconds = timed(f"head -c {size_mb}M /dev/zero | {way.shell('cat > /dev/null')}", env)
            rates[way.name].append(size_mb / seconds)
            if way.name == "Limen":
                limen_wall += seconds
                for name, pid in watch.items():
                    busy[name] += cpu_seconds(pid) - before[name]
    medians = {name: statistics.median(values) for name, values in rates.items()}
    return medians, {name: used / limen_wall for name, used in busy.items()}


def latency(ways: list[Way], runs: int, env: dict[str, str]) -> dict:
    waits: dict[str, list[float]] = {w.name: [] for w in ways}
    for _ in range(runs):
        for way in ways:
            waits[way.name].append(timed(way.shell("true"), env))
    return {name: 1000 * statistics.median(values) for name, values in waits.items()}


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command name) for every process."""
    table: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # gone meanwhile
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            table[int(entry.name)] = (int(stat[stat.rindex(")") + 2 :].split()[1]), comm)
    return table


def memory_kb(root_pid: int) -> tuple[int, int]:
    """(RSS, PSS) in kB summed over a server process and its descendants (sshd forks one
    or two per connection, each in a session of its own), leaving out the sessions' own
    commands (sleep and the shells)."""
    table = _processes()
    tree, frontier = {root_pid}, [root_pid]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, (ppid, _) in table.items() if ppid == parent]
        tree.update(children)
        frontier.extend(children)
    rss = pss = 0
    for pid in tree:
        if table.get(pid, (0, ""))[1] in ("sleep", "bash", "sh"):
            continue
        try:
            lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in lines)
        rss += int(fields["Rss"].split()[0])
        pss += int(fields["Pss"].split()[0])
    return rss, pss


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


def report(args: argparse.Namespace, mb_s: dict, lat: dict, mem: dict, limen_cli: float,
           cores: dict) -> None:
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
    print(f"limen ssh {NODE_NAME} true (Python client, start-up included): "
          f"{limen_cli:.1f} ms median")
    print("Limen upload CPU (SSH port), share of one core: "
          + ", ".join(f"{name} {share:.0%}" for name, share in cores.items()))


def main() -> None:
    args = parse_args()
    root = Path(tempfile.mkdtemp(prefix="limen-bench-ssh-"))
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    env["LC_ALL"] = "C"
    cluster = start_cluster(root, env)
    servers: tuple[Sshd, ...] = ()
    try:
        config = log_in(cluster, root / "home")
        if args.cipher:
            config.write_text(f"Ciphers {args.cipher}\n" + config.read_text())
        servers = openssh_servers(cluster, root)
        node, jump = servers
        ssh = ["ssh", "-F", str(config), "-o", "BatchMode=yes"]
        target = f"root@{NODE_NAME}.{CLUSTER}"
        ways = [
            # The proxy's dedicated SSH port, as in the issue; the jump hop reads the config.
            Way("Limen", [*ssh, "-o", f"ProxyJump=root@{cluster.ssh_addr}", target]),
            Way("OpenSSH", [*ssh, "-J", f"root@127.0.0.1:{jump.port}", "-p", str(node.port),
                            "root@127.0.0.1"]),
        ]
        if f"ProxyJump root@{cluster.ssh_addr}\n" not in config.read_text():
            # limen config points elsewhere (the web port, shared by HTTPS and SSH).
            ways.insert(1, Way("Limen, web port", [*ssh, target]))
        for way in ways:  # warm-up: page cache, first handshakes
            timed(way.shell("true"), env)
        assert cluster.node is not None and node.proc is not None
        watch = {"proxy": cluster.auth.proc.pid, "node": cluster.node.proc.pid}
        mb_s, cores = throughput(ways, args.size_mb, args.uploads, env, watch)
        lat = latency(ways, args.runs, env)
        mem = {"Limen": idle_memory(ways[0], cluster.node.proc.pid, args.idle, env),
               "OpenSSH": idle_memory(ways[-1], node.proc.pid, args.idle, env)}
        cli_env = {**env, "LIMEN_HOME": str(root / "home")}
        limen_cli = 1000 * statistics.median(
            timed(shlex.join([*LIMEN, "ssh", NODE_NAME, "true"]), cli_env) for _ in range(10)
        )
        report(args, mb_s, lat, mem, limen_cli, cores)
    finally:
        for server in servers:
            server.stop()
        cluster.stop()


if __name__ == "__main__":
    main()

"""What the benchmarks in bench/ share: a Limen cluster run as real processes, a user
logged in for stock OpenSSH, and the timing and memory helpers.

Import it first: it puts the repository root on sys.path, so that ``tests.*`` (stock
sshds, many agents in one process) is importable from the scripts that follow.
"""

from __future__ import annotations

import ctypes
import json
import os
import pwd
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from limen import totp  # noqa: E402
from limen.client.api import APIClient  # noqa: E402

PASSWORD = "correct horse battery staple"
LIMEN = [sys.executable, "-m", "limen.cli.main"]
# How a direct node is told to listen and what to advertise, so the proxy dials it.
DIRECT_NODE = ("--advertise-addr", "127.0.0.1", "--listen-addr", "127.0.0.1:0")
PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
# The account sessions log in as, on both paths. Not root: Debian's bash reads ~/.bashrc
# for a command sshd (or a Limen node) runs, and root's on the reference machine runs
# `pyenv init`, about 180 ms and 200 ms of CPU per command on either path, which would be
# measured as if it were the servers'. This account gets /etc/skel's, which returns at
# once when the shell is not interactive.
LOGIN = "limenbench"


def bench_env() -> dict[str, str]:
    """The environment for every process we start: no agent (ssh must use the
    certificate the config names, nothing else) and one locale (stable output)."""
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    env["LC_ALL"] = "C"
    return env


def wait_for(predicate, timeout: float, what: str,  # noqa: ANN001, ANN201 - tiny helper
             interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(interval)
    return value


# the Limen cluster, as processes


class Daemon:
    """A process in its own session (so stopping it stops its children too); its output
    goes to a log file, shown if it dies while we wait on it."""

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
    """`limen start --roles auth,proxy`, and the nodes started through it."""

    root: Path
    env: dict[str, str]
    name: str
    proxy: Daemon
    data_dir: Path
    web_addr: str
    ssh_addr: str  # the dedicated SSH port, from run.json
    tunnel_addr: str  # where agents are told to dial (the web port when multiplexed)
    daemons: list[Daemon] = field(default_factory=list)

    @property
    def tunnel_port(self) -> int:
        return int(self.tunnel_addr.rsplit(":", 1)[1])

    def tls_ca(self) -> str:
        return (self.data_dir / "ca" / "tls_ca.crt").read_text()

    def admin(self) -> APIClient:
        token = (self.data_dir / "admin.token").read_text().strip()
        return APIClient(self.web_addr, self.tls_ca(), token)

    def token(self, uses: int = 1) -> str:
        """A node join token for ``uses`` nodes (join tokens are single-use by default)."""
        with self.admin() as admin:
            return str(admin.post("/v1/tokens", {"type": "node", "uses": uses})["token"])

    def nodes(self) -> list[dict]:
        with self.admin() as admin:
            return list(admin.get("/v1/nodes"))

    def start_node(self, name: str, *extra: str, direct: bool = False,
                   launcher: Callable[[list[str]], list[str]] | None = None) -> Daemon:
        """`limen start --roles node` joined with a fresh token, once it is online.

        Direct: it advertises 127.0.0.1 and the proxy dials it. Otherwise it dials the
        proxy and keeps a reverse tunnel. ``launcher`` wraps the command line (e.g. to
        run it in a network namespace)."""
        argv = [*LIMEN, "start", "--roles", "node", "--token", self.token(),
                "--proxy", self.web_addr, "--insecure", "--name", name,
                "--data-dir", str(self.root / name), *(DIRECT_NODE if direct else ()), *extra]
        daemon = Daemon(launcher(argv) if launcher else argv, self.root / f"{name}.log",
                        self.env)
        self.daemons.append(daemon)
        wait_for(lambda: daemon.alive() and self._online(name), 30, f"{name} online")
        return daemon

    def _online(self, name: str) -> bool:
        return any(n["name"] == name and n["online"] for n in self.nodes())

    def stop(self) -> None:
        for daemon in [*reversed(self.daemons), self.proxy]:
            daemon.stop()


def start_cluster(root: Path, env: dict[str, str], name: str,
                  listener_mode: str = "multiplex", host: str = "127.0.0.1",
                  web_port: int = 0, max_handshakes: int = 128) -> Cluster:
    """Auth and proxy in one process, every port picked by the kernel on ``host`` (the
    web port too unless given: a restarted proxy must be where agents dial), the rate
    limit out of the way (benchmarks connect far faster than people)."""
    data = root / "auth"
    config = root / "limen.yaml"
    config.write_text(
        f"cluster_name: {name}\n"
        f"data_dir: {data}\n"
        "log_level: warning\n"
        "auth: {listen_addr: '127.0.0.1:0'}\n"
        f"proxy: {{listener_mode: {listener_mode}, web_listen_addr: '{host}:{web_port}',\n"
        f"        ssh_listen_addr: '{host}:0', tunnel_listen_addr: '{host}:0',\n"
        "        rate_limit: {average_per_minute: 100000, burst: 100000},\n"
        # Every simulated node (bench/tunnels.py) comes from 127.0.0.1, with a tunnel
        # and an HTTPS connection each: the per-address bounds would stop them.
        "        listener: {max_connections_per_ip: 100000, max_handshakes_per_ip: 100000,\n"
        f"                   max_handshakes: {max_handshakes}}},\n"
        # Direct nodes here advertise 127.0.0.1; an operator allows loopback the same way.
        "        node_networks: ['127.0.0.0/8']}\n"
    )
    proxy = start_proxy(root, env)
    run = data / "run.json"
    wait_for(lambda: proxy.alive() and run.exists(), 30, "the auth and proxy service")
    addrs = json.loads(run.read_text())
    cluster = Cluster(root, env, name, proxy, data, addrs["web_addr"], addrs["ssh_addr"], "")
    with cluster.admin() as admin:  # what agents hear, not what run.json says we bound
        cluster.tunnel_addr = admin.get("/v1/ping")["tunnel_addr"]
    return cluster


def start_proxy(root: Path, env: dict[str, str], log: str = "proxy.log") -> Daemon:
    """`limen start --roles auth,proxy` with the config start_cluster() wrote."""
    return Daemon([*LIMEN, "start", "--config", str(root / "limen.yaml"),
                   "--roles", "auth,proxy"], root / log, env)


# a user, for stock OpenSSH


def bench_account() -> str:
    """LOGIN, made a local account (home from /etc/skel) if it is not one yet."""
    try:
        pwd.getpwnam(LOGIN)
    except KeyError:
        # "*": no password, yet not locked ("!"), which sshd without PAM would refuse.
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash",
                        "--password", "*", LOGIN], check=True, capture_output=True)
    return LOGIN


def log_in(cluster: Cluster, home: Path, login: str = "") -> Path:
    """Sign a user up (password + TOTP) and log in with LIMEN_HOME=``home``; returns the
    file `limen config` printed (ProxyJump to where the proxy says). The user's login is
    ``login``, by default the bench account (made if need be)."""
    login = login or bench_account()
    with cluster.admin() as admin:
        issued = admin.post("/v1/users", {"name": "bench", "roles": ["access"],
                                          "logins": [login]})
    now = datetime.now(UTC)
    with APIClient(cluster.web_addr, cluster.tls_ca()) as anonymous:
        secret = anonymous.post("/v1/signup/start", {"token": issued["token"]})["totp_secret"]
        anonymous.post("/v1/signup/finish", {"token": issued["token"], "password": PASSWORD,
                                             "otp": totp.code_at(secret, now)})
    # The code of the next step: the one used to sign up may not be used twice.
    next_code = totp.code_at(secret, now + timedelta(seconds=totp.STEP_SECONDS))
    subprocess.run([*LIMEN, "login", "--proxy", cluster.web_addr, "--user", "bench",
                    "--password-stdin", "--otp", next_code, "--insecure"],
                   input=PASSWORD + "\n", text=True, env=home_env(cluster.env, home),
                   check=True, capture_output=True)
    return openssh_config(cluster.env, home)


def home_env(env: dict[str, str], home: Path) -> dict[str, str]:
    return {**env, "LIMEN_HOME": str(home)}


def openssh_config(env: dict[str, str], home: Path, tls_routing: bool = False) -> Path:
    """`limen config [--tls-routing]` for the user logged in at ``home``, in a file."""
    flags = ["--tls-routing"] if tls_routing else []
    printed = subprocess.run([*LIMEN, "config", *flags], env=home_env(env, home), check=True,
                             capture_output=True, text=True).stdout
    path = home / ("ssh_config_tls" if tls_routing else "ssh_config")
    path.write_text(printed)
    return path


# measuring


@dataclass
class Way:
    """One way to a node: the ssh command line up to the remote command."""

    name: str
    argv: list[str]

    def shell(self, command: str) -> str:
        return shlex.join([*self.argv, command])


def timed(command: str, env: dict[str, str]) -> float:
    """Wall-clock seconds of a shell command, which must succeed."""
    started = time.perf_counter()
    done = subprocess.run(command, shell=True, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"{command!r} failed ({done.returncode}): {done.stderr.decode()}")
    return time.perf_counter() - started


def upload_command(way: Way, size_mb: int) -> str:
    # /dev/zero and /dev/null: neither end's disk or page cache takes part.
    return f"head -c {size_mb}M /dev/zero | {way.shell('cat > /dev/null')}"


def latency(ways: list[Way], runs: int, env: dict[str, str]) -> dict[str, float]:
    """Median ms of ``ssh ... true`` per way, the ways interleaved so drift in the
    machine's load hits them alike."""
    waits: dict[str, list[float]] = {w.name: [] for w in ways}
    for _ in range(runs):
        for way in ways:
            waits[way.name].append(timed(way.shell("true"), env))
    return {name: 1000 * statistics.median(values) for name, values in waits.items()}


CpuClock = Callable[[], float]


@dataclass
class Uploads:
    """What throughput() found, per way."""

    mb_s: dict[str, float]  # median
    shares: dict[str, dict[str, float]]  # per watched clock: CPU seconds per wall second
    cpu_s_per_gb: dict[str, dict[str, float]]  # per watched clock: CPU seconds per GB moved


def throughput(ways: list[Way], size_mb: int, runs: int, env: dict[str, str],
               watch: dict[str, CpuClock] | None = None) -> Uploads:
    """Upload MB/s per way (interleaved, handshakes included) and the CPU each watched
    clock used during a way's uploads: as a share of one core (the one near 100% limits
    the copy) and per GB (what a path costs, even when other load slows it down)."""
    watch = watch or {}
    rates: dict[str, list[float]] = {w.name: [] for w in ways}
    busy = {w.name: dict.fromkeys(watch, 0.0) for w in ways}
    wall = dict.fromkeys(rates, 0.0)
    for _ in range(runs):
        for way in ways:
            before = {name: clock() for name, clock in watch.items()}
            seconds = timed(upload_command(way, size_mb), env)
            rates[way.name].append(size_mb / seconds)
            wall[way.name] += seconds
            for name, clock in watch.items():
                busy[way.name][name] += clock() - before[name]
    gigabytes = runs * size_mb / 1024
    return Uploads(
        mb_s={name: statistics.median(values) for name, values in rates.items()},
        shares={way: {name: used / wall[way] for name, used in cpu.items()}
                for way, cpu in busy.items()},
        cpu_s_per_gb={way: {name: used / gigabytes for name, used in cpu.items()}
                      for way, cpu in busy.items()},
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def adopt_orphans() -> None:
    """Make this process the reaper of its descendants' orphans. ssh does not wait for
    its ProxyCommand (ProxyJump's `ssh -W` included): without this, what that process
    used would be lost to init instead of counted by children_cpu_seconds()."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def children_cpu_seconds(keep: Collection[int], timeout: float = 5.0) -> float:
    """User + system CPU time of our finished descendants (the shell, head, ssh, its
    ProxyCommand): the client side of the commands run with timed(). Waits first for the
    orphans adopt_orphans() gave us (every child not in ``keep``), so that a ProxyCommand
    still exiting counts for the command that started it, not the next one."""
    deadline = time.monotonic() + timeout
    me = os.getpid()
    orphans = {pid for pid, (ppid, _) in _processes().items() if ppid == me} - set(keep)
    while orphans and time.monotonic() < deadline:
        orphans = {pid for pid in orphans if _still_running(pid)}
        if orphans:
            time.sleep(0.01)
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _still_running(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return False  # reaped already


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


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


def memory_kb(root_pid: int, leave_out: Sequence[str] = ("sleep", "bash", "sh")) -> tuple[int, int]:
    """(RSS, PSS) in kB summed over a server process and its descendants (sshd forks one
    or two per connection, each in a session of its own), leaving out the sessions' own
    commands (by default sleep and the shells)."""
    table = _processes()
    tree, frontier = {root_pid}, [root_pid]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, (ppid, _) in table.items() if ppid == parent]
        tree.update(children)
        frontier.extend(children)
    rss = pss = 0
    for pid in tree:
        if table.get(pid, (0, ""))[1] in leave_out:
            continue
        try:
            lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in lines)
        rss += int(fields["Rss"].split()[0])
        pss += int(fields["Pss"].split()[0])
    return rss, pss

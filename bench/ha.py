"""Benchmark: logins (each issues a certificate) and new SSH sessions per second, through
one auth+proxy instance and through two on the same PostgreSQL schema, same run.

Run by hand from the repository root, as root, with PostgreSQL on 127.0.0.1:5432:

    .venv/bin/python bench/ha.py [--logins 60] [--sessions 60] [--concurrency 8]

It starts two `limen start --roles auth,proxy` processes sharing a fresh schema (dropped
at the end) and a direct node joined through the first. Each figure is measured with the
load on instance A only, then spread over A and B (round robin), with the same number of
concurrent clients; the ratio that matters is two / one against the ideal 2.0.

- logins: POST /v1/login (password check, TOTP, certificate), each by a different user
  (a TOTP code is good once); a login issues exactly one certificate, so certificates
  per second are the same figure;
- sessions: stock `ssh -F CONFIG LOGIN@NODE true` (LOGIN: bench/common.py's account),
  each a new connection through the instance's jump host to the node (the client's own
  cost included).

On a machine with fewer cores than instances the two share the CPU, and so does the
client; read the ratio with the core count it prints.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import common  # first: it puts the repository root on sys.path

from limen import totp  # noqa: E402
from limen.auth.ca import generate_ssh_key  # noqa: E402
from limen.client.api import APIClient  # noqa: E402
from limen.clock import FakeClock  # noqa: E402
from tests.support.cluster import PASSWORD  # noqa: E402
from tests.support.ha import Instance, drop_schema, new_schema  # noqa: E402
from tests.support.ssh_access import clean_env, wait_until  # noqa: E402
from tests.support.tunnel import DIRECT, NodeProcess  # noqa: E402


def code_at_step(secret: str, step: int) -> str:
    return totp.code_at(secret, datetime.fromtimestamp(step * totp.STEP_SECONDS, UTC))


def step_now() -> int:
    return int(time.time()) // totp.STEP_SECONDS


def make_users(a: Instance, count: int, prefix: str) -> tuple[list[tuple[str, str]], int]:
    """Users signed up, each at the TOTP step current then; returns (name, secret) and the
    latest step spent."""
    users, step = [], step_now()
    with a.api() as admin, APIClient(a.web_addr, a.ca_pem()) as anonymous:
        for i in range(count):
            name = f"{prefix}{i}"
            token = admin.post("/v1/users", {"name": name, "roles": ["access"],
                                             "logins": [common.bench_account()]})["token"]
            secret = anonymous.post("/v1/signup/start", {"token": token})["totp_secret"]
            step = step_now()
            anonymous.post("/v1/signup/finish", {"token": token, "password": PASSWORD,
                                                 "otp": code_at_step(secret, step)})
            users.append((name, secret))
    return users, step


def logins_per_second(targets: list[Instance], users: list[tuple[str, str]], step: int,
                      concurrency: int) -> float:
    key = generate_ssh_key().export_public_key("openssh").decode()
    clients = [APIClient(t.web_addr, t.ca_pem()) for t in targets]

    def one(i: int) -> None:
        name, secret = users[i]
        clients[i % len(clients)].post("/v1/login", {
            "user": name, "password": PASSWORD, "otp": code_at_step(secret, step),
            "public_key": key})

    try:
        return _rate(one, len(users), concurrency)
    finally:
        for client in clients:
            client.close()


def sessions_per_second(configs: list[Path], node: str, count: int,
                        concurrency: int) -> float:
    def one(i: int) -> None:
        subprocess.run(["ssh", "-F", str(configs[i % len(configs)]), "-o", "BatchMode=yes",
                        f"{common.LOGIN}@{node}.ha.limen", "true"], check=True, capture_output=True,
                       env=clean_env(), stdin=subprocess.DEVNULL, timeout=60)

    return _rate(one, count, concurrency)


def _rate(one, count: int, concurrency: int) -> float:  # noqa: ANN001 - tiny helper
    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(count)))
    return count / (time.monotonic() - started)


def ssh_configs(a: Instance, b: Instance, home_base: Path) -> tuple[Path, Path]:
    """One user logged in through A, with an OpenSSH config for each instance's jump host."""
    users, step = make_users(a, 1, "sshbench")
    name, secret = users[0]
    home = home_base / "ssh-home"
    home.mkdir()
    login = a.cli("login", "--proxy", a.web_addr, "--user", name, "--password-stdin",
                  "--otp", code_at_step(secret, step + 1), "--insecure", home=home,
                  input=PASSWORD + "\n")
    assert login.returncode == 0, login.stderr
    configs = []
    for instance in (a, b):
        path = next((home / "keys").glob("*/profile.json"))
        profile = json.loads(path.read_text())
        profile["ssh_proxy"] = instance.ssh_addr
        path.write_text(json.dumps(profile))
        config = home / f"ssh_config.{instance.name}"
        config.write_text(instance.cli("config", home=home).stdout)
        configs.append(config)
    return configs[0], configs[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=60)
    parser.add_argument("--sessions", type=int, default=60)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    schema = new_schema()
    with tempfile.TemporaryDirectory(prefix="limen-bench-ha-") as tmp:
        base = Path(tmp)
        clock = FakeClock(follow_real_time=True)
        a, b = Instance(base, "a", schema, clock), Instance(base, "b", schema, clock)
        node = None
        try:
            a.launch(), b.launch()
            a.wait_ready(), b.wait_ready()
            node = NodeProcess(a, base, "bench-node", "env=bench", proxy=a.web_addr,
                               extra=DIRECT).start()
            wait_until(lambda: any(n["name"] == "bench-node" for n in a.get("/v1/nodes")),
                       30, "the node")
            users, step = make_users(a, args.logins, "loginbench")
            # Each user logs in once per phase, at a later TOTP step each time.
            one_login = logins_per_second([a], users, step + 1, args.concurrency)
            wait_until(lambda: step_now() >= step + 1, 40, "the next TOTP step")
            two_login = logins_per_second([a, b], users, step + 2, args.concurrency)
            config_a, config_b = ssh_configs(a, b, base)
            one_ssh = sessions_per_second([config_a], "bench-node", args.sessions,
                                          args.concurrency)
            two_ssh = sessions_per_second([config_a, config_b], "bench-node", args.sessions,
                                          args.concurrency)
        finally:
            if node is not None:
                node.stop()
            a.stop()
            b.stop()
            drop_schema(schema)
    print(f"cores: {os.cpu_count()}, concurrency: {args.concurrency}")
    print(f"{'':28}{'one':>10}{'two':>10}{'two/one':>10}  (ideal 2.00)")
    for what, one, two in (("logins (= certificates)/s", one_login, two_login),
                           ("new SSH sessions/s", one_ssh, two_ssh)):
        print(f"{what:28}{one:10.1f}{two:10.1f}{two / one:10.2f}")


if __name__ == "__main__":
    main()


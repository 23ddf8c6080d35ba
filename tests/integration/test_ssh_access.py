"""SSH access through the proxy with `limen ssh` and stock OpenSSH (`limen config`):
exit codes and signals, logins, clear errors, live sessions, audit events, concurrency.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncssh
import pytest

from tests.support.cluster import ClusterHarness
from tests.support.ssh_access import (
    CLUSTER,
    LOCAL_LOGIN,
    NODE,
    clean_env,
    ensure_local_user,
    new_user,
    sign_by_hand,
    wait_until,
)

NATIVE = {"LIMEN_SSH_CLIENT": "native"}  # limen ssh's asyncssh client, not OpenSSH's ssh


@pytest.fixture(scope="module", autouse=True)
def _local_account() -> None:
    ensure_local_user()


def test_limen_ssh_passes_exit_status_and_output_through(cluster: ClusterHarness) -> None:
    alice = new_user(cluster, "exit")
    result = alice.limen("ssh", "node1", "echo out; echo err >&2; exit 3")
    assert result.returncode == 3, result.stderr
    assert (result.stdout, result.stderr) == ("out\n", "err\n")

    ok = alice.limen("ssh", f"root@{NODE}", "id", "-un")  # NAME.CLUSTER and split argv
    assert (ok.returncode, ok.stdout) == (0, "root\n"), ok.stderr

    fed = alice.limen("ssh", "node1", "tr a-z A-Z", input="hello\n")  # stdin, then EOF
    assert (fed.returncode, fed.stdout) == (0, "HELLO\n"), fed.stderr


def test_a_signal_exits_255_like_openssh_and_is_named(cluster: ClusterHarness) -> None:
    alice = new_user(cluster, "sig")
    killed = alice.limen("ssh", "node1", "kill -TERM $$")  # handed to OpenSSH's ssh
    assert (killed.returncode, killed.stderr) == (255, "")
    native = alice.limen("ssh", "node1", "kill -TERM $$", env=NATIVE)
    assert native.returncode == 255
    assert "killed by signal TERM" in native.stderr

    stock = alice.ssh(f"root@{NODE}", "kill -TERM $$")
    assert stock.returncode == 255  # what OpenSSH's own client does
    exit7 = alice.ssh(f"root@{NODE}", "exit 7")
    assert exit7.returncode == 7, exit7.stderr


def test_default_login_is_the_local_user_else_the_first_login(cluster: ClusterHarness) -> None:
    both = new_user(cluster, "deflogin", logins=f"{LOCAL_LOGIN},root")
    as_root = both.limen("ssh", "node1", "id -un")  # the tests run as root: ssh's default
    assert as_root.stdout == "root\n", as_root.stderr

    only_local = new_user(cluster, "deflogin2", logins=LOCAL_LOGIN)
    result = only_local.limen("ssh", "node1", "id -un; pwd")
    assert result.returncode == 0, result.stderr
    home = subprocess.run(["sh", "-c", f"echo ~{LOCAL_LOGIN}"], capture_output=True,
                          text=True).stdout.strip()
    assert result.stdout.split() == [LOCAL_LOGIN, home]


def test_clear_errors_for_unknown_node_and_disallowed_login(cluster: ClusterHarness) -> None:
    alice = new_user(cluster, "errs", logins="root")
    unknown = alice.limen("ssh", "no-such-node", "true")
    assert unknown.returncode == 255
    assert "node 'no-such-node' is not known" in unknown.stderr
    assert "Traceback" not in unknown.stderr

    login = alice.limen("ssh", f"{LOCAL_LOGIN}@node1", "true")
    assert login.returncode == 255
    assert f"does not allow login '{LOCAL_LOGIN}'" in login.stderr
    assert "Traceback" not in login.stderr

    # Stock ssh reaches the node, which refuses the login, and says so in the audit log.
    stock = alice.ssh(f"{LOCAL_LOGIN}@{NODE}", "true")
    assert stock.returncode == 255
    assert b"Permission denied" in stock.stderr
    wait_until(
        lambda: [e for e in cluster.events_of("auth", claimed_user=alice.name, code="T3007W")
                 if e.get("claimed_login") == LOCAL_LOGIN],
        10, "the node's refusal event",
    )


def test_expired_certificate_says_run_limen_login(cluster: ClusterHarness) -> None:
    alice = new_user(cluster, "expired")
    past = datetime.now(UTC) - timedelta(hours=2)
    old = sign_by_hand(alice.home / "old", cluster.service.auth.ctx.cas.user_ca, alice.name,
                       ["root"], valid_after=past - timedelta(hours=1), valid_before=past)
    Path(alice.status["cert_path"]).write_bytes(old.cert.read_bytes())
    Path(alice.status["key_path"]).write_bytes(old.key.read_bytes())
    result = alice.limen("ssh", "node1", "true")
    assert result.returncode == 255
    assert "certificate has expired" in result.stderr and "run limen login" in result.stderr
    copy = alice.limen("scp", "node1:/etc/hostname", str(alice.home / "h"))
    assert copy.returncode != 0 and "run limen login" in copy.stderr
    # The proxy refuses it as well, when a client does not check first.
    stock = alice.ssh(f"root@{NODE}", "true")
    assert stock.returncode == 255 and b"Permission denied" in stock.stderr


def test_stock_ssh_scp_sftp_and_rsync_work_with_limen_config(
    cluster: ClusterHarness, tmp_path: Path
) -> None:
    alice = new_user(cluster, "stock")
    text = alice.config.read_text()
    assert "~" not in text
    assert f"Host *.{CLUSTER} 127.0.0.1" in text
    jump = alice.status["ssh_proxy"]  # what the proxy told login: its SSH (or shared) port
    assert jump in (cluster.ssh_addr, cluster.web_addr)
    assert f"ProxyJump root@{jump}" in text
    for line in text.splitlines():
        if line.strip().startswith(("IdentityFile", "CertificateFile", "UserKnownHostsFile")):
            assert Path(line.split(None, 1)[1].strip('"')).is_absolute()

    hello = alice.ssh(f"root@{NODE}", "echo hello from $(hostname)")
    assert hello.returncode == 0, hello.stderr
    assert hello.stdout.startswith(b"hello from ")

    local = tmp_path / "data.txt"
    local.write_text("limen scp test\n")
    remote = f"/tmp/{alice.name}.txt"
    up = alice.tool("scp", str(local), f"root@{NODE}:{remote}")
    assert up.returncode == 0, up.stderr
    batch = tmp_path / "batch"
    batch.write_text(f"get {remote} {tmp_path / 'back.txt'}\nrm {remote}\n")
    sftp = alice.tool("sftp", "-b", str(batch), f"root@{NODE}")
    assert sftp.returncode == 0, sftp.stderr
    assert (tmp_path / "back.txt").read_text() == "limen scp test\n"

    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f").write_text("rsync\n")
    rsync = subprocess.run(
        ["rsync", "-a", "-e", f"ssh -F {alice.config} -o BatchMode=yes", f"{tree}/",
         f"root@{NODE}:/tmp/{alice.name}-tree/"],
        capture_output=True, text=True, env=clean_env(), timeout=60,
    )
    assert rsync.returncode == 0, rsync.stderr
    check = alice.ssh(f"root@{NODE}", f"cat /tmp/{alice.name}-tree/sub/f && "
                                      f"rm -r /tmp/{alice.name}-tree")
    assert check.stdout == b"rsync\n"


def test_plain_ssh_dash_j_verifies_both_hops_through_the_host_ca(
    cluster: ClusterHarness, tmp_path: Path
) -> None:
    alice = new_user(cluster, "jump")
    # Only the login's identity and the host CA, no ProxyJump: -J on the command line.
    config = tmp_path / "plain"
    config.write_text(
        "Host *\n"
        f"  IdentityFile {alice.status['key_path']}\n"
        f"  CertificateFile {alice.status['cert_path']}\n"
        "  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {alice.status['known_hosts_path']}\n"
        "  GlobalKnownHostsFile /dev/null\n"
        "  StrictHostKeyChecking yes\n"
    )
    result = subprocess.run(
        ["ssh", "-F", str(config), "-o", "BatchMode=yes", "-J", f"root@{cluster.ssh_addr}",
         "root@node1", "echo via -J"],
        capture_output=True, env=clean_env(), timeout=60, stdin=subprocess.DEVNULL,
    )
    assert (result.returncode, result.stdout) == (0, b"via -J\n"), result.stderr

    # Another cluster's host CA in known_hosts: the proxy cannot be verified.
    stranger = tmp_path / "known_hosts"
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode()
    stranger.write_text(f"@cert-authority * {other}")
    bad = tmp_path / "bad"
    bad.write_text(config.read_text().replace(alice.status["known_hosts_path"], str(stranger)))
    refused = subprocess.run(
        ["ssh", "-F", str(bad), "-o", "BatchMode=yes", "-J", f"root@{cluster.ssh_addr}",
         "root@node1", "true"],
        capture_output=True, text=True, env=clean_env(), timeout=60, stdin=subprocess.DEVNULL,
    )
    assert refused.returncode == 255
    assert "Host key verification failed" in refused.stderr

    # limen ssh verifies the same way, with the host CA its profile keeps.
    profile = Path(alice.status["cert_path"]).parent / "profile.json"
    data = json.loads(profile.read_text())
    profile.write_text(json.dumps({**data, "host_ca": f"@cert-authority * {other}"}))
    unverified = alice.limen("ssh", "node1", "true")  # through OpenSSH's ssh
    assert unverified.returncode == 255
    assert "Host key verification failed" in unverified.stderr, unverified.stderr
    native = alice.limen("ssh", "node1", "true", env=NATIVE)
    assert native.returncode == 255
    assert "could not be verified" in native.stderr, native.stderr


def test_config_write_includes_itself_once(cluster: ClusterHarness, tmp_path: Path) -> None:
    alice = new_user(cluster, "cfgw")
    home = tmp_path / "home"
    home.mkdir()
    for _ in range(2):
        result = alice.limen("config", "--write", env={"HOME": str(home)})
        assert result.returncode == 0, result.stderr
    written = alice.home / "ssh_config"  # $LIMEN_HOME/ssh_config
    user_config = home / ".ssh" / "config"
    include = f'Include "{written}"'
    assert user_config.read_text().splitlines().count(include) == 1
    assert written.read_text() == alice.config.read_text()
    via_include = alice.ssh(f"root@{NODE}", "echo included", config=user_config)
    assert via_include.stdout == b"included\n", via_include.stderr


def test_live_session_is_listed_while_it_runs(cluster: ClusterHarness) -> None:
    alice = new_user(cluster, "live")
    proc = subprocess.Popen(
        alice.ssh_argv(f"root@{NODE}", "cat"), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(),
    )
    try:
        def mine() -> list[dict]:
            listed = alice.limen("sessions", "ls", "--format", "json")
            assert listed.returncode == 0, listed.stderr
            return [s for s in listed.json() if s["user"] == alice.name]

        sessions = wait_until(mine, 20, "the session in limen sessions ls", every=0.2)
        assert sessions[0]["login"] == "root"
        assert sessions[0]["node"] == "node1"
        assert sessions[0]["command"] == "cat"
        text = alice.limen("sessions", "ls")
        assert sessions[0]["id"] in text.stdout
    finally:
        out, err = proc.communicate(b"bye\n", timeout=30)
    assert (proc.returncode, out) == (0, b"bye\n"), err
    wait_until(lambda: not mine(), 20, "the session to end", every=0.2)


def test_audit_events_for_session_start_exec_and_end(cluster: ClusterHarness) -> None:
    alice = new_user(cluster, "audit")
    result = alice.limen("ssh", "node1", "exit 4")
    assert result.returncode == 4

    end = wait_until(lambda: cluster.events_of("session.end", user=alice.name), 10,
                     "session.end")[0]
    start = cluster.events_of("session.start", user=alice.name)[0]
    execs = cluster.events_of("exec", user=alice.name)
    assert start["code"] == "T2000I" and end["code"] == "T2004I"
    assert start["sid"] == end["sid"] and start["sid"]
    for event in (start, end):
        assert event["login"] == "root"
        assert event["server_hostname"] == "node1"
        assert event["server_id"] and event["addr.remote"]
        assert event["interactive"] is False
    assert start["command"] == "exit 4"
    assert end["exit_code"] == 4 and end["session_start"] and end["session_stop"]
    assert len(execs) == 1 and execs[0]["code"] == "T3002I"
    assert execs[0]["command"] == "exit 4" and execs[0]["exit_code"] == 4
    assert execs[0]["sid"] == start["sid"]
    proxy = cluster.events_of("proxy.connect", user=alice.name)
    assert proxy and proxy[0]["server_hostname"] == "node1" and proxy[0]["allowed"] is True


def test_twenty_concurrent_sessions(cluster: ClusterHarness, tmp_path: Path) -> None:
    alice = new_user(cluster, "many")
    barrier = f"/tmp/{alice.name}-barrier"
    # Each session checks in, then waits until all 20 have: only concurrent sessions pass.
    script = (f"mkdir -p {barrier}; touch {barrier}/$N; i=0; "
              f"while [ $(ls {barrier} | wc -l) -lt 20 ]; do i=$((i+1)); "
              f"[ $i -gt 600 ] && exit 9; sleep 0.05; done; echo done-$N")
    procs = []
    try:
        for n in range(20):
            argv = alice.ssh_argv(f"root@{NODE}", f"N={n}; {script}")
            procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          stdin=subprocess.DEVNULL, env=clean_env()))
        results = [(p.wait(60), *p.communicate()) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
        subprocess.run(["rm", "-rf", barrier])
    for n, (code, out, err) in enumerate(results):
        assert (code, out) == (0, f"done-{n}\n".encode()), err
    ends = wait_until(
        lambda: len(cluster.events_of("session.end", user=alice.name)) >= 20 or None, 20,
        "20 session.end events",
    )
    assert ends


def test_agent_forwarding_with_dash_a(cluster: ClusterHarness, tmp_path: Path) -> None:
    alice = new_user(cluster, "agent")
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        wait_until(sock.exists, 10, "ssh-agent's socket")
        key = tmp_path / "id"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "agent-test",
                        "-f", str(key)], check=True)
        env = {"SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", "-q", str(key)], check=True, env=clean_env(**env),
                       capture_output=True)
        forwarded = alice.limen("ssh", "-A", "node1", "ssh-add -l", env=env)
        assert forwarded.returncode == 0, forwarded.stderr
        assert "agent-test" in forwarded.stdout
        plain = alice.limen("ssh", "node1", "ssh-add -l", env=env)
        assert plain.returncode == 2  # no agent on the node without -A
    finally:
        agent.terminate()
        agent.wait(10)

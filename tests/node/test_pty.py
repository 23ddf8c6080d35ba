"""Interactive sessions on a real pty, driven through ``ssh -tt`` with pexpect."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time

import pexpect

from tests.node.conftest import Node

PROMPT = "LIMEN-PROMPT> "
CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")  # bash's bracketed-paste toggles, CRs


def spawn_shell(node: Node, login: str = "root") -> pexpect.spawn:
    client = node.client(login=login)
    argv = client.ssh_argv(options=("-tt",))
    env = {**os.environ, "TERM": "xterm-256color"}
    shell = pexpect.spawn(argv[0], argv[1:], env=env, timeout=15, dimensions=(24, 80))
    # A prompt the shell prints but the echo of this command line does not contain.
    shell.sendline("PS1='LIMEN-''PROMPT> '")
    shell.expect_exact(PROMPT)
    return shell


def run(shell: pexpect.spawn, command: str) -> str:
    """Run a command and return its output, framed by markers the echo does not contain
    (the shell may redraw its prompt at any time, e.g. after a window change)."""
    shell.sendline(f"echo '<<''<'; {command}; echo '>>''>'")
    shell.expect_exact("<<<")
    shell.expect_exact(">>>")
    return CONTROL.sub("", shell.before.decode()).strip()


def running(command_line: str) -> bool:
    found = subprocess.run(["pgrep", "-f", f"^{command_line}$"], capture_output=True)
    return found.returncode == 0


def wait_until(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"


def test_interactive_shell_has_a_pty(node: Node) -> None:
    shell = spawn_shell(node)
    try:
        assert run(shell, "tty").strip().startswith("/dev/pts/")
        assert run(shell, "echo $TERM").strip() == "xterm-256color"
        assert run(shell, "stty size").strip() == "24 80"
        shell.setwinsize(40, 132)  # ssh sends a window change; the node applies it
        wait_until(lambda: run(shell, "stty size") == "40 132")
        shell.sendline("exit 0")
        shell.expect(pexpect.EOF)
    finally:
        shell.close()
    assert shell.exitstatus == 0
    resize = node.observer.wait_for("resize")
    assert resize["size"] == "132:40"
    start = node.observer.wait_for("session.start")
    assert start["interactive"] is True and start["terminal_size"] == "80:24"
    end = node.observer.wait_for("session.end")
    assert end["interactive"] is True and end["exit_code"] == 0


def test_ctrl_c_interrupts_the_foreground_job(node: Node) -> None:
    # Even when the node itself ignores SIGINT (started from a non-interactive shell).
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        shell = spawn_shell(node)
    finally:
        signal.signal(signal.SIGINT, old)
    try:
        seconds = 1000 + random.randrange(100000)  # a command line no other test runs
        shell.sendline(f"sleep {seconds}")
        wait_until(lambda: running(f"sleep {seconds}"))  # in the foreground now
        shell.sendintr()
        shell.expect_exact(PROMPT, timeout=10)
        shell.sendline("echo status=$((1000+$?))")
        shell.expect_exact("status=1130")  # sleep died of SIGINT (128 + 2)
        shell.sendline("exit 7")
        shell.expect(pexpect.EOF)
    finally:
        shell.close()
    assert shell.exitstatus == 7


def test_output_is_recorded(node: Node) -> None:
    shell = spawn_shell(node)
    try:
        run(shell, "echo recorded-$((6*7))")
        shell.sendline("exit")
        shell.expect(pexpect.EOF)
    finally:
        shell.close()
    sid = node.observer.wait_for("session.end")["sid"]
    assert b"recorded-42" in node.observer.output[sid]

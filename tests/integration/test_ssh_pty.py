"""Interactive shells on a real pseudo-terminal (pexpect): `limen ssh -t` and stock `ssh -tt`.

The remote pty follows the local window size, a window change reaches it (`stty size`),
Ctrl-C reaches the foreground process, and the shell's exit status comes back.
"""

from __future__ import annotations

import sys

import pexpect

from tests.support.cluster import ClusterHarness
from tests.support.ssh_access import NODE, SshUser, clean_env, new_user, wait_until

PROMPT = "LIMEN-PROMPT> "


def _spawn(argv: list[str], user: SshUser) -> pexpect.spawn:
    env = clean_env(LIMEN_HOME=str(user.home), TERM="xterm")
    child = pexpect.spawn(argv[0], argv[1:], env=env, dimensions=(24, 80), timeout=20,
                          encoding="utf-8", codec_errors="replace")
    # A prompt of our own, so every wait below is for a known string.
    child.sendline(f"PS1='{PROMPT}'; export PS1")
    child.expect_exact(PROMPT)
    child.expect_exact(PROMPT)  # the echo of the line above, then the real prompt
    return child


def _stty_size(child: pexpect.spawn) -> str:
    child.sendline("stty size")
    child.expect(r"(\d+ \d+)\r\n")
    size = child.match.group(1)
    child.expect_exact(PROMPT)
    return size


def _drive(child: pexpect.spawn) -> None:
    try:
        assert _stty_size(child) == "24 80"
        child.sendline("tty; echo TERM=$TERM")
        child.expect(r"/dev/pts/\d+")
        child.expect_exact("TERM=xterm")
        child.expect_exact(PROMPT)

        child.setwinsize(40, 120)
        # The window change travels beside the keystrokes; ask until it has landed.
        wait_until(lambda: _stty_size(child) == "40 120", 10, "the new window size")

        # Ctrl-C goes to the remote foreground process, not to ssh. Send it once the
        # process runs (it says so after it is the foreground job), else bash may take it.
        child.sendline("sh -c 'echo running-$((6*7)); exec sleep 60'")
        child.expect_exact("running-42")
        child.sendintr()
        child.expect_exact(PROMPT, timeout=10)  # long before the 60 s are up

        child.sendline("exit 7")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 7


def test_limen_ssh_t_shell_resizes_interrupts_and_exits(cluster: ClusterHarness) -> None:
    alice = new_user(cluster, "ptyl")
    argv = [sys.executable, "-m", "limen.cli.main", "ssh", "-t", "root@node1"]
    _drive(_spawn(argv, alice))
    resized = wait_until(lambda: cluster.events_of("resize", user=alice.name), 10,
                         "a resize event")
    assert resized[0]["size"] == "120:40"
    start = cluster.events_of("session.start", user=alice.name)
    assert start and start[0]["interactive"] is True


def test_stock_ssh_tt_shell_resizes_interrupts_and_exits(cluster: ClusterHarness) -> None:
    alice = new_user(cluster, "ptys")
    argv = ["/usr/bin/ssh", *alice.ssh_argv("-tt", f"root@{NODE}")[1:]]
    _drive(_spawn(argv, alice))


def test_limen_ssh_without_a_terminal_asks_for_no_pty(cluster: ClusterHarness) -> None:
    alice = new_user(cluster, "nopty")
    plain = alice.limen("ssh", "-t", "node1", "tty", input="")  # -t needs a local terminal
    assert plain.stdout.strip() == "not a tty"
    forced = alice.limen("ssh", "-tt", "node1", "tty", input="")
    assert forced.stdout.startswith("/dev/pts/"), forced.stderr

"""`limen ssh NODE` through OpenSSH's own ssh, when it is installed.

Importing asyncssh and cryptography takes longer here than a whole stock `ssh` through
the proxy, so for one node `limen ssh` checks what it can explain early (the login, the
certificate's validity and permissions: client/login_checks.py), then replaces itself
with ssh and the same config `limen config` prints. ssh makes both hops and verifies
both hosts through the cluster's host CA, exactly as it does for people who use that
config directly. LIMEN_SSH_CLIENT=native keeps the asyncssh client; so does a machine
without ssh. Label selectors, scp and session joining always use asyncssh.

What changes for the person: messages from the proxy or the node come in ssh's words
("channel 0: open failed: administratively prohibited: <our sentence>"), and a remote
command killed by a signal exits 255 without the signal being named (what ssh does).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from limen.client import profile as profiles
from limen.client.openssh import config_block

TYPE_CHECKING = False  # not typing's: importing typing costs `limen ssh` ~4 ms
if TYPE_CHECKING:
    from typing import NoReturn

CLIENT_ENV = "LIMEN_SSH_CLIENT"  # "native": always the asyncssh client


def openssh_binary() -> str | None:
    """The ssh to hand over to, or None for the asyncssh client."""
    if os.environ.get(CLIENT_ENV, "").strip().lower() == "native":
        return None
    return shutil.which("ssh")  # argparse has imported shutil already


def config_file(profile: profiles.Profile, jump_login: str) -> Path:
    """This profile's OpenSSH config, trusting this cluster's host CA alone (as the
    asyncssh client does), not every cluster's line in the shared known_hosts."""
    known_hosts = profile.dir / "openssh_known_hosts"
    if profile.host_ca:
        _write_if_changed(known_hosts, profile.host_ca.strip() + "\n")
    else:  # a profile from before the host CA was stored: the shared file
        known_hosts = profiles.Profile.known_hosts_path()
    path = profile.dir / "openssh_config"
    _write_if_changed(path, config_block(profile, jump_login, known_hosts=known_hosts))
    return path


def _write_if_changed(path: Path, text: str) -> None:
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    profiles.write_private(path, text, 0o600)


def destination(node: str, cluster: str) -> tuple[str, str]:
    """(the name ssh's config matches, the name the proxy and the host certificate know).

    The config applies to ``*.CLUSTER``; a node's certificate names its id, its name and
    NAME.CLUSTER, so a bare name or id is given as HostName with CLUSTER appended for
    the match.
    """
    suffix = f".{cluster}"
    if node.lower().endswith(suffix.lower()):
        return node, node
    return node + suffix, node


def ssh_argv(binary: str, config: Path, *, host: str, host_name: str, login: str,
             tty: int, no_tty: bool, forwards: list[str], agent: bool, no_command: bool,
             command: list[str], verbose: bool = False) -> list[str]:
    argv = [binary, "-F", str(config), "-l", login] + ["-v"] * verbose
    if host_name != host:
        argv += ["-o", f"HostName={host_name}"]
    argv += ["-t"] * tty + ["-T"] * no_tty + ["-A"] * agent + ["-N"] * no_command
    for spec in forwards:
        argv += ["-L", spec]
    return [*argv, "--", host, *command]


def hand_over(argv: list[str]) -> NoReturn:
    """Become ssh: its exit status, signals and terminal handling are then ssh's own."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)

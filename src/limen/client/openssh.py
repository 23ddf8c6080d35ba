"""`limen config`: an OpenSSH client config so plain ssh, scp, sftp and rsync use the login.

Two blocks, as Teleport's `tsh config` does:

- every cluster host (``*.CLUSTER``) and the proxy: the login's key and certificate only
  (IdentitiesOnly), and the cluster's host CA as the only trusted host key source with
  StrictHostKeyChecking yes, so both hops of ProxyJump are verified and never prompt;
- every cluster host except the proxy: ProxyJump through the proxy's SSH port (no
  extra process per connection, unlike ProxyCommand).

With ``--tls-routing`` every node's ProxyCommand is `limen proxy tls --node`: a direct
connection to the node inside TLS to the proxy's web port (proxy.ssh_direct), over which
ssh makes its one SSH connection, to the node.

Paths are absolute and quoted, never ``~``: the block works from ``ssh -F FILE`` and
from an ``Include`` alike, and ProxyJump hands ``-F FILE`` on to the jump hop.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from limen.client import profile as profiles
from limen.hostport import split_host_port
from limen.sshalgs import CIPHERS_OPENSSH

INCLUDE_MARKER = "# Added by limen config --write"


def _quote(path: Path | str) -> str:
    return '"' + str(path).replace('"', '\\"') + '"'


def proxy_command(web_addr: str) -> str:
    """This very limen as every node's ProxyCommand, with this profile home pinned: a
    direct connection inside TLS through the proxy at ``web_addr``."""
    return (
        f"env LIMEN_HOME={_quote(profiles.limen_home())} {_quote(sys.executable)} "
        # Quotes: a user name is ssh's to check, and [...] of an IPv6 address is a glob.
        f'-m limen.cli.main proxy tls --node "%r@%h:%p" "{web_addr}"'
    )


def config_block(profile: profiles.Profile, jump_login: str, tls_routing: bool = False,
                 known_hosts: Path | None = None) -> str:
    """The config text for ``profile``; ``jump_login`` is the user name at the proxy.

    With ``tls_routing`` every node is reached by a direct connection inside TLS to the
    proxy's web port (for load balancers that pass only TLS): `limen proxy tls --node`
    as the ProxyCommand. ``known_hosts`` replaces the file of every cluster's host CA.
    """
    host, port = split_host_port(profile.ssh_proxy)
    cluster = profile.cluster
    known_hosts = known_hosts or profiles.Profile.known_hosts_path()
    head = (
        f"# Limen cluster {cluster} through the proxy {profile.proxy} "
        f"(user {profile.user}); from: limen config\n"
        f"# Use: ssh LOGIN@NODE.{cluster}   (scp, sftp and rsync -e ssh alike)\n"
        f"Host *.{cluster} {host}\n"
        f"    IdentityFile {_quote(profile.key_path)}\n"
        f"    CertificateFile {_quote(profile.cert_path)}\n"
        f"    IdentitiesOnly yes\n"
        f"    UserKnownHostsFile {_quote(known_hosts)}\n"
        f"    GlobalKnownHostsFile /dev/null\n"
        f"    StrictHostKeyChecking yes\n"
        f"    CheckHostIP no\n"
        # AES-GCM first: the cheapest AEAD cipher for the Python proxy and nodes.
        f"    Ciphers {CIPHERS_OPENSSH}\n"
        f"\n"
    )
    if not tls_routing:
        return head + f"Host *.{cluster} !{host}\n    ProxyJump {jump_login}@{_jump(host, port)}\n"
    web_host, web_port = split_host_port(profile.proxy)
    return head + (
        f"Host *.{cluster} !{host}\n"
        f"    ProxyCommand {proxy_command(_jump(web_host, web_port))}\n"
    )


def _jump(host: str, port: int) -> str:
    """ProxyJump's HOST:PORT; an IPv6 address in brackets, its colons being its own."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def config_path() -> Path:
    return profiles.limen_home() / "ssh_config"


def write_config(text: str) -> tuple[Path, bool]:
    """Write the block to $LIMEN_HOME/ssh_config and include it from ~/.ssh/config.

    Returns the path and whether the Include line was added now (it is added once,
    at the top: an Include after a Host line would only apply inside that block).
    """
    path = config_path()
    profiles.write_private(path, text, 0o600)
    return path, _add_include(path)


def _add_include(path: Path) -> bool:
    user_config = Path.home() / ".ssh" / "config"
    if user_config.is_symlink():  # dotfile managers link it: edit the file, keep the link
        user_config = user_config.resolve()
    line = f"Include {_quote(path)}"
    existing = user_config.read_text() if user_config.exists() else ""
    if any(entry.strip() == line for entry in existing.splitlines()):
        return False
    user_config.parent.mkdir(mode=0o700, exist_ok=True)
    mode = os.stat(user_config).st_mode & 0o777 if user_config.exists() else 0o600
    profiles.write_private(user_config, f"{INCLUDE_MARKER}\n{line}\n\n{existing}", mode)
    return True

"""`limen proxy tls|ssh`: OpenSSH ProxyCommands through the proxy's web port, for
clusters behind a load balancer that passes only TLS.

- `limen proxy tls --node "%r@%h:%p" WEB` (what `limen config --tls-routing` uses): TLS
  1.3 to the web port with ALPN limen-node, a signed request for a direct connection to
  the node (client.node_request), then stdin/stdout relayed through it; ssh's one SSH
  connection, to the node, is the only SSH on the way.
- `limen proxy tls "[%h]:%p"` (configs of 2026-12-03 to -05): TLS with ALPN limen-ssh
  and stdin/stdout relayed through it; ssh makes the jump hop itself (ProxyJump).
- `limen proxy ssh %r@%h:%p` (earlier configs): the jump hop made here, in asyncssh,
  inside that TLS, and a channel to the node spliced to stdin/stdout.

Each command imports its own libraries when it runs: ssh waits for the ProxyCommand
before its first byte, and `proxy tls` needs none of asyncssh.
"""

from __future__ import annotations

from limen.errors import BadParameter, NotFound
from limen.hostport import split_host_port

TYPE_CHECKING = False  # not typing's: `limen proxy tls` runs before ssh's first byte
if TYPE_CHECKING:
    import argparse


def register(sub: argparse._SubParsersAction) -> None:
    proxy = sub.add_parser("proxy", help="helpers for OpenSSH (ProxyCommand)")
    cmds = proxy.add_subparsers(dest="proxy_cmd", required=True, metavar="COMMAND")
    tls = cmds.add_parser("tls", help="ProxyCommand through the web port's TLS: limen "
                                      "proxy tls --node \"%%r@%%h:%%p\" HOST:PORT (straight "
                                      "to a node), or \"[%%h]:%%p\" (the hop of a jump)")
    tls.add_argument("address", metavar="HOST:PORT",
                     help="the proxy's web address (HOST:PORT or [HOST]:PORT)")
    tls.add_argument("--node", metavar="LOGIN@NODE[:PORT]",
                     help="connect straight to this node's SSH (ProxyCommand of every "
                          "node: --node \"%%r@%%h:%%p\"); without it, the jump host's")
    tls.set_defaults(func=cmd_proxy_tls, logging_later=True)  # it never logs: ~5 ms saved
    ssh = cmds.add_parser("ssh", help="ProxyCommand: limen proxy ssh %%r@%%h:%%p")
    ssh.add_argument("target", metavar="[LOGIN@]NODE[:PORT]")
    ssh.set_defaults(func=cmd_proxy_ssh)


def parse_target(text: str) -> tuple[str | None, str, int]:
    login, _, rest = text.rpartition("@")
    host, _, port = rest.partition(":")
    if not host:
        raise BadParameter(f"{text!r} is not [LOGIN@]NODE[:PORT]")
    try:
        return login or None, host, int(port or 22)
    except ValueError:
        raise BadParameter(f"{text!r} has a port that is not a number") from None


# limen proxy tls


def cmd_proxy_tls(args: argparse.Namespace) -> int:
    return proxy_tls(args.address, args.node)


def plain_proxy_tls(words: list[str]) -> tuple[str, str | None] | None:
    """(address, node) when the words after `limen proxy tls` are what `limen config`
    writes: ADDRESS, with or without ``--node TARGET`` before it; None for anything else,
    which argparse judges (cli/main.py runs this before argparse, whose import and
    parsing take about 6 ms here, each time ssh connects)."""
    if len(words) == 1 and not words[0].startswith("-"):
        return words[0], None
    if len(words) == 3 and words[0] == "--node" and not words[1].startswith("-") \
            and not words[2].startswith("-"):
        return words[2], words[1]
    return None


def proxy_tls(address_text: str, node_text: str | None) -> int:
    from limen.client import profile as profiles
    from limen.client.pipes import widen_pipe
    from limen.client.tls_relay import ALPN_SSH, open_tls, relay_stdio
    from limen.client.trust import shared_verifying_context
    from limen.tls_direct import ALPN_NODE

    host, port = split_host_port(address_text)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    profile = profiles.load(address)  # the login made through this very address
    ca = profile.trusted_ca()
    if ca is None:
        raise NotFound(f"no login through the proxy at {address} is stored; run "
                       f"limen login --proxy {address}, then limen config --tls-routing")
    where = f"the proxy at {address}"
    node = _node_target(node_text) if node_text else None
    if node is not None and not profile.user:
        raise NotFound(f"no login through the proxy at {address} is stored; run "
                       f"limen login --proxy {address}")
    alpn = ALPN_NODE if node else ALPN_SSH
    tls = open_tls(host, port, shared_verifying_context(ca, (alpn,)), where, alpn=alpn)
    with tls:
        first = b""
        if node is not None:
            from limen.client.node_request import request_node

            first = request_node(tls, profile.key_path, profile.cert_path, *node, where)
        for fd in (0, 1):
            widen_pipe(fd)
        relay_stdio(tls, where, first=first)
    return 0


def _node_target(text: str) -> tuple[str, str, int]:
    login, host, port = parse_target(text)
    if login is None:
        raise BadParameter(f"--node {text!r} names no login: give LOGIN@NODE[:PORT]")
    return login, host, port


# limen proxy ssh


def cmd_proxy_ssh(args: argparse.Namespace) -> int:
    from limen.runtime import eventloop

    login, host, port = parse_target(args.target)
    return eventloop.run(_proxy(login, host, port))  # its TLS in C: less CPU per GB


async def _proxy(login: str | None, host: str, port: int) -> int:
    import asyncssh

    from limen.client.access import load_credentials
    from limen.client.ssh import client_algs, host_ca_known_hosts, translate_error
    from limen.client.stdio_pipe import splice_stdio
    from limen.client.tls_tunnel import TLSTunnel

    creds = load_credentials()
    ca = creds.profile.trusted_ca()
    if ca is None:
        raise NotFound("no cluster CA is stored for this profile; run limen login")
    web_host, web_port = split_host_port(creds.profile.proxy)
    user = creds.choose_login(login)
    try:
        jump = await asyncssh.connect(
            web_host, web_port, tunnel=TLSTunnel(ca), username=user,
            client_keys=[(creds.key, creds.cert)], known_hosts=host_ca_known_hosts(creds.host_ca),
            agent_path=None, config=[], preferred_auth="publickey", connect_timeout=10,
            **client_algs(),
        )
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        where = f"the proxy at {creds.profile.proxy}"
        raise translate_error(exc, "proxy", where, creds.profile.cluster) from exc
    async with jump:
        try:
            await splice_stdio(jump, host, port)
        except (OSError, asyncssh.Error) as exc:
            raise translate_error(exc, "node", f"node '{host}'", creds.profile.cluster) from exc
    return 0

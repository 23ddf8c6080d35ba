"""`limen proxy ssh %r@%h:%p`: an OpenSSH ProxyCommand through the proxy's web port.

For clusters behind a load balancer that passes only TLS: the SSH jump hop runs
inside TLS (ALPN limen-ssh) to the single web address, a channel is opened to the
node, and that channel is piped to stdin/stdout for the ssh that started us.
"""

from __future__ import annotations

import argparse

import asyncssh

from limen.client.access import load_credentials
from limen.client.ssh import client_algs, host_ca_known_hosts, translate_error
from limen.client.stdio_pipe import splice_stdio
from limen.client.tls_tunnel import TLSTunnel
from limen.config import split_host_port
from limen.errors import BadParameter, NotFound
from limen.runtime import eventloop


def register(sub: argparse._SubParsersAction) -> None:
    proxy = sub.add_parser("proxy", help="helpers for OpenSSH (ProxyCommand)")
    cmds = proxy.add_subparsers(dest="proxy_cmd", required=True, metavar="COMMAND")
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


def cmd_proxy_ssh(args: argparse.Namespace) -> int:
    login, host, port = parse_target(args.target)
    return eventloop.run(_proxy(login, host, port))  # its TLS in C: less CPU per GB


async def _proxy(login: str | None, host: str, port: int) -> int:
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

"""`limen ssh`, `limen scp` and `limen config`: reaching nodes through the proxy.

`limen ssh NODE` becomes OpenSSH's ssh when it is installed (client/openssh_exec.py),
after the checks it can explain itself; LIMEN_SSH_CLIENT=native, label selectors and
`limen scp` use the asyncssh client.

Exit codes of `limen ssh` follow OpenSSH's ssh: the remote command's exit status;
255 when it was killed by a signal (the asyncssh client names it on stderr) or when
limen itself fails (no login, unknown node, refused certificate...), so a script can
tell a remote `exit 1` from a failure to get there. With a label selector the exit code is 0
when the command succeeded on every node, else 1.
"""

from __future__ import annotations

import argparse
import os
import sys

from limen.errors import BadParameter, LimenError, NotFound

# typing.TYPE_CHECKING without importing typing, ~4 ms of every `limen ssh` (type
# checkers treat any TYPE_CHECKING as true).
TYPE_CHECKING = False
if TYPE_CHECKING:  # asyncssh takes a while to import: only the commands that dial load it
    from typing import NoReturn

    from limen.client.access import Credentials
    from limen.client.login_checks import Target
    from limen.client.ssh import RemoteExit

SSH_FAILURE = 255
EXIT_CODES = """exit status, as OpenSSH's ssh:
  the remote command's exit status; 255 when it was killed by a signal or when
  limen could not run it (not logged in, unknown node, refused).
  With a label selector (KEY=VALUE[,KEY=VALUE] instead of NODE): 0 when the
  command succeeded on every matching node, else 1."""


def _add_ssh_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-t", dest="tty", action="count", default=0,
                        help="ask for a pty; -tt even without a local terminal")
    parser.add_argument("-T", dest="no_tty", action="store_true", help="never ask for a pty")
    parser.add_argument("-L", dest="forwards", action="append", default=[],
                        metavar="[BIND:]LPORT:HOST:RPORT", help="forward a local port")
    parser.add_argument("-A", dest="agent", action="store_true", help="forward your ssh-agent")
    parser.add_argument("-N", dest="no_command", action="store_true",
                        help="run no command (with -L: forward only)")
    parser.add_argument("-l", dest="login",
                        help="the login (default: your user name if allowed)")


def register(sub: argparse._SubParsersAction) -> None:
    ssh = sub.add_parser("ssh", help="run a shell or command on a node (or on nodes by label)",
                         description="Runs OpenSSH's ssh with the cluster's config when it "
                         "is installed (LIMEN_SSH_CLIENT=native: the built-in client).",
                         epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_ssh_options(ssh)
    ssh.add_argument("target", metavar="[LOGIN@]NODE",
                     help="node name, NAME.CLUSTER, id, or a label selector such as env=dev")
    ssh.add_argument("command", nargs=argparse.REMAINDER,
                     help="command to run (options may also follow NODE, as with ssh)")
    ssh.set_defaults(func=cmd_ssh, logging_later=True)  # see _ssh

    scp = sub.add_parser("scp", help="copy files to or from nodes ([LOGIN@]NODE:PATH)")
    scp.add_argument("-r", dest="recursive", action="store_true", help="copy directories")
    scp.add_argument("-p", dest="preserve", action="store_true",
                     help="keep modification times and modes")
    scp.add_argument("paths", nargs="+", metavar="PATH", help="SRC... DST")
    scp.set_defaults(func=cmd_scp)

    config = sub.add_parser("config", help="print an OpenSSH config for this cluster")
    config.add_argument("--write", action="store_true",
                        help="write it to $LIMEN_HOME/ssh_config and include it from "
                             "~/.ssh/config")
    config.add_argument("--tls-routing", action="store_true",
                        help="reach every node by a direct connection inside TLS to the "
                             "web port (limen proxy tls --node as ProxyCommand), for load "
                             "balancers that pass only TLS")
    config.set_defaults(func=cmd_config)


# limen ssh


def cmd_ssh(args: argparse.Namespace) -> int:
    try:
        return _ssh(args)
    except LimenError as exc:
        print(f"ERROR: {exc.message}", file=sys.stderr)
        return SSH_FAILURE


def options_after_target(args: argparse.Namespace) -> argparse.Namespace:
    """ssh reads options after the host too (`ssh web-1 -N -L ...`), up to the first word
    that is not one; the rest is the command."""
    if not args.command or not args.command[0].startswith("-"):
        return args
    later = argparse.ArgumentParser(prog="limen ssh", add_help=False)
    _add_ssh_options(later)
    later.add_argument("command", nargs=argparse.REMAINDER)
    more = later.parse_args(args.command)
    return argparse.Namespace(**{
        **vars(args),
        "tty": args.tty + more.tty,
        "no_tty": args.no_tty or more.no_tty,
        "forwards": [*args.forwards, *more.forwards],
        "agent": args.agent or more.agent,
        "no_command": args.no_command or more.no_command,
        "login": more.login or args.login,
        "command": more.command,
    })


def _ssh(args: argparse.Namespace) -> int:
    from limen.cli.main import configure_logging
    from limen.client.login_checks import Target, is_selector
    from limen.client.openssh_fast import openssh_binary

    args = options_after_target(args)
    if is_selector(args.target):
        from limen.client.access import load_credentials

        configure_logging(args.debug)
        return _ssh_selector(load_credentials(), args, " ".join(args.command) or None)
    target = Target.parse(args.target)
    if (binary := openssh_binary()) is not None:
        _ssh_with_openssh(binary, args, target)  # does not return
    configure_logging(args.debug)  # only the asyncssh client logs
    return _ssh_native(args, target)


def _ssh_with_openssh(binary: str, args: argparse.Namespace, target: Target) -> NoReturn:
    """Check what can be explained early, then become OpenSSH's ssh (openssh_exec.py)."""
    from limen.client import login_checks as checks
    from limen.client import openssh_exec, openssh_fast
    from limen.client import profile as profiles

    profile = profiles.current()
    profile.require_ssh_proxy()
    cert = checks.read_cert(profile.cert_path, profile.proxy)
    login = checks.choose_login(list(cert.principals), args.login or target.login)
    if args.forwards:
        checks.check_port_forwarding(cert.permits)
    checks.agent_socket(cert.permits, args.agent)
    host, host_name = openssh_fast.destination(target.node, profile.cluster)
    config = openssh_exec.config_file(profile, login)
    argv = openssh_fast.ssh_argv(
        binary, str(config), host=host, host_name=host_name, login=login, tty=args.tty,
        no_tty=args.no_tty, forwards=args.forwards, agent=args.agent,
        no_command=args.no_command, command=args.command, verbose=args.debug,
    )
    openssh_exec.remember(profile, cert, login, config)
    openssh_fast.hand_over(argv)


def _ssh_native(args: argparse.Namespace, target: Target) -> int:
    from limen.client.access import load_credentials

    creds = load_credentials()
    login = creds.choose_login(args.login or target.login)
    command = " ".join(args.command) or None
    import asyncio  # here: the hand-over to OpenSSH never needs it

    return asyncio.run(_ssh_node(creds, args, target.node, login, command))


async def _ssh_node(creds: Credentials, args: argparse.Namespace, node: str, login: str,
                    command: str | None) -> int:
    from limen.client.access import dial, session_errors
    from limen.client.forward import Forwarder, LocalForward
    from limen.client.login_checks import agent_socket, check_port_forwarding
    from limen.client.session import exit_code, run_session, wants_pty
    from limen.client.ssh import close_connection

    forwards = [LocalForward.parse(spec) for spec in args.forwards]
    if forwards:
        check_port_forwarding(creds.permits)
    conn = await dial(creds, node, login, agent_path=agent_socket(creds.permits, args.agent))
    forwarder = Forwarder(conn)
    try:
        await forwarder.start(forwards)
        if args.no_command:
            await conn.wait_closed()
            return 0
        pty = wants_pty(args.tty, args.no_tty, command, os.isatty(sys.stdin.fileno()))
        with session_errors(node):
            return exit_code(await run_session(conn, command, pty))
    finally:
        await forwarder.stop()
        await close_connection(conn)


def _ssh_selector(creds: Credentials, args: argparse.Namespace, command: str | None) -> int:
    from limen.client.fanout import matches, parse_selector, run_on_nodes

    if command is None:
        raise BadParameter("with a label selector, give a command to run on every node")
    login_part, _, selector_text = args.target.rpartition("@")
    selector = parse_selector(selector_text)
    login = creds.choose_login(args.login or login_part or None)
    with creds.api() as api:
        nodes = [n for n in api.get("/v1/nodes") if matches(n, selector)]
    if not nodes:
        raise NotFound(f"no node you may reach has the labels {selector_text} (see limen ls)")
    import asyncio

    results = asyncio.run(run_on_nodes(creds, nodes, login, command, _status_only))
    failed = [r for r in results if r.code != 0]
    for result in failed:
        why = result.error or f"exit status {result.code}"
        print(f"[{result.name}] failed: {why}", file=sys.stderr)
    return 1 if failed else 0


def _status_only(result: RemoteExit) -> int:
    return result.status if result.status is not None else SSH_FAILURE


# limen scp


def cmd_scp(args: argparse.Namespace) -> int:
    from limen.client.access import load_credentials
    from limen.client.copy import copy, plan

    if len(args.paths) < 2:
        raise BadParameter("give at least one source and a destination")
    job = plan(args.paths[:-1], args.paths[-1])
    creds = load_credentials()
    login = creds.choose_login(job.target.login)
    import asyncio

    asyncio.run(copy(creds, job, login, args.recursive, args.preserve))
    return 0


# limen config


def cmd_config(args: argparse.Namespace) -> int:
    from limen.client import profile as profiles
    from limen.client.login_checks import default_login
    from limen.client.openssh import config_block, write_config

    profile = profiles.current()
    profile.require_ssh_proxy()
    text = config_block(profile, default_login(profile.logins), tls_routing=args.tls_routing)
    if not args.write:
        print(text, end="")
        return 0
    path, added = write_config(text)
    note = "added an Include line to ~/.ssh/config" if added else "~/.ssh/config includes it"
    print(f"Wrote {path}; {note}.\nTry: ssh {default_login(profile.logins)}@NODE.{profile.cluster}")
    return 0

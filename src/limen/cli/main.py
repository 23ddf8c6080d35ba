"""`limen`: one entry point, subcommands in small modules, errors as sentences."""

from __future__ import annotations

import sys

from limen import __version__

TYPE_CHECKING = False  # not typing's: see main() on what `limen ssh` must not import
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

# Which module defines each command, so that `limen ssh ...` imports the ssh commands
# only: start-up time is what people feel on every `limen ssh`, and most of it would be
# importing libraries other commands need (HTTP, YAML, tables, pydantic).
MODULES = ("daemon", "users", "tokens", "resources", "account", "nodes", "ssh", "audit",
           "recordings", "proxy_cmd", "sharing")
COMMANDS = {
    "start": "daemon", "configure": "daemon",
    "users": "users", "tokens": "tokens",
    "get": "resources", "create": "resources", "edit": "resources", "rm": "resources",
    "lock": "resources",
    "signup": "account", "login": "account", "status": "account", "logout": "account",
    "ls": "nodes", "nodes": "nodes", "sessions": "nodes",
    "ssh": "ssh", "scp": "ssh", "config": "ssh",
    "audit": "audit", "recordings": "recordings", "play": "recordings",
    "proxy": "proxy_cmd", "join": "sharing",
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser, with only the command's own module loaded when argv names one."""
    import argparse
    import importlib

    parser = argparse.ArgumentParser(
        prog="limen", description="Limen: identity-aware access to SSH infrastructure."
    )
    parser.add_argument("--version", action="version", version=f"limen {__version__}")
    parser.add_argument("--debug", action="store_true", help="verbose logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _modules_for(argv):
        importlib.import_module(f"limen.cli.{name}").register(sub)
    return parser


def _modules_for(argv: list[str] | None) -> tuple[str, ...]:
    words = [w for w in (sys.argv[1:] if argv is None else argv) if not w.startswith("-")]
    module = COMMANDS.get(words[0]) if words else None
    return (module,) if module is not None else MODULES


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        become_ssh_if_remembered()
        relay_if_proxy_tls()
    return run_command(argv)


def become_ssh_if_remembered() -> None:
    """Before argparse and the rest: from the memo of the last hand-over to OpenSSH,
    `limen ssh NODE` becomes ssh after a millisecond of Python (openssh_fast.py)."""
    if sys.argv[1:2] == ["ssh"]:
        from limen.client.openssh_fast import hand_over_if_remembered

        hand_over_if_remembered(sys.argv[2:], __version__)


def relay_if_proxy_tls() -> None:
    """Before argparse: `limen proxy tls` as `limen config` writes it (ssh's ProxyCommand,
    which ssh waits for before its first byte) runs and exits here."""
    if sys.argv[1:3] != ["proxy", "tls"]:
        return
    from limen.cli.proxy_cmd import plain_proxy_tls, proxy_tls

    plain = plain_proxy_tls(sys.argv[3:])
    if plain is not None:
        sys.exit(_reported(lambda: proxy_tls(*plain)))


def run_command(argv: list[str] | None = None) -> int:
    args = build_parser(argv).parse_args(argv)
    if not getattr(args, "logging_later", False):
        configure_logging(args.debug)
    return _reported(lambda: int(args.func(args) or 0))


def _reported(command: Callable[[], int]) -> int:
    """Run ``command``; a LimenError is its sentence on stderr and exit status 1."""
    from limen.errors import LimenError

    try:
        return command()
    except LimenError as exc:
        print(f"ERROR: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def configure_logging(debug: bool) -> None:
    """Log to stderr. Imported here, not at the top: `limen ssh` may become OpenSSH's ssh
    without ever logging (the command sets logging_later), and logging costs ~7 ms."""
    import logging

    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


if __name__ == "__main__":
    sys.exit(main())

"""`limen`: one entry point, subcommands in small modules, errors as sentences."""

from __future__ import annotations

import argparse
import logging
import sys

from limen import __version__
from limen.errors import LimenError


def build_parser() -> argparse.ArgumentParser:
    from limen.cli import (
        account,
        audit,
        daemon,
        nodes,
        proxy_cmd,
        recordings,
        resources,
        ssh,
        tokens,
        users,
    )

    parser = argparse.ArgumentParser(
        prog="limen", description="Limen: identity-aware access to SSH infrastructure."
    )
    parser.add_argument("--version", action="version", version=f"limen {__version__}")
    parser.add_argument("--debug", action="store_true", help="verbose logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (daemon, users, tokens, resources, account, nodes, ssh):
        module.register(sub)
    audit.register(sub)
    recordings.register(sub)
    proxy_cmd.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except LimenError as exc:
        print(f"ERROR: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

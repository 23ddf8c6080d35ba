"""`limen start` and `limen configure`."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from limen.config import ROLES, SAMPLE_CONFIG, Config, load_config
from limen.errors import BadParameter


def register(sub: argparse._SubParsersAction) -> None:
    start = sub.add_parser("start", help="run the cluster's roles (auth, proxy, node)")
    start.add_argument("--config", help="YAML config file (see: limen configure)")
    start.add_argument("--data-dir", help="where keys, the database and the audit log live")
    start.add_argument("--roles", help=f"comma-separated roles to run, from: {', '.join(ROLES)}")
    start.set_defaults(func=cmd_start)

    configure = sub.add_parser("configure", help="print a commented sample config")
    configure.set_defaults(func=cmd_configure)


def build_config(args: argparse.Namespace) -> Config:
    config = load_config(args.config) if args.config else Config()
    if args.data_dir:
        config.data_dir = Path(args.data_dir)
    if args.roles:
        wanted = {r.strip() for r in args.roles.split(",") if r.strip()}
        unknown = wanted - set(ROLES)
        if unknown:
            raise BadParameter(
                f"unknown role(s): {', '.join(sorted(unknown))}; use {', '.join(ROLES)}"
            )
        config.auth.enabled = "auth" in wanted
        config.proxy.enabled = "proxy" in wanted
        config.ssh.enabled = "node" in wanted
    return config


def cmd_start(args: argparse.Namespace) -> int:
    from limen.service import Service, run_until_signalled

    config = build_config(args)
    logging.getLogger().setLevel(config.log_level.upper())
    asyncio.run(run_until_signalled(Service(config)))
    return 0


def cmd_configure(_args: argparse.Namespace) -> int:
    print(SAMPLE_CONFIG, end="")
    return 0

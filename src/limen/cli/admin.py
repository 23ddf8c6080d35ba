"""Which identity admin commands use: the data dir's own, or the logged-in user's."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from limen.client import profile as profiles
from limen.client.api import APIClient
from limen.config import default_data_dir, load_config
from limen.errors import AccessDenied, ConnectionProblem, NotFound

NO_IDENTITY = (
    "no identity to run admin commands with: on the auth host pass --data-dir DIR "
    "(or --config FILE), or log in with limen login as a user whose roles allow it"
)


def add_admin_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("admin identity")
    group.add_argument("--data-dir", help="the auth server's data dir (use its admin identity)")
    group.add_argument("--config", help="the auth server's config file (use its data dir)")


def _data_dir(args: argparse.Namespace) -> Path | None:
    if getattr(args, "data_dir", None):
        return Path(args.data_dir)
    if getattr(args, "config", None):
        return Path(load_config(args.config).data_dir)
    return None


def admin_client(args: argparse.Namespace) -> APIClient:
    explicit = _data_dir(args)
    if explicit is not None:
        return data_dir_client(explicit)
    try:
        profile = profiles.current()
    except NotFound:
        default = default_data_dir()
        if (default / "admin.token").exists():
            return data_dir_client(default)
        raise AccessDenied(NO_IDENTITY) from None
    ca = profile.trusted_ca()
    if ca is None:
        raise AccessDenied(NO_IDENTITY)
    return APIClient(profile.proxy, ca, profile.token())


def data_dir_client(data_dir: Path) -> APIClient:
    token_file = data_dir / "admin.token"
    if not token_file.exists():
        raise AccessDenied(f"{data_dir} holds no admin identity: is it the auth server's data dir?")
    try:
        token = token_file.read_text().strip()
    except PermissionError:
        raise AccessDenied(
            f"cannot read {token_file}: run this as the user that runs limen"
        ) from None
    run_file = data_dir / "run.json"
    if not run_file.exists():
        raise ConnectionProblem(
            f"the cluster in {data_dir} is not running; "
            f"start it with: limen start --data-dir {data_dir}"
        )
    web_addr = json.loads(run_file.read_text())["web_addr"]
    ca = (data_dir / "ca" / "tls_ca.crt").read_text()
    return APIClient(web_addr, ca, token)

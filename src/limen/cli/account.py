"""A person's own commands: signup, login, logout, status."""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from limen.cli.output import add_format_flag, emit, table
from limen.client import profile as profiles
from limen.client.connect import TrustOptions, open_client
from limen.client.profile import write_private
from limen.client.proxy_addr import FORMS
from limen.errors import BadParameter, NotFound

if TYPE_CHECKING:
    from limen.client.api import APIClient

DEFAULT_CONNECTOR = ":default"  # `--auth` given without a name


def add_trust_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ca-pin", help="expected cluster CA pin, sha256:HEX")
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="trust the proxy's CA on first contact without a pin (tests only)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    signup = sub.add_parser("signup", help="set your password and enroll a TOTP device")
    signup.add_argument("token")
    signup.add_argument("--proxy", required=True, help=f"the proxy's address: {FORMS}")
    signup.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input",
    )
    signup.add_argument(
        "--totp-secret-out",
        metavar="FILE",
        help="write the TOTP secret to FILE (0600) and confirm with it",
    )
    add_trust_flags(signup)
    signup.set_defaults(func=cmd_signup)

    login = sub.add_parser("login", help="sign in and get a short-lived SSH certificate")
    login.add_argument("--proxy", help=f"the proxy's address: {FORMS} (default: last used)")
    login.add_argument("--user", help="user name (default: last used; LDAP: your directory "
                       "user name)")
    login.add_argument("--auth", metavar="NAME", nargs="?", const=DEFAULT_CONNECTOR,
                       help="sign in through this connector (OIDC: in your browser; LDAP: "
                       "with your directory password); --auth alone: the cluster's default "
                       "connector; without --auth or --user: how you signed in last")
    login.add_argument("--ttl", help="certificate lifetime, e.g. 8h (capped by your roles)")
    login.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input",
    )
    login.add_argument("--otp", help="the current TOTP code")
    add_trust_flags(login)
    add_format_flag(login)
    login.set_defaults(func=cmd_login)

    logout = sub.add_parser("logout", help="remove your keys and certificate")
    logout.set_defaults(func=cmd_logout)

    status = sub.add_parser("status", help="show who you are logged in as")
    add_format_flag(status)
    status.add_argument("--cluster", action="store_true",
                        help="list the cluster's auth/proxy instances instead (admin); "
                             "exits 1 if one is down")
    status.add_argument("--data-dir", help="with --cluster: an auth server's data dir "
                                           "(use its admin identity)")
    status.add_argument("--config", help="with --cluster: an auth server's config file")
    status.set_defaults(func=cmd_status)


def _read_password(from_stdin: bool, prompt: str = "Password: ") -> str:
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise BadParameter("--password-stdin was given but standard input is empty")
        return line.rstrip("\r\n")
    return getpass.getpass(prompt)


def _read_new_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return _read_password(True)
    first = getpass.getpass("New password (12 to 128 characters): ")
    if getpass.getpass("Repeat it: ") != first:
        raise BadParameter("the two passwords differ; nothing was changed")
    return first


def _show_qr(uri: str) -> None:
    import qrcode

    qr = qrcode.QRCode(border=1)
    qr.add_data(uri)
    qr.print_ascii(out=sys.stdout, invert=True)


def cmd_signup(args: argparse.Namespace) -> int:
    from limen.client import first_login

    options = TrustOptions(args.ca_pin, args.insecure)
    client, _new = open_client(args.proxy, options)
    with client:
        challenge = client.post("/v1/signup/start", {"token": args.token})
        connector = challenge.get("sso_connector") or ""
        # An SSO user enrolls only a TOTP device: their password is the directory's.
        password = "" if connector else _read_new_password(args)
        secret = challenge["totp_secret"]
        # The server's time, so that automation works whatever this machine's clock says.
        server_time = datetime.fromisoformat(challenge["server_time"])
        if args.totp_secret_out:
            write_private(Path(args.totp_secret_out), secret + "\n")
            otp, used_step = first_login.code_for_script(secret, server_time)
        else:
            print(f"Add this account to your authenticator app:\n  {challenge['otpauth_uri']}\n")
            _show_qr(challenge["otpauth_uri"])
            otp = input("Enter the current 6-digit code: ").strip()
            used_step = first_login.step_of_code(secret, otp, server_time)
        result = client.post(
            "/v1/signup/finish", {"token": args.token, "password": password, "otp": otp}
        )
        profile = profiles.load(client.proxy)
        profile.trust_ca(client.ca_pem)
        if used_step is not None:  # the first login must not meet a spent code
            first_login.wait_for_next_step(
                used_step, lambda: datetime.fromisoformat(client.get("/v1/ping")["server_time"]),
                lambda text: print(text, file=sys.stderr, flush=True),
            )
    how = f"--auth {connector}" if connector else f"--user {result['user']}"
    print(
        f"Signed up as {result['user']} on cluster {result['cluster']}. Now run:\n"
        f"  limen login --proxy {client.proxy} {how}"
    )
    return 0


def cmd_login(args: argparse.Namespace) -> int:
    from limen.client.login import login

    proxy, user, auth = args.proxy, args.user, args.auth
    last = _last_profile()
    if last is not None and not user and not auth and proxy in (None, last.proxy):
        user, auth = last.user, last.auth or None  # the way they signed in last time
    proxy = proxy or (last.proxy if last else None)
    if not proxy or not (user or auth):
        raise BadParameter("give --proxy HOST:PORT and --user NAME (or --auth NAME)")
    client, _new = open_client(proxy, TrustOptions(args.ca_pin, args.insecure))
    with client:
        if auth:
            profile = _sso_login(client, auth, user, args)
        else:
            password = _read_password(args.password_stdin)
            otp = args.otp or input("TOTP code: ").strip()
            profile = login(client, user, password, otp, args.ttl)
    _print_status(profile, args.format)
    return 0


def _last_profile() -> profiles.Profile | None:
    try:
        return profiles.current()
    except Exception:  # noqa: BLE001 - no previous profile
        return None


def _sso_login(client: APIClient, auth: str, user: str | None,
               args: argparse.Namespace) -> profiles.Profile:
    from limen.client import sso

    connector = (sso.default_connector(client) if auth == DEFAULT_CONNECTOR
                 else sso.find_connector(client, auth))
    auth = connector["name"]
    if connector["kind"] == "oidc":
        return sso.oidc_login(client, auth, args.ttl,
                              lambda text: print(text, file=sys.stderr, flush=True))
    user = user or input("Directory user name: ").strip()
    password = _read_password(args.password_stdin, f"{connector['display']} password: ")
    otp = args.otp or ""
    if connector.get("second_factor") == "totp" and not otp:
        otp = input("TOTP code: ").strip()
    return sso.ldap_login(client, auth, user, password, otp, args.ttl)


def cmd_logout(_args: argparse.Namespace) -> int:
    from limen.client.login import remove_from_agent

    try:
        profile = profiles.current()
    except NotFound:  # the state logout leads to is already there
        print("Not logged in; nothing to remove.")
        return 0
    remove_from_agent(profile)
    profile.remove_credentials()
    print(f"Logged out {profile.user} from {profile.proxy}.")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    if args.cluster:
        from limen.cli.cluster import cmd_cluster_status

        return cmd_cluster_status(args)
    if args.data_dir or args.config:
        raise BadParameter("--data-dir and --config go with --cluster")
    profile = profiles.current()
    _print_status(profile, args.format, _effective_access(profile))
    until = datetime.fromisoformat(profile.valid_until)
    if until <= datetime.now(UTC):
        print(f"ERROR: your certificate expired at {profile.valid_until}; run limen login "
              f"--proxy {profile.proxy} --user {profile.user}", file=sys.stderr)
        return 1
    return 0


def _effective_access(profile: profiles.Profile) -> dict[str, object] | None:
    """What the roles allow right now (they may have changed since login), if reachable."""
    from limen.client.api import APIClient
    from limen.errors import LimenError

    ca = profile.trusted_ca()
    if ca is None:
        return None
    try:
        with APIClient(profile.proxy, ca, profile.token()) as client:
            return client.get("/v1/whoami")
    except LimenError:
        return None


def _status_json(profile: profiles.Profile) -> dict[str, object]:
    return {
        "proxy": profile.proxy,
        "cluster": profile.cluster,
        "user": profile.user,
        "roles": profile.roles,
        "logins": profile.logins,
        "valid_until": profile.valid_until,
        "key_path": str(profile.key_path),
        "cert_path": str(profile.cert_path),
        "known_hosts_path": str(profile.known_hosts_path()),
    }


def _print_status(
    profile: profiles.Profile, fmt: str, access: dict[str, object] | None = None
) -> None:
    data = _status_json(profile)
    if access is not None:
        data["effective_logins"] = access["logins"]
        data["options"] = access["options"]
    until = datetime.fromisoformat(profile.valid_until)
    left = until - datetime.now(UTC)
    state = f"valid for {str(left).split('.')[0]}" if left.total_seconds() > 0 else "EXPIRED"
    rows = [
        ("Proxy", profile.proxy),
        ("Cluster", profile.cluster),
        ("User", profile.user),
        ("Roles", ", ".join(profile.roles)),
        ("Logins", ", ".join(profile.logins)),
        ("Valid until", f"{profile.valid_until} ({state})"),
        ("Key", data["key_path"]),
        ("Certificate", data["cert_path"]),
        ("Known hosts", data["known_hosts_path"]),
    ]
    if access is not None:
        rows.append(("Logins now", ", ".join(access["logins"]) or "(none)"))
        options = access["options"]
        rows += [(f"  {k}", "" if v is None else str(v)) for k, v in options.items()]
    emit(data, fmt, table(["", ""], rows))

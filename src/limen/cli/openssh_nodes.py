"""`limen nodes add --openssh` and `limen nodes cert`: bring a stock sshd under Limen.

The host key is made here, on the admin's machine, when none is given (``--pubkey``):
only its public half goes to the auth service. The files to install and the
``sshd_config`` lines are written to ``--out`` and printed.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from limen.cli.admin import add_admin_flags, admin_client
from limen.cli.daemon import parse_labels
from limen.cli.output import add_format_flag, emit
from limen.errors import BadParameter
from limen.files import write_private

INSTALL_DIR = "/etc/ssh/limen"
HOST_KEY = "limen_host_key"


def register(nodes_cmds: argparse._SubParsersAction) -> None:
    add = nodes_cmds.add_parser("add", help="register a stock OpenSSH server (agentless)")
    add.add_argument("--openssh", required=True, metavar="NAME",
                     help="the node's name (what people type after limen ssh)")
    add.add_argument("--addr", required=True, metavar="HOST:PORT",
                     help="where the proxy reaches its sshd")
    add.add_argument("--labels", help="labels, e.g. env=prod,team=web")
    add.set_defaults(func=cmd_add)

    cert = nodes_cmds.add_parser("cert", help="a new host certificate for an OpenSSH node")
    cert.add_argument("name", help="the node's name or id")
    cert.set_defaults(func=cmd_cert)

    for parser in (add, cert):
        parser.add_argument("--pubkey", metavar="FILE",
                            help="certify this existing host public key (e.g. "
                                 "/etc/ssh/ssh_host_ed25519_key.pub) instead of a new key")
        parser.add_argument("--ttl", help="host certificate lifetime (default 30d, max 365d)")
        parser.add_argument("--out", metavar="DIR",
                            help="where to write the files for the host (default ./NAME-sshd)")
        parser.add_argument("--install-dir", default=INSTALL_DIR, metavar="DIR",
                            help=f"where they go on the host (default {INSTALL_DIR})")
        add_format_flag(parser)
        add_admin_flags(parser)


def cmd_add(args: argparse.Namespace) -> int:
    labels = parse_labels(args.labels) if args.labels else {}
    public_key, private = _host_key(args)
    with admin_client(args) as client:
        issued = client.post("/v1/nodes/openssh", {
            "name": args.openssh, "addr": args.addr, "labels": labels,
            "public_key": public_key, "ttl": args.ttl})
    return _finish(args, issued, private, args.openssh)


def cmd_cert(args: argparse.Namespace) -> int:
    public_key, private = _host_key(args)
    with admin_client(args) as client:
        issued = client.post(f"/v1/nodes/openssh/{args.name}/cert",
                             {"public_key": public_key, "ttl": args.ttl})
    return _finish(args, issued, private, issued["name"])


def _host_key(args: argparse.Namespace) -> tuple[str, bytes | None]:
    if args.pubkey:
        try:
            return Path(args.pubkey).read_text().strip(), None
        except OSError as exc:
            raise BadParameter(f"cannot read --pubkey {args.pubkey}: {exc.strerror}") from None
    import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519", comment="limen openssh node host key")
    return key.export_public_key("openssh").decode().strip(), key.export_private_key("openssh")


def _finish(args: argparse.Namespace, issued: dict[str, Any], private: bytes | None,
            name: str) -> int:
    out = Path(args.out or f"{name}-sshd").absolute()
    out.mkdir(parents=True, exist_ok=True)
    install = Path(args.install_dir)
    key_path = install / HOST_KEY
    if private is not None:
        write_private(out / HOST_KEY, private)
        (out / f"{HOST_KEY}.pub").write_text(issued["host_key"] + "\n")
        cert_name = f"{HOST_KEY}-cert.pub"
    else:  # OpenSSH finds a certificate by its key's path; the admin names that key
        key_path = Path(args.pubkey).with_suffix("")
        cert_name = f"{key_path.name}-cert.pub"
    (out / cert_name).write_text(issued["host_cert"] + "\n")
    (out / "limen_user_ca.pub").write_text(issued["user_ca"] + "\n")
    lines = sshd_lines(issued, install, key_path, cert_name)
    (out / "sshd_config.limen").write_text(lines)
    text = _explain(issued, out, install, lines, private is not None)
    emit({**issued, "out": str(out), "sshd_config": lines}, args.format, text)
    return 0


def sshd_lines(issued: dict[str, Any], install: Path, key_path: Path, cert_name: str) -> str:
    return (
        f"TrustedUserCAKeys {install / 'limen_user_ca.pub'}\n"
        f"HostKey {key_path}\n"
        f"HostCertificate {install / cert_name}\n"
        f"AuthorizedPrincipalsCommand /bin/echo {issued['principal_prefix']}%u\n"
        "AuthorizedPrincipalsCommandUser nobody\n"
    )


def _explain(issued: dict[str, Any], out: Path, install: Path, lines: str, new_key: bool) -> str:
    files = "the host key, its certificate" if new_key else "the host certificate"
    return (
        f"Registered OpenSSH node {issued['name']} (id {issued['node_id']}) at "
        f"{issued['addr']}.\n\n"
        f"User CA (TrustedUserCAKeys):\n  {issued['user_ca']}\n\n"
        f"Host certificate (valid until {issued['expires']}):\n  {issued['host_cert']}\n\n"
        f"{out} holds {files}, the user CA and these sshd_config lines. Copy the files to "
        f"{install} on the host (the key 0600, owned by root), add the lines to "
        "/etc/ssh/sshd_config and reload sshd:\n\n"
        + "".join(f"  {line}\n" for line in lines.splitlines())
        + "\nThe proxy logs in with a certificate for one session whose only principal is "
        f"{issued['principal_prefix']}LOGIN; the command above makes sshd accept exactly "
        "that for LOGIN, so no other certificate (not even a Limen user's own) opens it.\n"
        f"Renew before {issued['expires']}: limen nodes cert {issued['name']} --pubkey "
        "HOSTKEY.pub, then install the new certificate and reload sshd.\n"
    )

"""`limen get|create|rm|edit` (kubectl/tctl style) and `limen lock`."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from limen.cli.admin import add_admin_flags, admin_client
from limen.cli.output import add_format_flag, emit, table
from limen.errors import BadParameter
from limen.resources.documents import validate_documents


def register(sub: argparse._SubParsersAction) -> None:
    get = sub.add_parser("get", help="show resources: limen get roles, limen get role/NAME")
    get.add_argument("target", metavar="KIND[/NAME]")
    get.set_defaults(func=cmd_get)

    create = sub.add_parser("create", help="create resources from a YAML file")
    create.add_argument("-f", "--file", required=True, help="YAML with one or more documents")
    create.add_argument("--force", action="store_true", help="replace resources that exist")
    create.set_defaults(func=cmd_create)

    rm = sub.add_parser("rm", help="delete a resource: limen rm lock/ID")
    rm.add_argument("target", metavar="KIND/NAME")
    rm.set_defaults(func=cmd_rm)

    edit = sub.add_parser("edit", help="edit a resource in $EDITOR; saved only if valid")
    edit.add_argument("target", metavar="KIND/NAME")
    edit.set_defaults(func=cmd_edit)

    lock = sub.add_parser("lock", help="lock a user, role, node or login")
    lock.add_argument("--user")
    lock.add_argument("--role")
    lock.add_argument("--node")
    lock.add_argument("--login")
    lock.add_argument("--message", default="", help="shown to the people it stops")
    lock.add_argument("--ttl", help="lift it automatically after this long, e.g. 1h")
    lock.add_argument("--expires", help="lift it at this time (RFC 3339)")
    lock.set_defaults(func=cmd_lock)

    for parser in (get, create, rm, edit, lock):
        add_format_flag(parser)
        add_admin_flags(parser)


def _split(target: str, need_name: bool) -> tuple[str, str | None]:
    kind, _, name = target.partition("/")
    if need_name and not name:
        raise BadParameter(f"give KIND/NAME, for example role/{kind or 'access'}")
    return kind, name or None


def _summary(item: dict[str, Any]) -> tuple[str, str, str]:
    meta, spec = item["metadata"], item.get("spec", {})
    kind = item.get("kind", "")
    if kind == "lock":
        target = ",".join(f"{k}={v}" for k, v in spec.get("target", {}).items() if v)
        return (
            meta["name"],
            f"target {target}: {spec.get('message', '')}",
            meta.get("expires") or "",
        )
    if kind == "user":
        how = f" (sso: {spec['sso']['connector']})" if spec.get("sso") else ""
        return meta["name"], "roles " + ",".join(spec.get("roles", [])) + how, ""
    if kind in ("oidc", "ldap"):
        where = spec.get("issuer_url") or spec.get("url", "")
        default = ", default" if spec.get("default") else ""
        return meta["name"], f"{kind} {where}{default}", ""
    if kind == "node":
        labels = ",".join(f"{k}={v}" for k, v in meta.get("labels", {}).items())
        return spec.get("hostname", ""), f"{spec.get('addr', '')} {labels}", meta["name"]
    return meta["name"], meta.get("description", ""), meta.get("expires") or ""


def _strip_revision(item: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in item["metadata"].items() if k != "revision"}
    return {**item, "metadata": meta}


def cmd_get(args: argparse.Namespace) -> int:
    kind, name = _split(args.target, need_name=False)
    with admin_client(args) as client:
        items = (
            [client.get(f"/v1/resources/{kind}/{name}")]
            if name
            else client.get(f"/v1/resources/{kind}")
        )
    shown = [_strip_revision(i) for i in items]
    data: Any = shown[0] if name and args.format != "text" else shown
    if args.format == "yaml" and not name:
        print(yaml.safe_dump_all(shown, sort_keys=False).rstrip())
        return 0
    emit(data, args.format, table(["Name", "Details", "Expires / id"], map(_summary, items)))
    return 0


def cmd_create(args: argparse.Namespace) -> int:
    try:
        text = Path(args.file).read_text()
    except OSError as exc:
        raise BadParameter(f"cannot read {args.file}: {exc.strerror}") from None
    documents = validate_documents(text, args.file)
    with admin_client(args) as client:
        if not args.force:
            for doc in documents:
                _refuse_existing(client, doc)
        saved = [
            client.call("PUT", f"/v1/resources?force={'true' if args.force else 'false'}", doc)
            for doc in documents
        ]
    lines = [f"{s['kind']} {s['metadata']['name']} saved" for s in saved]
    emit([_strip_revision(s) for s in saved], args.format, "\n".join(lines))
    return 0


def _refuse_existing(client: Any, doc: dict[str, Any]) -> None:
    from limen.errors import NotFound

    try:
        client.get(f"/v1/resources/{doc['kind']}/{doc['metadata']['name']}")
    except NotFound:
        return
    raise BadParameter(
        f"{doc['kind']} {doc['metadata']['name']!r} already exists; nothing was saved "
        "(use --force to replace it, or limen edit)"
    )


def cmd_rm(args: argparse.Namespace) -> int:
    kind, name = _split(args.target, need_name=True)
    with admin_client(args) as client:
        result = client.delete(f"/v1/resources/{kind}/{name}")
    emit(result, args.format, f"{kind}/{name} deleted.")
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    kind, name = _split(args.target, need_name=True)
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    with admin_client(args) as client:
        current = client.get(f"/v1/resources/{kind}/{name}")
        original = yaml.safe_dump(current, sort_keys=False)
        with tempfile.NamedTemporaryFile("w+", suffix=".yaml", delete=False) as fh:
            fh.write(original)
            path = fh.name
        try:
            subprocess.run([*shlex.split(editor), path], check=True)
            edited = Path(path).read_text()
        finally:
            os.unlink(path)
        if edited == original:
            print("No changes; nothing saved.")
            return 0
        documents = validate_documents(edited, f"{kind}/{name}")
        if len(documents) != 1 or documents[0]["metadata"]["name"] != name:
            raise BadParameter("edit one resource and keep its name; nothing was saved")
        documents[0]["metadata"]["revision"] = current["metadata"]["revision"]
        saved = client.call("PUT", "/v1/resources?force=true", documents[0])
    emit(_strip_revision(saved), args.format, f"{kind}/{name} saved.")
    return 0


def cmd_lock(args: argparse.Namespace) -> int:
    target = {k: getattr(args, k) for k in ("user", "role", "node", "login") if getattr(args, k)}
    if not target:
        raise BadParameter("say what to lock: --user, --role, --node or --login")
    body = {"target": target, "message": args.message, "ttl": args.ttl, "expires": args.expires}
    with admin_client(args) as client:
        lock = client.post("/v1/locks", body)
    what = ", ".join(f"{k} {v}" for k, v in target.items())
    until = lock["metadata"].get("expires") or "it is removed"
    text = f"Locked {what} until {until}. Lift it with: limen rm lock/{lock['metadata']['name']}"
    emit(_strip_revision(lock), args.format, text)
    return 0

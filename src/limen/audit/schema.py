"""One model per audit event: the schema in code (the README's audit table is the same).

Auth-side code builds these models and hands them to ``AuditLog.emit``. Nodes and the
proxy report events by name with a dict of fields; the auth service checks them here at
the boundary (``from_fields``), so an unknown field is refused with a sentence naming it
instead of being stored. ``check_record`` validates a line as written (the common and
chain fields too): the test suite runs it over every event its clusters wrote.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from limen.audit import events as types
from limen.audit.chain import parse_time
from limen.audit.events import EventType
from limen.audit.metadata import (
    AuditEvent,
    CertMeta,
    ClaimMeta,
    ConnectionMeta,
    ServerMeta,
    SessionMeta,
    UserMeta,
    problem_text,
)
from limen.errors import BadParameter

# -- people and the cluster's own records (written by the auth service) ---------------------


class UserLogin(UserMeta, ConnectionMeta):
    TYPE = types.USER_LOGIN
    FAILURE = types.USER_LOGIN_FAILURE
    method: str | None = None
    success: bool | None = None
    error: str | None = None
    mfa_device: str | None = None
    roles: list[str] | None = None
    # Single sign-on: the connector, and the claims or groups that decided the roles (on
    # a refusal, those the provider offered); never a token or a password.
    connector: str | None = None
    claims: dict[str, list[str]] | None = None


class UserCreate(UserMeta):
    TYPE = types.USER_CREATE
    name: str
    roles: list[str] | None = None
    logins: list[str] | None = None
    connector: str | None = None  # an SSO user, made at their first sign-in


class UserUpdate(UserMeta):
    TYPE = types.USER_UPDATE
    name: str
    action: str | None = None  # reset, or sso_mapping (a connector changed the roles)
    connector: str | None = None
    roles: list[str] | None = None


class UserDelete(UserMeta):
    TYPE = types.USER_DELETE
    name: str


class UserPasswordChange(UserMeta, ConnectionMeta):
    TYPE = types.USER_PASSWORD_CHANGE


class UserSignupFailure(UserMeta, ConnectionMeta):
    TYPE = types.USER_SIGNUP_FAILURE
    success: bool | None = None
    error: str | None = None


class MfaAdd(UserMeta):
    TYPE = types.MFA_ADD
    mfa_device_name: str | None = None
    mfa_device_type: str | None = None


class UserTokenCreate(UserMeta):
    TYPE = types.USER_TOKEN_CREATE
    name: str
    purpose: str | None = None
    expires: str | None = None


class UserUnlock(UserMeta):
    TYPE = types.USER_UNLOCK
    name: str


class CertIssued(UserMeta, ConnectionMeta):
    TYPE = types.CERT_ISSUED
    principals: list[str] | None = None
    valid_before: str | None = None
    roles: list[str] | None = None


class AccessRefused(UserMeta, ConnectionMeta):
    TYPE = types.ACCESS_DENIED
    resource: str | None = None
    verb: str | None = None
    error: str | None = None


class ConnectorChange(UserMeta):
    name: str
    connector_kind: str | None = None  # oidc or ldap


class ConnectorCreated(ConnectorChange):
    TYPE = types.CONNECTOR_CREATED


class ConnectorUpdated(ConnectorChange):
    TYPE = types.CONNECTOR_UPDATED


class ConnectorDeleted(ConnectorChange):
    TYPE = types.CONNECTOR_DELETED


class RoleCreated(UserMeta):
    TYPE = types.ROLE_CREATED
    name: str


class RoleUpdated(UserMeta):
    TYPE = types.ROLE_UPDATED
    name: str


class RoleDeleted(UserMeta):
    TYPE = types.ROLE_DELETED
    name: str


class LockCreated(UserMeta):
    TYPE = types.LOCK_CREATED
    name: str
    target: dict[str, str] | None = None
    message: str | None = None
    expires: str | None = None


class LockDeleted(UserMeta):
    TYPE = types.LOCK_DELETED
    name: str
    target: dict[str, str] | None = None


class JoinTokenCreate(UserMeta):
    TYPE = types.JOIN_TOKEN_CREATE
    token_id: str | None = None
    roles: list[str] | None = None
    labels: dict[str, str] | None = None
    ttl: str | None = None
    uses: int | str | None = None  # a number of joins, or "unlimited"


class JoinTokenDelete(UserMeta):
    TYPE = types.JOIN_TOKEN_DELETE
    token_id: str | None = None


class JoinTokenUse(ConnectionMeta):
    TYPE = types.JOIN_TOKEN_USE
    token_id: str | None = None
    node_name: str | None = None
    created_by: str | None = None
    uses_left: int | str | None = None  # a number, or "unlimited"


class NodeJoin(ServerMeta, ConnectionMeta, CertMeta):
    TYPE = types.NODE_JOIN
    FAILURE = types.NODE_JOIN_FAILURE
    labels: dict[str, str] | None = None
    node_name: str | None = None
    expires: str | None = None  # when the node's credentials run out
    success: bool | None = None
    error: str | None = None


class NodeRemove(UserMeta, ServerMeta, ConnectionMeta):
    TYPE = types.NODE_REMOVE


class NodeHeartbeatRefused(ServerMeta, ConnectionMeta):
    TYPE = types.NODE_HEARTBEAT_FAILURE
    success: bool | None = None
    error: str | None = None


class NodeRenew(ServerMeta, ConnectionMeta, CertMeta):
    TYPE = types.NODE_RENEW
    FAILURE = types.NODE_RENEW_FAILURE
    expires: str | None = None
    success: bool | None = None
    error: str | None = None


# -- what happens on nodes (reported by the node, stamped by the auth service) ---------------


class NodeEvent(UserMeta, ConnectionMeta, ServerMeta, ClaimMeta, CertMeta):
    """A node's report about one of its connections."""


class NodeSessionEvent(NodeEvent, SessionMeta):
    """A node's report about one of its sessions (a sid it started)."""


class Auth(NodeEvent):
    """SSH authentication at a node, the jump host or the tunnel server."""

    TYPE = types.AUTH_SUCCESS
    FAILURE = types.AUTH_FAILURE
    success: bool
    method: str | None = None
    kind: str | None = None  # "tunnel" for a node agent at the tunnel server
    reason: str | None = None
    principals: list[str] | None = None
    valid_before: str | None = None


class SessionStart(NodeSessionEvent):
    TYPE = types.SESSION_START
    session_kind: str | None = None  # shell, exec or subsystem
    interactive: bool | None = None
    terminal_size: str | None = None
    command: str | None = None
    subsystem: str | None = None
    session_start: str | None = None
    origin: str | None = None  # "web": a browser terminal (the certificate's origin@limen)


class SessionEnd(NodeSessionEvent):
    TYPE = types.SESSION_END
    session_kind: str | None = None
    interactive: bool | None = None
    command: str | None = None
    subsystem: str | None = None
    session_start: str | None = None
    session_stop: str | None = None
    exit_code: int | None = None
    exit_signal: str | None = None
    reason: str | None = None
    participants: list[str] | None = None
    interrupted: bool | None = None


class SessionData(NodeSessionEvent):
    TYPE = types.SESSION_DATA
    tx: int | None = None
    rx: int | None = None


class SessionRejected(NodeEvent):
    """A session refused at the node; refused before a channel existed, it has no sid."""

    TYPE = types.SESSION_REJECTED
    sid: str | None = None
    reason: str | None = None
    session_kind: str | None = None
    command: str | None = None
    subsystem: str | None = None


class Resize(NodeSessionEvent):
    TYPE = types.SESSION_RESIZE
    size: str | None = None  # COLS:ROWS


class Exec(NodeSessionEvent):
    TYPE = types.EXEC
    FAILURE = types.EXEC_FAILURE
    command: str | None = None
    exit_code: int | None = None
    exit_signal: str | None = None


class PortForward(NodeEvent):
    TYPE = types.PORT_FORWARD
    FAILURE = types.PORT_FORWARD_FAILURE
    kind: str | None = None  # direct-tcpip, remote-forward, ...
    addr: str | None = None
    resolved: list[str] | None = None  # the addresses the node judged and connects to
    listen: str | None = None  # remote-forward: the address the client asked to listen on
    origin: str | None = None  # remote-forward: who connected to the node's listener
    allowed: bool | None = None
    error: str | None = None


class FileTransfer(NodeSessionEvent):
    """One file moved or changed through scp or sftp, followed from the protocol bytes.

    ``len`` and ``sha256`` are of the bytes actually transferred (in offset order);
    ``action: protocol_error`` (with ``error``) when a stream broke the protocol and the
    session was ended.
    """

    action: str | None = None  # upload, download, remove, rename, mkdir, ..., protocol_error
    path: str | None = None
    len: int | None = None
    sha256: str | None = None
    success: bool | None = None
    error: str | None = None


class Scp(FileTransfer):
    TYPE = types.SCP
    size: int | None = None  # as the scp record declared it
    mode: str | None = None


class Sftp(FileTransfer):
    TYPE = types.SFTP
    target: str | None = None  # rename, symlink, link, copy
    sha256_skipped: str | None = None  # why there is no digest ("non-sequential")
    offset: int | None = None  # when the transfer did not start at 0
    status: str | None = None  # sftp-server's answer: ok, permission_denied, ...
    attributes: dict[str, int] | None = None  # setstat
    read_offset: int | None = None
    read_len: int | None = None
    write_offset: int | None = None


class ClientDisconnect(NodeEvent):
    TYPE = types.CLIENT_DISCONNECT
    reason: str | None = None


class RecordingFailure(NodeSessionEvent):
    TYPE = types.RECORDING_FAILURE
    error: str | None = None
    success: bool | None = None


class SessionJoin(NodeEvent):
    """Someone joined a session of this node (the user is the joiner, from their
    certificate), or was refused: then ``sid`` only when the session is live here."""

    TYPE = types.SESSION_JOIN
    FAILURE = types.SESSION_JOIN_FAILURE
    sid: str | None = None
    mode: str | None = None  # observer, peer or moderator (as asked, when refused)
    success: bool | None = None
    error: str | None = None


class SessionLeave(NodeSessionEvent):
    TYPE = types.SESSION_LEAVE
    mode: str | None = None


# -- sessions on the auth service --------------------------------------------------------------


class SessionUpload(UserMeta, ServerMeta, SessionMeta, ClaimMeta):
    TYPE = types.SESSION_UPLOAD
    size: int | None = None
    complete: bool | None = None
    interrupted: bool | None = None
    recording: str | None = None


class RecordingAccess(UserMeta, ConnectionMeta, SessionMeta):
    TYPE = types.RECORDING_ACCESS


# -- the proxy ---------------------------------------------------------------------------------


class ProxyConnect(UserMeta, ConnectionMeta, ServerMeta):
    TYPE = types.PROXY_CONNECT
    FAILURE = types.PROXY_CONNECT_FAILURE
    port: int | None = None
    allowed: bool | None = None
    reason: str | None = None


class ProxyDisconnect(UserMeta, ConnectionMeta, ServerMeta):
    TYPE = types.PROXY_DISCONNECT
    port: int | None = None
    bytes_up: int | None = None
    bytes_down: int | None = None
    error: str | None = None


class ProxyRefused(UserMeta, ConnectionMeta):
    TYPE = types.PROXY_REFUSED
    kind: str | None = None
    reason: str | None = None


class TunnelDisconnect(ServerMeta, ConnectionMeta):
    TYPE = types.TUNNEL_DISCONNECT
    reason: str | None = None


# -- the log itself ----------------------------------------------------------------------------


class AuditCheckpoint(AuditEvent):
    TYPE = types.AUDIT_CHECKPOINT
    through_seq: int
    through_hash: str
    signature: str
    public_key: str | None = None


class AuditRetention(AuditEvent):
    TYPE = types.AUDIT_RETENTION
    removed_through_seq: int
    anchor_hash: str
    signature: str
    public_key: str | None = None
    files: list[str] | None = None
    cutoff: str | None = None


class ReportRefused(ServerMeta):
    """A report the auth service did not write, and why (the report itself is not kept:
    it may be as large or as strange as its sender liked)."""

    TYPE = types.REPORT_REFUSED
    reporter: str  # "node" or "proxy"
    reported: str  # the event name it reported
    error: str


MODELS: dict[str, type[AuditEvent]] = {}
for _model in list(globals().values()):
    if isinstance(_model, type) and issubclass(_model, AuditEvent) and "TYPE" in _model.__dict__:
        MODELS[_model.TYPE.name] = _model


def model_for(name: str) -> type[AuditEvent]:
    try:
        return MODELS[name]
    except KeyError:
        raise BadParameter(f"there is no audit event named {name!r}") from None


def from_fields(event: EventType | str, fields: dict[str, Any]) -> AuditEvent:
    """The typed event for a name (or a named code) and a dict of fields."""
    name = event if isinstance(event, str) else event.name
    model = model_for(name)
    try:
        built = model.model_validate(fields)
    except ValidationError as exc:
        raise BadParameter(problem_text(name, exc)) from None
    if isinstance(event, EventType):
        built.choose(event)
    return built


def proxy_report(name: str, fields: dict[str, Any]) -> AuditEvent:
    """What the jump host or the tunnel server reports, as a typed event: only the
    proxy's events, only their fields (the log writes the common ones itself)."""
    if name not in types.PROXY_REPORTED:
        raise BadParameter(f"the proxy does not report {name[:64]!r} events")
    return from_fields(name, {k: v for k, v in fields.items() if k != "cluster_name"})


def openssh_report(name: str, fields: dict[str, Any]) -> AuditEvent:
    """What the proxy reports about a session it relays to an OpenSSH node: the events a
    node reports about its own sessions, with the node's registration as the server."""
    if name not in types.OPENSSH_REPORTED:
        raise BadParameter(f"the proxy does not report {name[:64]!r} events for OpenSSH nodes")
    return from_fields(name, {k: v for k, v in fields.items() if k != "cluster_name"})


# -- the written line ---------------------------------------------------------------------------

CHAIN_FIELDS = ("log_id", "seq", "prev_hash", "hash")
COMMON_FIELDS = ("event", "code", "uid", "time", "cluster_name")


class Envelope(BaseModel):
    """The fields the log itself writes on every line."""

    model_config = ConfigDict(extra="forbid", strict=True)

    event: str
    code: str
    uid: str
    time: str
    cluster_name: str
    log_id: str
    seq: int
    prev_hash: str
    hash: str


def check_record(record: dict[str, Any]) -> AuditEvent:
    """Validate a line as written; BadParameter names the event and the field."""
    name = str(record.get("event"))
    envelope = {k: v for k, v in record.items() if k in COMMON_FIELDS + CHAIN_FIELDS}
    try:
        Envelope.model_validate(envelope)
    except ValidationError as exc:
        raise BadParameter(problem_text(name, exc)) from None
    try:
        parse_time(record["time"])
        uuid.UUID(record["uid"])
    except ValueError:
        raise BadParameter(f"event {name!r}: time or uid is malformed") from None
    model = model_for(name)
    built = from_fields(name, {k: v for k, v in record.items() if k not in envelope})
    codes = {t.code for t in model.types()}
    if record["code"] not in codes:
        raise BadParameter(f"event {name!r}: code {record['code']!r} is not one of {codes}")
    return built

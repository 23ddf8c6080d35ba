"""Every audit event's stable name and code, in one place.

Names and codes follow what operators know from Teleport; codes ending in I are
information, W a refusal or failure, E an error. The README's reference section lists
the same table; each event's fields are its model in limen.audit.schema. Every event also
carries the common fields (event, code, uid, time in RFC 3339 UTC with nanoseconds,
cluster_name) and its place in the hash chain (log_id, seq, prev_hash, hash; see
limen.audit.chain).
"""

from __future__ import annotations

from typing import NamedTuple


class EventType(NamedTuple):
    name: str
    code: str


USER_LOGIN = EventType("user.login", "T1000I")
USER_LOGIN_FAILURE = EventType("user.login", "T1000W")
USER_CREATE = EventType("user.create", "T1002I")
USER_UPDATE = EventType("user.update", "T1003I")
USER_DELETE = EventType("user.delete", "T1004I")
USER_PASSWORD_CHANGE = EventType("user.password_change", "T1005I")
MFA_ADD = EventType("mfa.add", "T1006I")
USER_SIGNUP_FAILURE = EventType("user.signup", "T1005W")
USER_TOKEN_CREATE = EventType("user.token.create", "T1008I")
USER_UNLOCK = EventType("user.unlock", "T1009I")
CERT_ISSUED = EventType("cert.create", "TC000I")
SESSION_START = EventType("session.start", "T2000I")
SESSION_JOIN = EventType("session.join", "T2001I")
SESSION_JOIN_FAILURE = EventType("session.join", "T2001W")
SESSION_RESIZE = EventType("resize", "T2002I")
SESSION_LEAVE = EventType("session.leave", "T2003I")
SESSION_END = EventType("session.end", "T2004I")
SESSION_UPLOAD = EventType("session.upload", "T2005I")
SESSION_DATA = EventType("session.data", "T2006I")
RECORDING_FAILURE = EventType("session.recording.failure", "T2005E")
RECORDING_ACCESS = EventType("session.recording.access", "T2012I")
SESSION_REJECTED = EventType("session.rejected", "T1006W")
EXEC = EventType("exec", "T3002I")
EXEC_FAILURE = EventType("exec", "T3002E")
PORT_FORWARD = EventType("port", "T3003I")
PORT_FORWARD_FAILURE = EventType("port", "T3003E")
SCP = EventType("scp", "T3004I")
SFTP = EventType("sftp", "T3005I")
CLIENT_DISCONNECT = EventType("client.disconnect", "T3006I")
AUTH_FAILURE = EventType("auth", "T3007W")
AUTH_SUCCESS = EventType("auth", "T3007I")
ROLE_CREATED = EventType("role.created", "T9000I")
ROLE_DELETED = EventType("role.deleted", "T9001I")
ROLE_UPDATED = EventType("role.updated", "T9002I")
JOIN_TOKEN_CREATE = EventType("join_token.create", "TJT00I")
JOIN_TOKEN_DELETE = EventType("join_token.delete", "TJT01I")
JOIN_TOKEN_USE = EventType("join_token.use", "TJT02I")
NODE_JOIN = EventType("instance.join", "TJ001I")
NODE_JOIN_FAILURE = EventType("instance.join", "TJ001E")
NODE_REMOVE = EventType("instance.remove", "TJ002I")
NODE_HEARTBEAT_FAILURE = EventType("instance.heartbeat", "TJ003W")
NODE_RENEW = EventType("instance.renew", "TJ004I")
NODE_RENEW_FAILURE = EventType("instance.renew", "TJ004W")
# Identity connectors (single sign-on) created, replaced or removed.
CONNECTOR_CREATED = EventType("connector.created", "TCN00I")
CONNECTOR_DELETED = EventType("connector.deleted", "TCN01I")
CONNECTOR_UPDATED = EventType("connector.updated", "TCN02I")
LOCK_CREATED = EventType("lock.created", "TLK00I")
LOCK_DELETED = EventType("lock.deleted", "TLK01I")
ACCESS_DENIED = EventType("access.denied", "TA000W")
PROXY_CONNECT = EventType("proxy.connect", "TP000I")
PROXY_CONNECT_FAILURE = EventType("proxy.connect", "TP000W")
PROXY_DISCONNECT = EventType("proxy.disconnect", "TP001I")
PROXY_REFUSED = EventType("proxy.refused", "TP002W")
TUNNEL_DISCONNECT = EventType("tunnel.disconnect", "TT001I")
# The log's own events: signed checkpoints of the hash chain, and the signed anchor that
# lets the chain be verified after retention removed its oldest entries.
AUDIT_CHECKPOINT = EventType("audit.checkpoint", "TAU00I")
AUDIT_RETENTION = EventType("audit.retention", "TAU01I")
# A report from a node or the proxy that the auth service refused to write (an unknown
# event or field, an event the reporter may not write, a session of another node).
REPORT_REFUSED = EventType("audit.report.refused", "TAU02W")
ALL = [value for value in dict(globals()).values() if isinstance(value, EventType)]

# What a node may report about its own connections and sessions: nothing else (not
# proxy.*, not user.*, not the log's own events).
NODE_REPORTED = frozenset({
    "auth", "session.start", "session.end", "session.data", "session.rejected", "resize",
    "exec", "port", "scp", "sftp", "client.disconnect", "session.recording.failure",
    "session.join", "session.leave",
})
# What the proxy (jump host and tunnel server) reports.
PROXY_REPORTED = frozenset({
    "auth", "proxy.connect", "proxy.disconnect", "proxy.refused", "tunnel.disconnect",
})
# What the proxy reports for the sessions it relays to agentless OpenSSH nodes.
OPENSSH_REPORTED = frozenset({
    "auth", "session.start", "session.end", "session.data", "session.rejected", "exec",
    "resize", "scp", "sftp",
})

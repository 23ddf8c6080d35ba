"""A node's registration (who it is, durable) and its presence (where it is, fleeting).

Joining creates the registration: the node's id, its name and labels, its host key and
the serial of its current host certificate and API token. Only a join, a renewal or
``limen rm node/X`` changes it, and it lapses with the node's credentials. Heartbeats
write the presence: the address and connection mode the node reports, and when it last
did so; a presence lapses a few minutes after the last heartbeat, and it never brings
back a registration that is gone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from limen.resources.base import Resource


class NodeSpec(BaseModel):
    # Records written before registration and presence were split carry presence fields
    # (addr, connection, ...): they are ignored, and such a node must join again.
    model_config = ConfigDict(extra="ignore")

    hostname: str
    # The node's SSH host public key (OpenSSH line): renewals must prove they hold it.
    host_key: str = ""
    # The serial of the host certificate currently issued to the node; older ones are
    # refused once a renewal replaced them.
    cert_serial: int = 0
    # The names its certificates carry (id, name, NAME.CLUSTER, perhaps an address);
    # renewals certify the same ones.
    principals: list[str] = Field(default_factory=list)
    # Short ids (SHA-256 prefixes) of the node's current API token and the one before
    # the last renewal: the latter is good for nothing but retrying that renewal.
    token_id: str = ""
    previous_token_id: str = ""
    # The time in the last renewal's signed proof: a later renewal must prove a later one,
    # so a captured request cannot be sent again.
    last_renewal_proof: datetime | None = None
    credentials_expire: datetime | None = None
    # Registered in-process by `limen start` (the proxy's own host), not with a token.
    local: bool = False
    version: str = ""
    joined: datetime | None = None
    # "openssh": a stock sshd registered by an admin (limen nodes add --openssh), which
    # the proxy reaches at ``addr`` and speaks SSH to for the user; "" for Limen nodes.
    kind: Literal["", "openssh"] = ""
    addr: str = ""  # an OpenSSH node's HOST:PORT, as the admin registered it


class Node(Resource):
    """metadata.name is the node's id (a UUID); spec.hostname the name people type."""

    KIND = "node"
    spec: NodeSpec


class NodePresenceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    addr: str = ""  # host:port of the SSH service; empty for tunnel-only nodes
    connection: Literal["direct", "tunnel", "openssh"] = "direct"
    version: str = ""
    # When the node took its current connection (first heartbeat, or changed address or
    # direct/tunnel); listings show a tunnel's own up/down time from the proxy instead.
    since: datetime | None = None
    last_heartbeat: datetime | None = None
    # OpenSSH nodes: what the proxy's health check last saw ("ok", or why not), and when.
    state: str = ""


class NodePresence(Resource):
    """metadata.name is the node's id; the record expires when heartbeats stop."""

    KIND = "node_presence"
    spec: NodePresenceSpec

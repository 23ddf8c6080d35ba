"""A registered node: where its SSH service is, its labels, how it is connected."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from limen.resources.base import Resource


class NodeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hostname: str
    addr: str = ""  # host:port of the SSH service; empty for tunnel-only nodes
    connection: Literal["direct", "tunnel"] = "direct"
    version: str = ""
    joined: datetime | None = None
    # When the node took its current connection (registered, or changed address or
    # direct/tunnel); listings show a tunnel's own up/down time from the proxy instead.
    since: datetime | None = None
    last_heartbeat: datetime | None = None


class Node(Resource):
    """metadata.name is the node's id (a UUID); spec.hostname the name people type."""

    KIND = "node"
    spec: NodeSpec

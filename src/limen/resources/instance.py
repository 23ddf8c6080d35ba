"""An auth/proxy instance of the cluster, as its own heartbeats describe it.

Several `limen start --roles auth,proxy` processes may share one PostgreSQL database.
Each writes this record every heartbeat: what it runs, where it listens, and the nodes
whose reverse tunnels it holds. The record outlives its instance by an hour, so an
instance that stopped heartbeating is still listed, as down, for that long.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from limen.resources.base import Resource


class InstanceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hostname: str = ""
    roles: list[str] = Field(default_factory=list)
    version: str = ""
    web_addr: str = ""  # the HTTPS API, as clients and nodes should dial it
    ssh_addr: str = ""  # the jump host
    tunnel_addr: str = ""  # the tunnel server, with its host key and whether it is TLS
    tunnel_host_key: str = ""
    tunnel_tls: bool = False
    started: datetime | None = None
    last_heartbeat: datetime | None = None
    heartbeat_interval: float = 5.0  # seconds; down after three missed
    tunnels: list[str] = Field(default_factory=list)  # node ids tunneled to this proxy
    stopped: bool = False  # shut down cleanly (down at once, not after missed beats)


class Instance(Resource):
    """metadata.name is the instance's id (kept in its data dir across restarts)."""

    KIND = "instance"
    spec: InstanceSpec

    def up(self, now: datetime) -> bool:
        """Heartbeating: the last beat is less than three intervals old."""
        beat = self.spec.last_heartbeat
        if self.spec.stopped or beat is None:
            return False
        return (now - beat).total_seconds() < 3 * self.spec.heartbeat_interval

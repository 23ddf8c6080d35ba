"""What every auth service needs: storage, clock, audit, CAs and settings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from limen.audit.log import AuditLog
from limen.audit.store import AuditStore
from limen.auth.ca import CAStore
from limen.backend.base import Backend
from limen.clock import Clock
from limen.netpolicy import IPNetwork
from limen.resources import (
    Instance,
    JoinToken,
    Lock,
    Node,
    NodePresence,
    Role,
    Session,
    User,
    UserToken,
)
from limen.services.credentials import CredentialStore
from limen.services.sessions import APISessionStore
from limen.services.store import ResourceStore


@dataclass(frozen=True)
class AuthSettings:
    cluster_name: str
    cert_ttl: timedelta = timedelta(hours=12)
    max_cert_ttl: timedelta = timedelta(hours=30)
    signup_token_ttl: timedelta = timedelta(hours=1)
    max_signup_token_ttl: timedelta = timedelta(hours=48)
    reset_token_ttl: timedelta = timedelta(hours=8)
    max_reset_token_ttl: timedelta = timedelta(hours=24)
    lockout_attempts: int = 5
    lockout_duration: timedelta = timedelta(minutes=30)
    join_token_ttl: timedelta = timedelta(minutes=30)
    host_cert_ttl: timedelta = timedelta(days=365)  # the proxy's own, made at each start
    # A node's host certificate and API token; the node renews both as they age.
    node_credential_ttl: timedelta = timedelta(hours=24)
    # Networks nodes may advertise although loopback, link-local, ... (proxy.node_networks).
    node_networks: tuple[IPNetwork, ...] = ()
    # A node missing heartbeats for this long disappears from listings.
    node_ttl: timedelta = timedelta(minutes=10)
    heartbeat_interval: timedelta = timedelta(seconds=60)
    # Host names the proxy answers to; joining nodes may not claim them.
    reserved_host_names: frozenset[str] = frozenset()
    session_ttl: timedelta = timedelta(minutes=2)


class Stores:
    """The typed stores the auth role uses, over one backend."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.users = ResourceStore(backend, User, "/users", suffix="/params")
        self.roles = ResourceStore(backend, Role, "/roles")
        self.user_tokens = ResourceStore(backend, UserToken, "/user_tokens")
        self.credentials = CredentialStore(backend)
        self.api_sessions = APISessionStore(backend)
        self.join_tokens = ResourceStore(backend, JoinToken, "/tokens")
        self.nodes = ResourceStore(backend, Node, "/nodes")
        self.node_presence = ResourceStore(backend, NodePresence, "/node_presence")
        self.sessions = ResourceStore(backend, Session, "/sessions")
        self.locks = ResourceStore(backend, Lock, "/locks")
        self.instances = ResourceStore(backend, Instance, "/instances")


@dataclass
class AuthContext:
    settings: AuthSettings
    stores: Stores
    cas: CAStore
    clock: Clock
    audit: AuditLog
    audit_store: AuditStore | None = None  # searchable events and recordings

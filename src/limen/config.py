"""The YAML configuration as typed models, validated on load, with defaults.

Every listen address is configurable; defaults follow the ports operators know
from Teleport (3080 web, 3022 node, 3023 proxy SSH, 3024 tunnels, 3025 auth).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from limen.durations import parse_duration
from limen.errors import BadParameter
from limen.hostport import split_host_port
from limen.netpolicy import parse_networks
from limen.yamlload import load_documents, validate

ROLES = ("auth", "proxy", "node")


def default_data_dir() -> Path:
    env = os.environ.get("LIMEN_DATA_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/limen")
    return Path.home() / ".local" / "share" / "limen"


def _check_addr(value: str) -> str:
    try:
        split_host_port(value)
    except BadParameter as exc:
        raise ValueError(exc.message) from None
    return value


MIN_NODE_CREDENTIAL_TTL = timedelta(minutes=10)
MAX_NODE_CREDENTIAL_TTL = timedelta(days=30)


def _check_duration(value: str) -> str:
    try:
        parse_duration(value)
    except BadParameter as exc:
        raise ValueError(exc.message) from None
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StorageConfig(_Section):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    type: Literal["sqlite", "postgres", "memory"] = "sqlite"
    path: str | None = None  # sqlite: defaults to DATA_DIR/backend.sqlite
    dsn: str | None = None  # postgres: postgresql://user@host:5432/db
    schema_name: str | None = Field(default=None, alias="schema")


class RateLimitConfig(_Section):
    average_per_minute: float = 20
    burst: int = 40


class AuthConfig(_Section):
    enabled: bool = True
    listen_addr: str = "0.0.0.0:3025"
    cert_ttl: str = "12h"
    max_cert_ttl: str = "30h"
    signup_token_ttl: str = "1h"
    reset_token_ttl: str = "8h"
    lockout_attempts: int = Field(default=5, ge=1)
    lockout_duration: str = "30m"
    # How long a node's host certificate and API token live; the node renews both once
    # a third of that has passed, and must join again after an absence this long.
    node_credential_ttl: str = "24h"
    # How often this instance records that it is alive in the shared storage (limen
    # status --cluster); it is called down after three missed heartbeats.
    heartbeat_interval: str = "5s"

    _addr = field_validator("listen_addr")(_check_addr)
    _ttls = field_validator(
        "cert_ttl", "max_cert_ttl", "signup_token_ttl", "reset_token_ttl", "lockout_duration",
        "node_credential_ttl", "heartbeat_interval",
    )(_check_duration)

    @field_validator("node_credential_ttl")
    @classmethod
    def _credential_ttl(cls, value: str) -> str:
        ttl = parse_duration(value)
        if not MIN_NODE_CREDENTIAL_TTL <= ttl <= MAX_NODE_CREDENTIAL_TTL:
            raise ValueError("a node's credentials live between 10m and 30d")
        return value


class ListenerConfig(_Section):
    handshake_timeout: str = "5s"  # a client that has not finished TLS or sent SSH by then
    max_connections_per_ip: int = Field(default=1000, ge=1)
    max_handshakes_per_ip: int = Field(default=256, ge=1)
    # From all addresses at once: beyond this, a new connection from an address with a
    # handshake in progress is closed at once (cheap for both sides; the client tries
    # again) rather than taken into a handshake that a saturated proxy would not finish
    # before the timeout, wasting the work of both (proxy/listener.py, _over_bound).
    max_handshakes: int = Field(default=128, ge=1)

    _timeout = field_validator("handshake_timeout")(_check_duration)


def _check_cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise ValueError(f"{value!r} is not an address or network like 10.0.0.0/8") from None


def _check_cidrs(values: list[str]) -> list[str]:
    return [_check_cidr(value) for value in values]


class ProxyConfig(_Section):
    enabled: bool = True
    # multiplex: the web port also serves SSH (plain or TLS, ALPN limen-ssh) and node
    # tunnels (TLS, ALPN limen-tunnel); separate: the web port serves HTTPS only.
    listener_mode: Literal["multiplex", "separate"] = "multiplex"
    web_listen_addr: str = "0.0.0.0:3080"
    # The dedicated ports stay open unless set to null.
    ssh_listen_addr: str | None = "0.0.0.0:3023"
    tunnel_listen_addr: str | None = "0.0.0.0:3024"  # reverse tunnels from nodes behind NAT
    public_addr: str | None = None
    # Networks nodes may advertise addresses in although they are loopback, link-local,
    # unspecified or multicast (refused by default: they reach the proxy's own host).
    # The proxy never dials its own listen addresses, whatever this says.
    node_networks: list[str] = Field(default_factory=list)
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    listener: ListenerConfig = Field(default_factory=ListenerConfig)
    # Load balancers or reverse proxies in front of the web port, whose X-Forwarded-For
    # names the real client (for audit events and the rate limit). From anyone else the
    # header is ignored: by default nobody is trusted, not even this host.
    trusted_proxies: list[str] = Field(default_factory=list)

    _cidrs = field_validator("trusted_proxies")(_check_cidrs)

    @field_validator("web_listen_addr", "ssh_listen_addr", "tunnel_listen_addr")
    @classmethod
    def _addrs(cls, value: str | None) -> str | None:
        return None if value is None else _check_addr(value)

    @field_validator("node_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        try:
            parse_networks(value)
        except BadParameter as exc:
            raise ValueError(exc.message) from None
        return value


def _check_optional_duration(value: str | None) -> str | None:
    return None if value is None else _check_duration(value)


class AuditConfig(_Section):
    # Events and recordings older than these are removed; unset keeps them forever.
    max_age: str | None = None
    recordings_max_age: str | None = None
    # How often a signed checkpoint pins the hash chain (also every 1000 events).
    checkpoint_interval: str = "60s"

    _ages = field_validator("max_age", "recordings_max_age", "checkpoint_interval")(
        _check_optional_duration
    )


class NodeConfig(_Section):
    enabled: bool = True
    listen_addr: str = "0.0.0.0:3022"
    name: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    env_allowlist: list[str] = Field(default_factory=list)
    advertise_addr: str | None = None  # where the proxy dials this node
    # A tunneled node dials the proxy back one plain connection per session (the user's
    # SSH stream, end to end encrypted, not wrapped again); false: sessions cross the
    # tunnel itself.
    tunnel_data_connections: bool = True
    # Joining a cluster that runs elsewhere (limen start --roles node --token ...):
    proxy_addr: str | None = None
    join_token: str | None = None
    ca_pin: str | None = None

    _addr = field_validator("listen_addr")(_check_addr)


class Config(_Section):
    version: Literal["v1"] = "v1"
    cluster_name: str = Field(default_factory=lambda: socket.gethostname() or "limen")
    data_dir: Path = Field(default_factory=default_data_dir)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"  # json: one object per line
    # Prometheus /metrics, /healthz and /readyz over plain HTTP; off unless set.
    diag_addr: str | None = None
    storage: StorageConfig = Field(default_factory=StorageConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    proxy: ProxyConfig = Field(default_factory=ProxyConfig)
    ssh: NodeConfig = Field(default_factory=NodeConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)

    @field_validator("diag_addr")
    @classmethod
    def _diag(cls, value: str | None) -> str | None:
        return None if value is None else _check_addr(value)

    def roles(self) -> list[str]:
        return [
            role
            for role, section in (("auth", self.auth), ("proxy", self.proxy), ("node", self.ssh))
            if section.enabled
        ]


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file; errors name the field and its line."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise BadParameter(f"cannot read config file {source}: {exc.strerror}") from None
    docs = load_documents(text, source)
    if not docs:
        return Config()
    if len(docs) > 1:
        raise BadParameter(f"{source}: expected one YAML document, found {len(docs)}")
    data, located = docs[0]
    return validate(Config, data, located, source)


SAMPLE_CONFIG = """\
# Limen configuration. Every key is optional; these are the defaults.
# Start with:  limen start --config /etc/limen.yaml
version: v1

# The cluster's name; it appears in certificates and in NODE.CLUSTER host names.
# Default: this machine's host name.
# cluster_name: example.com

# Where CA keys, the embedded database and the audit log live (kept 0600).
data_dir: /var/lib/limen

log_level: info   # debug | info | warning | error (SIGHUP reloads it)
log_format: text  # text | json (one JSON object per line; SIGHUP reloads it)

# Prometheus metrics (/metrics) and health checks (/healthz, /readyz) over plain HTTP.
# Off by default; keep it on a loopback or management address.
# diag_addr: 127.0.0.1:3000

storage:
  type: sqlite    # sqlite (embedded, default) | postgres (several auth/proxy instances)
  # path: /var/lib/limen/backend.sqlite
  # dsn: postgresql://limen@db.example.com:5432/limen

auth:
  enabled: true
  listen_addr: 0.0.0.0:3025   # internal API, used when auth runs apart from the proxy
  cert_ttl: 12h               # default user certificate lifetime
  max_cert_ttl: 30h           # cluster maximum, whatever a role or --ttl asks
  signup_token_ttl: 1h
  reset_token_ttl: 8h
  lockout_attempts: 5         # failed logins in a row before the user is locked
  lockout_duration: 30m
  node_credential_ttl: 24h    # node host certificates and API tokens; renewed by the node

proxy:
  enabled: true
  listener_mode: multiplex        # the web port also carries SSH and node tunnels
  web_listen_addr: 0.0.0.0:3080   # HTTPS API (login, signup) and later the web UI
  ssh_listen_addr: 0.0.0.0:3023   # SSH jump host (ssh -J)
  tunnel_listen_addr: 0.0.0.0:3024  # nodes without an address dial in here (reverse tunnels)
  # public_addr: proxy.example.com:3080   # the address clients use, if different
  node_networks: []               # e.g. [127.0.0.0/8]: networks nodes may advertise
  #                               # although loopback/link-local/unspecified/multicast
  rate_limit:                     # per client address, on unauthenticated endpoints
    average_per_minute: 20
    burst: 40
  listener:                       # the multiplexed web port's protections
    handshake_timeout: 5s
    max_connections_per_ip: 1000
    max_handshakes_per_ip: 256
    max_handshakes: 128           # TLS handshakes in progress from all addresses
  trusted_proxies: []             # load balancers whose X-Forwarded-For names the client,
                                  # e.g. [10.0.0.0/8]; from anyone else the header is ignored

audit:                            # the audit log (DATA_DIR/log/events) and recordings
  # max_age: 365d                 # remove older events (the chain stays verifiable)
  # recordings_max_age: 90d       # remove older session recordings
  checkpoint_interval: 60s        # signed checkpoints of the hash chain

ssh:
  enabled: true                   # the node role: SSH access to this host
  listen_addr: 0.0.0.0:3022
  # name: web-1
  labels: {}
  # advertise_addr: 10.0.0.5:3022   # where the proxy dials this node; a node that joins
  #                                 # through proxy_addr without one dials out instead
  #                                 # (a reverse tunnel) and then opens no port unless
  #                                 # listen_addr is set explicitly
  tunnel_data_connections: true   # a tunneled node dials the proxy back one plain TCP
  #                               # connection per session (the user's SSH stream,
  #                               # encrypted end to end); false: all in the tunnel
  # To join a cluster whose auth and proxy run elsewhere:
  # proxy_addr: proxy.example.com:3080
  # join_token: <from limen tokens add --type node>
  # ca_pin: sha256:<from limen tokens add>
  env_allowlist: []               # environment variables clients may set beyond LANG, LC_*, TERM
"""


@dataclass
class JoinOptions:
    """How a node joins that is not configuration: ``--insecure`` (test clusters only)."""

    insecure: bool = False

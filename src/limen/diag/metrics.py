"""Every Limen metric, in one registry, behind small functions the rest of the code calls.

The functions are the only thing other modules touch (one line at the place the thing
happens), so they never need to know about label names or the client library. Metrics
live in a registry of our own, with the process, platform and GC collectors, so a test
process that imports other libraries scrapes only Limen's figures.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

LOGINS = Counter("limen_logins", "Login attempts (password and second factor), by result",
                 ["result"], registry=REGISTRY)
CERTIFICATES = Counter("limen_certificates_issued", "User certificates issued",
                       registry=REGISTRY)
SESSIONS = Counter("limen_sessions", "Sessions started, by node", ["node"], registry=REGISTRY)
SESSIONS_ACTIVE = Gauge("limen_sessions_active", "Sessions running now, by node", ["node"],
                        registry=REGISTRY)
SESSION_SETUP = Histogram(
    "limen_session_setup_seconds",
    "From the SSH connection reaching the node to its first session starting",
    buckets=_LATENCY_BUCKETS, registry=REGISTRY,
)
JUMP_CONNECTIONS = Counter("limen_proxy_ssh_connections",
                           "Connections through the SSH jump host to nodes, by result",
                           ["result"], registry=REGISTRY)
NODE_HEARTBEATS = Counter("limen_node_heartbeats",
                          "Node heartbeats answered, by way (tunnel: inside the node's "
                          "reverse tunnel; https: the web API)", ["via"], registry=REGISTRY)
ACCESS_FEEDS = Counter("limen_access_feeds",
                       "Access feeds opened for nodes, by way (tunnel: inside the node's "
                       "reverse tunnel; https: the web API)", ["via"], registry=REGISTRY)
TUNNELS = Gauge("limen_tunnels_connected", "Node reverse tunnels connected to this proxy",
                registry=REGISTRY)
TUNNEL_STREAMS = Counter("limen_tunnel_streams",
                         "Connections to tunneled nodes, by path (data: a connection the "
                         "node dialed back; channel: inside its tunnel)", ["path"],
                         registry=REGISTRY)
AUDIT_EVENTS = Counter("limen_audit_events_written", "Audit events written and fsynced",
                       registry=REGISTRY)
AUDIT_QUEUE = Gauge("limen_audit_queue_depth", "Audit events waiting for the writer",
                    registry=REGISTRY)
BACKEND_LATENCY = Histogram("limen_backend_operation_seconds",
                            "Storage backend operation latency, by operation", ["operation"],
                            buckets=_LATENCY_BUCKETS, registry=REGISTRY)
GC_FROZEN = Gauge("limen_gc_frozen_objects",
                  "Objects start-up left that garbage collections no longer walk "
                  "(runtime/heap.py)", registry=REGISTRY)
GC_FROZEN.set_function(gc.get_freeze_count)


def login_attempt(success: bool) -> None:
    LOGINS.labels(result="success" if success else "failure").inc()


def certificate_issued() -> None:
    CERTIFICATES.inc()


def session_started(node: str, setup_seconds: float | None = None) -> None:
    SESSIONS.labels(node=node).inc()
    SESSIONS_ACTIVE.labels(node=node).inc()
    if setup_seconds is not None:
        SESSION_SETUP.observe(setup_seconds)


def session_ended(node: str) -> None:
    SESSIONS_ACTIVE.labels(node=node).dec()


def jump_connection(allowed: bool) -> None:
    JUMP_CONNECTIONS.labels(result="allowed" if allowed else "refused").inc()


def node_heartbeat(via: str) -> None:
    NODE_HEARTBEATS.labels(via=via).inc()


def access_feed(via: str) -> None:
    ACCESS_FEEDS.labels(via=via).inc()


def count_tunnels(count: Callable[[], int]) -> None:
    """The tunnel gauge reads the proxy's tunnel directory when scraped."""
    TUNNELS.set_function(count)


def tunnel_stream(path: str) -> None:
    TUNNEL_STREAMS.labels(path).inc()


def audit_written(events: int, queued: int) -> None:
    AUDIT_EVENTS.inc(events)
    AUDIT_QUEUE.set(queued)


def backend_operation(operation: str, seconds: float) -> None:
    BACKEND_LATENCY.labels(operation=operation).observe(seconds)

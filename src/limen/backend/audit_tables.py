"""The audit store's tables (both engines). Prefixed ``audit_`` so they can share a
PostgreSQL schema with the cluster's ``kv_`` tables.

Search runs newest first on (column, time_ns, id) indexes, so every filter is an index
range read in the order the answer needs, with no sort, however many events there are.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

# SQLite only auto-increments an INTEGER PRIMARY KEY (not BIGINT).
ID_TYPE = BigInteger().with_variant(Integer(), "sqlite")

audit_metadata = MetaData()

events = Table(
    "audit_events",
    audit_metadata,
    Column("id", ID_TYPE, primary_key=True, autoincrement=True),
    Column("log_id", String(32), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("uid", String(64), nullable=False),
    Column("time_ns", BigInteger, nullable=False),
    Column("event", String(64), nullable=False),
    Column("code", String(16), nullable=False),
    Column("user", Text, nullable=True),
    Column("node", Text, nullable=True),
    Column("server_id", Text, nullable=True),
    Column("sid", String(64), nullable=True),
    Column("hash", String(64), nullable=False),
    Column("data", Text, nullable=False),
    UniqueConstraint("log_id", "seq", name="audit_events_chain"),
    UniqueConstraint("uid", name="audit_events_uid"),
    Index("audit_events_time", "time_ns", "id"),
    Index("audit_events_type", "event", "time_ns", "id"),
    Index("audit_events_user", "user", "time_ns", "id"),
    Index("audit_events_node", "node", "time_ns", "id"),
    Index("audit_events_server", "server_id", "time_ns", "id"),
    Index("audit_events_sid", "sid", "time_ns", "id"),
)

logs = Table(
    "audit_logs",
    audit_metadata,
    Column("log_id", String(32), primary_key=True),
    Column("public_key", Text, nullable=False),
)

# The cluster CA's voucher for a log's key (limen.audit.vouchers). A table of its own,
# not a column of audit_logs, so stores created before vouchers existed gain it as they
# open (tables are created when missing; columns are never added).
vouchers = Table(
    "audit_log_vouchers",
    audit_metadata,
    Column("log_id", String(32), primary_key=True),
    Column("voucher", Text, nullable=False),
)

recordings = Table(
    "audit_recordings",
    audit_metadata,
    Column("session_id", String(64), primary_key=True),
    Column("user", Text, nullable=False, default=""),
    Column("login", Text, nullable=False, default=""),
    Column("node", Text, nullable=False, default=""),
    Column("node_id", Text, nullable=False, default=""),
    Column("kind", String(16), nullable=False, default=""),
    Column("command", Text, nullable=False, default=""),
    Column("start_ns", BigInteger, nullable=False, default=0),
    Column("end_ns", BigInteger, nullable=True),
    Column("size", BigInteger, nullable=False, default=0),
    Column("complete", Boolean, nullable=False, default=False),
    Column("interrupted", Boolean, nullable=False, default=False),
    # The last characters of the printed text, prefixed to the next chunk's text so a
    # search finds words that a chunk boundary cut in two.
    Column("tail", Text, nullable=False, default=""),
    Column("extra", Text, nullable=False, default="{}"),
    Index("audit_recordings_start", "start_ns"),
)

chunks = Table(
    "audit_recording_chunks",
    audit_metadata,
    Column("session_id", String(64), nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("text", Text, nullable=False),  # printed text, lowercase, for search
    PrimaryKeyConstraint("session_id", "offset", name="audit_recording_chunks_pk"),
)

"""The hash chain every audit event is part of, and the key that signs its checkpoints.

Each event carries ``log_id`` (which chain), ``seq`` (1, 2, 3, ... without gaps),
``prev_hash`` (the previous event's hash; 64 zeros for the first) and ``hash``: the
SHA-256 of the event's canonical JSON without ``hash``. Changing, removing, inserting
or reordering a line breaks the chain at that spot.

A chain alone can be rewritten by someone who recomputes every later hash, so the auth
service signs checkpoints (``audit.checkpoint`` events naming a seq and its hash) with
an Ed25519 key of its own, kept in DATA_DIR/ca/ (0600) beside the CAs. The same key
signs the anchor that retention leaves when it removes the oldest events.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from limen.files import write_private

GENESIS = "0" * 64
KEY_FILE = "audit_key.pem"
PUBLIC_KEY_FILE = "audit_key.pub"


# One encoder for every call: json.dumps with options builds a new one each time.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical(record: dict[str, Any]) -> bytes:
    """The bytes that are hashed: sorted keys, no spaces, UTF-8."""
    return _CANONICAL.encode(record).encode()


_PLAIN = (str, int, bool, type(None))  # JSON gives these back unchanged (floats: NaN)


def normalize(record: dict[str, Any]) -> dict[str, Any]:
    """The record as it reads back from JSON (datetimes and the like become strings), so
    the hash computed before writing equals the one recomputed from the file. Most
    records hold only strings and numbers: those are returned as they are."""
    if all(type(value) in _PLAIN for value in record.values()):
        return record
    return json.loads(json.dumps(record, default=str, ensure_ascii=False))


def event_hash(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"} if "hash" in record else record
    return hashlib.sha256(canonical(body)).hexdigest()


def seal(record: dict[str, Any]) -> str:
    """Set the record's ``hash`` and return its line: the canonical JSON that is hashed,
    with ``hash`` added as its last key. One encoding serves both (encoding the record a
    second time for its line was a sixth of what writing an event cost the log).
    Raises UnicodeEncodeError for text that is not UTF-8 (a lone surrogate)."""
    record.pop("hash", None)
    text = _CANONICAL.encode(record)
    digest = hashlib.sha256(text.encode()).hexdigest()
    record["hash"] = digest
    return f'{text[:-1]},"hash":"{digest}"}}'


def format_time(ns: int) -> str:
    """RFC 3339 in UTC with nanoseconds: 2024-05-01T12:00:00.123456789Z."""
    seconds, frac = divmod(ns, 1_000_000_000)
    return f"{_second_text(seconds)}.{frac:09d}Z"


# Events come many to a second: the date and time of the second are worked out once
# (strftime and fromisoformat were a tenth of the CPU an event costs to write).
@functools.lru_cache(maxsize=64)
def _second_text(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


@functools.lru_cache(maxsize=64)
def _second_of(text: str) -> int:
    return int(datetime.fromisoformat(text + "+00:00").timestamp())


def parse_time(text: str) -> int:
    """Nanoseconds since the epoch from RFC 3339 (any precision, Z or an offset)."""
    if len(text) == 30 and text[19] == "." and text[-1] == "Z" and text[20:29].isdigit():
        return _second_of(text[:19]) * 1_000_000_000 + int(text[20:29])  # format_time's
    value = text.strip()
    frac_ns = 0
    if "." in value:
        head, _, rest = value.partition(".")
        digits = ""
        while rest and rest[0].isdigit():
            digits, rest = digits + rest[0], rest[1:]
        frac_ns = int((digits + "000000000")[:9]) if digits else 0
        value = head + rest
    when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp()) * 1_000_000_000 + frac_ns


def checkpoint_message(kind: str, log_id: str, seq: int, digest: str) -> bytes:
    """What a checkpoint ("checkpoint") or a retention anchor ("anchor") signs."""
    return f"limen-audit-{kind}:{log_id}:{seq}:{digest}".encode()


@dataclass(frozen=True)
class AuditKey:
    """The auth service's audit signing key; its public key names the chain (log_id)."""

    private: Ed25519PrivateKey

    @property
    def public_b64(self) -> str:
        raw = self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return base64.b64encode(raw).decode()

    @property
    def log_id(self) -> str:
        return log_id_for(self.public_b64)

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self.private.sign(message)).decode()

    @classmethod
    def load_or_create(cls, ca_dir: Path) -> AuditKey:
        ca_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = ca_dir / KEY_FILE
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError(f"{path} is not an Ed25519 key")
            audit_key = cls(key)
        else:
            audit_key = cls(Ed25519PrivateKey.generate())
            pem = audit_key.private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            write_private(path, pem)
        public = ca_dir / PUBLIC_KEY_FILE
        if not public.exists():
            write_private(public, (audit_key.public_b64 + "\n").encode())
        return audit_key


def log_id_for(public_b64: str) -> str:
    return hashlib.sha256(base64.b64decode(public_b64)).hexdigest()[:16]


def read_public_key(ca_dir: Path) -> str | None:
    path = ca_dir / PUBLIC_KEY_FILE
    return path.read_text().strip() if path.exists() else None


def signature_ok(public_b64: str, message: bytes, signature: str) -> bool:
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_b64))
        key.verify(base64.b64decode(signature), message)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


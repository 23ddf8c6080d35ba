"""The cluster's CAs kept in shared storage, for several auth instances on one database.

Each instance has a data dir of its own, but all must sign with the same CAs. The first
instance to start stores them under ``/cluster/ca`` with ``create`` (an atomic
compare-and-swap on "no such key"), so two instances starting together never make two
sets: the loser of the race reads the winner's. Every instance then keeps a copy in its
DATA_DIR/ca (the files the rest of the auth role and the host admin commands read).

A data dir that already holds CA files (a single instance moving onto PostgreSQL) offers
them as the cluster's; one whose files differ from those stored belongs to another
cluster and is refused rather than silently re-keyed.
"""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import datetime
from pathlib import Path

from limen.auth.ca import CA_FILES, CAStore, new_ca_files, write_ca_files
from limen.backend.base import Backend, Item
from limen.errors import AlreadyExists, LimenError

CA_KEY = "/cluster/ca"


async def load_or_create_shared(backend: Backend, data_dir: Path, cluster_name: str,
                                now: datetime) -> CAStore:
    """The cluster's CAs from ``backend``, created there once; mirrored into DATA_DIR/ca."""
    local = await asyncio.to_thread(_read_local, Path(data_dir) / "ca")
    offer = local if len(local) == len(CA_FILES) else None
    if offer is None:
        offer = await asyncio.to_thread(new_ca_files, cluster_name, now)
    try:
        await backend.create(Item(CA_KEY, _encode(offer)))
        chosen = offer
    except AlreadyExists:
        chosen = _decode((await backend.get(CA_KEY)).value)
    differing = sorted(name for name, data in local.items() if chosen.get(name) != data)
    if differing:
        raise LimenError(
            f"{Path(data_dir) / 'ca'} holds CA keys ({', '.join(differing)}) other than the "
            "cluster's in its shared storage; this data dir belongs to another cluster. "
            "Start this instance with an empty data_dir."
        )
    missing = {name: data for name, data in chosen.items() if name not in local}
    await asyncio.to_thread(write_ca_files, data_dir, missing)
    return await asyncio.to_thread(CAStore.load_or_create, data_dir, cluster_name, now)


def _read_local(directory: Path) -> dict[str, bytes]:
    return {name: (directory / name).read_bytes() for name in CA_FILES
            if (directory / name).exists()}


def _encode(files: dict[str, bytes]) -> bytes:
    return json.dumps({name: base64.b64encode(data).decode() for name, data in files.items()},
                      sort_keys=True).encode()


def _decode(value: bytes) -> dict[str, bytes]:
    try:
        stored = json.loads(value)
        files = {name: base64.b64decode(stored[name], validate=True) for name in CA_FILES}
    except (ValueError, KeyError, TypeError) as exc:
        raise LimenError(f"The cluster's CAs in shared storage ({CA_KEY}) are unreadable.") \
            from exc
    return files

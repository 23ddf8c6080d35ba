"""A node's membership in a cluster: its identity on disk, joining, and heartbeats.

DATA_DIR/node/ holds the host key (0600), the host certificate, the cluster's CAs and
the node's API token (0600). A restarted node reuses them and needs no token while they
are valid; the node renews them as they age (renewal.py). A node whose credentials
lapsed, or that is given a join token other than the one it joined with, joins again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import asyncssh
import httpx

from limen.auth.node_credentials import sign_join, token_id
from limen.client import trust
from limen.client.api import fetch_ca
from limen.client.profile import write_private
from limen.clock import Clock
from limen.config import split_host_port
from limen.errors import AccessDenied, BadParameter, ConnectionProblem, from_json
from limen.netpolicy import first_address
from limen.node.cluster.link import ClusterLink
from limen.resources import Session
from limen.sshauth import read_certificate
from limen.tasks import cancel_and_wait

log = logging.getLogger(__name__)


@dataclass
class NodeIdentity:
    node_id: str
    name: str
    cluster: str
    host_cert: str
    host_ca: str
    user_ca: str
    api_token: str = ""
    proxy: str = ""
    tls_ca: str = ""
    heartbeat_seconds: float = 60.0
    join_token_id: str = ""  # which join token made this identity (a short hash)
    # The labels the cluster registered (a join token's labels win over the node's own).
    labels: dict[str, str] = field(default_factory=dict)

    def credentials_expire(self) -> datetime:
        return read_certificate(self.host_cert).valid_before

    def host_key(self, directory: Path) -> asyncssh.SSHKey:
        return asyncssh.read_private_key(str(directory / "host_key"))

    def certificate(self) -> asyncssh.SSHCertificate:
        return asyncssh.import_certificate(self.host_cert)

    def user_ca_key(self) -> asyncssh.SSHKey:
        return asyncssh.import_public_key(self.user_ca.split(None, 1)[1])


def identity_dir(data_dir: Path) -> Path:
    return data_dir / "node"


def load_identity(data_dir: Path) -> NodeIdentity | None:
    path = identity_dir(data_dir) / "identity.json"
    if not path.exists():
        return None
    return NodeIdentity(**json.loads(path.read_text()))


def save_identity(data_dir: Path, identity: NodeIdentity) -> None:
    write_private(identity_dir(data_dir) / "identity.json", json.dumps(asdict(identity), indent=2))


def host_key_for(data_dir: Path) -> asyncssh.SSHKey:
    """The node's host key, made on first use and kept 0600."""
    path = identity_dir(data_dir) / "host_key"
    if path.exists():
        return asyncssh.read_private_key(str(path))
    key = asyncssh.generate_private_key("ssh-ed25519", comment="limen node host key")
    write_private(path, key.export_private_key("openssh"))
    return key


def advertise_address(listen_host: str, port: int, explicit: str | None = None) -> str:
    """Where others dial this node: --advertise-addr, the listen host, or a real address."""
    if explicit:
        try:
            split_host_port(explicit)
            return explicit
        except BadParameter:
            host, port = split_host_port(explicit, port)
            return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    host = listen_host
    if host in ("", "0.0.0.0", "::"):
        host = first_address()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# How long a joining node keeps coming back while the proxy says it is busy admitting
# others (503 with Retry-After, limen.proxy.join_gate): a fleet coming up at once is
# admitted in turn rather than failing.
JOIN_PATIENCE = 600.0


async def join_remote(
    data_dir: Path,
    proxy: str,
    token: str,
    name: str,
    labels: dict[str, str],
    addr: str,
    ca_pin: str | None,
    insecure: bool,
    clock: Clock,
    patience: float = JOIN_PATIENCE,
) -> NodeIdentity:
    """First start of a remote node: verify the cluster, present the token, keep the result."""
    ca_pem = (await asyncio.to_thread(fetch_ca, proxy))["tls_ca"]
    if ca_pin:
        trust.check_pin(ca_pem, ca_pin)
    elif not insecure:
        raise AccessDenied(
            f"joining needs the cluster's CA pin: pass --ca-pin {trust.pin_of(ca_pem)} only if "
            "limen tokens add printed that same pin (or --insecure for a test cluster)"
        )
    key = host_key_for(data_dir)
    body = {"token": token, "name": name, "labels": labels, "addr": addr,
            "public_key": key.export_public_key("openssh").decode()}
    deadline = asyncio.get_running_loop().time() + patience
    async with httpx.AsyncClient(base_url=f"https://{proxy}",
                                 verify=trust.verifying_context(ca_pem), timeout=15) as http:
        while True:
            body["proof"] = sign_join(key, name, token, clock.now())  # fresh each try
            try:
                response = await http.post("/v1/join", json=body)
            except httpx.HTTPError as exc:
                raise ConnectionProblem(f"cannot reach the proxy at {proxy}: "
                                        f"{str(exc) or type(exc).__name__}") from None
            wait = _busy_for(response)
            if wait is None or asyncio.get_running_loop().time() + wait > deadline:
                break
            log.warning("the proxy is admitting other nodes; joining again in %.0f s", wait)
            await asyncio.sleep(wait)
    if not response.is_success:
        raise from_json(response.json() if response.content else None, "joining failed")
    result = response.json()
    identity = NodeIdentity(
        node_id=result["node_id"], name=name, cluster=result["cluster"],
        host_cert=result["host_cert"], host_ca=result["host_ca"], user_ca=result["user_ca"],
        api_token=result["api_token"], proxy=proxy, tls_ca=ca_pem,
        heartbeat_seconds=result["heartbeat_seconds"], join_token_id=token_id(token),
        labels=result.get("labels", labels),
    )
    save_identity(data_dir, identity)
    return identity


def _busy_for(response: httpx.Response) -> float | None:
    """Seconds to wait when the proxy answered busy (503 + Retry-After), with jitter so
    that nodes told the same number do not all come back in the same instant."""
    if response.status_code != 503:
        return None
    try:
        seconds = float(response.headers.get("retry-after", ""))
    except ValueError:  # absent, or an HTTP date: the proxy's error is shown instead
        return None
    if not math.isfinite(seconds):
        return None
    # Bounded here too: whatever a proxy says, a node neither spins nor waits for hours.
    return min(max(seconds, 1.0), 60.0) * random.uniform(1.0, 1.5)


class Renewal(Protocol):
    async def renew_if_due(self) -> bool: ...


# An idle tunneled node beats this seldom: the proxy sees its tunnel come and go (a
# listing says "tunnel (offline)" at once), and a presence record is rewritten only
# every 5 minutes anyway. A heartbeat was most of what an idle tunnel cost its proxy.
QUIET_TUNNEL_SECONDS = 300.0


class Heartbeat:
    """Tell the cluster the node is alive (and where), renew its credentials when they
    are due, and refresh its live sessions' trackers.

    A heartbeat is presence only: the node's name and labels were fixed when it joined,
    and a node whose registration is gone is refused, not registered again.

    It ticks every ``heartbeat_seconds`` (60 s by default). A direct node beats at every
    tick; a tunneled one at every tick while it has sessions (their trackers last two
    minutes unless renewed), otherwise every QUIET_TUNNEL_SECONDS, and at once whenever
    its tunnel (re)connects."""

    def __init__(self, link: ClusterLink, identity: NodeIdentity, addr: str,
                 trackers: Callable[[], list[Session]],
                 renewal: Renewal | None = None) -> None:
        self.link = link
        self.identity = identity
        self.addr = addr
        # The live sessions' trackers as the observer keeps them (parties, state): each
        # beat re-sends them, so a tracker the auth service lost comes back whole.
        self.trackers = trackers
        self.renewal = renewal
        # Told each answer: it lists the cluster's proxies (limen.tunnel.peers hears it).
        self.on_answer: Callable[[dict[str, Any]], None] | None = None
        # A tunneled node's way to beat inside its tunnel (TunnelAgent.heartbeat): None
        # when the tunnel is down, and then the beat goes over HTTPS.
        self.through_tunnel: Callable[[], Awaitable[dict[str, Any] | None]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._last = -math.inf  # monotonic time of the last beat answered

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def due(self, since_last: float) -> bool:
        """Whether a tick ``since_last`` seconds after the last beat sends one."""
        return bool(self.addr) or bool(self.trackers()) or since_last >= self.quiet_seconds()

    def quiet_seconds(self) -> float:
        """How long an idle node goes between beats (its answers' lifetime, too)."""
        every = self.identity.heartbeat_seconds
        return every if self.addr else max(every, QUIET_TUNNEL_SECONDS)

    async def beat(self) -> None:
        if self.renewal is not None:
            await self.renewal.renew_if_due()
        answer = await self._tunnel_beat()
        if answer is None:
            answer = await self.link.heartbeat(self.addr, "direct" if self.addr else "tunnel")
        self._last = time.monotonic()  # a failed beat is tried again at the next tick
        if self.on_answer is not None:
            self.on_answer(answer)
        for tracker in self.trackers():
            await self.link.upsert_session(tracker)

    async def _tunnel_beat(self) -> dict[str, Any] | None:
        """The beat inside the tunnel: no TLS handshake or HTTP request for the proxy. A
        refusal stands; a proxy that cannot take it there (an older one) gets it over
        HTTPS."""
        if self.through_tunnel is None:
            return None
        try:
            return await self.through_tunnel()
        except ConnectionProblem as exc:
            log.info("heartbeat through the tunnel failed, over HTTPS instead: %s", exc)
            return None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.identity.heartbeat_seconds)
            if not self.due(time.monotonic() - self._last):
                continue
            try:
                await self.beat()
            except AccessDenied as exc:  # removed, locked, or credentials lapsed: say so
                log.error("the cluster refused this node's heartbeat: %s", exc.message)
            except Exception as exc:  # noqa: BLE001 - keep beating through outages
                log.warning("heartbeat failed: %s", exc)

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

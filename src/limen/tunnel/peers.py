"""Tunnels to the cluster's other proxies, so that a user on any proxy reaches the node.

With several auth/proxy instances on one database, each proxy can reach a tunneled node
only through a tunnel the node opened to that proxy. The node's main agent keeps the
tunnel to the proxy it joined through; this keeps one more agent per other proxy. The set
comes from the proxies: every ``/v1/ping`` lists the proxies heartbeating in the cluster
(``tunnel_peers``: tunnel address, host key, web address), asked again after
``REFRESH_SECONDS`` while the set changes (or cannot be read), then at doubling intervals
up to ``SETTLED_SECONDS`` once it stays the same, each with jitter. With hundreds of
nodes asking, the proxy's TLS handshakes were most of its idle work (every 10 s at first,
then every minute), so the asks share one kept-alive connection (``PING_KEEPALIVE``,
longer than the longest wait between asks). The node asks the proxy it joined through,
or, while that one is away, any peer it learned of (the ping is verified by the pinned
cluster CA). A peer listed no more (down for three heartbeats, or gone) has its agent stopped.

The node's heartbeat answers list the proxies too (``hear``): while one arrived within
about a heartbeat's interval (``heard_seconds``), its listing is used and no ask is
sent, which halves the requests an idle fleet makes of its proxies. The asks take over
when heartbeats fail or come from a proxy that does not list its peers.

Each peer's agent pins that peer's own host key, as the main agent pins its proxy's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import httpx

from limen.errors import BadParameter, LimenError
from limen.tasks import cancel_and_wait
from limen.tunnel.agent import ProxyLocator, TunnelAgent
from limen.tunnel.discovery import TunnelTarget, fetch_ping, ping_client, target_from_ping

log = logging.getLogger(__name__)

REFRESH_SECONDS = 10.0  # while the cluster's proxies change, or cannot be asked
SETTLED_SECONDS = 55.0  # the longest wait once the set has stayed the same (jitter: +20%)
# The pings' connection is kept this long between asks: past the longest wait (66 s),
# and short of the proxy's 75 s (limen.proxy.https), so that it never closes under a ping.
PING_KEEPALIVE = 70.0

MakeAgent = Callable[[TunnelTarget], TunnelAgent]


class PeerTunnels:
    def __init__(self, main: ProxyLocator, make_agent: MakeAgent | None,
                 refresh_seconds: float = REFRESH_SECONDS, heard_seconds: float = 0.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.main = main  # the main agent's: its last answer names the main proxy's key
        self.proxy = main.proxy
        self.tls_ca_pem = main.tls_ca_pem
        self._make_agent = make_agent
        self.refresh_seconds = refresh_seconds
        self.agents: dict[str, TunnelAgent] = {}  # by the peer's tunnel host key
        self.targets: dict[str, TunnelTarget] = {}
        self._web_addrs: list[str] = []  # where else to ask while the main proxy is away
        self._listing: tuple[tuple[str, str], ...] | None = None  # the last set learned
        self._task: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None
        self.heard_seconds = heard_seconds  # 0: heartbeats' answers are not used
        self._monotonic = monotonic
        self._heard: tuple[float, dict[str, Any]] | None = None  # (when, the answer)
        self._wake = asyncio.Event()  # a heard answer lists proxies other than the last

    @property
    def web_addrs(self) -> list[str]:
        """Every proxy's web address, as the cluster last listed them."""
        return list(self._web_addrs)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        agents, self.agents = list(self.agents.values()), {}
        await asyncio.gather(*(agent.stop() for agent in agents))

    async def _run(self) -> None:
        wait = self.refresh_seconds
        while True:
            before, settled = self._listing, False
            try:
                await self.update()
                settled = before is not None and self._listing == before
            except LimenError as exc:
                log.warning("could not learn the cluster's proxies: %s", exc.message)
            except Exception:  # never let it die: the node would lose its other proxies
                log.exception("learning the cluster's proxies failed; retrying")
            wait = min(wait * 2, SETTLED_SECONDS) if settled else self.refresh_seconds
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait * random.uniform(0.8, 1.2)):  # spread out
                    await self._wake.wait()
            self._wake.clear()

    def hear(self, answer: dict[str, Any]) -> None:
        """A heartbeat's answer: its listing of the proxies stands in for an ask, and a
        change in it is followed at once."""
        peers = answer.get("tunnel_peers")
        if not isinstance(peers, list):
            return
        self._heard = (self._monotonic(), answer)
        if _listing(peers) != self._listing:
            self._wake.set()

    async def update(self) -> None:
        """Follow the cluster's proxies: from a recent heartbeat's answer, else by asking."""
        heard = self._heard
        if heard is not None and self._monotonic() - heard[0] <= self.heard_seconds:
            await self._follow(heard[1])
        else:
            await self.refresh()

    async def refresh(self) -> None:
        await self._follow(await self._ping())

    async def _follow(self, ping: dict[str, Any]) -> None:
        peers = ping.get("tunnel_peers")
        if not isinstance(peers, list):
            return  # a proxy of a version without peers: the main tunnel is all there is
        self._listing = _listing(peers)
        wanted = self._targets(peers, self._main_key(ping))
        if self._make_agent is None:
            return  # a node the proxies dial: only their addresses matter
        for key in set(self.agents) - set(wanted):
            log.info("proxy %s left the cluster; closing its tunnel", self.targets.pop(key))
            await self.agents.pop(key).stop()
        for key, target in wanted.items():
            if key not in self.agents:
                log.info("keeping a tunnel to the cluster's proxy at %s too", target)
                agent = self._make_agent(target)
                agent.start()
                self.agents[key], self.targets[key] = agent, target

    def _main_key(self, ping: dict[str, Any]) -> str:
        """The host key of the main agent's proxy: its tunnel is the main one's job."""
        last = self.main.last
        if last is not None and last.host_key is not None:
            return str(last.host_key.export_public_key("openssh").decode().strip())
        return str(ping.get("tunnel_host_key") or "")

    def _targets(self, peers: list[Any], main_key: str) -> dict[str, TunnelTarget]:
        wanted: dict[str, TunnelTarget] = {}
        addrs: list[str] = []
        for peer in peers:
            if not isinstance(peer, dict):
                continue
            key = str(peer.get("tunnel_host_key") or "")
            web = str(peer.get("web_addr") or "")
            if web:
                addrs.append(web)
            if not key or _same_key(key, main_key):
                continue
            try:
                wanted[_key_id(key)] = target_from_ping(peer, web or self.proxy, self.tls_ca_pem)
            except (LimenError, BadParameter, ValueError) as exc:
                log.warning("ignoring a proxy the cluster listed: %s", exc)
        self._web_addrs = addrs
        return wanted

    async def _ping(self) -> dict[str, Any]:
        error: LimenError | None = None
        if self._http is None:
            self._http = ping_client(self.tls_ca_pem, PING_KEEPALIVE)
        for addr in dict.fromkeys([self.proxy, *self._web_addrs]):
            try:
                return await fetch_ping(addr, self.tls_ca_pem, self._http)
            except LimenError as exc:
                error = error or exc
        assert error is not None
        raise error


def _listing(peers: list[Any]) -> tuple[tuple[str, str], ...]:
    """What identifies a set of proxies: their tunnel host keys and web addresses."""
    return tuple(sorted((str(p.get("tunnel_host_key")), str(p.get("web_addr")))
                        for p in peers if isinstance(p, dict)))


def _key_id(key_line: str) -> str:
    """ALG BASE64 without the comment."""
    return " ".join(key_line.split()[:2])


def _same_key(a: str, b: str) -> bool:
    return bool(b) and _key_id(a) == _key_id(b)

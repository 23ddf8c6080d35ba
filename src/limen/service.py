"""Start the configured roles in one asyncio process, and shut them down gracefully."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asyncssh import SSHKey
from cryptography.hazmat.primitives import serialization

import limen
from limen.audit.setup import AuditRuntime, open_audit
from limen.auth.ca import CAStore, issue_tls_server_cert
from limen.auth.ca_shared import load_or_create_shared
from limen.auth.context import AuthContext, AuthSettings, Stores
from limen.auth.instances import InstanceHeartbeat, instance_id
from limen.auth.node_watch import NodeWatch
from limen.auth.server import AuthServer
from limen.backend import open_backend
from limen.backend.base import Backend, Item
from limen.clock import Clock, RealClock
from limen.config import Config, JoinOptions, split_host_port
from limen.diag import metrics
from limen.diag.server import DiagServer
from limen.diag.timed_backend import TimedBackend
from limen.durations import parse_duration
from limen.errors import AlreadyExists, BadParameter, NotFound
from limen.files import write_private
from limen.netpolicy import parse_networks
from limen.node.cluster.role import NodeRole
from limen.proxy.https import HTTPSServer, bind
from limen.proxy.listener import (
    ALPN_HTTP,
    ALPN_SSH,
    ALPN_TUNNEL,
    ListenerLimits,
    MultiplexListener,
    Routes,
    server_tls_context,
)
from limen.proxy.node_verify import AddressGuard, NodeVerifier
from limen.proxy.ratelimit import RateLimiter
from limen.proxy.routing import BackendRouter
from limen.proxy.ssh_jump import JumpHost
from limen.proxy.ssh_role import proxy_host_identity, start_jump_host
from limen.proxy.web import WebState, create_app
from limen.resources import Instance, InstanceSpec
from limen.runtime import eventloop, heap
from limen.runtime.banner import banner
from limen.runtime.lock import DataDirLock
from limen.runtime.ports import binding
from limen.runtime.readiness import readiness_checks
from limen.runtime.reload import reload
from limen.runtime.request_ids import RequestIds
from limen.sshauth import TrustedKeys
from limen.tls_direct import ALPN_NODE
from limen.tunnel.proxy_role import start_tunnel_server
from limen.tunnel.server import TunnelServer

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
SHUTDOWN_SECONDS = 15
CLUSTER_KEY = "/cluster/name"


def local_address(host: str, port: int) -> str:
    """An address this machine can dial for a listener bound to `host`."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class Service:
    config: Config
    clock: Clock = field(default_factory=RealClock)
    backend: Backend | None = None
    auth: AuthServer | None = None
    web_addr: str = ""
    ssh_addr: str = ""
    join_options: JoinOptions = field(default_factory=JoinOptions)
    node: NodeRole | None = None
    jump: JumpHost | None = None
    tunnel_addr: str = ""
    tunnels: TunnelServer | None = None
    router: BackendRouter | None = None
    node_watch: NodeWatch | None = None
    audit: AuditRuntime | None = None
    _https: HTTPSServer | None = None
    _mux: MultiplexListener | None = None
    _tls_files: tuple[Path, Path] = (Path(), Path())
    _web_state: WebState | None = None
    diag_addr: str = ""
    _diag: DiagServer | None = None
    _lock: DataDirLock | None = None
    heartbeat: InstanceHeartbeat | None = None
    # node id -> the other proxies holding its tunnel (from the instances' heartbeats)
    _peer_tunnels: dict[str, set[str]] = field(default_factory=dict)
    _wrote_run_file: bool = False

    @property
    def data_dir(self) -> Path:
        return Path(self.config.data_dir)

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.data_dir, 0o700)
        # Before anything else: a second instance on this data dir must touch nothing.
        self._lock = DataDirLock(self.data_dir)
        self._lock.acquire()
        try:
            await self._start_roles()
        except BaseException:
            await self.stop()
            raise

    async def _watch_nodes(self, auth: AuthServer) -> None:
        """Registrations and node locks in memory, for the proxy's routing and revocations
        and for the nodes' open streams (limen.auth.node_watch)."""
        self.node_watch = NodeWatch(auth.ctx.stores, self.clock)
        await self.node_watch.start()
        auth.nodes.view = self.node_watch

    async def _start_proxy(self, auth: AuthServer) -> None:
        """Tunnel server and jump host, both told at once when a node is removed or locked."""
        proxy = self.config.proxy
        identity = proxy_host_identity(proxy, self.data_dir, auth)
        assert self.node_watch is not None  # started with the auth service
        with binding("the proxy's tunnel port", proxy.tunnel_listen_addr or ""):
            self.tunnels = await start_tunnel_server(
                proxy, auth, self.clock, identity, self.node_watch.revoked,
                proxies=self._cluster_proxies,
            )
        metrics.count_tunnels(self.tunnels.directory.__len__)
        self.node_watch.subscribe(self.tunnels.revoke)
        verifier = NodeVerifier(TrustedKeys([auth.ctx.cas.host_ca.convert_to_public()]),
                                auth.cluster_name, self.clock)
        self.node_watch.subscribe(verifier.forget)
        guard = AddressGuard(auth.ctx.settings.node_networks)
        self.router = BackendRouter(auth, self.tunnels.directory, verifier, guard,
                                    known=self.node_watch)
        with binding("the proxy's SSH port", proxy.ssh_listen_addr or ""):
            self.jump = await start_jump_host(proxy, self.data_dir, auth, self.clock,
                                              self.router, identity)
        self.node_watch.subscribe(self._end_channels_to_node)
        self.ssh_addr = self._dedicated_addr(self.config.proxy.ssh_listen_addr, self.jump)
        self._publish_ssh_addr()
        self._publish_tunnel(identity[0])
        self._guard_own_listeners(guard)

    def _end_channels_to_node(self, node_id: str, _why: str) -> None:
        """A node removed or locked: the jump channels to it end too (direct ones as well
        as those through its tunnel, which the tunnel server closes)."""
        if self.jump is not None:
            self.jump.end_channels(lambda _ident, route: route.node_id == node_id)

    def _guard_own_listeners(self, guard: AddressGuard) -> None:
        """The proxy never dials itself, whatever a node claims or the config allows."""
        proxy = self.config.proxy
        guard.add_listener(split_host_port(proxy.web_listen_addr)[0], self._https.port)
        for listen, server in ((proxy.ssh_listen_addr, self.jump),
                               (proxy.tunnel_listen_addr, self.tunnels)):
            if listen is not None and server is not None:
                guard.add_listener(split_host_port(listen)[0], server.port)

    def _trust_local_node(self, node: NodeRole) -> None:
        """The node in this process is reached where its SSH service really listens."""
        if self.router is None or node.server is None or node.identity is None:
            return
        host = split_host_port(self.config.ssh.listen_addr)[0]
        addr = local_address(host, node.server.port)
        self.router.trust_local(node.identity.node_id, *split_host_port(addr))

    async def _start_roles(self) -> None:
        self.backend = await self._open_backend()
        cluster = await self._cluster_name(self.backend)
        if "auth" in self.config.roles():
            self.auth = await self._start_auth(self.backend, cluster)
        if self.auth is not None:
            await self._watch_nodes(self.auth)
            with binding("the HTTPS API", self._web_listen_text()):
                self._prepare_web()
        if self.auth is not None and "proxy" in self.config.roles():
            await self._start_proxy(self.auth)
        if self.auth is not None:
            await self._serve_web()
        if "node" in self.config.roles():
            self.node = NodeRole(
                self.config.ssh, self.data_dir, self.clock, self.auth, self.join_options
            )
            with binding("the node's SSH service", self.config.ssh.listen_addr):
                await self.node.start()
            self._trust_local_node(self.node)
        if self.config.diag_addr:
            await self._start_diag(self.config.diag_addr)
        if self.auth is not None:
            await self._start_heartbeat(self.auth)
        self._write_run_file()

    async def _start_heartbeat(self, auth: AuthServer) -> None:
        """Record this instance in the shared storage, now and every heartbeat."""
        interval = parse_duration(self.config.auth.heartbeat_interval).total_seconds()
        ident = await asyncio.to_thread(instance_id, self.data_dir)
        self.heartbeat = InstanceHeartbeat(auth.ctx.stores.instances, self.clock, ident,
                                           interval, self._describe_instance)
        if self.tunnels is not None:
            self.tunnels.directory.on_change.append(self.heartbeat.soon)
        if self._web_state is not None:
            self.heartbeat.on_live.append(self._publish_peers)
            self._web_state.proxies_of = self._proxies_of
        await self.heartbeat.start()

    def _publish_peers(self, live: list[Instance]) -> None:
        """Tell node agents (ping) every live proxy's tunnel server, so that each node
        keeps a tunnel to all of them."""
        assert self._web_state is not None
        # Which other proxies hold each node's tunnel, as of their last heartbeat: looked
        # up per node when nodes are listed, so built once here.
        peers: dict[str, set[str]] = {}
        for instance in live:
            if instance.name != (self.heartbeat.id if self.heartbeat else ""):
                for node_id in instance.spec.tunnels:
                    peers.setdefault(node_id, set()).add(instance.spec.web_addr)
        self._peer_tunnels = peers
        self._web_state.tunnel_peers = [
            {"id": i.name, "web_addr": i.spec.web_addr, "tunnel_addr": i.spec.tunnel_addr,
             "tunnel_host_key": i.spec.tunnel_host_key, "tunnel_tls": i.spec.tunnel_tls}
            for i in live if "proxy" in i.spec.roles and i.spec.tunnel_addr
        ]

    def _cluster_proxies(self) -> dict[str, Any]:
        """The cluster's proxies, as /v1/ping and every heartbeat's answer list them."""
        state = self._web_state
        return {"tunnel_host_key": state.tunnel_host_key if state else "",
                "tunnel_peers": state.tunnel_peers if state else []}

    def _proxies_of(self, node_id: str) -> list[str]:
        """The proxies holding a node's tunnel: this one as of now, the others as of their
        last heartbeat."""
        here = self.tunnels is not None and self.tunnels.directory.get(node_id) is not None
        others = self._peer_tunnels.get(node_id, set())
        return sorted(others | ({self._my_web_addr()} if here else set()))

    def _my_web_addr(self) -> str:
        public = self.config.proxy.public_addr
        if public and self._https is not None:
            return local_address(split_host_port(public, 0)[0], self._https.port)
        return self.web_addr

    def _describe_instance(self) -> InstanceSpec:
        state = self._web_state
        return InstanceSpec(
            hostname=socket.gethostname(), roles=self.config.roles(), version=limen.__version__,
            web_addr=self._my_web_addr(), ssh_addr=state.ssh_proxy_addr if state else "",
            tunnel_addr=state.tunnel_addr if state else "",
            tunnel_host_key=state.tunnel_host_key if state else "",
            tunnel_tls=state.tunnel_tls if state else False,
            tunnels=self.tunnels.directory.node_ids() if self.tunnels is not None else [],
        )

    async def _start_diag(self, addr: str) -> None:
        """Metrics and health checks (off unless diag_addr is set)."""
        host, port = split_host_port(addr)
        with binding("diagnostics (metrics and health checks)", addr):
            sock = bind(host, port)
        self._diag = DiagServer(sock, readiness_checks(self))
        await self._diag.start()
        self.diag_addr = local_address(host, self._diag.port)
        log.info("diagnostics on http://%s (/metrics, /healthz, /readyz)", self.diag_addr)

    def listeners(self) -> dict[str, bool]:
        """Each port this instance opened, and whether it is still served (for /readyz)."""
        up: dict[str, bool] = {}
        if self.auth is not None:
            up["web"] = self._https is not None and self._https.socket.fileno() != -1
        if self.auth is not None and "proxy" in self.config.roles():
            up["ssh jump host"] = self.jump is not None
            up["tunnel server"] = self.tunnels is not None
        if self.node is not None and self.node.listening:
            up["node ssh"] = self.node.server is not None
        return up

    def _web_listen_text(self) -> str:
        if "proxy" in self.config.roles():
            return self.config.proxy.web_listen_addr
        return self.config.auth.listen_addr

    async def _open_backend(self) -> Backend:
        storage = self.config.storage
        path = storage.path or str(self.data_dir / "backend.sqlite")
        backend = await open_backend(
            storage.type, path=path, dsn=storage.dsn, schema=storage.schema_name, clock=self.clock
        )
        return TimedBackend(backend)  # type: ignore[return-value]  # a Backend, measured

    async def _cluster_name(self, backend: Backend) -> str:
        wanted = self.config.cluster_name
        try:
            stored = (await backend.get(CLUSTER_KEY)).value.decode()
        except NotFound:
            try:
                await backend.create(Item(key=CLUSTER_KEY, value=wanted.encode()))
                return wanted
            except AlreadyExists:  # another instance starting on the same database won
                stored = (await backend.get(CLUSTER_KEY)).value.decode()
        if "cluster_name" in self.config.model_fields_set and stored != wanted:
            raise BadParameter(
                f"the data in {self.data_dir} belongs to cluster {stored!r}, "
                f"but the config names {wanted!r}; use a new data_dir for a new cluster"
            )
        return stored

    async def _start_auth(self, backend: Backend, cluster: str) -> AuthServer:
        auth_cfg = self.config.auth
        if self.config.storage.type == "postgres":  # shared by every instance on it
            cas = await load_or_create_shared(backend, self.data_dir, cluster, self.clock.now())
        else:
            cas = await asyncio.to_thread(
                CAStore.load_or_create, self.data_dir, cluster, self.clock.now()
            )
        settings = AuthSettings(
            cluster_name=cluster,
            cert_ttl=parse_duration(auth_cfg.cert_ttl),
            max_cert_ttl=parse_duration(auth_cfg.max_cert_ttl),
            signup_token_ttl=parse_duration(auth_cfg.signup_token_ttl),
            reset_token_ttl=parse_duration(auth_cfg.reset_token_ttl),
            lockout_attempts=auth_cfg.lockout_attempts,
            lockout_duration=parse_duration(auth_cfg.lockout_duration),
            reserved_host_names=self._proxy_host_names(),
            node_credential_ttl=parse_duration(auth_cfg.node_credential_ttl),
            node_networks=parse_networks(self.config.proxy.node_networks),
        )
        self.audit = await open_audit(self.config, self.data_dir, cluster, self.clock,
                                      cas.host_ca)
        ctx = AuthContext(settings, Stores(backend), cas, self.clock, self.audit.log,
                          self.audit.store)
        server = AuthServer(ctx)
        await server.bootstrap(self.data_dir)
        return server

    def _proxy_host_names(self) -> frozenset[str]:
        """The proxy's configured host names and addresses (joining nodes may not claim them)."""
        proxy = self.config.proxy
        addrs = [proxy.public_addr, proxy.web_listen_addr, proxy.ssh_listen_addr,
                 proxy.tunnel_listen_addr]
        hosts = {split_host_port(a, 0)[0].lower() for a in addrs if a}
        return frozenset(hosts - {"", "0.0.0.0", "::"})

    def _web_listen(self) -> tuple[str, int]:
        return split_host_port(self._web_listen_text())

    def _prepare_web(self) -> None:
        """Bind the web port (so its address is known) and build the app; serve later."""
        assert self.auth is not None
        host, port = self._web_listen()
        sock = bind(host, port)
        self._tls_files = self._write_tls_files(host)
        limits = self.config.proxy.rate_limit
        state = WebState(self.auth, RateLimiter(limits.average_per_minute, limits.burst))
        self._web_state = state
        app = RequestIds(create_app(state))  # every log line of a request carries its id
        self._https = HTTPSServer(app, sock, *self._tls_files,  # type: ignore[arg-type]
                                  trusted_proxies=self.config.proxy.trusted_proxies)
        self.web_addr = local_address(host, self._https.port)

    def _multiplexed(self) -> bool:
        return "proxy" in self.config.roles() and self.config.proxy.listener_mode == "multiplex"

    async def _serve_web(self) -> None:
        assert self._https is not None
        if not self._multiplexed():
            await self._https.start()
            log.info("HTTPS API listening on %s", self.web_addr)
            return
        limits = self.config.proxy.listener
        routes = Routes(
            http=self._https.protocol_factory(),
            ssh=self.jump.protocol_factory() if self.jump else None,
            node=self.jump.direct_factory() if self.jump else None,
            tunnel=self.tunnels.protocol_factory() if self.tunnels else None,
            data=self.tunnels.gate.admit if self.tunnels else None,
        )
        tls = server_tls_context(*(str(p) for p in self._tls_files),
                                 [ALPN_HTTP, ALPN_SSH, ALPN_NODE, ALPN_TUNNEL])
        self._mux = MultiplexListener(
            self._https.socket, tls, routes,
            ListenerLimits(
                handshake_timeout=parse_duration(limits.handshake_timeout).total_seconds(),
                max_connections_per_ip=limits.max_connections_per_ip,
                max_handshakes_per_ip=limits.max_handshakes_per_ip,
                max_handshakes=limits.max_handshakes,
            ),
        )
        await self._mux.start()
        log.info("web port %s serves HTTPS, SSH and tunnels", self.web_addr)

    def _dedicated_addr(self, listen: str | None, server: JumpHost | TunnelServer) -> str:
        """Where a role's own port listens; the web address when it has none."""
        if listen is None:
            return self.web_addr
        return local_address(split_host_port(listen)[0], server.port)

    def _publish_ssh_addr(self) -> None:
        """Tell clients (ping, login) where the jump host is: the public host when one is
        configured, with the jump host's port."""
        if self._web_state is None or self.jump is None:
            return
        self._web_state.jump = self.jump  # browser terminals reach nodes through it
        public = self.config.proxy.public_addr
        host = split_host_port(public, 0)[0] if public else ""
        # Multiplexed: clients need nothing but the web address, plain SSH works on it.
        if self._multiplexed() or not self.config.proxy.ssh_listen_addr:
            port, local = self._https.port, self.web_addr
        else:
            port, local = self.jump.port, self.ssh_addr
        self._web_state.ssh_proxy_addr = local_address(host, port) if host else local

    def _publish_tunnel(self, host_key: SSHKey) -> None:
        """Tell node agents (ping) where the tunnel server is and which host key it has."""
        if self.tunnels is None:
            return
        self.tunnel_addr = self._dedicated_addr(self.config.proxy.tunnel_listen_addr,
                                                self.tunnels)
        public = self.config.proxy.public_addr
        public_host = split_host_port(public, 0)[0] if public else ""
        if self._web_state is not None:
            state = self._web_state
            # Multiplexed: agents use the web port too, SSH inside TLS (ALPN limen-tunnel).
            state.tunnel_tls = self._multiplexed() or not self.config.proxy.tunnel_listen_addr
            local, port = (
                (self.web_addr, self._https.port) if state.tunnel_tls
                else (self.tunnel_addr, self.tunnels.port)
            )
            state.tunnel_addr = local_address(public_host, port) if public_host else local
            state.tunnel_host_key = host_key.export_public_key("openssh").decode().strip()
            state.tunnels = self.tunnels.directory

    def _write_run_file(self) -> None:
        """Where this process listens, for admin commands on the same host."""
        if self.web_addr:
            data = {"web_addr": self.web_addr, "ssh_addr": self.ssh_addr,
                    "tunnel_addr": self.tunnel_addr}
            write_private(self.data_dir / RUN_FILE, json.dumps(data).encode())
            self._wrote_run_file = True

    def _write_tls_files(self, listen_host: str) -> tuple[Path, Path]:
        assert self.auth is not None
        cas = self.auth.ctx.cas
        names = {"localhost", socket.gethostname(), self.auth.cluster_name}
        ips = {"127.0.0.1", "::1"}
        for addr in filter(None, [listen_host, self.config.proxy.public_addr]):
            host = split_host_port(addr, 0)[0]
            try:
                ips.add(str(ipaddress.ip_address(host)))
            except ValueError:
                names.add(host)
        ips.discard("0.0.0.0")
        ips.discard("::")
        key, cert = issue_tls_server_cert(
            cas.tls_ca_key,
            cas.tls_ca_cert,
            names=sorted(names),
            ips=sorted(ips),
            now=self.clock.now(),
        )
        tls_dir = self.data_dir / "tls"
        tls_dir.mkdir(exist_ok=True, mode=0o700)
        certfile, keyfile = tls_dir / "server.crt", tls_dir / "server.key"
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_private(keyfile, key_pem)
        write_private(certfile, cert.public_bytes(serialization.Encoding.PEM))
        return certfile, keyfile

    async def stop(self) -> None:
        if self.heartbeat is not None:
            await self.heartbeat.stop()
            self.heartbeat = None
        if self._diag is not None:
            await self._diag.stop()
            self._diag = None
        if self.node is not None:
            await self.node.stop()
            self.node = None
        if self.jump is not None:
            await self.jump.stop()
            self.jump = None
        if self.tunnels is not None:
            await self.tunnels.stop()
            self.tunnels = None
        if self.node_watch is not None:
            if self.auth is not None:
                self.auth.nodes.view = None  # stale from now on: ask the storage
            await self.node_watch.stop()
            self.node_watch = None
        if self._mux is not None:
            await self._mux.stop()
            self._mux = None
            if self._https is not None:
                await self._https.close_connections()
        if self._https is not None:
            await self._https.stop()
            self._https = None
        if self._wrote_run_file:  # only ours: never a running instance's
            (self.data_dir / RUN_FILE).unlink(missing_ok=True)
            self._wrote_run_file = False
        if self.auth is not None:  # presence refreshes still gathering: written now
            await self.auth.nodes.presence_writes.flush()
        if self.audit is not None:  # last: everything above may still write events
            await self.audit.close()
            self.audit = None
        if self.backend is not None:
            await self.backend.close()
            self.backend = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def next_steps(service: Service) -> str:
    return banner(service)


async def run_until_signalled(service: Service, ready_message: bool = True,
                              load_config: Callable[[], Config] | None = None) -> None:
    """`limen start`: run until SIGINT or SIGTERM, then shut down cleanly; on SIGHUP,
    reload what is safe from ``load_config`` (see limen.runtime.reload)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def on_hangup() -> None:
        if load_config is None:
            log.warning("SIGHUP: no configuration to reload; restart limen start to change it")
            return
        service.config = reload(service.config, load_config)

    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    if signal.getsignal(signal.SIGQUIT) == signal.SIG_IGN:
        # Started in the background by a shell without job control: SIGQUIT stays
        # ignored here, but caught it is not handed down, and a node's sessions start
        # with it at its default without env resetting it (node/process/env_free.py).
        loop.add_signal_handler(signal.SIGQUIT, lambda: None)
    log.info("event loop: %s", eventloop.running())
    await service.start()
    if ready_message:
        print(next_steps(service), flush=True)
    heap.freeze_start_up()  # after the banner: the collection takes a moment
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        async with asyncio.timeout(SHUTDOWN_SECONDS):
            await service.stop()

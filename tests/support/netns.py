"""A network namespace that can reach one address on this host, and that nobody can
connect into: the NAT of a node behind a firewall, without iptables.

    host (root namespace)                      namespace NS
    HOST_ADDR/32 on veth hv* <-------------> veth nv*, NODE_ADDR/32
                                               route: HOST_ADDR only

How "no way in" is made with routing alone:

- The namespace's only route is to HOST_ADDR: the node can dial the proxy there and
  nothing else (no default route, so no traffic leaves for anywhere else).
- On the host, NODE_ADDR is an *unreachable* route in the main table, so anything on
  the host that dials into the namespace fails at once (EHOSTUNREACH).
- Replies still get back: a policy rule sends traffic *from* HOST_ADDR through a table
  of its own that routes NODE_ADDR over the veth. Only sockets bound to HOST_ADDR (the
  proxy's listeners, answering connections the node opened) use it; an unbound socket
  dialing NODE_ADDR picks its route from the main table and is refused.

``silent=True`` builds the opposite, a host that drops connection attempts without a
word: the host routes NODE_ADDR over the veth, but the namespace has no route back, so
a SYN arrives and neither a SYN-ACK nor a RST ever returns (a firewall that drops).

Addresses come from the benchmarking range 198.18.0.0/15; names, addresses, the table
and the rule priority are random per namespace, so runs in parallel do not collide.
Creation fails loudly (the NAT test must fail, not skip, where it cannot run), and
``remove`` undoes every step that was done, even after a partial set-up.
"""

from __future__ import annotations

import contextlib
import ipaddress
import random
import subprocess
import uuid
from dataclasses import dataclass, field

RANGE = ipaddress.ip_network("198.18.0.0/15")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def _addresses_in_use() -> set[str]:
    out = ip("-4", "-o", "addr", "show").stdout
    used = {line.split()[3].split("/")[0] for line in out.splitlines() if len(line.split()) > 3}
    routes = ip("-4", "route", "show", "table", "all").stdout
    used |= {word.split("/")[0] for line in routes.splitlines() for word in line.split()[:2]}
    return used


@dataclass
class NatNamespace:
    name: str
    host_veth: str
    node_veth: str
    host_addr: str
    node_addr: str
    table: int
    priority: int
    silent: bool = False
    _undo: list[list[str]] = field(default_factory=list)

    @classmethod
    def create(cls, silent: bool = False) -> NatNamespace:
        tag = uuid.uuid4().hex[:6]
        rng = random.Random()
        used = _addresses_in_use()
        while True:  # a /30 block: .1 the host's end, .2 the node's
            base = int(RANGE.network_address) + 4 * rng.randrange(RANGE.num_addresses // 4)
            host, node = str(ipaddress.ip_address(base + 1)), str(ipaddress.ip_address(base + 2))
            if host not in used and node not in used:
                break
        ns = cls(f"limen-nat-{tag}", f"lh{tag}", f"ln{tag}", host, node,
                 table=rng.randrange(20000, 60000), priority=rng.randrange(20000, 30000),
                 silent=silent)
        try:
            ns._setup()
        except BaseException:
            ns.remove()
            raise
        return ns

    def _do(self, args: list[str], undo: list[str] | None = None) -> None:
        ip(*args)
        if undo is not None:
            self._undo.append(undo)

    def _setup(self) -> None:
        self._do(["netns", "add", self.name], ["netns", "delete", self.name])
        self._do(["link", "add", self.host_veth, "type", "veth", "peer", "name", self.node_veth,
                  "netns", self.name], ["link", "delete", self.host_veth])
        self._do(["addr", "add", f"{self.host_addr}/32", "dev", self.host_veth])
        self._do(["link", "set", self.host_veth, "up"])
        inside = ["-n", self.name]
        self._do([*inside, "link", "set", "lo", "up"])
        self._do([*inside, "addr", "add", f"{self.node_addr}/32", "dev", self.node_veth])
        self._do([*inside, "link", "set", self.node_veth, "up"])
        if self.silent:  # in, but never back out
            self._do(["route", "add", f"{self.node_addr}/32", "dev", self.host_veth],
                     ["route", "delete", f"{self.node_addr}/32", "dev", self.host_veth])
            return
        self._do([*inside, "route", "add", f"{self.host_addr}/32", "dev", self.node_veth])
        self._do(["route", "add", "unreachable", f"{self.node_addr}/32"],
                 ["route", "delete", "unreachable", f"{self.node_addr}/32"])
        self._do(["route", "add", f"{self.node_addr}/32", "dev", self.host_veth,
                  "table", str(self.table)],
                 ["route", "delete", f"{self.node_addr}/32", "table", str(self.table)])
        self._do(["rule", "add", "from", f"{self.host_addr}/32", "lookup", str(self.table),
                  "priority", str(self.priority)],
                 ["rule", "delete", "priority", str(self.priority)])

    def exec_argv(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def remove(self) -> None:
        """Undo every step done, newest first; go on past failures."""
        errors = []
        while self._undo:
            step = self._undo.pop()
            result = ip(*step, check=False)
            if result.returncode != 0 and "No such" not in result.stderr \
                    and "Cannot find" not in result.stderr:
                errors.append(f"ip {' '.join(step)}: {result.stderr.strip()}")
        with contextlib.suppress(Exception):
            if self.name in ip("netns", "list").stdout:
                errors.append(f"namespace {self.name} is still there")
        if errors:
            raise RuntimeError("cleaning up the namespace failed: " + "; ".join(errors))

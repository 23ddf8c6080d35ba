"""What `limen start` prints once it runs: what is true for the roles it runs.

A node-only instance has no HTTPS API and no admin identity in its data dir, so it says
which cluster it joined and where it serves SSH, not how to add users.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from limen.config import split_host_port

if TYPE_CHECKING:
    from limen.service import Service


def banner(service: Service) -> str:
    lines = _cluster_lines(service) + _node_lines(service)
    if service.diag_addr:
        lines.append(f"  Diagnostics: http://{service.diag_addr}/metrics, /healthz, /readyz")
    return "\n".join(lines + _next_steps(service))


def _cluster_lines(service: Service) -> list[str]:
    if service.auth is None:
        return []
    roles = service.config.roles()
    lines = [f"Limen cluster {service.auth.cluster_name} is running ({', '.join(roles)})."]
    if "proxy" in roles:
        lines += [
            f"  HTTPS API: https://{service.web_addr}",
            f"  SSH proxy: {service.ssh_addr or 'off'}",
            f"  Node tunnels: {service.tunnel_addr or 'off'}",
        ]
    else:
        lines.append(f"  Auth API: https://{service.web_addr}")
    return lines


def _node_lines(service: Service) -> list[str]:
    node = service.node
    if node is None or node.identity is None:
        return []
    identity = node.identity
    where = []
    if node.listening and node.server is not None:
        from limen.service import local_address

        host = split_host_port(node.config.listen_addr)[0]
        where.append(f"on {local_address(host, node.server.port)}")
    if node.tunneled:
        where.append(f"through a reverse tunnel to the proxy at {identity.proxy}")
    head = [] if service.auth is not None else [
        f"Limen node {identity.name} joined cluster {identity.cluster}."
    ]
    return head + [
        f"  Node: {identity.name} ({identity.node_id}), serving SSH {' and '.join(where)}"
    ]


def _next_steps(service: Service) -> list[str]:
    if service.auth is not None:
        return [
            "Next, add the first user (in another terminal on this host):",
            "  limen users add alice --roles access,editor --logins alice,root "
            f"--data-dir {service.data_dir}",
            "and follow the signup command it prints.",
        ]
    if service.node is not None:
        return [
            "From a client logged in to the cluster, `limen ls` lists this node to users "
            "whose roles allow it.",
        ]
    return []

"""HTTPS API route for the cluster's auth/proxy instances (`limen status --cluster`)."""

from typing import Any

from fastapi import FastAPI

from limen.proxy.web_errors import SIGNED_IN, errors
from limen.resources import Instance


def instance_json(instance: Instance, up: bool) -> dict[str, Any]:
    spec = instance.spec
    return {
        "id": instance.name,
        "hostname": spec.hostname,
        "roles": spec.roles,
        "version": spec.version,
        "web_addr": spec.web_addr,
        "ssh_addr": spec.ssh_addr,
        "tunnel_addr": spec.tunnel_addr,
        "started": spec.started.isoformat() if spec.started else "",
        "last_heartbeat": spec.last_heartbeat.isoformat() if spec.last_heartbeat else "",
        "status": "up" if up else "down",
        "tunnels": len(spec.tunnels),
    }


def add_routes(app: FastAPI, Caller: Any) -> None:  # noqa: N803 - a type alias
    @app.get("/v1/cluster/instances", responses=errors(*SIGNED_IN))
    async def list_instances(api: Caller) -> list[dict[str, Any]]:
        instances = await api.list_instances()
        now = api.clock.now()
        return [instance_json(i, i.up(now)) for i in instances]

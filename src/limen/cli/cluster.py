"""`limen status --cluster`: the cluster's auth/proxy instances, for an admin."""

from __future__ import annotations

import argparse
from typing import Any

from limen.cli.admin import admin_client
from limen.cli.output import emit, table


def cmd_cluster_status(args: argparse.Namespace) -> int:
    with admin_client(args) as client:
        instances: list[dict[str, Any]] = client.get("/v1/cluster/instances")
    rows = [
        (i["id"], i["hostname"], ",".join(i["roles"]), i["web_addr"], i["ssh_addr"],
         i["tunnel_addr"], i["version"], i["last_heartbeat"], i["status"])
        for i in instances
    ]
    headers = ["Instance", "Host", "Roles", "Web", "SSH", "Tunnels", "Version",
               "Last heartbeat", "Status"]
    emit(instances, args.format, table(headers, rows) if rows else "No instances recorded.")
    down = [i["id"] for i in instances if i["status"] != "up"]
    return 0 if instances and not down else 1

"""Reverse tunnels: nodes behind NAT dial out to the proxy, which reaches them back.

- ``server``: the proxy's tunnel listener (3024); agents log in with their node's host
  certificate and may offer only that node. ``registry``: the live tunnels, and how
  the proxy opens a channel to a node through one. ``stream``: that channel as asyncio
  streams for the jump host's copy loop.
- ``data_link``, ``data_gate``, ``data_dialer``: a session's data connection, which the
  node dials back for a ticket the proxy sent inside the tunnel (the wire; the proxy's
  asking and admitting; the node's dialing), so the session's bytes skip the tunnel.
- ``agent``: the node side; dials, keeps the tunnel alive, reconnects with ``backoff``;
  finds the tunnel server through the proxy's ping (``discovery``).
- ``heartbeat`` and ``feed``: a node's heartbeat and access feed inside its tunnel
  (each a session channel for a subsystem of ours), both sides; ``subsystems``: how the
  proxy picks which one a channel serves.
- ``proxy_role`` / ``node_role``: the glue for `limen start`.
"""

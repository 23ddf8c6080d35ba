"""The web UI on the proxy's HTTPS port: sign in, nodes and a browser terminal, live
sessions, the audit log, recordings, and users, roles, tokens and locks.

- ``app``: the ASGI app mounted at ``/web`` (static files, error pages);
- ``context``: who is asking (a web session, through the facade) and how pages render;
- ``security``: response headers (CSP and friends), same-origin and CSRF checks;
- ``pages_*``: one module per group of pages; ``pages_terminal`` holds the WebSocket;
- ``node_dial`` and ``terminals``: the proxy as an SSH client of a node, and the bridge
  between a WebSocket and that SSH session.

Web sessions themselves (the cookie's server-side record, its certificate and sealed
key) are the auth service's: limen.auth.web_sessions.
"""

from limen.proxy.webui.app import create_webui
from limen.proxy.webui.context import WebUIState
from limen.proxy.webui.security import SecurityHeaders

__all__ = ["SecurityHeaders", "WebUIState", "create_webui"]

"""The client library: profile on disk, trust in the proxy, API calls, SSH dialing."""

from limen.client import liboqs_probe

# Before any client module imports asyncssh: see liboqs_probe.
liboqs_probe.install_before_asyncssh()

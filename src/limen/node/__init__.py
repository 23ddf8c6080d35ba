"""The node role's SSH service: certificate login, sessions, file copy and forwards.

Public API: ``NodeServer``, ``NodeSettings``, the ``NodePolicy``/``NodeObserver``
protocols with ``SessionPermit``, ``CertPolicy``, ``NullObserver``, ``UserIdentity``,
``SessionContext`` and the timers (``LoopTimers``, ``ManualTimers``).
"""

from limen.node.ssh.identity import UserIdentity
from limen.node.ssh.policy import CertPolicy, NodeObserver, NodePolicy, NullObserver, SessionPermit
from limen.node.ssh.server import NodeServer
from limen.node.ssh.session import SessionContext
from limen.node.ssh.settings import NodeSettings
from limen.timers import LoopTimers, ManualTimers, Timers

__all__ = [
    "CertPolicy",
    "LoopTimers",
    "ManualTimers",
    "NodeObserver",
    "NodePolicy",
    "NodeServer",
    "NodeSettings",
    "NullObserver",
    "SessionContext",
    "SessionPermit",
    "Timers",
    "UserIdentity",
]

"""The node's policy and observer when it belongs to a cluster.

At every new session and channel the node asks the auth service for the user's current
roles, so a role change applies to the next session without a new login. The
certificate still bounds what is possible: roles can narrow it, never widen it.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from limen.auth.access_cache import AccessCache
from limen.clock import Clock
from limen.errors import AccessDenied, ConnectionProblem, NotFound
from limen.node.audit.reporter import NodeAudit
from limen.node.cluster.link import ClusterLink
from limen.node.ssh.identity import UserIdentity
from limen.node.ssh.policy import (
    ACTIONS,
    CertPolicy,
    SessionPermit,
    destination_allowed,
    destination_of,
    destinations_of,
)
from limen.rbac import AccessChecker
from limen.rbac.joining import check_join, moderation
from limen.resources import Session
from limen.resources.session_policy import RequireSessionJoin

log = logging.getLogger(__name__)


class ClusterPolicy:
    def __init__(
        self, cache: AccessCache, node_id: str, node_name: str, labels: dict[str, str], clock: Clock
    ) -> None:
        self.cache = cache
        self.node_names = (node_id, node_name)
        self.node_name = node_name
        self.labels = labels
        self._cert_policy = CertPolicy(clock=clock, disconnect_expired_cert=False)

    async def authorize(
        self, identity: UserIdentity, login: str, action: str, detail: dict[str, Any]
    ) -> SessionPermit:
        if action not in ACTIONS:
            raise AccessDenied(f"unknown action {action!r}")
        base = await self._cert_policy.authorize(identity, login, "session", {})
        try:
            checker = await self.cache.checker_for(identity.user)
        except NotFound:
            raise AccessDenied(f"user {identity.user} no longer exists") from None
        except ConnectionProblem as exc:
            raise AccessDenied(exc.message) from None
        lock = self.cache.lock_for(identity.user, login, self.node_names)
        if lock is not None:
            raise AccessDenied(lock.refusal())
        checker.check_node_login(self.node_name, self.labels, login)
        permit = self._permit(base, checker, identity)
        self._check_action(permit, action, detail)
        return permit

    async def check_join(self, joiner: UserIdentity, owner: str, mode: str) -> list[str]:
        """Both users' current roles, from the cache: the joiner's certificate names who
        joins; nothing else they send is believed."""
        checker = await self._checker(joiner.user, f"user {joiner.user} no longer exists")
        owners = await self._checker(owner, f"the session's owner {owner} no longer exists")
        check_join(checker, owner, owners.role_names, mode)
        return checker.role_names

    async def moderation(self, owner: UserIdentity) -> list[RequireSessionJoin]:
        return moderation(await self._checker(owner.user, f"user {owner.user} no longer exists"))

    async def _checker(self, user: str, missing: str) -> AccessChecker:
        try:
            return await self.cache.checker_for(user)
        except NotFound:
            raise AccessDenied(missing) from None
        except ConnectionProblem as exc:
            raise AccessDenied(exc.message) from None

    @staticmethod
    def _permit(
        base: SessionPermit, checker: AccessChecker, identity: UserIdentity
    ) -> SessionPermit:
        idle = checker.client_idle_timeout()
        return SessionPermit(
            port_forwarding=base.port_forwarding and checker.port_forwarding(),
            remote_forwarding=base.remote_forwarding and checker.remote_port_forwarding(),
            forward_agent=base.forward_agent and checker.forward_agent(),
            file_copy=checker.file_copy(),
            max_sessions=checker.max_sessions(),
            idle_timeout=idle.total_seconds() if idle else None,
            disconnect_at=identity.valid_before if checker.disconnect_expired_cert() else None,
            record=checker.record_session(),
        )

    @staticmethod
    def _check_action(permit: SessionPermit, action: str, detail: dict[str, Any]) -> None:
        if action == "port_forward":
            dest = destination_of(detail)
            if not any(destination_allowed(permit, d) for d in destinations_of(detail)):
                raise AccessDenied(
                    f"port forwarding to {dest.host}:{dest.port} is not allowed by your roles "
                    "or certificate"
                )
        if action == "remote_forward" and not permit.remote_forwarding:
            raise AccessDenied(
                "remote port forwarding (ssh -R) is not allowed by your roles or certificate"
            )
        if action == "agent_forward" and not permit.forward_agent:
            raise AccessDenied("agent forwarding is not allowed by your roles or certificate")
        if action == "subsystem" and detail.get("subsystem") == "sftp" and not permit.file_copy:
            raise AccessDenied("file copy (sftp/scp) is not allowed by your roles")


class ClusterObserver:
    """Sends audit events to the auth service and keeps session trackers current.

    With a NodeAudit (node/audit/reporter.py), events are never lost (spooled on disk while the
    auth service is away) and sessions are recorded.
    """

    def __init__(
        self, link: ClusterLink, node_id: str, node_name: str, audit: NodeAudit | None = None
    ) -> None:
        self.link = link
        self.node_id = node_id
        self.node_name = node_name
        self.audit = audit
        self._trackers: dict[str, Session] = {}  # live sessions, to update their parties

    async def on_event(self, name: str, fields: dict[str, Any]) -> None:
        fields = {**fields, "server_id": self.node_id, "server_hostname": self.node_name}
        try:
            if self.audit is not None:
                await self.audit.on_event(name, fields)
            else:
                await self.link.report_event(name, fields)
            # The auth service lists a session from its session.start and takes it off
            # at its session.end (auth/tracking.py); the node keeps its own copy, sent
            # when the session's parties or state change and with each heartbeat.
            if name == "session.start":
                self._trackers[str(fields["sid"])] = self._tracker(fields)
            elif name == "session.end" and fields.get("sid"):
                self._trackers.pop(str(fields["sid"]), None)
            elif name in ("session.join", "session.leave") and fields.get("success") is not False:
                await self._party_changed(name, fields)
        except Exception as exc:  # noqa: BLE001 - the session must not die with the reporter
            log.warning("could not report %s to the auth service: %s", name, exc)

    async def open_recording(self, session_id: str, fields: dict[str, Any]) -> str | None:
        if self.audit is None:
            return None
        fields = {**fields, "server_id": self.node_id, "server_hostname": self.node_name}
        return await self.audit.open_recording(session_id, fields)

    async def on_session_output(self, session_id: str, data: bytes, stream: str) -> None:
        if self.audit is not None:
            await self.audit.on_output(session_id, data, stream)

    def live_trackers(self) -> list[Session]:
        """The trackers of the sessions running now, as last sent (for the heartbeat)."""
        return list(self._trackers.values())

    async def on_session_state(self, session_id: str, state: str) -> None:
        tracker = self._trackers.get(session_id)
        if tracker is None or tracker.spec.state == state:
            return
        tracker.spec.state = state
        try:
            await self.link.upsert_session(tracker)
        except Exception as exc:  # noqa: BLE001 - the session must not die with the tracker
            log.warning("could not update session %s: %s", session_id, exc)

    async def _party_changed(self, name: str, fields: dict[str, Any]) -> None:
        """limen sessions ls shows who is in a session: the owner, then the joiners."""
        tracker = self._trackers.get(str(fields.get("sid")))
        if tracker is None:
            return
        who = f"{fields.get('user')} ({fields.get('mode')})"
        parties = tracker.spec.parties
        if name == "session.join":
            parties.append(who)
        elif who in parties:
            parties.remove(who)
        await self.link.upsert_session(tracker)

    def _tracker(self, fields: dict[str, Any]) -> Session:
        user = str(fields.get("user", ""))
        return Session.from_start(
            str(fields["sid"]), fields, user=user, login=str(fields.get("login", "")),
            node_id=self.node_id, node_name=self.node_name,
            started=datetime.now().astimezone())

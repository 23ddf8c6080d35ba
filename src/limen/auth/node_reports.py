"""A node's audit reports, written as the auth service knows them: stamped, or refused.

A node is not trusted with anyone else's facts. What it sends is taken as its claim and
written only after the auth service has put its own facts in place:

- where: ``server_id``, ``server_hostname`` and ``server_addr`` come from the node's
  registration, found by the identity it authenticated with, whatever it sent;
- when: ``time`` is when the auth service received the report; the node's own time (for
  an event it kept while the auth service was away) is kept as ``node_time``;
- who: ``user`` and ``login`` are facts only when backed. A session's later events carry
  those of its ``session.start``; a ``session.start``, a successful ``auth`` and other
  connection events are backed by the user certificate the node passes on (``cert``,
  checked against the cluster's user CA; its serial and fingerprint are kept, not the
  blob). Otherwise the names are kept as ``claimed_user`` / ``claimed_login``; a failed
  ``auth`` always names whoever the offered certificate claimed to be that way;
- what: only node events (events.NODE_REPORTED), only fields of their schema, only
  about sessions this node started (sessions are bound to the node that reported their
  start, see limen.audit.bindings);
- which: the node's event uid deduplicates the node's own resends only: it is namespaced
  by the node's id, so a node cannot suppress or collide with anyone else's event.

A refused report gets a clear error (400: malformed; 403: not this node's to report) and
an ``audit.report.refused`` event naming the node and the reason.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from limen.audit import events as types
from limen.audit import schema
from limen.audit.bindings import SessionBinding, SessionBindings
from limen.audit.chain import format_time, parse_time
from limen.audit.metadata import AuditEvent
from limen.auth.context import AuthContext
from limen.auth.identity import Identity
from limen.auth.reported_certs import BackedUser, back_user
from limen.errors import AccessDenied, BadParameter, LimenError, NotFound

log = logging.getLogger(__name__)

# Reported uids are UUIDs within this namespace and the node's id (uuid5).
NODE_UID_NAMESPACE = uuid.UUID("6b0e7c52-6a9e-4f35-9d0f-1c55e1a7d1a2")
# Written by the log itself; a node may name its event (uid) and say when (time), no more.
_LOG_FIELDS = frozenset(schema.COMMON_FIELDS + schema.CHAIN_FIELDS) - {"uid", "time"}
# Set by the auth service from what it knows or checked; never taken from a node.
_STAMPED = frozenset({"node_time", "claimed_user", "claimed_login", "cert_serial",
                      "key_fingerprint", "principals", "valid_before"})
_SERVER = ("server_id", "server_hostname", "server_addr")
# Events about a party other than the session's owner: their user is never the start's.
_OWN_PARTY = frozenset({types.SESSION_JOIN.name, types.SESSION_LEAVE.name})
# A node's clock may run this far ahead of ours before its time is ignored for checks.
_SKEW = timedelta(minutes=1)


class NodeReports:
    def __init__(self, ctx: AuthContext, bindings: SessionBindings) -> None:
        self.ctx = ctx
        self.bindings = bindings

    async def report_many(self, identity: Identity, events: Sequence[tuple[str, dict[str, Any]]]
                          ) -> list[dict[str, Any] | LimenError]:
        """Several of one node's events: each checked and stamped in order, then all
        written in one group commit. Returns what was written for each, or that event's
        refusal; a failure of the log fails the call (raised)."""
        if identity.builtin != "node":
            raise AccessDenied("only nodes report events, and only with their own identity")
        # Where the events happened is the node's registration: read once per batch.
        server = await self._server_of(identity)
        answers: list[dict[str, Any] | LimenError | None] = []
        accepted: list[tuple[AuditEvent, str | None]] = []
        # The batch's sessions that no node started: one search, not one per event.
        absent = await self.bindings.absent(
            sid for _, fields in events if isinstance(sid := fields.get("sid"), str) and sid)
        for name, fields in events:
            try:
                accepted.append(await self._accept(identity, name, fields, server, absent))
            except (BadParameter, AccessDenied) as exc:
                await self._refused(identity, name, exc)
                answers.append(exc)
            except NotFound as exc:
                answers.append(exc)
            else:
                answers.append(None)  # its place, for what the log answers
        written = iter(await self.ctx.audit.record_many(accepted))
        return [next(written) if answer is None else answer for answer in answers]

    async def _accept(self, identity: Identity, name: str, fields: dict[str, Any],
                      server: dict[str, Any], absent: frozenset[str]
                      ) -> tuple[AuditEvent, str | None]:
        report = check_node_report(name, fields)
        fields, cert = report.fields, report.cert
        uid = _node_uid(identity.user, report.uid)
        node_time = _node_time(report.time)
        who = await self._who(name, fields, cert, server["server_id"], node_time, absent)
        stamped = {**{k: v for k, v in fields.items() if k not in ("user", "login")},
                   **server, **who, "node_time": node_time}
        event = schema.from_fields(name, stamped)
        if name == types.SESSION_START.name:
            await self.bindings.bind(SessionBinding.from_record(event.fields()), absent)
        return event, uid

    async def _server_of(self, identity: Identity) -> dict[str, Any]:
        """Where: the node's registration, by the identity it authenticated with."""
        try:
            node = await self.ctx.stores.nodes.get(identity.user)
        except NotFound:
            raise NotFound("this node is not registered (removed, or its registration "
                           "lapsed); its events are accepted again once it is") from None
        try:  # the address it heartbeats from, when it has one (tunnel nodes do not)
            addr = (await self.ctx.stores.node_presence.get(node.name)).spec.addr or None
        except NotFound:
            addr = None
        return {"server_id": node.name, "server_hostname": node.spec.hostname,
                "server_addr": addr}

    async def _who(self, name: str, fields: dict[str, Any], cert: Any, server_id: str,
                   node_time: str | None, absent: frozenset[str]) -> dict[str, Any]:
        """Who: user and login as facts when backed, as claims otherwise."""
        claimed = _text(fields.get("user")), _text(fields.get("login"))
        sid = fields.get("sid")
        binding = (await self.bindings.owned(sid, server_id, absent)
                   if isinstance(sid, str) and sid else None)
        if binding is not None and name not in _OWN_PARTY and name != types.SESSION_START.name:
            return _from_binding(binding, claimed)
        if cert is not None and not (name == "auth" and fields.get("success") is not True):
            backed = self._back(cert, claimed[1], node_time)
            if backed is not None:
                return _from_cert(name, backed, claimed)
        return {"claimed_user": claimed[0], "claimed_login": claimed[1]}

    def _back(self, cert: Any, login: str | None, node_time: str | None) -> BackedUser | None:
        received = at = self.ctx.clock.now()
        if node_time is not None:  # an event kept while we were away: its own moment
            with contextlib.suppress(ValueError, OverflowError, OSError):
                claimed_at = datetime.fromtimestamp(parse_time(node_time) / 1e9, UTC)
                at = claimed_at if claimed_at <= received + _SKEW else received
        try:
            return back_user(cert, login, self.ctx.cas.user_ca, at)
        except BadParameter as exc:
            log.warning("a node's certificate does not back its user: %s", exc.message)
            return None

    async def _refused(self, identity: Identity, name: str, exc: LimenError) -> None:
        log.warning("refused a %s event from node %s: %s", name, identity.user, exc.message)
        await self.ctx.audit.emit(schema.ReportRefused(
            server_id=identity.user, reporter="node", reported=name[:64], error=exc.message,
        ))


@dataclass(frozen=True)
class NodeReport:
    """A node's report taken apart: its event fields and what it says about them."""

    fields: dict[str, Any]
    uid: Any = None  # its name for the event (resends carry the same)
    time: Any = None  # when it happened, for an event the node kept a while
    cert: Any = None  # the user's certificate as the node received it


def check_node_report(name: str, fields: dict[str, Any]) -> NodeReport:
    """The shape of a node's report, before anything is stamped: a node event, fields of
    its schema, none of those only the auth service sets (BadParameter or AccessDenied
    says what is wrong). No I/O: the node's tests check their events with it too."""
    _check_name(name)
    own = dict(fields)
    report = NodeReport(own, own.pop("uid", None), own.pop("time", None), own.pop("cert", None))
    refused = sorted(k for k in own if k in _LOG_FIELDS or k in _STAMPED)
    if refused:
        raise BadParameter(f"a node may not set {', '.join(refused)} in a {name} event "
                           "(the auth service does)")
    schema.from_fields(name, own)  # the node's own fields, named as it sent them
    return report


def _check_name(name: str) -> None:
    if name in types.NODE_REPORTED:
        return
    if name in schema.MODELS:
        raise AccessDenied(f"a node may not report {name} events; nodes report only "
                           f"{', '.join(sorted(types.NODE_REPORTED))}")
    raise BadParameter(f"there is no node event named {name[:64]!r}")


def _from_binding(binding: SessionBinding, claimed: tuple[str | None, str | None]
                  ) -> dict[str, Any]:
    if binding.user is None:  # the session's start was not backed: still only claims
        return {"claimed_user": binding.claimed_user, "claimed_login": binding.claimed_login}
    return {"user": binding.user, "login": binding.login,
            **_differing(claimed, binding.user, binding.login)}


def _from_cert(name: str, backed: BackedUser, claimed: tuple[str | None, str | None]
               ) -> dict[str, Any]:
    facts: dict[str, Any] = {"user": backed.user, "login": backed.login,
                             "cert_serial": backed.serial,
                             "key_fingerprint": backed.key_fingerprint}
    if name == "auth":
        facts.update(principals=list(backed.principals),
                     valid_before=backed.valid_before.isoformat())
    return {**facts, **_differing(claimed, backed.user, backed.login)}


def _differing(claimed: tuple[str | None, str | None], user: str | None,
               login: str | None) -> dict[str, Any]:
    """A node's claim that contradicts the facts is kept beside them."""
    return {"claimed_user": claimed[0] if claimed[0] not in (None, user) else None,
            "claimed_login": claimed[1] if claimed[1] not in (None, login) else None}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _node_uid(node_id: str, value: Any) -> str | None:
    if value is None:
        return None
    try:
        reported = uuid.UUID(str(value))
    except ValueError:
        raise BadParameter("an event's uid must be a UUID") from None
    return str(uuid.uuid5(NODE_UID_NAMESPACE, f"{node_id}/{reported}"))


def _node_time(value: Any) -> str | None:
    """The node's time, normalised as the log writes times (RFC 3339, UTC, ns)."""
    if value is None:
        return None
    try:
        text = format_time(parse_time(str(value)))
        parse_time(text)  # years before 1000 do not survive the round trip
    except (ValueError, OverflowError, OSError):
        raise BadParameter("an event's time must be RFC 3339 (years 1000 to 9999)") from None
    return text

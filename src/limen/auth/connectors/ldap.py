"""Sign-in against an LDAP directory (OpenLDAP, Active Directory) with ldap3.

The usual three steps: bind as the service account and search the person by the name
they typed; bind as the DN found, with the password they typed (the directory judges
it); read their groups (a group search, or their memberOf attribute) and map them to
roles. TLS always (ldaps:// or StartTLS), the certificate and the host name verified
unless the connector says ``tls_verify: false``.

ldap3 is synchronous: each sign-in runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import ssl
import warnings
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

with warnings.catch_warnings():
    # ldap3 2.9.1 (its latest release) imports names that pyasn1 0.6 renamed and warns
    # about; the old names still work.
    warnings.simplefilter("ignore", DeprecationWarning)
    import ldap3
    from ldap3.core import exceptions as ldap_errors
    from ldap3.utils.conv import escape_filter_chars
    from ldap3.utils.dn import parse_dn

from limen.auth.connectors.identity import ExternalIdentity
from limen.auth.connectors.mapping import as_strings, roles_from_groups, traits_from
from limen.auth.connectors.secrets import read_secret
from limen.auth.connectors.tls import client_context
from limen.durations import parse_duration
from limen.errors import AccessDenied, ConnectionProblem
from limen.resources.connector import LDAPConnector

WRONG_PASSWORD = "wrong directory password"


class DirectoryRefused(AccessDenied):
    """The directory judged the person: unknown, or the password was wrong."""

    def __init__(self, message: str, reason: str, known: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.known = known  # the directory has this person (a wrong password counts)


class _VerifiedTls(ldap3.Tls):
    """ldap3's TLS with the standard library checking the certificate's host name.

    ldap3 2.9 checks names itself with ssl.match_hostname, deprecated since Python 3.7
    and removed in 3.12; an SSLContext with check_hostname does the same check properly.
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(validate=context.verify_mode)
        self._context = context

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        host = connection.server.host
        connection.socket = self._context.wrap_socket(
            connection.socket, server_side=False, do_handshake_on_connect=do_handshake,
            server_hostname=host,
        )


@dataclass(frozen=True)
class DirectoryEntry:
    dn: str
    attributes: dict[str, list[str]]


class LDAPDirectory:
    def __init__(self, connector: LDAPConnector) -> None:
        self.connector = connector
        self.spec = connector.spec

    async def authenticate(self, username: str, password: str) -> ExternalIdentity:
        return await asyncio.to_thread(self._authenticate, username, password)

    # -- in a worker thread --------------------------------------------------------------

    def _server(self) -> ldap3.Server:
        parts = urlsplit(self.spec.url)
        use_ssl = parts.scheme == "ldaps"
        port = parts.port or (636 if use_ssl else 389)
        tls = _VerifiedTls(client_context(self.spec.ca_file, self.spec.tls_verify))
        return ldap3.Server(parts.hostname, port=port, use_ssl=use_ssl, tls=tls,
                            connect_timeout=self._timeout(), get_info=ldap3.NONE)

    def _timeout(self) -> int:
        # Whole seconds: ldap3 packs the receive timeout into a socket option as an integer.
        return max(1, int(parse_duration(self.spec.timeout).total_seconds()))

    def _connection(self, server: ldap3.Server, dn: str, password: str) -> ldap3.Connection:
        conn = ldap3.Connection(server, user=dn, password=password, auto_bind=False,
                                receive_timeout=self._timeout(), raise_exceptions=False,
                                read_only=True)
        try:
            conn.open()
            if self.spec.start_tls:
                conn.start_tls()
        except ldap_errors.LDAPException as exc:
            conn.unbind()
            raise ConnectionProblem(
                f"connector {self.connector.name}: cannot reach the directory at "
                f"{self.spec.url}: {_tls_reason(exc)}") from None
        return conn

    def _authenticate(self, username: str, password: str) -> ExternalIdentity:
        if not password:  # an empty password is an anonymous bind that "succeeds"
            raise DirectoryRefused("the directory password is empty", "empty password", False)
        server = self._server()
        service = self._connection(server, self.spec.bind_dn, self._bind_password())
        try:
            if not service.bind():
                raise ConnectionProblem(
                    f"connector {self.connector.name}: the directory refused the service "
                    f"account {self.spec.bind_dn}: {service.result.get('description')}")
            entry = self._find_user(service, username)
            self._check_password(server, entry, password)
            groups = self._groups(service, entry, username)
        finally:
            service.unbind()
        return self._identity(username, entry, groups)

    def _bind_password(self) -> str:
        return read_secret(self.spec.bind_password,
                           f"connector {self.connector.name}: bind_password")

    def _find_user(self, conn: ldap3.Connection, username: str) -> DirectoryEntry:
        search = self.spec.user_search
        query = search.filter.replace("{username}", escape_filter_chars(username))
        conn.search(search.base_dn, query, attributes=self._user_attributes(), size_limit=2)
        entries = [e for e in conn.response or [] if e.get("type") == "searchResEntry"]
        if len(entries) != 1:
            why = "no such user" if not entries else "the user search matched several entries"
            raise DirectoryRefused("invalid user name or directory password", why, False)
        found = entries[0]
        attributes = {k: as_strings(v) for k, v in dict(found.get("attributes", {})).items()}
        return DirectoryEntry(found["dn"], attributes)

    def _user_attributes(self) -> list[str]:
        wanted = set(self.spec.traits.values())
        if self.spec.group_search is None:
            wanted.add("memberOf")
        return sorted(wanted) or [ldap3.NO_ATTRIBUTES]

    def _check_password(self, server: ldap3.Server, entry: DirectoryEntry, password: str) -> None:
        person = self._connection(server, entry.dn, password)
        try:
            if not person.bind():
                raise DirectoryRefused("invalid user name or directory password",
                                       WRONG_PASSWORD, True)
        finally:
            person.unbind()

    def _groups(self, conn: ldap3.Connection, entry: DirectoryEntry,
                username: str) -> list[tuple[str, str]]:
        """Groups as (name, DN)."""
        search = self.spec.group_search
        if search is None:
            return [(_first_rdn_value(dn), dn) for dn in entry.attributes.get("memberOf", [])]
        query = (search.filter.replace("{dn}", escape_filter_chars(entry.dn))
                 .replace("{username}", escape_filter_chars(username)))
        conn.search(search.base_dn, query, attributes=[search.name_attribute])
        groups = []
        for found in conn.response or []:
            if found.get("type") != "searchResEntry":
                continue
            names = as_strings(dict(found.get("attributes", {})).get(search.name_attribute))
            groups.append((names[0] if names else _first_rdn_value(found["dn"]), found["dn"]))
        return groups

    def _identity(self, username: str, entry: DirectoryEntry,
                  groups: list[tuple[str, str]]) -> ExternalIdentity:
        roles, decided = roles_from_groups(self.spec.groups_to_roles, groups)
        return ExternalIdentity(
            connector=self.connector.name, connector_kind="ldap", username=username,
            subject=entry.dn, roles=roles, traits=traits_from(self.spec.traits, entry.attributes),
            decided_by=decided, offered={"groups": [name or dn for name, dn in groups]},
        )


def _first_rdn_value(dn: str) -> str:
    try:
        return str(parse_dn(dn)[0][1])
    except (ldap_errors.LDAPException, IndexError):
        return dn


def _tls_reason(exc: Exception) -> str:
    text = str(exc)
    if "mismatch" in text and ("Hostname" in text or "IP address" in text):
        return "its TLS certificate is for another host name than the connector's url"
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return ("its TLS certificate does not verify (set the connector's ca_file to the "
                "directory's CA)")
    return text or type(exc).__name__

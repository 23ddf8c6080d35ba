"""OpenLDAP's slapd, started by the test with a configuration and directory of its own.

It serves ldaps:// (a certificate from the test's CA, for 127.0.0.1 only, so a connector
that names it "localhost" meets a certificate for another name) and ldap:// for StartTLS.
People: alice (groups ops, staff), bob (marketing), dave (ops, sre), erin and frank
(ops); their password is NAME-directory-pw; groups are
groupOfNames under ou=groups; the service account cn=limen,ou=services.
"""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.sso.pki import ServerFiles
from tests.support.ports import free_ports
from tests.support.processes import stop_process

BASE = "dc=example,dc=com"
SERVICE_DN = f"cn=limen,ou=services,{BASE}"
SERVICE_PASSWORD = "service-account-password"
PASSWORDS = {name: f"{name}-directory-pw" for name in ("alice", "bob", "dave", "erin", "frank")}
GROUPS = {"ops": ["alice", "dave", "erin", "frank"], "staff": ["alice"], "marketing": ["bob"],
          "sre": ["dave"]}
SLAPD = "/usr/sbin/slapd"



def _ldif() -> str:
    entries = [
        f"dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example",
        f"dn: ou=people,{BASE}\nobjectClass: organizationalUnit\nou: people",
        f"dn: ou=groups,{BASE}\nobjectClass: organizationalUnit\nou: groups",
        f"dn: ou=services,{BASE}\nobjectClass: organizationalUnit\nou: services",
        f"dn: {SERVICE_DN}\nobjectClass: applicationProcess\nobjectClass: simpleSecurityObject"
        f"\ncn: limen\nuserPassword: {SERVICE_PASSWORD}",
    ]
    for uid, password in PASSWORDS.items():
        entries.append(
            f"dn: uid={uid},ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: {uid}\n"
            f"cn: {uid.title()}\nsn: {uid.title()}\nmail: {uid}@example.com\n"
            f"userPassword: {password}")
    for group, members in GROUPS.items():
        lines = "\n".join(f"member: uid={m},ou=people,{BASE}" for m in members)
        entries.append(f"dn: cn={group},ou=groups,{BASE}\nobjectClass: groupOfNames\n"
                       f"cn: {group}\n{lines}")
    return "\n\n".join(entries) + "\n"


@dataclass
class Slapd:
    workdir: Path
    tls: ServerFiles
    ldaps_port: int = 0
    ldap_port: int = 0
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    @property
    def ldap_url(self) -> str:
        return f"ldap://127.0.0.1:{self.ldap_port}"

    def start(self) -> Slapd:
        if not Path(SLAPD).exists():
            pytest.fail("slapd is missing: scripts/test installs it (apt slapd)")
        db = self.workdir / "db"
        db.mkdir(parents=True)
        conf = self.workdir / "slapd.conf"
        conf.write_text(self._config(db))
        data = self.workdir / "data.ldif"
        data.write_text(_ldif())
        subprocess.run(["/usr/sbin/slapadd", "-f", str(conf), "-l", str(data)], check=True,
                       capture_output=True)
        self.ldaps_port, self.ldap_port = free_ports(2)
        urls = f"ldaps://127.0.0.1:{self.ldaps_port}/ ldap://127.0.0.1:{self.ldap_port}/"
        with (self.workdir / "slapd.log").open("ab") as log:
            self._proc = subprocess.Popen([SLAPD, "-f", str(conf), "-h", urls, "-d", "0"],
                                          stdout=log, stderr=log)
        self._wait_listening()
        return self

    def _wait_listening(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                log = (self.workdir / "slapd.log").read_text()[-2000:]
                raise AssertionError(f"slapd exited with {self._proc.returncode}:\n{log}")
            try:
                for port in (self.ldaps_port, self.ldap_port):
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("slapd did not listen within 20 s")

    def _config(self, db: Path) -> str:
        schema = "/etc/ldap/schema"
        return "\n".join([
            *(f"include {schema}/{name}.schema"
              for name in ("core", "cosine", "inetorgperson", "nis")),
            "modulepath /usr/lib/ldap",
            "moduleload back_mdb",
            f"pidfile {self.workdir / 'slapd.pid'}",
            f"TLSCertificateFile {self.tls.cert}",
            f"TLSCertificateKeyFile {self.tls.key}",
            "database mdb",
            f'suffix "{BASE}"',
            f'rootdn "cn=admin,{BASE}"',
            f"directory {db}",
            "access to attrs=userPassword by anonymous auth by * none",
            "access to * by users read by * none",
            "",
        ])

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None

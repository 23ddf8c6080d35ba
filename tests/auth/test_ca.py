"""Certificate authorities: SSH certificates checked by real OpenSSH tools, the TLS CA
checked by Python's ssl, and the CA store on disk."""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncssh
import pytest
from asyncssh.packet import SSHPacket, String

from limen.auth.ca import (
    CERT_TYPE_HOST,
    CERT_TYPE_USER,
    CAStore,
    authorized_keys_line,
    dump_tls_cert_pem,
    dump_tls_key_pem,
    generate_ssh_key,
    generate_tls_ca,
    issue_tls_server_cert,
    known_hosts_line,
    load_tls_cert_pem,
    load_tls_key_pem,
    read_cert_critical_options,
    read_cert_extensions,
    sign_host_cert,
    sign_user_cert,
    spki_pin,
)
from limen.auth.tlsca import reissue_tls_ca_cert
from limen.errors import BadParameter

SSH_KEYGEN = "/usr/bin/ssh-keygen"
SSH = "/usr/bin/ssh"

ROLES = '["access"]'
TRAITS = '{"logins": ["alice"]}'
CUSTOM = {"roles@limen": ROLES, "traits@limen": TRAITS}


def _now() -> datetime:
    # Whole seconds: certificates carry seconds, so the window we assert is exact.
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def user_ca() -> asyncssh.SSHKey:
    return generate_ssh_key()


@pytest.fixture
def host_ca() -> asyncssh.SSHKey:
    return generate_ssh_key()


def _user_cert(user_ca: asyncssh.SSHKey, key: asyncssh.SSHKey, **kwargs) -> asyncssh.SSHCertificate:
    now = _now()
    args = {
        "key_id": "alice",
        "principals": ["alice", "root"],
        "valid_after": now - timedelta(minutes=1),
        "valid_before": now + timedelta(hours=12),
        "extensions": CUSTOM,
    }
    args.update(kwargs)
    return sign_user_cert(user_ca, key.convert_to_public(), **args)


def _keygen_list(cert: asyncssh.SSHCertificate, tmp_path: Path) -> str:
    path = tmp_path / "cert.pub"
    path.write_bytes(cert.export_certificate())
    done = subprocess.run(
        [SSH_KEYGEN, "-L", "-f", str(path)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _extension_lines(listing: str) -> list[str]:
    after = listing.split("Extensions:", 1)[1]
    return [line.strip() for line in after.strip().splitlines()]


def _keygen_time(when: datetime) -> str:
    # ssh-keygen prints the window in local time, as the test process sees it.
    return datetime.fromtimestamp(when.timestamp()).strftime("%Y-%m-%dT%H:%M:%S")


# --- SSH certificates read by ssh-keygen ------------------------------------------


def test_ssh_keygen_reads_user_cert(user_ca: asyncssh.SSHKey, tmp_path: Path) -> None:
    now = _now()
    after, before = now - timedelta(minutes=1), now + timedelta(hours=12)
    cert = _user_cert(user_ca, generate_ssh_key(), valid_after=after, valid_before=before)

    listing = _keygen_list(cert, tmp_path)

    assert "ssh-ed25519-cert-v01@openssh.com user certificate" in listing
    assert 'Key ID: "alice"' in listing
    assert re.search(r"Principals:\s*\n\s+alice\n\s+root\n", listing)
    assert f"Valid: from {_keygen_time(after)} to {_keygen_time(before)}" in listing
    assert "Critical Options: (none)" in listing
    # OpenSSH 9.2 prints unknown extensions as the hex of their data: a string inside
    # the data string, so the hex starts with the value's 4-byte length.
    assert _extension_lines(listing) == [
        "permit-pty",
        f"roles@limen UNKNOWN OPTION: {String(ROLES).hex()} (len {len(String(ROLES))})",
        f"traits@limen UNKNOWN OPTION: {String(TRAITS).hex()} (len {len(String(TRAITS))})",
    ]


def test_ssh_keygen_shows_permits_only_when_asked(user_ca: asyncssh.SSHKey, tmp_path: Path) -> None:
    cert = _user_cert(
        user_ca,
        generate_ssh_key(),
        permit_pty=False,
        permit_port_forwarding=True,
        permit_agent_forwarding=True,
        permit_x11_forwarding=True,
        extensions=None,
        source_address=["10.0.0.0/8", "127.0.0.1"],
        serial=42,
    )

    listing = _keygen_list(cert, tmp_path)

    assert _extension_lines(listing) == [
        "permit-X11-forwarding",
        "permit-agent-forwarding",
        "permit-port-forwarding",
    ]
    assert "source-address 10.0.0.0/8,127.0.0.1/32" in listing
    assert "Serial: 42" in listing


def test_ssh_keygen_reads_host_cert(host_ca: asyncssh.SSHKey, tmp_path: Path) -> None:
    now = _now()
    cert = sign_host_cert(
        host_ca,
        generate_ssh_key().convert_to_public(),
        key_id="node-1",
        principals=["node-1", "node-1.example", "127.0.0.1"],
        valid_after=now,
        valid_before=now + timedelta(days=1),
        extensions={"role@limen": "node", "cluster@limen": "example"},
    )

    listing = _keygen_list(cert, tmp_path)

    assert "ssh-ed25519-cert-v01@openssh.com host certificate" in listing
    assert 'Key ID: "node-1"' in listing
    assert re.search(r"Principals:\s*\n\s+node-1\n\s+node-1.example\n\s+127.0.0.1\n", listing)
    lines = _extension_lines(listing)
    assert [line.split()[0] for line in lines] == ["cluster@limen", "role@limen"]
    assert String("example").hex() in lines[0]
    assert read_cert_extensions(cert) == {"role@limen": "node", "cluster@limen": "example"}


# --- asyncssh accepts them, forgeries are refused ---------------------------------


def test_asyncssh_imports_and_validates(user_ca: asyncssh.SSHKey) -> None:
    cert = _user_cert(user_ca, generate_ssh_key())

    parsed = asyncssh.import_certificate(cert.export_certificate())

    assert parsed.signing_key.public_data == user_ca.public_data
    assert parsed.principals == ["alice", "root"]
    parsed.validate(CERT_TYPE_USER, "alice")
    with pytest.raises(ValueError, match="principal"):
        parsed.validate(CERT_TYPE_USER, "mallory")
    with pytest.raises(ValueError, match="type"):
        parsed.validate(CERT_TYPE_HOST, "alice")


def _fields(cert: asyncssh.SSHCertificate) -> dict[str, object]:
    return {
        "algorithm": cert.algorithm, "wire": cert.public_data, "key": cert.key.public_data,
        "ca": cert.signing_key.public_data, "principals": cert.principals,
        "options": cert.options, "key_id": cert._key_id,
        "window": (cert._valid_after, cert._valid_before),
        "type": cert._cert_type, "serial": cert._serial,
    }


@pytest.mark.parametrize("algorithm", ["ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"])
def test_a_signed_certificate_is_what_asyncssh_parses_from_its_bytes(
        user_ca: asyncssh.SSHKey, host_ca: asyncssh.SSHKey, algorithm: str) -> None:
    """The signer builds asyncssh's certificate object without parsing its own output;
    parsing it (which checks the CA's signature) must give the very same answers."""
    key = asyncssh.generate_private_key(algorithm)
    user = _user_cert(user_ca, key, principals=["alice", "root", "alice"], serial=7,
                      permit_port_forwarding=True, source_address=["10.0.0.0/8"],
                      valid_after=datetime(2026, 1, 1, tzinfo=UTC),
                      valid_before=datetime(2026, 1, 2, tzinfo=UTC))
    host = sign_host_cert(host_ca, key, key_id="node-1", principals=["node1", "10.1.2.3"],
                          valid_after=_now(), valid_before=_now() + timedelta(days=1),
                          extensions={"node@limen": "1"}, serial=9)
    for cert in (user, host):
        parsed = asyncssh.import_certificate(cert.export_certificate())
        assert _fields(cert) == _fields(parsed)
        assert cert.key.public_data == key.public_data
        with pytest.raises(asyncssh.KeyExportError):  # the certificate holds no secret
            cert.key.export_private_key()
    assert user.principals == ["alice", "root"]
    assert user.options["source-address"] and user.options["permit-port-forwarding"]
    assert "permit-pty" in user.options and host.options == {}


# An Ed25519 CA's signature field: string(string("ssh-ed25519") + string(64 bytes)).
_ED25519_SIG_FIELD = 4 + (4 + len("ssh-ed25519")) + (4 + 64)


def _split_signature(blob: bytes) -> tuple[bytes, bytes]:
    """The signed body and the signature of an Ed25519-signed certificate."""
    packet = SSHPacket(blob[-_ED25519_SIG_FIELD:])
    signature = packet.get_string()
    packet.check_end()
    return blob[:-_ED25519_SIG_FIELD], signature


def test_altered_body_fails_signature(user_ca: asyncssh.SSHKey) -> None:
    blob = _user_cert(user_ca, generate_ssh_key()).public_data
    forged = blob.replace(String("root"), String("roox"), 1)
    assert forged != blob
    line = b"ssh-ed25519-cert-v01@openssh.com " + base64.b64encode(forged)

    with pytest.raises(asyncssh.KeyImportError):
        asyncssh.import_certificate(line)
    # The structure is intact, so what failed is the CA signature over the body.
    body, signature = _split_signature(blob)
    forged_body, forged_signature = _split_signature(forged)
    assert forged_signature == signature
    ca_public = user_ca.convert_to_public()
    assert ca_public.verify(body, signature)
    assert not ca_public.verify(forged_body, signature)
    with pytest.raises(BadParameter):
        read_cert_extensions(forged)


@pytest.mark.parametrize(
    ("algorithm", "cert_algorithm"),
    [
        ("ssh-ed25519", "ssh-ed25519-cert-v01@openssh.com"),
        ("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp256-cert-v01@openssh.com"),
        ("ssh-rsa", "ssh-rsa-cert-v01@openssh.com"),
    ],
)
def test_read_extensions_round_trip(
    user_ca: asyncssh.SSHKey, algorithm: str, cert_algorithm: str
) -> None:
    key = asyncssh.generate_private_key(algorithm)
    cert = _user_cert(
        user_ca,
        key,
        permit_port_forwarding=True,
        extensions={**CUSTOM, "flag@limen": "", "unicode@limen": "zoë ✓"},
        source_address=["192.0.2.7"],
    )
    expected = {
        "permit-pty": "",
        "permit-port-forwarding": "",
        **CUSTOM,
        "flag@limen": "",
        "unicode@limen": "zoë ✓",
    }

    assert cert.get_algorithm() == cert_algorithm
    assert cert.key.public_data == key.public_data
    assert read_cert_extensions(cert) == expected
    assert read_cert_extensions(cert.public_data) == expected
    assert read_cert_extensions(cert.export_certificate().decode()) == expected
    assert read_cert_critical_options(cert) == {"source-address": "192.0.2.7/32"}
    # asyncssh itself keeps the standard ones and drops ours: why the reader exists.
    assert "roles@limen" not in cert.options
    assert cert.options["permit-port-forwarding"] is True


def test_public_key_line_is_accepted(user_ca: asyncssh.SSHKey) -> None:
    key = generate_ssh_key()
    line = key.export_public_key().decode()
    cert = sign_user_cert(
        user_ca,
        line,
        key_id="alice",
        principals=["alice"],
        valid_after=_now(),
        valid_before=_now() + timedelta(hours=1),
    )
    assert cert.key.public_data == key.public_data


@pytest.mark.parametrize(
    "bad",
    [
        {"principals": []},
        {"principals": [""]},
        {"key_id": ""},
        {"valid_after": datetime(2030, 1, 1)},  # naive: which time zone?
        {"valid_before": _now() - timedelta(hours=2)},
        {"extensions": {"permit-pty": ""}},
        {"extensions": {"source-address": "0.0.0.0/0"}},
        {"extensions": {"bad name": "x"}},
        {"source_address": ["not-an-address"]},
        {"source_address": []},
        {"serial": -1},
    ],
)
def test_bad_user_cert_requests_refused(user_ca: asyncssh.SSHKey, bad: dict) -> None:
    with pytest.raises(BadParameter):
        _user_cert(user_ca, generate_ssh_key(), **bad)


def test_host_cert_needs_principals(host_ca: asyncssh.SSHKey) -> None:
    with pytest.raises(BadParameter, match="principal"):
        sign_host_cert(
            host_ca,
            generate_ssh_key(),
            key_id="node",
            principals=[],
            valid_after=_now(),
            valid_before=_now() + timedelta(hours=1),
        )


def test_public_only_ca_key_cannot_sign(user_ca: asyncssh.SSHKey) -> None:
    with pytest.raises(BadParameter, match="private"):
        _user_cert(user_ca.convert_to_public(), generate_ssh_key())


def test_trust_lines(user_ca: asyncssh.SSHKey, host_ca: asyncssh.SSHKey) -> None:
    b64 = base64.b64encode(host_ca.public_data).decode()
    assert known_hosts_line(host_ca) == f"@cert-authority * ssh-ed25519 {b64} limen host CA"
    line = authorized_keys_line(user_ca.convert_to_public())
    assert line.startswith("cert-authority ssh-ed25519 AAAA")
    assert asyncssh.import_authorized_keys(line) is not None


# --- stock OpenSSH logs in with a signed certificate ------------------------------


class _Hello(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return True  # always authenticate; only the user CA's certificates will do


async def _hello(process: asyncssh.SSHServerProcess) -> None:
    process.stdout.write(f"hello {process.get_extra_info('username')}\n")
    process.exit(0)


async def _ssh(tmp_path: Path, port: int, key_path: Path, cert_path: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        SSH,
        "-F", "/dev/null",
        "-o", "IdentitiesOnly=yes",
        "-o", "IdentityAgent=none",
        "-i", str(key_path),
        "-o", f"CertificateFile={cert_path}",
        "-o", f"UserKnownHostsFile={tmp_path / 'known_hosts'}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes",
        "-o", "PasswordAuthentication=no",
        "-o", "KbdInteractiveAuthentication=no",
        "-p", str(port),
        "alice@127.0.0.1",
        "true",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()


def _write_client(tmp_path: Path, name: str, ca_key: asyncssh.SSHKey) -> tuple[Path, Path]:
    key = generate_ssh_key()
    key_path = tmp_path / name
    key_path.write_bytes(key.export_private_key("openssh"))
    key_path.chmod(0o600)
    cert = _user_cert(ca_key, key, principals=["alice"])
    cert_path = tmp_path / f"{name}-cert.pub"
    cert_path.write_bytes(cert.export_certificate())
    return key_path, cert_path


async def test_openssh_logs_in_with_signed_cert(
    user_ca: asyncssh.SSHKey, host_ca: asyncssh.SSHKey, tmp_path: Path
) -> None:
    host_key = generate_ssh_key()
    now = _now()
    host_cert = sign_host_cert(
        host_ca,
        host_key,
        key_id="node-1",
        principals=["node-1", "127.0.0.1"],
        valid_after=now - timedelta(minutes=1),
        valid_before=now + timedelta(hours=1),
        extensions={"role@limen": "node", "cluster@limen": "example"},
    )
    (tmp_path / "known_hosts").write_text(known_hosts_line(host_ca) + "\n")
    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_factory=_Hello,
        server_host_keys=[host_key],
        server_host_certs=[host_cert],
        authorized_client_keys=asyncssh.import_authorized_keys(authorized_keys_line(user_ca)),
        process_factory=_hello,
    )
    port = server.sockets[0].getsockname()[1]
    try:
        good = _write_client(tmp_path, "good", user_ca)
        status, output = await _ssh(tmp_path, port, *good)
        assert status == 0, output
        assert "hello alice" in output

        forged = _write_client(tmp_path, "forged", generate_ssh_key())
        status, output = await _ssh(tmp_path, port, *forged)
        assert status == 255
        assert "Permission denied" in output
    finally:
        server.close()
        await server.wait_closed()


# --- the TLS CA -------------------------------------------------------------------


def _write_pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


async def _tls_handshake(tmp_path: Path, server_pair, ca_cert, server_hostname: str) -> bytes:
    key, cert = server_pair
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(
        _write_pem(tmp_path / "server.crt", dump_tls_cert_pem(cert)),
        _write_pem(tmp_path / "server.key", dump_tls_key_pem(key)),
    )

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        ca_path = _write_pem(tmp_path / "ca.crt", dump_tls_cert_pem(ca_cert))
        client_ctx = ssl.create_default_context(cafile=str(ca_path))
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx, server_hostname=server_hostname
        )
        try:
            return await reader.read()
        finally:
            writer.close()
            await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("hostname", ["127.0.0.1", "proxy.example"])
async def test_tls_server_cert_verifies_against_ca(tmp_path: Path, hostname: str) -> None:
    now = datetime.now(UTC)
    ca_key, ca_cert = generate_tls_ca("example", now=now)
    pair = issue_tls_server_cert(
        ca_key, ca_cert, names=["proxy.example", "localhost"], ips=["127.0.0.1"], now=now
    )

    # The default context checks the chain and the name (SAN DNS or IP) both.
    assert await _tls_handshake(tmp_path, pair, ca_cert, hostname) == b"ok"


async def test_tls_cert_from_another_ca_is_refused(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    ca_key, ca_cert = generate_tls_ca("example", now=now)
    _, other_cert = generate_tls_ca("other", now=now)
    pair = issue_tls_server_cert(ca_key, ca_cert, names=[], ips=["127.0.0.1"], now=now)

    with pytest.raises(ssl.SSLCertVerificationError):
        await _tls_handshake(tmp_path, pair, other_cert, "127.0.0.1")


def test_tls_server_cert_contents() -> None:
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    now = datetime.now(UTC)
    ca_key, ca_cert = generate_tls_ca("example", now=now, years=1)
    _, cert = issue_tls_server_cert(
        ca_key, ca_cert, names=["a.example"], ips=["127.0.0.1", "::1"], now=now, days=3650
    )

    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["a.example"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.not_valid_after_utc <= ca_cert.not_valid_after_utc  # capped by the CA
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    with pytest.raises(BadParameter):
        issue_tls_server_cert(ca_key, ca_cert, names=[], ips=[], now=now)
    with pytest.raises(BadParameter):
        issue_tls_server_cert(ca_key, ca_cert, names=[], ips=["nope"], now=now)


def test_spki_pin_is_stable() -> None:
    now = datetime.now(UTC)
    ca_key, ca_cert = generate_tls_ca("example", now=now)
    _, other = generate_tls_ca("example", now=now)

    pin = spki_pin(ca_cert)

    assert re.fullmatch(r"sha256:[0-9a-f]{64}", pin)
    assert spki_pin(load_tls_cert_pem(dump_tls_cert_pem(ca_cert))) == pin
    # A new certificate for the same key keeps the pin; another key does not.
    assert spki_pin(reissue_tls_ca_cert(ca_key, "example", now=now)) == pin
    assert spki_pin(other) != pin
    reloaded = load_tls_key_pem(dump_tls_key_pem(ca_key))
    assert reloaded.private_numbers() == ca_key.private_numbers()


def test_pem_loaders_refuse_garbage() -> None:
    with pytest.raises(BadParameter):
        load_tls_key_pem(b"not a key")
    with pytest.raises(BadParameter):
        load_tls_cert_pem(b"not a cert")


# --- the CA store on disk ---------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_ca_store_creates_private_files(tmp_path: Path) -> None:
    store = CAStore.load_or_create(tmp_path / "data", "example", datetime.now(UTC))

    directory = tmp_path / "data" / "ca"
    assert store.directory == directory
    assert _mode(directory) == 0o700
    for name in ("user_ca", "host_ca", "tls_ca.key"):
        assert _mode(directory / name) == 0o600, name
    assert sorted(p.name for p in directory.iterdir()) == [
        "host_ca",
        "tls_ca.crt",
        "tls_ca.key",
        "user_ca",
    ]  # no temporary files left behind
    assert (directory / "user_ca").read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY")
    assert store.user_ca.public_data != store.host_ca.public_data
    assert "CN=example" in store.tls_ca_cert.subject.rfc4514_string()
    assert "BEGIN" not in repr(store) and "user_ca" not in repr(store)


def test_ca_store_reload_returns_same_keys(tmp_path: Path) -> None:
    first = CAStore.load_or_create(tmp_path, "example", datetime.now(UTC))
    files = {p.name: p.read_bytes() for p in (tmp_path / "ca").iterdir()}

    again = CAStore.load_or_create(tmp_path, "example", datetime.now(UTC) + timedelta(days=1))

    assert again.user_ca.public_data == first.user_ca.public_data
    assert again.host_ca.public_data == first.host_ca.public_data
    assert again.tls_ca_cert == first.tls_ca_cert
    assert spki_pin(again.tls_ca_cert) == spki_pin(first.tls_ca_cert)
    assert {p.name: p.read_bytes() for p in (tmp_path / "ca").iterdir()} == files
    # The loaded keys still sign certificates that verify against the first CA.
    cert = _user_cert(again.user_ca, generate_ssh_key())
    assert cert.signing_key.public_data == first.user_ca.public_data


def test_ca_store_reissues_lost_tls_cert_for_same_key(tmp_path: Path) -> None:
    first = CAStore.load_or_create(tmp_path, "example", datetime.now(UTC))
    (tmp_path / "ca" / "tls_ca.crt").unlink()

    again = CAStore.load_or_create(tmp_path, "example", datetime.now(UTC))

    assert spki_pin(again.tls_ca_cert) == spki_pin(first.tls_ca_cert)


def test_ca_store_tightens_loose_modes(tmp_path: Path) -> None:
    CAStore.load_or_create(tmp_path, "example", datetime.now(UTC))
    (tmp_path / "ca").chmod(0o755)
    (tmp_path / "ca" / "user_ca").chmod(0o644)

    CAStore.load_or_create(tmp_path, "example", datetime.now(UTC))

    assert _mode(tmp_path / "ca") == 0o700
    assert _mode(tmp_path / "ca" / "user_ca") == 0o600

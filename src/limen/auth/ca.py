"""The cluster's certificate authorities: SSH user and host CAs, and the store on disk.

SSH certificates are OpenSSH ``*-cert-v01@openssh.com`` certificates signed by Ed25519
CA keys. The X.509 CA for HTTPS lives in :mod:`limen.auth.tlsca` and is re-exported here
so callers have one place to import CA functions from.

Why this module encodes certificates itself
-------------------------------------------
asyncssh can sign certificates, but only with the extensions it knows (``permit-*``,
``no-touch-required``): it has no way to add custom ones such as ``roles@limen``, and it
drops unknown extensions when it parses a certificate. Limen carries a user's roles and
traits in custom extensions (as Teleport does), so :func:`sign_user_cert` builds the
certificate body itself, following OpenSSH's PROTOCOL.certkeys, signs it with the CA
key's own ``sign()`` and wraps the bytes in asyncssh's own certificate class, so callers
get an ordinary ``SSHCertificate``. It does not parse its own output back: that parse
verified the signature just made, which cost three times the signing (an Ed25519
verification against a signature) and held issuance near 5,000 certificates/s. OpenSSH's
``ssh-keygen -s`` does not re-verify either; tests/auth/test_ca.py parses every kind of
certificate back with asyncssh and OpenSSH, so a mistake in the encoding still shows.
:func:`read_cert_extensions` reads the extensions back from the wire bytes.

Nodes must not trust the roles in a certificate alone: they re-read the user's current
roles and locks from the cluster at each new session.
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import logging
import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import asyncssh
from asyncssh.packet import SSHPacket, String, UInt32, UInt64
from asyncssh.public_key import (
    SSHOpenSSHCertificate,
    _certificate_alg_map,
    decode_ssh_public_key,
)
from cryptography import x509

from limen.auth.tlsca import (
    TLSPrivateKey,
    dump_tls_cert_pem,
    dump_tls_key_pem,
    generate_tls_ca,
    generate_tls_key,
    issue_tls_server_cert,
    load_tls_cert_pem,
    load_tls_key_pem,
    reissue_tls_ca_cert,
    spki_pin,
)
from limen.errors import BadParameter, LimenError
from limen.sshauth import read_certificate

__all__ = [
    "CERT_TYPE_HOST",
    "CERT_TYPE_USER",
    "CAStore",
    "TLSPrivateKey",
    "authorized_keys_line",
    "dump_tls_cert_pem",
    "dump_tls_key_pem",
    "generate_ssh_key",
    "generate_tls_ca",
    "generate_tls_key",
    "issue_tls_server_cert",
    "known_hosts_line",
    "load_tls_cert_pem",
    "load_tls_key_pem",
    "read_cert_critical_options",
    "read_cert_extensions",
    "sign_host_cert",
    "sign_user_cert",
    "spki_pin",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

CERT_TYPE_USER = 1
CERT_TYPE_HOST = 2

_CERT_SUFFIX = b"-cert-v01@openssh.com"
_OPENSSH_SUFFIX = b"@openssh.com"
_NONCE_BYTES = 32
_MAX_UINT64 = 2**64 - 1

# Extensions and critical options that OpenSSH defines. Custom extensions may not reuse
# these names: the permit-* flags are set through their own arguments, so a role cannot
# slip one in through the custom map.
_STANDARD_EXTENSIONS = frozenset(
    {
        "permit-X11-forwarding",
        "permit-agent-forwarding",
        "permit-port-forwarding",
        "permit-pty",
        "permit-user-rc",
        "no-touch-required",
    }
)
_STANDARD_OPTIONS = frozenset({"force-command", "source-address", "verify-required"})


# --- keys -------------------------------------------------------------------------


def generate_ssh_key() -> asyncssh.SSHKey:
    """A new Ed25519 private key (for CAs, hosts and users alike)."""
    return asyncssh.generate_private_key("ssh-ed25519")


def _openssh_public(key: asyncssh.SSHKey) -> str:
    """``ALG BASE64`` for a key, without the key's own comment (which may be a path)."""
    public = key.public_data
    algorithm = SSHPacket(public).get_string().decode("ascii")
    return f"{algorithm} {base64.b64encode(public).decode('ascii')}"


def known_hosts_line(host_ca_public: asyncssh.SSHKey, hosts: str = "*") -> str:
    """The known_hosts line that makes OpenSSH trust every host certificate of the CA."""
    return f"@cert-authority {hosts} {_openssh_public(host_ca_public)} limen host CA"


def authorized_keys_line(user_ca_public: asyncssh.SSHKey) -> str:
    """The authorized_keys line that accepts every user certificate of the CA."""
    return f"cert-authority {_openssh_public(user_ca_public)} limen user CA"


# --- signing ----------------------------------------------------------------------


def sign_user_cert(
    ca_key: asyncssh.SSHKey,
    public_key: asyncssh.SSHKey | str | bytes,
    *,
    key_id: str,
    principals: list[str],
    valid_after: datetime,
    valid_before: datetime,
    permit_pty: bool = True,
    permit_port_forwarding: bool = False,
    permit_agent_forwarding: bool = False,
    permit_x11_forwarding: bool = False,
    extensions: dict[str, str] | None = None,
    source_address: list[str] | None = None,
    serial: int = 0,
) -> asyncssh.SSHCertificate:
    """Sign a user certificate for ``public_key``.

    ``principals`` are the logins the certificate allows; it must not be empty, since
    OpenSSH reads an empty list as "any login". ``extensions`` are custom extensions
    (``name@domain`` -> value), ``source_address`` a list of addresses or CIDR blocks
    the certificate may be used from.
    """
    flags = {
        "permit-pty": permit_pty,
        "permit-port-forwarding": permit_port_forwarding,
        "permit-agent-forwarding": permit_agent_forwarding,
        "permit-X11-forwarding": permit_x11_forwarding,
    }
    exts = {name: "" for name, on in flags.items() if on}
    exts.update(_check_custom(extensions))
    options: dict[str, str] = {}
    if source_address is not None:
        options["source-address"] = _source_address_value(source_address)
    return _sign(
        ca_key,
        public_key,
        cert_type=CERT_TYPE_USER,
        key_id=key_id,
        principals=principals,
        valid_after=valid_after,
        valid_before=valid_before,
        options=options,
        extensions=exts,
        serial=serial,
    )


def sign_host_cert(
    ca_key: asyncssh.SSHKey,
    public_key: asyncssh.SSHKey | str | bytes,
    *,
    key_id: str,
    principals: list[str],
    valid_after: datetime,
    valid_before: datetime,
    extensions: dict[str, str] | None = None,
    serial: int = 0,
) -> asyncssh.SSHCertificate:
    """Sign a host certificate; ``principals`` are the names and addresses of the host."""
    return _sign(
        ca_key,
        public_key,
        cert_type=CERT_TYPE_HOST,
        key_id=key_id,
        principals=principals,
        valid_after=valid_after,
        valid_before=valid_before,
        options={},
        extensions=_check_custom(extensions),
        serial=serial,
    )


def _check_custom(extensions: dict[str, str] | None) -> dict[str, str]:
    result: dict[str, str] = {}
    for name, value in (extensions or {}).items():
        if not _is_token(name):
            raise BadParameter(f"Certificate extension name {name!r} is not printable ASCII.")
        if name in _STANDARD_EXTENSIONS or name in _STANDARD_OPTIONS:
            raise BadParameter(f"{name!r} is a standard OpenSSH name, not a custom extension.")
        if not isinstance(value, str):
            raise BadParameter(f"The value of certificate extension {name!r} must be a string.")
        result[name] = value
    return result


def _is_token(name: object) -> bool:
    """Printable ASCII without spaces: ssh-keygen -L prints names as they are."""
    return isinstance(name, str) and bool(name) and all("!" <= ch <= "~" for ch in name)


def _source_address_value(addresses: list[str]) -> str:
    if not addresses:
        raise BadParameter("source_address, when given, must list at least one address.")
    blocks = []
    for address in addresses:
        try:
            blocks.append(str(ipaddress.ip_network(address.strip(), strict=False)))
        except ValueError as exc:
            raise BadParameter(f"{address!r} is not an IP address or CIDR block.") from exc
    return ",".join(blocks)


def _sign(
    ca_key: asyncssh.SSHKey,
    public_key: asyncssh.SSHKey | str | bytes,
    *,
    cert_type: int,
    key_id: str,
    principals: list[str],
    valid_after: datetime,
    valid_before: datetime,
    options: dict[str, str],
    extensions: dict[str, str],
    serial: int,
) -> asyncssh.SSHCertificate:
    subject = _as_public_key(public_key)
    algorithm, key_fields = _split_public_key(subject)
    cert_algorithm = _cert_algorithm(algorithm)
    after, before = _validity(valid_after, valid_before)
    if not 0 <= serial <= _MAX_UINT64:
        raise BadParameter("The certificate serial must fit in 64 unsigned bits.")
    options_data, extensions_data = _encode_tuples(options), _encode_tuples(extensions)
    body = b"".join(
        (
            String(cert_algorithm),
            String(os.urandom(_NONCE_BYTES)),
            key_fields,
            UInt64(serial),
            UInt32(cert_type),
            String(_check_key_id(key_id)),
            String(_encode_principals(principals)),
            UInt64(after),
            UInt64(before),
            String(options_data),
            String(extensions_data),
            String(b""),  # reserved
            String(ca_key.public_data),
        )
    )
    signature = _ca_sign(ca_key, body)
    handler = _certificate_class(cert_algorithm)
    if cert_type == CERT_TYPE_USER:
        decoders = (handler._user_option_decoders, handler._user_extension_decoders)
    else:
        decoders = (handler._host_option_decoders, handler._host_extension_decoders)
    # The same decoders asyncssh applies when it parses a certificate, so the object
    # answers exactly as a parsed one would (tests/auth/test_ca.py compares them).
    decoded = handler._decode_options(options_data, decoders[0], True)
    decoded.update(handler._decode_options(extensions_data, decoders[1], False))
    return handler(cert_algorithm, subject.convert_to_public(), body + String(signature),
                   list(dict.fromkeys(principals)), decoded, _public_of(ca_key.public_data), serial,
                   cert_type, key_id, after, before, None)


def _certificate_class(cert_algorithm: bytes) -> type[SSHOpenSSHCertificate]:
    """asyncssh's class for an OpenSSH certificate of this algorithm."""
    try:
        return _certificate_alg_map[cert_algorithm][1]  # type: ignore[return-value]
    except KeyError:
        raise BadParameter(f"asyncssh cannot hold a {cert_algorithm.decode()} "
                           "certificate") from None


@functools.lru_cache(maxsize=16)
def _public_of(public_data: bytes) -> asyncssh.SSHKey:
    """A CA's public key (the same few CAs sign every certificate)."""
    return decode_ssh_public_key(public_data)


def _as_public_key(key: asyncssh.SSHKey | str | bytes) -> asyncssh.SSHKey:
    """Accept a key object or an OpenSSH public key line, as a client would send it."""
    if isinstance(key, asyncssh.SSHKey):
        return key
    try:
        return asyncssh.import_public_key(key)
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise BadParameter("The public key to sign is not a valid SSH public key.") from exc


def _split_public_key(key: asyncssh.SSHKey) -> tuple[bytes, bytes]:
    """The key's algorithm name and the fields that follow it in its wire form.

    In a certificate the key's fields sit after the nonce, so the key's own public
    blob is reused minus its leading algorithm string; this works for every key type
    asyncssh supports without knowing each one's layout.
    """
    packet = SSHPacket(key.public_data)
    algorithm = packet.get_string()
    return algorithm, packet.get_remaining_payload()


def _cert_algorithm(key_algorithm: bytes) -> bytes:
    """``ssh-ed25519`` -> ``ssh-ed25519-cert-v01@openssh.com``; keeps the vendor suffix."""
    if _CERT_SUFFIX in key_algorithm:
        raise BadParameter("Sign a plain public key, not a certificate.")
    if key_algorithm.endswith(_OPENSSH_SUFFIX):
        key_algorithm = key_algorithm[: -len(_OPENSSH_SUFFIX)]
    return key_algorithm + _CERT_SUFFIX


def _validity(valid_after: datetime, valid_before: datetime) -> tuple[int, int]:
    for when, what in ((valid_after, "valid_after"), (valid_before, "valid_before")):
        if when.tzinfo is None or when.utcoffset() is None:
            raise BadParameter(f"{what} must be a timezone-aware datetime.")
    after, before = int(valid_after.timestamp()), int(valid_before.timestamp())
    if after < 0:
        raise BadParameter("valid_after must not be before 1970.")
    if before <= after:
        raise BadParameter("valid_before must be later than valid_after.")
    return after, before


def _check_key_id(key_id: str) -> str:
    if not key_id:
        raise BadParameter("A certificate needs a key id.")
    return key_id


def _encode_principals(principals: list[str]) -> bytes:
    # OpenSSH treats an empty list as "valid for any principal": never sign one.
    if not principals:
        raise BadParameter("A certificate needs at least one principal.")
    if any(not isinstance(p, str) or not p for p in principals):
        raise BadParameter("Certificate principals must be non-empty strings.")
    unique = list(dict.fromkeys(principals))
    return b"".join(String(p) for p in unique)


def _encode_tuples(items: dict[str, str]) -> bytes:
    """Critical options or extensions: sorted by name (names are unique dict keys).

    A flag has empty data; a value is a string nested inside the data string, as
    PROTOCOL.certkeys and golang.org/x/crypto/ssh (Teleport) encode it.
    """
    out = []
    for name in sorted(items, key=lambda n: n.encode("utf-8")):
        value = items[name]
        out.append(String(name) + String(String(value) if value else b""))
    return b"".join(out)


def _ca_sign(ca_key: asyncssh.SSHKey, data: bytes) -> bytes:
    # Prefer SHA-512 for an RSA CA (sig_algorithms[0] is SHA-256); Ed25519 and ECDSA
    # have a single signature algorithm.
    algorithms = ca_key.sig_algorithms
    sig_algorithm = b"rsa-sha2-512" if b"rsa-sha2-512" in algorithms else algorithms[0]
    try:
        return ca_key.sign(data, sig_algorithm)
    except (RuntimeError, ValueError) as exc:  # how asyncssh fails for a public-only key
        raise BadParameter("The CA key cannot sign: it is not a private key.") from exc


# --- reading extensions -----------------------------------------------------------


def read_cert_extensions(cert: bytes | str | asyncssh.SSHCertificate) -> dict[str, str]:
    """All extensions of a certificate, custom ones included, as ``name -> value``.

    ``cert`` is an ``SSHCertificate``, its wire bytes (``cert.public_data``) or an
    OpenSSH certificate line. Flags such as ``permit-pty`` map to ``""``. The CA
    signature is checked before anything is read (limen.sshauth reads certificates).
    """
    return read_certificate(cert).extensions


def read_cert_critical_options(cert: bytes | str | asyncssh.SSHCertificate) -> dict[str, str]:
    """The critical options (``source-address``, ``force-command``) as ``name -> value``."""
    return read_certificate(cert).critical_options


# --- the store on disk ------------------------------------------------------------

_DIR_MODE = 0o700
_PRIVATE_MODE = 0o600
_PUBLIC_MODE = 0o644


@dataclass(frozen=True)
class CAStore:
    """The cluster's CA keys, kept in ``DATA_DIR/ca``.

    ``user_ca`` signs user certificates, ``host_ca`` host certificates; ``tls_ca_key``
    and ``tls_ca_cert`` are the X.509 CA for HTTPS. Key fields are left out of the
    repr so a stray log line cannot print them.
    """

    directory: Path
    user_ca: asyncssh.SSHKey = field(repr=False)
    host_ca: asyncssh.SSHKey = field(repr=False)
    tls_ca_key: TLSPrivateKey = field(repr=False)
    tls_ca_cert: x509.Certificate = field(repr=False)

    @classmethod
    def load_or_create(cls, data_dir: Path, cluster_name: str, now: datetime) -> CAStore:
        """Load the CAs, creating any that are missing (the first start of a cluster).

        Each file is written whole under a temporary name and then linked into place
        only if no file has that name yet: a crash leaves no half key, and two processes
        starting at once end up with the same keys.
        """
        directory = Path(data_dir) / "ca"
        _ensure_private_dir(directory)
        user_ca = _load_or_create_ssh(directory / "user_ca")
        host_ca = _load_or_create_ssh(directory / "host_ca")
        tls_key = _load_or_create(
            directory / "tls_ca.key",
            lambda: dump_tls_key_pem(generate_tls_key()),
            load_tls_key_pem,
            _PRIVATE_MODE,
        )
        tls_cert = _load_or_create(
            directory / "tls_ca.crt",
            # A missing certificate beside an existing key (a crash between the two
            # writes) is re-issued for that key, so the CA pin does not change.
            lambda: dump_tls_cert_pem(reissue_tls_ca_cert(tls_key, cluster_name, now=now)),
            load_tls_cert_pem,
            _PUBLIC_MODE,
        )
        if tls_cert.public_key() != tls_key.public_key():
            raise LimenError(f"{directory / 'tls_ca.crt'} does not match tls_ca.key.")
        return cls(directory, user_ca, host_ca, tls_key, tls_cert)


#: The files of DATA_DIR/ca that make up the cluster's CAs, and their modes.
CA_FILES = {"user_ca": _PRIVATE_MODE, "host_ca": _PRIVATE_MODE,
            "tls_ca.key": _PRIVATE_MODE, "tls_ca.crt": _PUBLIC_MODE}


def new_ca_files(cluster_name: str, now: datetime) -> dict[str, bytes]:
    """A fresh set of CA files (in memory: nothing is written)."""
    tls_key = generate_tls_key()
    return {
        "user_ca": generate_ssh_key().export_private_key("openssh"),
        "host_ca": generate_ssh_key().export_private_key("openssh"),
        "tls_ca.key": dump_tls_key_pem(tls_key),
        "tls_ca.crt": dump_tls_cert_pem(reissue_tls_ca_cert(tls_key, cluster_name, now=now)),
    }


def write_ca_files(data_dir: Path, files: dict[str, bytes]) -> None:
    """Write CA files into DATA_DIR/ca, each atomically and only where none exists yet."""
    directory = Path(data_dir) / "ca"
    _ensure_private_dir(directory)
    for name, data in files.items():
        _write_new(directory / name, data, CA_FILES[name])


def _ensure_private_dir(directory: Path) -> None:
    directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    # mkdir's mode is filtered by the umask, and an existing directory keeps its own.
    os.chmod(directory, _DIR_MODE)


def _load_or_create_ssh(path: Path) -> asyncssh.SSHKey:
    return _load_or_create(
        path,
        lambda: generate_ssh_key().export_private_key("openssh"),
        _import_ssh_private,
        _PRIVATE_MODE,
    )


def _import_ssh_private(data: bytes) -> asyncssh.SSHKey:
    try:
        return asyncssh.import_private_key(data)
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise BadParameter("The CA key file is not an unencrypted OpenSSH private key.") from exc


def _load_or_create(
    path: Path, make: Callable[[], bytes], parse: Callable[[bytes], _T], mode: int
) -> _T:
    if not path.exists() and _write_new(path, make(), mode):
        log.info("created %s", path)
    return parse(_read_checked(path, mode))


def _read_checked(path: Path, mode: int) -> bytes:
    info = path.stat()
    if mode == _PRIVATE_MODE and stat.S_IMODE(info.st_mode) & 0o077:
        # Like sshd with a too-open host key, but we fix it rather than refuse to start.
        log.warning("%s was readable by other users; setting mode 0600", path)
        os.chmod(path, _PRIVATE_MODE)
    return path.read_bytes()


def _write_new(path: Path, data: bytes, mode: int) -> bool:
    """Write ``data`` to ``path`` atomically unless it exists; False if it did."""
    # mkstemp creates the file 0600, so the key is never readable by others, not even
    # for the moment before the chmod to the final mode.
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temp, path)  # like rename, but never replaces a key someone else wrote
        except FileExistsError:
            return False
        _fsync_dir(path.parent)
        return True
    finally:
        os.unlink(temp)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

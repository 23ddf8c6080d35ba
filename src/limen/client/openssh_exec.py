"""`limen ssh NODE` through OpenSSH's own ssh, when it is installed.

Importing asyncssh and cryptography takes longer here than a whole stock `ssh` through
the proxy, so for one node `limen ssh` checks what it can explain early (the login, the
certificate's validity and permissions: client/login_checks.py), then replaces itself
with ssh and the same config `limen config` prints. ssh makes both hops and verifies
both hosts through the cluster's host CA, exactly as it does for people who use that
config directly. LIMEN_SSH_CLIENT=native keeps the asyncssh client; so does a machine
without ssh. Label selectors, scp and session joining always use asyncssh.

Each hand-over leaves a memo of these checks, which lets the next `limen ssh` skip them
while nothing they read has changed (client/openssh_fast.py).

What changes for the person: messages from the proxy or the node come in ssh's words
("channel 0: open failed: administratively prohibited: <our sentence>"), and a remote
command killed by a signal exits 255 without the signal being named (what ssh does).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from limen import __version__
from limen.client import openssh_fast
from limen.client import profile as profiles
from limen.client.openssh import config_block

TYPE_CHECKING = False  # not typing's: importing typing costs `limen ssh` ~4 ms
if TYPE_CHECKING:
    from limen.client.login_checks import CertFields


def config_file(profile: profiles.Profile, jump_login: str) -> Path:
    """This profile's OpenSSH config, trusting this cluster's host CA alone (as the
    asyncssh client does), not every cluster's line in the shared known_hosts."""
    known_hosts = profile.dir / "openssh_known_hosts"
    if profile.host_ca:
        _write_if_changed(known_hosts, profile.host_ca.strip() + "\n")
    else:  # a profile from before the host CA was stored: the shared file
        known_hosts = profiles.Profile.known_hosts_path()
    path = profile.dir / "openssh_config"
    _write_if_changed(path, config_block(profile, jump_login, known_hosts=known_hosts))
    return path


def _write_if_changed(path: Path, text: str) -> None:
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    profiles.write_private(path, text, 0o600)


def remember(profile: profiles.Profile, cert: CertFields, login: str, config: Path) -> None:
    """Leave the memo the next `limen ssh` reads instead of redoing these checks
    (client/openssh_fast.py). A memo that cannot be written only costs that speed."""
    own_known_hosts = profile.dir / "openssh_known_hosts"
    files = [profile.dir / "profile.json", profile.cert_path, config]
    files += [own_known_hosts] if profile.host_ca else []
    text = openssh_fast.memo_text(
        version=__version__, home=str(profiles.limen_home()), proxy=profile.proxy,
        cluster=profile.cluster, login=login, config=str(config),
        valid=(cert.valid_after, cert.valid_before), principals=cert.principals,
        extensions=list(cert.extensions), files=[str(path) for path in files],
    )
    if text is not None:
        with contextlib.suppress(OSError):
            _write_if_changed(profile.dir / openssh_fast.MEMO_NAME, text)

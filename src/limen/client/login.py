"""Log in: a fresh Ed25519 key, a certificate for it, files OpenSSH reads, the agent."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
from datetime import UTC, datetime
from typing import Any

import asyncssh

from limen.client import profile as profiles
from limen.client.api import APIClient

log = logging.getLogger(__name__)


def login(
    client: APIClient,
    user: str,
    password: str,
    otp: str,
    ttl: str | None = None,
) -> profiles.Profile:
    key = new_key(user)
    public = key.export_public_key("openssh").decode()
    result = client.post(
        "/v1/login",
        {"user": user, "password": password, "otp": otp, "public_key": public, "ttl": ttl},
    )
    return keep(client, key, result)


def new_key(label: str) -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519", comment=f"{label}@limen")


def keep(client: APIClient, key: asyncssh.SSHKey, result: dict[str, Any],
         auth: str = "") -> profiles.Profile:
    """Store what a login answered (local or single sign-on) where OpenSSH finds it."""
    profile = profiles.Profile(
        proxy=client.proxy,
        cluster=result["cluster"],
        user=result["user"],
        roles=result["roles"],
        logins=result["principals"],
        valid_until=result["valid_before"],
        ssh_proxy=ssh_proxy_addr(client, result),
        host_ca=result["host_ca"],
        auth=auth,
    )
    save_credentials(profile, key, result["cert"], result["api_token"], client.ca_pem)
    profiles.add_known_host_ca(result["host_ca"])
    add_to_agent(profile, key, result["cert"])
    return profile


def ssh_proxy_addr(client: APIClient, result: dict[str, Any]) -> str:
    """The jump host's address. A proxy that listens on every address reports a loopback
    one; from another machine the host we reached the web API at is the better guess."""
    addr = result.get("ssh_proxy_addr") or ""
    if not addr:
        return ""
    host, _, port = addr.rpartition(":")
    web_host = client.proxy.rpartition(":")[0]
    if _is_loopback(host) and web_host and not _is_loopback(web_host):
        return f"{web_host}:{port}"
    return addr


def _is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def save_credentials(
    profile: profiles.Profile, key: asyncssh.SSHKey, cert: str, token: str, ca_pem: str
) -> None:
    profile.trust_ca(ca_pem)
    profiles.write_private(profile.key_path, key.export_private_key("openssh"))
    profiles.write_private(profile.pub_path, key.export_public_key("openssh"), 0o644)
    profiles.write_private(profile.cert_path, cert + "\n", 0o644)
    profiles.write_private(profile.token_path, token + "\n")
    profile.save()


def _agent_available() -> bool:
    return bool(os.environ.get("SSH_AUTH_SOCK"))


def add_to_agent(profile: profiles.Profile, key: asyncssh.SSHKey, cert_line: str) -> None:
    """Add key and certificate to a running ssh-agent, expiring with the certificate."""
    if not _agent_available():
        return
    cert = asyncssh.import_certificate(cert_line)
    lifetime = int((datetime.fromisoformat(profile.valid_until) - _now()).total_seconds())
    if lifetime <= 0:
        return

    async def add() -> None:
        async with asyncssh.connect_agent() as agent:
            await agent.add_keys([(key, cert)], lifetime=lifetime)

    try:
        asyncio.run(add())
    except (OSError, asyncssh.Error, ValueError) as exc:
        log.warning("could not add the key to ssh-agent: %s", exc)


def remove_from_agent(profile: profiles.Profile) -> None:
    """Remove this profile's key and certificate from a running ssh-agent."""
    if not _agent_available() or not profile.pub_path.exists():
        return
    blobs = {asyncssh.read_public_key(str(profile.pub_path)).public_data}
    if profile.cert_path.exists():
        blobs.add(asyncssh.read_certificate(str(profile.cert_path)).public_data)

    async def remove() -> None:
        async with asyncssh.connect_agent() as agent:
            for agent_key in await agent.get_keys():
                if agent_key.public_data in blobs:
                    await agent_key.remove()

    try:
        asyncio.run(remove())
    except (OSError, asyncssh.Error, ValueError) as exc:
        log.warning("could not remove the key from ssh-agent: %s", exc)


def _now() -> datetime:
    return datetime.now(UTC)

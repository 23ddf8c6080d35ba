"""What crosses the wire: no empty SSH_MSG_IGNORE before every packet (limen.sshpackets).

Stock OpenSSH logs each SSH_MSG_IGNORE it receives (ssh -vvv)."""

from __future__ import annotations

import asyncio

import asyncssh

from limen import sshpackets
from limen.sshalgs import hardened_options
from tests.node.conftest import Node


def test_the_node_sends_no_ignore_packets_to_a_stock_client(node: Node) -> None:
    """ssh -vvv logs each SSH_MSG_IGNORE it receives; asyncssh as it comes sends one
    before every packet after the key exchange (18 in this one)."""
    result = node.client().ssh("head -c 300000 /dev/zero", options=("-vvv",))
    assert result.returncode == 0 and result.stdout == bytes(300000), result.stderr[-2000:]
    assert b"receive packet: type" in result.stderr  # the log is at the level that shows it
    assert result.stderr.count(b"Received SSH2_MSG_IGNORE") == 0


def test_a_cbc_cipher_keeps_its_ignore_packets() -> None:
    """The packets guard CBC mode (RFC 4251, 9.3.1): with a CBC cipher they stay. The
    same exchange over CBC takes the client about twice the packets it takes over CTR."""
    hardened_options()  # installs the change, as every Limen endpoint does
    assert getattr(asyncssh.connection.SSHConnection.send_packet, sshpackets.MARK, False)

    async def packets_received(cipher: str) -> int:
        key = asyncssh.generate_private_key("ssh-ed25519")
        server = await asyncssh.listen(
            "127.0.0.1", 0, server_host_keys=[key], encryption_algs=[cipher],
            server_factory=_Open, process_factory=_exit_zero)
        port = server.sockets[0].getsockname()[1]
        try:
            async with asyncssh.connect(
                    "127.0.0.1", port, known_hosts=None, username="x",
                    encryption_algs=[cipher], client_keys=None, agent_path=None,
                    config=[], preferred_auth="none") as conn:
                before = conn._recv_seq  # asyncssh's count of packets received
                for _ in range(5):
                    await conn.run("true")
                return conn._recv_seq - before
        finally:
            server.close()

    cbc = asyncio.run(packets_received("aes128-cbc"))
    ctr = asyncio.run(packets_received("aes128-ctr"))
    assert cbc >= 1.8 * ctr, (cbc, ctr)


class _Open(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False  # no authentication: this test is about packets


def _exit_zero(process: asyncssh.SSHServerProcess) -> None:
    process.exit(0)

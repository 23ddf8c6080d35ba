"""The client-side dialer: connect_via_proxy + run_command against a stock sshd node."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import sys
import textwrap
from pathlib import Path

import asyncssh
import pexpect
import pytest

from limen.client.ssh import close_connection, connect_via_proxy, run_command
from limen.errors import AccessDenied, ConnectionProblem, NotFound
from tests.proxy.conftest import Jump, MakeJump
from tests.proxy.support import CLUSTER, Pki, UserFiles
from tests.support.ports import free_port


def dial(jump_port: int, user: UserFiles, pki: Pki, node: str = "node1", login: str = "root",
         host_ca: asyncssh.SSHKey | None = None, port: int | None = None):
    return connect_via_proxy(
        proxy_host="127.0.0.1", proxy_port=port or jump_port, jump_user="alice", node=node,
        login=login, key=user.key, cert=user.cert, host_ca=host_ca or pki.host_ca,
        cluster_name=CLUSTER, connect_timeout=10,
    )


async def test_runs_a_command_and_returns_its_exit_code(
    jump: Jump, alice: UserFiles, pki: Pki
) -> None:
    conn = await dial(jump.port, alice, pki)
    try:
        out, err = io.BytesIO(), io.BytesIO()
        result = await run_command(conn, "echo out; echo err >&2; exit 3",
                                   stdout=out, stderr=err)
        assert (result.code, result.status, result.signal) == (3, 3, None)
        assert (out.getvalue(), err.getvalue()) == (b"out\n", b"err\n")
    finally:
        await close_connection(conn)
    assert jump.host.connection_count == 0 or await _closes(jump)


async def _closes(jump: Jump) -> bool:
    # The proxy learns of the close a moment after the client: wait for it.
    async def gone() -> None:
        while jump.host.connection_count:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(gone(), 10)
    return True


async def test_stdin_and_pty(jump: Jump, alice: UserFiles, pki: Pki) -> None:
    data = os.urandom(3 * 1024 * 1024)
    conn = await dial(jump.port, alice, pki)
    try:
        out = io.BytesIO()
        result = await run_command(conn, "sha256sum", stdin=data, stdout=out)
        assert result.code == 0
        assert out.getvalue().split()[0].decode() == hashlib.sha256(data).hexdigest()

        tty_out = io.BytesIO()
        result = await run_command(conn, "stty size; tty -s && echo tty", stdout=tty_out,
                                   pty=True, term_size=(100, 30))
        assert result.code == 0
        assert tty_out.getvalue().split() == [b"30", b"100", b"tty"]

        killed = await run_command(conn, "kill -TERM $$")
        assert (killed.status, killed.signal, killed.code) == (None, "TERM", 143)
    finally:
        await close_connection(conn)


async def test_node_refusing_the_login_is_access_denied(
    jump: Jump, alice: UserFiles, pki: Pki
) -> None:
    with pytest.raises(AccessDenied, match="the node refused your certificate"):
        await dial(jump.port, alice, pki, login="daemon")
    await _closes(jump)


async def test_unknown_node_is_not_found(jump: Jump, alice: UserFiles, pki: Pki) -> None:
    with pytest.raises(NotFound, match="node 'nosuch' is not known"):
        await dial(jump.port, alice, pki, node="nosuch")


async def test_proxy_with_a_stranger_host_certificate_is_not_trusted(
    make_jump: MakeJump, alice: UserFiles, pki: Pki
) -> None:
    impostor = await make_jump(host_ca=pki.other_ca)
    with pytest.raises(ConnectionProblem, match="could not be verified"):
        await dial(impostor.port, alice, pki)


async def test_nothing_listening_is_a_connection_problem(alice: UserFiles, pki: Pki) -> None:
    with pytest.raises(ConnectionProblem, match="refused the connection"):
        await dial(0, alice, pki, port=free_port())


INTERACTIVE = textwrap.dedent(
    """
    import asyncio, sys
    import asyncssh
    REMOTE = 'stty size; while read line; do [ "$line" = q ] && exit 7; stty size; done'
    from limen.client.ssh import close_connection, connect_via_proxy, run_interactive

    async def main(port, key, cert, host_ca, cluster):
        conn = await connect_via_proxy(
            proxy_host="127.0.0.1", proxy_port=int(port), jump_user="alice", node="node1",
            login="root", key=asyncssh.read_private_key(key),
            cert=asyncssh.read_certificate(cert), host_ca=asyncssh.read_public_key(host_ca),
            cluster_name=cluster)
        try:
            return await run_interactive(conn, REMOTE)
        finally:
            await close_connection(conn)

    code = asyncio.run(main(*sys.argv[1:]))
    print(f"[exit {code}]")
    sys.exit(code)
    """
)


async def test_interactive_raw_terminal_resize_and_exit_code(
    jump: Jump, alice: UserFiles, pki: Pki, tmp_path: Path
) -> None:
    script = tmp_path / "interactive.py"
    script.write_text(INTERACTIVE)
    host_ca = tmp_path / "host_ca.pub"
    host_ca.write_bytes(pki.host_ca.export_public_key("openssh"))
    args = [str(script), str(jump.port), str(alice.key_path), str(alice.cert_path),
            str(host_ca), CLUSTER]

    def drive() -> int:
        child = pexpect.spawn(sys.executable, args, dimensions=(24, 80), timeout=30)
        try:
            child.expect(r"24 80\r\n")
            child.setwinsize(40, 132)  # the kernel sends the client SIGWINCH
            # Enter (a bare CR in raw mode) makes the remote print its size again; the
            # resize travels separately, so ask until it has arrived.
            for _ in range(50):
                child.send("\r")
                if child.expect([r"40 132\r\n", r"24 80\r\n"]) == 0:
                    break
            else:
                raise AssertionError("the new window size never reached the node")
            child.send("q\r")
            child.expect(r"\[exit 7\]")
            child.expect(pexpect.EOF)
        finally:
            child.close()
        return child.exitstatus

    assert await asyncio.to_thread(drive) == 7

"""Helpers for the web UI's tests: a person's browser as an HTTP client (cookies, the
Origin a browser sends, the CSRF token from the page), and the terminal's WebSocket as
a hand-made client would open it."""

from __future__ import annotations

import contextlib
import json
import re
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from websockets.sync.client import ClientConnection, connect

from limen.client.trust import insecure_context
from tests.support.cluster import PASSWORD, ClusterHarness, LimenUser

OPEN_SECONDS = 15.0  # the client's own open timeout is 10 s
T = TypeVar("T")
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no CSRF field"
    return found.group(1)


@dataclass
class Browser:
    """What a browser does with the web UI, spelled out in HTTP."""

    cluster: ClusterHarness
    http: httpx.Client = field(init=False)
    _sockets: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def __post_init__(self) -> None:
        self.http = httpx.Client(verify=insecure_context(), base_url=self.origin,
                                 headers={"origin": self.origin}, timeout=30)

    @property
    def origin(self) -> str:
        return f"https://{self.cluster.web_addr}"

    def close(self) -> None:
        self._sockets.close()
        self.http.close()

    def sign_in(self, user: LimenUser, otp: str | None = None) -> httpx.Response:
        """The sign-in form, filled in and sent (a fresh TOTP step unless given)."""
        form = self.http.get("/web/login")
        return self.http.post("/web/login", data={
            "username": user.name, "password": PASSWORD,
            "otp": otp or self.cluster.next_otp(user), "csrf_token": csrf_of(form.text),
        })

    def page(self, path: str) -> httpx.Response:
        return self.http.get(path)

    def csrf(self, path: str = "/web/nodes") -> str:
        return csrf_of(self.page(path).text)

    @property
    def session_cookie(self) -> str:
        return self.http.cookies.get("__Host-limen_session", "")

    def terminal(self, node: str, login: str, *, origin: str | None = None,
                 csrf: str | None = None, cols: int = 100, rows: int = 30) -> Terminal:
        """Open the terminal's WebSocket by hand and say hello."""
        socket = self.socket(f"node={node}&login={login}", origin=origin)
        token = self.csrf() if csrf is None else csrf
        socket.send(json.dumps({"type": "hello", "csrf": token, "cols": cols, "rows": rows}))
        return Terminal(socket)

    def socket(self, query: str, *, origin: str | None = None) -> ClientConnection:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        cookie = f"__Host-limen_session={self.session_cookie}"
        opened = _in_thread(lambda: connect(
            f"wss://{self.cluster.web_addr}/web/ws/terminal?{query}", ssl=context,
            additional_headers={"Origin": origin or self.origin, "Cookie": cookie},
            open_timeout=10, close_timeout=5,
        ), OPEN_SECONDS)
        if opened is None:
            # websockets' client can stay blocked in a TLS read after its own timeout;
            # the thread is left behind and the failure says what the proxy was doing.
            raise AssertionError(f"the proxy did not answer the WebSocket handshake in "
                                 f"{OPEN_SECONDS:g} s\n{self.cluster.loop_report()}")
        return self._sockets.enter_context(opened)


@dataclass
class Terminal:
    """The browser's end of a terminal: output so far, the closing frame."""

    socket: ClientConnection
    output: bytearray = field(default_factory=bytearray)
    messages: list[dict[str, Any]] = field(default_factory=list)
    closed_at: float | None = None

    def send(self, text: str) -> None:
        self.socket.send(text.encode())

    def read_until(self, predicate: Any, timeout: float, what: str) -> None:
        """Read frames until ``predicate(self)`` holds or the socket closes."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; "
                                     f"output so far: {self.text[-500:]!r}")
            try:
                frame = self.socket.recv(timeout=left)
            except TimeoutError:
                continue
            except Exception:  # noqa: BLE001 - closed: the predicate decides
                if self.closed_at is None:
                    self.closed_at = time.monotonic()
                if not predicate(self):
                    raise AssertionError(f"the terminal closed before {what}: "
                                         f"{self.close_info}; output {self.text[-500:]!r}"
                                         ) from None
                return
            if isinstance(frame, bytes):
                self.output.extend(frame)
            else:
                self.messages.append(json.loads(frame))

    def wait_closed(self, timeout: float) -> None:
        self.read_until(lambda t: t.closed_at is not None, timeout, "the terminal to close")

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    @property
    def ready(self) -> bool:
        return any(m.get("type") == "ready" for m in self.messages)

    @property
    def closed(self) -> dict[str, Any] | None:
        return next((m for m in self.messages if m.get("type") == "closed"), None)

    @property
    def close_info(self) -> tuple[int | None, str]:
        code = self.socket.close_code
        return code, self.socket.close_reason or ""


def _in_thread(call: Callable[[], T], timeout: float) -> T | None:
    """``call()`` in a daemon thread: its result (or exception), or None after ``timeout``."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome.append((False, exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        return None
    ok, value = outcome[0]
    if not ok:
        raise value
    return value

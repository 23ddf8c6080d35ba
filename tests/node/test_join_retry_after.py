"""What a joining node makes of a proxy's busy answer: it waits what the proxy says
(with jitter), within bounds whatever the proxy says, and treats anything else as the
proxy's error to show."""

from __future__ import annotations

import httpx
import pytest

from limen.node.cluster.membership import _busy_for


def _answer(status: int, retry_after: str | None) -> httpx.Response:
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    return httpx.Response(status, headers=headers)


def test_a_busy_answer_is_waited_out_with_jitter() -> None:
    waits = [_busy_for(_answer(503, "4")) for _ in range(50)]
    assert all(w is not None and 4.0 <= w <= 6.0 for w in waits)
    assert len(set(waits)) > 1  # not every node comes back in the same instant


@pytest.mark.parametrize(("told", "low", "high"), [("0", 1.0, 1.5), ("-5", 1.0, 1.5),
                                                   ("86400", 60.0, 90.0)])
def test_a_proxy_cannot_make_a_node_spin_or_wait_for_hours(told: str, low: float,
                                                            high: float) -> None:
    wait = _busy_for(_answer(503, told))
    assert wait is not None and low <= wait <= high


@pytest.mark.parametrize("told", ["nan", "inf", "Wed, 21 Oct 2026 07:28:00 GMT", "", None])
def test_anything_but_seconds_is_not_waited_for(told: str | None) -> None:
    assert _busy_for(_answer(503, told)) is None


def test_other_answers_are_not_busy() -> None:
    assert _busy_for(_answer(429, "5")) is None
    assert _busy_for(_answer(200, None)) is None

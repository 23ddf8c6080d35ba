"""Reading session recordings the way an auditor does: `limen recordings` and `limen play`."""

from __future__ import annotations

from typing import Any

from tests.support.ssh_access import SshUser, wait_until


def recordings(auditor: SshUser, *args: str) -> list[dict[str, Any]]:
    result = auditor.limen("recordings", *args, "--format", "json")
    assert result.returncode == 0, result.stderr
    return result.json()


def recordings_of(auditor: SshUser, user: str) -> list[dict[str, Any]]:
    return [r for r in recordings(auditor, "ls", "--limit", "1000") if r["user"] == user]


def complete_recording(auditor: SshUser, session_id: str, timeout: float = 15
                       ) -> dict[str, Any]:
    """The session's recording once the auth service has all of it."""
    return wait_until(
        lambda: next((r for r in recordings(auditor, "ls", "--limit", "1000")
                      if r["session_id"] == session_id and r["complete"]), None),
        timeout, f"the complete recording of session {session_id}",
    )


def printed_text(auditor: SshUser, session_id: str) -> str:
    """What the session printed, as `limen play --format text` shows it."""
    played = auditor.limen("play", session_id, "--format", "text")
    assert played.returncode == 0, played.stderr
    return played.stdout

"""Read a connector's secret where the resource says it lives: a file or the environment."""

from __future__ import annotations

import os
from pathlib import Path

from limen.errors import BadParameter
from limen.resources.connector import SecretSource


def read_secret(source: SecretSource, what: str) -> str:
    """The secret's text (a file's first line); a missing one is a sentence for the admin."""
    if source.env is not None:
        value = os.environ.get(source.env, "")
        if not value:
            raise BadParameter(f"{what}: the environment variable {source.env} of the auth "
                               "service is not set")
        return value
    assert source.file is not None
    try:
        lines = Path(source.file).read_text().splitlines()
    except OSError as exc:
        raise BadParameter(f"{what}: cannot read {source.file} ({exc.strerror})") from None
    if not lines or not lines[0].strip():
        raise BadParameter(f"{what}: {source.file} is empty")
    return lines[0].strip()

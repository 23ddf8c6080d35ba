"""Legacy scp (``scp -O``): the client runs ``scp -t`` (upload) or ``scp -f`` (download).

It is an ordinary command run through the executor as the user; this module only
recognises it so the session can check the file-copy permit and write an "scp" event.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass


@dataclass(frozen=True)
class ScpRequest:
    action: str  # "upload" (scp -t: the user sends) or "download" (scp -f)
    path: str
    recursive: bool


def parse_scp_command(command: str) -> ScpRequest | None:
    try:
        argv = shlex.split(command)
    except ValueError:
        return None
    if not argv or argv[0].rsplit("/", 1)[-1] != "scp":
        return None
    flags = "".join(arg[1:] for arg in argv[1:] if arg.startswith("-") and arg != "--")
    paths = [arg for arg in argv[1:] if not arg.startswith("-")]
    if "t" in flags:
        action = "upload"
    elif "f" in flags:
        action = "download"
    else:
        return None
    return ScpRequest(action, paths[-1] if paths else ".", "r" in flags)

"""Spare every process that imports asyncssh its ~140 ms search for liboqs.

On import, asyncssh looks for liboqs (post-quantum KEMs) with
``ctypes.util.find_library("oqs")`` and ``("liboqs")``. Where the library is absent
(the usual case), each call runs ``ldconfig -p`` and then the C compiler and the linker
in subprocesses before it gives up: most of `limen ssh`'s and `limen proxy ssh`'s
start-up. Limen needs nothing from liboqs (its ML-KEM key exchange comes from
cryptography; see sshalgs), but a host that has it keeps it: only when no ``liboqs.so*``
file is in the linker's usual directories is the answer "not found" given at once.
"""

from __future__ import annotations

import ctypes.util
import glob
from collections.abc import Callable

NAMES = ("oqs", "liboqs")
LIB_DIRS = ("/usr/local/lib*", "/usr/lib*", "/lib*", "/usr/lib*/*-linux-gnu",
            "/lib*/*-linux-gnu", "/usr/local/lib*/*-linux-gnu", "/opt/*/lib*")


def liboqs_present() -> bool:
    return any(glob.glob(f"{directory}/liboqs.so*") for directory in LIB_DIRS)


def install() -> None:
    """Answer find_library() for liboqs at once when it is not installed; idempotent."""
    original: Callable[[str], str | None] = ctypes.util.find_library
    if getattr(original, "limen_probe", False) or liboqs_present():
        return

    def find_library(name: str) -> str | None:
        return None if name in NAMES else original(name)

    find_library.limen_probe = True  # type: ignore[attr-defined]
    ctypes.util.find_library = find_library

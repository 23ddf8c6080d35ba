"""Spare every process that imports asyncssh its ~140 ms search for liboqs.

On import, asyncssh looks for liboqs (post-quantum KEMs) with
``ctypes.util.find_library("oqs")`` and ``("liboqs")``. Where the library is absent
(the usual case), each call runs ``ldconfig -p`` and then the C compiler and the linker
in subprocesses before it gives up: most of `limen ssh`'s and `limen proxy ssh`'s
start-up. Limen needs nothing from liboqs (its ML-KEM key exchange comes from
cryptography; see sshalgs), but a host that has it keeps it: only when no ``liboqs.so*``
file is in the linker's usual directories is the answer "not found" given at once.

The shortcut itself costs about 20 ms (ctypes.util and what it imports, and the search
of those directories), so it is put in place only when asyncssh is about to be imported:
commands that never import it, such as `limen proxy tls`, do not pay for it.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not typing's: importing typing costs `limen ssh` ~4 ms
if TYPE_CHECKING:  # (collections.abc too: ~1.5 ms of `limen ssh`)
    from collections.abc import Callable, Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType

NAMES = ("oqs", "liboqs")
LIB_DIRS = ("/usr/local/lib*", "/usr/lib*", "/lib*", "/usr/lib*/*-linux-gnu",
            "/lib*/*-linux-gnu", "/usr/local/lib*/*-linux-gnu", "/opt/*/lib*")


def liboqs_present() -> bool:
    import glob

    return any(glob.glob(f"{directory}/liboqs.so*") for directory in LIB_DIRS)


def install_before_asyncssh() -> None:
    """Install the shortcut just before asyncssh is first imported (or now, if it is)."""
    if "asyncssh" in sys.modules:
        install()
    elif not any(isinstance(finder, _BeforeAsyncssh) for finder in sys.meta_path):
        sys.meta_path.insert(0, _BeforeAsyncssh())


class _BeforeAsyncssh:
    """Asked first about every import: on asyncssh's, installs the shortcut, steps
    aside, and lets the usual finders find asyncssh. (A meta path finder needs only
    find_spec; importlib.abc's base class would cost `limen ssh` 10 ms of imports.)"""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname == "asyncssh":
            sys.meta_path.remove(self)
            install()
        return None


def install() -> None:
    """Answer find_library() for liboqs at once when it is not installed; idempotent."""
    import ctypes.util  # here, not at the top: see the module's docstring

    original: Callable[[str], str | None] = ctypes.util.find_library
    if getattr(original, "limen_probe", False) or liboqs_present():
        return

    def find_library(name: str) -> str | None:
        return None if name in NAMES else original(name)

    find_library.limen_probe = True  # type: ignore[attr-defined]
    ctypes.util.find_library = find_library

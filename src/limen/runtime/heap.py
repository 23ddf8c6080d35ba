"""The garbage collector of Limen's long-running processes, once start-up is done.

A full collection walks every object the process holds. In a node or a proxy, most of
them are what start-up built and keeps for good: modules, classes, functions, compiled
patterns, caches. Under bench/sessions.py (8 clients, 20 s), the one full collection in
each run stopped a node's event loop, and every session on it, for 138 to 183 ms, and
a proxy's for 100 to 110 ms; with this freeze, 41 to 44 ms and 8 to 12 ms, and the
sessions' p99 set-up time fell from 267-333 ms to 218-237 (three runs each).

gc.freeze() moves every object alive at that moment to a permanent generation that
collections no longer walk; objects made later are collected as before. The
collection just before it frees what start-up left behind, so that is not kept for
good. Frozen objects are still freed when their reference count falls to zero; only a
reference cycle among them would outlive its use, and start-up's objects are meant to
live as long as the process.
"""

from __future__ import annotations

import gc


def freeze_start_up() -> None:
    """Collect start-up's garbage, then keep what is left out of future collections."""
    gc.collect()
    gc.freeze()

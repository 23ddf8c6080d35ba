"""The modules a Python process imported, from its ``-X importtime`` report on stderr."""

from __future__ import annotations


def imported_modules(importtime_output: str) -> list[str]:
    """The modules reported, in the order they were imported (the header left out)."""
    return [line.split("|")[-1].strip() for line in importtime_output.splitlines()
            if line.startswith("import time:") and "|" in line
            and "imported package" not in line]

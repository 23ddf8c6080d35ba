"""Print records as a table (text), JSON or YAML: every listing command takes --format."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import yaml

FORMATS = ("text", "json", "yaml")


def add_format_flag(parser: Any) -> None:
    parser.add_argument("--format", choices=FORMATS, default="text", help="output format")


def emit(data: Any, fmt: str, text: str | None = None) -> None:
    """Write `data` as JSON/YAML, or `text` (a prepared human form) for text."""
    if fmt == "json":
        print(json.dumps(data, indent=2, default=str))
    elif fmt == "yaml":
        print(yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip())
    else:
        print(text if text is not None else json.dumps(data, indent=2, default=str))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain table rendered with rich; no colours when not on a terminal."""
    from rich.console import Console
    from rich.table import Table

    grid = Table(box=None, show_edge=False, pad_edge=False, header_style="bold")
    for header in headers:
        grid.add_column(header)
    for row in rows:
        grid.add_row(*("" if cell is None else str(cell) for cell in row))
    console = Console(file=sys.stdout, width=200, color_system=None, force_terminal=False)
    with console.capture() as capture:
        console.print(grid)
    return capture.get().rstrip("\n")

"""Load YAML into pydantic models with errors that name the field and the line."""

from __future__ import annotations

from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from limen.errors import BadParameter

M = TypeVar("M", bound=BaseModel)


class _Located:
    """Line numbers of every key in one YAML document, from PyYAML's node tree."""

    def __init__(self, node: yaml.Node | None) -> None:
        self._node = node

    def line_of(self, path: tuple[Any, ...]) -> int | None:
        node = self._node
        line = node.start_mark.line + 1 if node is not None else None
        for part in path:
            if isinstance(node, yaml.MappingNode):
                match = next((v for k, v in node.value if k.value == str(part)), None)
                key = next((k for k, v in node.value if k.value == str(part)), None)
                if match is None:
                    return line
                line, node = key.start_mark.line + 1, match
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if part >= len(node.value):
                    return line
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                return line
        return line


def load_documents(text: str, source: str) -> list[tuple[Any, _Located]]:
    """Parse every document in `text`; a syntax error names the line."""
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
        datas = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "it is not valid YAML"
        raise BadParameter(f"{source}: {problem}{where}") from None
    return [(d, _Located(n)) for d, n in zip(datas, nodes, strict=True) if d is not None]


def validate(model: type[M], data: Any, located: _Located, source: str) -> M:
    """Validate one document; the first error names the field path and its line."""
    if not isinstance(data, dict):
        raise BadParameter(f"{source}: expected a mapping of settings, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadParameter(describe(exc, located, source)) from None


def describe(exc: ValidationError, located: _Located, source: str) -> str:
    err = exc.errors()[0]
    path = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
    field = ".".join(str(p) for p in path) or "(document)"
    line = located.line_of(path)
    where = f" (line {line})" if line else ""
    message = err["msg"]
    if err["type"] == "extra_forbidden":
        message = "unknown field"
    elif message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    more = len(exc.errors()) - 1
    tail = f"; and {more} more problem{'s' if more > 1 else ''}" if more else ""
    return f"{source}: field '{field}'{where}: {message}{tail}"

"""Reading the project's YAML configuration files with errors that name the file and the key."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError


def format_validation_error(path: Path, err: ValidationError) -> str:
    """One line per problem: ``<file>: unknown key 'a.b'`` / ``missing required key`` / ``key 'a': <why>``."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"{path}: unknown key '{loc}'")
        elif e["type"] == "missing":
            lines.append(f"{path}: missing required key '{loc}'")
        else:
            lines.append(f"{path}: key '{loc}': {e['msg']}")
    return "\n".join(lines)


def read_mapping(path: Path, error: type[Exception], what: str) -> Mapping[str, Any]:
    """The YAML mapping in ``path``; ``error`` (naming the file) if it is missing, unreadable or not a mapping."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read: {exc}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(doc, Mapping):
        raise error(f"{path}: expected a mapping of keys, got {type(doc).__name__}")
    return doc

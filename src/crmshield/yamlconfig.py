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


def read_mapping(path: Path, error: type[Exception], what: str, unique_keys: bool = False) -> Mapping[str, Any]:
    """The YAML mapping in ``path``; ``error`` (naming the file) if it is missing, unreadable or not a mapping.

    With ``unique_keys``, a key repeated in one mapping is an error naming its dotted path (plain
    YAML silently keeps the last one)."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read: {exc}") from None
    try:
        if unique_keys:
            duplicate = _duplicate_key(yaml.compose(text, Loader=yaml.SafeLoader))
            if duplicate:
                raise error(f"{path}: key '{duplicate[0]}': duplicate key (again on line {duplicate[1]})")
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(doc, Mapping):
        raise error(f"{path}: expected a mapping of keys, got {type(doc).__name__}")
    return doc


def _duplicate_key(node: Any, where: str = "", seen: set[int] | None = None) -> tuple[str, int] | None:
    """(dotted path, line) of the first key repeated within one mapping of a composed YAML node tree."""
    import yaml

    seen = set() if seen is None else seen
    if node is None or id(node) in seen:  # an alias: its anchor was checked already
        return None
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for k, v in node.value:
            name = str(k.value) if isinstance(k, yaml.ScalarNode) else "?"
            here = f"{where}.{name}" if where else name
            if name != "<<":
                if name in keys:
                    return here, k.start_mark.line + 1
                keys.add(name)
            found = _duplicate_key(v, here, seen)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _duplicate_key(item, f"{where}.{i}" if where else str(i), seen)
            if found:
                return found
    return None

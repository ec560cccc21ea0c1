"""Source specs: how each landing export maps onto the canonical raw model, declared in YAML.

A source spec (``config/sources/<layout>.yml``; the one in force is
``$CRMSHIELD_SOURCE_SPEC``, default ``config/sources/generator.yml``) names,
for each of the four entities (contacts, companies, deals, tickets), the
landing file, its format, the natural key, the column that orders versions of
a record, and for every canonical field where it comes from (a CSV column or a
JSON path) and how ingest types it. :func:`load_source_spec` validates the file
with pydantic and builds the :class:`EntitySpec` / :class:`Field` objects
``crmshield.ingest`` runs on.

Only what ingest implements is accepted: an option it cannot honour yet (a
delimiter other than ``,``, an encoding other than UTF-8, a delivery mode other
than ``snapshot``, a file glob, formats on a non-date field, ...) is an error
naming the file and the key, never silently ignored.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic import Field as PydanticField

from crmshield.yamlconfig import format_validation_error, read_mapping

FieldType = Literal[
    "bigint", "integer", "decimal", "varchar", "date", "timestamp", "boolean", "category", "email", "phone"
]
ENTITIES: tuple[str, ...] = ("contacts", "companies", "deals", "tickets")  # ingest order: contacts first
ENV_VAR = "CRMSHIELD_SOURCE_SPEC"

#: The only values ingest implements today; anything else is rejected with a clear error.
SUPPORTED_DELIVERY = "snapshot"  # every export is a full snapshot of the CRM
SUPPORTED_ENCODING = "utf-8"
SUPPORTED_DELIMITER = ","
SUPPORTED_QUOTE = '"'
_NORMALIZED_CATEGORY = re.compile(r"^[a-z0-9]+$")  # what ingest compares 'allowed' values with
_GLOB = re.compile(r"[*?\[\]]")


@dataclass(frozen=True)
class Field:
    """One canonical column: where it comes from and how it is typed."""

    name: str
    source: str
    type: FieldType = "varchar"
    required: bool = False
    formats: tuple[str, ...] = ()
    allowed: tuple[str, ...] = ()  # for "category": values after normalization
    aliases: tuple[tuple[str, str], ...] = ()  # for "category": lower-cased alias -> value
    region: str = ""  # for "phone": the field whose value is the default region (ISO country)


@dataclass(frozen=True)
class EntitySpec:
    """How one landing file maps onto one canonical raw table."""

    entity: str
    file: str
    format: Literal["csv", "jsonl"]
    key: str
    updated_at: str
    fields: tuple[Field, ...]
    encoding: str = SUPPORTED_ENCODING
    delimiter: str = SUPPORTED_DELIMITER  # csv only
    quote: str = SUPPORTED_QUOTE  # csv only (a quote inside a quoted field is doubled)


class SourceSpecError(ValueError):
    """A source spec is missing or invalid; the message names the file and the key."""


# --------------------------------------------------------------------------- the YAML schema


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _FieldModel(_Strict):
    column: str | None = PydanticField(default=None, min_length=1)  # csv
    path: str | None = PydanticField(default=None, min_length=1)  # jsonl: a JSON path like $.via.channel
    type: FieldType
    required: bool = False
    formats: list[str] = PydanticField(default_factory=list)  # date / timestamp: strptime formats, tried in order
    allowed: list[str] = PydanticField(default_factory=list)  # category: values after normalization
    value_map: str | dict[str, str] | None = None  # category: a name under value_maps, or an inline map
    region: str | None = None  # phone: the canonical field holding the default region


class _EntityModel(_Strict):
    file: str = PydanticField(min_length=1)
    format: Literal["csv", "jsonl"]
    delivery: str = SUPPORTED_DELIVERY
    encoding: str = SUPPORTED_ENCODING
    delimiter: str | None = None
    quote: str | None = None
    key: str
    updated_at: str
    fields: dict[str, _FieldModel] = PydanticField(min_length=1)


class _EntitiesModel(_Strict):
    contacts: _EntityModel
    companies: _EntityModel
    deals: _EntityModel
    tickets: _EntityModel


class _SourceSpecModel(_Strict):
    version: Literal[1]
    description: str = ""
    value_maps: dict[str, dict[str, str]] = PydanticField(default_factory=dict)
    entities: _EntitiesModel


# --------------------------------------------------------------------------- loading


def default_source_spec_path() -> Path:
    from crmshield.config import project_root

    return project_root() / "config" / "sources" / "generator.yml"


def source_spec_path() -> Path:
    """The source spec in force: ``$CRMSHIELD_SOURCE_SPEC`` (relative to the project root) or the default."""
    env = os.environ.get(ENV_VAR)
    if not env:
        return default_source_spec_path()
    path = Path(env)
    if not path.is_absolute():
        from crmshield.config import project_root

        path = project_root() / path
    return path


_CACHE: dict[tuple[str, int, int], dict[str, EntitySpec]] = {}


def source_specs() -> dict[str, EntitySpec]:
    """The entity specs of the source spec in force (re-read when the file changes)."""
    path = source_spec_path()
    try:
        st = path.stat()
    except OSError:
        return load_source_spec(path)  # raises the "not found" error naming the file
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = load_source_spec(path)
    return dict(_CACHE[key])


def load_source_spec(path: Path | str) -> dict[str, EntitySpec]:
    """Read and validate one source spec; errors (SourceSpecError) name the file and the key."""
    path = Path(path)
    doc = read_mapping(path, SourceSpecError, "source spec", unique_keys=True)
    try:
        model = _SourceSpecModel.model_validate(doc)
    except ValidationError as exc:
        raise SourceSpecError(format_validation_error(path, exc)) from None
    problems: list[str] = []
    specs = {name: _entity(name, getattr(model.entities, name), model.value_maps, problems) for name in ENTITIES}
    _check_value_maps(model.value_maps, problems)
    files: dict[str, str] = {}
    for name, spec in specs.items():
        if spec.file in files:
            problems.append(f"key 'entities.{name}.file': '{spec.file}' is already the file of {files[spec.file]}")
        files.setdefault(spec.file, name)
    if problems:
        raise SourceSpecError("\n".join(f"{path}: {p}" for p in problems))
    return specs


def _check_value_maps(maps: dict[str, dict[str, str]], problems: list[str]) -> None:
    for name, mapping in maps.items():
        _check_map(f"value_maps.{name}", mapping, problems)


def _check_map(where: str, mapping: dict[str, str], problems: list[str]) -> None:
    if not mapping:
        problems.append(f"key '{where}': a value map needs at least one entry")
    for k, v in mapping.items():
        if k != k.strip().lower() or not k:
            problems.append(
                f"key '{where}.{k}': value map keys are matched against the trimmed, lower-cased value;"
                f" write it as '{k.strip().lower()}'"
            )
        if not v.strip():
            problems.append(f"key '{where}.{k}': maps to an empty value")


def _entity(name: str, ent: _EntityModel, value_maps: dict[str, dict[str, str]], problems: list[str]) -> EntitySpec:
    at = f"entities.{name}"
    if ent.delivery != SUPPORTED_DELIVERY:
        problems.append(
            f"key '{at}.delivery': '{ent.delivery}' is not supported yet; the only delivery mode is"
            f" '{SUPPORTED_DELIVERY}' (each export is a full snapshot)"
        )
    if ent.encoding.lower().replace("_", "-") not in ("utf-8", "utf8"):
        problems.append(f"key '{at}.encoding': '{ent.encoding}' is not supported yet; ingest reads UTF-8 only")
    if "/" in ent.file or "\\" in ent.file or ent.file in (".", ".."):
        problems.append(f"key '{at}.file': a file name in the landing zone, not a path: '{ent.file}'")
    elif _GLOB.search(ent.file):
        problems.append(
            f"key '{at}.file': '{ent.file}' is a glob; ingest reads exactly one file by name,"
            " globs are not supported yet"
        )
    for opt, supported in (("delimiter", SUPPORTED_DELIMITER), ("quote", SUPPORTED_QUOTE)):
        value = getattr(ent, opt)
        if value is None:
            continue
        if ent.format != "csv":
            problems.append(f"key '{at}.{opt}': only applies to format 'csv', this entity is '{ent.format}'")
        elif value != supported:
            problems.append(
                f"key '{at}.{opt}': {value!r} is not supported yet; ingest reads CSV with {opt} {supported!r}"
            )

    fields: list[Field] = []
    sources: dict[str, str] = {}
    for fname, f in ent.fields.items():
        fat = f"{at}.fields.{fname}"
        source = _source(fat, ent.format, f, problems)
        if ent.format == "jsonl" and source in sources:
            problems.append(f"key '{fat}.path': '{source}' is already the path of field '{sources[source]}'")
        sources.setdefault(source, fname)
        if f.formats and f.type not in ("date", "timestamp"):
            problems.append(f"key '{fat}.formats': only date and timestamp fields have formats, this is '{f.type}'")
        if f.type in ("date", "timestamp") and not f.formats:
            problems.append(f"key '{fat}.formats': a {f.type} field needs at least one format (e.g. '%Y-%m-%d')")
        aliases: tuple[tuple[str, str], ...] = ()
        if f.type != "category":
            for opt in ("allowed", "value_map"):
                if getattr(f, opt):
                    problems.append(f"key '{fat}.{opt}': only category fields have {opt}, this is '{f.type}'")
        else:
            if f.allowed and f.value_map is not None:
                problems.append(
                    f"key '{fat}.value_map': give either 'allowed' or 'value_map', not both"
                    " (with a value map, the allowed values are the map's values)"
                )
            elif not f.allowed and f.value_map is None:
                problems.append(f"key '{fat}': a category field needs 'allowed' values or a 'value_map'")
            for v in f.allowed:
                if not _NORMALIZED_CATEGORY.match(v):
                    problems.append(
                        f"key '{fat}.allowed': '{v}' can never match: values are compared after normalization"
                        " (lower case, letters and digits only)"
                    )
            if isinstance(f.value_map, str):
                if f.value_map not in value_maps:
                    known = ", ".join(sorted(value_maps)) or "none"
                    problems.append(f"key '{fat}.value_map': no value map '{f.value_map}' under value_maps ({known})")
                else:
                    aliases = tuple(sorted(value_maps[f.value_map].items()))
            elif isinstance(f.value_map, dict):
                _check_map(f"{fat}.value_map", f.value_map, problems)
                aliases = tuple(sorted(f.value_map.items()))
        if f.region is not None:
            if f.type != "phone":
                problems.append(f"key '{fat}.region': only phone fields have a region, this is '{f.type}'")
            elif f.region == fname or f.region not in ent.fields:
                problems.append(
                    f"key '{fat}.region': '{f.region}' is not another field of {name}"
                    f" ({', '.join(n for n in ent.fields if n != fname)})"
                )
        fields.append(
            Field(
                name=fname, source=source, type=f.type, required=f.required, formats=tuple(f.formats),
                allowed=tuple(f.allowed), aliases=aliases, region=f.region or "",
            )
        )  # fmt: skip

    names = ", ".join(ent.fields)
    for opt in ("key", "updated_at"):
        value = getattr(ent, opt)
        if value not in ent.fields:
            problems.append(f"key '{at}.{opt}': '{value}' is not one of the fields of {name} ({names})")
    if name == "contacts":  # ingest counts the reference date back from these two
        for needed in ("created_at", "updated_at"):
            f = ent.fields.get(needed)
            if f is None or f.type != "timestamp":
                problems.append(
                    f"key '{at}.fields.{needed}': contacts need a timestamp field '{needed}'"
                    " (the export's reference date is the latest contact update)"
                )
    return EntitySpec(
        entity=name, file=ent.file, format=ent.format, key=ent.key, updated_at=ent.updated_at, fields=tuple(fields),
        encoding=SUPPORTED_ENCODING, delimiter=ent.delimiter or SUPPORTED_DELIMITER, quote=ent.quote or SUPPORTED_QUOTE,
    )  # fmt: skip


def _source(fat: str, fmt: str, f: _FieldModel, problems: list[str]) -> str:
    if fmt == "csv":
        if f.path is not None:
            problems.append(f"key '{fat}.path': a csv field names its 'column', not a JSON path")
        if f.column is None:
            problems.append(f"key '{fat}.column': missing (the CSV header of this field)")
        return f.column or ""
    if f.column is not None:
        problems.append(f"key '{fat}.column': a jsonl field names its JSON 'path' (e.g. '$.id'), not a column")
    if f.path is None:
        problems.append(f"key '{fat}.path': missing (the JSON path of this field, e.g. '$.id')")
        return ""
    if not f.path.startswith("$"):
        problems.append(f"key '{fat}.path': '{f.path}' is not a JSON path; write it as '$.{f.path}'")
    return f.path

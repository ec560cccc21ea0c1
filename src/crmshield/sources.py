"""Source specs: how each landing export maps onto the canonical CRM model, declared in YAML.

A source spec (``config/sources/<layout>.yml``; the one in force is
``$CRMSHIELD_SOURCE_SPEC``, default ``config/sources/generator.yml``) names, for
each entity it delivers (contacts, companies, deals, tickets):

* **where and how**: the landing file name or glob (``contacts_*.csv``: every
  matching file is a delivery, taken in name order), the format (``csv``,
  ``jsonl``, ``json`` = one JSON array of records), the compression (``auto``
  from the extension, ``none``, ``gzip``, ``zip`` with one member), the
  encoding (``auto`` = BOM, else UTF-8 if the start of the file is valid UTF-8,
  else cp1252; or any Python codec name: ``utf-8``, ``utf-16``, ``cp1252``,
  ``latin-1``, ...), and for CSV the delimiter, quote and escape characters;
* **what a delivery is**: ``snapshot`` (the whole entity: it replaces what raw
  holds) or ``delta`` (changed records: upserted by key into raw);
* **records**: the natural ``key`` and the ``updated_at`` field that orders
  versions of a record (the latest wins; without one, the later delivery and
  the later row win);
* **fields**: for each canonical field it delivers, the CSV ``column`` or the
  JSON ``path``, other names the column has had (``aliases``: a renamed
  column), date formats (strptime ``%d-%m-%Y`` or ``DD-MM-YYYY``), number
  format (``decimal: ","``, ``thousands: "."``), categorical value maps onto
  the canonical values, and ``text_id`` for text identifiers (Salesforce
  ``003...``, ``CUST-0001``);
* **drift and bad rows**: what a new or missing column does (``error`` or
  ``warn``; ``ignore_columns`` lists columns known and deliberately not
  loaded), and ``max_bad_share``, the share of quarantined rows beyond which
  the delivery is refused.

The canonical model (:data:`CANONICAL`) is fixed: the raw tables always have
every canonical column, NULL where a source does not deliver it, so everything
downstream (privacy policy, Spark job, dbt, marts) is the same for every
source. An entity a source does not deliver at all is an empty raw table.

:func:`load_source_spec` validates the file with pydantic and reports every
problem at once, each naming the file and the key.
"""

from __future__ import annotations

import codecs
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
Format = Literal["csv", "jsonl", "json"]
Compression = Literal["auto", "none", "gzip", "zip"]
Delivery = Literal["snapshot", "delta"]
DriftAction = Literal["error", "warn"]
ENTITIES: tuple[str, ...] = ("contacts", "companies", "deals", "tickets")  # ingest order: contacts first
ENV_VAR = "CRMSHIELD_SOURCE_SPEC"
DEFAULT_MAX_BAD_SHARE = 0.2
THOUSANDS_SEPARATORS = ("", ",", ".", " ", "'", "\u00a0", "\u202f")

_NORMALIZED_CATEGORY = re.compile(r"^[a-z0-9]+$")  # what ingest compares 'allowed' values with
GLOB = re.compile(r"[*?\[\]]")


def _iso_countries() -> tuple[str, ...]:
    import phonenumbers

    return tuple(sorted(r for r in phonenumbers.SUPPORTED_REGIONS if len(r) == 2 and r.isalpha()))


# --------------------------------------------------------------------------- the canonical model


@dataclass(frozen=True)
class Canonical:
    """One column of a raw table: its type and, for categories, the values it may hold."""

    type: FieldType
    allowed: tuple[str, ...] = ()


#: ISO 3166-1 alpha-2 codes (the regions ``phonenumbers`` knows): what a country field holds in raw.
COUNTRIES: tuple[str, ...] = _iso_countries()
LIFECYCLE_STAGES = (
    "subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead", "opportunity", "customer", "evangelist",
    "other",
)  # fmt: skip
DEAL_STAGES = (
    "appointmentscheduled", "qualifiedtobuy", "presentationscheduled", "decisionmakerboughtin", "contractsent",
    "closedwon", "closedlost",
)  # fmt: skip

#: The canonical CRM model: the raw tables' columns, in order (each table then ends with the lineage
#: columns ``_source_file`` and ``_source_row``), and the id column each entity is keyed on.
CANONICAL: dict[str, dict[str, Canonical]] = {
    "contacts": {
        "contact_id": Canonical("bigint"),
        "first_name": Canonical("varchar"),
        "last_name": Canonical("varchar"),
        "email": Canonical("email"),
        "phone": Canonical("phone"),
        "date_of_birth": Canonical("date"),
        "street": Canonical("varchar"),
        "city": Canonical("varchar"),
        "postal_code": Canonical("varchar"),
        "country": Canonical("category", COUNTRIES),
        "lifecycle_stage": Canonical("category", LIFECYCLE_STAGES),
        "created_at": Canonical("timestamp"),
        "updated_at": Canonical("timestamp"),
        "marketing_consent": Canonical("boolean"),
        "analytics_consent": Canonical("boolean"),
        "company_id": Canonical("bigint"),
    },
    "companies": {
        "company_id": Canonical("bigint"),
        "name": Canonical("varchar"),
        "domain": Canonical("varchar"),
        "industry": Canonical("varchar"),
        "employees": Canonical("integer"),
        "annual_revenue": Canonical("decimal"),
        "country": Canonical("category", COUNTRIES),
        "city": Canonical("varchar"),
        "created_at": Canonical("timestamp"),
    },
    "deals": {
        "deal_id": Canonical("bigint"),
        "deal_name": Canonical("varchar"),
        "stage": Canonical("category", DEAL_STAGES),
        "pipeline": Canonical("varchar"),
        "amount": Canonical("decimal"),
        "currency": Canonical("varchar"),
        "close_date": Canonical("date"),
        "created_at": Canonical("timestamp"),
        "contact_id": Canonical("bigint"),
        "company_id": Canonical("bigint"),
    },
    "tickets": {
        "ticket_id": Canonical("bigint"),
        "requester_id": Canonical("bigint"),
        "subject": Canonical("varchar"),
        "description": Canonical("varchar"),
        "channel": Canonical("category", ("email", "web", "chat", "voice", "api")),
        "priority": Canonical("category", ("low", "normal", "high", "urgent")),
        "status": Canonical("category", ("new", "open", "pending", "solved", "closed")),
        "created_at": Canonical("timestamp"),
        "updated_at": Canonical("timestamp"),
        "solved_at": Canonical("timestamp"),
        "satisfaction": Canonical("category", ("good", "bad", "offered", "unoffered")),
    },
}
#: The id column of each entity: a source's ``key`` must be it.
CANONICAL_KEYS: dict[str, str] = {
    "contacts": "contact_id", "companies": "company_id", "deals": "deal_id", "tickets": "ticket_id",
}  # fmt: skip
#: Category fields whose canonical values are upper-case codes (matched case-insensitively, kept upper-case).
UPPER_CASE_CATEGORIES = frozenset({"country"})


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
    renamed_from: tuple[str, ...] = ()  # other names of the column (or JSON paths): a rename is not a loss
    decimal: str = "."  # numbers: the decimal separator
    thousands: str = ""  # numbers: the grouping separator removed before casting
    text_id: bool = False  # bigint ids given as text: mapped to a stable 63-bit number


@dataclass(frozen=True)
class EntitySpec:
    """How one entity's landing file(s) map onto one canonical raw table."""

    entity: str
    file: str  # a name in the landing zone, or a glob
    format: Literal["csv", "jsonl", "json"]
    key: str
    updated_at: str | None
    fields: tuple[Field, ...]
    encoding: str = "utf-8"  # a Python codec name, or "auto"
    delimiter: str = ","  # csv only
    quote: str = '"'  # csv only
    escape: str = '"'  # csv only (the default: a quote inside a quoted field is doubled)
    compression: str = "auto"
    delivery: str = "snapshot"
    on_new_column: str = "error"
    on_missing_column: str = "error"
    ignore_columns: tuple[str, ...] = ()
    max_bad_share: float = DEFAULT_MAX_BAD_SHARE

    @property
    def is_glob(self) -> bool:
        return GLOB.search(self.file) is not None


class SourceSpecError(ValueError):
    """A source spec is missing or invalid; the message names the file and the key."""


# --------------------------------------------------------------------------- the YAML schema


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _FieldModel(_Strict):
    column: str | None = PydanticField(default=None, min_length=1)  # csv
    path: str | None = PydanticField(default=None, min_length=1)  # jsonl / json: a JSON path like $.via.channel
    aliases: list[str] = PydanticField(default_factory=list)  # other names of the column / path (renames)
    type: FieldType | None = None  # the canonical type; may be omitted
    required: bool = False
    formats: list[str] = PydanticField(default_factory=list)  # date / timestamp: tried in order
    allowed: list[str] = PydanticField(default_factory=list)  # category: a subset of the canonical values
    value_map: str | dict[str, str] | None = None  # category: a name under value_maps, or an inline map
    region: str | None = None  # phone: the canonical field holding the default region
    decimal: Literal[".", ","] | None = None  # numbers: overrides the entity's
    thousands: str | None = None
    text_id: bool = False  # bigint ids given as text


class _EntityModel(_Strict):
    file: str = PydanticField(min_length=1)
    format: Format
    compression: Compression = "auto"
    delivery: Delivery = "snapshot"
    encoding: str = "auto"
    delimiter: str | None = None
    quote: str | None = None
    escape: str | None = None
    key: str
    updated_at: str | None = None
    decimal: Literal[".", ","] = "."
    thousands: str = ""
    on_new_column: DriftAction = "error"
    on_missing_column: DriftAction = "error"
    ignore_columns: list[str] = PydanticField(default_factory=list)
    max_bad_share: float = PydanticField(default=DEFAULT_MAX_BAD_SHARE, ge=0.0, le=1.0)
    fields: dict[str, _FieldModel] = PydanticField(min_length=1)


class _EntitiesModel(_Strict):
    contacts: _EntityModel | None = None
    companies: _EntityModel | None = None
    deals: _EntityModel | None = None
    tickets: _EntityModel | None = None


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
    """The entity specs of the source spec in force (re-read when the file changes); only the entities
    the source delivers, in ingest order."""
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
    specs = {
        name: _entity(name, ent, model.value_maps, problems)
        for name in ENTITIES
        if (ent := getattr(model.entities, name)) is not None
    }
    if not specs:
        problems.append("key 'entities': declare at least one of " + ", ".join(ENTITIES))
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


_DATE_TOKENS = (
    ("YYYY", "%Y"), ("YY", "%y"), ("MM", "%m"), ("DD", "%d"), ("HH", "%H"), ("mm", "%M"), ("ss", "%S"),
    ("SSSSSS", "%f"), ("SSS", "%f"),
)  # fmt: skip
_DATE_TOKEN = re.compile("|".join(t for t, _ in _DATE_TOKENS))


def strptime_format(fmt: str) -> str:
    """``DD-MM-YYYY`` style (YYYY YY MM DD HH mm ss SSS) -> ``%d-%m-%Y``; a format with ``%`` is kept."""
    if "%" in fmt:
        return fmt
    table = dict(_DATE_TOKENS)
    return _DATE_TOKEN.sub(lambda m: table[m.group(0)], fmt)


def normalize_encoding(name: str) -> str | None:
    """``auto`` or the canonical Python codec name (``utf-8``, ``utf-16``, ``cp1252``, ``iso8859-1``); None if
    Python has no such codec."""
    if name.strip().lower() == "auto":
        return "auto"
    try:
        return codecs.lookup(name.strip()).name
    except LookupError:
        return None


def _entity(name: str, ent: _EntityModel, value_maps: dict[str, dict[str, str]], problems: list[str]) -> EntitySpec:
    at = f"entities.{name}"
    canonical = CANONICAL[name]
    encoding = normalize_encoding(ent.encoding)
    if encoding is None:
        problems.append(
            f"key '{at}.encoding': '{ent.encoding}' is not an encoding Python knows"
            " (e.g. auto, utf-8, utf-16, cp1252, latin-1)"
        )
    if "/" in ent.file or "\\" in ent.file or ent.file in (".", ".."):
        problems.append(f"key '{at}.file': a file name (or glob) in the landing zone, not a path: '{ent.file}'")
    if ent.format == "csv":
        for opt in ("delimiter", "quote", "escape"):
            value = getattr(ent, opt)
            if value is not None and len(value) != 1:
                problems.append(f"key '{at}.{opt}': must be one character, got {value!r}")
        if ent.delimiter is not None and ent.delimiter in ('"', "\n", "\r") + ((ent.quote,) if ent.quote else ()):
            problems.append(f"key '{at}.delimiter': {ent.delimiter!r} cannot be the delimiter")
    else:
        for opt in ("delimiter", "quote", "escape"):
            if getattr(ent, opt) is not None:
                problems.append(f"key '{at}.{opt}': only applies to format 'csv', this entity is '{ent.format}'")
    if ent.thousands not in THOUSANDS_SEPARATORS or ent.thousands == ent.decimal:
        problems.append(f"key '{at}.thousands': {ent.thousands!r} is not a grouping separator other than the decimal")

    fields: list[Field] = []
    sources: dict[str, str] = {}
    for fname, f in ent.fields.items():
        fat = f"{at}.fields.{fname}"
        canon = canonical.get(fname)
        if canon is None:
            problems.append(
                f"key '{fat}': '{fname}' is not a field of the canonical {name} model ({', '.join(canonical)})"
            )
            continue
        ftype = f.type or canon.type
        if ftype != canon.type:
            problems.append(f"key '{fat}.type': {fname} is '{canon.type}' in the canonical model, not '{ftype}'")
        source = _source(fat, ent.format, f, problems)
        for src in (source, *f.aliases):
            if src in sources and sources[src] != fname:
                what = "column" if ent.format == "csv" else "path"
                problems.append(f"key '{fat}': {what} '{src}' is already the {what} of field '{sources[src]}'")
            sources.setdefault(src, fname)
        if ent.format != "csv":
            for alias in f.aliases:
                if not alias.startswith("$"):
                    problems.append(f"key '{fat}.aliases': '{alias}' is not a JSON path; write it as '$.{alias}'")
        if f.formats and ftype not in ("date", "timestamp"):
            problems.append(f"key '{fat}.formats': only date and timestamp fields have formats, this is '{ftype}'")
        if ftype in ("date", "timestamp") and not f.formats:
            problems.append(f"key '{fat}.formats': a {ftype} field needs at least one format (e.g. '%Y-%m-%d')")
        for opt in ("decimal", "thousands"):
            if getattr(f, opt) is not None and ftype not in ("integer", "bigint", "decimal"):
                problems.append(f"key '{fat}.{opt}': only number fields have a {opt} separator, this is '{ftype}'")
        decimal = f.decimal or ent.decimal
        thousands = f.thousands if f.thousands is not None else ent.thousands
        if f.thousands is not None and (thousands not in THOUSANDS_SEPARATORS or thousands == decimal):
            problems.append(f"key '{fat}.thousands': {thousands!r} is not a grouping separator other than the decimal")
        if f.text_id and ftype != "bigint":
            problems.append(f"key '{fat}.text_id': only id fields (bigint) can be given as text, this is '{ftype}'")
        aliases = _category(fat, fname, ftype, canon, f, value_maps, problems)
        if f.region is not None:
            if ftype != "phone":
                problems.append(f"key '{fat}.region': only phone fields have a region, this is '{ftype}'")
            elif f.region == fname or f.region not in ent.fields:
                problems.append(
                    f"key '{fat}.region': '{f.region}' is not another field of {name}"
                    f" ({', '.join(n for n in ent.fields if n != fname)})"
                )
        allowed = tuple(f.allowed) if f.allowed else (canon.allowed if ftype == "category" and not aliases else ())
        fields.append(
            Field(
                name=fname, source=source, type=ftype, required=f.required,
                formats=tuple(strptime_format(x) for x in f.formats), allowed=allowed, aliases=aliases,
                region=f.region or "", renamed_from=tuple(f.aliases), decimal=decimal, thousands=thousands,
                text_id=f.text_id,
            )
        )  # fmt: skip

    names = ", ".join(ent.fields)
    if ent.key != CANONICAL_KEYS[name]:
        problems.append(f"key '{at}.key': {name} are keyed on '{CANONICAL_KEYS[name]}', not '{ent.key}'")
    if ent.key not in ent.fields:
        problems.append(f"key '{at}.key': '{ent.key}' is not one of the fields of {name} ({names})")
    if ent.updated_at is not None:
        if ent.updated_at not in ent.fields:
            problems.append(f"key '{at}.updated_at': '{ent.updated_at}' is not one of the fields of {name} ({names})")
        elif canonical.get(ent.updated_at, Canonical("varchar")).type not in ("timestamp", "date"):
            problems.append(f"key '{at}.updated_at': '{ent.updated_at}' is not a date or timestamp field")
    for col in ent.ignore_columns:
        if col in sources:
            problems.append(f"key '{at}.ignore_columns': '{col}' is mapped to field '{sources[col]}'")
    if ent.format == "csv":
        delimiter, quote = ent.delimiter or ",", ent.quote or '"'
        escape = ent.escape or quote
    else:
        delimiter, quote, escape = ",", '"', '"'
    return EntitySpec(
        entity=name, file=ent.file, format=ent.format, key=ent.key, updated_at=ent.updated_at, fields=tuple(fields),
        encoding=encoding or "auto", delimiter=delimiter, quote=quote, escape=escape, compression=ent.compression,
        delivery=ent.delivery, on_new_column=ent.on_new_column, on_missing_column=ent.on_missing_column,
        ignore_columns=tuple(ent.ignore_columns), max_bad_share=ent.max_bad_share,
    )  # fmt: skip


def _category(
    fat: str,
    fname: str,
    ftype: str,
    canon: Canonical,
    f: _FieldModel,
    value_maps: dict[str, dict[str, str]],
    problems: list[str],
) -> tuple[tuple[str, str], ...]:
    """Validate a field's category options; returns its value map as sorted (alias, value) pairs."""
    if ftype != "category":
        for opt in ("allowed", "value_map"):
            if getattr(f, opt):
                problems.append(f"key '{fat}.{opt}': only category fields have {opt}, this is '{ftype}'")
        return ()
    if f.allowed and f.value_map is not None:
        problems.append(
            f"key '{fat}.value_map': give either 'allowed' or 'value_map', not both"
            " (with a value map, the allowed values are the map's values)"
        )
    for v in f.allowed:
        if not _NORMALIZED_CATEGORY.match(v):
            problems.append(
                f"key '{fat}.allowed': '{v}' can never match: values are compared after normalization"
                " (lower case, letters and digits only)"
            )
        elif v not in canon.allowed:
            problems.append(f"key '{fat}.allowed': '{v}' is not a canonical {fname} value ({', '.join(canon.allowed)})")
    mapping: dict[str, str] = {}
    if isinstance(f.value_map, str):
        if f.value_map not in value_maps:
            known = ", ".join(sorted(value_maps)) or "none"
            problems.append(f"key '{fat}.value_map': no value map '{f.value_map}' under value_maps ({known})")
        else:
            mapping = value_maps[f.value_map]
    elif isinstance(f.value_map, dict):
        _check_map(f"{fat}.value_map", f.value_map, problems)
        mapping = f.value_map
    for k, v in mapping.items():
        if v not in canon.allowed:
            shown = ", ".join(canon.allowed) if len(canon.allowed) <= 12 else "ISO 3166-1 alpha-2 codes"
            problems.append(f"key '{fat}.value_map.{k}': '{v}' is not a canonical {fname} value ({shown})")
    return tuple(sorted(mapping.items()))


def _source(fat: str, fmt: str, f: _FieldModel, problems: list[str]) -> str:
    if fmt == "csv":
        if f.path is not None:
            problems.append(f"key '{fat}.path': a csv field names its 'column', not a JSON path")
        if f.column is None:
            problems.append(f"key '{fat}.column': missing (the CSV header of this field)")
        return f.column or ""
    if f.column is not None:
        problems.append(f"key '{fat}.column': a {fmt} field names its JSON 'path' (e.g. '$.id'), not a column")
    if f.path is None:
        problems.append(f"key '{fat}.path': missing (the JSON path of this field, e.g. '$.id')")
        return ""
    if not f.path.startswith("$"):
        problems.append(f"key '{fat}.path': '{f.path}' is not a JSON path; write it as '$.{f.path}'")
    return f.path

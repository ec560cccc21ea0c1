"""Onboarding profile of an unknown export: what is in it, and a draft source spec and policy for it.

:func:`profile` reads a sample (the first ``sample_rows`` records, streamed: the
file is never read whole) and detects the encoding (BOM, else UTF-8, else
cp1252), the format (CSV, JSON lines or a JSON array), for CSV the delimiter,
quote and header; it infers each column's type from the values read as text
(a digit string with a leading zero stays text: postal codes, phone numbers)
and classifies its likely content (email, phone, person name, date of birth,
postal code, address, free text with PII, categorical, id, numeric, date) from
its name and its values, with a confidence and the evidence as counts.

:func:`write_drafts` writes ``<stem>.source.yml`` (the schema of
:mod:`crmshield.sources`, for the profiled entity only: the other entities are
empty raw tables) and ``<stem>.policy.yml`` (draft privacy-policy entries). The
draft declares what was detected (encoding, delimiter, quote, decimal comma,
grouping separator, date formats, text ids) and maps the file's columns onto the
canonical fields by name similarity (the spec in force lends its column names as
hints) and content class; every other column of the file is listed under
``ignore_columns`` with its detected type and class, so the draft loads and
ingests as it stands, and a column is never dropped unclassified. What needs a
person (a value map for non-canonical category values, an ambiguous date format,
a missing key) is a TODO comment, never an invalid key.

No data value is ever printed or written: the report and the drafts hold
column names, types, classes, formats and counts only.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import io
import json
import re
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any

import yaml

from crmshield.sources import (
    CANONICAL,
    CANONICAL_KEYS,
    ENTITIES,
    UPPER_CASE_CATEGORIES,
    SourceSpecError,
    load_source_spec,
    source_spec_path,
)

DEFAULT_SAMPLE_ROWS = 10_000
SNIFF_BYTES = 64 * 1024
DELIMITERS = ",;\t|"
CATEGORICAL_MAX_DISTINCT = 20
DATE_FORMATS: tuple[str, ...] = ("%Y-%m-%d", "%d-%m-%Y", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%Y/%m/%d", "%Y%m%d")
TIMESTAMP_FORMATS: tuple[str, ...] = (
    "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z",
    "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S.%f",
    "%d-%m-%Y %H:%M:%S", "%d-%m-%Y %H:%M", "%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M",
    "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y %I:%M %p", "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M",
)  # fmt: skip
TYPE_SHARE = 0.95  # a type holds when this share of the non-null values parse as it
BOOL_VALUES = frozenset({"true", "false", "yes", "no", "y", "n", "t", "f", "0", "1"})
INGEST_BOOL_VALUES = frozenset({"true", "false", "yes", "no", "y", "n", "0", "1"})  # what ingest reads as boolean
CATEGORY_FIT_MAX_DISTINCT = 500  # category fit (distinct values that are canonical) is counted up to this many
DRAFT_HEADER = "# DRAFT: review before use."

_EMAIL = re.compile(r"^[A-Za-z0-9._%+'-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")
_EMAIL_IN = re.compile(r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_PHONE = re.compile(r"^(?:\+|00)?[\d\s().\-/]{7,22}$")
_PHONE_IN = re.compile(r"(?<![\w+])(?:\+|00)\d[\d\s().\-]{6,18}\d|\(?\d{3}\)?[\s.\-]\d{3}[\s.\-]\d{4}")
_INT = re.compile(r"^[+-]?\d+$")
_DEC_DOT = re.compile(r"^[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)\.\d+$|^[+-]?\d+\.?$")
_DEC_COMMA = re.compile(r"^[+-]?(?:\d{1,3}(?:\.\d{3})+|\d+),\d+$")
_GROUPED_COMMA = re.compile(r"^[+-]?\d{1,3}(?:\.\d{3})+,\d+$")  # 1.234,56
_GROUPED_DOT = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+\.\d+$")  # 1,234.56
_PERSON = re.compile(r"^[A-ZÀ-Ý][a-zà-ÿ]+(?:[ '\-][A-ZÀ-Ý][a-zà-ÿ]+){0,2}$")
_POSTAL = re.compile(
    r"^(?:\d{5}(?:-\d{4})?|\d{4}\s?[A-Z]{2}|[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}|[A-Z]\d[A-Z]\s?\d[A-Z]\d)$"
)
_ADDRESS = re.compile(
    r"^\d+[A-Za-z]?,?\s+\w.*\b(?:st|street|ave|avenue|rd|road|blvd|lane|ln|dr|drive|way|court|ct|place|pl)\b\.?"
    r"|\b(?:straße|strasse|str\.|weg|rue|calle|via|laan|straat)\b",
    re.IGNORECASE,
)
_ID_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-:.]*$")

_NAME_HINTS: dict[str, tuple[str, ...]] = {
    "email": ("email", "e mail", "mail", "emailaddress"),
    "phone": ("phone", "tel", "telephone", "mobile", "cell", "fax", "telefon", "phonenumber", "msisdn"),
    "person_name": ("first name", "last name", "full name", "given name", "surname", "family name", "firstname",
                    "lastname", "fullname", "givenname", "familyname", "contact name", "customer name", "name"),
    "date_of_birth": ("birth", "dob", "birthday", "born", "birthdate", "date of birth", "geburtsdatum"),
    "postal_code": ("postal", "zip", "postcode", "post code", "zipcode", "plz", "postleitzahl", "postalcode"),
    "address": ("address", "street", "addr", "strasse", "straße", "address line", "line1", "line 1", "adresse"),
    "id": ("id", "key", "uuid", "guid", "number", "no", "nr", "code", "ref", "identifier"),
}  # fmt: skip
_NON_PERSON_NAME = ("company", "deal", "product", "file", "user", "domain", "account", "plan", "pipeline", "stage")


class ProfileError(ValueError):
    """The file cannot be profiled (missing, empty, not CSV or JSON)."""


# --------------------------------------------------------------------------- result types


@dataclass
class ColumnProfile:
    name: str
    source: str  # csv: the header; json: a JSON path like $.via.channel
    type: str  # bigint | integer | decimal | boolean | date | timestamp | varchar
    kind: str  # content class, see CLASSES
    confidence: float
    rows: int
    nulls: int
    distinct: int
    formats: list[str] = field(default_factory=list)
    decimal_separator: str | None = None
    thousands_separator: str | None = None  # a grouping separator seen in the sample ("." in 1.234,56)
    evidence: dict[str, Any] = field(default_factory=dict)  # counts and header words only
    #: canonical category field -> {"canonical": distinct sample values that are canonical as written,
    #: "value_map": ... once the spec in force's value map for that field is applied}; counts only
    category_fit: dict[str, dict[str, int]] = field(default_factory=dict)


CLASSES = (
    "email", "phone", "person_name", "date_of_birth", "postal_code", "address", "free_text_pii", "free_text",
    "categorical", "id", "numeric", "date", "text", "empty",
)  # fmt: skip


@dataclass
class FileProfile:
    file: str
    entity: str
    sample_rows: int
    rows_read: int
    encoding: str
    bom: bool
    encoding_note: str | None
    format: str  # csv | jsonl | json_array
    delimiter: str | None
    quote: str | None
    header: bool | None
    columns: list[ColumnProfile]
    invalid_records: int = 0  # JSON lines that do not parse as an object (ingest quarantines them)
    todos: list[str] = field(default_factory=list)
    drafts: dict[str, str] = field(default_factory=dict)
    spec_loads: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- reading


def _detect_encoding(head: bytes) -> tuple[str, bool, str | None]:
    """(python codec, has BOM, note). BOMs first; then strict UTF-8; else cp1252."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig", True, None
    if head.startswith(codecs.BOM_UTF16_LE) or head.startswith(codecs.BOM_UTF16_BE):
        return "utf-16", True, None
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if (
            len(head) < SNIFF_BYTES or exc.start < len(head) - 4
        ):  # not just a multi-byte character cut at the end of the sniff window
            return "cp1252", False, "not valid UTF-8: read as cp1252 (Windows-1252), a guess"
    return "utf-8", False, None


def _open_text(path: Path, encoding: str) -> io.TextIOWrapper:
    return open(path, encoding=encoding, newline="", errors="replace")  # noqa: SIM115 - the caller closes it


def _detect_format(text_head: str) -> str:
    stripped = text_head.lstrip()
    if stripped.startswith("["):
        return "json_array"
    if stripped.startswith("{"):
        return "jsonl"
    return "csv"


def _flatten(obj: Any, prefix: str = "$") -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = f"{prefix}.{k}"
            if isinstance(v, dict):
                out.update(_flatten(v, key))
            elif v is None:
                out[key] = None
            elif isinstance(v, (list, tuple)):
                out[key] = json.dumps(v, ensure_ascii=False)
            elif isinstance(v, bool):
                out[key] = "true" if v else "false"
            else:
                out[key] = str(v)
    return out


def _iter_json_array(fh: io.TextIOBase) -> Iterator[Any]:
    """Stream the elements of a top-level JSON array, chunk by chunk."""
    dec = json.JSONDecoder()
    buf, pos, started, eof = "", 0, False, False
    while True:
        if not eof and len(buf) - pos < SNIFF_BYTES:
            chunk = fh.read(SNIFF_BYTES)
            eof = not chunk
            buf = buf[pos:] + chunk
            pos = 0
        while pos < len(buf) and buf[pos] in " \t\r\n,":
            pos += 1
        if not started:
            if pos < len(buf) and buf[pos] == "[":
                started, pos = True, pos + 1
                continue
            if eof:
                return
            continue
        if pos < len(buf) and buf[pos] == "]":
            return
        if pos >= len(buf):
            if eof:
                return
            continue
        try:
            obj, end = dec.raw_decode(buf, pos)
        except json.JSONDecodeError:
            if eof:
                raise ProfileError("not a valid JSON array") from None
            chunk = fh.read(SNIFF_BYTES)  # the element is cut by the chunk end: read more
            eof = not chunk
            buf += chunk
            continue
        pos = end
        yield obj


def _read_json(path: Path, encoding: str, fmt: str, n: int) -> tuple[list[str], list[list[str | None]], int]:
    records: list[dict[str, str | None]] = []
    invalid = 0
    with _open_text(path, encoding) as fh:
        if fmt == "jsonl":
            for line in fh:
                if len(records) >= n:
                    break
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    invalid += 1  # counted, never shown
                    continue
                if isinstance(obj, dict):
                    records.append(_flatten(obj))
                else:
                    invalid += 1
        else:
            records = [_flatten(o) for o in islice(_iter_json_array(fh), n)]
    names: dict[str, None] = {}
    for r in records:
        names.update(dict.fromkeys(r))
    cols = list(names)
    if not records:
        raise ProfileError(f"{path}: no JSON object in the sample")
    return cols, [[r.get(c) for c in cols] for r in records], invalid


def _sniff_csv(text_head: str) -> tuple[str, str]:
    lines = text_head.splitlines()
    sample = "\n".join(lines[:-1] if len(lines) > 1 else lines)  # the last line may be cut
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=DELIMITERS)
        return dialect.delimiter, dialect.quotechar or '"'
    except csv.Error:
        first = lines[0] if lines else ""
        counts = {d: first.count(d) for d in DELIMITERS}
        best = max(counts, key=lambda d: counts[d])
        return (best if counts[best] else ","), '"'


def _plain_text(v: str) -> bool:
    return _scalar_type(v) == "varchar" and not _EMAIL.match(v)


def _has_header(first: list[str], rest: list[list[str]], text_head: str) -> bool:
    if not first or any(not c.strip() for c in first) or len(set(first)) != len(first):
        return False
    if not all(_plain_text(c.strip()) for c in first):
        return False
    for i, c in enumerate(first):  # a first-row cell repeated below it is data, not a header
        if any(i < len(r) and r[i] == c for r in rest):
            return False
    for i in range(len(first)):  # a column typed below the first row: the first row is a header
        vals = [r[i].strip() for r in rest if i < len(r) and r[i].strip()]
        if vals and _infer_type(vals)[0] != "varchar":
            return True
    try:
        return csv.Sniffer().has_header(text_head)
    except csv.Error:
        return True


def _read_csv(
    path: Path, encoding: str, text_head: str, n: int
) -> tuple[str, str, bool, list[str], list[list[str | None]]]:
    delimiter, quote = _sniff_csv(text_head)
    with _open_text(path, encoding) as fh:
        reader = csv.reader(fh, delimiter=delimiter, quotechar=quote)
        rows = [r for r in islice(reader, n + 1) if r]
    if not rows:
        raise ProfileError(f"{path}: no rows")
    header = _has_header(rows[0], rows[1:200], text_head)
    width = max(len(r) for r in rows)
    if header:
        cols, data = [c.strip() for c in rows[0]], rows[1:]
        cols += [f"column_{i + 1}" for i in range(len(cols), width)]
    else:
        cols, data = [f"column_{i + 1}" for i in range(width)], rows[:n]
    table = [[(r[i] if i < len(r) else None) for i in range(len(cols))] for r in data]
    return delimiter, quote, header, cols, table


# --------------------------------------------------------------------------- types


def _scalar_type(v: str) -> str:
    if _INT.match(v):
        return "integer"
    if _DEC_DOT.match(v) or _DEC_COMMA.match(v):
        return "decimal"
    return "varchar"


def _fits(values: list[str], test: Any) -> bool:
    allowed = (1 - TYPE_SHARE) * len(values)
    bad = 0
    for v in values:
        if not test(v):
            bad += 1
            if bad > allowed:  # stop early: text columns fail fast
                return False
    return True


def _parses(fmt: str) -> Any:
    def test(v: str) -> bool:
        try:
            datetime.strptime(v, fmt)
        except ValueError:
            return False
        return True

    return test


def _infer_type(values: list[str]) -> tuple[str, list[str], str | None, dict[str, int]]:
    """(type, formats, decimal separator, evidence) of non-null, stripped text values."""
    ev: dict[str, int] = {}
    if not values:
        return "varchar", [], None, ev
    leading_zero = sum(1 for v in values if len(v) > 1 and v.isdigit() and v.startswith("0"))
    if leading_zero:
        ev["leading_zero_digit_values"] = leading_zero
        return "varchar", [], None, ev  # postal codes, phone numbers: the zero must survive
    lowered = {v.lower() for v in values}
    if lowered <= BOOL_VALUES and len(lowered) <= 2 and not (lowered <= {"0", "1"} and len(values) < 2):
        unreadable = sum(1 for v in values if v.lower() not in INGEST_BOOL_VALUES)
        if unreadable:
            ev["unreadable_boolean_values"] = unreadable  # t / f: ingest reads true/false, yes/no, y/n, 1/0
        return "boolean", [], None, ev
    if all(_INT.match(v) for v in values):
        big = any(abs(int(v)) >= 2**31 for v in values)
        return ("bigint" if big else "integer"), [], None, ev
    dots = sum(1 for v in values if _INT.match(v) or _DEC_DOT.match(v))
    commas = sum(1 for v in values if _INT.match(v) or _DEC_COMMA.match(v))
    if max(dots, commas) >= TYPE_SHARE * len(values):
        sep = "," if commas > dots else "."
        ev["nonconforming_values"] = len(values) - max(dots, commas)
        if sep == ",":
            ev["decimal_comma_values"] = sum(1 for v in values if _DEC_COMMA.match(v))
        grouped = sum(1 for v in values if (_GROUPED_COMMA if sep == "," else _GROUPED_DOT).match(v))
        if grouped:
            ev["grouped_values"] = grouped  # thousands separators: "." with a decimal comma, "," with a dot
        return "decimal", [], sep, ev
    probe = values[:2000]
    for kind, formats in (("date", DATE_FORMATS), ("timestamp", TIMESTAMP_FORMATS)):
        fitting = [f for f in formats if _fits(probe, _parses(f))]
        if fitting:
            orders = {f[:2] for f in fitting if f[:2] in ("%d", "%m")}
            if len(orders) > 1:  # day-first and month-first both fit (no day above 12 in the sample)
                ev["ambiguous_formats"] = len(fitting)
            return kind, fitting, None, ev
    # mixed date and timestamp values (e.g. some rows without time): a timestamp with several formats
    if any(_parses(f)(probe[0]) for f in TIMESTAMP_FORMATS):
        fmts = [f for f in TIMESTAMP_FORMATS + DATE_FORMATS if any(_parses(f)(v) for v in probe)]
        covered = sum(1 for v in probe if any(_parses(f)(v) for f in fmts))
        if covered >= TYPE_SHARE * len(probe):
            return "timestamp", fmts, None, ev
    return "varchar", [], None, ev


# --------------------------------------------------------------------------- classes


def _norm(name: str) -> str:
    name = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name.split(".")[-1])  # camelCase and the last JSON path part
    return " ".join(re.findall(r"[a-z0-9äöüß]+", name.lower()))


def _hint(name: str) -> str | None:
    n = _norm(name)
    words = set(n.split())
    for cls in ("email", "date_of_birth", "phone", "postal_code", "address", "person_name", "id"):
        for h in _NAME_HINTS[cls]:
            if (" " in h and h in n) or h in words or (len(h) > 4 and h in n.replace(" ", "")):
                if cls == "person_name" and h == "name" and words & set(_NON_PERSON_NAME):
                    continue
                return cls
    return None


def _classify(col: ColumnProfile, values: list[str]) -> None:
    n = len(values)
    ev = col.evidence
    hint = _hint(col.name)
    if hint:
        ev["header_hint"] = hint
    if not n:
        col.kind, col.confidence = "empty", 1.0
        return
    emails = sum(1 for v in values if _EMAIL.match(v))
    emails_in = sum(1 for v in values if _EMAIL_IN.search(v))
    textual = col.type == "varchar"  # numbers and dates are not phone numbers, whatever their digits
    phones = sum(1 for v in values if textual and _PHONE.match(v) and sum(c.isdigit() for c in v) >= 7)
    phones_in = sum(1 for v in values if _PHONE_IN.search(v))
    persons = sum(1 for v in values if _PERSON.match(v))
    postals = sum(1 for v in values if _POSTAL.match(v))
    addresses = sum(1 for v in values if _ADDRESS.search(v))
    avg_len = sum(len(v) for v in values) / n
    spaced = sum(1 for v in values if " " in v)
    counts = {"email_matches": emails, "email_in_text_matches": emails_in, "phone_matches": phones,
              "phone_in_text_matches": phones_in, "person_name_like": persons, "postal_code_like": postals,
              "address_like": addresses}  # fmt: skip
    ev.update({k: v for k, v in counts.items() if v})
    ev["avg_length"] = round(avg_len, 1)
    share = {k: v / n for k, v in counts.items()}
    categorical = col.distinct <= CATEGORICAL_MAX_DISTINCT and col.distinct <= max(1, n // 2)
    unique = col.distinct == n and col.nulls == 0
    near_unique = col.distinct >= 0.95 * n  # an export may repeat a record (versions, duplicates)
    numeric = col.type in ("integer", "bigint", "decimal")
    dated = col.type in ("date", "timestamp")

    def put(kind: str, conf: float) -> None:
        col.kind, col.confidence = kind, round(min(conf, 1.0), 2)

    long_text = avg_len >= 30 and spaced >= 0.5 * n
    if share["email_matches"] >= 0.8 or (hint == "email" and emails):
        put("email", share["email_matches"] + (0.2 if hint == "email" else 0))
    elif hint == "date_of_birth" and dated:
        put("date_of_birth", 0.95)
    elif long_text and (emails_in or phones_in):
        put("free_text_pii", 0.6 + 0.4 * max(share["email_in_text_matches"], share["phone_in_text_matches"]))
    elif long_text:
        put("free_text", 0.7)
    elif hint == "phone" and not categorical:
        put("phone", 0.6 + 0.4 * share["phone_matches"])
    elif hint == "postal_code" and not dated:
        put("postal_code", 0.6 + 0.4 * max(share["postal_code_like"], 0.5 if col.type == "varchar" else 0))
    elif hint == "address" and not numeric:
        put("address", 0.6 + 0.4 * share["address_like"])
    elif hint == "person_name" and not numeric and not dated:
        put("person_name", 0.6 + 0.4 * share["person_name_like"])
    elif (near_unique and hint == "id" and col.type in ("integer", "bigint", "varchar")) or (
        unique and col.type == "varchar" and n >= 10 and all(_ID_VALUE.match(v) for v in values)
    ):
        put("id", 0.9 if hint == "id" else 0.6)
    elif categorical and n >= 10:
        put("categorical", 1.0 - col.distinct / (2 * CATEGORICAL_MAX_DISTINCT))
    elif dated:
        put("date", 0.9)
    elif numeric:
        put("numeric", 0.9)
    elif share["phone_matches"] >= 0.8 and col.type == "varchar":
        put("phone", 0.5 + 0.4 * share["phone_matches"])
    elif share["postal_code_like"] >= 0.8:
        put("postal_code", 0.5 + 0.4 * share["postal_code_like"])
    elif share["address_like"] >= 0.5:
        put("address", 0.5 + 0.4 * share["address_like"])
    elif share["person_name_like"] >= 0.8 and col.distinct >= 0.2 * n and avg_len < 25:
        put("person_name", 0.4 + 0.4 * share["person_name_like"])
    elif categorical:
        put("categorical", 0.5)
    else:
        put("text", 0.3)


# --------------------------------------------------------------------------- profiling


def profile(path: Path | str, entity: str = "contacts", sample_rows: int = DEFAULT_SAMPLE_ROWS) -> FileProfile:
    """Profile the first ``sample_rows`` records of ``path`` (never the whole file)."""
    path = Path(path)
    if entity not in ENTITIES:
        raise ProfileError(f"unknown entity '{entity}'; one of {', '.join(ENTITIES)}")
    if sample_rows < 1:
        raise ProfileError("--sample-rows must be at least 1")
    if not path.is_file():
        raise ProfileError(f"{path}: file not found")
    with path.open("rb") as fh:
        head = fh.read(SNIFF_BYTES)
    if not head.strip():
        raise ProfileError(f"{path}: the file is empty")
    encoding, bom, note = _detect_encoding(head)
    with _open_text(path, encoding) as fh:
        text_head = fh.read(SNIFF_BYTES)
    fmt = _detect_format(text_head)
    delimiter = quote = None
    header: bool | None = None
    invalid = 0
    if fmt == "csv":
        delimiter, quote, header, names, table = _read_csv(path, encoding, text_head, sample_rows)
    else:
        names, table, invalid = _read_json(path, encoding, fmt, sample_rows)
    categories = _category_targets(entity)
    columns: list[ColumnProfile] = []
    for i, name in enumerate(names):
        raw = [r[i] for r in table]
        values = [v.strip() for v in raw if v is not None and v.strip()]
        typ, formats, sep, ev = _infer_type(values)
        col = ColumnProfile(
            name=name, source=name, type=typ, kind="text", confidence=0.0, rows=len(raw),
            nulls=len(raw) - len(values), distinct=len(set(values)), formats=formats, decimal_separator=sep,
            evidence=ev,
        )  # fmt: skip
        if sep is not None and ev.get("grouped_values"):
            col.thousands_separator = "." if sep == "," else ","
        _classify(col, values)
        if col.distinct <= CATEGORY_FIT_MAX_DISTINCT:
            col.category_fit = _category_fit(set(values), categories)
        columns.append(col)
    shown_encoding = {"utf-8-sig": "utf-8", "utf-16": "utf-16"}.get(encoding, encoding)
    result = FileProfile(
        file=path.name, entity=entity, sample_rows=sample_rows, rows_read=len(table), encoding=shown_encoding,
        bom=bom, encoding_note=note, format=fmt, delimiter=delimiter, quote=quote, header=header, columns=columns,
    )  # fmt: skip
    result.invalid_records = invalid
    result.todos = _todos(result)
    return result


def _todos(p: FileProfile) -> list[str]:
    """What the draft cannot settle from the sample: a person decides. (Encodings, delimiters, quotes,
    decimal commas, JSON arrays and text ids are declared in the draft: no TODO.)"""
    todos: list[str] = []
    if p.format == "csv" and not p.header:
        todos.append("no header row detected; ingest maps columns by header: add one (names are column_N here)")
    for c in p.columns:
        if c.evidence.get("ambiguous_formats"):
            todos.append(f"column '{c.name}': several date formats fit the sample; keep the right one")
    return todos


def _category_targets(entity: str, spec_path: Path | None = None) -> dict[str, tuple[tuple[str, ...], bool, dict]]:
    """Canonical category field -> (canonical values, upper-case codes?, the spec in force's value map or {})."""
    hints, maps = _spec_hints(entity, spec_path)
    out: dict[str, tuple[tuple[str, ...], bool, dict]] = {}
    for fname, canon in CANONICAL[entity].items():
        if canon.type != "category":
            continue
        vm = hints.get(fname, {}).get("value_map")
        mapping = maps.get(vm, {}) if isinstance(vm, str) else (vm if isinstance(vm, dict) else {})
        out[fname] = (canon.allowed, fname in UPPER_CASE_CATEGORIES, {str(k): str(v) for k, v in mapping.items()})
    return out


def _category_fit(values: set[str], targets: dict[str, tuple[tuple[str, ...], bool, dict]]) -> dict[str, dict]:
    """Per canonical category field: how many distinct sample values ingest would accept (counts only)."""
    fit: dict[str, dict[str, int]] = {}
    for fname, (allowed, upper, mapping) in targets.items():
        ok = set(allowed)

        def canonical(v: str, ok: set[str] = ok, upper: bool = upper) -> bool:
            return (v.strip().upper() if upper else re.sub(r"[^a-z0-9]", "", v.lower())) in ok

        fit[fname] = {"canonical": sum(1 for v in values if canonical(v))}
        if mapping:
            fit[fname]["value_map"] = sum(1 for v in values if v.strip().lower() in mapping or canonical(v))
    return fit


# --------------------------------------------------------------------------- drafts


def _spec_hints(entity: str, spec_path: Path | None = None) -> tuple[dict[str, dict[str, Any]], dict[str, dict]]:
    """(the spec in force's fields of ``entity`` as written, its value_maps): column names, value maps, formats
    and regions lent to the draft as hints. Empty when the spec does not declare the entity or cannot be read."""
    try:
        doc = yaml.safe_load((spec_path or source_spec_path()).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}, {}
    if not isinstance(doc, dict):
        return {}, {}
    ent = (doc.get("entities") or {}).get(entity)
    fields = ent.get("fields") if isinstance(ent, dict) else None
    maps = doc.get("value_maps") if isinstance(doc.get("value_maps"), dict) else {}
    hints = {k: v for k, v in (fields or {}).items() if k in CANONICAL[entity] and isinstance(v, dict)}
    return hints, maps


def _targets(entity: str, spec_path: Path | None) -> tuple[dict[str, dict[str, Any]], dict[str, dict]]:
    """Canonical field -> hint (the spec in force's entry, or {}), in raw column order; and the value maps."""
    hints, maps = _spec_hints(entity, spec_path)
    return {f: dict(hints.get(f, {})) for f in CANONICAL[entity]}, maps


def _similarity(col: ColumnProfile, fname: str, fspec: dict[str, Any]) -> float:
    a = _norm(col.name)
    targets = {_norm(fname.replace("_", " ")), _norm(str(fspec.get("column") or fspec.get("path") or ""))}
    score = max(difflib.SequenceMatcher(None, a, t).ratio() for t in targets if t) if a else 0.0
    by_class = {"email": "email", "phone": "phone", "date_of_birth": "date_of_birth", "postal_code": "postal_code"}
    if by_class.get(col.kind) == fname:
        score = max(score, 0.9)
    if col.kind == "address" and fname == "street":
        score = max(score, 0.85)
    return score


def map_columns(p: FileProfile, fields: dict[str, dict[str, Any]], key: str) -> dict[str, ColumnProfile]:
    """Canonical field -> profiled column, greedily by name similarity (obvious matches only)."""
    pairs = sorted(
        ((_similarity(c, f, s), i, f) for i, c in enumerate(p.columns) for f, s in fields.items()), reverse=True
    )
    mapping: dict[str, ColumnProfile] = {}
    used: set[int] = set()
    for score, i, f in pairs:
        if score < 0.8 or f in mapping or i in used:
            continue
        mapping[f] = p.columns[i]
        used.add(i)
    if key not in mapping:  # the natural key: the best unused unique id column
        ids = [(c.confidence, i) for i, c in enumerate(p.columns) if c.kind == "id" and i not in used]
        if ids:
            mapping[key] = p.columns[max(ids)[1]]
    return mapping


#: sample type -> the canonical types it can be read as (email, phone, varchar and category read any text)
_TYPE_OK = {
    "bigint": {"bigint", "integer"}, "integer": {"integer"}, "decimal": {"decimal", "integer"},
    "boolean": {"boolean"}, "date": {"date", "timestamp"}, "timestamp": {"timestamp", "date"},
}  # fmt: skip


def _q(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a valid YAML flow scalar


def _conflict(fname: str, canon: str, col: ColumnProfile) -> str | None:
    """Why the column cannot be read as the canonical field's type (None: it can)."""
    if canon == "bigint" and col.type == "varchar":
        return None  # a text id: text_id
    if canon in _TYPE_OK and col.type not in _TYPE_OK[canon]:
        return f"the sample reads as {col.type}, {fname} is {canon}"
    if canon == "boolean" and col.evidence.get("unreadable_boolean_values"):
        return "t/f values: ingest reads true/false, yes/no, y/n, 1/0"
    if canon in ("date", "timestamp") and not col.formats:
        return f"no date format fits the sample, {fname} is {canon}"
    return None


def _field_line(
    entity: str, fname: str, hint: dict[str, Any], col: ColumnProfile, fmt: str, mapped: set[str], key: str,
    maps: dict[str, dict], used_maps: dict[str, dict],
) -> list[str]:  # fmt: skip
    """One field of the draft: ``name: {column|path, type, ...}`` and its comment (counts and types only)."""
    canon = CANONICAL[entity][fname].type
    body = [f"path: {_q(col.source)}" if fmt != "csv" else f"column: {_q(col.source)}", f"type: {canon}"]
    notes: list[str] = []
    if fname == key:
        body.append("required: true")
    if canon == "bigint" and col.type not in ("bigint", "integer"):
        body.append("text_id: true")
        notes.append("text ids: mapped to a stable number")
    if canon in ("integer", "bigint", "decimal") and col.decimal_separator == ",":
        body.append('decimal: ","')
    if canon in ("integer", "bigint", "decimal") and col.thousands_separator:
        body.append(f"thousands: {_q(col.thousands_separator)}")
    if canon in ("date", "timestamp"):
        body.append("formats: [" + ", ".join(_q(f) for f in col.formats) + "]")
        if col.evidence.get("ambiguous_formats"):
            notes.append("TODO: day-first and month-first both fit the sample: keep the right format")
    if canon == "phone" and hint.get("region") in mapped:
        body.append(f"region: {hint['region']}")
    if canon == "category":
        allowed = CANONICAL[entity][fname].allowed
        fit = col.category_fit.get(fname, {})
        ok = fit.get("canonical", 0)
        vm = hint.get("value_map")
        name = vm if isinstance(vm, str) and vm in maps else None
        if name and fit.get("value_map", 0) > ok:
            body.append(f"value_map: {name}")
            used_maps[name] = maps[name]
            ok = fit["value_map"]
            notes.append(f"value map '{name}' of the spec in force")
        shown = ", ".join(allowed) if len(allowed) <= 12 else "ISO 3166-1 alpha-2 codes"
        if not fit:
            notes.append(f"TODO: {col.distinct} distinct values in the sample: is this a category? ({shown})")
        elif ok >= col.distinct:
            notes.append(f"{col.distinct} distinct values in the sample, all canonical")
        else:
            notes.append(
                f"TODO: {col.distinct} distinct values in the sample, {col.distinct - ok} not canonical: add a"
                f" value_map (trimmed, lower-cased value -> canonical value: {shown}), or those rows are"
                f" quarantined as {fname}:invalid_value"
            )
    line = f"      {fname}: {{{', '.join(body)}}}"
    return [line + (f"  # {'; '.join(notes)}" if notes else "")]


def _ignored(p: FileProfile, mapping: dict[str, ColumnProfile], near: dict[int, str]) -> list[tuple[str, str]]:
    """(ignore_columns entry, comment) for every column of the file no field reads; for JSON the top-level
    keys (what ingest compares), with the unmapped paths under a key that is read noted on it."""
    mapped_cols = {id(c) for c in mapping.values()}

    def note(c: ColumnProfile) -> str:
        extra = f"; {near[id(c)]}" if id(c) in near else ""
        return f"{c.type}, looks like {c.kind} ({c.confidence:.2f}){extra}"

    if p.format == "csv":
        return [(c.source, note(c)) for c in p.columns if id(c) not in mapped_cols]
    from crmshield.ingest import _json_top_key  # the same rule ingest applies

    read_keys = {_json_top_key(c.source) for c in mapping.values()}
    out: dict[str, list[str]] = {}
    for c in p.columns:
        if id(c) in mapped_cols:
            continue
        out.setdefault(_json_top_key(c.source), []).append(f"{c.source}: {note(c)}")
    return [(k, "; ".join(v)) for k, v in out.items() if k not in read_keys]


def _draft_mapping(
    p: FileProfile, spec_path: Path
) -> tuple[dict[str, dict[str, Any]], dict[str, dict], dict[str, ColumnProfile], dict[int, str], str | None]:
    """(canonical field hints, value maps, field -> column, column id -> why it is not mapped, key note): the
    mapping both drafts use. A column whose sample cannot be read as its field's canonical type is not mapped
    (it goes under ignore_columns with the reason), so the draft ingests as it stands."""
    fields, maps = _targets(p.entity, spec_path)
    key = CANONICAL_KEYS[p.entity]
    mapping = map_columns(p, fields, key)
    key_note = None
    if key not in mapping:  # no id column by class: a column unique in the sample, if any
        mapped_cols = {id(c) for c in mapping.values()}
        unique = [
            c for c in p.columns
            if id(c) not in mapped_cols and c.nulls == 0 and c.distinct == c.rows and c.rows > 1
            and c.type in ("integer", "bigint", "varchar")
        ]  # fmt: skip
        if unique:
            mapping[key] = unique[0]
            key_note = f"TODO: no id column by name or class; '{unique[0].name}' is unique in the sample: the key?"
    near: dict[int, str] = {}
    for fname, col in list(mapping.items()):
        why = _conflict(fname, CANONICAL[p.entity][fname].type, col)
        if why is not None:
            del mapping[fname]
            near[id(col)] = f"maps onto {fname} by name, but {why}: map it once it reads"
    return fields, maps, mapping, near, key_note


def draft_source_spec(p: FileProfile, spec_path: Path | None = None) -> str:
    """The draft source spec (YAML text) for the profiled entity alone."""
    spec_path = spec_path or source_spec_path()
    fields, maps, mapping, near, key_note = _draft_mapping(p, spec_path)
    key = CANONICAL_KEYS[p.entity]
    fmt = {"csv": "csv", "jsonl": "jsonl", "json_array": "json"}[p.format]
    lines = [
        f"{DRAFT_HEADER} Generated by `crmshield profile` from a {p.rows_read}-row sample of {p.file}",
        f"# for entity '{p.entity}'. Columns were mapped onto the canonical {p.entity} fields (crmshield.sources) by",
        f"# name similarity (with the column names of {spec_path.name} as hints) and content class: check every",
        "# mapping, type and format. Every other column of the file is under ignore_columns with its detected",
        "# type and class: map it instead where a canonical field fits. Only this entity is declared: the others",
        "# are empty raw tables until their own drafts are merged in (one file per entity).",
    ]
    for t in p.todos:
        lines.append(f"# TODO: {t}")
    if key not in mapping:
        lines.append(f"# TODO: no column was found for the key field '{key}': map one (the draft does not load)")
    lines += ["version: 1", f"description: {_q('DRAFT for ' + p.file + ' (' + p.entity + ')')}"]
    used_maps: dict[str, dict] = {}
    field_lines: list[str] = []
    for fname in [f for f in fields if f in mapping]:
        field_lines += _field_line(
            p.entity, fname, fields[fname], mapping[fname], fmt, set(mapping), key, maps, used_maps
        )
    if key_note and field_lines:
        field_lines[0] += ("; " if "  # " in field_lines[0] else "  # ") + key_note
    if used_maps:
        lines.append("value_maps:  # copied from " + spec_path.name)
        lines += [f"  {name}: {json.dumps(m, ensure_ascii=False)}" for name, m in used_maps.items()]
    lines += ["", "entities:", f"  {p.entity}:", f"    file: {_q(p.file)}", f"    format: {fmt}",
              "    delivery: snapshot  # or delta: each export holds the changed records only"]  # fmt: skip
    if p.encoding == "utf-8":
        lines.append("    encoding: auto  # detected: utf-8" + (" with a byte-order mark" if p.bom else ""))
    else:
        enc = "utf-16" if p.encoding == "utf-16" else p.encoding
        note = f": {p.encoding_note}" if p.encoding_note else (" (byte-order mark)" if p.bom else "")
        lines.append(f"    encoding: {enc}  # detected{note}")
    if fmt == "csv":
        lines.append(f"    delimiter: {_q(p.delimiter or ',')}  # detected")
        if p.quote and p.quote != '"':
            lines.append(f"    quote: {_q(p.quote)}  # detected")
    lines.append(f"    key: {key}")
    ordering = next((f for f in ("updated_at", "created_at") if f in mapping), None)
    if ordering == "updated_at":
        lines.append("    updated_at: updated_at  # orders versions of a record: the latest wins")
    elif ordering:
        lines.append(f"    updated_at: {ordering}  # no modification date: versions ordered by {ordering}")
    else:
        lines.append("    # no updated_at: no date column maps; the later delivery, then the later row wins")
    lines += [
        "    on_new_column: error  # a column neither mapped nor ignored stops ingest (warn: dropped, with a warning)",
        "    on_missing_column: error  # a mapped column missing from a delivery stops ingest (warn: loaded empty)",
        "    fields:",
    ]
    lines += field_lines or ["      {}  # TODO: no column maps onto a canonical field"]
    missing = [f for f in fields if f not in mapping]
    if missing:
        text = f"canonical fields without a column (NULL in raw): {', '.join(missing)}"
        lines += [f"      # {ln}" for ln in textwrap.wrap(text, 100)]
    ignored = _ignored(p, mapping, near)
    if ignored:
        what = "columns" if fmt == "csv" else "top-level keys"
        lines.append(f"    ignore_columns:  # {what} of the file no field reads: known, not loaded")
        lines += [f"      - {_q(name)}  # {note}" for name, note in ignored]
    lines.append("")
    return "\n".join(lines)


_DOMAIN = {"contacts": "contact", "companies": "company", "deals": "deal", "tickets": "ticket"}


def _policy_rule(c: ColumnProfile, entity: str, canonical: str | None) -> dict[str, Any]:
    name = canonical or ""
    if c.kind == "email":
        return {"classification": "direct_identifier", "action": "pseudonymize", "domain": "email", "purposes": []}
    if c.kind == "phone":
        return {"classification": "direct_identifier", "action": "pseudonymize", "domain": "phone", "purposes": []}
    if c.kind in ("person_name", "address"):
        return {"classification": "direct_identifier", "action": "drop", "purposes": []}
    if c.kind == "date_of_birth":
        return {"classification": "quasi_identifier", "action": "generalize", "rule": "age_band",
                "output": "age_band", "purposes": []}  # fmt: skip
    if c.kind == "postal_code":
        return {"classification": "quasi_identifier", "action": "generalize", "rule": "postal_prefix",
                "output": "postal_prefix", "purposes": []}  # fmt: skip
    if c.kind in ("free_text_pii", "free_text"):
        return {"classification": "free_text", "action": "redact", "purposes": []}
    if c.kind == "id" or name.endswith("_id"):
        domain = next((d for e, d in _DOMAIN.items() if name == f"{d}_id"), _DOMAIN[entity])
        if name == "requester_id":
            domain = "contact"
        cls = "direct_identifier" if domain == "contact" else "attribute"
        return {"classification": cls, "action": "pseudonymize", "domain": domain, "purposes": []}
    if c.kind == "date" or c.type in ("date", "timestamp"):
        return {"classification": "attribute", "action": "generalize", "rule": "day", "purposes": []}
    if c.kind in ("categorical", "numeric"):
        return {"classification": "attribute", "action": "keep", "purposes": []}
    return {"classification": "quasi_identifier", "action": "drop", "purposes": []}


def draft_policy(p: FileProfile, spec_path: Path | None = None) -> str:
    """Draft privacy-policy entries for the entity's mapped columns (to merge into config/privacy_policy.yml)."""
    fields, _, mapping, _, _ = _draft_mapping(p, spec_path or source_spec_path())
    lines = [
        f"{DRAFT_HEADER} Generated by `crmshield profile` from a {p.rows_read}-row sample of {p.file}.",
        f"# Draft entries for entities.{p.entity}.columns of config/privacy_policy.yml (the raw column names are",
        "# the canonical field names of the draft source spec). Classification and action are guesses from the",
        "# column's content class; 'purposes' are empty on purpose: a column no purpose needs is dropped",
        "# (minimization). Fill them in, check each action, then merge these entries into the policy.",
        "entities:",
        f"  {p.entity}:",
        "    columns:",
    ]
    for fname in [f for f in fields if f in mapping]:
        c = mapping[fname]
        rule = _policy_rule(c, p.entity, fname)
        body = ", ".join(f"{k}: {json.dumps(v) if isinstance(v, list) else v}" for k, v in rule.items())
        lines.append(f"      {fname}: {{{body}}}  # {c.kind} ({c.confidence:.2f})")
    if not mapping:
        lines.append("      {}  # TODO: no column maps onto a canonical field yet")
    mapped_cols = {id(c) for c in mapping.values()}
    unmapped = [c for c in p.columns if id(c) not in mapped_cols]
    if unmapped:
        lines.append("  # columns under ignore_columns in the draft spec (not loaded); what each would need if mapped:")
        for c in unmapped:
            rule = _policy_rule(c, p.entity, None)
            body = ", ".join(f"{k}: {json.dumps(v) if isinstance(v, list) else v}" for k, v in rule.items())
            lines.append(f"  #   {_q(c.source)}: {{{body}}}  # {c.kind} ({c.confidence:.2f})")
    lines.append("")
    return "\n".join(lines)


def write_drafts(p: FileProfile, out_dir: Path | str, spec_path: Path | None = None) -> dict[str, str]:
    """Write ``<stem>.source.yml`` and ``<stem>.policy.yml``; records their paths and whether the spec loads."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(p.file).stem
    spec_text = draft_source_spec(p, spec_path)
    policy_text = draft_policy(p, spec_path)
    spec_file, policy_file = out_dir / f"{stem}.source.yml", out_dir / f"{stem}.policy.yml"
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / spec_file.name
        probe.write_text(spec_text, encoding="utf-8")
        try:
            load_source_spec(probe)
            p.spec_loads = True
        except SourceSpecError as exc:
            p.spec_loads = False
            problems = [ln.split(": ", 1)[-1] for ln in str(exc).splitlines()]
            todo = "\n".join(f"# TODO: does not load yet: {ln}" for ln in problems)
            spec_text = spec_text.replace("\nversion: 1\n", f"\n{todo}\nversion: 1\n", 1)
    spec_file.write_text(spec_text, encoding="utf-8")
    policy_file.write_text(policy_text, encoding="utf-8")
    p.drafts = {"source_spec": str(spec_file), "policy": str(policy_file)}
    return p.drafts


def format_table(p: FileProfile) -> str:
    """The human report: names, types, classes, confidence and counts; never a value."""
    enc = p.encoding + (" (BOM)" if p.bom else "")
    fmt = p.format
    if p.format == "csv":
        fmt += f", delimiter {p.delimiter!r}, quote {p.quote!r}, header {'yes' if p.header else 'no'}"
    lines = [f"{p.file}: {p.rows_read} rows sampled (max {p.sample_rows}); {fmt}; encoding {enc}"]
    if p.invalid_records:
        lines.append(f"  {p.invalid_records} record(s) in the sample are not valid JSON objects (skipped)")
    if p.encoding_note:
        lines.append(f"  note: {p.encoding_note}")
    rows = [("column", "type", "class", "conf", "nulls", "distinct", "evidence")]
    for c in p.columns:
        ev = ", ".join(f"{k}={v}" for k, v in c.evidence.items() if k not in ("avg_length", "header_hint"))
        typ = (
            c.type
            + (f" {'|'.join(c.formats)}" if c.formats else "")
            + (" (dec ,)" if c.decimal_separator == "," else "")
        )
        rows.append((c.name, typ, c.kind, f"{c.confidence:.2f}", str(c.nulls), str(c.distinct), ev))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for r in rows:
        lines.append("  " + "  ".join(r[i].ljust(widths[i]) for i in range(6)) + "  " + r[6])
    for t in p.todos:
        lines.append(f"TODO: {t}")
    if p.drafts:
        state = "loads" if p.spec_loads else "does NOT load yet (see its TODOs)"
        lines.append(f"draft source spec: {p.drafts['source_spec']} ({state})")
        lines.append(f"draft policy entries: {p.drafts['policy']}")
        lines.append("DRAFT: review both files before use.")
    return "\n".join(lines)

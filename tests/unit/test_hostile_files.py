"""Hostile landing files: encodings, dialects, broken rows, drift, compression, locales.

Each test writes a tiny source spec (one or two entities) and a few landing files built here, runs
``crmshield.ingest.ingest`` and asserts what a user sees: the counts, the exact values in raw, the
quarantine rows (field, reason, line) and the error messages. All timestamps lie within a few days of
each other so the retention policy expires nothing.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import io
import json
import zipfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from crmshield.config import Settings
from crmshield.ingest import IngestError, IngestResult, ingest
from crmshield.sources import CANONICAL

HEADER = ["Id", "First", "Email", "Phone", "Zip", "Country", "Created", "Updated"]
CREATED = "2024-05-01 10:00"
UPDATED = "2024-05-02 10:00"
LINEAGE = ["_source_file", "_source_row"]


def contact_fields(**override: dict[str, Any] | None) -> dict[str, Any]:
    """The contacts fields of the test layout (HEADER); ``name=None`` drops a field, ``name={...}`` replaces it."""
    ts = ["%Y-%m-%d %H:%M"]
    fields: dict[str, Any] = {
        "contact_id": {"column": "Id", "type": "bigint", "required": True},
        "first_name": {"column": "First"},
        "email": {"column": "Email", "type": "email"},
        "phone": {"column": "Phone", "type": "phone", "region": "country"},
        "postal_code": {"column": "Zip"},
        "country": {"column": "Country", "type": "category"},
        "created_at": {"column": "Created", "type": "timestamp", "required": True, "formats": ts},
        "updated_at": {"column": "Updated", "type": "timestamp", "formats": ts},
    }
    for name, value in override.items():
        if value is None:
            fields.pop(name)
        else:
            fields[name] = value
    return fields


def write_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entities: dict[str, Any], name: str = "spec") -> Path:
    """A source spec declaring ``entities`` only, put in force with $CRMSHIELD_SOURCE_SPEC."""
    path = tmp_path / f"{name}.yml"
    path.write_text(yaml.safe_dump({"version": 1, "entities": entities}, sort_keys=False), encoding="utf-8")
    monkeypatch.setenv("CRMSHIELD_SOURCE_SPEC", str(path))
    return path


def contacts_spec(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str = "spec",
    fields: dict[str, Any] | None = None,
    **opts: Any,
) -> Path:
    ent = {"file": "contacts.csv", "format": "csv", "key": "contact_id", "updated_at": "updated_at", **opts}
    ent["fields"] = fields or contact_fields()
    return write_spec(tmp_path, monkeypatch, {"contacts": ent}, name)


def row(i: int, first: str = "Ann", zip_: str = "01234", updated: str = UPDATED, **kw: str) -> list[str]:
    return [
        str(i), first, kw.get("email", f"c{i}@example.com"), kw.get("phone", ""), zip_, kw.get("country", "US"),
        kw.get("created", CREATED), updated,
    ]  # fmt: skip


def csv_text(rows: list[list[str]], delimiter: str = ",", header: list[str] = HEADER, end: str = "\n") -> str:
    buf = io.StringIO()
    csv.writer(buf, delimiter=delimiter, lineterminator=end).writerows([header, *rows])
    return buf.getvalue()


def land(data_dir: Path, name: str, content: str | bytes, encoding: str = "utf-8") -> Path:
    path = data_dir / "landing" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content.encode(encoding) if isinstance(content, str) else content)
    return path


def run(data_dir: Path) -> IngestResult:
    res = ingest(Settings.from_env(data_dir))
    for f in res.files.values():
        assert f.read == f.loaded + f.quarantined + f.duplicates + f.expired + f.erased, f.entity
        assert f.expired == 0 and f.erased == 0, f.entity
        for d in f.files:
            if d.status == "ingested":
                assert d.read == d.loaded + d.quarantined + d.duplicates, d.file
    return res


def raw(data_dir: Path, columns: str = "*", entity: str = "contacts", key: str = "contact_id") -> list[tuple]:
    path = data_dir / "raw" / f"{entity}.parquet"
    return duckdb.sql(f"SELECT {columns} FROM read_parquet('{path}') ORDER BY {key}").fetchall()


def quarantine(data_dir: Path, entity: str = "contacts") -> list[tuple]:
    path = data_dir / "quarantine" / f"{entity}.parquet"
    return duckdb.sql(
        f"SELECT source_file, source_row, field, reason FROM read_parquet('{path}') ORDER BY source_row"
    ).fetchall()


def zone_bytes(data_dir: Path) -> dict[str, bytes]:
    """Every file of the raw and quarantine zones (the registry included), by relative path."""
    return {
        str(p.relative_to(data_dir)): p.read_bytes()
        for zone in ("raw", "quarantine")
        for p in sorted((data_dir / zone).rglob("*"))
        if p.is_file()
    }


def ids_and_names(data_dir: Path) -> list[tuple]:
    return raw(data_dir, "contact_id, first_name, postal_code")


ACCENTS = "Zoë Ångström-Müller €"
SMART = "“Quoted” O’Brien – 5 €"


# --------------------------------------------------------------------------- encodings


@pytest.mark.parametrize("declared", ["auto", "utf-8"])
def test_utf8_bom_keeps_first_column_and_values(data_dir, tmp_path, monkeypatch, declared):
    contacts_spec(tmp_path, monkeypatch, encoding=declared)
    land(data_dir, "contacts.csv", codecs.BOM_UTF8 + csv_text([row(1, ACCENTS), row(2, "€")]).encode("utf-8"))
    res = run(data_dir)
    d = res.files["contacts"].files[0]
    assert (d.read, d.loaded, d.quarantined, d.encoding) == (2, 2, 0, "utf-8-sig")
    assert ids_and_names(data_dir) == [(1, ACCENTS, "01234"), (2, "€", "01234")]


@pytest.mark.parametrize("declared", ["auto", "utf-16"])
def test_utf16_le_with_bom(data_dir, tmp_path, monkeypatch, declared):
    contacts_spec(tmp_path, monkeypatch, encoding=declared)
    text = csv_text([row(1, ACCENTS), row(2, SMART)], end="\r\n")
    land(data_dir, "contacts.csv", codecs.BOM_UTF16_LE + text.encode("utf-16-le"))
    d = run(data_dir).files["contacts"].files[0]
    assert (d.read, d.loaded, d.quarantined, d.encoding) == (2, 2, 0, "utf-16")
    assert ids_and_names(data_dir) == [(1, ACCENTS, "01234"), (2, SMART, "01234")]
    assert raw(data_dir, "email, created_at::VARCHAR") == [
        ("c1@example.com", "2024-05-01 10:00:00"), ("c2@example.com", "2024-05-01 10:00:00"),
    ]  # fmt: skip


@pytest.mark.parametrize("declared", ["auto", "utf-16"])
def test_utf16_be_with_bom(data_dir, tmp_path, monkeypatch, declared):
    contacts_spec(tmp_path, monkeypatch, encoding=declared)
    text = csv_text([row(1, ACCENTS), row(2, SMART)], end="\r\n")
    land(data_dir, "contacts.csv", codecs.BOM_UTF16_BE + text.encode("utf-16-be"))
    d = run(data_dir).files["contacts"].files[0]
    assert (d.read, d.loaded, d.quarantined) == (2, 2, 0)
    assert ids_and_names(data_dir) == [(1, ACCENTS, "01234"), (2, SMART, "01234")]


def test_utf16_le_declared_without_bom(data_dir, tmp_path, monkeypatch):
    contacts_spec(tmp_path, monkeypatch, encoding="utf-16-le")
    land(data_dir, "contacts.csv", csv_text([row(1, ACCENTS)]), "utf-16-le")
    d = run(data_dir).files["contacts"].files[0]
    assert (d.loaded, d.encoding) == (1, "utf-16-le")
    assert ids_and_names(data_dir) == [(1, ACCENTS, "01234")]


@pytest.mark.parametrize("declared", ["auto", "cp1252", "windows-1252"])
def test_cp1252_euro_accents_and_smart_quotes(data_dir, tmp_path, monkeypatch, declared):
    contacts_spec(tmp_path, monkeypatch, encoding=declared)
    land(data_dir, "contacts.csv", csv_text([row(1, "Zoë Müller"), row(2, SMART), row(3, "é€")]), "cp1252")
    d = run(data_dir).files["contacts"].files[0]
    assert (d.read, d.loaded, d.quarantined, d.encoding) == (3, 3, 0, "cp1252")
    assert ids_and_names(data_dir) == [(1, "Zoë Müller", "01234"), (2, SMART, "01234"), (3, "é€", "01234")]


def test_latin1_declared(data_dir, tmp_path, monkeypatch):
    contacts_spec(tmp_path, monkeypatch, encoding="latin-1")
    land(data_dir, "contacts.csv", csv_text([row(1, "Zoë Ñandú ß"), row(2, "¿Qué?")]), "latin-1")
    d = run(data_dir).files["contacts"].files[0]
    assert (d.loaded, d.quarantined, d.encoding) == (2, 0, "iso8859-1")
    assert ids_and_names(data_dir) == [(1, "Zoë Ñandú ß", "01234"), (2, "¿Qué?", "01234")]


def test_cp1252_file_declared_utf8_quarantines_the_undecodable_lines(data_dir, tmp_path, monkeypatch):
    """A wrong declared encoding does not garble values: the lines that do not decode are quarantined."""
    contacts_spec(tmp_path, monkeypatch, encoding="utf-8", max_bad_share=0.5)
    rows = [row(i) for i in range(1, 9)]
    rows[3] = row(4, "Zoë")
    land(data_dir, "contacts.csv", csv_text(rows), "cp1252")
    f = run(data_dir).files["contacts"]
    assert (f.read, f.loaded, f.quarantined) == (8, 7, 1)
    assert quarantine(data_dir) == [("contacts.csv", 5, "record", "invalid_encoding")]
    assert 4 not in [r[0] for r in ids_and_names(data_dir)]


# --------------------------------------------------------------------------- dialects


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_delimiters_load_the_same_rows(data_dir, tmp_path, monkeypatch, delimiter):
    contacts_spec(tmp_path, monkeypatch, delimiter=delimiter)
    tricky = "a,b;c\td|e"  # every delimiter inside one value: quoted by the writer where needed
    land(data_dir, "contacts.csv", csv_text([row(1, tricky), row(2, "Bo"), row(3, "")], delimiter=delimiter))
    f = run(data_dir).files["contacts"]
    assert (f.read, f.loaded, f.quarantined) == (3, 3, 0)
    assert ids_and_names(data_dir) == [(1, tricky, "01234"), (2, "Bo", "01234"), (3, None, "01234")]


def test_quoted_fields_with_newlines_delimiters_and_doubled_quotes_load_exactly(data_dir, tmp_path, monkeypatch):
    contacts_spec(tmp_path, monkeypatch)
    values = ["two\nlines", 'say "hi", then; go', "crlf\r\ninside", '""', "trailing space "]
    text = csv_text([row(i, v) for i, v in enumerate(values, start=1)], end="\r\n")
    assert '"say ""hi"", then; go"' in text
    land(data_dir, "contacts.csv", text)
    f = run(data_dir).files["contacts"]
    assert (f.read, f.loaded, f.quarantined) == (5, 5, 0)
    # every value is trimmed of surrounding blanks (nullif(trim(...))); inner newlines and quotes are kept
    assert [r[1] for r in ids_and_names(data_dir)] == ["two\nlines", 'say "hi", then; go', "crlf\r\ninside", '""',
                                                       "trailing space"]  # fmt: skip


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="documented limitation: source_row is the record's number (header = 1), which is the physical line"
    " number unless an earlier quoted value spans lines (or a blank line precedes): DuckDB reports no line for"
    " the records it reads",
)
def test_line_numbers_after_a_multiline_record(data_dir, tmp_path, monkeypatch):
    contacts_spec(tmp_path, monkeypatch, max_bad_share=0.5)
    text = (
        csv_text([row(1), row(2, "line one\nline two\nline three")])  # header: line 1; row 2 spans lines 3-5
        + "3,x,y\n"  # line 6: too few columns
        + ",".join(row(4, created="not a date")) + "\n"  # line 7
        + ",".join(row(5)) + "\n"  # line 8
    )  # fmt: skip
    land(data_dir, "contacts.csv", text)
    run(data_dir)
    assert quarantine(data_dir) == [
        ("contacts.csv", 6, "record", "malformed_line"), ("contacts.csv", 7, "created_at", "invalid_date"),
    ]  # fmt: skip
    assert raw(data_dir, "contact_id, _source_row") == [(1, 2), (2, 3), (5, 8)]


def test_values_after_a_multiline_record_load_and_quarantine(data_dir, tmp_path, monkeypatch):
    """What does hold after a multi-line record: every value exact, each bad row quarantined by its field."""
    contacts_spec(tmp_path, monkeypatch, max_bad_share=0.5)
    text = (
        csv_text([row(1), row(2, "line one\nline two\nline three")])
        + "3,x,y\n"
        + ",".join(row(4, created="not a date")) + "\n"
        + ",".join(row(5, "Eve")) + "\n"
    )  # fmt: skip
    land(data_dir, "contacts.csv", text)
    f = run(data_dir).files["contacts"]
    assert (f.read, f.loaded, f.quarantined) == (5, 3, 2)
    assert f.quarantine_reasons == {"created_at:invalid_date": 1, "record:malformed_line": 1}
    assert [(r[0], r[1]) for r in ids_and_names(data_dir)] == [(1, "Ann"), (2, "line one\nline two\nline three"),
                                                              (5, "Eve")]  # fmt: skip


def test_ragged_rows_are_quarantined_with_their_line_numbers(data_dir, tmp_path, monkeypatch):
    contacts_spec(tmp_path, monkeypatch)
    lines = [",".join(r) for r in [row(i) for i in range(1, 11)]]
    lines[2] = "3,Ann,c3@example.com"  # too few columns (line 4)
    lines[6] = ",".join(row(7)) + ",extra,more"  # too many (line 8)
    land(data_dir, "contacts.csv", ",".join(HEADER) + "\n" + "\n".join(lines) + "\n")
    f = run(data_dir).files["contacts"]
    assert (f.read, f.loaded, f.quarantined, f.duplicates) == (10, 8, 2, 0)
    assert quarantine(data_dir) == [
        ("contacts.csv", 4, "record", "malformed_line"), ("contacts.csv", 8, "record", "malformed_line"),
    ]  # fmt: skip
    assert [r[0] for r in ids_and_names(data_dir)] == [1, 2, 4, 5, 6, 8, 9, 10]
    assert raw(data_dir, "contact_id, _source_row")[-1] == (10, 11)


TRUNCATED = {
    # the last line cut mid-record (no newline at the end): too few columns
    "mid_record": ("9,Ann,c9@example.com,+1 20", ("record", "malformed_line")),
    # cut inside an open quote: the quote never closes
    "open_quote": ('9,"Ann, cut inside a quo', ("record", "malformed_line")),
    # every column there, but the last value cut: quarantined by its field
    "last_value": ("9,Ann,c9@example.com,,01234,US,2024-05-01 10:00,2024-05-0", ("updated_at", "invalid_date")),
}


@pytest.mark.parametrize("case", sorted(TRUNCATED))
def test_truncated_last_line(data_dir, tmp_path, monkeypatch, case):
    cut, (field, reason) = TRUNCATED[case]
    contacts_spec(tmp_path, monkeypatch)
    land(data_dir, "contacts.csv", csv_text([row(i) for i in range(1, 9)]) + cut)
    f = run(data_dir).files["contacts"]
    assert (f.read, f.loaded, f.quarantined, f.duplicates) == (9, 8, 1, 0)
    assert quarantine(data_dir) == [("contacts.csv", 10, field, reason)]
    assert [r[0] for r in ids_and_names(data_dir)] == list(range(1, 9))


def test_unclosed_quote_mid_file_swallows_the_rest_into_one_quarantined_record(data_dir, tmp_path, monkeypatch):
    """An open quote that never closes takes every following line with it: those rows are neither loaded nor
    counted on their own; the whole tail is one malformed record (read counts it once)."""
    contacts_spec(tmp_path, monkeypatch, max_bad_share=0.5)
    tail = "".join(",".join(r) + "\n" for r in (row(6), row(7)))
    text = csv_text([row(i) for i in range(1, 5)]) + '5,"never closed\n' + tail
    land(data_dir, "contacts.csv", text)
    f = run(data_dir).files["contacts"]
    assert (f.read, f.loaded, f.quarantined) == (5, 4, 1)
    assert quarantine(data_dir) == [("contacts.csv", 6, "record", "malformed_line")]


# --------------------------------------------------------------------------- empty and header-only files


EMPTY = {
    "zero_bytes": b"",
    "bom_only": codecs.BOM_UTF8,
    "whitespace": b"  \r\n\t\n  \n",
    "utf16_bom": codecs.BOM_UTF16_LE,
}


@pytest.mark.parametrize("case", sorted(EMPTY))
def test_empty_file_is_refused_and_raw_is_untouched(data_dir, tmp_path, monkeypatch, case):
    contacts_spec(tmp_path, monkeypatch)
    land(data_dir, "contacts.csv", csv_text([row(1), row(2)]))
    run(data_dir)
    before = zone_bytes(data_dir)
    path = land(data_dir, "contacts.csv", EMPTY[case])
    with pytest.raises(IngestError) as err:
        run(data_dir)
    assert str(path) in str(err.value) and "empty" in str(err.value)
    assert zone_bytes(data_dir) == before
    assert not (data_dir / "raw" / ".staging").exists()


@pytest.mark.parametrize("end", ["\n", ""])
def test_header_only_file_loads_an_empty_table_with_a_warning(data_dir, tmp_path, monkeypatch, end):
    contacts_spec(tmp_path, monkeypatch)
    land(data_dir, "contacts.csv", ",".join(HEADER) + end)
    f = run(data_dir).files["contacts"]
    d = f.files[0]
    assert (d.read, d.loaded, d.quarantined, d.duplicates) == (0, 0, 0, 0)
    assert d.warnings == ["no records (header only, or an empty JSON array)"]
    assert f.raw_rows == 0
    rel = duckdb.sql(f"SELECT * FROM read_parquet('{data_dir / 'raw' / 'contacts.parquet'}')")
    assert rel.columns == [*CANONICAL["contacts"], *LINEAGE]
    assert rel.fetchall() == []


# --------------------------------------------------------------------------- schema drift (csv)


def test_new_column_is_an_error_by_default(data_dir, tmp_path, monkeypatch):
    contacts_spec(tmp_path, monkeypatch)
    path = land(data_dir, "contacts.csv", csv_text([[*row(1), "secret"]], header=[*HEADER, "SSN"]))
    with pytest.raises(IngestError) as err:
        run(data_dir)
    msg = str(err.value)
    assert msg.startswith(f"{path}: schema drift: new column(s) ['SSN']")
    assert "entities.contacts.fields" in msg and "entities.contacts.ignore_columns" in msg
    assert "on_new_column: warn" in msg and "secret" not in msg
    assert not (data_dir / "raw" / "contacts.parquet").exists()


def test_new_column_with_warn_is_dropped_with_a_warning(data_dir, tmp_path, monkeypatch):
    contacts_spec(tmp_path, monkeypatch, on_new_column="warn", max_bad_share=0.5)
    header = [*HEADER[:3], "SSN", *HEADER[3:]]  # in the middle: later columns must not shift
    rows = [[*r[:3], f"SSN-SECRET-{r[0]}", *r[3:]] for r in (row(1), row(2, created="bad"), row(3))]
    land(data_dir, "contacts.csv", csv_text(rows, header=header))
    d = run(data_dir).files["contacts"].files[0]
    assert (d.read, d.loaded, d.quarantined) == (3, 2, 1)
    assert d.warnings == ["new column(s) not loaded (on_new_column: warn): SSN"]
    assert d.schema_drift == {"new_columns": ["SSN"]}
    assert raw(data_dir, "contact_id, postal_code, country") == [(1, "01234", "US"), (3, "01234", "US")]
    everything = str(raw(data_dir)) + str(
        duckdb.sql(f"FROM '{data_dir / 'quarantine' / 'contacts.parquet'}'").fetchall()
    )
    assert "SSN-SECRET" not in everything


def test_ignored_column_is_dropped_silently(data_dir, tmp_path, monkeypatch):
    contacts_spec(tmp_path, monkeypatch, ignore_columns=["Internal Note"])
    land(data_dir, "contacts.csv", csv_text([[*row(1), "note"]], header=[*HEADER, "Internal Note"]))
    d = run(data_dir).files["contacts"].files[0]
    assert (d.loaded, d.warnings, d.schema_drift) == (1, [], {})
    assert "note" not in str(raw(data_dir))


def _without(col: str, rows: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    i = HEADER.index(col)
    return [c for c in HEADER if c != col], [r[:i] + r[i + 1 :] for r in rows]


def test_missing_optional_column_is_an_error_by_default(data_dir, tmp_path, monkeypatch):
    contacts_spec(tmp_path, monkeypatch)
    header, rows = _without("Zip", [row(1)])
    path = land(data_dir, "contacts.csv", csv_text(rows, header=header))
    with pytest.raises(IngestError) as err:
        run(data_dir)
    msg = str(err.value)
    assert msg.startswith(f"{path}: schema drift: missing column(s) ['Zip']")
    assert "aliases" in msg and "on_missing_column: warn" in msg


def test_missing_optional_column_with_warn_loads_null(data_dir, tmp_path, monkeypatch):
    contacts_spec(tmp_path, monkeypatch, on_missing_column="warn")
    header, rows = _without("Zip", [row(1), row(2)])
    land(data_dir, "contacts.csv", csv_text(rows, header=header))
    d = run(data_dir).files["contacts"].files[0]
    assert (d.loaded, d.quarantined) == (2, 0)
    assert d.warnings == ["missing column(s) loaded as empty (on_missing_column: warn): Zip"]
    assert d.schema_drift == {"missing_columns": ["Zip"]}
    assert ids_and_names(data_dir) == [(1, "Ann", None), (2, "Ann", None)]


@pytest.mark.parametrize(("column", "field"), [("Id", "contact_id"), ("Created", "created_at")])
@pytest.mark.parametrize("on_missing", ["error", "warn"])
def test_missing_required_or_key_column_is_always_an_error(data_dir, tmp_path, monkeypatch, column, field, on_missing):
    contacts_spec(tmp_path, monkeypatch, on_missing_column=on_missing)
    header, rows = _without(column, [row(1)])
    path = land(data_dir, "contacts.csv", csv_text(rows, header=header))
    with pytest.raises(IngestError) as err:
        run(data_dir)
    assert str(err.value).startswith(f"{path}: required column(s) ['{column}'] missing (fields ['{field}'])")


def test_renamed_column_declared_as_alias_loads(data_dir, tmp_path, monkeypatch):
    fields = contact_fields(postal_code={"column": "Zip", "aliases": ["ZIP Code", "Postcode"]})
    contacts_spec(tmp_path, monkeypatch, fields=fields)
    header = ["Postcode" if c == "Zip" else c for c in HEADER]
    land(data_dir, "contacts.csv", csv_text([row(1, zip_="00501")], header=header))
    d = run(data_dir).files["contacts"].files[0]
    assert d.loaded == 1
    assert d.schema_drift == {"renamed": {"postal_code": "Postcode"}}
    assert d.warnings == ["renamed postal_code <- 'Postcode' (declared aliases)"]
    assert ids_and_names(data_dir) == [(1, "Ann", "00501")]


def test_header_names_are_trimmed_but_case_sensitive(data_dir, tmp_path, monkeypatch):
    contacts_spec(tmp_path, monkeypatch)
    header = [f" {c} " for c in HEADER]
    land(data_dir, "contacts.csv", csv_text([row(1)], header=header))
    assert run(data_dir).files["contacts"].loaded == 1
    land(data_dir, "contacts.csv", csv_text([row(1)], header=[c.upper() if c == "Zip" else c for c in HEADER]))
    with pytest.raises(IngestError) as err:
        run(data_dir)
    assert "schema drift: missing column(s) ['Zip']" in str(err.value)
    assert "; new column(s) ['ZIP'] not in the source spec" in str(err.value)


# --------------------------------------------------------------------------- schema drift (json)

FORMATS = ["jsonl", "json"]


def json_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str, **opts: Any) -> str:
    name = "contacts.jsonl" if fmt == "jsonl" else "contacts.json"
    ts = ["%Y-%m-%dT%H:%M:%SZ"]
    fields = {
        "contact_id": {"path": "$.id", "type": "bigint", "required": True},
        "first_name": {"path": "$.name.first"},
        "postal_code": {"path": "$.zip", "aliases": ["$.postcode"]},
        "country": {"path": "$.address.country", "type": "category"},
        "created_at": {"path": "$.created", "type": "timestamp", "required": True, "formats": ts},
        "updated_at": {"path": "$.updated", "type": "timestamp", "formats": ts},
    }
    ent = {"file": name, "format": fmt, "key": "contact_id", "updated_at": "updated_at", **opts, "fields": fields}
    write_spec(tmp_path, monkeypatch, {"contacts": ent})
    return name


def json_record(i: int, **extra: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "id": i, "name": {"first": f"Ann{i}"}, "zip": "00501", "address": {"country": "us"},
        "created": "2024-05-01T10:00:00Z", "updated": "2024-05-02T10:00:00Z",
    }  # fmt: skip
    rec.update(extra)
    return {k: v for k, v in rec.items() if v is not None}


def json_file(fmt: str, records: list[dict[str, Any]]) -> str:
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return json.dumps(records, ensure_ascii=False, indent=1)


@pytest.mark.parametrize("fmt", FORMATS)
def test_json_new_key_warn_then_error(data_dir, tmp_path, monkeypatch, fmt):
    name = json_spec(tmp_path, monkeypatch, fmt, on_new_column="warn")
    path = land(data_dir, name, json_file(fmt, [json_record(1), json_record(2, ssn="SSN-SECRET")]))
    d = run(data_dir).files["contacts"].files[0]
    assert (d.read, d.loaded, d.quarantined) == (2, 2, 0)
    assert d.warnings == ["new key(s) not loaded (on_new_column: warn): ssn"]
    assert d.schema_drift == {"new_columns": ["ssn"]}
    assert raw(data_dir, "contact_id, first_name, postal_code, country") == [
        (1, "Ann1", "00501", "US"), (2, "Ann2", "00501", "US"),
    ]  # fmt: skip
    assert "SSN-SECRET" not in str(raw(data_dir))
    json_spec(tmp_path, monkeypatch, fmt)  # on_new_column: error (the default)
    land(data_dir, name, json_file(fmt, [json_record(1), json_record(3, ssn="SSN-SECRET")]))
    with pytest.raises(IngestError) as err:
        run(data_dir)
    assert str(err.value).startswith(f"{path}: schema drift: new key(s) ['ssn'] not in the source spec")
    assert "SSN-SECRET" not in str(err.value)


def test_json_new_nested_key_is_not_drift(data_dir, tmp_path, monkeypatch):
    """Drift is judged on top-level keys: a new key inside an object whose other keys are mapped is dropped
    without a warning (documenting the current rule)."""
    name = json_spec(tmp_path, monkeypatch, "jsonl")
    land(data_dir, name, json_file("jsonl", [json_record(1, name={"first": "Ann", "ssn": "SSN-SECRET"})]))
    d = run(data_dir).files["contacts"].files[0]
    assert (d.loaded, d.warnings, d.schema_drift) == (1, [], {})
    assert "SSN-SECRET" not in str(raw(data_dir))


@pytest.mark.parametrize("fmt", FORMATS)
def test_json_missing_and_renamed_keys(data_dir, tmp_path, monkeypatch, fmt):
    name = json_spec(tmp_path, monkeypatch, fmt)
    recs = [json_record(1, zip=None, postcode="01234"), json_record(2, zip=None, postcode="00501")]
    land(data_dir, name, json_file(fmt, recs))
    d = run(data_dir).files["contacts"].files[0]
    assert d.schema_drift == {"renamed": {"postal_code": "$.postcode"}}
    assert raw(data_dir, "contact_id, postal_code") == [(1, "01234"), (2, "00501")]
    # a missing optional key: error by default
    path = land(data_dir, name, json_file(fmt, [json_record(1, zip=None)]))
    with pytest.raises(IngestError) as err:
        run(data_dir)
    assert str(err.value).startswith(f"{path}: schema drift: missing key(s) ['$.zip']")
    # a missing required key: an error whatever on_missing_column says
    json_spec(tmp_path, monkeypatch, fmt, on_missing_column="warn")
    land(data_dir, name, json_file(fmt, [json_record(1, created=None)]))
    with pytest.raises(IngestError, match=r"required key\(s\) \['\$\.created'\] missing \(fields \['created_at'\]\)"):
        run(data_dir)


def test_gzipped_json_array_loads(data_dir, tmp_path, monkeypatch):
    """The JSON-array reader does work when DuckDB decompresses (gzip): only compression='none' is broken."""
    json_spec(tmp_path, monkeypatch, "json", file="contacts.json.gz")
    land(data_dir, "contacts.json.gz", gzip.compress(json_file("json", [json_record(1), json_record(2)]).encode()))
    d = run(data_dir).files["contacts"].files[0]
    assert (d.read, d.loaded, d.compression) == (2, 2, "gzip")
    assert raw(data_dir, "contact_id, first_name, country, _source_row") == [(1, "Ann1", "US", 1), (2, "Ann2", "US", 2)]


def test_jsonl_broken_line_is_quarantined_with_its_line(data_dir, tmp_path, monkeypatch):
    name = json_spec(tmp_path, monkeypatch, "jsonl", max_bad_share=0.5)
    lines = [json.dumps(json_record(i)) for i in range(1, 5)]
    lines[1] = lines[1][:-5]  # cut
    lines[2] = "[1, 2]"  # not an object
    land(data_dir, name, "\n".join(lines) + "\n")
    f = run(data_dir).files["contacts"]
    assert (f.read, f.loaded, f.quarantined) == (4, 2, 2)
    assert quarantine(data_dir) == [(name, 2, "record", "malformed_json"), (name, 3, "record", "malformed_json")]


# --------------------------------------------------------------------------- duplicates and versions


@pytest.mark.parametrize("order", ["forward", "reversed"])
def test_latest_version_wins_regardless_of_row_order(data_dir, tmp_path, monkeypatch, order):
    contacts_spec(tmp_path, monkeypatch)
    rows = [
        row(1, "Old", updated="2024-05-01 10:00"),
        row(1, "New", updated="2024-05-03 10:00"),
        row(1, "Mid", updated="2024-05-02 10:00"),
        row(2, "Same"),
        row(2, "Same"),  # an exact repeat
        row(2, "Same"),
        row(3, "Only"),
    ]
    land(data_dir, "contacts.csv", csv_text(rows if order == "forward" else rows[::-1]))
    f = run(data_dir).files["contacts"]
    assert (f.read, f.loaded, f.quarantined, f.duplicates) == (7, 3, 0, 4)
    assert raw(data_dir, "contact_id, first_name, updated_at::VARCHAR") == [
        (1, "New", "2024-05-03 10:00:00"), (2, "Same", "2024-05-02 10:00:00"), (3, "Only", "2024-05-02 10:00:00"),
    ]  # fmt: skip


def test_versions_with_equal_updated_at_the_later_row_wins(data_dir, tmp_path, monkeypatch):
    contacts_spec(tmp_path, monkeypatch)
    land(data_dir, "contacts.csv", csv_text([row(1, "First"), row(1, "Second")]))
    f = run(data_dir).files["contacts"]
    assert (f.loaded, f.duplicates) == (1, 1)
    assert raw(data_dir, "first_name, _source_row") == [("Second", 3)]


def test_a_version_with_no_updated_at_loses(data_dir, tmp_path, monkeypatch):
    contacts_spec(tmp_path, monkeypatch)
    land(data_dir, "contacts.csv", csv_text([row(1, "Dated"), row(1, "Undated", updated="")]))
    f = run(data_dir).files["contacts"]
    assert (f.loaded, f.duplicates) == (1, 1)
    assert raw(data_dir, "first_name") == [("Dated",)]


# --------------------------------------------------------------------------- leading zeros


def test_leading_zeros_kept_in_postal_codes_and_unnormalizable_phones(data_dir, tmp_path, monkeypatch):
    contacts_spec(tmp_path, monkeypatch)
    rows = [
        row(1, zip_="00501", phone="007"),
        row(2, zip_="01234", phone="0012 34"),
        row(3, zip_="0", phone="0301234567", country="DE"),  # normalizable in DE: E.164
        row(4, zip_=" 09001 ", phone=" 000 "),
    ]
    land(data_dir, "contacts.csv", csv_text(rows))
    run(data_dir)
    assert raw(data_dir, "contact_id, postal_code, phone") == [
        (1, "00501", "007"), (2, "01234", "0012 34"), (3, "0", "+49301234567"), (4, "09001", "000"),
    ]  # fmt: skip


# --------------------------------------------------------------------------- compression


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


COMPRESSED = {
    "gzip": ("contacts.csv.gz", lambda b: gzip.compress(b)),
    "zip": ("contacts.zip", lambda b: _zip({"export/contacts.csv": b})),
    "zip_macos": ("contacts.zip", lambda b: _zip({"contacts.csv": b, "__MACOSX/._contacts.csv": b"junk"})),
}


@pytest.mark.parametrize("encoding", ["utf-8", "cp1252"])
@pytest.mark.parametrize("kind", sorted(COMPRESSED))
def test_compressed_deliveries(data_dir, tmp_path, monkeypatch, kind, encoding):
    name, pack = COMPRESSED[kind]
    contacts_spec(tmp_path, monkeypatch, file=name)
    land(data_dir, name, pack(csv_text([row(1, "Zoë €"), row(2, SMART)]).encode(encoding)))
    d = run(data_dir).files["contacts"].files[0]
    assert (d.read, d.loaded, d.compression, d.encoding) == (2, 2, kind.split("_")[0], encoding)
    assert ids_and_names(data_dir) == [(1, "Zoë €", "01234"), (2, SMART, "01234")]


def test_zip_with_two_members_is_refused(data_dir, tmp_path, monkeypatch):
    contacts_spec(tmp_path, monkeypatch, file="contacts.zip")
    body = csv_text([row(1)]).encode()
    path = land(data_dir, "contacts.zip", _zip({"a.csv": body, "b.csv": body}))
    with pytest.raises(IngestError) as err:
        run(data_dir)
    assert str(err.value) == f"{path}: a zip delivery must hold exactly one file, this one holds 2"


def test_not_a_zip_is_refused(data_dir, tmp_path, monkeypatch):
    contacts_spec(tmp_path, monkeypatch, file="contacts.zip")
    path = land(data_dir, "contacts.zip", b"PK\x03\x04 not really")
    with pytest.raises(IngestError, match="not a readable zip archive") as err:
        run(data_dir)
    assert str(err.value).startswith(str(path))


BROKEN_GZIP = {
    "not_gzip": lambda b: b,
    "truncated": lambda b: gzip.compress(b)[:-20],
}


@pytest.mark.parametrize("case", sorted(BROKEN_GZIP))
def test_broken_gzip_is_an_ingest_error_naming_the_file(data_dir, tmp_path, monkeypatch, case):
    contacts_spec(tmp_path, monkeypatch, file="contacts.csv.gz")
    path = land(data_dir, "contacts.csv.gz", BROKEN_GZIP[case](csv_text([row(i) for i in range(1, 50)]).encode()))
    with pytest.raises(IngestError) as err:
        run(data_dir)
    assert str(path) in str(err.value)


# --------------------------------------------------------------------------- locales: numbers and dates


def companies_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, created_format: str) -> None:
    write_spec(
        tmp_path, monkeypatch,
        {"companies": {
            "file": "companies.csv", "format": "csv", "delimiter": ";", "key": "company_id", "updated_at": "created_at",
            "decimal": ",", "thousands": ".",
            "fields": {
                "company_id": {"column": "Id", "type": "bigint", "required": True},
                "employees": {"column": "Employees", "type": "integer"},
                "annual_revenue": {"column": "Revenue", "type": "decimal"},
                "created_at": {"column": "Created", "type": "timestamp", "required": True, "formats": [created_format]},
            },
        }},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("fmt", "created"), [("%d.%m.%Y %H:%M", "02.05.2024 10:00"), ("DD.MM.YYYY HH:mm", "02.05.2024 10:00")]
)
def test_decimal_commas_thousands_dots_and_day_first_dates(data_dir, tmp_path, monkeypatch, fmt, created):
    companies_spec(tmp_path, monkeypatch, fmt)
    land(
        data_dir, "companies.csv",
        "Id;Employees;Revenue;Created\n"
        f"1;1.250;1.234,56;{created}\n"
        f"2;7;0,5;{created}\n"
        f"3;12.345.678;-1.000.000,00;{created}\n"
        f"4;;;{created}\n",
    )  # fmt: skip
    f = run(data_dir).files["companies"]
    assert (f.read, f.loaded, f.quarantined) == (4, 4, 0)
    assert raw(data_dir, "company_id, employees, annual_revenue, created_at::VARCHAR", "companies", "company_id") == [
        (1, 1250, Decimal("1234.56"), "2024-05-02 10:00:00"), (2, 7, Decimal("0.50"), "2024-05-02 10:00:00"),
        (3, 12345678, Decimal("-1000000.00"), "2024-05-02 10:00:00"), (4, None, None, "2024-05-02 10:00:00"),
    ]  # fmt: skip


def test_invalid_numbers_and_month_first_dates_are_quarantined(data_dir, tmp_path, monkeypatch):
    companies_spec(tmp_path, monkeypatch, "DD-MM-YYYY")
    rows = [f"{i};1;1,00;02-05-2024" for i in range(1, 9)] + ["9;12 apples;1,00;02-05-2024", "10;1;1,00;05-31-2024"]
    land(data_dir, "companies.csv", "Id;Employees;Revenue;Created\n" + "\n".join(rows) + "\n")
    f = run(data_dir).files["companies"]
    assert (f.read, f.loaded, f.quarantined) == (10, 8, 2)
    assert quarantine(data_dir, "companies") == [
        ("companies.csv", 10, "employees", "invalid_number"), ("companies.csv", 11, "created_at", "invalid_date"),
    ]  # fmt: skip
    assert raw(data_dir, "created_at::VARCHAR", "companies", "company_id")[0] == ("2024-05-02 00:00:00",)


def test_number_in_the_other_locale_is_quarantined_not_misread(data_dir, tmp_path, monkeypatch):
    companies_spec(tmp_path, monkeypatch, "%d.%m.%Y")
    rows = [f"{i};1;1,00;02.05.2024" for i in range(1, 9)] + ["9;1;1,234.56;02.05.2024"]
    land(data_dir, "companies.csv", "Id;Employees;Revenue;Created\n" + "\n".join(rows) + "\n")
    f = run(data_dir).files["companies"]
    assert quarantine(data_dir, "companies") == [("companies.csv", 10, "annual_revenue", "invalid_number")]
    assert f.loaded == 8


DAY_FIRST = "DD/MM/YYYY HH:mm"


def test_deals_day_first_close_dates(data_dir, tmp_path, monkeypatch):
    write_spec(
        tmp_path, monkeypatch,
        {"deals": {
            "file": "deals.csv", "format": "csv", "key": "deal_id", "updated_at": "created_at", "decimal": ",",
            "fields": {
                "deal_id": {"column": "Id", "type": "bigint", "required": True},
                "stage": {"column": "Stage", "type": "category", "required": True},
                "amount": {"column": "Amount", "type": "decimal", "thousands": " "},
                "close_date": {"column": "Close", "type": "date", "formats": ["DD-MM-YYYY", "%d.%m.%Y"]},
                "created_at": {"column": "Created", "type": "timestamp", "required": True, "formats": [DAY_FIRST]},
            },
        }},
    )  # fmt: skip
    land(
        data_dir, "deals.csv",
        "Id,Stage,Amount,Close,Created\n"
        '1,Closed Won,"12 345,50",31-12-2024,01/05/2024 10:00\n'
        '2,closedlost,"0,99",01.02.2025,02/05/2024 09:30\n',
    )  # fmt: skip
    f = run(data_dir).files["deals"]
    assert (f.loaded, f.quarantined) == (2, 0)
    assert raw(data_dir, "deal_id, stage, amount, close_date::VARCHAR, created_at::VARCHAR", "deals", "deal_id") == [
        (1, "closedwon", Decimal("12345.50"), "2024-12-31", "2024-05-01 10:00:00"),
        (2, "closedlost", Decimal("0.99"), "2025-02-01", "2024-05-02 09:30:00"),
    ]


# --------------------------------------------------------------------------- max_bad_share


def _ten_rows_three_bad() -> str:
    rows = [row(i) for i in range(1, 11)]
    lines = [",".join(r) for r in rows]
    lines[2] = ",".join(row(3, created="31/02/2024"))  # line 4
    lines[5] = "6,Ann"  # line 7: malformed
    lines[7] = ",".join(row(8, created="yesterday"))  # line 9
    return ",".join(HEADER) + "\n" + "\n".join(lines) + "\n"


def test_max_bad_share_refuses_the_delivery_and_leaves_raw_untouched(data_dir, tmp_path, monkeypatch):
    contacts_spec(tmp_path, monkeypatch, max_bad_share=0.2)
    land(data_dir, "contacts.csv", csv_text([row(1)]))
    run(data_dir)
    before = zone_bytes(data_dir)
    path = land(data_dir, "contacts.csv", _ten_rows_three_bad())
    with pytest.raises(IngestError) as err:
        run(data_dir)
    assert str(err.value) == (
        "contacts.csv: 3 of 10 rows (30.0%) would be quarantined, more than entities.contacts.max_bad_share (20%);"
        " the delivery is refused and nothing was written. Reasons: created_at:invalid_date 2 (first at line 4);"
        " record:malformed_line 1 (first at line 7). Check the export, or the formats and value maps in the"
        " source spec."
    )
    assert path.name in str(err.value)
    assert zone_bytes(data_dir) == before


def test_max_bad_share_half_loads_with_three_quarantined(data_dir, tmp_path, monkeypatch):
    contacts_spec(tmp_path, monkeypatch, max_bad_share=0.5)
    land(data_dir, "contacts.csv", _ten_rows_three_bad())
    f = run(data_dir).files["contacts"]
    assert (f.read, f.loaded, f.quarantined, f.duplicates) == (10, 7, 3, 0)
    assert quarantine(data_dir) == [
        ("contacts.csv", 4, "created_at", "invalid_date"), ("contacts.csv", 7, "record", "malformed_line"),
        ("contacts.csv", 9, "created_at", "invalid_date"),
    ]  # fmt: skip


# --------------------------------------------------------------------------- text ids


def _text_id_number(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:15], 16)


def test_text_ids_map_to_the_same_number_across_files_and_entities(data_dir, tmp_path, monkeypatch):
    sf = "003Dn00000AbCdEfGHI"
    fields = contact_fields(contact_id={"column": "Id", "type": "bigint", "required": True, "text_id": True})
    deals = {
        "file": "deals_*.csv", "format": "csv", "key": "deal_id", "updated_at": "created_at", "delivery": "delta",
        "fields": {
            "deal_id": {"column": "Id", "type": "bigint", "required": True, "text_id": True},
            "stage": {"column": "Stage", "type": "category", "required": True},
            "created_at": {"column": "Created", "type": "timestamp", "required": True, "formats": ["%Y-%m-%d %H:%M"]},
            "contact_id": {"column": "Contact", "type": "bigint", "text_id": True},
        },
    }  # fmt: skip
    contacts = {"file": "contacts.csv", "format": "csv", "key": "contact_id", "updated_at": "updated_at"}
    write_spec(tmp_path, monkeypatch, {"contacts": {**contacts, "fields": fields}, "deals": deals})
    other = sf.lower()  # Salesforce ids are case-sensitive: another record
    land(data_dir, "contacts.csv", csv_text([[sf, *row(1, "Sf")[1:]], [other, *row(2)[1:]]]))
    land(data_dir, "deals_1.csv", f"Id,Stage,Created,Contact\n006A,closedwon,{CREATED},{sf}\n")
    land(data_dir, "deals_2.csv", f"Id,Stage,Created,Contact\n006B,closedlost,{CREATED}, {sf} \n")
    res = run(data_dir)
    assert res.files["deals"].loaded == 2
    contact_ids = dict((name, cid) for cid, name in raw(data_dir, "contact_id, first_name"))
    assert contact_ids == {"Sf": _text_id_number(sf), "Ann": _text_id_number(other)}
    assert raw(data_dir, "deal_id, contact_id", "deals", "deal_id") == sorted(
        [(_text_id_number("006A"), _text_id_number(sf)), (_text_id_number("006B"), _text_id_number(sf))]
    )

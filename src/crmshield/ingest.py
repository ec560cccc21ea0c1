"""Ingest: landing exports -> typed Parquet in the raw zone (DuckDB), exactly once.

Which landing files hold which entity, their format, encoding and layout, and
how their columns map onto the canonical model are declared in the source spec
(``config/sources/*.yml``, validated by ``crmshield.sources``;
``$CRMSHIELD_SOURCE_SPEC`` picks one). Exports are read as text and every field
is cast explicitly, so postal codes and phone numbers keep their leading zeros.

Every delivered file is fingerprinted (sha256) and looked up in the delivery
registry (``raw/_deliveries.json``, committed together with the raw tables):

* a file already ingested is a **no-op**, recorded as ``already_ingested`` with
  the counts of the run that read it;
* a **snapshot** entity is rebuilt from its newest file (by name); older
  unread snapshot files are recorded as ``superseded``;
* a **delta** entity upserts each new file, in name order, into what raw
  holds: the latest ``updated_at`` of a record wins (then the later delivery,
  then the later row).

Each row of a file read is exactly one of: **loaded** into ``raw/<entity>.parquet``;
**quarantined** into ``quarantine/<entity>.parquet`` with file, line, field and a
reason code (malformed line, invalid encoding, invalid date, unknown category,
...); a **duplicate** (an exact repeat or an older version of a record); **expired**
(retention policy) or **erased** (erasure suppression list).
``read = loaded + quarantined + duplicates + expired + erased`` is checked for
every file. A file whose quarantined share passes the spec's ``max_bad_share``
is refused: the run stops before anything is written.

All outputs are built in a staging folder and committed together (a commit
marker, then renames). A crash before the marker leaves the previous raw zone
as it was; a crash after it is rolled forward by the next run. Either way the
retry completes the ingest, and never leaves partial raw data.

Raw and quarantine hold PII: they are owner-only and nothing past the privacy
stage reads them. Errors and results carry file names, field names, reason
codes, counts and line numbers, never the offending values.
"""

from __future__ import annotations

import codecs
import csv
import fnmatch
import hashlib
import io
import json
import os
import re
import shutil
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from crmshield.config import Settings
from crmshield.sources import (  # noqa: F401 - re-exported: the spec types used to live here
    CANONICAL,
    ENTITIES,
    UPPER_CASE_CATEGORIES,
    EntitySpec,
    Field,
    FieldType,
    SourceSpecError,
    default_source_spec_path,
    load_source_spec,
    source_spec_path,
    source_specs,
)

if TYPE_CHECKING:
    import duckdb

    from crmshield.keys import PseudonymKey


MAX_LINE_BYTES = 16 * 1024 * 1024  # a 1 MB ticket body is ordinary; a 16 MB record is an error (quarantined)
#: DuckDB's CSV read buffer: at least a record, and bounded (its default grows with max_line_size: 1 GiB at 64 MB)
CSV_BUFFER_BYTES = 2 * MAX_LINE_BYTES
#: DuckDB's memory ceiling for ingest (``$CRMSHIELD_INGEST_MEMORY_LIMIT``); beyond it DuckDB spills to the
#: owner-only staging folder, so a file of any size is ingested in bounded memory.
DEFAULT_MEMORY_LIMIT = "2GB"
ENCODING_SNIFF_BYTES = 1 << 20
REGISTRY = "_deliveries.json"
STAGING = ".staging"
COMMIT_MARKER = "COMMIT"

#: The shipped source spec (``config/sources/generator.yml``), loaded at import for the modules and
#: tests that describe the default layout. Ingest itself runs on :func:`source_specs`, which
#: honours ``$CRMSHIELD_SOURCE_SPEC``.
SPECS: dict[str, EntitySpec] = load_source_spec(default_source_spec_path())

#: Lower-cased country spelling -> ISO code: the contacts' country value map of the shipped spec.
COUNTRY_ALIASES: dict[str, str] = dict(next(f.aliases for f in SPECS["contacts"].fields if f.name == "country"))

_SQL_TYPES: dict[str, str] = {
    "bigint": "BIGINT", "integer": "INTEGER", "decimal": "DECIMAL(18,2)", "date": "DATE", "timestamp": "TIMESTAMP",
    "boolean": "BOOLEAN", "varchar": "VARCHAR", "category": "VARCHAR", "email": "VARCHAR", "phone": "VARCHAR",
}  # fmt: skip


class IngestError(RuntimeError):
    """The landing zone cannot be ingested (missing file, missing column, refused delivery, ...).

    Raised once the delivered files are fingerprinted, it carries the run's ``run_id`` and
    ``input_fingerprint`` (else None), so the failure can be recorded and reported for that run."""

    run_id: str | None = None
    input_fingerprint: str | None = None


@dataclass
class DeliveryResult:
    """Accounting for one delivered file."""

    file: str
    sha256: str
    bytes: int
    #: ingested (read by this run) | already_ingested (same content read by an earlier run: a no-op) |
    #: superseded (a snapshot older than the one read) | duplicate_delivery (same content as another file here)
    status: str
    read: int = 0
    loaded: int = 0
    quarantined: int = 0
    duplicates: int = 0
    expired: int = 0
    erased: int = 0
    inserted: int = 0  # delta: loaded rows that are new records
    updated: int = 0  # delta: loaded rows that replaced an earlier version in raw
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    encoding: str | None = None
    compression: str | None = None
    schema_drift: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    ingested_in: str | None = None  # the run that read it (this run for status ingested)


@dataclass
class FileResult:
    """Accounting for one entity (all its delivered files); the counts sum its files."""

    entity: str
    file: str  # the spec's file name or glob
    sha256: str  # the file's sha256 (one file) or a fingerprint over its files
    bytes: int
    read: int
    loaded: int
    quarantined: int
    duplicates: int
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    expired: int = 0  # purged by the retention policy (deliberately excluded)
    erased: int = 0  # on the erasure suppression list, or belonging to a contact who is (excluded)
    reference_time: str | None = None  # the export's reference time the retention counted back from
    retention_cutoff: str | None = None
    # loaded rows per canonical form: email:normalized / email:not_an_email, phone:e164 / phone:not_a_number
    normalization: dict[str, int] = field(default_factory=dict)
    delivery: str = "snapshot"
    delivered: bool = True  # False: the source does not deliver this entity (an empty raw table)
    raw_rows: int = 0  # rows in raw/<entity>.parquet after this run
    #: rows raw held before this run that a delta run kept (``kept``), replaced by newer versions, erased or
    #: expired: ``raw_rows = previous.kept + loaded``.
    previous: dict[str, int] = field(default_factory=dict)
    files: list[DeliveryResult] = field(default_factory=list)
    max_bad_share: float = 0.2
    required: list[str] = field(default_factory=list)  # fields a row cannot lack (the key first)
    #: every file raw's rows may come from: the deliveries ingested so far (a delta table keeps older ones)
    lineage_files: list[str] = field(default_factory=list)


@dataclass
class IngestResult:
    """Accounting for the whole landing zone; ``input_fingerprint`` keys the run."""

    input_fingerprint: str
    files: dict[str, FileResult]
    reference_date: str | None = None
    retention: dict[str, dict[str, object]] = field(default_factory=dict)
    erasure: dict[str, object] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return run_id_for(self.input_fingerprint)

    def to_dict(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "input_fingerprint": self.input_fingerprint,
            "reference_date": self.reference_date,
            "retention": self.retention,
            "erasure": self.erasure,
            "files": {k: asdict(v) for k, v in self.files.items()},
        }


def run_id_for(fingerprint_: str) -> str:
    return f"run-{fingerprint_[:16]}"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def fingerprint(files: dict[str, str], extra: str = "") -> str:
    """One sha256 over the named file hashes (order-independent) and ``extra``."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(f"{name}\0{files[name]}\n".encode())
    h.update(extra.encode())
    return h.hexdigest()


def _q(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# --------------------------------------------------------------------------- which files, in which order


def delivery_files(landing: Path, spec: EntitySpec) -> list[Path]:
    """The entity's delivered files: the exact name, or every file matching the glob, in name order.
    Hidden files (``.name``) and in-flight uploads (``*.part``, ``*.tmp``) are never taken."""
    if not spec.is_glob:
        path = landing / spec.file
        return [path] if path.is_file() else []
    if not landing.is_dir():
        return []
    return sorted(
        p
        for p in landing.iterdir()
        if p.is_file()
        and fnmatch.fnmatchcase(p.name, spec.file)
        and not p.name.startswith(".")
        and not p.name.endswith((".part", ".tmp"))
    )


def landing_files(landing: Path, specs: dict[str, EntitySpec] | None = None) -> dict[str, list[Path]]:
    """entity -> its delivered files; IngestError if an entity has none or two entities claim one file."""
    specs = source_specs() if specs is None else specs
    out: dict[str, list[Path]] = {}
    owner: dict[str, str] = {}
    for entity, spec in specs.items():
        files = delivery_files(landing, spec)
        if not files:
            what = "a file matching" if spec.is_glob else "the file"
            raise IngestError(f"{landing / spec.file}: expected {spec.entity} export ({what} '{spec.file}') not found")
        for p in files:
            if p.name in owner:
                raise IngestError(f"{p}: matched by the files of both {owner[p.name]} and {entity}; make them disjoint")
            owner[p.name] = entity
        out[entity] = files
    return out


def landing_fingerprint(landing: Path, extra: str = "") -> tuple[str, dict[str, str]]:
    """(fingerprint, {file: sha256}) over the delivered landing files (what keys the run)."""
    hashes = {p.name: sha256_file(p) for files in landing_files(landing).values() for p in files}
    return fingerprint(hashes, extra), hashes


# --------------------------------------------------------------------------- encodings and compression

#: Encodings DuckDB's CSV reader decodes itself (Python codec name -> DuckDB's); anything else is transcoded.
_DUCKDB_ENCODINGS = {"utf-8": "utf-8", "utf-8-sig": "utf-8", "utf-16": "utf-16", "iso8859-1": "latin-1"}


def _compression(path: Path, spec: EntitySpec) -> str:
    if spec.compression != "auto":
        return spec.compression
    name = path.name.lower()
    if name.endswith(".gz"):
        return "gzip"
    if name.endswith(".zip"):
        return "zip"
    return "none"


@contextmanager
def _open_binary(path: Path, compression: str) -> Iterator[IO[bytes]]:
    """The file's bytes, decompressed (a zip must hold exactly one file)."""
    if compression == "gzip":
        import gzip

        with gzip.open(path, "rb") as fh:
            yield fh
    elif compression == "zip":
        try:
            zf = zipfile.ZipFile(path)
        except zipfile.BadZipFile as exc:
            raise IngestError(f"{path}: not a readable zip archive ({exc})") from None
        with zf:
            members = [m for m in zf.infolist() if not m.is_dir() and not m.filename.startswith("__MACOSX/")]
            if len(members) != 1:
                raise IngestError(f"{path}: a zip delivery must hold exactly one file, this one holds {len(members)}")
            with zf.open(members[0]) as fh:
                yield fh
    else:
        with path.open("rb") as fh:
            yield fh


def detect_encoding(head: bytes) -> str:
    """BOM -> utf-8-sig / utf-16; else utf-8 when ``head`` decodes as UTF-8 (a character cut at the end is
    fine); else cp1252 (a superset of latin-1 for text: what spreadsheets on Windows save)."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return "cp1252"
    return "utf-8"


@dataclass
class _Prepared:
    """What DuckDB reads for one delivered file."""

    path: Path  # the file itself, or a decompressed / transcoded copy in the staging folder
    encoding: str  # Python codec name of the delivered file
    compression: str  # of the delivered file
    duckdb_encoding: str  # what DuckDB decodes ``path`` with
    duckdb_compression: str


def _prepare(path: Path, spec: EntitySpec, scratch: Path) -> _Prepared:
    """Decide the encoding, and hand DuckDB something it reads natively: gzip and UTF-8 / UTF-16 / latin-1
    directly; a zip member, or any other encoding (cp1252, ...), through a streamed UTF-8 copy in the
    owner-only staging folder (constant memory)."""
    compression = _compression(path, spec)
    try:
        with _open_binary(path, compression) as fh:
            head = fh.read(ENCODING_SNIFF_BYTES)
    except (OSError, EOFError, zipfile.BadZipFile) as exc:  # gzip.BadGzipFile is an OSError
        raise IngestError(f"{path}: cannot be read as {compression} ({exc})") from None
    if not head.strip(b" \t\r\n\x00" + codecs.BOM_UTF8 + codecs.BOM_UTF16_LE):
        raise IngestError(
            f"{path}: the file is empty (no header line, no record). A delivery with no records still carries"
            " its header line; re-export the file."
        )
    encoding = detect_encoding(head) if spec.encoding == "auto" else spec.encoding
    if encoding == "utf-8" and head.startswith(codecs.BOM_UTF8):
        encoding = "utf-8-sig"
    native = _DUCKDB_ENCODINGS.get(encoding)
    if native == "utf-16" and head.startswith(codecs.BOM_UTF16_BE):
        native = None  # DuckDB reads UTF-16 little-endian only
    if spec.format == "json" and native not in ("utf-8", None):
        native = None  # DuckDB's JSON reader takes UTF-8 only
    if native is not None and compression in ("none", "gzip"):
        return _Prepared(path, encoding, compression, native, compression)
    scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
    out = scratch / f"{hashlib.sha256(path.name.encode()).hexdigest()[:16]}.utf8"
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    done = 0
    with _open_binary(path, compression) as src, out.open("wb") as dst:
        os.chmod(out, 0o600)
        while block := _read_block(src, path, compression):
            try:
                text = decoder.decode(block)
            except UnicodeDecodeError as exc:
                raise IngestError(
                    f"{path}: not valid {encoding} at byte {done + exc.start}; declare the file's encoding in the"
                    " source spec (entities.<entity>.encoding)"
                ) from None
            done += len(block)
            dst.write(text.encode("utf-8"))
        try:
            dst.write(decoder.decode(b"", final=True).encode("utf-8"))
        except UnicodeDecodeError:
            raise IngestError(f"{path}: the file ends in the middle of a {encoding} character") from None
    return _Prepared(out, encoding, compression, "utf-8", "none")


def _read_block(src: IO[bytes], path: Path, compression: str) -> bytes:
    try:
        return src.read(1 << 20)
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise IngestError(f"{path}: cannot be read as {compression} ({exc})") from None


def _read_header(prep: _Prepared, spec: EntitySpec, path: Path) -> list[str]:
    """The CSV header record, parsed with the spec's dialect."""
    enc = {"utf-8": "utf-8-sig", "utf-16": "utf-16", "latin-1": "latin-1"}[prep.duckdb_encoding]
    with _open_binary(prep.path, prep.duckdb_compression) as fh:
        text = io.TextIOWrapper(fh, encoding=enc, errors="replace", newline="")
        dialect: dict[str, Any] = {"delimiter": spec.delimiter, "quotechar": spec.quote}
        if spec.escape != spec.quote:
            dialect.update(escapechar=spec.escape, doublequote=False)
        row = next(csv.reader(text, **dialect), None)
    if row is None or not any(c.strip() for c in row):
        raise IngestError(f"{path}: the file is empty (no header line). A delivery with no records still carries"
                          " its header line; re-export the file.")  # fmt: skip
    names = [c.strip() for c in row]
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise IngestError(f"{path}: line 1: column '{name}' appears twice in the header")
        seen.add(name)
        if not name:
            names[i] = f"column_{i + 1}"
    return names


# --------------------------------------------------------------------------- schema drift


def _resolve_csv_columns(spec: EntitySpec, header: list[str], path: Path, res: DeliveryResult) -> dict[str, str | None]:
    """field name -> the header column it is read from (None: missing, NULL). Applies the spec's drift rules."""
    used: dict[str, str | None] = {}
    renamed: dict[str, str] = {}
    missing: list[str] = []
    cols = set(header)
    for f in spec.fields:
        found = next((c for c in (f.source, *f.renamed_from) if c in cols), None)
        if found is not None and found != f.source:
            renamed[f.name] = found
        if found is None:
            missing.append(f.source)
        used[f.name] = found
    new = [c for c in header if c not in set(used.values()) and c not in spec.ignore_columns]
    _apply_drift(spec, path, res, new, missing, renamed, "column")
    return used


def _apply_drift(
    spec: EntitySpec, path: Path, res: DeliveryResult, new: list[str], missing: list[str], renamed: dict[str, str],
    what: str,
) -> None:  # fmt: skip
    by_source = {f.source: f for f in spec.fields}
    hard = [m for m in missing if by_source[m].required or by_source[m].name == spec.key]
    if hard:
        raise IngestError(
            f"{path}: required {what}(s) {hard} missing (fields {[by_source[m].name for m in hard]}); expected the"
            f" {spec.entity} layout of the source spec"
        )
    drift: dict[str, Any] = {}
    errors = []
    if missing:
        drift["missing_columns"] = missing
        if spec.on_missing_column == "error":
            errors.append(
                f"missing {what}(s) {missing}: if the export dropped or renamed them, declare the new name under the"
                f" field's aliases, or set entities.{spec.entity}.on_missing_column: warn to load them as empty"
            )
        else:
            res.warnings.append(f"missing {what}(s) loaded as empty (on_missing_column: warn): {', '.join(missing)}")
    if new:
        drift["new_columns"] = new
        if spec.on_new_column == "error":
            errors.append(
                f"new {what}(s) {new} not in the source spec: map each under entities.{spec.entity}.fields (and"
                f" classify it in the privacy policy), or list it in entities.{spec.entity}.ignore_columns;"
                " on_new_column: warn drops unknown columns with a warning"
            )
        else:
            res.warnings.append(f"new {what}(s) not loaded (on_new_column: warn): {', '.join(new)}")
    if errors:
        raise IngestError(f"{path}: schema drift: " + "; ".join(errors))
    if renamed:
        drift["renamed"] = renamed
        res.warnings.append(
            "renamed " + ", ".join(f"{by_f} <- '{col}'" for by_f, col in renamed.items()) + " (declared aliases)"
        )
    res.schema_drift = drift


def _json_top_key(path: str) -> str:
    """The top-level key of a JSON path (``$.via.channel`` -> ``via``, ``$."a b".c`` -> ``a b``)."""
    rest = path[2:] if path.startswith("$.") else path.lstrip("$")
    if rest.startswith('"'):
        end = rest.find('"', 1)
        return rest[1:end] if end > 0 else rest[1:]
    for i, ch in enumerate(rest):
        if ch in ".[":
            return rest[:i]
    return rest


# --------------------------------------------------------------------------- reading one file


def _load_source(
    con: duckdb.DuckDBPyConnection, spec: EntitySpec, path: Path, prep: _Prepared, res: DeliveryResult
) -> int:
    """Create table ``src`` (one text column per field, named after the field, plus ``_source_row``, the
    record's line number in the file, or its position in a JSON array) and table ``bad_lines`` (records that
    could not be parsed at all: wrong column count, invalid encoding, broken JSON). Returns the number of
    bad lines."""
    p = _lit(str(prep.path))
    common = (
        f"encoding={_lit(prep.duckdb_encoding)}, compression={_lit(prep.duckdb_compression)}, store_rejects=true,"
        f" rejects_table='rej', rejects_scan='rej_scan', max_line_size={MAX_LINE_BYTES}, buffer_size={CSV_BUFFER_BYTES}"
    )
    header_lines = 0
    if spec.format == "csv":
        header = _read_header(prep, spec, path)
        used = _resolve_csv_columns(spec, header, path, res)
        header_lines = 1
        columns = "{" + ", ".join(f"{_lit(f'c{i}')}: 'VARCHAR'" for i in range(len(header))) + "}"
        source = (
            f"read_csv({p}, header=false, skip=1, auto_detect=false, columns={columns}, delim={_lit(spec.delimiter)},"
            f" quote={_lit(spec.quote)}, escape={_lit(spec.escape)}, {common})"
        )
        position = {c: i for i, c in enumerate(header)}
        select = ", ".join(
            (f"c{position[col]}" if col is not None else "CAST(NULL AS VARCHAR)") + f" AS {_q(name)}"
            for name, col in used.items()
        )
    elif spec.format == "jsonl":
        source = (
            f"read_csv({p}, header=false, columns={{'line': 'VARCHAR'}}, delim='\\x1f', quote='', "
            f"escape='', auto_detect=false, {common})"
        )
    else:  # one JSON array: each element is a record (no rejects: a broken array stops the file)
        json_compression = "uncompressed" if prep.duckdb_compression == "none" else prep.duckdb_compression
        source = (
            f"(SELECT json AS line FROM read_json_objects({p}, format='array', compression={_lit(json_compression)},"
            f" maximum_object_size={MAX_LINE_BYTES}))"
        )
        con.execute("CREATE OR REPLACE TEMP TABLE rej (line BIGINT, error_type VARCHAR, csv_line VARCHAR)")
        con.execute("CREATE OR REPLACE TEMP TABLE rej_scan (x INTEGER)")
    if spec.format == "csv":  # one pass: the scan happens when typing reads this view (see _finish_scan)
        con.execute(
            f"""CREATE OR REPLACE TEMP VIEW src AS
            SELECT {select}, CAST(row_number() OVER () + {header_lines} AS BIGINT) AS _source_row FROM {source}"""
        )
        return -1
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE parsed AS SELECT row_number() OVER () AS _p, * FROM {source}")
    except Exception as exc:  # duckdb.Error: the message names the position, never a value of ours
        raise _unreadable(path, spec, exc) from None
    n_bad = _collect_rejects(con)
    numbering = "SELECT parsed.* EXCLUDE (_p), CAST(_p AS BIGINT) AS _source_row FROM parsed"
    con.execute(f"CREATE OR REPLACE TEMP TABLE numbered AS {numbering}")
    con.execute("DROP TABLE parsed")
    if n_bad:
        _renumber(con, "numbered", "TRUE")
    con.execute(
        """INSERT INTO bad_lines
        SELECT _source_row, 'malformed_json', 'record', line FROM numbered
        WHERE line IS NOT NULL AND trim(line) <> ''
          AND (NOT json_valid(line) OR json_type(line) <> 'OBJECT')"""
    )
    keys = {
        r[0]
        for r in con.execute(
            """SELECT DISTINCT unnest(json_keys(line)) FROM numbered
            WHERE line IS NOT NULL AND trim(line) <> '' AND json_valid(line) AND json_type(line) = 'OBJECT'"""
        ).fetchall()
    }
    exprs, renamed, missing, used_keys = [], {}, [], set()
    for f in spec.fields:
        present = [s for s in (f.source, *f.renamed_from) if _json_top_key(s) in keys]
        used_keys.update(_json_top_key(s) for s in present)
        if not present and keys:
            missing.append(f.source)
        if present and present[0] != f.source:
            renamed[f.name] = present[0]
        paths = present or [f.source]
        parts = [f"json_extract_string(line, {_lit(s)})" for s in paths]
        exprs.append((f"coalesce({', '.join(parts)})" if len(parts) > 1 else parts[0]) + f" AS {_q(f.name)}")
    new = sorted(k for k in keys if k not in used_keys and k not in spec.ignore_columns)
    _apply_drift(spec, path, res, new, missing, renamed, "key")
    con.execute(
        f"""CREATE OR REPLACE TEMP VIEW src AS SELECT {", ".join(exprs)}, _source_row
        FROM numbered WHERE line IS NOT NULL AND trim(line) <> '' AND json_valid(line)
          AND json_type(line) = 'OBJECT'"""
    )
    return int(con.execute("SELECT count(*) FROM bad_lines").fetchone()[0])  # type: ignore[index]


def _unreadable(path: Path, spec: EntitySpec, exc: Exception, typing: bool = False) -> IngestError:
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if typing:  # the CSV is scanned while it is typed: the error may be the file's or the machine's
        return IngestError(f"{path}: reading and typing the {spec.format} failed ({first})")
    return IngestError(f"{path}: cannot be read as {spec.format} ({first})")


def _collect_rejects(con: duckdb.DuckDBPyConnection) -> int:
    """DuckDB's rejects of the scan just done -> table ``bad_lines`` (one row per rejected line); their count."""
    con.execute(
        """CREATE OR REPLACE TEMP TABLE bad_lines AS
        SELECT CAST(line AS BIGINT) AS _source_row,
               CASE WHEN bool_or(error_type = 'INVALID ENCODING') THEN 'invalid_encoding'
                    ELSE 'malformed_line' END AS reason,
               'record' AS field, any_value(csv_line) AS record
        FROM rej GROUP BY line"""
    )
    con.execute("DROP TABLE rej")
    con.execute("DROP TABLE rej_scan")
    return int(con.execute("SELECT count(*) FROM bad_lines").fetchone()[0])  # type: ignore[index]


def _renumber(con: duckdb.DuckDBPyConnection, table: str, where: str) -> None:
    """Turn the record numbers in ``table._source_row`` (``r = n + h`` for the n-th record read after ``h``
    header lines) into line numbers: add the rejected lines before each record. The j-th rejected line L (in
    order) precedes the record exactly when L - j <= r - 1; an ASOF join finds the largest such j."""
    con.execute(
        """CREATE OR REPLACE TEMP TABLE _rk AS
        SELECT line - j AS k, max(j) AS j
        FROM (SELECT _source_row AS line, row_number() OVER (ORDER BY _source_row) AS j FROM bad_lines)
        GROUP BY 1"""
    )
    con.execute(
        f"""UPDATE {table} SET _source_row = {table}._source_row + r.j
        FROM (SELECT t._source_row AS old, r.j FROM (SELECT _source_row FROM {table} WHERE {where}) t
              ASOF JOIN _rk r ON t._source_row - 1 >= r.k) r
        WHERE {where} AND {table}._source_row = r.old"""
    )
    con.execute("DROP TABLE _rk")


# --------------------------------------------------------------------------- typing


def _number_text(f: Field, v: str) -> str:
    """The number as DuckDB reads it. With a decimal comma or a grouping separator the value must have that
    shape first (``1.234,56``, ``1234,5``): a number written in the other locale is invalid, never misread."""
    if not f.thousands and f.decimal == ".":
        return v
    d, t = re.escape(f.decimal), re.escape(f.thousands)
    grouped = rf"|[0-9]{{1,3}}({t}[0-9]{{3}})+" if f.thousands else ""
    shape = rf"^[+-]?([0-9]+{grouped})({d}[0-9]+)?$"
    out = f"replace({v}, {_lit(f.thousands)}, '')" if f.thousands else v
    if f.decimal == ",":
        out = f"replace({out}, ',', '.')"
    return f"CASE WHEN regexp_full_match({v}, {_lit(shape)}) THEN {out} END"


def _typed(f: Field, text: str, entity: str, region: str = "NULL") -> tuple[str, str | None]:
    """SQL for the typed value and for its error code (NULL when fine).

    Emails and phones are put in canonical form (``crmshield.normalize``, registered
    as vectorized UDFs) so one person gets one pseudonym across exports; a value
    that is not an email or a possible number is kept as written, never rejected:
    the privacy job gives it no pseudonym and the redactor still matches it."""
    v = f"nullif(trim({text}), '')"
    if f.type == "varchar":
        return v, None
    if f.type == "email":  # printable ASCII without spaces: NFC, strip and lower are DuckDB's lower()
        return f"CASE WHEN regexp_full_match({v}, '[!-~]+') THEN lower({v}) ELSE crm_email({v}) END", None
    if f.type == "phone":
        return f"crm_phone({v}, {region})", None
    if f.type == "bigint" and f.text_id:  # a stable 60-bit number from the id's sha256 (collisions checked)
        return f"CAST(('0x' || left(sha256({v}), 15)) AS BIGINT)", None
    if f.type in ("bigint", "integer", "decimal"):
        return f"try_cast({_number_text(f, v)} AS {_SQL_TYPES[f.type]})", "invalid_number"
    if f.type in ("date", "timestamp"):
        # one scalar call per format: DuckDB's list form rolls an impossible date over when a format has %z
        # (try_strptime('2024-02-30T08:15:00Z', [..., '%Y-%m-%dT%H:%M:%S%z']) is 2024-03-01)
        parts = [f"try_strptime({v}, {_lit(x)})" for x in f.formats]
        expr = parts[0] if len(parts) == 1 else f"coalesce({', '.join(parts)})"
        if f.type == "date":
            expr = f"CAST({expr} AS DATE)"
        elif any("%z" in x for x in f.formats):
            expr = f"CAST(timezone('UTC', {expr}) AS TIMESTAMP)"
        else:
            expr = f"CAST({expr} AS TIMESTAMP)"
        return expr, "invalid_date"
    if f.type == "boolean":
        return (
            f"CASE WHEN lower({v}) IN ('true', 'yes', 'y', '1') THEN true "
            f"WHEN lower({v}) IN ('false', 'no', 'n', '0') THEN false END",
            "invalid_boolean",
        )
    # category: the value map first, then the canonical values (upper-case codes, or lower-case letters and digits)
    canonical = CANONICAL[entity][f.name].allowed
    if f.name in UPPER_CASE_CATEGORIES:
        norm = f"upper({v})"
        allowed = canonical
    else:
        norm = f"regexp_replace(lower({v}), '[^a-z0-9]', '', 'g')"
        allowed = f.allowed or canonical
    fallback = f"CASE WHEN {norm} IN ({', '.join(_lit(a) for a in allowed)}) THEN {norm} END"
    if f.aliases:
        cases = " ".join(f"WHEN {_lit(k)} THEN {_lit(val)}" for k, val in f.aliases)
        return f"coalesce(CASE lower({v}) {cases} END, {fallback})", "invalid_value"
    return fallback, "invalid_value"


def _type_file(con: duckdb.DuckDBPyConnection, spec: EntitySpec, file_name: str, seq: int) -> None:
    """``src`` -> rows appended to ``typed`` (canonical columns, ``_errors``, ``_record`` for rows with errors,
    lineage). Each value is typed once; the record (the row's source text, for the quarantine) is only built for
    rows with errors."""
    inner, error_exprs, outer = [], [], []
    by_name = {f.name: f for f in spec.fields}
    for name in CANONICAL[spec.entity]:
        f = by_name.get(name)
        if f is None:
            outer.append(f"CAST(NULL AS {_SQL_TYPES[CANONICAL[spec.entity][name].type]}) AS {_q(name)}")
            continue
        region = _typed(by_name[f.region], _q(f.region), spec.entity)[0] if f.region else "NULL"
        expr, code = _typed(f, _q(f.name), spec.entity, region)
        t, src = _q(f"__t__{name}"), _q(f"__s__{name}")
        inner += [f"{expr} AS {t}", f"{_q(name)} AS {src}"]
        outer.append(f"{t} AS {_q(name)}")
        if code:
            error_exprs.append(
                f"CASE WHEN nullif(trim({src}), '') IS NOT NULL AND {t} IS NULL THEN {_lit(f.name + ':' + code)} END"
            )
        if f.required or f.name == spec.key:
            error_exprs.append(f"CASE WHEN nullif(trim({src}), '') IS NULL THEN {_lit(f.name + ':missing_value')} END")
    # the list of error codes is only built for rows with an error (lists per row are costly at 1M rows)
    errors = (
        f"CASE WHEN {' OR '.join(f'({c}) IS NOT NULL' for c in error_exprs)} THEN"
        f" list_filter([{', '.join(error_exprs)}], x -> x IS NOT NULL) ELSE []::VARCHAR[] END"
        if error_exprs
        else "[]::VARCHAR[]"
    )
    record = "to_json(struct_pack(" + ", ".join(f"{_q(f.name)} := {_q('__s__' + f.name)}" for f in spec.fields) + "))"
    key = by_name[spec.key]
    key_text = f"nullif(trim({_q('__s__' + key.name)}), '')" if key.text_id else "NULL::VARCHAR"
    con.execute(
        f"""INSERT INTO typed BY NAME
        SELECT {", ".join(outer)}, _errors, CASE WHEN len(_errors) > 0 THEN {record} END AS _record,
               {_lit(file_name)} AS _source_file, _source_row, {seq} AS _seq, {key_text} AS _key_text
        FROM (SELECT *, {errors} AS _errors FROM (SELECT {", ".join(inner)}, _source_row FROM src))"""
    )
    con.execute("DROP VIEW src")
    con.execute("DROP TABLE IF EXISTS parsed")
    con.execute("DROP TABLE IF EXISTS numbered")


def _create_typed(con: duckdb.DuckDBPyConnection, entity: str) -> None:
    cols = ", ".join(f"{_q(n)} {_SQL_TYPES[c.type]}" for n, c in CANONICAL[entity].items())
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE typed ({cols}, _errors VARCHAR[], _record VARCHAR, _source_file VARCHAR,
        _source_row BIGINT, _seq INTEGER, _key_text VARCHAR)"""
    )
    con.execute(
        """CREATE OR REPLACE TEMP TABLE bad_all (_source_file VARCHAR, _source_row BIGINT, field VARCHAR,
        reason VARCHAR, record VARCHAR)"""
    )


# --------------------------------------------------------------------------- one entity


@dataclass
class _Context:
    settings: Settings
    staging: Path
    run_id: str
    registry: dict[str, Any]
    hashes: dict[str, str]
    retention: tuple[str, int] | None = None
    reference: datetime | None = None
    suppression: str | None = None  # the column linking a row to its contact, when suppression is active


def _plan(spec: EntitySpec, files: list[Path], ctx: _Context) -> tuple[list[Path], list[DeliveryResult], bool]:
    """(files to read, results for the files not read, whether raw's current table is the base)."""
    known = ctx.registry.get(spec.entity, {}).get("files", {})
    current = ctx.registry.get(spec.entity, {}).get("current")
    raw_exists = (ctx.settings.raw / f"{spec.entity}.parquet").is_file()
    skipped: list[DeliveryResult] = []
    seen: dict[str, str] = {}

    def noop(p: Path, status: str, prior: dict[str, Any] | None = None) -> DeliveryResult:
        sha = ctx.hashes[p.name]
        res = DeliveryResult(file=p.name, sha256=sha, bytes=p.stat().st_size, status=status)
        if prior:
            for k in ("read", "loaded", "quarantined", "duplicates", "expired", "erased", "inserted", "updated"):
                setattr(res, k, int(prior.get(k, 0)))
            res.quarantine_reasons = dict(prior.get("quarantine_reasons", {}))
            res.ingested_in = prior.get("ingested_in")
            res.encoding, res.compression = prior.get("encoding"), prior.get("compression")
            res.schema_drift = dict(prior.get("schema_drift", {}))
        return res

    if spec.delivery == "snapshot":
        latest = files[-1]
        sha = ctx.hashes[latest.name]
        for p in files[:-1]:  # older snapshot files: replaced by the newest (or the same content under two names)
            skipped.append(noop(p, "superseded" if ctx.hashes[p.name] != sha else "duplicate_delivery"))
        if current == sha and raw_exists and sha in known:
            skipped.append(noop(latest, "already_ingested", known[sha]))
            return [], skipped, True
        return [latest], skipped, False
    to_read = []
    for p in files:
        sha = ctx.hashes[p.name]
        if sha in known and raw_exists:
            skipped.append(noop(p, "already_ingested", known[sha]))
        elif sha in seen:
            skipped.append(noop(p, "duplicate_delivery"))
        else:
            seen[sha] = p.name
            to_read.append(p)
    return to_read, skipped, raw_exists


def ingest_entity(con: duckdb.DuckDBPyConnection, spec: EntitySpec, files: list[Path], ctx: _Context) -> FileResult:
    """Read the entity's new deliveries, merge them with raw's current table where that is the base, and write
    the new raw table, its quarantine and the accounting into the staging folder. Nothing is committed here."""
    to_read, skipped, use_base = _plan(spec, files, ctx)
    _create_typed(con, spec.entity)
    read_results: list[DeliveryResult] = []
    scratch = ctx.staging / "scratch"
    for seq, path in enumerate(to_read, start=1):
        res = DeliveryResult(
            file=path.name, sha256=ctx.hashes[path.name], bytes=path.stat().st_size, status="ingested",
            ingested_in=ctx.run_id,
        )  # fmt: skip
        prep = _prepare(path, spec, scratch)
        res.encoding, res.compression = prep.encoding, prep.compression
        n_bad = _load_source(con, spec, path, prep, res)
        try:
            _type_file(con, spec, path.name, seq)
        except Exception as exc:
            if spec.format != "csv" or isinstance(exc, IngestError):
                raise
            raise _unreadable(path, spec, exc, typing=True) from None
        if n_bad < 0:  # csv: the scan is done, its rejects are known
            if _collect_rejects(con):
                _renumber(con, "typed", f"_seq = {seq}")
        con.execute(
            f"""INSERT INTO bad_all SELECT {_lit(path.name)}, _source_row, field, reason, to_json(record)
            FROM bad_lines"""
        )
        con.execute("DROP TABLE bad_lines")
        if prep.path != path:
            prep.path.unlink(missing_ok=True)
        read_results.append(res)
    _check_text_ids(con, spec)

    # erasure: drop suppressed subjects from the new rows (counted per file) and from the base
    erased_by_file: dict[str, int] = {}
    if ctx.suppression:
        erased_by_file = _erase_suppressed(con, spec, ctx.suppression, "typed")
    base_path = ctx.settings.raw / f"{spec.entity}.parquet"
    canon = list(CANONICAL[spec.entity])
    names = ", ".join(_q(n) for n in canon)
    if use_base and base_path.is_file():
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE base AS SELECT {names}, _source_file, _source_row
            FROM read_parquet({_lit(str(base_path))})"""
        )
    else:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE base AS SELECT {names}, _source_file, _source_row FROM typed LIMIT 0"
        )
    base_rows = _count(con, "base")
    base_erased = sum(_erase_suppressed(con, spec, ctx.suppression, "base").values()) if ctx.suppression else 0

    # the latest version of each record wins: updated_at, then the later delivery (the base is the earliest),
    # then the later row
    order = f"{_q(spec.updated_at)} DESC NULLS LAST, " if spec.updated_at else ""
    con.execute(
        f"""CREATE OR REPLACE TEMP VIEW candidates AS
        SELECT {names}, _source_file, _source_row, 0 AS _seq FROM base
        UNION ALL
        SELECT {names}, _source_file, _source_row, _seq FROM typed WHERE len(_errors) = 0"""
    )
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE winners AS SELECT * FROM candidates
        QUALIFY row_number() OVER (
            PARTITION BY {_q(spec.key)} ORDER BY {order}_seq DESC, _source_row DESC) = 1"""
    )
    reference = ctx.reference
    if reference is None and spec.entity == "contacts":
        row = con.execute(
            "SELECT greatest(max(coalesce(updated_at, created_at)), max(created_at)) FROM winners"
        ).fetchone()
        reference = row[0] if row else None
    cutoff = None
    con.execute("ALTER TABLE winners ADD COLUMN _expired BOOLEAN DEFAULT false")
    if ctx.retention and reference is not None:
        column, days = ctx.retention
        cutoff = reference - timedelta(days=days)
        con.execute(f"UPDATE winners SET _expired = true WHERE {_q(column)} < ?", [cutoff])

    raw_tmp = ctx.staging / f"raw-{spec.entity}.parquet"
    q_tmp = ctx.staging / f"quarantine-{spec.entity}.parquet"
    con.execute(
        f"""COPY (SELECT {names}, _source_file, _source_row FROM winners WHERE NOT _expired ORDER BY {_q(spec.key)})
        TO {_lit(str(raw_tmp))} (FORMAT parquet, COMPRESSION zstd)"""
    )
    con.execute(
        f"""COPY (
            SELECT _source_file AS source_file, _source_row AS source_row,
                   split_part(_errors[1], ':', 1) AS field, split_part(_errors[1], ':', 2) AS reason,
                   _errors AS errors, _record AS record
            FROM typed WHERE len(_errors) > 0
            UNION ALL
            SELECT _source_file, _source_row, field, reason, [field || ':' || reason], record FROM bad_all
            ORDER BY source_file, source_row
        ) TO {_lit(str(q_tmp))} (FORMAT parquet, COMPRESSION zstd)"""
    )
    os.chmod(raw_tmp, 0o600)
    os.chmod(q_tmp, 0o600)

    # per-file accounting of the rows read
    stats = {
        r[0]: r[1:]
        for r in con.execute(
            f"""WITH w AS (SELECT _source_file, _source_row, _seq, _expired FROM winners WHERE _seq > 0),
                 b AS (SELECT DISTINCT {_q(spec.key)} AS k FROM base)
            SELECT t._source_file,
                   count(*),
                   count(*) FILTER (WHERE len(t._errors) > 0),
                   count(*) FILTER (WHERE len(t._errors) = 0 AND w._source_row IS NULL),
                   count(*) FILTER (WHERE w._expired),
                   count(*) FILTER (WHERE w._source_row IS NOT NULL AND NOT w._expired AND b.k IS NULL),
                   count(*) FILTER (WHERE w._source_row IS NOT NULL AND NOT w._expired AND b.k IS NOT NULL)
            FROM typed t
            LEFT JOIN w ON w._seq = t._seq AND w._source_row = t._source_row  -- winners are error-free rows
            LEFT JOIN b ON b.k = t.{_q(spec.key)}
            GROUP BY ALL"""
        ).fetchall()
    }
    bad = dict(con.execute("SELECT _source_file, count(*) FROM bad_all GROUP BY ALL").fetchall())
    reasons: dict[str, dict[str, int]] = {}
    for file_, reason, n in con.execute(
        f"""SELECT source_file, field || ':' || reason, count(*) FROM read_parquet({_lit(str(q_tmp))})
        GROUP BY ALL ORDER BY 1, 2"""
    ).fetchall():
        reasons.setdefault(file_, {})[reason] = int(n)
    refused = []
    for res in read_results:
        parsed, bad_typed, dup, expired, inserted, updated = (int(x) for x in stats.get(res.file, (0,) * 6))
        n_bad = int(bad.get(res.file, 0))
        res.erased = erased_by_file.get(res.file, 0)
        res.read = parsed + n_bad + res.erased
        res.quarantined = bad_typed + n_bad
        res.duplicates, res.expired = dup, expired
        res.inserted, res.updated = (inserted, updated) if spec.delivery == "delta" else (inserted + updated, 0)
        res.loaded = inserted + updated
        res.quarantine_reasons = reasons.get(res.file, {})
        if res.read == 0:
            res.warnings.append("no records (header only, or an empty JSON array)")
        if res.read != res.loaded + res.quarantined + res.duplicates + res.expired + res.erased:  # pragma: no cover
            raise IngestError(
                f"{res.file}: reconciliation failed: read != loaded+quarantined+duplicates+expired+erased"
            )
        if res.read and res.quarantined / res.read > spec.max_bad_share:
            refused.append(_refusal(con, spec, res))
    if refused:
        raise IngestError("\n".join(refused))

    raw_rows = int(con.execute(f"SELECT count(*) FROM read_parquet({_lit(str(raw_tmp))})").fetchone()[0])  # type: ignore[index]
    base_left = con.execute(
        "SELECT count(*) FILTER (WHERE NOT _expired), count(*) FILTER (WHERE _expired) FROM winners WHERE _seq = 0"
    ).fetchone()
    assert base_left is not None
    kept, base_expired = int(base_left[0]), int(base_left[1])
    previous = {}
    if use_base:
        previous = {
            "rows": base_rows, "kept": kept, "erased": base_erased, "expired": base_expired,
            "replaced": base_rows - base_erased - kept - base_expired,
        }  # fmt: skip
    loaded_now = sum(r.loaded for r in read_results)
    if raw_rows != (kept if use_base else 0) + loaded_now:  # pragma: no cover - arithmetic guard
        raise IngestError(f"{spec.entity}: reconciliation failed: raw rows {raw_rows} != kept + loaded")
    normalization = _normalization_counts(con, spec, "winners WHERE NOT _expired")
    con.execute("DROP VIEW IF EXISTS candidates")
    for t in ("typed", "bad_all", "base", "winners"):
        con.execute(f"DROP TABLE IF EXISTS {t}")

    results = read_results + skipped
    results.sort(key=lambda r: r.file)
    counted = [r for r in results if r.status in ("ingested", "already_ingested")]
    total = {k: sum(getattr(r, k) for r in counted) for k in ("read", "loaded", "quarantined", "duplicates")}
    qr: dict[str, int] = {}
    for r in counted:
        for k, n in r.quarantine_reasons.items():
            qr[k] = qr.get(k, 0) + n
    one = len(results) == 1
    return FileResult(
        entity=spec.entity, file=results[0].file if one else spec.file,
        sha256=results[0].sha256 if one else fingerprint({r.file: r.sha256 for r in results}),
        bytes=sum(r.bytes for r in results), **total, quarantine_reasons=dict(sorted(qr.items())),
        expired=sum(r.expired for r in counted), erased=sum(r.erased for r in counted),
        reference_time=reference.isoformat() if reference else None,
        retention_cutoff=cutoff.isoformat() if cutoff else None, normalization=normalization,
        delivery=spec.delivery, raw_rows=raw_rows, previous=previous, files=results, max_bad_share=spec.max_bad_share,
        required=[spec.key, *(f.name for f in spec.fields if f.required and f.name != spec.key)],
        lineage_files=sorted(
            {r.file for r in results if r.status in ("ingested", "already_ingested")}
            | {e["file"] for e in ctx.registry.get(spec.entity, {}).get("files", {}).values()
               if e.get("status") == "ingested" and spec.delivery == "delta"}
        ),
    )  # fmt: skip


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    return int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]


def _refusal(con: duckdb.DuckDBPyConnection, spec: EntitySpec, res: DeliveryResult) -> str:
    top = sorted(res.quarantine_reasons.items(), key=lambda kv: -kv[1])[:5]
    firsts = []
    for reason, n in top:
        fld, code = reason.split(":", 1)
        row = con.execute(
            """SELECT min(_source_row) FROM (
                SELECT _source_row FROM typed WHERE _source_file = ? AND list_contains(_errors, ?)
                UNION ALL SELECT _source_row FROM bad_all WHERE _source_file = ? AND field = ? AND reason = ?)""",
            [res.file, reason, res.file, fld, code],
        ).fetchone()
        firsts.append(f"{reason} {n:,} (first at line {row[0] if row else '?'})")
    return (
        f"{res.file}: {res.quarantined:,} of {res.read:,} rows ({res.quarantined / res.read:.1%}) would be"
        f" quarantined, more than entities.{spec.entity}.max_bad_share ({spec.max_bad_share:.0%}); the delivery is"
        f" refused and nothing was written. Reasons: {'; '.join(firsts)}. Check the export, or the formats and"
        " value maps in the source spec."
    )


def _check_text_ids(con: duckdb.DuckDBPyConnection, spec: EntitySpec) -> None:
    key = next(f for f in spec.fields if f.name == spec.key)
    if not key.text_id:
        return
    row = con.execute(
        f"""SELECT count(DISTINCT {_q(spec.key)}), count(DISTINCT _key_text) FROM typed
        WHERE len(_errors) = 0"""
    ).fetchone()
    if row and row[0] != row[1]:
        raise IngestError(
            f"{spec.entity}: {row[1] - row[0]} pair(s) of distinct text ids of '{spec.key}' map to the same number;"
            " this cannot be ingested safely"
        )


def _erase_suppressed(con: duckdb.DuckDBPyConnection, spec: EntitySpec, fk: str, table: str) -> dict[str, int]:
    """Drop the rows of suppressed subjects from ``table`` (see ``crmshield.erasure``); counts per file."""
    listed = "IN (SELECT token FROM _suppressed)"
    if spec.entity == "contacts":
        cond = (
            f"crm_token('crm_id', CAST({_q(fk)} AS VARCHAR)) {listed} "
            f"OR crm_token('email', email) {listed} OR crm_token('phone', phone) {listed}"
        )
        con.execute(
            f"INSERT INTO _erased_ids SELECT DISTINCT {_q(fk)} FROM {table} WHERE ({cond}) AND {_q(fk)} IS NOT NULL"
        )
    else:
        cond = f"{_q(fk)} IN (SELECT id FROM _erased_ids) OR crm_token('crm_id', CAST({_q(fk)} AS VARCHAR)) {listed}"
    counts = dict(con.execute(f"SELECT _source_file, count(*) FROM {table} WHERE {cond} GROUP BY ALL").fetchall())
    con.execute(f"DELETE FROM {table} WHERE {cond}")
    return {str(k): int(v) for k, v in counts.items()}


def _normalization_counts(con: duckdb.DuckDBPyConnection, spec: EntitySpec, source: str) -> dict[str, int]:
    from crmshield.normalize import E164_PATTERN, EMAIL_SHAPE

    checks = []
    for f in spec.fields:
        if f.type == "email":
            checks += [
                (f"{f.name}:normalized", f"regexp_full_match({_q(f.name)}, {_lit(EMAIL_SHAPE)})"),
                (f"{f.name}:not_an_email", f"NOT regexp_full_match({_q(f.name)}, {_lit(EMAIL_SHAPE)})"),
            ]
        elif f.type == "phone":
            checks += [
                (f"{f.name}:e164", f"regexp_full_match({_q(f.name)}, {_lit(E164_PATTERN)})"),
                (f"{f.name}:not_a_number", f"NOT regexp_full_match({_q(f.name)}, {_lit(E164_PATTERN)})"),
            ]
    if not checks:
        return {}
    row = con.execute("SELECT " + ", ".join(f"count(*) FILTER (WHERE {c})" for _, c in checks) + f" FROM {source}")
    values = row.fetchone() or ()
    return {name: int(v) for (name, _), v in zip(checks, values, strict=True)}


def _empty_entity(con: duckdb.DuckDBPyConnection, entity: str, ctx: _Context) -> FileResult:
    """A raw table with the canonical columns and no rows, for an entity the source does not deliver."""
    _create_typed(con, entity)
    names = ", ".join(_q(n) for n in CANONICAL[entity])
    con.execute(
        f"""COPY (SELECT {names}, _source_file, _source_row FROM typed) TO
        {_lit(str(ctx.staging / f"raw-{entity}.parquet"))} (FORMAT parquet, COMPRESSION zstd)"""
    )
    con.execute(
        f"""COPY (SELECT _source_file AS source_file, _source_row AS source_row, NULL::VARCHAR AS field,
        NULL::VARCHAR AS reason, _errors AS errors, _record AS record FROM typed)
        TO {_lit(str(ctx.staging / f"quarantine-{entity}.parquet"))} (FORMAT parquet, COMPRESSION zstd)"""
    )
    con.execute("DROP TABLE typed")
    con.execute("DROP TABLE bad_all")
    return FileResult(
        entity=entity, file="", sha256="", bytes=0, read=0, loaded=0, quarantined=0, duplicates=0,
        delivery="none", delivered=False,
    )  # fmt: skip


# --------------------------------------------------------------------------- the registry and the commit


def registry_path(settings: Settings) -> Path:
    return settings.raw / REGISTRY


def load_registry(settings: Settings) -> dict[str, Any]:
    path = registry_path(settings)
    if not path.is_file():
        return {}
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IngestError(f"{path}: the delivery registry cannot be read ({exc}); restore it or remove raw/") from None
    return data.get("entities", {})


def _registry_update(registry: dict[str, Any], res: FileResult, when: str) -> None:
    ent = registry.setdefault(res.entity, {"files": {}})
    files = ent.setdefault("files", {})
    for d in res.files:
        if d.status == "ingested":
            entry = {k: v for k, v in asdict(d).items() if k not in ("status", "warnings", "bytes", "sha256")}
            files[d.sha256] = {**entry, "status": "ingested", "at": when, "bytes": d.bytes}
        elif d.status == "superseded" and d.sha256 not in files:
            files[d.sha256] = {"file": d.file, "status": "superseded", "at": when, "bytes": d.bytes}
    if res.delivery == "snapshot":
        current = next((d.sha256 for d in res.files if d.status in ("ingested", "already_ingested")), None)
        ent["current"] = current
    else:
        ent.pop("current", None)


def registry_alias(settings: Settings, entity: str, old_sha: str, new_sha: str) -> None:
    """Record that ``new_sha`` is an ingested delivery rewritten in place (the erasure scrub of a delta file):
    the next ingest treats it as already ingested instead of applying it again."""
    path = registry_path(settings)
    if not path.is_file():
        return
    data = json.loads(path.read_text(encoding="utf-8"))
    files = data.get("entities", {}).get(entity, {}).get("files", {})
    if old_sha not in files or new_sha in files:
        return
    files[new_sha] = {**files[old_sha], "rewritten_from": old_sha}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _staging(settings: Settings) -> Path:
    return settings.raw / STAGING


def recover(settings: Settings) -> str | None:
    """Finish or discard an interrupted ingest: roll a committed staging folder forward (its marker lists the
    renames), or remove an uncommitted one. Returns what was done, or None."""
    staging = _staging(settings)
    if not staging.exists():
        return None
    marker = staging / COMMIT_MARKER
    if marker.is_file():
        moves = json.loads(marker.read_text(encoding="utf-8"))
        for src, dst in moves:
            if Path(src).exists():
                os.replace(src, dst)
        shutil.rmtree(staging)
        return "rolled forward"
    shutil.rmtree(staging)
    return "discarded"


def _commit(settings: Settings, staging: Path, registry: dict[str, Any], entities: list[str]) -> None:
    reg_tmp = staging / REGISTRY
    reg_tmp.write_text(json.dumps({"version": 1, "entities": registry}, indent=1, sort_keys=True), encoding="utf-8")
    os.chmod(reg_tmp, 0o600)
    moves = []
    for e in entities:
        moves.append((str(staging / f"raw-{e}.parquet"), str(settings.raw / f"{e}.parquet")))
        moves.append((str(staging / f"quarantine-{e}.parquet"), str(settings.quarantine / f"{e}.parquet")))
    moves.append((str(reg_tmp), str(registry_path(settings))))
    shutil.rmtree(staging / "scratch", ignore_errors=True)
    shutil.rmtree(staging / "spill", ignore_errors=True)
    marker_tmp = staging / f".{COMMIT_MARKER}.tmp"
    with marker_tmp.open("w", encoding="utf-8") as fh:
        json.dump(moves, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(marker_tmp, staging / COMMIT_MARKER)  # the commit point
    for src, dst in moves:
        os.replace(src, dst)
    shutil.rmtree(staging)


# --------------------------------------------------------------------------- the landing zone


def ingest(
    settings: Settings,
    extra_fingerprint: str = "",
    on_entity: Callable[[FileResult], None] | None = None,
) -> IngestResult:
    """Ingest the delivered landing files into the raw zone, exactly once (see the module docstring).
    Idempotent: the same landing files give the same raw tables, and a file already ingested is not read again.

    The retention windows of the privacy policy are applied here, counted from
    the export's reference date (its latest contact update, never the wall
    clock), so expired rows never reach raw or anything after it."""
    import duckdb

    from crmshield.erasure import process_requests_file, suppressed_tokens
    from crmshield.normalize import register_duckdb
    from crmshield.policy import load_policy, policy_path

    specs = source_specs()  # validated before anything is read or written
    policy = load_policy(policy_path())
    for d in (settings.raw, settings.quarantine):  # zones holding PII: owner only
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(d, 0o700)
    recover(settings)
    files = landing_files(settings.landing, specs)
    hashes = {p.name: sha256_file(p) for fs in files.values() for p in fs}
    fp = fingerprint(hashes, extra_fingerprint)
    rules = policy.retention
    key = None
    erasure = None
    if (settings.landing / "erasure_requests.csv").is_file() or suppressed_path_has_entries(settings):
        from crmshield.keys import load_key

        key = load_key()
        erasure = process_requests_file(settings, key)
    tokens = suppressed_tokens(settings, key) if key else set()
    registry = load_registry(settings)
    staging = _staging(settings)
    staging.mkdir(mode=0o700)
    ctx = _Context(settings=settings, staging=staging, run_id=run_id_for(fp), registry=registry, hashes=hashes)
    results: dict[str, FileResult] = {}
    applied: dict[str, dict[str, object]] = {}
    con = duckdb.connect(
        config={
            "memory_limit": os.environ.get("CRMSHIELD_INGEST_MEMORY_LIMIT", DEFAULT_MEMORY_LIMIT),
            "temp_directory": str(staging / "spill"),  # spilled pages hold PII: the owner-only raw zone
        }
    )
    try:
        con.execute("SET preserve_insertion_order = true")
        register_duckdb(con)
        con.execute("SELECT 1")  # the connection works before anything is read
        if tokens:
            _register_suppression(con, key, tokens)  # type: ignore[arg-type]
        for entity in ENTITIES:  # contacts first: they set the reference date
            spec = specs.get(entity)
            if spec is None:
                results[entity] = _empty_entity(con, entity, ctx)
                continue
            rule = rules.get(entity)
            ctx.retention = (rule.column, rule.days) if rule else None
            ent = policy.entities.get(entity)
            link = ent.subject_key if ent and ent.subject_key else None
            ctx.suppression = link if tokens else None
            res = ingest_entity(con, spec, files[entity], ctx)
            if ctx.reference is None and res.reference_time:
                ctx.reference = datetime.fromisoformat(res.reference_time)
            if rule:
                applied[entity] = {"column": rule.column, "days": rule.days, "cutoff": res.retention_cutoff}
            results[entity] = res
            if on_entity:
                on_entity(res)
    except BaseException as exc:
        con.close()
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, IngestError):
            exc.run_id, exc.input_fingerprint = ctx.run_id, fp
        raise
    con.close()
    when = datetime.now(UTC).isoformat(timespec="seconds")
    for res in results.values():
        if res.delivered:
            _registry_update(registry, res, when)
        else:
            registry.pop(res.entity, None)
    _commit(settings, staging, registry, list(ENTITIES))
    return IngestResult(
        input_fingerprint=fp,
        files=results,
        reference_date=ctx.reference.isoformat() if ctx.reference else None,
        retention=applied,
        erasure={"suppression_entries": len(tokens), "requests_processed": erasure},
    )


def suppressed_path_has_entries(settings: Settings) -> bool:
    from crmshield.erasure import suppression_path

    path = suppression_path(settings)
    return path.is_file() and path.stat().st_size > 0


def _register_suppression(con: duckdb.DuckDBPyConnection, key: PseudonymKey, tokens: set[str]) -> None:
    """``crm_token(kind, value)`` (the erasure token, see ``crmshield.erasure.token``) as a
    vectorized UDF, the listed tokens as ``_suppressed``, and ``_erased_ids`` for the contact
    ids dropped so far (their deals and tickets follow them)."""
    from duckdb.sqltypes import VARCHAR

    from crmshield.erasure import token_arrow

    crm_token = token_arrow(key)
    con.create_function("crm_token", crm_token, [VARCHAR, VARCHAR], VARCHAR, type="arrow", side_effects=False)
    con.execute("CREATE OR REPLACE TEMP TABLE _suppressed (token VARCHAR PRIMARY KEY)")
    con.executemany("INSERT INTO _suppressed VALUES (?)", [[t] for t in sorted(tokens)])
    con.execute("CREATE OR REPLACE TEMP TABLE _erased_ids (id BIGINT)")

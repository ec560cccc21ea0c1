"""Ingest: landing exports -> typed Parquet in the raw zone (DuckDB).

Exports are read as text and every field is cast explicitly, so postal codes
and phone numbers keep their leading zeros. A row is then exactly one of:

* **loaded** into ``raw/<entity>.parquet``;
* **quarantined** into ``quarantine/<entity>.parquet`` with the field and a
  reason code (malformed line, invalid date, unknown category, ...);
* a **duplicate**: an exact repeat or an older version of a record whose
  latest ``updated_at`` wins.

``read = loaded + quarantined + duplicates`` is checked for every file, and a
mismatch fails the stage. Raw and quarantine hold PII: they are restricted and
nothing past the privacy stage reads them. Errors and reports carry field
names, reason codes and positions, never the offending values.

Which landing file holds which entity, and how its columns map onto the
canonical model, is declared in the source spec (``config/sources/*.yml``,
validated by ``crmshield.sources``; ``$CRMSHIELD_SOURCE_SPEC`` picks one).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from crmshield.config import Settings
from crmshield.sources import (  # noqa: F401 - re-exported: the spec types used to live here
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


MAX_LINE_BYTES = 64 * 1024 * 1024  # a 1 MB ticket body is ordinary; a 64 MB line is an error

#: The shipped source spec (``config/sources/generator.yml``), loaded at import for the modules and
#: tests that describe the default layout. Ingest itself runs on :func:`source_specs`, which
#: honours ``$CRMSHIELD_SOURCE_SPEC``.
SPECS: dict[str, EntitySpec] = load_source_spec(default_source_spec_path())

#: Lower-cased country spelling -> ISO code: the contacts' country value map of the shipped spec.
COUNTRY_ALIASES: dict[str, str] = dict(next(f.aliases for f in SPECS["contacts"].fields if f.name == "country"))


class IngestError(RuntimeError):
    """The landing zone cannot be ingested (missing file, missing column, broken reconciliation)."""


@dataclass
class FileResult:
    """Accounting for one landing file."""

    entity: str
    file: str
    sha256: str
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
        return f"run-{self.input_fingerprint[:16]}"

    def to_dict(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "input_fingerprint": self.input_fingerprint,
            "reference_date": self.reference_date,
            "retention": self.retention,
            "erasure": self.erasure,
            "files": {k: asdict(v) for k, v in self.files.items()},
        }


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


def _typed(f: Field, text: str, region: str = "NULL") -> tuple[str, str | None]:
    """SQL for the typed value and for its error code (NULL when fine).

    Emails and phones are put in canonical form (``crmshield.normalize``, registered
    as vectorized UDFs) so one person gets one pseudonym across exports; a value
    that is not an email or a possible number is kept as written, never rejected:
    the privacy job gives it no pseudonym and the redactor still matches it."""
    v = f"nullif(trim({text}), '')"
    if f.type == "varchar":
        return v, None
    if f.type == "email":
        return f"crm_email({v})", None
    if f.type == "phone":
        return f"crm_phone({v}, {region})", None
    if f.type in ("bigint", "integer", "decimal"):
        sql_type = {"bigint": "BIGINT", "integer": "INTEGER", "decimal": "DECIMAL(18,2)"}[f.type]
        return f"try_cast({v} AS {sql_type})", "invalid_number"
    if f.type in ("date", "timestamp"):
        fmts = "[" + ", ".join(_lit(x) for x in f.formats) + "]"
        expr = f"try_strptime({v}, {fmts})"
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
    # category: map aliases, else normalize (lower, alphanumerics only) and check
    if f.aliases:
        cases = " ".join(f"WHEN {_lit(k)} THEN {_lit(val)}" for k, val in f.aliases)
        return f"CASE lower({v}) {cases} END", "invalid_value"
    norm = f"regexp_replace(lower({v}), '[^a-z0-9]', '', 'g')"
    allowed = ", ".join(_lit(a) for a in f.allowed)
    return f"CASE WHEN {norm} IN ({allowed}) THEN {norm} END", "invalid_value"


def _load_source(con: duckdb.DuckDBPyConnection, spec: EntitySpec, path: Path) -> int:
    """Create table ``src`` (one text row per record; ``_source_row`` is its
    line number in the file) and table ``bad_lines`` (records that could not be
    parsed at all: wrong column count, invalid encoding, broken JSON). Returns
    the number of bad lines."""
    p = _lit(str(path))
    common = (
        f"encoding={_lit(spec.encoding)}, store_rejects=true, rejects_table='rej', rejects_scan='rej_scan', "
        f"max_line_size={MAX_LINE_BYTES}"
    )
    if spec.format == "csv":
        header_lines = 1
        quote = _lit(spec.quote)
        source = (
            f"read_csv({p}, header=true, all_varchar=true, delim={_lit(spec.delimiter)}, quote={quote}, "
            f"escape={quote}, {common})"
        )
    else:  # JSON lines: one text column per physical line, parsed below
        header_lines = 0
        source = (
            f"read_csv({p}, header=false, columns={{'line': 'VARCHAR'}}, delim='\\x1f', quote='', "
            f"escape='', auto_detect=false, {common})"
        )
    con.execute(f"CREATE OR REPLACE TEMP TABLE parsed AS SELECT row_number() OVER () AS _p, * FROM {source}")
    if spec.format == "csv":
        cols = {r[0] for r in con.execute("DESCRIBE parsed").fetchall()}
        missing = [f.source for f in spec.fields if f.source not in cols]
        if missing:
            raise IngestError(
                f"{path}: header is missing column(s) {missing}; expected the {spec.entity} export layout"
            )
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
    # line number of parsed record p: header + p + rejected lines before it
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE numbered AS
        WITH rj AS (SELECT _source_row AS line,
                           row_number() OVER (ORDER BY _source_row) AS j FROM bad_lines)
        SELECT parsed.* EXCLUDE (_p),
               CAST(_p + {header_lines}
                    + (SELECT count(*) FROM rj WHERE rj.line - rj.j <= parsed._p - 1 + {header_lines})
                    AS BIGINT) AS _source_row
        FROM parsed"""
    )
    con.execute("DROP TABLE parsed")
    if spec.format == "csv":
        con.execute("ALTER TABLE numbered RENAME TO src")
    else:
        con.execute(
            """INSERT INTO bad_lines
            SELECT _source_row, 'malformed_json', 'record', line FROM numbered
            WHERE line IS NOT NULL AND trim(line) <> '' AND NOT json_valid(line)"""
        )
        extracts = ", ".join(f"json_extract_string(line, {_lit(f.source)}) AS {_q(f.source)}" for f in spec.fields)
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE src AS SELECT {extracts}, _source_row
            FROM numbered WHERE line IS NOT NULL AND trim(line) <> '' AND json_valid(line)"""
        )
        con.execute("DROP TABLE numbered")
    return int(con.execute("SELECT count(*) FROM bad_lines").fetchone()[0])  # type: ignore[index]


def ingest_entity(
    con: duckdb.DuckDBPyConnection,
    spec: EntitySpec,
    landing: Path,
    settings: Settings,
    retention: tuple[str, int] | None = None,
    reference: datetime | None = None,
    suppression: str | None = None,
) -> FileResult:
    """One landing file -> raw + quarantine. ``retention`` = (column, days):
    rows whose column is older than ``reference`` minus that many days are
    purged (counted as expired). Without a ``reference``, the contacts file
    sets it: its latest update (or creation) among the valid rows.

    ``suppression`` names the column linking a row to its contact (``contact_id``
    for contacts themselves) when the erasure suppression list is active: rows
    whose contact id, email or phone token is listed, or whose contact was just
    erased, are dropped before anything else and counted as erased."""
    path = landing / spec.file
    if not path.is_file():
        raise IngestError(f"{path}: expected {spec.entity} export not found in the landing zone")
    digest = sha256_file(path)
    n_bad_lines = _load_source(con, spec, path)

    typed_cols, error_exprs = [], []
    by_name = {f.name: f for f in spec.fields}
    for f in spec.fields:
        region = _typed(by_name[f.region], _q(by_name[f.region].source))[0] if f.region else "NULL"
        expr, code = _typed(f, _q(f.source), region)
        typed_cols.append(f"{expr} AS {_q(f.name)}")
        if code:
            error_exprs.append(
                f"CASE WHEN nullif(trim({_q(f.source)}), '') IS NOT NULL AND ({expr}) IS NULL "
                f"THEN {_lit(f.name + ':' + code)} END"
            )
        if f.required:
            error_exprs.append(
                f"CASE WHEN nullif(trim({_q(f.source)}), '') IS NULL THEN {_lit(f.name + ':missing_value')} END"
            )
    errors = "list_filter([" + ", ".join(error_exprs) + "], x -> x IS NOT NULL)"
    record = "to_json(struct_pack(" + ", ".join(f"{_q(f.name)} := {_q(f.source)}" for f in spec.fields) + "))"
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE typed AS
        SELECT {", ".join(typed_cols)}, {errors} AS _errors, {record} AS _record, _source_row
        FROM src"""
    )
    erased = _erase_suppressed(con, spec, suppression) if suppression else 0
    names = ", ".join(_q(f.name) for f in spec.fields)
    src_lit = _lit(spec.file)
    raw_out = settings.raw / f"{spec.entity}.parquet"
    q_out = settings.quarantine / f"{spec.entity}.parquet"
    for d in (settings.raw, settings.quarantine):  # zones holding PII: owner only
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(d, 0o700)
    raw_tmp = raw_out.with_name(f".{raw_out.name}.tmp-{os.getpid()}")
    q_tmp = q_out.with_name(f".{q_out.name}.tmp-{os.getpid()}")

    # latest version of each record wins; exact repeats and older versions are duplicates
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE loaded AS
        SELECT {names}, {src_lit} AS _source_file, _source_row FROM typed
        WHERE len(_errors) = 0
        QUALIFY row_number() OVER (
            PARTITION BY {_q(spec.key)}
            ORDER BY {_q(spec.updated_at)} DESC NULLS LAST, _source_row DESC) = 1"""
    )
    deduplicated = int(con.execute("SELECT count(*) FROM loaded").fetchone()[0])  # type: ignore[index]
    if reference is None and spec.entity == "contacts":
        row = con.execute("SELECT max(greatest(coalesce(updated_at, created_at), created_at)) FROM loaded").fetchone()
        reference = row[0] if row else None
    cutoff = None
    if retention and reference is not None:
        column, days = retention
        cutoff = reference - timedelta(days=days)
        con.execute(f"DELETE FROM loaded WHERE {_q(column)} < ?", [cutoff])
    con.execute(
        f"""COPY (SELECT * FROM loaded ORDER BY {_q(spec.key)}) TO {_lit(str(raw_tmp))}
        (FORMAT parquet, COMPRESSION zstd)"""
    )
    con.execute(
        f"""COPY (
            SELECT {src_lit} AS source_file, _source_row AS source_row,
                   split_part(_errors[1], ':', 1) AS field, split_part(_errors[1], ':', 2) AS reason,
                   _errors AS errors, _record AS record
            FROM typed WHERE len(_errors) > 0
            UNION ALL
            SELECT {src_lit}, _source_row, field, reason, [field || ':' || reason], to_json(record)
            FROM bad_lines
            ORDER BY source_row
        ) TO {_lit(str(q_tmp))} (FORMAT parquet, COMPRESSION zstd)"""
    )
    counts = con.execute(
        "SELECT (SELECT count(*) FROM typed), (SELECT count(*) FROM typed WHERE len(_errors) > 0), "
        "(SELECT count(*) FROM loaded)"
    ).fetchone()
    assert counts is not None
    parsed, bad_typed, loaded = (int(x) for x in counts)
    reasons = dict(
        con.execute(
            f"""SELECT field || ':' || reason, count(*) FROM read_parquet({_lit(str(q_tmp))})
            GROUP BY ALL ORDER BY 1"""
        ).fetchall()
    )
    read = parsed + erased + n_bad_lines
    quarantined = bad_typed + n_bad_lines
    duplicates = parsed - bad_typed - deduplicated
    expired = deduplicated - loaded
    normalization = _normalization_counts(con, spec)
    if read != loaded + quarantined + duplicates + expired + erased:  # pragma: no cover - arithmetic guard
        raise IngestError(f"{path}: reconciliation failed: read {read} != loaded+quarantined+duplicates+expired+erased")
    for tmp in (raw_tmp, q_tmp):
        os.chmod(tmp, 0o600)
    os.replace(raw_tmp, raw_out)
    os.replace(q_tmp, q_out)
    for t in ("src", "typed", "loaded", "bad_lines"):
        con.execute(f"DROP TABLE IF EXISTS {t}")
    return FileResult(
        entity=spec.entity, file=spec.file, sha256=digest, bytes=path.stat().st_size, read=read,
        loaded=loaded, quarantined=quarantined, duplicates=duplicates, quarantine_reasons=reasons,
        expired=expired, erased=erased, reference_time=reference.isoformat() if reference else None,
        retention_cutoff=cutoff.isoformat() if cutoff else None, normalization=normalization,
    )  # fmt: skip


def _erase_suppressed(con: duckdb.DuckDBPyConnection, spec: EntitySpec, fk: str) -> int:
    """Drop the rows of suppressed subjects from ``typed`` (see ``crmshield.erasure``)."""
    listed = "IN (SELECT token FROM _suppressed)"
    if spec.entity == "contacts":
        cond = (
            f"crm_token('crm_id', CAST({_q(fk)} AS VARCHAR)) {listed} "
            f"OR crm_token('email', email) {listed} OR crm_token('phone', phone) {listed}"
        )
        con.execute(
            f"INSERT INTO _erased_ids SELECT DISTINCT {_q(fk)} FROM typed WHERE {cond} AND {_q(fk)} IS NOT NULL"
        )
    else:
        cond = f"{_q(fk)} IN (SELECT id FROM _erased_ids) OR crm_token('crm_id', CAST({_q(fk)} AS VARCHAR)) {listed}"
    row = con.execute(f"DELETE FROM typed WHERE {cond}").fetchone()
    return int(row[0]) if row else 0


def _normalization_counts(con: duckdb.DuckDBPyConnection, spec: EntitySpec) -> dict[str, int]:
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
    row = con.execute("SELECT " + ", ".join(f"count(*) FILTER (WHERE {c})" for _, c in checks) + " FROM loaded")
    values = row.fetchone() or ()
    return {name: int(v) for (name, _), v in zip(checks, values, strict=True)}


def landing_fingerprint(landing: Path, extra: str = "") -> tuple[str, dict[str, str]]:
    """(fingerprint, {file: sha256}) over the expected landing files."""
    hashes = {}
    for spec in source_specs().values():
        path = landing / spec.file
        if not path.is_file():
            raise IngestError(f"{path}: expected {spec.entity} export not found in the landing zone")
        hashes[spec.file] = sha256_file(path)
    return fingerprint(hashes, extra), hashes


def ingest(
    settings: Settings,
    extra_fingerprint: str = "",
    on_entity: Callable[[FileResult], None] | None = None,
) -> IngestResult:
    """Ingest every expected landing file into the raw zone. Idempotent: the
    same landing files give the same raw tables.

    The retention windows of the privacy policy are applied here, counted from
    the export's reference date (its latest contact update, never the wall
    clock), so expired rows never reach raw or anything after it."""
    import duckdb

    from crmshield.erasure import process_requests_file, suppressed_tokens
    from crmshield.policy import load_policy, policy_path

    specs = source_specs()  # validated before anything is read or written
    policy = load_policy(policy_path())
    rules = policy.retention
    key = None
    erasure = None
    if (settings.landing / "erasure_requests.csv").is_file() or suppressed_path_has_entries(settings):
        from crmshield.keys import load_key

        key = load_key()
        erasure = process_requests_file(settings, key)
    tokens = suppressed_tokens(settings, key) if key else set()
    results: dict[str, FileResult] = {}
    reference: datetime | None = None
    applied: dict[str, dict[str, object]] = {}
    from crmshield.normalize import register_duckdb

    con = duckdb.connect()
    try:
        con.execute("SET preserve_insertion_order = true")
        register_duckdb(con)
        if tokens:
            _register_suppression(con, key, tokens)  # type: ignore[arg-type]
        for spec in specs.values():  # contacts first: they set the reference date
            rule = rules.get(spec.entity)
            retention = (rule.column, rule.days) if rule else None
            ent = policy.entities.get(spec.entity)
            link = ent.subject_key if ent and ent.subject_key else None
            res = ingest_entity(con, spec, settings.landing, settings, retention, reference, link if tokens else None)
            if reference is None and res.reference_time:
                reference = datetime.fromisoformat(res.reference_time)
            if rule:
                applied[spec.entity] = {"column": rule.column, "days": rule.days, "cutoff": res.retention_cutoff}
            results[spec.entity] = res
            if on_entity:
                on_entity(res)
    finally:
        con.close()
    fp = fingerprint({r.file: r.sha256 for r in results.values()}, extra_fingerprint)
    return IngestResult(
        input_fingerprint=fp,
        files=results,
        reference_date=reference.isoformat() if reference else None,
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

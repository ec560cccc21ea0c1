"""Right to erasure (GDPR Art. 17): remove a subject from every zone and keep them out.

A request names the subject by an email, a phone number or a CRM contact id,
given to ``crmshield erase`` or listed in ``landing/erasure_requests.csv``
(columns ``identifier`` and, optional, ``kind`` = email | phone | crm_id and
``reference``, e.g. the ticket number of the request in the DPO's system).

Erasure then:

1. finds the subject's contact records (raw zone, and the landing export) and
   collects *all* their identifiers: every CRM id, canonical email and E.164
   phone they appear under;
2. adds a keyed token of each identifier (HMAC-SHA256 with the key's own
   ``erasure`` domain key, never the value) to the **suppression list**
   ``<data>/erasure/suppression.jsonl``; ingest drops every row whose contact id,
   email or phone has a listed token, and the deals and tickets of those
   contacts, counted as ``erased``: a later export cannot bring them back.
   Each new entry also records the subject's privacy-zone pseudonyms
   (``pseudonyms``: ``contact_pk``/``email_pk``/``phone_pk`` lists, see
   :func:`pseudonyms`), so the validate stage can check that no privacy-zone
   row carries them; entries written before carry none (ingest still drops
   those subjects by token);
3. removes the subject's rows from the landing exports (their contact rows,
   deals and tickets; other lines are kept byte for byte);
4. (``crmshield erase``) rebuilds raw, the privacy zone and the warehouse from
   the cleaned landing zone (ingest, privacy job, validation, dbt build into a
   fresh file), then verifies that no zone holds the subject's ids, values or
   pseudonyms;
5. appends an audit entry to ``<data>/erasure/audit.jsonl`` holding a random
   request id, the identifier kinds, counts per zone and the verification:
   no identifier, value, token or pseudonym.

Published DP marts are left as they are (differential privacy covers the
subject's contribution); the next publication is built without them.

The requests file holds PII: it is consumed (deleted) once processed. The
suppression tokens carry the key version; after a key rotation the list must
be re-created from the requests, and ingest refuses to run on entries of
another version rather than let an erased subject back in.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from crmshield.config import Settings
from crmshield.ingest import delivery_files
from crmshield.keys import PseudonymKey
from crmshield.normalize import is_email, normalize_email, to_e164
from crmshield.sources import EntitySpec

Kind = Literal["crm_id", "email", "phone"]
KINDS: tuple[Kind, ...] = ("crm_id", "email", "phone")
REQUESTS_FILE = "erasure_requests.csv"
TOKEN_DOMAIN = "erasure"


class ErasureError(ValueError):
    """A request cannot be understood or carried out (the message holds no identifier value)."""


@dataclass(frozen=True)
class Request:
    """One identifier to erase. ``value`` is PII: never logged or persisted."""

    kind: Kind
    value: str  # canonical form
    reference: str | None = None

    def __repr__(self) -> str:
        return f"Request(kind={self.kind!r}, value=<redacted>, reference={self.reference!r})"


def canonical(kind: str, value: str, region: str | None = None, where: str = "request") -> Request:
    """The identifier in the form ingest stores it (see ``crmshield.normalize``)."""
    text = (value or "").strip()
    if kind == "crm_id":
        if not text.isdigit():
            raise ErasureError(f"{where}: a crm_id must be a number")
        return Request("crm_id", str(int(text)))
    if kind == "email":
        email = normalize_email(text)
        if not is_email(email):
            raise ErasureError(f"{where}: not an email address")
        return Request("email", email)  # type: ignore[arg-type]
    if kind == "phone":
        e164 = to_e164(text, region)
        if e164 is None:
            raise ErasureError(
                f"{where}: not a possible phone number (write it with its +country code, or pass --region)"
            )
        return Request("phone", e164)
    raise ErasureError(f"{where}: unknown identifier kind {kind!r}; expected one of {list(KINDS)}")


def infer_kind(value: str) -> Kind:
    """``@`` -> email; digits only -> CRM id; anything else (``+``, spaces, dashes) -> phone."""
    text = value.strip()
    if "@" in text:
        return "email"
    if text.isdigit():
        return "crm_id"
    return "phone"


def read_requests_file(path: Path, region: str | None = None) -> list[Request]:
    """Parse an erasure-requests CSV; errors name the file, line and field, never the value."""
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "identifier" not in reader.fieldnames:
            raise ErasureError(
                f"{path}: expected a header with an 'identifier' column (and optional 'kind', 'reference')"
            )
        out = []
        for i, row in enumerate(reader, start=2):
            value = (row.get("identifier") or "").strip()
            if not value:
                raise ErasureError(f"{path}: line {i}, field 'identifier': empty")
            kind = (row.get("kind") or "").strip().lower() or infer_kind(value)
            req = canonical(
                kind, value, (row.get("region") or "").strip() or region, f"{path}: line {i}, field 'identifier'"
            )
            out.append(Request(req.kind, req.value, (row.get("reference") or "").strip() or None))
    return out


# --- tokens and the suppression list ---------------------------------------------
def token_key(key: PseudonymKey) -> bytes:
    return key.domain_key(TOKEN_DOMAIN)


def token(key: PseudonymKey, kind: str, value: str) -> str:
    digest = hmac.new(token_key(key), f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()
    return f"v{key.version}_{digest}"


def token_arrow(key: PseudonymKey):  # type: ignore[no-untyped-def]  # (DuckDB evaluates annotations)
    """:func:`token` over two Arrow columns (kind, value): a vectorized DuckDB UDF for ingest."""
    import pyarrow as pa

    secret, prefix = token_key(key), f"v{key.version}_"

    def crm_token(kinds, values):  # type: ignore[no-untyped-def]
        pairs = zip(kinds.to_pylist(), values.to_pylist(), strict=True)
        return pa.array(
            [None if v is None else prefix + hmac.new(secret, f"{k}:{v}".encode(), hashlib.sha256).hexdigest()
             for k, v in pairs],
            type=pa.string(),
        )  # fmt: skip

    return crm_token


def suppression_path(settings: Settings) -> Path:
    return settings.data_dir / "erasure" / "suppression.jsonl"


def audit_path(settings: Settings) -> Path:
    return settings.data_dir / "erasure" / "audit.jsonl"


def load_suppression(settings: Settings) -> list[dict[str, Any]]:
    path = suppression_path(settings)
    if not path.is_file():
        return []
    entries = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ErasureError(f"{path}: line {i} is not valid JSON ({exc.msg})") from None
    return entries


def suppressed_tokens(settings: Settings, key: PseudonymKey) -> set[str]:
    """Tokens to drop at ingest. Fails closed on entries of another key version."""
    entries = load_suppression(settings)
    other = sorted({e.get("key_version") for e in entries if e.get("key_version") != key.version})
    if other:
        raise ErasureError(
            f"{suppression_path(settings)}: {len(entries)} suppression entries, some keyed with key version(s) "
            f"{other} but the current key is version {key.version}. Erased subjects could come back: re-create "
            "the list under the new key (re-run `crmshield erase` for the archived requests) before ingesting."
        )
    return {e["token"] for e in entries}


def _append_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_bytes() if path.is_file() else b""
    new = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(old + new)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


# --- finding the subject ----------------------------------------------------------
@dataclass
class Subject:
    """Every identifier the subject appears under (PII: kept in memory only)."""

    crm_ids: set[str]
    emails: set[str]
    phones: set[str]

    def __repr__(self) -> str:
        return f"Subject(crm_ids={len(self.crm_ids)}, emails={len(self.emails)}, phones={len(self.phones)})"

    def requests(self) -> list[Request]:
        return (
            [Request("crm_id", v) for v in sorted(self.crm_ids)]
            + [Request("email", v) for v in sorted(self.emails)]
            + [Request("phone", v) for v in sorted(self.phones)]
        )


def find_subject(settings: Settings, requests: list[Request]) -> Subject:
    """Close the requests over the raw contacts (all ids, emails and phones of matched rows),
    and over the landing contacts export (rows not in raw, e.g. duplicates)."""
    subject = Subject(
        {r.value for r in requests if r.kind == "crm_id"},
        {r.value for r in requests if r.kind == "email"},
        {r.value for r in requests if r.kind == "phone"},
    )
    raw = settings.raw / "contacts.parquet"
    if raw.is_file():
        import duckdb

        with duckdb.connect() as con:
            for _ in range(3):  # a contact can share an email with one record and a phone with another
                rows = con.execute(
                    "SELECT CAST(contact_id AS VARCHAR), email, phone FROM read_parquet(?) "
                    "WHERE CAST(contact_id AS VARCHAR) IN (SELECT unnest(?)) OR email IN (SELECT unnest(?)) "
                    "OR phone IN (SELECT unnest(?))",
                    [str(raw), sorted(subject.crm_ids) or [""], sorted(subject.emails) or [""],
                     sorted(subject.phones) or [""]],
                ).fetchall()  # fmt: skip
                before = repr(sorted(subject.crm_ids | subject.emails | subject.phones))
                for cid, email, phone in rows:
                    subject.crm_ids.add(cid)
                    if is_email(email):
                        subject.emails.add(email)
                    if phone and phone.startswith("+"):
                        subject.phones.add(phone)
                if repr(sorted(subject.crm_ids | subject.emails | subject.phones)) == before:
                    break
    for row in _landing_contacts(settings):
        if _contact_matches(row, subject):
            subject.crm_ids.add(row["contact_id"])
    return subject


def _landing_contacts(settings: Settings) -> Iterator[dict[str, str]]:
    from crmshield.sources import source_specs

    spec = source_specs().get("contacts")
    if spec is None or spec.format != "csv":
        return
    src = {f.name: f.source for f in spec.fields}
    for path in delivery_files(settings.landing, spec):
        if _scrubbable(path, spec) is not None:
            continue
        for _raw, fields in _csv_records(path):
            if fields is not None:
                yield _contact_row(fields, src)


def _contact_row(fields: dict[str, str], src: dict[str, str]) -> dict[str, str]:
    """The identifying fields of one contacts-export record, by canonical name."""
    return {
        "contact_id": _id(fields.get(src["contact_id"])),
        "email": fields.get(src.get("email", "")) or "",
        "phone": fields.get(src.get("phone", "")) or "",
        "country": fields.get(src.get("country", "")) or "",
    }


def _scrubbable(path: Path, spec: EntitySpec) -> str | None:
    """None when the landing scrub can rewrite this file in place (plain UTF-8 CSV with ',' and '"', or JSON
    lines), else why not. Files it cannot rewrite keep the subject's records in the landing zone only: the
    suppression list drops them at every ingest, so they never reach raw or anything after it."""
    from crmshield.ingest import _compression, detect_encoding

    if spec.format not in ("csv", "jsonl"):
        return f"format {spec.format}"
    if _compression(path, spec) != "none":
        return f"{_compression(path, spec)} compressed"
    if spec.format == "csv" and (spec.delimiter, spec.quote, spec.escape) != (",", '"', '"'):
        return f"delimiter {spec.delimiter!r}"
    encoding = spec.encoding
    if encoding == "auto":
        with path.open("rb") as fh:
            encoding = detect_encoding(fh.read(1 << 20))
    if encoding not in ("utf-8", "utf-8-sig"):
        return f"encoding {encoding}"
    return None


def not_scrubbed(settings: Settings) -> dict[str, str]:
    """Landing files the scrub cannot rewrite, and why (see :func:`_scrubbable`)."""
    from crmshield.sources import source_specs

    out = {}
    for spec in source_specs().values():
        for path in delivery_files(settings.landing, spec):
            why = _scrubbable(path, spec)
            if why is not None:
                out[path.name] = why
    return out


def _id(value: str | None) -> str:
    return (value or "").strip().lstrip("0") or "0"


def _contact_matches(row: dict[str, str], subject: Subject) -> bool:
    from crmshield.ingest import COUNTRY_ALIASES

    if row["contact_id"] in subject.crm_ids:
        return True
    if row["email"] and normalize_email(row["email"]) in subject.emails:
        return True
    if row["phone"] and subject.phones:
        digits = "".join(ch for ch in row["phone"] if ch.isdigit())
        # cheap pre-check before parsing: the national number's last 6 digits must appear
        if any(p[-6:] in digits for p in subject.phones):
            region = COUNTRY_ALIASES.get(row["country"].strip().lower())
            return to_e164(row["phone"], region) in subject.phones
    return False


# --- landing scrub ----------------------------------------------------------------
def _csv_records(path: Path) -> Iterator[tuple[bytes, dict[str, str] | None]]:
    """(raw bytes of one CSV record incl. its line end, parsed fields or None for the header/
    an unparseable record). Records span lines while a quote is open."""
    with path.open("rb") as fh:
        header: list[str] | None = None
        buf = b""
        for line in fh:
            buf += line
            if buf.count(b'"') % 2:  # inside a quoted field: the record goes on
                continue
            record, buf = buf, b""
            text = record.decode("utf-8", errors="replace")
            try:
                parsed = next(csv.reader(io.StringIO(text)), [])
            except csv.Error:
                yield record, None
                continue
            if header is None:
                header = parsed
                yield record, None
                continue
            yield record, dict(zip(header, parsed, strict=False)) if len(parsed) == len(header) else None
        if buf:
            yield buf, None


def _mentions(record: bytes, subject: Subject) -> bool:
    """For a record that cannot be parsed: does it literally hold one of the subject's emails?"""
    text = record.decode("utf-8", errors="replace").lower()
    return any(e in text for e in subject.emails)


def scrub_landing(settings: Settings, subject: Subject) -> dict[str, int]:
    """Remove the subject's records from the landing exports; other bytes are kept as they were."""
    from crmshield.ingest import registry_alias, sha256_file
    from crmshield.sources import source_specs

    removed: dict[str, int] = {}
    for entity, spec, path in (
        (e, s, p) for e, s in source_specs().items() for p in delivery_files(settings.landing, s)
    ):
        src = {f.name: f.source for f in spec.fields}
        fk = {"contacts": "contact_id", "deals": "contact_id", "tickets": "requester_id"}.get(entity)
        if fk is None or fk not in src or _scrubbable(path, spec) is not None:
            continue
        before = sha256_file(path) if spec.delivery == "delta" else None
        tmp = path.with_name(f".{path.name}.erasure-{os.getpid()}")
        n = 0
        with tmp.open("wb") as out:
            records = _csv_records(path) if spec.format == "csv" else _jsonl_records(path, src[fk])
            first = True
            for record, fields in records:
                if fields is None:
                    drop = not (first and spec.format == "csv") and _mentions(record, subject)
                elif entity == "contacts":
                    drop = _contact_matches(_contact_row(fields, src), subject)
                else:
                    drop = _id(fields.get(src[fk])) in subject.crm_ids
                first = False
                if drop:
                    n += 1
                else:
                    out.write(record)
        if n:
            os.replace(tmp, path)
            if before is not None:  # an ingested delta stays ingested: raw drops the subject via the suppression list
                registry_alias(settings, entity, before, sha256_file(path))
        else:
            tmp.unlink()
        removed[path.name] = n
    return removed


def _jsonl_records(path: Path, fk_source: str) -> Iterator[tuple[bytes, dict[str, str] | None]]:
    key = fk_source.removeprefix("$.")
    with path.open("rb") as fh:
        for line in fh:
            try:
                doc = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                yield line, None
                continue
            value = doc.get(key) if isinstance(doc, dict) else None
            yield line, {fk_source: "" if value is None else str(value)}


# --- verification -----------------------------------------------------------------
def pseudonyms(key: PseudonymKey, subject: Subject) -> dict[str, set[str]]:
    """The subject's pseudonyms in the privacy zone and warehouse, per column."""
    return {
        "contact_pk": {key.pseudonym("contact", v) for v in subject.crm_ids},
        "email_pk": {key.pseudonym("email", v) for v in subject.emails},
        "phone_pk": {key.pseudonym("phone", v) for v in subject.phones},
    }


def remaining(settings: Settings, key: PseudonymKey, subject: Subject) -> dict[str, int]:
    """Rows per zone that still hold the subject (0 everywhere after a complete erasure)."""
    import duckdb

    pks = pseudonyms(key, subject)
    ids = sorted(subject.crm_ids) or [""]
    found: dict[str, int] = {}
    with duckdb.connect() as con:
        for entity, fk in (("contacts", "contact_id"), ("deals", "contact_id"), ("tickets", "requester_id")):
            raw = settings.raw / f"{entity}.parquet"
            if raw.is_file():
                cond = f"CAST({fk} AS VARCHAR) IN (SELECT unnest(?))"
                params: list[Any] = [str(raw), ids]
                if entity == "contacts":
                    cond += " OR email IN (SELECT unnest(?)) OR phone IN (SELECT unnest(?))"
                    params += [sorted(subject.emails) or [""], sorted(subject.phones) or [""]]
                found[f"raw.{entity}"] = int(
                    con.execute(f"SELECT count(*) FROM read_parquet(?) WHERE {cond}", params).fetchone()[0]  # type: ignore[index]
                )
        for entity in ("contacts", "deals", "tickets"):
            folder = settings.privacy / entity
            if not folder.is_dir():
                continue
            cols = {
                r[0] for r in con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [f"{folder}/*.parquet"]).fetchall()
            }
            conds = [f"{c} IN (SELECT unnest(?))" for c in pks if c in cols]
            params = [f"{folder}/*.parquet"] + [sorted(pks[c]) or [""] for c in pks if c in cols]
            found[f"privacy.{entity}"] = int(
                con.execute(f"SELECT count(*) FROM read_parquet(?) WHERE {' OR '.join(conds)}", params).fetchone()[0]  # type: ignore[index]
            )
        if settings.warehouse.is_file():
            con.execute(f"ATTACH '{settings.warehouse}' AS wh (READ_ONLY)")
            tables = con.execute(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_catalog = 'wh' AND table_type = 'BASE TABLE'"
            ).fetchall()
            for schema, table in tables:
                cols = {r[0] for r in con.execute(f'DESCRIBE wh."{schema}"."{table}"').fetchall()}
                present = [c for c in pks if c in cols]
                if not present:
                    continue
                conds = [f"{c} IN (SELECT unnest(?))" for c in present]
                found[f"warehouse.{schema}.{table}"] = int(
                    con.execute(
                        f'SELECT count(*) FROM wh."{schema}"."{table}" WHERE {" OR ".join(conds)}',
                        [sorted(pks[c]) or [""] for c in present],
                    ).fetchone()[0]  # type: ignore[index]
                )
            con.execute("DETACH wh")
    return found


# --- the operation ----------------------------------------------------------------
def record_requests(settings: Settings, key: PseudonymKey, requests: list[Request]) -> dict[str, Any]:
    """Steps 1-3: suppression tokens for every identifier of the subject, landing scrubbed.
    Returns the (PII-free) start of the audit entry."""
    if not requests:
        raise ErasureError("no identifier given: pass --email, --phone or --crm-id, or a requests file")
    subject = find_subject(settings, requests)
    existing = {e["token"] for e in load_suppression(settings)}
    now = datetime.now(UTC).isoformat(timespec="seconds")
    request_id = uuid.uuid4().hex
    # what validation looks for in the privacy zone: the subject's pseudonyms, per column
    recorded = {column: sorted(values) for column, values in pseudonyms(key, subject).items()}
    new = []
    for req in subject.requests():
        tok = token(key, req.kind, req.value)
        if tok not in existing:
            existing.add(tok)
            new.append({"token": tok, "kind": req.kind, "key_version": key.version, "request_id": request_id,
                        "added_at": now, "pseudonyms": recorded})  # fmt: skip
    _append_jsonl(suppression_path(settings), new)
    removed = scrub_landing(settings, subject)
    references = sorted({r.reference for r in requests if r.reference})
    return {
        "request_id": request_id,
        "received_at": now,
        "references": references,
        "identifier_kinds": sorted({r.kind for r in requests}),
        "subject_identifiers": {
            "crm_ids": len(subject.crm_ids),
            "emails": len(subject.emails),
            "phones": len(subject.phones),
        },  # fmt: skip
        "suppression_tokens_added": len(new),
        "key_version": key.version,
        "landing_records_removed": removed,
        # files the scrub cannot rewrite in place (why); the suppression list keeps the subject out of raw
        "landing_not_rewritten": not_scrubbed(settings),
        "_subject": subject,  # dropped before the entry is written
    }


def write_audit(settings: Settings, entry: dict[str, Any]) -> dict[str, Any]:
    clean = {k: v for k, v in entry.items() if not k.startswith("_")}
    _append_jsonl(audit_path(settings), [clean])
    return clean


def process_requests_file(settings: Settings, key: PseudonymKey | None = None) -> dict[str, Any] | None:
    """Called by ingest before it reads the landing zone: record the requests in
    ``landing/erasure_requests.csv``, scrub the exports, consume the file. The run that
    follows rebuilds every zone without the subjects (ingest drops suppressed tokens)."""
    from crmshield.keys import load_key

    path = settings.landing / REQUESTS_FILE
    if not path.is_file():
        return None
    key = key or load_key()
    requests = read_requests_file(path)
    entry = record_requests(settings, key, requests)
    entry["source"] = REQUESTS_FILE
    entry["completed_by"] = "the pipeline run that follows (ingest drops suppressed subjects)"
    path.unlink()  # it holds the identifiers in clear
    return write_audit(settings, entry)


def erase(settings: Settings, requests: list[Request], key: PseudonymKey | None = None) -> dict[str, Any]:
    """The full operation behind ``crmshield erase``: record, scrub, rebuild, verify, audit."""
    from crmshield.keys import load_key
    from crmshield.pipeline import stage_ingest, stage_privacy, stage_transform, stage_validate, stage_validate_raw
    from crmshield.sources import source_specs

    key = key or load_key()
    missing = [s.file for s in source_specs().values() if not delivery_files(settings.landing, s)]
    if missing:
        raise ErasureError(
            f"{settings.landing}: export(s) {missing} missing; erasure rebuilds every zone from the landing zone"
        )
    entry = record_requests(settings, key, requests)
    subject: Subject = entry["_subject"]
    entry["source"] = "cli"
    ing = stage_ingest(settings)
    run_id = ing["run_id"]
    stage_validate_raw(run_id, settings)
    stage_privacy(run_id, settings)
    stage_validate(run_id, settings)
    stage_transform(run_id, settings)
    entry["rebuilt"] = {
        "run_id": run_id,
        "raw_rows_erased": {
            e: f.get("erased", 0) + (f.get("previous") or {}).get("erased", 0) for e, f in ing["files"].items()
        },
        "stages": ["ingest", "validate_raw", "privacy", "validate", "transform"],
    }
    left = remaining(settings, key, subject)
    entry["verification"] = {"rows_left": left, "clean": not any(left.values())}
    entry["published_marts"] = "unchanged (DP covers the subject); the next publication excludes them"
    entry["completed_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    clean = write_audit(settings, entry)
    if not clean["verification"]["clean"]:
        raise ErasureError(f"erasure {clean['request_id']}: rows still hold the subject: {left}")
    return clean

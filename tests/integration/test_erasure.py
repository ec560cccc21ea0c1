"""Right to erasure: after `erase`, no zone holds the subject's values or pseudonyms, later
exports cannot bring them back, and the audit trail holds no PII."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import duckdb
import job  # spark_jobs/privacy/job.py, on pytest's pythonpath
import pytest
from pii_scan import decoded_text

from crmshield.config import Settings
from crmshield.erasure import ErasureError, audit_path, canonical, erase, load_suppression, suppression_path
from crmshield.generate import FILES, generate
from crmshield.ingest import ingest
from crmshield.keys import ENV_KEY, ENV_VERSION, PseudonymKey
from crmshield.pipeline import stage_ingest, stage_transform
from crmshield.privacy import resolve_column_plan

pytestmark = pytest.mark.integration
KEY = "5a" * 32
SEED = 21


def _pick_subject(settings: Settings) -> dict[str, str]:
    """A consenting contact with an email, a phone, tickets and deals."""
    row = duckdb.sql(
        f"""SELECT c.contact_id, c.email, c.phone, c.first_name, c.last_name
        FROM '{settings.raw}/contacts.parquet' c
        WHERE c.analytics_consent AND c.email LIKE '%@%' AND c.phone LIKE '+%'
          AND c.contact_id IN (SELECT requester_id FROM '{settings.raw}/tickets.parquet')
          AND c.contact_id IN (SELECT contact_id FROM '{settings.raw}/deals.parquet')
        ORDER BY c.contact_id LIMIT 1"""
    ).fetchone()
    assert row, "the sample has a consenting contact with tickets and deals"
    cid, email, phone, first, last = row
    with (settings.landing / FILES["contacts"]).open(encoding="utf-8", newline="") as fh:
        landing = next(r for r in csv.DictReader(fh) if r["Record ID"] == str(cid))
    return {
        "crm_id": str(cid), "email": email, "phone": phone, "landing_email": landing["Email"],
        "landing_phone": landing["Phone Number"], "full_name": f"{first} {last}",
    }  # fmt: skip


def _values(subject: dict[str, str], key: PseudonymKey) -> set[str]:
    return {
        subject["email"], subject["landing_email"], subject["phone"], subject["landing_phone"],
        subject["full_name"],
        key.pseudonym("contact", subject["crm_id"]),
        key.pseudonym("email", subject["email"]),
        key.pseudonym("phone", subject["phone"]),
    }  # fmt: skip


def _holders(settings: Settings, needles: set[str]) -> list[str]:
    # the suppression list keeps the subject's pseudonyms on purpose (validation looks for them):
    # it is checked on its own below
    roots = [settings.landing, settings.raw, settings.quarantine, settings.privacy, settings.warehouse,
             audit_path(settings), settings.restricted, settings.reports]  # fmt: skip
    texts = decoded_text(roots)
    return sorted(f"{path}: {n}" for path, text in texts.items() for n in needles if n in text)


def _raw_rows_for(settings: Settings, crm_id: str) -> int:
    total = 0
    for entity, fk in (("contacts", "contact_id"), ("deals", "contact_id"), ("tickets", "requester_id")):
        sql = f"SELECT count(*) FROM '{settings.raw}/{entity}.parquet' WHERE CAST({fk} AS VARCHAR) = ?"
        total += duckdb.execute(sql, [crm_id]).fetchone()[0]  # type: ignore[index]
    return total


@pytest.fixture()
def ingested(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv(ENV_KEY, KEY)
    monkeypatch.setenv(ENV_VERSION, "1")
    settings = Settings.from_env(data_dir)
    generate(settings.landing, contacts=300, seed=SEED)
    stage_ingest(settings)
    return settings


@pytest.fixture()
def built(ingested: Settings, spark) -> Settings:  # noqa: ANN001 - the session fixture
    """Every zone populated (the privacy job in this session's Spark, to save a JVM start)."""
    run_id = stage_ingest(ingested)["run_id"]
    job.run(spark, ingested.raw, ingested.privacy, resolve_column_plan(ingested))
    stage_transform(run_id, ingested)
    return ingested


def test_erasure_removes_the_subject_everywhere_and_keeps_them_out(built: Settings) -> None:
    settings = built
    key = PseudonymKey(bytes.fromhex(KEY), 1, "test")
    subject = _pick_subject(settings)
    needles = _values(subject, key)
    before = _holders(settings, needles)
    assert any("privacy" in h for h in before) and any("warehouse" in h for h in before), "the subject was there"

    # the request names only the email, in another case: erasure closes over the id and phone
    entry = erase(settings, [canonical("email", subject["landing_email"].upper())], key=key)

    assert entry["verification"]["clean"] is True
    assert entry["suppression_tokens_added"] == 3  # crm id, email, phone
    assert entry["landing_records_removed"][FILES["contacts"]] >= 1
    assert entry["landing_records_removed"][FILES["tickets"]] >= 1
    assert entry["landing_records_removed"][FILES["deals"]] >= 1
    assert _holders(settings, needles) == []
    assert _raw_rows_for(settings, subject["crm_id"]) == 0

    # the audit trail holds no identifier, value or pseudonym; the suppression list no identifier
    # or value, but each new entry records the subject's privacy-zone pseudonyms (validation checks
    # that no privacy-zone row carries one)
    audit_text = audit_path(settings).read_text(encoding="utf-8")
    suppression_text = suppression_path(settings).read_text(encoding="utf-8")
    pseudonyms = {
        "contact_pk": [key.pseudonym("contact", subject["crm_id"])],
        "email_pk": [key.pseudonym("email", subject["email"])],
        "phone_pk": [key.pseudonym("phone", subject["phone"])],
    }
    for needle in needles | {subject["crm_id"]}:
        assert needle not in audit_text
        if needle not in {p for ps in pseudonyms.values() for p in ps}:
            assert needle not in suppression_text
    entries = load_suppression(settings)
    assert len(entries) == 3 and {e["kind"] for e in entries} == {"crm_id", "email", "phone"}
    assert all(e["pseudonyms"] == pseudonyms for e in entries)
    audit = json.loads(audit_text.splitlines()[-1])
    assert audit["identifier_kinds"] == ["email"] and audit["verification"]["clean"] is True
    assert oct(suppression_path(settings).stat().st_mode & 0o777) == "0o600"

    # a later export (the CRM still has them) cannot bring the subject back
    generate(settings.landing, contacts=300, seed=SEED)
    res = ingest(settings)
    assert res.files["contacts"].erased >= 1 and res.files["tickets"].erased >= 1
    for f in res.files.values():
        assert f.read == f.loaded + f.quarantined + f.duplicates + f.expired + f.erased
    assert _raw_rows_for(settings, subject["crm_id"]) == 0


def test_requests_file_is_processed_at_ingest_and_consumed(ingested: Settings) -> None:
    settings = ingested
    subject = _pick_subject(settings)
    requests = settings.landing / "erasure_requests.csv"
    # the phone as the person wrote it (national format, their country as region)
    country = duckdb.sql(
        f"SELECT country FROM '{settings.raw}/contacts.parquet' WHERE contact_id = {subject['crm_id']}"
    ).fetchone()[0]  # type: ignore[index]
    requests.write_text(
        f"identifier,kind,region,reference\n{subject['landing_phone']},phone,{country},DSR-2026-0042\n",
        encoding="utf-8",
    )
    legacy = {"token": "v1_" + "0" * 64, "kind": "crm_id", "key_version": 1, "request_id": "old", "added_at": "x"}
    suppression_path(settings).parent.mkdir(parents=True, exist_ok=True)
    suppression_path(settings).write_text(json.dumps(legacy) + "\n", encoding="utf-8")  # written before pseudonyms
    res = ingest(settings)
    assert not requests.exists(), "the requests file holds identifiers in clear: consumed"
    processed = res.erasure["requests_processed"]
    assert processed and processed["references"] == ["DSR-2026-0042"]
    assert processed["suppression_tokens_added"] == 3
    entries = load_suppression(settings)
    assert entries[0] == legacy  # an entry without pseudonyms stays as it was
    key = PseudonymKey(bytes.fromhex(KEY), 1, "test")
    assert all(e["pseudonyms"]["contact_pk"] == [key.pseudonym("contact", subject["crm_id"])] for e in entries[1:])
    assert all(e["pseudonyms"]["phone_pk"] == [key.pseudonym("phone", subject["phone"])] for e in entries[1:])
    assert _raw_rows_for(settings, subject["crm_id"]) == 0
    # landing and raw are clean at once; the stages that follow rebuild the privacy zone and warehouse
    raw_text = decoded_text([settings.landing, settings.raw, settings.quarantine])
    for needle in (subject["landing_email"], subject["email"], subject["phone"], subject["landing_phone"]):
        assert not [p for p, t in raw_text.items() if needle in t], needle


def test_bad_requests_are_clear_errors_without_the_value(ingested: Settings) -> None:
    with pytest.raises(ErasureError, match="--email: not an email address") as caught:
        canonical("email", "jane.doe(at)example", where="--email")
    assert "jane" not in str(caught.value)
    path = ingested.landing / "erasure_requests.csv"
    path.write_text("identifier,kind\n+1 415 555 0134,phone\n  ,email\n", encoding="utf-8")
    with pytest.raises(ErasureError, match=r"erasure_requests.csv: line 3, field 'identifier': empty"):
        ingest(ingested)
    path.write_text("identifier,kind\n12ab,crm_id\n", encoding="utf-8")
    with pytest.raises(ErasureError, match=r"line 2, field 'identifier': a crm_id must be a number"):
        ingest(ingested)

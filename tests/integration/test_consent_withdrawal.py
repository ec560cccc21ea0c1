"""A consent withdrawal in a later export removes the contact's earlier data on the next run."""

from __future__ import annotations

import csv
import io
import json

import duckdb
import job  # spark_jobs/privacy/job.py, on pytest's pythonpath
import pytest

from crmshield.config import Settings
from crmshield.generate import FILES, generate
from crmshield.ingest import ingest
from crmshield.keys import ENV_KEY, ENV_VERSION, PseudonymKey
from crmshield.privacy import resolve_column_plan

pytestmark = pytest.mark.integration
KEY = "33" * 32


def _privacy_rows(settings: Settings, entity: str, pk: str) -> int:
    return duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{settings.privacy}/{entity}/*.parquet') WHERE contact_pk = '{pk}'"
    ).fetchone()[0]


def test_withdrawn_consent_removes_earlier_data(spark, data_dir, monkeypatch):
    monkeypatch.setenv(ENV_KEY, KEY)
    monkeypatch.setenv(ENV_VERSION, "1")
    settings = Settings.from_env(data_dir)
    generate(settings.landing, contacts=300, seed=9)
    ingest(settings)
    plan = resolve_column_plan(settings)
    job.run(spark, settings.raw, settings.privacy, plan)

    # a consenting contact with tickets in the first export
    raw_tickets = duckdb.sql(
        f"SELECT requester_id, count(*) FROM '{settings.raw}/tickets.parquet' GROUP BY 1 ORDER BY 2 DESC"
    ).fetchall()
    consenting = {
        r[0]
        for r in duckdb.sql(
            f"SELECT contact_id FROM '{settings.raw}/contacts.parquet' WHERE analytics_consent"
        ).fetchall()
    }
    subject = next(cid for cid, _ in raw_tickets if cid in consenting)
    pk = PseudonymKey(bytes.fromhex(KEY), 1, "test").pseudonym("contact", str(subject))
    assert _privacy_rows(settings, "contacts", pk) == 1 and _privacy_rows(settings, "tickets", pk) > 0

    # the next export says: consent withdrawn
    path = settings.landing / FILES["contacts"]
    text = path.read_bytes().decode("utf-8")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    header = rows[0]
    for r in rows[1:]:
        if r and r[0] == str(subject) and len(r) == len(header):
            r[header.index("Analytics Consent")] = "false"
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerows(rows)
    path.write_bytes(buf.getvalue().encode("utf-8"))

    ingest(settings)
    stats = job.run(spark, settings.raw, settings.privacy, plan)
    assert _privacy_rows(settings, "contacts", pk) == 0
    assert _privacy_rows(settings, "tickets", pk) == 0
    assert _privacy_rows(settings, "deals", pk) == 0
    assert stats["entities"]["tickets"]["excluded"]["excluded_consent"] >= 1
    json.dumps(stats)  # the stats stay JSON-safe for the manifest

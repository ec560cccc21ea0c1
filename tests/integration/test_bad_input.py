"""Hostile but valid input through ingest and the privacy job: nulls everywhere, odd-case
unicode emails, 1 MB ticket bodies. Every row is accounted for and no PII passes through."""

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
KEY = "7c" * 32
REQUIRED = {"Record ID", "Create Date"}


def test_nulls_odd_emails_and_huge_bodies(spark, data_dir, monkeypatch):
    monkeypatch.setenv(ENV_KEY, KEY)
    monkeypatch.setenv(ENV_VERSION, "1")
    settings = Settings.from_env(data_dir)
    generate(settings.landing, contacts=300, seed=5)

    # contacts: three rows with every optional field empty, one with a NFD, odd-case email
    path = settings.landing / FILES["contacts"]
    rows = list(csv.reader(io.StringIO(path.read_bytes().decode("utf-8"), newline="")))
    header = rows[0]
    emptied = []
    for r in rows[1:4]:
        emptied.append(int(r[0]))
        for i, name in enumerate(header):
            if name not in REQUIRED:
                r[i] = ""
    odd = rows[5]
    odd[header.index("Email")] = "  Zoe\u0308.ÄNGSTRÖM@Example.ORG "
    odd[header.index("Analytics Consent")] = "true"
    odd_id = int(odd[0])
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerows(rows)
    path.write_bytes(buf.getvalue().encode("utf-8"))

    # tickets: null subject and description, and a 1 MB body hiding the requester's email
    tpath = settings.landing / FILES["tickets"]
    lines = tpath.read_text(encoding="utf-8").splitlines()
    docs = [json.loads(line) for line in lines if line.strip().startswith("{") and line.strip().endswith("}")]
    docs[0]["subject"], docs[0]["description"], docs[0]["requester_id"] = None, None, odd_id
    big = docs[1]
    big["requester_id"] = odd_id
    big["description"] = (
        ("lorem ipsum dolor sit amet " * 30_000) + "reach me at zoë.ängström@example.org" + (" consectetur" * 30_000)
    )
    tpath.write_text("\n".join(json.dumps(d) for d in docs) + "\n", encoding="utf-8")

    res = ingest(settings)
    for f in res.files.values():
        assert f.read == f.loaded + f.quarantined + f.duplicates + f.expired + f.erased
    raw = duckdb.sql(f"SELECT email FROM '{settings.raw}/contacts.parquet' WHERE contact_id = {odd_id}").fetchone()
    assert raw == ("zoë.ängström@example.org",)

    stats = job.run(spark, settings.raw, settings.privacy, resolve_column_plan(settings))
    contacts = stats["entities"]["contacts"]
    assert contacts["rows_in"] == contacts["rows_out"] + sum(contacts["excluded"].values())
    # a contact with nothing but an id and a date: no consent recorded, so excluded, not passed on
    key = PseudonymKey(bytes.fromhex(KEY), 1, "test")
    kept = {
        r[0]
        for r in duckdb.sql(f"SELECT contact_pk FROM read_parquet('{settings.privacy}/contacts/*.parquet')").fetchall()
    }
    assert not {key.pseudonym("contact", str(c)) for c in emptied} & kept

    tickets = duckdb.sql(
        f"SELECT ticket_pk, subject, description FROM read_parquet('{settings.privacy}/tickets/*.parquet')"
    ).fetchall()
    by_pk = {r[0]: r[1:] for r in tickets}
    assert by_pk[key.pseudonym("ticket", str(docs[0]["id"]))] == (None, None)
    huge = by_pk[key.pseudonym("ticket", str(big["id"]))]
    assert len(huge[1]) > 1_000_000
    assert "ängström" not in huge[1].lower() and "<EMAIL>" in huge[1]
    # the email pseudonym is the canonical address's, whatever the export's case or normalization
    email_pks = {
        r[0]
        for r in duckdb.sql(f"SELECT email_pk FROM read_parquet('{settings.privacy}/contacts/*.parquet')").fetchall()
    }
    assert key.pseudonym("email", "zoë.ängström@example.org") in email_pks

"""Ingest: landing -> raw, with quarantine and reconciliation."""

from __future__ import annotations

import json

import duckdb
import pytest

from crmshield.config import Settings
from crmshield.generate import FILES, generate
from crmshield.ingest import IngestError, ingest


@pytest.fixture()
def landed(data_dir):
    generate(data_dir / "landing", contacts=600, seed=3)
    return Settings.from_env(data_dir)


def test_every_row_is_loaded_quarantined_or_a_duplicate(landed):
    res = ingest(landed)
    for entity, f in res.files.items():
        assert f.read == f.loaded + f.quarantined + f.duplicates + f.expired, entity
        n = duckdb.sql(f"SELECT count(*) FROM '{landed.raw / (entity + '.parquet')}'").fetchone()[0]
        assert n == f.loaded
    lines = (landed.landing / FILES["contacts"]).read_text(encoding="utf-8").count("\n")
    assert res.files["contacts"].read == lines - 1  # header
    assert res.files["contacts"].quarantine_reasons["record:malformed_line"] == 1
    assert res.files["contacts"].quarantine_reasons["date_of_birth:invalid_date"] >= 1
    assert res.files["tickets"].quarantine_reasons["record:malformed_json"] == 1
    assert res.files["contacts"].duplicates >= 2
    assert res.run_id == f"run-{res.input_fingerprint[:16]}"


def test_quarantine_names_file_line_and_field(landed):
    ingest(landed)
    rows = duckdb.sql(
        f"SELECT source_file, source_row, field, reason FROM '{landed.quarantine / 'contacts.parquet'}' "
        "WHERE field = 'date_of_birth'"
    ).fetchall()
    lines = (landed.landing / FILES["contacts"]).read_bytes().decode("utf-8").split("\r\n")
    for source_file, line, _field, reason in rows:
        assert source_file == FILES["contacts"] and reason == "invalid_date"
        dob = lines[line - 1].split(",")[5]
        assert dob in {"31/02/1985", "1985-13-40", "unknown-date"}, (line, dob)


def test_raw_and_quarantine_zones_are_owner_only(landed):
    """Both hold PII (quarantined rows keep the whole record for repair): directories 0700, files 0600."""
    ingest(landed)
    for zone in (landed.raw, landed.quarantine):
        assert zone.stat().st_mode & 0o777 == 0o700, zone
        files = sorted(zone.glob("*.parquet"))
        assert files, zone
        for f in files:
            assert f.stat().st_mode & 0o777 == 0o600, f


def test_types_leading_zeros_and_latest_version_wins(landed):
    ingest(landed)
    con = duckdb.connect()
    raw = landed.raw / "contacts.parquet"
    types = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM '{raw}')").fetchall())
    assert types["contact_id"] == "BIGINT" and types["date_of_birth"] == "DATE"
    assert types["created_at"] == "TIMESTAMP" and types["postal_code"] == "VARCHAR"
    assert types["analytics_consent"] == "BOOLEAN"
    zeros = con.execute(f"SELECT count(*) FROM '{raw}' WHERE postal_code LIKE '0%'").fetchone()[0]
    assert zeros > 0
    assert con.execute(f"SELECT count(*) - count(DISTINCT contact_id) FROM '{raw}'").fetchone()[0] == 0
    # the conflicting later version (lifecycle 'customer', modified 5 minutes later) won
    src = landed.landing / FILES["contacts"]
    dup_ids = con.execute(
        f"""SELECT "Record ID" FROM read_csv('{src}', all_varchar=true, ignore_errors=true)
        GROUP BY 1 HAVING count(DISTINCT "Last Modified Date") > 1"""
    ).fetchall()
    assert dup_ids
    for (rid,) in dup_ids:
        stage = con.execute(f"SELECT lifecycle_stage FROM '{raw}' WHERE contact_id = {int(rid)}").fetchone()[0]
        assert stage == "customer"


def test_rerun_is_idempotent(landed):
    first = ingest(landed)
    before = duckdb.sql(f"SELECT * FROM '{landed.raw / 'deals.parquet'}' ORDER BY deal_id").fetchall()
    second = ingest(landed)
    after = duckdb.sql(f"SELECT * FROM '{landed.raw / 'deals.parquet'}' ORDER BY deal_id").fetchall()
    assert before == after
    # every file is recognized by its sha256: a no-op, recorded as such, with the counts of the run that read it
    for entity, f in second.files.items():
        assert [d.status for d in f.files] == ["already_ingested"], entity
        assert f.files[0].ingested_in == first.run_id
        assert first.files[entity].files[0].status == "ingested"

    def comparable(res):
        d = res.to_dict()
        for f in d["files"].values():
            f.pop("previous")
            for delivery in f["files"]:
                delivery.pop("status")
                delivery.pop("warnings")
        return d

    assert comparable(first) == comparable(second)
    assert second.files["deals"].previous["kept"] == first.files["deals"].raw_rows


def test_missing_column_and_missing_file_are_clear_errors(landed):
    path = landed.landing / FILES["deals"]
    text = path.read_text(encoding="utf-8").replace("Deal Stage", "Stage", 1)
    path.write_text(text, encoding="utf-8")
    with pytest.raises(IngestError, match=r"hubspot_deals.csv: required column\(s\) \['Deal Stage'\] missing"):
        ingest(landed)
    path.unlink()
    with pytest.raises(IngestError, match="hubspot_deals.csv.*not found"):
        ingest(landed)


def test_invalid_encoding_and_huge_bodies(landed):
    contacts = landed.landing / FILES["contacts"]
    lines = contacts.read_bytes().split(b"\r\n")
    lines[4] = lines[4].replace(b",", b",Caf\xe9 ", 1)  # a cp1252 byte in a UTF-8 file, on line 5
    contacts.write_bytes(b"\r\n".join(lines))
    tickets = landed.landing / FILES["tickets"]
    tlines = tickets.read_bytes().splitlines()
    big = json.loads(tlines[0])
    big["description"] = "word " * 250_000  # a 1.2 MB ticket body
    tlines[0] = json.dumps(big).encode()
    tlines[2] = tlines[2].replace(b'"subject": "', b'"subject": "\xff', 1)  # invalid UTF-8 on line 3
    tickets.write_bytes(b"\n".join(tlines) + b"\n")

    res = ingest(landed)
    q = duckdb.sql(
        f"SELECT source_row, reason FROM '{landed.quarantine / 'contacts.parquet'}' WHERE reason = 'invalid_encoding'"
    ).fetchall()
    assert q == [(5, "invalid_encoding")]
    qt = duckdb.sql(
        f"SELECT source_row, reason FROM '{landed.quarantine / 'tickets.parquet'}' WHERE reason = 'invalid_encoding'"
    ).fetchall()
    assert qt == [(3, "invalid_encoding")]
    t = res.files["tickets"]
    assert t.read == len(tlines) and t.read == t.loaded + t.quarantined + t.duplicates + t.expired
    n = duckdb.sql(
        f"SELECT length(description) FROM '{landed.raw / 'tickets.parquet'}' WHERE _source_row = 1"
    ).fetchone()[0]
    assert n > 1_000_000
    # line numbers stay exact after a rejected line
    row4 = duckdb.sql(f"SELECT ticket_id FROM '{landed.raw / 'tickets.parquet'}' WHERE _source_row = 4").fetchone()
    assert row4[0] == json.loads(tlines[3])["id"]


def test_retention_purges_expired_rows_from_raw(landed):
    res = ingest(landed)
    assert res.reference_date and res.reference_date.startswith("2026-10-31")
    rule = res.retention["tickets"]
    assert rule["column"] == "created_at" and rule["days"] == 540
    oldest = duckdb.sql(f"SELECT min(created_at) FROM '{landed.raw / 'tickets.parquet'}'").fetchone()[0]
    assert oldest.isoformat() >= rule["cutoff"]
    t = res.files["tickets"]
    assert t.expired > 0, "the sample spans two years: older tickets expire"
    assert t.read == t.loaded + t.quarantined + t.duplicates + t.expired


def test_emails_and_phones_are_put_in_canonical_form(landed):
    """Odd case, stray spaces, NFD accents and national phone formats: one canonical value,
    so one person gets one pseudonym across exports. What is not an email or a number is kept."""
    path = landed.landing / FILES["contacts"]
    lines = path.read_bytes().decode("utf-8").split("\r\n")
    header = lines[0].split(",")
    col_email, col_phone, col_country = (
        header.index("Email"),
        header.index("Phone Number"),
        header.index("Country/Region"),
    )

    def rewrite(i: int, email: str, phone: str, country: str) -> int:
        fields = lines[i].split(",")
        fields[col_email], fields[col_phone], fields[col_country] = email, phone, country
        lines[i] = ",".join(fields)
        return int(fields[0])

    ids = [
        rewrite(2, " Zoe\u0308.SMITH@Example.COM ", "(415) 555-0134", "United States"),
        rewrite(3, "no email given", "ask reception", "Germany"),
        rewrite(4, "", "0049 30 12345678", "France"),
    ]
    path.write_bytes("\r\n".join(lines).encode("utf-8"))
    res = ingest(landed)
    raw = landed.raw / "contacts.parquet"
    got = dict(
        (r[0], r[1:])
        for r in duckdb.sql(f"SELECT contact_id, email, phone FROM '{raw}' WHERE contact_id IN {tuple(ids)}").fetchall()
    )
    assert got[ids[0]] == ("zoë.smith@example.com", "+14155550134")
    assert got[ids[1]] == ("no email given", "ask reception")
    assert got[ids[2]] == (None, "+493012345678")
    norm = res.files["contacts"].normalization
    assert norm["email:not_an_email"] == 1 and norm["phone:not_a_number"] == 1
    assert norm["phone:e164"] + norm["phone:not_a_number"] <= res.files["contacts"].loaded

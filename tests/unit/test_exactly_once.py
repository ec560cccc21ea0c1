"""Exactly once: every delivered file is fingerprinted, re-deliveries are recorded no-ops, deltas upsert,
snapshots replace, and a crash mid-ingest never leaves partial raw data (the retry completes it)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import duckdb
import pytest

from crmshield import ingest as ingest_mod
from crmshield.config import Settings
from crmshield.ingest import COMMIT_MARKER, STAGING, IngestError, ingest, load_registry

SPEC = """\
version: 1
entities:
  contacts:
    file: "contacts_*.csv"
    format: csv
    delivery: {delivery}
    key: contact_id
    updated_at: updated_at
    fields:
      contact_id: {{column: id, required: true}}
      first_name: {{column: first}}
      postal_code: {{column: zip}}
      lifecycle_stage: {{column: stage}}
      created_at: {{column: created, formats: ["%Y-%m-%d %H:%M"]}}
      updated_at: {{column: updated, formats: ["%Y-%m-%d %H:%M"]}}
"""
HEADER = "id,first,zip,stage,created,updated\n"


@pytest.fixture()
def setup(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def make(delivery: str) -> Settings:
        spec = tmp_path / f"{delivery}.yml"
        spec.write_text(SPEC.format(delivery=delivery), encoding="utf-8")
        monkeypatch.setenv("CRMSHIELD_SOURCE_SPEC", str(spec))
        (data_dir / "landing").mkdir(parents=True, exist_ok=True)
        return Settings.from_env(data_dir)

    return make


def deliver(settings: Settings, name: str, rows: list[str]) -> Path:
    path = settings.landing / name
    path.write_text(HEADER + "".join(r + "\n" for r in rows), encoding="utf-8")
    return path


def raw(settings: Settings) -> dict[int, tuple]:
    rows = duckdb.sql(
        f"SELECT contact_id, first_name, postal_code, lifecycle_stage, updated_at, _source_file "
        f"FROM '{settings.raw / 'contacts.parquet'}' ORDER BY contact_id"
    ).fetchall()
    return {r[0]: r[1:] for r in rows}


DAY1 = ["1,Ann,01234,lead,2026-10-01 09:00,2026-10-01 09:00",
        "2,Bob,02345,lead,2026-10-01 09:00,2026-10-01 09:00",
        "3,Cy,03456,lead,2026-10-01 09:00,2026-10-01 09:00"]  # fmt: skip
DAY2 = ["2,Bob,02345,customer,2026-10-01 09:00,2026-10-02 10:00",  # a newer version: update
        "4,Di,04567,lead,2026-10-02 10:00,2026-10-02 10:00",  # a new record: insert
        "3,Cy,09999,other,2026-10-01 09:00,2026-09-30 08:00"]  # older than raw's version: a duplicate  # fmt: skip


def test_deltas_upsert_by_key_and_latest_updated_at_wins(setup):
    settings = setup("delta")
    deliver(settings, "contacts_001.csv", DAY1)
    first = ingest(settings).files["contacts"]
    assert (first.read, first.loaded, first.raw_rows) == (3, 3, 3)
    assert first.files[0].inserted == 3

    deliver(settings, "contacts_002.csv", DAY2)
    res = ingest(settings).files["contacts"]
    by_file = {d.file: d for d in res.files}
    old, new = by_file["contacts_001.csv"], by_file["contacts_002.csv"]
    assert old.status == "already_ingested" and old.loaded == 3  # the counts of the run that read it
    assert new.status == "ingested"
    assert (new.read, new.loaded, new.inserted, new.updated, new.duplicates) == (3, 2, 1, 1, 0 + 1)
    assert new.read == new.loaded + new.quarantined + new.duplicates + new.expired + new.erased
    assert res.previous == {"rows": 3, "kept": 2, "erased": 0, "expired": 0, "replaced": 1}
    assert res.raw_rows == res.previous["kept"] + new.loaded == 4
    rows = raw(settings)
    assert rows[2][2] == "customer" and rows[2][4] == "contacts_002.csv"  # the update won
    assert rows[3][1] == "03456" and rows[3][4] == "contacts_001.csv"  # the older version lost
    assert rows[4][0] == "Di" and rows[1][1] == "01234"  # leading zeros kept
    assert res.lineage_files == ["contacts_001.csv", "contacts_002.csv"]


def test_a_redelivered_file_is_a_recorded_no_op(setup):
    settings = setup("delta")
    deliver(settings, "contacts_001.csv", DAY1)
    deliver(settings, "contacts_002.csv", DAY2)
    first = ingest(settings)
    before = (settings.raw / "contacts.parquet").read_bytes()
    # the same bytes again, under another name: recognized by sha256
    shutil.copy(settings.landing / "contacts_002.csv", settings.landing / "contacts_003.csv")
    res = ingest(settings).files["contacts"]
    again = {d.file: d for d in res.files}["contacts_003.csv"]
    assert again.status == "already_ingested" and again.ingested_in == first.run_id
    assert (settings.raw / "contacts.parquet").read_bytes() == before
    assert res.raw_rows == 4 and res.previous["kept"] == 4
    registry = load_registry(settings)["contacts"]["files"]
    assert len(registry) == 2  # one entry per content, not per name


def test_same_content_twice_in_one_delivery_is_read_once(setup):
    settings = setup("delta")
    deliver(settings, "contacts_001.csv", DAY1)
    shutil.copy(settings.landing / "contacts_001.csv", settings.landing / "contacts_001_copy.csv")
    res = ingest(settings).files["contacts"]
    assert [d.status for d in res.files] == ["ingested", "duplicate_delivery"]
    assert (res.read, res.loaded, res.raw_rows) == (3, 3, 3)


def test_snapshots_replace_and_older_snapshot_files_are_superseded(setup):
    settings = setup("snapshot")
    deliver(settings, "contacts_001.csv", DAY1)
    ingest(settings)
    deliver(settings, "contacts_002.csv", DAY2)  # a full snapshot: contact 1 is gone from the CRM
    res = ingest(settings).files["contacts"]
    statuses = {d.file: d.status for d in res.files}
    assert statuses == {"contacts_001.csv": "superseded", "contacts_002.csv": "ingested"}
    assert res.previous == {} and res.raw_rows == 3
    assert sorted(raw(settings)) == [2, 3, 4]  # replaced, not merged
    assert raw(settings)[3][1] == "09999"  # a snapshot's own version, even if older than the last one
    # unchanged landing: the current snapshot is a no-op, raw untouched
    before = (settings.raw / "contacts.parquet").read_bytes()
    res = ingest(settings).files["contacts"]
    assert {d.file: d.status for d in res.files}["contacts_002.csv"] == "already_ingested"
    assert (settings.raw / "contacts.parquet").read_bytes() == before


def test_a_refused_delta_is_not_applied_and_a_fixed_one_is(setup):
    settings = setup("delta")
    deliver(settings, "contacts_001.csv", DAY1)
    ingest(settings)
    before = (settings.raw / "contacts.parquet").read_bytes()
    bad = deliver(settings, "contacts_002.csv", [r.replace("2026-10", "10/2026") for r in DAY2])
    with pytest.raises(IngestError, match=r"contacts_002.csv: 3 of 3 rows \(100.0%\) would be quarantined"):
        ingest(settings)
    assert (settings.raw / "contacts.parquet").read_bytes() == before
    assert not (settings.raw / STAGING).exists()
    assert len(load_registry(settings)["contacts"]["files"]) == 1  # not registered: the retry reads it
    bad.unlink()
    deliver(settings, "contacts_002.csv", DAY2)
    assert ingest(settings).files["contacts"].raw_rows == 4


def _crash_on_replace(monkeypatch: pytest.MonkeyPatch, after: int) -> None:
    real = os.replace
    calls = {"n": 0}

    def replace(src, dst):
        if str(src).endswith(".parquet") and STAGING in str(src):
            calls["n"] += 1
            if calls["n"] > after:
                raise OSError("simulated crash")
        return real(src, dst)

    monkeypatch.setattr(ingest_mod.os, "replace", replace)


@pytest.mark.parametrize("after", [0, 1])
def test_a_crash_during_the_commit_is_rolled_forward_by_the_retry(setup, monkeypatch, after):
    settings = setup("delta")
    deliver(settings, "contacts_001.csv", DAY1)
    ingest(settings)
    deliver(settings, "contacts_002.csv", DAY2)
    with monkeypatch.context() as m:
        _crash_on_replace(m, after)  # the marker is written; 0 or 1 of the staged files were moved
        with pytest.raises(OSError, match="simulated crash"):
            ingest(settings)
    assert (settings.raw / STAGING / COMMIT_MARKER).is_file()
    retry = ingest(settings).files["contacts"]
    assert not (settings.raw / STAGING).exists()
    assert {d.file: d.status for d in retry.files}["contacts_002.csv"] == "already_ingested"
    rows = raw(settings)
    assert sorted(rows) == [1, 2, 3, 4] and rows[2][2] == "customer"  # exactly the uninterrupted result
    assert retry.raw_rows == 4


def test_a_crash_before_the_commit_leaves_raw_as_it_was_and_the_retry_completes(setup, monkeypatch):
    settings = setup("delta")
    deliver(settings, "contacts_001.csv", DAY1)
    ingest(settings)
    before = (settings.raw / "contacts.parquet").read_bytes()
    deliver(settings, "contacts_002.csv", DAY2)
    real = ingest_mod._commit

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # killed between building and committing

    monkeypatch.setattr(ingest_mod, "_commit", crash)
    with pytest.raises(KeyboardInterrupt):
        ingest(settings)
    assert (settings.raw / "contacts.parquet").read_bytes() == before
    (settings.raw / STAGING).mkdir(exist_ok=True)  # as if the process died before cleaning up
    (settings.raw / STAGING / "raw-contacts.parquet").write_bytes(b"partial")
    monkeypatch.setattr(ingest_mod, "_commit", real)
    res = ingest(settings).files["contacts"]
    assert res.raw_rows == 4 and {d.file: d.status for d in res.files}["contacts_002.csv"] == "ingested"
    assert raw(settings)[2][2] == "customer"


def test_an_ingested_delta_rewritten_by_the_erasure_scrub_is_not_applied_again(setup):
    from crmshield.ingest import registry_alias, sha256_file

    settings = setup("delta")
    path = deliver(settings, "contacts_001.csv", DAY1)
    deliver(settings, "contacts_002.csv", DAY2)
    ingest(settings)
    before = sha256_file(path)
    deliver(settings, "contacts_001.csv", DAY1[1:])  # the scrub removed contact 1's record in place
    registry_alias(settings, "contacts", before, sha256_file(path))
    res = ingest(settings).files["contacts"]
    assert {d.file: d.status for d in res.files} == {
        "contacts_001.csv": "already_ingested",
        "contacts_002.csv": "already_ingested",
    }
    assert res.raw_rows == 4  # raw drops an erased subject through the suppression list, not by re-reading
    entry = load_registry(settings)["contacts"]["files"][sha256_file(path)]
    assert entry["rewritten_from"] == before

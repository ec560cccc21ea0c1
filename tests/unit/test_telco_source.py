"""config/sources/telco_churn.yml: the IBM Telco churn export (a real third-party layout) through a source spec."""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import pytest

from crmshield.config import Settings
from crmshield.ingest import ingest
from crmshield.sources import ENTITIES, load_source_spec

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "config" / "sources" / "telco_churn.yml"
EXCERPT = ROOT / "tests" / "data" / "telco_churn" / "Telco-Customer-Churn.head.csv"
FULL = ROOT.parent / "shared" / "data" / "telco_churn" / "Telco-Customer-Churn.csv"
HEADER = (
    "customerID,gender,SeniorCitizen,Partner,Dependents,tenure,PhoneService,MultipleLines,InternetService,"
    "OnlineSecurity,OnlineBackup,DeviceProtection,TechSupport,StreamingTV,StreamingMovies,Contract,"
    "PaperlessBilling,PaymentMethod,MonthlyCharges,TotalCharges,Churn"
).split(",")


def test_spec_loads_and_accounts_for_every_column() -> None:
    specs = load_source_spec(SPEC)
    assert list(specs) == ["contacts"]  # deals are not derived: one file per entity, no honest stage
    c = specs["contacts"]
    assert (c.format, c.delimiter, c.encoding, c.delivery, c.key, c.updated_at) == (
        "csv", ",", "auto", "snapshot", "contact_id", None,
    )  # fmt: skip
    assert [(f.name, f.source, f.type, f.text_id, f.required) for f in c.fields] == [
        ("contact_id", "customerID", "bigint", True, True)
    ]
    assert sorted(c.ignore_columns) == sorted(HEADER[1:])  # every other column: known, not loaded
    assert c.on_new_column == "error" and c.on_missing_column == "error"
    with EXCERPT.open(encoding="utf-8") as fh:
        assert fh.readline().strip().split(",") == HEADER


def _ingest(data_dir: Path, monkeypatch: pytest.MonkeyPatch, export: Path):  # noqa: ANN202
    landing = data_dir / "landing"
    landing.mkdir()
    (landing / export.name).write_bytes(export.read_bytes())
    monkeypatch.setenv("CRMSHIELD_SOURCE_SPEC", str(SPEC))
    return ingest(Settings.from_env(data_dir))


def test_ingest_of_the_excerpt_loads_every_row(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    res = _ingest(data_dir, monkeypatch, EXCERPT)
    c = res.files["contacts"]
    assert (c.read, c.loaded, c.quarantined, c.duplicates, c.expired, c.erased) == (211, 211, 0, 0, 0, 0)
    assert c.read == c.loaded + c.quarantined + c.duplicates
    assert c.files[0].schema_drift == {} and c.files[0].warnings == []
    assert all(not res.files[e].delivered and res.files[e].raw_rows == 0 for e in ENTITIES if e != "contacts")
    raw = data_dir / "raw" / "contacts.parquet"
    n, ids, no_email, no_consent = duckdb.sql(
        f"SELECT count(*), count(DISTINCT contact_id), count(*) FILTER (WHERE email IS NULL),"
        f" count(*) FILTER (WHERE analytics_consent IS NULL) FROM '{raw}'"
    ).fetchone()
    assert (n, ids, no_email, no_consent) == (211, 211, 211, 211)  # stable numbers, nothing else delivered
    again = ingest(Settings.from_env(data_dir))
    assert again.files["contacts"].files[0].status == "already_ingested"  # exactly once


@pytest.mark.skipif(not FULL.is_file(), reason=f"the full Telco export is not here ({FULL}); CI has the excerpt only")
def test_ingest_of_the_full_export(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.perf_counter()
    res = _ingest(data_dir, monkeypatch, FULL)
    elapsed = time.perf_counter() - started
    c = res.files["contacts"]
    assert (c.read, c.loaded, c.quarantined, c.duplicates) == (7043, 7043, 0, 0)
    assert c.raw_rows == 7043
    assert elapsed < 30  # about 1.5 s here; generous for a loaded CI machine

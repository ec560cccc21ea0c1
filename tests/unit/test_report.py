"""The run manifest reconciles counts across stages and flags what does not add up."""

from __future__ import annotations

import json

from crmshield.config import Settings
from crmshield.report import write_run_report


def _stages(privacy_rows: int) -> dict:
    file = {
        "entity": "contacts", "file": "c.csv", "sha256": "ab" * 32, "bytes": 10, "read": 11, "loaded": 7, "expired": 1,
        "quarantined": 2, "duplicates": 1, "quarantine_reasons": {"date_of_birth:invalid_date": 2},
    }  # fmt: skip
    return {
        "ingest": {"run_id": "run-x", "input_fingerprint": "f" * 64, "files": {"contacts": file}, "seconds": 1},
        "privacy": {
            "method": "HMAC-SHA256",
            "key_version": 1,
            "key_source": "env",
            "reference_date": "2026-10-31",
            "redactions": {"email": 3},
            "entities": {
                "contacts": {
                    "rows_in": 7,
                    "rows_out": privacy_rows,
                    "excluded": {"excluded_consent": 2},
                    "columns": {"email": {"action": "drop", "why": "direct identifier"}},
                }
            },
        },  # fmt: skip
        "validate": {"passed": True, "success": True, "suites": [], "critical_failures": 0, "warnings": 0},
        "transform": {"mart_row_counts": {"customers": privacy_rows}, "counts": {"tests_passed": 5}},
        "publish": {
            "status": "published",
            "epsilon_spent": 2.0,
            "delta_spent": 0.0,
            "marts": [{"name": "m", "rows": 3, "epsilon": 2.0, "delta": 1e-6}],
        },  # fmt: skip
    }


def test_manifest_reconciles_and_report_renders(data_dir):
    settings = Settings.from_env(data_dir)
    path = write_run_report(settings, "run-x", _stages(privacy_rows=5))
    m = json.loads(path.read_text())
    assert m["status"] == "success" and m["reconciliation"]["contacts"]["ok"]
    assert m["rows"]["landing"]["contacts"] == 11 and m["rows"]["privacy"]["contacts"] == 5
    assert m["rows"]["expired"]["contacts"] == 1
    assert m["epsilon_spent"] == 2.0
    assert {"analyst_database", "run_report", "gx_data_docs", "privacy_zone", "warehouse"} <= set(m["artifacts"])
    html = (settings.run_dir("run-x") / "report.html").read_text()
    assert "date_of_birth:invalid_date" in html and "HMAC-SHA256" in html
    assert "tests_passed" in html, "dbt results are in the report"
    assert "http://" not in html and "https://" not in html, "the report is self-contained"
    assert (settings.runs / "LATEST").read_text().strip() == "run-x"


def test_rows_lost_between_stages_fail_reconciliation(data_dir):
    settings = Settings.from_env(data_dir)
    path = write_run_report(settings, "run-x", _stages(privacy_rows=4))  # 7 loaded != 4 + 2 excluded
    m = json.loads(path.read_text())
    assert m["status"] == "reconciliation_failed"
    assert not m["reconciliation"]["contacts"]["ok"]

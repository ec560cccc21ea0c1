"""Stage results for run-report tests: a successful run and runs that failed at a stage.

Shaped like the real ``reports/runs/<run_id>/<stage>.json`` files (counts, names, hashes and ε
only), plus a real privacy-budget ledger and an analyst database with a ``_dp_catalog``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from crmshield.config import Settings

RUN_OK = "run-00000000000000a1"
RUN_FAILED = "run-00000000000000b2"
#: An analyst's query text: it holds a literal and must never reach a report.
SECRET_QUERY = "SELECT count(*) FROM customers WHERE email = 'jane.roe@example.org'"


def _file(entity: str, name: str, read: int, loaded: int, quarantined: int, duplicates: int, **extra: Any) -> dict:
    return {
        "entity": entity, "file": name, "sha256": hashlib.sha256(name.encode()).hexdigest(),
        "bytes": 1000 + read, "read": read, "loaded": loaded, "quarantined": quarantined, "duplicates": duplicates,
        "expired": extra.get("expired", 0), "erased": extra.get("erased", 0),
        "quarantine_reasons": extra.get("reasons", {}), "reference_time": "2026-10-31T17:44:00",
    }  # fmt: skip


def ingest(run_id: str, fingerprint: str) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "input_fingerprint": fingerprint,
        "reference_date": "2026-10-31T17:44:00",
        "retention": {"tickets": {"column": "created_at", "days": 540, "cutoff": "2025-05-09T17:44:00"}},
        "erasure": {
            "suppression_entries": 3,
            "requests_processed": {
                "request_id": "abc",
                "identifier_kinds": ["email"],
                "references": ["TICKET-1"],
                "subject_identifiers": {"crm_ids": 1, "emails": 1, "phones": 1},
                "suppression_tokens_added": 3,
                "key_version": 1,
                "landing_records_removed": {"contacts": 1, "tickets": 2},
            },
        },  # fmt: skip
        "files": {
            "contacts": _file(
                "contacts",
                "hubspot_contacts.csv",
                2008,
                1994,
                5,
                8,
                erased=1,
                reasons={"date_of_birth:invalid_date": 4, "record:malformed_line": 1},
            ),
            "tickets": _file(
                "tickets",
                "zendesk_tickets.jsonl",
                3086,
                2964,
                3,
                0,
                expired=117,
                erased=2,
                reasons={"created_at:invalid_date": 2, "record:malformed_json": 1},
            ),
        },  # fmt: skip
        "status": "success",
        "seconds": 2.1,
    }


def _col(action: str, classification: str, output: str | None, purposes: list[str], why: str) -> dict:
    return {"action": action, "declared_action": action, "classification": classification, "output": output,
            "purposes": purposes, "why": why}  # fmt: skip


def privacy() -> dict[str, Any]:
    return {
        "status": "success",
        "method": "HMAC-SHA256, per-domain derived keys",
        "key_version": 2,
        "key_source": "file",
        "policy_file": "/srv/crmshield/config/privacy_policy.yml",
        "policy_version": 4,
        "policy_sha256": "5332b09f4118ce6e95bfed2e32a56c0f8a70c5bd32d0de504fae303f05eb91a4",
        "reference_date": "2026-10-31",
        "redacted_columns": ["subject", "description"],
        "redactions": {"email": 1017, "person": 2193, "phone": 940, "iban": 0},
        "k_anonymity": {
            "k": 5,
            "achieved_k": 6,
            "rows": 1767,
            "suppressed_rows": 12,
            "suppressed_share": 0.0068,
            "max_suppression": 0.05,
            "max_prosecutor_risk": 0.166667,
            "avg_prosecutor_risk": 0.027149,
            "equivalence_classes": 48,
            "levels": {"age_band": 0, "country": 0, "postal_prefix": 3},
            "quasi_identifiers": ["age_band", "postal_prefix", "country"],
            "class_size_histogram": {"1": 0, "2-4": 0, "5-9": 4, "10-19": 15, "20-49": 20, "50-99": 7, "100+": 2},
        },  # fmt: skip
        "entities": {
            "contacts": {
                "rows_in": 1994,
                "rows_out": 1767,
                "excluded": {"excluded_consent": 227},
                "unknown_columns": [],
                "columns": {
                    "email": _col("pseudonymize", "direct_identifier", "email_pk", ["linkage"], "links records"),
                    "first_name": _col("drop", "direct_identifier", None, [], "used only to redact tickets"),
                    "street": _col("drop", "direct_identifier", None, [], "no declared purpose"),
                    "date_of_birth": _col(
                        "generalize", "quasi_identifier", "age_band", ["segmentation"], "needed for segmentation"
                    ),
                    "country": _col("keep", "quasi_identifier", "country", ["segmentation"], "needed for segmentation"),
                },
            },
            "tickets": {
                "rows_in": 2964,
                "rows_out": 2650,
                "excluded": {"excluded_consent": 308, "excluded_unknown_contact": 6},
                "unknown_columns": ["legacy_flag"],
                "columns": {
                    "ticket_id": _col("pseudonymize", "attribute", "ticket_pk", ["support_analytics"], "linkage"),
                    "description": _col("redact", "free_text", "description", ["support_analytics"], "redacted"),
                    "created_at": _col("generalize", "attribute", "created_on", ["support_analytics"], "needed"),
                },
            },
        },  # fmt: skip
        "seconds": 31.2,
    }


def _suite(name: str, entity: str, n: int, failures: list[dict] | None = None, page: str | None = None) -> dict:
    failures = failures or []
    critical = any(f["severity"] == "critical" for f in failures)
    return {
        "suite_name": name, "entity": entity, "success": not failures, "evaluated_expectations": n,
        "successful_expectations": n - len(failures), "failed_expectations": len(failures), "failures": failures,
        "data_docs_page": page, "_critical": critical,
    }  # fmt: skip


def _failure(expectation: str, column: str | None, severity: str, check: str, unexpected: int, rows: int) -> dict:
    return {
        "expectation_type": expectation, "column": column, "severity": severity, "check": check,
        "unexpected_count": unexpected, "element_count": rows, "raised_exception": False, "detail": None,
    }  # fmt: skip


def _summary(run_id: str, checkpoint: str, suites: list[dict], settings: Settings) -> dict[str, Any]:
    for s in suites:
        s.pop("_critical", None)
    failures = [f for s in suites for f in s["failures"]]
    critical = sum(1 for f in failures if f["severity"] == "critical")
    return {
        "run_id": run_id, "checkpoint": checkpoint, "success": not failures, "passed": critical == 0,
        "critical_failures": critical, "warnings": len(failures) - critical,
        "data_docs_index": str(settings.data_docs / "index.html"),
        "result_format": {"result_format": "SUMMARY", "exclude_unexpected_values": True},
    }  # fmt: skip


def validate_raw(settings: Settings, run_id: str) -> dict[str, Any]:
    suites = [
        _suite("raw__contacts", "contacts", 30, [_failure("expect_column_values_to_match_regex", "email", "warning",
                                                          "email_format", 3, 1994)],
               page=f"validations/raw__contacts/{run_id}/20261202T103851Z/raw_zone-contacts.html"),
        _suite("raw__tickets", "tickets", 25,
               page=f"validations/raw__tickets/{run_id}/20261202T103851Z/raw_zone-tickets.html"),
    ]  # fmt: skip
    out = _summary(run_id, "raw_zone", suites, settings)
    return {**out, "suites": suites, "status": "success", "seconds": 3.2}


def validate_ok(settings: Settings, run_id: str) -> dict[str, Any]:
    suites = [
        _suite("privacy__contacts", "contacts", 36,
               page=f"validations/privacy__contacts/{run_id}/1/privacy_zone-contacts.html"),
        _suite("privacy__tickets", "tickets", 38,
               page=f"validations/privacy__tickets/{run_id}/1/privacy_zone-tickets.html"),
    ]  # fmt: skip
    return {
        **_summary(run_id, "privacy_zone", suites, settings),
        "suites": suites,
        "status": "success",
        "seconds": 40.1,
    }


def validate_failed(settings: Settings, run_id: str) -> dict[str, Any]:
    """What pipeline.failure_record writes for a ValidationFailed in the validate stage."""
    suites = [
        _suite("privacy__contacts", "contacts", 36, [
            _failure("expect_column_values_to_be_null", "email", "critical", "no_direct_identifiers", 17, 1767),
            _failure("expect_column_values_to_be_between", "age_band_rank", "warning", "age_band_range", 2, 1767),
        ], page=f"validations/privacy__contacts/{run_id}/1/privacy_zone-contacts.html"),
        _suite("privacy__tickets", "tickets", 38, [
            _failure("expect_column_values_to_not_match_regex", "description", "critical", "no_email_in_text", 5, 2650),
        ], page=f"validations/privacy__tickets/{run_id}/1/privacy_zone-tickets.html"),
    ]  # fmt: skip
    summary = _summary(run_id, "privacy_zone", suites, settings)
    return {
        **summary,
        "suites": suites,
        "status": "failed",
        "stage": "validate",
        "zone": "privacy",
        "error_type": "ValidationFailed",
        "error": "2 critical expectation(s) failed in the privacy zone:\n"
        "  - privacy__contacts: expect_column_values_to_be_null(email) [no_direct_identifiers] unexpected_count=17\n"
        "  - privacy__tickets: expect_column_values_to_not_match_regex(description) [no_email_in_text] "
        "unexpected_count=5",
        "seconds": 39.0,
    }


def transform() -> dict[str, Any]:
    def node(uid: str, rtype: str, status: str, failures: int | None = None) -> dict:
        return {"unique_id": uid, "resource_type": rtype, "status": status, "failures": failures,
                "message": "OK", "execution_time": 0.05}  # fmt: skip

    return {
        "status": "success", "command": "build", "success": True, "dbt_version": "1.11.16",
        "counts": {"models_passed": 7, "models_failed": 0, "tests_passed": 79, "tests_failed": 0, "tests_warned": 1,
                   "unit_tests_passed": 4, "unit_tests_failed": 0},
        "mart_row_counts": {"customers": 1767, "tickets": 2650},
        "nodes": [
            node("model.crmshield.customers", "model", "success"),
            node("test.crmshield.not_null_customers_contact_pk.1a2b", "test", "pass", 0),
            node("test.crmshield.relationships_tickets_contact_pk__contact_pk__ref_customers_.985240658c", "test",
                 "warn", 12),
            node("unit_test.crmshield.customers.test_age_band", "unit_test", "pass"),
        ],
        "seconds": 9.2,
    }  # fmt: skip


def publish(settings: Settings, run_id: str, fingerprint: str, period: tuple[datetime, datetime]) -> dict[str, Any]:
    start, end = period
    return {
        "status": "published", "run_id": run_id, "input_fingerprint": fingerprint, "published_run_id": run_id,
        "analyst_db": str(settings.published), "epsilon_spent": 2.5, "delta_spent": 2e-6,
        "marts": [
            {"name": "customers_by_lifecycle_segment", "rows": 352, "epsilon": 1.0, "delta": 1e-6,
             "median_relative_ci_width": 0.31},
            {"name": "resolution_hours_by_priority", "rows": 4, "epsilon": 1.5, "delta": 1e-6,
             "median_relative_ci_width": 0.47},
        ],
        "budget": {"population": {
            "scope": "population", "name": "crm_customers", "period": "month",
            "period_start": start.isoformat(), "period_end": end.isoformat(), "refreshes_at": end.isoformat(),
            "cap_epsilon": 30.0, "cap_delta": 1e-4, "spent_epsilon": 8.0, "spent_delta": 4e-6,
            "remaining_epsilon": 22.0, "remaining_delta": 9.6e-5,
        }},
        "validation": {
            **_summary(run_id, "published_marts", [], settings),
            "suites": [_suite("published__marts", "published", 14,
                              page=f"validations/published__marts/{run_id}/1/published_marts-marts.html")],
        },
        "seconds": 2.3,
    }  # fmt: skip


def current_period(now: datetime | None = None) -> tuple[datetime, datetime]:
    from crmshield.budget import period_bounds

    return period_bounds("month", now or datetime.now(UTC))


def success_stages(settings: Settings, run_id: str = RUN_OK) -> dict[str, Any]:
    fp = "a1" * 32
    stages = {
        "ingest": ingest(run_id, fp),
        "validate_raw": validate_raw(settings, run_id),
        "privacy": privacy(),
        "validate": validate_ok(settings, run_id),
        "transform": transform(),
        "publish": publish(settings, run_id, fp, current_period()),
    }
    for s in stages["publish"]["validation"]["suites"]:
        s.pop("_critical", None)
    return copy.deepcopy(stages)


def failed_stages(settings: Settings, run_id: str = RUN_FAILED) -> dict[str, Any]:
    """Failed at validate: the privacy zone leaked direct identifiers; transform and publish never ran."""
    return copy.deepcopy(
        {
            "ingest": ingest(run_id, "b2" * 32),
            "validate_raw": validate_raw(settings, run_id),
            "privacy": privacy(),
            "validate": validate_failed(settings, run_id),
        }
    )


def seed_ledger(settings: Settings, run_id: str = RUN_OK) -> None:
    """Charges in the current month: an earlier publication, an analyst query, and this run's publication."""
    from crmshield.budget import Charge, Ledger

    start, _ = current_period()
    now = datetime.now(UTC)
    span = max(now - start, timedelta(seconds=4))
    times = [start + span * 0.2, start + span * 0.5, now - min(span * 0.1, timedelta(minutes=5))]

    class Clock:
        at = times[0]

        def __call__(self) -> datetime:
            return self.at

    clock = Clock()
    ledger = Ledger.open(settings, clock=clock)
    earlier = ledger.reserve(
        principal="pipeline", kind="publication", run_id="run-earlier",
        charges=[Charge("customers_by_lifecycle_segment", 1.0, 1e-6), Charge("satisfaction_by_channel", 1.0, 1e-6)],
    )  # fmt: skip
    ledger.commit(earlier)
    clock.at = times[1]
    q = ledger.reserve(principal="alice", kind="query", analyst="alice", charges=[Charge(SECRET_QUERY, 0.5, 0.0)])
    ledger.commit(q)
    clock.at = times[2]
    mine = ledger.reserve(
        principal="pipeline", kind="publication", run_id=run_id,
        charges=[Charge("customers_by_lifecycle_segment", 1.0, 1e-6),
                 Charge("resolution_hours_by_priority", 1.5, 1e-6)],
    )  # fmt: skip
    ledger.commit(mine)


def seed_analyst_db(settings: Settings, run_id: str, fingerprint: str) -> None:
    """An analyst database whose ``_dp_catalog`` says *run_id* is live."""
    import duckdb

    from crmshield.publish import CATALOG_TABLE

    settings.published.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(settings.published)) as con:
        con.execute(
            f"CREATE TABLE {CATALOG_TABLE} (mart VARCHAR, epsilon DOUBLE, delta DOUBLE, published_at TIMESTAMP,"
            " run_id VARCHAR, input_fingerprint VARCHAR, row_count BIGINT)"
        )
        for mart in ("customers_by_lifecycle_segment", "resolution_hours_by_priority"):
            con.execute(
                f"INSERT INTO {CATALOG_TABLE} VALUES (?, 1.0, 1e-6, TIMESTAMP '2026-11-30 08:00:00', ?, ?, 10)",
                [mart, run_id, fingerprint],
            )


def seed_data_docs(settings: Settings, stages: dict[str, Any]) -> None:
    """Data Docs pages for the suites that name one (so the report can link them)."""
    gates = [stages.get("validate_raw"), stages.get("validate"), (stages.get("publish") or {}).get("validation")]
    for gate in gates:
        for s in (gate or {}).get("suites", []):
            if s.get("data_docs_page"):
                page = settings.data_docs / s["data_docs_page"]
                page.parent.mkdir(parents=True, exist_ok=True)
                page.write_text("<html><body>suite</body></html>", encoding="utf-8")
    (settings.data_docs / "index.html").parent.mkdir(parents=True, exist_ok=True)
    (settings.data_docs / "index.html").write_text("<html></html>", encoding="utf-8")


def write_stage_files(settings: Settings, run_id: str, stages: dict[str, Any]) -> None:
    run_dir = settings.run_dir(run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, result in stages.items():
        (run_dir / f"{name}.json").write_text(json.dumps(result, indent=2), encoding="utf-8")


def build_both(settings: Settings) -> tuple[Path, Path]:
    """A successful run and (later) a failed one, with ledger, analyst DB and Data Docs; returns both manifests."""
    from crmshield.report import write_run_report

    ok, failed = success_stages(settings), failed_stages(settings)
    seed_data_docs(settings, ok)
    seed_data_docs(settings, failed)
    seed_ledger(settings, RUN_OK)
    seed_analyst_db(settings, RUN_OK, ok["ingest"]["input_fingerprint"])
    ok_manifest = write_run_report(settings, RUN_OK, ok)
    failed_manifest = write_run_report(settings, RUN_FAILED, failed)
    return ok_manifest, failed_manifest

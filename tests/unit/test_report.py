"""The run manifest and HTML report: reconciliation, the compliance sections, failed runs, the run index,
offline-only HTML and no data value anywhere."""

from __future__ import annotations

import json
import os
import re
import sqlite3
from contextlib import closing
from pathlib import Path

import jinja2
import pytest
from report_fixtures import (
    RUN_FAILED,
    RUN_OK,
    SECRET_QUERY,
    build_both,
    failed_stages,
    seed_analyst_db,
    seed_ledger,
    success_stages,
)

from crmshield.config import Settings
from crmshield.report import (
    budget_svg,
    build_manifest,
    histogram_svg,
    render_report,
    write_run_index,
    write_run_report,
)


def _stages(privacy_rows: int) -> dict:
    file = {
        "entity": "contacts", "file": "c.csv", "sha256": "ab" * 32, "bytes": 10, "read": 11, "loaded": 7, "expired": 1,
        "quarantined": 2, "duplicates": 1, "quarantine_reasons": {"date_of_birth:invalid_date": 2},
    }  # fmt: skip
    return {
        "ingest": {"run_id": "run-x", "input_fingerprint": "f" * 64, "files": {"contacts": file}, "seconds": 1},
        "validate_raw": {"passed": True, "success": True, "suites": [], "critical_failures": 0, "warnings": 0},
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


def _html(settings: Settings, run_id: str) -> str:
    return (settings.run_dir(run_id) / "report.html").read_text(encoding="utf-8")


def _text(html: str) -> str:
    """Visible text, whitespace collapsed (for phrases that span template lines)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html))


def test_manifest_reconciles_and_report_renders(data_dir):
    settings = Settings.from_env(data_dir)
    path = write_run_report(settings, "run-x", _stages(privacy_rows=5))
    m = json.loads(path.read_text())
    assert m["status"] == "success" and m["failure"] is None and m["reconciliation"]["contacts"]["ok"]
    assert m["rows"]["landing"]["contacts"] == 11 and m["rows"]["privacy"]["contacts"] == 5
    assert m["rows"]["expired"]["contacts"] == 1
    assert m["epsilon_spent"] == 2.0
    assert {"analyst_database", "run_report", "gx_data_docs", "privacy_zone", "warehouse", "run_index"} <= set(
        m["artifacts"]
    )
    html = _html(settings, "run-x")
    assert "date_of_birth:invalid_date" in html and "HMAC-SHA256" in html
    assert "tests passed" in html, "dbt results are in the report"
    assert "http://" not in html and "https://" not in html, "the report is self-contained"
    assert (settings.runs / "LATEST").read_text().strip() == "run-x"
    assert (settings.runs / "index.html").is_file(), "the run index is rebuilt with every report"


def test_rows_lost_between_stages_fail_reconciliation(data_dir):
    settings = Settings.from_env(data_dir)
    path = write_run_report(settings, "run-x", _stages(privacy_rows=4))  # 7 loaded != 4 + 2 excluded
    m = json.loads(path.read_text())
    assert m["status"] == "reconciliation_failed"
    assert not m["reconciliation"]["contacts"]["ok"]


def test_compliance_sections_of_a_successful_run(data_dir):
    settings = Settings.from_env(data_dir)
    ok_path, _ = build_both(settings)
    m = json.loads(ok_path.read_text())
    assert m["status"] == "success" and m["stage_order"][0] == "ingest"
    assert m["stage_status"]["publish"] == "published" and m["stage_status"]["validate_raw"] == "success"
    # what came in
    assert [i["file"] for i in m["inputs"]] == ["hubspot_contacts.csv", "zendesk_tickets.jsonl"]
    assert all(len(i["sha256"]) == 64 for i in m["inputs"]) and m["inputs"][0]["rows_read"] == 2008
    # dropped and why; pseudonymized and how; generalized; redactions
    contacts = m["minimization"]["contacts"]
    assert contacts["by_action"] == {"drop": 2, "pseudonymize": 1, "generalize": 1, "keep": 1}
    first = contacts["columns"][0]
    assert first["action"] == "drop" and first["why"] and first["purposes"] == []
    assert m["pseudonymization"]["key_version"] == 2 and "HMAC" in m["pseudonymization"]["method"]
    assert {"entity": "contacts", "column": "email", "output": "email_pk", "purposes": ["linkage"]} in m[
        "pseudonymization"
    ]["columns"]
    assert {(g["column"], g["output"]) for g in m["generalization"]} == {
        ("date_of_birth", "age_band"),
        ("created_at", "created_on"),
    }
    assert m["redactions"]["by_type"]["person"] == 2193 and m["redactions"]["columns"] == ["subject", "description"]
    # erasure and consent: counts only
    rights = m["privacy_rights"]
    assert rights["erasure_requests_processed"] == 1 and rights["suppression_tokens_added"] == 3
    assert rights["erased_rows"] == {"contacts": 1, "tickets": 2}
    assert rights["consent_withdrawals_applied"] == {"contacts": 227, "tickets": 308}
    assert "TICKET-1" not in json.dumps(m["privacy_rights"])
    # every validation suite, with links into Data Docs relative to the report
    gates = {g["stage"]: g for g in m["validation"]}
    assert [g["stage"] for g in m["validation"]] == ["validate_raw", "validate", "publish"]
    assert all(g["status"] == "passed" for g in gates.values())
    run_dir = settings.run_dir(RUN_OK)
    for g in gates.values():
        for s in g["suites"]:
            assert s["data_docs_href"] and not os.path.isabs(s["data_docs_href"])
            assert (run_dir / s["data_docs_href"]).resolve() == (settings.data_docs / s["data_docs_page"]).resolve()
    warning = gates["validate_raw"]["suites"][0]["failures"][0]
    assert warning["severity"] == "warning" and warning["unexpected_count"] == 3
    # the warehouse suite: dbt's tests and contracts, every non-passing one listed
    wt = m["warehouse_tests"]
    assert wt["status"] == "passed" and wt["counts"]["tests_passed"] == 79
    assert [(n["status"], n["failures"]) for n in wt["non_passing"]] == [("warn", 12)]
    # published, live catalog and budget history
    pub = m["publication"]
    assert pub["published_by_this_run"] and pub["live"]["run_id"] == RUN_OK and pub["live"]["marts"] == 2
    bh = pub["budget_history"]
    assert bh["available"] and bh["cap_epsilon"] == 30.0 and len(bh["points"]) == 5
    assert [p["cumulative_epsilon"] for p in bh["points"]] == pytest.approx([1.0, 2.0, 2.5, 3.5, 5.0])
    assert [p["this_run"] for p in bh["points"]] == [False, False, False, True, True]
    assert bh["spent_epsilon"] == pytest.approx(5.0) and bh["remaining_epsilon"] == pytest.approx(25.0)
    assert bh["this_run_epsilon"] == pytest.approx(2.5)

    html = _html(settings, RUN_OK)
    text = _text(html)
    for heading in (
        "What came in",
        "Minimization",
        "Pseudonymization",
        "Generalization and free-text redaction",
        "k-anonymity and re-identification risk",
        "Validation suites",
        "Warehouse — dbt's own tests, unit tests and contracts",
        "What was published",
        "Privacy budget over time",
        "Erasure requests and consent withdrawals",
    ):
        assert heading in text, heading
    assert 'id="failure"' not in html
    assert "used only to redact tickets" in text and "email_pk" in text
    assert html.count("<svg") == 2, "histogram and budget chart are inline SVG"
    assert "relationships_tickets_contact_pk__contact_pk__ref_customers_" in html
    assert "validations/privacy__contacts/" in html


def test_failed_run_report_has_banner_and_not_run_sections(data_dir):
    settings = Settings.from_env(data_dir)
    _, failed_path = build_both(settings)
    m = json.loads(failed_path.read_text())
    assert m["status"] == "failed"
    f = m["failure"]
    assert (f["stage"], f["zone"], f["error_type"]) == ("validate", "privacy", "ValidationFailed")
    assert f["critical_failures"] == 2 and f["warnings"] == 1
    assert f["failed_expectations"][0] == {
        "suite": "privacy__contacts",
        "expectation_type": "expect_column_values_to_be_null",
        "column": "email",
        "check": "no_direct_identifiers",
        "severity": "critical",
        "unexpected_count": 17,
        "element_count": 1767,
    }
    assert [e["severity"] for e in f["failed_expectations"]] == ["critical", "critical", "warning"]
    assert m["stage_status"] == {
        "ingest": "success",
        "validate_raw": "success",
        "privacy": "success",
        "validate": "failed",
        "transform": "not run",
        "publish": "not run",
    }
    gates = {g["stage"]: g for g in m["validation"]}
    assert gates["validate"]["status"] == "failed" and gates["publish"]["status"] == "not run"
    assert m["warehouse_tests"]["status"] == "not run"
    pub = m["publication"]
    assert pub["status"] == "not run" and not pub["published_by_this_run"] and pub["marts"] == []
    assert pub["live"]["run_id"] == RUN_OK, "the previously published marts are still the live ones"
    assert m["epsilon_spent"] == 0.0
    assert pub["budget_history"]["available"], "the budget chart is there for a failed run too"

    html = _html(settings, RUN_FAILED)
    text = _text(html)
    assert 'id="failure"' in html
    assert "Run FAILED at stage validate — privacy zone" in text
    assert "nothing was published by this run" in text and RUN_OK in text
    assert "no_direct_identifiers" in text and "17" in text and "1767" in text
    assert "Not run: stage transform did not run (the run failed at validate)" in text
    assert "k-anonymity and re-identification risk" in text and "Equivalence-class sizes" in text


def test_failure_in_a_non_validation_stage(data_dir):
    settings = Settings.from_env(data_dir)
    stages = failed_stages(settings, "run-p")
    stages["privacy"] = {
        "status": "failed",
        "stage": "privacy",
        "zone": None,
        "error_type": "PrivacyJobFailed",
        "error": "spark-submit exited with status 1 (log: /x/privacy_job.log)",
        "seconds": 3.0,
    }
    del stages["validate"]
    m = build_manifest(settings, "run-p", stages)
    assert m["status"] == "failed"
    assert m["failure"]["stage"] == "privacy" and m["failure"]["zone"] is None
    assert m["failure"]["failed_expectations"] == [] and "spark-submit" in m["failure"]["error"]
    assert m["minimization"] == {} and m["k_anonymity"] is None and m["rows"]["privacy"] == {}
    assert m["reconciliation"]["contacts"]["ok"] and not m["reconciliation"]["contacts"]["privacy_checked"]
    assert m["privacy_rights"]["privacy_ran"] is False
    text = _text(render_report(m, undefined=jinja2.StrictUndefined))
    assert "Run FAILED at stage privacy" in text
    assert "Not run: stage privacy failed" in text


def test_failure_at_the_publish_gate(data_dir):
    settings = Settings.from_env(data_dir)
    stages = success_stages(settings, "run-q")
    gate = stages["publish"]["validation"]
    gate["suites"][0]["failures"] = [
        {"expectation_type": "expect_column_values_to_be_between", "column": "tickets", "severity": "critical",
         "check": "ci_contains_estimate", "unexpected_count": 4, "element_count": 720},
    ]  # fmt: skip
    gate["suites"][0]["success"] = False
    stages["publish"] = {
        **{k: v for k, v in gate.items()},
        "status": "failed",
        "stage": "publish",
        "zone": "published marts",
        "error_type": "ValidationFailed",
        "error": "1 critical expectation(s) failed in the marts about to be published",
        "seconds": 1.0,
    }
    seed_analyst_db(settings, "run-earlier", "c3" * 32)
    m = build_manifest(settings, "run-q", stages)
    assert m["status"] == "failed" and m["failure"]["zone"] == "published marts"
    assert m["failure"]["failed_expectations"][0]["check"] == "ci_contains_estimate"
    gates = {g["stage"]: g for g in m["validation"]}
    assert gates["publish"]["status"] == "failed" and gates["publish"]["suites"][0]["success"] is False
    assert m["publication"]["status"] == "failed" and m["publication"]["marts"] == []
    assert m["publication"]["live"]["run_id"] == "run-earlier"
    assert "left as they were" in m["publication"]["note"]
    render_report(m, undefined=jinja2.StrictUndefined)


@pytest.mark.parametrize("kind", ["success", "failed", "bare"])
def test_template_reads_only_what_the_manifest_always_has(data_dir, kind):
    """Rendered with StrictUndefined: the template never touches a key that may be missing."""
    settings = Settings.from_env(data_dir)
    if kind == "success":
        stages = success_stages(settings)
    elif kind == "failed":
        stages = failed_stages(settings)
    else:  # the least a report can be built from: an ingest result, nothing else
        stages = {"ingest": {"input_fingerprint": "0" * 64, "files": {}}}
    m = build_manifest(settings, "run-s", stages)
    html = render_report(m, undefined=jinja2.StrictUndefined)
    assert "</html>" in html
    if kind == "bare":
        assert m["status"] == "incomplete" and "no privacy-budget ledger file" in _text(html)


def test_manifest_needs_the_ingest_result(data_dir):
    with pytest.raises(ValueError, match="ingest"):
        build_manifest(Settings.from_env(data_dir), "run-x", {"ingest": None})


def test_report_and_index_are_offline_only(data_dir):
    """No external asset: no http(s) URL in any src, href, url(), @import; no script or stylesheet link."""
    settings = Settings.from_env(data_dir)
    build_both(settings)
    pages = [_html(settings, RUN_OK), _html(settings, RUN_FAILED), (settings.runs / "index.html").read_text()]
    attr = re.compile(r"""\b(?:src|href|xlink:href|srcset|action|poster|data)\s*=\s*["']?\s*([^"'\s>]+)""", re.I)
    for html in pages:
        for target in attr.findall(html):
            assert not re.match(r"(?i)(https?:)?//", target), f"external reference {target}"
            assert not target.lower().startswith(("javascript:", "data:")), target
        assert not re.search(r"(?i)url\(\s*['\"]?\s*(https?:)?//", html)
        assert not re.search(r"(?i)@import", html)
        assert "<script" not in html.lower() and "<link" not in html.lower() and "<iframe" not in html.lower()
        assert "http://" not in html and "https://" not in html
    # every local link resolves to a file next to (or under) the reports
    ok_dir = settings.run_dir(RUN_OK)
    for target in attr.findall(pages[0]):
        assert (ok_dir / target).resolve().is_file(), target


def test_no_data_value_reaches_manifest_or_report(data_dir):
    settings = Settings.from_env(data_dir)
    build_both(settings)
    for run_id in (RUN_OK, RUN_FAILED):
        for name in ("manifest.json", "report.html"):
            body = (settings.run_dir(run_id) / name).read_text()
            assert SECRET_QUERY not in body and "jane.roe@example.org" not in body, "analyst query text is never copied"
    m = json.loads((settings.run_dir(RUN_OK) / "manifest.json").read_text())
    kinds = {p["kind"]: p["what"] for p in m["publication"]["budget_history"]["points"]}
    assert kinds["query"] is None and kinds["publication"]


def test_ledger_is_read_without_being_touched(data_dir):
    settings = Settings.from_env(data_dir)
    seed_ledger(settings)
    ledger = settings.dp_ledger
    before = (ledger.stat().st_mtime_ns, ledger.read_bytes(), sorted(p.name for p in ledger.parent.iterdir()))
    m = build_manifest(settings, RUN_OK, success_stages(settings))
    assert len(m["publication"]["budget_history"]["points"]) == 5
    after = (ledger.stat().st_mtime_ns, ledger.read_bytes(), sorted(p.name for p in ledger.parent.iterdir()))
    assert after == before, "no write and no -wal/-shm side file left by the report"
    # with a writer's WAL present (another process has it open), the report still reads it
    with closing(sqlite3.connect(ledger)) as other:
        other.execute("PRAGMA journal_mode = WAL")
        other.execute("UPDATE ledger SET reason = reason")
        other.commit()  # the -wal file stays while this connection is open
        assert ledger.with_name(ledger.name + "-wal").exists()
        m = build_manifest(settings, RUN_OK, success_stages(settings))
        assert len(m["publication"]["budget_history"]["points"]) == 5


def test_no_ledger_says_so(data_dir):
    settings = Settings.from_env(data_dir)
    m = build_manifest(settings, RUN_OK, success_stages(settings))
    bh = m["publication"]["budget_history"]
    assert not bh["available"] and "no privacy-budget ledger file" in bh["note"]
    assert not settings.dp_ledger.exists(), "reading the ledger never creates it"
    assert m["publication"]["live"] is None and not m["publication"]["exists"]
    assert "No budget chart: no privacy-budget ledger file" in _text(render_report(m))


def test_histogram_svg_marks_classes_below_k():
    svg = histogram_svg({"1": 2, "2-4": 1, "5-9": 4, "100+": 9}, 5)
    assert svg.startswith("<svg") and svg.count("<rect") == 4
    assert svg.count('fill="#d92d20"') == 2, "bins 1 and 2-4 are below k=5"
    assert histogram_svg({}, 5) == ""


def test_budget_svg_plots_each_counted_charge():
    history = {
        "available": True,
        "period_start": "2026-12-01T00:00:00+00:00",
        "period_end": "2027-01-01T00:00:00+00:00",
        "cap_epsilon": 30.0,
        "spent_epsilon": 3.0,
        "as_of": "2026-12-20T00:00:00+00:00",
        "points": [
            {"at": "2026-12-02T10:00:00.000000+00:00", "epsilon": 1.0, "cumulative_epsilon": 1.0, "kind": "publication",
             "status": "spent", "this_run": False},
            {"at": "2026-12-10T10:00:00.000000+00:00", "epsilon": 2.0, "cumulative_epsilon": 3.0, "kind": "query",
             "status": "spent", "this_run": True},
        ],
    }  # fmt: skip
    svg = budget_svg(history)
    assert svg.count("<circle") == 2 + 3, "two charges plus the legend's three markers"
    assert "cap ε=30" in svg and "2026-12-01" in svg and "2027-01-01" in svg
    assert budget_svg({"available": False}) == ""


def test_index_lists_runs_newest_first(data_dir):
    settings = Settings.from_env(data_dir)
    build_both(settings)
    (settings.runs / "run-nomanifest").mkdir()
    path = write_run_index(settings, undefined=jinja2.StrictUndefined)
    html = path.read_text()
    assert html.index(RUN_FAILED) < html.index(RUN_OK), "newest first"
    assert "run-nomanifest" not in html
    assert f'href="{RUN_OK}/report.html"' in html and f'href="{RUN_FAILED}/report.html"' in html
    text = _text(html)
    assert "validate (privacy zone)" in text and "b2b2b2b2b2b2…" in text and "published" in text
    assert 'class="badge failed"' in html and 'class="badge success"' in html


def test_report_links_resolve_from_the_run_directory(data_dir):
    settings = Settings.from_env(data_dir)
    build_both(settings)
    html = _html(settings, RUN_OK)
    hrefs = re.findall(r'href="([^"]+)"', html)
    assert "../index.html" in hrefs
    for href in hrefs:
        assert (settings.run_dir(RUN_OK) / href).resolve().is_file(), href
    assert Path(settings.run_dir(RUN_OK) / "../index.html").resolve() == (settings.runs / "index.html").resolve()


@pytest.mark.parametrize("with_nodes", [True, False])
def test_failure_in_the_warehouse_suite(data_dir, with_nodes):
    """dbt failed: its failing tests and contracts are named (when recorded), publish did not run."""
    settings = Settings.from_env(data_dir)
    stages = success_stages(settings, "run-t")
    del stages["publish"]
    record = {
        "status": "failed",
        "stage": "transform",
        "zone": None,
        "error_type": "TransformError",
        "error": "dbt build failed: 1 test(s) failed",
        "seconds": 5.0,
    }
    if with_nodes:
        record["nodes"] = [
            {"unique_id": "test.crmshield.unique_customers_contact_pk.ab12", "resource_type": "test",
             "status": "fail", "failures": 3, "message": "Got 3 results"},
            {"unique_id": "model.crmshield.customers", "resource_type": "model", "status": "success"},
        ]  # fmt: skip
    stages["transform"] = record
    m = build_manifest(settings, "run-t", stages)
    assert m["status"] == "failed" and m["failure"]["stage"] == "transform"
    assert m["warehouse_tests"]["status"] == "failed" and m["publication"]["status"] == "not run"
    failed = m["failure"]["failed_tests"]
    assert failed == (
        [{"name": "unique_customers_contact_pk", "unique_id": "test.crmshield.unique_customers_contact_pk.ab12",
          "resource_type": "test", "status": "fail", "failures": 3}] if with_nodes else []
    )  # fmt: skip
    text = _text(render_report(m, undefined=jinja2.StrictUndefined))
    assert "Run FAILED at stage transform" in text
    assert ("unique_customers_contact_pk" in text) is with_nodes
    assert "Got 3 results" not in text, "dbt messages are not copied"
    if not with_nodes:
        assert "No dbt results recorded: dbt failed, see the failure above" in text


def test_skipped_publication_spends_nothing(data_dir):
    settings = Settings.from_env(data_dir)
    stages = success_stages(settings, "run-u")
    stages["publish"] = {"status": "skipped", "published_run_id": RUN_OK, "epsilon_spent": 0.0, "marts": [],
                         "analyst_db": str(settings.published), "seconds": 0.1}  # fmt: skip
    seed_analyst_db(settings, RUN_OK, "a1" * 32)
    m = build_manifest(settings, "run-u", stages)
    assert m["status"] == "success" and m["stage_status"]["publish"] == "skipped"
    assert m["epsilon_spent"] == 0.0 and m["publication"]["live"]["run_id"] == RUN_OK
    assert {g["stage"]: g["status"] for g in m["validation"]}["publish"] == "skipped"
    text = _text(render_report(m, undefined=jinja2.StrictUndefined))
    assert "same input already published" in text

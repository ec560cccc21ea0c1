"""One real end-to-end run of the Airflow DAG on a small generated sample.

It runs `airflow db migrate` and `airflow dags test crm_privacy_pipeline` in a
throw-away Airflow home, exactly as `make demo` does, then checks what a user
would: the marts exist, the counts reconcile, and no email, phone number or
full name from the landing exports is found anywhere downstream of the raw
zone (Parquet and DuckDB files are decoded, not grepped).
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import duckdb
import pytest
from pii_scan import decoded_text

from crmshield.cli import run_dag
from crmshield.config import Settings
from crmshield.generate import CONTACT_HEADER, FILES, generate
from crmshield.ingest import landing_fingerprint
from crmshield.keys import ENV_FILE, ENV_KEY, ensure_key_file
from crmshield.pipeline import RunFailed, config_digest, read_stage, run_all

pytestmark = pytest.mark.e2e

CANARY = {
    "email": "zz.canary.7731@canary-mail.example",
    "phone": "+44 7700 900731",
    "phone_e164": "+447700900731",
    "first": "Quintessa",
    "last": "Vandermolen",
}
#: A second canary whose row is quarantined (impossible date of birth): its values stay in the
#: restricted quarantine area and must not surface in a reason, a log, a report or Data Docs.
QUARANTINED_CANARY = {
    "email": "qq.canary.5517@quarantine-mail.example",
    "phone": "+44 7700 900517",
    "phone_e164": "+447700900517",
    "first": "Ottoline",
    "last": "Brackenridge",
}


def _add_canary(landing: Path) -> None:
    """A consenting contact whose PII is unique in the world, and a ticket quoting it."""
    row = dict.fromkeys(CONTACT_HEADER, "")
    row.update({
        "Record ID": "1999999", "First Name": CANARY["first"], "Last Name": CANARY["last"],
        "Email": CANARY["email"], "Phone Number": CANARY["phone"], "Date of Birth": "1980-02-29",
        "Street Address": "7 Canary Wharf Lane", "City": "London", "Postal Code": "E14 5AB",
        "Country/Region": "United Kingdom", "Lifecycle Stage": "Customer",
        "Create Date": "2025-01-02 10:00", "Last Modified Date": "2025-06-01 10:00",
        "Marketing Consent": "true", "Analytics Consent": "true",
    })  # fmt: skip
    bad = dict(row)
    bad.update({
        "Record ID": "1999998", "First Name": QUARANTINED_CANARY["first"], "Last Name": QUARANTINED_CANARY["last"],
        "Email": QUARANTINED_CANARY["email"], "Phone Number": QUARANTINED_CANARY["phone"],
        "Date of Birth": "1980-02-30",
    })  # fmt: skip
    with (landing / FILES["contacts"]).open("a", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\r\n")
        writer.writerow([row[h] for h in CONTACT_HEADER])
        writer.writerow([bad[h] for h in CONTACT_HEADER])
    ticket = {
        "id": 9999999, "requester_id": 1999999,
        "subject": f"Refund for {CANARY['first']} {CANARY['last']}",
        "description": f"Hi, {CANARY['first']} here. Call {CANARY['phone']} or write to {CANARY['email']}.",
        "via": {"channel": "email"}, "priority": "high", "status": "solved",
        "created_at": "2025-03-01T10:00:00Z", "updated_at": "2025-03-02T10:00:00Z",
        "solved_at": "2025-03-02T10:00:00Z", "satisfaction_rating": {"score": "good"},
    }  # fmt: skip
    with (landing / FILES["tickets"]).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(ticket) + "\n")


def _landing_pii(landing: Path) -> set[str]:
    with (landing / FILES["contacts"]).open(encoding="utf-8", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("Email") and r.get("Phone Number")]
    pii: set[str] = set()
    for r in rows:
        pii.update({r["Email"], r["Email"].lower(), r["Phone Number"], f"{r['First Name']} {r['Last Name']}"})
    return {p for p in pii if len(p) >= 6}


def _downstream_text(settings: Settings, airflow_home: Path) -> dict[str, str]:
    """Every file of zones 3-6 (and the logs), decoded to text (Airflow's SQLite metadata skipped)."""
    roots = [settings.privacy, settings.warehouse.parent, settings.published.parent, settings.reports, airflow_home]
    return decoded_text(roots)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e")
    mp = pytest.MonkeyPatch()
    data = base / "data"
    airflow_home = base / "airflow"
    mp.setenv("CRMSHIELD_DATA_DIR", str(data))
    mp.setenv("CRMSHIELD_AIRFLOW_HOME", str(airflow_home))
    mp.delenv(ENV_KEY, raising=False)
    mp.setenv(ENV_FILE, str(ensure_key_file(base / "secrets" / "key.json")))
    settings = Settings.from_env()
    generate(settings.landing, contacts=1000, seed=11)
    _add_canary(settings.landing)
    fp, _ = landing_fingerprint(settings.landing, config_digest(settings))
    manifest_path = run_dag(settings, f"run-{fp[:16]}", show_progress=False)
    yield settings, airflow_home, manifest_path
    mp.undo()


def test_marts_are_published_with_their_budget(run):
    settings, _, manifest_path = run
    m = json.loads(manifest_path.read_text())
    with duckdb.connect(str(settings.published), read_only=True) as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        catalog = con.execute("SELECT mart, epsilon, delta, privacy_unit FROM _dp_catalog ORDER BY mart").fetchall()
        assert catalog, "the catalog lists the published marts"
        for mart, eps, delta, unit in catalog:
            assert mart in tables and eps > 0 and 0 <= delta < 1e-3 and unit == "contact_pk"
        # every mart groups by public keys only: each declared cell is published, with its interval
        assert con.execute("SELECT count(*) FROM resolution_hours_by_priority").fetchone()[0] == 4
        assert con.execute("SELECT count(*) FROM tickets_by_month_channel_priority").fetchone()[0] == 36 * 5 * 4
        docs = con.execute("SELECT count(*) FROM dp_docs WHERE role = 'ci_low'").fetchone()[0]
        assert docs > 0
    assert {
        "tickets_by_month_channel_priority",
        "resolution_hours_by_priority",
        "deal_value_by_stage_region",
        "satisfaction_by_channel",
        "customers_by_lifecycle_segment",
    } <= tables
    assert m["stages"]["publish"]["budget"]["population"]["spent_epsilon"] == pytest.approx(m["epsilon_spent"])
    assert m["epsilon_spent"] == pytest.approx(sum(r[1] for r in catalog))
    report = Path(m["artifacts"]["run_report"]).read_text(encoding="utf-8")
    assert "published__marts" in report and "median 95% CI width / value" in report
    assert m["stages"]["publish"]["validation"]["passed"] is True
    assert all(mart["median_relative_ci_width"] > 0 for mart in m["marts"])
    assert Path(m["artifacts"]["analyst_database"]) == settings.published


def test_counts_reconcile_across_stages(run):
    settings, _, manifest_path = run
    m = json.loads(manifest_path.read_text())
    assert m["status"] == "success"
    ka = m["k_anonymity"]
    assert ka["achieved_k"] >= ka["k"] == 5 and ka["suppressed_share"] <= 0.05
    smallest = duckdb.sql(
        f"SELECT min(n) FROM (SELECT count(*) AS n FROM read_parquet('{settings.privacy}/contacts/*.parquet') "
        "WHERE age_band <> '*' GROUP BY age_band, postal_prefix, country)"
    ).fetchone()[0]
    assert smallest >= 5
    for entity, r in m["reconciliation"].items():
        assert r["ok"], entity
        assert r["read"] == r["loaded"] + r["quarantined"] + r["duplicates"] + r["expired"]
        assert r["loaded"] == r["privacy_rows"] + sum(r["excluded"].values())
        n = duckdb.sql(f"SELECT count(*) FROM read_parquet('{settings.privacy / entity}/*.parquet')").fetchone()[0]
        assert n == r["privacy_rows"], entity
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        tickets = con.execute("SELECT count(*) FROM marts.tickets").fetchone()[0]
    assert tickets == m["reconciliation"]["tickets"]["privacy_rows"] == m["rows"]["warehouse"]["tickets"]


def test_no_landing_pii_downstream(run):
    settings, airflow_home, _ = run
    pii = _landing_pii(settings.landing)
    assert CANARY["email"] in pii and f"{CANARY['first']} {CANARY['last']}" in pii
    texts = _downstream_text(settings, airflow_home)
    assert any("privacy" in k for k in texts) and any(k.endswith("analyst.duckdb") for k in texts)
    assert any("data_docs" in k for k in texts) and any(k.endswith("report.html") for k in texts)
    leaks = [(value, where) for where, text in texts.items() for value in pii if value in text]
    assert leaks == [], f"PII found downstream: {leaks[:5]}"
    canaries = [*CANARY.values(), *QUARANTINED_CANARY.values()]
    for where, text in texts.items():  # every canary value alone: single names, E.164 forms
        found = [c for c in canaries if c in text or c.lower() in text.lower()]
        assert found == [], f"canary PII in {where}: {found}"


def test_quarantined_canary_is_kept_only_in_the_restricted_area(run):
    settings, _, manifest_path = run
    m = json.loads(manifest_path.read_text())
    reasons = m["stages"]["ingest"]["files"]["contacts"]["quarantine_reasons"]
    assert reasons.get("date_of_birth:invalid_date", 0) >= 1
    kept = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{settings.quarantine / 'contacts.parquet'}') "
        f"WHERE contains(CAST(record AS VARCHAR), '{QUARANTINED_CANARY['email']}')"
    ).fetchone()[0]
    assert kept == 1, "the quarantined row is kept, with its reason, in the restricted quarantine area"
    assert oct(settings.quarantine.stat().st_mode & 0o777) == "0o700"


def test_key_material_is_never_written_downstream(run):
    settings, airflow_home, _ = run
    import os

    from transforms import _hmac_pads

    from crmshield.keys import read_key_file

    key = read_key_file(Path(os.environ[ENV_FILE]))
    secrets = {key.key.hex()}
    for domain in ("contact", "company", "deal", "ticket"):
        dk = key.domain_key(domain)
        secrets.update({dk.hex(), *_hmac_pads(dk)})
    texts = _downstream_text(settings, airflow_home)
    found = [where for where, text in texts.items() for s in secrets if s in text]
    assert found == []


# --------------------------------------------------------------------------- runs that stop
# The test copies the data directory the DAG run above published, breaks the export the way it
# breaks in production and runs the pipeline again in-process (the DAG's stages, in order): the
# run stops at the raw hand-over with a message naming suite, check and counts; nothing after it
# runs; the analyst database is byte-for-byte the published one; manifest and report say which
# expectation failed on which zone; the run index lists both runs. (The privacy gate stops a run
# the same way: tests/integration/test_validate_privacy.py feeds it leaking zones.)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def copy(run, tmp_path, monkeypatch):
    """A copy of the data directory the DAG run published, to break and run again in-process."""
    settings, _, manifest = run
    target = tmp_path / "data"
    shutil.copytree(settings.data_dir, target, symlinks=True)
    monkeypatch.setenv("CRMSHIELD_DATA_DIR", str(target))
    return Settings.from_env(target), manifest.parent.name


def _assert_stopped(settings: Settings, exc: RunFailed, stage: str, zone: str, previous_run: str) -> dict:
    run_id = exc.manifest.parent.name
    assert run_id != previous_run
    m = json.loads(exc.manifest.read_text())
    assert m["status"] == "failed"
    failure = m["failure"]
    assert failure["stage"] == stage and failure["zone"] == zone
    # nothing after the failed hand-over ran; the published marts are the previous run's
    later = ("ingest", "validate_raw", "privacy", "validate", "transform", "publish")
    for s in later[later.index(stage) + 1 :]:
        assert read_stage(settings, run_id, s) is None, s
    with duckdb.connect(str(settings.published), read_only=True) as con:
        live = {r[0] for r in con.execute("SELECT DISTINCT run_id FROM _dp_catalog").fetchall()}
    assert live == {previous_run}
    # the report says so, and the index lists both runs
    html = exc.manifest.with_name("report.html").read_text(encoding="utf-8")
    assert stage in html and "failed" in html
    index = (settings.runs / "index.html").read_text(encoding="utf-8")
    assert run_id in index and previous_run in index
    # a failed run's report, manifest, logs and Data Docs carry no PII either (the canaries are in its input)
    texts = decoded_text([settings.reports, settings.gx_context])
    canaries = [*CANARY.values(), *QUARANTINED_CANARY.values()]
    found = [(c, where) for where, text in texts.items() for c in canaries if c in text]
    assert found == [], found
    return m


def test_a_broken_export_is_refused_at_ingest(copy):
    settings, previous_run = copy
    published_before = _sha256(settings.published)
    tickets = settings.landing / FILES["tickets"]
    lines = tickets.read_text(encoding="utf-8").splitlines()
    broken = []
    for line in lines[: len(lines) // 2]:  # a third of the export loses its dates
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # the generator's deliberately malformed line
        rec["id"] = int(rec["id"]) + 50_000_000
        rec["created_at"] = "31/02/2025 25:61"
        broken.append(json.dumps(rec))
    tickets.write_text("\n".join([*lines, *broken]) + "\n", encoding="utf-8")

    raw_before = {p.name: _sha256(p) for p in settings.raw.glob("*.parquet")}
    with pytest.raises(RunFailed) as info:
        run_all(settings)
    message = str(info.value)
    assert "stage ingest failed" in message and f"{FILES['tickets']}: " in message
    assert "would be quarantined, more than entities.tickets.max_bad_share (20%)" in message
    assert "created_at:invalid_date" in message and "(first at line " in message
    m = _assert_stopped(settings, info.value, "ingest", None, previous_run)
    assert m["failure"]["error_type"] == "IngestError"
    # the delivery was refused as a whole: raw is the previous run's, byte for byte
    assert {p.name: _sha256(p) for p in settings.raw.glob("*.parquet")} == raw_before
    assert _sha256(settings.published) == published_before

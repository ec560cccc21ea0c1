"""A critical expectation stops the whole run before publication, and the run still reports it.

One real run (400 contacts) publishes the marts. Each test then copies that data directory,
breaks one thing the way it breaks in production (an export that went wrong, a privacy
policy that lets an identifier through) and runs the pipeline again in-process (what the DAG
does): the run must stop at the right hand-over with a message naming the suite, the check and
the counts; nothing after it runs; the analyst database is byte-for-byte the one published
before; the manifest and the HTML report say which expectation failed on which zone; the run
index lists both runs with their status.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from crmshield.config import Settings
from crmshield.generate import FILES, generate
from crmshield.keys import ENV_FILE, ENV_KEY, ENV_VERSION
from crmshield.pipeline import RunFailed, read_stage, run_all

pytestmark = pytest.mark.integration

KEY = "5a" * 32


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    base = tmp_path_factory.mktemp("runfail")
    mp = pytest.MonkeyPatch()
    mp.delenv(ENV_FILE, raising=False)
    mp.setenv(ENV_KEY, KEY)
    mp.setenv(ENV_VERSION, "1")
    settings = Settings.from_env(base / "data")
    generate(settings.landing, contacts=400, seed=21)
    manifest = Path(run_all(settings))
    assert json.loads(manifest.read_text())["status"] == "success"
    yield settings, manifest
    mp.undo()


@pytest.fixture()
def copy(published, tmp_path, monkeypatch):
    """A copy of the published data directory, to break."""
    settings, manifest = published
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
    later = ("validate_raw", "privacy", "validate", "transform", "publish")
    for s in later[later.index(stage) + 1 :]:
        assert read_stage(settings, run_id, s) is None, s
    import duckdb

    with duckdb.connect(str(settings.published), read_only=True) as con:
        live = {r[0] for r in con.execute("SELECT DISTINCT run_id FROM _dp_catalog").fetchall()}
    assert live == {previous_run}
    # the report says so, and the index lists both runs
    html = exc.manifest.with_name("report.html").read_text(encoding="utf-8")
    assert stage in html and "failed" in html
    index = (settings.runs / "index.html").read_text(encoding="utf-8")
    assert run_id in index and previous_run in index
    return m


def test_a_broken_export_stops_the_run_at_the_raw_contract(copy):
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

    with pytest.raises(RunFailed) as info:
        run_all(settings)
    message = str(info.value)
    assert "stage validate_raw failed" in message and "critical expectation(s) failed in the raw zone" in message
    assert "raw__reconciliation" in message and "quarantined_share" in message
    m = _assert_stopped(settings, info.value, "validate_raw", "raw", previous_run)
    failed = m["failure"]["failed_expectations"]
    assert any(f["suite"] == "raw__reconciliation" and f["severity"] == "critical" for f in failed)
    assert m["stages"]["ingest"]["files"]["tickets"]["quarantine_reasons"]["created_at:invalid_date"] >= len(broken)
    assert _sha256(settings.published) == published_before


def test_a_policy_that_lets_an_email_through_stops_the_run_before_dbt(copy, tmp_path, monkeypatch):
    settings, previous_run = copy
    published_before = _sha256(settings.published)
    policy = Path(__file__).resolve().parents[2] / "config" / "privacy_policy.yml"
    text = policy.read_text(encoding="utf-8")
    leaky, n = re.subn(
        r"email: \{classification: direct_identifier, action: pseudonymize, domain: email, output: email_pk,",
        "email: {classification: attribute, action: keep,",
        text,
    )
    assert n == 1
    leaky_path = tmp_path / "leaky_policy.yml"
    leaky_path.write_text(leaky, encoding="utf-8")
    monkeypatch.setenv("CRMSHIELD_PRIVACY_POLICY", str(leaky_path))

    with pytest.raises(RunFailed) as info:
        run_all(settings)
    message = str(info.value)
    assert "stage validate failed" in message and "in the privacy zone" in message
    assert re.search(r"privacy__contacts: expect_column_values_to_not_match_regex\(email\) \[no_email\] "
                     r"unexpected_count=[1-9]", message)  # fmt: skip
    assert "privacy__contacts: expect_table_columns_to_match_set [column_set]" in message
    m = _assert_stopped(settings, info.value, "validate", "privacy", previous_run)
    failed = {(f["suite"], f["check"], f["column"]) for f in m["failure"]["failed_expectations"]}
    assert ("privacy__contacts", "no_email", "email") in failed
    assert _sha256(settings.published) == published_before

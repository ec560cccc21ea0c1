"""When does a landed export start a run? (crmshield.landing_watch, behind crm_landing_watch)"""

from __future__ import annotations

import json
import os
import time

import pytest

from crmshield.config import Settings
from crmshield.generate import FILES, generate
from crmshield.landing_watch import (
    SETTLE_ENV,
    claim,
    landing_state,
    marker_path,
    settle_seconds,
)

SETTLE = 60.0


@pytest.fixture()
def landed(data_dir):
    generate(data_dir / "landing", contacts=40, seed=7)
    return Settings.from_env(data_dir)


def later(seconds: float = SETTLE + 5) -> float:
    """A clock reading ``seconds`` after now (instead of sleeping)."""
    return time.time() + seconds


def test_missing_export_is_not_ready(landed):
    (landed.landing / FILES["deals"]).unlink()
    state = landing_state(landed, now=later(), settle=SETTLE)
    assert state["ready"] is False and state["reason"] == "missing"
    assert FILES["deals"] in state["detail"] and state["fingerprint"] is None


def test_empty_landing_is_not_ready(data_dir):
    state = landing_state(Settings.from_env(data_dir), now=later(), settle=SETTLE)
    assert state["reason"] == "missing" and not state["ready"]


def test_file_still_being_written_is_not_ready(landed):
    path = landed.landing / FILES["tickets"]
    # settled a minute from now ...
    assert landing_state(landed, now=later(), settle=SETTLE)["ready"]
    # ... but the writer appends another chunk: not settled until SETTLE after that write
    with path.open("a", encoding="utf-8") as fh:
        fh.write('{"id": 999999')  # half a record
    state = landing_state(landed, now=time.time() + 10, settle=SETTLE)
    assert state["ready"] is False and state["reason"] == "not_settled"
    assert FILES["tickets"] in state["detail"] and state["fingerprint"] is None
    assert landing_state(landed, now=later(), settle=SETTLE)["reason"] == "new"


def test_a_copy_that_sets_an_old_mtime_still_has_to_settle(landed):
    """`cp -p`/`rsync -t` give the file an old mtime; its ctime (no tool can set it) still counts."""
    path = landed.landing / FILES["contacts"]
    old = time.time() - 86_400
    os.utime(path, (old, old))
    state = landing_state(landed, now=time.time() + 5, settle=SETTLE)
    assert state["reason"] == "not_settled"
    assert FILES["contacts"] in state["detail"]  # listed although its mtime is a day old


def test_new_settled_export_is_ready_and_keyed_like_the_run(landed):
    from crmshield.ingest import landing_fingerprint
    from crmshield.pipeline import config_digest

    state = landing_state(landed, now=later(), settle=SETTLE)
    assert state["ready"] is True and state["reason"] == "new"
    fp, hashes = landing_fingerprint(landed.landing, config_digest(landed))
    assert state["fingerprint"] == fp  # the run's input_fingerprint: same files + config -> same run
    assert {name: f["sha256"] for name, f in state["files"].items()} == hashes


def test_settle_period_from_the_environment(landed, monkeypatch):
    monkeypatch.setenv(SETTLE_ENV, "600")
    assert settle_seconds() == 600
    assert landing_state(landed, now=later(120))["reason"] == "not_settled"
    assert landing_state(landed, now=later(700))["reason"] == "new"
    monkeypatch.setenv(SETTLE_ENV, "soon")
    with pytest.raises(ValueError, match=SETTLE_ENV):
        settle_seconds()
    monkeypatch.delenv(SETTLE_ENV)
    assert settle_seconds() == 60


def test_input_a_run_has_ingested_is_not_ready(landed):
    """Re-delivering the same files (same fingerprint as a finished run) starts nothing."""
    from crmshield.pipeline import stage_ingest

    res = stage_ingest(landed)
    state = landing_state(landed, now=later(), settle=SETTLE)
    assert state["ready"] is False and state["reason"] == "processed"
    assert state["fingerprint"] == res["input_fingerprint"]
    # the same content delivered again (new mtimes): still the same input
    for name in FILES.values():
        p = landed.landing / name
        p.write_bytes(p.read_bytes())
    assert landing_state(landed, now=later(), settle=SETTLE)["reason"] == "processed"
    # a changed export is new
    with (landed.landing / FILES["contacts"]).open("a", encoding="utf-8") as fh:
        fh.write("\n")
    state = landing_state(landed, now=later(), settle=SETTLE)
    assert state["reason"] == "new" and state["fingerprint"] != res["input_fingerprint"]


def test_processed_is_read_from_run_directories(landed):
    fp = landing_state(landed, now=later(), settle=SETTLE)["fingerprint"]
    run = landed.runs / f"run-{fp[:16]}"
    run.mkdir(parents=True)
    (run / "ingest.json").write_text(json.dumps({"input_fingerprint": fp}), encoding="utf-8")
    (landed.runs / "broken").mkdir()
    (landed.runs / "broken" / "ingest.json").write_text("{half", encoding="utf-8")
    assert landing_state(landed, now=later(), settle=SETTLE)["reason"] == "processed"


def test_marker_prevents_a_double_trigger(landed):
    now = later()
    state = landing_state(landed, now=now, settle=SETTLE)
    assert claim(landed, state, now=now) is True
    marker = json.loads(marker_path(landed, state["fingerprint"]).read_text(encoding="utf-8"))
    assert marker["fingerprint"] == state["fingerprint"] and marker["run_id"] == f"run-{state['fingerprint'][:16]}"
    assert "Email" not in json.dumps(marker)  # names, sizes and hashes only
    # a second check (next poll, or a racing one) does not announce it again
    assert claim(landed, state, now=now) is False
    again = landing_state(landed, now=now + 300, settle=SETTLE)
    assert again["ready"] is False and again["reason"] == "triggered"


def test_stale_marker_is_announced_again_once(landed):
    """An event that started nothing (paused DAG, run died before ingest) is retried after a while."""
    now = later()
    state = landing_state(landed, now=now, settle=SETTLE, retrigger=3600)
    assert claim(landed, state, now=now)
    assert landing_state(landed, now=now + 1800, settle=SETTLE, retrigger=3600)["reason"] == "triggered"
    stale = landing_state(landed, now=now + 4000, settle=SETTLE, retrigger=3600)
    assert stale["ready"] is True and stale["stale_marker"] is True
    assert claim(landed, stale, now=now + 4000) is True
    assert landing_state(landed, now=now + 4100, settle=SETTLE, retrigger=3600)["reason"] == "triggered"
    assert len(list(marker_path(landed, state["fingerprint"]).parent.glob("*.stale-*"))) == 1


def test_claim_refuses_a_landing_that_is_not_ready(landed):
    state = landing_state(landed, now=time.time(), settle=SETTLE)
    assert state["reason"] == "not_settled"
    with pytest.raises(ValueError, match="not a ready landing"):
        claim(landed, state)

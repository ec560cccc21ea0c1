"""The privacy-budget ledger: config validation, periods, enforcement, persistence and a real cross-process race."""

from __future__ import annotations

import multiprocessing
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from crmshield.budget import (
    BudgetConfigError,
    BudgetExceeded,
    BudgetRefused,
    Charge,
    Ledger,
    LedgerError,
    UnknownAnalyst,
    load_budget_config,
    period_bounds,
)
from crmshield.config import Settings

T0 = datetime(2025, 3, 12, 15, 30, tzinfo=UTC)  # a Wednesday

CONFIG = {
    "population": "crm_customers",
    "budget": {"epsilon": 10.0, "delta": 1.0e-4, "period": "month"},
    "analysts": {
        "alice": {"epsilon": 3.0, "delta": 1.0e-5, "period": "week"},
        "bob": {"epsilon": 1.0, "delta": 1.0e-5, "period": "day"},
    },
}


class Clock:
    def __init__(self, at: datetime = T0) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def _write_config(tmp_path: Path, doc: dict | None = None, name: str = "dp_budget.yml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(CONFIG if doc is None else doc), encoding="utf-8")
    return path


def _ledger(tmp_path: Path, clock: Clock | None = None, doc: dict | None = None) -> Ledger:
    config = load_budget_config(_write_config(tmp_path, doc))
    return Ledger(tmp_path / "restricted" / "dp_ledger.sqlite", config, clock=clock or Clock())


def _publish(ledger: Ledger, eps: float, run_id: str = "run-1", delta: float = 1.0e-6):
    return ledger.reserve(
        principal="publisher", kind="publication", charges=[Charge("mart_a", eps, delta)], run_id=run_id
    )


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------


def test_shipped_config_is_valid():
    config = load_budget_config(Settings.from_env().dp_budget_config)
    assert config.population == "crm_customers"
    assert config.population_budget.period == "month" and config.population_budget.epsilon > 0
    assert config.analysts and all(b.epsilon <= config.population_budget.epsilon for b in config.analysts.values())


def _mutated(tmp_path: Path, mutate) -> Path:
    doc = yaml.safe_load(yaml.safe_dump(CONFIG))
    mutate(doc)
    return _write_config(tmp_path, doc)


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        (lambda d: d["analysts"]["alice"].update(epsilonn=1), r"dp_budget.yml: unknown key 'analysts.alice.epsilonn'"),
        (lambda d: d.update(budgets=1), r"dp_budget.yml: unknown key 'budgets'"),
        (
            lambda d: d["analysts"]["alice"].update(epsilon=-1),
            r"dp_budget.yml: key 'analysts.alice.epsilon': .*greater",
        ),
        (lambda d: d["budget"].update(epsilon=float("inf")), r"dp_budget.yml: key 'budget.epsilon'"),
        (lambda d: d["budget"].update(delta=1.5), r"dp_budget.yml: key 'budget.delta'"),
        (lambda d: d["budget"].update(delta=0), r"dp_budget.yml: key 'budget.delta'"),
        (lambda d: d["analysts"]["bob"].update(period="fortnight"), r"dp_budget.yml: key 'analysts.bob.period'"),
        (lambda d: d.pop("budget"), r"dp_budget.yml: missing required key 'budget'"),
        (lambda d: d["analysts"].update({"Eve Smith": d["analysts"]["bob"]}), r"key 'analysts.Eve Smith': analyst"),
        (lambda d: d.update(population="CRM customers"), r"dp_budget.yml: key 'population'"),
    ],
)
def test_config_errors_name_file_and_key(tmp_path, mutate, pattern):
    with pytest.raises(BudgetConfigError, match=pattern):
        load_budget_config(_mutated(tmp_path, mutate))


def test_config_missing_or_not_a_mapping(tmp_path):
    with pytest.raises(BudgetConfigError, match=r"nope.yml: privacy budget configuration not found"):
        load_budget_config(tmp_path / "nope.yml")
    path = tmp_path / "list.yml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(BudgetConfigError, match=r"list.yml: expected a mapping"):
        load_budget_config(path)


# --------------------------------------------------------------------------
# Periods
# --------------------------------------------------------------------------


def _d(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("period", "at", "start", "end"),
    [
        ("day", _d(2025, 3, 12, 15, 30), _d(2025, 3, 12), _d(2025, 3, 13)),
        ("day", _d(2025, 12, 31, 23, 59, 59), _d(2025, 12, 31), _d(2026, 1, 1)),
        ("week", _d(2025, 3, 12, 15, 30), _d(2025, 3, 10), _d(2025, 3, 17)),  # Wednesday -> Monday
        ("week", _d(2025, 3, 10), _d(2025, 3, 10), _d(2025, 3, 17)),  # Monday 00:00 starts its own week
        ("week", _d(2025, 3, 16, 23, 59), _d(2025, 3, 10), _d(2025, 3, 17)),  # Sunday
        ("week", _d(2025, 12, 31, 12), _d(2025, 12, 29), _d(2026, 1, 5)),
        ("month", _d(2025, 3, 12, 15, 30), _d(2025, 3, 1), _d(2025, 4, 1)),
        ("month", _d(2025, 12, 31, 23, 59), _d(2025, 12, 1), _d(2026, 1, 1)),
        ("month", _d(2024, 2, 29, 12), _d(2024, 2, 1), _d(2024, 3, 1)),
        ("quarter", _d(2025, 3, 31, 23), _d(2025, 1, 1), _d(2025, 4, 1)),
        ("quarter", _d(2025, 5, 2), _d(2025, 4, 1), _d(2025, 7, 1)),
        ("quarter", _d(2025, 12, 15), _d(2025, 10, 1), _d(2026, 1, 1)),
    ],
)
def test_period_bounds(period, at, start, end):
    assert period_bounds(period, at) == (start, end)


def test_period_bounds_converts_to_utc_and_rejects_naive_or_unknown():
    plus2 = datetime(2025, 4, 1, 1, 0, tzinfo=UTC).astimezone(timezone(timedelta(hours=2)))
    assert period_bounds("month", plus2) == (_d(2025, 4, 1), _d(2025, 5, 1))
    cet = timezone(timedelta(hours=1))
    assert period_bounds("day", datetime(2025, 4, 1, 0, 30, tzinfo=cet)) == (_d(2025, 3, 31), _d(2025, 4, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        period_bounds("day", datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="unknown budget period"):
        period_bounds("year", T0)


# --------------------------------------------------------------------------
# Enforcement
# --------------------------------------------------------------------------


def test_reserve_within_budget_then_refuse_with_explanation(tmp_path):
    ledger = _ledger(tmp_path)
    r = ledger.reserve(
        principal="publisher",
        kind="publication",
        charges=[Charge("mart_a", 3.0, 1e-6), Charge("mart_b", 3.0, 1e-6)],
        run_id="run-1",
    )
    assert r.epsilon == pytest.approx(6.0) and len(r.entries) == 2
    rem = ledger.remaining()["population"]
    assert rem["spent_epsilon"] == pytest.approx(6.0) and rem["remaining_epsilon"] == pytest.approx(4.0)
    assert rem["refreshes_at"] == "2025-04-01T00:00:00+00:00"

    with pytest.raises(BudgetExceeded) as info:
        _publish(ledger, 5.0, run_id="run-2")
    exc = info.value
    assert (exc.scope, exc.name) == ("population", "crm_customers")
    assert exc.spent_epsilon == pytest.approx(6.0)
    assert exc.needed_epsilon == pytest.approx(5.0)
    assert exc.remaining_epsilon == pytest.approx(4.0)
    assert exc.period_start == _d(2025, 3, 1) and exc.period_end == _d(2025, 4, 1)
    for text in ("spent epsilon=6", "needs epsilon=5", "remaining epsilon=4", "refreshes at 2025-04-01T00:00:00"):
        assert text in exc.message, (text, exc.message)

    refused = [e for e in ledger.entries() if e["status"] == "refused"]
    assert len(refused) == 1 and refused[0]["run_id"] == "run-2" and "refreshes at" in refused[0]["reason"]
    assert ledger.remaining()["population"]["spent_epsilon"] == pytest.approx(6.0)  # refusal not counted
    _publish(ledger, 4.0, run_id="run-3")  # exactly the rest still fits (with float tolerance)
    with pytest.raises(BudgetExceeded):
        _publish(ledger, 1e-3, run_id="run-4")


def test_floating_point_sums_reach_the_cap_exactly(tmp_path):
    ledger = _ledger(tmp_path, doc={**CONFIG, "budget": {"epsilon": 1.0, "delta": 1e-4, "period": "month"}})
    for i in range(10):
        _publish(ledger, 0.1, run_id=f"run-{i}")  # 0.1 * 10 is not exactly 1.0 in floats
    with pytest.raises(BudgetExceeded):
        _publish(ledger, 0.1, run_id="run-11")


def test_delta_budget_is_enforced(tmp_path):
    ledger = _ledger(tmp_path)
    _publish(ledger, 1.0, delta=6e-5)
    with pytest.raises(BudgetExceeded, match=r"needs epsilon=1, delta=5e-05") as info:
        _publish(ledger, 1.0, delta=5e-5)
    assert info.value.remaining_delta == pytest.approx(4e-5)


def test_analyst_query_charges_both_budgets(tmp_path):
    ledger = _ledger(tmp_path)
    q = "SELECT COUNT(*) FROM marts.tickets GROUP BY channel"
    ledger.reserve(principal="alice", analyst="alice", kind="query", charges=[Charge(q, 2.0, 1e-6)])
    rem = ledger.remaining(analyst="alice")
    assert rem["analyst"]["spent_epsilon"] == pytest.approx(2.0)
    assert rem["analyst"]["refreshes_at"] == "2025-03-17T00:00:00+00:00"  # next Monday
    assert rem["population"]["spent_epsilon"] == pytest.approx(2.0)
    assert ledger.remaining(analyst="bob")["analyst"]["spent_epsilon"] == 0.0

    with pytest.raises(BudgetExceeded) as info:  # alice has 1.0 left; the population has 8
        ledger.reserve(principal="alice", analyst="alice", kind="query", charges=[Charge(q, 1.5, 1e-6)])
    assert (info.value.scope, info.value.name) == ("analyst", "alice")
    assert "analyst 'alice'" in info.value.message and "refreshes at 2025-03-17T00:00:00" in info.value.message

    _publish(ledger, 7.5)  # the population now has 0.5 left; bob still has 1.0 of his own
    with pytest.raises(BudgetExceeded) as info:
        ledger.reserve(principal="bob", analyst="bob", kind="query", charges=[Charge(q, 0.8, 1e-6)])
    assert (info.value.scope, info.value.name) == ("population", "crm_customers")
    assert info.value.remaining_epsilon == pytest.approx(0.5)


def test_when_both_are_exceeded_the_later_refresh_binds_and_both_are_explained(tmp_path):
    ledger = _ledger(tmp_path)
    _publish(ledger, 9.5)
    with pytest.raises(BudgetExceeded) as info:
        ledger.reserve(principal="bob", analyst="bob", kind="query", charges=[Charge("q", 2.0, 1e-6)])
    assert info.value.scope == "population" and info.value.refreshes_at == _d(2025, 4, 1)
    assert [o.scope for o in info.value.others] == ["analyst"]
    assert "analyst 'bob'" in info.value.message and "refreshes at 2025-03-13T00:00:00" in info.value.message


def test_unknown_analyst_is_refused_and_audited(tmp_path):
    ledger = _ledger(tmp_path)
    with pytest.raises(
        UnknownAnalyst, match=r"unknown analyst 'mallory'.*add them to .*dp_budget.yml under 'analysts'"
    ):
        ledger.reserve(principal="mallory", analyst="mallory", kind="query", charges=[Charge("SELECT 1", 0.1, 0)])
    with pytest.raises(BudgetRefused):
        ledger.check(charges=[Charge("SELECT 1", 0.1, 0)], analyst="mallory")
    with pytest.raises(UnknownAnalyst):
        ledger.remaining(analyst="mallory")
    (entry,) = ledger.entries()
    assert entry["status"] == "refused" and entry["analyst"] == "mallory" and entry["what"] == "SELECT 1"
    assert ledger.remaining()["population"]["spent_epsilon"] == 0.0


def test_query_needs_an_analyst_and_charges_are_validated(tmp_path):
    ledger = _ledger(tmp_path)
    with pytest.raises(ValueError, match="analyst identity"):
        ledger.reserve(principal="someone", kind="query", charges=[Charge("SELECT 1", 0.1, 0)])
    with pytest.raises(ValueError, match="at least one Charge"):
        ledger.reserve(principal="publisher", kind="publication", charges=[])
    with pytest.raises(ValueError, match="epsilon must be a finite number"):
        Charge("mart_a", float("nan"), 0)
    with pytest.raises(ValueError, match="delta must be below 1"):
        Charge("mart_a", 1.0, 1.0)
    assert ledger.entries() == []


def test_check_writes_nothing(tmp_path):
    ledger = _ledger(tmp_path)
    ledger.check(charges=[Charge("mart_a", 10.0, 1e-6)])
    with pytest.raises(BudgetExceeded, match="needs epsilon=11"):
        ledger.check(charges=[Charge("mart_a", 11.0, 1e-6)])
    with pytest.raises(BudgetExceeded, match="analyst 'bob'"):
        ledger.check(charges=[Charge("q", 2.0, 1e-6)], analyst="bob")
    assert ledger.entries() == []


def test_next_period_refreshes_the_budget(tmp_path):
    clock = Clock(_d(2025, 12, 31, 23, 59, 59))
    ledger = _ledger(tmp_path, clock)
    _publish(ledger, 10.0)
    ledger.reserve(principal="bob", analyst="bob", kind="query", charges=[Charge("q", 0.0, 0.0)])
    with pytest.raises(BudgetExceeded, match="refreshes at 2026-01-01T00:00:00"):
        _publish(ledger, 1.0)
    clock.at = _d(2026, 1, 1)
    assert ledger.remaining()["population"]["remaining_epsilon"] == pytest.approx(10.0)
    _publish(ledger, 10.0)
    # the old period is still on record
    assert ledger.remaining(at=_d(2025, 12, 15))["population"]["spent_epsilon"] == pytest.approx(10.0)
    assert len(ledger.entries(since=_d(2026, 1, 1))) == 1


def test_analyst_daily_budget_refreshes_next_day(tmp_path):
    clock = Clock()
    ledger = _ledger(tmp_path, clock)
    ledger.reserve(principal="bob", analyst="bob", kind="query", charges=[Charge("q", 1.0, 1e-6)])
    with pytest.raises(BudgetExceeded, match="refreshes at 2025-03-13T00:00:00"):
        ledger.reserve(principal="bob", analyst="bob", kind="query", charges=[Charge("q", 0.5, 1e-6)])
    clock.at = T0 + timedelta(days=1)
    ledger.reserve(principal="bob", analyst="bob", kind="query", charges=[Charge("q", 1.0, 1e-6)])
    assert ledger.remaining()["population"]["spent_epsilon"] == pytest.approx(2.0)  # same month


def test_reserved_counts_cancel_frees_commit_keeps(tmp_path):
    ledger = _ledger(tmp_path)
    a = _publish(ledger, 6.0, run_id="a")
    with pytest.raises(BudgetExceeded):  # a is only reserved, but it counts
        _publish(ledger, 6.0, run_id="b")
    ledger.cancel(a, "warehouse missing: nothing released")
    b = _publish(ledger, 6.0, run_id="b")
    ledger.commit(b)
    with pytest.raises(BudgetExceeded):
        _publish(ledger, 6.0, run_id="c")
    statuses = {(e["run_id"], e["status"]) for e in ledger.entries()}
    assert statuses == {("a", "cancelled"), ("b", "refused"), ("b", "spent"), ("c", "refused")}
    cancelled = next(e for e in ledger.entries() if e["status"] == "cancelled")
    assert cancelled["reason"] == "warehouse missing: nothing released"

    ledger.commit(b)  # idempotent
    ledger.cancel(a, "again")  # idempotent
    with pytest.raises(LedgerError, match="cannot mark it cancelled"):
        ledger.cancel(b, "too late: it was released")
    with pytest.raises(LedgerError, match="cannot mark it spent"):
        ledger.commit(a)
    with pytest.raises(LedgerError, match="no reservation"):
        ledger.commit("deadbeef")


def test_spending_context_commits_or_cancels(tmp_path):
    ledger = _ledger(tmp_path)
    with ledger.spending(principal="publisher", kind="publication", charges=[Charge("m", 4.0, 1e-6)], run_id="ok"):
        pass
    with pytest.raises(RuntimeError, match="boom"):
        with ledger.spending(principal="publisher", kind="publication", charges=[Charge("m", 4.0, 1e-6)], run_id="x"):
            raise RuntimeError("boom")
    by_run = {e["run_id"]: e for e in ledger.entries()}
    assert by_run["ok"]["status"] == "spent"
    assert by_run["x"]["status"] == "cancelled" and "boom" in by_run["x"]["reason"]
    assert ledger.remaining()["population"]["spent_epsilon"] == pytest.approx(4.0)


def test_entries_record_who_what_how_and_when(tmp_path):
    ledger = _ledger(tmp_path)
    ledger.reserve(
        principal="pipeline",
        kind="publication",
        charges=[Charge("tickets_by_month_channel", 1.0, 1e-6)],
        run_id="2025-03-12T15-30",
    )
    (e,) = ledger.entries()
    assert e["principal"] == "pipeline" and e["kind"] == "publication" and e["analyst"] is None
    assert e["what"] == "tickets_by_month_channel" and len(e["fingerprint"]) == 64
    assert e["composition"] == "basic sequential" and e["population"] == "crm_customers"
    assert e["created_at"] == "2025-03-12T15:30:00.000000+00:00" and e["status"] == "reserved"
    assert datetime.fromisoformat(e["created_at"]) == T0


def test_naive_clock_is_rejected(tmp_path):
    ledger = _ledger(tmp_path, Clock(datetime(2025, 3, 12)))
    with pytest.raises(ValueError, match="timezone-aware"):
        _publish(ledger, 1.0)


# --------------------------------------------------------------------------
# Storage
# --------------------------------------------------------------------------


def test_file_modes_and_persistence(tmp_path):
    ledger = _ledger(tmp_path)
    _publish(ledger, 4.0)
    assert stat.S_IMODE(ledger.path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(ledger.path.stat().st_mode) == 0o600
    for side in ledger.path.parent.glob("dp_ledger.sqlite-*"):
        assert stat.S_IMODE(side.stat().st_mode) & 0o077 == 0, side

    again = Ledger(ledger.path, ledger.config, clock=Clock())
    assert again.remaining()["population"]["spent_epsilon"] == pytest.approx(4.0)
    with pytest.raises(BudgetExceeded):
        _publish(again, 7.0)


def test_open_from_settings(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("CRMSHIELD_DP_BUDGET", str(_write_config(tmp_path)))
    settings = Settings.from_env()
    ledger = Ledger.open(settings, clock=Clock())
    assert ledger.path == settings.dp_ledger and ledger.path.is_file()
    assert ledger.path.parent == data_dir / "restricted"
    assert ledger.path.parent != settings.published.parent
    assert ledger.config.population_budget.epsilon == 10.0


def test_not_a_ledger_and_newer_schema_are_errors(tmp_path):
    config = load_budget_config(_write_config(tmp_path))
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LedgerError, match="not a usable privacy-budget ledger"):
        Ledger(junk, config)
    import sqlite3

    newer = tmp_path / "newer.sqlite"
    with sqlite3.connect(newer) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(LedgerError, match="newer than this crmshield"):
        Ledger(newer, config)


# --------------------------------------------------------------------------
# Concurrency: real processes racing for the same budget
# --------------------------------------------------------------------------

RACERS = 6


def _race_worker(ledger_path: str, config_path: str, index: int, barrier, results) -> None:
    """Runs in a spawned process: open the ledger, wait for everyone, then try to reserve epsilon 6 of 10."""
    try:
        ledger = Ledger(Path(ledger_path), load_budget_config(Path(config_path)), clock=Clock())  # one period for all
        barrier.wait(timeout=60)
        try:
            ledger.reserve(
                principal=f"publisher-{index}",
                kind="publication",
                charges=[Charge("mart_a", 3.0, 1e-6), Charge("mart_b", 3.0, 1e-6)],
                run_id=f"race-{index}",
            )
            results.put((index, "reserved"))
        except BudgetExceeded:
            results.put((index, "exceeded"))
    except BaseException as exc:  # report, so the parent fails with a reason instead of hanging
        results.put((index, f"error: {type(exc).__name__}: {exc}"))


def test_concurrent_publishers_cannot_overspend(tmp_path):
    config_path = _write_config(tmp_path)
    ledger = Ledger(tmp_path / "restricted" / "dp_ledger.sqlite", load_budget_config(config_path), clock=Clock())
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(RACERS)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_race_worker, args=(str(ledger.path), str(config_path), i, barrier, results))
        for i in range(RACERS)
    ]
    for p in procs:
        p.start()
    try:
        outcomes = dict(results.get(timeout=120) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert sorted(outcomes) == list(range(RACERS))
    assert sorted(outcomes.values()) == ["exceeded"] * (RACERS - 1) + ["reserved"], outcomes

    entries = ledger.entries()
    counted = [e for e in entries if e["status"] in ("reserved", "spent")]
    assert sum(e["epsilon"] for e in counted) == pytest.approx(6.0)
    assert sum(e["epsilon"] for e in counted) <= 10.0
    assert len([e for e in entries if e["status"] == "refused"]) == 2 * (RACERS - 1)
    assert ledger.remaining()["population"]["spent_epsilon"] == pytest.approx(6.0)


def test_a_locked_ledger_fails_closed(tmp_path, monkeypatch):
    import sqlite3

    import crmshield.budget as budget

    ledger = _ledger(tmp_path)
    monkeypatch.setattr(budget, "BUSY_TIMEOUT_S", 0.05)
    holder = sqlite3.connect(ledger.path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        with pytest.raises(LedgerError, match="ledger unavailable"):
            _publish(ledger, 1.0)
        holder.execute("ROLLBACK")
    finally:
        holder.close()
    assert ledger.entries() == []
    _publish(ledger, 1.0)

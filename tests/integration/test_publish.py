"""Integration tests for DP mart publication (warehouse -> analyst.duckdb).

The warehouse is built by hand here (same tables and columns as the dbt
marts), so these tests do not need dbt. SmartNoise noise is random, so
assertions use the interval SmartNoise reports (widened) or a huge-epsilon
spec set where the noise is negligible and only contribution bounding
(max_contributions) and clamping remain.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml

from crmshield import publish as publish_mod
from crmshield.budget import BudgetExceeded, Ledger, load_budget_config
from crmshield.config import Settings
from crmshield.publish import (
    CATALOG_TABLE,
    COLUMNS_TABLE,
    MartSpecError,
    load_mart_specs,
    publish_marts,
)

pytestmark = pytest.mark.integration

MARTS = (
    "customers_by_lifecycle_segment",
    "deal_value_by_stage_region",
    "resolution_hours_by_priority",
    "satisfaction_by_channel",
    "tickets_by_month_channel_priority",
)
MONTHS = ("2024-01", "2024-02")
CHANNELS = ("email", "web", "chat", "voice", "api")
PRIORITIES = ("low", "normal", "high", "urgent")
RATINGS = ("good", "bad", "offered", "unoffered")
REGIONS = ("AMER", "EMEA", "APAC")
LIFECYCLE = ("lead", "customer", "opportunity", "subscriber")
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54")
STAGES = (
    "appointmentscheduled",
    "qualifiedtobuy",
    "presentationscheduled",
    "decisionmakerboughtin",
    "contractsent",
    "closedwon",
    "closedlost",
)
WHALE = "v1_" + "f" * 64  # one customer with far more rows than max_contributions
WHALE_TICKETS = 60
WHALE_DEALS = 40

TICKETS_DDL = """
CREATE TABLE marts.tickets (
    ticket_pk VARCHAR, contact_pk VARCHAR, channel VARCHAR, priority VARCHAR,
    status VARCHAR, satisfaction VARCHAR, created_on DATE, created_month VARCHAR,
    solved_on DATE, is_solved BOOLEAN, resolution_hours DOUBLE, resolution_bucket VARCHAR
)"""
CUSTOMERS_DDL = """
CREATE TABLE marts.customers (
    contact_pk VARCHAR, company_pk VARCHAR, age_band VARCHAR, country VARCHAR, region VARCHAR,
    lifecycle_stage VARCHAR, created_on DATE, ticket_count BIGINT, deal_count BIGINT, won_amount DECIMAL(18, 2)
)"""
DEALS_DDL = """
CREATE TABLE marts.deal_pipeline (
    deal_pk VARCHAR, contact_pk VARCHAR, company_pk VARCHAR, stage VARCHAR,
    pipeline VARCHAR, region VARCHAR, amount DECIMAL(18, 2), currency VARCHAR,
    created_on DATE, close_date DATE, is_closed BOOLEAN, is_won BOOLEAN
)"""


def _pk(kind: str, n: int) -> str:
    """A pseudonym in the privacy zone's format (v<version>_<64 hex>)."""
    return "v1_" + hashlib.sha256(f"{kind}:{n}".encode()).hexdigest()


def build_warehouse(path: Path, n_contacts: int) -> None:
    """A warehouse with 3 tickets and 2 deals per contact, plus one whale.

    Every ordinary contact stays within every spec's max_contributions (>= 2
    deals, >= 3 tickets); the whale's extra rows all share one group and one
    value, so the contribution-bounded truth is the same whichever rows
    SmartNoise's per-person sample keeps.
    """
    tickets: list[tuple[object, ...]] = []
    deals: list[tuple[object, ...]] = []
    customers: list[tuple[object, ...]] = []
    for c in range(n_contacts):
        contact = _pk("c", c)
        customers.append(
            (contact, _pk("co", c % 17), AGE_BANDS[c % 4], "DE", REGIONS[c % 3], LIFECYCLE[(c // 3) % 4],
             "2024-01-01", 3, 2, 0)
        )  # fmt: skip
        for i in range(3):
            solved = (c + i) % 3 != 0
            hours = float((c * 7 + i * 13) % 300) + 0.5 if solved else None
            if c == 1 and i == 1:
                hours = 1000.0  # above the 336 h bound: clamped
            month = MONTHS[(c // 5 + i) % 2]
            tickets.append(
                (
                    f"t{c}_{i}",
                    contact,
                    CHANNELS[(c + i) % 5],
                    PRIORITIES[(c + 2 * i) % 4],
                    "solved" if solved else "open",
                    RATINGS[(c + 3 * i) % 4],
                    f"{month}-0{1 + i}",
                    month,
                    f"{month}-2{i}" if solved else None,
                    solved,
                    hours,
                    "bucket",
                )
            )
        for i in range(2):
            amount: float | None = float(1000 + (c * 37 + i * 11) % 20000)
            if c == 2 and i == 0:
                amount = 1_000_000.0  # above the 50000 bound: clamped
            if c == 3 and i == 1:
                amount = None
            stage = STAGES[(c + 3 * i) % 7]
            deals.append(
                (
                    f"d{c}_{i}",
                    contact,
                    _pk("co", c % 17),
                    stage,
                    "default",
                    REGIONS[c % 3],
                    amount,
                    "EUR",
                    "2024-01-05",
                    "2024-03-01",
                    stage.startswith("closed"),
                    stage == "closedwon",
                )
            )
    for i in range(WHALE_TICKETS):
        tickets.append(
            (f"w{i}", WHALE, "email", "urgent", "solved", "bad", "2024-01-02", "2024-01",
             "2024-01-03", True, 10.0, "bucket")
        )  # fmt: skip
    for i in range(WHALE_DEALS):
        deals.append(
            (f"wd{i}", WHALE, _pk("co", 99), "closedwon", "default", "EMEA", 1000.0, "EUR",
             "2024-01-05", "2024-03-01", True, True)
        )  # fmt: skip
    # a deal without a customer: cannot be attributed to a person, so excluded
    deals.append(
        ("orphan", None, None, "closedwon", "default", "EMEA", 5000.0, "EUR",
         "2024-01-05", "2024-03-01", True, True)
    )  # fmt: skip

    path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA marts")
        con.execute(TICKETS_DDL)
        con.execute(DEALS_DDL)
        con.execute(CUSTOMERS_DDL)
        for table, rows in (("tickets", tickets), ("deal_pipeline", deals), ("customers", customers)):
            columns = [r[0] for r in con.execute(f"DESCRIBE marts.{table}").fetchall()]
            con.register("frame", pd.DataFrame(rows, columns=columns, dtype=object))
            con.execute(f"INSERT INTO marts.{table} SELECT * FROM frame")
            con.unregister("frame")


def bounded_truth(warehouse: Path, max_contrib: dict[str, int]) -> dict[str, dict[tuple, tuple]]:
    """Exact aggregates with each customer's rows capped and values clamped."""
    with duckdb.connect(str(warehouse), read_only=True) as con:

        def capped(table: str, order: str, where: str, m: int) -> str:
            return (
                f"(SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY contact_pk"
                f" ORDER BY {order}) AS rn FROM {table} WHERE contact_pk IS NOT NULL {where})"
                f" WHERE rn <= {m})"
            )

        m = max_contrib["tickets_by_month_channel_priority"]
        by_month = con.execute(
            "SELECT created_month, channel, priority, count(*)"
            f" FROM {capped('marts.tickets', 'ticket_pk', '', m)} GROUP BY ALL"
        ).fetchall()
        m = max_contrib["resolution_hours_by_priority"]
        solved = capped("marts.tickets", "ticket_pk", "AND is_solved", m)
        by_priority = con.execute(
            "SELECT priority, avg(least(greatest(resolution_hours, 0), 336)), count(resolution_hours),"
            " quantile_cont(least(greatest(resolution_hours, 0), 336), [0.25, 0.5, 0.75])"
            f" FROM {solved} GROUP BY ALL"
        ).fetchall()
        m = max_contrib["deal_value_by_stage_region"]
        by_stage = con.execute(
            "SELECT stage, region, sum(least(greatest(amount::DOUBLE, 0), 50000)), count(*)"
            f" FROM {capped('marts.deal_pipeline', 'deal_pk', '', m)} GROUP BY ALL"
        ).fetchall()
        m = max_contrib["satisfaction_by_channel"]
        by_rating = con.execute(
            f"SELECT channel, satisfaction, count(*) FROM {capped('marts.tickets', 'ticket_pk', '', m)} GROUP BY ALL"
        ).fetchall()
        by_segment = con.execute(
            "SELECT lifecycle_stage, region, age_band, count(*) FROM marts.customers GROUP BY ALL"
        ).fetchall()
    return {
        "tickets_by_month_channel_priority": {tuple(r[:3]): (r[3],) for r in by_month},
        "resolution_hours_by_priority": {(r[0],): (r[1], r[2], *r[3]) for r in by_priority},
        "deal_value_by_stage_region": {tuple(r[:2]): (r[2], r[3]) for r in by_stage},
        "satisfaction_by_channel": {tuple(r[:2]): (r[2],) for r in by_rating},
        "customers_by_lifecycle_segment": {tuple(r[:3]): (r[3],) for r in by_segment},
    }


KEYS = {
    "tickets_by_month_channel_priority": ("created_month", "channel", "priority"),
    "resolution_hours_by_priority": ("priority",),
    "deal_value_by_stage_region": ("stage", "region"),
    "satisfaction_by_channel": ("channel", "satisfaction"),
    "customers_by_lifecycle_segment": ("lifecycle_stage", "region", "age_band"),
}
GRID = {
    "tickets_by_month_channel_priority": 36 * 5 * 4,
    "resolution_hours_by_priority": 4,
    "deal_value_by_stage_region": 7 * 4,
    "satisfaction_by_channel": 5 * 4,
    "customers_by_lifecycle_segment": 8 * 4 * 11,
}


def read_mart(db: Path, mart: str) -> list[dict[str, object]]:
    with duckdb.connect(str(db), read_only=True) as con:
        cur = con.execute(f'SELECT * FROM "{mart}"')
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def read_catalog(db: Path) -> dict[str, dict[str, object]]:
    rows = read_mart(db, CATALOG_TABLE)
    return {str(r["mart"]): r for r in rows}


def huge_epsilon_specs(tmp_path: Path, max_contributions: int = 5, only: tuple[str, ...] = MARTS) -> Path:
    """The shipped queries with a test-only budget that makes noise negligible."""
    settings = Settings.from_env()
    out = tmp_path / "marts_huge_eps"
    out.mkdir()
    for spec in load_mart_specs(settings.marts_sql):
        if spec.name not in only:
            continue
        shutil.copy(spec.sql_path, out / spec.sql_path.name)
        data = yaml.safe_load(spec.spec_path.read_text())
        data.update(epsilon=100_000.0, delta=1e-6, max_contributions=max_contributions)
        if data.get("quantiles"):
            data["quantiles"]["epsilon"] = 50_000.0
        (out / spec.spec_path.name).write_text(yaml.safe_dump(data))
    return out


def budget_file(tmp_path: Path, epsilon: float) -> Path:
    path = tmp_path / f"budget-{epsilon:g}.yml"
    path.write_text(
        "population: crm_customers\n"
        f"budget: {{epsilon: {epsilon}, delta: 0.5, period: month}}\n"
        "analysts:\n  alice: {epsilon: 1.0, delta: 1.0e-5, period: week}\n"
    )
    return path


@pytest.fixture()
def settings(data_dir: Path) -> Settings:
    return Settings.from_env()


@pytest.fixture()
def unlimited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A budget big enough for the huge-epsilon test specs."""
    monkeypatch.setenv("CRMSHIELD_DP_BUDGET", str(budget_file(tmp_path, 1e9)))


def _within(value: float, exact: float, low: float, high: float) -> bool:
    """The published value is within 6 half-widths of the truth (noise only).

    A Laplace 95 % half-width is b*ln(20) ~ 3b, so 6 half-widths is ~18b: a false alarm has
    probability e^-18 ~ 1.5e-8 per cell, ~1e-5 over the ~1,000 cells checked per run (4
    half-widths, e^-12 per cell, failed once in CI at 12.2b); a value that is not truth plus
    noise of the declared scale still lands far outside."""
    half = (high - low) / 2
    return abs(value - exact) <= 6 * half + 1


def test_publish_shipped_marts_and_skip_on_same_fingerprint(settings: Settings) -> None:
    build_warehouse(settings.warehouse, n_contacts=1500)
    specs = {s.name: s for s in load_mart_specs(settings.marts_sql)}
    assert tuple(specs) == MARTS

    result = publish_marts(settings, "run-1", "fp-a")

    db = settings.published
    assert result.status == "published"
    assert result.analyst_db == db and db.is_file()
    assert not list(db.parent.glob("*.tmp-*"))
    assert db.stat().st_mode & 0o222 == 0  # read-only file
    with duckdb.connect(str(db), read_only=True) as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
        columns = {r[0] for r in con.execute("SELECT column_name FROM duckdb_columns()").fetchall()}
        docs = con.execute("SELECT mart, column_name, role FROM dp_docs").fetchall()
        listed = con.execute("SELECT mart, row_count FROM dp_marts").fetchall()
    assert tables == {*MARTS, CATALOG_TABLE, COLUMNS_TABLE}
    assert views == {"dp_marts", "dp_docs"}
    assert "contact_pk" not in columns and "ticket_pk" not in columns  # nothing row-level
    assert {m for m, _ in listed} == set(MARTS)
    assert ("tickets_by_month_channel_priority", "tickets_ci_low", "ci_low") in docs
    assert ("resolution_hours_by_priority", "resolution_hours_p50", "measure") in docs

    catalog = read_catalog(db)
    assert set(catalog) == set(MARTS)
    for name, spec in specs.items():
        row = catalog[name]
        assert math.isclose(row["epsilon"], spec.epsilon, rel_tol=1e-6)
        assert row["epsilon"] <= spec.epsilon * (1 + 1e-9)
        assert row["delta"] <= spec.delta * (1 + 1e-9)
        assert row["privacy_unit"] == "contact_pk"
        assert row["max_contributions"] == spec.max_contributions
        assert json.loads(row["bounds"]) == spec.bounds
        assert row["source_table"] == spec.source
        assert row["run_id"] == "run-1" and row["input_fingerprint"] == "fp-a"
        assert row["spec_sha256"] == spec.spec_sha256
        assert row["row_count"] == len(read_mart(db, name)) == GRID[name]  # full public grid
        assert "laplace" in row["mechanism"] and "tau" not in row["mechanism"]
        assert row["ci_level"] == 0.95
        assert set(json.loads(row["public_keys"])) == set(KEYS[name])
        # every measure has its interval columns
        cols = set(read_mart(db, name)[0])
        for measure in json.loads(row["measures"]):
            assert {f"{measure}_ci_low", f"{measure}_ci_high"} <= cols
    assert json.loads(catalog["deal_value_by_stage_region"]["bounds"]) == {"amount": {"lower": 0.0, "upper": 50000.0}}
    assert "histogram_quantiles" in catalog["resolution_hours_by_priority"]["mechanism"]

    # result object, JSON-safe for the manifest, with the budget left
    as_dict = json.loads(json.dumps(result.to_dict()))
    assert as_dict["status"] == "published" and as_dict["run_id"] == "run-1"
    assert {m["name"] for m in as_dict["marts"]} == set(MARTS)
    assert all(m["median_relative_ci_width"] > 0 for m in as_dict["marts"])  # for the run report
    assert math.isclose(result.epsilon_spent, sum(s.epsilon for s in specs.values()), rel_tol=1e-6)
    (suite,) = as_dict["validation"]["suites"]
    assert suite["suite_name"] == "published__marts" and suite["success"] and suite["failed_expectations"] == 0
    population = as_dict["budget"]["population"]
    assert math.isclose(population["spent_epsilon"], result.epsilon_spent, rel_tol=1e-9)
    assert math.isclose(population["remaining_epsilon"], 30.0 - result.epsilon_spent, rel_tol=1e-9)

    # the ledger recorded who, what, epsilon, delta, composition and when
    entries = Ledger.open(settings).entries()
    assert {e["what"] for e in entries} == set(MARTS)
    assert {e["status"] for e in entries} == {"spent"}
    assert {e["principal"] for e in entries} == {"pipeline"}
    assert all(e["kind"] == "publication" and e["run_id"] == "run-1" and e["composition"] for e in entries)

    # values: truth within widened intervals; empty public cells are zero plus noise
    truth = bounded_truth(settings.warehouse, {n: s.max_contributions for n, s in specs.items()})
    for name, measures in (
        ("tickets_by_month_channel_priority", ("tickets",)),
        ("satisfaction_by_channel", ("tickets",)),
        ("customers_by_lifecycle_segment", ("customers",)),
        ("deal_value_by_stage_region", ("total_amount", "deals")),
    ):
        seen = 0
        for r in read_mart(db, name):
            exact = truth[name].get(tuple(r[k] for k in KEYS[name]), (0.0,) * len(measures))
            seen += tuple(r[k] for k in KEYS[name]) in truth[name]
            for col, value in zip(measures, exact, strict=True):
                assert r[f"{col}_ci_low"] <= r[col] <= r[f"{col}_ci_high"], (name, r)
                assert _within(r[col], value, r[f"{col}_ci_low"], r[f"{col}_ci_high"]), (name, r, value)
        assert seen == len(truth[name]), f"{name}: a non-empty cell is missing"
    priorities = read_mart(db, "resolution_hours_by_priority")
    assert [r["priority"] for r in priorities] == sorted(PRIORITIES)
    for r in priorities:
        avg, n, q25, q50, q75 = truth["resolution_hours_by_priority"][(r["priority"],)]
        assert abs(r["avg_resolution_hours"] - avg) <= 0.3 * avg
        assert r["avg_resolution_hours_ci_low"] < r["avg_resolution_hours_ci_high"]
        assert _within(r["solved_tickets"], n, r["solved_tickets_ci_low"], r["solved_tickets_ci_high"])
        assert 0 <= r["resolution_hours_p25"] <= r["resolution_hours_p50"] <= r["resolution_hours_p75"] <= 336
        for col, exact in (("p25", q25), ("p50", q50), ("p75", q75)):
            assert abs(r[f"resolution_hours_{col}"] - exact) <= 0.2 * exact + 14, (r, col, exact)
            assert r[f"resolution_hours_{col}_ci_low"] <= r[f"resolution_hours_{col}_ci_high"]

    # same fingerprint and specs: skipped, nothing spent, file untouched
    before = (db.read_bytes(), db.stat().st_mtime_ns)
    again = publish_marts(settings, "run-2", "fp-a")
    assert again.status == "skipped"
    assert again.published_run_id == "run-1" and again.run_id == "run-2"
    assert again.epsilon_spent == 0.0 and again.delta_spent == 0.0
    assert {m.name for m in again.marts} == set(MARTS)
    assert (db.read_bytes(), db.stat().st_mtime_ns) == before
    assert json.loads(json.dumps(again.to_dict()))["status"] == "skipped"
    assert len(Ledger.open(settings).entries()) == len(MARTS)

    # new input: published again, and charged again
    third = publish_marts(settings, "run-3", "fp-b")
    assert third.status == "published"
    assert {r["run_id"] for r in read_catalog(db).values()} == {"run-3"}
    assert len(Ledger.open(settings).entries()) == 2 * len(MARTS)


def test_analysts_open_the_marts_read_only_from_python_and_sqlalchemy(settings: Settings, tmp_path: Path) -> None:
    build_warehouse(settings.warehouse, n_contacts=200)
    publish_marts(settings, "run-1", "fp-a")
    db = settings.published

    with duckdb.connect(str(db), read_only=True) as con:
        (n,) = con.execute("SELECT count(*) FROM satisfaction_by_channel").fetchone()
        assert n == GRID["satisfaction_by_channel"]
        with pytest.raises(duckdb.Error):
            con.execute("DELETE FROM satisfaction_by_channel")
    assert db.stat().st_mode & 0o777 == 0o444  # and the file itself is read-only for everyone but root

    # BI tools (Superset, Metabase via SQLAlchemy): duckdb-engine, read-only
    from sqlalchemy import create_engine, text

    engine = create_engine(f"duckdb:///{db}", connect_args={"read_only": True})
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT mart, epsilon FROM dp_marts ORDER BY mart")).fetchall()
        assert [r[0] for r in rows] == sorted(MARTS)
        with pytest.raises(Exception, match="read-only|read only"):
            conn.execute(text("CREATE TABLE leak AS SELECT 1 AS x"))
    engine.dispose()


def test_huge_epsilon_matches_contribution_bounded_truth(settings: Settings, tmp_path: Path, unlimited: None) -> None:
    build_warehouse(settings.warehouse, n_contacts=100)
    marts_dir = huge_epsilon_specs(tmp_path, max_contributions=5)

    result = publish_marts(settings, "run-huge", "fp-huge", marts_dir=marts_dir)

    assert result.status == "published"
    db = settings.published
    truth = bounded_truth(settings.warehouse, dict.fromkeys(MARTS, 5))

    months = read_mart(db, "tickets_by_month_channel_priority")
    assert len(months) == GRID["tickets_by_month_channel_priority"]
    for r in months:
        (exact,) = truth["tickets_by_month_channel_priority"].get(
            tuple(r[k] for k in KEYS["tickets_by_month_channel_priority"]), (0,)
        )
        assert abs(r["tickets"] - exact) <= 1
    # the whale's 60 tickets count as 5 (max_contributions), not 60
    whale_cell = next(
        r for r in months if (r["created_month"], r["channel"], r["priority"]) == ("2024-01", "email", "urgent")
    )
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        (raw_cell,) = con.execute(
            "SELECT count(*) FROM marts.tickets"
            " WHERE created_month = '2024-01' AND channel = 'email' AND priority = 'urgent'"
        ).fetchone()
    assert abs(whale_cell["tickets"] - (raw_cell - WHALE_TICKETS + 5)) <= 1

    for r in read_mart(db, "resolution_hours_by_priority"):
        avg, n, *_ = truth["resolution_hours_by_priority"][(r["priority"],)]
        assert math.isclose(r["avg_resolution_hours"], avg, rel_tol=1e-2)
        assert abs(r["solved_tickets"] - n) <= 1

    stages = read_mart(db, "deal_value_by_stage_region")
    assert len(stages) == GRID["deal_value_by_stage_region"]
    for r in stages:
        total, n = truth["deal_value_by_stage_region"].get((r["stage"], r["region"]), (0.0, 0))
        assert abs(r["total_amount"] - total) <= 1e-3 * total + 60  # Laplace scale 5 at this epsilon
        assert abs(r["deals"] - n) <= 1
        assert r["total_amount_ci_low"] <= r["total_amount"] <= r["total_amount_ci_high"]

    catalog = read_catalog(db)
    for name in MARTS:
        assert math.isclose(catalog[name]["epsilon"], 100_000.0, rel_tol=1e-6)
        assert catalog[name]["max_contributions"] == 5


def test_publication_over_budget_is_refused_before_it_runs(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_warehouse(settings.warehouse, n_contacts=100)
    monkeypatch.setenv("CRMSHIELD_DP_BUDGET", str(budget_file(tmp_path, 8.0)))
    first = publish_marts(settings, "run-1", "fp-1")  # 5.5 of 8
    db = settings.published
    before = (db.read_bytes(), db.stat().st_mtime_ns)

    def no_noise(*args: object, **kwargs: object) -> None:
        raise AssertionError("a refused publication must not evaluate any mart")

    monkeypatch.setattr(publish_mod, "_evaluate", no_noise)
    with pytest.raises(BudgetExceeded) as err:
        publish_marts(settings, "run-2", "fp-2")
    message = str(err.value)
    assert "crm_customers" in message and "remain" in message
    assert "2.5" in message  # what is left of 8 after 5.5
    assert re.search(r"refresh\w* .*\d{4}-\d{2}-01", message)
    assert (db.read_bytes(), db.stat().st_mtime_ns) == before
    assert {r["run_id"] for r in read_catalog(db).values()} == {first.run_id}
    statuses = [e["status"] for e in Ledger.open(settings).entries()]
    assert statuses.count("spent") == len(MARTS) and "refused" in statuses


def test_failed_publish_leaves_previous_analyst_db(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unlimited: None
) -> None:
    build_warehouse(settings.warehouse, n_contacts=100)
    # one cheap mart is enough to exercise the swap
    marts_dir = huge_epsilon_specs(tmp_path, only=("satisfaction_by_channel",))
    publish_marts(settings, "run-ok", "fp-1", marts_dir=marts_dir)
    db = settings.published
    before = (db.read_bytes(), db.stat().st_mtime_ns)

    def unchanged() -> bool:
        return (db.read_bytes(), db.stat().st_mtime_ns) == before and sorted(p.name for p in db.parent.iterdir()) == [
            db.name
        ]

    query = marts_dir / "satisfaction_by_channel.sql"
    good_sql = query.read_text()

    # a query SmartNoise rejects (SUM over a string column)
    query.write_text(good_sql.replace("COUNT(*) AS tickets", "SUM(channel) AS tickets"))
    with pytest.raises(MartSpecError, match="satisfaction_by_channel.sql") as err:
        publish_marts(settings, "run-broken", "fp-2", marts_dir=marts_dir)
    assert "SmartNoise SQL rejects the query" in str(err.value)
    assert unchanged()

    # a query naming a column the source table does not have
    query.write_text(good_sql.replace("channel", "chanel"))
    with pytest.raises(MartSpecError, match="'chanel' is not in marts.tickets"):
        publish_marts(settings, "run-typo", "fp-3", marts_dir=marts_dir)
    assert unchanged()
    # a numeric measure without declared bounds
    query.write_text(good_sql.replace("COUNT(*) AS tickets", "SUM(resolution_hours) AS tickets"))
    with pytest.raises(MartSpecError, match="'resolution_hours' is aggregated .* needs bounds"):
        publish_marts(settings, "run-unbounded", "fp-5", marts_dir=marts_dir)
    assert unchanged()
    # post-filters would publish an incomplete grid
    query.write_text(good_sql.rstrip() + "\nHAVING COUNT(*) > 5\n")
    with pytest.raises(MartSpecError, match="HAVING is not allowed in a mart"):
        publish_marts(settings, "run-having", "fp-6", marts_dir=marts_dir)
    assert unchanged()
    query.write_text(good_sql)
    # public keys for a column the query does not group by
    spec_path = marts_dir / "satisfaction_by_channel.yml"
    good_spec = spec_path.read_text()
    data = yaml.safe_load(good_spec)
    data["public_keys"]["priority"] = ["low"]
    spec_path.write_text(yaml.safe_dump(data))
    with pytest.raises(MartSpecError, match="'public_keys.priority'.* not a GROUP BY column"):
        publish_marts(settings, "run-keys", "fp-7", marts_dir=marts_dir)
    assert unchanged()
    spec_path.write_text(good_spec)
    query.write_text(good_sql)
    entries_before = len(Ledger.open(settings).entries())

    # failure after the temp DB was fully written, just before the swap
    real_write = publish_mod._write_analyst_db

    def write_then_fail(path: Path, *args: object, **kwargs: object) -> None:
        real_write(path, *args, **kwargs)
        assert path.is_file() and path.name == "analyst.duckdb.tmp-run-disk"
        raise OSError("disk full")

    monkeypatch.setattr(publish_mod, "_write_analyst_db", write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        publish_marts(settings, "run-disk", "fp-4", marts_dir=marts_dir)
    assert unchanged()
    assert {r["run_id"] for r in read_catalog(db).values()} == {"run-ok"}
    # nothing was released, so the reservation was cancelled and costs nothing
    cancelled = Ledger.open(settings).entries()[entries_before:]
    assert [e["status"] for e in cancelled] == ["cancelled"]
    assert "OSError" in cancelled[0]["reason"]


def test_spec_with_unknown_key_is_rejected_before_any_publication(settings: Settings, tmp_path: Path) -> None:
    build_warehouse(settings.warehouse, n_contacts=10)
    marts_dir = huge_epsilon_specs(tmp_path)
    spec = marts_dir / "deal_value_by_stage_region.yml"
    data = yaml.safe_load(spec.read_text())
    data["epsilon_total"] = 2.0
    spec.write_text(yaml.safe_dump(data))

    with pytest.raises(MartSpecError) as err:
        publish_marts(settings, "run-x", "fp-x", marts_dir=marts_dir)
    assert str(spec) in str(err.value)
    assert "unknown key 'epsilon_total'" in str(err.value)
    assert not settings.published.exists()


def test_missing_warehouse_raises_and_writes_nothing(settings: Settings) -> None:
    with pytest.raises(FileNotFoundError, match="warehouse"):
        publish_marts(settings, "run-x", "fp-x")
    assert not settings.published.exists()


def _publish_in_process(data_dir: str, budget: str, run_id: str, barrier: object, results: object) -> None:
    import os

    os.environ["CRMSHIELD_DATA_DIR"] = data_dir
    os.environ["CRMSHIELD_DP_BUDGET"] = budget
    from crmshield.budget import BudgetExceeded
    from crmshield.config import Settings
    from crmshield.publish import publish_marts

    settings = Settings.from_env()
    barrier.wait(timeout=120)  # type: ignore[attr-defined]
    try:
        res = publish_marts(settings, run_id, f"fp-{run_id}")
        results.put((run_id, res.status, res.epsilon_spent))  # type: ignore[attr-defined]
    except BudgetExceeded as exc:
        results.put((run_id, "refused", str(exc)))  # type: ignore[attr-defined]


def test_two_concurrent_publishers_cannot_overspend(settings: Settings, tmp_path: Path) -> None:
    """Two real processes publish at once against a budget that covers one publication."""
    import multiprocessing as mp

    build_warehouse(settings.warehouse, n_contacts=100)
    budget = budget_file(tmp_path, 8.0)  # one publication costs 5.5
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_publish_in_process, args=(str(settings.data_dir), str(budget), rid, barrier, results))
        for rid in ("run-a", "run-b")
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    statuses = sorted(o[1] for o in outcomes)
    assert statuses == ["published", "refused"], outcomes
    winner = next(o[0] for o in outcomes if o[1] == "published")
    refused = next(o for o in outcomes if o[1] == "refused")
    assert "remain" in refused[2]

    entries = Ledger(settings.dp_ledger, load_budget_config(budget)).entries()
    counted = [e for e in entries if e["status"] in ("spent", "reserved")]
    assert {e["run_id"] for e in counted} == {winner}
    assert math.fsum(e["epsilon"] for e in counted) <= 8.0
    assert {r["run_id"] for r in read_catalog(settings.published).values()} == {winner}


@pytest.mark.parametrize(
    ("sabotage", "check"),
    [
        ("ALTER TABLE satisfaction_by_channel DROP COLUMN tickets_ci_high", "every_measure_has_ci"),
        ("ALTER TABLE satisfaction_by_channel ADD COLUMN contact_pk VARCHAR", "no_unexpected_columns"),
        ("UPDATE _dp_catalog SET epsilon = 0", "epsilon_positive"),
        ("UPDATE _dp_catalog SET mart = 'something_else'", "declared_marts"),
        ("ledger: an out-of-band spend past the cap", "budget_not_exhausted"),
    ],
)
def test_marts_are_validated_before_they_replace_the_published_ones(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unlimited: None, sabotage: str, check: str
) -> None:
    """published__marts (GX checkpoint with Data Docs) runs on the new file before the swap."""
    from crmshield.validate import ValidationFailed

    build_warehouse(settings.warehouse, n_contacts=60)
    marts_dir = huge_epsilon_specs(tmp_path, only=("satisfaction_by_channel",))
    publish_marts(settings, "run-ok", "fp-1", marts_dir=marts_dir)
    db = settings.published
    before = (db.read_bytes(), db.stat().st_mtime_ns)
    docs = list(settings.data_docs.rglob("*.html"))
    assert any("published__marts" in p.read_text(encoding="utf-8", errors="replace") for p in docs)

    real_write = publish_mod._write_analyst_db

    def write_then_sabotage(path: Path, *args: object, **kwargs: object) -> None:
        real_write(path, *args, **kwargs)
        if sabotage.startswith("ledger:"):
            # someone spent around the ledger's lock while this publication ran: budget gone
            import sqlite3
            from datetime import UTC, datetime

            now = datetime.now(UTC).isoformat()
            with sqlite3.connect(settings.dp_ledger) as con:
                con.execute(
                    "INSERT INTO ledger (reservation_id, created_at, updated_at, population, principal, kind,"
                    " what, fingerprint, epsilon, delta, composition, status)"
                    " VALUES ('rogue', ?, ?, 'crm_customers', 'rogue', 'publication', 'x', 'x', 2e9, 0, 'basic',"
                    " 'spent')",
                    [now, now],
                )
            return
        with duckdb.connect(str(path)) as con:
            con.execute(sabotage)

    monkeypatch.setattr(publish_mod, "_write_analyst_db", write_then_sabotage)
    with pytest.raises(ValidationFailed) as err:
        publish_marts(settings, "run-bad", "fp-2", marts_dir=marts_dir)
    message = str(err.value)
    assert "the marts about to be published" in message
    assert "published__marts" in message and f"[{check}]" in message
    assert (db.read_bytes(), db.stat().st_mtime_ns) == before  # previous marts untouched
    assert sorted(p.name for p in db.parent.iterdir()) == [db.name]
    (bad,) = [e for e in Ledger.open(settings).entries() if e["run_id"] == "run-bad"]
    assert bad["status"] == "cancelled"  # nothing was released

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
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml

from crmshield import publish as publish_mod
from crmshield.config import Settings
from crmshield.publish import (
    CATALOG_TABLE,
    MartSpecError,
    load_mart_specs,
    publish_marts,
)

pytestmark = pytest.mark.integration

MARTS = (
    "deal_value_by_stage",
    "resolution_hours_by_priority",
    "tickets_by_month_channel",
)
MONTHS = ("2024-01", "2024-02")
CHANNELS = ("email", "web", "chat", "voice", "api")
PRIORITIES = ("low", "normal", "high", "urgent")
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
    for c in range(n_contacts):
        contact = _pk("c", c)
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
                    "good",
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
                    ("AMER", "EMEA", "APAC")[c % 3],
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
        for table, rows in (("tickets", tickets), ("deal_pipeline", deals)):
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

        m = max_contrib["tickets_by_month_channel"]
        by_month = con.execute(
            f"SELECT created_month, channel, count(*) FROM {capped('marts.tickets', 'ticket_pk', '', m)} GROUP BY ALL"
        ).fetchall()
        m = max_contrib["resolution_hours_by_priority"]
        by_priority = con.execute(
            "SELECT priority, avg(least(greatest(resolution_hours, 0), 336)),"
            " count(resolution_hours)"
            f" FROM {capped('marts.tickets', 'ticket_pk', 'AND is_solved', m)} GROUP BY ALL"
        ).fetchall()
        m = max_contrib["deal_value_by_stage"]
        by_stage = con.execute(
            "SELECT stage, sum(least(greatest(amount::DOUBLE, 0), 50000)), count(*)"
            f" FROM {capped('marts.deal_pipeline', 'deal_pk', '', m)} GROUP BY ALL"
        ).fetchall()
    return {
        "tickets_by_month_channel": {(r[0], r[1]): (r[2],) for r in by_month},
        "resolution_hours_by_priority": {(r[0],): (r[1], r[2]) for r in by_priority},
        "deal_value_by_stage": {(r[0],): (r[1], r[2]) for r in by_stage},
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
        (out / spec.spec_path.name).write_text(yaml.safe_dump(data))
    return out


@pytest.fixture()
def settings(data_dir: Path) -> Settings:
    return Settings.from_env()


def test_publish_shipped_marts_and_skip_on_same_fingerprint(settings: Settings) -> None:
    build_warehouse(settings.warehouse, n_contacts=1500)
    specs = {s.name: s for s in load_mart_specs(settings.marts_sql)}
    assert tuple(specs) == MARTS

    result = publish_marts(settings, "run-1", "fp-a")

    db = settings.published
    assert result.status == "published"
    assert result.analyst_db == db and db.is_file()
    assert not list(db.parent.glob("*.tmp-*"))
    with duckdb.connect(str(db), read_only=True) as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        views = con.execute("SELECT count(*) FROM duckdb_views() WHERE NOT internal").fetchone()
        columns = {r[0] for r in con.execute("SELECT column_name FROM duckdb_columns()").fetchall()}
    assert tables == {*MARTS, CATALOG_TABLE}
    assert views == (0,)
    assert "contact_pk" not in columns and "ticket_pk" not in columns  # nothing row-level

    catalog = read_catalog(db)
    assert set(catalog) == set(MARTS)
    for name, spec in specs.items():
        row = catalog[name]
        assert math.isclose(row["epsilon"], spec.epsilon, rel_tol=1e-6)
        assert math.isclose(row["delta"], spec.delta, rel_tol=1e-3)
        assert row["epsilon"] <= spec.epsilon * (1 + 1e-9)
        assert row["delta"] <= spec.delta * (1 + 1e-9)
        assert row["privacy_unit"] == "contact_pk"
        assert row["max_contributions"] == spec.max_contributions
        assert json.loads(row["bounds"]) == spec.bounds
        assert row["source_table"] == spec.source
        assert row["run_id"] == "run-1" and row["input_fingerprint"] == "fp-a"
        assert row["spec_sha256"] == spec.spec_sha256
        assert row["row_count"] == len(read_mart(db, name))
        assert "laplace" in row["mechanism"]
    assert json.loads(catalog["deal_value_by_stage"]["bounds"]) == {"amount": {"lower": 0.0, "upper": 50000.0}}

    # result object, JSON-safe for the manifest
    as_dict = json.loads(json.dumps(result.to_dict()))
    assert as_dict["status"] == "published" and as_dict["run_id"] == "run-1"
    assert {m["name"] for m in as_dict["marts"]} == set(MARTS)
    assert math.isclose(result.epsilon_spent, sum(s.epsilon for s in specs.values()), rel_tol=1e-6)

    # values: every group is large, so none is censored; truth within widened CIs
    truth = bounded_truth(settings.warehouse, {n: s.max_contributions for n, s in specs.items()})
    months = read_mart(db, "tickets_by_month_channel")
    assert len(months) == len(truth["tickets_by_month_channel"]) == 10
    for r in months:
        (exact,) = truth["tickets_by_month_channel"][(r["created_month"], r["channel"])]
        half = (r["tickets_ci_high"] - r["tickets_ci_low"]) / 2
        assert 0 < half < 100
        assert r["tickets_ci_low"] <= r["tickets"] <= r["tickets_ci_high"]
        assert abs(r["tickets"] - exact) <= 4 * half + 1
    priorities = read_mart(db, "resolution_hours_by_priority")
    assert {r["priority"] for r in priorities} == set(PRIORITIES)
    for r in priorities:
        avg, n = truth["resolution_hours_by_priority"][(r["priority"],)]
        assert abs(r["avg_resolution_hours"] - avg) <= 0.3 * avg
        half = (r["solved_tickets_ci_high"] - r["solved_tickets_ci_low"]) / 2
        assert abs(r["solved_tickets"] - n) <= 4 * half + 1
        assert "avg_resolution_hours_ci_low" not in r  # no SmartNoise interval for AVG
    stages = read_mart(db, "deal_value_by_stage")
    assert {r["stage"] for r in stages} == set(STAGES)
    for r in stages:
        total, n = truth["deal_value_by_stage"][(r["stage"],)]
        for col, exact in (("total_amount", total), ("deals", n)):
            half = (r[f"{col}_ci_high"] - r[f"{col}_ci_low"]) / 2
            assert abs(r[col] - exact) <= 4 * half + 1

    # same fingerprint and specs: skipped, nothing spent, file untouched
    before = (db.read_bytes(), db.stat().st_mtime_ns)
    again = publish_marts(settings, "run-2", "fp-a")
    assert again.status == "skipped"
    assert again.published_run_id == "run-1" and again.run_id == "run-2"
    assert again.epsilon_spent == 0.0 and again.delta_spent == 0.0
    assert {m.name for m in again.marts} == set(MARTS)
    assert (db.read_bytes(), db.stat().st_mtime_ns) == before
    assert json.loads(json.dumps(again.to_dict()))["status"] == "skipped"

    # new input: published again
    third = publish_marts(settings, "run-3", "fp-b")
    assert third.status == "published"
    assert {r["run_id"] for r in read_catalog(db).values()} == {"run-3"}


def test_huge_epsilon_matches_contribution_bounded_truth(settings: Settings, tmp_path: Path) -> None:
    build_warehouse(settings.warehouse, n_contacts=100)
    marts_dir = huge_epsilon_specs(tmp_path, max_contributions=5)

    result = publish_marts(settings, "run-huge", "fp-huge", marts_dir=marts_dir)

    assert result.status == "published"
    db = settings.published
    truth = bounded_truth(settings.warehouse, dict.fromkeys(MARTS, 5))

    months = read_mart(db, "tickets_by_month_channel")
    assert {(r["created_month"], r["channel"]) for r in months} == set(truth["tickets_by_month_channel"])
    for r in months:
        (exact,) = truth["tickets_by_month_channel"][(r["created_month"], r["channel"])]
        assert abs(r["tickets"] - exact) <= 1
    # the whale's 60 tickets count as 5 (max_contributions), not 60
    whale_cell = next(r for r in months if (r["created_month"], r["channel"]) == ("2024-01", "email"))
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        (raw_cell,) = con.execute(
            "SELECT count(*) FROM marts.tickets WHERE created_month = '2024-01' AND channel = 'email'"
        ).fetchone()
    assert abs(whale_cell["tickets"] - (raw_cell - WHALE_TICKETS + 5)) <= 1

    for r in read_mart(db, "resolution_hours_by_priority"):
        avg, n = truth["resolution_hours_by_priority"][(r["priority"],)]
        assert math.isclose(r["avg_resolution_hours"], avg, rel_tol=1e-2)
        assert abs(r["solved_tickets"] - n) <= 1

    stages = read_mart(db, "deal_value_by_stage")
    assert len(stages) == len(STAGES)
    for r in stages:
        total, n = truth["deal_value_by_stage"][(r["stage"],)]
        assert math.isclose(r["total_amount"], total, rel_tol=1e-3)
        assert abs(r["deals"] - n) <= 1
        assert r["total_amount_ci_low"] <= r["total_amount"] <= r["total_amount_ci_high"]

    catalog = read_catalog(db)
    for name in MARTS:
        assert math.isclose(catalog[name]["epsilon"], 100_000.0, rel_tol=1e-6)
        assert catalog[name]["max_contributions"] == 5


def test_failed_publish_leaves_previous_analyst_db(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_warehouse(settings.warehouse, n_contacts=100)
    # one cheap mart is enough to exercise the swap
    marts_dir = huge_epsilon_specs(tmp_path, only=("tickets_by_month_channel",))
    publish_marts(settings, "run-ok", "fp-1", marts_dir=marts_dir)
    db = settings.published
    before = (db.read_bytes(), db.stat().st_mtime_ns)

    def unchanged() -> bool:
        return (db.read_bytes(), db.stat().st_mtime_ns) == before and sorted(p.name for p in db.parent.iterdir()) == [
            db.name
        ]

    query = marts_dir / "tickets_by_month_channel.sql"
    good_sql = query.read_text()

    # a query SmartNoise rejects (SUM over a string column)
    query.write_text(good_sql.replace("COUNT(*) AS tickets", "SUM(channel) AS tickets"))
    with pytest.raises(MartSpecError, match="tickets_by_month_channel.sql") as err:
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
    query.write_text(good_sql)

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


def test_spec_with_unknown_key_is_rejected_before_any_publication(settings: Settings, tmp_path: Path) -> None:
    build_warehouse(settings.warehouse, n_contacts=10)
    marts_dir = huge_epsilon_specs(tmp_path)
    spec = marts_dir / "deal_value_by_stage.yml"
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

"""Interactive DP queries (crmshield.dp_query and `crmshield query` / `crmshield budget`).

A small warehouse with the dbt marts' tables and columns is built with DuckDB
SQL (no dbt); the budgets come from a test budget file. Noise is random, so
value checks use a huge epsilon (noise negligible) or the released intervals.
"""

from __future__ import annotations

import json
import math
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
import yaml
from typer.testing import CliRunner

from crmshield import dp_release
from crmshield.budget import BudgetExceeded, Ledger, UnknownAnalyst
from crmshield.cli import EXIT_BUDGET_REFUSED, EXIT_QUERY_REFUSED, app
from crmshield.config import Settings
from crmshield.dp_query import (
    DPQueryError,
    DPQueryFailed,
    DPSession,
    QueryTablesError,
    audit_path,
    load_query_tables,
    query_tables_path,
    read_audit,
    resolve_analyst,
)

pytestmark = pytest.mark.integration

N_CUSTOMERS = 600
RARE_COUNTRY = "IS"  # two customers: always below the threshold
T0 = datetime(2025, 3, 12, 15, 30, tzinfo=UTC)  # a Wednesday

BUDGET = {
    "population": "crm_customers",
    "budget": {"epsilon": 1.0e6, "delta": 0.5, "period": "month"},
    "analysts": {
        "alice": {"epsilon": 3.0, "delta": 1.0e-5, "period": "week"},
        "bob": {"epsilon": 1.0, "delta": 1.0e-5, "period": "day"},
        "carol": {"epsilon": 1.0e6, "delta": 0.1, "period": "month"},
    },
}

WAREHOUSE_SQL = f"""
CREATE SCHEMA marts;
CREATE SCHEMA raw;
CREATE TABLE raw.contacts AS SELECT 'someone@example.com' AS email;
CREATE TABLE marts.customers AS
SELECT
    'v1_' || md5('c' || i) AS contact_pk,
    NULL::VARCHAR AS company_pk,
    ['18-24', '25-34', '35-44', '45-54'][1 + i % 4] AS age_band,
    CASE WHEN i < 2 THEN '{RARE_COUNTRY}' ELSE ['DE', 'FR', 'US'][1 + i % 3] END AS country,
    CASE WHEN i < 2 THEN 'EMEA' ELSE ['EMEA', 'EMEA', 'AMER'][1 + i % 3] END AS region,
    ['lead', 'customer', 'opportunity'][1 + i % 3] AS lifecycle_stage,
    DATE '2024-01-01' + (i % 300)::INTEGER AS created_on,
    3::BIGINT AS ticket_count,
    (1 + i % 2)::BIGINT AS deal_count,
    CAST(CASE WHEN i = 5 THEN 900000 ELSE (i * 37) % 20000 END AS DECIMAL(18, 2)) AS won_amount
FROM range({N_CUSTOMERS}) AS t(i);
CREATE TABLE marts.tickets AS
SELECT
    't' || i || '_' || j AS ticket_pk,
    'v1_' || md5('c' || i) AS contact_pk,
    ['email', 'web', 'chat', 'voice', 'api'][1 + (i + j) % 5] AS channel,
    ['low', 'normal', 'high', 'urgent'][1 + (i + 2 * j) % 4] AS priority,
    CASE WHEN (i + j) % 3 = 0 THEN 'open' ELSE 'solved' END AS status,
    'good' AS satisfaction,
    DATE '2024-01-05' + (j * 31)::INTEGER AS created_on,
    strftime(DATE '2024-01-05' + (j * 31)::INTEGER, '%Y-%m') AS created_month,
    NULL::DATE AS solved_on,
    (i + j) % 3 <> 0 AS is_solved,
    CASE WHEN (i + j) % 3 <> 0 THEN ((i * 7 + j * 13) % 300)::DOUBLE + 0.5 END AS resolution_hours,
    NULL::VARCHAR AS resolution_bucket
FROM range({N_CUSTOMERS}) AS t(i), range(3) AS u(j);
CREATE TABLE marts.deal_pipeline AS
SELECT
    'd' || i AS deal_pk,
    CASE WHEN i < {N_CUSTOMERS} THEN 'v1_' || md5('c' || i) END AS contact_pk,
    NULL::VARCHAR AS company_pk,
    ['qualifiedtobuy', 'closedwon', 'closedlost'][1 + i % 3] AS stage,
    'Sales Pipeline' AS pipeline,
    ['AMER', 'EMEA', 'APAC'][1 + i % 3] AS region,
    CAST(1000 + (i * 37) % 20000 AS DECIMAL(18, 2)) AS amount,
    'EUR' AS currency,
    DATE '2024-02-01' AS created_on,
    NULL::DATE AS close_date,
    i % 3 > 0 AS is_closed,
    i % 3 = 1 AS is_won
FROM range({N_CUSTOMERS} + 1) AS t(i);
"""

COUNT_BY_CHANNEL = "SELECT channel, COUNT(*) AS tickets FROM marts.tickets GROUP BY channel"
BY_COUNTRY = "SELECT country, COUNT(*) AS customers FROM marts.customers GROUP BY country"


class Clock:
    def __init__(self, at: datetime = T0) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture(scope="module")
def warehouse_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("wh") / "warehouse.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(WAREHOUSE_SQL)
    return path


@pytest.fixture()
def settings(data_dir: Path, tmp_path: Path, warehouse_file: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    budget = tmp_path / "dp_budget.yml"
    budget.write_text(yaml.safe_dump(BUDGET), encoding="utf-8")
    monkeypatch.setenv("CRMSHIELD_DP_BUDGET", str(budget))
    monkeypatch.delenv("CRMSHIELD_ANALYST", raising=False)
    monkeypatch.delenv("CRMSHIELD_DP_QUERY_TABLES", raising=False)
    s = Settings.from_env()
    s.warehouse.parent.mkdir(parents=True)
    shutil.copy(warehouse_file, s.warehouse)
    return s


def session(settings: Settings, analyst: str, clock: Clock | None = None) -> DPSession:
    return DPSession(settings, analyst, ledger=Ledger.open(settings, clock=clock or Clock()))


def entries(settings: Settings) -> list[dict]:
    return Ledger.open(settings).entries()


# --------------------------------------------------------------------------
# explain
# --------------------------------------------------------------------------


def test_explain_spends_nothing_and_reports_cost_error_and_suppression(settings: Settings) -> None:
    s = session(settings, "alice")
    before = s.remaining()

    grid = s.explain(
        "SELECT channel, COUNT(*) AS tickets, SUM(resolution_hours) AS hours, AVG(resolution_hours) AS avg_hours"
        " FROM marts.tickets WHERE is_solved GROUP BY channel"
    )
    rare = s.explain(BY_COUNTRY, epsilon=0.3)

    # cost: SmartNoise's accounting calibrated to the table default (0.5) / the requested epsilon
    assert 0.5 * (1 - 1e-6) <= grid.epsilon <= 0.5 and grid.requested_epsilon == 0.5
    assert 0.3 * (1 - 1e-6) <= rare.epsilon <= 0.3
    assert grid.delta == 0.0  # full public grid, Laplace only: pure epsilon-DP
    assert 0 < rare.delta <= 1e-7  # the threshold is what costs delta
    assert len(grid.statistics) == 3 and math.isclose(grid.epsilon_per_statistic * 3, grid.epsilon, rel_tol=1e-6)
    # expected error: +/- half-widths for COUNT and SUM, a statement for AVG
    by_name = {m.name: m for m in grid.measures}
    assert by_name["tickets"].kind == "count" and by_name["tickets"].half_width > 0
    assert by_name["hours"].kind == "sum" and by_name["hours"].half_width > by_name["tickets"].half_width
    assert by_name["avg_hours"].kind == "derived" and by_name["avg_hours"].half_width is None
    assert "AVG = noisy SUM / noisy COUNT" in by_name["avg_hours"].note
    assert grid.bounds == {"resolution_hours": (0.0, 336.0)}
    # suppression: public keys -> full grid; otherwise the tau threshold
    assert not grid.thresholded and grid.tau is None and grid.grid_cells == 5
    assert grid.suppression.startswith("none")
    assert rare.thresholded and rare.tau is not None and rare.tau > 10
    assert f"fewer than ~{math.ceil(rare.tau)} distinct customers are suppressed" in rare.suppression
    assert grid.fits and grid.budget_message is None
    text = grid.describe()
    assert "Cost: epsilon=0.5" in text and "Would run: yes" in text and "+/- " in text

    # nothing spent, nothing in the ledger; the explains are audited
    assert s.remaining() == before
    assert entries(settings) == []
    audit = read_audit(settings)
    assert [(a["action"], a["status"], a["analyst"]) for a in audit] == [("explain", "explained", "alice")] * 2
    assert audit[0]["epsilon"] == pytest.approx(grid.epsilon) and audit[0]["reservation_id"] is None
    assert json.loads(json.dumps(grid.to_dict()))["measures"][0]["name"] == "tickets"


# --------------------------------------------------------------------------
# query
# --------------------------------------------------------------------------


def test_query_spends_is_audited_and_releases_intervals(settings: Settings) -> None:
    s = session(settings, "alice")
    sql = (
        "SELECT channel, COUNT(*) AS tickets, AVG(resolution_hours) AS avg_hours FROM marts.tickets"
        " WHERE is_solved GROUP BY channel ORDER BY tickets DESC LIMIT 3"
    )

    result = s.query(sql)

    frame = result.frame
    assert list(frame.columns) == [
        "channel",
        "tickets",
        "tickets_ci_low",
        "tickets_ci_high",
        "avg_hours",
        "avg_hours_ci_low",
        "avg_hours_ci_high",
    ]
    assert len(frame) == 3  # LIMIT, applied to the released grid of 5 channels
    assert list(frame["tickets"]) == sorted(frame["tickets"], reverse=True)  # ORDER BY ... DESC
    assert (frame["tickets_ci_low"] <= frame["tickets"]).all() and (frame["tickets"] <= frame["tickets_ci_high"]).all()
    assert (frame["avg_hours_ci_low"] < frame["avg_hours_ci_high"]).all()
    assert result.measures == ["tickets", "avg_hours"] and "laplace" in result.mechanism and result.tau is None

    # the ledger: who, what, epsilon, delta, composition, when
    (entry,) = entries(settings)
    assert entry["status"] == "spent" and entry["kind"] == "query"
    assert entry["principal"] == "alice" and entry["analyst"] == "alice"
    assert entry["what"] == sql and entry["run_id"] == result.query_id
    assert entry["epsilon"] == pytest.approx(result.epsilon) and 0.5 * (1 - 1e-6) <= entry["epsilon"] <= 0.5
    assert entry["delta"] == pytest.approx(result.delta) == 0.0  # public grid: no threshold, no delta
    assert "basic sequential" in entry["composition"]
    assert entry["created_at"].startswith(T0.date().isoformat())
    # both budgets charged
    left = s.remaining()
    assert left["analyst"]["spent_epsilon"] == pytest.approx(result.epsilon)
    assert left["population"]["spent_epsilon"] == pytest.approx(result.epsilon)
    assert result.remaining == left
    # audited, linked to the ledger reservation
    (audit,) = read_audit(settings)
    assert audit["status"] == "released" and audit["action"] == "query" and audit["analyst"] == "alice"
    assert audit["query_id"] == result.query_id and audit["reservation_id"] == result.reservation_id
    assert audit["table"] == "marts.tickets" and audit["rows"] == 3 and audit["sql"] == sql
    assert (audit_path(settings).stat().st_mode & 0o777) == 0o600
    as_dict = json.loads(json.dumps(result.to_dict()))
    assert as_dict["rows"][0].keys() == set(frame.columns) and as_dict["query_id"] == result.query_id


def test_huge_epsilon_matches_the_exact_answer(settings: Settings) -> None:
    s = session(settings, "carol")

    result = s.query(
        "SELECT COUNT(*) AS n, SUM(won_amount) AS won, AVG(ticket_count) AS avg_tickets FROM marts.customers",
        epsilon=10_000.0,
    )

    (row,) = result.records()
    # one row per customer (max_contributions 1); won_amount clamped to [0, 50000]
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        n, won = con.execute(
            "SELECT count(*), sum(least(greatest(won_amount::DOUBLE, 0), 50000)) FROM marts.customers"
        ).fetchone()
    assert abs(row["n"] - n) <= 1 and row["n_ci_low"] <= n <= row["n_ci_high"] + 1
    half = (row["won_ci_high"] - row["won_ci_low"]) / 2
    assert 0 < half < 200 and abs(row["won"] - won) <= 4 * half + 1
    assert row["avg_tickets"] == pytest.approx(3.0, abs=0.01)
    assert result.tau is None  # ungrouped: one row, never thresholded


def test_rare_groups_are_suppressed_without_public_keys(settings: Settings) -> None:
    result = session(settings, "carol").query(BY_COUNTRY, epsilon=1.0)

    countries = set(result.frame["country"])
    assert countries == {"DE", "FR", "US"}  # 200 customers each; the 2 in IS are below tau
    assert result.tau is not None and "tau_threshold" in result.mechanism
    assert result.group_columns == ["country"]


# --------------------------------------------------------------------------
# budget
# --------------------------------------------------------------------------


def test_budget_exhaustion_is_refused_with_remaining_and_refresh(settings: Settings) -> None:
    clock = Clock()
    s = session(settings, "bob", clock)  # 1.0 epsilon per day
    s.query("SELECT COUNT(*) AS n FROM marts.tickets", epsilon=0.6)

    with pytest.raises(BudgetExceeded) as info:
        s.query(COUNT_BY_CHANNEL, epsilon=0.6)

    err = info.value
    tomorrow = (T0 + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    assert err.scope == "analyst" and err.name == "bob"
    assert err.remaining_epsilon == pytest.approx(0.4, abs=1e-6)
    assert err.refreshes_at == tomorrow
    assert "remaining epsilon=0.4" in err.message and f"refreshes at {tomorrow.isoformat()}" in err.message
    assert [e["status"] for e in entries(settings)] == ["spent", "refused"]
    assert read_audit(settings)[-1]["status"] == "budget_refused"
    # explain tells the same without recording anything
    explained = s.explain(COUNT_BY_CHANNEL, epsilon=0.6)
    assert not explained.fits and "refreshes at" in explained.budget_message
    assert len(entries(settings)) == 2
    # the next day the budget has refreshed
    clock.at = tomorrow + timedelta(minutes=1)
    assert s.explain(COUNT_BY_CHANNEL, epsilon=0.6).fits


def test_unknown_analyst_is_refused_and_recorded(settings: Settings) -> None:
    s = session(settings, "mallory")

    with pytest.raises(UnknownAnalyst, match="unknown analyst 'mallory'"):
        s.explain(COUNT_BY_CHANNEL)
    assert entries(settings) == []  # explain writes no ledger entry
    with pytest.raises(UnknownAnalyst):
        s.query(COUNT_BY_CHANNEL)

    (entry,) = entries(settings)
    assert entry["status"] == "refused" and entry["analyst"] == "mallory" and "unknown analyst" in entry["reason"]
    assert [a["status"] for a in read_audit(settings)] == ["budget_refused", "budget_refused"]


def test_identity_from_option_then_env_then_os_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("getpass.getuser", lambda: "osuser")
    monkeypatch.delenv("CRMSHIELD_ANALYST", raising=False)
    assert resolve_analyst() == "osuser"
    monkeypatch.setenv("CRMSHIELD_ANALYST", "bob")
    assert resolve_analyst() == "bob"
    assert resolve_analyst("alice") == "alice"


# --------------------------------------------------------------------------
# refusals: before any budget is spent or any data read, and audited
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("SELECT * FROM marts.tickets", "not an aggregate query"),
        ("SELECT channel FROM marts.tickets", "not an aggregate query"),
        ("SELECT DISTINCT channel FROM marts.tickets", "not an aggregate"),
        (
            "SELECT COUNT(*) AS n FROM marts.tickets AS t JOIN marts.customers AS c ON t.contact_pk = c.contact_pk",
            "joins are not supported",
        ),
        ("SELECT COUNT(*) AS n FROM marts.tickets, marts.customers", "joins are not supported"),
        ("SELECT COUNT(*) AS n FROM (SELECT * FROM marts.tickets) AS x", "subqueries are not supported"),
        (
            "SELECT COUNT(*) AS n FROM marts.tickets WHERE contact_pk IN (SELECT contact_pk FROM marts.customers)",
            "subqueries are not supported",
        ),
        ("WITH x AS (SELECT * FROM marts.tickets) SELECT COUNT(*) AS n FROM x", "subqueries"),
        ("SELECT SUM(amount * 2) AS s FROM marts.deal_pipeline", "aggregates over expressions are not supported"),
        ("SELECT MAX(amount) AS m FROM marts.deal_pipeline", "use COUNT, SUM, AVG, VAR or STDDEV"),
        ("SELECT COUNT(*) AS n FROM raw.contacts", "raw.contacts is not a DP-queryable table"),
        ("SELECT COUNT(*) AS n FROM main.anything", "main.anything is not a DP-queryable table"),
        ("SELECT COUNT(*) AS n FROM tickets", "tickets is not a DP-queryable table"),
        ("SELECT COUNT(*) AS n FROM read_parquet('data/raw/contacts.parquet')", "reading files"),
        ("SELECT COUNT(*) AS n FROM read_csv('data/landing/contacts.csv')", "reading files"),
        ("SELECT COUNT(*) AS n FROM 'data/raw/contacts.parquet'", "reading files"),
        ("SELECT COUNT(*) AS n FROM marts.tickets; DROP TABLE marts.tickets", "one statement at a time"),
        ("COPY marts.tickets TO 'out.csv'", "only a single aggregate SELECT"),
        ("SELECT COUNT(ticket_pk) AS n FROM marts.tickets", "ticket_pk is not a DP-queryable column"),
        ("SELECT contact_pk, COUNT(*) AS n FROM marts.tickets GROUP BY contact_pk", "privacy unit"),
        ("SELECT UPPER(channel) AS c, COUNT(*) AS n FROM marts.tickets GROUP BY UPPER(channel)", "plain columns"),
        ("SELECT channel, COUNT(*) AS n FROM marts.tickets GROUP BY channel HAVING COUNT(*) > 5", "HAVING"),
        ("SELECT COUNT(*) FROM marts.tickets", "needs an alias"),
    ],
)
def test_refused_before_any_budget_is_spent(settings: Settings, sql: str, reason: str) -> None:
    s = session(settings, "alice")

    with pytest.raises(DPQueryError, match="refused") as info:
        s.query(sql)

    assert reason in str(info.value)
    assert entries(settings) == []
    (audit,) = read_audit(settings)
    assert audit["status"] == "refused" and audit["sql"] == sql and reason in audit["reason"]


def test_failure_after_reading_the_warehouse_is_charged_and_hides_the_error(settings: Settings) -> None:
    s = session(settings, "alice")

    with pytest.raises(DPQueryFailed) as info:
        s.query("SELECT COUNT(*) AS n FROM marts.tickets WHERE CAST(channel AS INTEGER) = 1")

    assert "email" not in str(info.value)  # DuckDB's message quotes the data; it stays in the audit log
    (entry,) = entries(settings)
    assert entry["status"] == "spent"
    (audit,) = read_audit(settings)
    assert audit["status"] == "failed" and audit["charged"] is True and "Conversion" in audit["reason"]


def test_failure_before_reading_the_warehouse_is_cancelled(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("engine unavailable")

    monkeypatch.setattr(dp_release, "release", broken)
    s = session(settings, "alice")

    with pytest.raises(RuntimeError, match="engine unavailable"):
        s.query("SELECT COUNT(*) AS n FROM marts.tickets")

    (entry,) = entries(settings)
    assert entry["status"] == "cancelled" and "before reading the warehouse" in entry["reason"]
    assert s.remaining()["analyst"]["spent_epsilon"] == 0
    assert read_audit(settings)[0]["status"] == "failed"


# --------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------


def _dbt_columns(root: Path) -> dict[str, set[str]]:
    cols: dict[str, set[str]] = {}
    for path in (root / "dbt_project" / "models" / "marts").glob("*/_*__models.yml"):
        for model in yaml.safe_load(path.read_text())["models"]:
            cols[f"marts.{model['name']}"] = {c["name"] for c in model["columns"]}
    return cols


def test_shipped_tables_match_the_dbt_marts(settings: Settings) -> None:
    tables = load_query_tables(query_tables_path(settings))
    dbt = _dbt_columns(settings.root)

    assert set(tables.names) == {"marts.tickets", "marts.deal_pipeline", "marts.customers"}
    for name, table in tables.tables.items():
        assert set(table.columns) <= dbt[name], name
        assert table.privacy_unit == "contact_pk"
        assert not any(c.endswith("_pk") and c != "contact_pk" for c in table.columns)  # no other pseudonyms


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["tables"]["marts.tickets"].update(colour="red"), "unknown key 'tables.marts.tickets.colour'"),
        (
            lambda d: d["tables"]["marts.tickets"]["columns"]["channel"].update(lower=0, upper=1),
            "tables.marts.tickets.columns.channel",
        ),
        (lambda d: d["tables"]["marts.tickets"].pop("max_contributions"), "missing required key"),
        (lambda d: d["tables"]["marts.tickets"].update(privacy_unit="ticket_pk"), "privacy_unit 'ticket_pk'"),
        (lambda d: d["tables"].update({"tickets": d["tables"]["marts.tickets"]}), "key 'tables.tickets'"),
    ],
)
def test_invalid_table_config_names_file_and_key(settings: Settings, tmp_path: Path, change, message: str) -> None:
    doc = yaml.safe_load(query_tables_path(settings).read_text())
    change(doc)
    path = tmp_path / "tables.yml"
    path.write_text(yaml.safe_dump(doc))

    with pytest.raises(QueryTablesError) as info:
        load_query_tables(path)

    assert str(path) in str(info.value) and message in str(info.value)


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def test_cli_query_explain_and_budget(settings: Settings) -> None:
    runner = CliRunner()

    explained = runner.invoke(app, ["query", "--analyst", "alice", "--explain", COUNT_BY_CHANNEL])
    assert explained.exit_code == 0, explained.output
    assert "Cost: epsilon=0.5" in explained.stdout and "spends nothing" in explained.stdout
    assert entries(settings) == []

    released = runner.invoke(app, ["query", "--analyst", "alice", "--json", COUNT_BY_CHANNEL])
    assert released.exit_code == 0, released.output
    doc = json.loads(released.stdout)
    assert len(doc["rows"]) == 5 and {"tickets", "tickets_ci_low", "tickets_ci_high"} <= doc["rows"][0].keys()
    assert doc["remaining"]["analyst"]["spent_epsilon"] == pytest.approx(doc["epsilon"])

    table = runner.invoke(app, ["query", COUNT_BY_CHANNEL], env={"CRMSHIELD_ANALYST": "alice", "COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "tickets_ci_low" in table.stdout and "spent epsilon=0.5" in table.stdout and "Remaining:" in table.stdout

    refused = runner.invoke(app, ["query", "--analyst", "alice", "SELECT * FROM marts.tickets"])
    assert refused.exit_code == EXIT_QUERY_REFUSED == 5
    assert "not an aggregate query" in refused.stderr

    over = runner.invoke(app, ["query", "--analyst", "alice", "--epsilon", "5", COUNT_BY_CHANNEL])
    assert over.exit_code == EXIT_BUDGET_REFUSED == 6
    assert "would be exceeded" in over.stderr and "refreshes at" in over.stderr

    unknown = runner.invoke(app, ["query", "--analyst", "mallory", "--json", COUNT_BY_CHANNEL])
    assert unknown.exit_code == EXIT_BUDGET_REFUSED
    assert json.loads(unknown.stdout)["refused_by"] == "budget"

    budget = runner.invoke(app, ["budget", "--analyst", "alice", "--json"])
    assert budget.exit_code == 0, budget.output
    report = json.loads(budget.stdout)
    assert report["analysts"]["alice"]["spent_epsilon"] == pytest.approx(2 * doc["epsilon"])
    assert [e["status"] for e in report["entries"]] == ["refused", "spent", "spent"]  # newest first
    human = runner.invoke(app, ["budget"], env={"COLUMNS": "200"})
    assert human.exit_code == 0 and "crm_customers" in human.stdout and "bob" in human.stdout

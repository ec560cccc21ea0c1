"""The shipped source specs (config/sources/*.yml) against synthetic but realistic exports of each product.

The fixtures (tests/data/sources/<name>/) follow the layout each spec documents, with hostile but realistic
content: leading-zero postal codes and phones, quoted fields with commas, quotes and embedded newlines, a
UTF-8 BOM (Salesforce), repeated and conflicting versions of a record, and a few rows that must be
quarantined. The expected counts are constants here, and every one of them is also recomputed from the
fixture with the csv / json modules and a small independent re-statement of the rules (which values parse,
which map), so a change to the fixture, the spec or ingest shows up as a difference.

Row numbers: ``source_row`` counts records, the header being row 1 (a CSV record with an embedded newline
is one row): the row a spreadsheet shows, not the physical line of the file.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import phonenumbers
import pytest
import yaml

from crmshield.config import Settings, project_root
from crmshield.ingest import IngestResult, ingest
from crmshield.sources import CANONICAL, DEAL_STAGES, ENV_VAR, LIFECYCLE_STAGES, load_source_spec

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "sources"
SPEC_DIR = project_root() / "config" / "sources"
SHIPPED = ("hubspot_contacts.yml", "salesforce.yml", "zendesk_tickets.yml")

Record = dict[str, Any]

# --------------------------------------------------------------------------- the rules, restated independently

COUNTRY = {  # the spellings the fixtures use -> ISO alpha-2
    "United States": "US", "USA": "US", "Germany": "DE", "Deutschland": "DE", "DE": "DE", "France": "FR",
    "United Kingdom": "GB", "UK": "GB", "Spain": "ES", "España": "ES", "Netherlands": "NL",
}  # fmt: skip
SF_STAGE = {  # Salesforce's default Opportunity stages -> canonical deal stages (as the spec documents)
    "Prospecting": "appointmentscheduled", "Qualification": "qualifiedtobuy", "Needs Analysis": "qualifiedtobuy",
    "Value Proposition": "presentationscheduled", "Id. Decision Makers": "decisionmakerboughtin",
    "Perception Analysis": "decisionmakerboughtin", "Proposal/Price Quote": "contractsent",
    "Negotiation/Review": "contractsent", "Closed Won": "closedwon", "Closed Lost": "closedlost",
}  # fmt: skip
ZD_CHANNEL = {  # Zendesk via.channel types in the fixture -> canonical channels
    "email": "email", "web": "web", "chat": "chat", "voice": "voice", "api": "api", "mobile_sdk": "web",
    "web_widget": "web", "native_messaging": "chat", "chat_transcript": "chat", "web_service": "api",
}  # fmt: skip
ZD_STATUS = {
    "new": "new",
    "open": "open",
    "pending": "pending",
    "hold": "pending",
    "solved": "solved",
    "closed": "closed",
}
ZD_SATISFACTION = {
    "good": "good", "bad": "bad", "offered": "offered", "unoffered": "unoffered",
    "good_with_comment": "good", "bad_with_comment": "bad",
}  # fmt: skip
HS_TS, SF_TS, SF_DATE, ZD_TS = "%Y-%m-%d %H:%M", "%m/%d/%Y, %I:%M %p", "%m/%d/%Y", "%Y-%m-%dT%H:%M:%SZ"


def _parses(value: str, fmt: str) -> bool:
    try:
        datetime.strptime(value, fmt)
    except ValueError:
        return False
    return True


def _date_error(value: str | None, fmt: str, name: str) -> list[str]:
    return [f"{name}:invalid_date"] if value and not _parses(value, fmt) else []


def _hubspot_errors(r: Record) -> list[str]:
    stage = re.sub(r"[^a-z0-9]", "", r["Lifecycle Stage"].lower())
    return [
        *_date_error(r["Date of birth"], "%Y-%m-%d", "date_of_birth"),
        *(["lifecycle_stage:invalid_value"] if stage and stage not in LIFECYCLE_STAGES else []),
        *_date_error(r["Create Date"], HS_TS, "created_at"),
        *_date_error(r["Last Modified Date"], HS_TS, "updated_at"),
    ]


def _sf_contact_errors(r: Record) -> list[str]:
    return [
        *_date_error(r["Birthdate"], SF_DATE, "date_of_birth"),
        *_date_error(r["Created Date"], SF_TS, "created_at"),
        *_date_error(r["Last Modified Date"], SF_TS, "updated_at"),
    ]


def _sf_deal_errors(r: Record) -> list[str]:
    return [
        *(["stage:invalid_value"] if r["Stage"] not in SF_STAGE else []),
        *(["amount:invalid_number"] if r["Amount"] and not re.fullmatch(r"[0-9,]+\.[0-9]{2}", r["Amount"]) else []),
        *_date_error(r["Close Date"], SF_DATE, "close_date"),
        *_date_error(r["Created Date"], SF_TS, "created_at"),
    ]


def _zendesk_errors(t: Record) -> list[str]:
    score = (t.get("satisfaction_rating") or {}).get("score")
    return [
        *(["channel:invalid_value"] if t["via"]["channel"] not in ZD_CHANNEL else []),
        *(["priority:invalid_value"] if t["priority"] not in ("low", "normal", "high", "urgent", None) else []),
        *(["status:invalid_value"] if t["status"] not in ZD_STATUS else []),
        *_date_error(t["created_at"], ZD_TS, "created_at"),
        *_date_error(t["updated_at"], ZD_TS, "updated_at"),
        *(["satisfaction:invalid_value"] if score is not None and score not in ZD_SATISFACTION else []),
    ]


# --------------------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Expected:
    """One entity of one fixture: the counts and quarantined rows ingest must report."""

    file: str
    format: str  # csv | jsonl
    key: str  # the column / JSON key of the record id
    errors: Callable[[Record], list[str]]  # the independent validity rules
    order: str | None  # the column / key ordering versions (None: the later row wins)
    read: int
    loaded: int
    quarantined: int
    duplicates: int
    bad_rows: tuple[tuple[int, str], ...]  # (source_row, "field:reason")


@dataclass(frozen=True)
class Case:
    spec: str
    entities: dict[str, Expected] = field(default_factory=dict)


CASES: dict[str, Case] = {
    "hubspot_contacts": Case(
        "hubspot_contacts.yml",
        {
            "contacts": Expected(
                "hubspot_contacts.csv", "csv", "Record ID", _hubspot_errors, "Last Modified Date",
                read=64, loaded=60, quarantined=2, duplicates=2,
                bad_rows=((47, "date_of_birth:invalid_date"), (57, "lifecycle_stage:invalid_value")),
            )
        },
    ),
    "salesforce": Case(
        "salesforce.yml",
        {
            "contacts": Expected(
                "salesforce_contacts_2024-06-30.csv", "csv", "Contact ID", _sf_contact_errors, "Last Modified Date",
                read=48, loaded=45, quarantined=1, duplicates=2, bad_rows=((35, "date_of_birth:invalid_date"),),
            ),
            "deals": Expected(
                "salesforce_opportunities_2024-06-30.csv", "csv", "Opportunity ID", _sf_deal_errors, None,
                read=42, loaded=38, quarantined=2, duplicates=2,
                bad_rows=((24, "stage:invalid_value"), (29, "close_date:invalid_date")),
            ),
        },
    ),
    "zendesk_tickets": Case(
        "zendesk_tickets.yml",
        {
            "tickets": Expected(
                "zendesk_tickets.jsonl", "jsonl", "id", _zendesk_errors, "updated_at",
                read=59, loaded=55, quarantined=2, duplicates=2,
                bad_rows=((34, "status:invalid_value"), (45, "created_at:invalid_date")),
            )
        },
    ),
}  # fmt: skip


def records(name: str, exp: Expected) -> list[tuple[int, Record]]:
    """(source_row, record) of a fixture file, read with the standard library: CSV rows count records (the
    header is row 1), JSON lines count lines."""
    path = FIXTURES / name / exp.file
    if exp.format == "csv":
        with path.open(encoding="utf-8-sig", newline="") as fh:
            return list(enumerate(csv.DictReader(fh), start=2))
    lines = path.read_text(encoding="utf-8").splitlines()
    return [(n, json.loads(line)) for n, line in enumerate(lines, start=1) if line.strip()]


def winners(name: str, exp: Expected) -> dict[str, tuple[int, Record]]:
    """key -> the (row, record) that must be loaded: of a key's valid versions, the latest by ``order``
    (a tie, or no ``order``: the later row)."""
    out: dict[str, tuple[int, Record]] = {}
    fmt = {"Last Modified Date": HS_TS if name == "hubspot_contacts" else SF_TS, "updated_at": ZD_TS}
    for row, rec in records(name, exp):
        if exp.errors(rec):
            continue
        key = str(rec[exp.key])
        if key in out and exp.order is not None:
            old = datetime.strptime(out[key][1][exp.order], fmt[exp.order])
            if datetime.strptime(rec[exp.order], fmt[exp.order]) < old:
                continue
        out[key] = (row, rec)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Settings, IngestResult]]:
    """Ingest a fixture once per module under its shipped spec: name -> (settings, result)."""
    done: dict[str, tuple[Settings, IngestResult]] = {}

    def run(name: str) -> tuple[Settings, IngestResult]:
        if name not in done:
            data = tmp_path_factory.mktemp(name) / "data"
            (data / "landing").mkdir(parents=True)
            for f in (FIXTURES / name).iterdir():
                shutil.copy(f, data / "landing" / f.name)
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("CRMSHIELD_DATA_DIR", str(data))
                mp.setenv(ENV_VAR, str(SPEC_DIR / CASES[name].spec))
                settings = Settings.from_env(data)
                done[name] = (settings, ingest(settings))
        return done[name]

    return run


def raw(settings: Settings, entity: str, sql: str = "SELECT * FROM {t}") -> list[dict[str, Any]]:
    rel = duckdb.sql(sql.format(t=f"read_parquet('{settings.raw / f'{entity}.parquet'}')"))
    cols = [c[0] for c in rel.description]
    return [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]


def raw_by_row(settings: Settings, entity: str) -> dict[int, dict[str, Any]]:
    return {r["_source_row"]: r for r in raw(settings, entity)}


# --------------------------------------------------------------------------- the specs


@pytest.mark.parametrize("spec", [*SHIPPED, "generator.yml"])
def test_specs_declare_only_canonical_fields(spec):
    """Every declared field is a canonical one, with the canonical type where a type is given, and every
    category value a spec names (allowed, value maps) is a canonical value; the spec loads."""
    doc = yaml.safe_load((SPEC_DIR / spec).read_text(encoding="utf-8"))
    maps = doc.get("value_maps", {})
    for entity, ent in doc["entities"].items():
        canonical = CANONICAL[entity]
        assert ent["key"] in ent["fields"]
        for name, f in ent["fields"].items():
            assert name in canonical, f"{spec}: {entity}.{name} is not canonical"
            assert f.get("type", canonical[name].type) == canonical[name].type, f"{spec}: {entity}.{name}"
            vm = f.get("value_map")
            targets = set((maps[vm] if isinstance(vm, str) else vm or {}).values()) | set(f.get("allowed", []))
            assert targets <= set(canonical[name].allowed), f"{spec}: {entity}.{name}: {targets}"
    specs = load_source_spec(SPEC_DIR / spec)
    assert set(specs) == set(doc["entities"])


def test_shipped_specs_deliver_the_documented_entities():
    assert {s: list(load_source_spec(SPEC_DIR / s)) for s in SHIPPED} == {
        "hubspot_contacts.yml": ["contacts"],
        "salesforce.yml": ["contacts", "deals"],
        "zendesk_tickets.yml": ["tickets"],
    }


@pytest.mark.parametrize("name", CASES)
def test_fixture_is_what_the_expectations_say(name):
    """The constants, recomputed from the fixture alone: rows, bad rows (by the restated rules) and versions."""
    for exp in CASES[name].entities.values():
        path = FIXTURES / name / exp.file
        assert path.stat().st_size < 100_000
        recs = records(name, exp)
        bad = tuple((row, errs[0]) for row, rec in recs if (errs := exp.errors(rec)))
        good = [rec for _, rec in recs if not exp.errors(rec)]
        assert len(recs) == exp.read
        assert bad == exp.bad_rows
        assert len(bad) == exp.quarantined
        assert len({str(r[exp.key]) for r in good}) == len(winners(name, exp)) == exp.loaded
        assert len(good) - exp.loaded == exp.duplicates
        assert 30 <= exp.read <= 200


# --------------------------------------------------------------------------- ingest of each fixture


@pytest.mark.parametrize("name", CASES)
def test_ingest_counts_and_quarantine(name, runs):
    settings, result = runs(name)
    for entity, exp in CASES[name].entities.items():
        res = result.files[entity]
        assert (res.read, res.loaded, res.quarantined, res.duplicates, res.expired, res.erased) == (
            exp.read, exp.loaded, exp.quarantined, exp.duplicates, 0, 0,
        )  # fmt: skip
        reasons: dict[str, int] = {}
        for _, reason in exp.bad_rows:
            reasons[reason] = reasons.get(reason, 0) + 1
        assert res.quarantine_reasons == reasons
        [delivery] = res.files
        assert (delivery.file, delivery.status) == (exp.file, "ingested")
        assert delivery.schema_drift == {} and delivery.warnings == []  # every column mapped or ignored
        q = settings.quarantine / f"{entity}.parquet"
        got = duckdb.sql(f"SELECT source_file, source_row, field || ':' || reason FROM '{q}' ORDER BY 2").fetchall()
        assert got == [(exp.file, row, reason) for row, reason in exp.bad_rows]
        # raw holds exactly the winning version of each key, from the row the rules pick
        assert sorted(raw_by_row(settings, entity)) == sorted(row for row, _ in winners(name, exp).values())
    for entity in set(CANONICAL) - set(CASES[name].entities):
        assert result.files[entity].delivered is False
        assert raw(settings, entity, "SELECT count(*) AS n FROM {t}") == [{"n": 0}]


def test_salesforce_bom_and_encoding(runs):
    for exp in CASES["salesforce"].entities.values():
        assert (FIXTURES / "salesforce" / exp.file).read_bytes().startswith(b"\xef\xbb\xbf")
    _, result = runs("salesforce")
    assert {r.files[0].encoding for r in result.files.values() if r.delivered} == {"utf-8-sig"}


@pytest.mark.parametrize(("name", "postal", "phone", "street", "country"), [
    ("hubspot_contacts", "Postal Code", "Phone Number", "Street Address", "Country/Region"),
    ("salesforce", "Mailing Zip/Postal Code", "Phone", "Mailing Street", "Mailing Country"),
])  # fmt: skip
def test_contacts_keep_leading_zeros_and_text_as_written(name, postal, phone, street, country, runs):
    settings, _ = runs(name)
    exp = CASES[name].entities["contacts"]
    by_row = raw_by_row(settings, "contacts")
    leading = 0
    for row, rec in winners(name, exp).values():
        got = by_row[row]
        assert got["postal_code"] == rec[postal]  # "02134", "01067", "06000", "08001" stay text
        leading += rec[postal].startswith("0")
        assert got["street"] == rec[street]  # commas and embedded newlines survive
        assert got["country"] == COUNTRY[rec[country]]
        e164 = phonenumbers.format_number(
            phonenumbers.parse(rec[phone], COUNTRY[rec[country]]), phonenumbers.PhoneNumberFormat.E164
        )
        assert got["phone"] == e164  # "030 5550 0102" in DE -> +493055500102: the trunk 0 goes, no digit else
    assert leading >= 5
    assert any("\n" in r["street"] for r in by_row.values()) and any("," in r["street"] for r in by_row.values())
    assert sum(rec[phone].startswith("0") for _, rec in winners(name, exp).values()) >= 5


def test_hubspot_values(runs):
    settings, _ = runs("hubspot_contacts")
    exp = CASES["hubspot_contacts"].entities["contacts"]
    by_row = raw_by_row(settings, "contacts")
    for row, rec in winners("hubspot_contacts", exp).values():
        got = by_row[row]
        assert got["contact_id"] == int(rec["Record ID"])
        assert got["lifecycle_stage"] == re.sub(r"[^a-z0-9]", "", rec["Lifecycle Stage"].lower())
        assert got["email"] == rec["Email"].lower()
        assert got["company_id"] == (
            int(rec["Primary Associated Company ID"]) if rec["Primary Associated Company ID"] else None
        )
        assert got["updated_at"] == datetime.strptime(rec["Last Modified Date"], HS_TS)
        assert (got["marketing_consent"], got["analytics_consent"]) == (None, None)  # not in the export
    assert {r["lifecycle_stage"] for r in by_row.values()} == set(LIFECYCLE_STAGES)


def test_salesforce_text_ids_link_deals_to_contacts_and_accounts(runs):
    settings, _ = runs("salesforce")
    contacts_exp, deals_exp = CASES["salesforce"].entities["contacts"], CASES["salesforce"].entities["deals"]
    contacts = raw_by_row(settings, "contacts")
    deals = raw_by_row(settings, "deals")
    contact_id: dict[str, int] = {}  # 18-char Contact ID -> contact_id in raw
    account_id: dict[str, int] = {}  # 18-char Account ID -> company_id in raw
    for row, rec in winners("salesforce", contacts_exp).values():
        assert len(rec["Contact ID"]) == 18
        contact_id[rec["Contact ID"]] = contacts[row]["contact_id"]
        if rec["Account ID"]:
            account_id.setdefault(rec["Account ID"], contacts[row]["company_id"])
            assert contacts[row]["company_id"] == account_id[rec["Account ID"]]
        else:
            assert contacts[row]["company_id"] is None
    assert len(set(contact_id.values())) == len(contact_id)  # distinct text ids, distinct numbers
    linked = 0
    for row, rec in winners("salesforce", deals_exp).values():
        got = deals[row]
        if rec["Contact ID"]:
            assert got["contact_id"] == contact_id[rec["Contact ID"]]
            linked += 1
        else:
            assert got["contact_id"] is None
        assert got["company_id"] == account_id[rec["Account ID"]]
    assert linked >= 30


def test_salesforce_deal_values(runs):
    settings, _ = runs("salesforce")
    exp = CASES["salesforce"].entities["deals"]
    deals = raw_by_row(settings, "deals")
    recs = dict(records("salesforce", exp))
    assert set(SF_STAGE) <= {r["Stage"] for r in recs.values()}  # every default stage is exercised
    for row, rec in winners("salesforce", exp).values():
        got = deals[row]
        assert got["stage"] == SF_STAGE[rec["Stage"]]
        assert got["amount"] == (Decimal(rec["Amount"].replace(",", "")) if rec["Amount"] else None)
        assert got["close_date"] == datetime.strptime(rec["Close Date"], SF_DATE).date()
        assert got["created_at"] == datetime.strptime(rec["Created Date"], SF_TS)
        assert (got["pipeline"], got["currency"]) == (rec["Opportunity Record Type"], rec["Opportunity Currency"])
    assert {r["stage"] for r in deals.values()} == set(DEAL_STAGES)
    assert Decimal("1250000.00") in {r["amount"] for r in deals.values()}
    # an opportunity listed twice with different stages (no modification time in the report): the later row wins
    versions: dict[str, list[tuple[int, str]]] = {}
    for row, rec in recs.items():
        if not exp.errors(rec):
            versions.setdefault(rec["Opportunity ID"], []).append((row, rec["Stage"]))
    [conflict] = [v for v in versions.values() if len({stage for _, stage in v}) > 1]
    assert [stage for _, stage in conflict] == ["Negotiation/Review", "Closed Won"]
    assert conflict[0][0] not in deals and deals[conflict[1][0]]["stage"] == "closedwon"


def test_zendesk_values(runs):
    settings, _ = runs("zendesk_tickets")
    exp = CASES["zendesk_tickets"].entities["tickets"]
    tickets = raw_by_row(settings, "tickets")
    for row, t in winners("zendesk_tickets", exp).values():
        got = tickets[row]
        score = (t.get("satisfaction_rating") or {}).get("score")
        assert got["ticket_id"] == t["id"] and got["requester_id"] == t["requester_id"]
        assert got["channel"] == ZD_CHANNEL[t["via"]["channel"]]
        assert got["status"] == ZD_STATUS[t["status"]]
        assert got["satisfaction"] == (ZD_SATISFACTION[score] if score else None)
        assert got["priority"] == t["priority"]
        assert got["description"] == t["description"]  # multi-line, quotes, commas: as written
        assert got["created_at"] == datetime.strptime(t["created_at"], ZD_TS)
        assert got["solved_at"] is None  # not on the ticket object (see the spec)
    assert {r["channel"] for r in tickets.values()} == {"email", "web", "chat", "voice", "api"}
    source = [t for _, t in records("zendesk_tickets", exp)]
    assert {"hold", "web_widget", "mobile_sdk", "native_messaging"} <= {t["status"] for t in source} | {
        t["via"]["channel"] for t in source
    }  # the mapped source values are exercised
    assert "good_with_comment" in {(t["satisfaction_rating"] or {}).get("score") for t in source}
    # a ticket exported twice (time-based incremental export): the version with the latest updated_at wins
    older = [t for t in source if t["updated_at"] == t["created_at"]]
    assert len(older) == 1 and tickets[winners("zendesk_tickets", exp)[str(older[0]["id"])][0]]["status"] != "open"


# --------------------------------------------------------------------------- impossible dates with a %z format


def test_impossible_date_is_quarantined_with_a_tz_format(tmp_path, monkeypatch):
    spec = tmp_path / "zendesk_tz.yml"
    text = (SPEC_DIR / "zendesk_tickets.yml").read_text(encoding="utf-8")
    old = '["%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ"]'
    assert text.count(old) == 1
    text = text.replace(old, '["%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%S%z"]')
    assert text.count("    key: ticket_id\n") == 1
    spec.write_text(text.replace("    key: ticket_id\n", "    key: ticket_id\n    max_bad_share: 0.5\n"))
    data = tmp_path / "data"
    (data / "landing").mkdir(parents=True)
    lines = (FIXTURES / "zendesk_tickets" / "zendesk_tickets.jsonl").read_text(encoding="utf-8").splitlines()
    (data / "landing" / "zendesk_tickets.jsonl").write_text(lines[44] + "\n" + lines[0] + "\n", encoding="utf-8")
    assert json.loads(lines[44])["created_at"] == "2024-02-30T08:15:00Z"
    monkeypatch.setenv("CRMSHIELD_DATA_DIR", str(data))
    monkeypatch.setenv(ENV_VAR, str(spec))
    result = ingest(Settings.from_env(data))
    assert result.files["tickets"].quarantine_reasons == {"created_at:invalid_date": 1}

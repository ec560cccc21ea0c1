"""Source specs: the shipped YAML is the old hard-coded mapping, errors name file and key, ingest follows the spec."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from crmshield import ingest as ingest_mod
from crmshield.config import Settings
from crmshield.generate import FILES, generate
from crmshield.ingest import IngestError, ingest
from crmshield.pipeline import config_digest
from crmshield.sources import (
    ENV_VAR,
    EntitySpec,
    Field,
    SourceSpecError,
    default_source_spec_path,
    load_source_spec,
    source_spec_path,
    source_specs,
)

# --------------------------------------------------------------------------- the reference: ingest.SPECS as it
# was hard-coded in Python before the mapping moved to config/sources/generator.yml. Do not edit it to follow the
# YAML: a difference means the shipped spec drifted from the behaviour it replaced.

COUNTRY_ALIASES: dict[str, str] = {
    "united states": "US", "usa": "US", "us": "US", "united states of america": "US",
    "canada": "CA", "ca": "CA",
    "united kingdom": "GB", "uk": "GB", "gb": "GB", "great britain": "GB",
    "germany": "DE", "deutschland": "DE", "de": "DE",
    "france": "FR", "fr": "FR",
    "netherlands": "NL", "the netherlands": "NL", "nederland": "NL", "nl": "NL",
    "spain": "ES", "españa": "ES", "es": "ES",
    "australia": "AU", "au": "AU",
}  # fmt: skip
_TS = ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S")
_ISO = ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%S%z")
_COUNTRY = tuple(sorted(COUNTRY_ALIASES.items()))

REFERENCE: dict[str, EntitySpec] = {
    "contacts": EntitySpec(
        "contacts", "hubspot_contacts.csv", "csv", "contact_id", "updated_at",
        (
            Field("contact_id", "Record ID", "bigint", required=True),
            Field("first_name", "First Name"),
            Field("last_name", "Last Name"),
            Field("email", "Email", "email"),
            Field("phone", "Phone Number", "phone", region="country"),
            Field("date_of_birth", "Date of Birth", "date", formats=("%Y-%m-%d",)),
            Field("street", "Street Address"),
            Field("city", "City"),
            Field("postal_code", "Postal Code"),
            Field("country", "Country/Region", "category", aliases=_COUNTRY),
            Field("lifecycle_stage", "Lifecycle Stage", "category", allowed=(
                "subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead",
                "opportunity", "customer", "evangelist", "other")),
            Field("created_at", "Create Date", "timestamp", required=True, formats=_TS),
            Field("updated_at", "Last Modified Date", "timestamp", formats=_TS),
            Field("marketing_consent", "Marketing Consent", "boolean"),
            Field("analytics_consent", "Analytics Consent", "boolean"),
            Field("company_id", "Associated Company ID", "bigint"),
        ),
    ),
    "companies": EntitySpec(
        "companies", "hubspot_companies.csv", "csv", "company_id", "created_at",
        (
            Field("company_id", "Record ID", "bigint", required=True),
            Field("name", "Company name"),
            Field("domain", "Company Domain Name"),
            Field("industry", "Industry"),
            Field("employees", "Number of Employees", "integer"),
            Field("annual_revenue", "Annual Revenue", "decimal"),
            Field("country", "Country/Region", "category", aliases=_COUNTRY),
            Field("city", "City"),
            Field("created_at", "Create Date", "timestamp", required=True, formats=_TS),
        ),
    ),
    "deals": EntitySpec(
        "deals", "hubspot_deals.csv", "csv", "deal_id", "created_at",
        (
            Field("deal_id", "Record ID", "bigint", required=True),
            Field("deal_name", "Deal Name"),
            Field("stage", "Deal Stage", "category", required=True, allowed=(
                "appointmentscheduled", "qualifiedtobuy", "presentationscheduled",
                "decisionmakerboughtin", "contractsent", "closedwon", "closedlost")),
            Field("pipeline", "Pipeline"),
            Field("amount", "Amount", "decimal"),
            Field("currency", "Currency"),
            Field("close_date", "Close Date", "date", formats=("%Y-%m-%d",)),
            Field("created_at", "Create Date", "timestamp", required=True, formats=_TS),
            Field("contact_id", "Associated Contact ID", "bigint"),
            Field("company_id", "Associated Company ID", "bigint"),
        ),
    ),
    "tickets": EntitySpec(
        "tickets", "zendesk_tickets.jsonl", "jsonl", "ticket_id", "updated_at",
        (
            Field("ticket_id", "$.id", "bigint", required=True),
            Field("requester_id", "$.requester_id", "bigint", required=True),
            Field("subject", "$.subject"),
            Field("description", "$.description"),
            Field("channel", "$.via.channel", "category", allowed=("email", "web", "chat", "voice", "api")),
            Field("priority", "$.priority", "category", allowed=("low", "normal", "high", "urgent")),
            Field("status", "$.status", "category", required=True,
                  allowed=("new", "open", "pending", "solved", "closed")),
            Field("created_at", "$.created_at", "timestamp", required=True, formats=_ISO),
            Field("updated_at", "$.updated_at", "timestamp", formats=_ISO),
            Field("solved_at", "$.solved_at", "timestamp", formats=_ISO),
            Field("satisfaction", "$.satisfaction_rating.score", "category",
                  allowed=("good", "bad", "offered", "unoffered")),
        ),
        ignore_columns=("url", "tags"),  # read and dropped silently before; now declared (new keys are an error)
    ),
}  # fmt: skip

SHIPPED = default_source_spec_path()


# --------------------------------------------------------------------------- the shipped spec


def test_shipped_spec_path_is_config_sources_generator(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert SHIPPED.parts[-3:] == ("config", "sources", "generator.yml")
    assert source_spec_path() == SHIPPED


@pytest.mark.parametrize("entity", list(REFERENCE))
def test_shipped_spec_equals_the_old_python_specs(entity):
    loaded = load_source_spec(SHIPPED)
    assert list(loaded) == list(REFERENCE)  # contacts first: they set the reference date
    old, new = REFERENCE[entity], loaded[entity]
    for attr in ("entity", "file", "format", "key", "updated_at"):
        assert getattr(new, attr) == getattr(old, attr), attr
    assert (new.encoding, new.delimiter, new.quote) == ("utf-8", ",", '"')  # what ingest always read
    assert [f.name for f in new.fields] == [f.name for f in old.fields]  # raw column order
    for f_old, f_new in zip(old.fields, new.fields, strict=True):
        assert f_new == f_old, f_old.name
    assert new == old


def test_ingest_specs_are_the_shipped_spec():
    assert ingest_mod.SPECS == load_source_spec(SHIPPED) == REFERENCE
    assert ingest_mod.COUNTRY_ALIASES == COUNTRY_ALIASES


# --------------------------------------------------------------------------- errors name the file and the key


def _doc() -> dict[str, Any]:
    return yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))


def _write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "spec.yml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def _fields(doc: dict[str, Any], entity: str) -> dict[str, Any]:
    return doc["entities"][entity]["fields"]


def _set(entity: str, field: str, **kv: Any):
    def edit(doc):
        _fields(doc, entity)[field].update(kv)

    return edit


def _entity(entity: str, **kv: Any):
    def edit(doc):
        doc["entities"][entity].update(kv)

    return edit


CASES = {
    "unknown field key": (
        _set("contacts", "email", colum="Email"),
        "unknown key 'entities.contacts.fields.email.colum'",
    ),
    "unknown entity key": (_entity("deals", primary_key="deal_id"), "unknown key 'entities.deals.primary_key'"),
    "unknown top-level key": (lambda d: d.update(mappings={}), "unknown key 'mappings'"),
    "unknown entity": (
        lambda d: d["entities"].update(leads=copy.deepcopy(d["entities"]["deals"])),
        "unknown key 'entities.leads'",
    ),
    "unknown type": (_set("deals", "amount", type="money"), "key 'entities.deals.fields.amount.type': Input should be"),
    "key not a field": (_entity("contacts", key="id"), "key 'entities.contacts.key': 'id' is not one of the fields"),
    "updated_at not a field": (
        _entity("tickets", updated_at="modified"),
        "key 'entities.tickets.updated_at': 'modified' is not one of the fields",
    ),
    "no entity": (lambda d: d.update(entities={}), "key 'entities': declare at least one of contacts"),
    "not the canonical type": (
        _set("companies", "city", type="integer"),
        "key 'entities.companies.fields.city.type': city is 'varchar' in the canonical model, not 'integer'",
    ),
    "not a canonical field": (
        lambda d: _fields(d, "contacts").update(shoe_size={"column": "Shoe Size", "type": "integer"}),
        "key 'entities.contacts.fields.shoe_size': 'shoe_size' is not a field of the canonical contacts model",
    ),
    "key not the canonical id": (
        _entity("deals", key="contact_id"),
        "key 'entities.deals.key': deals are keyed on 'deal_id', not 'contact_id'",
    ),
    "delivery mode": (
        _entity("deals", delivery="incremental"),
        "key 'entities.deals.delivery': Input should be 'snapshot' or 'delta'",
    ),
    "delimiter": (_entity("contacts", delimiter=";;"), "key 'entities.contacts.delimiter': must be one character"),
    "quote as delimiter": (
        _entity("contacts", delimiter="'", quote="'"),
        "key 'entities.contacts.delimiter': \"'\" cannot be the delimiter",
    ),
    "escape on json": (_entity("tickets", escape="\\"), "key 'entities.tickets.escape': only applies to format 'csv'"),
    "thousands equals decimal": (
        _entity("deals", decimal=",", thousands=","),
        "key 'entities.deals.thousands': ',' is not a grouping separator other than the decimal",
    ),
    "decimal on a date": (
        _set("deals", "close_date", decimal=","),
        "key 'entities.deals.fields.close_date.decimal': only number fields have a decimal separator",
    ),
    "text_id on a name": (
        _set("contacts", "first_name", text_id=True),
        "key 'entities.contacts.fields.first_name.text_id': only id fields (bigint) can be given as text",
    ),
    "bad share over 1": (_entity("deals", max_bad_share=1.5), "key 'entities.deals.max_bad_share': Input should be"),
    "drift action": (
        _entity("deals", on_new_column="ignore"),
        "key 'entities.deals.on_new_column': Input should be 'error' or 'warn'",
    ),
    "ignored column is mapped": (
        _entity("deals", ignore_columns=["Amount"]),
        "key 'entities.deals.ignore_columns': 'Amount' is mapped to field 'amount'",
    ),
    "delimiter on jsonl": (
        _entity("tickets", delimiter=","),
        "key 'entities.tickets.delimiter': only applies to format 'csv'",
    ),
    "encoding": (
        _entity("companies", encoding="klingon"),
        "key 'entities.companies.encoding': 'klingon' is not an encoding Python knows",
    ),
    "unknown format": (
        _entity("companies", format="xlsx"),
        "key 'entities.companies.format': Input should be 'csv', 'jsonl' or 'json'",
    ),
    "file path": (
        _entity("deals", file="../deals.csv"),
        "key 'entities.deals.file': a file name (or glob) in the landing zone, not a path",
    ),
    "same file twice": (
        _entity("deals", file="hubspot_companies.csv"),
        "key 'entities.deals.file': 'hubspot_companies.csv' is already the file of companies",
    ),
    "formats on a varchar": (
        _set("contacts", "city", formats=["%Y"]),
        "key 'entities.contacts.fields.city.formats': only date and timestamp fields have formats",
    ),
    "timestamp without formats": (
        lambda d: _fields(d, "deals")["created_at"].pop("formats"),
        "key 'entities.deals.fields.created_at.formats': a timestamp field needs at least one format",
    ),
    "allowed on a varchar": (
        _set("deals", "currency", allowed=["eur"]),
        "key 'entities.deals.fields.currency.allowed': only category fields have allowed",
    ),
    "allowed and value_map": (
        _set("contacts", "country", allowed=["us"]),
        "key 'entities.contacts.fields.country.value_map': give either 'allowed' or 'value_map', not both",
    ),
    "allowed value not canonical": (
        _set("deals", "stage", allowed=["won", "closedlost"]),
        "key 'entities.deals.fields.stage.allowed': 'won' is not a canonical stage value",
    ),
    "value map onto a non-canonical value": (
        _set("contacts", "lifecycle_stage", allowed=[], value_map={"mql": "mql"}),
        "key 'entities.contacts.fields.lifecycle_stage.value_map.mql': 'mql' is not a canonical lifecycle_stage value",
    ),
    "allowed value never matches": (
        _set("tickets", "priority", allowed=["Low", "normal"]),
        "key 'entities.tickets.fields.priority.allowed': 'Low' can never match",
    ),
    "unknown value map": (
        _set("companies", "country", value_map="countries"),
        "key 'entities.companies.fields.country.value_map': no value map 'countries' under value_maps (country)",
    ),
    "value map key never matches": (
        lambda d: d["value_maps"]["country"].update({"USA ": "US"}),
        "key 'value_maps.country.USA ': value map keys are matched against the trimmed, lower-cased value",
    ),
    "region on a non-phone": (
        _set("contacts", "email", region="country"),
        "key 'entities.contacts.fields.email.region': only phone fields have a region",
    ),
    "region not a field": (
        _set("contacts", "phone", region="nation"),
        "key 'entities.contacts.fields.phone.region': 'nation' is not another field of contacts",
    ),
    "path on a csv field": (
        _set("contacts", "city", path="$.city"),
        "key 'entities.contacts.fields.city.path': a csv field names its 'column'",
    ),
    "column on a jsonl field": (
        _set("tickets", "subject", column="subject"),
        "key 'entities.tickets.fields.subject.column': a jsonl field names its JSON 'path'",
    ),
    "not a JSON path": (
        _set("tickets", "subject", path="subject"),
        "key 'entities.tickets.fields.subject.path': 'subject' is not a JSON path",
    ),
    "updated_at not a date": (
        _entity("contacts", updated_at="first_name"),
        "key 'entities.contacts.updated_at': 'first_name' is not a date or timestamp field",
    ),
    "version": (lambda d: d.update(version=2), "key 'version': Input should be 1"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_invalid_spec_names_file_and_key(tmp_path, case):
    edit, expected = CASES[case]
    doc = _doc()
    edit(doc)
    path = _write(tmp_path, doc)
    with pytest.raises(SourceSpecError) as err:
        load_source_spec(path)
    msg = str(err.value)
    assert f"{path}: " in msg and expected in msg, msg


def test_duplicate_canonical_name_is_an_error_naming_file_and_key(tmp_path):
    text = SHIPPED.read_text(encoding="utf-8")
    line = "      email: {column: Email, type: email}\n"
    assert text.count(line) == 1
    path = tmp_path / "dup.yml"
    path.write_text(text.replace(line, line + "      email: {column: Work Email, type: email}\n"), encoding="utf-8")
    with pytest.raises(SourceSpecError) as err:
        load_source_spec(path)
    assert str(err.value).startswith(f"{path}: key 'entities.contacts.fields.email': duplicate key"), err.value


def test_anchors_and_merge_keys_are_not_duplicates(tmp_path):
    text = SHIPPED.read_text(encoding="utf-8").replace(
        "      city: {column: City, type: varchar}\n      created_at: {column: Create Date",
        "      city: &txt {column: City, type: varchar}\n      created_at: {column: Create Date",
        1,
    )
    text = text.replace(
        "      pipeline: {column: Pipeline, type: varchar}", "      pipeline: {<<: *txt, column: Pipeline}"
    )
    path = tmp_path / "merge.yml"
    path.write_text(text, encoding="utf-8")
    assert load_source_spec(path) == REFERENCE


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(SourceSpecError, match=r"nope\.yml: source spec not found"):
        load_source_spec(tmp_path / "nope.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("- a list\n", encoding="utf-8")
    with pytest.raises(SourceSpecError, match=r"bad\.yml: expected a mapping"):
        load_source_spec(bad)


def test_every_problem_is_reported_at_once(tmp_path):
    doc = _doc()
    _entity("deals", key="contact_id")(doc)
    _set("contacts", "city", formats=["%Y"])(doc)
    path = _write(tmp_path, doc)
    with pytest.raises(SourceSpecError) as err:
        load_source_spec(path)
    lines = str(err.value).splitlines()
    assert len(lines) == 2 and all(line.startswith(f"{path}: key 'entities.") for line in lines), lines


# --------------------------------------------------------------------------- the spec in force


def test_env_var_selects_the_spec_relative_to_the_project_root(tmp_path, monkeypatch):
    from crmshield.config import project_root

    monkeypatch.setenv(ENV_VAR, "config/sources/generator.yml")
    assert source_spec_path() == project_root() / "config" / "sources" / "generator.yml"
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "mine.yml"))
    assert source_spec_path() == tmp_path / "mine.yml"
    with pytest.raises(SourceSpecError, match=r"mine\.yml: source spec not found"):
        source_specs()


def test_config_digest_tracks_the_source_spec(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    settings = Settings.from_env()
    before = config_digest(settings)
    changed = tmp_path / "spec.yml"
    changed.write_text(SHIPPED.read_text(encoding="utf-8").replace("Last Name", "Surname"), encoding="utf-8")
    monkeypatch.setenv(ENV_VAR, str(changed))
    assert config_digest(settings) != before
    monkeypatch.delenv(ENV_VAR)
    assert config_digest(settings) == before


@pytest.fixture()
def renamed(data_dir):
    """A small landing whose contacts export calls 'Last Name' 'Surname'."""
    generate(data_dir / "landing", contacts=120, seed=5)
    csv = data_dir / "landing" / FILES["contacts"]
    header, rest = csv.read_bytes().split(b"\r\n", 1)
    assert header.count(b",Last Name,") == 1
    csv.write_bytes(header.replace(b",Last Name,", b",Surname,") + b"\r\n" + rest)
    return Settings.from_env(data_dir)


def test_ingest_reads_the_column_the_spec_names(renamed, tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(
        IngestError, match=r"schema drift: missing column\(s\) \['Last Name'\].*new column\(s\) \['Surname'\]"
    ):
        ingest(renamed)  # the shipped spec expects the generator's header

    spec = tmp_path / "renamed.yml"
    text = SHIPPED.read_text(encoding="utf-8")
    assert text.count("{column: Last Name,") == 1
    spec.write_text(text.replace("{column: Last Name,", "{column: Surname,"), encoding="utf-8")
    monkeypatch.setenv(ENV_VAR, str(spec))
    assert source_specs()["contacts"].fields[2] == Field("last_name", "Surname")

    res = ingest(renamed)
    contacts = res.files["contacts"]
    assert contacts.loaded > 0
    assert contacts.read == contacts.loaded + contacts.quarantined + contacts.duplicates + contacts.expired
    raw = renamed.raw / "contacts.parquet"
    names = [r[0] for r in duckdb.sql(f"DESCRIBE SELECT * FROM '{raw}'").fetchall()]
    assert names[:4] == ["contact_id", "first_name", "last_name", "email"]  # canonical names, same order
    src = renamed.landing / FILES["contacts"]
    expected = set(
        duckdb.sql(
            f"""SELECT try_cast("Record ID" AS BIGINT), nullif(trim("Surname"), '')
            FROM read_csv('{src}', all_varchar=true, ignore_errors=true)"""
        ).fetchall()
    )
    got = duckdb.sql(f"SELECT contact_id, last_name FROM '{raw}'").fetchall()
    assert sum(1 for _, name in got if name) > 0.9 * len(got)
    assert set(got) <= expected

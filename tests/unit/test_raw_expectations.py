"""The raw-zone suites (``expectations/raw.py``) without Spark: patterns, the contract against
what ingest writes, the reconciliation facts, and the severity of every expectation.

Patterns are anchored and ASCII-only, so Python's ``re`` here means what Spark's ``rlike`` runs
(``tests/integration/test_validate_raw.py`` runs them through GX on Spark)."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

from crmshield import normalize
from crmshield.config import ENTITIES, Settings
from crmshield.ingest import COUNTRY_ALIASES, SPECS
from crmshield.sources import CANONICAL
from crmshield.validate import load_expectations_module

raw = load_expectations_module(Settings.from_env(), "raw")

EMAIL = re.compile(raw.EMAIL_PATTERN)
NOT_CANONICAL = re.compile(raw.EMAIL_NOT_CANONICAL_PATTERN)
E164 = re.compile(raw.E164_PATTERN)
COUNTRY = re.compile(raw.COUNTRY_CODE_PATTERN)
CURRENCY = re.compile(raw.CURRENCY_CODE_PATTERN)

SPARK_TYPES = {
    "bigint": "LongType",
    "integer": "IntegerType",
    "decimal": "DecimalType",
    "date": "DateType",
    "timestamp": raw.TIMESTAMP,
    "boolean": "BooleanType",
    "varchar": "StringType",
    "category": "StringType",
    "email": "StringType",
    "phone": "StringType",
}

CRITICAL_CHECKS = {
    "required_columns",
    "column_type",
    "source_key_not_null",
    "source_key_unique",
    "required_not_null",
    "email_canonical",
    "country_code_format",
    "allowed_values",
    "lineage_source_file",
    "lineage_source_row",
    "row_count_matches_ingest",
    "file_reported",
    "known_entity",
    "facts_complete",
    "non_negative",
    "read_accounted",
    "quarantine_share_critical",
}
WARNING_CHECKS = {
    "no_unexpected_columns",
    "email_format",
    "phone_e164",
    "allowed_values",
    "currency_format",
    "date_range",
    "non_negative",
    "solved_after_created",
    "quarantine_share_warning",
}


def ingest_result(**overrides: dict[str, Any]) -> dict[str, Any]:
    files = {
        "contacts": {"read": 1004, "loaded": 997, "quarantined": 3, "duplicates": 4, "expired": 0, "erased": 0},
        "companies": {"read": 100, "loaded": 99, "quarantined": 1, "duplicates": 0, "expired": 0, "erased": 0},
        "deals": {"read": 396, "loaded": 396, "quarantined": 0, "duplicates": 0, "expired": 0, "erased": 0},
        "tickets": {"read": 1549, "loaded": 1496, "quarantined": 1, "duplicates": 0, "expired": 52, "erased": 0},
    }
    files.update(overrides)
    return {"run_id": "run-test", "reference_date": "2026-10-31T13:10:00", "files": files}


# --------------------------------------------------------------------------- module shape


def test_module_imports_neither_gx_nor_spark_at_load_time() -> None:
    tree = ast.parse(Path(raw.__file__).read_text(encoding="utf-8"))
    top = []
    for node in tree.body:  # top level only; ``if TYPE_CHECKING:`` blocks do not run
        if isinstance(node, ast.Import):
            top += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            top.append(node.module or "")
    assert not [m for m in top if m.startswith(("great_expectations", "pyspark", "pandas"))], top


def test_suite_names_and_thresholds() -> None:
    assert [raw.suite_name(e) for e in (*ENTITIES, raw.RECONCILIATION)] == [
        "raw__contacts",
        "raw__companies",
        "raw__deals",
        "raw__tickets",
        "raw__reconciliation",
    ]
    assert raw.ENTITIES == ENTITIES
    assert 0 < raw.QUARANTINE_SHARE_WARNING < raw.QUARANTINE_SHARE_CRITICAL < 1
    assert (raw.QUARANTINE_SHARE_WARNING, raw.QUARANTINE_SHARE_CRITICAL) == (0.01, 0.20)


# --------------------------------------------------------------------------- patterns


@pytest.mark.parametrize(
    "value",
    ["jane.doe@example.com", "zoë.smith@example.com", "a+b@mail.example.co.uk", "x_y@sub.domain.io", "UP@X.ORG"],
)
def test_email_pattern_accepts_addresses(value: str) -> None:
    assert EMAIL.search(value)
    assert normalize.is_email(value)


@pytest.mark.parametrize(
    "value",
    ["jane.doe", "jane@localhost", "@example.com", "jane@", "a@@b.com", "jane doe@example.com", "a@b.com c", ""],
)
def test_email_pattern_rejects_non_addresses(value: str) -> None:
    assert not EMAIL.search(value)
    assert not normalize.is_email(value)


def test_patterns_are_the_ones_ingest_counts_with() -> None:
    """``email:not_an_email`` and ``phone:not_a_number`` in the ingest result use these too."""
    assert raw.EMAIL_PATTERN == normalize.EMAIL_SHAPE
    assert raw.E164_PATTERN == normalize.E164_PATTERN


@pytest.mark.parametrize("value", [" Zoë.Smith@Example.COM ", "JANE@X.ORG", "not an email ", "\tMixed Case"])
def test_canonical_email_form_never_trips_email_canonical(value: str) -> None:
    assert NOT_CANONICAL.search(value)  # as an export may write it
    assert not NOT_CANONICAL.search(normalize.normalize_email(value) or "")  # as ingest stores it


@pytest.mark.parametrize(
    ("value", "region"),
    [("(415) 555-0134", "US"), ("020 7946 0958", "GB"), ("+31 20 123 4567", None), ("0049 30 1234567", "DE")],
)
def test_e164_pattern_accepts_what_ingest_normalizes(value: str, region: str | None) -> None:
    e164 = normalize.normalize_phone(value, region)
    assert e164 is not None and E164.search(e164)


@pytest.mark.parametrize(
    "value", ["(415) 555-0134", "+0 123 4567", "+1234", "+1234567890123456", "call me", "+1415555013x"]
)
def test_e164_pattern_rejects_other_forms(value: str) -> None:
    assert not E164.search(value)


@pytest.mark.parametrize(("value", "ok"), [("US", True), ("GB", True), ("us", False), ("USA", False), ("U", False)])
def test_country_code_pattern(value: str, ok: bool) -> None:
    assert bool(COUNTRY.search(value)) is ok


@pytest.mark.parametrize(("value", "ok"), [("EUR", True), ("eur", False), ("EU", False), ("EURO", False)])
def test_currency_code_pattern(value: str, ok: bool) -> None:
    assert bool(CURRENCY.search(value)) is ok


# --------------------------------------------------------------------------- the contract vs ingest


@pytest.mark.parametrize("entity", ENTITIES)
def test_columns_and_types_are_what_ingest_writes(entity: str) -> None:
    spec = SPECS[entity]
    expected = {f.name: SPARK_TYPES[f.type] for f in spec.fields} | {
        "_source_file": "StringType",
        "_source_row": "LongType",
    }
    assert raw.COLUMNS[entity] == expected
    assert list(raw.COLUMNS[entity]) == list(expected)  # same order as the Parquet
    assert raw.SOURCE_KEYS[entity] == spec.key
    assert raw.SOURCE_FILES[entity] == spec.file
    assert set(raw.REQUIRED[entity]) == {f.name for f in spec.fields if f.required} - {spec.key}


@pytest.mark.parametrize("entity", ENTITIES)
def test_enforced_categories_are_critical_and_match_ingest(entity: str) -> None:
    sets = {col: v for (e, col), v in raw.VALUE_SETS.items() if e == entity}
    for f in SPECS[entity].fields:
        if f.type == "category":  # ingest normalizes and quarantines: critical, same values
            values, severity = sets[f.name]
            assert severity == raw.CRITICAL, f.name
            # what ingest lets through: the canonical values (a value map maps onto them)
            assert set(values) == set(CANONICAL[entity][f.name].allowed), f.name
            assert set(f.allowed) <= set(values) and {v for _, v in f.aliases} <= set(values), f.name
        elif f.name in sets:  # passed through as text: warning only
            assert sets[f.name][1] == raw.WARNING, f.name
    assert set(COUNTRY_ALIASES.values()) <= set(raw.COUNTRIES)  # value maps map onto ISO codes
    assert len(raw.COUNTRIES) > 200 and {"IT", "JP", "BR"} <= set(raw.COUNTRIES)
    assert all(COUNTRY.search(c) for c in raw.COUNTRIES)
    assert all(CURRENCY.search(c) for c in raw.CURRENCIES)


# --------------------------------------------------------------------------- reconciliation facts


def test_reconciliation_facts_of_a_clean_ingest() -> None:
    facts = raw.reconciliation_facts(ingest_result())
    assert list(facts.columns) == list(raw.RECONCILIATION_COLUMNS)
    assert list(facts["entity"]) == list(ENTITIES)
    assert list(facts["reported"]) == [1, 1, 1, 1]
    assert list(facts["unaccounted"]) == [0, 0, 0, 0]
    assert facts.set_index("entity")["quarantined_share"].to_dict() == pytest.approx(
        {"contacts": 3 / 1004, "companies": 0.01, "deals": 0.0, "tickets": 1 / 1549}
    )


def test_reconciliation_facts_mark_missing_extra_and_broken_entries() -> None:
    ingest = ingest_result(
        deals={"read": 10, "loaded": 8, "quarantined": 1, "duplicates": 0, "expired": 0, "erased": 0},
        leads={"read": "12", "loaded": None},
        empty={"read": 0, "loaded": 0, "quarantined": 0, "duplicates": 0, "expired": 0, "erased": 0},
    )
    del ingest["files"]["tickets"]
    facts = raw.reconciliation_facts(ingest).set_index("entity")
    assert list(facts.index) == [*ENTITIES, "empty", "leads"]
    assert facts.loc["tickets", "reported"] == 0 and facts.loc["tickets", list(raw.COUNT_COLUMNS)].isna().all()
    assert facts.loc["deals", "unaccounted"] == 1
    assert facts.loc["leads", "reported"] == 1 and facts.loc["leads", ["read", "loaded", "unaccounted"]].isna().all()
    assert facts.loc["empty", "quarantined_share"] == 0.0
    assert str(facts["read"].dtype) == "Int64"
    # the threshold is the source spec's max_bad_share, carried by the ingest result (default 20 %)
    assert facts.loc["deals", "max_bad_share"] == raw.QUARANTINE_SHARE_CRITICAL
    strict = raw.reconciliation_facts(
        ingest_result(
            deals={
                "read": 10,
                "loaded": 9,
                "quarantined": 1,
                "duplicates": 0,
                "expired": 0,
                "erased": 0,
                "max_bad_share": 0.05,
            }
        )  # fmt: skip
    ).set_index("entity")
    assert strict.loc["deals", "share_over_limit"] == pytest.approx(0.1 - 0.05)


# --------------------------------------------------------------------------- the suites (imports GX, no Spark)


@pytest.fixture(scope="module")
def suites() -> dict[str, Any]:
    return raw.build_suites(ingest_result())


def test_every_expectation_carries_a_severity_and_a_check(suites: dict[str, Any]) -> None:
    assert {e: s.name for e, s in suites.items()} == {
        **{e: f"raw__{e}" for e in ENTITIES},
        "reconciliation": "raw__reconciliation",
    }
    for suite in suites.values():
        assert suite.meta["zone"] == "raw"
        for e in suite.expectations:
            severity = e.meta["severity"]
            assert severity in ("critical", "warning"), e
            assert e.severity.value == severity, e
            assert e.meta["check"] in (CRITICAL_CHECKS if severity == "critical" else WARNING_CHECKS), e


def test_critical_checks_of_each_table(suites: dict[str, Any]) -> None:
    for entity in ENTITIES:
        crit: dict[str, set[str | None]] = {}
        for e in suites[entity].expectations:
            if e.meta["severity"] == "critical":
                crit.setdefault(e.meta["check"], set()).add(getattr(e, "column", None))
        assert crit["column_type"] == set(raw.COLUMNS[entity])
        assert crit["source_key_not_null"] == crit["source_key_unique"] == {raw.SOURCE_KEYS[entity]}
        assert crit.get("required_not_null", set()) == set(raw.REQUIRED[entity])
        assert crit["row_count_matches_ingest"] == {None}
        assert crit["lineage_source_file"] == {"_source_file"}
        assert crit["lineage_source_row"] == {"_source_row"}
        enforced = {c for (e, c), (_, s) in raw.VALUE_SETS.items() if e == entity and s == raw.CRITICAL}
        assert crit.get("allowed_values", set()) == enforced
        required = next(e for e in suites[entity].expectations if e.meta["check"] == "required_columns")
        assert required.exact_match is False and set(required.column_set) == set(raw.COLUMNS[entity])
    contacts = {e.meta["check"]: e for e in suites["contacts"].expectations}
    assert contacts["email_canonical"].meta["severity"] == "critical"
    assert contacts["email_format"].meta["severity"] == "warning"
    assert contacts["phone_e164"].meta["severity"] == "warning"
    assert contacts["country_code_format"].meta["severity"] == "critical"


def test_row_counts_come_from_the_ingest_result(suites: dict[str, Any]) -> None:
    expected = {e: f["loaded"] for e, f in ingest_result()["files"].items()}
    for entity in ENTITIES:
        (count,) = [e for e in suites[entity].expectations if e.meta["check"] == "row_count_matches_ingest"]
        assert count.value == expected[entity]
    # without an entry for the file there is nothing to compare with (file_reported catches it)
    without = raw.build_suites({"files": {}})
    assert not [e for s in without.values() for e in s.expectations if e.meta["check"] == "row_count_matches_ingest"]
    dob = next(e for e in suites["contacts"].expectations if getattr(e, "column", None) == "date_of_birth"
               and e.meta["check"] == "date_range")  # fmt: skip
    # GX keeps ISO date strings as dates; the newest plausible birth date is the export's reference date
    assert (str(dob.min_value), str(dob.max_value)) == (raw.DATE_OF_BIRTH_MIN, "2026-10-31")


def test_reconciliation_suite(suites: dict[str, Any]) -> None:
    by = {(e.meta["check"], getattr(e, "column", None)): e for e in suites["reconciliation"].expectations}
    for column in raw.COUNT_COLUMNS:
        assert by[("facts_complete", column)].meta["severity"] == "critical"
        assert by[("non_negative", column)].meta["severity"] == "critical"
    accounted = by[("read_accounted", "unaccounted")]
    assert (accounted.min_value, accounted.max_value) == (0, 0)
    assert by[("quarantine_share_critical", "share_over_limit")].max_value == 0  # the spec's max_bad_share
    assert by[("quarantine_share_warning", "quarantined_share")].max_value == raw.QUARANTINE_SHARE_WARNING
    assert by[("quarantine_share_warning", "quarantined_share")].meta["severity"] == "warning"
    assert by[("file_reported", "reported")].value_set == [1]
    assert by[("known_entity", "entity")].value_set == list(ENTITIES)


# --------------------------------------------------------------------------- the stage, before GX


def test_validate_raw_zone_refuses_an_incomplete_raw_zone(tmp_path: Path) -> None:
    from crmshield.validate_raw import facts_path, validate_raw_zone

    settings = Settings.from_env(tmp_path / "data")
    settings.raw.mkdir(parents=True)
    (settings.raw / "contacts.parquet").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="missing companies, deals, tickets"):
        validate_raw_zone(settings, "run-x", ingest_result())
    assert facts_path(settings, "run/../x y").name == "run_.._x_y.csv"
    assert facts_path(settings, "run/../x y").parent == settings.gx_context / "uncommitted" / "raw_zone_facts"

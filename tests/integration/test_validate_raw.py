"""The validate_raw stage against a real ingest: a clean export passes, broken raw files fail.

One generated export is ingested once per module; every run restores the pristine raw files and
then breaks them on purpose (DuckDB rewrites of the real Parquet) or doctors the ingest dict:

* the clean run: the export as ingested passes with no warning;
* the *mistyped* run: every column of every raw table has the wrong Spark type, and the ingest
  result has no entry for tickets;
* the *broken* run: per table a missing column, a NULL and a duplicated source key, a NULL in
  every required field, values outside every enforced category and format, broken lineage, a
  row too few for the ingest's ``loaded``; plus a reconciliation with an unbalanced file, a
  quarantine share over the critical threshold, an entry with missing counts, one with negative
  counts. Canary PII (a name, emails) sits in the broken rows.

Each run is ONE checkpoint run; the assertions are parametrized over its result. Together the
two failing runs break every critical expectation the suites define
(:func:`test_every_critical_expectation_is_broken_by_a_test` checks that against the suites),
and each failure's message names suite, expectation, check, column and the count.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pytest

from crmshield.config import ENTITIES, Settings
from crmshield.generate import generate
from crmshield.pipeline import stage_ingest
from crmshield.validate import ValidationFailed, ValidationSummary, load_expectations_module
from crmshield.validate_raw import CHECKPOINT_NAME, validate_raw_zone

pytestmark = pytest.mark.integration

CANARY_NAME = "Zyxwvutsrq Canarynameton"
CANARY_EMAIL = "Zz.Canary.Raw.4471@Example.ORG"  # not canonical (upper case), still an address
CANARY_NOT_EMAIL = "zz.canary.raw.4472.at.example.org"  # not an address at all
CANARY_PHONE = "555-CANARY-0199"
NEEDLES = [
    CANARY_NAME,
    "Canarynameton",
    CANARY_EMAIL,
    CANARY_EMAIL.lower(),
    CANARY_NOT_EMAIL,
    "zz.canary",
    CANARY_PHONE,
]

raw = load_expectations_module(Settings.from_env(), "raw")
TYPE_CHECK = {"expect_column_values_to_be_of_type", "expect_column_values_to_be_in_type_list"}


# --------------------------------------------------------------------------- fixtures


@dataclass
class Zone:
    settings: Settings
    ingest: dict[str, Any]
    pristine: Path
    seconds: dict[str, float] = field(default_factory=dict)

    def loaded(self, entity: str) -> int:
        return int(self.ingest["files"][entity]["loaded"])


@dataclass
class Failed:
    error: ValidationFailed
    logs: list[str]

    @property
    def summary(self) -> ValidationSummary:
        return self.error.summary

    @property
    def message(self) -> str:
        return str(self.error)

    def critical(self) -> dict[tuple[str, str | None, str | None], Any]:
        return {(s, f.check, f.column): f for s, f in self.summary.critical_failures}

    def warned(self) -> dict[tuple[str, str | None, str | None], Any]:
        return {(s, f.check, f.column): f for s, f in self.summary.warnings}


@pytest.fixture(scope="module")
def zone(tmp_path_factory: pytest.TempPathFactory) -> Zone:
    """One generated export (1,000 contacts), ingested by the real ingest stage."""
    started = time.perf_counter()
    settings = Settings.from_env(tmp_path_factory.mktemp("raw_zone") / "data")
    generate(settings.landing, contacts=1000, seed=42)
    result = stage_ingest(settings)
    pristine = settings.data_dir.parent / "pristine_raw"
    shutil.copytree(settings.raw, pristine)
    return Zone(settings, result, pristine, {"ingest": time.perf_counter() - started})


def restore(zone: Zone) -> None:
    for entity in ENTITIES:
        shutil.copyfile(zone.pristine / f"{entity}.parquet", zone.settings.raw / f"{entity}.parquet")


def rewrite(
    path: Path, key: str, updates: tuple[tuple[int, str, str], ...] = (), delete: tuple[int, ...] = (), drop: str = ""
) -> None:
    """Rewrite one raw Parquet with DuckDB: ``updates`` are (row number by key, column, SQL
    expression); ``delete`` row numbers; ``drop`` a column. Types stay as ingest wrote them."""
    con = duckdb.connect()
    try:
        con.execute(
            f"CREATE TABLE t AS SELECT row_number() OVER (ORDER BY {key}) AS _rn, * FROM read_parquet('{path}')"
        )
        for rn, column, expr in updates:
            con.execute(f"UPDATE t SET {column} = {expr} WHERE _rn = {rn}")
        for rn in delete:
            con.execute(f"DELETE FROM t WHERE _rn = {rn}")
        exclude = ", ".join(["_rn", *([drop] if drop else [])])
        tmp = path.with_name(path.name + ".rewrite")
        con.execute(f"COPY (SELECT * EXCLUDE ({exclude}) FROM t ORDER BY _rn) TO '{tmp}' (FORMAT parquet)")
    finally:
        con.close()
    tmp.replace(path)


def retype_everything(path: Path, entity: str) -> None:
    """Every column gets a wrong type: text becomes INTEGER (its length), everything else VARCHAR."""
    casts = [
        f"CAST(length({c}) AS INTEGER) AS {c}" if t == "StringType" else f"CAST({c} AS VARCHAR) AS {c}"
        for c, t in raw.COLUMNS[entity].items()
    ]
    tmp = path.with_name(path.name + ".rewrite")
    duckdb.sql(f"COPY (SELECT {', '.join(casts)} FROM read_parquet('{path}')) TO '{tmp}' (FORMAT parquet)")
    tmp.replace(path)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def run_failing(zone: Zone, spark: Any, run_id: str, ingest: dict[str, Any]) -> Failed:
    handler = _Collect()
    root, ours = logging.getLogger(), logging.getLogger("crmshield")
    level = ours.level
    root.addHandler(handler)
    ours.setLevel(logging.INFO)
    started = time.perf_counter()
    try:
        with pytest.raises(ValidationFailed) as info:
            validate_raw_zone(zone.settings, run_id, ingest, spark=spark)
    finally:
        zone.seconds[run_id] = time.perf_counter() - started
        root.removeHandler(handler)
        ours.setLevel(level)
    return Failed(info.value, handler.messages)


@pytest.fixture(scope="module")
def clean(zone: Zone, spark: Any) -> ValidationSummary:
    restore(zone)
    started = time.perf_counter()
    summary = validate_raw_zone(zone.settings, "run-raw-clean", zone.ingest, spark=spark)
    zone.seconds["run-raw-clean"] = time.perf_counter() - started
    return summary


@pytest.fixture(scope="module")
def mistyped(zone: Zone, spark: Any) -> Failed:
    restore(zone)
    for entity in ENTITIES:
        retype_everything(zone.settings.raw / f"{entity}.parquet", entity)
    doctored = copy.deepcopy(zone.ingest)
    del doctored["files"]["tickets"]  # the ingest result lost a file
    try:
        return run_failing(zone, spark, "run-raw-mistyped", doctored)
    finally:
        restore(zone)


def _same_key_as(key: str, rn: int) -> str:
    return f"(SELECT {key} FROM t WHERE _rn = {rn})"


BREAKS: dict[str, dict[str, Any]] = {
    "contacts": {
        "updates": [
            (1, "contact_id", "NULL"),
            (1, "first_name", f"'{CANARY_NAME}'"),
            (3, "contact_id", _same_key_as("contact_id", 2)),
            (4, "created_at", "NULL"),
            (5, "email", f"'{CANARY_EMAIL}'"),
            (6, "email", f"'{CANARY_NOT_EMAIL}'"),  # warning only: ingest keeps non-addresses
            (7, "country", "'XX'"),
            (8, "country", "'nl'"),
            (9, "lifecycle_stage", "'prospect'"),
            (10, "_source_file", "'crm_export_v2.csv'"),
            (11, "_source_row", "NULL"),
            (13, "phone", f"'{CANARY_PHONE}'"),  # warning only
            (14, "date_of_birth", "DATE '1850-01-01'"),  # warning only
        ],
        "delete": (12,),
        "drop": "street",
    },
    "companies": {
        "updates": [
            (1, "company_id", "NULL"),
            (3, "company_id", _same_key_as("company_id", 2)),
            (4, "created_at", "NULL"),
            (5, "country", "'gb'"),
            (6, "_source_file", "'hubspot_contacts.csv'"),
            (7, "_source_row", "NULL"),
            (9, "employees", "-5"),  # warning only
        ],
        "delete": (8,),
        "drop": "city",
    },
    "deals": {
        "updates": [
            (1, "deal_id", "NULL"),
            (3, "deal_id", _same_key_as("deal_id", 2)),
            (4, "created_at", "NULL"),
            (5, "stage", "NULL"),
            (6, "stage", "'won'"),
            (7, "_source_file", "'hubspot_deals (1).csv'"),
            (8, "_source_row", "NULL"),
            (10, "currency", "'eur'"),  # warnings only: ingest passes currency through
            (11, "pipeline", "'Partner Pipeline'"),
            (12, "amount", "-1"),
        ],
        "delete": (9,),
        "drop": "deal_name",
    },
    "tickets": {
        "updates": [
            (1, "ticket_id", "NULL"),
            (3, "ticket_id", _same_key_as("ticket_id", 2)),
            (4, "requester_id", "NULL"),
            (5, "status", "NULL"),
            (6, "created_at", "NULL"),
            (7, "channel", "'fax'"),
            (8, "priority", "'p1'"),
            (9, "status", "'reopened'"),
            (10, "satisfaction", "'great'"),
            (11, "_source_file", "'zendesk_tickets.json'"),
            (12, "_source_row", "NULL"),
            (14, "solved_at", "created_at - INTERVAL 1 DAY"),  # warning only
            (15, "updated_at", "TIMESTAMP '1980-01-01 00:00:00'"),  # warning only
        ],
        "delete": (13,),
        "drop": "subject",
    },
}


def broken_ingest(zone: Zone) -> dict[str, Any]:
    doctored = copy.deepcopy(zone.ingest)
    files = doctored["files"]
    files["deals"]["duplicates"] += 1  # read != loaded + quarantined + duplicates + expired + erased
    files["companies"]["read"] += 30  # balanced, but 31 of 130 rows quarantined: an export that broke
    files["companies"]["quarantined"] += 30
    files["leads"] = {"entity": "leads", "file": "hubspot_leads.csv"}  # an unknown file, no counts
    files["notes"] = dict.fromkeys(raw.COUNT_COLUMNS, -1) | {"read": -50, "erased": -46}  # balanced, negative
    return doctored


@pytest.fixture(scope="module")
def broken(zone: Zone, spark: Any) -> Failed:
    restore(zone)
    for entity, spec in BREAKS.items():
        rewrite(zone.settings.raw / f"{entity}.parquet", key=raw.SOURCE_KEYS[entity], **spec)
    contacts = zone.settings.raw / "contacts.parquet"
    seeded = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{contacts}') WHERE first_name = '{CANARY_NAME}' "
        f"OR email IN ('{CANARY_EMAIL}', '{CANARY_NOT_EMAIL}') OR phone = '{CANARY_PHONE}'"
    ).fetchone()
    assert seeded == (4,)  # the canaries are in the raw zone GX reads
    try:
        return run_failing(zone, spark, "run-raw-broken", broken_ingest(zone))
    finally:
        restore(zone)


@pytest.fixture(scope="module", autouse=True)
def report_timing(zone: Zone) -> Iterator[None]:
    yield
    print("\nvalidate_raw timings (s): " + ", ".join(f"{k}={v:.1f}" for k, v in zone.seconds.items()))


# --------------------------------------------------------------------------- the clean export


def test_clean_export_passes_with_data_docs(zone: Zone, clean: ValidationSummary, spark: Any) -> None:
    settings = zone.settings
    assert clean.passed and clean.success, clean.to_dict()
    assert clean.checkpoint_name == CHECKPOINT_NAME == "raw_zone"
    assert [s.suite_name for s in clean.suites] == [
        "raw__contacts",
        "raw__companies",
        "raw__deals",
        "raw__tickets",
        "raw__reconciliation",
    ]
    assert [s.entity for s in clean.suites] == [*ENTITIES, "reconciliation"]
    for s in clean.suites:
        assert s.evaluated_expectations >= 15 and s.failures == (), s
        assert s.successful_expectations == s.evaluated_expectations
        assert s.data_docs_page and (settings.data_docs / s.data_docs_page).is_file()
    # the generated export sits exactly at the 1 % quarantine warning (1 of 100 companies): no warning
    assert clean.warnings == []
    assert zone.ingest["files"]["companies"]["quarantined"] / zone.ingest["files"]["companies"]["read"] <= 0.01
    assert clean.data_docs_index == settings.data_docs / "index.html"
    assert (settings.gx_context / "checkpoints" / "raw_zone.json").is_file()
    assert not list(settings.gx_context.rglob("*.html"))  # one Data Docs site, in the reports zone
    manifest = json.loads(json.dumps(clean.to_dict()))
    assert manifest["checkpoint"] == "raw_zone" and manifest["critical_failures"] == 0
    assert manifest["result_format"]["exclude_unexpected_values"] is True
    assert spark.conf.get("spark.sql.ansi.enabled") == "true"  # restored after the run


# --------------------------------------------------------------------------- every critical expectation fails


def _expected_broken() -> list[tuple[str, str, str | None, str | None]]:
    """(suite, check, column, what the message says after ``[check]``) for the broken run;
    ``None``: the row counts, which come from the ingest."""
    out: list[tuple[str, str, str | None, str | None]] = []
    for entity, spec in BREAKS.items():
        suite, key = f"raw__{entity}", raw.SOURCE_KEYS[entity]
        out += [
            (suite, "required_columns", None, f"missing=['{spec['drop']}']"),
            (suite, "column_type", spec["drop"], "raised an exception"),
            (suite, "source_key_not_null", key, "unexpected_count=1"),
            (suite, "source_key_unique", key, "unexpected_count=2"),
            (suite, "lineage_source_file", "_source_file", "unexpected_count=1"),
            (suite, "lineage_source_row", "_source_row", "unexpected_count=1"),
            (suite, "row_count_matches_ingest", None, None),
        ]
        for column in raw.REQUIRED[entity]:
            out.append((suite, "required_not_null", column, "unexpected_count=1"))
    out += [
        ("raw__contacts", "email_canonical", "email", "unexpected_count=1"),
        ("raw__contacts", "country_code_format", "country", "unexpected_count=1"),
        ("raw__contacts", "allowed_values", "country", "unexpected_count=2"),
        ("raw__contacts", "allowed_values", "lifecycle_stage", "unexpected_count=1"),
        ("raw__companies", "country_code_format", "country", "unexpected_count=1"),
        ("raw__companies", "allowed_values", "country", "unexpected_count=1"),
        ("raw__deals", "allowed_values", "stage", "unexpected_count=1"),
        ("raw__tickets", "allowed_values", "channel", "unexpected_count=1"),
        ("raw__tickets", "allowed_values", "priority", "unexpected_count=1"),
        ("raw__tickets", "allowed_values", "status", "unexpected_count=1"),
        ("raw__tickets", "allowed_values", "satisfaction", "unexpected_count=1"),
        ("raw__reconciliation", "known_entity", "entity", "unexpected_count=2"),
        ("raw__reconciliation", "read_accounted", "unaccounted", "unexpected_count=1"),
        ("raw__reconciliation", "quarantine_share_critical", "share_over_limit", "unexpected_count=1"),
    ]
    for column in raw.COUNT_COLUMNS:
        out += [
            ("raw__reconciliation", "facts_complete", column, "unexpected_count=1"),
            ("raw__reconciliation", "non_negative", column, "unexpected_count=1"),
        ]
    return out


@pytest.mark.parametrize(
    ("suite", "check", "column", "said"),
    _expected_broken(),
    ids=[f"{s.removeprefix('raw__')}-{c}-{col or 'table'}" for s, c, col, _ in _expected_broken()],
)
def test_broken_raw_zone_fails_naming_suite_check_column_and_count(
    zone: Zone, broken: Failed, suite: str, check: str, column: str | None, said: str | None
) -> None:
    failure = broken.critical().get((suite, check, column))
    assert failure is not None, (suite, check, column, sorted(broken.critical()))
    assert failure.severity == "critical"
    if said is None:  # one row deleted from every raw table: fewer rows than the ingest loaded
        loaded = zone.loaded(suite.removeprefix("raw__"))
        said = f"expected_rows={loaded}, observed_rows={loaded - 1}"
    where = f"{failure.expectation_type}({column})" if column else failure.expectation_type
    line = f"  - {suite}: {where} [{check}] {said}"
    assert line in broken.message.splitlines(), (line, broken.message)


@pytest.mark.parametrize(("entity", "column"), [(e, c) for e in ENTITIES for c in raw.COLUMNS[e]])
def test_mistyped_raw_zone_fails_on_every_column_type(mistyped: Failed, entity: str, column: str) -> None:
    suite = f"raw__{entity}"
    failure = mistyped.critical().get((suite, "column_type", column))
    assert failure is not None, (suite, column)
    assert failure.expectation_type in TYPE_CHECK
    expected = "IntegerType" if raw.COLUMNS[entity][column] == "StringType" else "StringType"
    assert failure.detail == {"observed_type": expected}
    line = f"  - {suite}: {failure.expectation_type}({column}) [column_type] observed_type={expected}"
    assert line in mistyped.message.splitlines(), mistyped.message


def test_missing_ingest_entry_fails_file_reported(mistyped: Failed) -> None:
    failure = mistyped.critical()[("raw__reconciliation", "file_reported", "reported")]
    assert failure.unexpected_count == 1
    assert (
        "  - raw__reconciliation: expect_column_values_to_be_in_set(reported) [file_reported] unexpected_count=1"
        in mistyped.message.splitlines()
    )
    assert "in the raw zone" in mistyped.message.splitlines()[0]


def test_every_critical_expectation_is_broken_by_a_test(zone: Zone, mistyped: Failed, broken: Failed) -> None:
    """Each critical expectation the suites define failed in the mistyped or the broken run."""
    seen = set(mistyped.critical()) | set(broken.critical())
    missing = []
    for suite in raw.build_suites(zone.ingest).values():
        for e in suite.expectations:
            if e.meta["severity"] == "critical":
                ident = (suite.name, e.meta["check"], getattr(e, "column", None))
                if ident not in seen:
                    missing.append(ident)
    assert missing == []


def test_broken_run_reports_warnings_without_stopping_on_them(broken: Failed) -> None:
    warned = broken.warned()
    assert warned[("raw__contacts", "email_format", "email")].unexpected_count == 1
    assert warned[("raw__contacts", "phone_e164", "phone")].unexpected_count == 1
    assert warned[("raw__contacts", "date_range", "date_of_birth")].unexpected_count == 1
    assert warned[("raw__tickets", "date_range", "updated_at")].unexpected_count == 1
    assert warned[("raw__companies", "non_negative", "employees")].unexpected_count == 1
    assert warned[("raw__deals", "allowed_values", "currency")].unexpected_count == 1
    assert warned[("raw__deals", "currency_format", "currency")].unexpected_count == 1
    assert warned[("raw__deals", "allowed_values", "pipeline")].unexpected_count == 1
    assert warned[("raw__deals", "non_negative", "amount")].unexpected_count == 1
    pair = warned[("raw__tickets", "solved_after_created", None)]
    assert pair.unexpected_count == 1 and pair.detail == {"column_A": "solved_at", "column_B": "created_at"}
    assert warned[("raw__reconciliation", "quarantine_share_warning", "quarantined_share")].unexpected_count == 2
    # warnings are logged (counts only) and never listed as the reason to stop
    assert any("[email_format] unexpected_count=1" in m for m in broken.logs)
    assert "[email_format]" not in broken.message
    # Data Docs were built before raising
    assert broken.summary.data_docs_index is not None and broken.summary.data_docs_index.is_file()
    assert all(s.data_docs_page for s in broken.summary.suites)


# --------------------------------------------------------------------------- no value anywhere


def test_no_canary_value_in_messages_logs_results_or_data_docs(
    zone: Zone, clean: ValidationSummary, mistyped: Failed, broken: Failed
) -> None:
    settings = zone.settings
    for failed in (mistyped, broken):
        assert not any(n in failed.message for n in NEEDLES)
        assert not any(n in json.dumps(failed.summary.to_dict()) for n in NEEDLES)
        assert not any(n in m for n in NEEDLES for m in failed.logs)
    assert files_containing(settings.data_docs, NEEDLES) == []
    assert files_containing(settings.gx_context, NEEDLES) == []
    # what GX stored: counts only, for every expectation of every run
    stored = list((settings.gx_context / "uncommitted" / "validations").rglob("*.json"))
    assert len(stored) == 15  # 3 runs x 5 suites
    for path in stored:
        for r in json.loads(path.read_text())["results"]:
            assert not set(r["result"]) & {
                "partial_unexpected_list",
                "partial_unexpected_counts",
                "partial_unexpected_index_list",
                "unexpected_list",
                "unexpected_rows",
                "unexpected_index_list",
                "unexpected_index_query",
            }, r


def files_containing(root: Path, needles: list[str]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            text = path.read_bytes().decode("utf-8", errors="replace")
            variants = {text, text.replace("\\/", "/"), text.replace("\\u0040", "@")}
            if any(n in v for n in needles for v in variants):
                hits.append(str(path))
    return hits

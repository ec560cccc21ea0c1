"""The validate stage against a Spark-written privacy zone: clean, then leaking.

The leaking zone plants canary PII (an email and a phone number in a ticket description), a
malformed pseudonym and an extra ``email`` column. Validation must fail on all of them, and no
canary may appear in any file GX wrote (validation results, context config, Data Docs).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from crmshield.config import Settings
from crmshield.validate import (
    CHECKPOINT_NAME,
    ValidationFailed,
    ValidationSummary,
    load_expectations_module,
    validate_privacy_zone,
)

pytestmark = pytest.mark.integration

CANARY_EMAIL = "zz.canary.7731@example.org"
CANARY_PHONE = "+44 20 7946 0958"
CANARY_PSEUDONYM = "contact-4711-not-a-pseudonym"
CANARY_COLUMN_VALUE = "zz.canary.col.5519@example.net"
CANARY_TYPED = "zz.canary.typed.8802@example.com"
NEEDLES = [
    CANARY_EMAIL,
    CANARY_PHONE,
    "7946 0958",
    "zz.canary",
    CANARY_PSEUDONYM,
    CANARY_COLUMN_VALUE,
    CANARY_TYPED,
]


def pk(domain: str, n: int) -> str:
    return "v1_" + hashlib.sha256(f"{domain}:{n}".encode()).hexdigest()


D = dt.date


def contacts_rows() -> list[tuple[Any, ...]]:
    return [
        (
            pk("contact", 1),
            pk("company", 1),
            pk("email", 1),
            pk("phone", 1),
            "25-34",
            "1011",
            "NL",
            "customer",
            D(2024, 1, 3),
        ),
        (pk("contact", 2), None, pk("email", 2), None, "65+", "SW1", "GB", "lead", D(2024, 2, 29)),
        (
            pk("contact", 3),
            pk("company", 2),
            None,
            pk("phone", 3),
            "unknown",
            "941",
            "US",
            "opportunity",
            D(2023, 12, 31),
        ),
    ]


def companies_rows() -> list[tuple[Any, ...]]:
    return [
        (pk("company", 1), "Software", "51-200", "NL", D(2022, 5, 1)),
        (pk("company", 2), "Retail", "1-10", "US", D(2021, 11, 15)),
    ]


def deals_rows() -> list[tuple[Any, ...]]:
    return [
        (
            pk("deal", 1), pk("contact", 1), pk("company", 1), "closedwon", "default",
            Decimal("1200.50"), "EUR", D(2024, 1, 10), D(2024, 3, 1),
        ),
        (
            pk("deal", 2), pk("contact", 3), None, "appointmentscheduled", "default",
            Decimal("99.00"), "USD", D(2024, 2, 1), None,
        ),
    ]  # fmt: skip


def tickets_rows(description: str = "Customer <PERSON> cannot log in since 2024-05-01 12:30.") -> list[tuple[Any, ...]]:
    return [
        (
            pk("ticket", 1), pk("contact", 1), "Login broken", description, "email", "high",
            "solved", D(2024, 5, 1), D(2024, 5, 2), 26.5, "good",
        ),
        (
            pk("ticket", 2), pk("contact", 3), "Invoice question",
            "Please call <PHONE> or write to <EMAIL> about order 2024-05-01.", "web", "normal",
            "open", D(2024, 5, 3), None, None, "unoffered",
        ),
    ]  # fmt: skip


SCHEMAS = {
    "contacts": "contact_pk string, company_pk string, email_pk string, phone_pk string, age_band string, "
    "postal_prefix string, country string, lifecycle_stage string, created_on date",
    "companies": "company_pk string, industry string, employee_band string, country string, created_on date",
    "deals": "deal_pk string, contact_pk string, company_pk string, stage string, pipeline string, "
    "amount decimal(18,2), currency string, created_on date, close_date date",
    "tickets": "ticket_pk string, contact_pk string, subject string, description string, "
    "channel string, priority string, status string, created_on date, solved_on date, "
    "resolution_hours double, satisfaction string",
}


def write_zone(spark: Any, settings: Settings, rows: dict[str, list[tuple[Any, ...]]]) -> None:
    for entity, schema in SCHEMAS.items():
        df = spark.createDataFrame(rows[entity], schema)
        df.coalesce(1).write.mode("overwrite").parquet(str(settings.privacy / entity))


def clean_rows() -> dict[str, list[tuple[Any, ...]]]:
    return {
        "contacts": contacts_rows(),
        "companies": companies_rows(),
        "deals": deals_rows(),
        "tickets": tickets_rows(),
    }


def files_containing(root: Path, needles: list[str]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            text = path.read_bytes().decode("utf-8", errors="replace")
            # GX JSON may escape characters; check the decoded forms too.
            variants = {text, text.replace("\\/", "/"), text.replace("\\u0040", "@")}
            if any(n in v for n in needles for v in variants):
                hits.append(str(path))
    return hits


def leaking_zone(spark: Any, settings: Settings) -> None:
    """Canary PII in a ticket description, a malformed pseudonym, an extra `email` column, and
    a canary in a numeric column's place (a type mismatch)."""
    from pyspark.sql import functions as F

    rows = clean_rows()
    leak = f"Customer wrote from {CANARY_EMAIL}, call back on {CANARY_PHONE} please."
    rows["tickets"] = tickets_rows(description=leak)
    bad_contact = list(rows["contacts"][0])
    bad_contact[0] = CANARY_PSEUDONYM
    rows["contacts"] = [tuple(bad_contact), *rows["contacts"][1:]]
    write_zone(spark, settings, rows)
    contacts = spark.read.parquet(str(settings.privacy / "contacts"))
    contacts = contacts.withColumn("email", F.lit(CANARY_COLUMN_VALUE)).localCheckpoint()
    contacts.write.mode("overwrite").parquet(str(settings.privacy / "contacts"))
    tickets = spark.read.parquet(str(settings.privacy / "tickets"))
    tickets = tickets.withColumn("resolution_hours", F.lit(CANARY_TYPED)).localCheckpoint()
    tickets.write.mode("overwrite").parquet(str(settings.privacy / "tickets"))


def test_clean_zone_passes_then_leaking_zone_fails_without_storing_pii(spark: Any, data_dir: Path) -> None:
    settings = Settings.from_env()
    assert settings.data_dir == data_dir.resolve()

    # ---- 1. a clean zone passes and builds Data Docs
    write_zone(spark, settings, clean_rows())
    summary = validate_privacy_zone(settings, run_id="run-clean", spark=spark)

    assert isinstance(summary, ValidationSummary)
    assert summary.passed and summary.success, summary.to_dict()
    assert [s.suite_name for s in summary.suites] == [
        "privacy__contacts",
        "privacy__companies",
        "privacy__deals",
        "privacy__tickets",
    ]
    for s in summary.suites:
        assert s.evaluated_expectations > 10
        assert s.successful_expectations == s.evaluated_expectations
        assert s.failed_expectations == 0 and s.failures == ()
    index = settings.data_docs / "index.html"
    assert summary.data_docs_index == index and index.is_file()
    assert (settings.gx_context / "great_expectations.yml").is_file()
    assert (settings.gx_context / "checkpoints" / f"{CHECKPOINT_NAME}.json").is_file()
    # The reports zone is the only Data Docs site: nothing rendered inside the context folder.
    assert not list(settings.gx_context.rglob("*.html"))
    manifest = json.loads(json.dumps(summary.to_dict()))
    assert manifest["passed"] is True and manifest["critical_failures"] == 0
    assert manifest["result_format"]["exclude_unexpected_values"] is True

    # ---- 2. a leaking zone, validated again in the same context (idempotent registration)
    leaking_zone(spark, settings)
    with pytest.raises(ValidationFailed) as info:
        validate_privacy_zone(settings, run_id="run-leak", spark=spark)

    summary = info.value.summary
    message = str(info.value)
    assert not summary.passed and not summary.success
    failed = {(s, f.expectation_type, f.column, f.check) for s, f in summary.critical_failures}
    assert ("privacy__contacts", "expect_table_columns_to_match_set", None, "column_set") in failed
    assert (
        "privacy__contacts",
        "expect_column_values_to_match_regex",
        "contact_pk",
        "pseudonym_format",
    ) in failed
    assert ("privacy__tickets", "expect_column_values_to_not_match_regex", "description", "no_email") in failed
    assert (
        "privacy__tickets",
        "expect_column_values_to_be_of_type",
        "resolution_hours",
        "column_type",
    ) in failed
    by_check = {(s, f.column, f.check): f for s, f in summary.critical_failures}
    assert by_check[("privacy__tickets", "description", "no_email")].unexpected_count == 1
    assert by_check[("privacy__contacts", "contact_pk", "pseudonym_format")].unexpected_count == 1
    assert by_check[("privacy__contacts", None, "column_set")].detail == {"unexpected": ["email"]}
    # A numeric check on a string column cannot run: reported as a warning that raised.
    warned = {(s, f.column, f.check): f for s, f in summary.warnings}
    # a phone-like digit run left in redacted free text is counted for review, not a stop
    assert warned[("privacy__tickets", "description", "no_phone")].unexpected_count == 1
    assert warned[("privacy__tickets", "resolution_hours", "non_negative")].raised_exception
    assert spark.conf.get("spark.sql.ansi.enabled") == "true"  # restored after the run
    # Clean suites still pass.
    assert summary.suite("privacy__companies").success
    assert summary.suite("privacy__deals").success
    # The message names suite, expectation type, column and count...
    assert (
        "privacy__tickets: expect_column_values_to_not_match_regex(description) [no_email] "
        "unexpected_count=1" in message
    )
    assert "privacy__contacts: expect_table_columns_to_match_set [column_set]" in message
    # ...but no value; neither does the manifest entry.
    assert not any(n in message for n in NEEDLES)
    assert not any(n in json.dumps(summary.to_dict()) for n in NEEDLES)

    # Data Docs were built (for both runs) before raising.
    assert summary.data_docs_index == index and index.is_file()
    assert len(list((settings.data_docs / "validations").rglob("*.html"))) == 8
    stored = list((settings.gx_context / "uncommitted" / "validations").rglob("*.json"))
    assert len(stored) == 8

    # No canary anywhere GX wrote: stored results, context config, Data Docs.
    assert files_containing(settings.data_docs, NEEDLES) == []
    assert files_containing(settings.gx_context, NEEDLES) == []
    # What GX stored: counts only, for every expectation.
    for path in stored:
        doc = json.loads(path.read_text())
        for r in doc["results"]:
            assert not set(r["result"]) & {
                "partial_unexpected_list",
                "partial_unexpected_counts",
                "partial_unexpected_index_list",
                "unexpected_list",
                "unexpected_rows",
                "unexpected_index_list",
                "unexpected_index_query",
            }, r


def test_suites_in_code_carry_a_severity_per_expectation() -> None:
    module = load_expectations_module(Settings.from_env())
    suites = module.build_suites()
    assert sorted(s.name for s in suites.values()) == [
        "privacy__companies",
        "privacy__contacts",
        "privacy__deals",
        "privacy__tickets",
    ]
    for entity, suite in suites.items():
        types = {}
        for e in suite.expectations:
            assert e.meta["severity"] in ("critical", "warning"), e
            assert e.severity.value == e.meta["severity"], e
            types.setdefault(e.meta["check"], set()).add(e.meta["severity"])
        for check in ("column_set", "column_type", "pseudonym_format", "no_email"):
            assert types[check] == {"critical"}, (entity, check)
        phone = {e.column: e.meta["severity"] for e in suite.expectations if e.meta["check"] == "no_phone"}
        for column, severity in phone.items():
            assert severity == ("warning" if (entity, column) in module.FREE_TEXT else "critical"), (entity, column)
        column_set = next(e for e in suite.expectations if e.meta["check"] == "column_set")
        assert column_set.exact_match is True
        assert set(column_set.column_set) == set(module.COLUMNS[entity])
        # every string column is scanned for both patterns
        scanned = {e.column for e in suite.expectations if e.meta["check"] == "no_phone"}
        assert scanned == set(module.string_columns(entity))


# ------------------------------------------------------------------ patterns, as Spark runs them


def test_pii_patterns_agree_between_python_and_spark(spark: Any) -> None:
    from pyspark.sql import functions as F

    module = load_expectations_module(Settings.from_env())
    samples = [
        CANARY_EMAIL,
        CANARY_PHONE,
        "+1 (415) 555-0100",
        "415.555.0100",
        "07700900123",
        "2024-05-01",
        "2024-05-01 12:30:45",
        "<EMAIL> <PHONE> <PERSON>",
        pk("contact", 1),
        "v1_" + "0123456789" * 6 + "abcd",
        "order 12345678",
        "since 01.05.2024 14:00",
        "2024-05-01 2024-06-30",
        "on 2024-05-01 call 020 7946 0958",
        "01.23.45.67.89",
        "+44 20 7946 0958ext",
        "j_obrien@corp-mail.de",
    ]
    df = spark.createDataFrame([(s,) for s in samples], "value string").select(
        "value",
        F.col("value").rlike(module.EMAIL_PATTERN).alias("email"),
        F.col("value").rlike(module.PHONE_PATTERN).alias("phone"),
        F.col("value").rlike(module.PSEUDONYM_PATTERN).alias("pseudonym"),
    )
    for row in df.collect():
        v = row["value"]
        assert row["email"] == bool(re.search(module.EMAIL_PATTERN, v)), v
        assert row["phone"] == bool(re.search(module.PHONE_PATTERN, v)), v
        assert row["pseudonym"] == bool(re.search(module.PSEUDONYM_PATTERN, v)), v
    got = {r["value"]: (r["email"], r["phone"]) for r in df.collect()}
    assert got[CANARY_EMAIL] == (True, False)
    assert got[CANARY_PHONE] == (False, True)
    assert got["2024-05-01 12:30:45"] == (False, False)
    assert got[pk("contact", 1)] == (False, False)
    assert got["v1_" + "0123456789" * 6 + "abcd"] == (False, False)

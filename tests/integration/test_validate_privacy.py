"""The validate stage against a Spark-written privacy zone: clean, then leaking.

The leaking zone plants canary PII (an email, a phone number, a card number, an IBAN and an IP
address in a ticket description), a malformed pseudonym and an extra ``email`` column. Validation
must fail on all of them, and no canary may appear in any file GX wrote (validation results,
context config, Data Docs).

A real run of the privacy job (module fixture) must pass; the same zone, deliberately broken
(PII in categorical and free-text columns, an unconsented and an erased subject, a class under k,
too many suppressed rows, dates not generalized as the policy says), must fail each new critical
check with a message naming suite, check, column and count, and nothing but counts stored.
The Luhn / mod-97 / IP SQL is checked against Python's checks and the redactor's labelled set.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import re
import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from crmshield.config import Settings
from crmshield.validate import (
    CHECKPOINT_NAME,
    ValidationFailed,
    ValidationSummary,
    exclusions_path,
    load_expectations_module,
    validate_privacy_zone,
)

pytestmark = pytest.mark.integration

CANARY_EMAIL = "zz.canary.7731@example.org"
CANARY_PHONE = "+44 20 7946 0958"
CANARY_PSEUDONYM = "contact-4711-not-a-pseudonym"
CANARY_COLUMN_VALUE = "zz.canary.col.5519@example.net"
CANARY_TYPED = "zz.canary.typed.8802@example.com"
CANARY_CARD = "4539 1488 0343 6467"  # Luhn-valid
CANARY_IBAN = "GB33 BUKB 2020 1555 5555 55"  # mod-97 valid
CANARY_IP = "198.51.100.77"
NEEDLES = [
    CANARY_EMAIL,
    CANARY_PHONE,
    "7946 0958",
    "zz.canary",
    CANARY_PSEUDONYM,
    CANARY_COLUMN_VALUE,
    CANARY_TYPED,
    CANARY_CARD,
    "4539148803436467",
    "0343 6467",
    CANARY_IBAN,
    "BUKB",
    CANARY_IP,
]


def pk(domain: str, n: int) -> str:
    return "v1_" + hashlib.sha256(f"{domain}:{n}".encode()).hexdigest()


D = dt.date


def contacts_rows() -> list[tuple[Any, ...]]:
    """20 contacts, k-anonymous for k=5 (classes of 12 and 7) with 1 suppressed row (5 %)."""
    rows: list[tuple[Any, ...]] = []
    for i in range(1, 21):
        company = pk("company", 1 + i % 2) if i % 3 else None
        email = pk("email", i) if i % 4 else None
        phone = pk("phone", i) if i % 5 else None
        if i == 3:
            qis = ("*", "*", "*")  # suppressed
        elif i % 2 or i > 14:
            qis = ("25-34", "1011", "NL")
        else:
            qis = ("65+", "SW1", "GB")
        stage = ("customer", "lead", "opportunity")[i % 3]
        rows.append((pk("contact", i), company, email, phone, *qis, stage, D(2024, 1 + i % 12, 1 + i)))
    return rows


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
    leak = (
        f"Customer wrote from {CANARY_EMAIL}, call back on {CANARY_PHONE} please. Card {CANARY_CARD}, "
        f"refund to {CANARY_IBAN}, logged in from {CANARY_IP}."
    )
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
    for check in ("no_card", "no_iban", "no_ip"):  # checksum-aware SQL over the free text
        assert by_check[("privacy__tickets", "description", check)].unexpected_count == 1, check
        assert f"privacy__tickets: unexpected_rows_expectation(description) [{check}] unexpected_count=1" in message
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
        # ...and for cards, IBANs and IP addresses, all critical: a regex in categorical and
        # pseudonym columns, a checksum-aware SQL query (the column named in meta) in the free text
        for check in ("no_card", "no_iban", "no_ip"):
            found = {e.meta.get("column") or e.column: e for e in suite.expectations if e.meta["check"] == check}
            assert set(found) == set(module.string_columns(entity)), (entity, check)
            for column, e in found.items():
                assert e.meta["severity"] == "critical"
                sql = (entity, column) in module.FREE_TEXT
                assert type(e).__name__ == ("UnexpectedRowsExpectation" if sql else "ExpectColumnValuesToNotMatchRegex")
        # the new table-level checks are critical and name the column they are about
        for e in suite.expectations:
            if type(e).__name__ == "UnexpectedRowsExpectation":
                assert e.meta["severity"] == "critical" and e.meta["column"], e
                assert e.unexpected_rows_query.startswith("SELECT 1 AS finding FROM "), e


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


def test_card_iban_ip_patterns_agree_between_python_and_spark(spark: Any) -> None:
    from pyspark.sql import functions as F

    module = load_expectations_module(Settings.from_env())
    patterns = {"card": module.CARD_PATTERN, "iban": module.IBAN_PATTERN, "ip": module.IP_PATTERN}
    samples = [
        CANARY_CARD, CANARY_IBAN, CANARY_IP, "4111-1111-1111-1111", "3782 822463 10005", "order 123456789012",
        "9400 1000 0000 0000 0000 00", "DE89 3704 0044\n0532 0130 00", "JD014600006281230417",
        "de89\u00a03704\u00a00044\u00a00532\u00a00130\u00a000", "2001:db8::8a2e:370:7334", "fe80::1", "::1",
        "12:30:45", "1.2.3.4", "10.0.0.0/8", "127.0.0.1", "192.168.01.1", "2024-05-01 2024-06-30",
        pk("contact", 7), "v1_" + "0123456789" * 6 + "abcd",
    ]  # fmt: skip
    df = spark.createDataFrame([(s,) for s in samples], "value string").select(
        "value", *[F.col("value").rlike(p).alias(name) for name, p in patterns.items()]
    )
    for row in df.collect():
        for name, p in patterns.items():
            assert row[name] == bool(re.search(p, row["value"])), (name, row["value"])


# ------------------------------------------------------------------ Luhn, mod-97 and IP SQL


def _evaluate(spark: Any, expressions: dict[str, str], values: list[str]) -> list[dict[str, Any]]:
    """Each SQL expression over ``value``, for every value, in one Spark query (in order)."""
    df = spark.createDataFrame(list(enumerate(values)), "i int, value string")
    selected = df.selectExpr("i", "value", *[f"{expr} AS {name}" for name, expr in expressions.items()])
    return [r.asDict() for r in selected.orderBy("i").collect()]


def test_luhn_and_mod97_sql_agree_with_python(spark: Any) -> None:
    from crmshield.redact import iban_valid, luhn_valid

    module = load_expectations_module(Settings.from_env())
    rng = random.Random(7)
    digits = [str(rng.randrange(10**12, 10**19)) for _ in range(400)]
    digits += ["4111111111111111", "4539148803436467", "378282246310005", "6011000990139424", "79927398713"]
    for d in digits[:100]:  # make a Luhn-valid one out of each: fix the check digit
        digits += [d[:-1] + c for c in "0123456789" if luhn_valid(d[:-1] + c)]
    rows = _evaluate(spark, {"luhn": module.luhn_sql("value")}, digits)
    assert [r["luhn"] for r in rows] == [luhn_valid(d) for d in digits]
    assert sum(r["luhn"] for r in rows) >= 100

    valid = ["DE89370400440532013000", "GB82WEST12345698765432", "NL91ABNA0417164300", "FR1420041010050500013M02606",
             "GB33BUKB20201555555555", "NO9386011117947", "CH9300762011623852957", "BE68539007547034"]  # fmt: skip
    ibans = list(valid)
    for v in valid:  # every single-character change breaks mod-97
        for _ in range(20):
            i = rng.randrange(2, len(v))
            c = rng.choice("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")
            ibans.append(v[:i] + c + v[i + 1 :])
    rows = _evaluate(spark, {"mod97": module.mod97_sql("value")}, ibans)
    for r in rows:
        assert r["mod97"] == iban_valid(r["value"]), r["value"]
    assert all(r["mod97"] for r in rows[: len(valid)])


#: (text, card, iban, ip) as the free-text checks must judge them.
FREE_TEXT_CASES = [
    ("Card 4111 1111 1111 1111 was charged", True, False, False),
    ("Card 4111 1111 1111 1112 was declined (typo)", False, False, False),  # Luhn fails: left alone
    ("4539148803436467", True, False, False),
    ("ref4539148803436467", True, False, False),
    ("card 4111 1111 1111 1111 123 (with the CVV)", True, False, False),
    ("amex 3782 822463 10005", True, False, False),
    ("8888888888888888", False, False, False),  # one digit repeated
    ("79927398713 and 1234567890128", False, False, False),  # too short / issuer 1
    ("9400 1000 0000 0000 0000 00", False, False, False),  # USPS tracking number
    ("tracking 1Z999AA10123456784", False, False, False),
    ("IBAN DE89 3704 0044 0532 0130 00, thanks", False, True, False),
    ("iban de89370400440532013000", False, True, False),
    ("DE89 3704 0044\n0532 0130 00", False, True, False),
    ("DE88 3704 0044 0532 0130 00", False, False, False),  # mod-97 fails; its digits are no card either
    ("DE89 3704 0044 0532 0130", False, False, False),  # too short for DE
    ("IBAN DE89 3704 0044 0532 0130 00 THIS WEEK", False, True, False),  # trailing word swallowed
    ("Server 203.0.113.7 is down", False, False, True),
    ("Version 10.2.3.4 crashes", False, False, False),
    ("build: 10.0.1.22", False, False, False),
    ("network 10.0.0.0/8, loopback 127.0.0.1, version 1.2.3.4", False, False, False),
    ("from 2001:db8::8a2e:370:7334", False, False, True),
    ("at 12:30:45 on 2024-05-01", False, False, False),
    ("<CARD> <IBAN> <IP> <PHONE> <EMAIL> <PERSON>", False, False, False),
    ("", False, False, False),
]


@pytest.fixture(scope="module")
def free_text_judged(spark: Any) -> list[dict[str, Any]]:
    module = load_expectations_module(Settings.from_env())
    checks = {
        "card": module.card_in_text_sql("value"),
        "iban": module.iban_in_text_sql("value"),
        "ip": module.ip_in_text_sql("value"),
    }
    return _evaluate(spark, checks, [c[0] for c in FREE_TEXT_CASES])


@pytest.mark.parametrize(("i", "case"), list(enumerate(FREE_TEXT_CASES)), ids=[c[0][:40] for c in FREE_TEXT_CASES])
def test_free_text_checks_are_checksum_aware(free_text_judged: list[dict[str, Any]], i: int, case: tuple) -> None:
    row = free_text_judged[i]
    assert (row["card"], row["iban"], row["ip"]) == case[1:], case[0]


def test_free_text_checks_agree_with_the_redactor_on_the_labelled_set(spark: Any) -> None:
    """The redactor's output of the labelled set has no finding; the original text has a card,
    IBAN or IP finding exactly where a gold span of that kind is (checksum look-alikes left)."""
    from crmshield.redact import redact
    from crmshield.redact_eval import load

    module = load_expectations_module(Settings.from_env())
    examples = load()
    texts = [e.text for e in examples] + [redact(e.text, e.known) or "" for e in examples]
    checks = {
        "card": module.card_in_text_sql("value"),
        "iban": module.iban_in_text_sql("value"),
        "ip": module.ip_in_text_sql("value"),
    }
    rows = _evaluate(spark, checks, texts)
    n = len(examples)
    for e, original, redacted in zip(examples, rows[:n], rows[n:], strict=True):
        kinds = {g.kind for g in e.gold}
        for check, kind in (("card", "CARD"), ("iban", "IBAN"), ("ip", "IP")):
            assert original[check] == (kind in kinds), (e.id, check)
            assert redacted[check] is False, (e.id, check)
    assert sum(r["card"] for r in rows[:n]) >= 10 and sum(r["iban"] for r in rows[:n]) >= 10


def test_month_rule_keeps_a_date_on_the_first_of_the_month(spark: Any) -> None:
    import transforms as T  # spark_jobs/privacy/transforms.py
    from pyspark.sql import functions as F

    df = spark.createDataFrame([(dt.datetime(2024, 5, 17, 13, 45),), (None,)], "ts timestamp")
    out = df.select(T.generalize(F.col("ts"), "month", dt.date(2024, 6, 1), None, None).alias("m"))
    assert dict(out.dtypes)["m"] == "date"
    assert [r["m"] for r in out.collect()] == [dt.date(2024, 5, 1), None]


# ------------------------------------------------------------------ a real run of the privacy job

KEY_HEX = "6b" * 32
CANARY_IPV6 = "2001:db8::8a2e:370:7334"
CANARY_CARD_PLAIN = "4111 1111 1111 1111"
LOOK_ALIKES = "Card 4111 1111 1111 1112, IBAN DE88 3704 0044 0532 0130 00, Version 10.2.3.4, net 10.0.0.0/8"


def _key() -> Any:
    from crmshield.keys import PseudonymKey

    return PseudonymKey(bytes.fromhex(KEY_HEX), 1, "test")


@pytest.fixture(scope="module")
def real_zone(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Landing (300 contacts) -> ingest -> the privacy job, in this session's Spark."""
    import job  # spark_jobs/privacy/job.py

    from crmshield.generate import generate
    from crmshield.ingest import ingest
    from crmshield.keys import ENV_KEY, ENV_VERSION
    from crmshield.privacy import resolve_column_plan

    mp = pytest.MonkeyPatch()
    data = tmp_path_factory.mktemp("privacy_real") / "data"
    mp.setenv("CRMSHIELD_DATA_DIR", str(data))
    mp.setenv(ENV_KEY, KEY_HEX)
    mp.setenv(ENV_VERSION, "1")
    mp.delenv("CRMSHIELD_PRIVACY_POLICY", raising=False)
    try:
        settings = Settings.from_env(data)
        generate(settings.landing, contacts=300, seed=5)
        ingest(settings)
        stats = job.run(spark, settings.raw, settings.privacy, resolve_column_plan(settings))
        yield settings, stats
    finally:
        mp.undo()


def test_real_job_output_passes_with_its_restricted_exclusions_list(real_zone: Any, spark: Any) -> None:
    from crmshield.erasure import suppression_path

    settings, stats = real_zone
    path = exclusions_path(settings)
    assert path == settings.restricted / "exclusions"
    # restricted like the raw zone: owner only
    for p in [settings.restricted, path, *path.rglob("*")]:
        assert p.stat().st_mode & 0o777 == (0o700 if p.is_dir() else 0o600), p
    # pseudonyms only (one column), exactly the contacts whose raw consent is not true
    listed = duckdb.sql(f"SELECT * FROM read_parquet('{path}/*.parquet')")
    assert listed.columns == ["contact_pk"]
    raw_ids = duckdb.sql(
        f"SELECT contact_id FROM '{settings.raw}/contacts.parquet' WHERE analytics_consent IS DISTINCT FROM true"
    ).fetchall()
    key = _key()
    assert {r[0] for r in listed.fetchall()} == {key.pseudonym("contact", str(r[0])) for r in raw_ids}
    assert len(raw_ids) > 10
    assert stats["exclusions"]["no_analytics_consent"] == len(raw_ids)
    assert stats["entities"]["contacts"]["excluded"]["excluded_consent"] == len(raw_ids)

    # a suppression entry written before pseudonyms were recorded is tolerated
    suppression = suppression_path(settings)
    suppression.parent.mkdir(parents=True, exist_ok=True)
    legacy = {"token": "v1_" + "0" * 64, "kind": "crm_id", "key_version": 1, "request_id": "legacy", "added_at": "x"}
    suppression.write_text(json.dumps(legacy) + "\n", encoding="utf-8")

    summary = validate_privacy_zone(settings, run_id="real-clean", spark=spark)
    assert summary.passed, summary.to_dict()
    assert not summary.critical_failures
    module = load_expectations_module(settings)
    for s in summary.suites:  # every check of the suite ran (the SQL ones included)
        assert s.evaluated_expectations == len(module.build_suite(s.entity).expectations), s.suite_name
    assert not spark.catalog.tableExists(module.EXCLUDED_SUBJECTS_VIEW)  # dropped after the run


def _mutate(spark: Any, settings: Settings, entity: str, change: Any) -> None:
    """Read a privacy-zone entity, apply ``change`` (DataFrame -> DataFrame), write it back."""
    df = spark.read.parquet(str(settings.privacy / entity))
    change(df).localCheckpoint().coalesce(1).write.mode("overwrite").parquet(str(settings.privacy / entity))


def _with_rows(spark: Any, df: Any, template: dict[str, Any], *overrides: dict[str, Any]) -> Any:
    added = [tuple({**template, **o}[c] for c in df.columns) for o in overrides]
    return df.unionByName(spark.createDataFrame(added, df.schema))


def _set_where(df: Any, key: str, value: str, **columns: Any) -> Any:
    from pyspark.sql import functions as F

    for column, new in columns.items():
        df = df.withColumn(column, F.when(F.col(key) == value, F.lit(new)).otherwise(F.col(column)))
    return df


@pytest.fixture(scope="module")
def broken(real_zone: Any, spark: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A copy of the real run, broken once for every new critical check, validated once."""
    from pyspark.sql import functions as F

    from crmshield.erasure import canonical, load_suppression, record_requests

    source, _ = real_zone
    data = tmp_path_factory.mktemp("privacy_broken") / "data"
    shutil.copytree(source.data_dir, data, ignore=shutil.ignore_patterns("gx", "reports"))
    settings = Settings.from_env(data)
    key = _key()
    privacy = settings.privacy

    # an erased subject the zone still holds (recorded as `crmshield erase` does; zone not rebuilt)
    subject = duckdb.sql(
        f"""SELECT contact_id FROM '{settings.raw}/contacts.parquet'
        WHERE analytics_consent AND email LIKE '%@%' AND phone LIKE '+%'
          AND contact_id IN (SELECT requester_id FROM '{settings.raw}/tickets.parquet')
          AND contact_id IN (SELECT contact_id FROM '{settings.raw}/deals.parquet')
        ORDER BY contact_id LIMIT 1"""
    ).fetchone()[0]
    record_requests(settings, key, [canonical("crm_id", str(subject))])
    erased: dict[str, set[str]] = {}
    for entry in load_suppression(settings):
        for column, values in (entry.get("pseudonyms") or {}).items():
            erased.setdefault(column, set()).update(values)
    assert erased["contact_pk"] and erased["email_pk"] and erased["phone_pk"]
    unconsented = sorted(
        r[0] for r in duckdb.sql(f"SELECT * FROM read_parquet('{exclusions_path(settings)}/*.parquet')").fetchall()
    )[0]

    contacts = spark.read.parquet(str(privacy / "contacts"))
    qis = ["age_band", "postal_prefix", "country"]
    n0 = contacts.count()
    suppressed = F.coalesce((F.col("age_band") == "*") & (F.col("postal_prefix") == "*") & (F.col("country") == "*"),
                            F.lit(False))  # fmt: skip
    big = contacts.where(~suppressed).groupBy(*qis).count().orderBy(F.desc("count")).first()  # the largest class
    template = contacts.where(~F.col("contact_pk").isin(*erased["contact_pk"])).orderBy("contact_pk").first().asDict()
    template.update(email_pk=None, phone_pk=None)
    n_suppressed_added = n0 // 10 + 1
    _mutate(spark, settings, "contacts", lambda df: _with_rows(
        spark, df, template,
        {"contact_pk": unconsented, **{q: big[q] for q in qis}},  # no consent
        {"contact_pk": pk("contact", 10**6), "age_band": "18-24", "postal_prefix": "ZZ9", "country": "NL",
         "lifecycle_stage": CANARY_CARD_PLAIN},  # a class of one; a card in a categorical column
        *[{"contact_pk": pk("contact", 2 * 10**6 + j), **dict.fromkeys(qis, "*")} for j in range(n_suppressed_added)],
    ))  # fmt: skip
    first_company = spark.read.parquet(str(privacy / "companies")).orderBy("company_pk").first()["company_pk"]
    _mutate(spark, settings, "companies", lambda df: _set_where(df, "company_pk", first_company, industry=CANARY_IBAN))
    deals = spark.read.parquet(str(privacy / "deals")).orderBy("deal_pk").limit(2).collect()

    def break_deals(df: Any) -> Any:
        df = _set_where(df, "deal_pk", deals[0]["deal_pk"], stage=CANARY_IP)
        df = _set_where(df, "deal_pk", deals[1]["deal_pk"], pipeline=CANARY_IPV6)
        df = _with_rows(spark, df, deals[0].asDict(), {"deal_pk": pk("deal", 10**6), "contact_pk": unconsented})
        return df.withColumn("close_date", F.col("close_date").cast("timestamp"))  # not generalized to a date

    _mutate(spark, settings, "deals", break_deals)
    tickets = spark.read.parquet(str(privacy / "tickets")).orderBy("ticket_pk").limit(5).collect()

    def break_tickets(df: Any) -> Any:
        t = [r["ticket_pk"] for r in tickets]
        df = _set_where(df, "ticket_pk", t[0], description=f"Please charge card {CANARY_CARD} again.")
        df = _set_where(df, "ticket_pk", t[1], description=f"Refund to {CANARY_IBAN} please.")
        df = _set_where(df, "ticket_pk", t[2], description=f"Blocked login from {CANARY_IP}.")
        df = _set_where(df, "ticket_pk", t[3], description=LOOK_ALIKES)  # what the redactor leaves: no finding
        df = _set_where(df, "ticket_pk", t[4], subject=CANARY_CARD_PLAIN.replace(" ", ""))
        return _with_rows(spark, df, tickets[0].asDict(), {"ticket_pk": pk("ticket", 10**6), "contact_pk": unconsented})

    _mutate(spark, settings, "tickets", break_tickets)

    def count(entity: str, where: str, *params: Any) -> int:
        sql = f"SELECT count(*) FROM read_parquet('{privacy}/{entity}/*.parquet') WHERE {where}"
        return int(duckdb.execute(sql, list(params)).fetchone()[0])  # type: ignore[index]

    def erased_rows(entity: str, column: str) -> int:
        return count(entity, f"{column} IN (SELECT unnest(?))", sorted(erased[column]))

    rows_, sql = "expect_column_values_to_not_match_regex", "unexpected_rows_expectation"
    expected = [
        ("privacy__contacts", rows_, "lifecycle_stage", "no_card", 1),
        ("privacy__companies", rows_, "industry", "no_iban", 1),
        ("privacy__deals", rows_, "stage", "no_ip", 1),
        ("privacy__deals", rows_, "pipeline", "no_ip", 1),
        ("privacy__tickets", sql, "description", "no_card", 1),
        ("privacy__tickets", sql, "description", "no_iban", 1),
        ("privacy__tickets", sql, "description", "no_ip", 1),
        ("privacy__tickets", sql, "subject", "no_card", 1),
        ("privacy__contacts", sql, "contact_pk", "no_unconsented_subject", 1),
        ("privacy__deals", sql, "contact_pk", "no_unconsented_subject", 1),
        ("privacy__tickets", sql, "contact_pk", "no_unconsented_subject", 1),
        ("privacy__contacts", sql, "contact_pk", "no_erased_subject", erased_rows("contacts", "contact_pk")),
        ("privacy__contacts", sql, "email_pk", "no_erased_subject", erased_rows("contacts", "email_pk")),
        ("privacy__contacts", sql, "phone_pk", "no_erased_subject", erased_rows("contacts", "phone_pk")),
        ("privacy__deals", sql, "contact_pk", "no_erased_subject", erased_rows("deals", "contact_pk")),
        ("privacy__tickets", sql, "contact_pk", "no_erased_subject", erased_rows("tickets", "contact_pk")),
        ("privacy__contacts", sql, ",".join(qis), "k_anonymity", 1),
        ("privacy__contacts", sql, ",".join(qis), "k_anonymity_suppression",
         count("contacts", " AND ".join(f"{q} = '*'" for q in qis))),
        ("privacy__deals", sql, "close_date", "date_generalized", count("deals", "true")),
        ("privacy__tickets", sql, "created_on", "date_month_first_day", count("tickets", "day(created_on) <> 1")),
    ]  # fmt: skip

    # the policy in force generalizes ticket creation to the month: this zone has days
    policy = (settings.root / "config" / "privacy_policy.yml").read_text(encoding="utf-8")
    day = "rule: day, output: created_on, purposes: [support_analytics]"
    assert policy.count(day) == 1
    month_policy = data.parent / "privacy_policy_month.yml"
    month_policy.write_text(policy.replace(day, day.replace("day", "month")), encoding="utf-8")
    mp = pytest.MonkeyPatch()
    mp.setenv("CRMSHIELD_PRIVACY_POLICY", str(month_policy))
    try:
        with pytest.raises(ValidationFailed) as info:
            validate_privacy_zone(settings, run_id="real-broken", spark=spark)
    finally:
        mp.undo()
    needles = [CANARY_CARD, CANARY_CARD_PLAIN, CANARY_CARD_PLAIN.replace(" ", ""), CANARY_IBAN, CANARY_IP,
               CANARY_IPV6, unconsented, *[p for v in erased.values() for p in v]]  # fmt: skip
    return {"error": info.value, "expected": expected, "needles": needles, "settings": settings}


BROKEN_CASES = [
    # (suite, column, check): the count comes from the broken zone itself
    ("privacy__contacts", "lifecycle_stage", "no_card"),
    ("privacy__companies", "industry", "no_iban"),
    ("privacy__deals", "stage", "no_ip"),
    ("privacy__deals", "pipeline", "no_ip"),
    ("privacy__tickets", "description", "no_card"),
    ("privacy__tickets", "description", "no_iban"),
    ("privacy__tickets", "description", "no_ip"),
    ("privacy__tickets", "subject", "no_card"),
    ("privacy__contacts", "contact_pk", "no_unconsented_subject"),
    ("privacy__deals", "contact_pk", "no_unconsented_subject"),
    ("privacy__tickets", "contact_pk", "no_unconsented_subject"),
    ("privacy__contacts", "contact_pk", "no_erased_subject"),
    ("privacy__contacts", "email_pk", "no_erased_subject"),
    ("privacy__contacts", "phone_pk", "no_erased_subject"),
    ("privacy__deals", "contact_pk", "no_erased_subject"),
    ("privacy__tickets", "contact_pk", "no_erased_subject"),
    ("privacy__contacts", "age_band,postal_prefix,country", "k_anonymity"),
    ("privacy__contacts", "age_band,postal_prefix,country", "k_anonymity_suppression"),
    ("privacy__deals", "close_date", "date_generalized"),
    ("privacy__tickets", "created_on", "date_month_first_day"),
]


@pytest.mark.parametrize(("suite", "column", "check"), BROKEN_CASES, ids=lambda v: str(v).removeprefix("privacy__"))
def test_broken_zone_fails_each_new_critical_check(broken: dict[str, Any], suite: str, column: str, check: str) -> None:
    error: ValidationFailed = broken["error"]
    case = next(c for c in broken["expected"] if (c[0], c[2], c[3]) == (suite, column, check))
    _, expectation_type, _, _, count = case
    assert count >= 1
    failures = {(s, f.column, f.check): f for s, f in error.summary.critical_failures}
    failure = failures[(suite, column, check)]
    assert failure.severity == "critical" and not failure.raised_exception
    assert failure.unexpected_count == count
    assert f"{suite}: {expectation_type}({column}) [{check}] unexpected_count={count}" in str(error)


def test_broken_zone_reports_counts_only(broken: dict[str, Any], spark: Any) -> None:
    error: ValidationFailed = broken["error"]
    settings: Settings = broken["settings"]
    assert {(c[0], c[2], c[3]) for c in broken["expected"]} == set(BROKEN_CASES)
    # the look-alikes the redactor leaves (Luhn-failing card, mod-97-failing IBAN, a version, a
    # network) are not findings: each free-text check counted its one planted row only (above)
    message, manifest = str(error), json.dumps(error.summary.to_dict())
    assert not [n for n in broken["needles"] if n in message or n in manifest]
    assert files_containing(settings.data_docs, broken["needles"]) == []
    assert files_containing(settings.gx_context, broken["needles"]) == []
    assert spark.conf.get("spark.sql.ansi.enabled") == "true"
    module = load_expectations_module(settings)
    assert not spark.catalog.tableExists(module.EXCLUDED_SUBJECTS_VIEW)


def test_suites_read_dates_k_anonymity_and_persons_from_the_policy(tmp_path: Path) -> None:
    from crmshield.policy import load_policy

    module = load_expectations_module(Settings.from_env())
    text = (Settings.from_env().root / "config" / "privacy_policy.yml").read_text(encoding="utf-8")
    custom = tmp_path / "policy.yml"
    custom.write_text(
        text.replace("  k: 5\n", "  k: 11\n").replace("max_suppression: 0.05", "max_suppression: 0.02")
        .replace("rule: day, output: close_date", "rule: month, output: close_date"),
        encoding="utf-8",
    )  # fmt: skip
    policy = load_policy(custom)
    checks = {
        entity: {(e.meta["check"], e.meta.get("column") or getattr(e, "column", None)): e
                 for e in module.build_suite(entity, policy).expectations}
        for entity in module.COLUMNS
    }  # fmt: skip
    qis = "age_band,postal_prefix,country"
    assert "< 11" in checks["contacts"][("k_anonymity", qis)].unexpected_rows_query
    assert "0.02 * count(1)" in checks["contacts"][("k_anonymity_suppression", qis)].unexpected_rows_query
    assert ("date_month_first_day", "close_date") in checks["deals"]
    assert ("date_month_first_day", "created_on") not in checks["deals"]
    dated = {(entity, c) for entity, cs in checks.items() for (check, c) in cs if check == "date_generalized"}
    assert dated == {("contacts", "created_on"), ("companies", "created_on"), ("deals", "created_on"),
                     ("deals", "close_date"), ("tickets", "created_on"), ("tickets", "solved_on")}  # fmt: skip
    erased = {(entity, c) for entity, cs in checks.items() for (check, c) in cs if check == "no_erased_subject"}
    assert erased == {("contacts", "contact_pk"), ("contacts", "email_pk"), ("contacts", "phone_pk"),
                      ("deals", "contact_pk"), ("tickets", "contact_pk")}  # fmt: skip
    consent = {(entity, c) for entity, cs in checks.items() for (check, c) in cs if check == "no_unconsented_subject"}
    assert consent == {("contacts", "contact_pk"), ("deals", "contact_pk"), ("tickets", "contact_pk")}
    # a policy that lets a column out beyond the privacy zone's columns: scanned for every pattern
    leaky = tmp_path / "leaky.yml"
    leaky.write_text(text.replace("action: pseudonymize, domain: email, output: email_pk,", "action: keep,"))
    scanned = {
        e.meta["check"] for e in module.build_suite("contacts", load_policy(leaky)).expectations
        if getattr(e, "column", None) == "email"
    }  # fmt: skip
    assert scanned == {"no_email", "no_phone", "no_card", "no_iban", "no_ip"}
    # the defaults come from the policy in force
    default = module.build_suite("contacts")
    assert any("< 5" in getattr(e, "unexpected_rows_query", "") for e in default.expectations)

"""The privacy job's pure transforms, on small Spark frames."""

from __future__ import annotations

import hashlib
import hmac
from datetime import date

import pytest
import transforms as T  # spark_jobs/privacy, on pytest's pythonpath
from pyspark.sql import Row
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from crmshield.keys import PseudonymKey

KEY = bytes(range(32))


@pytest.mark.parametrize("key", [KEY, b"k" * 64, b"x" * 100])
def test_spark_hmac_matches_python_hmac(spark, key):
    values = ["1000001", "", "Zoë Müller", "ünïcødé@example.org", "x" * 300]
    df = spark.createDataFrame([(v,) for v in values], "v string")
    got = [r[0] for r in df.select(T.hmac_sha256_hex(F.col("v"), key)).collect()]
    want = [hmac.new(key, v.encode(), hashlib.sha256).hexdigest() for v in values]
    assert got == want


def test_pseudonym_matches_reference_and_separates_domains(spark):
    pk = PseudonymKey(KEY, 3, "test")
    keys = T.Keys({d: pk.domain_key(d) for d in ("contact", "company")}, version=3)
    df = spark.createDataFrame([(1000001,), (None,)], "id bigint")
    rows = df.select(keys.pk(F.col("id"), "contact").alias("c"), keys.pk(F.col("id"), "company").alias("k")).collect()
    assert rows[0]["c"] == pk.pseudonym("contact", "1000001")
    assert rows[0]["c"].startswith("v3_") and len(rows[0]["c"]) == 3 + 64
    assert rows[0]["c"] != rows[0]["k"], "the same id must not link across domains"
    assert rows[1]["c"] is None


def test_email_and_phone_tokens_only_for_canonical_values(spark):
    """Ingest puts emails and phones in canonical form; anything else gets no token (a shared
    token for 'n/a' would link unrelated people)."""
    pk = PseudonymKey(KEY, 1, "test")
    keys = T.Keys({d: pk.domain_key(d) for d in ("email", "phone")}, version=1)
    df = spark.createDataFrame(
        [("zoë.smith@example.com", "+14155550134"), ("no email given", "ask reception"), (None, None)],
        "email string, phone string",
    )
    rows = df.select(keys.pk(F.col("email"), "email").alias("e"), keys.pk(F.col("phone"), "phone").alias("p")).collect()
    assert rows[0]["e"] == pk.pseudonym("email", "zoë.smith@example.com")
    assert rows[0]["p"] == pk.pseudonym("phone", "+14155550134")
    assert [tuple(r) for r in rows[1:]] == [(None, None), (None, None)]


def test_age_band_at_reference_date(spark):
    ref = date(2026, 10, 31)
    df = spark.createDataFrame(
        [(date(2008, 11, 1),), (date(2008, 10, 31),), (date(1992, 1, 1),), (date(1950, 5, 5),), (None,)],
        "dob date",
    )
    got = [r[0] for r in df.select(T.age_band(F.col("dob"), ref)).collect()]
    assert got == ["unknown", "18-24", "25-34", "65+", "unknown"]


def test_postal_prefix_is_country_aware_and_keeps_leading_zeros(spark):
    df = spark.createDataFrame(
        [("02134", "US"), ("SW1A 1AA", "GB"), ("M11AE", "GB"), ("01067", "DE"), ("75008", "FR"),
         ("1012 AB", "NL"), ("0800", "AU"), ("M5V 2T6", "CA"), ("12345", "JP"), (None, "US")],
        "postal_code string, country string",
    )  # fmt: skip
    got = [r[0] for r in df.select(T.postal_prefix(F.col("postal_code"), F.col("country"))).collect()]
    assert got == ["021", "SW1A", "M1", "01", "75", "10", "08", "M5V", None, None]


def test_redaction_removes_own_identifiers_and_patterns(spark):
    df = spark.createDataFrame(
        [
            Row(text="Hi, this is Zoe Muller. Call 0151 12345678 or mail zoe.muller@web.de, thanks ZOË",
                first="Zoë", last="Müller", email="zoe.muller@web.de", phone="+4915112345678", country="DE"),
            Row(text="Order #864625 shipped on 2024-05-01; other contact: bob@example.com, (707) 783-1306",
                first="Al", last="Li", email=None, phone=None, country="US"),
            Row(text="Alice and Malina met", first="Li", last="Ali", email=None, phone=None, country=None),
            Row(text="Card 4111 1111 1111 1111 works, 4111 1111 1111 1112 does not", first=None, last=None,
                email=None, phone=None, country="GB"),
            Row(text=None, first="A", last="B", email=None, phone=None, country=None),
        ]
    )  # fmt: skip
    cols = [F.col(c) for c in ("text", "first", "last", "email", "phone", "country")]
    got = [r[0] for r in df.select(T.redact_text(*cols)).collect()]
    # the requester's own names match without their accents, the phone in its national form
    assert got[0] == "Hi, this is <PERSON>. Call <PHONE> or mail <EMAIL>, thanks <PERSON>"
    # order numbers and dates are not phone numbers; other people's emails and phones still go
    assert got[1] == "Order #864625 shipped on 2024-05-01; other contact: <EMAIL>, <PHONE>"
    # names match whole words only
    assert got[2] == "Alice and Malina met"
    # a card number only when it passes the Luhn check
    assert got[3] == "Card <CARD> works, 4111 1111 1111 1112 does not"
    assert got[4] is None


def test_tickets_of_contacts_without_consent_are_excluded(spark):
    keys = T.Keys({d: KEY for d in ("contact", "company", "deal", "ticket")}, version=1)
    contacts = spark.createDataFrame(
        [(1, True, "Ann", "Lee", "ann@x.org", "+15551234567", "US"), (2, False, "Bo", "Ng", None, None, "GB")],
        "contact_id bigint, analytics_consent boolean, first_name string, last_name string, email string, "
        "phone string, country string",
    )
    tickets = spark.createDataFrame(
        [(10, 1, "Ann here", "x"), (11, 2, "Bo here", "y"), (12, 3, "who?", "z")],
        "ticket_id bigint, requester_id bigint, subject string, description string",
    ).select("*", *[F.lit(None).cast(t).alias(c) for c, t in [
        ("channel", "string"), ("priority", "string"), ("status", "string"), ("created_at", "timestamp"),
        ("solved_at", "timestamp"), ("satisfaction", "string")]])  # fmt: skip
    classified = T.classify_subject(tickets, contacts, "requester_id")
    status = {r["ticket_id"]: r["_subject_status"] for r in classified.collect()}
    assert status == {10: "ok", 11: "excluded_consent", 12: "excluded_unknown_contact"}
    plan = {"outputs": [{"output": "subject", "action": "redact", "inputs": ["subject"]}]}
    out = T.apply_plan(classified.filter(F.col("_subject_status") == "ok"), plan, keys, date(2026, 1, 1))
    assertDataFrameEqual(out, [Row(subject="<PERSON> here")])


def test_apply_plan_selects_exactly_the_policy_outputs(spark):
    keys = T.Keys({d: KEY for d in ("contact", "company", "deal", "ticket")}, version=2)
    df = spark.createDataFrame(
        [(7, "02134", "US", 57, 12.5, "secret")],
        "contact_id bigint, postal_code string, country string, employees int, score double, extra string",
    )
    plan = {
        "outputs": [
            {"output": "contact_pk", "action": "pseudonymize", "inputs": ["contact_id"], "domain": "contact"},
            {"output": "postal_prefix", "action": "generalize", "inputs": ["postal_code"], "rule": "postal_prefix"},
            {"output": "employee_band", "action": "generalize", "inputs": ["employees"], "rule": "employee_band"},
            {"output": "score", "action": "generalize", "inputs": ["score"], "rule": "clamp", "lower": 0, "upper": 10},
        ]
    }
    out = T.apply_plan(df, plan, keys, date(2026, 1, 1))
    assert out.columns == ["contact_pk", "postal_prefix", "employee_band", "score"]
    row = out.first()
    assert row["postal_prefix"] == "021" and row["employee_band"] == "50-249" and row["score"] == 10
    assert row["contact_pk"] == "v2_" + hmac.new(KEY, b"7", hashlib.sha256).hexdigest()


def test_what_redaction_leaves_passes_the_validation_email_check():
    """The privacy-zone checkpoint stops on any email pattern in a string column: nothing the
    redactor leaves in the labelled ticket set may match it."""
    import re

    from crmshield.config import Settings
    from crmshield.redact import redact
    from crmshield.redact_eval import load
    from crmshield.validate import load_expectations_module

    email = re.compile(load_expectations_module(Settings.from_env()).EMAIL_PATTERN)
    leftovers = [redact(ex.text, ex.known) for ex in load()]
    assert [t for t in leftovers if t and email.search(t)] == []


def test_k_anonymize_generalizes_then_suppresses(spark):
    rows = [("25-34", "021", "US")] * 6 + [("35-44", "021", "US")] * 6
    rows += [("18-24", "100", "US")] * 3 + [("25-34", "101", "US")] * 3  # small classes: generalize to 18-34 / 10
    rows += [("65+", "999", "AU")]  # a lone record: suppressed
    df = spark.createDataFrame(
        [(f"id{i}", *r) for i, r in enumerate(rows)], "pk string, age string, zip string, cc string"
    )
    qis = {
        "age": [{"map": {"18-24": "18-34", "25-34": "18-34"}}, {"suppress": True}],
        "zip": [{"truncate": 1}, {"suppress": True}],
        "cc": [{"suppress": True}],
    }
    out, rep = T.k_anonymize(df, qis, k=5, max_suppression=0.1)
    assert out.columns == df.columns and out.count() == len(rows)
    sizes = out.filter(F.col("age") != T.SUPPRESSED).groupBy("age", "zip", "cc").count().collect()
    assert min(r["count"] for r in sizes) >= 5
    assert rep["achieved_k"] >= 5 and rep["suppressed_rows"] == 1
    assert rep["suppressed_share"] == pytest.approx(1 / len(rows), abs=1e-6)
    assert rep["levels"]["cc"] == 0, "the least generalization that works is chosen"
    assert rep["max_prosecutor_risk"] == pytest.approx(1 / rep["achieved_k"], abs=1e-6)
    assert sum(rep["class_size_histogram"].values()) == rep["equivalence_classes"]
    lone = out.filter(F.col("pk") == f"id{len(rows) - 1}").first()
    assert (lone["age"], lone["zip"], lone["cc"]) == ("*", "*", "*")


def test_job_derives_the_same_domain_keys_as_the_package(monkeypatch):
    import job  # the spark-submit entry point carries its own copy of the derivation

    from crmshield.keys import DOMAINS

    monkeypatch.setenv("CRMSHIELD_PSEUDONYMIZATION_KEY", KEY.hex())
    monkeypatch.setenv("CRMSHIELD_PSEUDONYMIZATION_KEY_VERSION", "7")
    keys = job.derive_keys()
    ref = PseudonymKey(KEY, 7, "test")
    assert job.DOMAINS == DOMAINS and keys.version == 7
    assert {d: keys.domain_keys[d] for d in DOMAINS} == {d: ref.domain_key(d) for d in DOMAINS}

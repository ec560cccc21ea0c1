"""Pure DataFrame -> DataFrame transforms of the privacy job.

Everything here uses Spark's built-in column functions (no Python UDFs), and
takes its configuration (keys, reference date) as arguments, so each function
can be tested on a small frame with ``pyspark.testing.assertDataFrameEqual``.

Keyed pseudonyms are HMAC-SHA256 composed from ``sha2``, ``unhex`` and
``concat`` with the RFC 2104 ipad/opad keys; they match Python's ``hmac``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

# --- the column plan -------------------------------------------------------
# Every raw column has exactly one action. A raw column not listed here is
# dropped with a warning, never passed through.
DROP, PSEUDONYMIZE, GENERALIZE, REDACT, KEEP = "drop", "pseudonymize", "generalize", "redact", "keep"

POLICY: dict[str, dict[str, tuple[str, str]]] = {
    "contacts": {
        "contact_id": (PSEUDONYMIZE, "contact_pk: HMAC-SHA256, domain 'contact'"),
        "first_name": (DROP, "direct identifier; used only to redact the contact's own tickets"),
        "last_name": (DROP, "direct identifier; used only to redact the contact's own tickets"),
        "email": (DROP, "direct identifier; used only to redact the contact's own tickets"),
        "phone": (DROP, "direct identifier; used only to redact the contact's own tickets"),
        "date_of_birth": (GENERALIZE, "age_band: 10-year bands at the export's reference date"),
        "street": (DROP, "direct identifier, no analytic purpose"),
        "city": (DROP, "quasi-identifier, no analytic purpose (country and postal prefix kept)"),
        "postal_code": (
            GENERALIZE,
            "postal_prefix: country-aware truncation (US 3 digits, GB outward code, 2 digits elsewhere)",
        ),
        "country": (KEEP, "segmentation"),
        "lifecycle_stage": (KEEP, "funnel analytics"),
        "created_at": (GENERALIZE, "created_on: day"),
        "updated_at": (DROP, "operational metadata"),
        "marketing_consent": (DROP, "not an analytics purpose"),
        "analytics_consent": (DROP, "used to exclude contacts without consent, then dropped"),
        "company_id": (PSEUDONYMIZE, "company_pk: HMAC-SHA256, domain 'company'"),
        "_source_file": (DROP, "lineage stays in the raw zone"),
        "_source_row": (DROP, "lineage stays in the raw zone"),
    },
    "companies": {
        "company_id": (PSEUDONYMIZE, "company_pk: HMAC-SHA256, domain 'company'"),
        "name": (DROP, "can name a sole trader"),
        "domain": (DROP, "can identify a sole trader"),
        "industry": (KEEP, "segmentation"),
        "employees": (GENERALIZE, "employee_band"),
        "annual_revenue": (DROP, "no analytic purpose declared"),
        "country": (KEEP, "segmentation"),
        "city": (DROP, "no analytic purpose declared"),
        "created_at": (GENERALIZE, "created_on: day"),
        "_source_file": (DROP, "lineage stays in the raw zone"),
        "_source_row": (DROP, "lineage stays in the raw zone"),
    },
    "deals": {
        "deal_id": (PSEUDONYMIZE, "deal_pk: HMAC-SHA256, domain 'deal'"),
        "deal_name": (DROP, "free text, often holds a person's name"),
        "stage": (KEEP, "pipeline analytics"),
        "pipeline": (KEEP, "pipeline analytics"),
        "amount": (KEEP, "pipeline value"),
        "currency": (KEEP, "pipeline value"),
        "close_date": (KEEP, "pipeline analytics (day precision)"),
        "created_at": (GENERALIZE, "created_on: day"),
        "contact_id": (PSEUDONYMIZE, "contact_pk: HMAC-SHA256, domain 'contact'"),
        "company_id": (PSEUDONYMIZE, "company_pk: HMAC-SHA256, domain 'company'"),
        "_source_file": (DROP, "lineage stays in the raw zone"),
        "_source_row": (DROP, "lineage stays in the raw zone"),
    },
    "tickets": {
        "ticket_id": (PSEUDONYMIZE, "ticket_pk: HMAC-SHA256, domain 'ticket'"),
        "requester_id": (PSEUDONYMIZE, "contact_pk: HMAC-SHA256, domain 'contact'"),
        "subject": (REDACT, "emails, phone numbers and the requester's own name replaced by placeholders"),
        "description": (REDACT, "emails, phone numbers and the requester's own name replaced by placeholders"),
        "channel": (KEEP, "support analytics"),
        "priority": (KEEP, "support analytics"),
        "status": (KEEP, "support analytics"),
        "created_at": (GENERALIZE, "created_on: day; resolution_hours derived first"),
        "updated_at": (DROP, "operational metadata"),
        "solved_at": (GENERALIZE, "solved_on: day; resolution_hours derived first"),
        "satisfaction": (KEEP, "support analytics"),
        "_source_file": (DROP, "lineage stays in the raw zone"),
        "_source_row": (DROP, "lineage stays in the raw zone"),
    },
}  # fmt: skip

# The redaction patterns are exactly the ones the privacy-zone validation looks for
# (expectations/privacy.py; a unit test keeps them equal): what the job leaves in
# place, the checkpoint would stop. Java regex syntax (Spark's regexp_replace).
EMAIL_PATTERN = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"
# an optional +, an optional (, then 9 to 15 digits joined by up to two of space . - ( );
# not inside a word (pseudonym hex), not in a dotted/dashed number, not at a date
PHONE_PATTERN = (
    r"(?<![A-Za-z0-9_+])(?<![0-9][-./])"
    r"(?![0-9]{4}[-./][0-9]{1,2}[-./][0-9]{1,2}(?![0-9]))"
    r"(?![0-9]{1,2}[-./][0-9]{1,2}[-./][0-9]{4}(?![0-9]))"
    r"\+?\(?[0-9](?:[ .()-]{0,2}[0-9]){8,14}"
)
PLACEHOLDERS = {"email": "<EMAIL>", "phone": "<PHONE>", "person": "<PERSON>"}


@dataclass
class ColumnPlan:
    """What the policy does with a frame's columns."""

    actions: dict[str, tuple[str, str]] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)


def plan_columns(entity: str, columns: list[str]) -> ColumnPlan:
    """Actions for the given raw columns; unknown columns are dropped and reported."""
    policy = POLICY[entity]
    plan = ColumnPlan()
    for c in columns:
        if c in policy:
            plan.actions[c] = policy[c]
        else:
            plan.actions[c] = (DROP, "not in the privacy policy: dropped, never passed through")
            plan.unknown.append(c)
    return plan


# --- pseudonymization --------------------------------------------------------
def _hmac_pads(key: bytes) -> tuple[str, str]:
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    ipad = bytes(b ^ 0x36 for b in key)
    opad = bytes(b ^ 0x5C for b in key)
    return ipad.hex(), opad.hex()


def hmac_sha256_hex(col: Column, key: bytes) -> Column:
    """HMAC-SHA256(key, utf8(col)) as 64 lower-case hex chars, with built-ins only."""
    ipad, opad = _hmac_pads(key)
    inner = F.unhex(F.sha2(F.concat(F.unhex(F.lit(ipad)), col.cast("string").cast("binary")), 256))
    return F.sha2(F.concat(F.unhex(F.lit(opad)), inner), 256)


def pseudonym(col: Column, key: bytes, version: int) -> Column:
    """``v<version>_<hmac hex>``, NULL for NULL."""
    return F.when(col.isNull(), F.lit(None).cast("string")).otherwise(
        F.concat(F.lit(f"v{version}_"), hmac_sha256_hex(col, key))
    )


# --- generalization ----------------------------------------------------------
AGE_BANDS = [(18, 24), (25, 34), (35, 44), (45, 54), (55, 64)]


def age_band(dob: Column, reference: date) -> Column:
    """Age at ``reference`` in bands 18-24, 25-34, ..., 65+; 'unknown' when missing or under 18."""
    age = F.floor(F.months_between(F.lit(reference), dob) / 12)
    expr = F.when(dob.isNull() | (age < 18), F.lit("unknown"))
    for lo, hi in AGE_BANDS:
        expr = expr.when(age <= hi, F.lit(f"{lo}-{hi}"))
    return expr.otherwise(F.lit("65+"))


def postal_prefix(postal: Column, country: Column) -> Column:
    """Country-aware truncation: US 3 digits (ZIP3), CA forward sortation area,
    GB outward code, DE/FR/ES/NL/AU 2 digits; NULL elsewhere."""
    p = F.upper(F.trim(postal))
    digits = F.regexp_replace(p, r"[^0-9]", "")
    alnum = F.regexp_replace(p, r"[^0-9A-Z]", "")
    # GB outward code: the part before the space, or all but the 3-char inward code
    gb_outward = F.when(F.instr(p, " ") > 0, F.substring_index(p, " ", 1)).otherwise(
        alnum.substr(F.lit(1), F.greatest(F.length(alnum) - 3, F.lit(2)))
    )
    return (
        F.when(postal.isNull(), F.lit(None).cast("string"))
        .when(country == "US", F.substring(digits, 1, 3))
        .when(country == "CA", F.substring(alnum, 1, 3))
        .when(country == "GB", gb_outward)
        .when(country.isin("DE", "FR", "ES", "NL", "AU"), F.substring(digits, 1, 2))
        .otherwise(F.lit(None).cast("string"))
    )


def employee_band(employees: Column) -> Column:
    return (
        F.when(employees.isNull(), F.lit(None).cast("string"))
        .when(employees < 10, "1-9")
        .when(employees < 50, "10-49")
        .when(employees < 250, "50-249")
        .when(employees < 1000, "250-999")
        .otherwise("1000+")
    )


def hours_between(start: Column, end: Column) -> Column:
    """Hours from ``start`` to ``end`` (2 decimals); NULL when either is missing or end < start."""
    secs = F.unix_seconds(end.cast("timestamp")) - F.unix_seconds(start.cast("timestamp"))
    return F.when(secs >= 0, F.round(secs / 3600.0, 2))


# --- redaction ---------------------------------------------------------------
def _literal_pattern(value: Column) -> Column:
    """A Java regex matching ``value`` literally, case-insensitively, as a whole word."""
    quoted = F.regexp_replace(F.trim(value), r"\\E", "")
    return F.concat(F.lit(r"(?iu)(?<![\p{L}\p{N}])\Q"), quoted, F.lit(r"\E(?![\p{L}\p{N}])"))


def _replace_known(text: Column, value: Column, placeholder: str) -> Column:
    usable = value.isNotNull() & (F.length(F.trim(value)) >= 2)
    return F.when(usable, F.regexp_replace(text, _literal_pattern(value), F.lit(placeholder))).otherwise(text)


def redact_text(text: Column, first: Column, last: Column, email: Column, phone: Column) -> Column:
    """Replace the requester's own identifiers, then any email or phone pattern."""
    out = _replace_known(text, email, PLACEHOLDERS["email"])
    out = F.regexp_replace(out, EMAIL_PATTERN, PLACEHOLDERS["email"])
    out = _replace_known(out, phone, PLACEHOLDERS["phone"])
    out = F.regexp_replace(out, PHONE_PATTERN, PLACEHOLDERS["phone"])
    out = _replace_known(out, last, PLACEHOLDERS["person"])
    out = _replace_known(out, first, PLACEHOLDERS["person"])
    return F.when(text.isNull(), text).otherwise(out)


def count_token(col: Column, token: str) -> Column:
    """Occurrences of ``token`` in ``col`` (0 for NULL)."""
    c = F.coalesce(col, F.lit(""))
    return ((F.length(c) - F.length(F.replace(c, F.lit(token), F.lit("")))) / len(token)).cast("long")


# --- entities ----------------------------------------------------------------
@dataclass(frozen=True)
class Keys:
    """Derived per-domain keys and their version (never logged)."""

    domain_keys: Mapping[str, bytes]
    version: int

    def __repr__(self) -> str:
        return f"Keys(version={self.version}, domains={sorted(self.domain_keys)})"

    def pk(self, col: Column, domain: str) -> Column:
        return pseudonym(col, self.domain_keys[domain], self.version)


def classify_subject(df: DataFrame, contacts: DataFrame, fk: str) -> DataFrame:
    """Add ``_subject_status``: 'ok', 'no_subject' (no contact linked),
    'excluded_consent' or 'excluded_unknown_contact'. Joins the consented
    contact's identifiers (prefixed ``_c_``) for redaction."""
    c = contacts.select(
        F.col("contact_id").alias("_c_id"),
        F.col("analytics_consent").alias("_c_consent"),
        F.col("first_name").alias("_c_first"),
        F.col("last_name").alias("_c_last"),
        F.col("email").alias("_c_email"),
        F.col("phone").alias("_c_phone"),
    )
    joined = df.join(c, df[fk] == c["_c_id"], "left")
    status = (
        F.when(F.col(fk).isNull(), "no_subject")
        .when(F.col("_c_id").isNull(), "excluded_unknown_contact")
        .when(F.col("_c_consent") != F.lit(True), "excluded_consent")
        .when(F.col("_c_consent").isNull(), "excluded_consent")
        .otherwise("ok")
    )
    return joined.withColumn("_subject_status", status)


def transform_contacts(contacts: DataFrame, keys: Keys, reference: date) -> DataFrame:
    consented = contacts.filter(F.col("analytics_consent") == F.lit(True))
    return consented.select(
        keys.pk(F.col("contact_id"), "contact").alias("contact_pk"),
        keys.pk(F.col("company_id"), "company").alias("company_pk"),
        age_band(F.col("date_of_birth"), reference).alias("age_band"),
        postal_prefix(F.col("postal_code"), F.col("country")).alias("postal_prefix"),
        F.col("country"),
        F.col("lifecycle_stage"),
        F.to_date(F.col("created_at")).alias("created_on"),
    )


def transform_companies(companies: DataFrame, keys: Keys) -> DataFrame:
    return companies.select(
        keys.pk(F.col("company_id"), "company").alias("company_pk"),
        F.col("industry"),
        employee_band(F.col("employees")).alias("employee_band"),
        F.col("country"),
        F.to_date(F.col("created_at")).alias("created_on"),
    )


def transform_deals(classified: DataFrame, keys: Keys) -> DataFrame:
    kept = classified.filter(F.col("_subject_status").isin("ok", "no_subject"))
    return kept.select(
        keys.pk(F.col("deal_id"), "deal").alias("deal_pk"),
        keys.pk(F.col("contact_id"), "contact").alias("contact_pk"),
        keys.pk(F.col("company_id"), "company").alias("company_pk"),
        F.col("stage"),
        F.col("pipeline"),
        F.col("amount").cast("decimal(18,2)").alias("amount"),
        F.col("currency"),
        F.to_date(F.col("created_at")).alias("created_on"),
        F.col("close_date").cast("date").alias("close_date"),
    )


def transform_tickets(classified: DataFrame, keys: Keys) -> DataFrame:
    kept = classified.filter(F.col("_subject_status") == "ok")
    ident = [F.col("_c_first"), F.col("_c_last"), F.col("_c_email"), F.col("_c_phone")]
    return kept.select(
        keys.pk(F.col("ticket_id"), "ticket").alias("ticket_pk"),
        keys.pk(F.col("requester_id"), "contact").alias("contact_pk"),
        redact_text(F.col("subject"), *ident).alias("subject"),
        redact_text(F.col("description"), *ident).alias("description"),
        F.col("channel"),
        F.col("priority"),
        F.col("status"),
        F.to_date(F.col("created_at")).alias("created_on"),
        F.to_date(F.col("solved_at")).alias("solved_on"),
        hours_between(F.col("created_at"), F.col("solved_at")).alias("resolution_hours"),
        F.col("satisfaction"),
    )

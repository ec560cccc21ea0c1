"""Pure DataFrame -> DataFrame transforms of the privacy job.

Pseudonymization, generalization and k-anonymity use Spark's built-in column
functions only (no Python UDF). Free-text redaction is the one vectorized
(Arrow / pandas) UDF: it runs ``crmshield.redact``, whose checks need Python
(``phonenumbers`` validation, Luhn, IBAN mod-97, accent-insensitive names).
Every function takes its configuration (the column plan resolved from the privacy policy,
keys, reference date) as arguments, so each function can be tested on a small
frame with ``pyspark.testing.assertDataFrameEqual``.

Keyed pseudonyms are HMAC-SHA256 composed from ``sha2``, ``unhex`` and
``concat`` with the RFC 2104 ipad/opad keys; they match Python's ``hmac``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import pandas as pd
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from crmshield.redact import KINDS
from crmshield.redact import PLACEHOLDERS as _PLACEHOLDERS

#: Counted per redacted column in the job's stats: kind (lower case) -> placeholder.
PLACEHOLDERS = {k.lower(): _PLACEHOLDERS[k] for k in KINDS}
# Ingest puts emails and phones in canonical form (crmshield.normalize; a test keeps these equal).
CANONICAL_SHAPES = {"email": r"^[^@\s]+@[^@\s]+\.[^@\s]+$", "phone": r"^\+[1-9][0-9]{6,14}$"}


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
@F.pandas_udf(StringType())  # type: ignore[call-overload]  # (a type object: no session needed at import)
def _redact_udf(
    text: pd.Series, first: pd.Series, last: pd.Series, email: pd.Series, phone: pd.Series, country: pd.Series
) -> pd.Series:
    from crmshield.redact import redact_batch

    cols = [s.where(s.notna(), None).tolist() for s in (text, first, last, email, phone, country)]
    return pd.Series(redact_batch(*cols), dtype=object)


def redact_text(
    text: Column, first: Column, last: Column, email: Column, phone: Column, country: Column | None = None
) -> Column:
    """Typed placeholders for every PII span (``crmshield.redact``): emails, phones
    (validated with phonenumbers), cards (Luhn), IBANs (mod-97), IPs, URLs with
    personal query strings, postal codes in address context, national ids, names in
    context, and the requester's own names, email and phone (case- and
    accent-insensitive). NULL stays NULL."""
    none = F.lit(None).cast("string")
    return _redact_udf(text, first, last, email, phone, none if country is None else country)


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
        shape = CANONICAL_SHAPES.get(domain)
        if shape is not None:  # only a canonical email / E.164 phone gets a token, never its garbage
            col = F.when(col.rlike(shape), col)
        return pseudonym(col, self.domain_keys[domain], self.version)


def classify_subject(df: DataFrame, contacts: DataFrame, fk: str, consent: str = "analytics_consent") -> DataFrame:
    """Add ``_subject_status``: 'ok', 'no_subject' (no contact linked),
    'excluded_consent' or 'excluded_unknown_contact'. Joins the consented
    contact's identifiers (prefixed ``_c_``) for redaction."""
    c = contacts.select(
        F.col("contact_id").alias("_c_id"),
        F.col(consent).alias("_c_consent"),
        F.col("first_name").alias("_c_first"),
        F.col("last_name").alias("_c_last"),
        F.col("email").alias("_c_email"),
        F.col("phone").alias("_c_phone"),
        F.col("country").alias("_c_country"),
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


def subject_pseudonym_output(entity_plan: Mapping[str, Any]) -> tuple[str, str]:
    """(output column, domain) of the pseudonym the plan makes of the entity's subject key
    (``contact_id`` -> ``contact_pk``, domain ``contact``)."""
    key = entity_plan.get("subject_key") or "contact_id"
    for o in entity_plan["outputs"]:
        if o["action"] == "pseudonymize" and o["inputs"] == [key]:
            return o["output"], o["domain"]
    return "contact_pk", "contact"


def unconsented_subjects(
    contacts: DataFrame, consent: str, key: str, keys: Keys, output: str = "contact_pk", domain: str = "contact"
) -> DataFrame:
    """One column, ``output``: the pseudonym of every contact whose ``consent`` is not true (false
    or missing), read from the raw consent column itself (not from the rows the job keeps or
    drops), distinct. Nothing but the pseudonym."""
    unconsented = contacts.where(~F.col(consent).eqNullSafe(F.lit(True)))
    pks = unconsented.select(keys.pk(F.col(key), domain).alias(output))
    return pks.where(F.col(output).isNotNull()).distinct()


def generalize(col: Column, rule: str, reference: date, lower: float | None, upper: float | None) -> Column:
    """One generalization rule of the policy."""
    if rule == "age_band":
        return age_band(col, reference)
    if rule == "postal_prefix":
        return postal_prefix(col, F.col("country"))
    if rule == "day":
        return F.to_date(col)
    if rule == "month":  # the first day of the month, still a DATE
        return F.trunc(F.to_date(col), "month")
    if rule == "employee_band":
        return employee_band(col)
    if rule == "clamp":
        return F.least(F.greatest(col, F.lit(lower)), F.lit(upper)).cast(_clamp_type(lower, upper))
    raise ValueError(f"unknown generalization rule {rule!r}")


def _clamp_type(lower: float | None, upper: float | None) -> str:
    both_int = all(v is not None and float(v).is_integer() for v in (lower, upper))
    return "bigint" if both_int else "double"


IDENTIFIER_COLUMNS = ("_c_first", "_c_last", "_c_email", "_c_phone", "_c_country")


def apply_plan(df: DataFrame, entity_plan: Mapping[str, Any], keys: Keys, reference: date) -> DataFrame:
    """Select exactly the policy's outputs, in order. Free text is redacted with
    the subject's own identifiers when ``classify_subject`` joined them."""
    has_ident = all(c in df.columns for c in IDENTIFIER_COLUMNS)
    none = F.lit(None).cast("string")
    ident = [F.col(c) for c in IDENTIFIER_COLUMNS] if has_ident else [none] * len(IDENTIFIER_COLUMNS)
    cols = []
    for o in entity_plan["outputs"]:
        src = [F.col(i) for i in o["inputs"]]
        action = o["action"]
        if action == "keep":
            expr = src[0]
        elif action == "pseudonymize":
            expr = keys.pk(src[0], o["domain"])
        elif action == "generalize":
            expr = generalize(src[0], o["rule"], reference, o.get("lower"), o.get("upper"))
        elif action == "redact":
            expr = redact_text(src[0], *ident)
        elif action == "derive" and o["rule"] == "hours_between":
            expr = hours_between(*src)
        else:
            raise ValueError(f"unknown plan action {action!r} for {o['output']}")
        cols.append(expr.alias(o["output"]))
    return df.select(*cols)


# --- k-anonymity ---------------------------------------------------------------
SUPPRESSED = "*"
CLASS_SIZE_BINS = [(1, 1), (2, 4), (5, 9), (10, 19), (20, 49), (50, 99), (100, None)]


def generalize_qi(col: Column, step: Mapping[str, Any]) -> Column:
    """One rung of a quasi-identifier's ladder, applied to the original value:
    ``{"map": {...}}`` recodes values (others kept), ``{"truncate": n}`` drops the
    last n characters (keeping at least one, else suppresses), ``{"suppress": true}``."""
    if step.get("suppress"):
        return F.lit(SUPPRESSED)
    if "map" in step:
        pairs = [x for kv in step["map"].items() for x in (F.lit(kv[0]), F.lit(kv[1]))]
        return F.coalesce(F.element_at(F.create_map(*pairs), col), col)
    if "truncate" in step:
        n = int(step["truncate"])
        return (
            F.when(col.isNull(), col)
            .when(F.length(col) > n, col.substr(F.lit(1), F.length(col) - n))
            .otherwise(F.lit(SUPPRESSED))
        )
    raise ValueError(f"unknown generalization step {dict(step)!r}")


def _qi_columns(qis: Mapping[str, list[Mapping[str, Any]]], levels: tuple[int, ...]) -> list[Column]:
    return [
        (F.col(q) if lvl == 0 else generalize_qi(F.col(q), steps[lvl - 1])).alias(q)
        for (q, steps), lvl in zip(qis.items(), levels, strict=True)
    ]


def _small_class_rows(df: DataFrame, qis: list[str], k: int) -> int:
    sizes = df.groupBy(*qis).count()
    row = sizes.filter(F.col("count") < k).agg(F.sum("count")).first()
    return int(row[0] or 0) if row else 0


def k_anonymize(
    df: DataFrame, qis: Mapping[str, list[Mapping[str, Any]]], k: int, max_suppression: float
) -> tuple[DataFrame, dict[str, Any]]:
    """Full-domain generalization over the quasi-identifiers, then suppression.

    Tries the generalization levels in order of total height (least
    generalization first; among equals, fewest rows left in classes under k)
    and takes the first whose small classes hold at most ``max_suppression`` of
    the rows. Those rows keep their other columns (so their tickets and deals
    still join) but get every quasi-identifier set to ``*``. Returns the frame
    and a report: chosen levels, achieved k over the non-suppressed rows, the
    share suppressed, prosecutor risk (max and average of 1/class size) and a
    histogram of class sizes."""
    import itertools

    names = list(qis)
    base = df.cache()
    n = base.count()
    ladders = [range(len(steps) + 1) for steps in qis.values()]
    by_height: dict[int, list[tuple[int, ...]]] = {}
    for combo in itertools.product(*ladders):
        by_height.setdefault(sum(combo), []).append(combo)
    chosen, chosen_small = None, n
    for height in sorted(by_height):
        for combo in by_height[height]:
            small = _small_class_rows(base.select(*_qi_columns(qis, combo)), names, k) if n else 0
            if small < chosen_small or chosen is None:
                chosen, chosen_small = combo, small
        if chosen is not None and n and chosen_small / n <= max_suppression:
            break
        if n == 0:
            break
    assert chosen is not None
    others = [c for c in df.columns if c not in qis]
    generalized = base.select(*[F.col(c) for c in others], *_qi_columns(qis, chosen))
    size = F.count(F.lit(1)).over(Window.partitionBy(*[F.col(q) for q in names]))
    marked = generalized.withColumn("_class_size", size)
    out = marked.select(
        *[
            F.when(F.col("_class_size") < k, F.lit(SUPPRESSED)).otherwise(F.col(c)).alias(c) if c in qis else F.col(c)
            for c in df.columns
        ]
    )
    classes = marked.filter(F.col("_class_size") >= k).groupBy(*names).count().select("count")
    stats = classes.agg(F.min("count"), F.count(F.lit(1)), F.sum("count")).first()
    min_size, n_classes, kept = (int(stats[0] or 0), int(stats[1] or 0), int(stats[2] or 0)) if stats else (0, 0, 0)
    hist_row = classes.agg(
        *[
            F.sum(F.when((F.col("count") >= lo) & (F.col("count") <= (hi or 1 << 62)), 1).otherwise(0)).alias(
                f"{lo}-{hi}" if hi and hi != lo else (f"{lo}" if hi else f"{lo}+")
            )
            for lo, hi in CLASS_SIZE_BINS
        ]
    ).first()
    report = {
        "k": k,
        "quasi_identifiers": names,
        "levels": dict(zip(names, chosen, strict=True)),
        "rows": n,
        "suppressed_rows": n - kept,
        "suppressed_share": round((n - kept) / n, 6) if n else 0.0,
        "max_suppression": max_suppression,
        "achieved_k": min_size,
        "equivalence_classes": n_classes,
        "max_prosecutor_risk": round(1 / min_size, 6) if min_size else 0.0,
        "avg_prosecutor_risk": round(n_classes / kept, 6) if kept else 0.0,
        "class_size_histogram": {key: int(v or 0) for key, v in hist_row.asDict().items()} if hist_row else {},
    }
    return out, report

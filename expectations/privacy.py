"""Expectation suites for the privacy zone (zone 3), defined in code.

This is a plain module, not part of a package: :func:`crmshield.validate.load_expectations_module`
loads it by file path from ``<project root>/expectations/privacy.py``. Great Expectations is
imported inside the builder functions only, so the patterns below can be imported (and unit
tested) without starting GX or Spark.

One suite per entity, named for the zone it guards: ``privacy__contacts``,
``privacy__companies``, ``privacy__deals``, ``privacy__tickets``. Every expectation carries a
severity, both in GX's own ``severity`` field and in ``meta["severity"]`` (with ``meta["check"]``
naming what it checks and, for table-level SQL checks, ``meta["column"]`` the column it is about):

* ``critical``: the hand-over must stop. Column set, column types, pseudonym format, primary
  key not null and unique; no email, card, IBAN or IP address pattern in any string column (in the
  redacted free text the card and IBAN checks are checksum-aware SQL, see below); no phone
  pattern outside the redacted free text (see :data:`PHONE_PATTERN`); the generalizations that
  keep quasi-identifiers coarse (``age_band``, ``postal_prefix``, dates as the policy says);
  k-anonymity over the policy's quasi-identifiers within its suppression budget; and no row of a
  subject who is excluded (no analytics consent, or erased): see :data:`EXCLUDED_SUBJECTS_VIEW`.
* ``warning``: reported, the run goes on. Categorical value sets, numeric ranges, row count,
  phone-like digit runs left in the redacted free text.

Patterns are written for Java regular expressions (Spark ``rlike``, which *finds* a match
anywhere in the value) and mean the same in Python's ``re`` (ASCII classes only, no ``\\d`` or
``\\w``), so the unit tests exercise exactly what Spark runs.

Table-level checks are ``UnexpectedRowsExpectation`` queries in Spark SQL (built-in functions and
higher-order functions only, no Python UDF). Each selects a constant (``SELECT 1 AS finding``),
never a value, so even the rows GX fetches to count them carry nothing; the stored result is the
count (``observed_value``).

What the suites check is read from the privacy policy (``crmshield.policy``): the date columns and
their rule, the k-anonymity block, the pseudonym columns that name a person. ``build_suite(entity)``
reads the policy in force (``$CRMSHIELD_PRIVACY_POLICY`` or ``config/privacy_policy.yml``);
``build_suite(entity, policy=...)`` takes one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# the redactor's table of IBAN countries and lengths: both sides agree by construction
from crmshield.redact import IBAN_LENGTHS

if TYPE_CHECKING:
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.expectations.expectation import Expectation

    from crmshield.policy import Policy

CRITICAL = "critical"
WARNING = "warning"

SUITE_PREFIX = "privacy__"

#: Pseudonym token: ``v<key_version>_<64 lowercase hex>`` (architecture.md, "Privacy zone").
PSEUDONYM_PATTERN = r"^v[0-9]+_[0-9a-f]{64}$"

#: An email address anywhere in a value: local part, ``@``, domain with a dot and a TLD of two
#: or more letters. The redaction placeholder ``<EMAIL>`` has no ``@`` and does not match.
EMAIL_PATTERN = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"

#: A phone number anywhere in a value: an optional ``+``, an optional ``(``, then 9 to 15 digits
#: where each pair of neighbouring digits may be joined by up to two separators out of
#: space, ``.``, ``-``, ``(``, ``)`` (so ``+44 20 7946 0958``, ``+1 (415) 555-0100``,
#: ``415.555.0100``, ``07700900123``). Guards against false positives:
#:
#: * ``(?<![A-Za-z0-9_+])``: a number may not start inside a word, so digit runs inside a
#:   pseudonym's hex (always preceded by ``_`` or a hex character) never match;
#: * ``(?<![0-9][-./])``: nor in the middle of a dotted/dashed number (it would start earlier);
#: * two look-aheads: a match may not start at a date, ``yyyy-mm-dd`` or ``dd.mm.yyyy`` (any of
#:   ``-./``), so ``2024-05-01 12:30`` or ``01.05.2024 14:00`` (10 digits with the time) do not
#:   match; a bare date has only 8 digits anyway.
#:
#: There is deliberately no guard at the end: ``0958ext``, a 20-digit account number or an
#: order number of 9+ digits all match. In a categorical or pseudonym column such a value is a
#: critical finding. In the redacted free-text columns (:data:`FREE_TEXT`) the redactor has
#: already judged every such digit run with ``phonenumbers``, Luhn and IBAN checks and left only
#: what is not a phone, card or IBAN (a tracking number, a checksum-failing card-like number), so
#: there the check is a *warning*: it counts the rows for a reviewer without stopping the run.
PHONE_PATTERN = (
    r"(?<![A-Za-z0-9_+])(?<![0-9][-./])"
    r"(?![0-9]{4}[-./][0-9]{1,2}[-./][0-9]{1,2}(?![0-9]))"
    r"(?![0-9]{1,2}[-./][0-9]{1,2}[-./][0-9]{4}(?![0-9]))"
    r"\+?\(?[0-9](?:[ .()-]{0,2}[0-9]){8,14}"
)

#: The digit groupings of a payment card number of 13 to 19 digits: ``4-4-4-1..4`` (Visa 13, ...
#: 16 digits with a short last group), ``4-4-4-4[-1..3]`` (16 to 19), ``4-6-4/5`` (Diners, Amex)
#: with a space or ``-`` between groups, or one contiguous run.
_CARD_SHAPE = (
    r"(?:[0-9]{4}(?:[ -][0-9]{4}){2}[ -](?:[0-9]{4}(?:[ -][0-9]{1,3})?|[0-9]{1,3})"
    r"|[0-9]{4}[ -][0-9]{6}[ -][0-9]{4,5}"
    r"|[0-9]{13,19})"
)

#: A card-shaped number anywhere in a categorical or pseudonym value (critical, no checksum: such a
#: column has no business holding 13+ digits). Guards: it may not start inside a word (a digit
#: run in a pseudonym's hex is always preceded by ``_`` or a hex character) or after ``<digit>.``
#: / ``<digit>,`` (a decimal), nor follow or go on as another digit group (a 20- or 22-digit
#: tracking number in groups of four is not a card), nor go on as a decimal.
CARD_PATTERN = r"(?<![A-Za-z0-9_])(?<![0-9][-., ])" + _CARD_SHAPE + r"(?![ -]?[0-9])(?![.,][0-9])"

#: Card candidates in the redacted free text, extracted by :func:`card_in_text_sql` and kept only
#: when Luhn-valid (the redactor, ``crmshield.redact``, leaves checksum-failing runs alone). Not
#: inside a longer digit run or a decimal; a word character before it is allowed (``ref4111...``).
CARD_CANDIDATE_PATTERN = r"(?<![0-9])(?<![0-9][.,])" + _CARD_SHAPE + r"(?![0-9])(?![.,][0-9])"

#: Separator inside a grouped IBAN, as the redactor reads it: a space, a no-break space, or a line
#: break (with blanks around it) where a long IBAN was wrapped.
IBAN_SEPARATOR = r"(?:[ \u00a0]|[ \t]*\r?\n[ \t]*)"

#: Check digits and BBAN of an IBAN, after its two-letter country code.
_IBAN_BODY = (
    r"[0-9]{2}(?:[A-Za-z0-9]{10,30}"
    rf"|(?:{IBAN_SEPARATOR}[A-Za-z0-9]{{4}}){{2,7}}(?:{IBAN_SEPARATOR}[A-Za-z0-9]{{1,4}})?)"
)

#: An IBAN-shaped string (ISO 13616): the code of a country that issues IBANs (the redactor's
#: table, ``crmshield.redact.IBAN_LENGTHS``), two check digits, then 10 to 30 letters or digits,
#: compact or in groups of four; any case. Not inside a word on either side. Critical in
#: categorical and pseudonym columns as it is; in the free text :func:`iban_in_text_sql` keeps only
#: those of the country's exact length with mod-97 == 1 (what the redactor replaces).
IBAN_PATTERN = r"(?<![A-Za-z0-9_])(?i:" + "|".join(sorted(IBAN_LENGTHS)) + ")" + _IBAN_BODY + r"(?![A-Za-z0-9])"

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"

#: An IPv4 address: four octets 0-255 without leading zeros, as the redactor reads one. Like the
#: redactor it leaves alone: a version-like ``1.2.3.4`` (every octet one digit; ``1.2.3`` has only
#: three), a first octet 0, 127 or 255 (unspecified, loopback, netmask), a CIDR network
#: (``10.0.0.0/8``), and anything inside a longer dotted number, a word or a hyphenated token.
IPV4_PATTERN = (
    r"(?<![A-Za-z0-9_.])(?!(?:0|127|255)[.])(?![0-9][.][0-9][.][0-9][.][0-9](?![0-9]))"
    rf"{_OCTET}[.]{_OCTET}[.]{_OCTET}[.]{_OCTET}"
    r"(?![A-Za-z0-9_/]|[.][0-9]|-[A-Za-z0-9_])"
)

_H = "[0-9A-Fa-f]{1,4}"

#: An IPv6 address: eight groups, or fewer around one ``::``. It must hold a digit (``add::`` is
#: a word), and ``::`` and ``::1`` (unspecified, loopback) are left alone. Times (``12:30:45``)
#: and MAC addresses (six groups) have neither eight groups nor ``::``.
IPV6_PATTERN = (
    r"(?<![A-Za-z0-9_:.])(?=[0-9A-Fa-f:]*[0-9])(?!::1?(?![0-9A-Fa-f:.]))(?:"
    rf"(?:{_H}:){{7}}{_H}"
    rf"|(?:{_H}:){{1,7}}:"
    rf"|(?:{_H}:){{1,6}}:{_H}"
    rf"|(?:{_H}:){{1,5}}(?::{_H}){{1,2}}"
    rf"|(?:{_H}:){{1,4}}(?::{_H}){{1,3}}"
    rf"|(?:{_H}:){{1,3}}(?::{_H}){{1,4}}"
    rf"|(?:{_H}:){{1,2}}(?::{_H}){{1,5}}"
    rf"|{_H}:(?::{_H}){{1,6}}"
    rf"|:(?::{_H}){{1,7}}"
    r")(?![A-Za-z0-9_:])"
)

#: Either address family (critical in every categorical and pseudonym column).
IP_PATTERN = f"(?:{IPV4_PATTERN}|{IPV6_PATTERN})"

#: A word that makes the dotted number after it a version, not an address (the redactor's
#: ``_VERSION_CUE``): ``Version 10.2.3.4``, ``build: 10.0.1.22``, ``fw 192.168.1.1``.
VERSION_CUE_PATTERN = r"(?<![A-Za-z0-9_])(?i:version|ver[.]?|v|build|release|firmware|fw|app)[ \t:]*"

#: Issuer digits of payment cards (Mastercard 2/5, Amex/Diners/JCB 3, Visa 4, Discover/UnionPay 6):
#: the redactor only calls a Luhn-valid run a card when it starts with one of these.
CARD_ISSUER_DIGITS = "23456"

#: Redacted free-text columns (policy action ``redact``): the phone-pattern check is a warning here,
#: and cards, IBANs and IP addresses are judged like the redactor does (checksum-aware SQL).
FREE_TEXT: frozenset[tuple[str, str]] = frozenset({("tickets", "subject"), ("tickets", "description")})

#: Privacy-zone columns per entity, in order, with the Spark type each must have
#: (``pyspark.sql.types`` class names, as ``expect_column_values_to_be_of_type`` wants them).
COLUMNS: dict[str, dict[str, str]] = {
    "contacts": {
        "contact_pk": "StringType",
        "company_pk": "StringType",
        "email_pk": "StringType",
        "phone_pk": "StringType",
        "age_band": "StringType",
        "postal_prefix": "StringType",
        "country": "StringType",
        "lifecycle_stage": "StringType",
        "created_on": "DateType",
    },
    "companies": {
        "company_pk": "StringType",
        "industry": "StringType",
        "employee_band": "StringType",
        "country": "StringType",
        "created_on": "DateType",
    },
    "deals": {
        "deal_pk": "StringType",
        "contact_pk": "StringType",
        "company_pk": "StringType",
        "stage": "StringType",
        "pipeline": "StringType",
        "amount": "DecimalType",
        "currency": "StringType",
        "created_on": "DateType",
        "close_date": "DateType",
    },
    "tickets": {
        "ticket_pk": "StringType",
        "contact_pk": "StringType",
        "subject": "StringType",
        "description": "StringType",
        "channel": "StringType",
        "priority": "StringType",
        "status": "StringType",
        "created_on": "DateType",
        "solved_on": "DateType",
        "resolution_hours": "DoubleType",
        "satisfaction": "StringType",
    },
}

#: The primary pseudonym of each entity: not null, unique.
PRIMARY_KEYS: dict[str, str] = {
    "contacts": "contact_pk",
    "companies": "company_pk",
    "deals": "deal_pk",
    "tickets": "ticket_pk",
}

#: Age bands, their k-anonymity generalizations (config/privacy_policy.yml) and ``*`` (suppressed).
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+", "unknown", "18-34", "35-54", "55+", "*")
COUNTRIES = ("US", "CA", "GB", "DE", "FR", "NL", "ES", "AU", "*")
CHANNELS = ("email", "web", "chat", "voice", "api")
PRIORITIES = ("low", "normal", "high", "urgent")
STATUSES = ("new", "open", "pending", "solved", "closed")
SATISFACTIONS = ("good", "bad", "offered", "unoffered")

#: Longest generalized postal code kept in the privacy zone.
POSTAL_PREFIX_MAX_LENGTH = 4

#: (entity, column) -> (allowed values, severity). Generalizations that protect
#: quasi-identifiers are critical; plain categorical hygiene is a warning.
VALUE_SETS: dict[tuple[str, str], tuple[tuple[str, ...], str]] = {
    ("contacts", "age_band"): (AGE_BANDS, CRITICAL),
    ("contacts", "country"): (COUNTRIES, WARNING),
    ("companies", "country"): (COUNTRIES, WARNING),
    ("tickets", "channel"): (CHANNELS, WARNING),
    ("tickets", "priority"): (PRIORITIES, WARNING),
    ("tickets", "status"): (STATUSES, WARNING),
    ("tickets", "satisfaction"): (SATISFACTIONS, WARNING),
}


def suite_name(entity: str) -> str:
    """The suite guarding ``privacy/<entity>/``."""
    return f"{SUITE_PREFIX}{entity}"


def string_columns(entity: str) -> list[str]:
    return [c for c, t in COLUMNS[entity].items() if t == "StringType"]


def pseudonym_columns(entity: str) -> list[str]:
    return [c for c in COLUMNS[entity] if c.endswith("_pk")]


# --------------------------------------------------------------------------- policy-derived checks

#: Generalization rules of the policy that turn a timestamp into a date (``day``: the date;
#: ``month``: the first day of its month). Their output columns must be DateType.
DATE_RULES = ("day", "month")

#: Pseudonymization domains that name a person (contact ids, emails, phones); ``company``,
#: ``deal`` and ``ticket`` tokens do not.
PERSON_DOMAINS = ("contact", "email", "phone")

#: Spark temp view of the pseudonyms that may not appear in the privacy zone, registered by the
#: validate stage (``crmshield.validate``) before the checkpoint runs and dropped after it:
#: ``pk STRING, reason STRING``. Reasons: :data:`REASON_NO_CONSENT` (the privacy job's exclusions
#: list, ``<data>/restricted/exclusions``: ``contact_pk`` of every contact without analytics
#: consent, computed from the raw consent column) and :data:`REASON_ERASED` (the pseudonyms
#: recorded with each erasure suppression entry). Checks query it; nothing reads values out of it.
EXCLUDED_SUBJECTS_VIEW = "crmshield_excluded_subjects"
EXCLUDED_SUBJECTS_SCHEMA = "pk STRING, reason STRING"
REASON_NO_CONSENT = "no_analytics_consent"
REASON_ERASED = "erasure"

#: Value of every quasi-identifier of a suppressed row (``transforms.SUPPRESSED`` in the job).
SUPPRESSED = "*"


def default_policy() -> Policy:
    """The privacy policy in force (``$CRMSHIELD_PRIVACY_POLICY`` or config/privacy_policy.yml)."""
    from crmshield.policy import load_policy, policy_path

    return load_policy(policy_path())


def _policy_outputs(policy: Policy, entity: str) -> list[tuple[str, Any]]:
    """(output column, column rule) of every column the policy lets out of ``entity``."""
    ent = policy.entities.get(entity)
    if ent is None:
        return []
    return [
        (rule.output or name, rule) for name, rule in ent.columns.items() if rule.action != "drop" and rule.purposes
    ]


def date_columns(entity: str, policy: Policy) -> dict[str, str]:
    """Output column -> date rule, for every policy column generalized to a date."""
    return {
        out: str(rule.rule)
        for out, rule in _policy_outputs(policy, entity)
        if rule.action == "generalize" and rule.rule in DATE_RULES
    }


def unexpected_columns(entity: str, policy: Policy) -> list[str]:
    """Output columns the policy lets out of ``entity`` beyond :data:`COLUMNS` (a policy change that
    keeps, say, ``email``). The column-set check fails on them; they are scanned for every PII
    pattern too, so the report says what leaked, by count."""
    return [out for out, _ in _policy_outputs(policy, entity) if out not in COLUMNS[entity]]


def person_columns(entity: str, policy: Policy) -> dict[str, str]:
    """Output column -> domain, for every pseudonym column that refers to a person."""
    return {
        out: str(rule.domain)
        for out, rule in _policy_outputs(policy, entity)
        if rule.action == "pseudonymize" and rule.domain in PERSON_DOMAINS
    }


# --------------------------------------------------------------------------- Spark SQL pieces
# Predicates over one string column, usable in any Spark SQL WHERE clause (the integration tests
# evaluate them directly). Lambda variables carry a leading underscore so they never shadow a column.


def sql_string(value: str) -> str:
    """A Spark SQL string literal holding exactly ``value`` (backslash and quote escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sql_ident(column: str) -> str:
    return "`" + column.replace("`", "``") + "`"


def gx_query(sql: str) -> str:
    """``sql`` (written with a ``{batch}`` placeholder) in the form GX formats: every other brace
    doubled, so regex quantifiers such as ``{4}`` survive ``str.format``."""
    marker = "\x00batch\x00"
    return sql.replace("{batch}", marker).replace("{", "{{").replace("}", "}}").replace(marker, "{batch}")


def luhn_sql(digits: str) -> str:
    """True when the digit string ``digits`` (a SQL expression) passes the Luhn check: from the
    right, every second digit doubled (minus 9 above 9), the sum divisible by 10."""
    d = f"(ascii(substr({digits}, -_lp, 1)) - 48)"
    return (
        f"aggregate(sequence(1, length({digits})), 0, (_la, _lp) -> _la + {d} * (2 - _lp % 2)"
        f" - CASE WHEN _lp % 2 = 0 AND {d} > 4 THEN 9 ELSE 0 END) % 10 = 0"
    )


def mod97_sql(iban: str) -> str:
    """True when the upper-case alphanumeric ``iban`` (a SQL expression) has ISO 13616 remainder 1:
    the first four characters moved to the end, letters read as 10..35, the number taken mod 97
    one character at a time (so it never overflows)."""
    c = f"substr({iban}, (_ip + 3) % length({iban}) + 1, 1)"
    digit = f"{c} BETWEEN '0' AND '9'"
    return (
        f"aggregate(sequence(1, length({iban})), 0, (_ia, _ip) -> "
        f"(_ia * CASE WHEN {digit} THEN 10 ELSE 100 END + ascii({c}) - CASE WHEN {digit} THEN 48 ELSE 55 END)"
        " % 97) = 1"
    )


def card_in_text_sql(column: str) -> str:
    """A Luhn-valid card number in the free-text ``column`` (a SQL expression), as the redactor
    would have replaced it: a :data:`CARD_CANDIDATE_PATTERN` run (:data:`IBAN_PATTERN` strings
    blanked first: their digits are never a card), taken whole or without its last group (a
    CVV or expiry written after it), of 13 to 19 digits, starting with an issuer digit
    (:data:`CARD_ISSUER_DIGITS`), not one digit repeated, and passing Luhn."""
    text = f"regexp_replace({column}, {sql_string(IBAN_PATTERN)}, ' ')"
    candidates = f"regexp_extract_all({text}, {sql_string(CARD_CANDIDATE_PATTERN)}, 0)"
    digits = (
        f"flatten(transform({candidates}, _cm -> array(regexp_replace(_cm, '[^0-9]', ''), "
        "regexp_replace(regexp_extract(_cm, '^(.*[0-9])[ -][0-9]+$', 1), '[^0-9]', ''))))"
    )
    issuers = ", ".join(f"'{d}'" for d in CARD_ISSUER_DIGITS)
    return (
        f"exists({digits}, _cd -> length(_cd) BETWEEN 13 AND 19 AND substr(_cd, 1, 1) IN ({issuers}) "
        f"AND replace(_cd, substr(_cd, 1, 1), '') <> '' AND {luhn_sql('_cd')})"
    )


def iban_in_text_sql(column: str) -> str:
    """A valid IBAN in the free-text ``column`` (a SQL expression), as the redactor would have
    replaced it: an :data:`IBAN_PATTERN` match, or a prefix of its groups (trailing words may have
    been swallowed), upper-cased, of at least 15 characters and exactly its country's length, whose
    mod-97 remainder is 1."""
    sep = sql_string(IBAN_SEPARATOR)
    candidates = f"regexp_extract_all({column}, {sql_string(IBAN_PATTERN)}, 0)"
    prefixes = (
        f"flatten(transform({candidates}, _im -> transform(sequence(1, size(split(_im, {sep}))), "
        f"_ik -> upper(array_join(slice(split(_im, {sep}), 1, _ik), '')))))"
    )
    known = ", ".join(f"'{c}{n}'" for c, n in sorted(IBAN_LENGTHS.items()))
    return (
        f"exists({prefixes}, _is -> length(_is) >= 15 "
        f"AND concat(substr(_is, 1, 2), CAST(length(_is) AS STRING)) IN ({known}) AND {mod97_sql('_is')})"
    )


def ip_in_text_sql(column: str) -> str:
    """An IPv4 address not introduced by a version word (:data:`VERSION_CUE_PATTERN`), or an IPv6
    address, in the free-text ``column`` (a SQL expression)."""
    v4 = sql_string(f"(?:{VERSION_CUE_PATTERN})?{IPV4_PATTERN}")
    return (
        f"(exists(regexp_extract_all({column}, {v4}, 0), _pm -> NOT _pm rlike '^[A-Za-z]') "
        f"OR {column} rlike {sql_string(IPV6_PATTERN)})"
    )


def findings_query(where: str) -> str:
    """The GX ``unexpected_rows_query`` counting the batch rows where ``where`` holds: it selects
    a constant, never a value."""
    return gx_query(f"SELECT 1 AS finding FROM {{batch}} WHERE {where}")


def _suppressed_sql(qis: list[str]) -> str:
    both = " AND ".join(f"{sql_ident(q)} = '{SUPPRESSED}'" for q in qis)
    return f"coalesce({both}, false)"


def k_anonymity_query(qis: list[str], k: int) -> str:
    """Rows (other than suppressed ones, every quasi-identifier ``*``) in a class of fewer than k."""
    cols = ", ".join(sql_ident(q) for q in qis)
    return gx_query(
        "SELECT 1 AS finding FROM (SELECT count(1) OVER (PARTITION BY "
        f"{cols}) AS _class_size, {_suppressed_sql(qis)} AS _suppressed FROM {{batch}}) "
        f"WHERE NOT _suppressed AND _class_size < {int(k)}"
    )


def suppression_share_query(qis: list[str], max_suppression: float) -> str:
    """The suppressed rows, when they are more than ``max_suppression`` of all rows (else none)."""
    s = _suppressed_sql(qis)
    return gx_query(
        f"SELECT 1 AS finding FROM {{batch}} WHERE {s} AND "
        f"(SELECT count_if({s}) > {float(max_suppression)!r} * count(1) FROM {{batch}})"
    )


def excluded_subject_query(column: str, reason: str) -> str:
    """Rows whose ``column`` carries a pseudonym listed in the excluded-subjects view for ``reason``."""
    return findings_query(
        f"{sql_ident(column)} IN (SELECT pk FROM {EXCLUDED_SUBJECTS_VIEW} WHERE reason = {sql_string(reason)})"
    )


def _meta(severity: str, check: str, column: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"severity": severity, "check": check}
    if column is not None:
        meta["column"] = column  # table-level (SQL) checks have no column kwarg: named here
    return meta


def build_expectations(entity: str, policy: Policy | None = None) -> list[Expectation]:
    """The expectations of ``privacy__<entity>``, critical ones first (``policy``: the one in force
    when not given)."""
    import great_expectations.expectations as gxe
    from great_expectations.expectations.metadata_types import FailureSeverity

    if entity not in COLUMNS:
        raise KeyError(f"unknown privacy-zone entity {entity!r}; expected one of {sorted(COLUMNS)}")
    policy = policy if policy is not None else default_policy()

    def sev(severity: str) -> FailureSeverity:
        return FailureSeverity(severity)

    def rows(query: str, check: str, column: str | None, description: str) -> Expectation:
        """A critical table-level check: the query's rows are the findings, counted only."""
        return gxe.UnexpectedRowsExpectation(
            unexpected_rows_query=query,
            description=description,
            severity=sev(CRITICAL),
            meta=_meta(CRITICAL, check, column),
        )

    columns = COLUMNS[entity]
    pk = PRIMARY_KEYS[entity]
    out: list[Expectation] = [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=list(columns),
            exact_match=True,
            severity=sev(CRITICAL),
            meta=_meta(CRITICAL, "column_set"),
        ),
    ]
    for column, spark_type in columns.items():
        out.append(
            gxe.ExpectColumnValuesToBeOfType(
                column=column,
                type_=spark_type,
                severity=sev(CRITICAL),
                meta=_meta(CRITICAL, "column_type"),
            )
        )
    out += [
        gxe.ExpectColumnValuesToNotBeNull(
            column=pk, severity=sev(CRITICAL), meta=_meta(CRITICAL, "primary_key_not_null")
        ),
        gxe.ExpectColumnValuesToBeUnique(column=pk, severity=sev(CRITICAL), meta=_meta(CRITICAL, "primary_key_unique")),
    ]
    # Nulls are not checked by the regex (GX map expectations skip them): a missing foreign
    # pseudonym (e.g. a contact without a company) is allowed, a malformed one is not.
    for column in pseudonym_columns(entity):
        out.append(
            gxe.ExpectColumnValuesToMatchRegex(
                column=column,
                regex=PSEUDONYM_PATTERN,
                severity=sev(CRITICAL),
                meta=_meta(CRITICAL, "pseudonym_format"),
            )
        )
    for column in [*string_columns(entity), *unexpected_columns(entity, policy)]:
        free_text = (entity, column) in FREE_TEXT
        phone_severity = WARNING if free_text else CRITICAL
        out += [
            gxe.ExpectColumnValuesToNotMatchRegex(
                column=column,
                regex=EMAIL_PATTERN,
                severity=sev(CRITICAL),
                meta=_meta(CRITICAL, "no_email"),
            ),
            gxe.ExpectColumnValuesToNotMatchRegex(
                column=column,
                regex=PHONE_PATTERN,
                severity=sev(phone_severity),
                meta=_meta(phone_severity, "no_phone"),
            ),
        ]
        if free_text:
            # the redactor left checksum-failing look-alikes and version numbers: judge like it does
            c = sql_ident(column)
            out += [
                rows(findings_query(card_in_text_sql(c)), "no_card", column,
                     f"No Luhn-valid card number in {entity}.{column}"),
                rows(findings_query(iban_in_text_sql(c)), "no_iban", column,
                     f"No valid IBAN (known country, its length, mod-97) in {entity}.{column}"),
                rows(findings_query(ip_in_text_sql(c)), "no_ip", column,
                     f"No IPv4 (other than a version number) or IPv6 address in {entity}.{column}"),
            ]  # fmt: skip
        else:
            for check, regex in (("no_card", CARD_PATTERN), ("no_iban", IBAN_PATTERN), ("no_ip", IP_PATTERN)):
                out.append(
                    gxe.ExpectColumnValuesToNotMatchRegex(
                        column=column, regex=regex, severity=sev(CRITICAL), meta=_meta(CRITICAL, check)
                    )
                )
    # dates generalized as the policy says: a DATE (never a timestamp or a string; counted per row,
    # so the finding has a count), and the 1st of the month for ``month``
    for column, rule in date_columns(entity, policy).items():
        c = sql_ident(column)
        out.append(
            rows(findings_query(f"typeof({c}) <> 'date'"), "date_generalized", column,
                 f"{entity}.{column} is a date (policy rule '{rule}')")
        )  # fmt: skip
        if rule == "month":
            out.append(
                rows(findings_query(f"dayofmonth({c}) <> 1"), "date_month_first_day", column,
                     f"{entity}.{column} is generalized to its month: the first day of it")
            )  # fmt: skip
    # k-anonymity over the policy's quasi-identifiers, within its suppression budget
    ka = policy.k_anonymity
    if ka is not None and ka.entity == entity:
        qis = list(ka.quasi_identifiers)
        where = ",".join(qis)
        out += [
            rows(k_anonymity_query(qis, ka.k), "k_anonymity", where,
                 f"Every class over ({', '.join(qis)}) holds at least k={ka.k} rows (suppressed rows aside)"),
            rows(suppression_share_query(qis, ka.max_suppression), "k_anonymity_suppression", where,
                 f"At most {ka.max_suppression:.2%} of the rows suppressed (every quasi-identifier '*')"),
        ]  # fmt: skip
    # no subject without analytics consent, none on the erasure suppression list
    for column, domain in person_columns(entity, policy).items():
        if domain == "contact":
            out.append(
                rows(excluded_subject_query(column, REASON_NO_CONSENT), "no_unconsented_subject", column,
                     f"No {entity}.{column} of a contact without analytics consent")
            )  # fmt: skip
        out.append(
            rows(excluded_subject_query(column, REASON_ERASED), "no_erased_subject", column,
                 f"No {entity}.{column} of an erased subject")
        )  # fmt: skip
    if entity == "contacts":
        out.append(
            gxe.ExpectColumnValueLengthsToBeBetween(
                column="postal_prefix",
                min_value=0,
                max_value=POSTAL_PREFIX_MAX_LENGTH,
                severity=sev(CRITICAL),
                meta=_meta(CRITICAL, "postal_prefix_generalized"),
            )
        )
    for (set_entity, column), (values, severity) in VALUE_SETS.items():
        if set_entity == entity:
            out.append(
                gxe.ExpectColumnValuesToBeInSet(
                    column=column,
                    value_set=list(values),
                    severity=sev(severity),
                    meta=_meta(severity, "value_set"),
                )
            )
    if entity == "tickets":
        out.append(
            gxe.ExpectColumnValuesToBeBetween(
                column="resolution_hours",
                min_value=0,
                severity=sev(WARNING),
                meta=_meta(WARNING, "non_negative"),
            )
        )
    out.append(gxe.ExpectTableRowCountToBeBetween(min_value=1, severity=sev(WARNING), meta=_meta(WARNING, "not_empty")))
    return out


def build_suite(entity: str, policy: Policy | None = None) -> ExpectationSuite:
    """A fresh (unsaved) ``ExpectationSuite`` for ``privacy/<entity>/`` (``policy``: the privacy
    policy whose dates, k-anonymity and person pseudonyms it checks; the one in force by default)."""
    import great_expectations as gx

    return gx.ExpectationSuite(
        name=suite_name(entity),
        expectations=build_expectations(entity, policy),
        meta={"zone": "privacy", "entity": entity, "defined_in": "expectations/privacy.py"},
    )


def build_suites(policy: Policy | None = None) -> dict[str, ExpectationSuite]:
    """Every privacy-zone suite, keyed by entity (the policy is read once)."""
    policy = policy if policy is not None else default_policy()
    return {entity: build_suite(entity, policy) for entity in COLUMNS}

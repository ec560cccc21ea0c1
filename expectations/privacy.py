"""Expectation suites for the privacy zone (zone 3), defined in code.

This is a plain module, not part of a package: :func:`crmshield.validate.load_expectations_module`
loads it by file path from ``<project root>/expectations/privacy.py``. Great Expectations is
imported inside the builder functions only, so the patterns below can be imported (and unit
tested) without starting GX or Spark.

One suite per entity, named for the zone it guards: ``privacy__contacts``,
``privacy__companies``, ``privacy__deals``, ``privacy__tickets``. Every expectation carries a
severity, both in GX's own ``severity`` field and in ``meta["severity"]``:

* ``critical``: the hand-over must stop. Column set, column types, pseudonym format, primary
  key not null and unique, no email pattern in any string column, no phone pattern outside the
  redacted free text (see :data:`PHONE_PATTERN`), and the
  generalizations that keep quasi-identifiers coarse (``age_band``, ``postal_prefix``).
* ``warning``: reported, the run goes on. Categorical value sets, numeric ranges, row count.

Patterns are written for Java regular expressions (Spark ``rlike``, which *finds* a match
anywhere in the value) and mean the same in Python's ``re`` (ASCII classes only, no ``\\d`` or
``\\w``), so the unit tests exercise exactly what Spark runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.expectations.expectation import Expectation

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

#: Redacted free-text columns (policy action ``redact``): the phone-pattern check is a warning here.
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


def _meta(severity: str, check: str) -> dict[str, Any]:
    return {"severity": severity, "check": check}


def build_expectations(entity: str) -> list[Expectation]:
    """The expectations of ``privacy__<entity>``, critical ones first."""
    import great_expectations.expectations as gxe
    from great_expectations.expectations.metadata_types import FailureSeverity

    if entity not in COLUMNS:
        raise KeyError(f"unknown privacy-zone entity {entity!r}; expected one of {sorted(COLUMNS)}")

    def sev(severity: str) -> FailureSeverity:
        return FailureSeverity(severity)

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
    for column in string_columns(entity):
        phone_severity = WARNING if (entity, column) in FREE_TEXT else CRITICAL
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


def build_suite(entity: str) -> ExpectationSuite:
    """A fresh (unsaved) ``ExpectationSuite`` for ``privacy/<entity>/``."""
    import great_expectations as gx

    return gx.ExpectationSuite(
        name=suite_name(entity),
        expectations=build_expectations(entity),
        meta={"zone": "privacy", "entity": entity, "defined_in": "expectations/privacy.py"},
    )


def build_suites() -> dict[str, ExpectationSuite]:
    """Every privacy-zone suite, keyed by entity."""
    return {entity: build_suite(entity) for entity in COLUMNS}

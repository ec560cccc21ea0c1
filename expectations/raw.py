"""Expectation suites for the raw zone (zone 2): the contract with the CRM export, defined in code.

A plain module like ``expectations/privacy.py``: :func:`crmshield.validate.load_expectations_module`
loads it by file path (``load_expectations_module(settings, "raw")``), and Great Expectations is
imported inside the builder functions only, so the constants and patterns below can be imported
(and unit tested) without starting GX or Spark. :func:`crmshield.validate_raw.validate_raw_zone`
runs the suites at the landing -> raw hand-over, right after ingest.

Suites:

* ``raw__contacts``, ``raw__companies``, ``raw__deals``, ``raw__tickets``: one per raw table
  (``raw/<entity>.parquet``, read with Spark);
* ``raw__reconciliation``: one row per landing file with the ingest's accounting
  (:func:`reconciliation_facts`, a small pandas DataFrame; counts only).

Every expectation carries a severity, both in GX's own ``severity`` field and in
``meta={"severity": ..., "check": ...}``. The rule for choosing it: **critical where ingest
guarantees the property** (it casts, normalizes, quarantines or deduplicates, so a violation
means ingest or the raw file is broken and nothing downstream may trust the table), **warning
where ingest keeps the value as the export wrote it** (the export is odd, the pipeline is fine).

Critical, per raw table:

* ``required_columns``: every column ingest writes is present (extra columns are a *warning*,
  ``no_unexpected_columns``: the privacy policy drops unknown columns with a warning anyway);
* ``column_type``: each column has the Spark type ingest's explicit cast gives it
  (:data:`COLUMNS`). Dates and timestamps are typed here, so "is a date" is this check. A
  timestamp may be ``TimestampNTZType`` (how Spark reads DuckDB's ``TIMESTAMP``) or
  ``TimestampType`` (the same file read with ``spark.sql.parquet.inferTimestampNTZ.enabled``
  off);
* ``source_key_not_null``, ``source_key_unique``: the CRM id after ingest's deduplication;
* ``required_not_null``: the fields ingest quarantines when empty (:data:`REQUIRED`);
* ``email_canonical``: ``contacts.email`` has no upper-case ASCII letter and no surrounding
  white space (ingest lower-cases and trims *every* email, even one that is not an address);
* ``country_code_format``: two upper-case letters (ingest maps every country to an ISO code
  or quarantines the row);
* ``allowed_values`` for the categories ingest enforces (:data:`VALUE_SETS`, critical ones):
  country, lifecycle stage, deal stage, ticket channel, priority, status and satisfaction;
* ``lineage_source_file`` (``_source_file`` names this entity's landing file) and
  ``lineage_source_row`` (``_source_row`` is set);
* ``row_count_matches_ingest``: the table has exactly the ``raw_rows`` the ingest reported
  (added when the ingest result has this entity; a missing entity is caught by
  ``raw__reconciliation``'s ``file_reported``).

Warning, per raw table:

* ``email_format``: ``contacts.email`` matches :data:`EMAIL_PATTERN` (ingest keeps a value
  that is not an address as written and counts it as ``email:not_an_email``; the same pattern);
* ``phone_e164``: ``contacts.phone`` matches :data:`E164_PATTERN` (ingest keeps an impossible
  number as written, counted as ``phone:not_a_number``);
* ``allowed_values`` for the categories ingest passes through as text: deal pipeline and
  currency; ``currency_format`` (ISO 4217 shape);
* ``date_range``: dates and timestamps inside plausible bounds (:data:`TIMESTAMP_MIN`,
  :data:`TIMESTAMP_MAX`, :data:`DATE_OF_BIRTH_MIN`; a birth date after the export's reference
  date); ``solved_after_created`` for tickets;
* ``non_negative``: employees, annual revenue, deal amount.

Critical, ``raw__reconciliation`` (one row per entity):

* ``file_reported``: the ingest result has an entry for every expected landing file;
* ``known_entity``: and no entry for anything else;
* ``facts_complete``, ``non_negative``: every count is present and >= 0;
* ``read_accounted``: ``read == loaded + quarantined + duplicates + expired + erased``
  (column ``unaccounted`` is the difference and must be 0);
* ``quarantine_share_critical``: quarantined / read <= the source spec's ``max_bad_share`` for the
  entity (column ``share_over_limit`` is the excess and must be <= 0; default
  :data:`QUARANTINE_SHARE_CRITICAL`): an export that broke (a changed layout, a broken encoding, a
  date format switch). Ingest already refuses such a delivery; this is the gate's own check.

Warning, ``raw__reconciliation``: ``quarantine_share_warning``, quarantined / read <=
:data:`QUARANTINE_SHARE_WARNING`.

Patterns are written for Java regular expressions (Spark ``rlike``, which *finds* a match
anywhere in the value; every pattern here is anchored where it means the whole value) and mean
the same in Python's ``re`` on ASCII input, so the unit tests exercise what Spark runs.

No expectation here stores or renders a row value: the validation stage runs them under
:data:`crmshield.validate.RESULT_FORMAT` (counts only). The suite definitions themselves hold
column names, patterns, allowed categories, thresholds and the expected row counts, never data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crmshield.sources import COUNTRIES as SOURCE_COUNTRIES

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.expectations.expectation import Expectation

CRITICAL = "critical"
WARNING = "warning"

SUITE_PREFIX = "raw__"
RECONCILIATION = "reconciliation"

#: The raw tables, in pipeline order (``crmshield.config.ENTITIES``).
ENTITIES: tuple[str, ...] = ("contacts", "companies", "deals", "tickets")

# --------------------------------------------------------------------------- thresholds

#: Largest share of a file's rows that may be quarantined before the hand-over stops: beyond
#: this the export itself broke (a changed layout, an encoding or date-format switch).
QUARANTINE_SHARE_CRITICAL = 0.20
#: Largest share that passes without a warning (the generated demo export sits at or below 1 %).
QUARANTINE_SHARE_WARNING = 0.01

# --------------------------------------------------------------------------- patterns

#: An email address as ingest counts one (``crmshield.normalize.EMAIL_SHAPE``): exactly one
#: ``@`` with text on both sides, a dot in the domain, no white space. Whole value.
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
#: What ingest's canonical form rules out in *every* email value: an upper-case ASCII letter,
#: or white space at either end (``normalize_email`` lower-cases and trims whatever it is given).
EMAIL_NOT_CANONICAL_PATTERN = r"[A-Z]|^\s|\s$"
#: E.164 (``crmshield.normalize.E164_PATTERN``): ``+``, a non-zero digit, 7 to 15 digits in all.
E164_PATTERN = r"^\+[1-9][0-9]{6,14}$"
#: ISO 3166-1 alpha-2 shape.
COUNTRY_CODE_PATTERN = r"^[A-Z]{2}$"
#: ISO 4217 shape.
CURRENCY_CODE_PATTERN = r"^[A-Z]{3}$"

# --------------------------------------------------------------------------- plausible dates (warnings)

#: No CRM record in these exports was created or updated before this, or after TIMESTAMP_MAX.
TIMESTAMP_MIN = "1990-01-01 00:00:00"
TIMESTAMP_MAX = "2100-01-01 00:00:00"
DATE_MIN = "1990-01-01"
DATE_MAX = "2100-01-01"
#: Oldest plausible birth date; the newest is the export's reference date when known.
DATE_OF_BIRTH_MIN = "1900-01-01"

# --------------------------------------------------------------------------- the raw tables

TIMESTAMP = "Timestamp"  # TimestampNTZType or TimestampType, see TIMESTAMP_TYPES
TIMESTAMP_TYPES = ("TimestampNTZType", "TimestampType")

#: Raw columns per entity, in the order ingest writes them, with the Spark type each has when
#: Spark reads the Parquet DuckDB wrote (``pyspark.sql.types`` class names). Derived from
#: ``crmshield.ingest.SPECS`` (``tests/unit/test_raw_expectations.py`` keeps them in step):
#: BIGINT -> LongType, INTEGER -> IntegerType, DECIMAL(18,2) -> DecimalType, DATE -> DateType,
#: TIMESTAMP -> a timestamp, BOOLEAN -> BooleanType; text, categories, emails and phones ->
#: StringType (postal codes and phones stay text: leading zeros). Every table ends with the
#: lineage columns ``_source_file`` and ``_source_row``.
COLUMNS: dict[str, dict[str, str]] = {
    "contacts": {
        "contact_id": "LongType",
        "first_name": "StringType",
        "last_name": "StringType",
        "email": "StringType",
        "phone": "StringType",
        "date_of_birth": "DateType",
        "street": "StringType",
        "city": "StringType",
        "postal_code": "StringType",
        "country": "StringType",
        "lifecycle_stage": "StringType",
        "created_at": TIMESTAMP,
        "updated_at": TIMESTAMP,
        "marketing_consent": "BooleanType",
        "analytics_consent": "BooleanType",
        "company_id": "LongType",
        "_source_file": "StringType",
        "_source_row": "LongType",
    },
    "companies": {
        "company_id": "LongType",
        "name": "StringType",
        "domain": "StringType",
        "industry": "StringType",
        "employees": "IntegerType",
        "annual_revenue": "DecimalType",
        "country": "StringType",
        "city": "StringType",
        "created_at": TIMESTAMP,
        "_source_file": "StringType",
        "_source_row": "LongType",
    },
    "deals": {
        "deal_id": "LongType",
        "deal_name": "StringType",
        "stage": "StringType",
        "pipeline": "StringType",
        "amount": "DecimalType",
        "currency": "StringType",
        "close_date": "DateType",
        "created_at": TIMESTAMP,
        "contact_id": "LongType",
        "company_id": "LongType",
        "_source_file": "StringType",
        "_source_row": "LongType",
    },
    "tickets": {
        "ticket_id": "LongType",
        "requester_id": "LongType",
        "subject": "StringType",
        "description": "StringType",
        "channel": "StringType",
        "priority": "StringType",
        "status": "StringType",
        "created_at": TIMESTAMP,
        "updated_at": TIMESTAMP,
        "solved_at": TIMESTAMP,
        "satisfaction": "StringType",
        "_source_file": "StringType",
        "_source_row": "LongType",
    },
}

#: The landing file each raw table comes from (``_source_file``).
SOURCE_FILES: dict[str, str] = {
    "contacts": "hubspot_contacts.csv",
    "companies": "hubspot_companies.csv",
    "deals": "hubspot_deals.csv",
    "tickets": "zendesk_tickets.jsonl",
}

#: The CRM record id: ingest keeps one row per id (the latest version wins).
SOURCE_KEYS: dict[str, str] = {
    "contacts": "contact_id",
    "companies": "company_id",
    "deals": "deal_id",
    "tickets": "ticket_id",
}

#: Fields other than the key that ingest quarantines when empty (``Field(required=True)``).
REQUIRED: dict[str, tuple[str, ...]] = {
    "contacts": ("created_at",),
    "companies": ("created_at",),
    "deals": ("stage", "created_at"),
    "tickets": ("requester_id", "status", "created_at"),
}

#: Country codes ingest maps the export's country names and codes onto (anything else is
#: quarantined as ``country:invalid_value``).
COUNTRIES: tuple[str, ...] = SOURCE_COUNTRIES  # ISO 3166-1 alpha-2 (crmshield.sources.COUNTRIES)
LIFECYCLE_STAGES = (
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
    "evangelist",
    "other",
)
DEAL_STAGES = (
    "appointmentscheduled",
    "qualifiedtobuy",
    "presentationscheduled",
    "decisionmakerboughtin",
    "contractsent",
    "closedwon",
    "closedlost",
)
CHANNELS = ("email", "web", "chat", "voice", "api")
PRIORITIES = ("low", "normal", "high", "urgent")
STATUSES = ("new", "open", "pending", "solved", "closed")
SATISFACTIONS = ("good", "bad", "offered", "unoffered")
#: Not enforced by ingest (kept as the export wrote them): what this CRM account is known to use.
PIPELINES = ("Sales Pipeline", "default")
CURRENCIES = ("EUR", "USD", "GBP", "CAD", "AUD")

#: (entity, column) -> (allowed values, severity): critical where ingest enforces the set
#: (it normalizes the category and quarantines anything else), warning where it does not.
VALUE_SETS: dict[tuple[str, str], tuple[tuple[str, ...], str]] = {
    ("contacts", "country"): (COUNTRIES, CRITICAL),
    ("contacts", "lifecycle_stage"): (LIFECYCLE_STAGES, CRITICAL),
    ("companies", "country"): (COUNTRIES, CRITICAL),
    ("deals", "stage"): (DEAL_STAGES, CRITICAL),
    ("deals", "pipeline"): (PIPELINES, WARNING),
    ("deals", "currency"): (CURRENCIES, WARNING),
    ("tickets", "channel"): (CHANNELS, CRITICAL),
    ("tickets", "priority"): (PRIORITIES, CRITICAL),
    ("tickets", "status"): (STATUSES, CRITICAL),
    ("tickets", "satisfaction"): (SATISFACTIONS, CRITICAL),
}

#: Numeric columns that cannot be negative (ingest casts, it does not range-check: warning).
NON_NEGATIVE: dict[str, tuple[str, ...]] = {
    "companies": ("employees", "annual_revenue"),
    "deals": ("amount",),
}

# --------------------------------------------------------------------------- reconciliation facts

#: The per-file counts of the ingest result, in the order of its accounting identity.
COUNT_COLUMNS = ("read", "loaded", "quarantined", "duplicates", "expired", "erased")
#: The ``raw__reconciliation`` batch: one row per entity.
RECONCILIATION_COLUMNS = (
    "entity", "reported", *COUNT_COLUMNS, "unaccounted", "quarantined_share", "max_bad_share", "share_over_limit",
)  # fmt: skip


def suite_name(entity: str) -> str:
    """The suite guarding ``raw/<entity>.parquet`` (or ``raw__reconciliation``)."""
    return f"{SUITE_PREFIX}{entity}"


def _meta(severity: str, check: str) -> dict[str, Any]:
    return {"severity": severity, "check": check}


def _count(value: Any) -> int | None:
    """An ingest count, or None when it is missing or not an integer (``facts_complete``)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def reconciliation_facts(ingest: dict[str, Any]) -> pd.DataFrame:
    """The ``raw__reconciliation`` batch built from the ingest stage's result dict.

    One row per expected entity (``reported`` = 0 when the ingest result has no entry for it),
    plus one row per unexpected entry. Counts only: entity names, the six counts of the
    accounting identity, ``unaccounted`` (``read`` minus the other five) and
    ``quarantined_share`` (``quarantined / read``). A count that is missing or not an integer is
    NULL here, and so are the derived columns of its row."""
    import pandas as pd

    files = ingest.get("files") or {}
    rows = []
    for entity in [*ENTITIES, *sorted(e for e in files if e not in ENTITIES)]:
        entry = files.get(entity)
        counts = {c: _count(entry.get(c)) if isinstance(entry, dict) else None for c in COUNT_COLUMNS}
        complete = all(v is not None for v in counts.values())
        read = counts["read"]
        unaccounted = (
            read - sum(counts[c] for c in COUNT_COLUMNS[1:])  # type: ignore[operator,misc]
            if complete
            else None
        )
        share = None
        if read is not None and counts["quarantined"] is not None:
            share = counts["quarantined"] / read if read else 0.0
        limit = entry.get("max_bad_share") if isinstance(entry, dict) else None
        if isinstance(limit, bool) or not isinstance(limit, int | float):
            limit = QUARANTINE_SHARE_CRITICAL
        rows.append(
            {
                "entity": entity,
                "reported": int(entity in files),
                **counts,
                "unaccounted": unaccounted,
                "quarantined_share": share,
                "max_bad_share": float(limit),
                "share_over_limit": None if share is None else share - float(limit),
            }
        )
    frame = pd.DataFrame(rows, columns=list(RECONCILIATION_COLUMNS))
    for column in (*COUNT_COLUMNS, "unaccounted"):
        frame[column] = frame[column].astype("Int64")
    for column in ("quarantined_share", "max_bad_share", "share_over_limit"):
        frame[column] = frame[column].astype("float64")
    return frame


# --------------------------------------------------------------------------- builders


def build_expectations(
    entity: str,
    expected_rows: int | None = None,
    reference_date: str | None = None,
    required: list[str] | None = None,
    source_files: list[str] | None = None,
) -> list[Expectation]:
    """The expectations of ``raw__<entity>``, critical ones first.

    ``expected_rows``: the rows ingest says the table holds (adds ``row_count_matches_ingest``).
    ``reference_date``: the export's reference date (ISO), the newest plausible birth date.
    ``required`` / ``source_files``: the source spec's required fields and the delivered files
    (from the ingest result); default: the generator layout's (:data:`REQUIRED`, :data:`SOURCE_FILES`)."""
    import great_expectations.expectations as gxe
    from great_expectations.expectations.metadata_types import FailureSeverity

    if entity not in COLUMNS:
        raise KeyError(f"unknown raw-zone entity {entity!r}; expected one of {sorted(COLUMNS)}")

    def sev(severity: str) -> FailureSeverity:
        return FailureSeverity(severity)

    crit = sev(CRITICAL)
    columns = COLUMNS[entity]
    key = SOURCE_KEYS[entity]
    out: list[Expectation] = [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=list(columns),
            exact_match=False,
            severity=crit,
            meta=_meta(CRITICAL, "required_columns"),
        ),
    ]
    for column, spark_type in columns.items():
        if spark_type == TIMESTAMP:
            out.append(
                gxe.ExpectColumnValuesToBeInTypeList(
                    column=column,
                    type_list=list(TIMESTAMP_TYPES),
                    severity=crit,
                    meta=_meta(CRITICAL, "column_type"),
                )
            )
        else:
            out.append(
                gxe.ExpectColumnValuesToBeOfType(
                    column=column, type_=spark_type, severity=crit, meta=_meta(CRITICAL, "column_type")
                )
            )
    out += [
        gxe.ExpectColumnValuesToNotBeNull(column=key, severity=crit, meta=_meta(CRITICAL, "source_key_not_null")),
        gxe.ExpectColumnValuesToBeUnique(column=key, severity=crit, meta=_meta(CRITICAL, "source_key_unique")),
    ]
    key_and_required = required if required is not None else [key, *REQUIRED[entity]]
    for column in (c for c in key_and_required if c != key):
        out.append(
            gxe.ExpectColumnValuesToNotBeNull(column=column, severity=crit, meta=_meta(CRITICAL, "required_not_null"))
        )
    if entity == "contacts":
        out.append(
            gxe.ExpectColumnValuesToNotMatchRegex(
                column="email",
                regex=EMAIL_NOT_CANONICAL_PATTERN,
                severity=crit,
                meta=_meta(CRITICAL, "email_canonical"),
            )
        )
    if "country" in columns:
        out.append(
            gxe.ExpectColumnValuesToMatchRegex(
                column="country",
                regex=COUNTRY_CODE_PATTERN,
                severity=crit,
                meta=_meta(CRITICAL, "country_code_format"),
            )
        )
    for (set_entity, column), (values, severity) in VALUE_SETS.items():
        if set_entity == entity and severity == CRITICAL:
            out.append(
                gxe.ExpectColumnValuesToBeInSet(
                    column=column, value_set=list(values), severity=crit, meta=_meta(CRITICAL, "allowed_values")
                )
            )
    out += [
        gxe.ExpectColumnValuesToBeInSet(
            column="_source_file",
            value_set=list(source_files) if source_files is not None else [SOURCE_FILES[entity]],
            severity=crit,
            meta=_meta(CRITICAL, "lineage_source_file"),
        ),
        gxe.ExpectColumnValuesToNotBeNull(
            column="_source_row", severity=crit, meta=_meta(CRITICAL, "lineage_source_row")
        ),
    ]
    if expected_rows is not None:
        out.append(
            gxe.ExpectTableRowCountToEqual(
                value=int(expected_rows), severity=crit, meta=_meta(CRITICAL, "row_count_matches_ingest")
            )
        )
    out += _warnings(entity, reference_date)
    return out


def _warnings(entity: str, reference_date: str | None) -> list[Expectation]:
    import great_expectations.expectations as gxe
    from great_expectations.expectations.metadata_types import FailureSeverity

    warn = FailureSeverity(WARNING)
    columns = COLUMNS[entity]
    out: list[Expectation] = [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=list(columns),
            exact_match=True,
            severity=warn,
            meta=_meta(WARNING, "no_unexpected_columns"),
        ),
    ]
    if entity == "contacts":
        out += [
            gxe.ExpectColumnValuesToMatchRegex(
                column="email", regex=EMAIL_PATTERN, severity=warn, meta=_meta(WARNING, "email_format")
            ),
            gxe.ExpectColumnValuesToMatchRegex(
                column="phone", regex=E164_PATTERN, severity=warn, meta=_meta(WARNING, "phone_e164")
            ),
        ]
    for (set_entity, column), (values, severity) in VALUE_SETS.items():
        if set_entity == entity and severity == WARNING:
            out.append(
                gxe.ExpectColumnValuesToBeInSet(
                    column=column, value_set=list(values), severity=warn, meta=_meta(WARNING, "allowed_values")
                )
            )
    if entity == "deals":
        out.append(
            gxe.ExpectColumnValuesToMatchRegex(
                column="currency", regex=CURRENCY_CODE_PATTERN, severity=warn, meta=_meta(WARNING, "currency_format")
            )
        )
    for column, spark_type in columns.items():
        if spark_type == TIMESTAMP:
            low, high = TIMESTAMP_MIN, TIMESTAMP_MAX
        elif spark_type == "DateType":
            low, high = DATE_MIN, DATE_MAX
            if column == "date_of_birth":
                low = DATE_OF_BIRTH_MIN
                high = reference_date[:10] if reference_date else DATE_MAX
        else:
            continue
        out.append(
            gxe.ExpectColumnValuesToBeBetween(
                column=column, min_value=low, max_value=high, severity=warn, meta=_meta(WARNING, "date_range")
            )
        )
    for column in NON_NEGATIVE.get(entity, ()):
        out.append(
            gxe.ExpectColumnValuesToBeBetween(
                column=column, min_value=0, severity=warn, meta=_meta(WARNING, "non_negative")
            )
        )
    if entity == "tickets":
        out.append(
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="solved_at",
                column_B="created_at",
                or_equal=True,
                ignore_row_if="either_value_is_missing",
                severity=warn,
                meta=_meta(WARNING, "solved_after_created"),
            )
        )
    return out


def build_reconciliation_expectations() -> list[Expectation]:
    """The expectations of ``raw__reconciliation`` over :func:`reconciliation_facts`."""
    import great_expectations.expectations as gxe
    from great_expectations.expectations.metadata_types import FailureSeverity

    crit, warn = FailureSeverity(CRITICAL), FailureSeverity(WARNING)
    out: list[Expectation] = [
        gxe.ExpectColumnValuesToBeInSet(
            column="reported", value_set=[1], severity=crit, meta=_meta(CRITICAL, "file_reported")
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="entity", value_set=list(ENTITIES), severity=crit, meta=_meta(CRITICAL, "known_entity")
        ),
    ]
    for column in COUNT_COLUMNS:
        out += [
            gxe.ExpectColumnValuesToNotBeNull(column=column, severity=crit, meta=_meta(CRITICAL, "facts_complete")),
            gxe.ExpectColumnValuesToBeBetween(
                column=column, min_value=0, severity=crit, meta=_meta(CRITICAL, "non_negative")
            ),
        ]
    out += [
        gxe.ExpectColumnValuesToBeBetween(
            column="unaccounted", min_value=0, max_value=0, severity=crit, meta=_meta(CRITICAL, "read_accounted")
        ),
        gxe.ExpectColumnValuesToBeBetween(  # the source spec's max_bad_share (default QUARANTINE_SHARE_CRITICAL)
            column="share_over_limit",
            max_value=0,
            severity=crit,
            meta=_meta(CRITICAL, "quarantine_share_critical"),
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="quarantined_share",
            min_value=0,
            max_value=QUARANTINE_SHARE_WARNING,
            severity=warn,
            meta=_meta(WARNING, "quarantine_share_warning"),
        ),
    ]
    return out


def build_suite(
    entity: str,
    expected_rows: int | None = None,
    reference_date: str | None = None,
    required: list[str] | None = None,
    source_files: list[str] | None = None,
) -> ExpectationSuite:
    """A fresh (unsaved) ``ExpectationSuite``: ``raw__<entity>``, or ``raw__reconciliation``."""
    import great_expectations as gx

    if entity == RECONCILIATION:
        expectations = build_reconciliation_expectations()
    else:
        expectations = build_expectations(entity, expected_rows, reference_date, required, source_files)
    return gx.ExpectationSuite(
        name=suite_name(entity),
        expectations=expectations,
        meta={"zone": "raw", "entity": entity, "defined_in": "expectations/raw.py"},
    )


def build_suites(ingest: dict[str, Any] | None = None) -> dict[str, ExpectationSuite]:
    """Every raw-zone suite keyed by entity (``reconciliation`` last). With an ingest result,
    each table's suite expects that file's ``loaded`` rows."""
    files = (ingest or {}).get("files") or {}
    reference = (ingest or {}).get("reference_date")
    suites = {}
    for entity in ENTITIES:
        entry = files.get(entity)
        rows = required = source_files = None
        if isinstance(entry, dict):  # raw_rows: what the table holds (a delta table keeps earlier deliveries)
            rows = _count(entry.get("raw_rows", entry.get("loaded")))
            required = entry.get("required") if isinstance(entry.get("required"), list) else None
            lineage = entry.get("lineage_files")
            source_files = lineage if isinstance(lineage, list) else None
        suites[entity] = build_suite(
            entity, rows, reference if isinstance(reference, str) else None, required, source_files
        )
    suites[RECONCILIATION] = build_suite(RECONCILIATION)
    return suites

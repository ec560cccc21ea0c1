"""Expectation suite for the published DP marts (zone 5), defined in code.

Loaded by file path (:func:`crmshield.validate.load_expectations_module`), like
``expectations/privacy.py``. Great Expectations is imported inside the builder only.

The publisher (:func:`crmshield.publish.publish_marts`) validates the analyst file it has just
written, *before* it replaces the published one, so a critical failure leaves the previous
marts in place. The batch is one row per mart (:data:`COLUMNS`), built from the file itself
(``_dp_catalog`` and its own column list) and from the privacy-budget ledger; it holds DP
parameters and column counts only, never a mart value.

Suite ``published__marts``:

* ``critical``: exactly the declared marts; every mart has epsilon > 0, 0 <= delta < 1, a
  mechanism, clamping bounds (``{}`` when nothing is summed) and a privacy unit in
  ``_dp_catalog``; every measure has its ``_ci_low`` and ``_ci_high`` columns; no column
  beyond the grouping keys, the measures and their intervals; the population budget is not
  exhausted after this publication.
* ``warning``: a mart with no rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.expectations.expectation import Expectation

CRITICAL = "critical"
WARNING = "warning"

SUITE_NAME = "published__marts"

#: The batch: one row per published mart.
COLUMNS = (
    "mart",
    "epsilon",
    "delta",
    "mechanism",
    "bounds",
    "privacy_unit",
    "row_count",
    "measures_without_ci",
    "unexpected_columns",
    "budget_remaining_epsilon",
)


def _meta(severity: str, check: str) -> dict[str, Any]:
    return {"severity": severity, "check": check}


def build_expectations(declared_marts: list[str]) -> list[Expectation]:
    """The expectations of ``published__marts``, critical ones first."""
    import great_expectations.expectations as gxe
    from great_expectations.expectations.metadata_types import FailureSeverity

    crit, warn = FailureSeverity(CRITICAL), FailureSeverity(WARNING)
    out: list[Expectation] = [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=list(COLUMNS), exact_match=True, severity=crit, meta=_meta(CRITICAL, "column_set")
        ),
        gxe.ExpectColumnDistinctValuesToEqualSet(
            column="mart", value_set=sorted(declared_marts), severity=crit, meta=_meta(CRITICAL, "declared_marts")
        ),
    ]
    for column in ("epsilon", "delta", "mechanism", "bounds", "privacy_unit"):
        out.append(
            gxe.ExpectColumnValuesToNotBeNull(
                column=column, severity=crit, meta=_meta(CRITICAL, f"catalog_has_{column}")
            )
        )
    out += [
        gxe.ExpectColumnValuesToBeBetween(
            column="epsilon", min_value=0, strict_min=True, severity=crit, meta=_meta(CRITICAL, "epsilon_positive")
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="delta",
            min_value=0,
            max_value=1,
            strict_max=True,
            severity=crit,
            meta=_meta(CRITICAL, "delta_in_range"),
        ),
        gxe.ExpectColumnValueLengthsToBeBetween(
            column="privacy_unit", min_value=1, severity=crit, meta=_meta(CRITICAL, "privacy_unit_named")
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="measures_without_ci",
            min_value=0,
            max_value=0,
            severity=crit,
            meta=_meta(CRITICAL, "every_measure_has_ci"),
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="unexpected_columns",
            min_value=0,
            max_value=0,
            severity=crit,
            meta=_meta(CRITICAL, "no_unexpected_columns"),
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="budget_remaining_epsilon",
            min_value=0,
            severity=crit,
            meta=_meta(CRITICAL, "budget_not_exhausted"),
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="row_count", min_value=1, severity=warn, meta=_meta(WARNING, "mart_not_empty")
        ),
    ]
    return out


def build_suite(declared_marts: list[str]) -> ExpectationSuite:
    """A fresh (unsaved) ``ExpectationSuite`` for the analyst file about to be published."""
    import great_expectations as gx

    return gx.ExpectationSuite(
        name=SUITE_NAME,
        expectations=build_expectations(declared_marts),
        meta={"zone": "published", "defined_in": "expectations/published.py"},
    )

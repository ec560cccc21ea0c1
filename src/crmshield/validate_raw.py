"""The ``validate_raw`` stage: Great Expectations guards the landing -> raw hand-over.

Runs right after ingest. Reads ``raw/<entity>.parquet`` with Spark and validates it with the
suites ``raw__<entity>`` from ``expectations/raw.py`` (the contract with the CRM export), and
the ingest's per-file accounting with ``raw__reconciliation``, all through ONE ``Checkpoint``
(``raw_zone``) in the same file-backed GX context and Data Docs site as the privacy zone
(:mod:`crmshield.validate`, whose helpers this module reuses).

The raw zone holds PII, so no row value may leave this stage: the Checkpoint runs with
:data:`crmshield.validate.RESULT_FORMAT` (``SUMMARY``, ``partial_unexpected_count=0``,
``exclude_unexpected_values``; Spark fetches no sample), the stored results are checked with
:func:`crmshield.validate._assert_no_values_kept`, and ANSI mode is off for the length of the run
(a failed cast is NULL instead of an error that quotes the value). Failures are described by
suite, expectation type, check, column and counts; what this module adds to a failure's
``detail`` is a Spark type name (``observed_type``), row counts (``observed_rows``,
``expected_rows``) or the column names of a column-pair check, never a value. Exception
messages, logs and Data Docs carry no row value.

The reconciliation facts (:func:`reconciliation_facts` in ``expectations/raw.py``: entity names
and counts, no value) are a small pandas DataFrame. A GX Checkpoint hands the same batch
parameters to every validation definition, and the Spark file assets reject a ``dataframe``
parameter, so the frame is written as a CSV under the GX context
(``uncommitted/raw_zone_facts/<run_id>.csv``, through :mod:`crmshield.csvout`) and read by a
pandas filesystem datasource: one Checkpoint, one run, one Data Docs update.

Great Expectations and Spark are imported inside functions only (Airflow DAG files import this
package).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import TYPE_CHECKING, Any

from crmshield.config import ENTITIES, Settings
from crmshield.validate import (
    FailedExpectation,
    SuiteResult,
    ValidationSummary,
    _get_context,
    _local_spark,
    _quietly,
    _summarize_suite,
    add_checkpoint,
    load_expectations_module,
    summarize_checkpoint,
)

if TYPE_CHECKING:
    from pathlib import Path
    from types import ModuleType

    from great_expectations.data_context import FileDataContext
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "raw_zone"
#: Spark filesystem datasource over ``settings.raw`` (distinct from the privacy zone's).
DATASOURCE_NAME = "raw_zone"
#: pandas filesystem datasource over the reconciliation facts.
FACTS_DATASOURCE_NAME = "raw_zone_reconciliation"
BATCH_DEFINITION_NAME = "raw_file"
FACTS_BATCH_DEFINITION_NAME = "ingest_facts"
RECONCILIATION = "reconciliation"
#: Where the facts CSV of each run goes, under the GX context.
FACTS_DIR = ("uncommitted", "raw_zone_facts")

#: Failures whose GX ``observed_value`` is a Spark type name (safe to report).
_TYPE_CHECKS = frozenset({"expect_column_values_to_be_of_type", "expect_column_values_to_be_in_type_list"})
_TYPE_NAME = re.compile(r"^[A-Za-z]{1,40}Type$")


def _vd_name(entity: str) -> str:
    return f"{CHECKPOINT_NAME}__{entity}"


def facts_path(settings: Settings, run_id: str) -> Path:
    """The reconciliation facts CSV of ``run_id`` (counts only)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", run_id) or "run"
    return settings.gx_context.joinpath(*FACTS_DIR, f"{safe}.csv")


def _exact_path(name: str) -> str:
    """A batch-definition path GX matches as a regex: this one file name and nothing else."""
    return "^" + re.escape(name)


def _register(context: FileDataContext, settings: Settings, suites: dict[str, Any], facts_file: Path) -> Any:
    """(Re)create datasources, assets, suites, validation definitions and the ``raw_zone``
    checkpoint; delete-then-add, so every run starts from the code's definitions."""
    import great_expectations as gx

    _quietly(context.checkpoints.delete, CHECKPOINT_NAME)
    for entity in suites:
        _quietly(context.validation_definitions.delete, _vd_name(entity))
    _quietly(context.data_sources.delete, DATASOURCE_NAME)
    _quietly(context.data_sources.delete, FACTS_DATASOURCE_NAME)

    raw_source = context.data_sources.add_spark_filesystem(name=DATASOURCE_NAME, base_directory=settings.raw)
    facts_source = context.data_sources.add_pandas_filesystem(
        name=FACTS_DATASOURCE_NAME, base_directory=facts_file.parent
    )
    validation_definitions = []
    for entity, suite in suites.items():
        if entity == RECONCILIATION:
            asset = facts_source.add_csv_asset(name=RECONCILIATION)
            batch_definition = asset.add_batch_definition_path(
                FACTS_BATCH_DEFINITION_NAME, path=_exact_path(facts_file.name)
            )
        else:
            asset = raw_source.add_parquet_asset(name=entity)
            batch_definition = asset.add_batch_definition_path(
                BATCH_DEFINITION_NAME, path=_exact_path(f"{entity}.parquet")
            )
        saved_suite = context.suites.add_or_update(suite)
        validation_definitions.append(
            context.validation_definitions.add(
                gx.ValidationDefinition(name=_vd_name(entity), data=batch_definition, suite=saved_suite)
            )
        )
    return add_checkpoint(context, CHECKPOINT_NAME, validation_definitions)


def _safe_detail(failure: FailedExpectation, evr: Any) -> dict[str, Any] | None:
    """What GX's summary leaves out, when it is no row value: the observed Spark type of a type
    check, the observed and expected rows of the row-count check, the column names of a pair."""
    body = evr.result or {}
    kwargs = (evr.expectation_config.kwargs if evr.expectation_config is not None else None) or {}
    observed = body.get("observed_value")
    if failure.expectation_type in _TYPE_CHECKS and isinstance(observed, str) and _TYPE_NAME.match(observed):
        return {"observed_type": observed}
    if failure.expectation_type == "expect_table_row_count_to_equal":
        expected = kwargs.get("value")
        if isinstance(observed, int) and isinstance(expected, int):
            return {"observed_rows": observed, "expected_rows": expected}
    if "column_A" in kwargs and "column_B" in kwargs:
        return {"column_A": kwargs["column_A"], "column_B": kwargs["column_B"]}
    return None


def _summarize(result: Any, entity: str, page: str | None) -> SuiteResult:
    """:func:`crmshield.validate._summarize_suite`, plus :func:`_safe_detail` for each failure."""
    summary = _summarize_suite(result, entity, page)
    failed = [evr for evr in result.results if not evr.success]
    if len(failed) != len(summary.failures):  # pragma: no cover - same iteration as _summarize_suite
        return summary
    failures = []
    for failure, evr in zip(summary.failures, failed, strict=True):
        detail = _safe_detail(failure, evr)
        if detail:
            failure = dataclasses.replace(failure, detail={**(failure.detail or {}), **detail})
        failures.append(failure)
    return dataclasses.replace(summary, failures=tuple(failures))


def _write_facts(module: ModuleType, ingest: dict[str, Any], path: Path) -> None:
    """Write the facts CSV through :mod:`crmshield.csvout` (atomic; any text cell neutralized
    against formula injection, counts written as bare numbers), like every CSV the project
    writes: the counts read back by GX's ``read_csv`` are exactly those written, and an entity
    name can never become a live formula if someone opens the file in a spreadsheet."""
    from crmshield.csvout import write_frame

    path.parent.mkdir(parents=True, exist_ok=True)
    write_frame(path, module.reconciliation_facts(ingest))


def validate_raw_zone(
    settings: Settings, run_id: str, ingest: dict[str, Any], spark: SparkSession | None = None
) -> ValidationSummary:
    """Validate ``settings.raw`` against the ``raw__*`` suites and ``ingest`` (the dict
    :func:`crmshield.pipeline.stage_ingest` returns) against ``raw__reconciliation``; build
    Data Docs.

    Returns the summary (``checkpoint_name="raw_zone"``; suites ``raw__contacts``,
    ``raw__companies``, ``raw__deals``, ``raw__tickets``, ``raw__reconciliation`` in that order)
    when no critical expectation fails; warnings are logged and kept in the summary. Raises
    :class:`crmshield.validate.ValidationFailed` (zone "the raw zone"), after Data Docs are built,
    on a critical failure; ``FileNotFoundError`` when a raw table is missing altogether.
    """
    from great_expectations.core.run_identifier import RunIdentifier

    missing = [e for e in ENTITIES if not (settings.raw / f"{e}.parquet").is_file()]
    if missing:
        raise FileNotFoundError(f"raw zone incomplete under {settings.raw}: missing {', '.join(missing)}")

    module = load_expectations_module(settings, "raw")
    suites = module.build_suites(ingest)
    facts_file = facts_path(settings, run_id)

    session, own_session = (spark, False) if spark is not None else _local_spark()
    previous_ansi = session.conf.get("spark.sql.ansi.enabled")
    session.conf.set("spark.sql.ansi.enabled", "false")
    try:
        context = _get_context(settings)
        _write_facts(module, ingest, facts_file)
        checkpoint = _register(context, settings, suites, facts_file)
        log.info("validate_raw: running checkpoint %s for run %s", CHECKPOINT_NAME, run_id)
        checkpoint_result = checkpoint.run(run_id=RunIdentifier(run_name=run_id))
    finally:
        session.conf.set("spark.sql.ansi.enabled", previous_ansi or "true")
        if own_session:
            session.stop()

    order = [*ENTITIES, RECONCILIATION]
    by_suite = {module.suite_name(entity): entity for entity in order}
    return summarize_checkpoint(
        settings,
        run_id,
        checkpoint_result,
        checkpoint_name=CHECKPOINT_NAME,
        zone="the raw zone",
        stage="validate_raw",
        order=order,
        entity_of=lambda name: by_suite.get(name, name),
        summarize=_summarize,
    )

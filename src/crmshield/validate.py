"""The ``validate`` stage: Great Expectations guards the privacy zone's hand-over.

Reads ``privacy/<entity>/*.parquet`` with Spark, runs one ``ValidationDefinition`` per entity
(suites ``privacy__<entity>`` from ``expectations/privacy.py``) through ONE ``Checkpoint``
(``privacy_zone``) in a file-backed GX context under ``settings.gx_context``, and builds Data
Docs into ``settings.data_docs``.

No row value leaves this stage. The Checkpoint's ``result_format`` (:data:`RESULT_FORMAT`) is
``SUMMARY`` with ``partial_unexpected_count=0`` and ``exclude_unexpected_values=True``: stored
validation results and Data Docs carry counts and percentages only, never an unexpected value,
an unexpected row or an index query; Spark is asked for a sample of zero rows, so no value even
reaches the driver. Defensively, ANSI mode is switched off for the length of the run (and
restored): a cast error raised by Spark quotes the offending value, and GX would store that
message in ``exception_info``. With ANSI off a failed cast is NULL and nothing is quoted.

Table-level checks (checksum-aware card/IBAN/IP scans of the free text, dates, k-anonymity,
excluded subjects) are ``UnexpectedRowsExpectation`` queries that select a constant; their stored
result is the number of rows found (``observed_value``), reported as the unexpected count, and
their ``meta["column"]`` names the column. Before the checkpoint runs, the Spark temp view
``crmshield_excluded_subjects(pk, reason)`` is registered from the privacy job's restricted
exclusions list (contacts without analytics consent) and the pseudonyms recorded with the
erasure suppression entries; it is dropped after the run, and only counts are logged.

Great Expectations and Spark are imported inside functions only: Airflow DAG files import this
package, and nothing heavy may run at import time.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from crmshield.config import ENTITIES, Settings

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations.checkpoint.checkpoint import CheckpointResult
    from great_expectations.data_context import FileDataContext
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "privacy_zone"
DATASOURCE_NAME = "privacy_zone"
BATCH_DEFINITION_NAME = "whole_directory"
DATA_DOCS_SITE = "crmshield_data_docs"
CRITICAL = "critical"
WARNING = "warning"
#: GX type name of ``UnexpectedRowsExpectation`` (its ``observed_value`` is the count of rows found).
UNEXPECTED_ROWS_TYPE = "unexpected_rows_expectation"
#: Where the privacy job writes the pseudonyms of contacts without analytics consent (restricted).
EXCLUSIONS_DIR = "exclusions"

#: What GX may keep of a result: counts and percentages only. ``exclude_unexpected_values``
#: drops ``partial_unexpected_list``/``partial_unexpected_counts``; ``partial_unexpected_count=0``
#: makes Spark fetch no sample at all; no unexpected rows, no index query (it would embed the
#: filter, and with ID columns the offending rows' keys).
RESULT_FORMAT: dict[str, Any] = {
    "result_format": "SUMMARY",
    "partial_unexpected_count": 0,
    "exclude_unexpected_values": True,
    "include_unexpected_rows": False,
    "return_unexpected_index_query": False,
}

#: Result keys that may legitimately appear in a stored result under :data:`RESULT_FORMAT`.
#: ``observed_value`` is a column list, a type name or a row count for the expectations we use
#: (for ``UnexpectedRowsExpectation``: the number of rows its query found, never a row).
_SAFE_RESULT_KEYS = frozenset(
    {
        "element_count",
        "unexpected_count",
        "unexpected_percent",
        "unexpected_percent_total",
        "unexpected_percent_nonmissing",
        "missing_count",
        "missing_percent",
        "observed_value",
        "details",
    }
)


# --------------------------------------------------------------------------- summary types


@dataclass(frozen=True)
class FailedExpectation:
    """One failed expectation, described without any row value."""

    expectation_type: str
    column: str | None
    severity: str
    check: str | None = None
    unexpected_count: int | None = None
    element_count: int | None = None
    raised_exception: bool = False
    #: Extra counts-only detail (e.g. the unexpected/missing column *names* of a column-set check).
    detail: dict[str, Any] | None = None

    def describe(self, suite: str) -> str:
        where = f"{self.expectation_type}({self.column})" if self.column else self.expectation_type
        parts = [f"{suite}: {where}"]
        if self.check:
            parts.append(f"[{self.check}]")
        if self.raised_exception:
            parts.append("raised an exception")
        elif self.unexpected_count is not None:
            parts.append(f"unexpected_count={self.unexpected_count}")
        if self.detail:
            parts.append(", ".join(f"{k}={v}" for k, v in sorted(self.detail.items())))
        return " ".join(parts)


@dataclass(frozen=True)
class SuiteResult:
    suite_name: str
    entity: str
    success: bool
    evaluated_expectations: int
    successful_expectations: int
    failed_expectations: int
    failures: tuple[FailedExpectation, ...] = ()
    #: This suite's validation result page, relative to the Data Docs site root (None if not built).
    data_docs_page: str | None = None

    @property
    def critical_failures(self) -> tuple[FailedExpectation, ...]:
        return tuple(f for f in self.failures if f.severity == CRITICAL)

    @property
    def warnings(self) -> tuple[FailedExpectation, ...]:
        return tuple(f for f in self.failures if f.severity != CRITICAL)


@dataclass(frozen=True)
class ValidationSummary:
    """What the validate stage reports to the run manifest (counts only)."""

    run_id: str
    success: bool
    suites: tuple[SuiteResult, ...]
    data_docs_index: Path | None
    checkpoint_name: str = CHECKPOINT_NAME
    result_format: dict[str, Any] = field(default_factory=lambda: dict(RESULT_FORMAT))

    @property
    def critical_failures(self) -> list[tuple[str, FailedExpectation]]:
        return [(s.suite_name, f) for s in self.suites for f in s.critical_failures]

    @property
    def warnings(self) -> list[tuple[str, FailedExpectation]]:
        return [(s.suite_name, f) for s in self.suites for f in s.warnings]

    @property
    def passed(self) -> bool:
        """No critical failure (warnings allowed): the hand-over may proceed."""
        return not self.critical_failures

    def suite(self, name: str) -> SuiteResult:
        for s in self.suites:
            if s.suite_name == name:
                return s
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "success": self.success,
            "passed": self.passed,
            "checkpoint": self.checkpoint_name,
            "result_format": dict(self.result_format),
            "data_docs_index": str(self.data_docs_index) if self.data_docs_index else None,
            "critical_failures": len(self.critical_failures),
            "warnings": len(self.warnings),
            "suites": [
                {
                    "suite_name": s.suite_name,
                    "entity": s.entity,
                    "success": s.success,
                    "evaluated_expectations": s.evaluated_expectations,
                    "successful_expectations": s.successful_expectations,
                    "failed_expectations": s.failed_expectations,
                    "failures": [asdict(f) for f in s.failures],
                    "data_docs_page": s.data_docs_page,
                }
                for s in self.suites
            ],
        }


class ValidationFailed(RuntimeError):
    """At least one critical expectation failed; Data Docs have been built already."""

    def __init__(self, summary: ValidationSummary, zone: str = "the privacy zone") -> None:
        self.summary = summary
        self.zone = zone
        failures = summary.critical_failures
        lines = [f"{len(failures)} critical expectation(s) failed in {zone}:"]
        lines += [f"  - {f.describe(suite)}" for suite, f in failures]
        if summary.data_docs_index:
            lines.append(f"Data Docs: {summary.data_docs_index}")
        super().__init__("\n".join(lines))


# --------------------------------------------------------------------------- helpers


def load_expectations_module(settings: Settings, name: str = "privacy") -> ModuleType:
    """Load ``<root>/expectations/<name>.py`` by file path (``expectations/`` is no package)."""
    path = settings.root / "expectations" / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"expectation suites not found: {path}")
    spec = importlib.util.spec_from_file_location(f"crmshield_expectations_{name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load expectation suites from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _local_spark() -> tuple[SparkSession, bool]:
    """The active session if there is one, else a new local one (``True``: ours to stop)."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active, False
    session = (
        SparkSession.builder.master("local[*]")
        .appName("crmshield-validate")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        # GX runs many small aggregations; size them like the privacy job
        .config("spark.sql.shuffle.partitions", os.environ.get("CRMSHIELD_SPARK_SHUFFLE_PARTITIONS", "8"))
        .config("spark.driver.memory", os.environ.get("CRMSHIELD_SPARK_DRIVER_MEMORY", "2g"))
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("WARN")
    return session, True


def _data_docs_site_config(settings: Settings) -> dict[str, Any]:
    return {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(settings.data_docs),
        },
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }


def _get_context(settings: Settings) -> FileDataContext:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    settings.gx_context.mkdir(parents=True, exist_ok=True)
    settings.data_docs.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", context_root_dir=settings.gx_context)
    if context.config.analytics_enabled is not False:
        context.enable_analytics(False)
    # Task logs, not a terminal: no "Calculating Metrics" progress bars.
    bars = context.variables.progress_bars  # an object when set, a dict when loaded from YAML
    bars = bars if isinstance(bars, dict) or bars is None else vars(bars)
    if not bars or bars.get("globally") is not False or bars.get("metric_calculations") is not False:
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        context.variables.save()

    # Exactly one Data Docs site, in the reports zone; drop the scaffolded
    # ``uncommitted/data_docs/local_site`` so nothing renders inside the context folder.
    sites = context.list_data_docs_sites()
    for site_name in list(sites):
        if site_name != DATA_DOCS_SITE:
            context.delete_data_docs_site(site_name)
    site_config = _data_docs_site_config(settings)
    if DATA_DOCS_SITE in context.list_data_docs_sites():
        context.update_data_docs_site(DATA_DOCS_SITE, site_config)  # type: ignore[arg-type]
    else:
        context.add_data_docs_site(DATA_DOCS_SITE, site_config)  # type: ignore[arg-type]
    return context


def _quietly(action: Any, *args: Any, **kwargs: Any) -> None:
    """Run a delete that may find nothing to delete."""
    try:
        action(*args, **kwargs)
    except Exception as exc:  # GX raises several types for "not found"
        log.debug("nothing to delete (%s)", type(exc).__name__)


def add_checkpoint(context: FileDataContext, name: str, validation_definitions: list[Any]) -> Any:
    """(Re)create a gate's Checkpoint: always counts-only (:data:`RESULT_FORMAT`) and always
    updating the one Data Docs site. Every gate goes through here, so none can forget either."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    return context.checkpoints.add(
        gx.Checkpoint(
            name=name,
            validation_definitions=validation_definitions,
            actions=[UpdateDataDocsAction(name="update_data_docs", site_names=[DATA_DOCS_SITE])],
            result_format=RESULT_FORMAT,
        )
    )


def _register(context: FileDataContext, settings: Settings, suites: dict[str, Any]) -> Any:
    """(Re)create datasource, assets, suites, validation definitions and the checkpoint.

    Delete-then-add in dependency order, so a second run in the same context starts from the
    code's definitions and never trips over names left by the previous one.
    """
    import great_expectations as gx

    vd_names = {entity: f"{CHECKPOINT_NAME}__{entity}" for entity in suites}
    _quietly(context.checkpoints.delete, CHECKPOINT_NAME)
    for name in vd_names.values():
        _quietly(context.validation_definitions.delete, name)
    _quietly(context.data_sources.delete, DATASOURCE_NAME)

    datasource = context.data_sources.add_spark_filesystem(name=DATASOURCE_NAME, base_directory=settings.privacy)
    validation_definitions = []
    for entity, suite in suites.items():
        asset = datasource.add_directory_parquet_asset(name=entity, data_directory=entity)
        batch_definition = asset.add_batch_definition_whole_directory(BATCH_DEFINITION_NAME)
        saved_suite = context.suites.add_or_update(suite)
        validation_definitions.append(
            context.validation_definitions.add(
                gx.ValidationDefinition(name=vd_names[entity], data=batch_definition, suite=saved_suite)
            )
        )
    return add_checkpoint(context, CHECKPOINT_NAME, validation_definitions)


def _severity(config: Any) -> str:
    meta = getattr(config, "meta", None) or {}
    severity = meta.get("severity") or getattr(config, "severity", None) or CRITICAL
    severity = getattr(severity, "value", severity)
    return str(severity)


def _raised_exception(info: Any) -> bool:
    """GX reports exceptions either flat or keyed by metric configuration; accept both."""
    if not isinstance(info, dict) or not info:
        return False
    if "raised_exception" in info:
        return bool(info["raised_exception"])
    return any(
        isinstance(v, dict) and bool(v.get("raised_exception") or v.get("exception_message")) for v in info.values()
    )


def _data_docs_page(settings: Settings, key: Any) -> str | None:
    """The Data Docs page of one validation result (``validations/<suite>/<run>/<time>/<batch>.html``)."""
    try:
        parts = [str(p) for p in key.to_tuple()]
    except AttributeError:
        return None
    page = "/".join(["validations", *parts]) + ".html"
    return page if (settings.data_docs / page).is_file() else None


def _summarize_suite(result: Any, entity: str, page: str | None = None) -> SuiteResult:
    failures: list[FailedExpectation] = []
    for evr in result.results:
        if evr.success:
            continue
        config = evr.expectation_config
        kwargs = config.kwargs if config is not None else {}
        meta = (config.meta if config is not None else None) or {}
        body = evr.result or {}
        raised = _raised_exception(evr.exception_info)
        detail = None
        details = body.get("details")
        if isinstance(details, dict) and isinstance(details.get("mismatched"), dict):
            # column-set check: column *names*, never values
            detail = {k: sorted(v) for k, v in details["mismatched"].items()}
        expectation_type = config.type if config is not None else "unknown"
        unexpected = body.get("unexpected_count")
        if unexpected is None and expectation_type == UNEXPECTED_ROWS_TYPE:
            # a SQL check's observed value is the number of rows its query found (never a row)
            observed = body.get("observed_value")
            unexpected = observed if isinstance(observed, int) and not isinstance(observed, bool) else None
        failures.append(
            FailedExpectation(
                expectation_type=expectation_type,
                # a table-level (SQL) check names the column it is about in its meta
                column=kwargs.get("column") or meta.get("column"),
                severity=_severity(config),
                check=meta.get("check"),
                unexpected_count=unexpected,
                element_count=body.get("element_count"),
                raised_exception=raised,
                detail=detail,
            )
        )
    stats = result.statistics or {}
    return SuiteResult(
        suite_name=result.suite_name,
        entity=entity,
        success=bool(result.success),
        evaluated_expectations=int(stats.get("evaluated_expectations", 0)),
        successful_expectations=int(stats.get("successful_expectations", 0)),
        failed_expectations=int(stats.get("unsuccessful_expectations", 0)),
        failures=tuple(failures),
        data_docs_page=page,
    )


def _assert_no_values_kept(checkpoint_result: CheckpointResult) -> None:
    """Defence in depth: refuse to go on if GX kept anything but counts for any expectation."""
    for result in checkpoint_result.run_results.values():
        for evr in result.results:
            unsafe = set((evr.result or {}).keys()) - _SAFE_RESULT_KEYS
            if unsafe:
                raise RuntimeError(
                    f"GX result for {result.suite_name} kept unexpected keys {sorted(unsafe)}; "
                    "result_format no longer hides row values"
                )


def exclusions_path(settings: Settings) -> Path:
    """The privacy job's list of excluded subjects (``contact_pk`` of contacts without analytics
    consent; Parquet, restricted: directories 0700, files 0600)."""
    return settings.restricted / EXCLUSIONS_DIR


def _erased_pseudonyms(settings: Settings) -> tuple[set[str], int]:
    """Privacy-zone pseudonyms recorded with the erasure suppression entries, and how many
    entries carry none (written before pseudonyms were recorded: ingest still drops those
    subjects by their tokens, but validation cannot look for them)."""
    from crmshield.erasure import load_suppression

    found: set[str] = set()
    legacy = 0
    for entry in load_suppression(settings):
        recorded = entry.get("pseudonyms")
        if not isinstance(recorded, dict):
            legacy += 1
            continue
        for values in recorded.values():
            found.update(v for v in values or () if isinstance(v, str) and v)
    return found, legacy


def _register_excluded_subjects(session: SparkSession, settings: Settings, module: ModuleType) -> dict[str, int]:
    """Register the Spark temp view ``module.EXCLUDED_SUBJECTS_VIEW`` (``pk, reason``): the job's
    consent exclusions unioned with the erased subjects' pseudonyms; empty when there are none.
    Returns counts per reason (the pseudonyms themselves are never logged)."""
    from pyspark.sql import functions as F

    frames = []
    counts: dict[str, int] = {}
    path = exclusions_path(settings)
    if path.is_dir():
        consent = session.read.parquet(str(path)).select(
            F.col("contact_pk").cast("string").alias("pk"), F.lit(module.REASON_NO_CONSENT).alias("reason")
        )
        counts[module.REASON_NO_CONSENT] = consent.count()
        frames.append(consent)
    else:
        log.warning("validate: no exclusions list at %s (run the privacy job): consent not checked", path)
    erased, legacy = _erased_pseudonyms(settings)
    if legacy:
        log.warning(
            "validate: %d erasure suppression entries carry no pseudonyms (recorded before they were kept); "
            "ingest drops those subjects, validation cannot look for them",
            legacy,
        )
    counts[module.REASON_ERASED] = len(erased)
    frames.append(
        session.createDataFrame([(pk, module.REASON_ERASED) for pk in sorted(erased)], module.EXCLUDED_SUBJECTS_SCHEMA)
    )
    view = frames[0]
    for frame in frames[1:]:
        view = view.unionByName(frame)
    view.createOrReplaceTempView(module.EXCLUDED_SUBJECTS_VIEW)
    return counts


def summarize_checkpoint(
    settings: Settings,
    run_id: str,
    checkpoint_result: CheckpointResult,
    *,
    checkpoint_name: str,
    zone: str,
    stage: str,
    order: Sequence[str] = (),
    entity_of: Callable[[str], str] = lambda suite_name: suite_name,
    summarize: Callable[[Any, str, str | None], SuiteResult] | None = None,
) -> ValidationSummary:
    """The end of every gate: check that GX kept no value, summarize each suite (in ``order`` of
    entity, with its Data Docs page), log warnings, and raise :class:`ValidationFailed` naming
    ``zone`` on a critical failure. Returns the summary when the hand-over may proceed."""
    _assert_no_values_kept(checkpoint_result)
    summarize = summarize or _summarize_suite
    suite_results = tuple(
        sorted(
            (
                summarize(r, entity_of(r.suite_name), _data_docs_page(settings, key))
                for key, r in checkpoint_result.run_results.items()
            ),
            key=lambda s: order.index(s.entity) if s.entity in order else len(order),
        )
    )
    index = settings.data_docs / "index.html"
    summary = ValidationSummary(
        run_id=run_id,
        success=bool(checkpoint_result.success),
        suites=suite_results,
        data_docs_index=index if index.is_file() else None,
        checkpoint_name=checkpoint_name,
    )
    for suite_name, failure in summary.warnings:
        log.warning("%s: warning %s", stage, failure.describe(suite_name))
    if not summary.passed:
        raise ValidationFailed(summary, zone=zone)
    log.info(
        "%s: %d suites passed (%d warnings); Data Docs at %s",
        stage,
        len(suite_results),
        len(summary.warnings),
        summary.data_docs_index,
    )
    return summary


# --------------------------------------------------------------------------- the stage


def validate_privacy_zone(settings: Settings, run_id: str, spark: SparkSession | None = None) -> ValidationSummary:
    """Validate ``settings.privacy`` with the ``privacy__*`` suites; build Data Docs.

    Returns the summary when no critical expectation fails (warnings are reported in the
    summary only). Raises :class:`ValidationFailed` (after Data Docs are built) otherwise.
    """
    from great_expectations.core.run_identifier import RunIdentifier

    missing = [e for e in ENTITIES if not (settings.privacy / e).is_dir()]
    if missing:
        raise FileNotFoundError(f"privacy zone incomplete under {settings.privacy}: missing {', '.join(missing)}")

    module = load_expectations_module(settings, "privacy")
    policy = module.default_policy()
    suites = {entity: module.build_suite(entity, policy) for entity in ENTITIES}

    session, own_session = (spark, False) if spark is not None else _local_spark()
    previous_ansi = session.conf.get("spark.sql.ansi.enabled")
    session.conf.set("spark.sql.ansi.enabled", "false")
    try:
        excluded = _register_excluded_subjects(session, settings, module)
        log.info(
            "validate: checking the privacy zone against %d excluded pseudonyms (%s)",
            sum(excluded.values()),
            ", ".join(f"{reason}: {n}" for reason, n in sorted(excluded.items())) or "none",
        )
        context = _get_context(settings)
        checkpoint = _register(context, settings, suites)
        log.info("validate: running checkpoint %s for run %s", CHECKPOINT_NAME, run_id)
        checkpoint_result = checkpoint.run(run_id=RunIdentifier(run_name=run_id))
    finally:
        session.catalog.dropTempView(module.EXCLUDED_SUBJECTS_VIEW)
        session.conf.set("spark.sql.ansi.enabled", previous_ansi or "true")
        if own_session:
            session.stop()

    by_suite = {module.suite_name(entity): entity for entity in ENTITIES}
    return summarize_checkpoint(
        settings,
        run_id,
        checkpoint_result,
        checkpoint_name=CHECKPOINT_NAME,
        zone="the privacy zone",
        stage="validate",
        order=ENTITIES,
        entity_of=lambda name: by_suite.get(name, name),
    )


# --------------------------------------------------------------------------- published marts

PUBLISHED_CHECKPOINT = "published_marts"
PUBLISHED_DATASOURCE = "published_marts"


def validate_published(
    settings: Settings, run_id: str, facts: pd.DataFrame, declared_marts: list[str]
) -> ValidationSummary:
    """Validate the analyst file about to be published with ``published__marts``.

    ``facts`` is one row per mart (``expectations/published.py``: DP parameters, column
    counts, budget left; no mart value). Runs through its own Checkpoint with Data Docs.
    Raises :class:`ValidationFailed` on a critical failure, so the caller can keep the
    previously published marts.
    """
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    module = load_expectations_module(settings, "published")
    suite = module.build_suite(declared_marts)
    context = _get_context(settings)
    vd_name = f"{PUBLISHED_CHECKPOINT}__marts"
    _quietly(context.checkpoints.delete, PUBLISHED_CHECKPOINT)
    _quietly(context.validation_definitions.delete, vd_name)
    _quietly(context.data_sources.delete, PUBLISHED_DATASOURCE)
    asset = context.data_sources.add_pandas(name=PUBLISHED_DATASOURCE).add_dataframe_asset(name="marts")
    batch_definition = asset.add_batch_definition_whole_dataframe("whole_dataframe")
    saved_suite = context.suites.add_or_update(suite)
    vd = context.validation_definitions.add(
        gx.ValidationDefinition(name=vd_name, data=batch_definition, suite=saved_suite)
    )
    checkpoint = add_checkpoint(context, PUBLISHED_CHECKPOINT, [vd])
    log.info("publish: running checkpoint %s for run %s", PUBLISHED_CHECKPOINT, run_id)
    result = checkpoint.run(batch_parameters={"dataframe": facts}, run_id=RunIdentifier(run_name=run_id))
    return summarize_checkpoint(
        settings,
        run_id,
        result,
        checkpoint_name=PUBLISHED_CHECKPOINT,
        zone="the marts about to be published",
        stage="publish",
        entity_of=lambda _name: "published",
    )

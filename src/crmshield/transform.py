"""Build the warehouse with dbt on DuckDB (privacy zone -> zone 4).

:func:`run_dbt` runs the project in ``dbt_project/`` in-process through
``dbt.cli.main.dbtRunner``. It points dbt at this run's zones with two
environment variables, both absolute paths:

* ``CRMSHIELD_PRIVACY_DIR``: the privacy zone, the only input dbt reads;
* ``CRMSHIELD_WAREHOUSE_PATH``: the DuckDB file dbt writes
  (``<data_dir>/warehouse/warehouse.duckdb``).

dbt's artifacts go to ``<data_dir>/warehouse/dbt_target`` and its log file to
``<data_dir>/warehouse/dbt_logs``, never into the source tree. After dbt
finishes, ``run_results.json`` is summarised into a :class:`TransformResult`;
any node that errors or fails (models, data tests, unit tests) raises
:class:`TransformError` naming each failing node and its message.

dbt and DuckDB are imported only when a build runs, so importing this module
(for example from an Airflow DAG file) stays cheap.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from crmshield.config import ENTITIES, Settings

__all__ = [
    "MARTS",
    "MARTS_SCHEMA",
    "NodeResult",
    "TransformError",
    "TransformResult",
    "run_dbt",
]

logger = logging.getLogger(__name__)

#: Schema that holds the contract-enforced marts the publish step reads.
MARTS_SCHEMA = "marts"
#: Mart tables whose row counts every result reports.
MARTS: tuple[str, ...] = ("customers", "deal_pipeline", "tickets")

#: Commands that execute SQL against the privacy zone.
_EXECUTING_COMMANDS = frozenset({"build", "run", "test", "seed", "snapshot", "show"})
#: run_results statuses that make a run fail.
_FAILED_STATUSES = frozenset({"error", "fail", "runtime error"})
#: Longest node message kept in an error message (compilation errors can be long).
_MAX_MESSAGE_CHARS = 800


class TransformError(RuntimeError):
    """dbt could not run, or a model, data test or unit test failed.

    ``failures`` lists the failing nodes; ``result`` holds the parsed run
    summary when dbt got as far as writing ``run_results.json``.
    """

    def __init__(
        self,
        message: str,
        *,
        failures: Sequence[NodeResult] = (),
        result: TransformResult | None = None,
    ) -> None:
        super().__init__(message)
        self.failures: tuple[NodeResult, ...] = tuple(failures)
        self.result = result


@dataclass(frozen=True)
class NodeResult:
    """One executed dbt node from ``run_results.json``."""

    unique_id: str
    resource_type: str
    status: str
    execution_time: float
    failures: int | None = None
    message: str | None = None

    @property
    def name(self) -> str:
        """Node name without resource type and package (tests keep their hash)."""
        parts = self.unique_id.split(".")
        if self.resource_type == "unit_test":
            return ".".join(parts[2:])
        return parts[2] if len(parts) > 2 else self.unique_id

    @property
    def failed(self) -> bool:
        return self.status in _FAILED_STATUSES

    def to_dict(self) -> dict[str, Any]:
        return {
            "unique_id": self.unique_id,
            "resource_type": self.resource_type,
            "status": self.status,
            "execution_time": self.execution_time,
            "failures": self.failures,
            "message": self.message,
        }


@dataclass(frozen=True)
class TransformResult:
    """Summary of one dbt invocation, for logs and the run manifest."""

    command: str
    success: bool
    nodes: tuple[NodeResult, ...]
    mart_row_counts: dict[str, int]
    warehouse_path: Path
    target_path: Path
    log_path: Path
    elapsed_time: float
    invocation_id: str | None = None
    dbt_version: str | None = None
    generated_at: str | None = None
    selected: tuple[str, ...] = field(default_factory=tuple)

    def _count(self, resource_type: str, *statuses: str) -> int:
        return sum(1 for n in self.nodes if n.resource_type == resource_type and n.status in statuses)

    @property
    def models_passed(self) -> int:
        return self._count("model", "success")

    @property
    def models_failed(self) -> int:
        return self._count("model", *_FAILED_STATUSES)

    @property
    def models_skipped(self) -> int:
        return self._count("model", "skipped")

    @property
    def tests_passed(self) -> int:
        """Data tests that passed (unit tests are counted separately)."""
        return self._count("test", "pass")

    @property
    def tests_failed(self) -> int:
        return self._count("test", *_FAILED_STATUSES)

    @property
    def tests_warned(self) -> int:
        return self._count("test", "warn")

    @property
    def tests_skipped(self) -> int:
        return self._count("test", "skipped")

    @property
    def unit_tests_passed(self) -> int:
        return self._count("unit_test", "pass")

    @property
    def unit_tests_failed(self) -> int:
        return self._count("unit_test", *_FAILED_STATUSES)

    @property
    def failed_nodes(self) -> tuple[NodeResult, ...]:
        return tuple(n for n in self.nodes if n.failed)

    @property
    def warned_nodes(self) -> tuple[NodeResult, ...]:
        return tuple(n for n in self.nodes if n.status == "warn")

    def counts(self) -> dict[str, int]:
        return {
            "models_passed": self.models_passed,
            "models_failed": self.models_failed,
            "models_skipped": self.models_skipped,
            "tests_passed": self.tests_passed,
            "tests_failed": self.tests_failed,
            "tests_warned": self.tests_warned,
            "tests_skipped": self.tests_skipped,
            "unit_tests_passed": self.unit_tests_passed,
            "unit_tests_failed": self.unit_tests_failed,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (paths as strings) for the run manifest."""
        return {
            "command": self.command,
            "selected": list(self.selected),
            "success": self.success,
            "invocation_id": self.invocation_id,
            "dbt_version": self.dbt_version,
            "generated_at": self.generated_at,
            "elapsed_time": self.elapsed_time,
            "warehouse_path": str(self.warehouse_path),
            "target_path": str(self.target_path),
            "log_path": str(self.log_path),
            "counts": self.counts(),
            "mart_row_counts": dict(self.mart_row_counts),
            "nodes": [n.to_dict() for n in self.nodes],
        }


def run_dbt(
    settings: Settings,
    command: str = "build",
    select: list[str] | None = None,
    *,
    quiet: bool = True,
) -> TransformResult:
    """Run ``dbt <command>`` in-process against this run's privacy zone.

    ``command`` is a dbt subcommand (``build``, ``run``, ``test``,
    ``compile``, ``parse``, ``docs generate``...); ``select`` becomes
    ``--select``. With ``quiet`` (the default) dbt prints only errors to
    stdout; its full log always goes to ``<data_dir>/warehouse/dbt_logs``.

    Returns the parsed run summary, with row counts of the marts. Raises
    :class:`TransformError` when the privacy zone is incomplete, dbt cannot
    start (project, profile or compilation errors), or any node errors or
    fails; the message names each failing node.
    """
    words = command.split()
    if not words:
        raise ValueError("command must name a dbt subcommand, e.g. 'build'")
    warehouse_path = settings.warehouse.resolve()
    warehouse_dir = warehouse_path.parent
    target_path = warehouse_dir / "dbt_target"
    log_path = warehouse_dir / "dbt_logs"
    privacy_dir = settings.privacy.resolve()
    project_dir = settings.dbt_project.resolve()

    if words[0] in _EXECUTING_COMMANDS:
        _check_privacy_zone(privacy_dir)
    warehouse_dir.mkdir(parents=True, exist_ok=True)
    # A run that dies before writing results must not report the last run's.
    (target_path / "run_results.json").unlink(missing_ok=True)

    args = [
        *words,
        "--project-dir",
        str(project_dir),
        "--profiles-dir",
        str(project_dir),
        "--target-path",
        str(target_path),
        "--log-path",
        str(log_path),
        "--no-use-colors",
        "--no-use-colors-file",
        "--no-send-anonymous-usage-stats",
    ]
    if quiet:
        args.append("--quiet")
    if select:
        args += ["--select", *select]

    # A full build goes into a fresh file swapped in only when every node passed: a failed
    # build leaves the last good warehouse untouched, and no dropped table's bytes (an erased
    # subject's rows) linger in the file's free blocks.
    fresh = words[0] == "build" and not select
    # (Same file name in a side directory: dbt-duckdb qualifies relations with the catalog name,
    # which DuckDB takes from the file name.)
    build_dir = warehouse_dir / f".building-{os.getpid()}"
    build_path = build_dir / warehouse_path.name if fresh else warehouse_path
    if fresh:
        shutil.rmtree(build_dir, ignore_errors=True)
        build_dir.mkdir(parents=True)
    env = {
        "CRMSHIELD_PRIVACY_DIR": str(privacy_dir),
        "CRMSHIELD_WAREHOUSE_PATH": str(build_path),
        "DO_NOT_TRACK": "1",
    }
    from dbt.cli.main import dbtRunner  # heavy: imported only when dbt runs

    logger.info("dbt %s: privacy zone %s -> warehouse %s", command, privacy_dir, warehouse_path)
    started = time.monotonic()
    try:
        with _environ(env):
            outcome = dbtRunner().invoke(args)
        wall_time = time.monotonic() - started
        if fresh and outcome.exception is None and outcome.success:
            os.replace(build_path, warehouse_path)
            Path(f"{warehouse_path}.wal").unlink(missing_ok=True)
    finally:
        if fresh:
            shutil.rmtree(build_dir, ignore_errors=True)

    if outcome.exception is not None:
        raise TransformError(
            f"dbt {command} could not run: {_clip(str(outcome.exception))} (log: {log_path / 'dbt.log'})"
        ) from outcome.exception

    result = _read_results(
        target_path / "run_results.json",
        command=command,
        success=bool(outcome.success),
        warehouse_path=warehouse_path,
        target_path=target_path,
        log_path=log_path,
        wall_time=wall_time,
        selected=tuple(select or ()),
    )

    failed = result.failed_nodes
    if failed or not result.success:
        raise TransformError(_failure_message(command, result), failures=failed, result=result)

    if warehouse_path.is_file():
        result = _with_row_counts(result, _mart_row_counts(warehouse_path))
    logger.info(
        "dbt %s passed in %.1fs: %s; mart rows %s",
        command,
        result.elapsed_time,
        ", ".join(f"{k}={v}" for k, v in result.counts().items() if v),
        result.mart_row_counts,
    )
    for node in result.warned_nodes:
        logger.warning("dbt test warned: %s: %s", node.unique_id, _clip(node.message or ""))
    return result


def _check_privacy_zone(privacy_dir: Path) -> None:
    missing = [e for e in ENTITIES if not any((privacy_dir / e).glob("*.parquet"))]
    if missing:
        raise TransformError(
            f"privacy zone {privacy_dir} has no Parquet files for: {', '.join(missing)}; run the privacy job first"
        )


@contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block, then restore them."""
    previous = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in previous.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _read_results(
    path: Path,
    *,
    command: str,
    success: bool,
    warehouse_path: Path,
    target_path: Path,
    log_path: Path,
    wall_time: float,
    selected: tuple[str, ...],
) -> TransformResult:
    """Summarise ``run_results.json``; commands that write none give no nodes."""
    data: dict[str, Any] = {}
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
    metadata = data.get("metadata") or {}
    nodes = tuple(_node(raw) for raw in data.get("results") or ())
    elapsed = data.get("elapsed_time")
    return TransformResult(
        command=command,
        success=success,
        nodes=nodes,
        mart_row_counts={},
        warehouse_path=warehouse_path,
        target_path=target_path,
        log_path=log_path,
        elapsed_time=float(elapsed) if elapsed is not None else round(wall_time, 3),
        invocation_id=metadata.get("invocation_id"),
        dbt_version=metadata.get("dbt_version"),
        generated_at=metadata.get("generated_at"),
        selected=selected,
    )


def _node(raw: Mapping[str, Any]) -> NodeResult:
    unique_id = str(raw.get("unique_id", ""))
    failures = raw.get("failures")
    message = raw.get("message")
    return NodeResult(
        unique_id=unique_id,
        resource_type=unique_id.split(".", 1)[0],
        status=str(raw.get("status", "")),
        execution_time=float(raw.get("execution_time") or 0.0),
        failures=int(failures) if failures is not None else None,
        message=str(message) if message is not None else None,
    )


def _failure_message(command: str, result: TransformResult) -> str:
    failed = result.failed_nodes
    skipped = sum(1 for n in result.nodes if n.status == "skipped")
    if not failed:
        return f"dbt {command} reported failure without a failing node; see {result.log_path / 'dbt.log'}"
    lines = [
        f"dbt {command} failed: {len(failed)} of {len(result.nodes)} nodes failed"
        f" ({skipped} skipped downstream); log: {result.log_path / 'dbt.log'}"
    ]
    for node in failed:
        detail = _clip(node.message or "no message")
        lines.append(f"  - {node.unique_id} [{node.status}]: {detail}")
    return "\n".join(lines)


def _clip(text: str) -> str:
    text = " ".join(text.split())
    if len(text) <= _MAX_MESSAGE_CHARS:
        return text
    return text[: _MAX_MESSAGE_CHARS - 3] + "..."


def _mart_row_counts(warehouse_path: Path) -> dict[str, int]:
    """Row counts of the marts present in the warehouse (read-only)."""
    import duckdb

    counts: dict[str, int] = {}
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        present = {
            row[0]
            for row in con.execute(
                "select table_name from information_schema.tables where table_schema = ?",
                [MARTS_SCHEMA],
            ).fetchall()
        }
        for mart in MARTS:
            if mart in present:
                row = con.execute(f'select count(*) from "{MARTS_SCHEMA}"."{mart}"').fetchone()
                counts[mart] = int(row[0]) if row else 0
    return counts


def _with_row_counts(result: TransformResult, counts: dict[str, int]) -> TransformResult:
    return replace(result, mart_row_counts=counts)

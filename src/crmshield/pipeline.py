"""The pipeline's stages as plain functions: what the DAG's tasks and the CLI call.

Each stage records its result (counts, paths, timings; never a data value)
as ``reports/runs/<run_id>/<stage>.json``. The run id is derived from the
input fingerprint (sha256 of the landing files), so a re-run of the same
input lands in the same run directory and rewrites the same outputs.
Heavy libraries are imported inside the stage functions, so importing this
module (as a DAG file does) costs nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crmshield.config import Settings

STAGES = ("ingest", "validate_raw", "privacy", "validate", "transform", "publish", "report")

#: The zone whose hand-over each validating stage guards (named in failure records).
STAGE_ZONES = {"validate_raw": "raw", "validate": "privacy", "publish": "published marts"}


class RunFailed(RuntimeError):
    """A stage failed; its failure is recorded and the run report written (when a run id existed)."""

    def __init__(self, stage: str, cause: BaseException, manifest: Path | None) -> None:
        self.stage = stage
        self.cause = cause
        self.manifest = manifest
        msg = f"stage {stage} failed: {cause}"
        if manifest is not None:
            msg += f"\nrun report: {manifest.with_name('report.html')}\nmanifest: {manifest}"
        super().__init__(msg)


def config_digest(settings: Settings) -> str:
    """sha256 over everything besides the landing files that shapes the outputs:
    the source spec (export -> canonical mapping), the privacy policy, the
    Spark job, the dbt project and the DP mart declarations. Part of the run
    fingerprint, so changing any of them makes a new run (and a new
    publication) while an unchanged re-run stays a no-op."""
    import hashlib

    from crmshield.policy import policy_path
    from crmshield.sources import source_spec_path

    files = [source_spec_path(), policy_path()]
    for folder, pattern in (
        (settings.spark_jobs / "privacy", "*.py"),
        (settings.dbt_project / "models", "**/*"),
        (settings.dbt_project / "macros", "**/*"),
        (settings.dbt_project / "tests", "**/*"),
        (settings.marts_sql, "*"),
    ):
        files.extend(p for p in folder.glob(pattern) if p.is_file())
    files.append(settings.dbt_project / "dbt_project.yml")
    h = hashlib.sha256()
    for f in sorted(set(files)):
        rel = f.relative_to(settings.root) if f.is_relative_to(settings.root) else f
        h.update(f"{rel}\0".encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def _write(settings: Settings, run_id: str, stage: str, result: dict[str, Any]) -> dict[str, Any]:
    run_dir = settings.run_dir(run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{stage}.json.tmp"
    tmp.write_text(json.dumps(result, indent=2, sort_keys=True, default=str), encoding="utf-8")
    tmp.replace(run_dir / f"{stage}.json")
    return result


def read_stage(settings: Settings, run_id: str, stage: str) -> dict[str, Any] | None:
    path = settings.run_dir(run_id) / f"{stage}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def failure_record(stage: str, exc: BaseException, seconds: float) -> dict[str, Any]:
    """What a failed stage leaves in ``<stage>.json``: the error, never a data value.

    Our stages' messages name files, rows, fields, expectations and counts only. The privacy
    job's message carries the tail of the Spark log (which reads raw PII and may quote a value
    in a cast error), so only its first line (exit status and log path) is recorded.
    """
    from crmshield.privacy import PrivacyJobFailed
    from crmshield.validate import ValidationFailed

    message = str(exc)
    if isinstance(exc, PrivacyJobFailed):
        message = message.splitlines()[0] if message else type(exc).__name__
    record: dict[str, Any] = {
        "status": "failed",
        "stage": stage,
        "zone": STAGE_ZONES.get(stage),
        "error_type": type(exc).__name__,
        "error": message[:4000],
        "seconds": round(seconds, 2),
    }
    if isinstance(exc, ValidationFailed):
        record.update(exc.summary.to_dict())
        record["zone"] = STAGE_ZONES.get(stage, exc.zone)
    result = getattr(exc, "result", None)  # a failed dbt build: its tests' statuses and counts
    if result is not None and hasattr(result, "to_dict"):
        for key, value in result.to_dict().items():
            record.setdefault(key, value)
    return record


def _run_stage(settings: Settings, run_id: str, stage: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one stage, record its result (``status`` success) or its failure, and re-raise failures."""
    started = time.perf_counter()
    try:
        result = fn()
    except Exception as exc:
        _write(settings, run_id, stage, failure_record(stage, exc, time.perf_counter() - started))
        raise
    result.setdefault("status", "success")
    result["seconds"] = round(time.perf_counter() - started, 2)
    return _write(settings, run_id, stage, result)


def stage_ingest(settings: Settings | None = None) -> dict[str, Any]:
    """Landing -> raw. Returns ``{"run_id", "input_fingerprint", "files": {...}}``."""
    from crmshield.ingest import IngestError, ingest

    settings = settings or Settings.from_env()
    started = time.perf_counter()
    digest = config_digest(settings)
    try:
        res = ingest(settings, extra_fingerprint=digest)
    except IngestError as exc:  # a refused delivery: recorded for its run (nothing was written to raw)
        if exc.run_id:
            record = failure_record("ingest", exc, time.perf_counter() - started)
            record.update(run_id=exc.run_id, input_fingerprint=exc.input_fingerprint, config_digest=digest)
            _clear_later_stages(settings, exc.run_id)
            _write(settings, exc.run_id, "ingest", record)
        raise
    out = res.to_dict()
    out["config_digest"] = digest
    out["seconds"] = round(time.perf_counter() - started, 2)
    _clear_later_stages(settings, res.run_id)
    return _write(settings, res.run_id, "ingest", out)


def _clear_later_stages(settings: Settings, run_id: str) -> None:
    """A new run starts clean: stale stage files of an earlier attempt go."""
    run_dir = settings.run_dir(run_id)
    if run_dir.exists():
        for stage in STAGES[1:]:
            (run_dir / f"{stage}.json").unlink(missing_ok=True)


def stage_validate_raw(run_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """GX checkpoint on the raw zone (the contract with the export, and row reconciliation);
    raises on a critical failure, after recording it."""
    from crmshield.validate_raw import validate_raw_zone

    settings = settings or Settings.from_env()
    ingest = read_stage(settings, run_id, "ingest")
    if ingest is None:
        raise RuntimeError(f"run {run_id}: no ingest result; run `crmshield ingest` first")
    return _run_stage(settings, run_id, "validate_raw", lambda: validate_raw_zone(settings, run_id, ingest).to_dict())


def stage_privacy(run_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """Raw -> privacy zone, via spark-submit."""
    from crmshield.privacy import run_privacy_job

    settings = settings or Settings.from_env()
    return _run_stage(settings, run_id, "privacy", lambda: run_privacy_job(settings, run_id))


def stage_validate(run_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """GX checkpoint on the privacy zone; raises on a critical failure (after recording it)."""
    from crmshield.validate import validate_privacy_zone

    settings = settings or Settings.from_env()
    return _run_stage(settings, run_id, "validate", lambda: validate_privacy_zone(settings, run_id).to_dict())


def stage_transform(run_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """dbt build on DuckDB over the privacy zone."""
    from crmshield.transform import run_dbt

    settings = settings or Settings.from_env()
    return _run_stage(settings, run_id, "transform", lambda: run_dbt(settings).to_dict())


def stage_publish(run_id: str, input_fingerprint: str, settings: Settings | None = None) -> dict[str, Any]:
    """SmartNoise DP marts -> analyst database (atomic swap)."""
    from crmshield.publish import publish_marts

    settings = settings or Settings.from_env()
    return _run_stage(settings, run_id, "publish", lambda: publish_marts(settings, run_id, input_fingerprint).to_dict())


def stage_report(run_id: str, settings: Settings | None = None) -> str:
    """Manifest + HTML report from the recorded stage results. Returns the manifest path.

    Also for a failed run: the stages up to the failed one have results, the failed one has
    its failure record, and the manifest's ``status`` is ``failed`` with the ``failure``.
    """
    from crmshield.report import write_run_report

    settings = settings or Settings.from_env()
    stages = {s: read_stage(settings, run_id, s) for s in STAGES[:-1]}
    if stages["ingest"] is None:
        raise RuntimeError(f"run {run_id}: cannot report, no ingest result")
    failed = [s for s, v in stages.items() if v and v.get("status") == "failed"]
    if not failed:
        missing = [s for s, v in stages.items() if v is None]
        if missing:
            raise RuntimeError(f"run {run_id}: cannot report, stage result(s) missing: {', '.join(missing)}")
    manifest_path: Path = write_run_report(settings, run_id, {k: v for k, v in stages.items() if v})
    return str(manifest_path)


def run_status(run_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """``status`` and ``failure`` of a written manifest (what the DAG's report task checks)."""
    settings = settings or Settings.from_env()
    path = settings.run_dir(run_id) / "manifest.json"
    manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return {"status": manifest.get("status"), "failure": manifest.get("failure"), "manifest": str(path)}


def run_all(settings: Settings | None = None, on_stage: Callable[[str, dict[str, Any]], None] | None = None) -> str:
    """Run every stage in-process, in order (what the DAG does, without Airflow).

    When a stage fails the later ones do not run (nothing is published: the marts already
    published stay as they were), the run report is written anyway, and :class:`RunFailed`
    is raised naming the stage and the report.
    """
    from crmshield.ingest import IngestError

    settings = settings or Settings.from_env()
    try:
        ing = stage_ingest(settings)
    except IngestError as exc:
        if not exc.run_id:
            raise
        raise RunFailed("ingest", exc, Path(stage_report(exc.run_id, settings))) from exc
    run_id, fp = ing["run_id"], ing["input_fingerprint"]
    if on_stage:
        on_stage("ingest", ing)
    for name, fn in (
        ("validate_raw", lambda: stage_validate_raw(run_id, settings)),
        ("privacy", lambda: stage_privacy(run_id, settings)),
        ("validate", lambda: stage_validate(run_id, settings)),
        ("transform", lambda: stage_transform(run_id, settings)),
        ("publish", lambda: stage_publish(run_id, fp, settings)),
    ):
        try:
            res = fn()
        except Exception as exc:
            raise RunFailed(name, exc, Path(stage_report(run_id, settings))) from exc
        if on_stage:
            on_stage(name, res)
    return stage_report(run_id, settings)

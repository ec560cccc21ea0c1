"""Launch the privacy Spark job the way a cluster would: ``spark-submit``.

The embedded default master is ``local[*]``; set ``CRMSHIELD_SPARK_MASTER``
(``spark://...``, ``yarn``, ``k8s://...``) to run elsewhere. The key travels
in the child's environment, never in argv or logs.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from crmshield.config import Settings
from crmshield.java import java_version
from crmshield.keys import PseudonymKey, load_key, spark_env
from crmshield.policy import PolicyError, load_policy, policy_path, resolve_plan


class PrivacyJobFailed(RuntimeError):
    """spark-submit exited non-zero."""


def spark_submit_command(settings: Settings, plan_path: Path, stats_out: Path) -> list[str]:
    job_dir = settings.spark_jobs / "privacy"
    submit = Path(sys.executable).parent / "spark-submit"
    return [
        str(submit) if submit.exists() else "spark-submit",
        "--master", os.environ.get("CRMSHIELD_SPARK_MASTER", "local[*]"),
        "--name", "crmshield-privacy",
        "--driver-memory", os.environ.get("CRMSHIELD_SPARK_DRIVER_MEMORY", "2g"),
        "--conf", "spark.ui.enabled=false",
        "--conf", "spark.log.level=WARN",
        "--conf", "spark.sql.shuffle.partitions=" + os.environ.get("CRMSHIELD_SPARK_SHUFFLE_PARTITIONS", "8"),
        "--py-files", str(job_dir / "transforms.py"),
        str(job_dir / "job.py"),
        "--raw", str(settings.raw),
        "--out", str(settings.privacy),
        "--plan", str(plan_path),
        "--stats-out", str(stats_out),
        "--exclusions-out", str(settings.restricted / "exclusions"),
    ]  # fmt: skip


def resolve_column_plan(settings: Settings, path: Path | None = None) -> dict[str, Any]:
    """Validate the policy against the raw tables' actual columns; return the job's plan."""
    import pyarrow.parquet as pq

    path = path or policy_path()
    policy = load_policy(path)
    raw_columns = {}
    for entity in policy.entities:
        table = settings.raw / f"{entity}.parquet"
        if not table.exists():
            raise PolicyError(f"{path}: entities.{entity}: raw table {table} not found (run ingest first)")
        raw_columns[entity] = list(pq.read_schema(table).names)
    plan = resolve_plan(policy, raw_columns, path)
    plan["policy_file"] = str(path)
    plan["policy_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return plan


def run_privacy_job(settings: Settings, run_id: str, key: PseudonymKey | None = None) -> dict[str, Any]:
    """Run the job; return its stats (counts, column actions, key version: never the key)."""
    java_version()
    key = key or load_key()
    plan = resolve_column_plan(settings)
    run_dir = settings.run_dir(run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    plan_path = run_dir / "privacy_plan.json"
    plan_path.write_text(json.dumps(plan, indent=2), encoding="utf-8")
    stats_out = run_dir / "privacy_stats.json"
    log_path = run_dir / "privacy_job.log"
    env = {
        **os.environ,
        **spark_env(key),
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "PYARROW_IGNORE_TIMEZONE": "1",
    }
    cmd = spark_submit_command(settings, plan_path, stats_out)
    with log_path.open("w", encoding="utf-8") as log:
        proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-25:]
        raise PrivacyJobFailed(
            f"privacy Spark job failed (exit {proc.returncode}); log: {log_path}\n" + "\n".join(tail)
        )
    stats: dict[str, Any] = json.loads(stats_out.read_text(encoding="utf-8"))
    stats["log"] = str(log_path)
    stats["policy_file"] = plan["policy_file"]
    stats["policy_sha256"] = plan["policy_sha256"]
    stats["key_source"] = key.source.split(":", 1)[0]
    return stats

"""crm_privacy_pipeline: CRM exports -> typed raw (validated) -> privacy zone (validated) -> dbt -> DP marts -> report.

A thin DAG: every task calls one stage function of ``crmshield.pipeline``;
the heavy work (DuckDB, spark-submit, Great Expectations, dbt, SmartNoise)
is imported inside those functions, so parsing this file is cheap. Tasks
are idempotent: the run is keyed by the landing files' fingerprint, not by
the wall clock. Each zone's producer declares it as an Asset outlet.

Great Expectations guards each hand-over: ``validate_raw`` (the contract with the export)
before the privacy job, ``validate`` (nothing identifying left) before dbt, and the
``published__marts`` suite inside ``publish`` before the swap. A critical failure stops the
run there: nothing downstream runs and the published marts stay as they were. ``report``
runs whatever happened (trigger rule ``all_done``), writes the run report and manifest
naming the failed expectation, and then fails itself if the run failed, so the DAG run is
marked failed.

Started by an event on the Asset ``crmshield_landing``, which ``crm_landing_watch``
emits when a complete, settled export with a new fingerprint has landed; still
triggered by hand too (``airflow dags trigger``/``dags test``, ``crmshield demo``).

Zones are configured with CRMSHIELD_DATA_DIR; the pseudonymization key with
CRMSHIELD_PSEUDONYMIZATION_KEY(_FILE) or the Airflow connection
``crmshield_pseudonymization`` (see .env.example).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, dag, task

RAW_ZONE = Asset("crmshield_raw_zone")
PRIVACY_ZONE = Asset("crmshield_privacy_zone")
WAREHOUSE = Asset("crmshield_warehouse")
DP_MARTS = Asset("crmshield_dp_marts")
LANDING = Asset("crmshield_landing")  # emitted by crm_landing_watch for a new export


@dag(
    dag_id="crm_privacy_pipeline",
    schedule=[LANDING],  # a new export starts a run; manual triggers still work
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # one writer per zone (DuckDB allows a single writer)
    max_active_tasks=1,
    is_paused_upon_creation=False,  # else Airflow drops the landing events (a paused DAG queues none)
    default_args={"retries": 0},
    tags=["crmshield", "privacy"],
    doc_md=__doc__,
)
def crm_privacy_pipeline() -> None:
    @task(outlets=[RAW_ZONE])
    def ingest() -> dict[str, str]:
        """Landing exports -> typed Parquet, exactly once; bad rows quarantined with reasons. A refused delivery
        fails this task after handing its run id on, so ``report`` still writes that run's report."""
        from airflow.sdk import get_current_context

        from crmshield.ingest import IngestError
        from crmshield.pipeline import stage_ingest

        try:
            res = stage_ingest()
        except IngestError as exc:
            if exc.run_id:
                run = {"run_id": exc.run_id, "input_fingerprint": exc.input_fingerprint or ""}
                get_current_context()["ti"].xcom_push(key="return_value", value=run)
            raise
        return {"run_id": res["run_id"], "input_fingerprint": res["input_fingerprint"]}

    @task
    def validate_raw(run: dict[str, str]) -> dict[str, str]:
        """Great Expectations checkpoint on the raw zone and the row reconciliation; critical failures stop the run."""
        from crmshield.pipeline import stage_validate_raw

        stage_validate_raw(run["run_id"])
        return run

    @task(outlets=[PRIVACY_ZONE])
    def privacy(run: dict[str, str]) -> dict[str, str]:
        """spark-submit the privacy job: minimize, pseudonymize, generalize, redact."""
        from crmshield.pipeline import stage_privacy

        stage_privacy(run["run_id"])
        return run

    @task
    def validate(run: dict[str, str]) -> dict[str, str]:
        """Great Expectations checkpoint on the privacy zone; a critical failure stops the run."""
        from crmshield.pipeline import stage_validate

        stage_validate(run["run_id"])
        return run

    @task(outlets=[WAREHOUSE])
    def transform(run: dict[str, str]) -> dict[str, str]:
        """dbt build (staging, intermediate, marts, tests) on DuckDB."""
        from crmshield.pipeline import stage_transform

        stage_transform(run["run_id"])
        return run

    @task(outlets=[DP_MARTS])
    def publish(run: dict[str, str]) -> dict[str, str]:
        """SmartNoise SQL DP marts into the analyst database, swapped in atomically."""
        from crmshield.pipeline import stage_publish

        stage_publish(run["run_id"], run["input_fingerprint"])
        return run

    @task(trigger_rule="all_done")
    def report(run: dict[str, str]) -> str:
        """Run manifest (JSON) and self-contained HTML report, also for a failed run (then this task fails too)."""
        from crmshield.pipeline import run_status, stage_report

        manifest = stage_report(run["run_id"])
        outcome = run_status(run["run_id"])
        if outcome["status"] != "success":
            failure = outcome.get("failure") or {}
            raise RuntimeError(
                f"run {run['run_id']} {outcome['status']} at stage {failure.get('stage')}: "
                f"{failure.get('error')}; run report next to {manifest}"
            )
        return manifest

    run = ingest()
    published = publish(transform(validate(privacy(validate_raw(run)))))
    published >> report(run)


crm_privacy_pipeline()

"""crm_landing_watch: start crm_privacy_pipeline when a new CRM export has landed.

Every five minutes one short task asks ``crmshield.landing_watch.landing_state``
whether the landing zone holds a complete, settled export whose fingerprint no
run has ingested and no earlier check has announced. If so it records a marker
(``reports/landing_watch/<fingerprint>.json``, atomically) and succeeds, which
emits an event on the Asset ``crmshield_landing``; ``crm_privacy_pipeline`` is
scheduled on that Asset and starts. Otherwise the task is skipped, and a
skipped task emits no Asset event, so nothing starts: a missing file, a file
still being written (changed within ``CRMSHIELD_LANDING_SETTLE_SECONDS``,
default 60), a re-delivery of files already processed, or an input already
announced.

The decision is plain Python in the package (unit-tested without Airflow);
this file only schedules it. Nothing heavy is imported at parse time.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, dag, task

LANDING = Asset("crmshield_landing")  # == crmshield.landing_watch.LANDING_ASSET


@dag(
    dag_id="crm_landing_watch",
    schedule="*/5 * * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # one watcher at a time: a marker is claimed by exactly one check
    is_paused_upon_creation=False,  # watching is the point: nobody has to switch it on
    dagrun_timeout=pendulum.duration(minutes=4),
    default_args={"retries": 0},
    tags=["crmshield", "landing"],
    doc_md=__doc__,
)
def crm_landing_watch() -> None:
    @task(outlets=[LANDING], execution_timeout=pendulum.duration(minutes=3))
    def detect_new_export() -> dict[str, object]:
        """Succeed (emitting the ``crmshield_landing`` event) only for a new, settled export; else skip."""
        from airflow.sdk import get_current_context
        from airflow.sdk.exceptions import AirflowSkipException

        from crmshield.config import Settings
        from crmshield.landing_watch import claim, landing_state

        settings = Settings.from_env()
        state = landing_state(settings)
        if not state["ready"]:
            raise AirflowSkipException(f"{state['reason']}: {state['detail']}")
        if not claim(settings, state):
            raise AirflowSkipException(f"triggered: another check announced {state['fingerprint'][:16]} first")
        fp = state["fingerprint"]
        get_current_context()["outlet_events"][LANDING].extra = {"input_fingerprint": fp, "run_id": f"run-{fp[:16]}"}
        return {"input_fingerprint": fp, "run_id": f"run-{fp[:16]}", "detail": state["detail"]}

    detect_new_export()


crm_landing_watch()

"""DAG files import cleanly and have the structure we expect."""

from __future__ import annotations

from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_every_dag_file_imports(dagbag):
    assert dagbag.import_errors == {}
    files = {Path(p).stem for p in DAGS.glob("*.py")}
    assert files == set(dagbag.dag_ids), "each DAG id matches its file name"


def test_pipeline_structure(dagbag):
    dag = dagbag.dags["crm_privacy_pipeline"]
    order = ["ingest", "validate_raw", "privacy", "validate", "transform", "publish", "report"]
    assert [t.task_id for t in dag.topological_sort()] == order
    for up, down in zip(order[:-2], order[1:-1], strict=True):
        assert dag.get_task(down).upstream_task_ids == {up}
    # the report is written whatever happened upstream (then fails the run if a stage failed)
    report = dag.get_task("report")
    assert report.upstream_task_ids == {"publish", "ingest"}
    assert report.trigger_rule == "all_done"
    outlets = {t.task_id: [a.name for a in t.outlets] for t in dag.tasks}
    assert outlets["ingest"] == ["crmshield_raw_zone"]
    assert outlets["privacy"] == ["crmshield_privacy_zone"]
    assert outlets["transform"] == ["crmshield_warehouse"]
    assert outlets["publish"] == ["crmshield_dp_marts"]
    assert dag.max_active_runs == 1 and not dag.catchup
    # validation sits between each zone and everything that reads it
    assert dag.get_task("privacy").upstream_task_ids == {"validate_raw"}
    assert dag.get_task("transform").upstream_task_ids == {"validate"}


def test_landing_watch_structure(dagbag):
    from crmshield.landing_watch import LANDING_ASSET

    watch = dagbag.dags["crm_landing_watch"]
    assert [t.task_id for t in watch.tasks] == ["detect_new_export"]
    detect = watch.get_task("detect_new_export")
    # the watch task's only outlet is the landing asset: its success is the event
    assert [a.name for a in detect.outlets] == [LANDING_ASSET]
    assert watch.max_active_runs == 1 and not watch.catchup
    assert watch.is_paused_upon_creation is False
    assert "Cron" in type(watch.timetable).__name__  # polls on a clock, not on an asset
    assert detect.execution_timeout is not None


def test_pipeline_is_scheduled_on_the_landing_asset(dagbag):
    from crmshield.landing_watch import LANDING_ASSET

    pipeline = dagbag.dags["crm_privacy_pipeline"]
    watch = dagbag.dags["crm_landing_watch"]
    condition = pipeline.timetable.asset_condition  # schedule=[LANDING]: AssetAll(LANDING)
    scheduled_on = [a.name for a in getattr(condition, "objects", [condition])]
    # the asset the pipeline waits for is the one the watcher emits, and only that
    assert scheduled_on == [LANDING_ASSET]
    assert scheduled_on == [a.name for a in watch.get_task("detect_new_export").outlets]
    # runs still start by hand (dags trigger / dags test) and never pile up
    assert pipeline.max_active_runs == 1 and not pipeline.catchup
    assert pipeline.is_paused_upon_creation is False  # a paused DAG gets no asset-triggered run
    # no task of the pipeline produces the landing asset (no self-trigger loop)
    assert all(LANDING_ASSET not in [a.name for a in t.outlets] for t in pipeline.tasks)

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

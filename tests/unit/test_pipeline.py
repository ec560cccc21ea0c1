"""The run fingerprint covers what shapes the outputs, not only the landing files."""

from __future__ import annotations

from crmshield.config import Settings
from crmshield.pipeline import config_digest
from crmshield.policy import default_policy_path


def test_config_digest_is_stable_and_tracks_the_policy(tmp_path, monkeypatch):
    settings = Settings.from_env()
    assert config_digest(settings) == config_digest(settings)
    changed = tmp_path / "policy.yml"
    changed.write_text(default_policy_path().read_text().replace("k: 5", "k: 10"))
    monkeypatch.setenv("CRMSHIELD_PRIVACY_POLICY", str(changed))
    before = config_digest(settings)
    monkeypatch.delenv("CRMSHIELD_PRIVACY_POLICY")
    assert config_digest(settings) != before


def test_a_failed_stage_record_names_the_failure_without_the_spark_log():
    from crmshield.pipeline import failure_record
    from crmshield.privacy import PrivacyJobFailed

    exc = PrivacyJobFailed("privacy Spark job failed (exit 1); log: /x/privacy_job.log\nCast error: 'jane@x.org'")
    record = failure_record("privacy", exc, 1.234)
    assert record["status"] == "failed" and record["stage"] == "privacy" and record["seconds"] == 1.23
    assert record["error"] == "privacy Spark job failed (exit 1); log: /x/privacy_job.log"
    assert "jane" not in str(record)


def test_a_failed_dbt_build_record_lists_its_tests(tmp_path):
    from crmshield.pipeline import failure_record
    from crmshield.transform import NodeResult, TransformError, TransformResult

    node = NodeResult(
        unique_id="test.crmshield.not_null_customers_contact_pk",
        resource_type="test",
        status="fail",
        execution_time=0.1,
        failures=3,
        message="Got 3 results, configured to fail if != 0",
    )
    result = TransformResult(
        command="build", success=False, nodes=(node,), mart_row_counts={},
        warehouse_path=tmp_path / "w.duckdb", target_path=tmp_path, log_path=tmp_path, elapsed_time=1.0,
    )  # fmt: skip
    record = failure_record("transform", TransformError("dbt build failed", failures=[node], result=result), 2.0)
    assert record["status"] == "failed" and record["error"] == "dbt build failed"
    assert record["nodes"][0]["unique_id"] == node.unique_id and record["nodes"][0]["failures"] == 3


def test_cli_errors_keep_their_bracketed_check_names(capsys):
    """Rich would swallow ``[no_email]`` as markup; the CLI escapes error messages."""
    import typer

    from crmshield.cli import _fail

    exit_ = _fail(RuntimeError("privacy__contacts: expect_column_values_to_not_match_regex(email) [no_email] n=3"))
    assert isinstance(exit_, typer.Exit) and exit_.exit_code == 1
    assert "[no_email]" in capsys.readouterr().err

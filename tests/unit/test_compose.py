"""docker-compose.yml: the deployment the README documents is consistent with the project."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_pipeline_service_builds_this_project_and_keeps_the_key_out_of_the_data() -> None:
    c = compose()
    airflow = c["services"]["airflow"]
    assert airflow["build"] == "." and (ROOT / "Dockerfile").is_file()
    env = airflow["environment"]
    assert env["CRMSHIELD_DATA_DIR"] == "/data"
    assert env["CRMSHIELD_PSEUDONYMIZATION_KEY_FILE"].startswith("/run/secrets/")
    assert "CRMSHIELD_PSEUDONYMIZATION_KEY" not in env  # never a key value in the file
    secret_file = c["secrets"]["pseudonymization_key"]["file"]
    assert not secret_file.startswith("./data")
    assert "./data:/data" in airflow["volumes"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "uv sync --frozen" in dockerfile and "openjdk-17" in dockerfile


def test_bi_service_sees_only_the_published_marts_read_only() -> None:
    bi = compose()["services"]["superset"]
    assert bi["profiles"] == ["bi"]
    assert bi["volumes"] == ["./data/published:/data/published:ro"]
    assert "duckdb-engine" in bi["build"]["dockerfile_inline"]

"""Shared pytest fixtures."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
logging.getLogger("py4j").setLevel(logging.WARNING)  # no py4j chatter at interpreter exit


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    """One local SparkSession for the whole test session."""
    import sys

    from pyspark.sql import SparkSession

    # Python workers (the redaction UDF) must run this interpreter: it has pandas, pyarrow, crmshield.
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")  # pandas UDFs; else pyspark warns at import
    session = (
        SparkSession.builder.master("local[2]")
        .appName("crmshield-tests")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture()
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated CRMSHIELD_DATA_DIR for one test."""
    d = tmp_path / "data"
    d.mkdir()
    monkeypatch.setenv("CRMSHIELD_DATA_DIR", str(d))
    return d

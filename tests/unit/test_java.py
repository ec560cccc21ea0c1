"""Without Java, Spark stages fail with install advice, not a JVM stack trace."""

from __future__ import annotations

import subprocess
import sys

import pytest

from crmshield.java import JavaMissing, java_version


def test_missing_java_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(JavaMissing, match="apt-get install -y openjdk-17-jre-headless"):
        java_version()


def test_bootstrap_check_exits_3_without_java(tmp_path):
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "crmshield.java"], env=env, capture_output=True, text=True)
    assert proc.returncode == 3
    assert "Java 17 or newer" in proc.stderr and "Traceback" not in proc.stderr


def test_java_here_is_recent_enough():
    assert java_version() >= 17

"""Where the pseudonymization key comes from, and that it never shows."""

from __future__ import annotations

import json
import stat

import pytest

from crmshield.keys import ENV_FILE, ENV_KEY, ENV_VERSION, KeyError_, ensure_key_file, load_key


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in (ENV_KEY, ENV_FILE, ENV_VERSION):
        monkeypatch.delenv(var, raising=False)


def test_env_key_wins_and_repr_hides_it(monkeypatch):
    secret = "ab" * 32
    monkeypatch.setenv(ENV_KEY, secret)
    monkeypatch.setenv(ENV_VERSION, "2")
    key = load_key(use_airflow=False)
    assert key.version == 2 and key.key == bytes.fromhex(secret)
    assert secret not in repr(key) and "redacted" in repr(key)


def test_key_file_is_created_private_and_read(tmp_path, monkeypatch):
    path = ensure_key_file(tmp_path / "secrets" / "k.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = path.read_text()
    ensure_key_file(path)  # never overwritten
    assert path.read_text() == before
    monkeypatch.setenv(ENV_FILE, str(path))
    key = load_key(use_airflow=False)
    assert key.key.hex() == json.loads(before)["key"] and key.version == 1


def test_bad_or_missing_keys_fail_without_echoing_material(monkeypatch):
    with pytest.raises(KeyError_, match="no pseudonymization key"):
        load_key(use_airflow=False)
    monkeypatch.setenv(ENV_KEY, "deadbeef")
    with pytest.raises(KeyError_, match="at least 32 bytes") as err:
        load_key(use_airflow=False)
    assert "deadbeef" not in str(err.value)


def test_airflow_connection_supplies_key_and_version(monkeypatch):
    secret = "cd" * 32
    conn = {"conn_type": "generic", "password": secret, "extra": {"key_version": 4}}
    monkeypatch.setenv("AIRFLOW_CONN_CRMSHIELD_PSEUDONYMIZATION", json.dumps(conn))
    key = load_key()
    assert key.key == bytes.fromhex(secret) and key.version == 4
    assert key.source == "airflow:crmshield_pseudonymization"

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

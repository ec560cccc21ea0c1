"""Key rotation: re-running the real privacy job with the next key version
replaces every pseudonym, keeps joins intact and leaves no old token behind."""

from __future__ import annotations

import json

import duckdb
import job  # spark_jobs/privacy/job.py, on pytest's pythonpath
import pytest

from crmshield.config import Settings
from crmshield.generate import generate
from crmshield.ingest import ingest
from crmshield.keys import ENV_KEY, ENV_VERSION
from crmshield.privacy import resolve_column_plan

pytestmark = pytest.mark.integration

PKS = {"contacts": ["contact_pk", "company_pk"], "deals": ["deal_pk", "contact_pk", "company_pk"],
       "tickets": ["ticket_pk", "contact_pk"], "companies": ["company_pk"]}  # fmt: skip


def _tokens(settings: Settings) -> set[str]:
    out: set[str] = set()
    for entity, cols in PKS.items():
        for c in cols:
            rows = duckdb.sql(f"SELECT DISTINCT {c} FROM read_parquet('{settings.privacy}/{entity}/*.parquet')")
            out.update(r[0] for r in rows.fetchall() if r[0] is not None)
    return out


def test_rotation_replaces_every_pseudonym(spark, data_dir, monkeypatch):
    settings = Settings.from_env(data_dir)
    generate(settings.landing, contacts=300, seed=5)
    ingest(settings)
    plan = json.loads(json.dumps(resolve_column_plan(settings)))

    monkeypatch.setenv(ENV_KEY, "11" * 32)
    monkeypatch.setenv(ENV_VERSION, "1")
    job.run(spark, settings.raw, settings.privacy, plan)
    v1 = _tokens(settings)

    monkeypatch.setenv(ENV_KEY, "22" * 32)
    monkeypatch.setenv(ENV_VERSION, "2")
    stats = job.run(spark, settings.raw, settings.privacy, plan)
    v2 = _tokens(settings)

    assert stats["key_version"] == 2
    assert v1 and all(t.startswith("v1_") for t in v1)
    assert v2 and all(t.startswith("v2_") for t in v2)
    assert not {t[3:] for t in v1} & {t[3:] for t in v2}, "no token survives the rotation"
    orphans = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{settings.privacy}/tickets/*.parquet') t "
        f"ANTI JOIN read_parquet('{settings.privacy}/contacts/*.parquet') c USING (contact_pk)"
    ).fetchone()[0]
    assert orphans == 0, "tickets still join their (re-pseudonymized) contacts"

"""The privacy-stage benchmark's pieces that need no Spark: the DuckDB HMAC,
arguments, the DuckDB reference on a tiny sample, sample reuse, the report."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from crmshield import bench
from crmshield.config import ENTITIES, Settings
from crmshield.keys import PseudonymKey

PK = re.compile(r"^v1_[0-9a-f]{64}$")
VALUES = ["1000001", "", "zoë.smith@example.com", "+14155550134", "x" * 200, "日本語 テキスト", "a'b\\c"]


@pytest.mark.parametrize("key_len", [32, 64, 80])  # 80 > the block size: the key is hashed first
def test_duckdb_hmac_equals_python_hmac(key_len):
    key = secrets.token_bytes(key_len)
    con = duckdb.connect()
    bench.set_key_variables(con, {"contact": key})
    rows = con.execute(
        f"SELECT v, {bench.hmac_sha256_sql('v', 'contact')} FROM (SELECT unnest(?::VARCHAR[]) AS v)", [VALUES]
    ).fetchall()
    assert len(rows) == len(VALUES)
    for value, digest in rows:
        assert digest == hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


def test_duckdb_pseudonym_equals_the_keys_module_and_skips_non_canonical_values():
    master = secrets.token_bytes(32)
    keys = bench.derive_domain_keys(master)
    reference = PseudonymKey(master, 7, "test")
    con = duckdb.connect()
    bench.set_key_variables(con, keys)
    shapes = bench.canonical_shapes()
    for domain, value in [("contact", "1000001"), ("ticket", "9000001"), ("email", "zoë.smith@example.com")]:
        sql = bench.pseudonym_sql("v", domain, 7, shapes)
        got = con.execute(f"SELECT {sql} FROM (SELECT ?::VARCHAR AS v)", [value]).fetchone()[0]
        assert got == reference.pseudonym(domain, value)
    assert (
        con.execute(f"SELECT {bench.pseudonym_sql('v', 'contact', 7)} FROM (SELECT NULL::VARCHAR AS v)").fetchone()[0]
        is None
    )
    if "email" in shapes:  # only canonical emails get a token (as the Spark job)
        sql = bench.pseudonym_sql("v", "email", 7, shapes)
        assert con.execute(f"SELECT {sql} FROM (SELECT 'not an email' AS v)").fetchone()[0] is None


def test_argument_defaults_and_checks():
    a = bench.parse_args([])
    assert (a.contacts, a.tickets_per_contact, a.seed) == (1_000_000, 3.0, 42)
    assert (a.work_dir, a.reuse, a.json, a.skip_duckdb, a.hash_path) == (None, False, False, False, True)
    b = bench.parse_args(["--contacts", "10000000", "--tickets-per-contact", "2.5", "--seed", "7", "--reuse",
                          "--json", "--skip-duckdb", "--work-dir", "/tmp/x", "--no-hash-path"])  # fmt: skip
    assert (b.contacts, b.tickets_per_contact, b.seed, b.reuse, b.json, b.skip_duckdb, b.hash_path) == (
        10_000_000, 2.5, 7, True, True, True, False,
    )  # fmt: skip
    assert b.work_dir == Path("/tmp/x")
    for bad in (["--contacts", "5"], ["--tickets-per-contact", "-1"], ["--skip-duckdb", "--skip-spark"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_spark_conf_is_what_spark_submit_gets(monkeypatch, tmp_path):
    monkeypatch.setenv("CRMSHIELD_SPARK_DRIVER_MEMORY", "3g")
    monkeypatch.delenv("CRMSHIELD_SPARK_MASTER", raising=False)
    conf, py_files = bench.spark_session_conf(Settings.from_env(tmp_path))
    assert conf["spark.master"] == "local[*]"
    assert conf["spark.driver.memory"] == "3g"
    assert conf["spark.ui.enabled"] == "false"
    assert conf["spark.sql.session.timeZone"] == "UTC"
    assert "spark.sql.shuffle.partitions" in conf
    assert [Path(p).name for p in py_files] == ["transforms.py"]


def test_hash_path_plan_turns_redaction_into_a_pass_through():
    plan = {"entities": {"tickets": {"outputs": [{"output": "subject", "action": "redact", "inputs": ["subject"]}]}}}
    hashed = bench.hash_path_plan(plan)
    assert hashed["entities"]["tickets"]["outputs"][0]["action"] == "keep"
    assert plan["entities"]["tickets"]["outputs"][0]["action"] == "redact"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """200 generated contacts, ingested; the plan resolved for them."""
    from crmshield.privacy import resolve_column_plan

    work = tmp_path_factory.mktemp("bench")
    sample = bench.prepare_sample(work, 200, 3.0, 11, reuse=False)
    settings = Settings.from_env(work)
    return work, settings, resolve_column_plan(settings), sample


def _read(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def test_duckdb_reference_on_a_tiny_sample(tiny, tmp_path):
    work, settings, plan, sample = tiny
    keys = bench.derive_domain_keys(secrets.token_bytes(32), plan)
    ref = bench.duckdb_reference(settings.raw, tmp_path / "ref", plan, keys, 1, None)
    raw = {e: _read(settings.raw / f"{e}.parquet") for e in ENTITIES}
    out = {e: _read(tmp_path / "ref" / f"{e}.parquet") for e in ENTITIES}
    for e in ENTITIES:
        assert ref["entities"][e]["rows_in"] == len(raw[e]) == sample["raw_rows"][e]
        assert ref["entities"][e]["rows_out"] == ref["entities"][e]["written"] == len(out[e])
        assert list(out[e][0]) == [o["output"] for o in plan["entities"][e]["outputs"]]
        for row in out[e]:
            for col, value in row.items():
                if col.endswith("_pk") and value is not None:
                    assert PK.match(value), (e, col)
    consented = [c for c in raw["contacts"] if c["analytics_consent"] is True]
    assert 0 < len(consented) < len(raw["contacts"])
    assert ref["entities"]["contacts"]["excluded"]["excluded_consent"] == len(raw["contacts"]) - len(consented)
    contact_pks = {c["contact_pk"] for c in out["contacts"]}
    assert len(contact_pks) == len(consented)
    assert {t["contact_pk"] for t in out["tickets"]} <= contact_pks  # only consented subjects' tickets
    assert {d["contact_pk"] for d in out["deals"]} - {None} <= contact_pks
    assert ref["redactions"] is None  # hash path: free text passed through


def test_duckdb_reference_redacts_through_a_vectorized_udf(tiny, tmp_path):
    _, settings, plan, _ = tiny
    calls: list[int] = []

    def fake_redact_batch(texts, firsts, lasts, emails, phones, countries):
        assert len({len(texts), len(firsts), len(lasts), len(emails), len(phones), len(countries)}) == 1
        calls.append(len(texts))
        return [
            None if t is None else (t.replace(f, "<PERSON>") if f else t) for t, f in zip(texts, firsts, strict=True)
        ]

    keys = bench.derive_domain_keys(secrets.token_bytes(32), plan)
    ref = bench.duckdb_reference(settings.raw, tmp_path / "ref", plan, keys, 1, fake_redact_batch)
    assert calls and max(calls) > 1  # batches, not rows
    tickets = _read(tmp_path / "ref" / "tickets.parquet")
    found = sum((t[c] or "").count("<PERSON>") for t in tickets for c in ("subject", "description"))
    assert found > 0
    assert ref["redactions"]["person"] == found


def test_sample_reuse(tmp_path):
    first = bench.prepare_sample(tmp_path, 50, 1.0, 1, reuse=True)
    assert not first["generate_reused"] and not first["ingest_reused"]
    again = bench.prepare_sample(tmp_path, 50, 1.0, 1, reuse=True)
    assert again["generate_reused"] and again["ingest_reused"]
    assert again["raw_rows"] == first["raw_rows"]
    other = bench.prepare_sample(tmp_path, 50, 1.0, 2, reuse=True)  # other parameters: regenerate
    assert not other["generate_reused"]


def test_memory_sampler_sees_this_process():
    with bench.MemorySampler(interval=0.01) as mem:
        bytearray(16 * 1024 * 1024)
    d = mem.to_dict()
    assert d["peak_rss_mib"] > 0 and "driver_python" in d["peak_rss_by_process_mib"]


def test_count_comparison_and_table():
    same = {"contacts": {"rows_in": 10, "rows_out": 8, "excluded": {"excluded_consent": 2}}}
    assert bench.compare_counts(same, same) == []
    other = {"contacts": {"rows_in": 10, "rows_out": 7, "excluded": {"excluded_consent": 3}}}
    assert len(bench.compare_counts(same, other)) == 2
    block = {"seconds": 2.0, "rows_per_s": 5.0, "contacts_tickets_rows_per_s": 4.0, "memory": {"peak_rss_mib": 900.0}}
    res = {
        "environment": {"cpu_count": 2, "memory_gib": 24.0, "duckdb_version": "1.5.6", "duckdb_threads": 2},
        "sample": {
            "params": {"contacts": 10, "tickets_per_contact": 3.0, "seed": 42},
            "generated": {"contacts": 10},
            "raw_rows": {"contacts": 10},
            "generate_s": 1.0,
            "ingest_s": 1.0,
        },
        "input_rows": 10,
        "input_rows_contacts_tickets": 8,
        "redaction": "skipped (crmshield.redact not available)",
        "spark": {"jvm_start_s": 5.0, "full": block, "hash_path": block},
        "duckdb": {"full": block, "hash_path": block, "peak_rss_mib": 900.0},
        "ratios": {"full": None, "hash path": 1.0},
        "headline_ratio": 1.0,
        "headline_ratio_kind": "hash path",
        "memory": {"spark_peak_rss_mib": 900.0, "spark_peak_by_process_mib": {"jvm": 800.0}},
        "count_mismatches": ["contacts.rows_out: Spark 8 vs DuckDB 7"],
        "result_file": "bench_result.json",
    }
    table = bench.format_table(res)
    assert "PASS" in table and "WARNING" in table and "skipped" in table


def test_redaction_udf_in_worker_processes(tiny, tmp_path):
    redact = pytest.importorskip("crmshield.redact")
    _, settings, plan, _ = tiny
    keys = bench.derive_domain_keys(secrets.token_bytes(32), plan)
    with bench.udf_pool(redact.redact_batch, 1) as pool:
        assert pool is not None
        ref = bench.duckdb_reference(settings.raw, tmp_path / "ref", plan, keys, 1, redact.redact_batch, pool=pool)
    tickets = _read(tmp_path / "ref" / "tickets.parquet")
    assert len(tickets) == ref["entities"]["tickets"]["rows_out"]
    assert sum(ref["redactions"].values()) > 0
    assert any("<EMAIL>" in (t["description"] or "") for t in tickets)


def test_auto_redaction_follows_the_spark_job(tmp_path):
    job = tmp_path / "spark_jobs" / "privacy"
    job.mkdir(parents=True)
    (job / "transforms.py").write_text("F.regexp_replace(text, EMAIL_PATTERN, '<EMAIL>')\n")
    settings = Settings(root=tmp_path, data_dir=tmp_path / "data")
    assert bench.spark_job_redaction(settings) == "builtin"
    (job / "transforms.py").write_text("from crmshield.redact import redact_batch\n")
    assert bench.spark_job_redaction(settings) == "redact_batch"

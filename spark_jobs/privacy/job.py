"""Privacy job: raw zone (PII) -> privacy zone (minimized, pseudonymized).

Started like any Spark application::

    spark-submit --master local[*] --py-files spark_jobs/privacy/transforms.py \\
        spark_jobs/privacy/job.py --raw data/raw --out data/privacy --stats-out stats.json

The master key arrives through the environment
(``CRMSHIELD_PSEUDONYMIZATION_KEY`` hex + ``CRMSHIELD_PSEUDONYMIZATION_KEY_VERSION``),
never on the command line. The job writes all four entities into a staging
directory and swaps it in only when every write succeeded, so the privacy
zone is always a complete, consistent set. ``--stats-out`` receives counts
only (no values): rows in/out, exclusions, redactions, column actions.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # transforms.py beside this file

import transforms as T  # noqa: E402

DOMAINS = ("contact", "company", "deal", "ticket")


def derive_keys() -> T.Keys:
    hex_key = os.environ.get("CRMSHIELD_PSEUDONYMIZATION_KEY", "")
    if not hex_key:
        sys.exit("privacy job: CRMSHIELD_PSEUDONYMIZATION_KEY is not set (hex key expected in the environment)")
    try:
        master = bytes.fromhex(hex_key)
    except ValueError:
        sys.exit("privacy job: CRMSHIELD_PSEUDONYMIZATION_KEY is not valid hex")
    if len(master) < 32:
        sys.exit("privacy job: CRMSHIELD_PSEUDONYMIZATION_KEY must be at least 32 bytes")
    version = int(os.environ.get("CRMSHIELD_PSEUDONYMIZATION_KEY_VERSION", "1"))
    # must match crmshield.keys.PseudonymKey.domain_key
    domain_keys = {d: hmac.new(master, f"crmshield/pseudonym/{d}".encode(), hashlib.sha256).digest() for d in DOMAINS}
    return T.Keys(domain_keys=domain_keys, version=version)


def _plan(entity: str, df: DataFrame) -> dict[str, object]:
    plan = T.plan_columns(entity, df.columns)
    for col in plan.unknown:
        print(f"WARNING privacy job: {entity}.{col} is not in the privacy policy; dropped", file=sys.stderr)
    return {
        "columns": {c: {"action": a, "why": w} for c, (a, w) in plan.actions.items()},
        "unknown_columns": plan.unknown,
    }


def run(spark: SparkSession, raw: Path, out: Path) -> dict[str, object]:
    keys = derive_keys()
    read = {e: spark.read.parquet(str(raw / f"{e}.parquet")) for e in ("contacts", "companies", "deals", "tickets")}
    stats: dict[str, object] = {"key_version": keys.version, "method": "HMAC-SHA256, per-domain derived keys"}
    entities: dict[str, dict[str, object]] = {}

    contacts = read["contacts"].cache()
    ref_row = contacts.agg(F.max("updated_at"), F.max("created_at")).first()
    reference = (ref_row[0] or ref_row[1]).date() if ref_row and (ref_row[0] or ref_row[1]) else None
    if reference is None:
        sys.exit("privacy job: the raw contacts table is empty; nothing to do")
    stats["reference_date"] = reference.isoformat()

    staging = out.parent / f".{out.name}.staging-{uuid.uuid4().hex[:8]}"
    outputs: dict[str, DataFrame] = {}
    try:
        c_in = contacts.count()
        consent_counts = dict(
            contacts.groupBy((F.col("analytics_consent") == F.lit(True)).alias("ok")).count().collect()
        )
        outputs["contacts"] = T.transform_contacts(contacts, keys, reference)
        entities["contacts"] = {
            "rows_in": c_in,
            "rows_out": int(consent_counts.get(True, 0)),
            "excluded": {"excluded_consent": c_in - int(consent_counts.get(True, 0))},
            **_plan("contacts", contacts),
        }

        companies = read["companies"]
        outputs["companies"] = T.transform_companies(companies, keys)
        n = companies.count()
        entities["companies"] = {"rows_in": n, "rows_out": n, "excluded": {}, **_plan("companies", companies)}

        for entity, fk, fn in (
            ("deals", "contact_id", T.transform_deals),
            ("tickets", "requester_id", T.transform_tickets),
        ):
            df = read[entity]
            classified = T.classify_subject(df, contacts, fk).cache()
            by_status = dict(classified.groupBy("_subject_status").count().collect())
            kept = sum(int(v) for k, v in by_status.items() if k in ("ok", "no_subject"))
            if entity == "tickets":  # a ticket needs its requester
                kept = int(by_status.get("ok", 0))
            excluded = {k: int(v) for k, v in by_status.items() if k.startswith("excluded")}
            if entity == "tickets" and by_status.get("no_subject"):
                excluded["excluded_unknown_contact"] = excluded.get("excluded_unknown_contact", 0) + int(
                    by_status["no_subject"]
                )
            outputs[entity] = fn(classified, keys)
            entities[entity] = {"rows_in": sum(int(v) for v in by_status.values()), "rows_out": kept,
                                "excluded": excluded, **_plan(entity, df)}  # fmt: skip

        tickets_out = outputs["tickets"].cache()
        outputs["tickets"] = tickets_out
        red = tickets_out.agg(
            *[
                F.sum(T.count_token(F.col("subject"), tok) + T.count_token(F.col("description"), tok)).alias(name)
                for name, tok in T.PLACEHOLDERS.items()
            ]
        ).first()
        stats["redactions"] = {name: int(red[name] or 0) for name in T.PLACEHOLDERS} if red else {}

        for entity, df in outputs.items():
            df.write.mode("overwrite").option("compression", "zstd").parquet(str(staging / entity))
            written = spark.read.parquet(str(staging / entity)).count()
            if written != entities[entity]["rows_out"]:
                raise RuntimeError(f"{entity}: wrote {written} rows, expected {entities[entity]['rows_out']}")
        # swap the whole zone in at once
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        if out.exists():
            os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    stats["entities"] = entities
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="crmshield privacy job: raw zone -> privacy zone")
    parser.add_argument("--raw", required=True, type=Path, help="raw zone directory (<entity>.parquet)")
    parser.add_argument("--out", required=True, type=Path, help="privacy zone directory (replaced atomically)")
    parser.add_argument("--stats-out", type=Path, help="where to write the job's counts as JSON")
    args = parser.parse_args(argv)

    started = time.time()
    spark = (
        SparkSession.builder.appName("crmshield-privacy")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("WARN")
    try:
        stats = run(spark, args.raw.resolve(), args.out.resolve())
    finally:
        spark.stop()
    stats["seconds"] = round(time.time() - started, 2)
    if args.stats_out:
        args.stats_out.parent.mkdir(parents=True, exist_ok=True)
        args.stats_out.write_text(json.dumps(stats, indent=2, sort_keys=True), encoding="utf-8")
    summary = {e: v["rows_out"] for e, v in stats["entities"].items()}  # type: ignore[union-attr]
    print(f"privacy job: wrote {summary} in {stats['seconds']}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

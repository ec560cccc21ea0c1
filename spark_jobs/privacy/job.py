"""Privacy job: raw zone (PII) -> privacy zone (minimized, pseudonymized).

Started like any Spark application::

    spark-submit --master local[*] --py-files spark_jobs/privacy/transforms.py \\
        spark_jobs/privacy/job.py --raw data/raw --out data/privacy --plan plan.json --stats-out stats.json

``--plan`` is the column plan resolved from ``config/privacy_policy.yml`` by
``crmshield.policy.resolve_plan`` (validated against the raw tables' columns):
every output column with its action, rule and pseudonymization domain.

The master key arrives through the environment
(``CRMSHIELD_PSEUDONYMIZATION_KEY`` hex + ``CRMSHIELD_PSEUDONYMIZATION_KEY_VERSION``),
never on the command line. The job writes all four entities into a staging
directory and swaps it in only when every write succeeded, so the privacy
zone is always a complete, consistent set. ``--stats-out`` receives counts
only (no values): rows in/out, exclusions, redactions, column actions.

Beside the zone, in the restricted area (``--exclusions-out``, default
``<data>/restricted/exclusions`` next to ``--out``; directories 0700, files
0600, like the raw zone), the job writes the **exclusions list**: the
``contact_pk`` pseudonym (and nothing else) of every contact without analytics
consent, computed straight from the raw consent column rather than from the
rows the job kept. The validate stage checks that no privacy-zone row carries
one of them. It is swapped in together with the zone.
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
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # transforms.py beside this file

import transforms as T  # noqa: E402

DOMAINS = ("contact", "company", "deal", "ticket", "email", "phone")


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


def default_exclusions_path(out: Path) -> Path:
    """``<data>/restricted/exclusions`` for a privacy zone at ``<data>/privacy`` (``Settings`` layout)."""
    return out.parent / "restricted" / "exclusions"


def _restrict(path: Path) -> None:
    """Owner only: directories 0700, files 0600 (the tree Spark wrote under ``path``)."""
    os.chmod(path, 0o700)
    for root, dirs, files in os.walk(path):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o700)
        for f in files:
            os.chmod(os.path.join(root, f), 0o600)


def _swap(staging: Path, target: Path) -> None:
    """Replace ``target`` with ``staging`` (a directory) at once; the old one is removed."""
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def run(
    spark: SparkSession, raw: Path, out: Path, plan: dict[str, Any], exclusions_out: Path | None = None
) -> dict[str, object]:
    keys = derive_keys()
    exclusions_out = exclusions_out or default_exclusions_path(out)
    spark.catalog.clearCache()  # never reuse a cached frame of an earlier run in this session
    plans: dict[str, dict[str, Any]] = plan["entities"]
    consent = plan["consent"]
    read = {e: spark.read.parquet(str(raw / f"{e}.parquet")) for e in plans}
    stats: dict[str, object] = {
        "key_version": keys.version,
        "method": "HMAC-SHA256, per-domain derived keys",
        "policy_version": plan["version"],
    }
    entities: dict[str, dict[str, object]] = {}

    contacts = read[consent["entity"]].cache()
    ref_row = contacts.agg(F.max("updated_at"), F.max("created_at")).first()
    reference = (ref_row[0] or ref_row[1]).date() if ref_row and (ref_row[0] or ref_row[1]) else None
    if reference is None:
        if contacts.limit(1).count() == 0:
            sys.exit("privacy job: the raw contacts table is empty; nothing to do")
        sys.exit(
            "privacy job: no contact has a created_at or updated_at timestamp, so there is no reference date to"
            " generalize dates and ages against; map one of them in the source spec"
        )
    stats["reference_date"] = reference.isoformat()

    staging = out.parent / f".{out.name}.staging-{uuid.uuid4().hex[:8]}"
    # the restricted area exists owner-only before anything is written into it
    exclusions_out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(exclusions_out.parent, 0o700)
    exclusions_staging = exclusions_out.parent / f".{exclusions_out.name}.staging-{uuid.uuid4().hex[:8]}"
    outputs: dict[str, DataFrame] = {}
    try:
        # pseudonyms of the contacts without analytics consent, from raw's consent column alone
        plans_consent = plans[consent["entity"]]
        subject_out = T.subject_pseudonym_output(plans_consent)
        excluded_df = T.unconsented_subjects(
            contacts, consent["column"], plans_consent.get("subject_key") or "contact_id", keys, *subject_out
        )
        excluded_df.coalesce(1).write.mode("overwrite").parquet(str(exclusions_staging))
        _restrict(exclusions_staging)
        n_excluded = spark.read.parquet(str(exclusions_staging)).count()
        stats["exclusions"] = {"no_analytics_consent": n_excluded, "column": subject_out[0]}

        for entity, ep in plans.items():
            df = read[entity]
            for col in ep["unknown_columns"]:
                print(f"WARNING privacy job: {entity}.{col} is not in the privacy policy; dropped", file=sys.stderr)
            if entity == consent["entity"]:
                # the subjects themselves: keep those who consented
                ok = F.col(consent["column"]) == F.lit(True)
                counts = dict(df.groupBy(F.coalesce(ok, F.lit(False)).alias("ok")).count().collect())
                kept_df = df.filter(ok)
                by_status = {"ok": int(counts.get(True, 0)), "excluded_consent": int(counts.get(False, 0))}
            elif ep.get("subject_key"):
                # counted on the key column alone (a narrow join), so the wide rows (free text) are
                # joined, redacted and written exactly once, never cached
                narrow = T.classify_subject(
                    df.select(ep["subject_key"]), contacts, ep["subject_key"], consent["column"]
                )
                by_status = {k: int(v) for k, v in narrow.groupBy("_subject_status").count().collect()}
                classified = T.classify_subject(df, contacts, ep["subject_key"], consent["column"])
                allowed = ["ok"] if ep.get("subject_required") else ["ok", "no_subject"]
                if ep.get("subject_required") and by_status.get("no_subject"):
                    by_status["excluded_unknown_contact"] = by_status.get(
                        "excluded_unknown_contact", 0
                    ) + by_status.pop("no_subject")
                kept_df = classified.filter(F.col("_subject_status").isin(*allowed))
            else:
                kept_df, by_status = df, {"ok": df.count()}
            outputs[entity] = T.apply_plan(kept_df, ep, keys, reference)
            ka = plan.get("k_anonymity")
            if ka and ka["entity"] == entity:
                outputs[entity], stats["k_anonymity"] = T.k_anonymize(
                    outputs[entity], ka["quasi_identifiers"], int(ka["k"]), float(ka["max_suppression"])
                )
            excluded = {k: v for k, v in by_status.items() if k.startswith("excluded")}
            rows_in = sum(by_status.values())
            entities[entity] = {
                "rows_in": rows_in,
                "rows_out": rows_in - sum(excluded.values()),
                "excluded": excluded,
                "columns": ep["columns"],
                "unknown_columns": ep["unknown_columns"],
            }

        redactable = [o["output"] for ep in plans.values() for o in ep["outputs"] if o["action"] == "redact"]
        redactions = dict.fromkeys(T.PLACEHOLDERS, 0)
        for entity, df in outputs.items():
            df.write.mode("overwrite").option("compression", "zstd").parquet(str(staging / entity))
            written_df = spark.read.parquet(str(staging / entity))
            text_cols = [o["output"] for o in plans[entity]["outputs"] if o["action"] == "redact"]
            # placeholders are counted on what was written (columnar, cheap), with the row count
            row = written_df.agg(
                F.count(F.lit(1)).alias("_rows"),
                *[
                    F.sum(sum((T.count_token(F.col(c), tok) for c in text_cols), F.lit(0))).alias(name)
                    for name, tok in T.PLACEHOLDERS.items()
                    if text_cols
                ],
            ).first()
            written = int(row["_rows"]) if row else 0
            if written != entities[entity]["rows_out"]:
                raise RuntimeError(f"{entity}: wrote {written} rows, expected {entities[entity]['rows_out']}")
            if text_cols and row:
                for name in T.PLACEHOLDERS:
                    redactions[name] += int(row[name] or 0)
        stats["redactions"] = redactions
        stats["redacted_columns"] = redactable
        # swap the exclusions list and then the whole zone in at once
        _swap(exclusions_staging, exclusions_out)
        _swap(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(exclusions_staging, ignore_errors=True)
        spark.catalog.clearCache()
    stats["entities"] = entities
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="crmshield privacy job: raw zone -> privacy zone")
    parser.add_argument("--raw", required=True, type=Path, help="raw zone directory (<entity>.parquet)")
    parser.add_argument("--out", required=True, type=Path, help="privacy zone directory (replaced atomically)")
    parser.add_argument("--plan", required=True, type=Path, help="column plan resolved from the privacy policy (JSON)")
    parser.add_argument("--stats-out", type=Path, help="where to write the job's counts as JSON")
    parser.add_argument(
        "--exclusions-out",
        type=Path,
        help="restricted directory for the pseudonyms of contacts without analytics consent "
        "(default: restricted/exclusions beside --out)",
    )
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
        plan = json.loads(args.plan.read_text(encoding="utf-8"))
        exclusions = args.exclusions_out.resolve() if args.exclusions_out else None
        stats = run(spark, args.raw.resolve(), args.out.resolve(), plan, exclusions)
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

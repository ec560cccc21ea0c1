"""Benchmark of the privacy stage: the Spark job, warm, against a DuckDB reference.

``python -m crmshield.bench`` (``make bench``) generates a sample (default
1,000,000 contacts and about 3 tickets per contact), ingests it, and then, in
one process and one run:

1. runs the **DuckDB reference** on the raw Parquet files: the same read,
   consent filter and subject join, keyed HMAC-SHA256 pseudonyms (composed
   from ``sha256``, ``unhex`` and blob concatenation with the RFC 2104
   ipad/opad keys, exactly as ``transforms.hmac_sha256_hex`` does in Spark),
   generalizations, k-anonymity, free-text redaction and zstd Parquet writes.
   Redaction calls ``crmshield.redact.redact_batch`` through a vectorized
   (Arrow) DuckDB Python UDF, so both engines do the same redaction work. The
   UDF hands each vector to one of ``--udf-workers`` processes (default: one
   per core, as Spark runs one Python worker per core; in this process the
   GIL would serialize DuckDB's threads). With ``--redaction auto`` (default)
   it runs only when the Spark job calls ``redact_batch`` too, and is reported
   as skipped otherwise (or when ``crmshield.redact`` is not importable);
2. starts Spark in-process with the settings ``spark-submit`` gets from
   :func:`crmshield.privacy.spark_submit_command` (JVM start-up is timed and
   reported on its own), warms it up on a small sample, and times the privacy
   job (``spark_jobs/privacy/job.py``'s ``run``) on the full sample.

Both engines are timed on the full job and on the "hash path" (the same plan
with free-text redaction replaced by a pass-through), and the process tree's
resident memory (this process, the JVM, any Python workers) is sampled every
0.2 s. The figures and the ratio Spark / DuckDB are printed and written to
``<work>/bench_result.json``. Nothing here asserts a timing.

The pseudonymization key is a throwaway random key set in this process's
environment only (the Spark job reads it from there); it is never printed or
written. The generated data is synthetic.
"""

from __future__ import annotations

import argparse
import copy
import gc
import importlib.util
import json
import os
import platform
import secrets
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from crmshield.config import ENTITIES, Settings

if TYPE_CHECKING:
    import duckdb

DEFAULT_CONTACTS = 1_000_000
DEFAULT_TICKETS_PER_CONTACT = 3.0
DEFAULT_SEED = 42
DEFAULT_WARMUP_CONTACTS = 5_000
AS_OF = date(2026, 10, 31)
RATIO_TARGET = 3.0  # Spark warm wall time <= 3x the DuckDB reference
MEMORY_TARGET_MIB = 4096  # peak RSS of the Spark process tree at 10M contacts
MEMORY_TARGET_CONTACTS = 10_000_000
SAMPLE_FILE = "sample.json"
RESULT_FILE = "bench_result.json"
MIB = 1024 * 1024

RedactBatch = Callable[..., list[str | None]]


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- arguments -----------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m crmshield.bench",
        description="Privacy-stage benchmark: the Spark job (warm) against a single-node DuckDB reference "
        "doing the same read, hash, redact and write on the same raw files, measured in the same run.",
    )
    p.add_argument("--contacts", type=int, default=DEFAULT_CONTACTS, help="sample size (default %(default)s)")
    p.add_argument(
        "--tickets-per-contact",
        type=float,
        default=DEFAULT_TICKETS_PER_CONTACT,
        help="mean tickets per contact (default %(default)s, i.e. 3M tickets for 1M contacts)",
    )
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="generator seed (default %(default)s)")
    p.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="where the sample, outputs and result go (default: <data dir>/bench)",
    )
    p.add_argument(
        "--reuse",
        action="store_true",
        help="skip generation and ingest when the work dir already holds a sample with the same parameters",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout (progress on stderr)")
    p.add_argument("--skip-duckdb", action="store_true", help="time only the Spark job")
    p.add_argument("--skip-spark", action="store_true", help="time only the DuckDB reference")
    p.add_argument(
        "--warmup-contacts",
        type=int,
        default=DEFAULT_WARMUP_CONTACTS,
        help="size of the separate warm-up sample the Spark job runs on first (0: no warm-up; default %(default)s)",
    )
    p.add_argument(
        "--no-hash-path",
        dest="hash_path",
        action="store_false",
        help="skip the second, redaction-free run of each engine (halves the Spark time)",
    )
    p.add_argument(
        "--redaction",
        choices=("auto", "udf", "skip"),
        default="auto",
        help="DuckDB's free-text redaction: 'udf' runs crmshield.redact.redact_batch as an Arrow UDF; 'skip' passes "
        "text through; 'auto' (default) runs the UDF only when the Spark job calls redact_batch too, so that both "
        "engines do the same redaction work",
    )
    p.add_argument(
        "--udf-workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes behind DuckDB's redaction UDF (Spark runs one Python worker per core; a UDF in this "
        "process is serialized by the GIL); 0: in this process (default: CPU count, %(default)s)",
    )
    args = p.parse_args(argv)
    if args.udf_workers < 0:
        p.error("--udf-workers must be 0 or more")
    if args.contacts < 10:
        p.error("--contacts must be at least 10")
    if not 0 <= args.tickets_per_contact <= 1000:
        p.error("--tickets-per-contact must be between 0 and 1000")
    if args.warmup_contacts and args.warmup_contacts < 10:
        p.error("--warmup-contacts must be 0 or at least 10")
    if args.skip_duckdb and args.skip_spark:
        p.error("--skip-duckdb and --skip-spark leave nothing to measure")
    return args


# --- memory ------------------------------------------------------------------------
class MemorySampler:
    """Samples the resident set size of this process and all its descendants
    (the Spark JVM, its Python workers) every ``interval`` seconds in a thread.

    The figure is the sum of the processes' RSS (shared pages counted in each
    process, so an upper bound)."""

    def __init__(self, interval: float = 0.2) -> None:
        import psutil

        self._psutil = psutil
        self.interval = interval
        self.me = psutil.Process(os.getpid())
        self.peak = 0
        self.peak_parts: dict[str, int] = {}
        self.baseline = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _kind(self, proc: Any) -> str:
        if proc.pid == self.me.pid:
            return "driver_python"
        try:
            name = proc.name().lower()
        except (self._psutil.NoSuchProcess, self._psutil.AccessDenied):
            return "other"
        if name.startswith("java"):
            return "jvm"
        if name.startswith("python"):
            return "python_workers"
        return "other"

    def sample(self) -> int:
        parts: dict[str, int] = {}
        try:
            procs = [self.me, *self.me.children(recursive=True)]
        except self._psutil.NoSuchProcess:  # pragma: no cover - we are the process
            return 0
        for proc in procs:
            try:
                rss = proc.memory_info().rss
            except (self._psutil.NoSuchProcess, self._psutil.AccessDenied):
                continue  # a worker that just exited
            kind = self._kind(proc)
            parts[kind] = parts.get(kind, 0) + rss
        total = sum(parts.values())
        self.samples += 1
        if total > self.peak:
            self.peak, self.peak_parts = total, parts
        return total

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> MemorySampler:
        self.baseline = self.sample()
        self._thread = threading.Thread(target=self._loop, name="bench-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.sample()

    def to_dict(self) -> dict[str, Any]:
        return {
            "peak_rss_mib": round(self.peak / MIB, 1),
            "peak_rss_by_process_mib": {k: round(v / MIB, 1) for k, v in sorted(self.peak_parts.items())},
            "baseline_rss_mib": round(self.baseline / MIB, 1),
            "samples": self.samples,
            "interval_s": self.interval,
        }


def _release_memory() -> None:
    """Give freed heap back to the OS so the next phase's RSS starts low."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


@contextmanager
def _timer(result: dict[str, Any], key: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        result[key] = round(time.perf_counter() - started, 3)


# --- sample ------------------------------------------------------------------------
def _raw_rows(raw: Path) -> dict[str, int]:
    import pyarrow.parquet as pq

    return {e: pq.ParquetFile(raw / f"{e}.parquet").metadata.num_rows for e in ENTITIES}


def prepare_sample(
    work: Path, contacts: int, tickets_per_contact: float, seed: int, reuse: bool, label: str = "sample"
) -> dict[str, Any]:
    """Generate ``work/landing`` and ingest it into ``work/raw``, each timed.
    With ``reuse``, a work dir whose ``sample.json`` records the same
    parameters keeps what it already has (landing, or landing and raw)."""
    from crmshield.generate import generate
    from crmshield.ingest import ingest

    settings = Settings.from_env(work)
    params = {"contacts": contacts, "tickets_per_contact": tickets_per_contact, "seed": seed, "as_of": str(AS_OF)}
    meta_path = work / SAMPLE_FILE
    meta: dict[str, Any] = {}
    if reuse and meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        if meta.get("params") != params:
            meta = {}
    out: dict[str, Any] = {"params": params}
    if meta.get("generated") and all((settings.landing / f).is_file() for f in _landing_files()):
        out.update(generated=meta["generated"], generate_s=meta.get("generate_s"), generate_reused=True)
        _log(f"{label}: reusing landing files in {settings.landing}")
    else:
        meta_path.unlink(missing_ok=True)  # an interrupted run must not look complete
        work.mkdir(parents=True, exist_ok=True)
        _log(f"{label}: generating {contacts:,} contacts ({tickets_per_contact} tickets/contact) ...")
        with _timer(out, "generate_s"):
            res = generate(
                settings.landing,
                contacts=contacts,
                seed=seed,
                as_of=AS_OF,
                tickets_per_contact=tickets_per_contact,
            )
        out.update(generated=res.rows, generate_reused=False)
        meta = {"params": params, "generated": res.rows, "generate_s": out["generate_s"]}
        _write_json(meta_path, meta)
        _log(f"{label}: generated {_fmt_rows(res.rows)} in {out['generate_s']:.1f} s")
    raw_ok = all((settings.raw / f"{e}.parquet").is_file() for e in ENTITIES)
    if meta.get("ingested") and raw_ok and out["generate_reused"]:
        out.update(raw_rows=meta["ingested"], ingest_s=meta.get("ingest_s"), ingest_reused=True)
        _log(f"{label}: reusing raw tables in {settings.raw}")
    else:
        _log(f"{label}: ingesting into {settings.raw} ...")
        with _timer(out, "ingest_s"):
            ingest(settings)
        out.update(raw_rows=_raw_rows(settings.raw), ingest_reused=False)
        meta.update(ingested=out["raw_rows"], ingest_s=out["ingest_s"])
        _write_json(meta_path, meta)
        _log(f"{label}: raw {_fmt_rows(out['raw_rows'])} in {out['ingest_s']:.1f} s")
    return out


def _landing_files() -> list[str]:
    from crmshield.generate import FILES

    return list(FILES.values())


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True, default=str), encoding="utf-8")
    tmp.replace(path)


def _fmt_rows(rows: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in rows.items())


# --- keys --------------------------------------------------------------------------
def hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    """RFC 2104 inner and outer padded keys (as ``transforms._hmac_pads``, in bytes)."""
    import hashlib

    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def _key_var(domain: str, pad: str) -> str:
    return f"crmshield_pk_{domain}_{pad}"


def set_key_variables(con: duckdb.DuckDBPyConnection, domain_keys: dict[str, bytes]) -> None:
    """Bind each domain's ipad/opad as DuckDB variables (prepared parameters, so
    no key material appears in SQL text); ``getvariable`` folds them to constants."""
    for domain, key in domain_keys.items():
        ipad, opad = hmac_pads(key)
        con.execute(f"SET VARIABLE {_key_var(domain, 'ipad')} = ?", [ipad])
        con.execute(f"SET VARIABLE {_key_var(domain, 'opad')} = ?", [opad])


def hmac_sha256_sql(value_sql: str, domain: str) -> str:
    """HMAC-SHA256(domain key, utf8(value)) as 64 lower-case hex chars, in DuckDB SQL:
    sha256(opad || unhex(sha256(ipad || utf8(value))))."""
    ipad = f"getvariable('{_key_var(domain, 'ipad')}')"
    opad = f"getvariable('{_key_var(domain, 'opad')}')"
    return f"sha256({opad} || unhex(sha256({ipad} || encode(CAST({value_sql} AS VARCHAR)))))"


def canonical_shapes() -> dict[str, str]:
    """Domains whose values get a token only in canonical form (as ``transforms.CANONICAL_SHAPES``)."""
    from crmshield.normalize import E164_PATTERN, EMAIL_SHAPE

    return {"email": EMAIL_SHAPE, "phone": E164_PATTERN}


def pseudonym_sql(value_sql: str, domain: str, version: int, shapes: dict[str, str] | None = None) -> str:
    """``v<version>_<hmac hex>``, NULL for NULL (as ``transforms.Keys.pk``): in a domain
    with a canonical shape, a value not of that shape gets NULL too."""
    shape = (shapes or {}).get(domain)
    if shape is not None:
        value_sql = f"CASE WHEN regexp_matches({value_sql}, {_lit(shape)}) THEN {value_sql} END"
    return (
        f"CASE WHEN {value_sql} IS NULL THEN NULL ELSE 'v{int(version)}_' || {hmac_sha256_sql(value_sql, domain)} END"
    )


def derive_domain_keys(master: bytes, plan: dict[str, Any] | None = None) -> dict[str, bytes]:
    """One key per pseudonym domain (the package's domains and any the plan names),
    derived as :meth:`crmshield.keys.PseudonymKey.domain_key` (and the job) do."""
    from crmshield.keys import DOMAINS, PseudonymKey

    domains = set(DOMAINS)
    for ep in (plan or {}).get("entities", {}).values():
        domains.update(o["domain"] for o in ep["outputs"] if o["action"] == "pseudonymize")
    pk = PseudonymKey(master, 1, "bench")
    return {d: pk.domain_key(d) for d in sorted(domains)}


# --- DuckDB reference ----------------------------------------------------------------
def _q(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'


def _lit(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


AGE_BANDS = [(18, 24), (25, 34), (35, 44), (45, 54), (55, 64)]  # = transforms.AGE_BANDS


def _generalize_sql(col: str, rule: str, reference: date, lower: float | None, upper: float | None) -> str:
    if rule == "age_band":
        age = f"date_sub('year', CAST({col} AS DATE), DATE {_lit(reference.isoformat())})"
        bands = " ".join(f"WHEN {age} <= {hi} THEN '{lo}-{hi}'" for lo, hi in AGE_BANDS)
        return f"CASE WHEN {col} IS NULL OR {age} < 18 THEN 'unknown' {bands} ELSE '65+' END"
    if rule == "postal_prefix":
        p = f"upper(trim({col}))"
        digits = f"regexp_replace({p}, '[^0-9]', '', 'g')"
        alnum = f"regexp_replace({p}, '[^0-9A-Z]', '', 'g')"
        gb = (
            f"CASE WHEN instr({p}, ' ') > 0 THEN split_part({p}, ' ', 1) "
            f"ELSE substr({alnum}, 1, greatest(length({alnum}) - 3, 2)) END"
        )
        country = _q("country")
        return (
            f"CASE WHEN {col} IS NULL THEN NULL "
            f"WHEN {country} = 'US' THEN substr({digits}, 1, 3) "
            f"WHEN {country} = 'CA' THEN substr({alnum}, 1, 3) "
            f"WHEN {country} = 'GB' THEN {gb} "
            f"WHEN {country} IN ('DE', 'FR', 'ES', 'NL', 'AU') THEN substr({digits}, 1, 2) "
            "ELSE NULL END"
        )
    if rule == "day":
        return f"CAST({col} AS DATE)"
    if rule == "month":
        return f"strftime({col}, '%Y-%m')"
    if rule == "employee_band":
        return (
            f"CASE WHEN {col} IS NULL THEN NULL WHEN {col} < 10 THEN '1-9' WHEN {col} < 50 THEN '10-49' "
            f"WHEN {col} < 250 THEN '50-249' WHEN {col} < 1000 THEN '250-999' ELSE '1000+' END"
        )
    if rule == "clamp":
        both_int = all(v is not None and float(v).is_integer() for v in (lower, upper))
        return f"CAST(least(greatest({col}, {lower}), {upper}) AS {'BIGINT' if both_int else 'DOUBLE'})"
    raise ValueError(f"unknown generalization rule {rule!r}")


IDENTIFIERS = ("_c_first", "_c_last", "_c_email", "_c_phone", "_c_country")


def _select_sql(entity_plan: dict[str, Any], reference: date, version: int, redact: bool, has_ident: bool) -> str:
    """The plan's outputs as a DuckDB select list (as ``transforms.apply_plan``)."""
    shapes = canonical_shapes()
    cols = []
    for o in entity_plan["outputs"]:
        src = [_q(i) for i in o["inputs"]]
        action = o["action"]
        if action == "keep":
            expr = src[0]
        elif action == "pseudonymize":
            expr = pseudonym_sql(src[0], o["domain"], version, shapes)
        elif action == "generalize":
            expr = _generalize_sql(src[0], o["rule"], reference, o.get("lower"), o.get("upper"))
        elif action == "redact":
            ident = ", ".join(IDENTIFIERS) if has_ident else ", ".join(["CAST(NULL AS VARCHAR)"] * len(IDENTIFIERS))
            expr = f"crmshield_redact({src[0]}, {ident})" if redact else src[0]
        elif action == "derive" and o["rule"] == "hours_between":
            secs = f"date_diff('second', CAST({src[0]} AS TIMESTAMP), CAST({src[1]} AS TIMESTAMP))"
            # Spark rounds half up; on whole seconds that is exact integer arithmetic
            expr = f"CASE WHEN {secs} >= 0 THEN (({secs} + 18) // 36) / 100.0 END"
        else:
            raise ValueError(f"unknown plan action {action!r} for {o['output']}")
        cols.append(f"{expr} AS {_q(o['output'])}")
    return ", ".join(cols)


def _qi_sql(col: str, step: dict[str, Any]) -> str:
    """One rung of a quasi-identifier's ladder (as ``transforms.generalize_qi``)."""
    if step.get("suppress"):
        return "'*'"
    if "map" in step:
        cases = " ".join(f"WHEN {_lit(k)} THEN {_lit(v)}" for k, v in step["map"].items())
        return f"CASE {col} {cases} ELSE {col} END"
    if "truncate" in step:
        n = int(step["truncate"])
        return (
            f"CASE WHEN {col} IS NULL THEN {col} WHEN length({col}) > {n} "
            f"THEN substr({col}, 1, length({col}) - {n}) ELSE '*' END"
        )
    raise ValueError(f"unknown generalization step {step!r}")


def _k_anonymize(con: duckdb.DuckDBPyConnection, table: str, columns: list[str], ka: dict[str, Any]) -> str:
    """Full-domain generalization + suppression on ``table`` (as ``transforms.k_anonymize``).
    Returns the SELECT of the anonymized rows; records nothing but counts."""
    import itertools

    qis: dict[str, list[dict[str, Any]]] = ka["quasi_identifiers"]
    k, max_suppression = int(ka["k"]), float(ka["max_suppression"])
    names = list(qis)
    n = int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]

    def qi_cols(levels: tuple[int, ...]) -> list[str]:
        return [
            _q(q) if lvl == 0 else _qi_sql(_q(q), steps[lvl - 1])
            for (q, steps), lvl in zip(qis.items(), levels, strict=True)
        ]

    by_height: dict[int, list[tuple[int, ...]]] = {}
    for combo in itertools.product(*[range(len(s) + 1) for s in qis.values()]):
        by_height.setdefault(sum(combo), []).append(combo)
    chosen, chosen_small = None, n
    for height in sorted(by_height):
        for combo in by_height[height]:
            small = 0
            if n:
                group = ", ".join(qi_cols(combo))
                row = con.execute(
                    f"SELECT coalesce(sum(c), 0) FROM (SELECT count(*) AS c FROM {table} GROUP BY {group}) "
                    f"WHERE c < {k}"
                ).fetchone()
                small = int(row[0]) if row else 0
            if small < chosen_small or chosen is None:
                chosen, chosen_small = combo, small
        if n == 0 or (chosen is not None and chosen_small / n <= max_suppression):
            break
    assert chosen is not None
    generalized = ", ".join(f"{expr} AS {_q(q)}" for q, expr in zip(names, qi_cols(chosen), strict=True))
    others = [c for c in columns if c not in qis]
    part = ", ".join(_q(q) for q in names)
    # generalize first, then size the classes of the generalized values
    marked = (
        f"SELECT *, count(*) OVER (PARTITION BY {part}) AS _class_size "
        f"FROM (SELECT {', '.join([*(_q(c) for c in others), generalized])} FROM {table})"
    )
    con.execute(f"CREATE OR REPLACE TEMP TABLE _kmarked AS {marked}")
    # the job's report: achieved k, classes, suppressed rows, class-size histogram
    con.execute(
        f"SELECT min(c), count(*), sum(c) FROM (SELECT count(*) AS c FROM _kmarked "
        f"WHERE _class_size >= {k} GROUP BY {part})"
    ).fetchone()
    final = ", ".join(
        f"CASE WHEN _class_size < {k} THEN '*' ELSE {_q(c)} END AS {_q(c)}" if c in qis else _q(c) for c in columns
    )
    return f"SELECT {final} FROM _kmarked"


def _redact_udf(redact_batch: RedactBatch, pool: Executor | None = None) -> Callable[..., Any]:
    """An Arrow UDF calling ``redact_batch`` on each vector of rows; with ``pool``,
    in a worker process (the calling DuckDB thread waits without holding the GIL,
    so DuckDB's threads keep every worker busy)."""
    import pyarrow as pa

    def crmshield_redact(texts: Any, firsts: Any, lasts: Any, emails: Any, phones: Any, countries: Any) -> Any:
        cols = [c.to_pylist() for c in (texts, firsts, lasts, emails, phones, countries)]
        out = pool.submit(redact_batch, *cols).result() if pool else redact_batch(*cols)
        return pa.array(out, type=pa.string())

    return crmshield_redact


@contextmanager
def udf_pool(redact_batch: RedactBatch | None, workers: int) -> Iterator[Executor | None]:
    """Started (and warmed: each worker has imported the redaction module) worker
    processes for the redaction UDF, or None for in-process."""
    if redact_batch is None or workers <= 0:
        yield None
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        one = [["warm-up"]] * workers
        none = [[None]] * workers
        list(pool.map(redact_batch, one, none, none, none, none, none))
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def load_redact_batch() -> tuple[RedactBatch | None, str]:
    """``crmshield.redact.redact_batch`` and a description of how the reference runs it."""
    from crmshield.redact import redact_batch

    return redact_batch, "crmshield.redact.redact_batch as a DuckDB Arrow (vectorized) Python UDF"


def spark_job_redaction(settings: Settings) -> str:
    """How the Spark job redacts: 'redact_batch' when it calls ``crmshield.redact``
    (then both engines do the same redaction work), else 'builtin' (Spark regex)."""
    folder = settings.spark_jobs / "privacy"
    text = "".join(f.read_text(encoding="utf-8") for f in sorted(folder.glob("*.py")))
    return "redact_batch" if "redact_batch" in text else "builtin"


def _placeholders() -> dict[str, str]:
    """The tokens counted in redacted text (as ``transforms.PLACEHOLDERS``)."""
    from crmshield.redact import KINDS, PLACEHOLDERS

    return {k.lower(): PLACEHOLDERS[k] for k in KINDS}


def duckdb_reference(
    raw: Path,
    out: Path,
    plan: dict[str, Any],
    domain_keys: dict[str, bytes],
    version: int,
    redact_batch: RedactBatch | None,
    threads: int | None = None,
    pool: Executor | None = None,
) -> dict[str, Any]:
    """The privacy job's work in one DuckDB connection: raw Parquet -> ``out/<entity>.parquet``.

    ``redact_batch`` None passes free text through (the hash path). Returns
    per-entity counts (as the job's stats), per-step seconds and the total."""
    import duckdb

    missing = {
        o["domain"]
        for ep in plan["entities"].values()
        for o in ep["outputs"]
        if o["action"] == "pseudonymize" and o["domain"] not in domain_keys
    }
    if missing:
        raise ValueError(f"DuckDB reference: no key for pseudonym domain(s) {sorted(missing)}")
    started = time.perf_counter()
    steps: dict[str, float] = {}
    con = duckdb.connect()
    try:
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        set_key_variables(con, domain_keys)
        if redact_batch is not None:
            from duckdb.sqltypes import VARCHAR

            con.create_function(
                "crmshield_redact",
                _redact_udf(redact_batch, pool),
                [VARCHAR] * (1 + len(IDENTIFIERS)),
                VARCHAR,
                type="arrow",
                null_handling="special",
                side_effects=False,
            )
        plans: dict[str, dict[str, Any]] = plan["entities"]
        consent = plan["consent"]
        src = {e: f"read_parquet({_lit(str(raw / f'{e}.parquet'))})" for e in plans}
        ka = plan.get("k_anonymity")

        t = time.perf_counter()
        # the consenting entity's identifiers, read once (the job caches the contacts frame)
        con.execute(
            f"""CREATE TEMP TABLE _subjects AS SELECT contact_id AS _c_id, {_q(consent["column"])} AS _c_consent,
                first_name AS _c_first, last_name AS _c_last, email AS _c_email, phone AS _c_phone,
                country AS _c_country
            FROM {src[consent["entity"]]}"""
        )
        ref = con.execute(f"SELECT coalesce(max(updated_at), max(created_at)) FROM {src[consent['entity']]}").fetchone()
        if not ref or ref[0] is None:
            raise RuntimeError("DuckDB reference: the raw contacts table is empty")
        ref_value = ref[0]
        reference = ref_value.date() if isinstance(ref_value, datetime) else ref_value
        steps["read_subjects"] = round(time.perf_counter() - t, 3)

        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        entities: dict[str, dict[str, Any]] = {}
        placeholders = _placeholders()
        redactions = dict.fromkeys(placeholders, 0)
        for entity, ep in plans.items():
            t = time.perf_counter()
            redact_cols = [o["output"] for o in ep["outputs"] if o["action"] == "redact"]
            if entity == consent["entity"]:
                ok = f"{_q(consent['column'])} = true"
                counts = dict(
                    con.execute(f"SELECT coalesce({ok}, false), count(*) FROM {src[entity]} GROUP BY 1").fetchall()
                )
                by_status = {"ok": int(counts.get(True, 0)), "excluded_consent": int(counts.get(False, 0))}
                body = f"SELECT {_select_sql(ep, reference, version, False, False)} FROM {src[entity]} WHERE {ok}"
            elif ep.get("subject_key"):
                fk = _q(ep["subject_key"])
                status = (
                    f"CASE WHEN t.{fk} IS NULL THEN 'no_subject' WHEN s._c_id IS NULL THEN 'excluded_unknown_contact' "
                    "WHEN s._c_consent IS DISTINCT FROM true THEN 'excluded_consent' ELSE 'ok' END"
                )
                joined = f"{src[entity]} AS t LEFT JOIN _subjects AS s ON t.{fk} = s._c_id"
                by_status = {
                    str(k): int(v)
                    for k, v in con.execute(f"SELECT {status} AS st, count(*) FROM {joined} GROUP BY st").fetchall()
                }
                allowed = ["ok"] if ep.get("subject_required") else ["ok", "no_subject"]
                if ep.get("subject_required") and by_status.get("no_subject"):
                    by_status["excluded_unknown_contact"] = by_status.get(
                        "excluded_unknown_contact", 0
                    ) + by_status.pop("no_subject")
                keep = ", ".join(_lit(a) for a in allowed)
                select = _select_sql(ep, reference, version, redact_batch is not None, True)
                body = f"SELECT {select} FROM {joined} WHERE ({status}) IN ({keep})"
            else:
                by_status = {"ok": int(con.execute(f"SELECT count(*) FROM {src[entity]}").fetchone()[0])}  # type: ignore[index]
                body = f"SELECT {_select_sql(ep, reference, version, False, False)} FROM {src[entity]}"

            columns = [o["output"] for o in ep["outputs"]]
            if ka and ka["entity"] == entity:
                con.execute(f"CREATE OR REPLACE TEMP TABLE _kbase AS {body}")
                body = _k_anonymize(con, "_kbase", columns, ka)
            target = out / f"{entity}.parquet"
            con.execute(f"COPY ({body}) TO {_lit(str(target))} (FORMAT parquet, COMPRESSION zstd)")
            # the row count and the placeholders are read back from what was written (as the job does)
            counted = redact_cols if redact_batch is not None else []
            sums = "".join(
                ", sum(" + " + ".join(
                    f"(length(coalesce({_q(c)}, '')) - length(replace(coalesce({_q(c)}, ''), {_lit(tok)}, '')))"
                    f" // {len(tok)}"
                    for c in counted
                ) + f") AS {_q(name)}"
                for name, tok in placeholders.items()
                if counted
            )  # fmt: skip
            row = con.execute(f"SELECT count(*){sums} FROM read_parquet({_lit(str(target))})").fetchone()
            assert row is not None
            written = int(row[0])
            if counted:
                for i, name in enumerate(placeholders, start=1):
                    redactions[name] += int(row[i] or 0)
            for tmp in ("_kbase", "_kmarked"):
                con.execute(f"DROP TABLE IF EXISTS {tmp}")
            excluded = {k: v for k, v in by_status.items() if k.startswith("excluded")}
            rows_in = sum(by_status.values())
            entities[entity] = {
                "rows_in": rows_in,
                "rows_out": rows_in - sum(excluded.values()),
                "written": written,
                "excluded": excluded,
            }
            steps[entity] = round(time.perf_counter() - t, 3)
        threads_used = int(con.execute("SELECT current_setting('threads')").fetchone()[0])  # type: ignore[index]
    finally:
        con.close()
    return {
        "seconds": round(time.perf_counter() - started, 3),
        "steps_s": steps,
        "entities": entities,
        "redactions": redactions if redact_batch is not None else None,
        "reference_date": reference.isoformat(),
        "threads": threads_used,
    }


# --- Spark ---------------------------------------------------------------------------
def spark_session_conf(settings: Settings) -> tuple[dict[str, str], list[str]]:
    """The configuration ``spark-submit`` gets from :func:`spark_submit_command`
    (master, name, driver memory, --conf pairs) plus what the job's ``main`` sets
    on its builder; and the --py-files."""
    from crmshield.privacy import spark_submit_command

    cmd = spark_submit_command(settings, settings.data_dir / "plan.json", settings.data_dir / "stats.json")
    conf: dict[str, str] = {}
    py_files: list[str] = []
    flags = {"--master": "spark.master", "--name": "spark.app.name", "--driver-memory": "spark.driver.memory"}
    i = 1
    while i < len(cmd) - 1 and cmd[i].startswith("--"):
        flag, value = cmd[i], cmd[i + 1]
        if flag in flags:
            conf[flags[flag]] = value
        elif flag == "--conf":
            k, _, v = value.partition("=")
            conf[k] = v
        elif flag == "--py-files":
            py_files.extend(x for x in value.split(",") if x)
        i += 2
    # job.main's builder
    conf["spark.sql.session.timeZone"] = "UTC"
    conf["spark.sql.parquet.outputTimestampType"] = "TIMESTAMP_MICROS"
    conf.setdefault("spark.ui.showConsoleProgress", "false")  # spark-submit logs to a file; keep the console readable
    return conf, py_files


def load_job_module(settings: Settings) -> ModuleType:
    """``spark_jobs/privacy/job.py`` imported by path (it puts its own folder on
    sys.path for ``transforms``)."""
    path = settings.spark_jobs / "privacy" / "job.py"
    spec = importlib.util.spec_from_file_location("crmshield_bench_privacy_job", path)
    if spec is None or spec.loader is None:  # pragma: no cover
        raise RuntimeError(f"cannot import the privacy job from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def hash_path_plan(plan: dict[str, Any]) -> dict[str, Any]:
    """The plan with every redaction replaced by a pass-through (everything but redaction)."""
    p = copy.deepcopy(plan)
    for ep in p["entities"].values():
        for o in ep["outputs"]:
            if o["action"] == "redact":
                o["action"] = "keep"
    return p


def _spark_counts(stats: dict[str, Any]) -> dict[str, Any]:
    return {
        e: {"rows_in": v["rows_in"], "rows_out": v["rows_out"], "excluded": v["excluded"]}
        for e, v in stats["entities"].items()
    }


# --- reporting --------------------------------------------------------------------
def _rate(rows: int, seconds: float | None) -> float | None:
    return round(rows / seconds, 1) if seconds else None


def _engine_figures(seconds: float, rows_all: int, rows_ct: int) -> dict[str, Any]:
    return {
        "seconds": round(seconds, 3),
        "rows_per_s": _rate(rows_all, seconds),
        "contacts_tickets_rows_per_s": _rate(rows_ct, seconds),
    }


def compare_counts(spark: dict[str, Any], duck: dict[str, Any]) -> list[str]:
    """Mismatches between the two engines' per-entity counts (empty when they agree)."""
    problems = []
    for e in sorted(set(spark) | set(duck)):
        s, d = spark.get(e), duck.get(e)
        if s is None or d is None:
            problems.append(f"{e}: only in {'DuckDB' if s is None else 'Spark'}")
            continue
        for field in ("rows_in", "rows_out"):
            if s[field] != d[field]:
                problems.append(f"{e}.{field}: Spark {s[field]:,} vs DuckDB {d[field]:,}")
        if s.get("excluded", {}) != d.get("excluded", {}):
            problems.append(f"{e}.excluded: Spark {s.get('excluded')} vs DuckDB {d.get('excluded')}")
    return problems


def _s(v: float | None, unit: str = "s") -> str:
    return "-" if v is None else f"{v:,.1f} {unit}"


def _r(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def format_table(res: dict[str, Any]) -> str:
    sample, env = res["sample"], res["environment"]
    lines = [
        "crmshield privacy-stage benchmark",
        f"  machine     {env['cpu_count']} CPUs, {env['memory_gib']} GiB RAM; Spark {env.get('spark_version', '-')} "
        f"({env.get('spark_master', '-')}, driver {env.get('spark_driver_memory', '-')}); "
        f"DuckDB {env['duckdb_version']} ({env.get('duckdb_threads', '-')} threads)",
        f"  sample      {sample['params']['contacts']:,} contacts, {sample['params']['tickets_per_contact']} "
        f"tickets/contact, seed {sample['params']['seed']}",
        f"  generated   {_fmt_rows(sample['generated'])}",
        f"  raw (input) {_fmt_rows(sample['raw_rows'])}  = {res['input_rows']:,} rows "
        f"({res['input_rows_contacts_tickets']:,} contacts+tickets)",
        f"  generate    {_s(sample.get('generate_s'))}{'  (reused)' if sample.get('generate_reused') else ''}",
        f"  ingest      {_s(sample.get('ingest_s'))}{'  (reused)' if sample.get('ingest_reused') else ''}",
    ]
    spark, duck = res.get("spark"), res.get("duckdb")
    if spark:
        lines.append(f"  JVM start   {_s(spark['jvm_start_s'])}  (Spark session start-up; not in the ratio)")
        w = spark.get("warmup")
        if w:
            lines.append(f"  warm-up     {_s(w['seconds'])}  (job on a separate {w['contacts']:,}-contact sample)")
    lines.append(f"  redaction   Spark: {res.get('spark_redaction', '-')}")
    lines.append(f"              DuckDB: {res['redaction']}")
    lines.append("")
    header = f"  {'':<22}{'wall':>12}{'rows/s all':>14}{'rows/s c+t':>14}{'peak RSS tree':>16}"
    lines += [header, "  " + "-" * (len(header) - 2)]
    for label, block in (("Spark  full (warm)", spark and spark.get("full")),
                         ("Spark  hash path", spark and spark.get("hash_path")),
                         ("DuckDB full", duck and duck.get("full")),
                         ("DuckDB hash path", duck and duck.get("hash_path"))):  # fmt: skip
        if not block:
            continue
        mem = block.get("memory", {}).get("peak_rss_mib")
        lines.append(
            f"  {label:<22}{_s(block['seconds']):>12}{_r(block['rows_per_s']):>14}"
            f"{_r(block['contacts_tickets_rows_per_s']):>14}{_s(mem, 'MiB'):>16}"
        )
    lines.append("")
    for name, ratio in res.get("ratios", {}).items():
        if ratio is None:
            lines.append(f"  ratio Spark/DuckDB {name:<10}   n/a   (the engines' redaction differs; see above)")
            continue
        verdict = "PASS" if ratio <= RATIO_TARGET else "OVER"
        lines.append(f"  ratio Spark/DuckDB {name:<10} {ratio:5.2f}x   {verdict} (target <= {RATIO_TARGET:.1f}x)")
    if res.get("headline_ratio") is not None:
        lines.append(f"  headline ratio ({res['headline_ratio_kind']}): {res['headline_ratio']:.2f}x")
    mem = res.get("memory")
    if mem:
        verdict = "PASS" if mem["spark_peak_rss_mib"] < MEMORY_TARGET_MIB else "OVER"
        scope = (
            "at the target size"
            if sample["params"]["contacts"] >= MEMORY_TARGET_CONTACTS
            else f"target is for {MEMORY_TARGET_CONTACTS:,} contacts; this run has {sample['params']['contacts']:,}"
        )
        parts = ", ".join(f"{k} {v:,.0f}" for k, v in mem["spark_peak_by_process_mib"].items())
        lines.append(
            f"  peak RSS Spark tree  {mem['spark_peak_rss_mib']:,.0f} MiB ({parts})  {verdict} "
            f"(< {MEMORY_TARGET_MIB} MiB; {scope})"
        )
    if duck:
        lines.append(f"  peak RSS DuckDB      {duck['peak_rss_mib']:,.0f} MiB (this process, in-process DuckDB)")
    if res.get("count_mismatches"):
        lines.append("  WARNING row counts differ between Spark and DuckDB:")
        lines += [f"    {m}" for m in res["count_mismatches"]]
    elif spark and duck:
        lines.append("  row counts  Spark and DuckDB agree on every entity (in, out, exclusions)")
    if res.get("code_changed_during_run"):
        lines.append(f"  WARNING code changed during the run: {', '.join(res['code_changed_during_run'])}")
    load = env.get("load_average")
    if load:
        lines.append(
            f"  load avg    {load[0]:.2f} at start, {env.get('load_average_end', ['-'])[0]} at end "
            f"(on {env['cpu_count']} CPUs; other work on the machine skews the figures)"
        )
    lines.append(f"  result      {res['result_file']}")
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------
def _environment() -> dict[str, Any]:
    import duckdb
    import psutil

    return {
        "cpu_count": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "duckdb_version": duckdb.__version__,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def code_digests(settings: Settings) -> dict[str, str]:
    """sha256 (first 16 hex) of the code both engines run, to spot an edit during a run."""
    import hashlib

    files = sorted((settings.spark_jobs / "privacy").glob("*.py"))
    files += [Path(__file__).with_name(n) for n in ("redact.py", "normalize.py")]
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest()[:16] for f in files if f.is_file()}


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    from crmshield.keys import ENV_KEY, ENV_VERSION
    from crmshield.privacy import resolve_column_plan

    base = Settings.from_env()
    work = (args.work_dir or base.data_dir / "bench").resolve()
    work.mkdir(parents=True, exist_ok=True)
    settings = Settings.from_env(work)
    res: dict[str, Any] = {
        "started_at": datetime.now().isoformat(timespec="seconds"),
        "work_dir": str(work),
        "environment": _environment(),
        "code": code_digests(base),
        "targets": {
            "ratio_max": RATIO_TARGET,
            "spark_peak_rss_mib_max": MEMORY_TARGET_MIB,
            "memory_target_contacts": MEMORY_TARGET_CONTACTS,
        },
    }
    sample = prepare_sample(work, args.contacts, args.tickets_per_contact, args.seed, args.reuse)
    res["sample"] = sample
    raw_rows = sample["raw_rows"]
    rows_all = sum(raw_rows.values())
    rows_ct = raw_rows["contacts"] + raw_rows["tickets"]
    res["input_rows"], res["input_rows_contacts_tickets"] = rows_all, rows_ct
    plan = resolve_column_plan(settings)
    hashed_plan = hash_path_plan(plan)

    # a throwaway key, in this process's environment only (the job reads it there); never printed or written
    saved_env = {k: os.environ.get(k) for k in (ENV_KEY, ENV_VERSION, "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")}
    master = secrets.token_bytes(32)
    version = 1
    os.environ[ENV_KEY] = master.hex()
    os.environ[ENV_VERSION] = str(version)
    domain_keys = derive_domain_keys(master, plan)
    del master
    redact_batch, redaction_note = load_redact_batch()
    spark_redaction = spark_job_redaction(settings)
    res["spark_redaction"] = (
        "crmshield.redact.redact_batch" if spark_redaction == "redact_batch" else "Spark built-in regex (transforms)"
    )
    if args.redaction == "skip":
        redact_batch, redaction_note = None, "skipped (--redaction skip)"
    elif args.redaction == "auto" and redact_batch is not None and spark_redaction != "redact_batch":
        redact_batch = None
        redaction_note = (
            "skipped (auto: the Spark job does not call crmshield.redact.redact_batch yet, so the UDF would not "
            "be the same work; --redaction udf runs it anyway)"
        )
    elif redact_batch is not None:
        workers = args.udf_workers
        redaction_note += f", in {workers} worker process{'es' if workers != 1 else ''}" if workers else ", in-process"
    res["redaction"] = redaction_note
    same_redaction = redact_batch is not None and spark_redaction == "redact_batch"
    try:
        if not args.skip_duckdb:
            res["duckdb"] = _run_duckdb(
                work, settings, plan, domain_keys, version, redact_batch, args, rows_all, rows_ct
            )
            res["environment"]["duckdb_threads"] = res["duckdb"]["threads"]
            _release_memory()
        if not args.skip_spark:
            res["spark"] = _run_spark(work, settings, plan, hashed_plan, args, rows_all, rows_ct)
            res["environment"].update(res["spark"].pop("environment"))
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        domain_keys.clear()

    spark, duck = res.get("spark"), res.get("duckdb")
    ratios: dict[str, float | None] = {}
    if spark and duck:
        ratios["full"] = round(spark["full"]["seconds"] / duck["full"]["seconds"], 3) if same_redaction else None
        if spark.get("hash_path") and duck.get("hash_path"):
            ratios["hash path"] = round(spark["hash_path"]["seconds"] / duck["hash_path"]["seconds"], 3)
        res["ratios"] = ratios
        if ratios.get("full") is not None:
            res["headline_ratio"] = ratios["full"]
            res["headline_ratio_kind"] = "full job, both engines redacting with crmshield.redact"
        elif ratios.get("hash path") is not None:
            res["headline_ratio"] = ratios["hash path"]
            res["headline_ratio_kind"] = (
                "hash path; the full jobs are not compared because the engines' redaction differs "
                f"(Spark: {res['spark_redaction']}; DuckDB: {'redact_batch UDF' if redact_batch else 'none'})"
            )
        res["count_mismatches"] = compare_counts(spark["counts"], duck["counts"])
        if spark.get("hash_path_counts"):
            res["count_mismatches"] += [
                f"hash path: {m}" for m in compare_counts(spark["hash_path_counts"], duck["counts"])
            ]
    if spark:
        res["memory"] = {
            "spark_peak_rss_mib": spark["peak_rss_mib"],
            "spark_peak_by_process_mib": spark["peak_rss_by_process_mib"],
        }
    res["finished_at"] = datetime.now().isoformat(timespec="seconds")
    res["environment"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    changed = sorted(k for k, v in code_digests(base).items() if res["code"].get(k) != v)
    if changed:
        res["code_changed_during_run"] = changed
        _log(f"WARNING code changed during the run: {', '.join(changed)}; the figures may mix versions")
    res["result_file"] = str(work / RESULT_FILE)
    _write_json(work / RESULT_FILE, res)
    return res


def _run_duckdb(
    work: Path,
    settings: Settings,
    plan: dict[str, Any],
    domain_keys: dict[str, bytes],
    version: int,
    redact_batch: RedactBatch | None,
    args: argparse.Namespace,
    rows_all: int,
    rows_ct: int,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    runs: list[tuple[str, RedactBatch | None]] = [("full", redact_batch)]
    if args.hash_path and redact_batch is not None:
        runs.append(("hash_path", None))
    peak = 0.0
    for name, fn in runs:
        target = work / ("duckdb_ref" if name == "full" else "duckdb_ref_hashpath")
        _log(f"DuckDB reference ({name.replace('_', ' ')}) -> {target} ...")
        # the UDF's worker processes start before the clock (Spark's Python workers are warm too)
        with udf_pool(fn, args.udf_workers) as pool, MemorySampler() as mem:
            ref = duckdb_reference(settings.raw, target, plan, domain_keys, version, fn, pool=pool)
        block = _engine_figures(ref["seconds"], rows_all, rows_ct)
        block.update(steps_s=ref["steps_s"], memory=mem.to_dict(), redactions=ref["redactions"])
        out[name] = block
        peak = max(peak, mem.peak / MIB)
        out.setdefault(
            "counts", {e: {k: v[k] for k in ("rows_in", "rows_out", "excluded")} for e, v in ref["entities"].items()}
        )
        out["threads"] = ref["threads"]
        for e, v in ref["entities"].items():
            if v["written"] != v["rows_out"]:
                _log(f"WARNING DuckDB reference {e}: wrote {v['written']} rows, expected {v['rows_out']}")
        if name == "hash_path":
            shutil.rmtree(target, ignore_errors=True)  # free text kept as is: do not leave it lying around
        _log(f"DuckDB {name.replace('_', ' ')}: {ref['seconds']:.1f} s, peak RSS {mem.peak / MIB:,.0f} MiB")
        _release_memory()
    if redact_batch is None:
        # without a redaction function the full run is the hash path
        out["hash_path"] = out["full"]
    out["peak_rss_mib"] = round(peak, 1)
    return out


def _run_spark(
    work: Path,
    settings: Settings,
    plan: dict[str, Any],
    hashed_plan: dict[str, Any],
    args: argparse.Namespace,
    rows_all: int,
    rows_ct: int,
) -> dict[str, Any]:
    from crmshield.java import java_version
    from crmshield.privacy import resolve_column_plan

    java_version()
    os.environ["PYSPARK_PYTHON"] = sys.executable  # as run_privacy_job: Python workers from this venv
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    conf, py_files = spark_session_conf(settings)
    out: dict[str, Any] = {"conf": {k: v for k, v in conf.items() if "key" not in k.lower()}}
    job = load_job_module(settings)
    from pyspark.sql import SparkSession

    _log(f"Spark: starting the session ({conf.get('spark.master')}, driver memory {conf.get('spark.driver.memory')})")
    with _timer(out, "jvm_start_s"):
        builder = SparkSession.builder
        for k, v in conf.items():
            builder = builder.config(k, v)
        spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("WARN")
        for f in py_files:
            spark.sparkContext.addPyFile(f)
    out["environment"] = {
        "spark_version": spark.version,
        "spark_master": conf.get("spark.master"),
        "spark_driver_memory": conf.get("spark.driver.memory"),
        "spark_shuffle_partitions": conf.get("spark.sql.shuffle.partitions"),
    }
    _log(f"Spark: session up in {out['jvm_start_s']:.1f} s")
    peak, peak_parts = 0, {}
    try:
        if args.warmup_contacts:
            wdir = work / "warmup"
            wsample = prepare_sample(
                wdir, args.warmup_contacts, args.tickets_per_contact, args.seed, args.reuse, label="warm-up sample"
            )
            wsettings = Settings.from_env(wdir)
            wplan = resolve_column_plan(wsettings)
            _log(f"Spark: warm-up run on {args.warmup_contacts:,} contacts ...")
            warm: dict[str, Any] = {"contacts": args.warmup_contacts, "raw_rows": wsample["raw_rows"]}
            with _timer(warm, "seconds"):
                job.run(spark, wsettings.raw, wsettings.privacy, wplan)
            out["warmup"] = warm
            _log(f"Spark: warm-up {warm['seconds']:.1f} s")
        runs = [("full", plan, work / "privacy")]
        if args.hash_path:
            runs.append(("hash_path", hashed_plan, work / "privacy_hashpath"))
        for name, p, target in runs:
            _release_memory()
            _log(f"Spark: timed run ({name.replace('_', ' ')}) -> {target} ...")
            started = time.perf_counter()
            with MemorySampler() as mem:
                stats = job.run(spark, settings.raw, target, p)
            seconds = time.perf_counter() - started
            block = _engine_figures(seconds, rows_all, rows_ct)
            block["memory"] = mem.to_dict()
            if name == "full":
                block["redactions"] = stats.get("redactions")
                block["k_anonymity"] = {
                    k: v for k, v in (stats.get("k_anonymity") or {}).items() if k != "class_size_histogram"
                }
                out["counts"] = _spark_counts(stats)
            else:
                out["hash_path_counts"] = _spark_counts(stats)
                shutil.rmtree(target, ignore_errors=True)  # free text kept as is: do not leave it lying around
            out[name] = block
            if mem.peak > peak:
                peak, peak_parts = mem.peak, mem.peak_parts
            _log(f"Spark {name.replace('_', ' ')}: {seconds:.1f} s, peak RSS tree {mem.peak / MIB:,.0f} MiB")
    finally:
        spark.stop()
    out["peak_rss_mib"] = round(peak / MIB, 1)
    out["peak_rss_by_process_mib"] = {k: round(v / MIB, 1) for k, v in sorted(peak_parts.items())}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    res = run_benchmark(args)
    if args.json:
        print(json.dumps(res, indent=2, sort_keys=True, default=str))
    else:
        print(format_table(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

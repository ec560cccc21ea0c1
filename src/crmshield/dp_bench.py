"""Benchmark of the DuckDB engine for SmartNoise SQL against plain DuckDB and SmartNoise's pandas engine.

``python -m crmshield.dp_bench [--rows 1000000] [--repeat 3] [--json FILE]``
builds, in one process, a synthetic tickets table in an in-memory DuckDB
(``marts.tickets``: a pseudonymous privacy unit ``contact_pk`` shaped like
the pipeline's, ``'v1_'`` + 64 hex characters; about 1.9 tickets per person
with a long tail of heavy users; channel, priority, month, resolution hours,
satisfaction) and times one grouped query::

    SELECT channel, priority, COUNT(*) AS n, AVG(resolution_hours) AS h
    FROM marts.tickets GROUP BY channel, priority

three ways:

1. **plain**: the query on DuckDB, no differential privacy;
2. **engine**: :func:`crmshield.dp_engine.private_reader` ``.execute`` - the
   full DP path: SmartNoise's rewrite, the per-person bound (``max_ids``),
   the exact aggregates in DuckDB, noise, censoring and post-processing.
   Its SQL alone (the rewritten query run directly) is reported too, and
   the same for the older ``"window"`` construction of the per-person bound;
3. **pandas**: SmartNoise's own pandas engine, ``snsql.from_df`` (which
   copies the DataFrame into an in-memory SQLite database: "set-up") and
   ``execute`` ("query"), reported separately and together. Loading the
   DataFrame from DuckDB is reported but not counted.

The engine's fixed overhead (rewrite, mechanisms, post-processing, a query
on a tiny table) is measured on a 100-row table. Each figure is the median
of ``--repeat`` runs (minimum also shown); the pandas engine runs
``--pandas-repeat`` times (default 1: it takes seconds). Targets, printed as
PASS/MISS: engine at least 50x faster than pandas (set-up + query), and
engine <= 10 x plain + 100 ms. Nothing here asserts a timing. The data is
synthetic.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb

QUERY = (
    "SELECT channel, priority, COUNT(*) AS n, AVG(resolution_hours) AS h FROM marts.tickets GROUP BY channel, priority"
)
TINY_QUERY = QUERY.replace("marts.tickets", "marts.tickets_tiny")
MAX_IDS = 3
EPSILON = 1.0
DELTA = 1e-6
TARGET_VS_PANDAS = 50.0
TARGET_PLAIN_FACTOR = 10.0
TARGET_FIXED_S = 0.100

CHANNELS = ["email", "phone", "chat", "web", "social"]
CHANNEL_P = [0.40, 0.25, 0.20, 0.10, 0.05]
PRIORITIES = ["low", "normal", "high", "urgent"]
PRIORITY_P = [0.30, 0.45, 0.20, 0.05]


def table_metadata(table: str = "tickets", *, censor_dims: bool = True) -> dict[str, Any]:
    """SmartNoise metadata (dict form, as :func:`crmshield.publish.smartnoise_metadata` writes it).

    ``censor_dims=False`` is how the shipped marts run: every grouping column
    has public keys, so there is no distinct-person threshold."""
    return {
        "warehouse": {
            "marts": {
                table: {
                    "row_privacy": False,
                    "max_ids": MAX_IDS,
                    "sample_max_ids": True,
                    "censor_dims": censor_dims,
                    "clamp_counts": True,
                    "clamp_columns": True,
                    "use_dpsu": False,
                    "contact_pk": {"type": "string", "private_id": True},
                    "channel": {"type": "string"},
                    "priority": {"type": "string"},
                    "created_month": {"type": "string"},
                    "resolution_hours": {"type": "float", "lower": 0, "upper": 336},
                    "satisfaction": {"type": "int", "lower": 1, "upper": 5},
                }
            }
        }
    }


def build_tickets(conn: duckdb.DuckDBPyConnection, rows: int, *, table: str = "tickets", seed: int = 7) -> int:
    """Create ``marts.<table>`` with ``rows`` synthetic tickets; returns the number of persons.

    Tickets per person: geometric (mean about 1.8) plus, for 0.3 % of the
    persons, a Pareto tail (up to thousands of tickets). Rows are shuffled.
    Deterministic for a given ``rows`` and ``seed``.
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    per_person = rng.geometric(0.55, rows)
    heavy = rng.random(rows) < 0.003
    per_person[heavy] += (rng.pareto(1.2, int(heavy.sum())) * 8).astype(np.int64) + 3
    total = np.cumsum(per_person)
    persons = int(np.searchsorted(total, rows)) + 1
    per_person = per_person[:persons]
    per_person[-1] -= int(total[persons - 1]) - rows
    person = np.repeat(np.arange(persons, dtype=np.int64), per_person)[rng.permutation(rows)]
    hours = np.round(rng.exponential(30.0, rows) * 4) / 4
    frame = pd.DataFrame(
        {
            "person": person,
            "channel": pd.Categorical.from_codes(rng.choice(len(CHANNELS), rows, p=CHANNEL_P), CHANNELS),
            "priority": pd.Categorical.from_codes(rng.choice(len(PRIORITIES), rows, p=PRIORITY_P), PRIORITIES),
            "month": rng.integers(0, 24, rows),
            "hours": np.where(rng.random(rows) < 0.15, np.nan, hours),
            "satisfaction": np.where(rng.random(rows) < 0.4, -1, rng.integers(1, 6, rows)),
        }
    )
    conn.execute("CREATE SCHEMA IF NOT EXISTS marts")
    conn.register("_dp_bench_frame", frame)
    try:
        conn.execute(
            f"""CREATE OR REPLACE TABLE marts.{table} AS SELECT
                'v1_' || sha256('contact-' || CAST(person AS VARCHAR)) AS contact_pk,
                CAST(channel AS VARCHAR) AS channel,
                CAST(priority AS VARCHAR) AS priority,
                strftime(DATE '2023-01-01' + to_months(CAST(month AS INTEGER)), '%Y-%m') AS created_month,
                hours AS resolution_hours,
                CAST(NULLIF(satisfaction, -1) AS INTEGER) AS satisfaction
            FROM _dp_bench_frame"""
        )
    finally:
        conn.unregister("_dp_bench_frame")
    return persons


def _timed(fn: Callable[[], Any], repeat: int) -> tuple[list[float], Any]:
    times: list[float] = []
    result = None
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def _stats(times: Sequence[float]) -> dict[str, Any]:
    return {"median_s": statistics.median(times), "min_s": min(times), "runs_s": list(times)}


def run(
    rows: int,
    repeat: int,
    *,
    pandas_repeat: int = 1,
    tiny_rows: int = 100,
    with_pandas: bool = True,
    with_window: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Build the tables, time everything, return the figures (seconds)."""
    import duckdb
    import snsql
    from snsql import Privacy

    from crmshield.dp_engine import _SCALE_CACHE, private_reader

    privacy = Privacy(epsilon=EPSILON, delta=DELTA)
    conn = duckdb.connect(":memory:")
    t0 = time.perf_counter()
    persons = build_tickets(conn, rows)
    build_tiny_persons = build_tickets(conn, tiny_rows, table="tickets_tiny")
    build_s = time.perf_counter() - t0
    heavy = conn.execute(
        f"SELECT COUNT(*) FROM (SELECT contact_pk FROM marts.tickets GROUP BY 1 HAVING COUNT(*) > {MAX_IDS})"
    ).fetchone()[0]
    threads = conn.execute("SELECT current_setting('threads')").fetchone()[0]
    log(
        f"data: {rows:,} tickets, {persons:,} persons ({rows / persons:.2f} per person,"
        f" {heavy:,} with more than max_ids={MAX_IDS}); tiny table {tiny_rows} rows;"
        f" built in {build_s:.1f} s; DuckDB threads={threads}"
    )
    out: dict[str, Any] = {
        "rows": rows,
        "persons": persons,
        "heavy_persons": heavy,
        "tiny_rows": tiny_rows,
        "tiny_persons": build_tiny_persons,
        "repeat": repeat,
        "query": QUERY,
        "max_ids": MAX_IDS,
        "epsilon": EPSILON,
        "delta": DELTA,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "duckdb": duckdb.__version__,
            "duckdb_threads": threads,
        },
    }

    # 1. plain DuckDB
    plain_times, _ = _timed(lambda: conn.execute(QUERY).fetchall(), max(repeat, 3))
    out["plain"] = _stats(plain_times)

    # 2. the engine (first call separately: empty noise-scale cache)
    _SCALE_CACHE.clear()
    reader = private_reader(conn, metadata=table_metadata(), privacy=privacy)
    first_times, _ = _timed(lambda: reader.execute(QUERY), 1)
    out["engine_first_call_s"] = first_times[0]
    engine_times, released = _timed(lambda: reader.execute(QUERY), repeat)
    out["engine"] = _stats(engine_times)
    out["engine_released_rows"] = len(released) - 1
    sql = reader.reader.last_sql
    sql_times, _ = _timed(lambda: conn.execute(sql).fetchall(), repeat)
    out["engine_sql"] = _stats(sql_times)

    tiny = private_reader(conn, metadata=table_metadata("tickets_tiny"), privacy=privacy)
    tiny.execute(TINY_QUERY)
    fixed_times, _ = _timed(lambda: tiny.execute(TINY_QUERY), max(repeat, 5))
    out["fixed_overhead"] = _stats(fixed_times)

    if with_window:
        window = private_reader(conn, metadata=table_metadata(), privacy=privacy, strategy="window")
        window_times, _ = _timed(lambda: window.execute(QUERY), repeat)
        out["engine_window"] = _stats(window_times)
        window_sql = window.reader.last_sql
        wsql_times, _ = _timed(lambda: conn.execute(window_sql).fetchall(), repeat)
        out["engine_window_sql"] = _stats(wsql_times)

    # 2b. the engine as the marts run it: public keys, no threshold (no COUNT(DISTINCT unit))
    public = private_reader(conn, metadata=table_metadata(censor_dims=False), privacy=privacy)
    public.execute(QUERY)
    public_times, _ = _timed(lambda: public.execute(QUERY), repeat)
    out["engine_public_keys"] = _stats(public_times)

    # 3. SmartNoise's pandas engine (DataFrame -> SQLite)
    if with_pandas:
        cols = "contact_pk, channel, priority, resolution_hours"
        load_times, frame = _timed(lambda: conn.execute(f"SELECT {cols} FROM marts.tickets").df(), 1)
        out["pandas_load_df"] = _stats(load_times)
        setup, query, total = [], [], []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(pandas_repeat):
                gc.collect()
                t0 = time.perf_counter()
                pandas_reader = snsql.from_df(frame, metadata=table_metadata(), privacy=privacy)
                t1 = time.perf_counter()
                pandas_reader.execute(QUERY)
                t2 = time.perf_counter()
                setup.append(t1 - t0)
                query.append(t2 - t1)
                total.append(t2 - t0)
                del pandas_reader
        out["pandas_setup"] = _stats(setup)
        out["pandas_query"] = _stats(query)
        out["pandas_total"] = _stats(total)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gc.collect()
            pandas_public = snsql.from_df(frame, metadata=table_metadata(censor_dims=False), privacy=privacy)
            pq_times, _ = _timed(lambda: pandas_public.execute(QUERY), pandas_repeat)
            del pandas_public
        out["pandas_public_keys_query"] = _stats(pq_times)
    conn.close()
    _add_targets(out)
    return out


def _add_targets(out: dict[str, Any]) -> None:
    plain = out["plain"]["median_s"]
    fixed = out["fixed_overhead"]["median_s"]
    limit = TARGET_PLAIN_FACTOR * plain + TARGET_FIXED_S
    targets: dict[str, Any] = {}
    for name, key, pandas_query in (
        ("threshold", "engine", "pandas_query"),
        ("public_keys", "engine_public_keys", "pandas_public_keys_query"),
    ):
        engine = out[key]["median_s"]
        t: dict[str, Any] = {
            "engine_vs_plain": {
                "ratio": engine / plain,
                "limit_s": limit,
                "engine_s": engine,
                "passed": engine <= limit,
                "fixed_overhead_within_100ms": fixed <= TARGET_FIXED_S,
            }
        }
        if pandas_query in out:
            ratio_total = (out["pandas_setup"]["median_s"] + out[pandas_query]["median_s"]) / engine
            t["engine_vs_pandas"] = {
                "ratio_total": ratio_total,
                "ratio_query_only": out[pandas_query]["median_s"] / engine,
                "target": TARGET_VS_PANDAS,
                "passed": ratio_total >= TARGET_VS_PANDAS,
            }
        targets[name] = t
    out["targets"] = targets


def _fmt(stats: dict[str, Any]) -> str:
    return f"{stats['median_s']:9.3f} s  (min {stats['min_s']:.3f})"


def report(out: dict[str, Any], log: Callable[[str], None] = print) -> None:
    log(f"query: {out['query']}")
    log(f"plain DuckDB (no DP)          {_fmt(out['plain'])}")
    log(f"engine, full DP               {_fmt(out['engine'])}")
    log(f"  its rewritten SQL alone     {_fmt(out['engine_sql'])}")
    log(f"  first call (scale search)   {out['engine_first_call_s']:9.3f} s")
    if "engine_window" in out:
        log(f"engine, 'window' bound        {_fmt(out['engine_window'])}")
        log(f"  its rewritten SQL alone     {_fmt(out['engine_window_sql'])}")
    log(f"fixed overhead ({out['tiny_rows']} rows)     {_fmt(out['fixed_overhead'])}")
    if "pandas_total" in out:
        log(f"pandas: DuckDB -> DataFrame   {_fmt(out['pandas_load_df'])}  (not counted)")
        log(f"pandas: from_df (-> SQLite)   {_fmt(out['pandas_setup'])}")
        log(f"pandas: query                 {_fmt(out['pandas_query'])}")
        log(f"pandas: set-up + query        {_fmt(out['pandas_total'])}")
    log(f"engine, public keys (marts)   {_fmt(out['engine_public_keys'])}")
    if "pandas_public_keys_query" in out:
        log(f"pandas: query, public keys    {_fmt(out['pandas_public_keys_query'])}")
    for name, t in out["targets"].items():
        label = "keys secret (tau threshold)" if name == "threshold" else "public keys (how the marts run)"
        vp = t["engine_vs_plain"]
        log(
            f"[{label}] engine / plain = {vp['ratio']:.1f}x; target engine <= {TARGET_PLAIN_FACTOR:g} x plain + "
            f"{TARGET_FIXED_S * 1000:.0f} ms = {vp['limit_s']:.3f} s: {'PASS' if vp['passed'] else 'MISS'}"
            f" (fixed overhead {out['fixed_overhead']['median_s'] * 1000:.0f} ms:"
            f" {'PASS' if vp['fixed_overhead_within_100ms'] else 'MISS'})"
        )
        if "engine_vs_pandas" in t:
            vs = t["engine_vs_pandas"]
            log(
                f"[{label}] pandas (set-up + query) / engine = {vs['ratio_total']:.1f}x"
                f" (query only {vs['ratio_query_only']:.1f}x); target >= {TARGET_VS_PANDAS:g}x:"
                f" {'PASS' if vs['passed'] else 'MISS'}"
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crmshield.dp_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="tickets in the table (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the median is reported (default 3)")
    parser.add_argument("--pandas-repeat", type=int, default=1, help="runs of the pandas engine (default 1)")
    parser.add_argument("--tiny-rows", type=int, default=100, help="rows of the fixed-overhead table (default 100)")
    parser.add_argument("--no-pandas", action="store_true", help="skip SmartNoise's pandas engine")
    parser.add_argument("--no-window", action="store_true", help="skip the 'window' construction of the bound")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.repeat < 1 or args.pandas_repeat < 1 or args.tiny_rows < 1:
        parser.error("--rows, --repeat, --pandas-repeat and --tiny-rows must be positive")
    out = run(
        args.rows,
        args.repeat,
        pandas_repeat=args.pandas_repeat,
        tiny_rows=args.tiny_rows,
        with_pandas=not args.no_pandas,
        with_window=not args.no_window,
    )
    report(out)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

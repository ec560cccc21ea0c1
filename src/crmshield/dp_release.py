"""One differentially private release: noisy aggregates with 95% intervals.

Used by the mart publisher (:mod:`crmshield.publish`) and by interactive
queries (:mod:`crmshield.dp_query`). SmartNoise SQL rewrites the query and
owns the mechanisms (Laplace noise on every COUNT and SUM, the tau threshold
on the distinct-person count); DuckDB computes the exact aggregates through
:mod:`crmshield.dp_engine`. This module adds what SmartNoise does not do:

* **Public keys.** When every grouping column has a declared public key list
  (channel, priority, stage, month ...), the release covers the full cross
  product of those lists: cells with no rows get a zero exact aggregate and
  the same noise as every other cell, and no cell is suppressed for rarity
  (``censor_dims`` off, so no tau threshold and no delta). A group that is
  not in the lists is never released (counted in ``cells_outside_keys``).
  Otherwise groups are released only when their noisy distinct-person count
  passes SmartNoise's tau threshold, so a key seen because of one customer
  does not appear.
* **Intervals.** Every measure gets ``<measure>_ci_low``/``<measure>_ci_high``
  from the noise scale of the mechanisms behind it. A bare COUNT or SUM gets
  the exact Laplace/Gaussian quantile (``mechanism.accuracy``); when the
  reader clamps noisy counts at 0 (``clamp_counts``), so is the interval.
  A derived measure (AVG, VAR, STDDEV, arithmetic on aggregates) gets a
  parametric interval: the released noisy statistics minus fresh draws
  from the same noise distributions, pushed through the measure's formula,
  2.5th and 97.5th percentiles. Both use only released values and public
  noise scales, so they are post-processing and cost no privacy. They
  describe noise only, not the bias from clamping to the declared bounds or
  from the per-person contribution bound.
* **Quantiles** (:class:`QuantileRequest`): a noisy histogram of one bounded
  column over public equal-width bins (Laplace, sensitivity =
  max_contributions, from OpenDP), per public group; quantiles are read off
  the noisy cumulative counts with linear interpolation inside a bin, and
  their intervals come from re-drawing the histogram noise.

Nothing here writes anything or spends budget: callers account for
``epsilon``/``delta`` in the ledger before calling :func:`release`.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)

CI_ALPHA = 0.05  # 95% intervals
MC_DRAWS = 2000  # draws for parametric intervals of derived measures


class DPQueryError(ValueError):
    """A query SmartNoise (or this module) refuses, with a reason a user can act on."""


@dataclass(frozen=True)
class QuantileRequest:
    """DP quantiles of one bounded column per public group (see module docstring)."""

    column: str
    probabilities: tuple[float, ...]
    lower: float
    upper: float
    bins: int
    epsilon: float

    def output_name(self, p: float) -> str:
        pct = f"{p * 100:g}".replace(".", "_")
        return f"{self.column}_p{pct}"


@dataclass
class Release:
    """The released table and how it was produced."""

    frame: pd.DataFrame
    column_types: list[tuple[str, str]]  # (name, DuckDB type), CI columns included
    group_columns: list[str]
    measures: list[str]
    mechanism: str
    tau: float | None
    cells_outside_keys: int = 0
    scales: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------
# Parsing and refusal
# --------------------------------------------------------------------------

_REFUSALS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"subqueries", re.I), "subqueries are not supported: query one warehouse table directly"),
    (
        re.compile(r"aggregation over expressions: (.*)", re.I),
        "aggregates over expressions are not supported ({0}): aggregate a plain column",
    ),
    (
        re.compile(r"does not include an aggregate and is not included in GROUP BY: (.*)", re.I),
        "not an aggregate query: {0} is neither aggregated nor grouped (DP releases only aggregates)",
    ),
    (
        re.compile(r"No metadata available for (\S+)", re.I),
        "table {0} is not a DP-queryable table of the privacy-zone warehouse",
    ),
    (
        re.compile(r"how to rewrite aggregate function: (.*)", re.I),
        "aggregate {0} is not supported: use COUNT, SUM, AVG, VAR or STDDEV",
    ),
    (re.compile(r"unbounded column", re.I), "a measured column has no bounds: declare lower and upper"),
)

_JOIN_RE = re.compile(r"\bJOIN\b|\bFROM\b[^;]*?,\s*[A-Za-z_\"]", re.I | re.S)


def refusal(sql: str, exc: Exception) -> DPQueryError:
    """Turn SmartNoise's terse parse/validation errors into an actionable one."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if _JOIN_RE.search(sql):
        return DPQueryError("refused: joins are not supported by SmartNoise SQL; query one warehouse table")
    for pattern, message in _REFUSALS:
        m = pattern.search(text)
        if m:
            return DPQueryError("refused: " + message.format(*(g.strip() for g in m.groups())))
    if text.startswith("Bad token") or "mismatched input" in text:
        return DPQueryError(f"refused: SmartNoise SQL cannot parse the query ({text})")
    return DPQueryError(f"refused: {text}")


def rewrite(reader: Any, sql: str) -> tuple[Any, Any, Any]:
    """Parsed query, rewritten exact-aggregate subquery and outer query; refusals as DPQueryError."""
    try:
        parsed = reader.parse_query_string(sql)
        subquery, query = reader._rewrite_ast(parsed)
        parsed = reader.parse_query_string(sql)  # _rewrite_ast decorates the AST; hand out a clean one
    except DPQueryError:
        raise
    except Exception as exc:
        raise refusal(sql, exc) from exc
    if parsed is None or isinstance(parsed, list):
        raise DPQueryError("refused: empty query")
    if not subquery.xpath("//AggFunction"):
        raise DPQueryError("refused: not an aggregate query (DP releases only COUNT/SUM/AVG/VAR/STDDEV)")
    return parsed, subquery, query


# --------------------------------------------------------------------------
# Release
# --------------------------------------------------------------------------


def _exclude_rows_without_unit(subquery: Any, metadata: Any) -> None:
    """Add ``<unit> IS NOT NULL`` to the innermost SELECT over the table.

    A row without a privacy unit belongs to nobody SmartNoise can bound:
    left in, all such rows would form one pseudo-person whose kept rows
    depend on many real people. They are left out of every release (the
    pandas path used to drop them while loading the frame).
    """
    from snsql._ast.ast import Query, Table, Where
    from snsql._ast.expressions.logical import BooleanCompare, NestedBoolean
    from snsql.sql.parse import QueryParser

    units = [c.name for t in metadata.tables() for c in t.columns() if c.is_key]
    if len(units) != 1:
        raise DPQueryError(f"internal: expected one privacy unit column in the metadata, found {units}")
    template = QueryParser(None).query(f"SELECT COUNT(*) AS n FROM t WHERE {units[0]} IS NOT NULL")
    not_null = template.where.condition
    from crmshield.dp_engine import _walk

    # collect first: the tree is changed below
    tables = [
        node
        for node in _walk(subquery)
        if isinstance(node, Query)
        and node.source is not None
        and any(isinstance(r.primary, Table) for r in node.source.relations)
    ]
    for node in tables:
        if node.where is None:
            node.where = Where(not_null)
        else:
            node.where = Where(BooleanCompare(NestedBoolean(node.where.condition), "AND", not_null))


def spends_no_delta(subquery: Any) -> bool:
    """True when the rewritten query is pure epsilon-DP: no tau threshold (no
    key count) and every mechanism has delta 0 (Laplace).

    SmartNoise's cost accounting still reports a delta (it adds a slack of
    half the requested delta to every odometer), so callers set the charged
    delta to 0 themselves in this case.
    """
    mechs = [s.mechanism for s in subquery._select_symbols if s.mechanism is not None]
    keycount = any(bool(s.is_key_count) for s in subquery._select_symbols)
    return bool(mechs) and not keycount and all(float(m.delta or 0.0) == 0.0 for m in mechs)


def _mechanism_name(mech: Any) -> str:
    return str(getattr(getattr(mech, "mechanism", None), "name", "unknown"))


def describe_mechanisms(subquery: Any, *, thresholded: bool, extra: Sequence[str] = ()) -> str:
    names = {_mechanism_name(s.mechanism) for s in subquery._select_symbols if s.mechanism is not None}
    parts = sorted(names) + list(extra)
    if thresholded:
        parts.append("tau_threshold")
    return "+".join(parts) or "none"


def _noise(mech: Any, size: int, rng: np.random.Generator) -> np.ndarray:
    name = _mechanism_name(mech)
    if name == "laplace":
        return rng.laplace(0.0, float(mech.scale), size)
    if name == "gaussian":
        return rng.normal(0.0, float(mech.scale), size)
    raise ValueError(f"no interval for mechanism {name}")


def _grid_rows(
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    group_idx: Sequence[int],
    keys: Sequence[Sequence[Any]],
) -> tuple[list[list[Any]], int]:
    """Exact rows on the full public grid: missing cells as zeros, unknown keys out."""
    by_key: dict[tuple[Any, ...], list[Any]] = {}
    outside = 0
    allowed = [set(k) for k in keys]
    for row in rows:
        key = tuple(row[i] for i in group_idx)
        if all(k in allowed[j] for j, k in enumerate(key)):
            by_key[key] = list(row)
        else:
            outside += 1
    out: list[list[Any]] = []
    for combo in itertools.product(*keys):
        if combo in by_key:
            out.append(by_key[combo])
            continue
        filler: list[Any] = [0] * len(header)
        for j, i in enumerate(group_idx):
            filler[i] = combo[j]
        out.append(filler)
    return out, outside


def _convert(val: Any, t: str) -> Any:
    if val is None:
        return None
    if isinstance(val, float) and not math.isfinite(val):
        return None
    if t == "int":
        return int(round(float(val)))
    if t == "float":
        return float(val)
    if t == "boolean":
        return bool(val)
    return val if t == "datetime" else str(val)


_DUCKDB_TYPE = {"string": "VARCHAR", "int": "BIGINT", "float": "DOUBLE", "boolean": "BOOLEAN", "datetime": "TIMESTAMP"}


def release(
    reader: Any,
    sql: str,
    *,
    public_keys: Mapping[str, Sequence[Any]] | None = None,
    source_types: Mapping[str, str] | None = None,
    alpha: float = CI_ALPHA,
    rng: np.random.Generator | None = None,
) -> Release:
    """Run one DP query through SmartNoise with DuckDB's exact aggregates.

    ``reader`` is a SmartNoise ``PrivateReader`` over a
    :class:`~crmshield.dp_engine.DuckDBReader` whose metadata has
    ``censor_dims`` off exactly when every grouping column is in
    ``public_keys``. Does not touch the reader's odometer (callers account
    in the ledger). HAVING, ORDER BY and LIMIT are not applied: the caller
    decides (marts refuse them; interactive queries use SmartNoise's own
    ``execute``).
    """
    import numpy as np
    import pandas as pd

    rng = rng or np.random.default_rng()
    parsed, subquery, query = rewrite(reader, sql)
    syms = subquery._select_symbols
    names = [s.name for s in syms]
    mechs = [s.mechanism for s in syms]
    group_idx = [i for i, s in enumerate(syms) if s.is_grouping_column]
    group_names = [names[i] for i in group_idx]
    public_keys = dict(public_keys or {})
    grid = bool(group_idx) and all(n in public_keys for n in group_names)
    if reader._options.censor_dims == grid and group_idx:
        raise DPQueryError(
            "internal: censor_dims must be off exactly when every grouping column has public keys"
            f" (grouping {group_names}, public {sorted(public_keys)})"
        )

    _exclude_rows_without_unit(subquery, reader.metadata)
    exact = reader.reader._execute_ast(subquery)
    header, rows = list(exact[0]), [list(r) for r in exact[1:]]
    outside = 0
    if grid:
        rows, outside = _grid_rows(header, rows, group_idx, [list(public_keys[n]) for n in group_names])
    elif not group_idx and not rows:
        rows = [[0] * len(header)]
    noisy = [list(r) for r in reader._execute_ast(parsed, pre_aggregated=[tuple(header), *rows], postprocess=False)]
    tau = getattr(reader, "tau", None) if reader._options.censor_dims else None

    is_count = [bool(s.expression.is_count) for s in syms]
    clamp_counts = bool(reader._options.clamp_counts)
    out_nes = list(query.select.namedExpressions)
    out_syms = query._select_symbols
    out_names = [s.name for s in out_syms]
    out_types = [s.expression.type() for s in out_syms]
    src_types = dict(source_types or {})
    lower_names = [n.lower() for n in names]

    def clamp(row: Sequence[Any]) -> list[Any]:
        r = list(row)
        if clamp_counts:
            for i, c in enumerate(is_count):
                if c and r[i] is not None and r[i] < 0:
                    r[i] = 0
        return r

    # which output columns are measures, and the mechanism columns behind each
    refs: list[list[int] | None] = []
    for ne, name in zip(out_nes, out_names, strict=True):
        cols = [c.name.lower() for c in ne.expression.xpath("//Column")]
        idx = sorted({lower_names.index(c) for c in cols if c in lower_names and mechs[lower_names.index(c)]})
        is_group = name is not None and name in group_names and not idx
        refs.append(None if is_group or not idx else idx)

    columns: dict[str, list[Any]] = {}
    column_types: list[tuple[str, str]] = []
    measures: list[str] = []
    for j, (name, t) in enumerate(zip(out_names, out_types, strict=True)):
        if not name or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name) or name == "???":
            raise DPQueryError(f"output column {j + 1} needs a plain alias (AS name)")
        if t not in _DUCKDB_TYPE:
            t = src_types.get(name, "float" if refs[j] else "string")
        columns[name] = []
        column_types.append((name, _DUCKDB_TYPE[t]))
        if refs[j] is not None:
            measures.append(name)
            for suffix in ("_ci_low", "_ci_high"):
                if f"{name}{suffix}" in out_names:
                    raise DPQueryError(f"output column {name}{suffix} is reserved for the interval")
                columns[f"{name}{suffix}"] = []
                column_types.append((f"{name}{suffix}", "DOUBLE"))

    agg_names = [
        str(ne.expression.name).upper() if type(ne.expression).__name__ == "AggFunction" else ""
        for ne in parsed.select.namedExpressions
    ]
    z = {i: m.accuracy(alpha) for i, m in enumerate(mechs) if m is not None}
    for row in noisy:
        released = clamp(row)
        bindings = {n: v for n, v in zip(lower_names, released, strict=True)}
        for j, ne in enumerate(out_nes):
            name, t = out_names[j], out_types[j]
            val = ne.expression.evaluate(bindings)
            if refs[j] is not None and isinstance(val, float | np.floating) and name:
                agg_name = agg_names[j]
                if agg_name == "VAR" and val < 0:
                    val = 0.0  # as SmartNoise: noise can make a small variance negative
                elif agg_name == "STDDEV" and not np.isfinite(val):
                    val = 0.0
            columns[name].append(_convert(val, t if t in _DUCKDB_TYPE else src_types.get(name, "float")))
            if refs[j] is None:
                continue
            lo, hi = _interval(
                ne, refs[j], row, released, mechs, is_count, lower_names, z, rng, agg_names[j], clamp_counts
            )
            columns[f"{name}_ci_low"].append(lo)
            columns[f"{name}_ci_high"].append(hi)

    frame = pd.DataFrame(columns)
    if group_names and len(frame):
        keys = [n for n in out_names if n in group_names]
        if keys:
            frame = frame.sort_values(keys, kind="stable").reset_index(drop=True)
    scales = {names[i]: float(m.scale) for i, m in enumerate(mechs) if m is not None and m.scale is not None}
    return Release(
        frame=frame,
        column_types=column_types,
        group_columns=[n for n in out_names if n in group_names],
        measures=measures,
        mechanism=describe_mechanisms(subquery, thresholded=not grid and bool(group_idx)),
        tau=tau,
        cells_outside_keys=outside,
        scales=scales,
    )


def _interval(
    ne: Any,
    idx: Sequence[int],
    noisy: Sequence[Any],
    released: Sequence[Any],
    mechs: Sequence[Any],
    is_count: Sequence[bool],
    names: Sequence[str],
    half_width: Mapping[int, float],
    rng: np.random.Generator,
    agg_name: str = "",
    clip_counts: bool = True,
) -> tuple[float | None, float | None]:
    import numpy as np

    expr = ne.expression
    inner = expr
    while type(inner).__name__ == "NestedExpression":
        inner = inner.expression
    if len(idx) == 1 and type(inner).__name__ == "Column":
        i = idx[0]
        if noisy[i] is None:
            return None, None
        centre = float(noisy[i])
        lo, hi = centre - half_width[i], centre + half_width[i]
        if is_count[i] and clip_counts:
            lo, hi = max(lo, 0.0), max(hi, 0.0)  # the released count was cut at 0 too
        return lo, hi
    # derived measure: parametric interval by re-drawing the noise
    draws: dict[int, np.ndarray] = {}
    for i in idx:
        centre = float(noisy[i]) if noisy[i] is not None else 0.0
        d = centre - _noise(mechs[i], MC_DRAWS, rng)
        if is_count[i]:
            d = np.maximum(d, 0.0)
        draws[i] = d
    values = np.empty(MC_DRAWS)
    base = {n: v for n, v in zip(names, released, strict=True)}
    with np.errstate(all="ignore"):
        for k in range(MC_DRAWS):
            b = dict(base)
            for i, d in draws.items():
                b[names[i]] = float(d[k])
            try:
                v = expr.evaluate(b)
                values[k] = float(v) if v is not None else np.nan
            except (ZeroDivisionError, ValueError, TypeError):
                values[k] = np.nan
    if agg_name == "STDDEV":
        values = np.where(np.isnan(values), 0.0, values)  # as released: sqrt of a negative variance -> 0
    elif agg_name == "VAR":
        values = np.maximum(values, 0.0)
    finite = values[np.isfinite(values)]
    if len(finite) < MC_DRAWS // 2:
        return None, None  # e.g. an average over a count that is mostly zero
    return float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))


# --------------------------------------------------------------------------
# Quantiles from a noisy histogram over public bins
# --------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def histogram_scale(max_contributions: int, epsilon: float) -> float:
    """Laplace scale for a histogram where one person changes at most
    ``max_contributions`` counts by one each (L1 sensitivity), found with
    OpenDP's own accounting so float rounding cannot overspend."""
    import opendp.prelude as dp

    dp.enable_features("contrib", "floating-point")
    domain = dp.vector_domain(dp.atom_domain(T=float, nan=False))
    metric = dp.l1_distance(T=float)
    return float(
        dp.binary_search_param(
            lambda s: dp.m.make_laplace(domain, metric, s),
            d_in=float(max_contributions),
            d_out=float(epsilon),
        )
    )


def _noisy_vector(values: np.ndarray, scale: float) -> np.ndarray:
    import numpy as np
    import opendp.prelude as dp

    dp.enable_features("contrib", "floating-point")
    meas = dp.m.make_laplace(
        dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.l1_distance(T=float), float(scale)
    )
    return np.asarray(meas([float(v) for v in values]), dtype="float64")


def _quantiles_from_counts(counts: np.ndarray, probs: Sequence[float], lower: float, width: float) -> np.ndarray:
    """Quantiles (rows: draws, cols: probs) from noisy histograms (rows: draws).

    Uses the noisy cumulative counts as they are (their noise has mean zero,
    so the CDF is unbiased; clipping each bin at zero would pile positive
    noise from the empty bins into the upper tail), made monotone with a
    running maximum, and interpolates linearly inside the bin that crosses
    ``p * total``.
    """
    import numpy as np

    counts = np.atleast_2d(counts)
    cdf = np.maximum.accumulate(np.cumsum(counts, axis=1), axis=1)
    cdf = np.maximum(cdf, 0.0)
    total = cdf[:, -1]
    rows = np.arange(counts.shape[0])
    out = np.full((counts.shape[0], len(probs)), np.nan)
    for j, p in enumerate(probs):
        target = p * total
        b = np.argmax(cdf >= target[:, None], axis=1)
        prev = np.where(b > 0, cdf[rows, np.maximum(b - 1, 0)], 0.0)
        within = cdf[rows, b] - prev
        frac = np.where(within > 0, (target - prev) / np.where(within > 0, within, 1.0), 0.0)
        q = lower + width * (b + np.clip(frac, 0.0, 1.0))
        out[:, j] = np.where(total > 0, q, np.nan)
    return out


def quantile_release(
    conn: duckdb.DuckDBPyConnection,
    *,
    source: str,
    unit: str,
    where: str | None,
    group_columns: Sequence[str],
    public_keys: Mapping[str, Sequence[Any]],
    request: QuantileRequest,
    max_contributions: int,
    salt: int,
    alpha: float = CI_ALPHA,
    rng: np.random.Generator | None = None,
) -> tuple[pd.DataFrame, list[tuple[str, str]], float]:
    """DP quantiles per public group; returns (frame, column types, noise scale).

    Each person keeps at most ``max_contributions`` non-null rows (the same
    row-hash construction as the SmartNoise rewrite, so a person's kept rows
    depend on their own rows only); values are clamped to the bounds, binned
    into ``bins`` equal-width public bins and counted per group and bin; one
    Laplace draw per cell, including empty cells.
    """
    import numpy as np
    import pandas as pd

    rng = rng or np.random.default_rng()
    width = (request.upper - request.lower) / request.bins

    def q(ident: str) -> str:
        return '"' + ident.replace('"', '""') + '"'

    groups = ", ".join(q(g) for g in group_columns)
    sel_groups = (groups + ", ") if groups else ""
    col = q(request.column)
    cond = f"({where}) AND " if where else ""
    sql = f"""
        WITH clamped AS (
            SELECT {q(unit)} AS _unit, {sel_groups}
                   LEAST(GREATEST(CAST({col} AS DOUBLE), {request.lower!r}), {request.upper!r}) AS _v
            FROM {".".join(q(p) for p in source.split("."))}
            WHERE {cond}{col} IS NOT NULL AND {q(unit)} IS NOT NULL
        ),
        bounded AS (
            SELECT * FROM clamped
            QUALIFY ROW_NUMBER() OVER (PARTITION BY _unit ORDER BY hash(clamped, {int(salt)}))
                <= {int(max_contributions)}
        )
        SELECT {sel_groups}
               LEAST(CAST(FLOOR((_v - {request.lower!r}) / {width!r}) AS BIGINT), {request.bins - 1}) AS _bin,
               COUNT(*) AS _n
        FROM bounded
        GROUP BY ALL
    """
    exact = conn.execute(sql).fetchall()
    key_lists = [list(public_keys[g]) for g in group_columns]
    cells = list(itertools.product(*key_lists)) if group_columns else [()]
    index = {c: i for i, c in enumerate(cells)}
    hist = np.zeros((len(cells), request.bins))
    for row in exact:
        key, b, n = tuple(row[: len(group_columns)]), int(row[-2]), float(row[-1])
        if key in index:
            hist[index[key], b] += n
    scale = histogram_scale(max_contributions, request.epsilon)
    noisy = _noisy_vector(hist.ravel(), scale).reshape(hist.shape)

    out: dict[str, list[Any]] = {g: [c[i] for c in cells] for i, g in enumerate(group_columns)}
    types: list[tuple[str, str]] = []
    point = _quantiles_from_counts(noisy, request.probabilities, request.lower, width)
    lows: list[list[float | None]] = []
    highs: list[list[float | None]] = []
    for r in range(len(cells)):
        draws = noisy[r][None, :] - rng.laplace(0.0, scale, (MC_DRAWS, request.bins))
        qs = _quantiles_from_counts(draws, request.probabilities, request.lower, width)
        lo_row, hi_row = [], []
        for j in range(len(request.probabilities)):
            finite = qs[:, j][np.isfinite(qs[:, j])]
            ok = len(finite) >= MC_DRAWS // 2 and np.isfinite(point[r, j])
            lo_row.append(float(np.percentile(finite, 100 * alpha / 2)) if ok else None)
            hi_row.append(float(np.percentile(finite, 100 * (1 - alpha / 2))) if ok else None)
        lows.append(lo_row)
        highs.append(hi_row)
    for j, p in enumerate(request.probabilities):
        name = request.output_name(p)
        out[name] = [None if not np.isfinite(point[r, j]) else float(point[r, j]) for r in range(len(cells))]
        out[f"{name}_ci_low"] = [lows[r][j] for r in range(len(cells))]
        out[f"{name}_ci_high"] = [highs[r][j] for r in range(len(cells))]
        types += [(name, "DOUBLE"), (f"{name}_ci_low", "DOUBLE"), (f"{name}_ci_high", "DOUBLE")]
    return pd.DataFrame(out), types, scale

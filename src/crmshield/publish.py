"""Publish differentially private marts from the warehouse (zone 4 -> zone 5).

Each mart is declared as a file pair under ``sql/marts/``:

* ``<mart>.sql``: one aggregate ``SELECT`` over a single warehouse table that
  SmartNoise SQL accepts (``COUNT``, ``SUM``, ``AVG``, ... with ``GROUP BY``).
* ``<mart>.yml``: its privacy declaration, validated by :class:`MartSpecFile`::

      description: Tickets per month and channel.
      source: marts.tickets          # schema.table in the warehouse
      privacy_unit: contact_pk       # one person = one value of this column
      max_contributions: 3           # rows kept per person (reservoir sample)
      epsilon: 1.0                   # total budget of this mart
      delta: 1.0e-6
      columns:                       # optional: types and bounds
        resolution_hours: {type: float, lower: 0, upper: 336}

``epsilon`` and ``delta`` are the budget of the whole mart. SmartNoise SQL
charges its per-statistic ``Privacy(epsilon=...)`` once for every noisy
statistic in the rewritten query (the distinct-person count used to censor
rare groups, each ``SUM`` and each ``COUNT``), so :func:`publish_marts`
calibrates the per-statistic parameters until SmartNoise's own accounting
(``get_privacy_cost``) matches the declared budget, then records what the
reader's odometer reports after execution.

:func:`publish_marts` evaluates every mart with SmartNoise's pandas engine
(``snsql.from_df``), writes the results and a ``_dp_catalog`` table into a
fresh DuckDB file and moves it onto ``settings.published`` atomically. The
analyst database never holds row-level data.

Heavy libraries (snsql, pandas, duckdb, yaml) are imported inside functions:
Airflow DAG files import this package.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from crmshield.config import Settings

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

log = logging.getLogger(__name__)

CATALOG_TABLE = "_dp_catalog"
CI_ALPHA = 0.05  # 95% intervals
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SOURCE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$")

ColumnType = Literal["string", "int", "float", "boolean", "datetime"]

#: SmartNoise column type -> DuckDB type used to load the column and to type
#: the published mart columns.
_DUCKDB_TYPE: dict[str, str] = {
    "string": "VARCHAR",
    "int": "BIGINT",
    "float": "DOUBLE",
    "boolean": "BOOLEAN",
    "datetime": "TIMESTAMP",
}

_CATALOG_DDL = f"""
CREATE TABLE {CATALOG_TABLE} (
    mart VARCHAR NOT NULL PRIMARY KEY,
    epsilon DOUBLE NOT NULL,
    delta DOUBLE NOT NULL,
    mechanism VARCHAR NOT NULL,
    privacy_unit VARCHAR NOT NULL,
    max_contributions INTEGER NOT NULL,
    bounds VARCHAR NOT NULL,
    source_table VARCHAR NOT NULL,
    published_at TIMESTAMP NOT NULL,
    run_id VARCHAR NOT NULL,
    input_fingerprint VARCHAR NOT NULL,
    spec_sha256 VARCHAR NOT NULL,
    row_count BIGINT NOT NULL
)
"""


# --------------------------------------------------------------------------
# Mart declarations
# --------------------------------------------------------------------------


class MartSpecError(ValueError):
    """A mart declaration is missing, malformed or inconsistent."""


class ColumnSpec(BaseModel):
    """Type and bounds of one source column (``columns:`` in a mart spec)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: ColumnType | None = None
    lower: float | None = None
    upper: float | None = None

    @model_validator(mode="after")
    def _check_bounds(self) -> ColumnSpec:
        if (self.lower is None) != (self.upper is None):
            raise ValueError("give both lower and upper, or neither")
        if self.lower is not None and self.upper is not None:
            if not (math.isfinite(self.lower) and math.isfinite(self.upper)):
                raise ValueError("bounds must be finite")
            if self.lower >= self.upper:
                raise ValueError(f"lower ({self.lower}) must be below upper ({self.upper})")
            if self.type is not None and self.type not in ("int", "float"):
                raise ValueError(f"bounds only apply to int or float columns, not {self.type}")
        return self

    @property
    def bounded(self) -> bool:
        return self.lower is not None and self.upper is not None


class MartSpecFile(BaseModel):
    """Schema of ``sql/marts/<mart>.yml``; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field(min_length=1)
    source: str = Field(pattern=_SOURCE_RE.pattern, description="schema.table in the warehouse")
    privacy_unit: str = Field(pattern=_IDENT_RE.pattern)
    max_contributions: int = Field(ge=1, le=10_000)
    epsilon: float = Field(gt=0, allow_inf_nan=False, description="total budget of the mart")
    delta: float = Field(gt=0, lt=1, description="total delta of the mart (censor_dims needs > 0)")
    columns: dict[str, ColumnSpec] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_columns(self) -> MartSpecFile:
        for name in self.columns:
            if not _IDENT_RE.match(name):
                raise ValueError(f"column name {name!r} is not a plain identifier")
        unit = self.columns.get(self.privacy_unit)
        if unit is not None and unit.bounded:
            raise ValueError(f"privacy_unit {self.privacy_unit!r} cannot have bounds")
        return self


class MartSpec(MartSpecFile):
    """A validated mart declaration: the YAML fields plus what the loader adds."""

    name: str
    sql: str
    sql_path: Path
    spec_path: Path
    spec_sha256: str

    @property
    def bounds(self) -> dict[str, dict[str, float]]:
        """Declared clamping bounds, by column."""
        return {
            col: {"lower": float(c.lower), "upper": float(c.upper)}
            for col, c in sorted(self.columns.items())
            if c.lower is not None and c.upper is not None
        }


def _format_validation_error(path: Path, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"{path}: unknown key '{loc}'")
        elif e["type"] == "missing":
            lines.append(f"{path}: missing required key '{loc}'")
        else:
            lines.append(f"{path}: key '{loc}': {e['msg']}")
    return "\n".join(lines)


def _spec_sha256(sql_bytes: bytes, yml_bytes: bytes) -> str:
    h = hashlib.sha256()
    h.update(b"crmshield-mart-spec-v1\0yml\0")
    h.update(yml_bytes)
    h.update(b"\0sql\0")
    h.update(sql_bytes)
    return h.hexdigest()


def _clean_sql(path: Path, text: str) -> str:
    sql = text.strip()
    while sql.endswith(";"):
        sql = sql[:-1].rstrip()
    if not sql:
        raise MartSpecError(f"{path}: empty query")
    if ";" in sql:
        raise MartSpecError(f"{path}: exactly one SELECT statement is allowed")
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--")).lstrip()
    if not body[:6].upper() == "SELECT":
        raise MartSpecError(f"{path}: the query must be a single SELECT")
    return sql


def load_mart_spec(spec_path: Path) -> MartSpec:
    """Load and validate one ``<mart>.yml`` and its ``<mart>.sql`` sibling."""
    import yaml

    name = spec_path.stem
    if not _NAME_RE.match(name):
        raise MartSpecError(
            f"{spec_path}: mart name {name!r} must be lower-case letters, digits and '_' and start with a letter"
        )
    sql_path = spec_path.with_suffix(".sql")
    if not sql_path.is_file():
        raise MartSpecError(f"{spec_path}: no query file {sql_path.name} beside it")
    yml_bytes = spec_path.read_bytes()
    sql_bytes = sql_path.read_bytes()
    try:
        data = yaml.safe_load(yml_bytes.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise MartSpecError(f"{spec_path}: not valid YAML: {exc}") from exc
    if not isinstance(data, Mapping):
        raise MartSpecError(f"{spec_path}: expected a mapping of keys, got {type(data).__name__}")
    try:
        file_spec = MartSpecFile.model_validate(data)
    except ValidationError as exc:
        raise MartSpecError(_format_validation_error(spec_path, exc)) from None
    try:
        sql_text = sql_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MartSpecError(f"{sql_path}: not UTF-8: {exc}") from exc
    sql = _clean_sql(sql_path, sql_text)
    if not re.search(rf"\b{re.escape(file_spec.source)}\b", sql, flags=re.IGNORECASE):
        raise MartSpecError(
            f"{sql_path}: the query must read from the declared source {file_spec.source!r}"
            f" ({spec_path.name}: key 'source')"
        )
    return MartSpec(
        **dict(file_spec),
        name=name,
        sql=sql,
        sql_path=sql_path,
        spec_path=spec_path,
        spec_sha256=_spec_sha256(sql_bytes, yml_bytes),
    )


def load_mart_specs(directory: Path) -> list[MartSpec]:
    """Every mart declared in *directory*, sorted by name.

    Raises :class:`MartSpecError` (naming the file, and the key where one is
    at fault) for an orphan ``.sql`` or ``.yml``, a ``.yaml`` file, an invalid
    name, unknown or missing keys and out-of-range values.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise MartSpecError(f"{directory}: mart directory does not exist")
    for odd in sorted(directory.glob("*.yaml")):
        raise MartSpecError(f"{odd}: mart specs use the .yml extension")
    for sql_path in sorted(directory.glob("*.sql")):
        if not sql_path.with_suffix(".yml").is_file():
            raise MartSpecError(f"{sql_path}: no spec file {sql_path.stem}.yml beside it")
    return [load_mart_spec(p) for p in sorted(directory.glob("*.yml"))]


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class MartResult:
    """One published mart: its size and the privacy loss SmartNoise reports."""

    name: str
    rows: int
    epsilon: float
    delta: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rows": int(self.rows),
            "epsilon": float(self.epsilon),
            "delta": float(self.delta),
        }


@dataclass(frozen=True)
class PublishResult:
    """Outcome of :func:`publish_marts`, for the run manifest.

    ``status`` is ``"published"`` when this run wrote a new analyst database,
    ``"skipped"`` when the existing one already holds marts for the same input
    fingerprint and specs (then nothing was spent and ``published_run_id``
    names the run that published them). ``epsilon_spent`` / ``delta_spent``
    are this run's totals under basic sequential composition over marts.
    """

    status: Literal["published", "skipped"]
    run_id: str
    published_run_id: str
    input_fingerprint: str
    analyst_db: Path
    marts: tuple[MartResult, ...] = field(default_factory=tuple)
    epsilon_spent: float = 0.0
    delta_spent: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (plain str/int/float/list)."""
        return {
            "status": self.status,
            "run_id": self.run_id,
            "published_run_id": self.published_run_id,
            "input_fingerprint": self.input_fingerprint,
            "analyst_db": str(self.analyst_db),
            "epsilon_spent": float(self.epsilon_spent),
            "delta_spent": float(self.delta_spent),
            "marts": [m.to_dict() for m in self.marts],
        }


@dataclass
class _Evaluated:
    spec: MartSpec
    frame: pd.DataFrame
    column_types: list[tuple[str, str]]
    epsilon: float
    delta: float
    mechanism: str


# --------------------------------------------------------------------------
# SmartNoise evaluation
# --------------------------------------------------------------------------


def _q(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _qualified(source: str) -> str:
    return ".".join(_q(part) for part in source.split("."))


_INT_TYPES = frozenset(
    {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT"}
    | {"UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"}
)


def _snsql_type(duckdb_type: str) -> str | None:
    """SmartNoise column type for a DuckDB type; None where there is none."""
    t = duckdb_type.upper()
    if t == "VARCHAR" or t.startswith("VARCHAR("):
        return "string"
    if t == "BOOLEAN":
        return "boolean"
    if t in _INT_TYPES:
        return "int"
    if t in {"DOUBLE", "FLOAT", "REAL"} or t.startswith("DECIMAL"):
        return "float"
    if t == "DATE" or t.startswith("TIMESTAMP"):
        return "datetime"
    return None


def _source_columns(wh: duckdb.DuckDBPyConnection, spec: MartSpec) -> dict[str, str]:
    schema, table = spec.source.split(".")
    rows = wh.execute(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
        [schema, table],
    ).fetchall()
    if not rows:
        raise MartSpecError(f"{spec.spec_path}: source table {spec.source!r} (key 'source') is not in the warehouse")
    return {str(name): str(dtype) for name, dtype in rows}


def _referenced_columns(spec: MartSpec, source_cols: Mapping[str, str]) -> tuple[list[str], set[str]]:
    """Source columns the query needs (privacy unit first), and those that feed
    a non-COUNT aggregate (they need bounds). Parsed with snsql's parser."""
    from snsql.sql.parse import QueryParser

    try:
        query = QueryParser(None).query(spec.sql)
    except Exception as exc:  # snsql raises bare ValueError/Exception on parse errors
        raise MartSpecError(f"{spec.sql_path}: SmartNoise SQL cannot parse the query: {exc}") from exc
    aliases = {ne.name.lower() for ne in query.select.namedExpressions if ne.name}
    by_lower = {c.lower(): c for c in source_cols}
    needed = [spec.privacy_unit]
    for node in query.xpath("//Column"):
        name = str(node.name).split(".")[-1]
        col = by_lower.get(name.lower())
        if col is None:
            if name.lower() in aliases:
                continue
            raise MartSpecError(f"{spec.sql_path}: column {name!r} is not in {spec.source}")
        if col not in needed:
            needed.append(col)
    for declared in spec.columns:
        if declared not in needed:
            raise MartSpecError(
                f"{spec.spec_path}: key 'columns.{declared}': column is not used by "
                f"{spec.sql_path.name} (or not in {spec.source})"
            )
    if spec.privacy_unit not in source_cols:
        raise MartSpecError(
            f"{spec.spec_path}: key 'privacy_unit': {spec.privacy_unit!r} is not a column of {spec.source}"
        )
    measured = {
        by_lower[str(col.name).split(".")[-1].lower()]
        for agg in query.xpath("//AggFunction")
        if str(agg.name).upper() != "COUNT"
        for col in agg.xpath("//Column")
        if str(col.name).split(".")[-1].lower() in by_lower
    }
    return needed, measured


def _column_types(
    spec: MartSpec, needed: Sequence[str], measured: set[str], source_cols: Mapping[str, str]
) -> dict[str, str]:
    types: dict[str, str] = {}
    for col in needed:
        declared = spec.columns.get(col)
        t = declared.type if declared and declared.type else _snsql_type(source_cols[col])
        if t is None:
            raise MartSpecError(
                f"{spec.spec_path}: column {col!r} has warehouse type {source_cols[col]};"
                f" declare its type under key 'columns.{col}.type'"
            )
        if declared and declared.bounded and t not in ("int", "float"):
            raise MartSpecError(f"{spec.spec_path}: key 'columns.{col}': bounds on a {t} column")
        if col in measured and t in ("int", "float") and not (declared and declared.bounded):
            raise MartSpecError(
                f"{spec.spec_path}: {col!r} is aggregated by {spec.sql_path.name} and needs bounds:"
                f" declare key 'columns.{col}' with lower and upper"
            )
        types[col] = t
    return types


def smartnoise_metadata(spec: MartSpec, types: Mapping[str, str]) -> dict[str, Any]:
    """The SmartNoise metadata (dict form) for one mart's source table.

    Person-level privacy: ``row_privacy`` off, the privacy unit column is the
    ``private_id``, ``max_ids`` caps the rows each person contributes (excess
    rows are dropped by a per-person random sample), numeric columns carry the
    declared clamping bounds, rare groups are censored (``censor_dims``) and
    DPSU is off (it would spend budget outside the odometer).
    """
    schema, table = spec.source.split(".")
    table_meta: dict[str, Any] = {
        "row_privacy": False,
        "max_ids": spec.max_contributions,
        "sample_max_ids": True,
        "censor_dims": True,
        "clamp_counts": True,
        "clamp_columns": True,
        "use_dpsu": False,
    }
    for col, t in types.items():
        meta: dict[str, Any] = {"type": t}
        if col == spec.privacy_unit:
            meta["private_id"] = True
        declared = spec.columns.get(col)
        if declared is not None and declared.bounded:
            meta["lower"] = declared.lower
            meta["upper"] = declared.upper
        table_meta[col] = meta
    return {"warehouse": {schema: {table: table_meta}}}


def _load_frame(
    wh: duckdb.DuckDBPyConnection,
    spec: MartSpec,
    types: Mapping[str, str],
    *,
    limit: int | None = None,
) -> pd.DataFrame:
    """The columns a mart needs, typed for SmartNoise.

    Rows without a privacy unit cannot be bounded per person and are left out.
    """
    select = ", ".join(f"CAST({_q(col)} AS {_DUCKDB_TYPE[t]}) AS {_q(col)}" for col, t in types.items())
    sql = f"SELECT {select} FROM {_qualified(spec.source)} WHERE {_q(spec.privacy_unit)} IS NOT NULL"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return wh.execute(sql).df()


def _calibrate(
    cost: Callable[[float, float], tuple[float, float]],
    epsilon: float,
    delta: float,
    *,
    rounds: int = 8,
) -> tuple[float, float]:
    """Per-statistic (epsilon, delta) whose SmartNoise cost fits the budget.

    ``cost(e, d)`` is SmartNoise's ``get_privacy_cost`` for per-statistic
    parameters ``(e, d)``. The cost is linear in ``e`` (basic composition over
    the query's k noisy statistics, or less) and close to linear in ``d``, so
    one proportional step usually lands; the result never exceeds the budget
    and is within 1e-6 (epsilon) and 1e-3 (delta) of it. The margins absorb
    float rounding and the odometer's slightly convex
    ``1 - (1 - tol) * prod(1 - delta_i)``.
    """
    e, d = epsilon, delta
    for _ in range(rounds):
        ce, cd = cost(e, d)
        if epsilon * (1 - 1e-6) <= ce <= epsilon and delta * (1 - 1e-3) <= cd <= delta:
            return e, d
        e *= epsilon / ce * (1 - 1e-9)
        if cd > 0:
            d *= delta / cd * (1 - 1e-4)
    raise RuntimeError(f"could not fit SmartNoise privacy cost into epsilon={epsilon}, delta={delta}")


@dataclass
class _Plan:
    """A mart checked against the warehouse and calibrated, before any data is read."""

    spec: MartSpec
    types: dict[str, str]
    metadata: dict[str, Any]
    epsilon_stat: float
    delta_stat: float


def _plan(wh: duckdb.DuckDBPyConnection, spec: MartSpec) -> _Plan:
    """Validate one mart against the warehouse schema and calibrate its budget.

    Reads no rows: SmartNoise prices the query on an empty frame. Raises
    :class:`MartSpecError` for anything wrong with the declaration or a query
    SmartNoise rejects, so a bad mart fails before any mart touches data.
    """
    import numpy as np
    import snsql
    from snsql import Privacy

    source_cols = _source_columns(wh, spec)
    needed, measured = _referenced_columns(spec, source_cols)
    types = _column_types(spec, needed, measured, source_cols)
    metadata = smartnoise_metadata(spec, types)
    empty = _load_frame(wh, spec, types, limit=0)

    def cost(e: float, d: float) -> tuple[float, float]:
        reader = snsql.from_df(empty, metadata=metadata, privacy=Privacy(epsilon=e, delta=d))
        with np.errstate(over="ignore", invalid="ignore"):  # odometer's exp(eps) for huge eps
            ce, cd = reader.get_privacy_cost(spec.sql)
        return float(ce), float(cd)

    try:
        eps_stat, delta_stat = _calibrate(cost, spec.epsilon, spec.delta)
    except Exception as exc:
        raise MartSpecError(f"{spec.sql_path}: SmartNoise SQL rejects the query: {exc}") from exc
    return _Plan(spec, types, metadata, eps_stat, delta_stat)


def _evaluate(wh: duckdb.DuckDBPyConnection, plan: _Plan) -> _Evaluated:
    """Run one planned mart through SmartNoise SQL's pandas engine.

    The source columns the query needs are loaded into pandas and SmartNoise
    evaluates its rewritten query on an in-memory SQLite copy. A native DuckDB
    engine for SmartNoise (no pandas/SQLite hop, no full-column load) is a
    later issue.

    Uses three private snsql 1.0.10 members (``_rewrite``,
    ``_get_simple_accuracy``, ``_select_symbols``) so that one rewrite gives
    the output types, the mechanisms and the accuracies: every rewrite
    re-derives each mechanism's noise scale with OpenDP's binary search,
    which dominates the run time.
    """
    import numpy as np
    import snsql
    from snsql import Privacy

    spec = plan.spec
    df = _load_frame(wh, spec, plan.types)
    privacy = Privacy(epsilon=plan.epsilon_stat, delta=plan.delta_stat)
    try:
        reader = snsql.from_df(df, metadata=plan.metadata, privacy=privacy)
        subquery, query = reader._rewrite(spec.sql)
        out_types = [(s.name, s.expression.type()) for s in query._select_symbols]
        mechanism = _describe_mechanisms(subquery)
        accuracy = reader._get_simple_accuracy(query=query, subquery=subquery, alpha=CI_ALPHA)
        result = reader.execute_df(spec.sql)
        with np.errstate(over="ignore", invalid="ignore"):
            spent_eps, spent_delta = (float(x) for x in reader.odometer.spent)
        tau = getattr(reader, "tau", None)
    except Exception as exc:
        raise RuntimeError(f"mart {spec.name} ({spec.sql_path}): SmartNoise failed: {exc}") from exc

    tolerance = 1e-9
    if spent_eps > spec.epsilon * (1 + tolerance) or spent_delta > spec.delta * (1 + tolerance):
        raise RuntimeError(
            f"mart {spec.name}: SmartNoise spent epsilon={spent_eps}, delta={spent_delta},"
            f" over the declared budget epsilon={spec.epsilon}, delta={spec.delta}"
        )
    log.info(
        "mart %s: %d of its groups released, epsilon=%.6g delta=%.3g"
        " (per statistic %.4g / %.3g), censoring threshold tau=%s distinct %s",
        spec.name,
        len(result),
        spent_eps,
        spent_delta,
        plan.epsilon_stat,
        plan.delta_stat,
        tau,
        spec.privacy_unit,
    )
    frame, column_types = _with_intervals(spec, result, out_types, plan.types, accuracy)
    return _Evaluated(spec, frame, column_types, spent_eps, spent_delta, mechanism)


def _describe_mechanisms(subquery: Any) -> str:
    """E.g. ``laplace+tau_threshold``, from the mechanisms SmartNoise assigned."""
    names: set[str] = set()
    thresholded = False
    for sym in subquery._select_symbols:
        mech = getattr(sym, "mechanism", None)
        if mech is None:
            continue
        names.add(mech.mechanism.name)
        thresholded = thresholded or bool(getattr(sym, "is_key_count", False))
    parts = sorted(names)
    if thresholded:
        parts.append("tau_threshold")
    return "+".join(parts) or "none"


def _with_intervals(
    spec: MartSpec,
    result: pd.DataFrame,
    out_types: Sequence[tuple[str, str]],
    source_types: Mapping[str, str],
    accuracy: Sequence[float | None],
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Add ``<measure>_ci_low/_ci_high`` for measures SmartNoise gives an accuracy for.

    ``get_simple_accuracy`` covers COUNT and SUM (Laplace noise only: it says
    nothing about clamping or per-person sampling bias). AVG and other derived
    measures get no interval.
    """
    import pandas as pd

    columns: dict[str, Any] = {}
    column_types: list[tuple[str, str]] = []
    names = list(result.columns)
    if len(names) != len(out_types):
        raise RuntimeError(f"mart {spec.name}: unexpected result columns {names}")
    for i, (name, (_, t)) in enumerate(zip(names, out_types, strict=True)):
        if t not in _DUCKDB_TYPE:
            t = source_types.get(name, "string")
        if not _IDENT_RE.match(name):
            raise MartSpecError(f"{spec.sql_path}: output column {name!r} needs a plain alias (AS name)")
        columns[name] = result[name]
        column_types.append((name, _DUCKDB_TYPE[t]))
        acc = accuracy[i] if i < len(accuracy) else None
        if acc is not None and t in ("int", "float"):
            half = float(acc)
            values = pd.to_numeric(result[name], errors="coerce").astype("float64")
            for suffix, vals in (
                ("_ci_low", values - half),
                ("_ci_high", values + half),
            ):
                ci = f"{name}{suffix}"
                if ci in names:
                    raise MartSpecError(f"{spec.sql_path}: output column {ci!r} is reserved")
                columns[ci] = vals
                column_types.append((ci, "DOUBLE"))
    frame = pd.DataFrame(columns, index=result.index)
    return frame, column_types


# --------------------------------------------------------------------------
# Writing the analyst database
# --------------------------------------------------------------------------


def _existing_catalog(path: Path) -> list[dict[str, Any]] | None:
    """Rows of ``_dp_catalog`` in the current analyst DB, or None if unusable."""
    import duckdb

    if not path.is_file():
        return None
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            cur = con.execute(
                f"SELECT mart, epsilon, delta, run_id, input_fingerprint, spec_sha256, row_count"
                f" FROM {CATALOG_TABLE} ORDER BY mart"
            )
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
    except duckdb.Error as exc:
        log.warning(
            "existing analyst DB %s has no readable catalog (%s); republishing",
            path,
            exc,
        )
        return None


def _matches(catalog: list[dict[str, Any]] | None, specs: Sequence[MartSpec], fp: str) -> bool:
    if not catalog:
        return False
    have = {row["mart"]: row for row in catalog}
    if set(have) != {s.name for s in specs}:
        return False
    if len({row["run_id"] for row in catalog}) != 1:
        return False
    return all(have[s.name]["spec_sha256"] == s.spec_sha256 and have[s.name]["input_fingerprint"] == fp for s in specs)


def _write_analyst_db(
    path: Path,
    evaluated: Sequence[_Evaluated],
    *,
    run_id: str,
    input_fingerprint: str,
    published_at: datetime,
) -> None:
    import duckdb

    with duckdb.connect(str(path)) as con:
        con.execute(_CATALOG_DDL)
        con.execute(
            f"COMMENT ON TABLE {CATALOG_TABLE} IS 'Differential privacy parameters of every"
            f" published mart (epsilon/delta as reported by the SmartNoise odometer).'"
        )
        for ev in evaluated:
            spec = ev.spec
            table = _q(spec.name)
            ddl = ", ".join(f"{_q(c)} {t}" for c, t in ev.column_types)
            con.execute(f"CREATE TABLE {table} ({ddl})")
            con.execute(f"COMMENT ON TABLE {table} IS {_sql_literal(spec.description)}")
            if len(ev.frame):
                con.register("_mart_frame", ev.frame)
                casts = ", ".join(f"CAST({_q(c)} AS {t})" for c, t in ev.column_types)
                con.execute(f"INSERT INTO {table} SELECT {casts} FROM _mart_frame")
                con.unregister("_mart_frame")
            con.execute(
                f"INSERT INTO {CATALOG_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    spec.name,
                    ev.epsilon,
                    ev.delta,
                    ev.mechanism,
                    spec.privacy_unit,
                    spec.max_contributions,
                    json.dumps(spec.bounds, sort_keys=True),
                    spec.source,
                    published_at,
                    run_id,
                    input_fingerprint,
                    spec.spec_sha256,
                    len(ev.frame),
                ],
            )
        con.execute("CHECKPOINT")


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _remove(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".wal")):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_marts(
    settings: Settings,
    run_id: str,
    input_fingerprint: str,
    *,
    marts_dir: Path | None = None,
) -> PublishResult:
    """Evaluate every DP mart and replace ``settings.published`` atomically.

    * Skips (spending nothing) when the current analyst DB's ``_dp_catalog``
      already records this ``input_fingerprint`` and the same spec hash for
      exactly the declared marts.
    * Otherwise opens the warehouse read-only, evaluates each mart with
      SmartNoise SQL (pandas engine), writes the marts plus ``_dp_catalog`` to
      ``<published>.tmp-<run_id>`` and ``os.replace``-s it onto
      ``settings.published``. On any failure the temp file is removed and the
      previous analyst DB is left as it was.

    ``marts_dir`` defaults to ``settings.marts_sql`` (``sql/marts``).
    """
    import duckdb

    specs = load_mart_specs(marts_dir if marts_dir is not None else settings.marts_sql)
    if not specs:
        raise MartSpecError(f"{marts_dir or settings.marts_sql}: no mart specs (*.yml + *.sql)")
    target = settings.published

    catalog = _existing_catalog(target)
    if _matches(catalog, specs, input_fingerprint):
        assert catalog is not None
        log.info(
            "analyst DB already published for fingerprint %s; skipping",
            input_fingerprint,
        )
        return PublishResult(
            status="skipped",
            run_id=run_id,
            published_run_id=str(catalog[0]["run_id"]),
            input_fingerprint=input_fingerprint,
            analyst_db=target,
            marts=tuple(
                MartResult(
                    str(r["mart"]),
                    int(r["row_count"]),
                    float(r["epsilon"]),
                    float(r["delta"]),
                )
                for r in catalog
            ),
        )

    if not settings.warehouse.is_file():
        raise FileNotFoundError(f"warehouse not found: {settings.warehouse}")
    target.parent.mkdir(parents=True, exist_ok=True)
    safe_run_id = re.sub(r"[^A-Za-z0-9._-]", "_", run_id)
    tmp = target.with_name(f"{target.name}.tmp-{safe_run_id}")
    _remove(tmp)
    try:
        with duckdb.connect(str(settings.warehouse), read_only=True) as wh:
            plans = [_plan(wh, spec) for spec in specs]  # all checked before any data is read
            evaluated = [_evaluate(wh, plan) for plan in plans]
        published_at = datetime.now(UTC).replace(tzinfo=None)
        _write_analyst_db(
            tmp,
            evaluated,
            run_id=run_id,
            input_fingerprint=input_fingerprint,
            published_at=published_at,
        )
        _fsync(tmp)
        os.replace(tmp, target)
        _fsync(target.parent)
    except BaseException:
        _remove(tmp)
        raise

    marts = tuple(MartResult(ev.spec.name, len(ev.frame), ev.epsilon, ev.delta) for ev in evaluated)
    return PublishResult(
        status="published",
        run_id=run_id,
        published_run_id=run_id,
        input_fingerprint=input_fingerprint,
        analyst_db=target,
        marts=marts,
        epsilon_spent=math.fsum(m.epsilon for m in marts),
        delta_spent=math.fsum(m.delta for m in marts),
    )

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
      public_keys:                   # optional: grouping values that are not secret
        channel: [email, web, chat, voice, api]
        created_month: {months: {from: "2024-01", to: "2026-12"}}
      quantiles:                     # optional: DP quantiles of one bounded column
        {column: resolution_hours, probabilities: [0.25, 0.5, 0.75], bins: 48, epsilon: 0.5}

``epsilon`` and ``delta`` are the budget of the whole mart. SmartNoise SQL
charges its per-statistic ``Privacy(epsilon=...)`` once for every noisy
statistic in the rewritten query (the distinct-person count used to censor
rare groups, each ``SUM`` and each ``COUNT``), so :func:`publish_marts`
calibrates the per-statistic parameters until SmartNoise's own accounting
(``get_privacy_cost``) matches the declared budget less the quantiles'
share. A mart whose grouping columns all have public keys is released as the
full grid of key values, with no threshold and no delta.

:func:`publish_marts` plans every mart without reading data, reserves the
total in the privacy-budget ledger (:mod:`crmshield.budget`; refused before
any noise is drawn when over budget), releases each mart with SmartNoise on
DuckDB (:mod:`crmshield.dp_engine`, :mod:`crmshield.dp_release`: 95%
intervals for every measure), writes the marts, ``_dp_catalog``,
``_dp_columns`` and the ``dp_marts``/``dp_docs`` views into a fresh DuckDB
file, makes it read-only and moves it onto ``settings.published``
atomically. The analyst database never holds row-level data.

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
from crmshield.yamlconfig import format_validation_error

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

log = logging.getLogger(__name__)

CATALOG_TABLE = "_dp_catalog"
CI_ALPHA = 0.05  # 95% intervals
_CI_SUFFIXES = ("_ci_low", "_ci_high")
#: Ledger principal for publications (override with CRMSHIELD_PUBLISHER).
PUBLISHER = os.environ.get("CRMSHIELD_PUBLISHER", "pipeline")
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
    description VARCHAR NOT NULL,
    epsilon DOUBLE NOT NULL,
    delta DOUBLE NOT NULL,
    mechanism VARCHAR NOT NULL,
    composition VARCHAR NOT NULL,
    privacy_unit VARCHAR NOT NULL,
    max_contributions INTEGER NOT NULL,
    bounds VARCHAR NOT NULL,
    public_keys VARCHAR NOT NULL,
    suppression VARCHAR NOT NULL,
    ci_level DOUBLE NOT NULL,
    measures VARCHAR NOT NULL,
    source_table VARCHAR NOT NULL,
    published_at TIMESTAMP NOT NULL,
    run_id VARCHAR NOT NULL,
    input_fingerprint VARCHAR NOT NULL,
    spec_sha256 VARCHAR NOT NULL,
    row_count BIGINT NOT NULL
)
"""

COLUMNS_TABLE = "_dp_columns"
_COLUMNS_DDL = f"""
CREATE TABLE {COLUMNS_TABLE} (
    mart VARCHAR NOT NULL,
    column_name VARCHAR NOT NULL,
    ordinal INTEGER NOT NULL,
    data_type VARCHAR NOT NULL,
    role VARCHAR NOT NULL,
    description VARCHAR NOT NULL,
    PRIMARY KEY (mart, column_name)
)
"""

#: Documentation views for analysts and BI tools (plain SQL over the two tables).
_DOC_VIEWS = (
    f"""CREATE VIEW dp_marts AS
    SELECT mart, description, row_count, epsilon, delta, mechanism, privacy_unit, max_contributions,
           suppression, ci_level, published_at, run_id
    FROM {CATALOG_TABLE} ORDER BY mart""",
    f"""CREATE VIEW dp_docs AS
    SELECT c.mart, c.ordinal, c.column_name, c.data_type, c.role, c.description,
           m.epsilon AS mart_epsilon, m.delta AS mart_delta, m.ci_level
    FROM {COLUMNS_TABLE} c JOIN {CATALOG_TABLE} m USING (mart)
    ORDER BY c.mart, c.ordinal""",
)


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


class MonthRange(BaseModel):
    """Public month keys ``YYYY-MM`` from ``from`` to ``to`` inclusive."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    start: str = Field(alias="from", pattern=r"^\d{4}-(0[1-9]|1[0-2])$")
    end: str = Field(alias="to", pattern=r"^\d{4}-(0[1-9]|1[0-2])$")

    @model_validator(mode="after")
    def _order(self) -> MonthRange:
        if self.start > self.end:
            raise ValueError(f"'from' ({self.start}) is after 'to' ({self.end})")
        return self

    def values(self) -> list[str]:
        y, m = (int(x) for x in self.start.split("-"))
        out: list[str] = []
        while f"{y:04d}-{m:02d}" <= self.end:
            out.append(f"{y:04d}-{m:02d}")
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        return out


class PublicKeysSpec(BaseModel):
    """``public_keys.<column>``: a list of values, or ``{months: {from, to}}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    values: tuple[str | int | bool, ...] | None = None
    months: MonthRange | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, data: Any) -> Any:
        if isinstance(data, list | tuple):
            return {"values": tuple(data)}
        return data

    @model_validator(mode="after")
    def _one(self) -> PublicKeysSpec:
        if (self.values is None) == (self.months is None):
            raise ValueError("give a list of values or {months: {from: YYYY-MM, to: YYYY-MM}}")
        vals = self.resolved()
        if not vals:
            raise ValueError("the key list is empty")
        if len(set(vals)) != len(vals):
            raise ValueError("the key list has duplicates")
        if len(vals) > 10_000:
            raise ValueError(f"{len(vals)} keys: at most 10,000 per column")
        return self

    def resolved(self) -> list[Any]:
        return list(self.values) if self.values is not None else self.months.values()  # type: ignore[union-attr]


class QuantileSpec(BaseModel):
    """``quantiles:``: DP quantiles of one bounded column per (public) group."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str = Field(pattern=_IDENT_RE.pattern)
    probabilities: tuple[float, ...] = Field(min_length=1, max_length=9)
    bins: int = Field(default=64, ge=4, le=1024, description="equal-width public bins over the column bounds")
    epsilon: float = Field(gt=0, allow_inf_nan=False, description="part of the mart's epsilon spent on quantiles")

    @model_validator(mode="after")
    def _probs(self) -> QuantileSpec:
        for p in self.probabilities:
            if not 0 < p < 1:
                raise ValueError(f"probability {p} must be between 0 and 1")
        if len(set(self.probabilities)) != len(self.probabilities):
            raise ValueError("probabilities repeat")
        return self


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
    public_keys: dict[str, PublicKeysSpec] = Field(
        default_factory=dict, description="grouping columns whose values are not secret"
    )
    quantiles: QuantileSpec | None = None

    @model_validator(mode="after")
    def _check_columns(self) -> MartSpecFile:
        if self.quantiles is not None and self.quantiles.epsilon >= self.epsilon:
            raise ValueError(
                f"quantiles.epsilon ({self.quantiles.epsilon}) must be below the mart's epsilon ({self.epsilon}):"
                " the rest pays for the SQL statistics"
            )
        for name in self.public_keys:
            if not _IDENT_RE.match(name):
                raise ValueError(f"public_keys column {name!r} is not a plain identifier")
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
        raise MartSpecError(format_validation_error(spec_path, exc)) from None
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
    #: median over cells and measures of (ci_high - ci_low) / |value| (None: nothing to divide by)
    median_relative_ci_width: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rows": int(self.rows),
            "epsilon": float(self.epsilon),
            "delta": float(self.delta),
            "median_relative_ci_width": (
                None if self.median_relative_ci_width is None else float(self.median_relative_ci_width)
            ),
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
    budget: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)

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
            "budget": self.budget,
            "validation": self.validation,
        }


@dataclass
class _Evaluated:
    spec: MartSpec
    frame: pd.DataFrame
    column_types: list[tuple[str, str]]
    epsilon: float
    delta: float
    mechanism: str
    measures: list[str] = field(default_factory=list)
    cells_outside_keys: int = 0
    tau: float | None = None
    public_keys: dict[str, list[Any]] = field(default_factory=dict)
    group_columns: list[str] = field(default_factory=list)


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


def _parse(spec: MartSpec) -> Any:
    from snsql.sql.parse import QueryParser

    try:
        return QueryParser(None).query(spec.sql)
    except Exception as exc:  # snsql raises bare ValueError/Exception on parse errors
        raise MartSpecError(f"{spec.sql_path}: SmartNoise SQL cannot parse the query: {exc}") from exc


def _referenced_columns(spec: MartSpec, source_cols: Mapping[str, str]) -> tuple[list[str], set[str], list[str]]:
    """Source columns the query needs (privacy unit first), those that feed a
    non-COUNT aggregate (they need bounds), and the grouping columns.
    Parsed with snsql's parser."""
    query = _parse(spec)
    for clause, name in ((query.having, "HAVING"), (query.limit, "LIMIT")):
        if clause is not None:
            raise MartSpecError(
                f"{spec.sql_path}: {name} is not allowed in a mart: a mart publishes every cell;"
                " analysts filter and sort the published table in SQL"
            )
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
    measured = {
        by_lower[str(col.name).split(".")[-1].lower()]
        for agg in query.xpath("//AggFunction")
        if str(agg.name).upper() != "COUNT"
        for col in agg.xpath("//Column")
        if str(col.name).split(".")[-1].lower() in by_lower
    }
    if spec.quantiles is not None:
        qcol = by_lower.get(spec.quantiles.column.lower())
        if qcol is None:
            raise MartSpecError(
                f"{spec.spec_path}: key 'quantiles.column': {spec.quantiles.column!r} is not a column of {spec.source}"
            )
        if qcol not in needed:
            needed.append(qcol)
        measured.add(qcol)
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
    groups: list[str] = []
    if query.agg is not None:
        for ge in query.agg.groupingExpressions:
            expr = ge.expression
            if type(expr).__name__ != "Column":
                raise MartSpecError(f"{spec.sql_path}: GROUP BY {expr}: group marts by plain columns")
            name = str(expr.name).split(".")[-1]
            groups.append(by_lower.get(name.lower(), name))
    for key in spec.public_keys:
        if key not in groups:
            raise MartSpecError(
                f"{spec.spec_path}: key 'public_keys.{key}': {key!r} is not a GROUP BY column of {spec.sql_path.name}"
            )
    return needed, measured, groups


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


def _typed_keys(spec: MartSpec, types: Mapping[str, str]) -> dict[str, list[Any]]:
    """Public key lists converted to the grouping column's type."""
    out: dict[str, list[Any]] = {}
    for col, keys in spec.public_keys.items():
        t = types.get(col, "string")
        vals = keys.resolved()
        try:
            if t == "int":
                conv = [int(v) for v in vals]
            elif t == "float":
                conv = [float(v) for v in vals]
            elif t == "boolean":
                conv = [v if isinstance(v, bool) else str(v).lower() in ("true", "1") for v in vals]
            else:
                conv = [str(v) for v in vals]
        except (TypeError, ValueError) as exc:
            raise MartSpecError(f"{spec.spec_path}: key 'public_keys.{col}': values are not {t}: {exc}") from None
        if len(set(conv)) != len(conv):
            raise MartSpecError(f"{spec.spec_path}: key 'public_keys.{col}': duplicates after conversion to {t}")
        out[col] = conv
    return out


def smartnoise_metadata(spec: MartSpec, types: Mapping[str, str], *, censor_dims: bool = True) -> dict[str, Any]:
    """The SmartNoise metadata (dict form) for one mart's source table.

    Person-level privacy: ``row_privacy`` off, the privacy unit column is the
    ``private_id``, ``max_ids`` caps the rows each person contributes (excess
    rows are dropped by the per-person row-hash sample), numeric columns carry
    the declared clamping bounds, rare groups are censored (``censor_dims``)
    unless every grouping column has public keys, and DPSU is off (it would
    spend budget outside the odometer).
    """
    schema, table = spec.source.split(".")
    table_meta: dict[str, Any] = {
        "row_privacy": False,
        "max_ids": spec.max_contributions,
        "sample_max_ids": True,
        "censor_dims": censor_dims,
        # unbiased counts: an empty cell may come out slightly negative, but sums over
        # cells (what analysts do in SQL) stay unbiased; cutting at 0 would inflate them
        "clamp_counts": False,
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
    and is within 1e-6 (epsilon) and 1e-3 (delta) of it. A query with no
    threshold (every grouping column public) costs no delta at all. The
    margins absorb float rounding and the odometer's slightly convex
    ``1 - (1 - tol) * prod(1 - delta_i)``.
    """
    e, d = epsilon, delta
    for _ in range(rounds):
        ce, cd = cost(e, d)
        delta_ok = cd == 0 or delta * (1 - 1e-3) <= cd <= delta
        if epsilon * (1 - 1e-6) <= ce <= epsilon and delta_ok:
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
    epsilon: float  # what the whole mart costs: SQL statistics + quantiles
    delta: float
    groups: list[str]
    public_keys: dict[str, list[Any]]
    grid: bool
    where: str | None

    @property
    def charge(self) -> tuple[str, float, float]:
        return self.spec.name, self.epsilon, self.delta


def _plan(wh: duckdb.DuckDBPyConnection, spec: MartSpec) -> _Plan:
    """Validate one mart against the warehouse schema and calibrate its budget.

    Reads no rows: SmartNoise prices the rewritten query without executing
    it. Raises :class:`MartSpecError` for anything wrong with the declaration
    or a query SmartNoise rejects, so a bad mart fails before any mart
    touches data or budget.
    """
    import numpy as np
    from snsql import Privacy

    from crmshield.dp_engine import private_reader
    from crmshield.dp_release import rewrite, spends_no_delta

    source_cols = _source_columns(wh, spec)
    needed, measured, groups = _referenced_columns(spec, source_cols)
    types = _column_types(spec, needed, measured, source_cols)
    keys = _typed_keys(spec, types)
    grid = bool(groups) and all(g in keys for g in groups)
    if spec.quantiles is not None and groups and not grid:
        raise MartSpecError(
            f"{spec.spec_path}: key 'quantiles': quantiles need public keys for every GROUP BY column"
            f" ({', '.join(g for g in groups if g not in keys)} missing under 'public_keys')"
        )
    if spec.quantiles is not None:
        qcol = spec.columns.get(spec.quantiles.column)
        if qcol is None or not qcol.bounded:
            raise MartSpecError(
                f"{spec.spec_path}: key 'quantiles.column': declare bounds for {spec.quantiles.column!r}"
                f" under 'columns.{spec.quantiles.column}'"
            )
    metadata = smartnoise_metadata(spec, types, censor_dims=not grid)
    sql_epsilon = spec.epsilon - (spec.quantiles.epsilon if spec.quantiles else 0.0)

    def cost(e: float, d: float) -> tuple[float, float]:
        reader = private_reader(wh, metadata=metadata, privacy=Privacy(epsilon=e, delta=d))
        with np.errstate(over="ignore", invalid="ignore"):  # odometer's exp(eps) for huge eps
            ce, cd = reader.get_privacy_cost(spec.sql)
        return float(ce), float(cd)

    try:
        eps_stat, delta_stat = _calibrate(cost, sql_epsilon, spec.delta)
        ce, cd = cost(eps_stat, delta_stat)
        probe = private_reader(wh, metadata=metadata, privacy=Privacy(epsilon=eps_stat, delta=delta_stat))
        _, subquery, _ = rewrite(probe, spec.sql)
    except Exception as exc:
        raise MartSpecError(f"{spec.sql_path}: SmartNoise SQL rejects the query: {exc}") from exc
    if spends_no_delta(subquery):
        cd = 0.0  # no threshold, Laplace only: pure epsilon-DP (SmartNoise's odometer adds a delta slack anyway)
    where = _parse(spec).where
    where_sql = str(where)[len("WHERE") :].strip() if where is not None else None
    total_eps = ce + (spec.quantiles.epsilon if spec.quantiles else 0.0)
    return _Plan(spec, types, metadata, eps_stat, delta_stat, total_eps, cd, groups, keys, grid, where_sql)


def _evaluate(wh: duckdb.DuckDBPyConnection, plan: _Plan) -> _Evaluated:
    """Release one planned mart: SmartNoise on DuckDB, intervals, quantiles."""
    from snsql import Privacy

    from crmshield.dp_engine import DEFAULT_SALT, private_reader
    from crmshield.dp_release import QuantileRequest, quantile_release, release

    spec = plan.spec
    reader = private_reader(
        wh, metadata=plan.metadata, privacy=Privacy(epsilon=plan.epsilon_stat, delta=plan.delta_stat)
    )
    try:
        rel = release(reader, spec.sql, public_keys=plan.public_keys if plan.grid else None, source_types=plan.types)
    except Exception as exc:
        raise RuntimeError(f"mart {spec.name} ({spec.sql_path}): SmartNoise failed: {exc}") from exc
    frame, column_types, mechanism = rel.frame, list(rel.column_types), rel.mechanism
    if spec.quantiles is not None:
        qs = spec.quantiles
        bounds = spec.columns[qs.column]
        request = QuantileRequest(
            qs.column, tuple(qs.probabilities), float(bounds.lower), float(bounds.upper), qs.bins, qs.epsilon
        )
        qframe, qtypes, _scale = quantile_release(
            wh,
            source=spec.source,
            unit=spec.privacy_unit,
            where=plan.where,
            group_columns=rel.group_columns,
            public_keys=plan.public_keys,
            request=request,
            max_contributions=spec.max_contributions,
            salt=DEFAULT_SALT,
        )
        clash = {c for c, _ in qtypes} & {c for c, _ in column_types}
        if clash:
            raise MartSpecError(f"{spec.sql_path}: output columns {sorted(clash)} clash with the quantile columns")
        frame = frame.merge(qframe, on=rel.group_columns, how="left") if rel.group_columns else frame.join(qframe)
        column_types += qtypes
        mechanism += "+laplace_histogram_quantiles"
    log.info(
        "mart %s: %d cells released, epsilon=%.6g delta=%.3g (per statistic %.4g / %.3g)%s",
        spec.name,
        len(frame),
        plan.epsilon,
        plan.delta,
        plan.epsilon_stat,
        plan.delta_stat,
        f", censoring threshold tau={rel.tau:.1f} distinct {spec.privacy_unit}" if rel.tau is not None else "",
    )
    if rel.cells_outside_keys:
        # operator log only (the count is not DP): the public key list may be incomplete
        log.warning(
            "mart %s: groups with values outside public_keys in %s were not released; check the key lists",
            spec.name,
            spec.spec_path,
        )
    return _Evaluated(
        spec,
        frame,
        column_types,
        plan.epsilon,
        plan.delta,
        mechanism,
        measures=rel.measures + [c for c, _ in column_types[len(rel.column_types) :] if not c.endswith(_CI_SUFFIXES)],
        cells_outside_keys=rel.cells_outside_keys,
        tau=rel.tau,
        public_keys=plan.public_keys if plan.grid else {},
        group_columns=list(rel.group_columns),
    )


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


def _column_docs(ev: _Evaluated) -> list[tuple[str, str, str, str]]:
    """(column, type, role, description) for every published column."""
    spec = ev.spec
    docs: list[tuple[str, str, str, str]] = []
    measures = set(ev.measures)
    for name, dtype in ev.column_types:
        if name in measures:
            role, text = "measure", f"DP estimate of {name} (noise added; see {CATALOG_TABLE}.mechanism)"
        elif name.endswith(_CI_SUFFIXES) and name.rsplit("_ci_", 1)[0] in measures:
            base, end = name.rsplit("_ci_", 1)
            role = f"ci_{end}"
            text = (
                f"{'lower' if end == 'low' else 'upper'} end of the 95% interval of {base},"
                " from the mechanism's noise scale (noise only: not clamping or contribution-bound bias)"
            )
        elif name in ev.public_keys:
            role, text = "key", f"grouping key; public list of {len(ev.public_keys[name])} values, every cell published"
        else:
            role = "key"
            text = "grouping key; a value appears only when its noisy count of distinct" + (
                f" {spec.privacy_unit} passes the threshold (tau = {ev.tau:.1f})"
                if ev.tau is not None
                else " units passes the threshold"
            )
        docs.append((name, dtype, role, text))
    return docs


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
        con.execute(_COLUMNS_DDL)
        con.execute(
            f"COMMENT ON TABLE {CATALOG_TABLE} IS 'Differential privacy parameters of every published mart:"
            f" epsilon/delta spent, mechanism, privacy unit and contribution bound, clamping bounds, public keys.'"
        )
        con.execute(f"COMMENT ON TABLE {COLUMNS_TABLE} IS 'What every column of every DP mart means.'")
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
            for i, (name, dtype, role, text) in enumerate(_column_docs(ev)):
                con.execute(
                    f"INSERT INTO {COLUMNS_TABLE} VALUES (?, ?, ?, ?, ?, ?)",
                    [spec.name, name, i + 1, dtype, role, text],
                )
                con.execute(f"COMMENT ON COLUMN {table}.{_q(name)} IS {_sql_literal(text)}")
            suppression = (
                "none: every grouping column has public keys, every cell is published"
                if ev.public_keys
                else (
                    f"groups with a noisy distinct-{spec.privacy_unit} count at or below"
                    f" tau={ev.tau:.2f} are not published"
                    if ev.tau is not None
                    else "none: no grouping"
                )
            )
            con.execute(
                f"INSERT INTO {CATALOG_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    spec.name,
                    spec.description,
                    ev.epsilon,
                    ev.delta,
                    ev.mechanism,
                    "basic sequential over the mart's noisy statistics",
                    spec.privacy_unit,
                    spec.max_contributions,
                    json.dumps(spec.bounds, sort_keys=True),
                    json.dumps({k: list(map(str, v)) for k, v in ev.public_keys.items()}, sort_keys=True),
                    suppression,
                    1 - CI_ALPHA,
                    json.dumps(ev.measures),
                    spec.source,
                    published_at,
                    run_id,
                    input_fingerprint,
                    spec.spec_sha256,
                    len(ev.frame),
                ],
            )
        for view in _DOC_VIEWS:
            con.execute(view)
        con.execute("CHECKPOINT")


def _median_relative_ci_width(ev: _Evaluated) -> float | None:
    """Median of (ci_high - ci_low) / |value| over the released cells of every measure (post-processing)."""
    import numpy as np
    import pandas as pd

    ratios: list[np.ndarray] = []
    for m in ev.measures:
        value = pd.to_numeric(ev.frame[m], errors="coerce").astype("float64").abs()
        width = (ev.frame[f"{m}_ci_high"] - ev.frame[f"{m}_ci_low"]).astype("float64")
        ok = (value > 0) & width.notna()
        ratios.append((width[ok] / value[ok]).to_numpy())
    joined = np.concatenate(ratios) if ratios else np.array([])
    return float(np.median(joined)) if len(joined) else None


def _published_facts(path: Path, evaluated: Sequence[_Evaluated], remaining_epsilon: float) -> pd.DataFrame:
    """One row per mart of the file at ``path``, for ``expectations/published.py``.

    Read back from the file itself (``_dp_catalog`` and the columns DuckDB reports), so the
    suite checks what analysts will open, not what the publisher meant to write. DP
    parameters and counts only: no mart value.
    """
    import duckdb
    import pandas as pd

    with duckdb.connect(str(path), read_only=True) as con:
        catalog = con.execute(
            f"SELECT mart, epsilon, delta, mechanism, bounds, privacy_unit, row_count, measures FROM {CATALOG_TABLE}"
        ).fetchall()
        columns: dict[str, set[str]] = {}
        for table, column in con.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'main'"
        ).fetchall():
            columns.setdefault(str(table), set()).add(str(column))
    expected_keys = {ev.spec.name: set(ev.group_columns) for ev in evaluated}
    rows = []
    for mart, eps, delta, mechanism, bounds, unit, row_count, measures_json in catalog:
        measures = json.loads(measures_json) if measures_json else []
        have = columns.get(str(mart), set())
        expected = expected_keys.get(str(mart), set()) | {f"{m}{s}" for m in measures for s in ("", *_CI_SUFFIXES)}
        rows.append(
            {
                "mart": mart,
                "epsilon": eps,
                "delta": delta,
                "mechanism": mechanism,
                "bounds": bounds,
                "privacy_unit": unit,
                "row_count": row_count,
                "measures_without_ci": sum(1 for m in measures if not {f"{m}_ci_low", f"{m}_ci_high"} <= have),
                "unexpected_columns": len(have - expected),
                "budget_remaining_epsilon": float(remaining_epsilon),
            }
        )
    return pd.DataFrame(rows)


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
    * Otherwise opens the warehouse read-only (guarded), plans every mart,
      reserves their total epsilon/delta in the ledger (``BudgetExceeded``
      before any noise is drawn), releases each mart with SmartNoise on
      DuckDB, writes the marts plus ``_dp_catalog``/``_dp_columns`` and the
      documentation views to ``<published>.tmp-<run_id>``, makes it 0444 and
      ``os.replace``-s it onto ``settings.published``; then commits the
      reservation. On any failure the temp file is removed, the reservation
      is cancelled (nothing was released) and the previous analyst DB is
      left as it was.

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
    from crmshield.budget import Charge, Ledger
    from crmshield.dp_engine import guard_connection

    ledger = Ledger.open(settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    safe_run_id = re.sub(r"[^A-Za-z0-9._-]", "_", run_id)
    tmp = target.with_name(f"{target.name}.tmp-{safe_run_id}")
    _remove(tmp)
    reservation = None
    try:
        with duckdb.connect(str(settings.warehouse), read_only=True) as wh:
            guard_connection(wh)
            plans = [_plan(wh, spec) for spec in specs]  # all checked before any data is read
            # refused here, before any noise is drawn, if the population budget cannot cover it
            reservation = ledger.reserve(
                principal=PUBLISHER,
                kind="publication",
                charges=[Charge(*plan.charge) for plan in plans],
                run_id=run_id,
                composition="basic sequential over marts and their noisy statistics",
            )
            evaluated = [_evaluate(wh, plan) for plan in plans]
        published_at = datetime.now(UTC).replace(tzinfo=None)
        _write_analyst_db(
            tmp,
            evaluated,
            run_id=run_id,
            input_fingerprint=input_fingerprint,
            published_at=published_at,
        )
        # the file analysts would get, checked before it replaces the published one
        from crmshield.validate import validate_published

        usage = ledger.remaining()["population"]
        remaining = usage["cap_epsilon"] - usage["spent_epsilon"]  # not clamped at 0: overspent shows negative
        validation = validate_published(
            settings, run_id, _published_facts(tmp, evaluated, remaining), [s.name for s in specs]
        )
        os.chmod(tmp, 0o444)  # analysts get a read-only file
        _fsync(tmp)
        os.replace(tmp, target)
        _fsync(target.parent)
    except BaseException as exc:
        _remove(tmp)
        if reservation is not None:
            # nothing was released: the noisy results never left this process
            ledger.cancel(reservation, f"publication failed before release: {type(exc).__name__}")
        raise
    ledger.commit(reservation)
    budget = ledger.remaining()
    log.info("publish: published__marts passed (%d warnings)", len(validation.warnings))

    marts = tuple(
        MartResult(ev.spec.name, len(ev.frame), ev.epsilon, ev.delta, _median_relative_ci_width(ev)) for ev in evaluated
    )
    return PublishResult(
        status="published",
        run_id=run_id,
        published_run_id=run_id,
        input_fingerprint=input_fingerprint,
        analyst_db=target,
        marts=marts,
        epsilon_spent=math.fsum(m.epsilon for m in marts),
        delta_spent=math.fsum(m.delta for m in marts),
        budget=budget,
        validation=validation.to_dict(),
    )

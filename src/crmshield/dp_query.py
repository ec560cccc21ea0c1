"""Interactive differentially private queries over the privacy-zone warehouse.

For questions the published marts do not answer, an analyst runs one
aggregate SQL query over one warehouse table and gets noisy aggregates with
95% intervals, paid from a privacy budget::

    session = DPSession(settings, "alice")
    session.explain("SELECT channel, COUNT(*) AS n FROM marts.tickets GROUP BY channel")
    result = session.query("SELECT channel, COUNT(*) AS n FROM marts.tickets GROUP BY channel")
    result.frame  # channel, n, n_ci_low, n_ci_high

What can be queried is declared in ``config/dp_query_tables.yml``
(:func:`load_query_tables`): the tables, their columns, types, clamping bounds,
the privacy unit and its contribution bound, the default per-query epsilon and
delta, and optional public key lists. SmartNoise SQL rewrites the query and
draws the noise; DuckDB computes the exact aggregates on the warehouse opened
read-only and locked with :func:`~crmshield.dp_engine.guard_connection`.

**Refusals**, before anything is spent or read, with a message that says
why: anything but one aggregate ``SELECT`` (``SELECT *``, bare columns,
``SELECT DISTINCT``, several statements, ``WITH``), joins, subqueries,
aggregates over expressions (``SUM(amount * 2)``), aggregates other than
COUNT/SUM/AVG/VAR/STDDEV, ``GROUP BY`` expressions or the privacy unit,
``HAVING``, tables or columns not declared in the configuration (``raw.*``,
``main.*``), file readers and table functions (``read_parquet(...)``,
``read_csv(...)``, ``'file.parquet'``).

**Post-processing.** ``ORDER BY`` (output columns, by name or by the same
expression) and ``LIMIT``/``TOP`` are applied to the released table with
pandas; they only reorder or drop released rows, so they cost nothing.
``HAVING`` is refused: filter the released table yourself.

**Suppression.** When every ``GROUP BY`` column has public keys, the full grid
of key values is released (empty cells get noise like the others; groups
outside the lists are never released). Otherwise a group is released only when
its noisy count of distinct customers passes SmartNoise's threshold tau. An
ungrouped query always returns its one row, so it is not thresholded.

**Identity and budget.** The analyst identity is ``analyst=`` (``--analyst``),
else ``$CRMSHIELD_ANALYST``, else the OS user (:func:`resolve_analyst`); it is
*declared, not authenticated* (the audit log records the OS user as well).
The query's cost is SmartNoise's own ``get_privacy_cost`` after calibrating the
per-statistic epsilon to the requested total (as marts do), and it is reserved
in the ledger (:mod:`crmshield.budget`) for the analyst AND the population
*before* the warehouse is read; an unknown analyst or a budget that would be
exceeded is refused with the ledger's message (what is spent, what remains,
when it refreshes), and the ledger records the refusal. The reservation is
committed once the noisy result exists. If the query fails before the
warehouse is read it is cancelled (not counted). If it fails after the exact
aggregates started running, the charge is kept and the error shown is generic:
whether a query fails can depend on the data (a cast that fails on one
person's value), so neither the failure nor its text comes for free.

**Audit.** Every call, explain or query, released, refused or failed, appends
one JSON line to ``<data>/restricted/dp_query_audit.jsonl`` (mode 0600, next
to the ledger): time, analyst, OS user, SQL and its SHA-256, table, epsilon,
delta, status, reason, query id (the ledger entries' ``run_id``) and
reservation id. ``explain`` writes no ledger entry and spends nothing.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import math
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from crmshield.dp_release import CI_ALPHA, DPQueryError
from crmshield.publish import PublicKeysSpec
from crmshield.yamlconfig import format_validation_error, read_mapping

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

    from crmshield.budget import Ledger
    from crmshield.config import Settings

TABLES_ENV = "CRMSHIELD_DP_QUERY_TABLES"
ANALYST_ENV = "CRMSHIELD_ANALYST"
AUDIT_FILE = "dp_query_audit.jsonl"
COMPOSITION = "basic sequential over the query's noisy statistics (SmartNoise odometer)"
MAX_SQL_CHARS = 10_000
MAX_GRID_CELLS = 100_000
_DB = "warehouse"  # database name in the SmartNoise metadata

_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$")

ColumnType = Literal["string", "int", "float", "boolean"]


# --------------------------------------------------------------------------
# Configuration: config/dp_query_tables.yml
# --------------------------------------------------------------------------


class QueryTablesError(ValueError):
    """``config/dp_query_tables.yml`` is missing or invalid; the message names the file and the key."""


class QueryColumn(BaseModel):
    """One queryable column: SmartNoise type, clamping bounds, public keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: ColumnType
    lower: float | None = Field(default=None, allow_inf_nan=False)
    upper: float | None = Field(default=None, allow_inf_nan=False)
    public_keys: PublicKeysSpec | None = None

    @model_validator(mode="after")
    def _check(self) -> QueryColumn:
        if (self.lower is None) != (self.upper is None):
            raise ValueError("give both lower and upper, or neither")
        if self.lower is not None and self.upper is not None:
            if self.type not in ("int", "float"):
                raise ValueError(f"bounds only apply to int or float columns, not {self.type}")
            if self.lower >= self.upper:
                raise ValueError(f"lower ({self.lower}) must be below upper ({self.upper})")
        return self

    @property
    def bounded(self) -> bool:
        return self.lower is not None and self.upper is not None

    def keys(self) -> list[Any] | None:
        """The public key list converted to this column's type (None when not public)."""
        if self.public_keys is None:
            return None
        vals = self.public_keys.resolved()
        if self.type == "int":
            return [int(v) for v in vals]
        if self.type == "float":
            return [float(v) for v in vals]
        if self.type == "boolean":
            return [v if isinstance(v, bool) else str(v).strip().lower() in ("true", "1") for v in vals]
        return [str(v) for v in vals]


class QueryTable(BaseModel):
    """One DP-queryable warehouse table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field(min_length=1)
    privacy_unit: str = Field(pattern=_IDENT_RE.pattern)
    max_contributions: int = Field(ge=1, le=1_000)
    epsilon: float = Field(gt=0, allow_inf_nan=False, description="default cost of one query")
    delta: float = Field(gt=0, lt=1, description="default delta of one query (pays for the threshold)")
    columns: dict[str, QueryColumn] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> QueryTable:
        for name in self.columns:
            if not _IDENT_RE.match(name):
                raise ValueError(f"column name {name!r} is not a plain identifier")
        lowered = [n.lower() for n in self.columns]
        if len(set(lowered)) != len(lowered):
            raise ValueError("column names repeat (names are case-insensitive)")
        unit = self.columns.get(self.privacy_unit)
        if unit is None:
            raise ValueError(f"privacy_unit {self.privacy_unit!r} must be declared under 'columns'")
        if unit.type != "string" or unit.bounded or unit.public_keys is not None:
            raise ValueError(f"privacy_unit {self.privacy_unit!r} must be a string column without bounds or keys")
        for name, col in self.columns.items():
            keys = col.keys()
            if keys is not None and len(set(keys)) != len(keys):
                raise ValueError(f"columns.{name}.public_keys: duplicates after conversion to {col.type}")
        return self

    def column(self, name: str) -> tuple[str, QueryColumn] | None:
        """The declared column matching *name* case-insensitively (DuckDB's rule)."""
        for declared, col in self.columns.items():
            if declared.lower() == name.lower():
                return declared, col
        return None


class _QueryTablesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tables: dict[str, QueryTable] = Field(min_length=1)


@dataclass(frozen=True)
class QueryTables:
    """``config/dp_query_tables.yml``, validated: ``schema.table`` -> :class:`QueryTable`."""

    tables: dict[str, QueryTable]
    source: Path

    def lookup(self, name: str) -> tuple[str, QueryTable] | None:
        for key, table in self.tables.items():
            if key.lower() == name.lower():
                return key, table
        return None

    @property
    def names(self) -> list[str]:
        return sorted(self.tables)


def query_tables_path(settings: Settings) -> Path:
    """``$CRMSHIELD_DP_QUERY_TABLES``, else ``config/dp_query_tables.yml`` under the project root."""
    env = os.environ.get(TABLES_ENV)
    return Path(env).resolve() if env else settings.root / "config" / "dp_query_tables.yml"


def load_query_tables(path: Path) -> QueryTables:
    """Read and validate the DP-queryable tables; errors name the file and the key."""
    path = Path(path)
    doc = read_mapping(path, QueryTablesError, "DP-queryable tables configuration")
    tables = doc.get("tables")
    if isinstance(tables, Mapping):
        for name in tables:
            if not isinstance(name, str) or not _TABLE_RE.match(name):
                raise QueryTablesError(f"{path}: key 'tables.{name}': name tables as schema.table")
    try:
        model = _QueryTablesFile.model_validate(doc)
    except ValidationError as exc:
        raise QueryTablesError(format_validation_error(path, exc)) from None
    lowered = [n.lower() for n in model.tables]
    if len(set(lowered)) != len(lowered):
        raise QueryTablesError(f"{path}: key 'tables': table names repeat (names are case-insensitive)")
    return QueryTables(tables=dict(model.tables), source=path)


# --------------------------------------------------------------------------
# Identity
# --------------------------------------------------------------------------


def resolve_analyst(name: str | None = None) -> str:
    """The analyst identity: *name*, else ``$CRMSHIELD_ANALYST``, else the OS user.

    Not authenticated: the ledger refuses identities without a budget, and the
    audit log records the OS user beside the declared identity.
    """
    for candidate in (name, os.environ.get(ANALYST_ENV)):
        if candidate is not None and candidate.strip():
            return candidate.strip()
    try:
        user = getpass.getuser()
    except Exception:  # no login name in this environment
        user = ""
    if not user.strip():
        raise ValueError(f"no analyst identity: pass --analyst NAME or set {ANALYST_ENV}")
    return user.strip()


def _os_user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:
        return None


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class MeasureAccuracy:
    """Expected 95% error of one released measure (noise only, not clamping or contribution bias)."""

    name: str
    kind: Literal["count", "sum", "derived"]
    half_width: float | None  # +/- for COUNT and SUM; None for derived measures
    statistics: tuple[str, ...]  # the noisy statistics behind it
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "half_width": self.half_width,
            "statistics": list(self.statistics),
            "note": self.note,
        }


@dataclass(frozen=True)
class Explanation:
    """What a query would cost and release, computed without reading any data or spending anything."""

    analyst: str
    sql: str
    table: str
    privacy_unit: str
    max_contributions: int
    epsilon: float  # SmartNoise's get_privacy_cost after calibration: what the query is charged
    delta: float
    requested_epsilon: float
    epsilon_per_statistic: float
    delta_per_statistic: float
    statistics: tuple[dict[str, Any], ...]
    measures: tuple[MeasureAccuracy, ...]
    group_columns: tuple[str, ...]
    thresholded: bool
    tau: float | None
    grid_cells: int | None
    suppression: str
    bounds: dict[str, tuple[float, float]]
    order_by: tuple[tuple[str, bool], ...]
    limit: int | None
    budget: dict[str, Any]  # ledger.remaining(analyst=...): population + analyst
    fits: bool
    budget_message: str | None
    ci_level: float = 1 - CI_ALPHA

    def to_dict(self) -> dict[str, Any]:
        return {
            "analyst": self.analyst,
            "sql": self.sql,
            "table": self.table,
            "privacy_unit": self.privacy_unit,
            "max_contributions": self.max_contributions,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "requested_epsilon": self.requested_epsilon,
            "epsilon_per_statistic": self.epsilon_per_statistic,
            "delta_per_statistic": self.delta_per_statistic,
            "composition": COMPOSITION,
            "statistics": [dict(s) for s in self.statistics],
            "measures": [m.to_dict() for m in self.measures],
            "group_columns": list(self.group_columns),
            "thresholded": self.thresholded,
            "tau": self.tau,
            "grid_cells": self.grid_cells,
            "suppression": self.suppression,
            "bounds": {k: list(v) for k, v in self.bounds.items()},
            "order_by": [{"column": c, "ascending": a} for c, a in self.order_by],
            "limit": self.limit,
            "ci_level": self.ci_level,
            "budget": self.budget,
            "fits": self.fits,
            "budget_message": self.budget_message,
        }

    def describe(self) -> str:
        """A human-readable account (the CLI's ``--explain`` output)."""
        stats = len(self.statistics)
        lines = [
            f"Query on {self.table} by analyst {self.analyst!r} (privacy unit {self.privacy_unit},"
            f" at most {self.max_contributions} row(s) per customer)",
            f"Cost: epsilon={_num(self.epsilon)}, delta={_num(self.delta)} ({stats} noisy statistic(s),"
            f" epsilon={_num(self.epsilon_per_statistic)} each, basic sequential composition);"
            " --explain spends nothing",
            f"Expected error ({self.ci_level:.0%} of releases, noise only):",
        ]
        width = max((len(m.name) for m in self.measures), default=0)
        for m in self.measures:
            err = f"+/- {_num(m.half_width)}" if m.half_width is not None else "derived"
            lines.append(f"  {m.name:<{width}}  {err}: {m.note}")
        if self.bounds:
            clamps = ", ".join(f"{c} to [{_num(lo)}, {_num(hi)}]" for c, (lo, hi) in sorted(self.bounds.items()))
            lines.append(f"Clamping: {clamps}")
        lines.append(f"Suppression: {self.suppression}")
        if self.order_by or self.limit is not None:
            parts = [", ".join(f"{c} {'ASC' if a else 'DESC'}" for c, a in self.order_by)] if self.order_by else []
            if self.limit is not None:
                parts.append(f"first {self.limit} row(s)")
            lines.append("Post-processing of the released rows (free): " + "; ".join(parts))
        lines.append("Budget: " + format_budget(self.budget))
        lines.append(
            "Would run: yes"
            if self.fits
            else f"Would run: NO, it would be refused: {self.budget_message or 'budget exceeded'}"
        )
        return "\n".join(lines)


@dataclass
class QueryResult:
    """A released query: the noisy table with its intervals, and what it cost."""

    query_id: str
    analyst: str
    sql: str
    table: str
    frame: pd.DataFrame
    column_types: list[tuple[str, str]]
    measures: list[str]
    group_columns: list[str]
    epsilon: float
    delta: float
    mechanism: str
    tau: float | None
    cells_outside_keys: int
    reservation_id: str
    remaining: dict[str, Any]
    explanation: Explanation
    released_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def records(self) -> list[dict[str, Any]]:
        """The released rows as plain Python values (None for missing)."""
        out = []
        for row in self.frame.to_dict("records"):
            out.append({k: _plain(v) for k, v in row.items()})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "query_id": self.query_id,
            "analyst": self.analyst,
            "sql": self.sql,
            "table": self.table,
            "columns": [{"name": c, "type": t} for c, t in self.column_types],
            "rows": self.records(),
            "measures": list(self.measures),
            "group_columns": list(self.group_columns),
            "epsilon": self.epsilon,
            "delta": self.delta,
            "composition": COMPOSITION,
            "mechanism": self.mechanism,
            "tau": self.tau,
            "suppression": self.explanation.suppression,
            "cells_outside_keys": self.cells_outside_keys,
            "ci_level": 1 - CI_ALPHA,
            "reservation_id": self.reservation_id,
            "released_at": self.released_at.isoformat(),
            "remaining": self.remaining,
        }


class DPQueryFailed(RuntimeError):
    """The query failed after it started reading the warehouse; its budget stays charged."""


def _plain(v: Any) -> Any:
    import numpy as np

    if v is None:
        return None
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


_ADJECTIVE = {"day": "daily", "week": "weekly", "month": "monthly", "quarter": "quarterly"}


def format_budget(budget: Mapping[str, Any]) -> str:
    parts = []
    for scope in ("analyst", "population"):
        u = budget.get(scope)
        if not u:
            continue
        parts.append(
            f"{scope} {u['name']} has epsilon={_num(u['remaining_epsilon'])} of {_num(u['cap_epsilon'])},"
            f" delta={_num(u['remaining_delta'])} of {_num(u['cap_delta'])} left"
            f" ({_ADJECTIVE.get(u['period'], u['period'])}; refreshes at {u['refreshes_at']})"
        )
    return "; ".join(parts)


# --------------------------------------------------------------------------
# Planning: refusals, calibration, expected error (no data, no budget)
# --------------------------------------------------------------------------

_LITERAL_RE = re.compile(r"'(?:[^']|'')*'")
_FILE_FN_RE = re.compile(
    r"\b(read_\w+|\w+_scan|glob|sniff_csv|query_table|query|parquet_\w+|iceberg_\w+|delta_\w+"
    r"|sqlite_\w+|postgres_\w+|mysql_\w+|getenv|current_setting)\s*\(",
    re.I,
)
_FILE_FROM_RE = re.compile(r"\bFROM\s*'", re.I)


@dataclass
class _Plan:
    sql: str
    table_key: str
    table: QueryTable
    metadata: dict[str, Any]
    types: dict[str, str]
    groups: list[str]  # declared names of the GROUP BY columns
    public_keys: dict[str, list[Any]]  # keyed by declared and written names (grid only)
    grid: bool
    epsilon_stat: float
    delta_stat: float
    epsilon: float
    delta: float
    requested_epsilon: float
    order_by: list[tuple[str, bool]]
    limit: int | None
    statistics: list[dict[str, Any]]
    measures: list[MeasureAccuracy]
    tau: float | None
    bounds: dict[str, tuple[float, float]]

    @property
    def thresholded(self) -> bool:
        return bool(self.groups) and not self.grid

    @property
    def grid_cells(self) -> int | None:
        if not self.grid:
            return None
        return math.prod(len(self.table.columns[g].keys() or []) for g in self.groups)

    def suppression(self) -> str:
        unit = self.table.privacy_unit
        if not self.groups:
            return "none: an ungrouped query releases its one row"
        if self.grid:
            return (
                f"none: every GROUP BY column has public keys, so all {self.grid_cells} cells of the key grid are"
                " released, empty ones included (values outside the key lists are never released)"
            )
        assert self.tau is not None
        return (
            f"groups are thresholded: a group is released only if its noisy count of distinct {unit} exceeds"
            f" tau={self.tau:.1f}; cells with fewer than ~{math.ceil(self.tau)} distinct customers are suppressed"
        )


def _refuse(message: str) -> DPQueryError:
    return DPQueryError(f"refused: {message}")


def _strip_ident(part: str) -> str:
    part = part.strip()
    if len(part) >= 2 and part[0] == part[-1] == '"':
        return part[1:-1].replace('""', '"')
    if len(part) >= 2 and part[0] == "[" and part[-1] == "]":
        return part[1:-1]
    return part


def _last(name: Any) -> str:
    return _strip_ident(str(name).split(".")[-1])


def _precheck(sql: str, tables: QueryTables) -> str:
    """Refusals that need no parser: one SELECT, no files, no subqueries, no joins."""
    if not isinstance(sql, str) or not sql.strip():
        raise _refuse("empty query: give one aggregate SELECT over a DP-queryable table")
    text = sql.strip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    if len(text) > MAX_SQL_CHARS:
        raise _refuse(f"the query is longer than {MAX_SQL_CHARS:,} characters")
    bare = _LITERAL_RE.sub("''", text)
    allowed = ", ".join(tables.names)
    if ";" in bare:
        raise _refuse("one statement at a time: give a single aggregate SELECT")
    m = _FILE_FN_RE.search(bare)
    if m or _FILE_FROM_RE.search(bare):
        what = f"{m.group(1)}(...)" if m else "a file path"
        raise _refuse(
            f"reading files or calling table functions ({what}) is not allowed: DP queries read only the"
            f" privacy-zone warehouse tables declared in the configuration ({allowed})"
        )
    first = re.match(r"\s*(?:--[^\n]*\n\s*)*([A-Za-z_]+)", bare)
    keyword = first.group(1).upper() if first else ""
    if keyword == "WITH":
        raise _refuse("common table expressions (WITH) are subqueries, which are not supported: query one table")
    if keyword != "SELECT":
        raise _refuse(f"only a single aggregate SELECT is allowed, not {keyword or 'this statement'}")
    if re.search(r"\(\s*SELECT\b", bare, re.I):
        raise _refuse("subqueries are not supported: query one warehouse table directly")
    if re.search(r"\bJOIN\b", bare, re.I):
        raise _refuse("joins are not supported by SmartNoise SQL; query one warehouse table")
    return text


def _metadata(key: str, table: QueryTable, *, censor_dims: bool) -> tuple[dict[str, Any], dict[str, str]]:
    schema, name = key.split(".")
    meta: dict[str, Any] = {
        "row_privacy": False,
        "max_ids": table.max_contributions,
        "sample_max_ids": True,
        "censor_dims": censor_dims,
        "clamp_counts": True,
        "clamp_columns": True,
        "use_dpsu": False,
    }
    types: dict[str, str] = {}
    for col, spec in table.columns.items():
        m: dict[str, Any] = {"type": spec.type}
        if col == table.privacy_unit:
            m["private_id"] = True
        if spec.bounded:
            m["lower"] = spec.lower
            m["upper"] = spec.upper
        meta[col] = m
        types[col] = spec.type
    return {_DB: {schema: {name: meta}}}, types


def _memory_connection() -> duckdb.DuckDBPyConnection:
    """A data-less connection for planning: SmartNoise rewrites and prices without executing."""
    import duckdb

    from crmshield.dp_engine import guard_connection

    return guard_connection(duckdb.connect(":memory:"))


def _plan(sql: str, tables: QueryTables, epsilon: float | None) -> _Plan:
    """Check, price and describe one query without reading data or spending budget."""
    import numpy as np
    from snsql import Privacy
    from snsql.sql.parse import QueryParser

    from crmshield.dp_engine import private_reader
    from crmshield.dp_release import refusal, rewrite, spends_no_delta
    from crmshield.publish import _calibrate

    text = _precheck(sql, tables)
    try:
        parsed = QueryParser(None).query(text)
    except Exception as exc:
        raise refusal(text, exc) from None
    if parsed is None or isinstance(parsed, list):
        raise _refuse("empty query")

    # one declared table
    relations = list(parsed.source.relations) if parsed.source is not None else []
    if len(relations) != 1 or relations[0].joins:
        raise _refuse("joins are not supported by SmartNoise SQL; query one warehouse table")
    primary = relations[0].primary
    if type(primary).__name__ != "Table":
        raise _refuse("subqueries are not supported: query one warehouse table directly")
    parts = [_strip_ident(p) for p in str(primary.name).split(".")]
    found = tables.lookup(".".join(parts)) if len(parts) == 2 else None
    if found is None:
        raise _refuse(
            f"table {primary.name} is not a DP-queryable table of the privacy-zone warehouse;"
            f" query one of {', '.join(tables.names)} (schema.table, declared in {tables.source.name})"
        )
    key, table = found

    # clauses and columns
    quantifier = parsed.select.quantifier
    if quantifier is not None and type(quantifier).__name__ != "Top":
        raise _refuse("SELECT DISTINCT is not an aggregate: use GROUP BY with COUNT/SUM/AVG")
    if parsed.having is not None:
        raise _refuse(
            "HAVING is not supported in interactive queries: filter the released rows yourself"
            " (post-processing of a DP result is free)"
        )
    aliases = {ne.name.lower() for ne in parsed.select.namedExpressions if ne.name}
    declared = ", ".join(table.columns)
    for node in parsed.xpath("//Column"):
        name = _last(node.name)
        if table.column(name) is None and name.lower() not in aliases:
            raise _refuse(f"column {name} is not a DP-queryable column of {key} (queryable: {declared})")
    groups: list[str] = []
    written: list[str] = []
    if parsed.agg is not None:
        for ge in parsed.agg.groupingExpressions:
            expr = ge.expression
            if type(expr).__name__ != "Column":
                raise _refuse(f"GROUP BY {expr}: group by plain columns")
            hit = table.column(_last(expr.name))
            if hit is None:
                raise _refuse(f"column {_last(expr.name)} is not a DP-queryable column of {key}")
            if hit[0] == table.privacy_unit:
                raise _refuse(f"grouping by the privacy unit {table.privacy_unit} would release per-customer values")
            groups.append(hit[0])
            written.append(_last(expr.name))
    grid = bool(groups) and all(table.columns[g].public_keys is not None for g in groups)
    public_keys: dict[str, list[Any]] = {}
    if grid:
        for g, w in zip(groups, written, strict=True):
            public_keys[g] = public_keys[w] = table.columns[g].keys() or []
        cells = math.prod(len(table.columns[g].keys() or []) for g in dict.fromkeys(groups))
        if cells > MAX_GRID_CELLS:
            raise _refuse(f"the public key grid has {cells:,} cells (at most {MAX_GRID_CELLS:,}): group by fewer")
    censor = bool(groups) and not grid
    metadata, types = _metadata(key, table, censor_dims=censor)

    # price it: SmartNoise's own accounting, calibrated to the requested total
    requested = table.epsilon if epsilon is None else epsilon
    if isinstance(requested, bool) or not isinstance(requested, int | float) or not math.isfinite(requested):
        raise ValueError(f"epsilon must be a finite number > 0, got {requested!r}")
    if requested <= 0:
        raise ValueError(f"epsilon must be > 0, got {requested!r}")
    requested = float(requested)
    conn = _memory_connection()
    try:

        def reader_for(e: float, d: float) -> Any:
            return private_reader(conn, metadata=metadata, privacy=Privacy(epsilon=e, delta=d))

        reader = reader_for(requested, table.delta)
        _, subquery, outer = rewrite(reader, text)  # SmartNoise's refusals, as clear messages

        costs: dict[tuple[float, float], tuple[float, float]] = {}

        def cost(e: float, d: float) -> tuple[float, float]:
            if (e, d) not in costs:
                with np.errstate(over="ignore", invalid="ignore"):  # odometer's exp(eps) for huge eps
                    ce, cd = reader_for(e, d).get_privacy_cost(text)
                costs[(e, d)] = (float(ce), float(cd))
            return costs[(e, d)]

        try:
            eps_stat, delta_stat = _calibrate(cost, requested, table.delta)
            ce, cd = cost(eps_stat, delta_stat)
            final = reader_for(eps_stat, delta_stat)
            parsed_final, subquery, outer = rewrite(final, text)
            if spends_no_delta(subquery):
                cd = 0.0  # no threshold, Laplace only: pure epsilon-DP
        except DPQueryError:
            raise
        except Exception as exc:
            raise _refuse(f"SmartNoise cannot price this query at epsilon={requested:g}: {exc}") from None
    finally:
        conn.close()

    # output columns: plain names, measures and their noisy statistics
    syms = subquery._select_symbols
    names = [s.name for s in syms]
    lower_names = [n.lower() for n in names]
    mechs = [s.mechanism for s in syms]
    out_syms = outer._select_symbols
    out_names = [s.name for s in out_syms]
    for j, name in enumerate(out_names):
        if not name or not _IDENT_RE.match(name) or name == "???":
            raise _refuse(
                f"output column {j + 1} ({parsed.select.namedExpressions[j].expression}) needs an alias (AS name)"
            )
        for suffix in ("_ci_low", "_ci_high"):
            if f"{name}{suffix}" in out_names:
                raise _refuse(f"output column {name}{suffix} is reserved for the interval of {name}")
    if len({n.lower() for n in out_names}) != len(out_names):
        raise _refuse("output column names repeat: give each an alias")

    statistics: list[dict[str, Any]] = []
    half: dict[int, float] = {}
    tau: float | None = None
    for i, (s, m) in enumerate(zip(syms, mechs, strict=True)):
        if m is None:
            continue
        half[i] = float(m.accuracy(CI_ALPHA))
        statistics.append(
            {
                "name": s.name,
                "mechanism": str(getattr(getattr(m, "mechanism", None), "name", "unknown")),
                "scale": float(m.scale),
                "epsilon": float(m.epsilon),
                "half_width": half[i],
                "key_count": bool(s.is_key_count),
            }
        )
        if censor and s.is_key_count:
            tau = float(m.threshold)
    if censor and tau is None:
        raise _refuse("SmartNoise found no distinct-person count to threshold the groups with")

    agg_names = [
        str(ne.expression.name).upper() if type(ne.expression).__name__ == "AggFunction" else ""
        for ne in parsed_final.select.namedExpressions
    ]
    measures: list[MeasureAccuracy] = []
    for j, ne in enumerate(outer.select.namedExpressions):
        cols = [c.name.lower() for c in ne.expression.xpath("//Column")]
        idx = sorted({lower_names.index(c) for c in cols if c in lower_names and mechs[lower_names.index(c)]})
        if not idx:
            continue
        inner = ne.expression
        while type(inner).__name__ == "NestedExpression":
            inner = inner.expression
        stat_names = tuple(names[i] for i in idx)
        if len(idx) == 1 and type(inner).__name__ == "Column":
            i = idx[0]
            if syms[i].expression.is_count:
                kind, note = "count", "COUNT with Laplace noise; negative counts are shown as 0"
            else:
                kind, note = "sum", "SUM of values clamped to the column bounds, with Laplace noise"
            measures.append(MeasureAccuracy(out_names[j], kind, half[i], stat_names, note))
            continue
        parts = ", ".join(f"{names[i]} +/- {_num(half[i])}" for i in idx)
        if agg_names[j] == "AVG" and len(idx) == 2:
            s_i = next((i for i in idx if not syms[i].expression.is_count), idx[0])
            c_i = next((i for i in idx if syms[i].expression.is_count), idx[-1])
            note = (
                f"AVG = noisy SUM / noisy COUNT ({parts}); for a group of n rows the error is about"
                f" +/- ({_num(half[s_i])} + |mean| * {_num(half[c_i])}) / n: small groups are noisy"
            )
        else:
            label = agg_names[j] or "an expression"
            note = (
                f"{label} computed from noisy statistics ({parts}); its interval is computed per cell"
                " from their noise and shrinks as groups grow"
            )
        measures.append(MeasureAccuracy(out_names[j], "derived", None, stat_names, note))

    # ORDER BY and LIMIT: post-processing on the released rows
    order_by: list[tuple[str, bool]] = []
    exprs = [str(ne.expression).lower() for ne in parsed.select.namedExpressions]
    if parsed.order is not None:
        for item in parsed.order.sortItems:
            expr = item.expression
            ascending = str(item.order or "ASC").upper() != "DESC"
            target = None
            if type(expr).__name__ == "Column":
                wanted = _last(expr.name).lower()
                target = next((n for n in out_names if n.lower() == wanted), None)
            if target is None and str(expr).lower() in exprs:
                target = out_names[exprs.index(str(expr).lower())]
            if target is None:
                raise _refuse(f"ORDER BY {expr}: order by an output column (its name, alias or expression)")
            order_by.append((target, ascending))
    limit: int | None = None
    if parsed.limit is not None:
        limit = int(parsed.limit.n)
    elif quantifier is not None:
        limit = int(quantifier.n)

    bounds = {
        c: (float(spec.lower), float(spec.upper))  # type: ignore[arg-type]
        for c, spec in table.columns.items()
        if spec.bounded and any(_last(n.name).lower() == c.lower() for n in parsed.xpath("//Column"))
    }
    return _Plan(
        sql=text,
        table_key=key,
        table=table,
        metadata=metadata,
        types=types,
        groups=groups,
        public_keys=public_keys,
        grid=grid,
        epsilon_stat=eps_stat,
        delta_stat=delta_stat,
        epsilon=ce,
        delta=cd,
        requested_epsilon=requested,
        order_by=order_by,
        limit=limit,
        statistics=statistics,
        measures=measures,
        tau=tau,
        bounds=bounds,
    )


def _postprocess(frame: pd.DataFrame, plan: _Plan) -> pd.DataFrame:
    if plan.order_by:
        frame = frame.sort_values(
            [c for c, _ in plan.order_by],
            ascending=[a for _, a in plan.order_by],
            kind="stable",
            na_position="last",
        ).reset_index(drop=True)
    if plan.limit is not None:
        frame = frame.head(max(plan.limit, 0)).reset_index(drop=True)
    return frame


def _check_schema(conn: duckdb.DuckDBPyConnection, plan: _Plan, warehouse: Path) -> None:
    """The declared table and columns exist in the warehouse (reads the catalog, no rows)."""
    schema, name = plan.table_key.split(".")
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE lower(table_schema) = lower(?)"
        " AND lower(table_name) = lower(?)",
        [schema, name],
    ).fetchall()
    if not rows:
        raise RuntimeError(f"{warehouse}: the warehouse has no table {plan.table_key}; run `crmshield transform`")
    have = {str(r[0]).lower() for r in rows}
    missing = [c for c in plan.table.columns if c.lower() not in have]
    if missing:
        raise RuntimeError(
            f"{warehouse}: table {plan.table_key} lacks the declared column(s) {', '.join(missing)}"
            " (config/dp_query_tables.yml and the dbt models disagree)"
        )


# --------------------------------------------------------------------------
# Audit
# --------------------------------------------------------------------------


def audit_path(settings: Settings) -> Path:
    """The query audit log (JSON lines, restricted zone, mode 0600)."""
    return settings.restricted / AUDIT_FILE


def read_audit(settings: Settings) -> list[dict[str, Any]]:
    """Every audit record, oldest first."""
    path = audit_path(settings)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _append_audit(path: Path, record: Mapping[str, Any]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    line = (json.dumps(record, default=str, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------
# The session
# --------------------------------------------------------------------------


class DPSession:
    """One analyst's interactive DP queries over the warehouse (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        analyst: str | None = None,
        *,
        tables: QueryTables | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        from crmshield.budget import Ledger

        self.settings = settings
        self.analyst = resolve_analyst(analyst)
        self.tables = tables if tables is not None else load_query_tables(query_tables_path(settings))
        self.ledger = ledger if ledger is not None else Ledger.open(settings)

    def __repr__(self) -> str:
        return f"DPSession(analyst={self.analyst!r}, warehouse={str(self.settings.warehouse)!r})"

    @property
    def audit_path(self) -> Path:
        return audit_path(self.settings)

    # -- public API ------------------------------------------------------------

    def remaining(self) -> dict[str, Any]:
        """The analyst's and the population's budgets now (raises UnknownAnalyst for an unknown identity)."""
        return self.ledger.remaining(analyst=self.analyst)

    def explain(self, sql: str, epsilon: float | None = None) -> Explanation:
        """Cost, expected error and suppression of *sql*, without reading data or spending budget.

        Raises :class:`~crmshield.dp_release.DPQueryError` for a refused query and
        :class:`~crmshield.budget.UnknownAnalyst` for an identity without a budget;
        a query that would exceed a budget is explained with ``fits=False``.
        """
        from crmshield.budget import BudgetExceeded, BudgetRefused, Charge

        qid = _query_id()
        try:
            plan = _plan(sql, self.tables, epsilon)
        except (DPQueryError, ValueError) as exc:
            self._audit(qid, "explain", "refused", sql, reason=str(exc))
            raise
        charge = Charge(plan.sql, plan.epsilon, plan.delta)
        try:
            budget = self.ledger.remaining(analyst=self.analyst)
            fits, message = True, None
            try:
                self.ledger.check(charges=[charge], analyst=self.analyst)
            except BudgetExceeded as exc:
                fits, message = False, exc.message
        except BudgetRefused as exc:
            self._audit(qid, "explain", "budget_refused", plan.sql, plan=plan, reason=exc.message)
            raise
        explanation = self._explanation(plan, budget, fits, message)
        self._audit(qid, "explain", "explained", plan.sql, plan=plan, reason=message)
        return explanation

    def query(self, sql: str, epsilon: float | None = None) -> QueryResult:
        """Reserve the budget, run *sql* on the warehouse, release noisy aggregates with 95% intervals.

        Raises :class:`~crmshield.dp_release.DPQueryError` (refused, nothing spent),
        :class:`~crmshield.budget.BudgetExceeded` / :class:`~crmshield.budget.UnknownAnalyst`
        (refused by the ledger, recorded there) or :class:`DPQueryFailed` (failed after the
        warehouse was read: charged).
        """
        import duckdb
        from snsql import Privacy

        from crmshield.budget import BudgetRefused, Charge
        from crmshield.dp_engine import guard_connection, private_reader
        from crmshield.dp_release import release

        qid = _query_id()
        try:
            plan = _plan(sql, self.tables, epsilon)
        except (DPQueryError, ValueError) as exc:
            self._audit(qid, "query", "refused", sql, reason=str(exc))
            raise
        warehouse = self.settings.warehouse
        reservation = None
        touched = False
        try:
            if not warehouse.is_file():
                raise FileNotFoundError(f"warehouse not found: {warehouse}; run `crmshield transform` first")
            with duckdb.connect(str(warehouse), read_only=True) as conn:
                guard_connection(conn)
                _check_schema(conn, plan, warehouse)
                try:
                    reservation = self.ledger.reserve(
                        principal=self.analyst,
                        kind="query",
                        charges=[Charge(plan.sql, plan.epsilon, plan.delta)],
                        run_id=qid,
                        composition=COMPOSITION,
                        analyst=self.analyst,
                    )
                except BudgetRefused as exc:
                    self._audit(qid, "query", "budget_refused", plan.sql, plan=plan, reason=exc.message)
                    raise
                reader = private_reader(
                    conn, metadata=plan.metadata, privacy=Privacy(epsilon=plan.epsilon_stat, delta=plan.delta_stat)
                )
                try:
                    rel = release(
                        reader,
                        plan.sql,
                        public_keys=plan.public_keys if plan.grid else None,
                        source_types=plan.types,
                    )
                finally:
                    touched = reader.reader.last_sql is not None
            frame = _postprocess(rel.frame, plan)
        except BudgetRefused:
            raise
        except BaseException as exc:
            detail = f"{type(exc).__name__}: {exc}"
            if reservation is None:
                self._audit(qid, "query", "failed", plan.sql, plan=plan, reason=detail)
                raise
            if not touched:
                self.ledger.cancel(reservation, f"failed before reading the warehouse: {detail}")
                self._audit(qid, "query", "failed", plan.sql, plan=plan, reservation=reservation.id, reason=detail)
                raise
            # the exact aggregates ran: a failure here can depend on the data, so it is paid for
            self.ledger.commit(reservation)
            self._audit(
                qid, "query", "failed", plan.sql, plan=plan, reservation=reservation.id, reason=detail, charged=True
            )
            if not isinstance(exc, Exception):
                raise
            raise DPQueryFailed(
                f"query {qid} failed while computing on the warehouse; its budget (epsilon={_num(plan.epsilon)},"
                f" delta={_num(plan.delta)}) stays spent because a failure after reading the data can depend on"
                f" the data. The operator can find the details in {self.audit_path.name} (query id {qid})."
            ) from None
        self.ledger.commit(reservation)
        remaining = self.ledger.remaining(analyst=self.analyst)
        explanation = self._explanation(plan, remaining, True, None)
        result = QueryResult(
            query_id=qid,
            analyst=self.analyst,
            sql=plan.sql,
            table=plan.table_key,
            frame=frame,
            column_types=list(rel.column_types),
            measures=list(rel.measures),
            group_columns=list(rel.group_columns),
            epsilon=plan.epsilon,
            delta=plan.delta,
            mechanism=rel.mechanism,
            tau=rel.tau,
            cells_outside_keys=rel.cells_outside_keys,
            reservation_id=reservation.id,
            remaining=remaining,
            explanation=explanation,
        )
        self._audit(qid, "query", "released", plan.sql, plan=plan, reservation=reservation.id, rows=len(frame))
        return result

    # -- internals ---------------------------------------------------------------

    def _explanation(self, plan: _Plan, budget: dict[str, Any], fits: bool, message: str | None) -> Explanation:
        return Explanation(
            analyst=self.analyst,
            sql=plan.sql,
            table=plan.table_key,
            privacy_unit=plan.table.privacy_unit,
            max_contributions=plan.table.max_contributions,
            epsilon=plan.epsilon,
            delta=plan.delta,
            requested_epsilon=plan.requested_epsilon,
            epsilon_per_statistic=plan.epsilon_stat,
            delta_per_statistic=plan.delta_stat,
            statistics=tuple(plan.statistics),
            measures=tuple(plan.measures),
            group_columns=tuple(plan.groups),
            thresholded=plan.thresholded,
            tau=plan.tau,
            grid_cells=plan.grid_cells,
            suppression=plan.suppression(),
            bounds=dict(plan.bounds),
            order_by=tuple(plan.order_by),
            limit=plan.limit,
            budget=budget,
            fits=fits,
            budget_message=message,
        )

    def _audit(
        self,
        query_id: str,
        action: str,
        status: str,
        sql: Any,
        *,
        plan: _Plan | None = None,
        reservation: str | None = None,
        reason: str | None = None,
        rows: int | None = None,
        charged: bool | None = None,
    ) -> None:
        text = sql if isinstance(sql, str) else repr(sql)
        record: dict[str, Any] = {
            "at": datetime.now(UTC).isoformat(),
            "query_id": query_id,
            "action": action,
            "status": status,
            "analyst": self.analyst,
            "os_user": _os_user(),
            "sql": text,
            "sql_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
            "table": plan.table_key if plan else None,
            "epsilon": plan.epsilon if plan else None,
            "delta": plan.delta if plan else None,
            "population": self.ledger.config.population,
            "reservation_id": reservation,
            "reason": reason,
        }
        if rows is not None:
            record["rows"] = rows
        if charged is not None:
            record["charged"] = charged
        _append_audit(self.audit_path, record)


def _query_id() -> str:
    return f"q-{uuid.uuid4().hex[:16]}"


# --------------------------------------------------------------------------
# Budget report (``crmshield budget``)
# --------------------------------------------------------------------------


def budget_report(settings: Settings, analyst: str | None = None, *, limit: int = 20) -> dict[str, Any]:
    """Remaining budgets (population and every analyst, or just *analyst*) and recent ledger entries.

    Raises :class:`~crmshield.budget.UnknownAnalyst` when *analyst* has no budget.
    """
    from crmshield.budget import Ledger

    ledger = Ledger.open(settings)
    names = [analyst] if analyst is not None else sorted(ledger.config.analysts)
    population = ledger.remaining()["population"]
    analysts = {name: ledger.remaining(analyst=name)["analyst"] for name in names}
    entries = ledger.entries()
    if analyst is not None:
        entries = [e for e in entries if e["analyst"] == analyst]
    recent = entries[-limit:] if limit > 0 else []
    return {
        "population": population,
        "analysts": analysts,
        "entries": list(reversed(recent)),  # newest first
        "ledger": str(ledger.path),
        "audit_log": str(audit_path(settings)),
    }


__all__ = [
    "DPQueryError",
    "DPQueryFailed",
    "DPSession",
    "Explanation",
    "MeasureAccuracy",
    "QueryColumn",
    "QueryResult",
    "QueryTable",
    "QueryTables",
    "QueryTablesError",
    "audit_path",
    "budget_report",
    "format_budget",
    "load_query_tables",
    "query_tables_path",
    "read_audit",
    "resolve_analyst",
]

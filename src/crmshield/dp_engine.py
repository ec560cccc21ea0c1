"""A DuckDB engine for SmartNoise SQL: rewritten DP queries run inside DuckDB.

SmartNoise SQL 1.0.10 ships readers for pandas (which copies the data into
SQLite), Postgres, Spark and a few servers, but none for DuckDB. This module
adds one:

* :class:`DuckDBReader` executes SmartNoise's rewritten exact-aggregate query
  on a DuckDB connection and returns rows the way SmartNoise expects (a
  header tuple, then one tuple per row), converting DuckDB's ``DECIMAL`` and
  ``HUGEINT`` results to plain floats and ints.
* :class:`DuckDBSerializer` writes the rewritten AST in DuckDB's dialect. The
  per-person contribution bound (``ROW_NUMBER() OVER (PARTITION BY <unit>
  ORDER BY RANDOM())``, then ``row_num <= max_ids``) becomes ``ORDER BY
  hash(<row>, <salt>)``: each person's kept rows are a function of that
  person's own rows and a salt, never of anyone else's rows, which is what
  the stability argument behind ``max_ids`` needs. It is also reproducible,
  so a re-run over the same data bounds contributions the same way.
* :class:`DuckDBNameCompare` matches identifiers the way DuckDB does
  (case-insensitive, quoted or not).

:func:`private_reader` wires them into SmartNoise's own ``PrivateReader``,
so rewriting, mechanisms, noise, thresholding and the odometer are
SmartNoise's, unchanged; only the exact aggregates come from DuckDB.

:func:`guard_connection` turns off everything in a DuckDB connection that
could reach outside the warehouse file (file readers, extensions, ATTACH).
"""

from __future__ import annotations

import copy
import decimal
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from snsql.sql.reader.base import NameCompare, Serializer, SqlReader

if TYPE_CHECKING:
    import duckdb
    from snsql.sql.privacy import Privacy
    from snsql.sql.private_reader import PrivateReader

ENGINE = "DuckDB"

#: Default salt of the per-person row hash. Any fixed value keeps releases
#: reproducible; the bound is correct for every salt.
DEFAULT_SALT = 0x5EED


class DuckDBNameCompare(NameCompare):
    """DuckDB resolves identifiers case-insensitively, quoted or not."""

    def __init__(self, search_path: list[str] | None = None) -> None:
        super().__init__(search_path if search_path is not None else ["main"])

    def reserved(self) -> list[str]:
        return ["select", "group", "on", "order", "from", "where", "limit", "table"]

    def identifier_match(self, from_query: str, from_meta: str) -> bool:
        return self.strip_escapes(from_query).lower() == self.strip_escapes(from_meta).lower()


class _RowHash(str):
    """AST leaf rendered as ``hash(<relation>, <salt>)`` (a per-row UBIGINT)."""

    def __new__(cls, relation: str, salt: int) -> _RowHash:
        text = f"hash({relation}, {int(salt)})"
        obj = super().__new__(cls, text)
        obj.text = text  # type: ignore[attr-defined]
        return obj

    def __str__(self) -> str:
        return self.text  # type: ignore[attr-defined]

    def children(self) -> list[None]:
        return [None]


def _children(node: Any) -> Iterable[Any]:
    kids = getattr(node, "children", None)
    if kids is None:
        return ()
    try:
        return [k for k in kids() if k is not None and not isinstance(k, str)]
    except TypeError:
        return ()


def _walk(node: Any) -> Iterable[Any]:
    yield node
    for child in _children(node):
        if isinstance(child, list | tuple):
            for item in child:
                yield from _walk(item)
        else:
            yield from _walk(child)


class DuckDBSerializer(Serializer):
    """Writes SmartNoise's rewritten query in DuckDB's dialect.

    The only construct that needs rewriting is the per-person reservoir
    sample; everything else SmartNoise emits (CASE clamps, COUNT(DISTINCT),
    SUM of squares, GROUP BY) is standard SQL that DuckDB runs as is.
    """

    def __init__(self, salt: int = DEFAULT_SALT) -> None:
        super().__init__()
        self.salt = int(salt)

    def serialize(self, query: Any) -> str:
        if isinstance(query, str):
            raise ValueError("DuckDBSerializer needs a parsed query (AST), not a string")
        from snsql._ast.ast import Query
        from snsql._ast.expressions.numeric import BareFunction
        from snsql._ast.expressions.sql import RankingFunction

        query = copy.deepcopy(query)
        for node in _walk(query):
            if not isinstance(node, Query) or node.select is None:
                continue
            for ne in node.select.namedExpressions:
                expr = ne.expression
                if not isinstance(expr, RankingFunction) or expr.over is None or expr.over.order is None:
                    continue
                for item in expr.over.order.sortItems:
                    fn = item.expression
                    if isinstance(fn, BareFunction) and str(fn.name).upper() == "RANDOM":
                        item.expression = _RowHash(_relation_alias(node), self.salt)
        return str(query)


def _relation_alias(query: Any) -> str:
    """Alias of the single subquery a reservoir-sampling SELECT reads from."""
    relations = query.source.relations if query.source is not None else []
    if len(relations) != 1:
        raise ValueError("per-person sampling expects exactly one source relation")
    primary = relations[0].primary
    alias = getattr(primary, "alias", None)
    if alias is None:
        raise ValueError("per-person sampling expects an aliased subquery as its source")
    return str(alias)


def _plain(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


class DuckDBReader(SqlReader):
    """SmartNoise reader over a DuckDB connection (the warehouse, read-only).

    ``execute`` runs a SQL string and returns ``[header, *rows]`` like the
    other SmartNoise readers; SmartNoise calls it with the rewritten
    exact-aggregate subquery, serialized by :class:`DuckDBSerializer`.
    """

    ENGINE = ENGINE

    def __init__(self, conn: duckdb.DuckDBPyConnection, *, salt: int = DEFAULT_SALT, **_ignored: Any) -> None:
        super().__init__(ENGINE)
        self.conn = conn
        self.compare = DuckDBNameCompare()
        self.serializer = DuckDBSerializer(salt)
        self.last_sql: str | None = None

    def execute(self, query: str, *ignore: Any, accuracy: bool = False) -> list[tuple[Any, ...]]:
        if not isinstance(query, str):
            raise ValueError("Please pass strings to execute. To execute ASTs, use _execute_ast.")
        self.last_sql = query
        cur = self.conn.cursor()
        try:
            cur.execute(query)
            if cur.description is None:
                return []
            header = tuple(d[0] for d in cur.description)
            rows = cur.fetchall()
        finally:
            cur.close()
        if any(isinstance(v, decimal.Decimal) for row in rows for v in row):
            rows = [tuple(_plain(v) for v in row) for row in rows]
        return [header, *rows]

    def db_name(self) -> str:
        return str(self.execute("SELECT current_database()")[1][0])


_SCALE_CACHE: dict[tuple[Any, ...], float] = {}
_SCALE_CACHE_LOCK = threading.Lock()


def install_scale_cache() -> None:
    """Memoize SmartNoise's noise-scale search (idempotent).

    Every rewrite of a query builds its mechanisms again, and each Laplace or
    Gaussian mechanism finds its noise scale with OpenDP's binary search
    (about 0.1 s each; a mart with an AVG and a threshold has five). The
    scale is a pure function of the mechanism class and its parameters
    (epsilon, delta, bounds, contribution bound, bit depth), so it is cached
    on exactly those: the same scale OpenDP would find, without the search.
    """
    from snsql.sql._mechanisms.gaussian import Gaussian
    from snsql.sql._mechanisms.laplace import Laplace

    for cls in (Laplace, Gaussian):
        original = cls._compute_noise_scale
        if getattr(original, "_crmshield_cached", False):
            continue

        def cached(self: Any, _original: Any = original, _cls: type = cls) -> None:
            if self.scale is not None:
                return
            key = (
                _cls.__name__,
                float(self.epsilon),
                float(self.delta or 0.0),
                float(self.lower),
                float(self.upper),
                float(self.max_contrib),
                getattr(self, "bit_depth", None),
            )
            scale = _SCALE_CACHE.get(key)
            if scale is None:
                _original(self)
                with _SCALE_CACHE_LOCK:
                    _SCALE_CACHE[key] = float(self.scale)
            else:
                self.scale = scale

        cached._crmshield_cached = True  # type: ignore[attr-defined]
        cls._compute_noise_scale = cached


def private_reader(
    conn: duckdb.DuckDBPyConnection,
    *,
    metadata: Mapping[str, Any] | Any,
    privacy: Privacy,
    salt: int = DEFAULT_SALT,
) -> PrivateReader:
    """SmartNoise's ``PrivateReader`` with DuckDB computing the exact aggregates."""
    from snsql.sql.private_reader import PrivateReader

    install_scale_cache()
    return PrivateReader(DuckDBReader(conn, salt=salt), metadata, privacy=privacy)


def guard_connection(conn: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """Lock a connection to the database it was opened on.

    No file readers (``read_csv``, ``read_parquet``, ``COPY``), no
    extension loading, no ``ATTACH`` of another file, and the configuration
    cannot be changed back afterwards.
    """
    conn.execute("SET enable_external_access = false")
    conn.execute("SET autoload_known_extensions = false")
    conn.execute("SET autoinstall_known_extensions = false")
    conn.execute("SET lock_configuration = true")
    return conn

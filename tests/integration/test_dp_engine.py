"""The DuckDB engine for SmartNoise SQL (crmshield.dp_engine).

* Cross-check: with the noise switched off (tests/dp_exact.py, a verification
  tool), the same query on the same data gives identical results on our
  engine and on SmartNoise's own pandas engine (which copies the data into
  SQLite), through SmartNoise's unchanged post-processing.
* Refusals: what SmartNoise cannot answer is refused with a clear message.
* The per-person bound: exactly min(n, max_ids) rows per person, chosen by a
  hash of the person's own rows, stable when other persons' rows are added,
  and identical for both ways of writing it ("split" and "window").
* guard_connection, the noise itself, and a smoke run of the benchmark.
"""

from __future__ import annotations

import hashlib
import json
import warnings

import duckdb
import numpy as np
import pandas as pd
import pytest
import snsql
from dp_exact import exact
from snsql import Privacy

from crmshield import dp_bench
from crmshield.dp_engine import (
    DPQueryError,
    DuckDBPrivateReader,
    DuckDBSerializer,
    check_query,
    guard_connection,
    private_reader,
)

pytestmark = pytest.mark.integration

MAX_IDS = 3
PRIVACY = Privacy(epsilon=1.0, delta=1e-6)
T = "marts.tickets"


def metadata(*, censor_dims: bool = True, max_ids: int = MAX_IDS) -> dict:
    return {
        "warehouse": {
            "marts": {
                "tickets": {
                    "row_privacy": False,
                    "max_ids": max_ids,
                    "sample_max_ids": True,
                    "censor_dims": censor_dims,
                    "clamp_counts": True,
                    "clamp_columns": True,
                    "use_dpsu": False,
                    "contact_pk": {"type": "string", "private_id": True},
                    "ticket_no": {"type": "int"},
                    "channel": {"type": "string"},
                    "priority": {"type": "string"},
                    "region": {"type": "string"},
                    "is_solved": {"type": "boolean"},
                    "resolution_hours": {"type": "float", "lower": 0, "upper": 100},
                    "satisfaction": {"type": "int", "lower": 1, "upper": 5},
                }
            }
        }
    }


def pseudonym(i: int) -> str:
    return "v1_" + hashlib.sha256(f"person-{i}".encode()).hexdigest()


def tickets_frame(persons: int, *, seed: int = 11, heavy: dict[int, int] | None = None, first: int = 0) -> pd.DataFrame:
    """Deterministic synthetic tickets.

    Person ``first + i`` has 1..MAX_IDS tickets, or ``heavy[i]`` if given.
    Hours are multiples of 0.25 (float sums are exact in any order), some
    below/above the clamping bounds, some NULL; satisfaction has NULLs and
    out-of-range values; region has NULLs.
    """
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, MAX_IDS + 1, persons)
    for i, n in (heavy or {}).items():
        counts[i] = n
    rows = int(counts.sum())
    person = np.repeat(np.arange(first, first + persons), counts)
    order = rng.permutation(rows)
    hours = rng.integers(-4, 440, rows) * 0.25
    sat = rng.integers(0, 7, rows).astype(float)
    frame = pd.DataFrame(
        {
            "contact_pk": [pseudonym(int(p)) for p in person[order]],
            "ticket_no": np.arange(first * 10, first * 10 + rows, dtype=np.int64),
            "channel": rng.choice(["email", "phone", "chat", "web"], rows, p=[0.4, 0.3, 0.2, 0.1]),
            "priority": rng.choice(["low", "normal", "high", "urgent"], rows, p=[0.3, 0.4, 0.2, 0.1]),
            "region": rng.choice(["north", "south", "west", None], rows, p=[0.4, 0.3, 0.25, 0.05]),
            "is_solved": rng.random(rows) < 0.7,
            "resolution_hours": np.where(rng.random(rows) < 0.1, np.nan, hours),
            "satisfaction": np.where(rng.random(rows) < 0.15, np.nan, sat),
        }
    )
    frame["satisfaction"] = frame["satisfaction"].astype("Int64")
    return frame


def duckdb_with(frame: pd.DataFrame) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect(":memory:")
    conn.execute("CREATE SCHEMA marts")
    conn.register("frame", frame)
    conn.execute(
        """CREATE TABLE marts.tickets AS SELECT contact_pk, CAST(ticket_no AS BIGINT) AS ticket_no, channel,
        priority, region, is_solved, CAST(resolution_hours AS DOUBLE) AS resolution_hours,
        CAST(satisfaction AS INTEGER) AS satisfaction FROM frame"""
    )
    conn.unregister("frame")
    return conn


def canonical(result: list, ordered: bool) -> tuple:
    header, rows = tuple(result[0]), [tuple(r) for r in result[1:]]
    return header, (rows if ordered else sorted(rows, key=repr))


# Queries SmartNoise SQL answers: (sql, ordered). With ORDER BY, the order is
# unambiguous (ties broken by the group keys), so rows must match in order.
QUERIES: list[tuple[str, bool]] = [
    (f"SELECT COUNT(*) AS n FROM {T}", False),
    (f"SELECT COUNT(*) AS n, SUM(resolution_hours) AS h, COUNT(resolution_hours) AS c FROM {T}", False),
    (f"SELECT channel, COUNT(*) AS n FROM {T} GROUP BY channel", False),
    (f"SELECT channel, SUM(resolution_hours) AS h FROM {T} GROUP BY channel", False),
    (f"SELECT channel, AVG(resolution_hours) AS h FROM {T} GROUP BY channel", False),
    (f"SELECT priority, SUM(satisfaction) AS s, AVG(satisfaction) AS a FROM {T} GROUP BY priority", False),
    (f"SELECT channel, VAR(resolution_hours) AS v FROM {T} GROUP BY channel", False),
    (f"SELECT channel, VARIANCE(satisfaction) AS v, STDDEV(resolution_hours) AS s FROM {T} GROUP BY channel", False),
    (f"SELECT STDDEV(satisfaction) AS s, AVG(resolution_hours) AS h FROM {T}", False),
    (f"SELECT channel, priority, COUNT(*) AS n FROM {T} GROUP BY channel, priority", False),
    (
        f"SELECT channel, priority, region, COUNT(*) AS n, SUM(resolution_hours) AS h FROM {T}"
        " GROUP BY channel, priority, region",
        False,
    ),
    (f"SELECT region, COUNT(*) AS n, AVG(satisfaction) AS a FROM {T} GROUP BY region", False),
    (f"SELECT is_solved, COUNT(*) AS n FROM {T} GROUP BY is_solved", False),
    (f"SELECT satisfaction, COUNT(*) AS n FROM {T} GROUP BY satisfaction", False),
    (f"SELECT channel, COUNT(DISTINCT contact_pk) AS persons FROM {T} GROUP BY channel", False),
    (f"SELECT channel, COUNT(*) AS n FROM {T} WHERE is_solved GROUP BY channel", False),
    (f"SELECT channel, COUNT(*) AS n FROM {T} WHERE NOT is_solved GROUP BY channel", False),
    (
        f"SELECT priority, AVG(resolution_hours) AS h, COUNT(resolution_hours) AS c FROM {T}"
        " WHERE is_solved GROUP BY priority ORDER BY priority",
        True,
    ),
    (f"SELECT channel, COUNT(*) AS n FROM {T} WHERE resolution_hours BETWEEN 10 AND 50 GROUP BY channel", False),
    (f"SELECT priority, COUNT(*) AS n FROM {T} WHERE channel IN ('email', 'chat') GROUP BY priority", False),
    (f"SELECT channel, COUNT(*) AS n FROM {T} WHERE resolution_hours IS NULL GROUP BY channel", False),
    (f"SELECT channel, COUNT(*) AS n FROM {T} WHERE region IS NOT NULL GROUP BY channel", False),
    (
        f"SELECT channel, COUNT(*) AS n FROM {T} WHERE satisfaction > 2 AND (resolution_hours < 40"
        " OR priority = 'low') GROUP BY channel",
        False,
    ),
    (
        f"SELECT channel, COUNT(*) AS n FROM {T} WHERE NOT (satisfaction = 3 OR satisfaction = 4) GROUP BY channel",
        False,
    ),
    (
        f"SELECT CASE WHEN satisfaction >= 4 THEN 'good' ELSE 'other' END AS mood, COUNT(*) AS n FROM {T}"
        " GROUP BY CASE WHEN satisfaction >= 4 THEN 'good' ELSE 'other' END",
        False,
    ),
    (
        f"SELECT channel, COUNT(*) AS n FROM {T} WHERE CASE WHEN priority = 'urgent' THEN 1 ELSE 0 END = 1"
        " GROUP BY channel",
        False,
    ),
    (f"SELECT channel, ROUND(AVG(resolution_hours), 1) AS h FROM {T} GROUP BY channel", False),
    (f"SELECT channel, COUNT(*) * 2 AS n2, SUM(resolution_hours) / 4 AS q FROM {T} GROUP BY channel", False),
    (f"SELECT channel, SUM(resolution_hours) / COUNT(resolution_hours) AS a FROM {T} GROUP BY channel", False),
    (f"SELECT channel, COUNT(*) AS n FROM {T} GROUP BY channel HAVING COUNT(*) > 300", False),
    (
        f"SELECT priority, AVG(resolution_hours) AS h FROM {T} GROUP BY priority"
        " HAVING AVG(resolution_hours) > 40 ORDER BY h DESC",
        True,
    ),
    (
        f"SELECT channel, priority, COUNT(*) AS n FROM {T} GROUP BY channel, priority"
        " ORDER BY n DESC, channel, priority",
        True,
    ),
    (
        f"SELECT channel, priority, COUNT(*) AS n FROM {T} GROUP BY channel, priority"
        " ORDER BY channel DESC, priority LIMIT 5",
        True,
    ),
    (f"SELECT TOP 3 channel, SUM(resolution_hours) AS h FROM {T} GROUP BY channel ORDER BY channel", True),
    (f"SELECT channel AS c, COUNT(*) AS n FROM {T} GROUP BY channel ORDER BY c LIMIT 2", True),
]


@pytest.fixture(scope="module")
def equal_data() -> pd.DataFrame:
    """Everyone has at most max_ids rows, so the per-person bound keeps every row in both engines."""
    return tickets_frame(1200)


@pytest.fixture(scope="module")
def engines(equal_data):
    """Exact readers per censor_dims setting: (ours, SmartNoise pandas)."""
    conn = duckdb_with(equal_data)
    readers = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for censor in (True, False):
            meta = metadata(censor_dims=censor)
            readers[censor] = (
                exact(private_reader(conn, metadata=meta, privacy=PRIVACY)),
                exact(snsql.from_df(equal_data, metadata=meta, privacy=PRIVACY)),
            )
    yield readers
    conn.close()


def test_query_suite_is_large_enough():
    assert len(QUERIES) >= 30


@pytest.mark.parametrize(("sql", "ordered"), QUERIES, ids=[f"q{i:02d}" for i in range(len(QUERIES))])
def test_exact_aggregates_match_pandas_engine(engines, sql, ordered):
    ours, theirs = engines[True]
    mine, ref = canonical(ours.execute(sql), ordered), canonical(theirs.execute(sql), ordered)
    assert mine == ref
    assert len(mine[1]) > 0


@pytest.mark.parametrize(("sql", "ordered"), QUERIES[::4], ids=[f"q{i:02d}" for i in range(0, len(QUERIES), 4)])
def test_exact_aggregates_match_pandas_engine_without_censoring(engines, sql, ordered):
    ours, theirs = engines[False]
    assert canonical(ours.execute(sql), ordered) == canonical(theirs.execute(sql), ordered)


def test_exact_values_are_the_true_aggregates(engines, equal_data):
    """The exact helper really is exact: compare with pandas' own arithmetic (clamped)."""
    ours, _ = engines[True]
    result = ours.execute(f"SELECT channel, COUNT(*) AS n, SUM(resolution_hours) AS h FROM {T} GROUP BY channel")
    got = {row[0]: (row[1], row[2]) for row in result[1:]}
    clamped = equal_data.assign(resolution_hours=equal_data["resolution_hours"].clip(0, 100))
    expected = clamped.groupby("channel").agg(n=("ticket_no", "size"), h=("resolution_hours", "sum"))
    assert got == {ch: (int(r.n), float(r.h)) for ch, r in expected.iterrows()}


# ---------------------------------------------------------------- refusals

REFUSED: list[tuple[str, str]] = [
    (
        f"SELECT t.channel, COUNT(*) AS n FROM {T} t JOIN {T} u ON t.contact_pk = u.contact_pk GROUP BY t.channel",
        "refused: joins are not supported by SmartNoise SQL — query one table",
    ),
    (f"SELECT channel, COUNT(*) AS n FROM {T}, marts.deals GROUP BY channel", "refused: joins are not supported"),
    (f"SELECT channel, COUNT(*) AS n FROM (SELECT * FROM {T}) AS x GROUP BY channel", "refused: subqueries"),
    (
        f"SELECT channel, COUNT(*) AS n FROM {T} WHERE contact_pk IN (SELECT contact_pk FROM {T}) GROUP BY channel",
        "refused: subqueries",
    ),
    (f"WITH x AS (SELECT * FROM {T}) SELECT COUNT(*) AS n FROM x", "refused: subqueries (WITH)"),
    (
        f"SELECT channel, SUM(resolution_hours * 2) AS h FROM {T} GROUP BY channel",
        "refused: aggregates over expressions (SUM(resolution_hours * 2))",
    ),
    (
        f"SELECT channel, priority, COUNT(*) AS n FROM {T} GROUP BY channel",
        "refused: not an aggregate query: column priority is neither aggregated nor grouped",
    ),
    (f"SELECT channel FROM {T}", "refused: not an aggregate query: column channel is neither aggregated nor grouped"),
    (
        "SELECT channel, COUNT(*) AS n FROM marts.other GROUP BY channel",
        "refused: table marts.other is not a DP-queryable table of the warehouse (known: marts.tickets)",
    ),
    (f"SELECT channel, MIN(resolution_hours) AS m FROM {T} GROUP BY channel", "refused: MIN is not supported"),
    (f"SELECT channel, COUNT(*) AS n FROM {T} WHERE channel LIKE 'e%' GROUP BY channel", "LIKE is not supported"),
    (f"SELECT COUNT(*) AS n FROM {T}; SELECT COUNT(*) AS n FROM {T}", "refused: send exactly one SELECT statement"),
    (
        f"SELECT COUNT(*) AS n FROM {T} UNION SELECT COUNT(*) AS n FROM {T}",
        "refused: UNION of queries is not supported",
    ),
    ("SELECT COUNT(*) AS n FROM read_csv('/etc/passwd')", "refused: table functions"),
    (f"SELECT nosuch, COUNT(*) AS n FROM {T} GROUP BY nosuch", "refused: unknown column nosuch"),
    (f"SELECT contact_pk, COUNT(*) AS n FROM {T} GROUP BY contact_pk", "refused: grouping by the privacy unit alone"),
    (f"SELECT channel, SUM(contact_pk) AS n FROM {T} GROUP BY channel", "aggregates a string column"),
]


@pytest.mark.parametrize(("sql", "message"), REFUSED, ids=[f"r{i:02d}" for i in range(len(REFUSED))])
def test_refused_with_a_clear_message(sql, message):
    with pytest.raises(DPQueryError) as caught:
        check_query(sql, metadata())
    assert message in str(caught.value)
    assert str(caught.value).startswith("refused: ")


def test_private_reader_refuses_the_same_way(equal_data):
    conn = duckdb_with(equal_data)
    reader = private_reader(conn, metadata=metadata(), privacy=PRIVACY, clear_refusals=True)
    assert isinstance(reader, DuckDBPrivateReader)
    with pytest.raises(DPQueryError, match=r"refused: joins are not supported"):
        reader.execute(REFUSED[0][0])
    with pytest.raises(DPQueryError, match=r"refused: aggregates over expressions"):
        reader.execute(f"SELECT channel, SUM(resolution_hours * 2) AS h FROM {T} GROUP BY channel")
    with pytest.raises(DPQueryError, match=r"refused: not an aggregate query"):
        reader.get_privacy_cost(f"SELECT channel FROM {T}")
    assert issubclass(DPQueryError, ValueError)
    assert reader.reader.last_sql is None  # refused before anything ran
    # the default reader leaves SmartNoise's own errors as they are
    plain = private_reader(conn, metadata=metadata(), privacy=PRIVACY)
    with pytest.raises(ValueError) as caught:
        plain.execute(f"SELECT channel, SUM(resolution_hours * 2) AS h FROM {T} GROUP BY channel")
    assert not isinstance(caught.value, DPQueryError)


@pytest.mark.parametrize(("sql", "ordered"), QUERIES[:3] + QUERIES[-2:])
def test_supported_queries_pass_the_check(sql, ordered):
    check_query(sql, metadata())


# ------------------------------------------------------ the per-person bound

HEAVY = {0: 10, 1: 7, 2: 4, 3: MAX_IDS, 4: 25}
KEPT_ROWS = f"SELECT contact_pk, ticket_no, COUNT(*) AS n FROM {T} GROUP BY contact_pk, ticket_no"


def kept_rows(
    conn: duckdb.DuckDBPyConnection, *, strategy: str = "split", salt: int | None = None, censor_dims: bool = True
) -> set:
    kwargs = {} if salt is None else {"salt": salt}
    meta = metadata(censor_dims=censor_dims)
    reader = exact(private_reader(conn, metadata=meta, privacy=PRIVACY, strategy=strategy, **kwargs))
    result = reader.execute(KEPT_ROWS)
    assert all(row[2] == 1 for row in result[1:])
    return {(row[0], row[1]) for row in result[1:]}


@pytest.fixture(scope="module")
def heavy_data() -> pd.DataFrame:
    return tickets_frame(300, seed=5, heavy=HEAVY)


def test_each_person_keeps_exactly_min_n_max_ids_rows(heavy_data):
    conn = duckdb_with(heavy_data)
    kept = kept_rows(conn)
    per_person: dict[str, int] = {}
    for pk, _ in kept:
        per_person[pk] = per_person.get(pk, 0) + 1
    sizes = heavy_data.groupby("contact_pk").size()
    assert per_person == {pk: min(int(n), MAX_IDS) for pk, n in sizes.items()}
    for i, n in HEAVY.items():
        assert per_person[pseudonym(i)] == min(n, MAX_IDS)
    assert {t for _, t in kept} <= set(heavy_data["ticket_no"])


def test_bound_is_deterministic_and_depends_on_the_salt(heavy_data):
    first = kept_rows(duckdb_with(heavy_data))
    assert kept_rows(duckdb_with(heavy_data)) == first
    shuffled = heavy_data.sample(frac=1.0, random_state=3)
    assert kept_rows(duckdb_with(shuffled)) == first
    assert kept_rows(duckdb_with(heavy_data), salt=12345) != first


def test_other_persons_rows_do_not_change_whose_rows_are_kept(heavy_data):
    before = kept_rows(duckdb_with(heavy_data))
    others = tickets_frame(400, seed=9, heavy={0: 30, 1: 6}, first=10_000)
    after = kept_rows(duckdb_with(pd.concat([heavy_data, others], ignore_index=True)))
    existing = set(heavy_data["contact_pk"])
    assert {r for r in after if r[0] in existing} == before
    assert len(after) > len(before)


SPLIT_VS_WINDOW = [KEPT_ROWS] + [QUERIES[i][0] for i in (0, 1, 7, 8, 10, 14, 17, 24)]


@pytest.mark.parametrize("sql", SPLIT_VS_WINDOW, ids=[f"s{i:02d}" for i in range(len(SPLIT_VS_WINDOW))])
def test_split_and_window_constructions_agree(heavy_data, sql):
    conn = duckdb_with(heavy_data)
    results = [
        canonical(exact(private_reader(conn, metadata=metadata(), privacy=PRIVACY, strategy=s)).execute(sql), False)
        for s in ("split", "window")
    ]
    assert results[0] == results[1]


@pytest.mark.parametrize("null_rows", [2, 7])
def test_split_and_window_agree_on_rows_without_a_unit(heavy_data, null_rows):
    """Rows with a NULL unit form one pseudo-person in both constructions (max_ids rows kept)."""
    orphans = heavy_data.head(null_rows).assign(contact_pk=None, ticket_no=lambda f: f["ticket_no"] + 100_000)
    conn = duckdb_with(pd.concat([heavy_data, orphans], ignore_index=True))
    sql = f"SELECT channel, COUNT(*) AS n, SUM(resolution_hours) AS h FROM {T} GROUP BY channel"
    results = [
        canonical(exact(private_reader(conn, metadata=metadata(), privacy=PRIVACY, strategy=s)).execute(sql), False)
        for s in ("split", "window")
    ]
    assert results[0] == results[1]
    # (with censoring, their groups are dropped: COUNT(DISTINCT unit) is 0 for them)
    for strategy in ("split", "window"):
        kept_orphans = {t for pk, t in kept_rows(conn, strategy=strategy, censor_dims=False) if pk is None}
        assert len(kept_orphans) == min(null_rows, MAX_IDS)
        assert not {t for pk, t in kept_rows(conn, strategy=strategy) if pk is None}


def test_split_sql_shape(heavy_data):
    conn = duckdb_with(heavy_data)
    reader = private_reader(conn, metadata=metadata(), privacy=PRIVACY)
    reader.execute(QUERIES[2][0])
    sql = reader.reader.last_sql
    assert "RANDOM (" not in sql.upper() and "RANDOM()" not in sql.upper()
    assert "HAVING COUNT(*) > 3" in sql and "ANTI JOIN" in sql and "SEMI JOIN" in sql
    assert "ORDER BY hash(clamped, " in sql
    with pytest.raises(ValueError, match="unknown strategy"):
        DuckDBSerializer(strategy="random")


# ------------------------------------------------------------ noise, guard


def test_noise_is_still_added(equal_data):
    conn = duckdb_with(equal_data)
    reader = private_reader(conn, metadata=metadata(), privacy=PRIVACY)
    sql = f"SELECT channel, SUM(resolution_hours) AS h FROM {T} GROUP BY channel"
    first, second = reader.execute(sql), reader.execute(sql)
    exact_rows = exact(private_reader(conn, metadata=metadata(), privacy=PRIVACY)).execute(sql)
    assert sorted(first[1:]) != sorted(second[1:])
    assert sorted(first[1:]) != sorted(exact_rows[1:])
    spent_epsilon, _ = reader.odometer.spent
    assert spent_epsilon > 0


def test_guard_connection_blocks_file_access(tmp_path):
    csv = tmp_path / "secret.csv"
    csv.write_text("a,b\n1,2\n")
    conn = duckdb.connect(":memory:")
    conn.execute("CREATE TABLE t AS SELECT 1 AS x")
    assert conn.execute(f"SELECT COUNT(*) FROM read_csv('{csv}')").fetchone()[0] == 1
    guard_connection(conn)
    for sql in (
        f"SELECT * FROM read_csv('{csv}')",
        f"SELECT * FROM read_csv_auto('{csv}')",
        f"SELECT * FROM read_parquet('{tmp_path / 'x.parquet'}')",
        f"SELECT * FROM '{csv}'",
        f"COPY t TO '{tmp_path / 'out.csv'}'",
        f"ATTACH '{tmp_path / 'other.duckdb'}' AS other",
    ):
        with pytest.raises(duckdb.Error):
            conn.execute(sql).fetchall()
    with pytest.raises(duckdb.Error):
        conn.execute("SET enable_external_access = true")
    assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]
    assert not (tmp_path / "out.csv").exists()


# ------------------------------------------------------------------ benchmark


def test_benchmark_smoke(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert (
        dp_bench.main(["--rows", "2000", "--repeat", "1", "--tiny-rows", "50", "--no-window", "--json", str(out)]) == 0
    )
    printed = capsys.readouterr().out
    for label in (
        "plain DuckDB (no DP)",
        "engine, full DP",
        "fixed overhead (50 rows)",
        "pandas: from_df (-> SQLite)",
        "pandas: query",
        "pandas: set-up + query",
        "engine, public keys (marts)",
        "pandas: query, public keys",
        "[keys secret (tau threshold)] engine / plain = ",
        "[public keys (how the marts run)] pandas (set-up + query) / engine = ",
    ):
        assert label in printed
    assert printed.count("PASS") + printed.count("MISS") == 6  # 3 targets x 2 configurations
    figures = json.loads(out.read_text())
    assert figures["rows"] == 2000
    for key in (
        "plain",
        "engine",
        "engine_sql",
        "engine_public_keys",
        "fixed_overhead",
        "pandas_setup",
        "pandas_query",
        "pandas_total",
        "pandas_public_keys_query",
    ):
        assert figures[key]["median_s"] > 0
    assert set(figures["targets"]) == {"threshold", "public_keys"}
    assert figures["engine_released_rows"] >= 0


@pytest.mark.parametrize(("row_privacy", "sample_max_ids"), [(True, False), (False, False)])
def test_without_the_per_person_sample_both_engines_agree_on_any_data(heavy_data, row_privacy, sample_max_ids):
    """No reservoir sample in the rewrite: the serializer leaves the query as is."""
    meta = metadata()
    table = meta["warehouse"]["marts"]["tickets"]
    table.update(row_privacy=row_privacy, sample_max_ids=sample_max_ids)
    if row_privacy:
        table["contact_pk"] = {"type": "string"}
    conn = duckdb_with(heavy_data)
    ours = exact(private_reader(conn, metadata=meta, privacy=PRIVACY))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = exact(snsql.from_df(heavy_data, metadata=meta, privacy=PRIVACY))
    for sql, ordered in (QUERIES[2], QUERIES[10], QUERIES[17]):
        assert canonical(ours.execute(sql), ordered) == canonical(theirs.execute(sql), ordered)
        assert "__crmshield" not in ours.reader.last_sql and "row_num" not in ours.reader.last_sql

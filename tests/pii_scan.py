"""Decode what the zones hold, so tests search values, not compressed bytes.

Parquet and DuckDB files store strings compressed (zstd, dictionaries, FSST): a byte
grep can miss a value that is there. These helpers read every string column back.
"""

from __future__ import annotations

from pathlib import Path

import duckdb


def strings_in_duckdb(path: Path) -> str:
    parts: list[str] = []
    with duckdb.connect(str(path), read_only=True) as con:
        cols = con.execute(
            "SELECT table_schema, table_name, column_name FROM information_schema.columns WHERE data_type = 'VARCHAR'"
        ).fetchall()
        for schema, table, column in cols:
            rows = con.execute(f'SELECT DISTINCT "{column}" FROM "{schema}"."{table}"').fetchall()
            parts.extend(str(r[0]) for r in rows if r[0] is not None)
            parts.append(f"{schema}.{table}.{column}")
    return "\n".join(parts)


def strings_in_parquet(path: Path) -> str:
    con = duckdb.connect()
    rel = con.sql(f"SELECT * FROM read_parquet('{path}')")
    cols = [c for c, t in zip(rel.columns, rel.types, strict=True) if str(t) in ("VARCHAR", "BIGINT", "JSON")]
    parts = []
    for c in cols:
        parts.extend(str(r[0]) for r in con.sql(f"SELECT DISTINCT \"{c}\" FROM read_parquet('{path}')").fetchall())
    return "\n".join(parts)


def decoded_text(roots: list[Path], skip_suffixes: tuple[str, ...] = (".db",)) -> dict[str, str]:
    """Every file under ``roots``, decoded to text: Parquet and DuckDB through their readers."""
    texts: dict[str, str] = {}
    for root in roots:
        if not root.exists():
            continue
        for f in [root] if root.is_file() else root.rglob("*"):
            if not f.is_file():
                continue
            if f.suffix == ".parquet":
                texts[str(f)] = strings_in_parquet(f)
            elif f.suffix == ".duckdb":
                texts[str(f)] = strings_in_duckdb(f)
            elif f.suffix in skip_suffixes or f.suffix == ".wal":
                continue
            else:
                texts[str(f)] = f.read_bytes().decode("utf-8", errors="replace")
    return texts

"""The fast phone path gives exactly what the reference (``phonenumbers``) gives.

Pseudonyms and erasure tokens are keyed on the E.164 form: one value that differs
between ``phone_arrow`` (ingest), ``normalize_phone`` / ``to_e164`` (``erase``) and
the reference is a bug. These tests compare all three on generator data, on a
seeded fuzzer and on edge cases, and check that the fast path is really taken."""

from __future__ import annotations

import random
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from phonenumbers import phonenumberutil

from crmshield.generate import COUNTRIES, generate
from crmshield.ingest import COUNTRY_ALIASES
from crmshield.normalize import (
    _Automata,
    _literal_prefixes,
    normalize_phone,
    normalize_phone_reference,
    phone_arrow,
    phone_fast,
    register_duckdb,
    to_e164,
    to_e164_reference,
)

REGIONS = sorted(
    set(COUNTRIES)
    | {"DE", "FR", "GB", "NL", "ES", "AU", "CA", "US", "IT", "BR", "IN", "JP", "MX", "AR", "CH", "AT", "BE"}
    | {"IE", "SE", "NO", "DK", "PL", "PT", "NZ", "ZA", "SG", "HK", "RU", "KR", "CN", "GG", "JE", "PR"}
)
ODD_REGIONS = [None, "", "us", "gb", "De", "XX", "001", "ZZ", " GB", "uk"]


def _check(values: list[str | None], regions: list[str | None]) -> None:
    expected = [normalize_phone_reference(v, r) for v, r in zip(values, regions, strict=True)]
    got_arrow = phone_arrow(pa.array(values, type=pa.string()), pa.array(regions, type=pa.string())).to_pylist()
    to_e164.cache_clear()
    got_scalar = [normalize_phone(v, r) for v, r in zip(values, regions, strict=True)]
    bad = [
        (v, r, e, a, s)
        for v, r, e, a, s in zip(values, regions, expected, got_arrow, got_scalar, strict=True)
        if not (e == a == s)
    ]
    assert not bad, f"{len(bad)} differ (value, region, reference, arrow, scalar): {bad[:10]}"


def _generated_pairs(tmp_path: Path, contacts: int) -> tuple[list[str | None], list[str | None]]:
    generate(tmp_path, contacts=contacts, seed=7)
    cases = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in COUNTRY_ALIASES.items())
    rows = (
        duckdb.connect()
        .execute(
            f"""SELECT nullif(trim("Phone Number"), ''), CASE lower(nullif(trim("Country/Region"), '')) {cases} END
            FROM read_csv('{tmp_path / "hubspot_contacts.csv"}', header=true, all_varchar=true, store_rejects=true)"""
        )
        .fetchall()
    )
    return [r[0] for r in rows], [r[1] for r in rows]


def test_generator_data_matches_reference_and_takes_the_fast_path(tmp_path: Path) -> None:
    values, regions = _generated_pairs(tmp_path, 5_000)
    _check(values, regions)
    _, fallback = phone_fast(pa.array(values, type=pa.string()), pa.array(regions, type=pa.string()))
    assert fallback.mean() < 0.01, f"{fallback.sum()} of {len(values)} generator phones fell back"


def test_fast_path_is_taken_for_every_generator_shape() -> None:
    rng = np.random.default_rng(3)
    values, regions = [], []
    for code, info in COUNTRIES.items():
        for local in (True, False):
            for _ in range(50):
                values.append(info["phone"](f"{rng.integers(0, 10**12):012d}", local))
                regions.append(code)
    _, fallback = phone_fast(pa.array(values), pa.array(regions))
    assert not fallback.any(), [v for v, f in zip(values, fallback, strict=True) if f][:10]
    assert phone_arrow(pa.array(values), pa.array(regions)).to_pylist() == [
        normalize_phone_reference(v, r) for v, r in zip(values, regions, strict=True)
    ]


_SEPARATORS = [" ", " ", "-", ".", "", "", "", "  ", " - ", "/", "\t", "\u00a0"]
_NOISE = [" x12", " ext. 5", " ext 123", "#", ";ext=7", " (home)", "abc", " tel", ",,4", "\u200b", "*"]
_UNICODE_DIGITS = "٠١٢٣٤٥٦٧٨٩０１２３４５６７８９"
_ALL_CC = sorted(phonenumberutil.COUNTRY_CODE_TO_REGION_CODE)


def _fuzz_value(rnd: random.Random, region: str | None) -> str:
    meta = phonenumberutil.PhoneMetadata.metadata_for_region((region or "US").upper(), None)
    cc = str(meta.country_code) if meta is not None else str(rnd.choice(_ALL_CC))
    digits = "".join(rnd.choice("0123456789") for _ in range(rnd.randint(3, 17)))
    start = rnd.random()
    if start < 0.25:
        prefix = rnd.choice(["+", "00", "+ ", "00 "]) + rnd.choice([cc, cc, str(rnd.choice(_ALL_CC)), "0", "999"])
        if rnd.random() < 0.2:
            prefix += " (0)"
        digits = prefix + " " + digits
    elif start < 0.4:
        digits = rnd.choice(["0", "1", "0", "01", "011", "00", "8", "90", cc, "0" + cc]) + digits
    elif start < 0.45:
        digits = rnd.choice(["+", "00"]) + digits
    chars: list[str] = []
    for ch in digits:
        chars.append(ch)
        if rnd.random() < 0.3:
            chars.append(rnd.choice(_SEPARATORS))
    text = "".join(chars)
    if rnd.random() < 0.15:  # an area code in parentheses
        cut = rnd.randint(1, max(1, len(text) - 1))
        text = f"({text[:cut]}) {text[cut:]}"
    r = rnd.random()
    if r < 0.05:
        text += rnd.choice(_NOISE)
    elif r < 0.08:
        i = rnd.randrange(len(text))
        text = text[:i] + rnd.choice(_UNICODE_DIGITS) + text[i + 1 :]
    elif r < 0.09:
        i = rnd.randrange(len(text))
        text = text[:i] + rnd.choice("+()ABCxX") + text[i:]
    elif r < 0.095:
        text = rnd.choice(["", " ", "   ", "\t", "+", "00", "0", "()"])
    return rnd.choice(["", "", "", " ", "  ", "\t"]) + text + rnd.choice(["", "", "", " ", "\n"])


def _fuzz_pairs(count: int, seed: int = 20261031) -> tuple[list[str | None], list[str | None]]:
    rnd = random.Random(seed)
    values: list[str | None] = []
    regions: list[str | None] = []
    for _ in range(count):
        region = rnd.choice(ODD_REGIONS) if rnd.random() < 0.1 else rnd.choice(REGIONS)
        if region and rnd.random() < 0.05:
            region = region.lower()
        values.append(None if rnd.random() < 0.002 else _fuzz_value(rnd, region))
        regions.append(region)
    return values, regions


def test_fuzzer_matches_reference() -> None:
    _check(*_fuzz_pairs(100_000))


def _through_duckdb(values: list[str | None], regions: list[str | None]) -> list[str | None]:
    """``crm_phone`` as ingest runs it: DuckDB hands the arrow UDF chunks of about 2,048 rows."""
    con = duckdb.connect()
    register_duckdb(con)
    calls: list[int] = []

    def count(v: pa.Array, r: pa.Array) -> pa.Array:
        calls.append(len(v))
        return v

    con.create_function("count_rows", count, ["VARCHAR", "VARCHAR"], "VARCHAR", type="arrow", null_handling="special")
    rows = pa.table(
        {"i": pa.array(range(len(values))), "v": pa.array(values, pa.string()), "r": pa.array(regions, pa.string())}
    )
    con.register("rows", rows)
    out = con.execute("SELECT i, crm_phone(v, r), count_rows(v, r) FROM rows ORDER BY i").fetchall()
    assert max(calls) <= 2048 < len(values), calls  # the chunked path is what is compared
    assert [i for i, _, _ in out] == list(range(len(values)))
    return [p for _, p, _ in out]


def test_duckdb_chunks_match_reference(tmp_path: Path) -> None:
    """Generator data, then fuzzed values, in DuckDB's own chunks (register_duckdb, in memory)."""
    values, regions = _generated_pairs(tmp_path, 6_000)
    fuzz_values, fuzz_regions = _fuzz_pairs(20_000, seed=11)
    for vs, rs in ((values, regions), (fuzz_values, fuzz_regions)):
        expected = [normalize_phone_reference(v, r) for v, r in zip(vs, rs, strict=True)]
        got = _through_duckdb(vs, rs)
        bad = [(v, r, x, g) for v, r, x, g in zip(vs, rs, expected, got, strict=True) if x != g]
        assert not bad, f"{len(bad)} differ (value, region, reference, duckdb): {bad[:10]}"


def _pattern_cases(pattern: str, rnd: random.Random) -> list[str]:
    """Digit strings near ``pattern``'s language: its shortest members, mutated and cut."""
    from phonenumbers.phonemetadata import PhoneMetadata

    out = ["", "0", "00", "011", "1", "0011", "180020", "1831", "15", "8", "80"]
    for region in REGIONS:
        meta = PhoneMetadata.metadata_for_region(region, None)
        for desc in (meta.fixed_line, meta.mobile, meta.toll_free):
            if desc is not None and desc.example_number:
                out.append(desc.example_number)
    for _ in range(300):
        base = rnd.choice(out) if rnd.random() < 0.6 else ""
        extra = "".join(rnd.choice("0123456789") for _ in range(rnd.randint(0, 12)))
        cut = rnd.randint(0, len(base))
        out.append(base[:cut] + extra if rnd.random() < 0.5 else base + extra)
    return out


@pytest.mark.parametrize("region", ["US", "GB", "DE", "FR", "NL", "ES", "AU", "AR", "BR", "MX", "CN", "KR", "BY", "IT"])
def test_automata_agree_with_re(region: str) -> None:
    """Full match and ``re.match`` of metadata patterns, walked as automata, agree with ``re``."""
    import re

    import numpy as np
    from phonenumbers.phonemetadata import PhoneMetadata

    meta = PhoneMetadata.metadata_for_region(region, None)
    auto = _Automata()
    rnd = random.Random(region)
    patterns = [meta.general_desc.national_number_pattern, meta.international_prefix, meta.national_prefix_for_parsing]
    for pattern in filter(None, patterns):
        start = auto.add_pattern(pattern)
        assert start is not None, pattern
        cases = _pattern_cases(pattern, rnd)
        width = max(map(len, cases)) + 1
        cols = [np.array([int(c[j]) if j < len(c) else 10 for c in cases]) for j in range(width)]
        full = auto.arrays()[1][auto.walk(np.full(len(cases), start), cols)]
        hit = auto.arrays()[1][np.full(len(cases), start)].copy()
        auto.walk(np.full(len(cases), start), cols, hit=hit)
        compiled = re.compile(pattern)
        assert full.tolist() == [compiled.fullmatch(c) is not None for c in cases], pattern
        assert hit.tolist() == [compiled.match(c) is not None for c in cases], pattern
    literals = _literal_prefixes(meta.national_prefix_for_parsing or "")
    if literals and not meta.national_prefix_transform_rule:
        start = auto.add_literals(literals)
        cases = _pattern_cases(meta.national_prefix_for_parsing, rnd)
        width = max(map(len, cases)) + 1
        cols = [np.array([int(c[j]) if j < len(c) else 10 for c in cases]) for j in range(width)]
        lit = (np.full(len(cases), np.iinfo(np.int32).max, dtype=np.int64), np.zeros(len(cases), dtype=np.int64))
        auto.walk(np.full(len(cases), start), cols, lit=lit)
        compiled = re.compile(meta.national_prefix_for_parsing)
        assert lit[1].tolist() == [m.end() if (m := compiled.match(c)) else 0 for c in cases]


@pytest.mark.parametrize(
    ("value", "region"),
    [
        ("(415) 555-0134", "US"),
        ("1 415 555 0134", "US"),  # the region's own calling code without +
        ("011 49 30 12345678", "US"),  # US IDD
        ("0049 30 12345678", "FR"),
        ("00 49 30 12345678", "FR"),  # "00 " is not the 00 prefix but the IDD of FR
        ("+44 (0) 20 7946 0958", "DE"),
        ("+44 (0)20 7946 0958", None),
        ("+0 123 4567", "DE"),  # + then 0: parsed again as a national number
        ("+999 1234 5678", "GB"),  # unknown calling code
        ("+800 1234 5678", "GB"),  # non-geographic
        ("+1 800 555 0199", "XX"),
        ("030 12345678", "XX"),
        ("030 12345678", None),
        ("030 12345678", "de"),
        ("(02) 1234 5678", "AU"),
        ("1831 2 1234 5678", "AU"),  # AU carrier prefix
        ("0011 44 20 7946 0958", "AU"),  # AU IDD
        ("180020 1234567", "GB"),  # GB: 180020 national prefix
        ("0 11 1234 5678", "AR"),  # AR transform rule
        ("15 1234 5678", "AR"),
        ("0 21 98765 4321", "BR"),
        ("0312345678", "IT"),  # Italian leading zero
        ("+39 06 1234 5678", "US"),
        ("+39 000 1234", "US"),
        ("0000", "IT"),
        ("12", "US"),
        ("123", "US"),
        ("1234", "DE"),
        ("+1", "US"),
        ("+12", "US"),
        ("+123", "US"),
        ("0012", "US"),
        ("00", "US"),
        ("+", "US"),
        ("   ", "US"),
        ("", "US"),
        ("n/a", "US"),
        ("+49 151 1234567890123456789", "DE"),  # too long
        ("+49" + "1" * 260, "DE"),  # longer than phonenumbers reads
        ("1" * 250, "DE"),
        ("  +49 151 12345678  ", "DE"),
        ("\t+49 151 12345678\n", "DE"),
        ("\u00a0+49 151 12345678", "DE"),
        ("+49 151 12345678 x12", "DE"),
        ("+49 151 12345678 ext. 5", "DE"),
        ("+49-151-12345678#", "DE"),
        ("+49 151 １２３４５６７８", "DE"),
        ("+٤٩ ١٥١ ١٢٣٤٥٦٧٨", "DE"),
        ("1-800-FLOWERS", "US"),
        ("(+49) 151 12345678", "DE"),
        ("++49 151 12345678", "DE"),
        ("49+151 12345678", "DE"),
        ("+49 151 12345678 / 12", "DE"),
        ("tel:+49-151-12345678", "DE"),
        ("+49 151 12345678;phone-context=+49", "DE"),
        ("06 12 34 56 78", "fr"),
        ("020 7946 0958", "GG"),  # a region that shares +44
        ("(613) 555-0199", "CA"),
        ("555-0199", "CA"),
        ("555-0199", "US"),
        ("0 9 1 2 3 4 5 6 7 8", "NL"),
        ("91 123 45 67", "ES"),
        ("034 91 123 45 67", "ES"),
        ("0090 312 123 4567", "JP"),
        ("0056475109727", "ID"),  # viable with its national prefix, not without: parse keeps the prefix
        ("0 56475109727", "id"),
    ],
)
def test_edge_cases(value: str, region: str | None) -> None:
    expected = to_e164_reference(value, region)
    to_e164.cache_clear()
    assert to_e164(value, region) == expected
    assert phone_arrow(pa.array([value]), pa.array([region], type=pa.string())).to_pylist() == [
        normalize_phone_reference(value, region)
    ]


def test_arrow_handles_nulls_empty_and_chunked_input() -> None:
    values = pa.chunked_array([["+49 151 12345678", None], ["", "(415) 555-0134"]])
    regions = pa.chunked_array([[None, "US"], ["US", None]])
    assert phone_arrow(values, regions).to_pylist() == ["+4915112345678", None, None, "+14155550134"]
    assert phone_arrow(pa.array([], type=pa.string()), pa.array([], type=pa.string())).to_pylist() == []
    for block in (["   ", " "], [None, None], ["", ""], ["  +", "00"], ["\t", "n/a"]):  # no digits at all
        got = phone_arrow(pa.array(block, type=pa.string()), pa.array(["US", None], type=pa.string()))
        assert got.to_pylist() == [normalize_phone_reference(v, r) for v, r in zip(block, ["US", None], strict=True)]

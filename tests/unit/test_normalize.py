"""Canonical emails and phones: one person, one pseudonym, whatever the export wrote."""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb
import pytest

from crmshield.normalize import (
    E164_PATTERN,
    EMAIL_SHAPE,
    is_email,
    normalize_email,
    normalize_phone,
    register_duckdb,
    to_e164,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Jane.Doe@Example.COM ", "jane.doe@example.com"),
        ("ZOË@EXAMPLE.DE", "zoë@example.de"),
        # decomposed e + combining diaeresis (NFD) and the precomposed form give one address
        ("zoe\u0308@example.de", "zoë@example.de"),
        ("", None),
        ("   ", None),
        (None, None),
    ],
)
def test_normalize_email(raw: str | None, expected: str | None) -> None:
    assert normalize_email(raw) == expected


def test_email_shape() -> None:
    assert is_email("jane@example.com")
    assert not is_email("jane at example dot com")
    assert not is_email("jane@localhost")
    assert not is_email(None)


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("(415) 555-0134", "US", "+14155550134"),
        ("+1 415.555.0134", "DE", "+14155550134"),  # an international prefix wins over the region
        ("020 7946 0958", "GB", "+442079460958"),
        ("0049 30 12345678", "FR", "+493012345678"),  # 00 prefix
        ("06 12 34 56 78", "FR", "+33612345678"),
        ("030 12345678", None, None),  # a German national number read as a US one is not possible
        ("n/a", "US", None),
        ("", "US", None),
        (None, "US", None),
    ],
)
def test_to_e164(raw: str | None, region: str | None, expected: str | None) -> None:
    assert to_e164(raw, region) == expected


def test_normalize_phone_keeps_what_is_not_a_number() -> None:
    assert normalize_phone(" call the office ", "US") == "call the office"
    assert normalize_phone("(415) 555-0134", "US") == "+14155550134"
    assert normalize_phone(None, "US") is None


def test_duckdb_udfs_match_python_and_see_nulls() -> None:
    con = duckdb.connect()
    register_duckdb(con)
    rows = con.execute(
        """SELECT crm_email(e), crm_phone(p, r) FROM (VALUES
            (' Jane@Example.COM', '+49 151 12345678', NULL),
            (NULL, '(415) 555-0134', 'US'),
            ('x', 'n/a', 'GB')) t(e, p, r)"""
    ).fetchall()
    assert rows == [
        ("jane@example.com", "+4915112345678"),  # a NULL region still parses an international number
        (None, "+14155550134"),
        ("x", "n/a"),
    ]


def test_spark_job_uses_the_same_canonical_shapes() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "spark_jobs" / "privacy"))
    import transforms

    assert transforms.CANONICAL_SHAPES == {"email": EMAIL_SHAPE, "phone": E164_PATTERN}

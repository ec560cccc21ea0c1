"""The privacy-zone PII patterns, on positive and negative examples.

The patterns are written so Python's ``re`` and Java's regex (Spark ``rlike``, find semantics)
agree; ``tests/integration/test_validate_privacy.py`` checks that agreement through Spark.
Loading ``expectations/privacy.py`` imports neither GX nor Spark, so this stays fast.
"""

from __future__ import annotations

import hashlib
import re

import pytest

from crmshield.config import Settings
from crmshield.validate import load_expectations_module

privacy = load_expectations_module(Settings.from_env())
EMAIL = re.compile(privacy.EMAIL_PATTERN)
PHONE = re.compile(privacy.PHONE_PATTERN)
PSEUDONYM = re.compile(privacy.PSEUDONYM_PATTERN)


def pseudonym(seed: str, version: int = 1) -> str:
    return f"v{version}_" + hashlib.sha256(seed.encode()).hexdigest()


@pytest.mark.parametrize(
    "text",
    [
        "zz.canary.7731@example.org",
        "write to jane.doe+crm@mail.example.co.uk today",
        "J_O'Brien? no: j_obrien@corp-mail.de",
        "UPPER.CASE@EXAMPLE.COM",
        "<a@b.io>",
    ],
)
def test_email_pattern_finds_addresses(text: str) -> None:
    assert EMAIL.search(text)


@pytest.mark.parametrize(
    "text",
    [
        "Please write to <EMAIL>",
        "user at example dot com",
        "@handle",
        "name@localhost",
        "price 5@3.50",
        "2024-05-01",
    ],
)
def test_email_pattern_ignores_non_addresses(text: str) -> None:
    assert not EMAIL.search(text)


@pytest.mark.parametrize(
    "text",
    [
        "+44 20 7946 0958",
        "call back on +44 20 7946 0958 please",
        "+1 (415) 555-0100",
        "(415) 555-0100",
        "415-555-0100",
        "415.555.0100",
        "07700900123",
        "0049 30 12345678",
        "+31612345678",
        "tel:+33-1-23-45-67-89",
        "phone: 020 7946 0958.",
        "+44 20 7946 0958ext 12",
        "+44-20-7946-0958",
        "01.23.45.67.89",
        "06-12345678",
        "on 2024-05-01 call 020 7946 0958",
        # not phones, but a long digit run in the privacy zone is a finding too
        "4111 1111 1111 1111",
        "ticket 123456789abc",
        "account 12345678901234567890",
    ],
)
def test_phone_pattern_finds_numbers(text: str) -> None:
    assert PHONE.search(text), text


@pytest.mark.parametrize(
    "text",
    [
        "2024-05-01",
        "since 2024-05-01 12:30:45",
        "2024/05/01 09",
        "2024.05.01",
        "between 2024-05-01 and 2024-06-30",
        "order 12345678",  # 8 digits
        "555-0100",
        "Please call <PHONE>",
        "resolved in 26.5 hours",
        "v1_0123456789abcdef",
        "SKU ab123456789",
        "12:30:45",
        "since 01.05.2024 14:00",
        "05-01-2024 10:30",
        "2024-05-01 2024-06-30",
        "1.5.2024 9:00",
    ],
)
def test_phone_pattern_ignores_dates_and_short_numbers(text: str) -> None:
    assert not PHONE.search(text), text


@pytest.mark.parametrize("seed", [f"contact:{i}" for i in range(200)])
def test_phone_pattern_never_fires_on_pseudonyms(seed: str) -> None:
    token = pseudonym(seed)
    assert PSEUDONYM.search(token)
    assert not PHONE.search(token)
    assert not EMAIL.search(token)


def test_phone_pattern_ignores_all_digit_hex() -> None:
    token = "v12_" + "0123456789" * 6 + "0123"
    assert PSEUDONYM.search(token)
    assert not PHONE.search(token)


@pytest.mark.parametrize(
    "text",
    [
        "v1_" + "a" * 63,
        "v1_" + "A" * 64,
        "v_" + "a" * 64,
        "1_" + "a" * 64,
        "v1_" + "a" * 65,
        " v1_" + "a" * 64,
        "contact-4711-not-a-pseudonym",
        "",
    ],
)
def test_pseudonym_pattern_is_strict(text: str) -> None:
    assert not PSEUDONYM.search(text)


def test_validate_module_imports_neither_gx_nor_spark(tmp_path) -> None:
    """Airflow DAG files import the package: GX and Spark load only when a stage runs."""
    import subprocess
    import sys

    script = tmp_path / "probe.py"
    script.write_text(
        "import sys\n"
        "import crmshield.validate\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'great_expectations', 'pyspark'})\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

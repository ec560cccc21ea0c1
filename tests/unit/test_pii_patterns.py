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
CARD = re.compile(privacy.CARD_PATTERN)
CARD_CANDIDATE = re.compile(privacy.CARD_CANDIDATE_PATTERN)
IBAN = re.compile(privacy.IBAN_PATTERN)
IPV4 = re.compile(privacy.IPV4_PATTERN)
IPV6 = re.compile(privacy.IPV6_PATTERN)
IP = re.compile(privacy.IP_PATTERN)


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


# ------------------------------------------------------------------ cards, IBANs, IP addresses

#: Values none of the card, IBAN and IP patterns may match: dates, times, pseudonyms, versions,
#: tracking numbers, order numbers and the redactor's placeholders.
NOT_CARD_IBAN_IP = [
    "2024-05-01",
    "2024-05-01 12:30:45",
    "between 2024-05-01 and 2024-06-30",
    "2024-05-01 2024-06-30",
    "01.05.2024 14:00",
    "12:30",
    "at 12:30:45",
    "version 1.2.3",
    "1.2.3",
    "v4.2.1",
    "build 10.0.19045",
    "order #482913",
    "INV-2024-0042",
    "1Z999AA10123456784",  # UPS
    "9400 1000 0000 0000 0000 00",  # USPS, 22 digits in groups of four
    "92001901755477000000",  # USPS, 20 digits
    "tracking 7489 1234 5678",  # FedEx, 12 digits
    "JD014600006281230417",  # DHL
    "resolved in 26.5 hours",
    "pi is 3.141592653589793",
    "<CARD> <IBAN> <IP> <PHONE> <EMAIL>",
    "customer",
    "Financial Services",
    "closedwon",
    "1000+",
    "SW1",
    "EUR",
    "",
]


@pytest.mark.parametrize("text", NOT_CARD_IBAN_IP)
def test_card_iban_ip_patterns_ignore_dates_versions_and_tracking_numbers(text: str) -> None:
    assert not CARD.search(text), text
    assert not IBAN.search(text), text
    assert not IP.search(text), text


@pytest.mark.parametrize("seed", [f"contact:{i}" for i in range(200)])
def test_card_iban_ip_patterns_never_fire_on_pseudonyms(seed: str) -> None:
    token = pseudonym(seed)
    assert not CARD.search(token) and not IBAN.search(token) and not IP.search(token)


def test_card_iban_ip_patterns_ignore_all_digit_hex() -> None:
    token = "v12_" + "0123456789" * 6 + "0123"
    assert not CARD.search(token) and not IBAN.search(token) and not IP.search(token)


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111111",
        "card 4111 1111 1111 1111 please",
        "4111-1111-1111-1111",
        "4111 1111 1111 1111 123",  # with a CVV
        "4222 2222 2222 2",  # 13 digits
        "amex 3782 822463 10005",
        "diners 3056 930902 5904",
        "6011000990139424",
        "4111 1111 1111 1112",  # no checksum here: 13+ digits do not belong in a categorical column
        "card:4111111111111111.",
    ],
)
def test_card_pattern_finds_card_numbers(text: str) -> None:
    assert CARD.search(text), text


@pytest.mark.parametrize(
    "text",
    [
        "order 123456789012",  # 12 digits
        "4111 1111 1111",  # 12 digits
        "ref4111111111111111",  # inside a word (in categorical columns)
        "0.4111111111111111",  # a decimal
        "4111 1111 1111 1111 1111 1111",  # goes on: a 24-digit reference
        "12345678901234567890",  # 20 digits
    ],
)
def test_card_pattern_ignores_other_digit_runs(text: str) -> None:
    assert not CARD.search(text), text


def test_card_candidates_in_free_text_allow_a_word_before() -> None:
    """In the free text a card glued to a word is still a candidate (the SQL then checks Luhn)."""
    assert CARD_CANDIDATE.search("ref4111111111111111")
    assert not CARD_CANDIDATE.search("12345678901234567890")
    assert not CARD_CANDIDATE.search("0.4111111111111111")


@pytest.mark.parametrize(
    "text",
    [
        "DE89370400440532013000",
        "IBAN DE89 3704 0044 0532 0130 00 please",
        "GB82 WEST 1234 5698 7654 32",
        "gb82west12345698765432",
        "NL91ABNA0417164300",
        "FR14 2004 1010 0505 0001 3M02 606",
        "NO93 8601 1117 947",
        "DE89\u00a03704\u00a00044\u00a00532\u00a00130\u00a000",
        "DE89 3704 0044\n0532 0130 00",
        "DE88 3704 0044 0532 0130 00",  # no checksum here either
    ],
)
def test_iban_pattern_finds_ibans(text: str) -> None:
    assert IBAN.search(text), text


@pytest.mark.parametrize(
    "text",
    [
        "DE89 3704",
        "ab12 cdef ghij klmn",  # no IBAN country
        "JD014600006281230417",  # DHL tracking number: JD is no country
        "v1_de89370400440532013000",
        "XDE89370400440532013000",
        "ISO 13616",
    ],
)
def test_iban_pattern_ignores_short_or_embedded_strings(text: str) -> None:
    assert not IBAN.search(text), text


@pytest.mark.parametrize(
    "text",
    [
        "192.168.1.10",
        "login from 203.0.113.7 failed",
        "ip=10.0.0.1;",
        "1.2.3.45",
        "(172.16.254.1)",
        "whatsapp 10.1.2.3",
    ],
)
def test_ipv4_pattern_finds_addresses(text: str) -> None:
    assert IPV4.search(text) and IP.search(text), text


@pytest.mark.parametrize(
    "text",
    [
        "1.2.3.4",  # version-like: every octet one digit (the redactor leaves 8.8.8.8 too)
        "8.8.8.8",
        "1.2.3",
        "10.0.0.0/8",  # a network
        "127.0.0.1",  # loopback
        "0.0.0.0",
        "255.255.255.0",  # a netmask
        "256.1.1.1",
        "192.168.01.1",  # leading zero
        "192.168.1.1.5",  # a longer dotted number
        "v10.2.3.4",
        "10.2.3.4-beta",
        "2024.05.01.12",
    ],
)
def test_ipv4_pattern_ignores_versions_networks_and_loopback(text: str) -> None:
    assert not IPV4.search(text), text


@pytest.mark.parametrize(
    "text",
    [
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        "2001:db8::8a2e:370:7334",
        "from fe80::1ff:fe23:4567:890a today",
        "2001:db8::1",
        "::ffff:c000:280",
    ],
)
def test_ipv6_pattern_finds_addresses(text: str) -> None:
    assert IPV6.search(text) and IP.search(text), text


@pytest.mark.parametrize(
    "text", ["::", "::1", "12:30:45", "00:1A:2B:3C:4D:5E", "add:: this", "std::vector", "10:30 - 11:45", "a:b:c"]
)
def test_ipv6_pattern_ignores_times_macs_and_loopback(text: str) -> None:
    assert not IPV6.search(text), text


def test_version_cue_matches_the_redactor() -> None:
    cue_then_ip = re.compile(f"(?:{privacy.VERSION_CUE_PATTERN})?{privacy.IPV4_PATTERN}")
    for text in ("Version 10.2.3.4", "version: 10.2.3.4", "build 10.0.1.22", "FW 192.168.1.1", "ver. 10.1.1.1"):
        assert cue_then_ip.search(text).group()[0].isalpha(), text  # the match starts with the cue
    for text in ("see 10.2.3.4", "whatsapp 10.1.2.3"):
        assert cue_then_ip.search(text).group()[0].isdigit(), text


def test_gx_query_escapes_braces_but_keeps_the_batch() -> None:
    sql = privacy.gx_query("SELECT 1 FROM {batch} WHERE x rlike '[0-9]{4}'")
    assert sql == "SELECT 1 FROM {batch} WHERE x rlike '[0-9]{{4}}'"
    assert sql.format(batch="v") == "SELECT 1 FROM v WHERE x rlike '[0-9]{4}'"
    assert privacy.sql_string("a'b\\c") == "'a\\'b\\\\c'"


def test_sql_checks_select_no_value() -> None:
    """Every table-level query selects a constant: the rows GX fetches to count carry nothing."""
    for sql in (
        privacy.findings_query(privacy.card_in_text_sql("`description`")),
        privacy.k_anonymity_query(["age_band", "postal_prefix", "country"], 5),
        privacy.suppression_share_query(["age_band", "postal_prefix", "country"], 0.05),
        privacy.excluded_subject_query("contact_pk", privacy.REASON_ERASED),
    ):
        assert sql.startswith("SELECT 1 AS finding FROM "), sql


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

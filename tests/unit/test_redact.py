"""The offline free-text PII redactor: each rule on positives and negatives, the validators,
offsets, None handling, the batch entry point, and the quality bar on the labelled set."""

from __future__ import annotations

import json
import math
import unicodedata
from pathlib import Path

import pytest

from crmshield import redact_eval
from crmshield.generate import COUNTRIES, generate
from crmshield.redact import (
    KINDS,
    PLACEHOLDERS,
    Finding,
    Known,
    bsn_valid,
    dni_valid,
    find,
    iban_valid,
    luhn_valid,
    nino_valid,
    nir_valid,
    redact,
    redact_batch,
    ssn_valid,
)


def kinds(text: str, known: Known | None = None) -> list[tuple[str, str]]:
    return [(f.kind, text[f.start : f.end]) for f in find(text, known)]


def only(text: str, kind: str, known: Known | None = None) -> list[str]:
    return [t for k, t in kinds(text, known) if k == kind]


# --- API ---------------------------------------------------------------------------------------
def test_api_shape() -> None:
    assert KINDS == ("EMAIL", "PHONE", "CARD", "IBAN", "IP", "POSTAL_CODE", "PERSON", "URL", "ID")
    assert PLACEHOLDERS == {k: f"<{k}>" for k in KINDS}
    assert Known() == Known(None, None, None, None, None)


def test_none_and_empty() -> None:
    assert redact(None) is None
    assert redact("") == ""
    assert find("") == []
    assert redact("nothing to see here") == "nothing to see here"


# --- validators ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "number", ["4111 1111 1111 1111", "5555555555554444", "3782 822463 10005", "6011-1111-1111-1117"]
)
def test_luhn_valid(number: str) -> None:
    assert luhn_valid(number)


@pytest.mark.parametrize("number", ["4111 1111 1111 1112", "5555555555554445", "1234", "", "abcd efgh"])
def test_luhn_invalid(number: str) -> None:
    assert not luhn_valid(number)


@pytest.mark.parametrize(
    "iban",
    ["GB82 WEST 1234 5698 7654 32", "DE89370400440532013000", "gb82west12345698765432", "NL91 ABNA 0417 1643 00",
     "FR14 2004 1010 0505 0001 3M02 606", "BE68 5390 0754 7034"],
)  # fmt: skip
def test_iban_valid(iban: str) -> None:
    assert iban_valid(iban)


@pytest.mark.parametrize(
    "iban",
    ["GB83 WEST 1234 5698 7654 32", "DE89 3704 0044 0532 0130", "DE89 3704 0044 0532 0130 001", "XX82 WEST 1234",
     "NL91 ABNA 0417 1643 01", ""],
)  # fmt: skip
def test_iban_invalid(iban: str) -> None:
    assert not iban_valid(iban)


def test_national_id_validators() -> None:
    assert ssn_valid("123-45-6789") and ssn_valid("536228741")
    assert not any(ssn_valid(s) for s in ["000-12-3456", "666-12-3456", "912-34-5678", "123-00-6789", "123-45-0000"])
    assert bsn_valid("111222333") and bsn_valid("167868433")
    assert not bsn_valid("123456789") and not bsn_valid("111222334")
    assert dni_valid("12345678Z") and dni_valid("X1234567L") and dni_valid("Z4905896R")
    assert not dni_valid("12345678A")
    assert nir_valid("2 96 08 20 291 742 56") and not nir_valid("2 96 08 20 291 742 57")
    assert nino_valid("AB 12 34 56 C") and nino_valid("JG103725A")
    assert not nino_valid("QQ 12 34 56 C") and not nino_valid("GB 12 34 56 A")


# --- EMAIL ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, address",
    [
        ("mail me: jane.doe@example.com.", "jane.doe@example.com"),
        ("ODD CASE: Jane.DOE@Example.COM!", "Jane.DOE@Example.COM"),
        ("unicode: josé.garcía@correo.example.es and more", "josé.garcía@correo.example.es"),
        ("idn: jürgen@bücher.example", "jürgen@bücher.example"),
        ("tags: a.b-c_d+crm@sub.example.co.uk", "a.b-c_d+crm@sub.example.co.uk"),
        ("write to jane dot doe at example dot com please", "jane dot doe at example dot com"),
        ("write to jane(at)example(dot)com please", "jane(at)example(dot)com"),
        ("write to jane [at] example [dot] com please", "jane [at] example [dot] com"),
        ("write to jane at example.com please", "jane at example.com"),
        ("schreib an hannah punkt meyer at example punkt de", "hannah punkt meyer at example punkt de"),
    ],
)
def test_email_found(text: str, address: str) -> None:
    assert only(text, "EMAIL") == [address]


@pytest.mark.parametrize(
    "text",
    ["Meet me at 5 at the office.", "Log in at app.example.com and click Billing.", "We are at example.com/help.",
     "price 5@3.50", "@handle", "name@localhost", "I'm at home until 3, look at the docs."],
)  # fmt: skip
def test_email_not_found(text: str) -> None:
    assert only(text, "EMAIL") == []


def test_own_email_case_insensitive() -> None:
    known = Known(email="Ali@Example.com")
    assert only("ALI@EXAMPLE.COM ist meine Adresse", "EMAIL", known) == ["ALI@EXAMPLE.COM"]


def test_no_partial_email_left_around_a_name() -> None:
    known = Known(first_name="Jane", last_name="Doe")
    out = redact("Reply to jane.doe@example.com or jane dot doe at example dot com", known)
    assert out == "Reply to <EMAIL> or <EMAIL>"


# --- PHONE ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, phone",
    [
        ("call +44 20 7946 0958 today", "+44 20 7946 0958"),
        ("call (415) 555-0134 today", "(415) 555-0134"),
        ("Tel. 030 12345678 bitte", "030 12345678"),
        ("portable 06 12 34 56 78 svp", "06 12 34 56 78"),
        ("móvil 612 34 56 78 gracias", "612 34 56 78"),
        ("bel 020 123 4567 aub", "020 123 4567"),
        ("ring (02) 9876 5432 mate", "(02) 9876 5432"),
        ("call 0033 6 12 34 56 78 (France)", "0033 6 12 34 56 78"),
        ("mobile +44 (0) 7911 765432.", "+44 (0) 7911 765432"),
        ("Tél. : 04.91.23.45.67 –", "04.91.23.45.67"),
        ("work: 1-617-555-0143, ext 12", "1-617-555-0143"),
    ],
)
def test_phone_found(text: str, phone: str) -> None:
    assert only(text, "PHONE") == [phone]


def test_phone_split_over_lines() -> None:
    assert only("phone:\n+44 20\n7946 0958", "PHONE") == ["+44 20\n7946 0958"]


@pytest.mark.parametrize(
    "text",
    ["Order #4829130 shipped", "Invoice 0301234567 is wrong", "case 0612345678 please quote it",
     "on 2024-05-01 12:30:45", "see 01.05.2024 and 12/05/2024", "ZIP 95014-2083", "placeholder 123-456-7890",
     "serial 4829130", "error 40401", "total 1.234.567,00 EUR", "SSN-like 666-45-6789", "boot_time 1365519115.0",
     "Earth 6371  5973.6"],
)  # fmt: skip
def test_phone_not_found(text: str) -> None:
    assert only(text, "PHONE") == []


def test_unvalidated_number_is_no_phone_unless_it_is_the_requesters() -> None:
    text = "call me on (362) 663-6963 please"  # 362 is no US area code: phonenumbers rejects it
    assert only(text, "PHONE") == []
    assert only(text, "PHONE", Known(phone="(362) 663-6963", country="US")) == ["(362) 663-6963"]
    # the requester's number in another formatting
    assert only("ring 0044 7911 123456", "PHONE", Known(phone="07911 123456", country="GB")) == ["0044 7911 123456"]


@pytest.mark.parametrize("cc", sorted(COUNTRIES))
@pytest.mark.parametrize("local", [True, False])
def test_generator_phones_are_caught(cc: str, local: bool) -> None:
    phone = COUNTRIES[cc]["phone"]("271828182845", local)
    known = Known(phone=phone, country=cc)
    out = redact(f"Please call me back on {phone}. Thanks", known)
    assert out == "Please call me back on <PHONE>. Thanks"


# --- CARD ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "card", ["4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111", "3782 822463 10005", "4222222222222"]
)
def test_card_found(card: str) -> None:
    assert kinds(f"my card {card} exp 08/27") == [("CARD", card)]


@pytest.mark.parametrize(
    "number",
    ["4111 1111 1111 1112", "5555-5555-5555-4445", "4000056655665557", "3782 822463 10006", "7312 0098 1154 2201",
     "1111222233334444", "0000 0000 0000 0000"],
)  # fmt: skip
def test_card_checksum_failures_are_never_redacted(number: str) -> None:
    assert find(f"Card {number} was declined") == []
    assert find(number) == []


# --- IBAN ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "iban",
    ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "gb82 west 1234 5698 7654 32", "BE68 5390 0754 7034"],
)
def test_iban_found(iban: str) -> None:
    assert kinds(f"Refund to {iban} please") == [("IBAN", iban)]


def test_iban_split_over_lines() -> None:
    assert only("IBAN: DE89 3704 0044\n0532 0130 00 (PDF)", "IBAN") == ["DE89 3704 0044\n0532 0130 00"]


@pytest.mark.parametrize(
    "iban",
    ["DE88 3704 0044 0532 0130 00", "GB83 WEST 1234 5698 7654 32", "DE89 3704 0044 0532 0130", "NL92ABNA0417164300"],
)
def test_iban_checksum_failures_are_never_redacted(iban: str) -> None:
    assert find(f"IBAN {iban} was rejected") == []


# --- IP ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "ip",
    [
        "192.0.2.15",
        "203.0.113.255",
        "2001:db8::1",
        "2001:0db8:0000:0000:0000:ff00:0042:8329",
        "2001:db8:85a3::8a2e:370:7334",
    ],
)
def test_ip_found(ip: str) -> None:
    assert kinds(f"login from {ip}, blocked") == [("IP", ip)]


@pytest.mark.parametrize(
    "text",
    ["Version 4.2.1 fixed it", "upgrade 3.2.0.1 to 3.2.0.2", "v10.0.0.1 broke it", "meeting at 12:30 and 12:30:45",
     "MAC 00:1A:2B:3C:4D:5E", "allow 10.0.0.0/8", "build 2024.06.01.3", "999.1.1.1 is no address",
     "listen on 127.0.0.1", "netmask 255.255.255.0"],
)  # fmt: skip
def test_ip_not_found(text: str) -> None:
    assert only(text, "IP") == []


# --- URL -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    ["https://app.example.com/login?email=jane@example.com", "https://example.com/a?user=jdoe&x=1",
     "www.example.com/profile?uid=88123", "https://crm.example.com/customers/884213/profile",
     "https://auth.example.com/magic/4f6b2c9e1a8d7f3b5c0e", "https://t.example.com/?phone=%2B447911123456"],
)  # fmt: skip
def test_personal_url_found_whole(url: str) -> None:
    assert kinds(f"see {url}.") == [("URL", url)]


@pytest.mark.parametrize(
    "url",
    [
        "https://status.example.com/incidents",
        "https://example.com/docs/api?version=2&format=json",
        "http://example.org/",
        "https://app.example.com/reports?from=2024-01-01&to=2024-02-01&page_id=3",
    ],
)
def test_plain_url_stays(url: str) -> None:
    assert find(f"see {url} for details") == []


# --- POSTAL_CODE ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, code",
    [
        ("my zip code is 71701, thanks", "71701"),
        ("ZIP: 02139", "02139"),
        ("postcode SW1A 1AA", "SW1A 1AA"),
        ("PLZ 10115", "10115"),
        ("code postal 75008", "75008"),
        ("postal code M5V 3L9", "M5V 3L9"),
        ("12 Baker Street, London NW1 6XE", "NW1 6XE"),
        ("Hauptstraße 5, 10115 Berlin", "10115"),
        ("1600 Amphitheatre Pkwy, Mountain View, CA 94043", "94043"),
        ("Kerkstraat 12, 1017 GC Amsterdam", "1017 GC"),
        ("Schillerstraße 12\n50667 Köln", "50667"),
        ("Sydney NSW 2000", "2000"),
    ],
)
def test_postal_code_in_address_context(text: str, code: str) -> None:
    assert only(text, "POSTAL_CODE") == [code]


@pytest.mark.parametrize("text", ["order 71701 shipped", "error 40401", "we are 250 people in 12 countries"])
def test_bare_numbers_are_no_postal_codes(text: str) -> None:
    assert find(text) == []


# --- ID ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, value",
    [
        ("SSN 123-45-6789 for the form", "123-45-6789"),
        ("my SSN is 536228741", "536228741"),
        ("NI number AB 12 34 56 C", "AB 12 34 56 C"),
        ("BSN: 111222333", "111222333"),
        ("DNI 12345678Z", "12345678Z"),
        ("passport number X1234567 expired", "X1234567"),
        ("driver's license D123-4567-8901", "D123-4567-8901"),
        ("Meine Steuer-ID lautet 12 345 678 901.", "12 345 678 901"),
        ("numéro de sécurité sociale 2 96 08 20 291 742 56", "2 96 08 20 291 742 56"),
    ],
)
def test_id_found(text: str, value: str) -> None:
    assert only(text, "ID") == [value]


@pytest.mark.parametrize(
    "text",
    ["SSN 000-12-3456", "BSN 123456789", "DNI 12345678A", "order #482913", "ticket 600215", "invoice INV-2024-0042",
     "version 4.2.1", "passport pending, will send later", "on 2024-05-01", "total $1,234.56"],
)  # fmt: skip
def test_no_id(text: str) -> None:
    assert find(text) == []


# --- PERSON --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "first, last, text, expected",
    [
        ("José", "Álvarez", "JOSE ALVAREZ here, also jose and José's", ["JOSE ALVAREZ", "jose", "José"]),
        ("Jürgen", "Müller", "Herr Mueller, Muller and MÜLLER's", ["Mueller", "Muller", "MÜLLER"]),
        ("Zoë", "Ng", "Zoe Ng, zoë", ["Zoe Ng", "zoë"]),
        ("Łukasz", "Søren", "Lukasz and Soren", ["Lukasz", "Soren"]),
        ("Thị Mai", "Nguyễn", "Nguyen Thi Mai", ["Nguyen Thi Mai"]),
        ("Lucía", "García Márquez", "Sra. García and García Márquez", ["García", "García Márquez"]),
        ("Sanne", "van der Berg", "meneer Van der Berg and Berg", ["Van der Berg", "Berg"]),
        ("Declan", "O'Brien", "Mr O’Brien or OBrien", ["O’Brien", "OBrien"]),
        ("Chloe", "Anderson", "change it to Chloe Anderson-Reyes", ["Chloe Anderson-Reyes"]),
    ],
)
def test_own_name_accent_and_case_insensitive(first: str, last: str, text: str, expected: list[str]) -> None:
    assert only(text, "PERSON", Known(first_name=first, last_name=last)) == expected


def test_own_name_whole_word_only() -> None:
    known = Known(first_name="Anna", last_name="Li")
    assert only("Annabelle, Hannah and the Lite plan on Linux", "PERSON", known) == []
    assert only("Anna's and Li's", "PERSON", known) == ["Anna", "Li"]


def test_own_name_too_short_is_ignored() -> None:
    assert only("J said hi", "PERSON", Known(first_name="J")) == []


def test_common_word_name_only_capitalised() -> None:
    known = Known(first_name="Will", last_name="Grant")
    assert only("I will send a grant request. Thanks, Will", "PERSON", known) == ["Will"]


@pytest.mark.parametrize(
    "text, name",
    [
        ("Hi, my name is Anna Schmidt and I need help", "Anna Schmidt"),
        ("Hello, this is Tom from Acme", "Tom"),
        ("I'm Sophia.", "Sophia"),
        ("Please ask Mrs. Patel at number 14", "Patel"),
        ("Sehr geehrte Frau Dr. Bettina Wolff,", "Bettina Wolff"),
        ("Mme Marie-Claire Fontaine a signé", "Marie-Claire Fontaine"),
        ("Thanks,\nAnna", "Anna"),
        ("Regards, Anna Schmidt", "Anna Schmidt"),
        ("Best, J. Doe", "J. Doe"),
        ("Cheers, Tom\nSent from my iPhone", "Tom"),
        ("My colleague Daniel Ortiz will call", "Daniel Ortiz"),
        ("Please ask for Gabriela at the desk", "Gabriela"),
        ("Contact person: Marek Nowak", "Marek Nowak"),
        ("Mit freundlichen Grüßen\nKatrin Vogel\nEinkauf", "Katrin Vogel"),
        ("Viele Grüße\nAnna\nSchmidt", "Anna\nSchmidt"),
        ("Hola, soy Íñigo López.", "Íñigo López"),
        ("From: Ava Williams <ava@example.com>", "Ava Williams"),
        ("Hi there, Dan from IT here. Please reset MFA.", "Dan"),
        ("Our CEO, Michael Tran, wants the invoices.", "Michael Tran"),
        ("Hallo zusammen, mevrouw Bos belt terug", "Bos"),
    ],
)
def test_person_in_context(text: str, name: str) -> None:
    assert only(text, "PERSON") == [name]


@pytest.mark.parametrize(
    "text",
    ["Thanks!\nThe Acme Team", "Regards,\nCustomer Service\nAcme Ltd", "Hi Team,\nplease advise", "Dear Customer,",
     "This is Premium support?", "I'm Canadian.", "Ship to Melbourne VIC 3000 please.", "Hello Support,",
     "Hello, World!", "This is Python port of the library.", "Actually here is the link."],
)  # fmt: skip
def test_no_person_in_non_names(text: str) -> None:
    assert only(text, "PERSON") == []


# --- offsets, overlaps, batch --------------------------------------------------------------------
def test_offsets_point_into_the_original_text() -> None:
    text = "İstanbul office: JOSÉ writes from josé@example.es, call +34 612 345 678. Zoë's card 4111 1111 1111 1111."
    known = Known(first_name="José", last_name="Zoë")
    found = find(text, known)
    assert [text[f.start : f.end] for f in found] == [
        "JOSÉ", "josé@example.es", "+34 612 345 678", "Zoë", "4111 1111 1111 1111",
    ]  # fmt: skip
    assert all(isinstance(f, Finding) for f in found)
    assert all(a.end <= b.start for a, b in zip(found, found[1:], strict=False))


def test_decomposed_accents_are_covered() -> None:
    text = unicodedata.normalize("NFD", "Hola, soy José.")
    assert redact(text, Known(first_name="José")) == "Hola, soy <PERSON>."


def test_findings_are_sorted_and_non_overlapping() -> None:
    text = "Anna Schmidt (anna.schmidt@example.de), https://x.example.com/u/anna?email=anna.schmidt@example.de"
    found = find(text, Known(first_name="Anna", last_name="Schmidt", email="anna.schmidt@example.de"))
    assert [f.kind for f in found] == ["PERSON", "EMAIL", "URL"]
    assert all(a.end <= b.start for a, b in zip(found, found[1:], strict=False))


def test_redact_batch_with_nones() -> None:
    texts = ["Hi, this is Anna Schmidt, call 030 12345678", None, "no pii", "", "Card 4111 1111 1111 1111"]
    firsts = ["Anna", None, "Bob", None, math.nan]
    lasts = ["Schmidt", "X", None, None, None]
    emails = [None, None, None, None, None]
    phones = ["030 12345678", None, None, None, None]
    countries = ["DE", None, "US", None, None]
    out = redact_batch(texts, firsts, lasts, emails, phones, countries)
    assert out == ["Hi, this is <PERSON>, call <PHONE>", None, "no pii", "", "Card <CARD>"]


def test_redact_batch_rejects_unequal_lengths() -> None:
    with pytest.raises(ValueError):
        redact_batch(["a", "b"], ["x"], ["y"], [None], [None], [None])


def test_generated_tickets_leave_no_requester_identifier(tmp_path: Path) -> None:
    generate(tmp_path, contacts=60, seed=7)
    contacts: dict[int, dict[str, str]] = {}
    import csv

    with (tmp_path / "hubspot_contacts.csv").open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            contacts[int(row["Record ID"])] = row
    texts, cols = [], {k: [] for k in ("First Name", "Last Name", "Email", "Phone Number")}
    codes = {info["label"]: cc for cc, info in COUNTRIES.items()}
    country = []
    for line in (tmp_path / "zendesk_tickets.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            ticket = json.loads(line)
        except json.JSONDecodeError:
            continue  # the deliberately truncated line
        c = contacts.get(ticket["requester_id"])
        if c is None:
            continue
        for field in ("subject", "description"):
            texts.append(ticket[field])
            for k in cols:
                cols[k].append(c[k])
            country.append(codes.get(c["Country/Region"]))
    out = redact_batch(texts, cols["First Name"], cols["Last Name"], cols["Email"], cols["Phone Number"], country)
    assert len(out) == len(texts) > 50
    for i, text in enumerate(out):
        for k in cols:
            assert cols[k][i] not in text, (k, text)


# --- quality on the labelled set -----------------------------------------------------------------
@pytest.fixture(scope="module")
def evaluation() -> dict:
    return redact_eval.evaluate()


def test_labelled_set_size(evaluation: dict) -> None:
    assert evaluation["gold_spans"] >= 400
    assert all(evaluation["kinds"][k]["gold"] >= 25 for k in KINDS), {k: evaluation["kinds"][k]["gold"] for k in KINDS}
    assert evaluation["checksum_spans"] >= 25


def test_quality_thresholds(evaluation: dict) -> None:
    overall = evaluation["overall"]
    assert overall["recall"] >= 0.95
    assert overall["precision"] >= 0.90
    for k in KINDS:
        assert evaluation["kinds"][k]["recall"] >= 0.85, (k, evaluation["kinds"][k])
    assert evaluation["checksum_false_positives"] == 0
    assert evaluation["negative_hits"] == 0


def test_format_table_and_cli(evaluation: dict, capsys: pytest.CaptureFixture[str]) -> None:
    table = redact_eval.format_table(evaluation)
    assert all(k in table for k in KINDS) and "overall" in table and "checksum_false_positives: 0" in table
    assert redact_eval.main(["--json"]) == 0
    assert json.loads(capsys.readouterr().out)["gold_spans"] == evaluation["gold_spans"]


def test_markup_parser_offsets() -> None:
    ex = redact_eval.parse_example("x", "Hi [[PERSON:Anna]], card [[CHECKSUM:4111 1111 1111 1112]] [[NEG:#1]].")
    assert ex.text == "Hi Anna, card 4111 1111 1111 1112 #1."
    assert [(g.kind, ex.text[g.start : g.end]) for g in ex.gold] == [("PERSON", "Anna")]
    assert [ex.text[s:e] for s, e in ex.checksum] == ["4111 1111 1111 1112"]
    assert [ex.text[s:e] for s, e in ex.negatives] == ["#1"]
    with pytest.raises(ValueError):
        redact_eval.parse_example("y", "[[NAME:Anna]]")

"""Offline free-text PII redaction for ticket subjects and descriptions.

Pure Python: stdlib ``re``/``unicodedata``/``ipaddress`` plus ``phonenumbers``; no models, no
network. :func:`find` returns typed, non-overlapping spans into the *original* text;
:func:`redact` replaces each span with its placeholder (``<EMAIL>``, ``<PHONE>``, ...);
:func:`redact_batch` is the vectorised entry point of the Spark job's pandas UDF.

Detection is rule based, one detector per kind, each gated by a cheap pre-filter (the text's
words with punctuation blanked, its digit count, a substring), and the regexes start with a
character class so ``re`` can skip ahead; typical ticket text costs tens of microseconds.

* ``EMAIL``: plain addresses (unicode local parts, IDN domains, any case) and obfuscations
  (``jane dot doe at example dot com``, ``jane(at)example(dot)com``, ``jane [at] example [dot] com``,
  ``jane at example.com`` -- not "log in at app.example.com"); the requester's own address.
* ``PHONE``: digit-group candidates (``+``/``00``, spaces, dots, dashes, parentheses, a line break)
  validated with ``phonenumbers.is_valid_number``: the ``Known.country`` region first, then US, GB,
  DE, FR, NL, ES, CA, AU (a national number must carry its trunk 0, NANP ten digits). The
  requester's own number matches in any formatting even when it does not validate.
* ``CARD``: 13-19 digits (4-4-4-4[-x], Amex 4-6-5, contiguous), Luhn-valid, issuer digit 2-6.
* ``IBAN``: spaced, compact or wrapped, any case; per-country length and ISO 13616 mod-97.
* ``IP``: IPv4 (four octets; not versions, CIDR networks, loopback) and IPv6 (``ipaddress``).
* ``URL``: http(s)/www URLs whose query or path carries personal data (``email=``, ``token=``,
  ``/users/<x>``, an address or a phone number); the whole URL goes. Plain URLs stay.
* ``POSTAL_CODE``: only in address context: a cue ("zip code is", "PLZ", "code postal"), a street
  line ("Hauptstraße 5, 10115 Berlin"), ``City, ST 12345``, ``NSW 2000``, GB/CA code formats.
* ``ID``: SSN, UK NINO, Spanish DNI/NIE (check letter), French NIR (key), Dutch BSN (11-check)
  and numbers introduced by keywords (passport, driver's license, tax id, Steuer-ID, ...).
* ``PERSON``: the requester's own first/last name (case-, accent- and umlaut-insensitive, whole
  word, possessives, multi-word and hyphenated surnames; common-word names like "Will" only when
  capitalised) and other names in clear context (``my name is``, honorifics, greetings, sign-offs,
  ``my colleague``, ``contact person:``, mail headers, chat lines, address blocks, ...).

Checksum-failing card-, IBAN- and SSN-shaped strings (and a keyword's number that fails its
checksum) *block* the phone and postal-code detectors, so a number failing Luhn, mod-97 or a
national-ID check is never redacted by accident. Overlapping candidates merge into their union
under the most specific kind (URL > EMAIL > IBAN > CARD > ID > IP > POSTAL_CODE > PHONE > PERSON),
so no fragment of an address or number is left behind ("<PERSON>@example.com" cannot happen).
"""

from __future__ import annotations

import functools
import ipaddress
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata

KINDS = ("EMAIL", "PHONE", "CARD", "IBAN", "IP", "POSTAL_CODE", "PERSON", "URL", "ID")
PLACEHOLDERS = {k: f"<{k}>" for k in KINDS}
PRIORITY = {"URL": 9, "EMAIL": 8, "IBAN": 7, "CARD": 6, "ID": 5, "IP": 4, "POSTAL_CODE": 3, "PHONE": 2, "PERSON": 1}
PHONE_REGIONS = ("US", "GB", "DE", "FR", "NL", "ES", "CA", "AU")


@dataclass(frozen=True)
class Finding:
    """A PII span: half-open ``[start, end)`` into the original text."""

    start: int
    end: int
    kind: str


@dataclass(frozen=True)
class Known:
    """The ticket requester's own identifiers from the joined contact record; any may be None."""

    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    phone: str | None = None
    country: str | None = None  # ISO-3166 alpha-2, default region for phone parsing


# --- validators ----------------------------------------------------------------------------
def luhn_valid(digits: str) -> bool:
    """Luhn (mod 10) check of a digit string; separators (space, dash) are ignored."""
    ds = [c for c in digits if c not in " -"]
    if len(ds) < 2 or not all("0" <= c <= "9" for c in ds):
        return False
    total = 0
    for i, c in enumerate(reversed(ds)):
        d = ord(c) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25,
    "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27,
    "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip
_IBAN_SHAPE = re.compile(r"[A-Z]{2}[0-9]{2}[A-Z0-9]+")


def iban_valid(candidate: str) -> bool:
    """ISO 13616: known country, its exact length, and mod-97 == 1. Spaces and any case allowed."""
    s = "".join(candidate.split()).upper()
    if not _IBAN_SHAPE.fullmatch(s) or IBAN_LENGTHS.get(s[:2]) != len(s):
        return False
    return int("".join(str(int(c, 36)) for c in s[4:] + s[:4])) % 97 == 1


def ssn_valid(candidate: str) -> bool:
    """US SSN ranges: area not 000/666/9xx, group not 00, serial not 0000."""
    d = re.sub(r"[ -]", "", candidate)
    if len(d) != 9 or not d.isdigit():
        return False
    area, group, serial = d[:3], d[3:5], d[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def bsn_valid(candidate: str) -> bool:
    """Dutch BSN 11-check (8 or 9 digits)."""
    d = re.sub(r"[ .-]", "", candidate)
    if not d.isdigit() or len(d) not in (8, 9):
        return False
    d = d.zfill(9)
    if d == "000000000":
        return False
    total = sum(int(c) * w for c, w in zip(d[:8], range(9, 1, -1), strict=True)) - int(d[8])
    return total % 11 == 0


_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def dni_valid(candidate: str) -> bool:
    """Spanish DNI (8 digits + letter) or NIE (X/Y/Z + 7 digits + letter) check letter."""
    s = re.sub(r"[ .-]", "", candidate).upper()
    if len(s) == 9 and s[0] in "XYZ":
        s = str("XYZ".index(s[0])) + s[1:]
    if len(s) != 9 or not s[:8].isdigit() or not s[8].isalpha():
        return False
    return _DNI_LETTERS[int(s[:8]) % 23] == s[8]


def nir_valid(candidate: str) -> bool:
    """French NIR: 13 characters (Corsica 2A/2B allowed) + 2-digit key = 97 - n mod 97."""
    s = re.sub(r"[ .-]", "", candidate).upper()
    if len(s) != 15 or s[0] not in "12":
        return False
    body = s[:13].replace("2A", "19", 1) if s[5:7] == "2A" else s[:13]
    body = body.replace("2B", "18", 1) if s[5:7] == "2B" else body
    if not body.isdigit() or not s[13:].isdigit():
        return False
    return 97 - int(body) % 97 == int(s[13:])


_NINO = re.compile(r"(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]\d{6}[A-D]")


def nino_valid(candidate: str) -> bool:
    """UK National Insurance number format (excluded prefixes, suffix A-D)."""
    return bool(_NINO.fullmatch(re.sub(r"\s", "", candidate).upper()))


# --- character classes ---------------------------------------------------------------------
_RANGES = ((0x41, 0x5B), (0x61, 0x7B), (0xC0, 0x250), (0x370, 0x530), (0x1E00, 0x1F00))
_SPECIAL_FOLD = {"ł": "l", "ø": "o", "đ": "d", "ð": "d", "ħ": "h", "ı": "i", "ŀ": "l", "ŧ": "t", "ß": "ss",
                 "æ": "ae", "œ": "oe", "þ": "th"}  # fmt: skip


def _fold_char(c: str) -> str:
    lo = c.lower()
    if lo in _SPECIAL_FOLD:
        return _SPECIAL_FOLD[lo]
    base = "".join(ch for ch in unicodedata.normalize("NFKD", lo) if not unicodedata.combining(ch))
    return base or lo


def _build_classes() -> tuple[str, dict[str, str], dict[str, str]]:
    """The uppercase-letter class, and per ASCII letter the class of all its accented variants
    (both cases, and uppercase only)."""
    upper: list[str] = []
    eq: dict[str, list[str]] = {chr(c): [chr(c), chr(c).upper()] for c in range(0x61, 0x7B)}
    for lo, hi in _RANGES:
        for cp in range(lo, hi):
            ch = chr(cp)
            if ch.isupper():
                upper.append(ch)
            f = _fold_char(ch)
            if len(f) == 1 and "a" <= f <= "z" and ch not in eq[f]:
                eq[f].append(ch)
    both = {k: "[" + "".join(v) + "]" for k, v in eq.items()}
    up = {k: "[" + "".join(c for c in v if c.isupper()) + "]" for k, v in eq.items()}
    return "[" + "".join(upper) + "]", both, up


_U, _EQ, _EQ_UP = _build_classes()
_L = r"[^\W\d_]"  # any letter
_COMB = "[\u0300-\u036f]*"  # combining marks of decomposed (NFD) text
_HS = r"[ \t\u00a0]"
_DEL_DIGITS = str.maketrans("", "", "0123456789")
_NONDIGIT = re.compile(r"\D")
_NON_ALNUM = re.compile(r"[^A-Za-z0-9]")
# Most patterns start with a character class and check the character *before* it with a
# lookbehind placed after it, so ``re`` can skip ahead with its fast charset prefix scan.


def _trie(words: Iterable[str]) -> str:
    """A regex alternation of literal words as a trie (one branch per first letter, greedy)."""
    root: dict = {}
    for w in words:
        node = root
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict) -> str:
        alts = [re.escape(ch) + emit(sub) for ch, sub in sorted(node.items()) if ch]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        return f"(?:{body})?" if "" in node else body

    return emit(root)


# --- EMAIL ---------------------------------------------------------------------------------
_EMAIL = re.compile(
    r"(?<![\w.%+'-])[\w%+'-]+(?:\.[\w%+'-]+)*@(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+"
    r"(?:[^\W\d_]{2,63}|xn--[a-z0-9-]{2,59})(?![\w-])"
)
_TLDS = sorted(
    "com org net edu gov mil int info biz name pro io co ai app dev me tv us uk de fr nl es au ca eu be ch at it "
    "pl se dk no fi ie pt lu cz sk hu ro gr tr ru jp cn in br mx ar nz za sg hk online shop store site tech "
    "email mail cloud xyz example test local".split(),
    key=len,
    reverse=True,
)
_AT_STOP = (
    "me|us|him|her|them|you|it|is|are|am|was|were|be|been|being|in|on|up|out|off|here|there|online|available|"
    "live|located|based|hosted|look|looking|find|found|sign|signed|log|logged|login|visit|site|page|portal|"
    "stay|staying|arrive|arrived|work|works|working|meet|see|call|reach|contact|email|mail|write|home|office|"
    "anyone|someone|this|that|the|a|an|not|only|also|both|all|one|two|ticket|order|account|check|checked|"
    "download|downloaded|registered|purchased|bought|ordered|published|posted|shown|listed|described|"
    "documented|linked|go|get|got|sent|send|received|waiting|charged|billed|paid|and|or|but|then|now|"
    "do|did|done|started|ends|end|starts|arrives|still|again|issue|problem|error"
)
_AT = (
    r"(?:[ \t]*[\(\[\{<][ \t]*(?:at|@)[ \t]*[\)\]\}>][ \t]*|[ \t]+(?:at)[ \t]+|[ \t]+@[ \t]*|[ \t]*@[ \t]+"
    r"|[ \t]*\\?@\\?[ \t]*)"
)
_DOT = r"(?:[ \t]*[\(\[\{<][ \t]*(?:dot|punkt|point|punto|\.)[ \t]*[\)\]\}>][ \t]*|[ \t]+(?:dot|punkt)[ \t]+|\.)"
_OW = r"[\w%+'-]+"
_OBF_EMAIL = re.compile(
    rf"(?i)(?<![\w.@])(?!(?:{_AT_STOP})\b)(?P<local>{_OW}(?:(?:{_DOT}){_OW})*)(?P<at>{_AT})"
    rf"(?P<domain>(?:{_OW}(?:{_DOT}))+(?:{'|'.join(_TLDS)}))(?![\w/-])"
)
# an address obfuscated with a plain " at " needs a word and a (possibly spelled-out) dot after it;
# the bracketed and spaced forms are gated on their substrings (_OBF_CUE)
_OBF_GATE_AT = re.compile(
    r" at[ \t]+[\w%+'-]+(?:[ \t]*[(\[{<]?[ \t]*(?:dot|punkt|point|punto)\b|[ \t]*[(\[{<][ \t]*\.|\.\w)"
)
_OBF_CUE = ("(at", "[at", "{at", "<at", "(@", "[@", " @", "@ ", "\\@")
_PLAIN_DOT = re.compile(r"[ \t]*\.[ \t]*")
_OBF_DOT = re.compile(r"(?i)dot|punkt|point|punto|[\(\[\{<]")
_LOCAL_SEP = re.compile(r"[._\d+-]")
_HOSTY = frozenset("www app my status docs help support portal login shop store blog news dashboard".split())

# --- URL -----------------------------------------------------------------------------------
_URL = re.compile(r"(?i)\b(?:https?://|www\.)[^\s<>\"'\[\]{}|\\^`]+")
_URL_PERSONAL_PARAM = re.compile(
    r"(?i)[?&;#](?:e-?mail|mail|user|username|user_?name|user_?id|userid|uid|login|name|fname|"
    r"lname|first_?name|last_?name|full_?name|surname|token|access_token|auth|auth_?token|session|session_?id|"
    r"sessionid|sid|phone|tel|mobile|msisdn|id|customer|customer_?id|customerid|cust|cust_?id|cid|account|"
    r"account_?id|acct|contact|contact_?id|member|member_?id|ssn|dob|birthdate|address|addr|zip|postcode|"
    r"key|api_?key|password|pwd|pass|otp|iban|card|person|recipient|guest|samlart|samlresponse|"
    r"samlrequest|relaystate|assertion|id_token|refresh_token|code_verifier)=[^&#\s]+"
)
_URL_PERSONAL_PATH = re.compile(
    r"(?i)/(?:users?|u|profiles?|people|persons?|customers?|members?|accounts?|contacts?|clients?|patients?|"
    r"employees?|staff|@[\w.-]+|~[\w.-]+)(?:/|$)(?=[^/?#\s]|$)|/(?:reset|reset-password|password-reset|"
    r"password|verify|verification|confirm|activate|activation|unsubscribe|invite|invitation|magic|login|"
    r"auth|token|sso)/[\w-]{16,}|@|%40|(?:\+|%2B)\d{8,}"
)
_URL_TRAIL = ".,;:!?'\")]}>"

# --- CARD (13-19 digits) and IBAN; their checksum-failing shapes block the weaker detectors -----
_CARD = re.compile(
    r"\d(?<![\w+.,/-]\d)(?:\d{3}(?:[ -]\d{4}){2,3}(?:[ -]\d{1,4})?|\d{3}[ -]\d{6}[ -]\d{4,5}|\d{12,18})"
    r"(?![\w/]|[.,]\d|-\d)"
)
_CARD_SEP = re.compile(r"[ -]")
_IBAN_SEP_RE = r"(?:[ \u00a0]|[ \t]*\r?\n[ \t]*)"
_IBAN = re.compile(
    rf"[A-Za-z](?<![A-Za-z0-9].)[A-Za-z]\d{{2}}(?:[A-Za-z0-9]{{10,30}}|(?:{_IBAN_SEP_RE}[A-Za-z0-9]{{4}}){{2,7}}"
    rf"(?:{_IBAN_SEP_RE}[A-Za-z0-9]{{1,4}})?)(?![A-Za-z0-9])"
)
_IBAN_SEP = re.compile(_IBAN_SEP_RE)

# --- IP ------------------------------------------------------------------------------------
_IPV4 = re.compile(r"\d(?<![\w.]\d)\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\w]|\.\d|-\w)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?(?![\w:])")
_HEXDIGIT = re.compile(r"[0-9A-Fa-f]")
_VERSION_CUE = re.compile(r"(?i)\b(?:version|ver\.?|v|build|release|firmware|fw|app)[ \t:]*$")

# --- PHONE: optional +, digit groups joined by one separator (space, . - / or a line break),
# parenthesised area codes; no nested quantifiers, so no catastrophic backtracking ----------------
_PSEP = rf"(?:{_HS}?[.\-/\u2013]{_HS}?|{_HS}*\r?\n{_HS}*|{_HS}{{1,2}})"
_PHONE_CAND = re.compile(
    rf"[+(\d](?<![\w+#/.,@-].)(?<!\w[.,].)"
    rf"(?:(?<=\+){_HS}?(?:\({_HS}?\d{{1,5}}{_HS}?\){_HS}?)?\d+|(?<=\(){_HS}?\+?\d{{1,5}}{_HS}?\){_HS}?\d+|(?<=\d)\d*)"
    rf"(?:{_PSEP}\d+|{_HS}?\(\d{{1,5}}\){_HS}?\d+)*(?![\w@]|[.,]\d)"
)
_DIGIT_GROUP = re.compile(r"\d+")
_PHONE_VETO = re.compile(
    r"(?i)(?:\b(?:order|invoice|ticket|case|ref|reference|tracking|sku|item|po|customer|cust|kundennummer|"
    r"bestellnummer|bestellung|rechnung|rechnungsnummer|commande|facture|pedido|factura|bestelling|factuur|"
    r"version|build|iban|account|acct|konto|transaction|txn|receipt|serial|s/n|contract|vertrag|policy|"
    r"claim|parcel|shipment|sendung|colis|envío|zending|auftrag|dossier|expediente)|#)[.:#\s]*(?:is|was)?[ \t:]*$"
)
_DATE_LIKE = re.compile(
    r"(?<!\d)(?:(?:19|20)\d{2}[./-](?:0?[1-9]|1[0-2])[./-](?:0?[1-9]|[12]\d|3[01])"
    r"|(?:0?[1-9]|[12]\d|3[01])[./-](?:0?[1-9]|1[0-2])[./-](?:19|20)\d{2}"
    r"|(?:0?[1-9]|1[0-2])[./-](?:0?[1-9]|[12]\d|3[01])[./-](?:19|20)\d{2})(?!\d)"
)
_ZIP4 = re.compile(r"\d{5}-\d{4}")

# --- ID ------------------------------------------------------------------------------------
_SSN = re.compile(r"\d(?<![\w-]\d)\d{2}-\d{2}-\d{4}(?![\w-])")
_NINO_TEXT = re.compile(
    r"[A-CEGHJ-PR-TW-Z](?<![\w-].)[A-CEGHJ-NPR-TW-Z](?<!BG|GB|NK|KN|TN|NT|ZZ) ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![\w-])"
)
_DNI = re.compile(r"[\dXYZ](?<![\w-].)(?:(?<=\d)\d{7}|(?<=[XYZ])-?\d{7})-?[A-Z](?![\w-])")
_NIR = re.compile(r"[12](?<![\w-].) ?\d{2} ?\d{2} ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}(?![\w-])")
_ID_WORDS = frozenset(
    """ssn social ss# sozialversicherungsnummer bsn burgerservicenummer sofinummer sofi-nummer dni nie nif documento
    número numero nir numéro n° nº sécurité securite sécu insee national ni nino passport passeport pasaporte
    paspoort paspoortnummer reisepass reisepassnummer passnummer driver's drivers driver driving führerschein
    fuhrerschein führerscheinnummer permis carnet rijbewijs rijbewijsnummer tax steuer-id steuerid
    steuer-identifikationsnummer steueridentifikationsnummer steuernummer identifikationsnummer personalausweis
    personalausweisnummer ausweis ausweisnummer ausweisnr carte id identity medicare tfn nhs health
    krankenversicherungsnummer versichertennummer identiteitskaart id-kaart id-nummer documentnummer""".split()
)
_ID_CUE = re.compile(
    r"(?i)(?<!\w)(?:(?P<ssn>ssn|social security(?: number| no\.?| #)?|ss#|sozialversicherungsnummer)"
    r"|(?P<bsn>bsn|burgerservicenummer|sofinummer|sofi-nummer)"
    r"|(?P<dni>dni|nie|nif|documento nacional de identidad|n[uú]mero de identidad)"
    r"|(?P<nir>nir|num[ée]ro de s[ée]curit[ée] sociale|n[°º] (?:de )?s[ée]curit[ée] sociale|s[ée]curit[ée] sociale|"
    r"num[ée]ro de s[ée]cu|num[ée]ro insee|insee)"
    r"|(?P<nino>national insurance(?: number| no\.?)?|ni (?:number|no\.?)|nino)"
    r"|(?P<gen>passport(?: number| no\.?| #)?|passeport|pasaporte|paspoort(?:nummer)?|reisepass(?:nummer)?|"
    r"passnummer|driver'?s licen[cs]e(?: number| no\.?| #)?|driving licen[cs]e(?: number| no\.?)?|"
    r"driver licen[cs]e(?: number)?|f[üu]hrerschein(?:nummer)?|permis de conduire|carnet de conducir|"
    r"rijbewijs(?:nummer)?|tax (?:id|identification number|number|no\.?|file number|code)|"
    r"steuer-?id|steuer-?identifikationsnummer|steueridentifikationsnummer|steuernummer|"
    r"identifikationsnummer|personalausweis(?:nummer)?|ausweis(?:nummer|nr\.?)?|carte d'identit[ée]|"
    r"num[ée]ro fiscal|id card(?: number| no\.?)?|identity card(?: number)?|national id(?: number)?|"
    r"id number|id no\.?|medicare(?: number| no\.?)?|tfn|social insurance number|nhs number|"
    r"health insurance number|krankenversicherungsnummer|versichertennummer|identiteitskaart|"
    r"id-kaart|id-nummer|documentnummer))"
    r"(?:[ \t]*(?:number|no\.?|nr\.?|num\.?|n[°º]\.?|#|:|is|was|ist|lautet|est|es|=|-|\u2013|of|nummer)[ \t]*){0,3}"
    r"[ \t]*"
)
_ID_TOKEN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9]|[ \-./](?=[A-Za-z0-9]*\d)[A-Za-z0-9]){3,30}(?![\w])")

# --- POSTAL_CODE (only in address context) -----------------------------------------------------
_US_STATES = (
    "AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY|NC|ND|"
    "OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY"
)
_GB_PC = r"[A-PR-UWYZ][A-HK-Y]?\d[A-HJKPSTUW\d]?[ \t]?\d[ABD-HJLNP-UW-Z]{2}"
_CA_PC = r"[ABCEGHJ-NPRSTVXY]\d[ABCEGHJ-NPRSTV-Z][ \t-]?\d[ABCEGHJ-NPRSTV-Z]\d"
_NL_PC = r"[1-9]\d{3}[ \t]?(?!SA|SD|SS)[A-Z]{2}"
_IE_PC = r"(?:[AC-FHKNPRTV-Y]\d{2}|D6W)[ \t]?[0-9AC-FHKNPRTV-Y]{4}"  # Eircode, with its cue only
_ANY_PC = rf"(?:\d{{5}}(?:-\d{{4}})?|{_NL_PC}|{_GB_PC}|{_CA_PC}|{_IE_PC}|\d{{4}})"
_CITIES = (
    "Berlin|Hamburg|München|Munich|Köln|Cologne|Frankfurt am Main|Frankfurt|Stuttgart|Düsseldorf|Dresden|"
    "Leipzig|Hannover|Nürnberg|Bremen|Essen|Dortmund|Bonn|Mannheim|Paris|Lyon|Marseille|Bordeaux|Lille|Nantes|"
    "Toulouse|Nice|Strasbourg|Montpellier|Rennes|Madrid|Barcelona|Valencia|Sevilla|Seville|Bilbao|Málaga|"
    "Malaga|Zaragoza|Palma|Granada|Amsterdam|Rotterdam|Utrecht|Den Haag|'s-Gravenhage|Eindhoven|Groningen|"
    "Haarlem|Leiden|Delft|Sydney|Melbourne|Brisbane|Perth|Adelaide|Darwin|Canberra|Hobart|Wien|Vienna|Zürich|"
    "Bruxelles|Brussels|Antwerpen|Luxembourg|Genève|Basel|Bern"
)
_POSTAL_WORDS = frozenset(
    "zip zipcode zip-code postal post postcode plz postleitzahl code c código codigo postnummer eircode".split()
)
_POSTAL_CUE = re.compile(
    r"(?i:(?<!\w)(?:zip(?:[ -]?code)?|postal[ -]?code|post[ -]?code|postcode|plz|postleitzahl|code postal|"
    r"c\.p\.|c[oó]digo postal|postnummer|eircode))"
    r"(?i:[ \t]*(?:[:#=\-\u2013][ \t]*|(?:is|was|ist|est|es|now|changed to|of|to|lautet|n[°º])[ \t]+){0,3})"
    rf"(?P<pc>(?i:{_ANY_PC}))(?![\w-])"
)
_POSTAL_US = re.compile(rf",[ \t]*(?:{_US_STATES})[ \t]+(\d{{5}}(?:-\d{{4}})?)(?![\w-])")
_POSTAL_AU = re.compile(r"(?:NSW|VIC|QLD|WA|SA|TAS|ACT|NT)[ \t]+(\d{4})(?![\w-])")
_AU_WORDS = frozenset("nsw vic qld wa sa tas act nt".split())
_CITY_WORDS = frozenset(w for c in _CITIES.lower().split("|") for w in c.split()[:1])
_POSTAL_GB = re.compile(r"[A-PR-UWYZ](?<![\w-].)[A-HK-Y]?\d[A-HJKPSTUW\d]?[ \t]?\d[ABD-HJLNP-UW-Z]{2}(?![\w-])")
_POSTAL_CA = re.compile(r"[ABCEGHJ-NPRSTVXY](?<![\w-].)\d[ABCEGHJ-NPRSTV-Z][ \t-]?\d[ABCEGHJ-NPRSTV-Z]\d(?![\w-])")
_POSTAL_CITY = re.compile(
    rf"(\d(?<![\w-]\d)(?:\d{{3,4}}|\d{{3}}[ \t]?(?!SA|SD|SS)[A-Z]{{2}}))[ \t]+(?:{_CITIES})(?!\w)"
)
_POSTAL_LINE = re.compile(rf"(?:,|\r?\n)[ \t]*({_NL_PC}|\d{{5}}|\d{{4}})[ \t]+{_U}{_L}+")
_POSTAL_PRE = re.compile(
    rf"(?:{_U}{_L}+\.?|str\.|straße|strasse|weg|laan|straat|plein|gracht|kade|calle|rue|avenue|road|street)"
    rf"[ \t]+\d{{1,4}}[a-zA-Z]?[ \t]*$|\d{{1,4}}[a-zA-Z]?[ \t]*$|(?:rue|avenue|boulevard|bd|place|chemin|allée|quai|"
    rf"impasse|calle|avenida|paseo|plaza|street|road|lane|avenue)\b[^\n,]*$"
)
_UPPER_DIGIT = re.compile(r"[A-Z]\d")
_WS = re.compile(r"\s")

# --- PERSON (context) ----------------------------------------------------------------------------
_PART = r"(?:van|von|de|der|den|del|della|di|da|du|le|la|ter|ten|dos|das|do|y|zu|af|bin|ibn|al|el|van't|'t)"
_PART_RE = re.compile(_PART)
_HON_WORD = r"(?:Mr|Mrs|Ms|Mx|Dr|Prof|Sr|Sra|Srta|Herr|Frau|Mme|Mlle|Mevr|Dhr)\.?(?!\w)"
_TOK = rf"(?!{_HON_WORD})(?:{_U}\.|{_U}{_L}*(?:['’]{_L}+)?(?:-{_U}{_L}*)*)"
_NAME = rf"(?:{_PART}[ \t]+)*{_TOK}(?:[ \t]+(?:{_PART}[ \t]+)*{_TOK}){{0,2}}"
_NAME2 = rf"{_NAME}(?:[ \t]*\r?\n[ \t]*{_TOK}(?:[ \t]+{_TOK})?)?"
_END = (  # what may follow a signed name: end of line/text, punctuation, "from Acme", "and ..."
    r"(?=[ \t]*(?:\r?\n|$|[,.!;:)(<\[|/]|[-\u2013\u2014](?:\s|$)"
    r"|\s(?:from|at|of|von|de|van|aus|with|and|und|et|y|en)\b))"
)
_WEAK_END = (
    r"(?=[ \t]*(?:$|[\r\n,.!?;:)(\-\u2013\u2014&]|\s(?:from|and|here|speaking|calling|again|with|at|of|in|on|"
    r"writing|for|y|und|et|en|aus|uit|de|del|van|von|hier|ici|aquí|again)\b))"
)
_GREET_END = r"(?=[ \t]*(?:[,!:;.]|\r?\n|$|\s(?:and|und|et|y|en|from)\b))"
_HON = (
    r"(?:Mr|Mrs|Ms|Mx|Miss|Dr|Prof|Herr|Frau|Hr|Fr|Mme|Mlle|Mevr|Dhr|Mw|Sr|Sra|Srta|Dña|Sir|Dame|Lady|Lord|"
    r"M(?=\.)|(?i:monsieur|madame|mademoiselle|señor|señora|señorita|meneer|mevrouw|fräulein))\.?"
)
_HON_RE = re.compile(
    r"(?:Mrs|Mr|Ms|Mx|Miss|Dr|Prof|Herr|Frau|Hr|Fr|Mme|Mlle|Mevr|Dhr|Mw|Sr|Sra|Srta|Dña|Sir|Dame|Lady|Lord|M(?=\.)|"
    r"Monsieur|Madame|Mademoiselle|Señor|Señora|Señorita|Meneer|Mevrouw|Fräulein)"
    rf"\.?[ \t]+(?:(?:Dr|Prof)\.?[ \t]+)?({_NAME})"
)

# cue phrases, matched on the lower-cased text through one trie regex, then a per-kind follower
_SIGNOFF = """thanks|thanks again|thanks a lot|thanks in advance|thanks so much|thank you|thank you very much|
thank you so much|thank you in advance|many thanks|thx|cheers|best regards|kind regards|warm regards|
warmest regards|kindest regards|regards|best wishes|all the best|best|sincerely|yours sincerely|yours truly|
yours faithfully|respectfully|cordially|take care|greetings|viele grüße|viele grüsse|liebe grüße|liebe grüsse|
beste grüße|freundliche grüße|mit freundlichen grüßen|mit freundlichen grüssen|mfg|lg|vg|grüße|grüsse|gruß|gruss|
danke|danke schön|danke sehr|vielen dank|bien cordialement|cordialement|merci|merci beaucoup|merci d'avance|
bien à vous|sincères salutations|salutations|amitiés|bonne journée|met vriendelijke groet|
met vriendelijke groeten|vriendelijke groet|vriendelijke groeten|hartelijke groet|hartelijke groeten|groet|
groeten|groetjes|mvg|bedankt|dank je|dank je wel|dank u|dank u wel|saludos|saludos cordiales|un saludo|
atentamente|muchas gracias|gracias|cordialmente|un abrazo"""
_GREET = """dear|hi|hello|hey|hallo|moin|servus|liebe|lieber|sehr geehrte|sehr geehrter|geachte|beste|hoi|
bonjour|bonsoir|salut|cher|chère|hola|buenos días|buenas tardes|buenas|estimado|estimada|querido|querida|
good morning|good afternoon|good evening"""
_RELATIVES = (
    "colleague coworker co-worker husband wife partner son daughter mother father mum mom dad boss manager assistant "
    "friend brother sister neighbour neighbor landlord tenant accountant lawyer"
)
# people named by their role: "our CEO, Michael Tran", "the technician, Luis", "your agent Sarah"
_ROLE_NOUNS = (
    "ceo cto cfo coo founder owner director manager boss assistant accountant lawyer technician engineer driver "
    "courier agent rep representative contact admin administrator colleague consultant supervisor"
)
# weak cues ("this is X") need X to end there, or to go on with a surname, "from ...", "and ..."
_WEAK = """this is|it's|it is|i am|i'm|here is|ich bin|hier ist|je suis|c'est|soy|ik ben"""
_INTRO = """my name is|my name's|my name was|name is|call me|speaking to|
speaking with|spoke to|spoke with|spoken to|spoken with|talked to|talked with|talk to|talk with|speak to|
speak with|ask for|asked for|please contact|contact person|reach out to|cc|attn|attention|c/o|care of|
on behalf of|account holder|cardholder|card holder|name on the card|name on the account|in the name of|
your colleague|your agent|your technician|your driver|your courier|your rep|your representative|your employee|
deliver to|ship to|send it to|mein name ist|ich heiße|hier spricht|mein kollege|meine kollegin|
mein mann|meine frau|mein sohn|meine tochter|mein vater|mein bruder|mein partner|mein chef|mein nachbar|
mein steuerberater|meine mutter|meine schwester|meine partnerin|meine chefin|meine nachbarin|ansprechpartner|
ansprechpartnerin|z.hd.|z. hd.|z.hd|zu händen|zu händen von|im auftrag von|kontoinhaber|kontoinhaberin|
karteninhaber|karteninhaberin|je m'appelle|mon nom est|mon collègue|ma collègue|mon mari|ma femme|
mon fils|ma fille|mon père|ma mère|mon frère|ma sœur|ma soeur|mon voisin|ma voisine|mon comptable|ma comptable|
mon associé|ma associée|interlocuteur|interlocutrice|à l'attention de|de la part de|me llamo|mi nombre es|
mi compañero|mi compañera|mi marido|mi esposa|mi mujer|mi hijo|mi hija|mi padre|mi madre|mi hermano|
mi hermana|mi vecino|mi vecina|mi socio|mi socia|mi jefe|mi jefa|persona de contacto|a la atención de|
de parte de|mijn naam is|ik heet|mijn collega|mijn man|mijn vrouw|mijn vader|mijn moeder|mijn broer|
mijn zus|mijn buurman|mijn buurvrouw|mijn partner|mijn baas|contactpersoon|t.a.v.|t.a.v|t.n.v.|t.n.v|
ter attentie van|namens|rekeninghouder|name to|beneficiary|payee|account name|in favour of|in favor of|
begünstigter|zugunsten von|bénéficiaire|au nom de|beneficiario|a nombre de|begunstigde"""
_FIELD = """name|full name|first name|last name|surname|customer name|contact|contact name|recipient|addressee|
signed|agent|technician|courier|driver|account holder|cardholder|deliver to|ship to|attn|nom|nom complet|prénom|
titulaire|destinataire|nombre|nombre completo|apellido|apellidos|titular|destinatario|naam|voornaam|achternaam|
ontvanger|vorname|nachname|empfänger|ansprechpartner|ansprechpartnerin|contactpersoon|persona de contacto"""
_HON_CI = "monsieur|madame|mademoiselle|señor|señora|señorita|meneer|mevrouw|fräulein"


def _phrases(spec: str) -> list[str]:
    return [p.strip() for p in spec.replace("\n", "").split("|") if p.strip()]


_CUE_KINDS: dict[str, list[str]] = {}
for _kind, _spec in (
    ("sig", _SIGNOFF), ("greet", _GREET), ("intro", _INTRO), ("weak", _WEAK), ("field", _FIELD), ("hon", _HON_CI)
):  # fmt: skip
    for _p in _phrases(_spec):
        _CUE_KINDS.setdefault(_p, []).append(_kind)
for _r in _RELATIVES.split():
    _CUE_KINDS.setdefault(f"my {_r}", []).append("intro")
_CUE_KINDS.setdefault("my business partner", []).append("intro")
for _r in _ROLE_NOUNS.split():
    for _det in ("my", "our", "your", "the"):
        if "intro" not in _CUE_KINDS.get(f"{_det} {_r}", []):
            _CUE_KINDS.setdefault(f"{_det} {_r}", []).append("intro")
for _p in list(_CUE_KINDS):
    if "'" in _p:
        _CUE_KINDS.setdefault(_p.replace("'", "’"), []).extend(_CUE_KINDS[_p])
_CUES = re.compile(_trie(_CUE_KINDS))
# texts are split into words (punctuation -> space) once; a detector whose cue words are absent is skipped
_PUNCT_CHARS = ',.!?;:()[]{}<>"/\\|*+=&'  # ASCII only: the words are cut from UTF-8 bytes
_PUNCT = str.maketrans({c: " " for c in _PUNCT_CHARS})


def _first_words(phrases: Iterable[str]) -> frozenset[str]:
    return frozenset(p.translate(_PUNCT).split()[0] for p in phrases if p.translate(_PUNCT).split())


_CUE_FIRST = _first_words(_CUE_KINDS)
_PUNCT_BYTES = bytes.maketrans(_PUNCT_CHARS.encode(), b" " * len(_PUNCT_CHARS))
# per first word: the second words of its multi-word phrases, or None when it is a phrase alone
_CUE_NEXT: dict[str, frozenset[str] | None] = {}
for _p in _CUE_KINDS:
    _ws = _p.translate(_PUNCT).split()
    if not _ws:
        continue
    if len(_ws) == 1 or _CUE_NEXT.get(_ws[0], frozenset()) is None:
        _CUE_NEXT[_ws[0]] = None
    else:
        _CUE_NEXT[_ws[0]] = _CUE_NEXT.get(_ws[0], frozenset()) | {_ws[1]}  # type: ignore[operator]
_FOLLOW = {
    "sig": re.compile(rf"[ \t]*[,!.:;\-\u2013\u2014]*[ \t]*(?:\r?\n[ \t]*){{0,2}}({_NAME2}){_END}"),
    "greet": re.compile(rf"[ \t,]+(?:{_HON}[ \t]+)?({_NAME}){_GREET_END}"),
    "intro": re.compile(rf"(?:[ \t]*[:,(\-\u2013][ \t]*|[ \t]+)(?:{_HON}[ \t]+)?({_NAME})"),
    "weak": re.compile(rf"[ \t]+(?:{_HON}[ \t]+)?({_NAME}){_WEAK_END}"),
    "field": re.compile(rf"[ \t]*:[ \t]*(?:\r?\n[ \t]*)?(?:{_HON}[ \t]+)?({_NAME})"),
    "hon": re.compile(rf"\.?[ \t]+(?:(?:Dr|Prof)\.?[ \t]+)?({_NAME})"),
}
_ADDR_HEAD = (
    r"(?i:(?:billing|shipping|delivery|postal|mailing|home|invoice|correspondence|new|old)[ \t]+address|address|"
    r"lieferadresse|rechnungsadresse|anschrift|lieferanschrift|rechnungsanschrift|adresse(?: de (?:livraison|"
    r"facturation))?|direcci[oó]n(?: de (?:env[ií]o|facturaci[oó]n))?|afleveradres|factuuradres|bezorgadres|"
    r"adres|ship to|deliver to|send to)"
)
_HEADER = r"from|to|cc|von|an|de|à|para|aan|van|sender|absender|expéditeur|remitente|afzender|reply-to"
_LINE_COLON = re.compile(
    rf"(?im:^[ \t]*(?:{_HEADER})[ \t]*:[ \t]*)(?P<head>{_NAME})"
    rf"|(?m:^[ \t]*\[?\d{{1,2}}:\d{{2}}(?::\d{{2}})?\]?[ \t]+(?:-[ \t]+)?)(?P<chat>{_NAME})[ \t]*:"
)
_LINE_BLOCK = re.compile(
    rf"(?m:^[ \t]*){_ADDR_HEAD}[ \t]*:?[ \t]*\r?\n[ \t]*(?P<addr>{_NAME})(?=[ \t]*(?:\r?\n|$|,))"
    rf"|(?m:^[ \t]*)(?P<blk>{_NAME})[ \t]*\r?\n[ \t]*(?=\d{{1,5}}[a-zA-Z]?,?[ \t]+{_U})"
)
# "Tom here", "Dan from IT here", "Emma hier": a name opening a sentence, then "here"
_HERE_WORDS = frozenset("here hier ici aquí".split())
_NAME_HERE = re.compile(
    rf"[ \t]*({_TOK}(?:[ \t]+{_TOK})?)(?:[ \t]+(?:from|of|at|von|de|van)[ \t]+[^\n,.!?]{{1,30}}?)?[ \t]+"
)
_STOP = frozenset(
    """
the this that these those it its i we you he she they me us him her them my our your his their a an in on at to
for of and or but not no yes ok okay please hi hello hey dear thanks thank sorry also just still again here there
now today tomorrow yesterday tonight soon asap all everyone everybody anyone someone nobody team teams support
customer customers client service services sales billing accounts account admin administrator manager management
department help helpdesk desk office group inc ltd gmbh llc bv b.v. sa sl co company shop store plc ag kg se
premium pro plus basic enterprise business starter gold silver platinum free trial app apps iphone ipad android
windows mac macos linux chrome safari firefox excel outlook gmail pdf csv api sdk url ui ux ios
monday tuesday wednesday thursday friday saturday sunday january february march april may june july august
september october november december montag dienstag mittwoch donnerstag freitag samstag sonntag januar februar
märz mai juni juli oktober dezember lundi mardi mercredi jeudi vendredi samedi dimanche janvier février mars avril
juin juillet août septembre octobre novembre décembre lunes martes miércoles jueves viernes sábado domingo enero
febrero marzo abril mayo junio julio agosto septiembre octubre noviembre diciembre maandag dinsdag woensdag
donderdag vrijdag zaterdag zondag januari februari maart juni juli augustus
english german french dutch spanish american british canadian australian european deutsch français español
nederlands irish scottish welsh italian polish
urgent important sent from regards best kind warm order orders invoice invoices ticket tickets refund refunds
delivery re fw fwd aw wg tr subject mobile phone email e-mail tel fax sir madam madame monsieur sirs gentlemen
ladies folks guys new old happy glad writing trying unable not sure good great fine interested back done
available confused frustrated waiting locked very really so too going looking calling contacting following
regarding concerning about with without when where what which who why how if as is are was were be been being
have has had do does did will would should could can may might must shall
gdpr dsgvo rgpd avg vat iban bic swift ssn id ceo cto cfo coo it hr eu us uk usa ups dhl fedex gls dpd tnt
senior junior head lead director officer buyer engineer developer assistant consultant specialist coordinator
founder owner partner marketing success operations finance accounting purchasing procurement logistics legal
compliance privacy data protection security engineering product design hq headquarters
street road avenue lane drive way straße strasse rue calle laan straat
last first agent visitor operator advisor bot damen herren mesdames messieurs señores world
actually click right over sign details detail more see look everything nothing something link links attached
enclosed below above same anybody somebody info information problem issue question update note
unacceptable ridiculous outrageous terrible awful disappointed disappointing furious angry upset
mr mrs ms mx dr prof sr sra srta herr frau mme mlle mevr dhr
kunde kundin kundennummer mitglied grüße gruß grüsse dank vielen herzliche freundlichen
client cliente klant
acme contoso example
""".split()
)
_ROLES = frozenset("agent visitor operator advisor bot rep representative".split())
_PLACES = frozenset(
    w.lower()
    for w in _CITIES.split("|")
    + "London Manchester Leeds Bristol Edinburgh Cardiff Glasgow Toronto Montreal Montréal Vancouver Calgary "
    "Ottawa Boston Austin Denver Seattle Chicago Portland Newark Miami Brooklyn Dublin Oslo Stockholm "
    "Copenhagen Warsaw Tokyo Rome Milan NSW VIC QLD TAS".split()
)
_NONSPACE = re.compile(r"\S+")


def _span_trim(text: str, s: int, e: int) -> tuple[int, int] | None:
    """Trim stop-word tokens off a context-name match; None when nothing name-like remains."""
    seg = text[s:e]
    toks = [(m.start() + s, m.end() + s, m.group()) for m in _NONSPACE.finditer(seg)]
    # a second line (sign-off) is kept only for a single-token first line
    if toks and "\n" in seg:
        nl = s + seg.index("\n")
        first = [t for t in toks if t[0] < nl]
        second = [t for t in toks if t[0] > nl]
        if len(first) != 1 or any(t[2].lower().strip(".") in _STOP for t in second):
            toks = first
    while toks and (toks[-1][2].lower().strip(".,") in _STOP or _PART_RE.fullmatch(toks[-1][2])):
        toks.pop()
    while toks and toks[0][2].lower() in _ROLES:
        toks.pop(0)
    if not toks:
        return None
    if any(t[2].lower().strip(".") in _STOP for t in toks):
        # a stop word inside the name ("Anna from Support") cuts the name there
        cut = next(i for i, t in enumerate(toks) if t[2].lower().strip(".") in _STOP)
        toks = toks[:cut]
        while toks and _PART_RE.fullmatch(toks[-1][2]):
            toks.pop()
        if not toks:
            return None
    if len(toks) == 1:
        w = toks[0][2]
        if w.endswith(".") or (w.isupper() and len(w) <= 3):  # a lone initial or an acronym
            return None
    if toks[0][2].lower() in _PLACES:
        return None
    return toks[0][0], toks[-1][1]


# --- known (requester) identifiers ---------------------------------------------------------
_COMMON_WORD_NAMES = frozenset(
    """
will may mark grant bill rose june april august summer dawn hope joy faith grace art pat frank drew chase hunter
miles max guy rich sky penny ruby amber olive jade iris lily daisy holly ivy carol don young long white brown
black green king page bell hill wood stone baker cook little short best love price cash sharp petit grand
golden march victory justice honor star sunny river rain storm ash heath reed lane parker mason
""".split()
)
_PARTICLES = frozenset("van von de der den del della di da du le la ter ten dos das do y zu af bin ibn al el".split())
_UMLAUT = {"ä": "a", "ö": "o", "ü": "u"}
_SEP_PIECE = r"[\s\-\u2010\u2011\u2013]+"


def _name_pieces(name: str) -> list[tuple[str, str | None]]:
    """Regex pieces matching ``name`` accent-, umlaut- and case-insensitively; for a plain letter
    the piece's ASCII base letter is given too (to build a charset-first pattern)."""
    s = unicodedata.normalize("NFC", name.strip())
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(s):
        ch = s[i]
        lo = ch.lower()
        two = s[i : i + 2].lower()
        if two in ("ae", "oe", "ue"):
            uml = "äöü"["aou".index(two[0])]
            out.append((f"(?:{_EQ[two[0]]}{_EQ['e']}|[{uml}{uml.upper()}])", None))
            i += 2
            continue
        if two == "ss":
            out.append(("(?:[sS][sS]|ß)", None))
            i += 2
            continue
        i += 1
        if lo in _UMLAUT:
            out.append((f"(?:{_EQ[_UMLAUT[lo]]}{_COMB}[eE]?)", None))
        elif lo == "ß":
            out.append(("(?:ß|[sS][sS]?)", None))
        elif ch in "'’‘ʼ`´":
            out.append(("['’‘ʼ`´]?", None))
        elif ch.isspace() or ch in "-\u2010\u2011\u2013":
            if not out or out[-1][0] != _SEP_PIECE:
                out.append((_SEP_PIECE, None))
        elif ch == ".":
            out.append((r"\.?", None))
        else:
            f = _fold_char(ch)
            if len(f) == 1 and f in _EQ:
                out.append((_EQ[f] + _COMB, f))
            elif len(f) == 2 and all(c in _EQ for c in f):  # æ, œ
                out.append((f"(?:{re.escape(ch)}|{_EQ[f[0]]}{_EQ[f[1]]})", None))
            else:
                out.append((re.escape(ch), None))
    return out


def _word_pattern(name: str, capital_only: bool) -> str:
    pieces = _name_pieces(name)
    if not pieces:
        return ""
    head, base = pieces[0]
    rest = "".join(p for p, _ in pieces[1:]) + r"(?!\w)"
    if base is not None:  # charset first, then "not inside a word" checked on the character before it
        cls = _EQ_UP[base] if capital_only else _EQ[base]
        return rf"{cls}(?<![\w'’].){_COMB}{rest}"
    lead = rf"(?={_U})" if capital_only else ""
    return rf"(?<![\w'’]){lead}{head}{rest}"


def _ascii_key(name: str) -> str:
    """The longest lower-case ASCII prefix any spelling of ``name`` in an ASCII text starts with
    (accents folded; stops at umlauts, ß, ae/oe/ue, apostrophes and separators)."""
    key = []
    s = unicodedata.normalize("NFC", name)
    for i, ch in enumerate(s):
        lo = ch.lower()
        if lo in _UMLAUT or lo in "ß'’‘ʼ`´" or s[i : i + 2].lower() in ("ae", "oe", "ue", "ss"):
            break
        f = _fold_char(ch)
        if not (len(f) == 1 and "a" <= f <= "z"):
            break
        key.append(f)
    return "".join(key)


@functools.lru_cache(maxsize=16384)
def _name_patterns(name: str) -> tuple[tuple[re.Pattern[str], str], ...]:
    """Whole-word matchers for a requester's first or last name and, for multi-part names, its
    parts ("García Márquez" -> "García", "Márquez"; "van der Berg" -> "Berg", capitalised only),
    each with its ASCII prefix key ("" when too short to narrow the search)."""
    name = " ".join(name.split())
    if len(name.replace(".", "").replace(" ", "")) < 2:
        return ()
    pairs = [(_word_pattern(name, name.lower() in _COMMON_WORD_NAMES), _ascii_key(name))]
    parts = [p for p in re.split(_SEP_PIECE, name) if p]
    if len(parts) > 1:
        pairs += [(_word_pattern(p, True), _ascii_key(p)) for p in parts if p.lower() not in _PARTICLES and len(p) >= 3]
    return tuple((re.compile(p), k if len(k) >= 2 else "") for p, k in pairs if p)


@functools.lru_cache(maxsize=65536)
def _phone_key(phone: str, country: str | None) -> str | None:
    """National significant digits of the requester's phone, for digit-string comparison: the
    country calling code and the trunk 0 dropped (no full parse: this runs once per contact)."""
    raw = phone.strip()
    digits = _NONDIGIT.sub("", raw)
    if raw.startswith("+") or raw.startswith("00"):
        d = digits[2:] if raw.startswith("00") else digits
        for n in (1, 2, 3):
            if int(d[:n] or 0) in COUNTRY_CODE_TO_REGION_CODE:
                d = d[n:]
                break
        nsn = d.lstrip("0")  # "+44 (0)20 ..."
    else:
        nsn = digits.lstrip("0")
        if len(nsn) == 11 and nsn[0] == "1" and (country or "US") in ("US", "CA"):
            nsn = nsn[1:]
    return nsn if len(nsn) >= 6 else None


# --- phone validation ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _trunk(region: str) -> str | None:
    md = PhoneMetadata.metadata_for_region(region)
    return md.national_prefix if md is not None else None


@functools.lru_cache(maxsize=65536)
def _phone_valid(raw: str, digits: str, intl: bool, country: str | None) -> bool:
    """``phonenumbers.is_valid_number`` for an international number, else for the first region
    (the requester's country, then PHONE_REGIONS) whose national format the digits can be in."""
    if intl:
        try:
            return phonenumbers.is_valid_number(phonenumbers.parse("+" + digits[2:] if raw.startswith("00") else raw))
        except phonenumbers.NumberParseException:
            return False
    regions = [country] if country else []
    regions += [r for r in PHONE_REGIONS if r != country]
    for region in regions:
        if region in ("US", "CA"):
            if not ((len(digits) == 10 and digits[0] in "23456789") or (len(digits) == 11 and digits[0] == "1")):
                continue
        else:
            trunk = _trunk(region)
            if trunk and not digits.startswith(trunk):
                continue  # "4829130" is no German number: national numbers carry the trunk 0
            if not trunk and digits[0] == "0" and region != "IT":
                continue
        try:
            if phonenumbers.is_valid_number(phonenumbers.parse(raw, region)):
                return True
        except phonenumbers.NumberParseException:
            continue
    return False


# --- the detectors ------------------------------------------------------------------------------
_Cand = tuple[int, int, str]
_Span = tuple[int, int]


def _overlaps(spans: list[_Span], s: int, e: int) -> bool:
    return any(a < e and s < b for a, b in spans)


def _emails(text: str, low: str, words: set[str], out: list[_Cand]) -> None:
    at = text.find("@")
    while at >= 0:  # walk back from each "@" to the start of its local part, then match there
        j = at
        while j and (text[j - 1].isalnum() or text[j - 1] in "._%+'-"):
            j -= 1
        while j < at and text[j] == ".":
            j += 1
        m = _EMAIL.match(text, j) if j < at else None
        if m:
            out.append((m.start(), m.end(), "EMAIL"))
        at = text.find("@", m.end() if m else at + 1)
    # "(at)", "[at]", " at ", " @ " all leave an "at" or "@" word once punctuation is blanked
    if not ("at" in words or "@" in words):
        return
    if not (any(c in low for c in _OBF_CUE) or _OBF_GATE_AT.search(low)):
        return
    for m in _OBF_EMAIL.finditer(text):
        at, local, domain = m.group("at"), m.group("local"), m.group("domain")
        obf_at = at.strip().lower() not in ("at", "@")
        obf_dot = bool(_OBF_DOT.search(domain) or _OBF_DOT.search(local))
        if at == "@" and not obf_dot:
            continue  # a plain address; the plain rule has it
        if not obf_at and not obf_dot:
            # "jane at example.com": single-word locals only for short, non-host-like domains
            labels = _PLAIN_DOT.split(domain)
            if not _LOCAL_SEP.search(local) and (len(labels) > 3 or labels[0].lower() in _HOSTY):
                continue
        out.append((m.start(), m.end(), "EMAIL"))


def _known_email(text: str, low: str, email: str, out: list[_Cand]) -> None:
    key = email.strip().lower()
    if len(key) < 3 or "@" not in key:
        return
    i = low.find(key)
    while i >= 0:
        j = i + len(key)
        if (i == 0 or not (low[i - 1].isalnum() or low[i - 1] in "._%+-")) and (j == len(low) or not low[j].isalnum()):
            out.append((i, j, "EMAIL"))
        i = low.find(key, j)


def _urls(text: str, out: list[_Cand], plain: list[_Span]) -> None:
    for m in _URL.finditer(text):
        s, e = m.span()
        while e > s and text[e - 1] in _URL_TRAIL:
            if text[e - 1] == ")" and text[s:e].count("(") >= text[s:e].count(")"):
                break
            e -= 1
        url = text[s:e]
        rest = url.split("://", 1)[-1]
        path = rest[rest.find("/") :] if "/" in rest else ""
        if "%" in url:
            url = unquote(url)
        if "@" in url or _URL_PERSONAL_PARAM.search(url) or _URL_PERSONAL_PATH.search(path):
            out.append((s, e, "URL"))
        else:
            plain.append((s, e))


def _cards_ibans(text: str, out: list[_Cand], blocked: list[_Span]) -> None:
    ibanish: list[_Span] = []
    for m in _IBAN.finditer(text):
        raw = m.group()
        if raw[:2].upper() not in IBAN_LENGTHS:
            continue
        parts = _IBAN_SEP.split(raw)
        seps = _IBAN_SEP.findall(raw)
        found = False
        for k in range(len(parts), 0, -1):  # longest first: trailing words may have been swallowed
            cand = "".join(parts[:k])
            if len(cand) < 15:
                break
            if iban_valid(cand):
                out.append((m.start(), m.start() + len(cand) + sum(map(len, seps[: k - 1])), "IBAN"))
                found = True
                break
        while len(parts) > 1 and parts[-1].isalpha():
            parts.pop()
        span = (m.start(), m.start() + len("".join(parts)) + sum(map(len, seps[: len(parts) - 1])))
        ibanish.append(span)
        if not found:
            blocked.append(span)
    for m in _CARD.finditer(text):
        if ibanish and _overlaps(ibanish, m.start(), m.end()):
            continue  # digits inside an IBAN-shaped string are never a card
        raw = m.group()
        groups = _CARD_SEP.split(raw)
        ok_end = None
        # the whole run, or without a trailing short group (a CVV or an expiry written after it)
        for k in (len(groups), len(groups) - 1):
            if k < 1:
                continue
            cand = "".join(groups[:k])
            if 13 <= len(cand) <= 19 and cand[0] in "23456" and len(set(cand)) > 1 and luhn_valid(cand):
                ok_end = m.start() + len(" ".join(groups[:k]))
                break
        if ok_end is not None:
            out.append((m.start(), ok_end, "CARD"))
        elif not (raw.startswith("00") and raw.isdigit()):
            blocked.append(m.span())


def _ips(text: str, out: list[_Cand]) -> None:
    if "." in text:
        for m in _IPV4.finditer(text):
            octets = m.group().split(".")
            if any(int(o) > 255 or (len(o) > 1 and o[0] == "0") for o in octets):
                continue
            if all(len(o) == 1 for o in octets) or text.startswith("/", m.end()) or octets[0] in ("0", "127", "255"):
                continue  # a version-like "3.2.0.1", a CIDR network ("10.0.0.0/8"), loopback or a netmask
            if _VERSION_CUE.search(text, max(0, m.start() - 12), m.start()):
                continue
            out.append((m.start(), m.end(), "IP"))
    if "::" in text or text.count(":") >= 7:
        for m in _IPV6.finditer(text):
            s = m.group()
            if s.count(":") < 2 or s in ("::", "::1") or not _HEXDIGIT.search(s):
                continue
            try:
                ipaddress.IPv6Address(s)
            except ValueError:
                continue
            out.append((m.start(), m.end(), "IP"))


_PHONE_GROUPS = re.compile(r"\d+")


def _groups_plausible(sub: str) -> bool:
    """Digit groups of a phone number: a one-digit group only first, or second after a country
    code ("+33 6 12 34 56 78", "+44 (0)20 ..."); rules out decimals and counts ("5973.6")."""
    groups = _PHONE_GROUPS.findall(sub)
    intl = sub.lstrip("( ").startswith("+") or sub.startswith("00")
    return all(len(g) > 1 for g in groups[2 if intl else 1 :])


def _phones(text: str, known_key: str | None, country: str | None, out: list[_Cand], blocked: list[_Span]) -> None:
    for m in _PHONE_CAND.finditer(text):
        raw = m.group()
        all_digits = _NONDIGIT.sub("", raw)
        if len(all_digits) < 6:
            continue
        s0 = m.start()
        # attempts: the first line of a wrapped candidate, the whole, then with trailing groups dropped
        ends: list[int] = []
        nl = raw.find("\n")
        if nl > 0:
            ends.append(len(raw[:nl].rstrip(" \t\r\u00a0.-/")))
        ends.append(len(raw))
        grp = [g.end() for g in _DIGIT_GROUP.finditer(raw)]
        ends += [grp[-2], grp[-3]] if len(grp) >= 3 else grp[-2:-1]
        for end in ends:
            sub = raw[:end]
            digits = _NONDIGIT.sub("", sub)
            if known_key and digits.endswith(known_key) and len(digits) - len(known_key) <= 4:
                out.append((s0, s0 + end, "PHONE"))
                break
            if len(digits) < 7 or len(digits) > 15:
                continue
            if not _groups_plausible(sub):
                continue
            if blocked and _overlaps(blocked, s0, s0 + end):
                break
            if _DATE_LIKE.search(sub):
                break
            intl = sub.lstrip("( ").startswith("+") or sub.startswith("00")
            if not intl and (_ZIP4.fullmatch(sub) or _PHONE_VETO.search(text, max(0, s0 - 24), s0)):
                break
            if _phone_valid(sub.replace("\n", " ").replace("\r", " "), digits, intl, country):
                out.append((s0, s0 + end, "PHONE"))
                break


def _nir_or_body(tok: str) -> bool:
    body = re.sub(r"[ .-]", "", tok)
    return nir_valid(tok) or (len(body) == 13 and body.isdigit() and body[0] in "12")


_ID_VALID = {"ssn": ssn_valid, "bsn": bsn_valid, "dni": dni_valid, "nir": _nir_or_body, "nino": nino_valid}


def _ids(text: str, words: set[str], n_digits: int, out: list[_Cand], blocked: list[_Span]) -> None:
    if n_digits >= 6:
        if "-" in text:
            for m in _SSN.finditer(text):
                if ssn_valid(m.group()):
                    out.append((m.start(), m.end(), "ID"))
                else:
                    blocked.append(m.span())  # SSN-shaped but failing the rules: no phone either
        for m in _NINO_TEXT.finditer(text):
            out.append((m.start(), m.end(), "ID"))
        if n_digits >= 7:
            for m in _DNI.finditer(text):
                if dni_valid(m.group()):
                    out.append((m.start(), m.end(), "ID"))
        if n_digits >= 13:
            for m in _NIR.finditer(text):
                if nir_valid(m.group()):
                    out.append((m.start(), m.end(), "ID"))
    if words.isdisjoint(_ID_WORDS):
        return
    for m in _ID_CUE.finditer(text):
        family = m.lastgroup
        if family == "gen":
            t = _ID_TOKEN.match(text, m.end())
            if t:
                tok = t.group()
                n = len(tok) - len(tok.translate(_DEL_DIGITS))
                if n >= 4 and len(_NON_ALNUM.sub("", tok)) >= 6 and not _DATE_LIKE.search(tok):
                    out.append((t.start(), t.end(), "ID"))
            continue
        # checksum-validated families may sit a few words after their cue ("BSN van mijn partner: ...")
        stop = text.find("\n", m.end())
        stop = min(len(text) if stop < 0 else stop, m.end() + 48)
        for i, t in enumerate(_ID_TOKEN.finditer(text, m.end(), stop)):
            if _ID_VALID[family](t.group()):
                out.append((t.start(), t.end(), "ID"))
                break
            if i == 0 and t.start() == m.end():
                blocked.append(t.span())  # the cue's own number fails its checksum: leave it alone


def _postals(text: str, words: set[str], out: list[_Cand], blocked: list[_Span]) -> None:
    found: list[_Span] = []
    if not words.isdisjoint(_POSTAL_WORDS):
        found += [m.span("pc") for m in _POSTAL_CUE.finditer(text)]
    if "," in text:
        found += [m.span(1) for m in _POSTAL_US.finditer(text)]
    if not words.isdisjoint(_AU_WORDS):
        for m in _POSTAL_AU.finditer(text):
            if m.start() == 0 or not (text[m.start() - 1].isalnum() or text[m.start() - 1] == "-"):
                found.append(m.span(1))
    if _UPPER_DIGIT.search(text):
        for m in _POSTAL_GB.finditer(text):
            s, e = m.span()
            # unspaced codes only right after a comma or at a line start
            if _WS.search(text, s, e) or s == 0 or text[s - 1] in ",\n" or text[max(0, s - 2) : s] == ", ":
                found.append((s, e))
        for m in _POSTAL_CA.finditer(text):
            s, e = m.span()
            if _WS.search(text, s, e) or text[s - 1 : s] in ("", ",", "\n", "-") or text[max(0, s - 2) : s] == ", ":
                found.append((s, e))
    if not words.isdisjoint(_CITY_WORDS):
        found += [m.span(1) for m in _POSTAL_CITY.finditer(text)]
    if "," in text or "\n" in text:
        for m in _POSTAL_LINE.finditer(text):
            # "<street> <no>, <code> <City>" or a code line right under a street line
            sep = m.start()
            before = text[text.rfind("\n", 0, sep) + 1 : sep].rstrip(" \t\r,")
            if _POSTAL_PRE.search(before):
                found.append(m.span(1))
    out.extend((s, e, "POSTAL_CODE") for s, e in found if not (blocked and _overlaps(blocked, s, e)))


def _persons_ctx(text: str, low: str, words: set[str], out: list[_Cand]) -> None:
    spans: list[_Span] = []
    n = len(low)
    for w in words.intersection(_CUE_FIRST):
        nxt = _CUE_NEXT[w]
        if nxt is not None and words.isdisjoint(nxt):
            continue
        i = low.find(w)
        while i >= 0:
            if not (i and (low[i - 1].isalnum() or low[i - 1] in "'’")):
                m = _CUES.match(low, i)
                e = m.end() if m else 0
                if m and not (e < n and low[e].isalnum()):
                    for kind in _CUE_KINDS.get(m.group(), ()):
                        f = _FOLLOW[kind].match(text, e)
                        if f:
                            spans.append(f.span(1))
            i = low.find(w, i + 1)
    for m in _HON_RE.finditer(text):
        s = m.start()
        if s == 0 or not (text[s - 1].isalnum() or text[s - 1] in "._"):
            spans.append(m.span(1))
    for w in words.intersection(_HERE_WORDS):
        i = low.find(w)
        while i >= 0:
            j = i + len(w)
            if i and low[i - 1] in " \t" and (j == n or not low[j].isalnum()):
                # the clause from the last sentence break up to "here" must be just a name (+ "from X")
                start = max(text.rfind(c, 0, i) for c in ",.!?;:\n") + 1
                m = _NAME_HERE.fullmatch(text, start, i)
                if m:
                    spans.append(m.span(1))
            i = low.find(w, j)
    if ":" in text:
        for m in _LINE_COLON.finditer(text):
            spans.append(m.span(m.lastgroup or 0))
    if "\n" in text:
        for m in _LINE_BLOCK.finditer(text):
            g = m.lastgroup or "addr"
            s, e = m.span(g)
            if g == "blk" and len(text[s:e].split()) < 2:
                continue
            spans.append((s, e))
    for s, e in spans:
        span = _span_trim(text, s, e)
        if span:
            out.append((span[0], span[1], "PERSON"))


_HYPHEN_AFTER = re.compile(rf"-{_U}{_L}+")
_HYPHEN_BEFORE = re.compile(rf"{_U}{_L}+-$")


def _name_span(text: str, s: int, e: int, is_last: bool) -> _Cand:
    # "Anderson-Reyes": the other half of a hyphenated name goes with it
    h = _HYPHEN_AFTER.match(text, e)
    if h:
        e = h.end()
    h = _HYPHEN_BEFORE.search(text, max(0, s - 30), s) if s and text[s - 1] == "-" else None
    if h:
        s = h.start()
    elif is_last and s > 1 and text[s - 1] in " \t":
        # "Klaus Weber": a capitalised word right before the surname is a first name
        k = j = s - 1
        while k and text[k - 1].isalpha():
            k -= 1
        word = text[k:j]
        if (
            len(word) > 1
            and word[0].isupper()
            and (k == 0 or not (text[k - 1].isalnum() or text[k - 1] in ".'’-_"))
            and word.lower() not in _STOP
            and word.lower() not in _PLACES
        ):
            s = k
    return s, e, "PERSON"


def _persons_known(text: str, low: str, known: Known, out: list[_Cand]) -> None:
    ascii_text = None
    for name in (known.first_name, known.last_name):
        if not name or not isinstance(name, str):
            continue
        is_last = name is known.last_name
        for pat, key in _name_patterns(name):
            if key:
                if ascii_text is None:
                    ascii_text = text.isascii()
                if ascii_text:  # an ASCII text can only match where the name's plain prefix is
                    i = low.find(key)
                    while i >= 0:
                        m = pat.match(text, i)
                        if m:
                            out.append(_name_span(text, i, m.end(), is_last))
                        i = low.find(key, m.end() if m else i + 1)
                    continue
            for m in pat.finditer(text):
                out.append(_name_span(text, m.start(), m.end(), is_last))


# --- resolution ---------------------------------------------------------------------------------
_PERSON_GAP = re.compile(r"[ \t\-]*(?:\r?\n[ \t]*)?")


def _resolve(cands: list[_Cand], plain_urls: list[_Span], text: str) -> list[_Cand]:
    """Sorted, non-overlapping spans: overlapping candidates merge into their union under the most
    specific kind (so nothing of a weaker span sticks out of a stronger one), a plain URL with PII
    inside becomes a personal URL, and adjacent PERSON parts ("Anna" "Schmidt") join."""
    cands.sort()
    merged: list[list] = []  # [start, end, kind]
    for s, e, k in cands:
        if merged and s < merged[-1][1]:
            last = merged[-1]
            if e > last[1]:
                last[1] = e
            if PRIORITY[k] > PRIORITY[last[2]]:
                last[2] = k
        else:
            merged.append([s, e, k])
    for us, ue in plain_urls:
        if any(a[0] < ue and us < a[1] for a in merged):
            inside = [a for a in merged if a[0] < ue and us < a[1]]
            start, end = min(us, inside[0][0]), max(ue, inside[-1][1])
            merged = [a for a in merged if not (a[0] < ue and us < a[1])] + [[start, end, "URL"]]
            merged.sort()
    out: list[_Cand] = []
    for s, e, k in merged:
        if out and k == "PERSON" and out[-1][2] == "PERSON" and _PERSON_GAP.fullmatch(text, out[-1][1], s):
            out[-1] = (out[-1][0], e, k)
        else:
            out.append((s, e, k))
    return out


def _lower(text: str) -> str:
    """``text.lower()`` with the same length (a few characters lower-case to two)."""
    low = text.lower()
    if len(low) == len(text):
        return low
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


def find(text: str, known: Known | None = None) -> list[Finding]:
    """All PII spans in ``text`` (sorted, non-overlapping, offsets into the original)."""
    return [Finding(s, e, k) for s, e, k in _spans(text, known)] if text else []


def _spans(text: str, known: Known | None) -> list[_Cand]:
    cands: list[_Cand] = []
    plain_urls: list[_Span] = []
    blocked: list[_Span] = []
    low = _lower(text)
    raw = low.encode()
    words = set(raw.translate(_PUNCT_BYTES).decode().split())
    n_digits = len(raw) - len(raw.translate(None, b"0123456789"))
    if "http" in low or "www." in low:
        _urls(text, cands, plain_urls)
    _emails(text, low, words, cands)
    if known is not None and isinstance(known.email, str):
        _known_email(text, low, known.email, cands)
    if n_digits >= 4:
        if n_digits >= 10:
            _cards_ibans(text, cands, blocked)
        if "." in text or ":" in text:
            _ips(text, cands)
        _ids(text, words, n_digits, cands, blocked)
        if n_digits >= 6:
            country = known.country.strip().upper() or None if known and isinstance(known.country, str) else None
            key = _phone_key(known.phone, country) if known and isinstance(known.phone, str) else None
            _phones(text, key, country, cands, blocked)
    if n_digits >= 2:  # a GB postcode has two digits
        _postals(text, words, cands, blocked)
    if known is not None:
        _persons_known(text, low, known, cands)
    _persons_ctx(text, low, words, cands)
    if not cands:
        return []
    return _resolve(cands, plain_urls, text)


def _apply(text: str, spans: list[_Cand]) -> str:
    if not spans:
        return text
    parts: list[str] = []
    pos = 0
    for s, e, k in spans:
        parts.append(text[pos:s])
        parts.append(PLACEHOLDERS[k])
        pos = e
    parts.append(text[pos:])
    return "".join(parts)


def redact(text: str | None, known: Known | None = None) -> str | None:
    """``text`` with every PII span replaced by its placeholder; None stays None."""
    if text is None:
        return None
    return _apply(text, _spans(text, known)) if text else text


def _s(v: object) -> str | None:
    return v if isinstance(v, str) and v else None  # None, NaN, pd.NA -> None


@functools.lru_cache(maxsize=65536)
def _known(first: object, last: object, email: object, phone: object, country: object) -> Known | None:
    f, la, e, p, c = _s(first), _s(last), _s(email), _s(phone), _s(country)
    if not (f or la or e or p or c):
        return None
    return Known(f, la, e, p, c.strip().upper() if c else None)


def redact_batch(
    texts: Iterable[str | None],
    first_names: Iterable[str | None],
    last_names: Iterable[str | None],
    emails: Iterable[str | None],
    phones: Iterable[str | None],
    countries: Iterable[str | None],
) -> list[str | None]:
    """Redact equal-length columns (lists or pandas Series values); None/NaN allowed anywhere."""
    out: list[str | None] = []
    for t, f, la, e, p, c in zip(texts, first_names, last_names, emails, phones, countries, strict=True):
        if not isinstance(t, str):
            out.append(None)
            continue
        try:
            known = _known(f, la, e, p, c)
        except TypeError:  # an unhashable cell
            known = _known.__wrapped__(f, la, e, p, c)
        out.append(_apply(t, _spans(t, known)) if t else t)
    return out

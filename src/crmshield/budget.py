"""The privacy-budget ledger: every DP release about a population, accounted for.

Differential privacy only bounds what is learned about a person if *every*
release about them is counted. This module keeps that count:

* :func:`load_budget_config` reads ``config/dp_budget.yml``: the population
  (the data subjects), its budget (total epsilon and delta per period) and
  one budget per analyst identity, each with its own refresh window
  (``day``, ``week`` starting Monday, ``month`` or ``quarter``, all UTC).
* :class:`Ledger` is a SQLite file in the restricted zone
  (``Settings.dp_ledger``: directory mode 0700, file mode 0600), never the
  analyst database. :meth:`Ledger.reserve` checks the budgets and records the
  charges in one ``BEGIN IMMEDIATE`` transaction, so two processes cannot both
  see the same remaining budget and overspend it. A request that would exceed
  a budget is refused *before it runs* with :class:`BudgetExceeded`, whose
  message says what is spent, what the request needs, what remains and when
  the budget refreshes; the refusal itself is recorded (status ``refused``).
* A publication charges the population budget. An analyst's query charges both
  the analyst's budget and the population budget: everything released about
  the population composes, whoever asked.

Across ledger entries the accounting is basic sequential composition: the
epsilons add up and so do the deltas, which is valid for any mix of
mechanisms. Each entry also records the ``composition`` its caller used to
compute that entry's own cost (``"basic sequential"`` over a mart's noisy
statistics, for example), for the audit.

Entry statuses: ``reserved`` (checked and counted, the release is running),
``spent`` (released), ``cancelled`` (nothing was released: not counted) and
``refused`` (over budget or unknown analyst: never ran, not counted). Reserved
entries count as spent until they are cancelled, so a crash mid-release errs on
the side of privacy.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from crmshield.yamlconfig import format_validation_error

if TYPE_CHECKING:
    from crmshield.config import Settings

Period = Literal["day", "week", "month", "quarter"]
Kind = Literal["publication", "query"]
Status = Literal["reserved", "spent", "cancelled", "refused"]

PERIODS: tuple[str, ...] = get_args(Period)
KINDS: tuple[str, ...] = get_args(Kind)
COUNTED: tuple[str, ...] = ("reserved", "spent")  # statuses that use up budget
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0
REL_TOL = 1e-9  # floating-point slack when comparing a total with a cap
DEFAULT_COMPOSITION = "basic sequential"

_ANALYST_RE = re.compile(r"^[a-z][a-z0-9_.-]*$")
_POPULATION_RE = re.compile(r"^[a-z][a-z0-9_]*$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    reservation_id TEXT NOT NULL,
    created_at TEXT NOT NULL,            -- ISO-8601 UTC, fixed width: sorts as text
    updated_at TEXT NOT NULL,
    population TEXT NOT NULL,
    principal TEXT NOT NULL,
    analyst TEXT,
    kind TEXT NOT NULL CHECK (kind IN ('publication', 'query')),
    what TEXT NOT NULL,
    fingerprint TEXT NOT NULL,           -- sha256 of what
    epsilon REAL NOT NULL CHECK (epsilon >= 0),
    delta REAL NOT NULL CHECK (delta >= 0 AND delta < 1),
    composition TEXT NOT NULL,
    run_id TEXT,
    status TEXT NOT NULL CHECK (status IN ('reserved', 'spent', 'cancelled', 'refused')),
    reason TEXT
);
CREATE INDEX IF NOT EXISTS ledger_population_time ON ledger (population, created_at);
CREATE INDEX IF NOT EXISTS ledger_analyst_time ON ledger (analyst, created_at);
CREATE INDEX IF NOT EXISTS ledger_reservation ON ledger (reservation_id);
"""

_COLUMNS = (
    "id",
    "reservation_id",
    "created_at",
    "updated_at",
    "population",
    "principal",
    "analyst",
    "kind",
    "what",
    "fingerprint",
    "epsilon",
    "delta",
    "composition",
    "run_id",
    "status",
    "reason",
)


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


class BudgetConfigError(ValueError):
    """``config/dp_budget.yml`` is missing or invalid; the message names the file and the key."""


class LedgerError(RuntimeError):
    """The ledger file cannot be used, or a reservation cannot make the requested transition."""


class BudgetRefused(RuntimeError):
    """A release was refused before it ran (and the refusal was recorded). ``.message`` says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnknownAnalyst(BudgetRefused):
    """The analyst identity has no budget in ``config/dp_budget.yml``."""

    def __init__(self, analyst: str, source: Path) -> None:
        self.analyst = analyst
        super().__init__(
            f"unknown analyst {analyst!r}: no privacy budget for this identity in {source}; "
            f"add them to {source} under 'analysts' (with epsilon, delta and period) before they can query"
        )


class BudgetExceeded(BudgetRefused):
    """Spending this request would exceed a budget.

    The attributes describe the binding budget (of those exceeded, the one that
    refreshes last); ``.message`` lists every exceeded budget.
    """

    def __init__(self, usage: Usage, needed_epsilon: float, needed_delta: float, others: Sequence[Usage] = ()) -> None:
        self.usage = usage
        self.scope: Literal["population", "analyst"] = usage.scope
        self.name = usage.name
        self.period = usage.period
        self.period_start = usage.period_start
        self.period_end = usage.period_end
        self.refreshes_at = usage.period_end
        self.cap_epsilon = usage.cap_epsilon
        self.cap_delta = usage.cap_delta
        self.spent_epsilon = usage.spent_epsilon
        self.spent_delta = usage.spent_delta
        self.needed_epsilon = needed_epsilon
        self.needed_delta = needed_delta
        self.remaining_epsilon = usage.remaining_epsilon
        self.remaining_delta = usage.remaining_delta
        self.others = tuple(others)
        lines = [_exceeded_line(u, needed_epsilon, needed_delta) for u in (usage, *self.others)]
        super().__init__("refused before it ran, nothing was released: " + "\n".join(lines))


def _exceeded_line(u: Usage, needed_epsilon: float, needed_delta: float) -> str:
    what = "population" if u.scope == "population" else "analyst"
    return (
        f"the {_ADJECTIVE[u.period]} privacy budget of {what} {u.name!r} would be exceeded"
        f" (period {u.period_start.isoformat()} to {u.period_end.isoformat()}):"
        f" spent epsilon={_num(u.spent_epsilon)}, delta={_num(u.spent_delta)};"
        f" this request needs epsilon={_num(needed_epsilon)}, delta={_num(needed_delta)};"
        f" remaining epsilon={_num(u.remaining_epsilon)}, delta={_num(u.remaining_delta)}"
        f" of epsilon={_num(u.cap_epsilon)}, delta={_num(u.cap_delta)};"
        f" the budget refreshes at {u.period_end.isoformat()}"
    )


_ADJECTIVE = {"day": "daily", "week": "weekly", "month": "monthly", "quarter": "quarterly"}


def _num(x: float) -> str:
    return f"{x:.6g}"


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """Total epsilon and delta that may be released per period (UTC calendar periods)."""

    epsilon: float
    delta: float
    period: Period


@dataclass(frozen=True)
class BudgetConfig:
    """``config/dp_budget.yml``, validated."""

    population: str
    population_budget: Budget
    analysts: dict[str, Budget]
    source: Path


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _BudgetModel(_Strict):
    epsilon: float = Field(gt=0, allow_inf_nan=False)
    delta: float = Field(gt=0, lt=1, allow_inf_nan=False)
    period: Period


class _BudgetFile(_Strict):
    population: str = Field(pattern=_POPULATION_RE.pattern)
    budget: _BudgetModel
    analysts: dict[str, _BudgetModel] = Field(default_factory=dict)


def load_budget_config(path: Path) -> BudgetConfig:
    """Read and validate the budget file; errors name the file and the key."""
    from crmshield.yamlconfig import read_mapping

    path = Path(path)
    doc = read_mapping(path, BudgetConfigError, "privacy budget configuration")
    analysts = doc.get("analysts")
    if isinstance(analysts, Mapping):
        for name in analysts:
            if not isinstance(name, str) or not _ANALYST_RE.match(name):
                raise BudgetConfigError(
                    f"{path}: key 'analysts.{name}': analyst names must match {_ANALYST_RE.pattern}"
                )
    try:
        model = _BudgetFile.model_validate(doc)
    except ValidationError as exc:
        raise BudgetConfigError(format_validation_error(path, exc)) from None

    def budget(m: _BudgetModel) -> Budget:
        return Budget(epsilon=float(m.epsilon), delta=float(m.delta), period=m.period)

    return BudgetConfig(
        population=model.population,
        population_budget=budget(model.budget),
        analysts={name: budget(b) for name, b in model.analysts.items()},
        source=path,
    )


# --------------------------------------------------------------------------
# Periods
# --------------------------------------------------------------------------


def _utc(at: datetime, what: str = "time") -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got naive {at.isoformat()}")
    return at.astimezone(UTC)


def _iso(at: datetime) -> str:
    """Fixed-width ISO-8601 UTC text (microseconds), so stored times sort and compare as text."""
    return _utc(at).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def period_bounds(period: str, at: datetime) -> tuple[datetime, datetime]:
    """The UTC calendar period ``[start, end)`` holding *at*.

    ``day``: midnight to midnight; ``week``: ISO week, Monday 00:00;
    ``month``: the 1st 00:00; ``quarter``: 1 January, 1 April, 1 July, 1 October.
    """
    at = _utc(at)
    midnight = at.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return midnight, midnight + timedelta(days=1)
    if period == "week":
        start = midnight - timedelta(days=midnight.weekday())
        return start, start + timedelta(days=7)
    if period in ("month", "quarter"):
        first_month = at.month if period == "month" else 3 * ((at.month - 1) // 3) + 1
        months = 1 if period == "month" else 3
        start = midnight.replace(month=first_month, day=1)
        y, m = divmod(first_month - 1 + months, 12)
        return start, start.replace(year=at.year + y, month=m + 1)
    raise ValueError(f"unknown budget period {period!r}: use one of {', '.join(PERIODS)}")


# --------------------------------------------------------------------------
# Charges, reservations, usage
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Charge:
    """The privacy cost of one mechanism, mart or query (``what`` names it: a mart name or query text)."""

    what: str
    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        if not isinstance(self.what, str) or not self.what.strip():
            raise ValueError("a charge needs a non-empty 'what' (mart name or query)")
        for key in ("epsilon", "delta"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise ValueError(f"charge {self.what!r}: {key} must be a finite number >= 0, got {v!r}")
        if self.delta >= 1:
            raise ValueError(f"charge {self.what!r}: delta must be below 1, got {self.delta!r}")


@dataclass(frozen=True)
class Reservation:
    """Charges checked and recorded (status ``reserved``); commit or cancel it when the release ends."""

    id: str
    principal: str
    kind: Kind
    analyst: str | None
    run_id: str | None
    created_at: datetime
    entries: tuple[int, ...]  # ledger row ids, one per charge
    charges: tuple[Charge, ...] = field(default_factory=tuple)

    @property
    def epsilon(self) -> float:
        return math.fsum(c.epsilon for c in self.charges)

    @property
    def delta(self) -> float:
        return math.fsum(c.delta for c in self.charges)


@dataclass(frozen=True)
class Usage:
    """One budget in one period: cap, what is spent (reserved + spent entries) and what remains."""

    scope: Literal["population", "analyst"]
    name: str
    period: Period
    period_start: datetime
    period_end: datetime
    cap_epsilon: float
    cap_delta: float
    spent_epsilon: float
    spent_delta: float

    @property
    def remaining_epsilon(self) -> float:
        return max(0.0, self.cap_epsilon - self.spent_epsilon)

    @property
    def remaining_delta(self) -> float:
        return max(0.0, self.cap_delta - self.spent_delta)

    def fits(self, epsilon: float, delta: float) -> bool:
        return self.spent_epsilon + epsilon <= self.cap_epsilon * (1 + REL_TOL) and (
            self.spent_delta + delta <= self.cap_delta * (1 + REL_TOL)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "name": self.name,
            "period": self.period,
            "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(),
            "refreshes_at": self.period_end.isoformat(),
            "cap_epsilon": self.cap_epsilon,
            "cap_delta": self.cap_delta,
            "spent_epsilon": self.spent_epsilon,
            "spent_delta": self.spent_delta,
            "remaining_epsilon": self.remaining_epsilon,
            "remaining_delta": self.remaining_delta,
        }


# --------------------------------------------------------------------------
# The ledger
# --------------------------------------------------------------------------


def _system_clock() -> datetime:
    return datetime.now(UTC)


class Ledger:
    """The persistent, transactional privacy-budget ledger (one SQLite file).

    Every method opens its own connection, so one ``Ledger`` object, several
    objects and several processes can share a file safely; writes that check a
    budget run under ``BEGIN IMMEDIATE`` (one writer at a time, others wait up
    to ``BUSY_TIMEOUT_S``).
    """

    def __init__(self, path: Path, config: BudgetConfig, *, clock: Callable[[], datetime] | None = None) -> None:
        self.path = Path(path)
        self.config = config
        self._clock = clock or _system_clock
        self._init()

    @classmethod
    def open(cls, settings: Settings, *, clock: Callable[[], datetime] | None = None) -> Ledger:
        """The ledger at ``settings.dp_ledger`` with the budgets of ``settings.dp_budget_config``."""
        return cls(settings.dp_ledger, load_budget_config(settings.dp_budget_config), clock=clock)

    def __repr__(self) -> str:
        return f"Ledger({str(self.path)!r}, population={self.config.population!r})"

    # -- storage -------------------------------------------------------------

    def _now(self) -> datetime:
        return _utc(self._clock(), "the ledger clock")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    @contextmanager
    def _transaction(self, immediate: bool = True) -> Iterator[sqlite3.Connection]:
        try:
            with closing(self._connect()) as conn:
                conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
                try:
                    yield conn
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
        except sqlite3.Error as exc:  # e.g. still locked after BUSY_TIMEOUT_S: fail closed, nothing was reserved
            raise LedgerError(f"{self.path}: privacy-budget ledger unavailable: {exc}") from exc

    def _ensure_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL, retrying while another process holds it.

        Changing the journal mode needs an exclusive lock, and SQLite may answer ``database is
        locked`` at once, without its busy handler, while a second process is creating the same
        ledger (seen with two publishers starting together on a loaded machine).
        """
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                    conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    def _init(self) -> None:
        parent = self.path.parent
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(parent, 0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        os.chmod(self.path, 0o600)
        try:
            with closing(self._connect()) as conn:
                self._ensure_wal(conn)
                conn.execute("BEGIN IMMEDIATE")
                try:
                    version = conn.execute("PRAGMA user_version").fetchone()[0]
                    if version > SCHEMA_VERSION:
                        raise LedgerError(
                            f"{self.path}: ledger schema version {version} is newer than this crmshield"
                            f" understands ({SCHEMA_VERSION})"
                        )
                    if version < SCHEMA_VERSION:
                        for stmt in filter(None, (s.strip() for s in _SCHEMA.split(";"))):
                            conn.execute(stmt)
                        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"{self.path}: not a usable privacy-budget ledger: {exc}") from exc
        # SQLite creates -wal/-shm with the database file's mode; tighten them anyway. Another
        # process closing the last connection may remove them at any moment: that is fine.
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            try:
                os.chmod(side, 0o600)
            except FileNotFoundError:
                pass

    # -- accounting ----------------------------------------------------------

    def _analyst_budget(self, analyst: str) -> Budget:
        budget = self.config.analysts.get(analyst)
        if budget is None:
            raise UnknownAnalyst(analyst, self.config.source)
        return budget

    def _sum(
        self, conn: sqlite3.Connection, column: str, value: str, start: datetime, end: datetime
    ) -> tuple[float, float]:
        rows = conn.execute(
            f"SELECT epsilon, delta FROM ledger WHERE {column} = ? AND created_at >= ? AND created_at < ?"
            f" AND status IN ({', '.join('?' for _ in COUNTED)})",
            (value, _iso(start), _iso(end), *COUNTED),
        ).fetchall()
        return math.fsum(r["epsilon"] for r in rows), math.fsum(r["delta"] for r in rows)

    def _usage(self, conn: sqlite3.Connection, at: datetime, analyst: str | None) -> list[Usage]:
        """Population usage first, then the analyst's (when given) for the periods holding *at*."""
        out = []
        pop = self.config.population_budget
        start, end = period_bounds(pop.period, at)
        eps, dlt = self._sum(conn, "population", self.config.population, start, end)
        out.append(
            Usage("population", self.config.population, pop.period, start, end, pop.epsilon, pop.delta, eps, dlt)
        )
        if analyst is not None:
            budget = self._analyst_budget(analyst)
            start, end = period_bounds(budget.period, at)
            eps, dlt = self._sum(conn, "analyst", analyst, start, end)
            out.append(Usage("analyst", analyst, budget.period, start, end, budget.epsilon, budget.delta, eps, dlt))
        return out

    @staticmethod
    def _verdict(usages: Sequence[Usage], charges: Sequence[Charge]) -> BudgetExceeded | None:
        eps = math.fsum(c.epsilon for c in charges)
        dlt = math.fsum(c.delta for c in charges)
        over = sorted((u for u in usages if not u.fits(eps, dlt)), key=lambda u: u.period_end, reverse=True)
        return BudgetExceeded(over[0], eps, dlt, over[1:]) if over else None

    @staticmethod
    def _validate(
        principal: str, kind: str, charges: Sequence[Charge], composition: str, analyst: str | None
    ) -> tuple[Charge, ...]:
        if not isinstance(principal, str) or not principal.strip():
            raise ValueError("principal must name who asks (an analyst identity, 'publisher', 'pipeline', ...)")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if kind == "query" and analyst is None:
            raise ValueError("an interactive query needs the analyst identity (analyst=...) to charge their budget")
        if not isinstance(composition, str) or not composition.strip():
            raise ValueError("composition must name how the charge was composed, e.g. 'basic sequential'")
        return Ledger._validate_charges(charges)

    @staticmethod
    def _validate_charges(charges: Sequence[Charge]) -> tuple[Charge, ...]:
        charges = tuple(charges)
        if not charges:
            raise ValueError("nothing to charge: give at least one Charge")
        for c in charges:
            if not isinstance(c, Charge):
                raise TypeError(f"charges must be Charge objects, got {type(c).__name__}")
        return charges

    def check(self, *, charges: Sequence[Charge], analyst: str | None = None) -> None:
        """Raise :class:`BudgetExceeded` (or :class:`UnknownAnalyst`) if *charges* would not fit now.

        Writes nothing (a pre-flight / ``--explain`` check); only :meth:`reserve` is binding.
        """
        charges = self._validate_charges(charges)
        if analyst is not None:
            self._analyst_budget(analyst)
        now = self._now()
        with self._transaction(immediate=False) as conn:
            refusal = self._verdict(self._usage(conn, now, analyst), charges)
        if refusal is not None:
            raise refusal

    def reserve(
        self,
        *,
        principal: str,
        kind: Kind,
        charges: Sequence[Charge],
        run_id: str | None = None,
        composition: str = DEFAULT_COMPOSITION,
        analyst: str | None = None,
    ) -> Reservation:
        """Check the budgets and record *charges* as ``reserved``, atomically.

        A publication (``analyst=None``) charges the population budget; with an
        analyst, the analyst's budget is charged too. If either would be
        exceeded, or the analyst is unknown, the attempt is recorded with status
        ``refused`` and :class:`BudgetExceeded` / :class:`UnknownAnalyst` is raised:
        nothing may run. Otherwise the returned :class:`Reservation` counts as
        spent until :meth:`cancel` is called.
        """
        charges = self._validate(principal, kind, charges, composition, analyst)
        rid = uuid.uuid4().hex
        with self._transaction() as conn:
            now = self._now()
            refusal: BudgetRefused | None
            try:
                refusal = self._verdict(self._usage(conn, now, analyst), charges)
            except UnknownAnalyst as exc:
                refusal = exc
            status = "reserved" if refusal is None else "refused"
            ids = tuple(
                self._insert(conn, rid, now, principal, analyst, kind, c, composition, run_id, status, refusal)
                for c in charges
            )
        if refusal is not None:
            raise refusal
        return Reservation(
            id=rid,
            principal=principal,
            kind=kind,
            analyst=analyst,
            run_id=run_id,
            created_at=now,
            entries=ids,
            charges=charges,
        )

    def _insert(
        self,
        conn: sqlite3.Connection,
        rid: str,
        now: datetime,
        principal: str,
        analyst: str | None,
        kind: str,
        charge: Charge,
        composition: str,
        run_id: str | None,
        status: str,
        refusal: BudgetRefused | None,
    ) -> int:
        cur = conn.execute(
            "INSERT INTO ledger (reservation_id, created_at, updated_at, population, principal, analyst, kind,"
            " what, fingerprint, epsilon, delta, composition, run_id, status, reason)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                rid,
                _iso(now),
                _iso(now),
                self.config.population,
                principal,
                analyst,
                kind,
                charge.what,
                hashlib.sha256(charge.what.encode("utf-8")).hexdigest(),
                float(charge.epsilon),
                float(charge.delta),
                composition,
                run_id,
                status,
                refusal.message if refusal is not None else None,
            ),
        )
        assert cur.lastrowid is not None
        return int(cur.lastrowid)

    def _transition(self, reservation: Reservation | str, to: Status, reason: str | None) -> None:
        rid = reservation.id if isinstance(reservation, Reservation) else str(reservation)
        with self._transaction() as conn:
            statuses = {r["status"] for r in conn.execute("SELECT status FROM ledger WHERE reservation_id = ?", (rid,))}
            if not statuses:
                raise LedgerError(f"{self.path}: no reservation {rid!r}")
            if statuses == {to}:
                return  # already done: idempotent
            if statuses != {"reserved"}:
                raise LedgerError(
                    f"{self.path}: reservation {rid!r} is {'/'.join(sorted(statuses))}, cannot mark it {to}"
                )
            conn.execute(
                "UPDATE ledger SET status = ?, updated_at = ?, reason = COALESCE(?, reason)"
                " WHERE reservation_id = ? AND status = 'reserved'",
                (to, _iso(self._now()), reason, rid),
            )

    def commit(self, reservation: Reservation | str) -> None:
        """The release happened: the reservation's entries become ``spent`` (for good)."""
        self._transition(reservation, "spent", None)

    def cancel(self, reservation: Reservation | str, reason: str) -> None:
        """Nothing was released (the run failed before release): the entries stop counting."""
        if not reason or not reason.strip():
            raise ValueError("cancel needs a reason (why nothing was released)")
        self._transition(reservation, "cancelled", reason)

    @contextmanager
    def spending(
        self,
        *,
        principal: str,
        kind: Kind,
        charges: Sequence[Charge],
        run_id: str | None = None,
        composition: str = DEFAULT_COMPOSITION,
        analyst: str | None = None,
    ) -> Iterator[Reservation]:
        """``reserve`` on entry; ``commit`` when the block succeeds, ``cancel`` when it raises.

        Only use it where an exception in the block means nothing was released.
        """
        reservation = self.reserve(
            principal=principal, kind=kind, charges=charges, run_id=run_id, composition=composition, analyst=analyst
        )
        try:
            yield reservation
        except BaseException as exc:
            self.cancel(reservation, f"failed before release: {type(exc).__name__}: {exc}")
            raise
        self.commit(reservation)

    # -- reporting -----------------------------------------------------------

    def remaining(self, *, analyst: str | None = None, at: datetime | None = None) -> dict[str, Any]:
        """What is spent and what remains now (or *at*): ``{"population": {...}, "analyst": {...}}``.

        Each part has period_start, period_end / refreshes_at (ISO UTC), cap_, spent_ and
        remaining_ epsilon and delta. ``"analyst"`` only appears when one is asked for.
        """
        when = self._now() if at is None else _utc(at, "at")
        with self._transaction(immediate=False) as conn:
            usages = self._usage(conn, when, analyst)
        return {u.scope: u.to_dict() for u in usages}

    def entries(self, *, since: datetime | None = None) -> list[dict[str, Any]]:
        """Every recorded entry (all statuses), oldest first, optionally from *since* on."""
        sql = f"SELECT {', '.join(_COLUMNS)} FROM ledger"
        args: tuple[Any, ...] = ()
        if since is not None:
            sql += " WHERE created_at >= ?"
            args = (_iso(_utc(since, "since")),)
        with self._transaction(immediate=False) as conn:
            rows = conn.execute(sql + " ORDER BY created_at, id", args).fetchall()
        return [dict(r) for r in rows]


__all__ = [
    "Budget",
    "BudgetConfig",
    "BudgetConfigError",
    "BudgetExceeded",
    "BudgetRefused",
    "Charge",
    "Ledger",
    "LedgerError",
    "Reservation",
    "UnknownAnalyst",
    "Usage",
    "load_budget_config",
    "period_bounds",
]

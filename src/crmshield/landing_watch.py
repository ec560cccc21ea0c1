"""Should a new pipeline run start? The decision behind the ``crm_landing_watch`` DAG.

Plain Python (stdlib and crmshield only), so it is testable without Airflow; the
DAG's task calls :func:`landing_state` and, when it is ready, :func:`claim`, and
only then emits the ``crmshield_landing`` Asset event that starts
``crm_privacy_pipeline``.

A landing is *ready* when

1. every export the source spec in force names is present (``missing``);
2. every one of them has been left alone for the settle period
   (``CRMSHIELD_LANDING_SETTLE_SECONDS``, default 60): neither its content
   (mtime) nor its inode (ctime, which no copy tool can set back) changed for
   that long, so a file still being written does not start a run
   (``not_settled``); the files are stat'ed again after hashing, and a change
   in between is ``not_settled`` too;
3. its fingerprint (the run's ``input_fingerprint``: the landing files' sha256
   and the :func:`crmshield.pipeline.config_digest`) belongs to no run that has
   ingested (``reports/runs/<run_id>/ingest.json``; ``processed``), and
4. was not already announced (a marker ``reports/landing_watch/<fingerprint>.json``
   written atomically by :func:`claim`; ``triggered``), so a run queued but not
   yet ingested is not started twice. A marker older than
   ``CRMSHIELD_LANDING_RETRIGGER_SECONDS`` (default 21600, 6 h) whose input no
   run has ingested yet is stale: the event was lost (Airflow drops Asset events
   for a paused DAG) or the run died before ingest finished, so the input is
   announced again, at most once per that period.

Otherwise it is ``new``. Nothing here reads a data value: only names, sizes,
times and hashes.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from crmshield.config import Settings

#: The Asset the watch DAG emits and ``crm_privacy_pipeline`` is scheduled on.
LANDING_ASSET = "crmshield_landing"
SETTLE_ENV = "CRMSHIELD_LANDING_SETTLE_SECONDS"
DEFAULT_SETTLE_SECONDS = 60.0
RETRIGGER_ENV = "CRMSHIELD_LANDING_RETRIGGER_SECONDS"
DEFAULT_RETRIGGER_SECONDS = 6 * 3600.0

REASONS = ("missing", "not_settled", "processed", "triggered", "new")


def _seconds(env: str, default: float) -> float:
    raw = os.environ.get(env, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"{env}={raw!r} is not a number of seconds") from exc
    if value < 0:
        raise ValueError(f"{env}={raw!r} must not be negative")
    return value


def settle_seconds() -> float:
    """The settle period from ``CRMSHIELD_LANDING_SETTLE_SECONDS`` (default 60)."""
    return _seconds(SETTLE_ENV, DEFAULT_SETTLE_SECONDS)


def retrigger_seconds() -> float:
    """How old an unconsumed trigger marker may get (``CRMSHIELD_LANDING_RETRIGGER_SECONDS``, default 6 h)."""
    return _seconds(RETRIGGER_ENV, DEFAULT_RETRIGGER_SECONDS)


def watch_dir(settings: Settings) -> Path:
    """Where the trigger markers live (reports zone: hashes and times only)."""
    return settings.reports / "landing_watch"


def marker_path(settings: Settings, fingerprint: str) -> Path:
    return watch_dir(settings) / f"{fingerprint}.json"


def processed_fingerprints(settings: Settings) -> set[str]:
    """``input_fingerprint`` of every run that has ingested (whatever happened after)."""
    seen: set[str] = set()
    if not settings.runs.is_dir():
        return seen
    for path in settings.runs.glob("*/ingest.json"):
        try:
            fp = json.loads(path.read_text(encoding="utf-8")).get("input_fingerprint")
        except (OSError, ValueError, AttributeError):
            continue  # a half-written or foreign file proves nothing
        if isinstance(fp, str) and fp:
            seen.add(fp)
    return seen


def _marker_age(path: Path, now: float) -> float | None:
    """Seconds since the marker at ``path`` was written; None when there is none."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    try:
        at = float(json.loads(path.read_text(encoding="utf-8"))["triggered_at"])
    except (OSError, ValueError, KeyError, TypeError):
        at = st.st_mtime  # half-written: its file time is as good
    return now - at


def _signature(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns


def landing_state(
    settings: Settings | None = None,
    now: float | None = None,
    settle: float | None = None,
    retrigger: float | None = None,
) -> dict[str, Any]:
    """``{"ready", "reason", "fingerprint", "detail", "files", "stale_marker"}`` for the landing zone now.

    ``reason`` is one of :data:`REASONS`; ``fingerprint`` is None unless every file
    is present and settled. ``now`` (epoch seconds), ``settle`` and ``retrigger``
    (seconds) default to the clock, :func:`settle_seconds` and :func:`retrigger_seconds`.
    """
    from crmshield.ingest import delivery_files, fingerprint, sha256_file
    from crmshield.pipeline import config_digest
    from crmshield.sources import source_specs

    settings = settings or Settings.from_env()
    now = time.time() if now is None else now
    settle = settle_seconds() if settle is None else settle
    retrigger = retrigger_seconds() if retrigger is None else retrigger
    specs = source_specs()
    paths = {p.name: p for spec in specs.values() for p in delivery_files(settings.landing, spec)}
    absent = sorted(spec.file for spec in specs.values() if not delivery_files(settings.landing, spec))

    def state(
        reason: str, detail: str, fp: str | None = None, files: dict[str, Any] | None = None, stale: bool = False
    ) -> dict[str, Any]:
        return {
            "ready": reason == "new",
            "reason": reason,
            "fingerprint": fp,
            "detail": detail,
            "files": files or {},
            "stale_marker": stale,
        }

    missing = sorted({*absent, *(name for name, p in paths.items() if not p.is_file())})
    if missing:
        return state("missing", f"expected export(s) not in {settings.landing}: {', '.join(missing)}")
    before = {name: _signature(p) for name, p in paths.items()}
    unsettled = {}
    for name, (_, mtime_ns, ctime_ns) in before.items():
        age = now - max(mtime_ns, ctime_ns) / 1e9
        if age < settle:
            unsettled[name] = age
    if unsettled:
        ages = ", ".join(f"{n} changed {max(a, 0.0):.0f} s ago" for n, a in sorted(unsettled.items()))
        return state("not_settled", f"waiting for {settle:.0f} s without a change: {ages}")
    hashes = {name: sha256_file(p) for name, p in paths.items()}
    changed = sorted(name for name, p in paths.items() if not p.is_file() or _signature(p) != before[name])
    if changed:
        return state("not_settled", f"changed while being hashed: {', '.join(changed)}")
    fp = fingerprint(hashes, config_digest(settings))
    files = {name: {"sha256": hashes[name], "bytes": before[name][0]} for name in sorted(hashes)}
    if fp in processed_fingerprints(settings):
        return state("processed", f"a run has already ingested this input (run-{fp[:16]})", fp, files)
    age = _marker_age(marker_path(settings, fp), now)
    if age is not None and age < retrigger:
        return state(
            "triggered", f"a run was already started for this input {age:.0f} s ago (run-{fp[:16]})", fp, files
        )
    if age is not None:
        return state("new", f"announced {age:.0f} s ago but not ingested yet: again, run-{fp[:16]}", fp, files, True)
    return state("new", f"new input, run-{fp[:16]}", fp, files)


def claim(settings: Settings, landing: dict[str, Any], now: float | None = None) -> bool:
    """Record that a run is being started for ``landing`` (a ready :func:`landing_state`).

    Atomic (``O_CREAT | O_EXCL``): True for the one caller that wrote the marker,
    False if it existed already, so two watchers never both trigger. A stale
    marker (see :func:`landing_state`) is first renamed aside (``*.stale-<time>``);
    the watch DAG runs one watcher at a time (``max_active_runs=1``).
    """
    if not landing.get("ready") or not landing.get("fingerprint"):
        raise ValueError(f"not a ready landing: {landing.get('reason')}")
    fp = landing["fingerprint"]
    folder = watch_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time() if now is None else now
    path = marker_path(settings, fp)
    if landing.get("stale_marker") and path.exists():
        try:
            path.rename(path.with_name(f"{path.name}.stale-{int(now)}"))
        except FileNotFoundError:
            return False  # another caller moved it first
    record = {
        "fingerprint": fp,
        "run_id": f"run-{fp[:16]}",
        "triggered_at": now,
        "files": landing.get("files", {}),
    }
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(record, fh, indent=2, sort_keys=True)
    return True

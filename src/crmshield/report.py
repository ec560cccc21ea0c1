"""Run manifest (JSON), a self-contained HTML run report, and an index of all runs.

Everything is built from the stage results (``reports/runs/<run_id>/<stage>.json``), the
privacy-budget ledger (read only) and the analyst database's ``_dp_catalog`` (read only):
counts, column and expectation names, file hashes, ε and δ. No data value ever reaches the
manifest or the HTML. The HTML has no external asset (styles inline, charts as inline SVG),
so it opens offline, and its only links point at local files (Data Docs pages, other runs).

A failed run gets a report too. The stage that failed wrote ``{"status": "failed",
"error_type", "error", ...}`` (validation stages add their suites); later stages wrote
nothing. :func:`build_manifest` then sets ``status`` to ``"failed"`` and ``failure`` to
``{"stage", "zone", "error_type", "error", "critical_failures", "warnings",
"failed_expectations": [...]}``, and every section without data says "not run".
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from crmshield.config import Settings

TEMPLATES = Path(__file__).with_name("templates")
TEMPLATE = TEMPLATES / "run_report.html.j2"
INDEX_TEMPLATE = TEMPLATES / "run_index.html.j2"

#: The stages that write a result, in run order (the report itself is not one of them).
STAGE_ORDER: tuple[str, ...] = ("ingest", "validate_raw", "privacy", "validate", "transform", "publish")
#: The zone whose hand-over each validating stage guards.
ZONES: dict[str, str] = {"validate_raw": "raw", "validate": "privacy", "publish": "published marts"}
#: Validation gates in run order: (stage, title).
GATES: tuple[tuple[str, str], ...] = (
    ("validate_raw", "Raw zone"),
    ("validate", "Privacy zone"),
    ("publish", "Published marts"),
)
ACTION_ORDER: tuple[str, ...] = ("drop", "pseudonymize", "generalize", "keep")
HISTOGRAM_BINS: tuple[str, ...] = ("1", "2-4", "5-9", "10-19", "20-49", "50-99", "100+")
FAILED = "failed"
NOT_RUN = "not run"
_PASSING_NODE = frozenset({"pass", "success"})
_COUNTED = ("reserved", "spent")  # ledger statuses that use up budget (crmshield.budget.COUNTED)


# --------------------------------------------------------------------------- helpers


def _get(d: Any, key: str, default: Any = None) -> Any:
    return d.get(key, default) if isinstance(d, Mapping) else default


def _dict(d: Any, key: str) -> dict[str, Any]:
    v = _get(d, key)
    return dict(v) if isinstance(v, Mapping) else {}


def _list(d: Any, key: str) -> list[Any]:
    v = _get(d, key)
    return list(v) if isinstance(v, list | tuple) else []


def _failed(stage: Any) -> bool:
    return _get(stage, "status") == FAILED


def _done(stage: Any) -> dict[str, Any] | None:
    """The stage result if the stage ran and did not fail, else None."""
    return stage if isinstance(stage, Mapping) and not _failed(stage) else None  # type: ignore[return-value]


def _int(v: Any) -> int:
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0


def _rel(target: Path, start: Path) -> str:
    return Path(os.path.relpath(target, start)).as_posix()


def _fixed_iso(text: str) -> str:
    """The ledger's fixed-width ISO-8601 UTC text for *text* (so it compares as text)."""
    at = datetime.fromisoformat(text)
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


# --------------------------------------------------------------------------- manifest parts


def _stage_status(stages: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for name in STAGE_ORDER:
        s = stages.get(name)
        out[name] = NOT_RUN if not isinstance(s, Mapping) else str(s.get("status") or "success")
    return out


def _expectation_failure(f: Any) -> dict[str, Any]:
    """One failed expectation as the manifest records it: names and counts, never a value."""
    return {
        "expectation_type": _get(f, "expectation_type"),
        "column": _get(f, "column"),
        "check": _get(f, "check"),
        "severity": _get(f, "severity") or "critical",
        "unexpected_count": _get(f, "unexpected_count"),
        "element_count": _get(f, "element_count"),
    }


def _failure_rows(stage: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Every failed expectation of a validation result, critical first (names and counts only)."""
    rows = [
        {"suite": _get(s, "suite_name"), **_expectation_failure(f)}
        for s in _list(stage, "suites")
        for f in _list(s, "failures")
    ]
    rows.sort(key=lambda r: r["severity"] != "critical")
    return rows


def _gate_result(stage_name: str, stages: Mapping[str, Any]) -> dict[str, Any] | None:
    """The validation summary a stage recorded: validate_raw/validate themselves, publish's ``validation``
    (or, when publish failed on it, the failure record, which carries the summary fields)."""
    stage = stages.get(stage_name)
    if not isinstance(stage, Mapping):
        return None
    if stage_name == "publish":
        if isinstance(stage.get("validation"), Mapping):
            return dict(stage["validation"])
        return dict(stage) if "suites" in stage else None
    return dict(stage)


def _failure(stages: Mapping[str, Any]) -> dict[str, Any] | None:
    for name in STAGE_ORDER:
        stage = stages.get(name)
        if not _failed(stage):
            continue
        gate = _gate_result(name, stages) if name in ZONES else None
        expectations = _failure_rows(gate)
        failure = {
            "stage": name,
            "zone": stage.get("zone") or ZONES.get(name),
            "error_type": stage.get("error_type"),
            "error": stage.get("error"),
            "critical_failures": sum(1 for e in expectations if e["severity"] == "critical"),
            "warnings": sum(1 for e in expectations if e["severity"] != "critical"),
            "failed_expectations": expectations,
        }
        if name == "transform":  # the warehouse suite: dbt tests and contracts that failed, if recorded
            failure["failed_tests"] = [
                n for n in _warehouse_tests(stage)["non_passing"] if n["status"] not in ("warn", "skipped")
            ]
        return failure
    return None


def _validation(settings: Settings, run_dir: Path, stages: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every validation gate (raw, privacy, published marts) with every suite, pass or fail."""
    out = []
    for name, title in GATES:
        stage = stages.get(name)
        gate = _gate_result(name, stages)
        entry: dict[str, Any] = {"stage": name, "title": title, "zone": ZONES[name]}
        if gate is None:
            status = _get(stage, "status")
            if stage is None:
                status = NOT_RUN
            elif status not in (FAILED, "skipped"):
                status = "no validation recorded"
            entry.update(status=status, suites=[])
            out.append(entry)
            continue
        suites = []
        for s in _list(gate, "suites"):
            page = _get(s, "data_docs_page")
            href = None
            if page:
                target = settings.data_docs / page
                href = _rel(target, run_dir) if target.is_file() else None
            failures = [
                {
                    **_expectation_failure(f),
                    "raised_exception": bool(_get(f, "raised_exception")),
                    "detail": _dict(f, "detail"),
                }
                for f in _list(s, "failures")
            ]
            suites.append(
                {
                    "suite_name": _get(s, "suite_name"),
                    "entity": _get(s, "entity"),
                    "success": bool(_get(s, "success")),
                    "evaluated_expectations": _get(s, "evaluated_expectations"),
                    "failed_expectations": _get(s, "failed_expectations", len(failures)),
                    "failures": failures,
                    "data_docs_page": page,
                    "data_docs_href": href,
                }
            )
        passed = _get(gate, "passed")
        if passed is None:
            passed = not any(f["severity"] == "critical" for s in suites for f in s["failures"])
        entry.update(
            status="passed" if passed and not _failed(stage) else FAILED,
            checkpoint=_get(gate, "checkpoint"),
            passed=bool(passed) and not _failed(stage),
            critical_failures=_get(gate, "critical_failures"),
            warnings=_get(gate, "warnings"),
            suites=suites,
        )
        out.append(entry)
    return out


def _warehouse_tests(transform: Any) -> dict[str, Any]:
    """dbt's own tests, unit tests and model contracts (the warehouse suite)."""
    if not isinstance(transform, Mapping):
        return {"status": NOT_RUN, "counts": {}, "non_passing": []}
    nodes = _list(transform, "nodes")
    non_passing = []  # names, statuses and counts; dbt's messages are not copied (they may quote a value)
    for n in nodes:
        if _get(n, "status") in _PASSING_NODE:
            continue
        uid = str(_get(n, "unique_id") or "")
        parts = uid.split(".")
        rtype = _get(n, "resource_type") or (parts[0] if parts else None)
        name = ".".join(parts[2:]) if rtype == "unit_test" else (parts[2] if len(parts) > 2 else uid)
        non_passing.append(
            {
                "name": name,
                "unique_id": uid,
                "resource_type": rtype,
                "status": _get(n, "status"),
                "failures": _get(n, "failures"),
            }
        )
    order = {"error": 0, "fail": 0, "runtime error": 0, "warn": 1, "skipped": 2}
    non_passing.sort(key=lambda r: (order.get(str(r["status"]), 3), str(r["name"])))
    status = FAILED if _failed(transform) else ("passed" if _get(transform, "success", True) else FAILED)
    return {
        "status": status,
        "command": _get(transform, "command"),
        "dbt_version": _get(transform, "dbt_version"),
        "counts": _dict(transform, "counts"),
        "nodes": len(nodes),
        "non_passing": non_passing,
    }


def _inputs(ingest: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "entity": _get(f, "entity") or entity,
            "file": _get(f, "file"),
            "sha256": _get(f, "sha256"),
            "bytes": _get(f, "bytes"),
            "rows_read": _get(f, "read"),
            "rows_loaded": _get(f, "loaded"),
        }
        for entity, f in _dict(ingest, "files").items()
    ]


def _minimization(privacy: Any) -> dict[str, Any]:
    """Per entity, every source column with its action, output, purposes and why."""
    out: dict[str, Any] = {}
    for entity, info in _dict(privacy, "entities").items():
        cols = []
        for col, a in _dict(info, "columns").items():
            action = _get(a, "action")
            declared = _get(a, "declared_action")
            cols.append(
                {
                    "column": col,
                    "classification": _get(a, "classification"),
                    "action": action,
                    "declared_action": declared if declared and declared != action else None,
                    "output": _get(a, "output"),
                    "purposes": [str(p) for p in _list(a, "purposes")],
                    "why": _get(a, "why"),
                }
            )
        rank = {a: i for i, a in enumerate(ACTION_ORDER)}
        cols.sort(key=lambda c: (rank.get(str(c["action"]), len(rank)), c["column"]))
        by_action: dict[str, int] = {}
        for c in cols:
            by_action[str(c["action"])] = by_action.get(str(c["action"]), 0) + 1
        out[entity] = {
            "rows_in": _get(info, "rows_in"),
            "rows_out": _get(info, "rows_out"),
            "excluded": _dict(info, "excluded"),
            "unknown_columns": [str(c) for c in _list(info, "unknown_columns")],
            "by_action": by_action,
            "columns": cols,
        }
    return out


def _generalized(minimization: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {"entity": e, "column": c["column"], "output": c["output"], "purposes": c["purposes"]}
        for e, info in minimization.items()
        for c in info["columns"]
        if c["action"] == "generalize"
    ]


def _pseudonymized(minimization: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {"entity": e, "column": c["column"], "output": c["output"], "purposes": c["purposes"]}
        for e, info in minimization.items()
        for c in info["columns"]
        if c["action"] == "pseudonymize"
    ]


def _privacy_rights(ingest: Mapping[str, Any], privacy: Any) -> dict[str, Any]:
    """Erasure requests processed and consent withdrawals applied: counts only."""
    erasure = _dict(ingest, "erasure")
    processed = erasure.get("requests_processed")
    if isinstance(processed, Mapping):
        n_requests = 1
        subject = _dict(processed, "subject_identifiers")
        identifiers = sum(_int(v) for v in subject.values())
        tokens_added = _get(processed, "suppression_tokens_added")
        landing_removed = _dict(processed, "landing_records_removed")
    else:
        n_requests = len(processed) if isinstance(processed, list) else _int(processed)
        identifiers, tokens_added, landing_removed = None, None, {}
    files = _dict(ingest, "files")
    excluded = {e: _dict(v, "excluded") for e, v in _dict(privacy, "entities").items()}
    return {
        "erasure_requests_processed": n_requests,
        "erasure_identifiers_matched": identifiers,
        "suppression_tokens_added": tokens_added,
        "suppression_entries": _get(erasure, "suppression_entries", 0),
        "landing_records_removed": {k: _int(v) for k, v in landing_removed.items()},
        "erased_rows": {e: _int(_get(f, "erased")) for e, f in files.items()},
        "consent_withdrawals_applied": {e: _int(x.get("excluded_consent")) for e, x in excluded.items()},
        "privacy_ran": isinstance(_done(privacy), Mapping),
    }


def _quarantine(ingest: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for entity, f in _dict(ingest, "files").items():
        for reason, n in sorted(_dict(f, "quarantine_reasons").items()):
            rows.append({"entity": entity, "file": _get(f, "file"), "reason": reason, "rows": n})
    return rows


def _budget_history(settings: Settings, run_id: str, publish: Any, now: datetime) -> dict[str, Any]:
    """Cumulative ε charged to the population in the budget period, one point per counted charge.

    The period is the one this run's publication was charged in (publish.json), else the period
    holding *now* (from the budget configuration). The ledger is opened read-only.
    """
    path = settings.dp_ledger
    out: dict[str, Any] = {"ledger": str(path), "available": False, "points": []}
    pop = _dict(_dict(publish, "budget"), "population")
    name, period = pop.get("name"), pop.get("period")
    cap_e, cap_d = pop.get("cap_epsilon"), pop.get("cap_delta")
    start, end = pop.get("period_start"), pop.get("period_end")
    if not (name and start and end):
        try:
            from crmshield.budget import load_budget_config, period_bounds

            cfg = load_budget_config(settings.dp_budget_config)
        except Exception as exc:  # noqa: BLE001 - a report must still be written
            out["note"] = f"budget configuration unreadable ({type(exc).__name__})"
            return out
        b = cfg.population_budget
        name, period, cap_e, cap_d = cfg.population, b.period, b.epsilon, b.delta
        s, e = period_bounds(b.period, now)
        start, end = s.isoformat(), e.isoformat()
    out.update(population=name, period=period, period_start=start, period_end=end, cap_epsilon=cap_e, cap_delta=cap_d)
    if not path.is_file():
        out["note"] = "no privacy-budget ledger file: nothing has been charged yet"
        return out
    # No -wal file: everything is in the main file; read it as immutable (no lock, no side files).
    wal = path.with_name(path.name + "-wal")
    uri = path.resolve().as_uri() + ("?mode=ro" if wal.exists() else "?immutable=1")
    try:
        conn = sqlite3.connect(uri, uri=True)
        try:
            rows = conn.execute(
                "SELECT created_at, kind, what, epsilon, delta, run_id, status FROM ledger"
                " WHERE population = ? AND created_at >= ? AND created_at < ? ORDER BY created_at, id",
                (name, _fixed_iso(str(start)), _fixed_iso(str(end))),
            ).fetchall()
        finally:
            conn.close()
    except (sqlite3.Error, ValueError) as exc:
        out["note"] = f"ledger unreadable ({type(exc).__name__})"
        return out
    cum_e = cum_d = 0.0
    points = []
    by_status: dict[str, int] = {}
    for created_at, kind, what, eps, delta, rid, status in rows:
        by_status[status] = by_status.get(status, 0) + 1
        if status not in _COUNTED:
            continue
        cum_e += float(eps)
        cum_d += float(delta)
        points.append(
            {
                "at": created_at,
                "kind": kind,
                # a mart name; an analyst's query text is never copied (it may hold literals)
                "what": what if kind == "publication" else None,
                "epsilon": float(eps),
                "delta": float(delta),
                "cumulative_epsilon": cum_e,
                "status": status,
                "this_run": rid == run_id,
            }
        )
    out.update(
        available=True,
        points=points,
        entries_by_status=by_status,
        spent_epsilon=cum_e,
        spent_delta=cum_d,
        remaining_epsilon=(cap_e - cum_e) if isinstance(cap_e, int | float) else None,
        this_run_epsilon=math.fsum(p["epsilon"] for p in points if p["this_run"]),
        as_of=now.isoformat(timespec="seconds"),
    )
    return out


def _live_publication(settings: Settings) -> dict[str, Any]:
    """Which run the analyst database serves now (its ``_dp_catalog``, read only)."""
    path = settings.published
    out: dict[str, Any] = {"analyst_db": str(path), "exists": path.is_file(), "live": None}
    if not path.is_file():
        return out
    try:
        import duckdb

        from crmshield.publish import CATALOG_TABLE

        with duckdb.connect(str(path), read_only=True) as con:
            rows = con.execute(
                f"SELECT run_id, input_fingerprint, max(published_at), count(*) FROM {CATALOG_TABLE}"
                " GROUP BY run_id, input_fingerprint ORDER BY max(published_at) DESC"
            ).fetchall()
    except Exception as exc:  # noqa: BLE001 - locked, no catalog, ...: say so, do not fail the report
        out["note"] = f"catalog unreadable ({type(exc).__name__})"
        return out
    if rows:
        rid, fp, at, n = rows[0]
        out["live"] = {
            "run_id": rid,
            "input_fingerprint": fp,
            "published_at": at.isoformat() if hasattr(at, "isoformat") else str(at),
            "marts": int(n),
        }
    return out


def _publication(
    settings: Settings, run_id: str, publish: Any, failure: Mapping[str, Any] | None, now: datetime
) -> dict[str, Any]:
    status = _get(publish, "status") if isinstance(publish, Mapping) else NOT_RUN
    published = status == "published"
    live = _live_publication(settings)
    if published:
        note = "this run published the marts below"
    elif status == "skipped":
        note = "same input already published: nothing new was released and no ε was spent"
    elif status == FAILED:
        note = (
            "the publish stage failed: nothing was published and the previously published marts were left as they were"
        )
    else:
        where = f" (the run failed at {failure['stage']})" if failure else ""
        note = (
            f"publish did not run{where}: nothing was published"
            " and the previously published marts were left as they were"
        )
    return {
        "status": status,
        "published_by_this_run": published,
        "note": note,
        "marts": _list(publish, "marts") if published or status == "skipped" else [],
        "epsilon_spent": _get(publish, "epsilon_spent", 0.0) if published else 0.0,
        "delta_spent": _get(publish, "delta_spent", 0.0) if published else 0.0,
        **live,
        "budget_history": _budget_history(settings, run_id, publish, now),
    }


def _reconciliation(ingest: Mapping[str, Any], privacy: Any) -> dict[str, Any]:
    recon: dict[str, Any] = {}
    entities = _dict(privacy, "entities") if _done(privacy) else None
    for entity, f in _dict(ingest, "files").items():
        read, loaded = _int(f.get("read")), _int(f.get("loaded"))
        quarantined, duplicates = _int(f.get("quarantined")), _int(f.get("duplicates"))
        expired, erased = _int(f.get("expired")), _int(f.get("erased"))
        ok = read == loaded + quarantined + duplicates + expired + erased
        p = _dict(entities, entity)
        excluded = _dict(p, "excluded")
        if entities is not None:
            ok = (
                ok
                and p.get("rows_in") == loaded
                and _int(p.get("rows_in")) == _int(p.get("rows_out")) + sum(_int(v) for v in excluded.values())
            )
        recon[entity] = {
            "read": read, "loaded": loaded, "quarantined": quarantined, "duplicates": duplicates,
            "expired": expired, "erased": erased, "privacy_rows": p.get("rows_out") if entities is not None else None,
            "excluded": excluded, "privacy_checked": entities is not None, "ok": ok,
        }  # fmt: skip
    return recon


def build_manifest(settings: Settings, run_id: str, stages: Mapping[str, Any]) -> dict[str, Any]:
    """The run manifest. ``stages`` maps stage names to results; any but ``ingest`` may be absent or None."""
    ingest = stages.get("ingest")
    if not isinstance(ingest, Mapping):
        raise ValueError(f"run {run_id}: cannot build a manifest without the ingest result")
    privacy, validate = stages.get("privacy"), stages.get("validate")
    transform, publish = stages.get("transform"), stages.get("publish")
    present = {k: v for k, v in stages.items() if isinstance(v, Mapping)}
    now = datetime.now(UTC)
    run_dir = settings.run_dir(run_id)

    recon = _reconciliation(ingest, privacy)
    failure = _failure(stages)
    stage_status = _stage_status(stages)
    if failure:
        status = FAILED
    elif any(v == NOT_RUN for v in stage_status.values()):
        status = "incomplete"
    elif not all(r["ok"] for r in recon.values()):
        status = "reconciliation_failed"
    else:
        status = "success"

    done_privacy, done_transform, done_publish = _done(privacy), _done(transform), _done(publish)
    files = _dict(ingest, "files")
    minimization = _minimization(done_privacy)
    publication = _publication(settings, run_id, publish, failure, now)
    marts = publication["marts"]
    docs_index = _get(validate, "data_docs_index") or _get(stages.get("validate_raw"), "data_docs_index")
    return {
        "run_id": run_id,
        "input_fingerprint": ingest.get("input_fingerprint"),
        "status": status,
        "failure": failure,
        "stage_order": list(STAGE_ORDER),
        "stage_status": stage_status,
        "generated_at": now.isoformat(timespec="seconds"),
        "artifacts": {
            "landing": str(settings.landing),
            "raw_zone": str(settings.raw),
            "quarantine": str(settings.quarantine),
            "privacy_zone": str(settings.privacy),
            "warehouse": str(settings.warehouse),
            "analyst_database": publication["analyst_db"],
            "gx_data_docs": str(docs_index or settings.data_docs),
            "dp_ledger": str(settings.dp_ledger),
            "run_report": str(run_dir / "report.html"),
            "manifest": str(run_dir / "manifest.json"),
            "run_index": str(settings.runs / "index.html"),
        },
        "inputs": _inputs(ingest),
        "rows": {
            "landing": {e: f.get("read") for e, f in files.items()},
            "raw": {e: f.get("loaded") for e, f in files.items()},
            "quarantined": {e: f.get("quarantined") for e, f in files.items()},
            "duplicates": {e: f.get("duplicates") for e, f in files.items()},
            "expired": {e: f.get("expired", 0) for e, f in files.items()},
            "erased": {e: f.get("erased", 0) for e, f in files.items()},
            "privacy": {e: v.get("rows_out") for e, v in _dict(done_privacy, "entities").items()},
            "excluded": {e: v.get("excluded", {}) for e, v in _dict(done_privacy, "entities").items()},
            "warehouse": _dict(done_transform, "mart_row_counts"),
            "published": {m.get("name"): m.get("rows") for m in marts if isinstance(m, Mapping)},
        },
        "reconciliation": recon,
        "quarantine": _quarantine(ingest),
        "privacy_rights": _privacy_rights(ingest, privacy),
        "minimization": minimization,
        "pseudonymization": {
            "method": _get(done_privacy, "method"),
            "key_version": _get(done_privacy, "key_version"),
            "key_source": _get(done_privacy, "key_source"),
            "columns": _pseudonymized(minimization),
        },
        "policy": {
            "file": _get(done_privacy, "policy_file"),
            "version": _get(done_privacy, "policy_version"),
            "sha256": _get(done_privacy, "policy_sha256"),
            "reference_date": _get(done_privacy, "reference_date"),
        },
        "generalization": _generalized(minimization),
        "redactions": {
            "columns": [str(c) for c in _list(done_privacy, "redacted_columns")],
            "by_type": _dict(done_privacy, "redactions"),
        },
        "k_anonymity": _get(done_privacy, "k_anonymity"),
        "validation": _validation(settings, run_dir, stages),
        "data_docs": {
            "site": str(settings.data_docs),
            "index_href": _rel(settings.data_docs / "index.html", run_dir)
            if (settings.data_docs / "index.html").is_file()
            else None,
        },
        "warehouse_tests": _warehouse_tests(transform),
        "retention": {"reference_date": ingest.get("reference_date"), "rules": _dict(ingest, "retention")},
        "erasure": _dict(ingest, "erasure"),
        "publication_status": publication["status"],
        "publication": publication,
        "epsilon_spent": publication["epsilon_spent"],
        "delta_spent": publication["delta_spent"],
        "marts": marts,
        "dp_budget": _dict(done_publish, "budget"),
        "timings": {s: _get(v, "seconds") for s, v in present.items()},
        "stages": present,
    }


# --------------------------------------------------------------------------- SVG charts


def _svg_num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _bin_upper(label: str) -> float:
    if label.endswith("+"):
        return math.inf
    try:
        return float(label.split("-")[-1])
    except ValueError:
        return math.inf


def histogram_svg(histogram: Mapping[str, Any], k: Any) -> str:
    """Equivalence-class sizes as inline SVG bars (classes per size bin; bins below k in red)."""
    from markupsafe import escape

    bins = [b for b in HISTOGRAM_BINS if b in histogram] + sorted(b for b in histogram if b not in HISTOGRAM_BINS)
    if not bins:
        return ""
    counts = [_int(histogram[b]) for b in bins]
    peak = max(counts) or 1
    w, h, left, bottom, top = 640, 230, 44, 40, 18
    slot = (w - left - 10) / len(bins)
    bar_w = slot * 0.62
    plot_h = h - bottom - top
    kk = _int(k)
    parts = [
        f'<svg class="chart" role="img" aria-label="equivalence class size histogram" width="{w}" height="{h}"'
        f' viewBox="0 0 {w} {h}">',
        f'<line x1="{left}" y1="{h - bottom}" x2="{w - 6}" y2="{h - bottom}" stroke="#98a2b3"/>',
    ]
    for i, (b, n) in enumerate(zip(bins, counts, strict=True)):
        bh = plot_h * n / peak
        x = left + i * slot + (slot - bar_w) / 2
        y = h - bottom - bh
        below = kk > 0 and _bin_upper(b) < kk
        colour = "#d92d20" if below else "#4f7cff"
        parts.append(
            f'<rect x="{_svg_num(x)}" y="{_svg_num(y)}" width="{_svg_num(bar_w)}" height="{_svg_num(max(bh, 0))}"'
            f' fill="{colour}"><title>{escape(b)}: {n} classes</title></rect>'
        )
        cx = _svg_num(x + bar_w / 2)
        parts.append(f'<text x="{cx}" y="{_svg_num(y - 4)}" text-anchor="middle" class="v">{n}</text>')
        parts.append(f'<text x="{cx}" y="{h - bottom + 16}" text-anchor="middle">{escape(b)}</text>')
    parts.append(
        f'<text x="{left}" y="{h - 6}">rows per equivalence class'
        f" (bins in red are below k={kk}: none may remain)</text>"
    )
    parts.append(f'<text x="4" y="{top}" class="v">classes</text>')
    parts.append("</svg>")
    return "".join(parts)


def _parse_time(text: Any) -> datetime | None:
    try:
        at = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def budget_svg(history: Mapping[str, Any]) -> str:
    """Cumulative ε charged in the budget period against the cap, one point per counted charge.

    The x axis runs from the start of the period to the report's time (at most the period's end),
    so the charges of a young period do not huddle at the left edge.
    """
    from markupsafe import escape

    if not history.get("available"):
        return ""
    start, end = _parse_time(history.get("period_start")), _parse_time(history.get("period_end"))
    if start is None or end is None or end <= start:
        return ""
    points = [(at, p) for p in history.get("points") or [] if (at := _parse_time(p.get("at"))) is not None]
    as_of = _parse_time(history.get("as_of")) or end
    latest = max([as_of, *(at for at, _ in points)])
    right = min(end, max(latest + (latest - start) * 0.08, start + timedelta(days=1)))
    cap = history.get("cap_epsilon")
    cap_v = float(cap) if isinstance(cap, int | float) and not isinstance(cap, bool) else None
    spent = float(history.get("spent_epsilon") or 0.0)
    top_val = max(cap_v or 0.0, spent, 1.0) * 1.1
    w, h, left, right_margin, top, bottom = 760, 290, 52, 110, 14, 58
    pw, ph = w - left - right_margin, h - top - bottom
    span = (right - start).total_seconds()

    def x_of(at: datetime) -> float:
        return left + pw * min(max((at - start).total_seconds() / span, 0.0), 1.0)

    def y_of(v: float) -> float:
        return top + ph * (1 - v / top_val)

    parts = [
        f'<svg class="chart" role="img" aria-label="privacy budget spent over time" width="{w}" height="{h}"'
        f' viewBox="0 0 {w} {h}">',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fafbfc" stroke="#d0d5dd"/>',
    ]
    step = 10 ** math.floor(math.log10(top_val / 4))
    for mult in (1, 2, 2.5, 5, 10):
        if top_val / (step * mult) <= 6:
            step *= mult
            break
    v = 0.0
    while v <= top_val:
        y = _svg_num(y_of(v))
        parts.append(f'<line x1="{left}" y1="{y}" x2="{left + pw}" y2="{y}" stroke="#eaecf0"/>')
        parts.append(f'<text x="{left - 6}" y="{y}" dy="4" text-anchor="end">{v:g}</text>')
        v += step
    fmt = "%Y-%m-%d" if span >= 3 * 86400 else "%m-%d %H:%M"
    for frac, anchor in ((0.0, "start"), (0.5, "middle"), (1.0, "end")):
        at = start + (right - start) * frac
        parts.append(
            f'<text x="{_svg_num(left + pw * frac)}" y="{top + ph + 16}" text-anchor="{anchor}">'
            f"{escape(at.strftime(fmt))}</text>"
        )
    until = "its end" if right >= end else "now"
    parts.append(
        f'<text x="{left}" y="{top + ph + 34}">UTC, from the start of the period to {until}'
        f" (the budget refreshes {escape(end.strftime('%Y-%m-%d'))}); y: cumulative ε</text>"
    )
    if cap_v is not None:
        yc = _svg_num(y_of(cap_v))
        parts.append(
            f'<line x1="{left}" y1="{yc}" x2="{left + pw}" y2="{yc}" stroke="#d92d20" stroke-dasharray="6 4"/>'
        )
        parts.append(f'<text x="{left + pw + 6}" y="{yc}" dy="4" class="cap">cap ε={cap_v:g}</text>')
    path = [f"M{left},{_svg_num(y_of(0))}"]
    prev = 0.0
    dots = []
    for at, p in points:
        x = _svg_num(x_of(at))
        cum = float(p.get("cumulative_epsilon") or 0.0)
        path.append(f"L{x},{_svg_num(y_of(prev))}L{x},{_svg_num(y_of(cum))}")
        prev = cum
        colour = "#1d2939" if p.get("this_run") else ("#f79009" if p.get("status") == "reserved" else "#4f7cff")
        label = f"{p.get('kind')} ε={float(p.get('epsilon') or 0.0):.3g}, cumulative {cum:.3g} at {p.get('at')}"
        cy = _svg_num(y_of(cum))
        dots.append(f'<circle cx="{x}" cy="{cy}" r="3.5" fill="{colour}"><title>{escape(label)}</title></circle>')
    x_end = _svg_num(left + pw)  # the level holds until now (and the period's end)
    path.append(f"L{x_end},{_svg_num(y_of(prev))}")
    line = "".join(path)
    parts.append(f'<path d="{line}L{x_end},{_svg_num(y_of(0))}Z" fill="#4f7cff" fill-opacity="0.15" stroke="none"/>')
    parts.append(f'<path d="{line}" fill="none" stroke="#4f7cff" stroke-width="2"/>')
    parts.extend(dots)
    parts.append(f'<text x="{left + pw + 6}" y="{_svg_num(y_of(prev))}" dy="14" class="v">spent {prev:.3g}</text>')
    lx = left
    for colour, text in (("#1d2939", "this run"), ("#4f7cff", "other releases"), ("#f79009", "reserved (in flight)")):
        parts.append(f'<circle cx="{lx + 4}" cy="{h - 10}" r="3.5" fill="{colour}"/>')
        parts.append(f'<text x="{lx + 12}" y="{h - 6}">{text}</text>')
        lx += 130
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------- rendering


def _fmt(value: Any, spec: str = "g", default: str = "–") -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return default


def _environment(undefined: type | None = None):  # type: ignore[no-untyped-def]
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=undefined or jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = _fmt
    return env


def render_report(manifest: Mapping[str, Any], undefined: type | None = None) -> str:
    """The self-contained HTML report of a manifest (``undefined``: a Jinja Undefined class, for tests)."""
    from markupsafe import Markup

    ka = manifest.get("k_anonymity") or {}
    hist = ka.get("class_size_histogram") if isinstance(ka, Mapping) else None
    pub = manifest.get("publication") or {}
    history = pub.get("budget_history") or {}
    return (
        _environment(undefined)
        .get_template(TEMPLATE.name)
        .render(
            m=manifest,
            histogram_svg=Markup(histogram_svg(hist, ka.get("k"))) if isinstance(hist, Mapping) else "",
            budget_svg=Markup(budget_svg(history)),
            suite_links={
                s["suite_name"]: s["data_docs_href"]
                for g in manifest.get("validation") or []
                for s in g.get("suites") or []
                if s.get("data_docs_href")
            },
            index_href="../index.html",
        )
    )


def _index_rows(settings: Settings) -> list[dict[str, Any]]:
    keyed: list[tuple[tuple[str, int], dict[str, Any]]] = []
    if not settings.runs.is_dir():
        return []
    for d in settings.runs.iterdir():
        path = d / "manifest.json"
        if not d.is_dir() or not path.is_file():
            continue
        try:
            m = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            m = {}
        if not isinstance(m, dict):
            m = {}
        failure = m.get("failure") if isinstance(m.get("failure"), Mapping) else {}
        row = {
            "run_id": str(m.get("run_id") or d.name),
            "status": str(m.get("status") or "unreadable"),
            "generated_at": str(m.get("generated_at") or ""),
            "fingerprint": str(m.get("input_fingerprint") or "")[:12],
            "failed_stage": failure.get("stage"),
            "failed_zone": failure.get("zone"),
            "publication_status": m.get("publication_status"),
            "epsilon_spent": m.get("epsilon_spent"),
            "href": f"{quote(d.name)}/report.html" if (d / "report.html").is_file() else None,
        }
        keyed.append(((row["generated_at"], path.stat().st_mtime_ns), row))
    keyed.sort(key=lambda kr: kr[0], reverse=True)
    return [row for _, row in keyed]


def write_run_index(settings: Settings, undefined: type | None = None) -> Path:
    """``reports/runs/index.html``: every run with a manifest, newest first, linking to its report."""
    settings.runs.mkdir(parents=True, exist_ok=True)
    html = (
        _environment(undefined)
        .get_template(INDEX_TEMPLATE.name)
        .render(runs=_index_rows(settings), generated_at=datetime.now(UTC).isoformat(timespec="seconds"))
    )
    path = settings.runs / "index.html"
    _atomic_write(path, html)
    return path


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_run_report(settings: Settings, run_id: str, stages: Mapping[str, Any]) -> Path:
    """Write manifest.json and report.html into the run directory, rebuild the run index;
    return the manifest path."""
    manifest = build_manifest(settings, run_id, stages)
    run_dir = settings.run_dir(run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(run_dir / "report.html", render_report(manifest))
    manifest_path = run_dir / "manifest.json"
    _atomic_write(manifest_path, json.dumps(manifest, indent=2, sort_keys=True, default=str))
    (settings.runs / "LATEST").write_text(run_id + "\n", encoding="utf-8")
    write_run_index(settings)
    return manifest_path

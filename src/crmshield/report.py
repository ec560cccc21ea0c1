"""Run manifest (JSON) and a self-contained HTML run report.

Both are built only from the stage results (counts, paths, column actions,
validation outcomes, ε): no data value ever reaches them. The HTML has no
external assets, so it opens offline.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crmshield.config import Settings

TEMPLATE = Path(__file__).with_name("templates") / "run_report.html.j2"


def _suites(validate: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for s in validate.get("suites", []):
        failed = [
            f"[{f.get('severity')}] {f.get('expectation_type')}({f.get('column') or ''})"
            + (f" unexpected={f['unexpected_count']}" if f.get("unexpected_count") is not None else "")
            for f in s.get("failures", [])
        ]
        out.append(
            {
                "suite": s.get("suite_name"),
                "success": s.get("success"),
                "evaluated": s.get("evaluated_expectations"),
                "failed": failed,
            }
        )
    return out


def build_manifest(settings: Settings, run_id: str, stages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    ingest, privacy = stages["ingest"], stages["privacy"]
    transform, publish, validate = stages["transform"], stages["publish"], stages["validate"]
    recon: dict[str, Any] = {}
    for entity, f in ingest["files"].items():
        p = privacy["entities"].get(entity, {})
        excluded = p.get("excluded", {})
        expired, erased = f.get("expired", 0), f.get("erased", 0)
        ok = (
            f["read"] == f["loaded"] + f["quarantined"] + f["duplicates"] + expired + erased
            and p.get("rows_in") == f["loaded"]
            and p.get("rows_in", 0) == p.get("rows_out", 0) + sum(excluded.values())
        )
        recon[entity] = {
            "read": f["read"], "loaded": f["loaded"], "quarantined": f["quarantined"],
            "duplicates": f["duplicates"], "expired": expired, "erased": erased, "privacy_rows": p.get("rows_out"),
            "excluded": excluded,
            "ok": ok,
        }  # fmt: skip
    marts = publish.get("marts", [])
    run_dir = settings.run_dir(run_id)
    return {
        "run_id": run_id,
        "input_fingerprint": ingest["input_fingerprint"],
        "status": "success" if all(r["ok"] for r in recon.values()) else "reconciliation_failed",
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "artifacts": {
            "landing": str(settings.landing),
            "raw_zone": str(settings.raw),
            "quarantine": str(settings.quarantine),
            "privacy_zone": str(settings.privacy),
            "warehouse": str(settings.warehouse),
            "analyst_database": str(publish.get("analyst_db", settings.published)),
            "gx_data_docs": str(validate.get("data_docs_index") or settings.data_docs),
            "run_report": str(run_dir / "report.html"),
            "manifest": str(run_dir / "manifest.json"),
        },
        "rows": {
            "landing": {e: f["read"] for e, f in ingest["files"].items()},
            "raw": {e: f["loaded"] for e, f in ingest["files"].items()},
            "quarantined": {e: f["quarantined"] for e, f in ingest["files"].items()},
            "duplicates": {e: f["duplicates"] for e, f in ingest["files"].items()},
            "expired": {e: f.get("expired", 0) for e, f in ingest["files"].items()},
            "erased": {e: f.get("erased", 0) for e, f in ingest["files"].items()},
            "privacy": {e: v["rows_out"] for e, v in privacy["entities"].items()},
            "excluded": {e: v.get("excluded", {}) for e, v in privacy["entities"].items()},
            "warehouse": transform.get("mart_row_counts", {}),
            "published": {m["name"]: m.get("rows") for m in marts},
        },
        "reconciliation": recon,
        "k_anonymity": privacy.get("k_anonymity"),
        "retention": {"reference_date": ingest.get("reference_date"), "rules": ingest.get("retention", {})},
        "erasure": ingest.get("erasure", {}),
        "publication_status": publish.get("status"),
        "epsilon_spent": publish.get("epsilon_spent", 0.0),
        "delta_spent": publish.get("delta_spent", 0.0),
        "marts": marts,
        "dp_budget": publish.get("budget", {}),
        "timings": {s: v.get("seconds") for s, v in stages.items()},
        "stages": stages,
    }


def write_run_report(settings: Settings, run_id: str, stages: dict[str, dict[str, Any]]) -> Path:
    """Write manifest.json and report.html into the run directory; return the manifest path."""
    import jinja2

    manifest = build_manifest(settings, run_id, stages)
    run_dir = settings.run_dir(run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    report_path = run_dir / "report.html"
    docs = manifest["artifacts"]["gx_data_docs"]
    data_docs = os.path.relpath(docs, run_dir) if Path(docs).exists() else None
    dbt_counts = stages["transform"].get("counts", {})
    html = (
        jinja2.Environment(autoescape=True, undefined=jinja2.ChainableUndefined)
        .from_string(TEMPLATE.read_text(encoding="utf-8"))
        .render(
            m=manifest,
            suites=_suites(stages["validate"]),
            data_docs=data_docs,
            dbt_counts=dbt_counts,
            marts=manifest["marts"],
        )
    )
    tmp = report_path.with_name(".report.html.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(report_path)
    manifest_path = run_dir / "manifest.json"
    tmp = manifest_path.with_name(".manifest.json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str), encoding="utf-8")
    tmp.replace(manifest_path)
    latest = settings.runs / "LATEST"
    latest.write_text(run_id + "\n", encoding="utf-8")
    return manifest_path

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

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>crmshield run {{ m.run_id }}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#1d2430;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #dde3ea;padding-bottom:.3rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0}th,td{text-align:left;padding:.3rem .6rem;border-bottom:1px solid #eef1f4;vertical-align:top}
th{background:#f5f7fa;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#17803d;font-weight:600}.bad{color:#b42318;font-weight:600}.muted{color:#667085}
code{background:#f2f4f7;padding:0 .25rem;border-radius:3px}
.badge{display:inline-block;padding:.1rem .5rem;border-radius:999px;font-size:.85rem;background:#ecfdf3;color:#17803d}
.badge.fail{background:#fef3f2;color:#b42318}
</style></head><body>
<h1>crmshield run <code>{{ m.run_id }}</code></h1>
<p class="muted">Input fingerprint <code>{{ m.input_fingerprint[:16] }}…</code> · generated {{ m.generated_at }} ·
status <span class="badge{% if m.status != 'success' %} fail{% endif %}">{{ m.status }}</span></p>

<h2>Rows per stage</h2>
<table><tr><th>entity</th><th>read (landing)</th><th>loaded (raw)</th><th>quarantined</th><th>duplicates</th>
<th>privacy zone</th><th>excluded</th><th>reconciles</th></tr>
{% for e, r in m.reconciliation.items() %}
<tr><td>{{ e }}</td><td class="n">{{ r.read }}</td><td class="n">{{ r.loaded }}</td><td class="n">{{ r.quarantined }}</td>
<td class="n">{{ r.duplicates }}</td><td class="n">{{ r.privacy_rows }}</td>
<td>{% for k, v in r.excluded.items() %}{{ k }}: {{ v }}<br>{% endfor %}</td>
<td class="{{ 'ok' if r.ok else 'bad' }}">{{ 'yes' if r.ok else 'NO' }}</td></tr>
{% endfor %}</table>
<p class="muted">read = loaded + quarantined + duplicates; loaded = privacy zone + excluded.</p>

<h2>Quarantine (restricted area; counts by field and reason)</h2>
<table><tr><th>file</th><th>field:reason</th><th>rows</th></tr>
{% for f in m.stages.ingest.files.values() %}{% for reason, n in f.quarantine_reasons.items() %}
<tr><td>{{ f.file }}</td><td><code>{{ reason }}</code></td><td class="n">{{ n }}</td></tr>
{% endfor %}{% endfor %}</table>

<h2>What came in</h2>
<table><tr><th>file</th><th>sha256</th><th>bytes</th></tr>
{% for f in m.stages.ingest.files.values() %}<tr><td>{{ f.file }}</td><td><code>{{ f.sha256[:16] }}…</code></td>
<td class="n">{{ f.bytes }}</td></tr>{% endfor %}</table>

<h2>Minimization and pseudonymization</h2>
<p>Pseudonyms: {{ m.stages.privacy.method }}, key version <code>{{ m.stages.privacy.key_version }}</code>
(key source: {{ m.stages.privacy.key_source }}; the key itself is never recorded). Reference date for age bands:
{{ m.stages.privacy.reference_date }}.</p>
<p>Redactions in ticket text: {% for k, v in m.stages.privacy.redactions.items() %}<code>{{ k }}</code> {{ v }}{% if not loop.last %}, {% endif %}{% endfor %}.</p>
{% for e, info in m.stages.privacy.entities.items() %}
<h3>{{ e }}</h3><table><tr><th>column</th><th>action</th><th>why</th></tr>
{% for c, a in info.columns.items() %}<tr><td><code>{{ c }}</code></td><td>{{ a.action }}</td><td>{{ a.why }}</td></tr>{% endfor %}
</table>{% endfor %}

<h2>Validation (Great Expectations)</h2>
<p>Overall: <span class="{{ 'ok' if m.stages.validate.success else 'bad' }}">{{ 'passed' if m.stages.validate.success else 'FAILED' }}</span>
{% if data_docs %} · <a href="{{ data_docs }}">Data Docs</a>{% endif %}</p>
<table><tr><th>suite</th><th>result</th><th>expectations</th><th>failed</th></tr>
{% for s in suites %}<tr><td>{{ s.suite }}</td><td class="{{ 'ok' if s.success else 'bad' }}">{{ 'pass' if s.success else 'fail' }}</td>
<td class="n">{{ s.evaluated }}</td><td>{% for f in s.failed %}<code>{{ f }}</code><br>{% endfor %}</td></tr>{% endfor %}</table>

<h2>Warehouse (dbt)</h2>
<table><tr><th>what</th><th>count</th></tr>
{% for k, v in dbt_counts.items() %}<tr><td>{{ k }}</td><td class="n">{{ v }}</td></tr>{% endfor %}</table>
<table><tr><th>mart</th><th>rows</th></tr>
{% for k, v in m.rows.warehouse.items() %}<tr><td>{{ k }}</td><td class="n">{{ v }}</td></tr>{% endfor %}</table>

<h2>Published DP marts</h2>
<p>Status: {{ m.stages.publish.status }}{% if m.stages.publish.status == 'skipped' %} (same input already published; no ε spent){% endif %}.
ε spent by this run: <b>{{ m.epsilon_spent }}</b>.</p>
<table><tr><th>mart</th><th>rows</th><th>ε</th><th>δ</th></tr>
{% for mart in marts %}<tr><td>{{ mart.name }}</td><td class="n">{{ mart.rows }}</td><td class="n">{{ mart.epsilon }}</td><td class="n">{{ mart.delta }}</td></tr>{% endfor %}</table>

<h2>Artifacts</h2>
<table>{% for k, v in m.artifacts.items() %}<tr><td>{{ k }}</td><td><code>{{ v }}</code></td></tr>{% endfor %}</table>

<h2>Stage timings</h2>
<table>{% for k, v in m.timings.items() %}<tr><td>{{ k }}</td><td class="n">{{ v }} s</td></tr>{% endfor %}</table>
</body></html>
"""


def _suites(validate: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for s in validate.get("suites", []):
        failed = [
            f"{f.get('expectation_type', f.get('type', '?'))}({f.get('column') or ''})"
            + (f" unexpected={f['unexpected_count']}" if f.get("unexpected_count") is not None else "")
            for f in s.get("failed_expectations", s.get("failed", []))
        ]
        out.append(
            {
                "suite": s.get("suite") or s.get("suite_name") or s.get("name"),
                "success": s.get("success"),
                "evaluated": s.get("evaluated_expectations", s.get("evaluated")),
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
        ok = f["read"] == f["loaded"] + f["quarantined"] + f["duplicates"] and p.get("rows_in") == f["loaded"] and (
            p.get("rows_in", 0) == p.get("rows_out", 0) + sum(excluded.values())
        )
        recon[entity] = {
            "read": f["read"], "loaded": f["loaded"], "quarantined": f["quarantined"],
            "duplicates": f["duplicates"], "privacy_rows": p.get("rows_out"), "excluded": excluded,
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
            "privacy": {e: v["rows_out"] for e, v in privacy["entities"].items()},
            "excluded": {e: v.get("excluded", {}) for e, v in privacy["entities"].items()},
            "warehouse": transform.get("mart_rows", {}),
            "published": {m["name"]: m.get("rows") for m in marts},
        },
        "reconciliation": recon,
        "publication_status": publish.get("status"),
        "epsilon_spent": publish.get("epsilon_spent", 0.0),
        "delta_spent": publish.get("delta_spent", 0.0),
        "marts": marts,
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
    dbt_counts = {
        k: v for k, v in stages["transform"].items() if isinstance(v, int) and not isinstance(v, bool)
    }
    html = (
        jinja2.Environment(autoescape=True, undefined=jinja2.ChainableUndefined)
        .from_string(_TEMPLATE)
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

"""crmshield command line.

Exit codes: 0 success; 1 a stage failed (validation, dbt, publication...);
2 bad usage; 3 Java missing or too old; 4 no pseudonymization key;
5 a DP query was refused (not one aggregate over a DP-queryable table: nothing
spent); 6 the privacy budget refused it (would exceed a budget, or the analyst
has no budget: nothing ran).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from crmshield.config import Settings

app = typer.Typer(
    help="Privacy-first analytics pipeline for CRM exports: ingest, pseudonymize (Spark), "
    "validate (Great Expectations), model (dbt on DuckDB) and publish DP marts (SmartNoise).\n\n"
    'Interactive DP queries: `crmshield query "SQL"` (--explain to see the cost first, --csv PATH for a '
    "spreadsheet), `crmshield budget` for what is left.\n\n"
    "Onboarding an export: `crmshield profile FILE`, then `crmshield quarantine` for the rows ingest set aside "
    "(file, line, field, reason; never a value unless --show-values).\n\n"
    "Exit codes: 0 success, 1 a stage failed, 2 bad usage, 3 Java missing or too old, 4 no pseudonymization key, "
    "5 DP query refused (nothing spent), 6 privacy budget refused (over budget or unknown analyst).",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

EXIT_STAGE_FAILED, EXIT_JAVA, EXIT_KEY = 1, 3, 4
EXIT_USAGE, EXIT_QUERY_REFUSED, EXIT_BUDGET_REFUSED = 2, 5, 6
DAG_ID = "crm_privacy_pipeline"

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", envvar="CRMSHIELD_DATA_DIR", help="Root of the data zones (default ./data)."),
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON result on stdout.")]


def _emit(result: Any, as_json: bool, human: str) -> None:
    if as_json:
        out.print_json(json.dumps(result, default=str))
    else:
        out.print(human)


def _settings(data_dir: Path | None) -> Settings:
    return Settings.from_env(data_dir)


def _fail(exc: BaseException) -> typer.Exit:
    from crmshield.java import JavaMissing
    from crmshield.keys import KeyError_

    console.print(f"[bold red]error:[/] {_escape_markup(str(exc))}")
    if isinstance(exc, JavaMissing):
        return typer.Exit(EXIT_JAVA)
    if isinstance(exc, KeyError_):
        return typer.Exit(EXIT_KEY)
    return typer.Exit(EXIT_STAGE_FAILED)


def _guarded(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a stage; turn its failure into a clear message and a meaningful exit code."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        raise _fail(exc) from None


def _default_key_file(settings: Settings) -> Path:
    return settings.root / ".secrets" / "pseudonymization.key"


@app.command()
def generate(
    contacts: Annotated[int, typer.Option(min=10, help="Number of contacts (1k to 10M).")] = 10_000,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same bytes.")] = 42,
    as_of: Annotated[str, typer.Option(help="Export date (YYYY-MM-DD); all dates lie before it.")] = "2026-10-31",
    out_dir: Annotated[Path | None, typer.Option("--out", help="Where to write (default: the landing zone).")] = None,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Write a seeded sample of CRM exports (HubSpot CSVs, Zendesk JSONL) with some dirty rows."""
    from rich.progress import Progress

    from crmshield.generate import generate as gen

    target = out_dir or _settings(data_dir).landing
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task("generating contacts", total=contacts)
        res = gen(target, contacts=contacts, seed=seed, as_of=date.fromisoformat(as_of),
                  progress=lambda n: progress.advance(bar, n))  # fmt: skip
    rows = ", ".join(f"{k} {v:,}" for k, v in res.rows.items())
    _emit(res.to_dict(), as_json, f"wrote {rows} rows to {target}")


@app.command()
def ingest(data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Landing -> raw zone (typed Parquet) as the source spec ($CRMSHIELD_SOURCE_SPEC) maps it, exactly once: a file
    already ingested is a recorded no-op, snapshots replace, deltas upsert; bad rows go to quarantine with file, line
    and reason (a file over the spec's max_bad_share is refused); expired and erased rows are dropped (retention
    policy; erasure suppression list, after processing landing/erasure_requests.csv)."""
    from crmshield.pipeline import stage_ingest

    res = _guarded(stage_ingest, _settings(data_dir))
    lines = [f"run {res['run_id']}"]
    for entity, f in res["files"].items():
        if not f.get("delivered", True):
            lines.append(f"  {entity}: not delivered by this source (an empty raw table)")
            continue
        lines.append(f"  {entity} ({f.get('delivery', 'snapshot')}, raw now {f.get('raw_rows', f['loaded']):,} rows)")
        for d in f.get("files") or []:
            lines.append(
                f"    {d['file']} ({d['status']}): read {d['read']}, loaded {d['loaded']}, quarantined "
                f"{d['quarantined']}, duplicates {d['duplicates']}, expired {d['expired']}, erased {d['erased']}"
            )
            lines += [f"      warning: {w}" for w in d.get("warnings") or []]
    _emit(res, as_json, "\n".join(lines))


def _run_id(settings: Settings, run_id: str | None) -> str:
    if run_id:
        return run_id
    latest = settings.runs / "LATEST"
    from crmshield.pipeline import read_stage

    if latest.exists():
        return latest.read_text().strip()
    candidates = sorted(settings.runs.glob("run-*"), key=lambda p: p.stat().st_mtime) if settings.runs.exists() else []
    for c in reversed(candidates):
        if read_stage(settings, c.name, "ingest"):
            return c.name
    raise typer.BadParameter("no run found: run `crmshield ingest` first or pass --run-id")


RunId = Annotated[str | None, typer.Option(help="Run id (default: the latest ingested run).")]


@app.command("validate-raw")
def validate_raw(run_id: RunId = None, data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Great Expectations checkpoint over the raw zone: the export's contract and the row reconciliation
    (builds Data Docs; no value is ever rendered)."""
    from crmshield.pipeline import stage_validate_raw

    settings = _settings(data_dir)
    res = _guarded(stage_validate_raw, _run_id(settings, run_id), settings)
    _emit(res, as_json, f"raw zone validation passed ({res.get('warnings', 0)} warnings); "
          f"Data Docs: {res.get('data_docs_index')}")  # fmt: skip


@app.command()
def privacy(run_id: RunId = None, data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Raw -> privacy zone: the Spark job (spark-submit, local[*] by default)."""
    from crmshield.pipeline import stage_privacy

    settings = _settings(data_dir)
    res = _guarded(stage_privacy, _run_id(settings, run_id), settings)
    _emit(res, as_json, "privacy zone: " + ", ".join(f"{e} {v['rows_out']}" for e, v in res["entities"].items()))


@app.command()
def validate(run_id: RunId = None, data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Great Expectations checkpoint over the privacy zone: nothing identifying left (builds Data Docs)."""
    from crmshield.pipeline import stage_validate

    settings = _settings(data_dir)
    res = _guarded(stage_validate, _run_id(settings, run_id), settings)
    _emit(res, as_json, f"privacy zone validation passed ({res.get('warnings', 0)} warnings); "
          f"Data Docs: {res.get('data_docs_index')}")  # fmt: skip


@app.command()
def transform(run_id: RunId = None, data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """dbt build on DuckDB (staging, intermediate, marts and their tests)."""
    from crmshield.pipeline import stage_transform

    settings = _settings(data_dir)
    res = _guarded(stage_transform, _run_id(settings, run_id), settings)
    _emit(res, as_json, "warehouse marts: " + ", ".join(f"{k} {v}" for k, v in res.get("mart_row_counts", {}).items()))


@app.command()
def publish(run_id: RunId = None, data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """SmartNoise DP marts -> the analyst database (atomic swap; skipped if already published)."""
    from crmshield.pipeline import read_stage, stage_publish

    settings = _settings(data_dir)
    rid = _run_id(settings, run_id)
    ing = read_stage(settings, rid, "ingest")
    if not ing:
        raise typer.BadParameter(f"run {rid} has no ingest result")
    res = _guarded(stage_publish, rid, ing["input_fingerprint"], settings)
    _emit(res, as_json, f"publication {res['status']}: ε spent {res.get('epsilon_spent')}")


@app.command()
def report(run_id: RunId = None, data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Write the run manifest and HTML report; prints the manifest path."""
    from crmshield.pipeline import stage_report

    settings = _settings(data_dir)
    path = _guarded(stage_report, _run_id(settings, run_id), settings)
    _emit({"manifest": path}, as_json, path)


@app.command("run")
def run_all(data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Run every stage in this process, without Airflow (the DAG's steps, in order). If a stage fails the
    later ones do not run, the published marts stay as they were, and the run report is still written."""
    from crmshield.pipeline import run_all as run

    path = _guarded(run, _settings(data_dir), on_stage=lambda s, r: console.print(f"✓ {s} ({r.get('seconds')} s)"))
    _emit({"manifest": path}, as_json, path)


@app.command("init-key")
def init_key(
    path: Annotated[Path | None, typer.Option(help="Key file (default .secrets/pseudonymization.key).")] = None,
    version: Annotated[int, typer.Option(min=1, help="Key version, recorded in every pseudonym (v<N>_...).")] = 1,
) -> None:
    """Create a random pseudonymization key file (mode 0600) if none exists.

    To rotate: create a key with the next --version in a new file, point
    CRMSHIELD_PSEUDONYMIZATION_KEY_FILE at it and re-run the pipeline. The
    privacy zone and warehouse are rebuilt from raw with v<N> pseudonyms only;
    DP marts hold no pseudonyms and stay valid. Keep the old key only as long
    as your retention policy requires, then destroy it."""
    from crmshield.keys import ensure_key_file, read_key_file

    target = path or _default_key_file(Settings.from_env())
    existed = target.exists()
    ensure_key_file(target, version=version)
    actual = read_key_file(target).version
    out.print(f"{'kept existing' if existed else 'created'} key file {target} (version {actual})")


@app.command()
def erase(
    email: Annotated[list[str] | None, typer.Option(help="Email of the subject (repeatable).")] = None,
    phone: Annotated[list[str] | None, typer.Option(help="Phone of the subject, ideally with +country code.")] = None,
    crm_id: Annotated[list[str] | None, typer.Option("--crm-id", help="CRM contact id (Record ID).")] = None,
    requests_file: Annotated[
        Path | None,
        typer.Option("--requests-file", help="CSV with 'identifier' (+ optional kind, region, reference) columns."),
    ] = None,
    region: Annotated[str | None, typer.Option(help="Country (ISO 2) for phones written without +code.")] = None,
    reference: Annotated[str | None, typer.Option(help="Your reference for the request (no PII).")] = None,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Erase a subject (GDPR Art. 17) from landing, raw, privacy zone, warehouse.

    Every id, email and phone the subject appears under goes on the
    suppression list as a keyed token, so later exports cannot bring them
    back; the zones are rebuilt without them and checked; a PII-free audit
    entry is appended to <data>/erasure/audit.jsonl. Published DP marts stay
    as they are; the next publication excludes the subject. Identifier
    values are never printed or logged. To erase in the next scheduled run
    instead, drop a requests file at <data>/landing/erasure_requests.csv."""
    from crmshield.erasure import Request, canonical, read_requests_file
    from crmshield.erasure import erase as run_erase

    settings = _settings(data_dir)
    _use_default_key_file(settings)
    try:
        requests: list[Request] = [canonical("email", v, where="--email") for v in email or []]
        requests += [canonical("phone", v, region, where="--phone") for v in phone or []]
        requests += [canonical("crm_id", v, where="--crm-id") for v in crm_id or []]
        if requests_file:
            requests += read_requests_file(requests_file, region)
        if reference:
            requests = [Request(r.kind, r.value, reference) for r in requests]
    except ValueError as exc:
        console.print(f"[bold red]error:[/] {_escape_markup(str(exc))}")
        raise typer.Exit(2) from None
    entry = _guarded(run_erase, settings, requests)
    removed = sum(entry["landing_records_removed"].values())
    erased = sum(entry["rebuilt"]["raw_rows_erased"].values())
    _emit(
        entry,
        as_json,
        f"erased: request {entry['request_id']}: {entry['suppression_tokens_added']} suppression token(s) added, "
        f"{removed} landing record(s) removed, {erased} raw row(s) dropped; rebuilt run {entry['rebuilt']['run_id']}; "
        f"verified clean in raw, privacy zone and warehouse. Audit: {settings.data_dir / 'erasure' / 'audit.jsonl'}",
    )


@app.command("redaction-report")
def redaction_report(
    path: Annotated[
        Path | None, typer.Argument(help="Labelled file or folder (default: tests/data/redaction).")
    ] = None,
    as_json: JsonOut = False,
) -> None:
    """Precision and recall of the ticket-text redactor per PII type.

    The evidence behind the redaction step, on a labelled set: each gold
    span is a PII value in realistic ticket text; checksum-failing card and
    IBAN look-alikes must stay untouched."""
    from crmshield.redact_eval import evaluate, format_table

    result = _guarded(evaluate, path)
    _emit(result, as_json, format_table(result))


@app.command()
def profile(
    file: Annotated[Path, typer.Argument(help="The export to profile (CSV, JSON lines or a JSON array).")],
    entity: Annotated[
        str, typer.Option(help="Canonical entity it holds: contacts, companies, deals or tickets.")
    ] = "contacts",
    sample_rows: Annotated[int, typer.Option(min=1, help="Rows to sample (streamed; never the whole file).")] = 10_000,
    out_dir: Annotated[Path, typer.Option("--out", help="Where to write the drafts.")] = Path("."),
    as_json: JsonOut = False,
) -> None:
    """Onboard a new export: detect encoding, format, types and likely PII per column (counts only, never a
    value), and write a DRAFT source spec <stem>.source.yml and policy entries <stem>.policy.yml to review."""
    from crmshield.profile import format_table, write_drafts
    from crmshield.profile import profile as run_profile
    from crmshield.sources import ENTITIES

    if entity not in ENTITIES:
        raise typer.BadParameter(f"one of {', '.join(ENTITIES)}", param_hint="--entity")
    result = _guarded(run_profile, file, entity=entity, sample_rows=sample_rows)
    _guarded(write_drafts, result, out_dir)
    _emit(result.to_dict(), as_json, _escape_markup(format_table(result)))


def _use_default_key_file(settings: Settings) -> None:
    """Use .secrets/pseudonymization.key when no key is configured and that file exists."""
    from crmshield.keys import ENV_FILE, ENV_KEY

    default = _default_key_file(settings)
    if not os.environ.get(ENV_KEY) and not os.environ.get(ENV_FILE) and default.is_file():
        os.environ[ENV_FILE] = str(default)


def airflow_env(settings: Settings) -> dict[str, str]:
    """A project-local Airflow: SQLite metadata in .airflow/ (or $CRMSHIELD_AIRFLOW_HOME),
    our dags/ folder, no example DAGs. Nothing global is touched."""
    home = Path(os.environ.get("CRMSHIELD_AIRFLOW_HOME") or settings.root / ".airflow")
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(settings.root / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "CRMSHIELD_HOME": str(settings.root),
            "CRMSHIELD_DATA_DIR": str(settings.data_dir),
        }
    )
    return env


def _airflow(args: list[str], env: dict[str, str], log: Path) -> int:
    exe = Path(sys.executable).parent / "airflow"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w", encoding="utf-8") as fh:
        return subprocess.run([str(exe), *args], env=env, stdout=fh, stderr=subprocess.STDOUT, check=False).returncode


def run_dag(settings: Settings, run_id: str, show_progress: bool = True) -> Path:
    """Migrate the local Airflow DB and run the DAG end to end (``airflow dags test``).
    Returns the manifest path; raises RuntimeError with the log's tail on failure."""
    from crmshield.pipeline import STAGES

    env = airflow_env(settings)
    logs = Path(env["AIRFLOW_HOME"]) / "logs"
    t0 = time.perf_counter()
    if _airflow(["db", "migrate"], env, logs / "db_migrate.log") != 0:
        raise RuntimeError(f"`airflow db migrate` failed; see {logs / 'db_migrate.log'}")
    if show_progress:
        console.print(f"✓ airflow db ready ({time.perf_counter() - t0:.1f} s)")
    run_dir = settings.run_dir(run_id)
    manifest = run_dir / "manifest.json"
    started = time.time()
    log = logs / "dag_test.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).parent / "airflow"
    with log.open("w", encoding="utf-8") as fh:
        proc = subprocess.Popen([str(exe), "dags", "test", DAG_ID], env=env, stdout=fh, stderr=subprocess.STDOUT)
        seen: set[str] = set()
        while True:
            rc = proc.poll()
            for stage in STAGES[:-1]:
                f = run_dir / f"{stage}.json"
                if stage not in seen and f.exists() and f.stat().st_mtime >= started:
                    seen.add(stage)
                    rec = json.loads(f.read_text())
                    mark = "✗" if rec.get("status") == "failed" else "✓"
                    if show_progress:
                        console.print(f"{mark} {stage} ({rec.get('seconds')} s)")
            if rc is not None:
                break
            time.sleep(0.5)
    ok = manifest.exists() and manifest.stat().st_mtime >= started
    m = json.loads(manifest.read_text(encoding="utf-8")) if ok else {}
    if ok and m.get("status") != "success":
        failure = m.get("failure") or {}
        raise RuntimeError(
            f"the DAG run {m.get('status')} at stage {failure.get('stage')}: {failure.get('error')}\n"
            f"run report: {manifest.with_name('report.html')}\nmanifest: {manifest}\nAirflow log: {log}"
        )
    if rc != 0 or not ok:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-40:])
        raise RuntimeError(f"the DAG run failed (airflow exit {rc}); full log: {log}\n{tail}")
    return manifest


EXAMPLE_QUERY = (
    "SELECT channel, sum(tickets) AS tickets FROM tickets_by_month_channel_priority GROUP BY channel"
    " ORDER BY tickets DESC"
)


@app.command()
def demo(
    contacts: Annotated[int, typer.Option(min=10, help="Sample size (contacts).")] = 10_000,
    seed: Annotated[int, typer.Option(help="Sample seed.")] = 42,
    data_dir: DataDir = None,
) -> None:
    """The quick start: generate a seeded sample, run the Airflow DAG end to end, summarize.

    The last line printed is the path of the run manifest (JSON)."""
    from crmshield.generate import generate as gen
    from crmshield.ingest import landing_fingerprint
    from crmshield.java import JavaMissing, java_version
    from crmshield.keys import ENV_FILE, ENV_KEY, ensure_key_file
    from crmshield.pipeline import config_digest

    settings = _settings(data_dir)
    try:
        java_version()
    except JavaMissing as exc:
        raise _fail(exc) from None
    if not os.environ.get(ENV_KEY) and not os.environ.get(ENV_FILE):
        key_file = ensure_key_file(_default_key_file(settings))
        os.environ[ENV_FILE] = str(key_file)
        console.print(f"✓ pseudonymization key file {key_file} (outside the data zones)")
    t0 = time.perf_counter()
    res = gen(settings.landing, contacts=contacts, seed=seed)
    console.print(f"✓ generated sample ({contacts:,} contacts, seed {seed}) in {time.perf_counter() - t0:.1f} s")
    fp, _ = landing_fingerprint(settings.landing, config_digest(settings))
    run_id = f"run-{fp[:16]}"
    t0 = time.perf_counter()
    manifest_path = _guarded(run_dag, settings, run_id)
    total = time.perf_counter() - t0
    m = json.loads(manifest_path.read_text(encoding="utf-8"))
    _print_summary(m, res.rows, total)
    print(manifest_path)


def _print_summary(m: dict[str, Any], generated: dict[str, int], seconds: float) -> None:
    import duckdb

    out.print(f"\n[bold]Run {m['run_id']}[/] finished in {seconds:.1f} s ({m['status']})")
    out.print("[bold]Rows per stage[/] (landing → raw → privacy zone)")
    for e, r in m["reconciliation"].items():
        excl = sum(r["excluded"].values())
        out.print(
            f"  {e:<10} read {r['read']:>7,}  loaded {r['loaded']:>7,}  quarantined {r['quarantined']:>4}  "
            f"duplicates {r['duplicates']:>4}  expired {r.get('expired', 0):>5}  erased {r.get('erased', 0):>3}  "
            f"privacy {r['privacy_rows']:>7,}  "
            f"excluded {excl:>5}  "
            f"{'reconciled' if r['ok'] else 'NOT RECONCILED'}"
        )
    out.print("  warehouse marts: " + ", ".join(f"{k} {v:,}" for k, v in m["rows"]["warehouse"].items()))
    if ka := m.get("k_anonymity"):
        out.print(
            f"[bold]k-anonymity[/] over {', '.join(ka['quasi_identifiers'])}: achieved k={ka['achieved_k']} "
            f"(required {ka['k']}), {ka['suppressed_share']:.2%} suppressed, "
            f"max prosecutor risk {ka['max_prosecutor_risk']:.3f}, average {ka['avg_prosecutor_risk']:.4f}"
        )
    status = m.get("publication_status")
    note = " (same input already published: no new ε spent)" if status == "skipped" else ""
    out.print(f"[bold]DP marts[/] {status}{note}; ε spent by this run: {m['epsilon_spent']:.3g}")
    for mart in m["marts"]:
        out.print(f"  {mart['name']:<30} ε={mart['epsilon']:.3g}  δ={mart['delta']:.2g}  rows={mart.get('rows')}")
    a = m["artifacts"]
    out.print(f"[bold]Analyst database[/] {a['analyst_database']}")
    out.print(f"[bold]Run report[/]       {a['run_report']}")
    out.print(f"[bold]GX Data Docs[/]     {a['gx_data_docs']}")
    out.print(f"[bold]Example analyst query[/]  {EXAMPLE_QUERY}")
    with duckdb.connect(a["analyst_database"], read_only=True) as con:
        for row in con.execute(EXAMPLE_QUERY).fetchall():
            out.print(f"  {row[0]:<8} {row[1]:>10,.0f}")


# --------------------------------------------------------------------------
# Interactive DP queries and the budget
# --------------------------------------------------------------------------

AnalystOpt = Annotated[
    str | None,
    typer.Option(
        "--analyst",
        help="Analyst identity (default: $CRMSHIELD_ANALYST, else the OS user); it needs a budget in "
        "config/dp_budget.yml.",
    ),
]


def _dp_guarded(as_json: bool, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a DP query step; refusals get their own exit codes (5 query refused, 6 budget refused)."""
    from rich.markup import escape

    from crmshield.budget import BudgetConfigError, BudgetRefused
    from crmshield.dp_query import QueryTablesError
    from crmshield.dp_release import DPQueryError

    def refuse(kind: str, message: str, code: int) -> typer.Exit:
        if as_json:
            out.print_json(json.dumps({"status": "refused", "refused_by": kind, "message": message}))
        label = "refused" if kind == "query" else "refused by the privacy budget"
        console.print(f"[bold red]{label}:[/] {escape(message.removeprefix('refused: '))}")
        return typer.Exit(code)

    try:
        return fn(*args, **kwargs)
    except DPQueryError as exc:
        raise refuse("query", str(exc), EXIT_QUERY_REFUSED) from None
    except BudgetRefused as exc:
        raise refuse("budget", exc.message, EXIT_BUDGET_REFUSED) from None
    except (BudgetConfigError, QueryTablesError) as exc:  # invalid configuration: the operator's to fix
        console.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_STAGE_FAILED) from None
    except ValueError as exc:  # no identity, bad epsilon
        console.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_USAGE) from None
    except Exception as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_STAGE_FAILED) from None


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 1e9 else f"{value:.4g}"
    return str(value)


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="One aggregate SELECT over a DP-queryable warehouse table.")],
    analyst: AnalystOpt = None,
    epsilon: Annotated[
        float | None,
        typer.Option(help="Privacy cost of this query (default: the table's, in config/dp_query_tables.yml)."),
    ] = None,
    explain: Annotated[
        bool, typer.Option("--explain", help="Show cost, expected error and suppression; spend nothing.")
    ] = False,
    csv_path: Annotated[
        Path | None,
        typer.Option(
            "--csv",
            help="Also write the released rows to this CSV file, for a spreadsheet (text cells starting with "
            "= + - @ are prefixed with ' so they are never run as formulas; numbers stay numbers).",
        ),
    ] = None,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Differentially private aggregate query on the warehouse, charged to your privacy budget.

    One SELECT with COUNT, SUM, AVG, VAR or STDDEV over one table declared in
    config/dp_query_tables.yml (marts.tickets, marts.deal_pipeline,
    marts.customers), optional WHERE and GROUP BY plain columns; ORDER BY
    and LIMIT are applied to the released rows. Each measure comes with a
    95% interval (<measure>_ci_low, <measure>_ci_high). The cost is charged
    to your budget and the population's before the query runs; rare groups
    are suppressed unless every GROUP BY column has public keys. Joins,
    subqueries, HAVING, non-aggregate queries, other tables and file readers
    are refused (exit 5, nothing spent); a query over budget or from an
    identity without a budget is refused (exit 6). Every query, explain and
    refusal is audited in <data>/restricted/dp_query_audit.jsonl.

    --csv PATH also writes the released rows (the columns above, intervals
    included) to a CSV file to open in a spreadsheet: group labels come from
    CRM values, so a text cell starting with = + - @ (or a tab or carriage
    return) is prefixed with ' and is never run as a formula.

    Example: crmshield query --explain "SELECT channel, COUNT(*) AS tickets,
    AVG(resolution_hours) AS avg_hours FROM marts.tickets WHERE is_solved
    GROUP BY channel"
    """
    from rich.table import Table

    from crmshield.dp_query import DPSession, format_budget

    if epsilon is not None and not (math.isfinite(epsilon) and epsilon > 0):
        raise typer.BadParameter("must be a finite number > 0", param_hint="--epsilon")
    if csv_path is not None:
        if explain:
            raise typer.BadParameter("--explain releases no rows to write", param_hint="--csv")
        _check_writable(csv_path, "--csv")  # before anything is spent
    session = _dp_guarded(as_json, DPSession, _settings(data_dir), analyst)
    if explain:
        explanation = _dp_guarded(as_json, session.explain, sql, epsilon)
        _emit(explanation.to_dict(), as_json, _escape_markup(explanation.describe()))
        return
    result = _dp_guarded(as_json, session.query, sql, epsilon)
    csv_failed = False
    if csv_path is not None:
        from crmshield.csvout import write_csv

        names = [name for name, _ in result.column_types]
        try:
            write_csv(csv_path, names, ([row.get(n) for n in names] for row in result.records()))
        except OSError as exc:  # the budget is spent: still show the result, then fail
            console.print(f"[bold red]error:[/] could not write {_escape_markup(str(csv_path))}: "
                          f"{_escape_markup(exc.strerror or str(exc))}")  # fmt: skip
            csv_failed = True
    if as_json:
        doc = result.to_dict()
        doc["csv"] = str(csv_path) if csv_path is not None and not csv_failed else None
        _emit(doc, True, "")
        if csv_failed:
            raise typer.Exit(EXIT_STAGE_FAILED)
        return
    table = Table(title=f"{result.table}: differentially private result ({len(result.frame)} rows)")
    numeric = {"BIGINT", "DOUBLE"}
    for name, dtype in result.column_types:
        table.add_column(name, justify="right" if dtype in numeric else "left", overflow="fold")
    for row in result.records():
        table.add_row(*(_cell(row.get(name)) for name, _ in result.column_types))
    out.print(table)
    out.print(
        _escape_markup(
            f"query {result.query_id}: spent epsilon={result.epsilon:.4g}, delta={result.delta:.4g}"
            f" ({result.mechanism}); 95% intervals in the *_ci_low/*_ci_high columns (noise only).\n"
            f"Suppression: {result.explanation.suppression}\n"
            f"Remaining: {format_budget(result.remaining)}"
        )
    )
    if csv_failed:
        raise typer.Exit(EXIT_STAGE_FAILED)
    if csv_path is not None:
        out.print(_escape_markup(f"wrote {len(result.frame)} rows to {csv_path}"))


def _check_writable(path: Path, hint: str) -> None:
    """Refuse (exit 2) an output file whose folder is missing or read-only, or that is a folder."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise typer.BadParameter(f"{path} is a folder", param_hint=hint)
    if not folder.is_dir():
        raise typer.BadParameter(f"folder {folder} does not exist", param_hint=hint)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise typer.BadParameter(f"folder {folder} is not writable", param_hint=hint)


def _escape_markup(text: str) -> str:
    from rich.markup import escape

    return escape(text)


@app.command()
def budget(
    analyst: Annotated[
        str | None,
        typer.Option("--analyst", help="Only this analyst and their entries (default: every analyst)."),
    ] = None,
    limit: Annotated[int, typer.Option(min=0, help="How many recent ledger entries to show.")] = 20,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Remaining privacy budgets (population and analysts) and the most recent ledger entries.

    Budgets refresh at the start of each UTC period (day, week, month or
    quarter, per config/dp_budget.yml). Exit 6 for an analyst without a budget."""
    from rich.table import Table

    from crmshield.dp_query import budget_report

    report = _dp_guarded(as_json, budget_report, _settings(data_dir), analyst, limit=limit)
    if as_json:
        _emit(report, True, "")
        return
    budgets = Table(title="Privacy budgets (remaining of cap)")
    for col in ("scope", "name", "period", "epsilon left", "delta left", "refreshes at"):
        budgets.add_column(col, justify="right" if col.endswith("left") else "left")
    rows = [("population", report["population"])] + [("analyst", u) for u in report["analysts"].values()]
    for scope, u in rows:
        budgets.add_row(
            scope,
            u["name"],
            u["period"],
            f"{u['remaining_epsilon']:.4g} of {u['cap_epsilon']:.4g}",
            f"{u['remaining_delta']:.3g} of {u['cap_delta']:.3g}",
            u["refreshes_at"],
        )
    out.print(budgets)
    entries = Table(title=f"Recent ledger entries (newest first, at most {limit})")
    for col in ("time (UTC)", "principal", "kind", "status", "epsilon", "delta", "what"):
        entries.add_column(col, justify="right" if col in ("epsilon", "delta") else "left", overflow="fold")
    for e in report["entries"]:
        what = " ".join(str(e["what"]).split())
        entries.add_row(
            str(e["created_at"])[:19].replace("T", " "),
            str(e["principal"]),
            str(e["kind"]),
            str(e["status"]),
            f"{e['epsilon']:.4g}",
            f"{e['delta']:.3g}",
            _escape_markup(what if len(what) <= 80 else what[:77] + "..."),
        )
    out.print(entries)
    out.print(_escape_markup(f"ledger: {report['ledger']}; query audit log: {report['audit_log']}"))


# --------------------------------------------------------------------------
# Quarantine: what ingest set aside, for the data engineer onboarding an export
# --------------------------------------------------------------------------

#: Control characters (ANSI escapes, carriage returns...) are shown escaped, never sent to the terminal.
_CONTROL = frozenset([*range(0x20), *range(0x7F, 0xA0)])


def _printable(text: str) -> str:
    return "".join(c if ord(c) not in _CONTROL else f"\\x{ord(c):02x}" for c in text)


def _read_quarantine(path: Path, show_values: bool, with_rows: bool) -> dict[str, Any]:
    """Counts by (file, field, reason) and, with ``with_rows``, every row of one quarantine file.
    The ``record`` column (the original values: PII) is not even read unless ``show_values``."""
    import duckdb

    with duckdb.connect() as con:
        src = f"read_parquet('{str(path).replace(chr(39), chr(39) * 2)}')"
        counts = con.execute(
            f"SELECT source_file, field, reason, count(*) FROM {src} GROUP BY ALL ORDER BY 4 DESC, 1, 2, 3"
        ).fetchall()
        rows: list[dict[str, Any]] = []
        if with_rows:
            record = ", CAST(record AS VARCHAR)" if show_values else ""
            sql = f"SELECT source_file, source_row, field, reason, errors{record} FROM {src} ORDER BY 1, 2"
            for r in con.execute(sql).fetchall():
                row = {"file": r[0], "line": r[1], "field": r[2], "reason": r[3], "errors": list(r[4] or [])}
                if show_values:
                    row["record"] = _record(r[5])
                rows.append(row)
    reasons: dict[str, int] = {}
    for _, field, reason, n in counts:  # over every file of the entity
        reasons[f"{field}:{reason}"] = reasons.get(f"{field}:{reason}", 0) + n
    return {
        "files": sorted({f for f, *_ in counts if f is not None}),
        "quarantined": sum(n for *_, n in counts),
        "reasons": dict(sorted(reasons.items())),
        "by_reason": [{"file": f, "field": fld, "reason": rsn, "rows": n} for f, fld, rsn, n in counts],
        "rows": rows,
    }


def _record(text: str | None) -> Any:
    """A quarantined row's original values: a dict of fields, or the raw line of an unparsable one."""
    try:
        return json.loads(text) if text is not None else None
    except ValueError:
        return text


def _quarantine_csv(path: Path, entities: dict[str, dict[str, Any]], show_values: bool) -> int:
    """entity, file, line, field, reason, errors (+ one column per record field and raw_line, with
    values) through crmshield.csvout: neutralized, atomic, mode 0600 (it may hold PII)."""
    from crmshield.csvout import write_csv

    fields: dict[str, None] = {}
    if show_values:
        for e in entities.values():
            for row in e["rows"]:
                if isinstance(row["record"], dict):
                    fields.update(dict.fromkeys(row["record"]))
    header = ["entity", "file", "line", "field", "reason", "errors"]
    if show_values:
        header += [*fields, "raw_line"]

    def rows() -> Any:
        for entity, e in entities.items():
            for row in e["rows"]:
                cells = [entity, row["file"], row["line"], row["field"], row["reason"], "; ".join(row["errors"])]
                if show_values:
                    rec = row["record"]
                    values = rec if isinstance(rec, dict) else {}
                    cells += [values.get(f) for f in fields]
                    cells.append(None if isinstance(rec, dict) else rec)
                yield cells

    return write_csv(path, header, rows(), mode=0o600)


@app.command()
def quarantine(
    entity: Annotated[
        str | None, typer.Option(help="Only this entity: contacts, companies, deals or tickets (default: all).")
    ] = None,
    rows: Annotated[
        bool, typer.Option("--rows", help="List each quarantined row (file, line, field, reason), not only counts.")
    ] = False,
    show_values: Annotated[
        bool,
        typer.Option(
            "--show-values",
            help="Also show the rows' original values (PERSONAL DATA) in the listing and the CSV; implies --rows "
            "without --csv.",
        ),
    ] = False,
    limit: Annotated[
        int, typer.Option(min=0, help="Rows listed per entity on screen or in --json (0: all; --csv has all).")
    ] = 100,
    csv_path: Annotated[
        Path | None,
        typer.Option(
            "--csv",
            help="Write every quarantined row (entity, file, line, field, reason, errors; with --show-values the "
            "record's fields too) to this CSV (mode 0600; spreadsheet-safe).",
        ),
    ] = None,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """What ingest set aside: quarantined rows per entity with their source file, line, field and reason.

    By default, counts by reason for each entity; --rows lists each row
    (file, line number in the export, the first failing field and reason,
    and every error of the row). The quarantine zone is restricted (it holds
    the rows' personal data), so no value is ever printed or written unless
    --show-values is given. --csv PATH writes every row to a CSV for a
    spreadsheet (owner-only, mode 0600; text cells starting with = + - @
    are prefixed with '). Fix the export (or its source spec) and re-run
    `crmshield ingest`. Exit 1 when there is no quarantine to show (run
    ingest first)."""
    from crmshield.config import ENTITIES

    if entity is not None and entity not in ENTITIES:
        raise typer.BadParameter(f"one of {', '.join(ENTITIES)}", param_hint="--entity")
    if csv_path is not None:
        _check_writable(csv_path, "--csv")
    listing = rows or (show_values and csv_path is None)
    settings = _settings(data_dir)
    zone = settings.quarantine
    wanted = [entity] if entity else list(ENTITIES)
    present = [e for e in wanted if (zone / f"{e}.parquet").is_file()]
    if not present:
        what = f"{entity} " if entity else ""
        console.print(f"[bold red]error:[/] no {what}quarantine under {_escape_markup(str(zone))}: "
                      "run `crmshield ingest` first")  # fmt: skip
        raise typer.Exit(EXIT_STAGE_FAILED)
    entities: dict[str, dict[str, Any]] = {}
    for e in present:
        entities[e] = _guarded(_read_quarantine, zone / f"{e}.parquet", show_values, listing or csv_path is not None)
    written = _guarded(_quarantine_csv, csv_path, entities, show_values) if csv_path is not None else None
    if show_values:
        where = " and ".join(([] if not listing else ["shown"]) + ([] if csv_path is None else [f"in {csv_path}"]))
        note = _escape_markup(f"personal data from the restricted quarantine zone {where}")
        console.print(f"[bold yellow]warning:[/] {note}")

    def shown(e: dict[str, Any]) -> list[dict[str, Any]]:
        return (e["rows"][:limit] if limit else e["rows"]) if listing else []

    if as_json:
        doc = {
            "quarantine": str(zone),
            "values_shown": show_values,
            "entities": {
                e: {
                    "files": v["files"],
                    "quarantined": v["quarantined"],
                    "reasons": v["reasons"],
                    "rows": shown(v),
                    "rows_listed": len(shown(v)),
                }
                for e, v in entities.items()
            },
            "missing": [e for e in wanted if e not in present],
            "csv": str(csv_path) if csv_path is not None else None,
            "csv_rows": written,
        }
        _emit(doc, True, "")
        return
    _print_quarantine(zone, entities, [e for e in wanted if e not in present], shown, show_values)
    if csv_path is not None:
        out.print(_escape_markup(f"wrote {written} rows to {csv_path} (mode 0600)"))


def _print_quarantine(zone: Path, entities: dict[str, dict[str, Any]], missing: list[str], shown: Any,
                      show_values: bool) -> None:  # fmt: skip
    from rich.table import Table

    def cell(value: Any) -> str:
        return _escape_markup(_printable(str(value)))

    counts = Table(title=f"Quarantine {zone} (counts by reason{'' if show_values else '; no value shown'})")
    for col in ("entity", "file", "field", "reason", "rows"):
        counts.add_column(col, justify="right" if col == "rows" else "left", overflow="fold")
    for e, v in entities.items():
        if not v["by_reason"]:
            counts.add_row(e, "", "", "(none)", "0")
        for r in v["by_reason"]:
            counts.add_row(e, cell(r["file"]), cell(r["field"]), cell(r["reason"]), f"{r['rows']:,}")
    for e in missing:
        counts.add_row(e, "", "", "(not ingested)", "")
    out.print(counts)
    total = sum(v["quarantined"] for v in entities.values())
    out.print(f"{total:,} quarantined row(s)")
    for e, v in entities.items():
        listed = shown(v)
        if not listed:
            continue
        table = Table(title=f"{e}: {len(listed)} of {v['quarantined']} quarantined row(s)")
        for col in ("file", "line", "field", "reason", "errors", *(("record",) if show_values else ())):
            table.add_column(col, justify="right" if col == "line" else "left", overflow="fold")
        for r in listed:
            extra = [json.dumps(r["record"], ensure_ascii=False)] if show_values else []
            table.add_row(*(cell(x) for x in (r["file"], r["line"], r["field"], r["reason"],
                                              ", ".join(r["errors"]), *extra)))  # fmt: skip
        out.print(table)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

"""Zone paths and runtime settings, resolved from the environment.

Every path can be overridden with an environment variable; defaults are
relative to the project root (``CRMSHIELD_HOME``, else the current directory).
Nothing here reads a secret: see :mod:`crmshield.keys`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENTITIES: tuple[str, ...] = ("contacts", "companies", "deals", "tickets")


def project_root() -> Path:
    """The repository root: where ``dbt_project/``, ``sql/`` and ``spark_jobs/`` live."""
    env = os.environ.get("CRMSHIELD_HOME")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "dbt_project").is_dir() and (parent / "spark_jobs").is_dir():
            return parent
    return Path.cwd().resolve()


@dataclass(frozen=True)
class Settings:
    """Absolute locations of every zone and project asset."""

    root: Path
    data_dir: Path

    @classmethod
    def from_env(cls, data_dir: str | os.PathLike[str] | None = None) -> Settings:
        root = project_root()
        chosen = data_dir or os.environ.get("CRMSHIELD_DATA_DIR") or (root / "data")
        return cls(root=root, data_dir=Path(chosen).resolve())

    # zone 1
    @property
    def landing(self) -> Path:
        return self.data_dir / "landing"

    # zone 2 (restricted: PII)
    @property
    def raw(self) -> Path:
        return self.data_dir / "raw"

    @property
    def quarantine(self) -> Path:
        return self.data_dir / "quarantine"

    # zone 3
    @property
    def privacy(self) -> Path:
        return self.data_dir / "privacy"

    # zone 4
    @property
    def warehouse(self) -> Path:
        return self.data_dir / "warehouse" / "warehouse.duckdb"

    # zone 5
    @property
    def published(self) -> Path:
        return self.data_dir / "published" / "analyst.duckdb"

    # zone 6
    @property
    def reports(self) -> Path:
        return self.data_dir / "reports"

    @property
    def runs(self) -> Path:
        return self.reports / "runs"

    @property
    def data_docs(self) -> Path:
        return self.reports / "data_docs"

    @property
    def gx_context(self) -> Path:
        """File-backed GX context (suites are code; this holds run results)."""
        return self.data_dir / "gx"

    @property
    def restricted(self) -> Path:
        """Operator-only state that must never sit beside the analyst file (mode 0700)."""
        return self.data_dir / "restricted"

    @property
    def dp_ledger(self) -> Path:
        """The privacy-budget ledger (SQLite, transactional, mode 0600)."""
        return self.restricted / "dp_ledger.sqlite"

    # project assets
    @property
    def dp_budget_config(self) -> Path:
        """Budgets per population and per analyst (``config/dp_budget.yml``)."""
        env = os.environ.get("CRMSHIELD_DP_BUDGET")
        return Path(env).resolve() if env else self.root / "config" / "dp_budget.yml"

    @property
    def dbt_project(self) -> Path:
        return self.root / "dbt_project"

    @property
    def marts_sql(self) -> Path:
        return self.root / "sql" / "marts"

    @property
    def spark_jobs(self) -> Path:
        return self.root / "spark_jobs"

    def run_dir(self, run_id: str) -> Path:
        return self.runs / run_id

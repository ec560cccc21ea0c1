"""The privacy policy as code: a versioned YAML file, validated by a schema.

``load_policy`` checks the file (unknown keys are errors naming the file and
key); ``resolve_plan`` checks it against the raw zone's actual columns (a
declared column that does not exist is an error; a raw column the policy does
not mention is dropped with a warning) and turns it into the column plan the
Spark job executes and the run manifest records: per column, what was done and
why. A column no purpose needs is dropped, whatever action it declares.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from crmshield.keys import DOMAINS

Classification = Literal["direct_identifier", "quasi_identifier", "sensitive", "free_text", "attribute"]
Action = Literal["drop", "pseudonymize", "generalize", "redact", "keep"]
Rule = Literal["age_band", "postal_prefix", "day", "month", "employee_band", "clamp"]
LINEAGE_COLUMNS = ("_source_file", "_source_row")


class PolicyError(ValueError):
    """The policy file is invalid, or does not fit the data."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnRule(_Strict):
    classification: Classification
    action: Action
    purposes: list[str] = Field(default_factory=list)
    output: str | None = None
    domain: str | None = None
    rule: Rule | None = None
    lower: float | None = None
    upper: float | None = None
    note: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ColumnRule:
        if self.action == "pseudonymize" and self.domain not in DOMAINS:
            raise ValueError(f"pseudonymize needs 'domain', one of {list(DOMAINS)}")
        if self.action == "generalize" and self.rule is None:
            raise ValueError("generalize needs a 'rule'")
        if self.rule == "clamp" and (self.lower is None or self.upper is None):
            raise ValueError("the clamp rule needs 'lower' and 'upper'")
        if self.action != "generalize" and self.rule is not None:
            raise ValueError(f"'rule' only applies to generalize, not {self.action}")
        return self


class DerivedRule(_Strict):
    rule: Literal["hours_between"]
    inputs: list[str]
    purposes: list[str] = Field(default_factory=list)
    note: str | None = None


class EntityPolicy(_Strict):
    columns: dict[str, ColumnRule]
    derived: dict[str, DerivedRule] = Field(default_factory=dict)
    subject_key: str | None = None
    subject_required: bool = False


class Consent(_Strict):
    entity: str
    column: str


class LadderStep(_Strict):
    """One rung of a quasi-identifier's generalization ladder (exactly one key)."""

    map: dict[str, str] | None = None
    truncate: int | None = Field(default=None, ge=1)
    suppress: bool | None = None

    @model_validator(mode="after")
    def _one(self) -> LadderStep:
        if sum(x is not None for x in (self.map, self.truncate, self.suppress)) != 1:
            raise ValueError("a ladder step has exactly one of 'map', 'truncate', 'suppress'")
        return self


class RetentionRule(_Strict):
    """Rows whose ``column`` is older than ``days`` before the export's reference
    date (its latest contact update) are purged from raw and everything after."""

    column: str
    days: int = Field(ge=1)


class KAnonymity(_Strict):
    entity: str
    k: int = Field(default=5, ge=2)
    max_suppression: float = Field(default=0.05, ge=0, le=1)
    quasi_identifiers: dict[str, list[LadderStep]]


class Policy(_Strict):
    version: int
    purposes: dict[str, str]
    consent: Consent
    entities: dict[str, EntityPolicy]
    k_anonymity: KAnonymity | None = None
    retention: dict[str, RetentionRule] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _references(self) -> Policy:
        for ename, ent in self.entities.items():
            for cname, col in ent.columns.items():
                for p in col.purposes:
                    if p not in self.purposes:
                        raise ValueError(f"entities.{ename}.columns.{cname}.purposes: unknown purpose '{p}'")
            for dname, der in ent.derived.items():
                for p in der.purposes:
                    if p not in self.purposes:
                        raise ValueError(f"entities.{ename}.derived.{dname}.purposes: unknown purpose '{p}'")
                for i in der.inputs:
                    if i not in ent.columns:
                        raise ValueError(f"entities.{ename}.derived.{dname}.inputs: '{i}' is not a declared column")
            if ent.subject_key and ent.subject_key not in ent.columns:
                raise ValueError(f"entities.{ename}.subject_key: '{ent.subject_key}' is not a declared column")
        if self.k_anonymity:
            ka = self.k_anonymity
            if ka.entity not in self.entities:
                raise ValueError(f"k_anonymity.entity: unknown entity '{ka.entity}'")
            outputs = {c.output or n for n, c in self.entities[ka.entity].columns.items() if c.action != "drop"}
            for q in ka.quasi_identifiers:
                if q not in outputs:
                    raise ValueError(f"k_anonymity.quasi_identifiers.{q}: not an output column of {ka.entity}")
        for ename, rule in self.retention.items():
            if ename not in self.entities:
                raise ValueError(f"retention.{ename}: unknown entity")
            if rule.column not in self.entities[ename].columns:
                raise ValueError(f"retention.{ename}.column: '{rule.column}' is not a declared column")
        if self.consent.entity not in self.entities:
            raise ValueError(f"consent.entity: unknown entity '{self.consent.entity}'")
        if self.consent.column not in self.entities[self.consent.entity].columns:
            raise ValueError(f"consent.column: '{self.consent.column}' is not a declared column")
        return self


def default_policy_path() -> Path:
    from crmshield.config import project_root

    return project_root() / "config" / "privacy_policy.yml"


def policy_path() -> Path:
    """The privacy policy in force: ``$CRMSHIELD_PRIVACY_POLICY`` or config/privacy_policy.yml."""
    import os

    env = os.environ.get("CRMSHIELD_PRIVACY_POLICY")
    return Path(env) if env else default_policy_path()


def load_policy(path: Path | None = None) -> Policy:
    """Read and validate the policy; errors name the file and the offending key."""
    import yaml

    path = path or default_policy_path()
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PolicyError(f"{path}: privacy policy not found") from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from None
    try:
        return Policy.model_validate(doc)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(x) for x in err["loc"])
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown key '{where}'")
            else:
                problems.append(f"{where}: {err['msg']}" if where else err["msg"])
        raise PolicyError(f"{path}: " + "; ".join(problems)) from None


def resolve_plan(policy: Policy, raw_columns: dict[str, list[str]], source: Path | None = None) -> dict[str, Any]:
    """The executable column plan for the given raw tables (entity -> column names).

    Returns a JSON-safe dict: per entity the ordered ``outputs`` (output name,
    action, inputs, rule/domain), the ``columns`` decision for every raw
    column (action taken and why), ``unknown_columns`` and the subject/consent
    settings. Raises PolicyError for a declared column missing from the data.
    """
    where = str(source or "privacy policy")
    plan: dict[str, Any] = {
        "version": policy.version,
        "consent": policy.consent.model_dump(),
        "k_anonymity": policy.k_anonymity.model_dump(exclude_none=True) if policy.k_anonymity else None,
        "entities": {},
    }
    for entity, ent in policy.entities.items():
        if entity not in raw_columns:
            raise PolicyError(f"{where}: entities.{entity}: no such raw table")
        present = raw_columns[entity]
        missing = [c for c in ent.columns if c not in present]
        if missing:
            raise PolicyError(
                f"{where}: entities.{entity}.columns.{missing[0]}: column not found in the raw {entity} table"
            )
        outputs: list[dict[str, Any]] = []
        decisions: dict[str, dict[str, Any]] = {}
        for cname, col in ent.columns.items():
            action: str = col.action
            why = col.note or ""
            if action != "drop" and not col.purposes:
                action, why = "drop", "no declared purpose needs it (minimization)"
            elif action != "drop":
                why = why or f"needed for {', '.join(col.purposes)}"
            decisions[cname] = {
                "classification": col.classification,
                "declared_action": col.action,
                "action": action,
                "output": None if action == "drop" else (col.output or cname),
                "purposes": col.purposes,
                "why": why or "no declared purpose",
            }
            if action != "drop":
                outputs.append(
                    {
                        "output": col.output or cname,
                        "action": action,
                        "inputs": [cname],
                        "rule": col.rule,
                        "domain": col.domain,
                        "lower": col.lower,
                        "upper": col.upper,
                    }
                )
        for dname, der in ent.derived.items():
            if der.purposes:
                outputs.append({"output": dname, "action": "derive", "inputs": der.inputs, "rule": der.rule})
                decisions[f"{dname} (derived)"] = {
                    "classification": "attribute", "declared_action": "derive", "action": "derive",
                    "output": dname, "purposes": der.purposes,
                    "why": der.note or f"{der.rule}({', '.join(der.inputs)})",
                }  # fmt: skip
        unknown = [c for c in present if c not in ent.columns and c not in LINEAGE_COLUMNS]
        for c in present:
            if c in LINEAGE_COLUMNS:
                decisions[c] = {"classification": "attribute", "declared_action": "drop", "action": "drop",
                                "output": None, "purposes": [], "why": "lineage stays in the raw zone"}  # fmt: skip
            elif c in unknown:
                decisions[c] = {"classification": "unknown", "declared_action": None, "action": "drop",
                                "output": None, "purposes": [],
                                "why": "not in the privacy policy: dropped, never passed through"}  # fmt: skip
        names = [o["output"] for o in outputs]
        if len(names) != len(set(names)):
            raise PolicyError(f"{where}: entities.{entity}: two columns produce the same output name")
        plan["entities"][entity] = {
            "outputs": outputs,
            "columns": decisions,
            "unknown_columns": unknown,
            "subject_key": ent.subject_key,
            "subject_required": ent.subject_required,
        }
    return plan

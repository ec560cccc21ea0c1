"""The privacy policy: schema, minimization, and its fit with the data and the validation suites."""

from __future__ import annotations

import pytest
import yaml

from crmshield.config import Settings
from crmshield.ingest import SPECS
from crmshield.policy import PolicyError, default_policy_path, load_policy, resolve_plan
from crmshield.validate import load_expectations_module

RAW = {e: [f.name for f in spec.fields] + ["_source_file", "_source_row"] for e, spec in SPECS.items()}


def _write(tmp_path, mutate):
    doc = yaml.safe_load(default_policy_path().read_text())
    mutate(doc)
    path = tmp_path / "policy.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_shipped_policy_produces_exactly_what_validation_expects():
    plan = resolve_plan(load_policy(), RAW)
    expected = load_expectations_module(Settings.from_env()).COLUMNS
    for entity, ep in plan["entities"].items():
        assert {o["output"] for o in ep["outputs"]} == set(expected[entity]), entity
        assert ep["unknown_columns"] == []
        for col, d in ep["columns"].items():
            assert d["why"], (entity, col)
    contacts = plan["entities"]["contacts"]["columns"]
    assert contacts["street"]["action"] == "drop" and contacts["street"]["classification"] == "direct_identifier"
    assert contacts["email"]["action"] == "pseudonymize" and contacts["email"]["output"] == "email_pk"
    assert contacts["_source_row"]["action"] == "drop"


def test_unknown_key_names_file_and_key(tmp_path):
    path = _write(tmp_path, lambda d: d["entities"]["contacts"]["columns"]["email"].update({"actoin": "keep"}))
    with pytest.raises(PolicyError, match=r"policy.yml: unknown key 'entities.contacts.columns.email.actoin'"):
        load_policy(path)


def test_column_missing_from_data_is_an_error(tmp_path):
    def add(d):
        d["entities"]["deals"]["columns"]["probability"] = {
            "classification": "attribute", "action": "keep", "purposes": ["pipeline_analytics"]}  # fmt: skip

    path = _write(tmp_path, add)
    with pytest.raises(PolicyError, match=r"policy.yml: entities.deals.columns.probability: column not found"):
        resolve_plan(load_policy(path), RAW, path)


def test_unmentioned_raw_column_is_dropped_with_a_warning():
    raw = {**RAW, "contacts": [*RAW["contacts"], "favourite_colour"]}
    ep = resolve_plan(load_policy(), raw)["entities"]["contacts"]
    assert ep["unknown_columns"] == ["favourite_colour"]
    assert ep["columns"]["favourite_colour"]["action"] == "drop"
    assert "favourite_colour" not in {o["output"] for o in ep["outputs"]}


def test_a_column_no_purpose_needs_is_dropped(tmp_path):
    path = _write(tmp_path, lambda d: d["entities"]["contacts"]["columns"]["country"].update({"purposes": []}))
    ep = resolve_plan(load_policy(path), RAW)["entities"]["contacts"]
    assert ep["columns"]["country"]["action"] == "drop"
    assert "minimization" in ep["columns"]["country"]["why"]


def test_rules_are_checked(tmp_path):
    path = _write(tmp_path, lambda d: d["entities"]["contacts"]["columns"]["contact_id"].pop("domain"))
    with pytest.raises(PolicyError, match="contact_id: .*pseudonymize needs 'domain'"):
        load_policy(path)
    path = _write(tmp_path, lambda d: d["entities"]["tickets"]["columns"]["channel"].update({"purposes": ["fun"]}))
    with pytest.raises(PolicyError, match="unknown purpose 'fun'"):
        load_policy(path)

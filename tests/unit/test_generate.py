"""The sample export generator."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from crmshield.generate import CONTACT_HEADER, FILES, generate


def _digest(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = generate(tmp_path / "a", contacts=300, seed=7)
    generate(tmp_path / "b", contacts=300, seed=7)
    generate(tmp_path / "c", contacts=300, seed=8)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    assert set(_digest(tmp_path / "a")) == set(FILES.values())
    assert a.rows["contacts"] >= 300


def test_exports_look_like_hubspot_and_zendesk_and_carry_dirt(tmp_path):
    res = generate(tmp_path, contacts=1000, seed=1)
    with (tmp_path / FILES["contacts"]).open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == CONTACT_HEADER
    body = rows[1:]
    # leading zeros survive in the file (the generator writes them for DE/FR/ES/AU postal codes)
    assert any(r[8].startswith("0") for r in body if len(r) > 8)
    assert any(len(r) != len(CONTACT_HEADER) for r in body), "a malformed (short) row is present"
    ids = [r[0] for r in body]
    assert len(ids) != len(set(ids)), "duplicate / conflicting record versions are present"
    tickets = (tmp_path / FILES["tickets"]).read_text(encoding="utf-8").splitlines()
    parsed, broken = [], 0
    for line in tickets:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            broken += 1
    assert broken == 1
    t = parsed[0]
    assert {"id", "requester_id", "subject", "description", "via", "priority", "status", "created_at",
            "solved_at", "satisfaction_rating"} <= set(t)  # fmt: skip
    # free text carries the requester's PII, as real tickets do
    by_id = {r[0]: r for r in body if len(r) == len(CONTACT_HEADER)}
    with_pii = [
        x for x in parsed
        if str(x["requester_id"]) in by_id and by_id[str(x["requester_id"])][3] in x["description"]
    ]  # fmt: skip
    assert with_pii
    assert sum(res.dirty["contacts"].values()) >= 4


def test_tickets_per_contact_scales_tickets_and_the_default_is_unchanged(tmp_path):
    default = generate(tmp_path / "default", contacts=2000, seed=3)
    generate(tmp_path / "explicit", contacts=2000, seed=3, tickets_per_contact=1.5)
    more = generate(tmp_path / "more", contacts=2000, seed=3, tickets_per_contact=3.0)
    again = generate(tmp_path / "again", contacts=2000, seed=3, tickets_per_contact=3.0)
    assert _digest(tmp_path / "default") == _digest(tmp_path / "explicit")  # the default rate is 1.5
    assert _digest(tmp_path / "more") == _digest(tmp_path / "again")  # still deterministic
    assert 1.35 < default.rows["tickets"] / 2000 < 1.65
    assert 2.8 < more.rows["tickets"] / 2000 < 3.2
    assert more.rows["contacts"] == again.rows["contacts"] >= 2000
    with pytest.raises(ValueError, match="tickets_per_contact"):
        generate(tmp_path / "bad", contacts=100, tickets_per_contact=-1)

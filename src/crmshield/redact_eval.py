"""Evaluate :mod:`crmshield.redact` on the hand-labelled ticket set.

Usage: ``python -m crmshield.redact_eval [--json] [--verbose] [PATH]``

The labelled set lives in ``tests/data/redaction/*.txt`` (or any file/folder given). Format::

    ;; a comment line
    ### <id> | first=José; last=Álvarez; email=jose@example.es; phone=+34 612 345 678; country=ES
    Hola, soy [[PERSON:José Álvarez]]. Mi teléfono es [[PHONE:612 34 56 78]].
    ### <next id>
    ...

The part after ``|`` is the requester's contact record (:class:`crmshield.redact.Known`); it is
optional. The text runs to the next ``###`` line (trailing blank lines dropped). Inline markup:
``[[KIND:surface]]`` is a gold span of KIND (surfaces may span lines); ``[[CHECKSUM:surface]]``
marks a checksum-failing look-alike and ``[[NEG:surface]]`` another hard negative; both are plain
text to the redactor and must stay untouched. Offsets are computed after stripping the markup.

Metrics, per kind and micro-averaged over all kinds:

* precision: predicted spans overlapping a gold span of the same kind / predicted spans;
* recall: gold spans overlapped by a predicted span of the same kind / gold spans;
* leak recall: gold spans whose characters are all covered by predicted spans of *any* kind
  (what privacy cares about: nothing of the value is left in the output);
* ``checksum_false_positives``: predicted spans overlapping a ``CHECKSUM`` span;
  ``negative_hits``: predicted spans overlapping a ``NEG`` span.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from crmshield.redact import KINDS, Finding, Known, find

# the bundled set, in a source checkout (an installed wheel has no tests/: pass a path, or run from the repo)
DEFAULT_PATH = Path(__file__).resolve().parents[2] / "tests" / "data" / "redaction"
if not DEFAULT_PATH.is_dir():
    DEFAULT_PATH = Path("tests") / "data" / "redaction"
_MARK = re.compile(r"\[\[([A-Z_]+):(.*?)\]\]", re.S)
_KNOWN_KEYS = {"first": "first_name", "last": "last_name", "email": "email", "phone": "phone", "country": "country"}


@dataclass
class Example:
    id: str
    text: str
    known: Known | None
    gold: list[Finding] = field(default_factory=list)
    checksum: list[tuple[int, int]] = field(default_factory=list)
    negatives: list[tuple[int, int]] = field(default_factory=list)
    source: str = ""


def parse_example(ex_id: str, marked: str, known: Known | None = None, source: str = "") -> Example:
    """Strip the inline markup of one example and compute its spans on the clean text."""
    ex = Example(ex_id, "", known, source=source)
    out: list[str] = []
    pos = length = 0
    for m in _MARK.finditer(marked):
        out.append(marked[pos : m.start()])
        length += m.start() - pos
        kind, surface = m.group(1), m.group(2)
        start, end = length, length + len(surface)
        if kind == "CHECKSUM":
            ex.checksum.append((start, end))
        elif kind == "NEG":
            ex.negatives.append((start, end))
        elif kind in KINDS:
            ex.gold.append(Finding(start, end, kind))
        else:
            raise ValueError(f"{source}:{ex_id}: unknown label {kind!r}")
        out.append(surface)
        length = end
        pos = m.end()
    out.append(marked[pos:])
    ex.text = "".join(out)
    if "[[" in ex.text or "]]" in ex.text.replace("]]]", ""):
        raise ValueError(f"{source}:{ex_id}: unbalanced markup")
    return ex


def _parse_known(spec: str) -> Known | None:
    values: dict[str, str] = {}
    for part in spec.split(";"):
        if not part.strip():
            continue
        key, _, value = part.partition("=")
        if key.strip() not in _KNOWN_KEYS:
            raise ValueError(f"unknown Known field {key.strip()!r}")
        values[_KNOWN_KEYS[key.strip()]] = value.strip()
    return Known(**values) if values else None


def load(path: str | Path | None = None) -> list[Example]:
    """Read every example from a file or from all ``*.txt`` files of a folder."""
    p = Path(path) if path is not None else DEFAULT_PATH
    files = sorted(p.glob("*.txt")) if p.is_dir() else [p]
    examples: list[Example] = []
    seen: set[str] = set()
    for f in files:
        blocks: list[tuple[str, list[str]]] = []
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.startswith(";;"):
                continue
            if line.startswith("###"):
                blocks.append((line[3:].strip(), []))
            elif blocks:
                blocks[-1][1].append(line)
        for header, lines in blocks:
            ex_id, _, spec = header.partition("|")
            ex_id = ex_id.strip()
            if ex_id in seen:
                raise ValueError(f"{f.name}: duplicate example id {ex_id!r}")
            seen.add(ex_id)
            while lines and not lines[-1].strip():
                lines.pop()
            examples.append(parse_example(ex_id, "\n".join(lines), _parse_known(spec), source=f.name))
    return examples


def _ratio(a: int, b: int) -> float:
    return a / b if b else 1.0


def _covered(start: int, end: int, preds: list[Finding]) -> bool:
    pos = start
    for p in preds:  # sorted, non-overlapping
        if p.end <= pos:
            continue
        if p.start > pos:
            return False
        pos = p.end
        if pos >= end:
            return True
    return pos >= end


def evaluate(path: str | Path | None = None, details: bool = False) -> dict:
    """Run the redactor over the labelled set; per-kind and overall precision/recall."""
    examples = load(path)
    per = {k: {"gold": 0, "predicted": 0, "tp": 0, "hit": 0, "leak_covered": 0} for k in KINDS}
    checksum_fp = negative_hits = 0
    misses: list[dict] = []
    false_pos: list[dict] = []
    for ex in examples:
        preds = find(ex.text, ex.known)
        for p in preds:
            per[p.kind]["predicted"] += 1
            if any(g.kind == p.kind and g.start < p.end and p.start < g.end for g in ex.gold):
                per[p.kind]["tp"] += 1
            else:
                false_pos.append({"id": ex.id, "kind": p.kind, "text": ex.text[p.start : p.end]})
            if any(s < p.end and p.start < e for s, e in ex.checksum):
                checksum_fp += 1
            if any(s < p.end and p.start < e for s, e in ex.negatives):
                negative_hits += 1
        for g in ex.gold:
            per[g.kind]["gold"] += 1
            hit = any(p.kind == g.kind and p.start < g.end and g.start < p.end for p in preds)
            covered = _covered(g.start, g.end, preds)
            per[g.kind]["hit"] += hit
            per[g.kind]["leak_covered"] += covered
            if not hit or not covered:
                misses.append(
                    {"id": ex.id, "kind": g.kind, "text": ex.text[g.start : g.end], "hit": hit, "covered": covered}
                )
    kinds = {}
    for k, c in per.items():
        kinds[k] = {
            **c,
            "precision": _ratio(c["tp"], c["predicted"]),
            "recall": _ratio(c["hit"], c["gold"]),
            "leak_recall": _ratio(c["leak_covered"], c["gold"]),
        }
    tot = {key: sum(c[key] for c in per.values()) for key in ("gold", "predicted", "tp", "hit", "leak_covered")}
    result = {
        "examples": len(examples),
        "gold_spans": tot["gold"],
        "kinds": kinds,
        "overall": {
            **tot,
            "precision": _ratio(tot["tp"], tot["predicted"]),
            "recall": _ratio(tot["hit"], tot["gold"]),
            "leak_recall": _ratio(tot["leak_covered"], tot["gold"]),
        },
        "checksum_spans": sum(len(ex.checksum) for ex in examples),
        "checksum_false_positives": checksum_fp,
        "negative_spans": sum(len(ex.negatives) for ex in examples),
        "negative_hits": negative_hits,
    }
    if details:
        result["misses"] = misses
        result["false_positives"] = false_pos
    return result


def format_table(result: dict) -> str:
    """A fixed-width text table of :func:`evaluate`'s result."""
    head = f"{'kind':<12} {'gold':>5} {'pred':>5} {'tp':>5} {'prec':>7} {'recall':>7} {'leak-R':>7}"
    rows = [head, "-" * len(head)]

    def row(name: str, c: dict) -> str:
        return (
            f"{name:<12} {c['gold']:>5} {c['predicted']:>5} {c['tp']:>5} "
            f"{c['precision']:>7.3f} {c['recall']:>7.3f} {c['leak_recall']:>7.3f}"
        )

    for k in KINDS:
        rows.append(row(k, result["kinds"][k]))
    rows.append("-" * len(head))
    rows.append(row("overall", result["overall"]))
    rows.append("")
    rows.append(
        f"examples: {result['examples']}  gold spans: {result['gold_spans']}  "
        f"checksum_false_positives: {result['checksum_false_positives']}/{result['checksum_spans']}  "
        f"negative_hits: {result['negative_hits']}/{result['negative_spans']}"
    )
    for key, title in (("misses", "missed or partly leaked gold spans"), ("false_positives", "false positives")):
        if key in result:
            rows.append(f"\n{title} ({len(result[key])}):")
            rows += [
                f"  {d['id']:<9} {d['kind']:<12} {d['text']!r}"
                + ("" if "hit" not in d else "  (partly leaked)" if d["hit"] else "  (missed)")
                for d in result[key]
            ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m crmshield.redact_eval", description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", default=None, help="a labelled file or folder (default: the bundled set)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--verbose", "-v", action="store_true", help="list misses and false positives")
    args = ap.parse_args(argv)
    result = evaluate(args.path, details=args.verbose)
    print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

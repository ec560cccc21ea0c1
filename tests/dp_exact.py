"""VERIFICATION TOOL ONLY: make a SmartNoise ``PrivateReader`` release exact values.

Never use this to publish anything: it switches differential privacy off.

:func:`exact` patches one reader instance so that every mechanism SmartNoise
assigned to the rewritten query releases its input unchanged (no noise) and
censors nothing (threshold 0: a group is dropped only if no person is in it,
which cannot happen). Everything else stays SmartNoise's own code, run
exactly as in a real release: the rewrite (clamping, per-person bound, key
count), the outer post-processing (AVG = SUM / COUNT, the VAR/STDDEV
formulas, expressions over aggregates, type conversion), HAVING, ORDER BY,
LIMIT/TOP and the odometer. Two readers patched this way therefore differ
only in who computed the exact aggregates, which is what the cross-check of
the DuckDB engine against SmartNoise's pandas/SQLite engine needs.
"""

from __future__ import annotations

import types
from typing import Any

__all__ = ["ExactMechanism", "exact"]


class ExactMechanism:
    """A SmartNoise mechanism with the noise taken out (delegates everything else)."""

    def __init__(self, mechanism: Any) -> None:
        self._mechanism = mechanism

    def __getattr__(self, name: str) -> Any:
        return getattr(self._mechanism, name)

    @property
    def threshold(self) -> float:
        return 0.0

    def release(self, vals: Any) -> list[float]:
        return [float(v) for v in vals]


def exact(reader: Any) -> Any:
    """Patch ``reader`` (a SmartNoise ``PrivateReader``) to release exact values; returns it."""
    original = reader._get_mechanisms

    def _get_mechanisms(self: Any, subquery: Any) -> list[Any]:
        return [ExactMechanism(m) if m is not None else None for m in original(subquery)]

    reader._get_mechanisms = types.MethodType(_get_mechanisms, reader)
    reader._crmshield_exact = True
    return reader

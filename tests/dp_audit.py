"""Statistics for the empirical DP tests: Clopper-Pearson bounds and an epsilon lower bound.

Pure numpy (scipy is only a transitive dependency of this project).

:func:`epsilon_lower_bound` is the standard black-box audit of a pure
epsilon-DP mechanism M on neighbouring datasets D and D': for every output
event S, ``P[M(D') in S] <= exp(epsilon) * P[M(D) in S]`` and the same with
D and D' swapped, so ``ln(P[M(D') in S] / P[M(D) in S])`` for any fixed S is
a lower bound on epsilon. The events are threshold sets ``{x > t}`` and
``{x <= t}``, either way round. The threshold and the ratio are chosen on
the first half of each sample; the two probabilities are then bounded on the
second half with one-sided Clopper-Pearson bounds (numerator from below,
denominator from above, each at confidence ``1 - alpha``), so the returned
value is at most the mechanism's true epsilon with probability at least
``1 - 2 * alpha`` whatever happened in the selection half. An estimate above
the claimed epsilon disproves the claim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np


def _log_comb(n: int) -> np.ndarray:
    lg = np.array([math.lgamma(i + 1) for i in range(n + 1)])
    return lg[n] - lg - lg[::-1]


def _pmf(n: int, p: np.ndarray) -> np.ndarray:
    """Binomial(n, p) probabilities, one row per p (p strictly inside (0, 1))."""
    i = np.arange(n + 1)
    return np.exp(_log_comb(n)[None, :] + np.outer(np.log(p), i) + np.outer(np.log1p(-p), n - i))


def _betacf(a: np.ndarray, b: np.ndarray, x: np.ndarray, iters: int = 300) -> np.ndarray:
    """Continued fraction of the regularized incomplete beta function (modified Lentz, Numerical Recipes)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = np.ones_like(x)
    d = 1.0 - qab * x / qap
    d = 1.0 / np.where(np.abs(d) < tiny, tiny, d)
    h = d.copy()
    for m in range(1, iters + 1):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / np.where(np.abs(d) < tiny, tiny, d)
            c = 1.0 + aa / c
            c = np.where(np.abs(c) < tiny, tiny, c)
            h = h * d * c
        if np.all(np.abs(d * c - 1.0) < 1e-15):
            break
    return h


def _lgamma(v: np.ndarray) -> np.ndarray:
    return np.array([math.lgamma(t) for t in v.ravel()]).reshape(v.shape)


def betainc(a: np.ndarray, b: np.ndarray, x: np.ndarray, lbeta: np.ndarray | None = None) -> np.ndarray:
    """Regularized incomplete beta I_x(a, b), elementwise, for a, b > 0 and x in [0, 1]."""
    a, b, x = np.broadcast_arrays(np.asarray(a, float), np.asarray(b, float), np.asarray(x, float))
    xc = np.clip(x, 1e-300, 1 - 1e-16)
    if lbeta is None:
        lbeta = _lgamma(a + b) - _lgamma(a) - _lgamma(b)
    front = np.exp(lbeta + a * np.log(xc) + b * np.log1p(-xc))
    direct = xc < (a + 1.0) / (a + b + 2.0)  # where the fraction converges fast; else use the symmetry
    aa, bb, xx = np.where(direct, a, b), np.where(direct, b, a), np.where(direct, xc, 1.0 - xc)
    cf = _betacf(aa, bb, xx)
    out = np.where(direct, front * cf / a, 1.0 - front * cf / b)
    return np.where(x <= 0, 0.0, np.where(x >= 1, 1.0, out))


def _beta_ppf(q: float, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Quantile q of Beta(a, b), elementwise, by bisection on :func:`betainc` (increasing in x)."""
    lbeta = _lgamma(a + b) - _lgamma(a) - _lgamma(b)
    lo, hi = np.zeros(a.shape), np.ones(a.shape)
    for _ in range(48):
        mid = (lo + hi) / 2
        above = betainc(a, b, mid, lbeta) > q
        hi, lo = np.where(above, mid, hi), np.where(above, lo, mid)
    return (lo + hi) / 2


@lru_cache(maxsize=16)
def _cp_tables(n: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """One-sided Clopper-Pearson bounds for every count k = 0..n.

    lower[k] = Beta(k, n - k + 1) quantile alpha (0 for k = 0);
    upper[k] = Beta(k + 1, n - k) quantile 1 - alpha (1 for k = n).
    """
    k = np.arange(n + 1, dtype=float)
    lower = np.zeros(n + 1)
    upper = np.ones(n + 1)
    lower[1:] = _beta_ppf(alpha, k[1:], n - k[1:] + 1)
    upper[:-1] = _beta_ppf(1 - alpha, k[:-1] + 1, n - k[:-1])
    return lower, upper


def cp_lower(k: np.ndarray | int, n: int, alpha: float) -> np.ndarray:
    """One-sided Clopper-Pearson lower bound at confidence ``1 - alpha`` for k successes of n."""
    return _cp_tables(n, alpha)[0][np.asarray(k, dtype=int)]


def cp_upper(k: np.ndarray | int, n: int, alpha: float) -> np.ndarray:
    """One-sided Clopper-Pearson upper bound at confidence ``1 - alpha`` for k successes of n."""
    return _cp_tables(n, alpha)[1][np.asarray(k, dtype=int)]


def binomial_outside(n: int, p: float, low: float, high: float) -> float:
    """P[X/n < low or X/n > high] for X ~ Binomial(n, p): the false-alarm rate of a coverage band."""
    pmf = _pmf(n, np.array([p]))[0]
    frac = np.arange(n + 1) / n
    return float(pmf[(frac < low) | (frac > high)].sum())


@dataclass(frozen=True)
class AuditResult:
    epsilon_lb: float
    threshold: float
    event: str  # the ratio that gave the bound, e.g. "P[M(D') > t] / P[M(D) > t]"
    counts: tuple[int, int]  # held-out counts of the event: numerator, denominator
    n: tuple[int, int]  # held-out sample sizes: numerator, denominator


#: (name, event is "x > t", numerator sample is D' (x1)) for the four ratios tried
_RATIOS = (
    ("P[M(D') > t] / P[M(D) > t]", True, True),
    ("P[M(D) <= t] / P[M(D') <= t]", False, False),
    ("P[M(D) > t] / P[M(D') > t]", True, False),
    ("P[M(D') <= t] / P[M(D) <= t]", False, True),
)


def _ratio_bounds(x0: np.ndarray, x1: np.ndarray, ts: np.ndarray, alpha: float) -> list[tuple[str, np.ndarray, Any]]:
    out = []
    for name, greater, num_is_1 in _RATIOS:
        num, den = (x1, x0) if num_is_1 else (x0, x1)
        k_num = (num[None, :] > ts[:, None]).sum(axis=1)
        k_den = (den[None, :] > ts[:, None]).sum(axis=1)
        if not greater:
            k_num, k_den = len(num) - k_num, len(den) - k_den
        with np.errstate(divide="ignore"):
            val = np.log(cp_lower(k_num, len(num), alpha)) - np.log(cp_upper(k_den, len(den), alpha))
        out.append((name, val, (k_num, k_den, len(num), len(den))))
    return out


def epsilon_lower_bound(x0: np.ndarray, x1: np.ndarray, *, alpha: float = 1e-3, candidates: int = 199) -> AuditResult:
    """Held-out threshold-test lower bound on epsilon from samples of M(D) (x0) and M(D') (x1).

    At most the true epsilon with probability >= 1 - 2 * alpha when M is epsilon-DP.
    """
    x0, x1 = np.asarray(x0, dtype=float), np.asarray(x1, dtype=float)
    h0, h1 = len(x0) // 2, len(x1) // 2
    pooled = np.concatenate([x0[:h0], x1[:h1]])
    ts = np.unique(np.quantile(pooled, np.linspace(0.0025, 0.9975, candidates)))
    best_val, best_t, best_name = -np.inf, float(ts[0]), _RATIOS[0][0]
    for name, val, _ in _ratio_bounds(x0[:h0], x1[:h1], ts, alpha):
        i = int(np.argmax(val))
        if val[i] > best_val:
            best_val, best_t, best_name = float(val[i]), float(ts[i]), name
    for name, val, (k_num, k_den, n_num, n_den) in _ratio_bounds(x0[h0:], x1[h1:], np.array([best_t]), alpha):
        if name == best_name:
            return AuditResult(float(val[0]), best_t, name, (int(k_num[0]), int(k_den[0])), (n_num, n_den))
    raise AssertionError("unreachable")

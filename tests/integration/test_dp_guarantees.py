"""Empirical evidence that the DP marts keep their promises (issue "Proof that the privacy holds").

Three properties, each checked on the code path that publishes the marts
(``publish._plan`` calibrates the per-statistic epsilon from a mart spec,
``publish._evaluate`` releases it through SmartNoise on DuckDB):

* **Coverage.** The published 95% intervals cover the exact
  (contribution-bounded, clamped) aggregate about 95% of the time: COUNT and
  SUM over 2,400 released cells each (asserted in [0.93, 0.97]), AVG and
  histogram quantiles over fewer (wider bands: they cost more per interval).
* **Epsilon audit.** Neighbouring warehouses D and D' (D' adds one customer
  whose rows max out the contribution bound and the clamp) are run through
  the published COUNT and SUM mechanisms thousands of times; a held-out
  threshold test with Clopper-Pearson bounds gives a lower bound on the
  epsilon those mechanisms actually spend, which must not exceed the claimed
  per-statistic epsilon. The same audit must flag a deliberately broken
  mechanism (noise calibrated as if each customer had one row), which proves
  the audit has the power to catch a real calibration bug.
* **No leaks through keys.** A group that exists only because of one
  customer never appears in a thresholded release; declared public keys
  always appear (even with no rows), undeclared keys never do.

OpenDP draws its noise from the operating system's CSPRNG and cannot be
seeded, so the assertions are statistical. Each band is chosen so that a
correct implementation fails it with probability below about 1e-5 (the
figures are in the comments); the data are fixed (seeded numpy).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml
from dp_audit import binomial_outside, cp_lower, cp_upper, epsilon_lower_bound
from snsql import Privacy
from snsql.sql._mechanisms.laplace import Laplace

from crmshield.dp_engine import private_reader
from crmshield.dp_release import QuantileRequest, release, rewrite
from crmshield.publish import MartSpec, _evaluate, _plan, load_mart_spec

pytestmark = pytest.mark.integration

K = 3  # max_contributions of every test mart
UPPER = 100.0  # hours are clamped to [0, UPPER]
CHANNELS = ("email", "web", "chat", "voice", "api")
PRIORITIES = ("low", "normal", "high", "urgent")
MONTHS = ("2024-01", "2024-02", "2024-03", "2024-04")
TICKETS_DDL = (
    "CREATE TABLE marts.tickets ("
    " contact_pk VARCHAR, channel VARCHAR, priority VARCHAR, created_month VARCHAR, hours DOUBLE)"
)


def _warehouse(rows: list[tuple[Any, ...]]) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect()
    conn.execute("CREATE SCHEMA marts")
    conn.execute(TICKETS_DDL)
    frame = pd.DataFrame(rows, columns=["contact_pk", "channel", "priority", "created_month", "hours"])
    conn.register("frame", frame)
    conn.execute("INSERT INTO marts.tickets SELECT * FROM frame")
    conn.unregister("frame")
    return conn


def _mart(directory: Path, name: str, sql: str, **spec: Any) -> MartSpec:
    """Write ``<name>.sql`` and ``<name>.yml`` as a mart author would, and load them."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.sql").write_text(sql + "\n")
    base = {
        "description": f"test mart {name}",
        "source": "marts.tickets",
        "privacy_unit": "contact_pk",
        "max_contributions": K,
        "delta": 1.0e-6,
    }
    (directory / f"{name}.yml").write_text(yaml.safe_dump(base | spec, sort_keys=False))
    return load_mart_spec(directory / f"{name}.yml")


def _coverage(frame: pd.DataFrame, truth: pd.DataFrame, keys: list[str], measure: str) -> pd.Series:
    merged = frame.merge(truth, on=keys, how="inner", suffixes=("", "_true"), validate="one_to_one")
    assert len(merged) == len(frame) == len(truth), "every cell is released once, with its truth"
    assert merged[f"{measure}_ci_low"].notna().all() and merged[f"{measure}_ci_high"].notna().all()
    exact = merged[f"{measure}_true"]
    return (merged[f"{measure}_ci_low"] <= exact) & (exact <= merged[f"{measure}_ci_high"])


# --------------------------------------------------------------------------
# Coverage
# --------------------------------------------------------------------------


def coverage_rows() -> list[tuple[Any, ...]]:
    """3,000 customers with 1-3 tickets each (never more than K) and hours inside [0, UPPER].

    Then the contribution bound and the clamp change nothing, and the exact
    aggregates of the plain table are the truth the intervals must cover.
    Every one of the 80 (month, channel, priority) cells has tickets (about
    20 to 150, through unequal cell weights), so the count intervals' cut at
    zero plays no part.
    """
    rng = np.random.default_rng(20240601)
    cells = [(m, c, p) for m in MONTHS for c in CHANNELS for p in PRIORITIES]
    weights = rng.uniform(1.0, 8.0, len(cells))
    weights /= weights.sum()
    rows: list[tuple[Any, ...]] = []
    for person in range(3000):
        for _ in range(int(rng.integers(1, K + 1))):
            month, channel, priority = cells[int(rng.choice(len(cells), p=weights))]
            hours = float(np.clip(rng.gamma(2.0, 20.0), 0.0, UPPER))
            rows.append((f"c{person:05d}", channel, priority, month, round(hours, 2)))
    return rows


@pytest.fixture(scope="module")
def coverage_warehouse() -> Iterator[duckdb.DuckDBPyConnection]:
    conn = _warehouse(coverage_rows())
    max_rows, lo, hi = conn.execute(
        "SELECT max(n), min(lo), max(hi) FROM (SELECT count(*) n, min(hours) lo, max(hours) hi"
        " FROM marts.tickets GROUP BY contact_pk)"
    ).fetchone()
    assert max_rows <= K and 0.0 <= lo and hi <= UPPER
    yield conn
    conn.close()


def test_count_and_sum_intervals_cover_the_truth_95_percent(
    coverage_warehouse: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    """2,400 released cells (30 publications x 80 cells): COUNT and SUM intervals cover 93-97%.

    The noise of every cell is an independent draw, so each cell of each
    publication is one release of that cell's statistic. A correct 95%
    interval falls outside [0.93, 0.97] over 2,400 releases with probability
    8.8e-6 (binomial), per measure.
    """
    wh = coverage_warehouse
    keys = ["created_month", "channel", "priority"]
    spec = _mart(
        tmp_path,
        "tickets_and_hours",
        "SELECT created_month, channel, priority, COUNT(*) AS tickets, SUM(hours) AS total_hours\n"
        "FROM marts.tickets GROUP BY created_month, channel, priority",
        epsilon=1.0,
        columns={"hours": {"type": "float", "lower": 0, "upper": UPPER}},
        public_keys={"created_month": list(MONTHS), "channel": list(CHANNELS), "priority": list(PRIORITIES)},
    )
    plan = _plan(wh, spec)
    assert plan.grid
    truth = wh.execute(
        "SELECT created_month, channel, priority, count(*) AS tickets, sum(hours) AS total_hours"
        " FROM marts.tickets GROUP BY ALL"
    ).df()
    assert len(truth) == 80 and truth["tickets"].min() >= 10

    covered: dict[str, list[pd.Series]] = {"tickets": [], "total_hours": []}
    for _ in range(30):
        ev = _evaluate(wh, plan)
        for measure, hits in covered.items():
            hits.append(_coverage(ev.frame, truth, keys, measure))
    n = sum(len(s) for s in covered["tickets"])
    assert n == 2400
    assert binomial_outside(n, 0.95, 0.93, 0.97) < 1e-5
    rates = {m: float(pd.concat(h).mean()) for m, h in covered.items()}
    print(f"coverage over {n} releases: {rates}")
    for measure, rate in rates.items():
        assert 0.93 <= rate <= 0.97, f"{measure}: 95% intervals covered the truth {rate:.3%} of {n} times"


def test_avg_intervals_cover_the_truth_on_large_groups(
    coverage_warehouse: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    """AVG intervals (noisy SUM over noisy COUNT, re-drawn noise) cover about 95% on groups of 100+ tickets.

    An AVG interval costs 2,000 formula evaluations, so there are 200 of
    them (10 publications x 20 cells) and the band is wide: a correct 95%
    interval leaves [0.87, 1] with probability 3e-6. It catches gross errors
    (an interval that ignores the count's noise or halves the sum's).
    """
    wh = coverage_warehouse
    keys = ["channel", "priority"]
    spec = _mart(
        tmp_path,
        "avg_hours",
        "SELECT channel, priority, AVG(hours) AS avg_hours FROM marts.tickets GROUP BY channel, priority",
        epsilon=1.0,
        columns={"hours": {"type": "float", "lower": 0, "upper": UPPER}},
        public_keys={"channel": list(CHANNELS), "priority": list(PRIORITIES)},
    )
    plan = _plan(wh, spec)
    truth = wh.execute(
        "SELECT channel, priority, avg(hours) AS avg_hours, count(*) AS n FROM marts.tickets GROUP BY ALL"
    ).df()
    assert truth["n"].min() >= 100
    hits = pd.concat([_coverage(_evaluate(wh, plan).frame, truth, keys, "avg_hours") for _ in range(10)])
    assert len(hits) == 200 and binomial_outside(200, 0.95, 0.87, 1.0) < 1e-5
    print(f"AVG coverage over {len(hits)} releases: {hits.mean():.4f}")
    assert 0.87 <= hits.mean() <= 1.0


def _interpolated_quantile(hist: np.ndarray, p: float, lower: float, width: float) -> float:
    """The quantile a noiseless histogram gives: linear interpolation inside the bin that crosses p."""
    cdf = np.cumsum(hist)
    target = p * cdf[-1]
    b = int(np.argmax(cdf >= target))
    prev = cdf[b - 1] if b else 0.0
    return lower + width * (b + (target - prev) / hist[b])


QUANTILE_BINS = 20


def quantile_truth(wh: duckdb.DuckDBPyConnection, probabilities: tuple[float, ...]) -> pd.DataFrame:
    """Per (channel, priority): the quantiles of the exact histogram over the mart's public bins."""
    width = UPPER / QUANTILE_BINS
    hist: dict[tuple[str, str], np.ndarray] = {}
    for channel, priority, b, n in wh.execute(
        f"SELECT channel, priority, least(floor(hours / {width})::INT, {QUANTILE_BINS - 1}), count(*)"
        " FROM marts.tickets GROUP BY ALL"
    ).fetchall():
        hist.setdefault((channel, priority), np.zeros(QUANTILE_BINS))[b] += n
    names = {
        p: QuantileRequest("hours", probabilities, 0.0, UPPER, QUANTILE_BINS, 1.0).output_name(p) for p in probabilities
    }
    return pd.DataFrame(
        [
            {"channel": channel, "priority": priority}
            | {names[p]: _interpolated_quantile(h, p, 0.0, width) for p in probabilities}
            for (channel, priority), h in hist.items()
        ]
    )


def test_quantile_intervals_cover_the_truth(coverage_warehouse: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    """Histogram-quantile intervals cover the noiseless histogram's quantile about 95% of the time.

    400 releases per probability (20 publications x 20 cells); the three
    probabilities of a cell share one noisy histogram, so each is checked on
    its own. A correct 95% interval leaves [0.895, 0.995] over 400 releases
    with probability 2.7e-6.
    """
    wh = coverage_warehouse
    probabilities = (0.25, 0.5, 0.75)
    spec = _mart(
        tmp_path,
        "hours_quantiles",
        "SELECT channel, priority, COUNT(hours) AS tickets FROM marts.tickets GROUP BY channel, priority",
        epsilon=1.0,
        columns={"hours": {"type": "float", "lower": 0, "upper": UPPER}},
        public_keys={"channel": list(CHANNELS), "priority": list(PRIORITIES)},
        quantiles={"column": "hours", "probabilities": list(probabilities), "bins": QUANTILE_BINS, "epsilon": 0.5},
    )
    plan = _plan(wh, spec)
    truth = quantile_truth(wh, probabilities)
    names = [c for c in truth.columns if c.startswith("hours_p")]
    assert names == ["hours_p25", "hours_p50", "hours_p75"]
    hits: dict[str, list[pd.Series]] = {name: [] for name in names}
    for _ in range(20):
        frame = _evaluate(wh, plan).frame
        for name in names:
            hits[name].append(_coverage(frame, truth, ["channel", "priority"], name))
    assert binomial_outside(400, 0.95, 0.895, 0.995) < 1e-5
    rates = {name: float(pd.concat(h).mean()) for name, h in hits.items()}
    print(f"quantile coverage over 400 releases each: {rates}")
    for name, rate in rates.items():
        assert 0.895 <= rate <= 0.995, f"{name}: 95% intervals covered the truth {rate:.3%} of 400 times"


# --------------------------------------------------------------------------
# Empirical epsilon audit
# --------------------------------------------------------------------------

AUDIT_SAMPLES = 2000  # per dataset and mechanism; half choose the threshold, half bound the probabilities
AUDIT_ALPHA = 1e-4  # per Clopper-Pearson bound: the epsilon lower bound holds with probability >= 0.9998
WHALE = "c_whale"
AUDIT_CELL = ("email", "low")


def _audit_rows() -> list[tuple[Any, ...]]:
    rng = np.random.default_rng(7)
    rows = []
    for person in range(300):
        channel, priority = CHANNELS[person % 5], PRIORITIES[(person // 5) % 4]
        for _ in range(int(rng.integers(1, K + 1))):
            rows.append((f"c{person:04d}", channel, priority, "2024-01", round(float(rng.uniform(0, UPPER)), 2)))
    return rows


@pytest.fixture(scope="module")
def audit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Neighbouring warehouses, the mart's plan, its mechanisms and their exact inputs.

    D' is D plus one customer with 10 tickets of 1,000 hours in one cell:
    more rows than max_contributions and values beyond the clamp, so after
    the engine's per-customer bound they add exactly K rows of UPPER hours,
    the largest change one customer can make.
    """
    rows = _audit_rows()
    whale = [(WHALE, *AUDIT_CELL, "2024-01", 1000.0)] * 10
    d0, d1 = _warehouse(rows), _warehouse(rows + whale)
    spec = _mart(
        tmp_path_factory.mktemp("audit_marts"),
        "audit_tickets",
        "SELECT channel, priority, COUNT(*) AS tickets, SUM(hours) AS total_hours\n"
        "FROM marts.tickets GROUP BY channel, priority",
        epsilon=2.0,
        columns={"hours": {"type": "float", "lower": 0, "upper": UPPER}},
        public_keys={"channel": list(CHANNELS), "priority": list(PRIORITIES)},
    )
    plan = _plan(d0, spec)
    readers = [private_reader(c, metadata=plan.metadata, privacy=Privacy(epsilon=plan.epsilon_stat)) for c in (d0, d1)]
    exact: list[dict[str, float]] = []
    for reader in readers:
        _parsed, subquery, _query = rewrite(reader, spec.sql)
        result = reader.reader._execute_ast(subquery)  # the engine's exact aggregates, as release() gets them
        header = list(result[0])
        cell = next(r for r in result[1:] if (r[header.index("channel")], r[header.index("priority")]) == AUDIT_CELL)
        exact.append({name: float(cell[header.index(name)]) for name in ("count_star", "sum_hours")})
    # the mechanisms SmartNoise attaches to the rewritten query (the same for D and D': nothing data-dependent)
    _parsed, subquery, _query = rewrite(readers[0], spec.sql)
    mechanisms = {s.name: s.mechanism for s in subquery._select_symbols if s.mechanism is not None}
    published = release(readers[0], spec.sql, public_keys=plan.public_keys).scales
    yield {"plan": plan, "exact": exact, "mechanisms": mechanisms, "published_scales": published}
    d0.close()
    d1.close()


@pytest.mark.parametrize(("statistic", "sensitivity"), [("count_star", K), ("sum_hours", K * UPPER)])
def test_empirical_epsilon_of_published_mechanisms_stays_below_the_claim(
    audit: dict[str, Any], statistic: str, sensitivity: float
) -> None:
    """Held-out threshold test: the epsilon lower bound is at most the claimed epsilon; a broken mechanism fails.

    The mechanism is SmartNoise's own Laplace object from the rewritten mart
    query (the one ``release`` draws its noise with, one ``release([value])``
    call per cell), fed the exact aggregates the DuckDB engine computes for
    D and D'; the exact aggregates are deterministic, so running the
    mechanism on them N times is running the publication N times.

    False alarms: the bound exceeds the true epsilon with probability at
    most 2 * AUDIT_ALPHA = 2e-4 whatever the mechanism; for this exactly
    calibrated Laplace mechanism, 3,000 simulated audits gave lower bounds of
    0.64 +- 0.07 (largest 0.89) for epsilon 1, so the estimated rate is far
    below that. Power: the broken mechanism (true epsilon 3) gave 2.24 +- 0.15
    (smallest 1.53), never near 1; a 2x under-noised one is caught 99.6% of
    the time.
    """
    plan = audit["plan"]
    claimed = plan.epsilon_stat
    assert plan.epsilon == pytest.approx(2 * claimed, rel=1e-6), "two noisy statistics, basic composition"
    mech = audit["mechanisms"][statistic]
    assert mech.epsilon == claimed and mech.delta == 0.0, "pure epsilon-DP Laplace: the audit's premise"
    assert audit["published_scales"][statistic] == mech.scale, "release() uses this noise scale"
    v0, v1 = audit["exact"][0][statistic], audit["exact"][1][statistic]
    assert v1 - v0 == pytest.approx(sensitivity), "the extra customer moves the statistic by its full sensitivity"

    x0 = np.asarray(mech.release([v0] * AUDIT_SAMPLES))
    x1 = np.asarray(mech.release([v1] * AUDIT_SAMPLES))
    honest = epsilon_lower_bound(x0, x1, alpha=AUDIT_ALPHA)

    # the same mechanism with its sensitivity ignoring max_contributions: noise 1/K of what it must be
    broken_mech = Laplace(claimed, lower=mech.lower, upper=mech.upper, max_contrib=1)
    assert broken_mech.scale == pytest.approx(mech.scale / K, rel=1e-6)
    b0 = np.asarray(broken_mech.release([v0] * AUDIT_SAMPLES))
    b1 = np.asarray(broken_mech.release([v1] * AUDIT_SAMPLES))
    broken = epsilon_lower_bound(b0, b1, alpha=AUDIT_ALPHA)

    print(
        f"{statistic}: claimed epsilon {claimed:.4f}; lower bound {honest.epsilon_lb:.3f}"
        f" ({honest.event}, t={honest.threshold:.4g}, counts {honest.counts} of {honest.n});"
        f" broken mechanism (true epsilon {K * claimed:.2f}): lower bound {broken.epsilon_lb:.3f}"
    )
    assert honest.epsilon_lb <= claimed, f"{statistic} spends more than the claimed epsilon: {honest}"
    assert broken.epsilon_lb > claimed, f"the audit cannot tell a {K}x under-noised mechanism: {broken}"


# --------------------------------------------------------------------------
# No leaks through keys
# --------------------------------------------------------------------------

RARE = tuple(f"rare_{i:02d}" for i in range(50))


def _key_rows(extra_common: tuple[str, ...] = ()) -> list[tuple[Any, ...]]:
    """4 channels with 200 customers each, plus groups that exist only because of one customer.

    ``rare_00`` is one customer with 20 tickets (beyond max_contributions);
    ``rare_01``..``rare_49`` are one customer each with exactly K tickets.
    """
    rows = []
    for i, channel in enumerate(("email", "web", "chat", "voice", *extra_common)):
        for person in range(200):
            rows.extend([(f"c{i}_{person:03d}", channel, "low", "2024-01", 1.0)] * 2)
    rows.extend([("c_rare_00", RARE[0], "low", "2024-01", 1.0)] * 20)
    for i, key in enumerate(RARE[1:], start=1):
        rows.extend([(f"c_rare_{i:02d}", key, "low", "2024-01", 1.0)] * K)
    return rows


def test_group_of_one_customer_never_appears_without_public_keys(tmp_path: Path) -> None:
    """8 thresholded publications x 50 one-customer groups: none is ever released; large groups always are."""
    wh = _warehouse(_key_rows())
    spec = _mart(
        tmp_path,
        "tickets_by_channel",
        "SELECT channel, COUNT(*) AS tickets FROM marts.tickets GROUP BY channel",
        epsilon=1.0,
    )
    plan = _plan(wh, spec)
    assert not plan.grid and plan.metadata["warehouse"]["marts"]["tickets"]["censor_dims"]

    # the rare groups are in the engine's exact result: it is the threshold that keeps them out
    reader = private_reader(
        wh, metadata=plan.metadata, privacy=Privacy(epsilon=plan.epsilon_stat, delta=plan.delta_stat)
    )
    _parsed, subquery, _query = rewrite(reader, spec.sql)
    exact = reader.reader._execute_ast(subquery)
    header = list(exact[0])
    keycount = {r[header.index("channel")]: r[header.index("keycount")] for r in exact[1:]}
    assert all(keycount[k] == 1 for k in RARE) and all(keycount[k] == 200 for k in ("email", "web", "chat", "voice"))
    keycount_mech = next(s.mechanism for s in subquery._select_symbols if s.name == "keycount")

    released: list[set[str]] = []
    for _ in range(8):
        ev = _evaluate(wh, plan)
        assert "tau_threshold" in ev.mechanism
        released.append(set(ev.frame["channel"]))
    tau = ev.tau
    assert tau == pytest.approx(K * (1 - math.log(2 * keycount_mech.delta / K) / keycount_mech.epsilon))
    # chance that one customer's group passes: P[1 + Laplace(scale) > tau]
    leak = 0.5 * math.exp(-(tau - 1) / keycount_mech.scale)
    big_miss = 0.5 * math.exp(-(200 - tau) / keycount_mech.scale)
    print(
        f"tau={tau:.2f}; per-group leak probability {leak:.2e}; miss probability of a 200-customer group {big_miss:.1e}"
    )
    assert leak < 1e-6 and big_miss < 1e-6
    for keys in released:
        assert not keys & set(RARE), f"a one-customer group was released: {sorted(keys & set(RARE))}"
        assert keys == {"email", "web", "chat", "voice"}
    wh.close()


def test_public_keys_are_always_released_and_other_keys_never(tmp_path: Path) -> None:
    """Declared keys appear in every publication (one customer or none); undeclared ones never, however large."""
    wh = _warehouse(_key_rows(extra_common=("sms",)))
    declared = ["email", "web", "chat", "voice", RARE[0], RARE[1], "ghost"]  # 'ghost' has no rows
    spec = _mart(
        tmp_path,
        "tickets_by_channel",
        "SELECT channel, COUNT(*) AS tickets FROM marts.tickets GROUP BY channel",
        epsilon=1.0,
        public_keys={"channel": declared},
    )
    plan = _plan(wh, spec)
    assert plan.grid
    undeclared = 1 + len(RARE) - 2  # "sms" (200 customers) and rare_02..rare_49
    for _ in range(20):
        ev = _evaluate(wh, plan)
        assert "tau_threshold" not in ev.mechanism and ev.tau is None
        assert sorted(ev.frame["channel"]) == sorted(declared), "exactly the declared keys, every time"
        assert ev.frame["tickets"].notna().all() and ev.frame["tickets_ci_high"].notna().all()
        assert ev.cells_outside_keys == undeclared
    wh.close()


def test_clopper_pearson_bounds_match_scipy() -> None:
    """The audit's own beta quantiles agree with scipy.stats.beta.ppf (values computed with scipy 1.17)."""
    n, alpha = 300, 1e-3
    lower = {  # beta.ppf(alpha, k, n - k + 1)
        0: 0.0,
        1: 3.334995550835085e-06,
        2: 0.00015158143857371426,
        17: 0.023786924958155545,
        150: 0.4099412707025536,
        299: 0.9696407833750276,
    }
    upper = {  # beta.ppf(1 - alpha, k + 1, n - k)
        0: 0.022762779044189312,
        1: 0.0303592166249724,
        17: 0.11011602293295689,
        150: 0.5900587292974464,
        299: 0.9999966650044492,
        300: 1.0,
    }
    np.testing.assert_allclose(cp_lower(list(lower), n, alpha), list(lower.values()), rtol=1e-8)
    np.testing.assert_allclose(cp_upper(list(upper), n, alpha), list(upper.values()), rtol=1e-8)

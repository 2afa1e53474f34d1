"""The statistics of ``egsbench compare``: bootstrap interval, Welch's t-test, Holm's correction, power, the
Pareto front and the Jaccard agreement of genotypes, each a pure function of plain numbers or genotypes.

Every random draw uses a Generator seeded with ``SEED``, so a call returns the same numbers every time.
"""

from __future__ import annotations

import inspect
import itertools
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy import stats

from ..tasks.spaces import SPACES, Genotype, SearchSpace, UnknownNameError

__all__ = [
    "bootstrap_ci",
    "genotype_set",
    "holm",
    "jaccard",
    "pareto_front",
    "random_jaccard",
    "seeds_needed",
    "t_test_power",
    "welch_p",
    "win_tie_loss",
]

ALPHA, POWER, LEVEL = 0.05, 0.8, 0.95
RESAMPLES = 10_000
DRAWS = 2_000  # random-cell pairs per pair of seeds
SEED = 0  # of every Generator here: the same numbers on every call
TIE = 1e-9
# scipy >= 1.15 names the bootstrap's Generator ``rng``; 1.10-1.14 ``random_state``
_RNG = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Welch t-test p-value; NaN when a group has fewer than 2 values or both have no spread."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # near-constant samples: scipy warns, the p stays usable
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input order; NaN entries stay NaN and do not count in m.

    Examples:
        >>> holm([0.01, 0.04, 0.03]).round(6).tolist()
        [0.03, 0.06, 0.06]
    """
    p = np.asarray(pvalues, float)
    out = np.full(p.shape, math.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m = len(order)
    out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return out


def bootstrap_ci(
    a: Sequence[float], b: Sequence[float], resamples: int = RESAMPLES, level: float = LEVEL, seed: int = SEED
) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(a) - mean(b), each group resampled independently; NaNs for n < 2."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan
    result = stats.bootstrap(
        (a, b),
        lambda x, y, axis: x.mean(axis) - y.mean(axis),
        vectorized=True,
        paired=False,
        n_resamples=resamples,
        confidence_level=level,
        method="percentile",
        **{_RNG: np.random.default_rng(seed)},
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def win_tie_loss(values: Mapping[int, float], baseline: Mapping[int, float], direction: str) -> tuple[int, int, int]:
    """Over the seeds both ran: how often ``values`` beat, tied (within 1e-9) or lost to ``baseline``."""
    sign = -1.0 if direction == "min" else 1.0
    gains = [sign * (values[s] - baseline[s]) for s in sorted(set(values) & set(baseline))]
    ties = sum(abs(g) <= TIE for g in gains)
    wins = sum(g > TIE for g in gains)
    return wins, ties, len(gains) - wins - ties


def t_test_power(n: int, effect: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided pooled two-sample t-test with ``n`` per group at effect |Δ| / σ (noncentral t)."""
    df, ncp = 2 * n - 2, abs(effect) * math.sqrt(n / 2)
    critical = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(critical, df, ncp) + stats.nct.cdf(-critical, df, ncp))


def seeds_needed(delta: float, sd: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """The fewest seeds per group (>= 2) at which :func:`t_test_power` reaches ``power``; None for no Δ or no spread.

    Starts from the normal approximation 2 (z_{1-alpha/2} + z_power)^2 / effect^2 and steps to the exact n.
    """
    if not (math.isfinite(delta) and math.isfinite(sd)) or sd <= 0 or delta == 0:
        return None
    effect = abs(delta) / sd
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    n = max(2, math.ceil(2 * (z / effect) ** 2))
    while n > 2 and t_test_power(n - 1, effect, alpha) >= power:
        n -= 1
    while t_test_power(n, effect, alpha) < power:
        n += 1
    return n


def pareto_front(costs: Sequence[float], values: Sequence[float], direction: str) -> np.ndarray:
    """Which points no other point dominates (cost no higher, value no worse, one of them strictly); NaN: never."""
    cost = np.asarray(costs, float)
    value = np.asarray(values, float) * (1.0 if direction == "min" else -1.0)  # lower is better from here on
    ok = ~(np.isnan(cost) | np.isnan(value))
    front = np.zeros(len(cost), bool)
    for i in np.flatnonzero(ok):
        no_worse = ok & (cost <= cost[i]) & (value <= value[i])
        front[i] = not (no_worse & ((cost < cost[i]) | (value < value[i]))).any()
    return front


def genotype_set(genotype: Mapping | Genotype) -> frozenset[tuple[str, int, int, str]]:
    """A derived genotype (a record's ``genotype``) as its set of (cell type, input, node, op)."""
    genotype = genotype if isinstance(genotype, Genotype) else Genotype.from_dict(genotype)
    return frozenset((t, src, dst, op) for t, cell in genotype.cells.items() for src, dst, op in cell.edges)


def jaccard(a: Iterable, b: Iterable) -> float:
    """|A ∩ B| / |A ∪ B|; 1 for two empty sets."""
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else 1.0


def _draw(space: SearchSpace, size: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    """(draws, E * K') masks of random cells over the space's (edge, op != zero) universe."""
    ops = [o for o in space.ops if o != space.zero_op]
    masks = np.zeros((draws, space.num_edges * len(ops)), bool)
    rows = np.arange(draws)[:, None]
    if space.inputs_per_node is None:  # any in-degree: ``size`` entries uniformly without replacement
        picked = rng.random(masks.shape).argsort(axis=1)[:, : min(size, masks.shape[1])]
        masks[rows, picked] = True
        return masks
    for dst in space.intermediate_nodes:  # per node: that many distinct inputs, one op each
        k = min(space.inputs_per_node, dst)
        srcs = rng.random((draws, dst)).argsort(axis=1)[:, :k]  # (draws, k)
        edge = np.array([space.edge_index(s, dst) for s in range(dst)])[srcs]
        masks[rows, edge * len(ops) + rng.integers(0, len(ops), (draws, k))] = True
    return masks


def random_jaccard(
    space: SearchSpace, a: frozenset, b: frozenset, draws: int = DRAWS, rng: np.random.Generator | None = None
) -> float:
    """The mean Jaccard of two random genotypes of ``space`` with, per cell type, as many entries as ``a`` and ``b``.

    Entries are drawn from the space's (input, node, op) universe with op != the zero op. In a space with
    ``inputs_per_node`` (DARTS: 2) each node gets that many distinct inputs and one op each, as a valid
    genotype does; without it, entries are drawn uniformly, so a drawn cell may leave a node without
    inputs, which a derived cell never does: for such spaces the baseline is an approximation.
    """
    rng = rng or np.random.default_rng(SEED)
    inter = union = np.zeros(draws)
    for cell_type in space.cell_types:
        x = _draw(space, sum(e[0] == cell_type for e in a), draws, rng)
        y = _draw(space, sum(e[0] == cell_type for e in b), draws, rng)
        inter, union = inter + (x & y).sum(axis=1), union + (x | y).sum(axis=1)
    return float(np.mean(np.where(union > 0, inter / np.maximum(union, 1), 1.0)))


def _agreement(genotypes: list, spaces: list) -> dict:
    sets = [genotype_set(g) for g in genotypes if isinstance(g, Mapping)]  # a record may hold no genotype
    pairs = list(itertools.combinations(sets, 2))
    row = {"genotypes": len(sets), "distinct": len(set(sets)), "jaccard": math.nan, "random_jaccard": math.nan}
    if pairs:
        row["jaccard"] = float(np.mean([jaccard(a, b) for a, b in pairs]))
        try:
            space = SPACES.get(spaces[0]) if len(set(spaces)) == 1 else None
        except UnknownNameError:  # a plug-in space missing here: no universe to draw from
            space = None
        if space is not None:
            rng = np.random.default_rng(SEED)
            row["random_jaccard"] = float(np.mean([random_jaccard(space, a, b, rng=rng) for a, b in pairs]))
    return row

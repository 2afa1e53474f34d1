"""EGS derivation by the most probable code per node (METHODS-SPEC section 0, the authors' ``infer_prob``)."""

from __future__ import annotations

import itertools
import math
import random
import warnings
from fractions import Fraction

import pytest
import torch

from egsbench.methods.egs import (
    EGS,
    EGSConfig,
    EmptyCellWarning,
    derive_mode,
    hit_probability,
    log_hit_probability,
    most_probable_code,
)
from egsbench.tasks.spaces import SPACES, genotype_weights
from egsbench.testing import tiny_context

SPACE = SPACES.get("dag")
OPS = {name: k for k, name in enumerate(SPACE.ops)}


def brute_force_hits(p: list[float], M: int) -> dict[frozenset, float]:
    """P(the set of entries hit by M draws from p is exactly T), by enumerating all K^M draw sequences."""
    out: dict[frozenset, float] = {}
    for seq in itertools.product(range(len(p)), repeat=M):
        key = frozenset(seq)
        out[key] = out.get(key, 0.0) + math.prod(p[k] for k in seq)
    return out


def inclusion_exclusion(q: list[float], M: int) -> float:
    """METHODS-SPEC: sum over subsets T of the entries of (-1)^(|q| - |T|) (sum_T q)^M."""
    n = len(q)
    return sum((-1) ** (n - r) * sum(sum(c) ** M for c in itertools.combinations(q, r)) for r in range(n + 1))


@pytest.mark.parametrize(
    "p, M",
    [
        ([0.5, 0.3, 0.2], 3),
        ([0.5, 0.5], 2),
        ([0.25, 0.25, 0.25, 0.25], 4),
        ([0.05, 0.15, 0.3, 0.5], 5),
        ([0.7, 0.1, 0.1, 0.05, 0.05], 3),
        ([0.6, 0.4], 1),
        ([0.1, 0.2, 0.3, 0.4], 6),
    ],
)
def test_hit_probability_matches_inclusion_exclusion_and_brute_force(p, M):
    exact = brute_force_hits(p, M)
    for r in range(1, len(p) + 1):
        for subset in itertools.combinations(range(len(p)), r):
            q = [p[k] for k in subset]
            expected = exact.get(frozenset(subset), 0.0)
            assert hit_probability(q, M) == pytest.approx(expected, abs=1e-12)
            assert inclusion_exclusion(q, M) == pytest.approx(expected, abs=1e-12)


def test_hand_computed_hit_probabilities_and_mode():
    # p = [0.5, 0.3, 0.2], M = 3: P_1 = 0.5^3, P_2 = 3 (0.5^2 0.3 + 0.5 0.3^2), P_3 = 3! 0.5 0.3 0.2.
    p = [0.5, 0.3, 0.2]
    assert [hit_probability(p[:i], 3) for i in (1, 2, 3)] == pytest.approx([0.125, 0.36, 0.18])
    assert most_probable_code(p, 3) == [0, 1]
    assert most_probable_code([0.2, 0.5, 0.3], 3) == [1, 2]  # sorted first, indices into the input
    assert most_probable_code(p, 1) == [0]  # M = 1: the most probable entry alone
    assert most_probable_code([0.5, 0.5], 2) == [0, 1]  # Figure 1: [1, 1] (0.5) beats [1, 0] (0.25)
    assert most_probable_code([0.9, 0.05, 0.05], 2) == [0]  # 0.81 against 0.09
    assert most_probable_code([0.25] * 4, 9) == [0, 1, 2, 3]  # i stops at the number of entries
    # A tie, P_1 = 0.4^2 = P_2 = 2 * 0.4 * 0.2: the smaller set wins.
    assert most_probable_code([0.4, 0.2, 0.2, 0.2], 2) == [0]


def test_hit_probability_rejects_bad_input():
    with pytest.raises(ValueError, match="M must be at least 1"):
        hit_probability([0.5], 0)
    with pytest.raises(ValueError, match="non-negative"):
        hit_probability([0.5, -0.1], 2)
    assert hit_probability([0.2, 0.2, 0.2], 2) == 0.0  # 2 draws cannot hit 3 entries


def power_series(q: list[float], M: int) -> float:
    """The float power series ``M! [x^M] prod_t (exp(q_t x) - 1)`` used before issue 17 (overflows at M >= 171)."""
    if len(q) > M:
        return 0.0
    poly = [1.0] + [0.0] * M
    for v in q:
        factor = [0.0] + [v**n / math.factorial(n) for n in range(1, M + 1)]
        poly = [sum(poly[j] * factor[n - j] for j in range(n + 1)) for n in range(M + 1)]
    return math.factorial(M) * poly[M]


def exact_log(q: list[float], M: int) -> float:
    """log of the inclusion-exclusion sum in exact rational arithmetic (the floats of ``q`` are dyadic rationals)."""
    qs = [Fraction(v) for v in q]
    n = len(qs)
    total = sum(
        (-1) ** (n - r) * sum(sum(c, Fraction(0)) ** M for c in itertools.combinations(qs, r)) for r in range(n + 1)
    )
    return math.log(total.numerator) - math.log(total.denominator)


@pytest.mark.parametrize("M", [1, 2, 3, 4, 7, 12, 40, 170])
def test_hit_probability_matches_the_power_series_it_replaced(M):
    rng = random.Random(M)
    for _ in range(20):
        p = [rng.random() ** 3 + 1e-4 for _ in range(rng.randint(1, 8))]
        q = [v / sum(p) for v in p][: rng.randint(1, min(len(p), 6))]
        assert hit_probability(q, M) == pytest.approx(power_series(q, M), rel=1e-11, abs=1e-14)


@pytest.mark.parametrize("M", [171, 500, 2000])
@pytest.mark.parametrize("q", [[0.5, 0.3], [0.4, 0.3, 0.2], [0.3, 0.1, 0.05, 0.01]])
def test_log_hit_probability_is_exact_beyond_float_factorials(q, M):
    # The power series overflowed here (OverflowError after a whole EGS search); exact rationals are the reference.
    assert log_hit_probability(q, M) == pytest.approx(exact_log(q, M), rel=1e-12, abs=1e-10)


@pytest.mark.parametrize("M", [500, 10_000])
def test_a_large_M_gives_a_probability(M):
    for q in ([0.3, 0.2, 0.1], [1 / 36] * 36, [0.9] + [0.1 / 35] * 35):
        p = hit_probability(q, M)
        assert math.isfinite(p) and 0.0 <= p <= 1.0
        assert math.isfinite(log_hit_probability(q, M))
    # M draws cover all of 36 equally likely entries: sum_k (-1)^k C(36, k) (1 - k/36)^M, in exact rationals
    covered = sum((-1) ** k * math.comb(36, k) * Fraction(36 - k, 36) ** M for k in range(37))
    assert hit_probability([1 / 36] * 36, M) == pytest.approx(float(covered), rel=1e-9)
    assert most_probable_code([0.05] * 20, M) == list(range(20))


def test_derive_mode_at_a_large_M_keeps_every_likely_pair():
    # issue 17: a whole search at method.M >= 171 ended in OverflowError here
    probs = torch.full((SPACE.num_edges, SPACE.num_ops), 0.02).index_fill_(1, torch.tensor([OPS["sep_conv_3x3"]]), 0.86)
    genotype = derive_mode({"normal": probs}, SPACE, 500)
    assert len(genotype["normal"].edges) == SPACE.num_edges * (SPACE.num_ops - 1)  # 500 draws hit every op


def _cell(edge_probs: dict[tuple[int, int], dict[str, float]]) -> torch.Tensor:
    """(E, K) probabilities from {(src, dst): {op: prob}}; unlisted edges are 'none' with probability 1."""
    probs = torch.zeros(SPACE.num_edges, SPACE.num_ops, dtype=torch.float64)
    probs[:, OPS["none"]] = 1.0
    for (src, dst), ops in edge_probs.items():
        e = SPACE.edge_index(src, dst)
        probs[e] = 0.0
        for op, value in ops.items():
            probs[e, OPS[op]] = value
    return probs


def test_hand_computed_cell():
    probs = _cell(
        {
            (0, 2): {"sep_conv_3x3": 1.0},  # node 2: q = (0, sep3) .5, (1, skip) .3, none .2
            (1, 2): {"skip_connect": 0.6, "none": 0.4},
            (2, 4): {"dil_conv_3x3": 1.0},  # node 4: none .5 (two 'none' edges pooled), (2, dil3) .25, (3, dil5) .25
            (3, 4): {"dil_conv_5x5": 1.0},
            (4, 5): {"avg_pool_3x3": 1.0},  # node 5: none .8, (4, avg) .2
        }
    )
    genotype = derive_mode({"normal": probs, "reduce": probs}, SPACE, M=3)
    # Node 2 keeps its top two; node 3 is 'none' (pruned); node 4 keeps {none, (2, dil3)} (P_2 = .28125 against
    # P_1 = .125 and P_3 = .1875) and drops 'none'; node 5 keeps 'none' alone (P_1 = .512 > P_2 = .48).
    expected = ((0, 2, "sep_conv_3x3"), (1, 2, "skip_connect"), (2, 4, "dil_conv_3x3"))
    for cell in genotype.cells.values():
        assert cell.edges == expected and cell.concat == (2, 4)
    SPACE.validate(genotype)
    one = derive_mode({"normal": probs}, SPACE, M=1)["normal"]
    assert one.edges == ((0, 2, "sep_conv_3x3"),) and one.concat == (2,)


def test_none_entries_of_a_node_are_pooled():
    # Every edge: 'none' .3, sep_conv_3x3 .7. Pooled, 'none' weighs .3 at every node and a pair .7 / in-degree:
    # node 2 (.35) keeps a pair, nodes 3 (.233), 4 (.175) and 5 (.14) pick 'none'. Unpooled ('none' .3 / in-degree
    # per edge), every node would keep a pair.
    probs = _cell({edge: {"none": 0.3, "sep_conv_3x3": 0.7} for edge in SPACE.edges})
    cell = derive_mode({"normal": probs}, SPACE, M=1)["normal"]
    assert cell.edges == ((0, 2, "sep_conv_3x3"),)  # ties go to the first input
    assert cell.concat == (2,)


def test_empty_cell_falls_back_to_each_nodes_best_pair_with_a_warning():
    probs = _cell({edge: {"none": 0.9, "skip_connect": 0.1} for edge in SPACE.edges})
    with pytest.warns(EmptyCellWarning, match="normal cell"):
        genotype = derive_mode({"normal": probs}, SPACE, M=1)
    assert genotype["normal"].edges == tuple((0, dst, "skip_connect") for dst in (2, 3, 4, 5))
    assert genotype["normal"].concat == (2, 3, 4, 5)


@pytest.mark.parametrize("M", [1, 2, 4, 7, 9])
def test_random_probabilities_give_1_to_M_pairs_per_kept_node(M):
    gen = torch.Generator().manual_seed(M)
    for _ in range(20):
        probs = {t: torch.softmax(3 * torch.randn(14, 8, generator=gen), -1) for t in ("normal", "reduce")}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EmptyCellWarning)
            genotype = derive_mode(probs, SPACE, M)
        SPACE.validate(genotype)
        for cell in genotype.cells.values():
            degrees = [sum(1 for _, d, _ in cell.edges if d == node) for node in cell.concat]
            assert all(1 <= k <= M for k in degrees), degrees
            assert all(op != "none" for _, _, op in cell.edges)


def test_peaked_probabilities_scale_the_cell_with_M():
    # One op with .86 on every edge: M = 1 keeps one pair per node; M = 2 two (the node's top entries tie, so
    # P_2 = 2 P_1); M = 7 keeps the op on every edge (2 + 3 + 4 + 5 pairs).
    probs = torch.full((14, 8), 0.02).index_fill_(1, torch.tensor([OPS["sep_conv_3x3"]]), 0.86)
    sizes = [len(derive_mode({"normal": probs}, SPACE, M)["normal"].edges) for M in (1, 2, 7)]
    assert sizes == [4, 8, 14]


@pytest.mark.parametrize(
    "probs, match",
    [
        ({"normal": torch.ones(14, 7) / 7}, "shape"),
        ({"normal": -torch.ones(14, 8)}, "non-negative"),
        ({"normal": torch.zeros(14, 8)}, "positive sum"),
    ],
)
def test_derive_mode_rejects_ill_input(probs, match):
    with pytest.raises(ValueError, match=match):
        derive_mode(probs, SPACE, 3)
    with pytest.raises(ValueError, match="M must be at least 1"):
        derive_mode({"normal": torch.ones(14, 8) / 8}, SPACE, 0)


@pytest.mark.parametrize("derive_from", ["h", "p"])
def test_egs_derives_the_mode_from_h_by_default_and_scores_it_with_batch_statistics(derive_from):
    m = EGS(EGSConfig(M=4, lam=0.5, derive_from=derive_from))
    ctx = tiny_context()
    m.setup(ctx)
    with torch.no_grad():
        for alpha in m.alphas.values():
            alpha[:, OPS["sep_conv_5x5"]] = 2.0
    scored = []

    def score(weights, batches=None):
        assert all(bn.running_mean is None for bn in ctx.model.modules() if isinstance(bn, torch.nn.BatchNorm2d))
        scored.append(weights)
        return 42.0

    genotype = m.derive(score)
    probs = m.effectiveness() if derive_from == "h" else m.probabilities()
    assert genotype == derive_mode(probs, ctx.space, 4)
    assert m.derive_score == 42.0 and len(scored) == 1
    assert all(torch.equal(scored[0][t], w) for t, w in genotype_weights(ctx.space, genotype).items())
    # The efficiency credits favour free ops: h and p derive different cells here.
    other = derive_mode(m.probabilities() if derive_from == "h" else m.effectiveness(), ctx.space, 4)
    assert other != genotype


def test_egs_records_the_empty_cell_warning():
    m = EGS(EGSConfig(M=1, lam=1.0))
    ctx = tiny_context()
    m.setup(ctx)
    with torch.no_grad():
        for alpha in m.alphas.values():
            alpha[:, OPS["none"]] = 5.0
    with pytest.warns(EmptyCellWarning):
        genotype = m.derive(lambda weights, batches=None: 0.0)
    assert len(m.derive_warnings) == 2 and "reduce cell" in m.derive_warnings[1]
    assert all(len(cell.concat) == 4 for cell in genotype.cells.values())

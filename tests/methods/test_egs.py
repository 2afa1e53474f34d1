"""EGS: sampler statistics (paper Definition 1, Figure 1), resource constraint, search step, derivation."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from egsbench.methods import METHODS
from egsbench.methods.egs import EGS, EGSConfig, efficiency_credits, ensemble_gumbel_softmax
from egsbench.tasks.spaces import ConfigError
from egsbench.testing import batch, tiny_context

N = 200_000


def _binomial_tolerance(p: float, n: int = N) -> float:
    return 5 * math.sqrt(p * (1 - p) / n)  # 5 sigma: a false failure is ~1 in 3.5 million


def test_figure1_code_frequencies_for_two_samples():
    g = torch.Generator().manual_seed(0)
    codes = ensemble_gumbel_softmax(torch.log(torch.tensor([0.5, 0.5])).expand(N, 2), M=2, generator=g)
    freq = Counter(map(tuple, codes.tolist()))
    assert set(freq) == {(1.0, 1.0), (1.0, 0.0), (0.0, 1.0)}
    for code, p in {(1.0, 1.0): 0.5, (1.0, 0.0): 0.25, (0.0, 1.0): 0.25}.items():
        assert abs(freq[code] / N - p) < _binomial_tolerance(p)


@pytest.mark.parametrize("M", [1, 2, 3, 7])
def test_marginals_and_number_of_ones(M):
    g = torch.Generator().manual_seed(M)
    p = torch.tensor([0.05, 0.1, 0.15, 0.3, 0.4])
    codes = ensemble_gumbel_softmax(torch.log(p).expand(N, 5), M=M, generator=g)
    assert set(codes.unique().tolist()) <= {0.0, 1.0}  # exactly binary forward values
    ones = codes.sum(dim=-1)
    assert ones.min() >= 1 and ones.max() <= min(M, 5)
    expected = 1 - (1 - p) ** M
    for k in range(5):
        assert abs(codes[:, k].mean().item() - expected[k].item()) < _binomial_tolerance(expected[k].item())


def test_codes_are_exactly_binary_with_gradients():
    logits = torch.randn(6, 8, requires_grad=True)
    codes = ensemble_gumbel_softmax(torch.log_softmax(logits, -1), M=4, tau=0.7)
    assert ((codes == 0) | (codes == 1)).all()
    (codes * torch.randn(6, 8)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_same_generator_seed_gives_same_codes_and_bad_arguments_raise():
    lp = torch.log_softmax(torch.randn(14, 8), -1)
    a = ensemble_gumbel_softmax(lp, 7, generator=torch.Generator().manual_seed(3))
    b = ensemble_gumbel_softmax(lp, 7, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="M must be at least 1"):
        ensemble_gumbel_softmax(lp, 0)
    with pytest.raises(ValueError, match="tau"):
        ensemble_gumbel_softmax(lp, 2, tau=0.0)


def test_efficiency_credits_favour_cheap_ops_and_sum_to_one():
    cost = torch.tensor([[0.0, 1.0, 4.0, 10.0], [0.0, 0.0, 0.0, 0.0]])
    credits = efficiency_credits(cost)
    assert torch.allclose(credits.sum(-1), torch.ones(2))
    assert (credits[0, :-1] > credits[0, 1:]).all()
    assert torch.allclose(credits[1], torch.full((4,), 0.25))
    assert efficiency_credits(cost, sharpness=4.0)[0, 0] > credits[0, 0]


def test_registered_and_resource_constraint_mixes_credits():
    assert METHODS.get("egs") is EGS
    m = EGS(EGSConfig(lam=0.5))
    m.setup(tiny_context())
    p = m.probabilities()["normal"]
    h = torch.softmax(m.alphas["normal"], -1)
    assert torch.allclose(p, 0.5 * h + 0.5 * m.credits_l["normal"])
    assert torch.allclose(p.sum(-1), torch.ones(14))
    k = m.ctx.space.op_index
    assert (p[:, k("skip_connect")] > p[:, k("sep_conv_5x5")]).all()  # free ops get more mass
    off = EGS(EGSConfig(lam=1.0))
    off.setup(tiny_context())
    assert off.credits_l is None
    assert torch.allclose(off.probabilities()["normal"], torch.softmax(off.alphas["normal"], -1))


@pytest.mark.parametrize("bilevel", [False, True])
def test_search_step_updates_weights_and_alpha(bilevel):
    torch.manual_seed(0)
    m = EGS(EGSConfig(M=3, bilevel=bilevel))
    ctx = tiny_context()
    m.setup(ctx)
    m.start_epoch(0)
    before_w = [p.detach().clone() for p in ctx.model.parameters()]
    before_a = {t: a.detach().clone() for t, a in m.alphas.items()}
    stats = m.step(batch(0), batch(1))
    assert math.isfinite(stats.loss) and 1.0 <= stats.extras["ops_per_edge"] <= 3.0
    assert any(not torch.equal(a, b) for a, b in zip(before_w, ctx.model.parameters(), strict=True))
    assert all(not torch.equal(before_a[t], m.alphas[t]) for t in before_a)


def test_gradients_reach_alpha_through_the_supernet():
    m = EGS(EGSConfig(M=2))
    ctx = tiny_context()
    m.setup(ctx)
    x, y = batch()
    F.cross_entropy(ctx.model(x, m.sample()), y).backward()
    for t, alpha in m.alphas.items():
        assert alpha.grad is not None and alpha.grad.abs().sum() > 0, t


def test_normalize_divides_codes_by_their_sum_over_the_ops_that_run():
    m = EGS(EGSConfig(M=5, normalize=True, lam=1.0))
    m.setup(tiny_context())
    with torch.no_grad():
        m.alphas["normal"][:7, 0] = 3.0  # 'none' likely on the first edges, so it is often sampled with others
    raw = EGS(EGSConfig(M=5, lam=1.0))
    raw.setup(tiny_context())
    raw.alphas.load_state_dict(m.alphas.state_dict())
    codes = m.sample(torch.Generator().manual_seed(0))
    binary = raw.sample(torch.Generator().manual_seed(0))  # the same draws, not normalised
    c, b = codes["normal"].detach(), binary["normal"].detach()
    ops = b[:, 1:].sum(-1)  # non-none ops sampled per edge
    mixed, alone = (b[:, 0] == 1) & (ops > 0), ops == 0
    assert mixed.any() and alone.any(), "the case must hold edges with 'none' among others and 'none' alone"
    ran = ops > 0
    assert torch.allclose(c[ran, 1:].sum(-1), torch.ones(int(ran.sum())))
    assert torch.equal(c[ran], b[ran] / ops[ran, None])  # 'none' gets 1 / (non-none count) too, as the authors'
    assert torch.equal(c[alone], b[alone])  # 'none' alone stays 1 (it never runs)


def test_ops_per_edge_counts_only_ops_that_run():
    m = EGS(EGSConfig(M=3, lam=1.0))
    ctx = tiny_context()
    m.setup(ctx)
    with torch.no_grad():
        for alpha in m.alphas.values():
            alpha[:, 0] = 50.0  # every code is 'none' alone: nothing runs
    m.start_epoch(0)
    assert m.step(batch(0), batch(1)).extras["ops_per_edge"] == 0.0


def test_derive_sample_keeps_every_sampled_op_and_picks_the_best_scored_candidate():
    m = EGS(EGSConfig(M=4, derive="sample", derive_candidates=6))
    ctx = tiny_context()
    m.setup(ctx)
    seen = []

    def score(codes):
        # Candidates are scored with BatchNorm on batch statistics: the running averages are hidden.
        assert all(bn.running_mean is None for bn in ctx.model.modules() if isinstance(bn, torch.nn.BatchNorm2d))
        seen.append({t: c.clone() for t, c in codes.items()})
        return float(codes["normal"].sum())  # prefers the densest candidate

    genotype = m.derive(score)
    ctx.space.validate(genotype)
    assert len(seen) == 6
    best = max(seen, key=lambda c: float(c["normal"].sum()))
    assert genotype == m.genotype_from_codes(best)
    # Several ops on one edge occur for M = 4 over 8 ops.
    normal = genotype["normal"]
    assert any(len(normal.ops_on(s, d)) > 1 for s, d, _ in normal.edges)
    assert all(op != "none" for _, _, op in normal.edges)
    # Seeded: the same alphas give the same genotype; the running averages are back.
    assert m.derive(score) == genotype
    assert all(bn.running_mean is not None for bn in ctx.model.modules() if isinstance(bn, torch.nn.BatchNorm2d))


def test_tau_schedule():
    m = EGS(EGSConfig(tau=1.0, tau_final=0.1, tau_schedule="exponential"))
    ctx = tiny_context()
    m.setup(ctx)
    m.start_epoch(1)
    assert m.tau == pytest.approx(0.1)
    lin = EGS(EGSConfig(tau=1.0, tau_final=0.5))
    lin.setup(ctx)
    lin.start_epoch(1)
    assert lin.tau == pytest.approx(0.5)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"M": 0}, "method.M"),
        ({"lam": 1.5}, "method.lam"),
        ({"cost": "flops"}, "method.cost"),
        ({"credits": "sigmoid"}, "method.credits"),
        ({"derive_candidates": 0}, "method.derive_candidates"),
        ({"derive": "argmax"}, "method.derive"),
        ({"derive_from": "l"}, "method.derive_from"),
        ({"arch_weight_decay": -1.0}, "method.arch_weight_decay"),
    ],
)
def test_bad_config_values_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        EGSConfig(**kwargs)

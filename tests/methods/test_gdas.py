"""GDAS: hard Gumbel sampling, one op per edge, temperature, bilevel step, top-2 derivation, resume."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from egsbench.methods import METHODS
from egsbench.methods.gdas import GDAS, GDASConfig, gumbel_hard
from egsbench.tasks.spaces import SPACES, ConfigError
from egsbench.testing import batch, op_calls, tiny_context


def _gdas(ctx=None, **config):
    m = GDAS(GDASConfig(**config))
    m.setup(ctx if ctx is not None else tiny_context("darts"))
    m.start_epoch(0)
    return m


def test_registered_with_darts_space_and_init():
    assert METHODS.get("gdas") is GDAS and GDAS.space == "darts"
    m = _gdas()
    for a in m.alphas.values():
        assert a.shape == (14, 8) and a.abs().max() < 1e-2  # 1e-3 * randn
    assert torch.equal(_gdas().alphas["reduce"], m.alphas["reduce"])  # seeded from ctx.seed
    assert torch.allclose(m.probabilities()["normal"], torch.softmax(m.alphas["normal"], -1))


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"tau_min": 0.0}, "method.tau_min"),
        ({"tau_max": 0.05}, "method.tau_max"),
        ({"arch_lr": -1.0}, "method.arch_lr"),
    ],
)
def test_bad_config_values_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        GDASConfig(**kwargs)


def test_temperature_goes_linearly_from_tau_max_to_tau_min():
    m = GDAS(GDASConfig())
    m.setup(tiny_context("darts", epochs=5))
    taus = []
    for e in range(5):
        m.start_epoch(e)
        taus.append(m.tau)
    assert taus == pytest.approx([10.0, 7.525, 5.05, 2.575, 0.1])


def test_hard_samples_follow_softmax_alpha_at_any_temperature():
    n = 40_000
    alpha = torch.tensor([0.0, 1.0, -1.0, 2.0])
    p = torch.softmax(alpha, -1)
    for tau in (10.0, 0.1):
        w, idx = gumbel_hard(alpha.expand(n, 4), tau, torch.Generator().manual_seed(0))
        assert torch.equal(w, F.one_hot(idx, 4).float())  # forward values exactly one-hot
        freq = torch.bincount(idx, minlength=4).float() / n
        assert (freq - p).abs().max() < 5 * math.sqrt(0.25 / n)  # Gumbel-max: P(idx = k) = softmax(alpha)_k


def test_forward_weights_are_exactly_one_hot_and_carry_gradient():
    m = _gdas()
    for t, w in m.sample(torch.Generator().manual_seed(0)).items():
        assert ((w == 0) | (w == 1)).all() and torch.equal(w.sum(-1), torch.ones(14)), t
        assert w.requires_grad
    assert all(not w.requires_grad for w in m.sample(detach=True).values())


def test_exactly_the_sampled_op_runs_on_each_edge():
    m = _gdas()
    net, space = m.ctx.model, m.ctx.space
    weights = m.sample(torch.Generator().manual_seed(1))
    with op_calls(net) as calls:
        net(batch()[0], weights)
    none = space.op_index("none")
    expected = {}
    for i, cell in enumerate(net.cells):
        chosen = weights[net.cell_type(cell)].argmax(-1).tolist()
        expected |= {(i, e, k): 1 for e, k in enumerate(chosen) if k != none}  # a sampled 'none' runs nothing
    assert dict(calls) == expected
    ran = {(c, e) for c, e, _ in calls}
    assert len(ran) == len(calls)  # never two ops on one edge


def test_gradient_reaches_alpha_through_the_sampled_op():
    m = _gdas()
    x, y = batch()
    weights = m.sample(torch.Generator().manual_seed(2))
    F.cross_entropy(m.ctx.model(x, weights), y).backward()
    for t, a in m.alphas.items():
        assert a.grad is not None and a.grad.abs().sum() > 0, t


def test_step_updates_weights_on_train_and_alpha_on_val():
    runs = []
    for val_seed in (1, 2):
        torch.manual_seed(0)
        ctx = tiny_context("darts")
        m = _gdas(ctx)
        before_w = [p.detach().clone() for p in ctx.model.parameters()]
        before_a = {t: a.detach().clone() for t, a in m.alphas.items()}
        stats = m.step(batch(0), batch(val_seed))
        assert math.isfinite(stats.loss) and math.isfinite(stats.extras["arch_loss"]) and stats.extras["tau"] == 10.0
        assert any(not torch.equal(a, b) for a, b in zip(before_w, ctx.model.parameters(), strict=True))
        assert all(not torch.equal(before_a[t], m.alphas[t]) for t in before_a)
        weights_after = [p.detach().clone() for p in ctx.model.parameters()]
        runs.append((weights_after, {t: a.detach().clone() for t, a in m.alphas.items()}))
    (w1, a1), (w2, a2) = runs
    assert all(torch.equal(p, q) for p, q in zip(w1, w2, strict=True))  # weights see only the training batch
    assert any(not torch.equal(a1[t], a2[t]) for t in a1)  # alpha sees the validation batch


def test_derive_takes_the_top_two_input_op_pairs_per_node_excluding_none():
    m = _gdas()
    space = m.ctx.space
    e, k = space.edge_index, space.op_index
    with torch.no_grad():
        for a in m.alphas.values():
            a.zero_()
            a[:, k("none")] = 9.0  # never selected, however likely
        normal = m.alphas["normal"]
        normal[e(0, 2), k("sep_conv_3x3")] = 3.0  # node 2: the same input twice, with two ops
        normal[e(0, 2), k("skip_connect")] = 2.0
        normal[e(1, 2), k("max_pool_3x3")] = 1.0
        normal[e(2, 3), k("dil_conv_5x5")] = 3.0  # node 3: two inputs
        normal[e(1, 3), k("avg_pool_3x3")] = 2.5
        normal[e(3, 4), k("sep_conv_5x5")] = 3.0  # node 4
        normal[e(0, 4), k("dil_conv_3x3")] = 2.0
        normal[e(4, 5), k("skip_connect")] = 3.0  # node 5
        normal[e(2, 5), k("sep_conv_3x3")] = 2.0
    seen = []

    def score(weights, batches=None):
        seen.append(weights)
        return 7.0

    genotype = m.derive(score)
    SPACES.get("darts").validate(genotype)
    cell = genotype["normal"]
    assert sorted(cell.edges) == sorted(
        [
            (0, 2, "sep_conv_3x3"),
            (0, 2, "skip_connect"),
            (2, 3, "dil_conv_5x5"),
            (1, 3, "avg_pool_3x3"),
            (3, 4, "sep_conv_5x5"),
            (0, 4, "dil_conv_3x3"),
            (4, 5, "skip_connect"),
            (2, 5, "sep_conv_3x3"),
        ]
    )
    assert cell.concat == (2, 3, 4, 5) and genotype["reduce"].concat == (2, 3, 4, 5)
    for node in space.intermediate_nodes:
        assert sum(1 for _, dst, _ in genotype["reduce"].edges if dst == node) == 2
    assert all(op != "none" for c in genotype.cells.values() for _, _, op in c.edges)
    assert m.derive_score == 7.0 and seen[0]["normal"].sum() == 8 and seen[0]["normal"][e(0, 2)].sum() == 2

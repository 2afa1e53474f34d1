"""SNAS: relaxed sampling, temperature, resource penalty, single-level step, child derivation, resume."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from egsbench.methods import METHODS
from egsbench.methods.snas import CONSTRAINTS, SNAS, SNASConfig, resource_penalty
from egsbench.tasks.spaces import SPACES, CellGenotype, ConfigError, Genotype, UserError
from egsbench.testing import batch, tiny_context


def _snas(ctx=None, **config):
    m = SNAS(SNASConfig(**config))
    m.setup(ctx if ctx is not None else tiny_context())
    m.start_epoch(0)
    return m


def _one_hot(space, op):
    return {
        t: F.one_hot(torch.full((space.num_edges,), space.op_index(op)), space.num_ops).float()
        for t in space.cell_types
    }


def test_registered_with_dag_space_and_init():
    assert METHODS.get("snas") is SNAS and SNAS.space == "dag"
    m = _snas()
    for a in m.alphas.values():
        assert a.shape == (14, 8)
        assert abs(a.mean().item() - 1.0) < 0.01 and 0.005 < a.std().item() < 0.02  # N(1, 0.01)
    assert torch.equal(_snas().alphas["normal"], m.alphas["normal"])  # seeded from ctx.seed
    assert torch.allclose(m.probabilities()["normal"], torch.softmax(m.alphas["normal"], -1))


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"tau": 0.0}, "method.tau"),
        ({"tau_final": -1.0}, "method.tau"),
        ({"constraint": "extreme"}, "method.constraint"),
        ({"resource_lambda": -1e-3}, "method.resource_lambda"),
        ({"resource_metrics": ["latency"]}, "method.resource_metrics"),
        ({"resource_metrics": []}, "method.resource_metrics"),
        ({"drop_path_prob": 1.0}, "method.drop_path_prob"),
        ({"arch_optimizer": "rmsprop"}, "method.arch_optimizer"),
        ({"arch_lr": 0.0}, "method.arch_lr"),
        ({"arch_grad_clip": 0.0}, "method.arch_grad_clip"),
    ],
)
def test_bad_config_values_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        SNASConfig(**kwargs)


def test_constraint_levels_map_to_increasing_lambdas_and_the_override_wins():
    lams = [SNASConfig(constraint=c).lambda_r for c in ("none", "mild", "moderate", "aggressive")]
    assert lams == [CONSTRAINTS[c] for c in ("none", "mild", "moderate", "aggressive")]
    assert lams[0] == 0.0 and lams == sorted(lams) and len(set(lams)) == 4
    assert SNASConfig().lambda_r == 1e-2  # moderate by default
    assert SNASConfig(constraint="mild", resource_lambda=1.5e-3).lambda_r == 1.5e-3
    off = _snas(constraint="none")
    assert off.costs is None and off.penalty(off.sample()).item() == 0.0


def test_temperature_is_annealed_linearly_from_first_to_last_epoch():
    m = SNAS(SNASConfig())
    m.setup(tiny_context(epochs=5))
    taus = []
    for e in range(5):
        m.start_epoch(e)
        taus.append(m.tau)
    assert taus[0] == pytest.approx(1.0) and taus[-1] == pytest.approx(0.03)
    assert all(b - a == pytest.approx((0.03 - 1.0) / 4) for a, b in zip(taus, taus[1:], strict=False))
    assert m.w_optimizer.param_groups[0]["lr"] < 0.025  # cosine schedule applied per epoch


def test_samples_are_dense_relaxed_and_sharpen_with_temperature():
    m = _snas()
    z = m.sample(torch.Generator().manual_seed(0))
    for t, w in z.items():
        assert w.shape == (14, 8) and (w > 0).all(), t  # soft Z: every op gets weight
        assert torch.allclose(w.sum(-1), torch.ones(14))
    m.tau = 0.03
    cold = m.sample(torch.Generator().manual_seed(0))["normal"]
    assert cold.max(-1).values.mean() > z["normal"].max(-1).values.mean()


def test_penalty_is_the_per_cell_mean_of_log_costs_for_one_hot_weights():
    m = _snas()
    space = m.ctx.space
    w = _one_hot(space, "sep_conv_3x3")
    k = space.op_index("sep_conv_3x3")
    expected = 0.0
    for t in space.cell_types:
        per_metric = [m.ctx.op_costs(metric, per_cell=True)[t][..., k] for metric in ("params", "macs", "mac_memory")]
        logs = torch.stack([torch.log(c.clamp_min(1.0)) for c in per_metric]).mean(0)  # (n_cells, E)
        expected += logs.sum().item() / logs.shape[0]  # 1 normal cell, 2 reduction cells here
    assert m.penalty(w).item() == pytest.approx(expected, rel=1e-5)


def test_penalty_grows_with_heavier_ops_and_lambda():
    space = SPACES.get("dag")
    heavy, light, free = (_one_hot(space, op) for op in ("sep_conv_5x5", "skip_connect", "none"))
    m = _snas()
    assert m.penalty(heavy) > m.penalty(light) > m.penalty(free) == 0.0

    def under_alpha_favouring(target):  # through a relaxed sample, as in a search step
        with torch.no_grad():
            for t, a in m.alphas.items():
                a.copy_(5.0 * target[t])
        torch.manual_seed(0)
        return m.penalty(m.sample())

    assert under_alpha_favouring(heavy) > under_alpha_favouring(light)
    mild, aggressive = _snas(constraint="mild"), _snas(constraint="aggressive")
    assert aggressive.resource_lambda * aggressive.penalty(heavy) > mild.resource_lambda * mild.penalty(heavy)


def test_penalty_gradient_reaches_alpha_and_pushes_mass_to_cheap_ops():
    m = _snas()
    m.penalty(m.sample()).backward()
    for t, a in m.alphas.items():
        assert a.grad is not None and a.grad.abs().sum() > 0, t
    # Minimising the penalty alone moves probability from sep_conv_5x5 to the free zero op on every edge.
    k = m.ctx.space.op_index
    before = m.probabilities()["normal"].detach()
    opt = torch.optim.Adam(m.alphas.parameters(), lr=0.05)
    torch.manual_seed(0)
    for _ in range(30):
        opt.zero_grad()
        m.penalty(m.sample()).backward()
        opt.step()
    after = m.probabilities()["normal"].detach()
    assert (after[:, k("none")] > before[:, k("none")]).all()
    assert (after[:, k("sep_conv_5x5")] < before[:, k("sep_conv_5x5")]).all()


def test_resource_penalty_skips_cell_types_without_cells():
    w = {"normal": torch.ones(2, 3), "reduce": torch.ones(2, 3)}
    costs = {"macs": {"normal": torch.full((2, 2, 3), 10.0), "reduce": torch.zeros(0, 2, 3)}}
    assert resource_penalty(w, costs).item() == pytest.approx(2 * math.log(30.0))


@pytest.mark.parametrize("arch_optimizer", ["adam", "sgd"])
def test_single_level_step_updates_weights_and_alpha_and_ignores_val_batch(arch_optimizer):
    states = []
    for val_seed in (1, 2):
        torch.manual_seed(0)
        ctx = tiny_context()
        m = _snas(ctx, arch_optimizer=arch_optimizer)
        assert ctx.model.drop_path_prob == 0.3
        before_w = [p.detach().clone() for p in ctx.model.parameters()]
        before_a = {t: a.detach().clone() for t, a in m.alphas.items()}
        stats = m.step(batch(0), batch(val_seed))
        assert math.isfinite(stats.loss) and stats.extras["penalty"] > 0 and stats.extras["tau"] == 1.0
        assert any(not torch.equal(a, b) for a, b in zip(before_w, ctx.model.parameters(), strict=True))
        assert all(not torch.equal(before_a[t], m.alphas[t]) for t in before_a)
        states.append(({t: a.detach().clone() for t, a in m.alphas.items()}, list(ctx.model.parameters())))
    (a1, w1), (a2, w2) = states
    assert all(torch.equal(a1[t], a2[t]) for t in a1)  # the validation batch plays no part
    assert all(torch.equal(p, q) for p, q in zip(w1, w2, strict=True))


def test_alpha_gradient_norm_is_clipped():
    m = _snas(arch_optimizer="sgd", arch_lr=1.0, arch_grad_clip=1e-3)
    before = {t: a.detach().clone() for t, a in m.alphas.items()}
    m.step(batch(0), batch(1))
    moved = torch.cat([(m.alphas[t] - before[t]).flatten() for t in before])
    assert moved.norm().item() == pytest.approx(1e-3, rel=1e-3)  # SGD step = lr * clipped gradient


def _set_argmax(m, choices):
    """choices: {cell type: {(src, dst): op}}; every other edge gets 'none' as its argmax."""
    space = m.ctx.space
    with torch.no_grad():
        for t, a in m.alphas.items():
            a.zero_()
            a[:, space.op_index("none")] = 1.0
            for (src, dst), op in choices.get(t, {}).items():
                a[space.edge_index(src, dst), space.op_index(op)] = 2.0


def test_derive_keeps_every_non_none_argmax_edge_and_prunes_dead_nodes():
    m = _snas()
    _set_argmax(
        m,
        {
            "normal": {
                (0, 2): "sep_conv_3x3",
                (1, 2): "skip_connect",
                (2, 3): "max_pool_3x3",
                (3, 5): "dil_conv_5x5",
                (4, 5): "sep_conv_5x5",
            },  # node 4 has no inputs: its edge to 5 goes
            "reduce": {(0, 2): "avg_pool_3x3"},
        },
    )
    seen = []

    def score(weights, batches=None):
        seen.append({t: w.clone() for t, w in weights.items()})
        return 42.0

    genotype = m.derive(score)
    expected = Genotype(
        {
            "normal": CellGenotype(
                ((0, 2, "sep_conv_3x3"), (1, 2, "skip_connect"), (2, 3, "max_pool_3x3"), (3, 5, "dil_conv_5x5")),
                (2, 3, 5),
            ),
            "reduce": CellGenotype(((0, 2, "avg_pool_3x3"),), (2,)),
        }
    )
    assert genotype == expected
    SPACES.get("dag").validate(genotype)
    assert m.derive_score == 42.0 and len(seen) == 1
    assert seen[0]["normal"].sum() == 4 and seen[0]["reduce"].sum() == 1  # the child's ops, one-hot


def test_derive_names_the_empty_cell():
    m = _snas()
    _set_argmax(m, {"normal": {(0, 2): "sep_conv_3x3"}})
    with pytest.raises(UserError, match="empty reduce cell"):
        m.derive(lambda weights, batches=None: 0.0)

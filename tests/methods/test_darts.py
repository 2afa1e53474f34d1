"""DARTS: config, bilevel steps, the second-order hypergradient against double backward, derivation, resume."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from egsbench.methods import METHODS, SearchConfig, SearchContext
from egsbench.methods.darts import DARTS, DARTSConfig
from egsbench.tasks.spaces import SPACES, CellGenotype, ConfigError, Genotype, LossOutput, SearchNetwork


def _loss(m, batch, weights):
    x, y = batch
    return LossOutput(F.cross_entropy(m(x, weights), y), {"accuracy": 0.0})


def _ctx(dtype=torch.float32, smooth=False, layers=3, channels=4, **search):
    space = SPACES.get("darts")
    torch.manual_seed(0)
    model = SearchNetwork(space, channels, 10, layers).to(dtype)
    if smooth:
        _smooth(model)
    return SearchContext(
        model=model,
        space=space,
        loss=_loss,
        config=SearchConfig(epochs=2, **search),
        steps_per_epoch=1,
        seed=0,
        op_costs=model.op_costs,
    )


def _smooth(module: nn.Module) -> None:
    """ReLU -> GELU and max -> average pooling: a supernet without kinks, for finite differences at any radius."""
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, name, nn.GELU())
        elif isinstance(child, nn.MaxPool2d):
            setattr(module, name, nn.AvgPool2d(3, child.stride, 1, count_include_pad=False))
        else:
            _smooth(child)


def _batch(seed=0, n=4, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=g, dtype=dtype), torch.randint(0, 10, (n,), generator=g)


def _method(ctx, **kwargs) -> DARTS:
    torch.manual_seed(0)
    m = DARTS(DARTSConfig(**kwargs))
    m.setup(ctx)
    m.start_epoch(0)
    return m


def test_registered_and_alphas_stay_out_of_the_weight_optimizer():
    assert METHODS.get("darts") is DARTS
    m = _method(_ctx())
    sgd = {id(p) for group in m.w_optimizer.param_groups for p in group["params"]}
    assert not sgd & {id(a) for a in m.alphas.values()}
    assert sgd == {id(p) for p in m.ctx.model.parameters()}
    for t, alpha in m.alphas.items():
        assert alpha.shape == (14, 8) and alpha.abs().max() < 1e-2  # 1e-3 * randn
        assert torch.equal(m.probabilities()[t], torch.softmax(alpha, -1))
    assert torch.equal(m.alphas["normal"], _method(_ctx()).alphas["normal"])  # seeded by ctx.seed


@pytest.mark.parametrize(
    "kwargs, key",
    [({"order": 3}, "method.order"), ({"order": 0}, "method.order"), ({"unrolled_r": 0.0}, "method.unrolled_r")],
)
def test_bad_config_values_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        DARTSConfig(**kwargs)


@pytest.mark.parametrize("order", [1, 2])
def test_search_step_updates_weights_and_alpha(order):
    ctx = _ctx()
    m = _method(ctx, order=order)
    before_w = [p.detach().clone() for p in ctx.model.parameters()]
    before_a = {t: a.detach().clone() for t, a in m.alphas.items()}
    stats = m.step(_batch(0), _batch(1))
    assert math.isfinite(stats.loss) and math.isfinite(stats.extras["val_loss"])
    assert stats.extras["lr"] == pytest.approx(ctx.config.lr)
    if order == 2:
        assert stats.extras["fd_radius"] > 0 and stats.extras["hvp_correction"] > 0
    assert all(not torch.equal(a, b) for a, b in zip(before_w, ctx.model.parameters(), strict=True))
    assert all(not torch.equal(before_a[t], m.alphas[t]) for t in before_a)


def test_unrolled_gradient_leaves_the_supernet_untouched():
    ctx = _ctx()
    m = _method(ctx, order=2)
    m.step(_batch(0), _batch(1))  # momentum buffers exist from here on
    ctx.model.zero_grad(set_to_none=True)
    m.a_optimizer.zero_grad(set_to_none=True)
    state = {k: v.clone() for k, v in ctx.model.state_dict().items()}  # parameters and BN running statistics
    grads = m.unrolled_gradient(_batch(2), _batch(3)).alpha
    for k, v in ctx.model.state_dict().items():
        assert torch.equal(v, state[k]), k  # bitwise
    assert all(p.grad is None for p in ctx.model.parameters())
    assert all(a.grad is None for a in m.alphas.values())  # returned, not accumulated
    assert all(g.abs().sum() > 0 for g in grads.values())


def _exact_unrolled_gradient(m: DARTS, train, val) -> torch.Tensor:
    """``d/dalpha L_val(w - xi * (mu * v_mom + grad_w L_tr(w, alpha) + wd * w), alpha)`` by double backward."""
    net, names = m.ctx.model, [n for n, _ in m.ctx.model.named_parameters()]
    group = m.w_optimizer.param_groups[0]
    xi, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
    buffers = {n: b.clone() for n, b in net.named_buffers()}

    def loss(params, batch):
        x, y = batch
        return F.cross_entropy(
            functional_call(net, dict(zip(names, params, strict=True)) | buffers, (x, m.probabilities())), y
        )

    w = [p.detach().requires_grad_(True) for p in net.parameters()]
    grad_w = torch.autograd.grad(loss(w, train), w, create_graph=True)  # a function of alpha
    unrolled = [
        p.detach() - xi * (g + wd * p.detach() + mu * m.w_optimizer.state[q]["momentum_buffer"])
        for p, g, q in zip(w, grad_w, net.parameters(), strict=True)
    ]
    grads = torch.autograd.grad(loss(unrolled, val), list(m.alphas.values()))
    return torch.cat([g.flatten() for g in grads])


def _hypergradient_errors(smooth: bool, unrolled_r: float) -> dict[str, float]:
    """Relative errors against the exact unrolled gradient: DARTS's finite difference, and first order."""
    dtype = torch.float64
    ctx = _ctx(dtype, smooth=smooth, lr=0.1)  # a large xi makes the second-order term a sizeable part
    m = _method(ctx, order=2, unrolled_r=unrolled_r)
    assert all(a.dtype == dtype for a in m.alphas.values())
    m.step(_batch(0, dtype=dtype), _batch(1, dtype=dtype))  # momentum buffers and weight decay both enter w'
    train, val = _batch(2, dtype=dtype), _batch(3, dtype=dtype)
    hyper = m.unrolled_gradient(train, val)
    approx = torch.cat([hyper.alpha[t].flatten() for t in m.alphas])
    exact = _exact_unrolled_gradient(m, train, val)
    first_order = torch.cat(
        [
            g.flatten()
            for g in torch.autograd.grad(_loss(ctx.model, val, m.probabilities()).loss, list(m.alphas.values()))
        ]
    )
    return {
        "finite_difference": ((approx - exact).norm() / exact.norm()).item(),
        "first_order": ((first_order - exact).norm() / exact.norm()).item(),
    }


@pytest.mark.parametrize(
    "smooth, unrolled_r, tolerance",
    [
        # ReLU and max-pool kinks: at the default radius (0.01) the finite difference crosses many of them and
        # differs from the almost-everywhere Hessian of double backward; a tiny radius (float64) crosses none.
        (False, 1e-6, 1e-7),
        (True, 0.01, 1e-3),  # smooth supernet (GELU, average pools): the default radius itself
    ],
)
def test_second_order_gradient_matches_double_backward(smooth, unrolled_r, tolerance):
    errors = _hypergradient_errors(smooth, unrolled_r)
    assert errors["first_order"] > 0.05  # the second-order term matters here...
    assert errors["finite_difference"] < tolerance  # ...and the finite difference reproduces it


def _expected_genotype() -> Genotype:
    # Node 2 keeps both inputs; node 3 drops edge (1, 3), whose mass sits on 'none'; nodes 4, 5 tie everywhere
    # and fall back to the original's order: the first two sources, the first non-zero op.
    normal = ((0, 2, "sep_conv_3x3"), (1, 2, "skip_connect"), (2, 3, "max_pool_3x3"), (0, 3, "avg_pool_3x3"))
    normal += tuple((src, dst, "max_pool_3x3") for dst in (4, 5) for src in (0, 1))
    reduce = tuple((src, dst, "max_pool_3x3") for dst in (2, 3, 4, 5) for src in (0, 1))
    concat = (2, 3, 4, 5)
    return Genotype({"normal": CellGenotype(normal, concat), "reduce": CellGenotype(reduce, concat)})


def _unused_score(weights, batches=None) -> float:
    raise AssertionError("DARTS derives from alpha alone")


def test_derive_follows_model_search_genotype():
    m = _method(_ctx())
    space = m.ctx.space
    genotype = m.derive(_unused_score)
    SPACES.get("darts").validate(genotype)
    for cell in genotype.cells.values():
        assert cell.concat == (2, 3, 4, 5)
        for dst in (2, 3, 4, 5):
            inputs = [(s, op) for s, d, op in cell.edges if d == dst]
            assert len(inputs) == 2 and len({s for s, _ in inputs}) == 2
            assert all(op != "none" for _, op in inputs)

    alpha = torch.zeros(14, 8)
    k, e = space.op_index, space.edge_index
    alpha[e(0, 2), k("sep_conv_3x3")] = 2.0
    alpha[e(1, 2), k("skip_connect")] = 1.0
    alpha[e(1, 3), k("none")] = 5.0  # the largest alpha of the cell, but 'none' never counts
    alpha[e(1, 3), k("dil_conv_5x5")] = 1.5
    alpha[e(2, 3), k("max_pool_3x3")] = 1.0
    alpha[e(0, 3), k("avg_pool_3x3")] = 0.5
    with torch.no_grad():
        m.alphas["normal"].copy_(alpha)
        m.alphas["reduce"].zero_()
    assert m.derive(_unused_score) == _expected_genotype()


def test_state_dict_round_trip_resumes_identically():
    ctx = _ctx()
    a = _method(ctx, order=2)
    a.step(_batch(0), _batch(1))
    state = copy.deepcopy(a.state_dict())  # as a checkpoint on disk would hold it
    model_state = {k: v.clone() for k, v in ctx.model.state_dict().items()}

    ctx_b = _ctx()
    ctx_b.model.load_state_dict(model_state)
    b = DARTS(DARTSConfig(order=2))
    b.setup(ctx_b)
    b.load_state_dict(state)
    assert b.epoch == a.epoch
    for t in a.alphas:
        assert torch.equal(a.alphas[t], b.alphas[t])
    a.step(_batch(2), _batch(3))
    b.step(_batch(2), _batch(3))
    for t in a.alphas:
        assert torch.equal(a.alphas[t], b.alphas[t])
    for pa, pb in zip(ctx.model.parameters(), ctx_b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_learning_rate_follows_the_per_epoch_cosine():
    ctx = _ctx(lr=0.1, lr_min=0.01)
    m = _method(ctx)
    m.start_epoch(1)  # epochs = 2: halfway down the cosine
    assert m.w_optimizer.param_groups[0]["lr"] == pytest.approx(0.055)
    assert m.a_optimizer.param_groups[0]["lr"] == pytest.approx(3e-4)

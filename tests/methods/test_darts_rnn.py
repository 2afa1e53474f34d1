"""DARTS second order on a recurrent supernet: rnn/architect.py's clipped virtual step, clipped v and clip_coef."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from egsbench.methods import SearchConfig, SearchContext
from egsbench.methods.darts import DARTS, DARTSConfig
from egsbench.tasks.spaces import SPACES, LossOutput
from egsbench.tasks.spaces.rnn import RNNModel, SearchRNNCell

VOCAB, HID, CLIP, LR, WD = 13, 8, 0.25, 20.0, 5e-7  # DARTS rnn/train_search.py: lr 20, clip 0.25, wd 5e-7


def _loss(model, batch, weights):
    """NLL + TAR for the weights, the NLL alone for alpha (``arch``), as tasks/lm.py."""
    x, y = batch
    logits, _, raw = model(x, None, weights)  # (T, B, V), _, (T, B, H)
    nll = F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))
    return LossOutput(nll + 1e-3 * (raw[1:] - raw[:-1]).pow(2).mean(), {}, arch=nll)


def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (7, 3), generator=g)  # (T + 1, B)
    return tokens[:-1], tokens[1:]


def _method() -> DARTS:
    space = SPACES.get("darts_rnn")
    torch.manual_seed(0)
    cell = SearchRNNCell(space, HID, HID, dropoutx=0.0, dropouth=0.0)
    model = RNNModel(VOCAB, HID, HID, cell, dropout=0.0, dropouti=0.0, dropoute=0.0).double()
    config = SearchConfig(epochs=2, lr=LR, lr_min=LR, momentum=0.0, weight_decay=WD, grad_clip=CLIP)
    ctx = SearchContext(model=model, space=space, loss=_loss, config=config, steps_per_epoch=1, seed=0)
    torch.manual_seed(0)
    m = DARTS(DARTSConfig(order=2, arch_lr=3e-3, arch_beta1=0.9))
    m.setup(ctx)
    m.start_epoch(0)
    return m


def _norm(ts) -> torch.Tensor:
    return torch.sqrt(sum(t.pow(2).sum() for t in ts))


def _reference(m: DARTS, train, val) -> tuple[torch.Tensor, float]:
    """rnn/architect.py ``_backward_step_unrolled`` written out on a copy of the supernet."""
    net = copy.deepcopy(m.net)
    names = [n for n, _ in net.named_parameters()]
    w = [p.detach() for p in net.parameters()]
    alpha = m.alphas["recurrent"].detach().clone().requires_grad_(True)

    def arch_loss(params, a, batch):
        call = lambda x, h, wts: functional_call(net, dict(zip(names, params, strict=True)), (x, h, wts))  # noqa: E731
        return _loss(call, batch, {"recurrent": torch.softmax(a, -1)}).arch

    # _compute_unrolled_model: clip the training gradient, w' = w - eta * (clip(grad) + wd * w).
    leaves = [t.clone().requires_grad_(True) for t in w]
    dtheta = torch.autograd.grad(arch_loss(leaves, alpha.detach(), train), leaves)
    clip_coef = CLIP / (_norm(dtheta).item() + 1e-6)
    if clip_coef < 1:
        dtheta = [d * clip_coef for d in dtheta]
    unrolled = [(t - LR * (d + WD * t)).requires_grad_(True) for t, d in zip(w, dtheta, strict=True)]
    # g = grad_alpha L_val(w'), v = clip(grad_w' L_val(w')).
    grads = torch.autograd.grad(arch_loss(unrolled, alpha, val), [alpha, *unrolled])
    g, v = grads[0], list(grads[1:])
    v_coef = CLIP / (_norm(v).item() + 1e-6)
    if v_coef < 1:
        v = [t * v_coef for t in v]
    # _hessian_vector_product around the original w, then g - eta * clip_coef * hvp.
    r = 0.01 / _norm(v).item()
    plus = torch.autograd.grad(arch_loss([t + r * d for t, d in zip(w, v, strict=True)], alpha, train), alpha)[0]
    minus = torch.autograd.grad(arch_loss([t - r * d for t, d in zip(w, v, strict=True)], alpha, train), alpha)[0]
    return g - LR * clip_coef * (plus - minus) / (2 * r), clip_coef


def test_recurrent_second_order_step_matches_rnn_architect():
    train, val = _batch(1), _batch(2)
    m = _method()
    assert m.clip_unrolled  # a recurrent space turns it on
    start = m.alphas["recurrent"].detach().clone()
    expected, clip_coef = _reference(m, train, val)
    assert clip_coef < 1  # the clip is active: lr 20 gradients are far above 0.25
    hyper = m.unrolled_gradient(train, val)
    assert hyper.clip_coef == pytest.approx(clip_coef, rel=1e-12)
    torch.testing.assert_close(hyper.alpha["recurrent"], expected, rtol=1e-6, atol=1e-9)

    # One whole step: Adam (DARTS rnn: lr 3e-3, betas (0.9, 0.999), wd 1e-3) on that gradient.
    ref = start.clone().requires_grad_(True)
    adam = torch.optim.Adam([ref], lr=3e-3, betas=(0.9, 0.999), weight_decay=1e-3)
    ref.grad = expected
    adam.step()
    m.step(train, val)
    torch.testing.assert_close(m.alphas["recurrent"].detach(), ref.detach(), rtol=1e-6, atol=1e-9)


def test_unclipped_recurrent_step_differs():
    train, val = _batch(1), _batch(2)
    clipped, unclipped = _method(), _method()
    unclipped.clip_unrolled = False  # the CNN architect's step on the same recurrent supernet
    g_clip = clipped.unrolled_gradient(train, val).alpha["recurrent"]
    g_free = unclipped.unrolled_gradient(train, val).alpha["recurrent"]
    clipped.step(train, val)
    unclipped.step(train, val)
    a_clip, a_free = clipped.alphas["recurrent"].detach(), unclipped.alphas["recurrent"].detach()
    print(
        f"gradient: |clipped - unclipped| max {(g_clip - g_free).abs().max():.4g}, norms {g_clip.norm():.4g} vs "
        f"{g_free.norm():.4g}; alphas after one step: max |diff| {(a_clip - a_free).abs().max():.4g}"
    )
    assert (g_clip - g_free).norm() > 0.1 * g_clip.norm()
    assert not torch.allclose(a_clip, a_free, rtol=0, atol=1e-6)


def test_cnn_space_keeps_the_unclipped_step():
    from egsbench.tasks.spaces import SearchNetwork

    space = SPACES.get("darts")
    model = SearchNetwork(space, 4, 10, 3)
    ctx = SearchContext(model=model, space=space, loss=_loss, config=SearchConfig(epochs=2), steps_per_epoch=1)
    m = DARTS(DARTSConfig(order=2))
    m.setup(ctx)
    assert not m.clip_unrolled

"""DARTS: differentiable architecture search with a softmax relaxation and bilevel optimisation.

Paper: Liu, Simonyan, Yang, "DARTS: Differentiable Architecture Search", ICLR 2019
(https://arxiv.org/abs/1806.09055); code: quark0/darts ``cnn/`` and ``rnn/`` (``model_search.py``,
``architect.py``, ``train_search.py``). Follows ``METHODS-SPEC.md`` section 1.

Every edge mixes all ops with ``softmax(alpha)`` (one ``(E, K)`` alpha per cell type). Each step updates
alpha on a validation batch (``order: 1``, or ``order: 2``: the one-step unrolled objective, through
``torch.func.functional_call`` on virtual weights, so the real weights are never touched), then the weights
on a training batch. The genotype keeps, per node, the two strongest edges and each one's best non-zero op.

Deviations from the paper and the original code: docs/fidelity/darts.md
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from ..tasks.spaces import CellGenotype, ConfigError, Genotype, argmax_genotype
from .base import (
    EdgeWeights,
    ScoreFn,
    SearchContext,
    SearchMethod,
    SoftmaxAlphas,
    StepStats,
    anneal,
    average_tensors,
    capture_state,
    init_alphas,
    make_arch_optimizer,
    make_weight_optimizer,
    restore_state,
)
from .registry import METHODS

__all__ = ["DARTS", "DARTSConfig", "UnrolledGradient"]


@dataclass
class DARTSConfig:
    order: int = 1  # 1: first-order alpha gradient; 2: one-step unrolled (second order, ~2.5x the step cost)
    unrolled_r: float = 0.01  # finite-difference radius R = unrolled_r / ||v|| of the second-order term
    arch_lr: float = 3e-4
    arch_beta1: float = 0.5
    arch_beta2: float = 0.999
    arch_weight_decay: float = 1e-3

    def __post_init__(self):
        if self.order not in (1, 2):
            raise ConfigError(f"method.order must be 1 (first order) or 2 (second order), got {self.order!r}")
        if self.unrolled_r <= 0:
            raise ConfigError(f"method.unrolled_r must be positive, got {self.unrolled_r}")


@dataclass
class UnrolledGradient:
    """The second-order alpha gradient of one step and cheap by-products (all detached)."""

    alpha: dict[str, torch.Tensor]  # cell type -> (E, K): g - xi * hvp
    val_loss: float  # L_val(w', alpha)
    radius: float  # R = unrolled_r / ||v||
    correction: float  # ||xi * c * hvp|| / ||g||: how far the second-order term moves the first-order gradient
    clip_coef: float = 1.0  # c: grad_clip / (||grad_w L_tr(w)|| + 1e-6) with clip_unrolled, else 1


class _Virtual(nn.Module):
    """``module`` called with some parameters and buffers replaced (``torch.func.functional_call``)."""

    def __init__(self, module: nn.Module, tensors: dict[str, torch.Tensor]):
        super().__init__()
        self.module = module
        self.tensors = tensors

    def forward(self, *args, **kwargs):
        return functional_call(self.module, self.tensors, args, kwargs)


@contextmanager
def _full_fp32(device: torch.device) -> Iterator[None]:
    """Full fp32 whatever the run's precision: autocast off (accelerate patches the supernet's forward
    with autocast under mixed precision, the unwrapped module included), and on CUDA TF32 off for
    cuDNN convolutions and matmuls; the previous flags come back after."""
    with torch.autocast(device_type=device.type, enabled=False):
        if device.type != "cuda":
            yield
            return
        conv, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, matmul


def _clip(grads: list[torch.Tensor], max_norm: float) -> tuple[list[torch.Tensor], float]:
    """rnn/architect.py's ``_clip``: ``clip_coef = max_norm / (||grads|| + 1e-6)``; the gradients are scaled by it
    only when it is below 1, but it is returned as is (above 1 for a gradient shorter than ``max_norm``, and
    the original multiplies the Hessian term by it all the same)."""
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item() if grads else 0.0
    clip_coef = max_norm / (total + 1e-6)
    return ([g * clip_coef for g in grads] if clip_coef < 1 else grads), clip_coef


def _zeros_for_none(grads: tuple[torch.Tensor | None, ...], like: list[torch.Tensor]) -> list[torch.Tensor]:
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, like, strict=True)]


@METHODS.register("darts")
class DARTS(SoftmaxAlphas, SearchMethod):
    """DARTS search (see the module docstring and docs/fidelity/darts.md)."""

    config_class = DARTSConfig
    dense_weights = True  # softmax weights: every op runs every step (compile: true compiles its supernet once)
    variant_keys = ("order",)
    space = "darts"  # derives exactly two inputs per node
    sparse = False  # softmax weights: every non-zero op runs on every edge

    def __init__(self, config: DARTSConfig):
        self.config = config
        self.epoch = 0

    # -- setup ---------------------------------------------------------------------------------
    def setup(self, ctx: SearchContext) -> None:
        cfg = self.config
        self.ctx = ctx
        self.net = getattr(ctx.model, "module", ctx.model)  # unwrapped, for the virtual passes
        named = [(n, p) for n, p in self.net.named_parameters() if p.requires_grad]
        self.weight_names = [n for n, _ in named]
        self.weight_params = [p for _, p in named]
        dtype = self.weight_params[0].dtype if self.weight_params else torch.get_default_dtype()
        self.alphas = init_alphas(ctx, dtype=dtype)
        # Second order on a recurrent space is rnn/architect.py's (clipped virtual step and v, clip_coef); on a CNN
        # space cnn/architect.py's. Read from the space, not a config key: the CNN records and hashes stay as they were.
        self.clip_unrolled = "recurrent" in ctx.space.cell_types
        self.w_optimizer = make_weight_optimizer(self.weight_params, ctx.config)
        self.a_optimizer = make_arch_optimizer(self.alphas, cfg)

    # -- distributions -------------------------------------------------------------------------
    # -- search --------------------------------------------------------------------------------
    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        anneal(self.w_optimizer, self.ctx.config, epoch)

    def step(self, train_batch, val_batch) -> StepStats:
        ctx = self.ctx
        lr = self.w_optimizer.param_groups[0]["lr"]
        # (1) alpha step on the validation batch.
        self.a_optimizer.zero_grad(set_to_none=True)
        if self.config.order == 1:
            val = ctx.loss(ctx.model, val_batch, self.probabilities())
            ctx.backward(val.arch_loss)
            extras = {"lr": lr, "val_loss": val.arch_loss.item()}
        else:
            hyper = self.unrolled_gradient(train_batch, val_batch)
            for t, alpha in self.alphas.items():
                alpha.grad = hyper.alpha[t]
            # val_loss is L_val(w') here; hvp_correction = ||xi * hvp|| / ||g||.
            extras = {
                "lr": lr,
                "val_loss": hyper.val_loss,
                "fd_radius": hyper.radius,
                "hvp_correction": hyper.correction,
            }
        self.a_optimizer.step()
        # (2) weight step on the training batch, alpha fixed.
        self.w_optimizer.zero_grad(set_to_none=True)
        weights = {t: p.detach() for t, p in self.probabilities().items()}
        out = ctx.loss(ctx.model, train_batch, weights)
        ctx.backward(out.loss)
        nn.utils.clip_grad_norm_(self.weight_params, ctx.config.grad_clip)
        self.w_optimizer.step()
        return StepStats(loss=out.loss.item(), metrics=out.metrics, extras=extras)

    def _virtual_loss(self, params: list[torch.Tensor], buffers: dict, batch, weights: EdgeWeights) -> torch.Tensor:
        """The task's architecture loss (``LossOutput.arch_loss``: DARTS's ``_loss``) of the supernet with its
        weights replaced by ``params`` (ordered as ``weight_params``)."""
        tensors = dict(zip(self.weight_names, params, strict=True)) | buffers
        return self.ctx.loss(_Virtual(self.net, tensors), batch, weights).arch_loss

    def unrolled_gradient(self, train_batch, val_batch) -> UnrolledGradient:
        """The second-order alpha gradient (architect.py ``_backward_step_unrolled``).

        Touches neither the supernet's parameters, their ``.grad`` nor its buffers.
        """
        group = self.w_optimizer.param_groups[0]
        xi, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
        alphas = list(self.alphas.values())
        w = [p.detach() for p in self.weight_params]
        # BN layers update running statistics in place even in virtual passes: give them a scratch copy.
        buffers = {n: b.detach().clone() for n, b in self.net.named_buffers()}
        with _full_fp32(self.ctx.device):
            # w' = w - xi * (mu * v_mom + grad_w L_tr(w) + wd * w): the SGD step the weights would take; recurrent
            # (rnn/architect.py): grad_w L_tr(w) clipped to the search's grad_clip first (no momentum there, mu = 0).
            leaves = [p.detach().requires_grad_(True) for p in self.weight_params]
            fixed = {t: p.detach() for t, p in self.probabilities().items()}
            loss_tr = self._virtual_loss(leaves, buffers, train_batch, fixed)
            dtheta = _zeros_for_none(torch.autograd.grad(loss_tr, leaves, allow_unused=True), w)
            average_tensors(dtheta)  # several processes: the virtual step all ranks would take together
            clip_coef = 1.0
            if self.clip_unrolled:
                dtheta, clip_coef = _clip(dtheta, self.ctx.config.grad_clip)
            with torch.no_grad():
                unrolled = []
                for p, g, param in zip(w, dtheta, self.weight_params, strict=True):
                    step = g + wd * p
                    buf = self.w_optimizer.state.get(param, {}).get("momentum_buffer")
                    if buf is not None and mu != 0:
                        step = step + mu * buf
                    unrolled.append((p - xi * step).requires_grad_(True))
            # g = grad_alpha L_val(w'), v = grad_w' L_val(w').
            loss_val = self._virtual_loss(unrolled, buffers, val_batch, self.probabilities())
            grads = torch.autograd.grad(loss_val, alphas + unrolled, allow_unused=True)
            g = _zeros_for_none(grads[: len(alphas)], alphas)
            v = _zeros_for_none(grads[len(alphas) :], w)
            average_tensors(v)  # the finite-difference direction of the whole validation batch, as one process
            if self.clip_unrolled:
                v, _ = _clip(v, self.ctx.config.grad_clip)  # the direction too (its coefficient is not used)
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in v])) if v else None
            if norm is None or norm.item() == 0.0:
                hvp, radius = [torch.zeros_like(a) for a in alphas], 0.0
            else:
                radius = self.config.unrolled_r / norm.item()
                # Central difference around the ORIGINAL w (quark0/darts#21), divided by 2R.
                sides = []
                for sign in (1.0, -1.0):
                    with torch.no_grad():
                        shifted = [p + sign * radius * d for p, d in zip(w, v, strict=True)]
                    loss = self._virtual_loss(shifted, buffers, train_batch, self.probabilities())
                    sides.append(_zeros_for_none(torch.autograd.grad(loss, alphas, allow_unused=True), alphas))
                hvp = [(gp - gm) / (2 * radius) for gp, gm in zip(*sides, strict=True)]
        # rnn/architect.py scales the Hessian term by the virtual step's clip_coef (w' = w - xi * c * grad_w L_tr).
        final = [gi - xi * clip_coef * h for gi, h in zip(g, hvp, strict=True)]
        g_norm, h_norm = (
            torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in ts])).item() for ts in (g, hvp)
        )
        h_norm *= xi * clip_coef
        return UnrolledGradient(
            alpha={t: f.detach() for t, f in zip(self.alphas, final, strict=True)},
            val_loss=loss_val.item(),
            radius=radius,
            correction=h_norm / g_norm if g_norm > 0 else 0.0,
            clip_coef=clip_coef,
        )

    # -- derivation ----------------------------------------------------------------------------
    @torch.no_grad()
    def derive(self, score: ScoreFn) -> Genotype:
        """``model_search.genotype``: per node the top-2 edges by max non-zero-op probability, argmax op each (in a
        one-op-per-edge space, ``nb201``: per edge the argmax op, ``none`` included, as xautodl's NB201 DARTS).

        ``score`` is unused: DARTS derives from alpha alone.
        """
        del score
        return self.derive_from_distribution(self.probabilities())

    def derive_from_distribution(self, probabilities: dict[str, torch.Tensor]) -> Genotype:
        """DARTS's derivation rule applied to ``{cell type: (E, K)}`` op probabilities (the search signal's too)."""
        space = self.ctx.space
        if space.one_op_per_edge:  # NAS-Bench-201: xautodl's per-edge argmax, `none` included
            return argmax_genotype(space, probabilities)
        keep = space.inputs_per_node or 2
        candidates = [k for k, op in enumerate(space.ops) if op != space.zero_op]
        cells = {}
        for t, p in probabilities.items():
            rows = p.detach().double().cpu().tolist()  # (E, K)
            edges = []
            for dst in space.intermediate_nodes:
                incoming = {src: rows[space.edge_index(src, dst)] for src in range(dst)}
                strength = {src: max(row[k] for k in candidates) for src, row in incoming.items()}
                # Stable sorts (reverse=True included) and max() keep the first of equals, as the original.
                for src in sorted(incoming, key=strength.__getitem__, reverse=True)[:keep]:
                    edges.append((src, dst, space.ops[max(candidates, key=incoming[src].__getitem__)]))
            cells[t] = CellGenotype(tuple(edges), tuple(space.intermediate_nodes))
        return space.validate(Genotype(cells))

    # -- checkpointing -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return capture_state(self, ("alphas", "w_optimizer", "a_optimizer", "epoch"))

    def load_state_dict(self, state: dict) -> None:
        restore_state(self, state)

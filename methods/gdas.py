"""GDAS: searching for a robust neural architecture in four GPU hours.

Paper: Dong, Yang, "Searching for A Robust Neural Architecture in Four GPU Hours", CVPR 2019
(https://arxiv.org/abs/1910.04465); code: D-X-Y/AutoDL-Projects (xautodl). Follows ``METHODS-SPEC.md``
section 4.

Each forward pass draws one hard Gumbel-max op per edge (straight-through: one-hot forward, the gradient of
the relaxed sample backward), so exactly one op per edge runs; the temperature falls linearly from 10 to
0.1. Each step is a weight step on a training batch, then an alpha step on a validation batch. The genotype
keeps, per node, the two best (input, op) pairs over all incoming edges (``darts`` space).

Deviations from the paper and the original code: docs/fidelity/gdas.md
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..tasks.spaces import CellGenotype, ConfigError, Genotype, argmax_genotype, genotype_weights
from .base import (
    ScoreFn,
    SearchContext,
    SearchMethod,
    SoftmaxAlphas,
    StepStats,
    anneal,
    capture_state,
    init_alphas,
    make_arch_optimizer,
    make_weight_optimizer,
    restore_state,
    sampling_generator,
    weight_parameters,
    zero_fill_grads,
)
from .registry import METHODS
from .sampling import gumbel_like, straight_through

__all__ = ["GDAS", "GDASConfig", "gumbel_hard"]


def gumbel_hard(
    alpha: torch.Tensor, tau: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """GDAS's hard Gumbel-softmax sample of each row of ``alpha`` ``(E, K)``.

    Returns:
        ``(weights, index)``: ``weights`` is ``one_hot(index)`` in the forward pass (exactly 0/1)
        with the gradient of ``h = softmax((log_softmax(alpha) + g) / tau)``; ``index`` ``(E,)``
        is the sampled op per row.

    Examples:
        >>> w, idx = gumbel_hard(torch.zeros(3, 4), tau=1.0, generator=torch.Generator().manual_seed(0))
        >>> w.sum(-1).tolist(), bool((w.argmax(-1) == idx).all())
        ([1.0, 1.0, 1.0], True)
    """
    log_p = torch.log_softmax(alpha, dim=-1)
    h = torch.softmax((log_p + gumbel_like(log_p, generator)) / tau, dim=-1)  # (E, K)
    index = h.argmax(dim=-1)
    hard = F.one_hot(index, alpha.shape[-1]).to(alpha.dtype)
    return straight_through(hard, h), index


@dataclass
class GDASConfig:
    tau_max: float = 10.0  # Gumbel-softmax temperature at the first epoch
    tau_min: float = 0.1  # ... annealed linearly to this at the last epoch
    arch_lr: float = 3e-4
    arch_beta1: float = 0.5
    arch_beta2: float = 0.999
    arch_weight_decay: float = 1e-3

    def __post_init__(self):
        if self.tau_min <= 0:
            raise ConfigError(f"method.tau_min must be positive, got {self.tau_min}")
        if self.tau_max < self.tau_min:
            raise ConfigError(f"method.tau_max must be >= method.tau_min, got {self.tau_max} < {self.tau_min}")
        if self.arch_lr <= 0:
            raise ConfigError(f"method.arch_lr must be positive, got {self.arch_lr}")


@METHODS.register("gdas")
class GDAS(SoftmaxAlphas, SearchMethod):
    """GDAS search (see the module docstring and docs/fidelity/gdas.md)."""

    config_class = GDASConfig
    space = "darts"  # two (input, op) pairs per node

    def __init__(self, config: GDASConfig):
        self.config = config
        self.epoch = 0
        self.tau = config.tau_max

    # -- setup ---------------------------------------------------------------------------------
    def setup(self, ctx: SearchContext) -> None:
        cfg = self.config
        self.ctx = ctx
        self.alphas = init_alphas(ctx)
        self.w_optimizer = make_weight_optimizer(weight_parameters(ctx.model), ctx.config)
        self.a_optimizer = make_arch_optimizer(self.alphas, cfg)
        self.generator = sampling_generator(ctx, 2)  # the samples of the training steps, identical on every rank

    # -- distributions -------------------------------------------------------------------------
    def sample(self, generator: torch.Generator | None = None, detach: bool = False) -> dict[str, torch.Tensor]:
        """One hard straight-through sample per cell type, ``(E, K)``, shared by all cells of that type."""
        return {t: gumbel_hard(a.detach() if detach else a, self.tau, generator)[0] for t, a in self.alphas.items()}

    # -- search --------------------------------------------------------------------------------
    def start_epoch(self, epoch: int) -> None:
        cfg, epochs = self.config, self.ctx.config.epochs
        self.epoch = epoch
        anneal(self.w_optimizer, self.ctx.config, epoch)
        self.tau = cfg.tau_max - (cfg.tau_max - cfg.tau_min) * epoch / max(epochs - 1, 1)

    def step(self, train_batch, val_batch) -> StepStats:
        ctx = self.ctx
        # (1) weights on the training batch; alpha is not updated here, so its sample is detached.
        self.w_optimizer.zero_grad(set_to_none=True)
        out = ctx.loss(ctx.model, train_batch, self.sample(self.generator, detach=True))
        ctx.backward(out.loss)
        zero_fill_grads(self.w_optimizer)  # ops not sampled now keep momentum and weight decay, as xautodl's
        nn.utils.clip_grad_norm_(weight_parameters(ctx.model), ctx.config.grad_clip)
        self.w_optimizer.step()
        # (2) alpha on the validation batch with a fresh sample (first order).
        self.a_optimizer.zero_grad(set_to_none=True)
        arch = ctx.loss(ctx.model, val_batch, self.sample(self.generator))
        ctx.backward(arch.arch_loss)  # the task's alpha loss (language models: the NLL without TAR)
        self.a_optimizer.step()
        return StepStats(
            loss=out.loss.item(),
            metrics=out.metrics,
            extras={"tau": self.tau, "lr": self.w_optimizer.param_groups[0]["lr"], "arch_loss": arch.arch_loss.item()},
        )

    # -- derivation ----------------------------------------------------------------------------
    @torch.no_grad()
    def derive(self, score: ScoreFn) -> Genotype:
        """Per node, the top-2 (input, op) pairs by ``softmax(alpha)``, ``none`` excluded (top-1 in a space with one
        input per node, the recurrent ``darts_rnn``; per edge the argmax op, ``none`` included, in ``nb201``)."""
        genotype = self.derive_from_distribution(self.probabilities())
        # the derived cells in the supernet, on search-val
        self.derive_score = score(genotype_weights(self.ctx.space, genotype, self.ctx.device))
        return genotype

    def derive_from_distribution(self, probabilities: dict[str, torch.Tensor]) -> Genotype:
        """GDAS's derivation rule applied to ``{cell type: (E, K)}`` op probabilities (the search signal's too)."""
        space = self.ctx.space
        if space.one_op_per_edge:  # NAS-Bench-201: xautodl's per-edge argmax, `none` included
            return argmax_genotype(space, probabilities)
        keep = space.inputs_per_node or 2
        cells = {}
        for t, p in probabilities.items():
            p = p.cpu()
            edges = []
            for dst in space.intermediate_nodes:
                candidates = [
                    (float(p[space.edge_index(src, dst), k]), src, k)
                    for src in range(dst)
                    for k, op in enumerate(space.ops)
                    if op != space.zero_op
                ]
                # Stable sort on the weight alone: ties keep (input, op) order.
                for _, src, k in sorted(candidates, key=lambda c: -c[0])[:keep]:
                    edges.append((src, dst, space.ops[k]))
            cells[t] = CellGenotype(tuple(edges), tuple(space.intermediate_nodes))
        return Genotype(cells)

    # -- checkpointing -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return capture_state(self, ("alphas", "w_optimizer", "a_optimizer", "epoch", "tau", "generator"))

    def load_state_dict(self, state: dict) -> None:
        restore_state(self, state)

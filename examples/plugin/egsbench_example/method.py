"""Single-level softmax search: DARTS's relaxation with SNAS-style single-level updates.

Every edge mixes all ops with ``softmax(alpha)`` (as DARTS), but the weights and alpha take
their gradients from the same training batch in one backward pass (as SNAS and EGS do),
so no validation batch is needed. Derivation is DARTS's: per node the two strongest
incoming edges, each with its strongest non-zero op. A classic ablation baseline
(DARTS paper, Sec. 3.3, "single-level optimization").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from egsbench.methods import METHODS, SearchContext, SearchMethod, StepStats
from egsbench.methods.base import (
    ScoreFn,
    capture_state,
    cosine_lr,
    init_alphas,
    make_weight_optimizer,
    restore_state,
    set_lr,
    weight_parameters,
)
from egsbench.tasks.spaces import CellGenotype, ConfigError, Genotype


@dataclass
class SingleLevelConfig:
    arch_lr: float = 3e-4  # Adam on alpha, DARTS's settings
    arch_weight_decay: float = 1e-3

    def __post_init__(self):
        if self.arch_lr <= 0:
            raise ConfigError(f"method.arch_lr must be positive, got {self.arch_lr}")


@METHODS.register("single-level-softmax")
class SingleLevelSoftmax(SearchMethod):
    config_class = SingleLevelConfig
    space = "darts"

    def __init__(self, config: SingleLevelConfig):
        self.config = config
        self.epoch = 0

    def setup(self, ctx: SearchContext) -> None:
        self.ctx = ctx
        self.alphas = init_alphas(ctx)  # {cell type: (E, K)}, 1e-3 * randn seeded by ctx.seed
        self.w_optimizer = make_weight_optimizer(weight_parameters(ctx.model), ctx.config)
        self.a_optimizer = torch.optim.Adam(
            self.alphas.parameters(),
            lr=self.config.arch_lr,
            betas=(0.5, 0.999),
            weight_decay=self.config.arch_weight_decay,
        )

    def probabilities(self) -> dict[str, torch.Tensor]:
        return {t: torch.softmax(a, dim=-1) for t, a in self.alphas.items()}

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        cfg = self.ctx.config
        set_lr(self.w_optimizer, cosine_lr(epoch, cfg.epochs, cfg.lr, cfg.lr_min))

    def step(self, train_batch, val_batch) -> StepStats:
        self.w_optimizer.zero_grad(set_to_none=True)
        self.a_optimizer.zero_grad(set_to_none=True)
        out = self.ctx.loss(self.ctx.model, train_batch, self.probabilities())
        self.ctx.backward(out.loss)
        nn.utils.clip_grad_norm_(weight_parameters(self.ctx.model), self.ctx.config.grad_clip)
        self.w_optimizer.step()
        self.a_optimizer.step()
        return StepStats(out.loss.item(), out.metrics, {"lr": self.w_optimizer.param_groups[0]["lr"]})

    @torch.no_grad()
    def derive(self, score: ScoreFn) -> Genotype:
        space = self.ctx.space
        zero = space.op_index(space.zero_op)
        cells = {}
        for t, p in self.probabilities().items():
            p = p.clone()
            p[:, zero] = -1.0  # never pick the zero op
            edges = []
            for dst in space.intermediate_nodes:
                incoming = [space.edge_index(src, dst) for src in range(dst)]
                best = sorted(incoming, key=lambda e: -float(p[e].max()))[:2]
                edges += [(space.edges[e][0], dst, space.ops[int(p[e].argmax())]) for e in sorted(best)]
            cells[t] = CellGenotype(tuple(edges), tuple(space.intermediate_nodes))
        return Genotype(cells)

    def state_dict(self) -> dict:
        return capture_state(self, ("alphas", "w_optimizer", "a_optimizer", "epoch"))

    def load_state_dict(self, state: dict) -> None:
        restore_state(self, state)

"""SNAS: stochastic neural architecture search.

Paper: Xie, Zheng, Liu, Lin, "SNAS: Stochastic Neural Architecture Search", ICLR 2019
(https://arxiv.org/abs/1812.09926); code: SNAS-Series/SNAS. Follows ``METHODS-SPEC.md`` section 3.

Each step draws one relaxed Gumbel-softmax sample ``Z`` per cell type (temperature annealed linearly from
``tau`` to ``tau_final``); weights and ``log_alpha`` learn from the same training loss in one backward pass
(``val_batch`` is ignored). ``constraint`` (``none | mild | moderate | aggressive``, or ``resource_lambda``)
weighs SNAS's log resource penalty. The genotype keeps every edge whose argmax op is not ``none``
(``dag`` space).

Deviations from the paper and the original code: docs/fidelity/snas.md
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..tasks.spaces import ConfigError, Genotype, UserError, argmax_genotype, genotype_weights, prune_cell
from .base import (
    ArchSGD,
    EdgeWeights,
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
)
from .registry import METHODS
from .sampling import gumbel_like

__all__ = ["CONSTRAINTS", "SNAS", "SNASConfig", "resource_penalty"]

# lambda_R of the log resource penalty per constraint level (why these values: docs/fidelity/snas.md).
CONSTRAINTS: dict[str, float] = {"none": 0.0, "mild": 3e-3, "moderate": 1e-2, "aggressive": 3e-2}
COST_METRICS = ("params", "macs", "mac_memory")  # SNAS's size, flops and mac


def resource_penalty(weights: EdgeWeights, costs: dict[str, dict[str, torch.Tensor]]) -> torch.Tensor:
    """SNAS's log resource penalty ``sum_t mean_cells sum_e mean_m log(max(R, 1))``.

    Args:
        weights: ``{cell type: (E, K)}`` op weights (the relaxed sample ``Z``).
        costs: ``{metric: {cell type: (n_cells, E, K)}}`` per-cell op costs.

    Returns:
        A scalar; differentiable in ``weights`` (zero gradient where ``R < 1``, as the original's
        ``R[R < 1] = 1``).
    """
    total = None
    for t, w in weights.items():
        cells = next(iter(costs.values()))[t].shape[0]
        if cells == 0:
            continue
        # R per metric: (n_t, E); log(max(R, 1)) averaged over metrics, summed over edges, averaged over cells.
        logs = torch.stack([torch.log((c[t] * w.unsqueeze(0)).sum(dim=-1).clamp_min(1.0)) for c in costs.values()])
        term = logs.mean(dim=0).sum() / cells
        total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


@dataclass
class SNASConfig:
    tau: float = 1.0  # Gumbel-softmax temperature at the first epoch
    tau_final: float = 0.03  # ... annealed linearly to this at the last epoch
    constraint: str = "moderate"  # none | mild | moderate | aggressive: lambda_R 0 | 3e-3 | 1e-2 | 3e-2
    resource_lambda: float | None = None  # overrides the constraint's lambda_R when set
    resource_metrics: list[str] = field(default_factory=lambda: list(COST_METRICS))  # averaged in the log penalty
    drop_path_prob: float = 0.3  # search-time drop path on op outputs (never identity); 0 disables
    arch_optimizer: str = "adam"  # adam (distributed code) | sgd (single-GPU code: plain SGD, no weight decay)
    arch_lr: float = 3e-4
    arch_beta1: float = 0.5  # Adam only
    arch_beta2: float = 0.999  # Adam only
    arch_weight_decay: float = 1e-3  # Adam only; the single-GPU SGD used none
    arch_grad_clip: float | None = 10.0  # alpha gradient-norm clip (both original codes); None disables
    init_mean: float = 1.0  # log_alpha ~ N(init_mean, init_std)
    init_std: float = 0.01

    def __post_init__(self):
        if self.tau <= 0 or self.tau_final <= 0:
            raise ConfigError("method.tau and method.tau_final must be positive")
        if self.constraint not in CONSTRAINTS:
            raise ConfigError(f"method.constraint must be one of {list(CONSTRAINTS)}, got {self.constraint!r}")
        if self.resource_lambda is not None and self.resource_lambda < 0:
            raise ConfigError(f"method.resource_lambda must be >= 0 (or null), got {self.resource_lambda}")
        bad = [m for m in self.resource_metrics if m not in COST_METRICS]
        if bad or not self.resource_metrics:
            raise ConfigError(
                f"method.resource_metrics must be a non-empty list from {list(COST_METRICS)}, "
                f"got {self.resource_metrics}"
            )
        if not 0.0 <= self.drop_path_prob < 1.0:
            raise ConfigError(f"method.drop_path_prob must lie in [0, 1), got {self.drop_path_prob}")
        if self.arch_optimizer not in ("adam", "sgd"):
            raise ConfigError(f"method.arch_optimizer must be one of ['adam', 'sgd'], got {self.arch_optimizer!r}")
        if self.arch_lr <= 0:
            raise ConfigError(f"method.arch_lr must be positive, got {self.arch_lr}")
        if self.arch_grad_clip is not None and self.arch_grad_clip <= 0:
            raise ConfigError(f"method.arch_grad_clip must be positive (or null), got {self.arch_grad_clip}")

    @property
    def lambda_r(self) -> float:
        return CONSTRAINTS[self.constraint] if self.resource_lambda is None else self.resource_lambda


@METHODS.register("snas")
class SNAS(SoftmaxAlphas, SearchMethod):
    """SNAS search (see the module docstring and docs/fidelity/snas.md)."""

    config_class = SNASConfig
    dense_weights = True  # softmax weights: every op runs every step (compile: true compiles its supernet once)
    variant_keys = ("constraint",)
    space = "dag"  # child networks keep every non-none edge: any in-degree

    def __init__(self, config: SNASConfig):
        self.config = config
        self.epoch = 0
        self.tau = config.tau

    # -- setup ---------------------------------------------------------------------------------
    def setup(self, ctx: SearchContext) -> None:
        cfg = self.config
        self.ctx = ctx
        self.alphas = init_alphas(ctx, cfg.init_mean, cfg.init_std)  # log_alpha
        self.resource_lambda = cfg.lambda_r
        self.costs = self._costs(ctx) if self.resource_lambda > 0 else None
        # The runner may hand over a wrapped model (DDP); the attribute lives on the supernet itself.
        getattr(ctx.model, "module", ctx.model).drop_path_prob = cfg.drop_path_prob
        self.w_optimizer = make_weight_optimizer(weight_parameters(ctx.model), ctx.config)
        if cfg.arch_optimizer == "adam":
            self.a_optimizer = make_arch_optimizer(self.alphas, cfg)
        else:
            self.a_optimizer = ArchSGD(self.alphas.parameters(), lr=cfg.arch_lr)
        self.generator = sampling_generator(ctx, 3)  # the samples of the training steps, identical on every rank

    def _costs(self, ctx: SearchContext) -> dict[str, dict[str, torch.Tensor]]:
        if ctx.op_costs is None:
            raise ValueError("SNAS's resource penalty needs op costs from the supernet; set method.constraint=none")
        try:
            costs = {m: ctx.op_costs(m, per_cell=True) for m in self.config.resource_metrics}
        except TypeError:
            raise ValueError(
                "SNAS's resource penalty needs per-cell op costs (op_costs(metric, per_cell=True)), which this "
                "supernet does not provide; set method.constraint=none"
            ) from None
        return {m: {t: c.float().to(self.ctx.device) for t, c in per_type.items()} for m, per_type in costs.items()}

    # -- distributions -------------------------------------------------------------------------
    def sample(self, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """One relaxed sample ``Z = softmax((log_alpha + G) / tau)`` per cell type, ``(E, K)``, dense."""
        return {t: torch.softmax((a + gumbel_like(a, generator)) / self.tau, dim=-1) for t, a in self.alphas.items()}

    def penalty(self, weights: EdgeWeights) -> torch.Tensor:
        """The unweighted log resource penalty of ``weights`` (0 without a constraint)."""
        if self.costs is None:
            return torch.zeros((), device=self.ctx.device)
        return resource_penalty(weights, self.costs)

    # -- search --------------------------------------------------------------------------------
    def start_epoch(self, epoch: int) -> None:
        cfg, epochs = self.config, self.ctx.config.epochs
        self.epoch = epoch
        anneal(self.w_optimizer, self.ctx.config, epoch)
        self.tau = cfg.tau + (cfg.tau_final - cfg.tau) * epoch / max(epochs - 1, 1)

    def step(self, train_batch, val_batch) -> StepStats:
        ctx, cfg = self.ctx, self.config
        self.w_optimizer.zero_grad(set_to_none=True)
        self.a_optimizer.zero_grad(set_to_none=True)
        weights = self.sample(self.generator)
        out = ctx.loss(ctx.model, train_batch, weights)
        penalty = self.penalty(weights)
        loss = out.loss + self.resource_lambda * penalty
        ctx.backward(loss)
        nn.utils.clip_grad_norm_(weight_parameters(ctx.model), ctx.config.grad_clip)
        if cfg.arch_grad_clip is not None:
            nn.utils.clip_grad_norm_(self.alphas.parameters(), cfg.arch_grad_clip)
        self.w_optimizer.step()
        self.a_optimizer.step()
        return StepStats(
            loss=out.loss.item(),
            metrics=out.metrics,
            extras={"tau": self.tau, "lr": self.w_optimizer.param_groups[0]["lr"], "penalty": penalty.item()},
        )

    # -- derivation ----------------------------------------------------------------------------
    @torch.no_grad()
    def derive(self, score: ScoreFn) -> Genotype:
        """The child network: argmax op (``none`` included) per edge, every non-none edge kept."""
        genotype = self.derive_from_distribution(self.probabilities())
        for t, cell in genotype.cells.items():
            if not cell.concat:
                raise UserError(
                    f"SNAS derived an empty {t} cell: 'none' is the most likely op on every edge leaving the cell "
                    "inputs, so no node is connected. The resource penalty may be too strong (lower "
                    "method.constraint or set method.resource_lambda) or the search too short."
                )
        self.derive_score = score(genotype_weights(self.ctx.space, genotype, self.ctx.device))
        return genotype

    def derive_from_distribution(self, probabilities: dict[str, torch.Tensor]) -> Genotype:
        """SNAS's child-network rule on ``{cell type: (E, K)}`` op probabilities (argmax of softmax(log_alpha) is
        argmax of log_alpha); a cell may come out empty here, which :meth:`derive` refuses."""
        space = self.ctx.space
        if space.one_op_per_edge:  # NAS-Bench-201: the same argmax, every edge kept and nothing pruned
            return argmax_genotype(space, probabilities)
        cells = {}
        for t, p in probabilities.items():
            best = p.argmax(dim=-1).tolist()
            edges = [(src, dst, space.ops[k]) for (src, dst), k in zip(space.edges, best, strict=True)]
            cells[t] = prune_cell([e for e in edges if e[2] != space.zero_op], space.n_inputs, space.n_nodes)
        return Genotype(cells)

    # -- checkpointing -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return capture_state(self, ("alphas", "w_optimizer", "a_optimizer", "epoch", "tau", "generator"))

    def load_state_dict(self, state: dict) -> None:
        restore_state(self, state)

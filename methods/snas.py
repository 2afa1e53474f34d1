"""SNAS: stochastic neural architecture search.

Paper: Xie, Zheng, Liu, Lin, "SNAS: Stochastic Neural Architecture Search", ICLR 2019
(https://arxiv.org/abs/1812.09926). Official code: SNAS-Series/SNAS (``train_search.py``,
``model_search.py``, ``operations.py``; PyTorch 0.4). This module follows ``METHODS-SPEC.md``
section 3.

Per cell type, ``log_alpha`` ``(E, K)`` starts at N(1, 0.01). Each step draws one relaxed
sample ``Z = softmax((log_alpha + G) / lambda)`` (``G`` Gumbel) per cell type, shared by every
cell of that type. ``Z`` is dense, so every non-zero op runs (the zero op never does: its
output is zero anyway). The temperature ``lambda`` is annealed linearly from ``tau`` = 1.0 at
the first epoch to ``tau_final`` = 0.03 at the last. Single-level: the supernet weights and
``log_alpha`` take gradients from the same loss on the same training batch in one backward
pass (``val_batch`` is ignored).

Resource constraint (``--resource_efficient --loss --log_penalty --method reparametrization``):
for metric ``m`` (``params`` = SNAS "size", ``macs`` = "flops", ``mac_memory`` = "mac"), cell
``c`` and edge ``e``, ``R[m, c, e] = sum_k Z[e, k] * cost[m, c, e, k]`` with ``cost`` the op's
cost in that cell (cells differ in channels and resolution), and

    penalty = sum_t 1/n_t * sum_{c of type t} sum_e mean_m log(max(R[m, c, e], 1))

where ``n_t`` is the number of cells of type ``t``. The loss is ``CE + lambda_R * penalty``;
gradients reach ``log_alpha`` through ``Z`` (reparametrisation). For the 8-cell search net
``n_normal = 6`` and ``n_reduce = 2``: exactly the original's ``penalty[37] / 6 +
penalty[38] / 2``.

``lambda_R`` (``constraint``; the original's mild/moderate/aggressive values were never
released): ``none`` 0, ``mild`` 3e-3, ``moderate`` 1e-2, ``aggressive`` 3e-2, or any
``resource_lambda``. ``moderate`` is anchored at 1e-2: the README's single-GPU command for the
8-cell C=16 search this preset reproduces, and the code's default for reparametrisation with
the log penalty. The README's 1.5e-3 belongs to its 20-cell C=36 8-GPU search, where the
normal term sums 18 cells but is still divided by 6 (a 3x heavier weight per normal cell,
about 4.5e-3 on normal cells); ``mild`` (3e-3) sits in that range. ``aggressive`` is one more
step of the same half-decade ladder.

Derivation (``genotype_edge_all``, evaluated by ``train_edge_all.py``): argmax over all ops,
``none`` included, on every edge; every edge whose argmax is not ``none`` is kept (any
in-degree: the ``dag`` space) and nodes left without inputs are pruned.

Deviations, and why:
- Alpha optimiser: the single-GPU code uses plain SGD(lr 3e-4), the distributed code
  Adam(3e-4, betas (0.5, 0.999), weight decay 1e-3); both clip the alpha gradient norm to 10.
  The default here is Adam (``arch_optimizer: sgd`` restores the single-GPU choice): plain SGD at
  3e-4 without momentum barely moves ``log_alpha`` (on the 3-cell test supernet its first step
  changes it by 4e-6 on average, Adam's by 3e-4), and Adam with these settings is what the
  other methods of this benchmark use, so they differ in their estimator, not their optimiser.
- Data: SNAS trained on all 50k training images (single level needs no held-out split); here it
  trains on the search-train half, as every method of the benchmark, and ignores search-val.
- The temperature starts at ``tau`` and reaches ``tau_final`` at the last configured epoch.
  The original ``Temp_Scheduler`` is one epoch ahead (its first epoch already uses
  ``0.03 + 0.97 * 149/150``) and hard-codes a 150-epoch horizon whatever ``--epochs`` is.
- Search-time drop path (0.3) drops each non-identity op output per sample. The original
  calls ``drop_path`` on the mixed edge output after an ``isinstance(op, Identity)`` test that
  never fires (``op`` is the MixedOp), so it also drops identity paths and uses one mask per
  edge; we follow the evident intent (DARTS's drop path, never on identity).
- Sparse execution skips ops whose ``Z`` underflows to exactly 0 (possible at temperature
  0.03); their contribution and its gradient are zero to float precision anyway.
- Costs come from the supernet (``op_costs(metric, per_cell=True)``) rather than SNAS's
  hand-written formulas; they agree (see ``tests/spaces/test_cnn.py``) except that
  FactorizedReduce's shifted input counts ``(H-1)(W-1)`` positions under ``mac_memory``.
- The original sums only ``normal / 6 + reduce / 2`` whatever the depth; here ``n_t`` is the
  actual number of cells, so other depths keep a per-cell mean.
- The policy-gradient and discrete penalty variants, the linear (non-log) penalty and the
  auxiliary head in search (off in the README commands) are not implemented.
- Under several processes alpha gradients are not averaged across processes, as for every
  method here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..tasks.spaces import ConfigError, Genotype, UserError, genotype_weights, prune_cell
from .base import (
    ArchSGD,
    EdgeWeights,
    ScoreFn,
    SearchContext,
    SearchMethod,
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

# lambda_R of the log resource penalty per constraint level (see the module docstring).
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
class SNAS(SearchMethod):
    """SNAS search (see the module docstring)."""

    config_class = SNASConfig
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
    def probabilities(self) -> dict[str, torch.Tensor]:
        """``softmax(log_alpha)`` per cell type, ``(E, K)``."""
        return {t: torch.softmax(a, dim=-1) for t, a in self.alphas.items()}

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


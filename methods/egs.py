"""DARTS-EGS: differentiable architecture search with ensemble Gumbel-Softmax.

Paper: Chang, Zhang, Guo, Meng, Xiang, Pan, "Differentiable Architecture Search with
Ensemble Gumbel-Softmax", arXiv:1905.01786 (published as "DATA: Differentiable ArchiTecture
Approximation", NeurIPS 2019). Official code: XinbangZhang/DATA-NAS (does not run as released).
This module follows ``METHODS-SPEC.md`` section 0, this project's normative reading.

Per edge, effectiveness credits ``h = softmax(alpha)`` (option ``credits: relu``:
``relu(alpha) / sum``, as the authors' code) are mixed with fixed efficiency credits ``l``
(paper Eq. 5): ``p = lambda * h + (1 - lambda) * l``. The paper gives no formula for ``l``;
here ``l = softmax(-sharpness * cost / mean(cost))`` over the edge's ops, where ``cost`` is
each op's MACs (or parameters) at that edge summed over the cells of a type. ``lambda = 1``
switches the constraint off. The sampler (Definition 1) draws ``M`` hard Gumbel-max samples
from ``log p`` and takes their elementwise max, giving binary codes with
``P(code_k = 1) = 1 - (1 - p_k)^M``; gradients flow straight through the relaxed
Gumbel-softmax (Eq. 7) of the sample that set each entry. The supernet runs only the ops
whose code is 1.

Deviations, and why:
- Codes are binary (Eq. 3) by default; the authors' code divides by the code's sum
  (``normalize: true`` restores that).
- Single-level optimisation (Eq. 9: weights and alpha from the same training loss, one
  backward pass) is the default; the authors' code alternates a first-order alpha step on a
  validation batch (``bilevel: true``). Their extra ``0.1 * L1(p, code)`` term is not used.
- Sparse execution drops the straight-through gradient of ops that were not sampled
  (their outputs are never computed), as GDAS does for its one op per edge.
- Derivation samples ``derive_candidates`` codes with a seeded generator, scores each on the
  search-validation split with the shared weights and keeps the best; the authors' code
  instead picks, per node, the top-k (input, op) pairs by a multinomial hit probability.
  An edge keeps every sampled non-zero op; nodes left without inputs are pruned.
- The paper does not state its search schedule; the ``paper`` preset uses DARTS's
  (50 epochs, C=16, 8 cells, batch 64) with tau = 1 throughout (the authors' tau schedule
  is effectively constant).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..tasks.spaces import ConfigError, Genotype, UserError, prune_cell

from .base import (
    EdgeWeights,
    ScoreFn,
    SearchContext,
    StepStats,
    capture_state,
    cosine_lr,
    init_alphas,
    make_arch_optimizer,
    make_weight_optimizer,
    restore_state,
    set_lr,
    weight_parameters,
)
from .registry import METHODS
from .sampling import gumbel_like, straight_through

__all__ = ["EGS", "EGSConfig", "efficiency_credits", "ensemble_gumbel_softmax"]


def ensemble_gumbel_softmax(
    log_p: torch.Tensor, M: int, tau: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Ensemble Gumbel-Softmax (paper Definition 1): the elementwise max of ``M`` hard samples.

    Args:
        log_p: log-probabilities ``(..., K)`` (unnormalised log-weights also work: Gumbel-max
            samples the normalised distribution).
        M: number of samples per code (>= 1).
        tau: temperature of the relaxed samples that carry the gradient.
        generator: optional generator for reproducible codes.

    Returns:
        Codes of ``log_p``'s shape whose forward values are exactly 0 or 1, with between 1
        and ``min(M, K)`` ones along the last axis; gradients reach ``log_p`` straight
        through the relaxed sample that set each entry.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> code = ensemble_gumbel_softmax(torch.log(torch.tensor([0.5, 0.5])), M=2, generator=g)
        >>> sorted(code.unique().tolist()) in ([0.0, 1.0], [1.0])
        True
    """
    if M < 1:
        raise ValueError(f"M must be at least 1, got {M}")
    if tau <= 0:
        raise ValueError(f"tau must be positive, got {tau}")
    g = gumbel_like(log_p, generator, samples=M)  # (M, ..., K)
    soft = torch.softmax((log_p.unsqueeze(0) + g) / tau, dim=-1)
    hard = F.one_hot(soft.argmax(dim=-1), log_p.shape[-1]).to(log_p.dtype)
    # Max over the M straight-through samples routes each entry's gradient to the sample that set it.
    relaxed = straight_through(hard, soft).max(dim=0).values
    return straight_through(hard.max(dim=0).values, relaxed)


def efficiency_credits(cost: torch.Tensor, sharpness: float = 1.0) -> torch.Tensor:
    """``l = softmax(-sharpness * cost / mean(cost))`` per edge: cheaper ops get more credit.

    ``cost`` is ``(E, K)``; an edge whose ops all cost 0 gets uniform credits.
    """
    mean = cost.mean(dim=-1, keepdim=True)
    scaled = torch.where(mean > 0, cost / mean.clamp_min(1e-12), torch.zeros_like(cost))
    return torch.softmax(-sharpness * scaled, dim=-1)


@dataclass
class EGSConfig:
    M: int = 7  # samples per edge code; the paper uses 7 (and 4) on CIFAR-10, sweeps 1..9
    tau: float = 1.0  # Gumbel-softmax temperature at the start of the search
    tau_final: float | None = None  # None = constant tau; else annealed to this value at the last epoch
    tau_schedule: str = "linear"  # linear | exponential (used only with tau_final)
    lam: float = 0.5  # lambda of Eq. 5; 1.0 switches the resource constraint off
    cost: str = "macs"  # macs | params: the efficiency-credit cost of each op at each edge
    cost_sharpness: float = 1.0
    credits: str = "softmax"  # softmax | relu (the authors' code)
    normalize: bool = False  # divide each code by its sum, as the authors' code
    bilevel: bool = False  # False: single level (Eq. 9); True: first-order alpha step on validation
    derive_candidates: int = 16  # S sampled candidate architectures scored at derivation
    arch_lr: float = 3e-4
    arch_beta1: float = 0.5
    arch_beta2: float = 0.999
    arch_weight_decay: float = 1e-3

    def __post_init__(self):
        if self.M < 1:
            raise ConfigError(f"method.M must be >= 1, got {self.M}")
        if not 0.0 <= self.lam <= 1.0:
            raise ConfigError(f"method.lam must lie in [0, 1], got {self.lam}")
        if self.tau <= 0 or (self.tau_final is not None and self.tau_final <= 0):
            raise ConfigError("method.tau and method.tau_final must be positive")
        for key, value, valid in (
            ("tau_schedule", self.tau_schedule, ("linear", "exponential")),
            ("cost", self.cost, ("macs", "params")),
            ("credits", self.credits, ("softmax", "relu")),
        ):
            if value not in valid:
                raise ConfigError(f"method.{key} must be one of {list(valid)}, got {value!r}")
        if self.derive_candidates < 1:
            raise ConfigError(f"method.derive_candidates must be >= 1, got {self.derive_candidates}")


@METHODS.register("egs")
class EGS:
    """DARTS-EGS search (see the module docstring)."""

    config_class = EGSConfig
    space = "dag"  # genotypes keep any in-degree and several ops per edge

    def __init__(self, config: EGSConfig):
        self.config = config
        self.epoch = 0
        self.tau = config.tau

    # -- setup ---------------------------------------------------------------------------------
    def setup(self, ctx: SearchContext) -> None:
        cfg, space = self.config, ctx.space
        self.ctx = ctx
        # relu credits need positive alphas to start (near) uniform
        self.alphas = init_alphas(ctx, mean=1.0 if cfg.credits == "relu" else 0.0)
        if cfg.lam < 1.0:
            if ctx.op_costs is None:
                raise ValueError("EGS with lam < 1 needs op costs from the supernet; set method.lam=1.0 to disable")
            costs = ctx.op_costs(cfg.cost)
            self.credits_l = {t: efficiency_credits(costs[t].float(), cfg.cost_sharpness).to(ctx.device)
                              for t in space.cell_types}  # fmt: skip
        else:
            self.credits_l = None
        self.w_optimizer = make_weight_optimizer(weight_parameters(ctx.model), ctx.config)
        self.a_optimizer = make_arch_optimizer(self.alphas, cfg)

    # -- distributions -------------------------------------------------------------------------
    def probabilities(self) -> dict[str, torch.Tensor]:
        """``p = lambda * h + (1 - lambda) * l`` per cell type, ``(E, K)``."""
        out = {}
        for t, alpha in self.alphas.items():
            if self.config.credits == "softmax":
                h = torch.softmax(alpha, dim=-1)
            else:
                r = F.relu(alpha)
                h = r / r.sum(dim=-1, keepdim=True).clamp_min(1e-12)
            out[t] = h if self.credits_l is None else self.config.lam * h + (1 - self.config.lam) * self.credits_l[t]
        return out

    def sample(self, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """One EGS code per cell type, ``(E, K)``, shared by all cells of that type."""
        codes = {}
        for t, p in self.probabilities().items():
            code = ensemble_gumbel_softmax(torch.log(p.clamp_min(1e-20)), self.config.M, self.tau, generator)
            codes[t] = code / code.sum(dim=-1, keepdim=True) if self.config.normalize else code
        return codes

    # -- search --------------------------------------------------------------------------------
    def start_epoch(self, epoch: int) -> None:
        cfg, epochs = self.config, self.ctx.config.epochs
        self.epoch = epoch
        set_lr(self.w_optimizer, cosine_lr(epoch, epochs, self.ctx.config.lr, self.ctx.config.lr_min))
        if cfg.tau_final is None:
            self.tau = cfg.tau
        else:
            frac = epoch / max(epochs - 1, 1)
            if cfg.tau_schedule == "linear":
                self.tau = cfg.tau + (cfg.tau_final - cfg.tau) * frac
            else:
                self.tau = cfg.tau * math.exp(frac * math.log(cfg.tau_final / cfg.tau))

    def _loss(self, batch) -> tuple[torch.Tensor, dict[str, float], dict[str, torch.Tensor]]:
        codes = self.sample()
        out = self.ctx.loss(self.ctx.model, batch, codes)
        return out.loss, out.metrics, codes

    def step(self, train_batch, val_batch) -> StepStats:
        ctx = self.ctx
        if self.config.bilevel:
            self.a_optimizer.zero_grad(set_to_none=True)
            val_loss, _, _ = self._loss(val_batch)
            ctx.backward(val_loss)
            self.a_optimizer.step()
        self.w_optimizer.zero_grad(set_to_none=True)
        self.a_optimizer.zero_grad(set_to_none=True)
        loss, metrics, codes = self._loss(train_batch)
        ctx.backward(loss)
        nn.utils.clip_grad_norm_(weight_parameters(ctx.model), ctx.config.grad_clip)
        self.w_optimizer.step()
        if not self.config.bilevel:
            self.a_optimizer.step()  # single level: alpha takes the same training-loss gradient
        active = sum(float((c.detach() != 0).sum()) for c in codes.values()) / sum(c.shape[0] for c in codes.values())
        return StepStats(
            loss=loss.item(),
            metrics=metrics,
            extras={"tau": self.tau, "lr": self.w_optimizer.param_groups[0]["lr"], "ops_per_edge": active},
        )

    # -- derivation ----------------------------------------------------------------------------
    @torch.no_grad()
    def derive(self, score: ScoreFn) -> Genotype:
        gen = torch.Generator().manual_seed(self.ctx.seed + 1)
        best, best_score = None, -math.inf
        for _ in range(self.config.derive_candidates):
            codes = {t: c.detach() for t, c in self.sample(gen).items()}
            genotype = self.genotype_from_codes(codes)
            if genotype is None:
                continue
            value = score(codes)
            if value > best_score:
                best, best_score = genotype, value
        if best is None:
            raise UserError("every derived EGS candidate left a cell without any operation; raise method.M")
        self.derive_score = best_score
        return best

    def genotype_from_codes(self, codes: EdgeWeights) -> Genotype | None:
        """Keep every non-zero op with code 1; prune nodes without inputs. None if a cell is empty."""
        space = self.ctx.space
        cells = {}
        for t, code in codes.items():
            edges = [
                (src, dst, space.ops[k])
                for e, (src, dst) in enumerate(space.edges)
                for k in code[e].nonzero().flatten().tolist()
                if space.ops[k] != space.zero_op
            ]
            cell = prune_cell(edges, space.n_inputs, space.n_nodes)
            if not cell.concat:
                return None
            cells[t] = cell
        return Genotype(cells)

    # -- checkpointing -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return capture_state(self, ("alphas", "w_optimizer", "a_optimizer", "epoch", "tau"))

    def load_state_dict(self, state: dict) -> None:
        restore_state(self, state)

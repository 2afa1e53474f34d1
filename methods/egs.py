"""DARTS-EGS: differentiable architecture search with ensemble Gumbel-Softmax.

Paper: Chang et al., "Differentiable Architecture Search with Ensemble Gumbel-Softmax", arXiv:1905.01786
(NeurIPS 2019 as "DATA: Differentiable ArchiTecture Approximation"); code: XinbangZhang/DATA-NAS.
Follows ``METHODS-SPEC.md`` section 0, this project's normative reading of the paper.

Each edge's code is the elementwise max of ``M`` hard Gumbel-max samples from
``p = lam * softmax(alpha) + (1 - lam) * l`` (``l``: fixed efficiency credits from the ops' costs), and the
supernet runs only the ops whose code is 1. Weights and alpha learn from one training loss by default
(single level). ``derive: mode`` keeps each node's most probable code: 1 to ``M`` (input, op) pairs per node,
so genotypes belong to the ``dag`` space; in a one-op-per-edge space (``nb201``) each kept edge keeps its most
probable kept op.

Deviations from the paper and the original code: docs/fidelity/egs.md
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.genotype import live_nodes
from ..tasks.spaces import (
    CellGenotype,
    ConfigError,
    Genotype,
    SearchSpace,
    UserError,
    genotype_weights,
    one_op_cell,
    prune_cell,
)
from .base import (
    EdgeWeights,
    ScoreFn,
    SearchContext,
    SearchMethod,
    StepStats,
    anneal,
    batch_statistics,
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

__all__ = [
    "EGS",
    "EGSConfig",
    "EmptyCellWarning",
    "derive_mode",
    "efficiency_credits",
    "ensemble_gumbel_softmax",
    "hit_probability",
    "log_hit_probability",
    "most_probable_code",
]

TIE_RTOL = 1e-9  # hit probabilities this close count as equal: the smaller set wins
# The sampler holds (M, edges, ops) tensors per cell type for the backward pass: memory and time grow linearly in M.
MAX_M = 100_000


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


class EmptyCellWarning(UserWarning):
    """Mode derivation pruned every node of a cell; each node kept its most probable non-``none`` pair."""


def _log_factorial(m: int) -> float:
    # exact below float overflow (so hit_probability([0.5, 0.5], 2) is 0.5, not 0.49999999999999983); lgamma above
    return math.log(math.factorial(m)) if m <= 170 else math.lgamma(m + 1)


def _saddle_radius(q: np.ndarray, M: int) -> float:
    """The radius ``R`` with ``sum_t phi(q_t R) = M``, ``phi(a) = a / (1 - exp(-a))`` (needs ``M > len(q)``).

    ``phi(q_t R)`` is the mean of a zero-truncated Poisson of mean ``q_t R``: on the circle of this radius the
    coefficients ``c_k R^k`` of ``prod_t (exp(q_t x) - 1)`` peak at ``k = M``. ``1 + a / 2 <= phi(a) <= 1 + a``
    brackets the root in ``[(M - n) / s, 2 (M - n) / s]``, ``s = sum(q)``; bisection narrows it.
    """
    low, high = (M - len(q)) / q.sum(), 2 * (M - len(q)) / q.sum()
    for _ in range(64):  # the bracket's ratio is 2: 64 halvings reach the float resolution
        mid = (low + high) / 2
        a = q * mid
        with np.errstate(invalid="ignore", divide="ignore"):
            phi = np.where(a > 0, a / -np.expm1(-a), 1.0)
        low, high = (mid, high) if phi.sum() < M else (low, mid)
    return (low + high) / 2


def _log_expm1(z: np.ndarray) -> np.ndarray:
    """``log(exp(z) - 1)`` for complex ``z`` of any size (a branch of the log; only its exponential is used)."""
    out = np.empty_like(z)
    big = z.real > 0
    with np.errstate(divide="ignore"):  # exp(z) = 1 exactly: log(0) = -inf, whose exponential is the right 0
        out[big] = z[big] + np.log(-np.expm1(-z[big]))
        out[~big] = np.log(np.expm1(z[~big]))
    return out


def log_hit_probability(q: Sequence[float] | torch.Tensor, M: int) -> float:
    """``log`` of :func:`hit_probability` (``-inf`` where it is 0), finite and accurate for any ``M``.

    ``P = M! [x^M] F(x)``, ``F(x) = prod_t (exp(q_t x) - 1)``: the coefficient is read off ``F`` on the circle
    of the saddle-point radius ``R`` (:func:`_saddle_radius`) by a discrete Fourier sum of ``N = 2M + 64``
    points, ``c_M R^M = mean_j F(R w^j) w^(-jM)`` with ``w = exp(2 pi i / N)``, every factor in log space.
    ``c_M R^M / F(R)`` is the probability that a sum of independent zero-truncated Poissons (means
    ``q_t R``) equals its own mean ``M``, so the Fourier sum (terms of modulus <= 1) loses only a factor
    ``~sqrt(M)`` to cancellation; aliasing adds ``c_{M + kN} R^(kN)``, zero for ``k < 0`` (``M - N < len(q)``)
    and below ``exp(-M)`` relative to it for ``k > 0`` (a Poisson tail past ``3M``). Relative error about
    ``1e-15 * M``; ``O(len(q) * M)`` time. One entry (``M log q``) and ``M = len(q)`` (``log M! + sum log q``:
    each entry hit once) are closed forms.

    Examples:
        >>> round(log_hit_probability([0.5, 0.5], 2), 12) == round(math.log(0.5), 12)
        True
        >>> log_hit_probability([0.2, 0.2, 0.2], 2)  # 2 draws cannot hit 3 entries
        -inf
    """
    if M < 1:
        raise ValueError(f"M must be at least 1, got {M}")
    values = [float(v) for v in (q.tolist() if isinstance(q, torch.Tensor) else q)]
    if any(v < 0 for v in values):
        raise ValueError(f"probabilities must be non-negative, got {values}")
    n = len(values)
    if n == 0 or n > M or min(values) == 0:
        return -math.inf  # M draws hit at least one and at most M entries, never one of probability 0
    if n == 1:
        return M * math.log(values[0])
    if n == M:
        return _log_factorial(M) + math.fsum(math.log(v) for v in values)
    q_np = np.asarray(values, dtype=np.float64)
    radius = _saddle_radius(q_np, M)
    a = q_np * radius  # (n,) zero-truncated Poisson means
    log_f_radius = a + np.log(-np.expm1(-a))  # (n,) log(exp(a) - 1)
    points = 2 * M + 64
    j = np.arange(points)
    circle = np.exp(2j * math.pi * j / points)  # (N,)
    log_ratio = np.zeros(points, dtype=np.complex128)  # log F(R w^j) - log F(R)
    for a_t, log_t in zip(a, log_f_radius, strict=True):
        log_ratio += _log_expm1(a_t * circle) - log_t
    phase = 2j * math.pi * ((j * M) % points) / points  # w^(-jM), reduced exactly: j * M is an integer
    mean = float(np.exp(log_ratio - phase).mean().real)  # c_M R^M / F(R)
    if not mean > 0:  # cannot happen for the sums above; a loud failure beats a wrong derivation
        raise FloatingPointError(f"hit probability of {n} entries with M={M}: Fourier sum {mean} is not positive")
    log_p = _log_factorial(M) + math.fsum(log_f_radius.tolist()) - M * math.log(radius) + math.log(mean)
    return min(log_p, M * math.log(math.fsum(values)))  # P <= (sum q)^M: keeps rounding at a large M below 1


def hit_probability(q: Sequence[float] | torch.Tensor, M: int) -> float:
    """Probability that ``M`` independent draws from a distribution land only on the entries ``q``
    and hit each of them at least once.

    Equals the inclusion-exclusion sum over subsets ``T`` of the entries,
    ``sum_T (-1)^(|q| - |T|) * (sum_{t in T} q_t)^M`` (METHODS-SPEC section 0), the authors'
    sum over compositions of ``M`` (``get_binary_prob``) and ``M! [x^M] prod_t (exp(q_t x) - 1)``;
    computed in log space by :func:`log_hit_probability` (finite for any ``M``; a value below
    ``1e-308`` is 0.0).

    Args:
        q: the probabilities of the entries (the rest of the distribution's mass lies elsewhere).
        M: number of draws (>= 1).

    Examples:
        >>> hit_probability([0.5, 0.5], 2)  # paper Figure 1: the code [1, 1]
        0.5
        >>> round(hit_probability([0.5, 0.3], 3), 12)  # 3 * 0.5**2 * 0.3 + 3 * 0.5 * 0.3**2
        0.36
    """
    return math.exp(log_hit_probability(q, M))


def most_probable_code(q: Sequence[float] | torch.Tensor, M: int) -> list[int]:
    """Indices of the entries of ``q`` that ``M`` draws most probably hit exactly (the authors' ``infer_prob``).

    Sorts ``q`` descending (stably) and, for ``i = 1 .. min(M, len(q))``, takes the top-i set with the
    largest :func:`hit_probability`; the smallest ``i`` wins ties (within a relative ``1e-9``).

    Examples:
        >>> most_probable_code([0.2, 0.5, 0.3], 3)  # P_1 = .125, P_2 = .36, P_3 = .18
        [1, 2]
    """
    q = torch.as_tensor(q, dtype=torch.float64).flatten()
    order = torch.sort(q, descending=True, stable=True).indices.tolist()
    best, best_log_p = 1, -math.inf  # compared in log space: at a large M every probability may underflow
    for i in range(1, min(M, len(order)) + 1):
        log_p = log_hit_probability(q[order[:i]], M)
        if log_p > best_log_p + math.log1p(TIE_RTOL):
            best, best_log_p = i, log_p
    return order[:best]


def _node_entries(probs: torch.Tensor, space: SearchSpace, dst: int) -> tuple[torch.Tensor, list]:
    """The joint distribution over node ``dst``'s incoming (input, op) pairs, ``none`` pooled first.

    Returns ``(q, labels)``: ``labels[j]`` is ``(src, op index)``, or None for the pooled ``none``.
    """
    srcs = [src for src, d in space.edges if d == dst]
    zero = space.op_index(space.zero_op) if space.zero_op in space.ops else None
    ops = [k for k in range(space.num_ops) if k != zero]
    rows = probs[[space.edge_index(src, dst) for src in srcs]].double()  # (in-degree, K)
    rows = rows / rows.sum(dim=-1, keepdim=True) / len(srcs)  # each edge's distribution / in-degree
    q, labels = [], []
    if zero is not None:
        q.append(rows[:, zero].sum())
        labels.append(None)
    for i, src in enumerate(srcs):
        for k in ops:
            q.append(rows[i, k])
            labels.append((src, k))
    return torch.stack(q), labels


def _derive_mode(probabilities: Mapping[str, torch.Tensor], space: SearchSpace, M: int) -> tuple[Genotype, list[str]]:
    if M < 1:
        raise ValueError(f"M must be at least 1, got {M}")
    cells, notes = {}, []
    for cell_type, probs in probabilities.items():
        probs = probs.detach().cpu()
        if tuple(probs.shape) != (space.num_edges, space.num_ops):
            raise ValueError(
                f"probabilities[{cell_type!r}] has shape {tuple(probs.shape)}; space {space.name!r} needs "
                f"(edges, ops) = ({space.num_edges}, {space.num_ops})"
            )
        if (probs < 0).any() or not (probs.sum(dim=-1) > 0).all():
            raise ValueError(f"probabilities[{cell_type!r}] must be non-negative with a positive sum on every edge")
        edges, fallback = [], []
        for dst in space.intermediate_nodes:
            q, labels = _node_entries(probs, space, dst)
            for j in most_probable_code(q, M):
                if labels[j] is not None:
                    src, k = labels[j]
                    edges.append((src, dst, space.ops[k]))
            top = max((j for j, lab in enumerate(labels) if lab is not None), key=lambda j: float(q[j]))
            fallback.append((labels[top][0], dst, space.ops[labels[top][1]]))
        if space.one_op_per_edge:
            cell = _one_op_per_edge(edges, probs, space)
            if space.output_node not in live_nodes(cell.edges, space.n_inputs):
                notes.append(
                    f"{cell_type} cell: the most probable codes left output node {space.output_node} without a path "
                    f"from the input (M={M}); kept each node's most probable non-'none' (input, op) pair instead"
                )
                cell = _one_op_per_edge(fallback, probs, space)
            cells[cell_type] = cell
            continue
        cell = prune_cell(edges, space.n_inputs, space.n_nodes)
        if not cell.concat:
            notes.append(
                f"{cell_type} cell: the most probable code of every node was 'none' (M={M}); kept each node's most "
                "probable non-'none' (input, op) pair instead"
            )
            cell = prune_cell(fallback, space.n_inputs, space.n_nodes)
        cells[cell_type] = cell
    return Genotype(cells), notes


def _one_op_per_edge(edges: list[tuple[int, int, str]], probs: torch.Tensor, space: SearchSpace) -> CellGenotype:
    """A one-op-per-edge space's cell (NAS-Bench-201) from the node rule's (input, op) pairs: every edge the rule
    kept keeps its most probable kept op (the first on ties), the others hold ``none``; nothing is pruned (a node
    without inputs is zeros there, and its out-edges are part of the cell the benchmark lists)."""
    best: dict[tuple[int, int], int] = {}
    for src, dst, op in edges:
        e, k = space.edge_index(src, dst), space.op_index(op)
        if (src, dst) not in best or probs[e, k] > probs[e, best[src, dst]]:
            best[src, dst] = k
    return one_op_cell(space, [(src, dst, space.ops[k]) for (src, dst), k in best.items()])


def derive_mode(probabilities: Mapping[str, torch.Tensor], space: SearchSpace, M: int) -> Genotype:
    """Per node, the most probable EGS code (METHODS-SPEC section 0; the authors' ``model_infer_gentype_mod``).

    For each intermediate node: the joint distribution ``q`` over its incoming (input, op) pairs
    (each incoming edge's op probabilities divided by the node's in-degree, every ``none`` pooled
    into one entry); the top-i entries of ``q`` with the largest probability of being exactly the
    entries ``M`` draws hit (:func:`most_probable_code`); the pooled ``none`` dropped. Nodes left
    without inputs are pruned. If a whole cell would be empty, every node keeps its most probable
    non-``none`` pair and an :class:`EmptyCellWarning` is issued.

    Args:
        probabilities: ``{cell type: (E, K)}`` per-edge op probabilities (rows are normalised).
        space: the search space the rows and columns index.
        M: samples per code.

    Returns:
        A genotype of the ``dag`` space: between 1 and ``M`` (input, op) pairs per kept node.

    Examples:
        >>> from egsbench.tasks.spaces import SPACES
        >>> space = SPACES.get("dag")
        >>> probs = torch.full((14, 8), 0.02).index_fill_(1, torch.tensor([4]), 0.86)  # sep_conv_3x3
        >>> [len(derive_mode({"normal": probs}, space, M)["normal"].edges) for M in (1, 7)]
        [4, 14]
    """
    genotype, notes = _derive_mode(probabilities, space, M)
    for note in notes:
        warnings.warn(note, EmptyCellWarning, stacklevel=2)
    return genotype


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
    normalize: bool = False  # divide each code by its sum over the non-none ops, as the authors' code
    bilevel: bool = False  # False: single level (Eq. 9); True: first-order alpha step on validation
    derive: str = "mode"  # mode: most probable code per node (the authors' code) | sample: best of S sampled codes
    derive_from: str = "h"  # mode: h (effectiveness credits) | p (with the efficiency credits, lambda < 1)
    derive_candidates: int = 16  # S, sampled candidate architectures scored by derive: sample
    arch_lr: float = 3e-4
    arch_beta1: float = 0.5
    arch_beta2: float = 0.999
    arch_weight_decay: float = 1e-3  # DARTS's; the authors' EGS code uses 0, the paper states none

    def __post_init__(self):
        if self.M < 1:
            raise ConfigError(f"method.M must be >= 1, got {self.M}")
        if self.M > MAX_M:
            raise ConfigError(
                f"method.M must be <= {MAX_M}, got {self.M}: every step draws M Gumbel samples per edge and op and "
                f"keeps them for the backward pass (~0.25 GB and ~1 s per cell type at M={MAX_M}, linear in M), and "
                f"at M={MAX_M} every op of probability >= 5e-4 is in almost every code already; set method.M <= {MAX_M}"
            )
        if not 0.0 <= self.lam <= 1.0:
            raise ConfigError(f"method.lam must lie in [0, 1], got {self.lam}")
        if self.tau <= 0 or (self.tau_final is not None and self.tau_final <= 0):
            raise ConfigError("method.tau and method.tau_final must be positive")
        for key, value, valid in (
            ("tau_schedule", self.tau_schedule, ("linear", "exponential")),
            ("cost", self.cost, ("macs", "params")),
            ("credits", self.credits, ("softmax", "relu")),
            ("derive", self.derive, ("mode", "sample")),
            ("derive_from", self.derive_from, ("h", "p")),
        ):
            if value not in valid:
                raise ConfigError(f"method.{key} must be one of {list(valid)}, got {value!r}")
        if self.derive_candidates < 1:
            raise ConfigError(f"method.derive_candidates must be >= 1, got {self.derive_candidates}")
        if self.arch_weight_decay < 0:
            raise ConfigError(f"method.arch_weight_decay must be >= 0, got {self.arch_weight_decay}")


@METHODS.register("egs")
class EGS(SearchMethod):
    """DARTS-EGS search (see the module docstring and docs/fidelity/egs.md)."""

    config_class = EGSConfig
    variant_keys = ("M",)
    ablation_key = "M"
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
            self.credits_l = {
                t: efficiency_credits(costs[t].float(), cfg.cost_sharpness).to(ctx.device) for t in space.cell_types
            }
        else:
            self.credits_l = None
        # Columns of the ops that run: 'none' outputs zeros and is never executed.
        self.op_columns = [k for k, op in enumerate(space.ops) if op != space.zero_op]
        self.w_optimizer = make_weight_optimizer(weight_parameters(ctx.model), ctx.config)
        self.a_optimizer = make_arch_optimizer(self.alphas, cfg)
        self.generator = sampling_generator(ctx, 1)  # the codes of the training steps, identical on every rank
        self.derive_warnings: list[str] = []

    # -- distributions -------------------------------------------------------------------------
    def effectiveness(self) -> dict[str, torch.Tensor]:
        """The effectiveness credits ``h`` per cell type, ``(E, K)``: ``softmax(alpha)`` or ``relu(alpha) / sum``."""
        if self.config.credits == "softmax":
            return {t: torch.softmax(alpha, dim=-1) for t, alpha in self.alphas.items()}
        relu = {t: F.relu(alpha) for t, alpha in self.alphas.items()}
        return {t: r / r.sum(dim=-1, keepdim=True).clamp_min(1e-12) for t, r in relu.items()}

    def probabilities(self) -> dict[str, torch.Tensor]:
        """``p = lambda * h + (1 - lambda) * l`` per cell type, ``(E, K)``."""
        h = self.effectiveness()
        if self.credits_l is None:
            return h
        lam = self.config.lam
        return {t: lam * h[t] + (1 - lam) * self.credits_l[t] for t in h}

    def learned_probabilities(self) -> dict[str, torch.Tensor]:
        """What the search learns, ``h`` (the search signal's distribution; ``p`` mixes in the fixed credits)."""
        return self.effectiveness()

    def sample(self, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """One EGS code per cell type, ``(E, K)``, shared by all cells of that type."""
        codes = {}
        for t, p in self.probabilities().items():
            code = ensemble_gumbel_softmax(torch.log(p.clamp_min(1e-20)), self.config.M, self.tau, generator)
            if self.config.normalize:  # the authors' code: divide by the number of non-none ops sampled
                code = code / code[:, self.op_columns].sum(dim=-1, keepdim=True).clamp_min(1.0)
            codes[t] = code
        return codes

    # -- search --------------------------------------------------------------------------------
    def start_epoch(self, epoch: int) -> None:
        cfg, epochs = self.config, self.ctx.config.epochs
        self.epoch = epoch
        anneal(self.w_optimizer, self.ctx.config, epoch)
        if cfg.tau_final is None:
            self.tau = cfg.tau
        else:
            frac = epoch / max(epochs - 1, 1)
            if cfg.tau_schedule == "linear":
                self.tau = cfg.tau + (cfg.tau_final - cfg.tau) * frac
            else:
                self.tau = cfg.tau * math.exp(frac * math.log(cfg.tau_final / cfg.tau))

    def _loss(self, batch, arch: bool = False) -> tuple[torch.Tensor, dict[str, float], dict[str, torch.Tensor]]:
        """The task loss of one sample; ``arch``: the task's alpha loss (language models: the NLL without TAR)."""
        codes = self.sample(self.generator)
        out = self.ctx.loss(self.ctx.model, batch, codes)
        return (out.arch_loss if arch else out.loss), out.metrics, codes

    def step(self, train_batch, val_batch) -> StepStats:
        ctx = self.ctx
        if self.config.bilevel:
            self.a_optimizer.zero_grad(set_to_none=True)
            val_loss, _, _ = self._loss(val_batch, arch=True)
            ctx.backward(val_loss)
            self.a_optimizer.step()
        self.w_optimizer.zero_grad(set_to_none=True)
        self.a_optimizer.zero_grad(set_to_none=True)
        loss, metrics, codes = self._loss(train_batch)
        ctx.backward(loss)
        zero_fill_grads(self.w_optimizer)  # ops not sampled now keep momentum and weight decay, as the original
        nn.utils.clip_grad_norm_(weight_parameters(ctx.model), ctx.config.grad_clip)
        self.w_optimizer.step()
        if not self.config.bilevel:
            self.a_optimizer.step()  # single level: alpha takes the same training-loss gradient
        ran = sum(float((c.detach()[:, self.op_columns] != 0).sum()) for c in codes.values())
        return StepStats(
            loss=loss.item(),
            metrics=metrics,
            extras={
                "tau": self.tau,
                "lr": self.w_optimizer.param_groups[0]["lr"],
                "ops_per_edge": ran / sum(c.shape[0] for c in codes.values()),  # ops that ran; 'none' never runs
            },
        )

    # -- derivation ----------------------------------------------------------------------------
    @torch.no_grad()
    def derive(self, score: ScoreFn) -> Genotype:
        """``derive: mode`` (:func:`derive_mode` on h or p) or ``derive: sample`` (best of S scored codes).

        The derived cells are scored in the supernet on search-val (``derive_score``) with BatchNorm on
        batch statistics: the running averages were gathered over random codes, not this one.
        """
        if self.config.derive == "sample":
            return self._derive_sample(score)
        probs = self.effectiveness() if self.config.derive_from == "h" else self.probabilities()
        genotype, self.derive_warnings = _derive_mode(probs, self.ctx.space, self.config.M)
        for note in self.derive_warnings:
            warnings.warn(note, EmptyCellWarning, stacklevel=2)
        with batch_statistics(self.ctx.model):
            self.derive_score = score(genotype_weights(self.ctx.space, genotype, self.ctx.device))
        return genotype

    def derive_from_distribution(self, probabilities: dict[str, torch.Tensor]) -> Genotype | None:
        """``derive: mode`` on learned ``h`` (mixed with the credits as ``p`` under ``derive_from: p``), for the
        search signal; None under ``derive: sample``, which is no rule on the distribution."""
        if self.config.derive == "sample":
            return None
        if self.config.derive_from == "p" and self.credits_l is not None:
            lam = self.config.lam
            probabilities = {t: lam * h + (1 - lam) * self.credits_l[t].to(h) for t, h in probabilities.items()}
        return _derive_mode(probabilities, self.ctx.space, self.config.M)[0]

    def _derive_sample(self, score: ScoreFn) -> Genotype:
        gen = torch.Generator().manual_seed(self.ctx.seed + 1)
        best, best_score = None, -math.inf
        for _ in range(self.config.derive_candidates):
            codes = {t: c.detach() for t, c in self.sample(gen).items()}
            genotype = self.genotype_from_codes(codes)
            if genotype is None:
                continue
            if self.ctx.space.one_op_per_edge:  # the code was cut to one op per edge: score that cell
                codes = genotype_weights(self.ctx.space, genotype, self.ctx.device)
            with batch_statistics(self.ctx.model):
                value = score(codes)
            if value > best_score:
                best, best_score = genotype, value
        if best is None:
            raise UserError(
                "every sampled EGS candidate left a cell without any operation; raise method.M or "
                "use method.derive=mode"
            )
        self.derive_score = best_score
        return best

    def genotype_from_codes(self, codes: EdgeWeights) -> Genotype | None:
        """Keep every non-zero op with code 1; prune nodes without inputs. None if a cell is empty.

        In a one-op-per-edge space (NAS-Bench-201) each edge keeps its most probable coded op (by ``p``) and nothing
        is pruned or refused (an all-``none`` cell is one of the benchmark's)."""
        space = self.ctx.space
        if space.one_op_per_edge:
            probs = {t: p.detach().cpu() for t, p in self.probabilities().items()}
            coded = {
                t: [
                    (src, dst, space.ops[k])
                    for e, (src, dst) in enumerate(space.edges)
                    for k in c[e].nonzero().flatten().tolist()
                    if space.ops[k] != space.zero_op  # the ops that ran
                ]
                for t, c in ((t, code.detach().cpu()) for t, code in codes.items())
            }
            return Genotype({t: _one_op_per_edge(edges, probs[t], space) for t, edges in coded.items()})
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
        return capture_state(self, ("alphas", "w_optimizer", "a_optimizer", "epoch", "tau", "generator"))

    def load_state_dict(self, state: dict) -> None:
        restore_state(self, state)

"""Random search: with weight sharing (Li & Talwalkar) and the DARTS paper's random baseline.

Papers: Li, Talwalkar, "Random Search and Reproducibility for Neural Architecture Search", UAI 2019
(arXiv:1902.07638; code: liamcli/randomNAS_release); the random baseline of DARTS's Table 1 (arXiv:1806.09055).
Follows ``METHODS-SPEC.md`` section 5.

``variant: weight_sharing`` (default) trains the shared weights on one uniformly sampled architecture per
minibatch, then scores ``n_candidates`` random cells on search-val and returns the best. ``variant:
darts_baseline`` trains no supernet (``trains_supernet = False``): the runner trains each of ``n_candidates``
random cells from scratch (``SearchContext.train_candidate``) and the best on search-val wins. Samples come
from a seeded, checkpointed generator, so a resumed run draws the same architectures.

Deviations from the paper and the original code: docs/fidelity/random_search.md
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..tasks.spaces import CellGenotype, ConfigError, Genotype, SearchSpace, one_op_cell
from .base import (
    EdgeWeights,
    ScoreFn,
    SearchContext,
    SearchMethod,
    StepStats,
    anneal,
    batch_statistics,
    make_weight_optimizer,
    weight_parameters,
    zero_fill_grads,
)
from .registry import METHODS

__all__ = ["RandomSearch", "RandomSearchConfig", "cell_genotype", "one_hot_weights", "sample_cells"]

VARIANTS = ("weight_sharing", "darts_baseline")
PAPER_CANDIDATES = {"weight_sharing": 1000, "darts_baseline": 24}

# {cell type: [(src, dst, op index), ...]}: a sampled architecture, sorted by (dst, src).
Cells = dict[str, list[tuple[int, int, int]]]


def _rank(score: float) -> float:
    """A candidate's score for ranking: a non-finite one (NaN, an overflow) below every finite one."""
    return score if math.isfinite(score) else -math.inf


def sample_cells(
    space: SearchSpace, generator: torch.Generator, ops: Sequence[int], inputs: int = 2, redraw_empty: bool = False
) -> Cells:
    """One random cell per cell type of ``space``.

    Every intermediate node takes ``inputs`` distinct predecessors (a uniform subset) and, for
    each, an op index drawn uniformly from ``ops``. In a one-op-per-edge space (NAS-Bench-201) every
    edge draws an op from ``ops``, ``none`` included if listed; ``redraw_empty`` draws a node again while all its
    ops are ``none`` (xautodl's ``forward_urs``).

    Examples:
        >>> from egsbench.tasks.spaces import SPACES
        >>> cells = sample_cells(SPACES.get("darts"), torch.Generator().manual_seed(0), ops=range(1, 8))
        >>> [len(entries) for entries in cells.values()]
        [8, 8]
    """
    choices = torch.as_tensor(list(ops))
    cells = {}
    for cell_type in space.cell_types:
        entries = []
        for dst in space.intermediate_nodes:  # node dst has predecessors 0 .. dst-1
            if space.one_op_per_edge:
                srcs = list(range(dst))
                picks = choices[torch.randint(len(choices), (dst,), generator=generator)].tolist()
                while redraw_empty and all(space.ops[k] == space.zero_op for k in picks):
                    picks = choices[torch.randint(len(choices), (dst,), generator=generator)].tolist()
            else:
                srcs = torch.randperm(dst, generator=generator)[:inputs].tolist()
                picks = choices[torch.randint(len(choices), (len(srcs),), generator=generator)].tolist()
            entries += sorted((src, dst, k) for src, k in zip(srcs, picks, strict=True))
        cells[cell_type] = entries
    return cells


def one_hot_weights(space: SearchSpace, cells: Cells, device: torch.device | None = None) -> EdgeWeights:
    """Edge weights ``{cell type: (E, K)}``: 1 at each sampled (edge, op), 0 elsewhere."""
    weights = {}
    for cell_type, entries in cells.items():
        w = torch.zeros(space.num_edges, space.num_ops)
        for src, dst, k in entries:
            w[space.edge_index(src, dst), k] = 1.0
        weights[cell_type] = w.to(device)
    return weights


def cell_genotype(space: SearchSpace, cells: Cells) -> Genotype:
    """The genotype of a sampled architecture whose ops exclude the zero op; every node is concatenated (in a
    one-op-per-edge space: ``none`` edges left out, the output node alone)."""
    if space.one_op_per_edge:
        return Genotype({t: one_op_cell(space, [(s, d, space.ops[k]) for s, d, k in e]) for t, e in cells.items()})
    concat = tuple(space.intermediate_nodes)
    return Genotype(
        {
            t: CellGenotype(tuple((src, dst, space.ops[k]) for src, dst, k in entries), concat)
            for t, entries in cells.items()
        }
    )


@dataclass
class RandomSearchConfig:
    variant: str = "weight_sharing"  # weight_sharing (Li & Talwalkar) | darts_baseline (DARTS Table 1)
    n_candidates: int | None = None  # None: the paper's value, 1000 (weight_sharing) or 24 (darts_baseline)
    score_batches: int | None = 10  # weight_sharing: search-val minibatches per first-round score; None = all
    n_rescore: int = 10  # weight_sharing: best first-round candidates re-scored on the whole search-val split
    candidate_epochs: int = 100  # darts_baseline: DARTS's selection protocol trains each cell for 100 epochs
    candidate_channels: int | None = None  # darts_baseline: None keeps evaluate.channels
    candidate_layers: int | None = None  # darts_baseline: None keeps evaluate.layers

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ConfigError(f"method.variant must be one of {list(VARIANTS)}, got {self.variant!r}")
        if self.n_candidates is None:
            self.n_candidates = PAPER_CANDIDATES[self.variant]
        for key in (
            "n_candidates",
            "n_rescore",
            "candidate_epochs",
            "score_batches",
            "candidate_channels",
            "candidate_layers",
        ):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"method.{key} must be >= 1, got {value}")


@METHODS.register("random")
class RandomSearch(SearchMethod):
    """Random search with weight sharing, or the DARTS random baseline (see docs/fidelity/random_search.md)."""

    config_class = RandomSearchConfig
    variant_keys = ("variant",)
    space = "darts"  # two distinct inputs per node, one op each
    trains_supernet = True  # darts_baseline instances set False: the runner then skips the search epochs

    @classmethod
    def candidate_recipe(cls, config: RandomSearchConfig) -> dict:
        """darts_baseline trains each candidate ``candidate_epochs``, at ``candidate_channels``/``_layers`` if set."""
        recipe = {
            "epochs": config.candidate_epochs,
            "channels": config.candidate_channels,
            "layers": config.candidate_layers,
        }
        return {key: value for key, value in recipe.items() if value is not None}

    def __init__(self, config: RandomSearchConfig):
        self.config = config
        self.trains_supernet = config.variant == "weight_sharing"
        self.epoch = 0
        self.candidate_scores: list[float] = []  # first-round (weight_sharing) or trained (darts_baseline) scores
        self.rescores: list[tuple[int, float]] = []  # weight_sharing: (candidate index, full search-val score)
        self.derive_score: float | None = None

    # -- setup ---------------------------------------------------------------------------------
    def setup(self, ctx: SearchContext) -> None:
        space = ctx.space
        self.ctx = ctx
        self.generator = torch.Generator().manual_seed(ctx.seed)  # architectures of the training steps
        self.inputs = space.inputs_per_node or 2
        self.train_ops = list(range(space.num_ops))  # 'none' included, as the release's sampler
        self.cell_ops = [k for k, op in enumerate(space.ops) if op != space.zero_op]  # a final cell never holds 'none'
        if space.one_op_per_edge:  # NAS-Bench-201: xautodl's random candidates draw 'none' like any op
            self.cell_ops = self.train_ops
        if self.trains_supernet:
            self.w_optimizer = make_weight_optimizer(weight_parameters(ctx.model), ctx.config)
        else:
            self.w_optimizer = None
            if ctx.train_candidate is None:
                raise ValueError(
                    "method.variant=darts_baseline trains each candidate, but SearchContext.train_candidate is None; "
                    "run it through benchmark.runner (or pass a train_candidate function)"
                )

    # -- distributions -------------------------------------------------------------------------
    def probabilities(self) -> dict[str, torch.Tensor]:
        """Uniform over ops on every edge, ``(E, K)``: random search learns no distribution."""
        space = self.ctx.space
        return {t: torch.full((space.num_edges, space.num_ops), 1.0 / space.num_ops) for t in space.cell_types}

    def learned_probabilities(self) -> None:
        """None: random search learns no distribution, so its runs carry no search signal."""
        return None

    def sample(self, generator: torch.Generator | None = None) -> EdgeWeights:
        """One uniformly sampled architecture (ops over all ops, 'none' included) as one-hot edge weights."""
        space = self.ctx.space
        cells = sample_cells(space, generator or self.generator, self.train_ops, self.inputs, redraw_empty=True)
        return one_hot_weights(space, cells, self.ctx.device)

    # -- search --------------------------------------------------------------------------------
    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.w_optimizer is not None:
            anneal(self.w_optimizer, self.ctx.config, epoch)

    def step(self, train_batch, val_batch) -> StepStats:
        if not self.trains_supernet:  # darts_baseline: nothing to train (the runner does not call this)
            return StepStats(loss=math.nan, extras={"lr": 0.0, "ops_per_edge": 0.0})
        ctx = self.ctx
        weights = self.sample()
        self.w_optimizer.zero_grad(set_to_none=True)
        out = ctx.loss(ctx.model, train_batch, weights)
        ctx.backward(out.loss)
        zero_fill_grads(self.w_optimizer)  # ops not sampled now keep momentum and weight decay, as the release
        nn.utils.clip_grad_norm_(weight_parameters(ctx.model), ctx.config.grad_clip)
        self.w_optimizer.step()
        ops = [k for k, op in enumerate(ctx.space.ops) if op != ctx.space.zero_op]
        ran = sum(float(w[:, ops].sum()) for w in weights.values())  # ops executed ('none' never runs)
        edges = len(weights) * ctx.space.num_edges
        return StepStats(
            loss=out.loss.item(),
            metrics=out.metrics,
            extras={"lr": self.w_optimizer.param_groups[0]["lr"], "ops_per_edge": ran / edges},
        )

    # -- derivation ----------------------------------------------------------------------------
    # A candidate whose score is not finite (its activations overflowed: an unbounded recurrent cell run over
    # a whole split, say) ranks below every finite one; only when all are non-finite is the run diverged.
    def derive(self, score: ScoreFn) -> Genotype:
        gen = torch.Generator().manual_seed(self.ctx.seed + 1)
        space = self.ctx.space
        candidates = [sample_cells(space, gen, self.cell_ops, self.inputs) for _ in range(self.config.n_candidates)]
        if self.trains_supernet:
            best = self._select_with_shared_weights(candidates, score)
        else:
            best = self._select_by_training(candidates)
        return cell_genotype(space, candidates[best])

    @torch.no_grad()
    def _select_with_shared_weights(self, candidates: list[Cells], score: ScoreFn) -> int:
        """Li & Talwalkar: score all on a few minibatches, re-score the best on the whole split (train-mode
        BatchNorm: the running averages were gathered over random architectures, see docs/fidelity/random_search.md)."""
        cfg, space, device = self.config, self.ctx.space, self.ctx.device
        with batch_statistics(self.ctx.model):
            self.candidate_scores = [
                float(score(one_hot_weights(space, c, device), batches=cfg.score_batches)) for c in candidates
            ]
            # Stable sort: ties keep sampling order, so the choice is seeded.
            top = sorted(range(len(candidates)), key=lambda i: _rank(self.candidate_scores[i]), reverse=True)
            self.rescores = [
                (i, float(score(one_hot_weights(space, candidates[i], device), batches=None)))
                for i in top[: cfg.n_rescore]
            ]
        best, self.derive_score = max(self.rescores, key=lambda r: _rank(r[1]))
        return best

    def _select_by_training(self, candidates: list[Cells]) -> int:
        """DARTS baseline: train every candidate briefly (through the runner), keep the best on search-val."""
        space = self.ctx.space
        self.candidate_scores = [float(self.ctx.train_candidate(cell_genotype(space, c))) for c in candidates]
        best = max(range(len(candidates)), key=lambda i: _rank(self.candidate_scores[i]))
        self.derive_score = self.candidate_scores[best]
        return best

    # -- checkpointing -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "generator": self.generator.get_state(),
            "w_optimizer": None if self.w_optimizer is None else self.w_optimizer.state_dict(),
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        if self.w_optimizer is not None:
            self.w_optimizer.load_state_dict(state["w_optimizer"])
        self.epoch = state["epoch"]

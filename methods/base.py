"""The method seam: what a search method is given, what it must provide, and small shared pieces.

A search method owns the architecture parameters (one ``(E, K)`` alpha tensor per cell
type), turns them into edge weights, performs search steps and derives a genotype. It sees
the supernet and the task only through :class:`SearchContext`: a model, a loss function
``loss(model, batch, weights) -> LossOutput`` and a ``backward`` (``accelerator.backward``
under the runner). It never imports a task or the harness; methods that must train final
networks (the DARTS random baseline) ask the runner through ``SearchContext.train_candidate``.
A method whose class or instance sets ``trains_supernet = False`` gets no search steps: the
runner goes straight from ``setup`` to ``derive``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ..core.config import SearchConfig
from ..core.schedule import anneal, cosine_lr, set_lr
from ..tasks.spaces import EdgeWeights, Genotype, LossOutput, SearchSpace

__all__ = [
    "EdgeWeights",
    "LossOutput",
    "ScoreFn",
    "SearchConfig",
    "SearchContext",
    "SearchMethod",
    "SoftmaxAlphas",
    "StepStats",
    "batch_statistics",
    "ArchAdam",
    "ArchSGD",
    "anneal",
    "average_gradients",
    "average_tensors",
    "capture_state",
    "cosine_lr",
    "init_alphas",
    "make_arch_optimizer",
    "make_weight_optimizer",
    "restore_state",
    "sampling_generator",
    "set_lr",
    "weight_parameters",
    "zero_fill_grads",
]

# score(weights, batches=default) -> search-validation score of the supernet under these edge weights
# (higher is better), over the first ``batches`` search-val batches (None: all of them).
ScoreFn = Callable[..., float]


@dataclass
class SearchContext:
    """Everything a method needs from the runner."""

    model: nn.Module | None  # the supernet, possibly wrapped for distributed training; None: trains_supernet False
    space: SearchSpace
    loss: Callable[[nn.Module, Any, EdgeWeights], LossOutput]
    config: Any  # the task's search block (a SearchConfig or any dataclass with its weight-optimiser fields)
    steps_per_epoch: int
    seed: int = 0
    op_costs: Callable[[str], dict[str, torch.Tensor]] | None = None  # metric -> {cell type: (E, K)}
    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # Train a candidate genotype briefly on search-train and return its search-val score, higher is better;
    # provided by the runner (the run's final-training recipe, ``evaluate:``, with the method's candidate_* overrides).
    train_candidate: Callable[[Genotype], float] | None = None

    @property
    def total_steps(self) -> int:
        return self.config.epochs * self.steps_per_epoch


@dataclass
class StepStats:
    """One search step's outcome: training loss, batch metrics and the step's schedule values."""

    loss: float
    metrics: dict[str, float] = field(default_factory=dict)
    extras: dict[str, float] = field(default_factory=dict)  # e.g. tau, lr, active ops per edge


class SearchMethod:
    """The base class of every search method (NASLib's setup/step/derive, flattened).

    A method owns the architecture parameters, turns them into edge weights, performs search steps
    and derives a genotype. A subclass sets ``config_class`` and overrides the methods that raise
    ``NotImplementedError``; every other member is an optional hook whose default is stated here,
    and the runner calls it without asking whether it exists.
    """

    # Required.
    config_class: ClassVar[type]  # the @dataclass its ``method:`` block validates into; built as ``cls(config)``
    # Optional, with defaults.
    space: ClassVar[str] = "dag"  # its genotypes' space: "darts" (two inputs per node) or "dag" (any in-degree)
    trains_supernet: bool = True  # False: the runner runs no search steps and goes from ``setup`` to ``derive``
    # True: every step weights every op (a softmax relaxation), so the supernet's active ops never change and
    # ``compile: true`` compiles its forward once (DARTS, SNAS); a sampling method would recompile per sample
    dense_weights: ClassVar[bool] = False
    derive_score: float | None = None  # the search-val score ``derive`` measured for the genotype it returned
    # Reference rows (results/references/*.csv, column ``variant``) this method's runs match: the method-config
    # keys whose values name the variant, e.g. ("order",) for DARTS 1st/2nd order.
    variant_keys: ClassVar[tuple[str, ...]] = ()
    # The method-config key a table sweeps as an ablation (EGS's sampling times M: Table 5), or None.
    ablation_key: ClassVar[str | None] = None

    def setup(self, ctx: SearchContext) -> None:
        """Create architecture parameters and optimisers for ``ctx.model``."""
        raise NotImplementedError

    def start_epoch(self, epoch: int) -> None:
        """Apply per-epoch schedules (learning rate, temperature) before epoch ``epoch`` (0-based); default none."""

    def step(self, train_batch: Any, val_batch: Any) -> StepStats:
        """One search iteration; bilevel methods use ``val_batch`` for alpha, single-level ones ignore it."""
        raise NotImplementedError

    def probabilities(self) -> dict[str, torch.Tensor]:
        """Current per-edge op distribution ``{cell type: (E, K)}``, for reports."""
        raise NotImplementedError

    def learned_probabilities(self) -> dict[str, torch.Tensor] | None:
        """The distribution the search learns, for the search signal (:mod:`.signal`): default ``probabilities()``;
        a method whose reported distribution mixes in fixed terms returns the learned part, one that learns none
        returns None."""
        return self.probabilities()

    def derive_from_distribution(self, probabilities: dict[str, torch.Tensor]) -> Genotype | None:
        """The method's derivation rule applied to a distribution (for the search signal); default None: the
        method derives by no such rule."""
        return None

    def derive(self, score: ScoreFn) -> Genotype:
        """The final architecture; ``score`` gives candidate edge weights their score on search-validation data."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Everything a resumed search needs (alphas, optimisers, generators, schedules)."""
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        """Inverse of :meth:`state_dict`."""
        raise NotImplementedError

    @classmethod
    def candidate_recipe(cls, config: Any) -> dict[str, Any]:
        """Overrides of the run's final-training recipe (``evaluate:``) for the candidates ``train_candidate`` trains
        (e.g. ``{"epochs": 100}``); default none."""
        return {}

    @classmethod
    def record_extras(cls, config: Any) -> dict[str, Any]:
        """What a run of this method config adds to the record's ``extras`` (e.g. where a fixed cell came from)."""
        return {}


class SoftmaxAlphas:
    """Mixin for methods whose architecture parameters ``self.alphas`` are per-edge logits (DARTS, GDAS, SNAS):
    their reported distribution is ``softmax(alpha)``."""

    alphas: nn.ParameterDict

    def probabilities(self) -> dict[str, torch.Tensor]:
        """``softmax(alpha)`` per cell type, ``(E, K)``."""
        return {t: torch.softmax(a, dim=-1) for t, a in self.alphas.items()}


def init_alphas(ctx: SearchContext, mean: float = 0.0, std: float = 1e-3, dtype=None) -> nn.ParameterDict:
    """One ``(E, K)`` alpha per cell type, ``mean + std * N(0, 1)``, drawn from a generator seeded by ``ctx.seed``.

    DARTS, GDAS and EGS start at ``1e-3 * randn``; SNAS at ``N(1, 0.01)``. Alphas never join the
    weight optimiser, weight decay or gradient clipping (METHODS-SPEC pitfall 4).
    """
    gen = torch.Generator().manual_seed(ctx.seed)
    shape = (ctx.space.num_edges, ctx.space.num_ops)
    alphas = {t: mean + std * torch.randn(shape, generator=gen, dtype=dtype) for t in ctx.space.cell_types}
    return nn.ParameterDict({t: nn.Parameter(a) for t, a in alphas.items()}).to(ctx.device)


def _world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def average_tensors(tensors: Iterable[torch.Tensor]) -> None:
    """Replace each tensor by its mean over all processes, in place (a no-op in a single process)."""
    world = _world_size()
    if world == 1:
        return
    for t in tensors:
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        t.div_(world)


def average_gradients(params: Iterable[torch.Tensor]) -> None:
    """Average the gradients of ``params`` over all processes (a no-op in a single process).

    Architecture parameters live outside the DDP-wrapped supernet, so DDP never averages their
    gradients; without this each rank's alphas would drift apart on its own data shard.
    """
    if _world_size() == 1:
        return
    params = list(params)
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)  # every rank must join each all_reduce, in the same order
    average_tensors(p.grad for p in params)


class _ProcessAveraged:
    """Mixin: an optimiser whose ``step`` first averages its gradients over processes, so the
    parameters it updates stay identical on every rank."""

    def step(self, closure=None):
        average_gradients(p for group in self.param_groups for p in group["params"])
        return super().step(closure)


class ArchAdam(_ProcessAveraged, torch.optim.Adam):
    """Adam for architecture parameters, identical on every process."""


class ArchSGD(_ProcessAveraged, torch.optim.SGD):
    """Plain SGD for architecture parameters (SNAS's single-GPU choice), identical on every process."""


def make_arch_optimizer(alphas: nn.ParameterDict, cfg) -> torch.optim.Adam:
    """DARTS's alpha optimiser, Adam, from a method config's ``arch_lr``, ``arch_beta1/2`` and ``arch_weight_decay``.

    Its ``step`` averages the alpha gradients across processes first (:class:`ArchAdam`).
    """
    return ArchAdam(
        alphas.parameters(), lr=cfg.arch_lr, betas=(cfg.arch_beta1, cfg.arch_beta2), weight_decay=cfg.arch_weight_decay
    )


def sampling_generator(ctx: SearchContext, offset: int) -> torch.Generator:
    """The generator a method draws its architecture samples from, seeded from the run seed.

    Every process builds the same one and draws the same sequence, so the sampled codes are identical
    on all ranks (each rank's global RNG is not: data augmentation and dropout draw from it); it is part
    of the method's checkpoint (``capture_state`` saves a generator's state), so a resumed run draws on.
    """
    return torch.Generator().manual_seed(ctx.seed * 1_000_003 + offset)


def capture_state(owner: Any, names: Iterable[str]) -> dict:
    """A method's checkpoint: the ``state_dict`` of each named attribute that has one (alphas, optimisers),
    the plain value of the others (epoch, tau)."""
    state = {}
    for name in names:
        value = getattr(owner, name)
        if isinstance(value, torch.Generator):
            state[name] = value.get_state()
        else:
            state[name] = value.state_dict() if hasattr(value, "state_dict") else value
    return state


def restore_state(owner: Any, state: dict) -> None:
    """Inverse of :func:`capture_state`: load into stateful attributes, assign the plain ones."""
    for name, value in state.items():
        current = getattr(owner, name)
        if isinstance(current, torch.Generator):
            current.set_state(value)
        elif hasattr(current, "load_state_dict"):
            current.load_state_dict(value)
        else:
            setattr(owner, name, value)


def weight_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def make_weight_optimizer(params: Iterable[nn.Parameter], cfg: SearchConfig) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


@contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """Inside, every BatchNorm of ``model`` normalises with each batch's own statistics, even in eval mode,
    and leaves its running averages untouched ("train-mode BatchNorm" for scoring supernet candidates).

    Sampling methods gather a supernet's running averages over random codes, so they describe no
    single candidate; PyTorch normalises with batch statistics when a BatchNorm has no running
    averages, which this context arranges by hiding them.

    Examples:
        >>> bn = nn.BatchNorm1d(2).eval()
        >>> x = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
        >>> with batch_statistics(bn):
        ...     bn(x).abs().round().tolist()
        [[1.0, 1.0], [1.0, 1.0]]
        >>> bn.running_mean.tolist()
        [0.0, 0.0]
    """
    hidden = []
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            hidden.append((module, module.running_mean, module.running_var))
            module.running_mean, module.running_var = None, None
    try:
        yield
    finally:
        for module, mean, var in hidden:
            module.running_mean, module.running_var = mean, var


def zero_fill_grads(optimizer: torch.optim.Optimizer) -> None:
    """Give a zero gradient to every parameter that ``optimizer`` has stepped before but that got none this time.

    Sparse methods (EGS, GDAS, random search with weight sharing) run only the sampled ops, so the
    other ops' weights get no gradient. The original implementations ran on PyTorch < 2.0, whose
    ``zero_grad`` zeroed gradients instead of dropping them: an op that had run once kept being
    carried by SGD momentum and weight decay in every later step. Keying on the optimiser's state
    (a momentum buffer exists once a parameter was stepped) reproduces that, and survives a resume
    from a checkpoint, which restores optimiser state but no gradients. With momentum 0, SGD keeps
    no state, and such ops get no weight decay.
    """
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is None and optimizer.state.get(p):
                p.grad = torch.zeros_like(p)

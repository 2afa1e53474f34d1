"""The edge-weighting protocol between methods and tasks.

A supernet's ``forward(x, weights)`` takes :data:`EdgeWeights`: one ``(E, K)`` tensor per
cell type, produced by a method once per forward pass and shared by every cell of that
type. A task's search loss returns a :class:`LossOutput`. These two types are all a method
and a task know of each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

__all__ = ["EdgeWeights", "LossOutput", "Supernet"]

EdgeWeights = Mapping[str, torch.Tensor]  # cell type -> (E, K)


@dataclass
class LossOutput:
    """A task's loss for one batch and detached batch metrics (e.g. ``{"accuracy": 53.1}``).

    ``arch`` is the loss the architecture follows where the original code gives it another one than the
    weights (the language-model search: the NLL without the weights' activation regulariser, as DARTS's
    ``rnn/model_search.py`` ``_loss``); ``None`` means ``loss``. Read it through :attr:`arch_loss`.
    """

    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)
    arch: torch.Tensor | None = None

    @property
    def arch_loss(self) -> torch.Tensor:
        """The loss of an architecture-gradient pass: ``arch`` when the task sets one, else ``loss``."""
        return self.loss if self.arch is None else self.arch


class Supernet:
    """Mixin of a supernet module (``forward(x, weights)`` over :data:`EdgeWeights`): the costs cost-aware
    methods (EGS's efficiency credits, SNAS's resource penalty) read through ``Task.op_costs``."""

    def op_costs(self, metric: str = "macs", per_cell: bool = False) -> dict[str, torch.Tensor]:
        """Cost of each op at each edge: ``{cell type: (E, K)}``; ``per_cell``: ``(cells of the type, E, K)``."""
        raise NotImplementedError

    def compile_search_forward(self, **options) -> bool:
        """Compile the forward past its host-side choices (``torch.compile`` ``options``); False when this supernet
        has no such path (default), True when it compiled it."""
        return False

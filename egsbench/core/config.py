"""The base of every task's ``search:`` block: the supernet-weight optimiser fields methods read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .errors import check_weight_optimiser

__all__ = ["SearchConfig", "WEIGHT_FIELDS"]

# The fields of every search block that methods read for the supernet-weight optimiser.
WEIGHT_FIELDS = ("epochs", "batch_size", "lr", "lr_min", "momentum", "weight_decay", "grad_clip")


@dataclass
class SearchConfig:
    """The weight-optimiser fields of a ``search:`` block (DARTS CNN defaults).

    A task's search block (its ``search_config_class``) subclasses this, adding its supernet size,
    sequence length and so on, and may change the defaults; methods read only these fields.
    """

    lr_fields: ClassVar[tuple[str, ...]] = ("lr", "lr_min")  # what ``lr_scaling: linear`` multiplies by the world size

    epochs: int = 50
    batch_size: int = 64
    lr: float = 0.025  # SGD on the supernet weights, cosine-annealed per epoch to lr_min
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0  # weights only, never alpha
    max_steps_per_epoch: int | None = None  # None = one pass over search-train
    score_batches: int | None = None  # search-val batches used to score a candidate in derivation; None = all

    def __post_init__(self):
        # epochs = 0 is allowed here; the config loader allows it only for methods that train no supernet.
        check_weight_optimiser(self)

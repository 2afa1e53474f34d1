"""Small pieces of final-training recipes that tasks share: SGD, DARTS's per-epoch cosine schedule.

A task's ``make_optimizer`` / ``start_epoch`` / ``end_epoch`` / ``eval_weights`` (see
:mod:`.base`) compose these; the runner never picks an optimiser or a schedule itself.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from ..core.schedule import cosine_lr, set_lr

__all__ = ["batch_accuracy", "cosine_lr", "no_swap", "set_lr", "sgd"]


def batch_accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy (%) of one batch's logits, for the training curves."""
    return 100.0 * (logits.detach().argmax(dim=1) == y).float().mean().item()


def sgd(model: nn.Module, config) -> torch.optim.SGD:
    """SGD from a recipe's ``lr``, ``momentum`` and ``weight_decay``."""
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def no_swap(model: nn.Module, optimizer: torch.optim.Optimizer) -> nullcontext:
    """``eval_weights`` of tasks that evaluate the weights they train."""
    return nullcontext()

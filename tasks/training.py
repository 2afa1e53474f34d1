"""Small pieces of final-training recipes that tasks share: SGD, DARTS's per-epoch cosine schedule.

A task's ``make_optimizer`` / ``start_epoch`` / ``end_epoch`` / ``eval_weights`` (see
:mod:`.base`) compose these; the runner never picks an optimiser or a schedule itself.
``cosine_lr`` repeats :func:`egsbench.methods.base.cosine_lr` (one line) because tasks sit
below methods and may not import them.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
from torch import nn

__all__ = ["batch_accuracy", "cosine_lr", "no_swap", "set_lr", "sgd"]


def batch_accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy (%) of one batch's logits, for the training curves."""
    return 100.0 * (logits.detach().argmax(dim=1) == y).float().mean().item()


def sgd(model: nn.Module, config) -> torch.optim.SGD:
    """SGD from a recipe's ``lr``, ``momentum`` and ``weight_decay``."""
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def cosine_lr(epoch: int, epochs: int, lr: float, lr_min: float) -> float:
    """Learning rate of epoch ``epoch`` (0-based) under DARTS's per-epoch cosine schedule (``lr`` at epoch 0)."""
    return lr_min + 0.5 * (lr - lr_min) * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def no_swap(model: nn.Module, optimizer: torch.optim.Optimizer) -> nullcontext:
    """``eval_weights`` of tasks that evaluate the weights they train."""
    return nullcontext()

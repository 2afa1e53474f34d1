"""Learning-rate schedules shared by the methods' supernet optimisers and the tasks' final training."""

from __future__ import annotations

import math

import torch

__all__ = ["anneal", "cosine_lr", "set_lr"]


def cosine_lr(epoch: int, epochs: int, lr: float, lr_min: float) -> float:
    """Learning rate of epoch ``epoch`` (0-based) under DARTS's per-epoch cosine schedule.

    Epoch 0 gets ``lr``; the schedule would reach ``lr_min`` at epoch ``epochs`` (the original
    ``CosineAnnealingLR(T_max=epochs)`` stepped at each epoch start under PyTorch 0.3).

    Examples:
        >>> cosine_lr(0, 10, 0.025, 0.001), round(cosine_lr(5, 10, 0.025, 0.001), 6)
        (0.025, 0.013)
    """
    return lr_min + 0.5 * (lr - lr_min) * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def anneal(optimizer: torch.optim.Optimizer, config, epoch: int) -> float:
    """Set ``optimizer`` to epoch ``epoch``'s cosine lr (``config``'s ``lr``, ``lr_min``, ``epochs``); return it."""
    lr = cosine_lr(epoch, config.epochs, config.lr, config.lr_min)
    set_lr(optimizer, lr)
    return lr

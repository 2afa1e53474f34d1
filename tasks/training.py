"""Small pieces of final-training recipes that tasks share: optimisers, schedules, the classifier losses.

A task's ``make_optimizer`` / ``start_epoch`` / ``train_loss`` / ``end_epoch`` / ``eval_weights``
(see :mod:`.base`) compose these; the runner never picks an optimiser or a schedule itself.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

from ..core.schedule import cosine_lr, set_lr
from .spaces import EdgeWeights, LossOutput

__all__ = [
    "AveragedSGD",
    "auxiliary_loss",
    "batch_accuracy",
    "cosine_lr",
    "forward_logits",
    "inner_optimizer",
    "no_swap",
    "set_lr",
    "sgd",
]


def batch_accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy (%) of one batch's logits, for the training curves."""
    return 100.0 * (logits.detach().argmax(dim=1) == y).float().mean().item()


def forward_logits(model: nn.Module, x: torch.Tensor, weights: EdgeWeights | None = None) -> torch.Tensor:
    """The logits of a final network (``model(x)``) or a supernet (``model(x, weights)``), without the auxiliary
    head's output that a network may return beside them."""
    out = model(x) if weights is None else model(x, weights)
    return out[0] if isinstance(out, tuple) else out


def auxiliary_loss(model: nn.Module, batch: Any, criterion: Callable, auxiliary_weight: float) -> LossOutput:
    """A classifier's training loss on ``(x, y)``: ``criterion`` on the logits, plus ``auxiliary_weight`` times it on
    the auxiliary head's logits when the network has one (DARTS); the batch's top-1 accuracy for the curves."""
    x, y = batch
    logits, aux = model(x)
    loss = criterion(logits, y)
    if aux is not None:
        loss = loss + auxiliary_weight * criterion(aux, y)
    return LossOutput(loss, {"accuracy": batch_accuracy(logits, y)})


def sgd(model: nn.Module, config) -> torch.optim.SGD:
    """SGD from a recipe's ``lr``, ``momentum`` and ``weight_decay``."""
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def no_swap(model: nn.Module, optimizer: torch.optim.Optimizer) -> nullcontext:
    """``eval_weights`` of tasks that evaluate the weights they train."""
    return nullcontext()


def inner_optimizer(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimiser itself, out of accelerate's ``AcceleratedOptimizer`` wrapper when it is wrapped."""
    return getattr(optimizer, "optimizer", optimizer)


class AveragedSGD(torch.optim.Optimizer):
    """SGD (weight decay, no momentum) that, after :meth:`start_averaging`, also keeps the uniform average of
    the iterates (``state["ax"]``): torch's ASGD with ``t0 = switch step, lambd = 0``, written out.

    The switch flag and the validation history live in the param group, so they travel with
    ``state_dict`` (and with accelerate's checkpoints).
    """

    def __init__(self, params, lr: float, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "averaging": False, "val_history": []})

    @property
    def averaging(self) -> bool:
        return bool(self.param_groups[0]["averaging"])

    def start_averaging(self) -> None:
        for group in self.param_groups:
            group["averaging"] = True

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad if group["weight_decay"] == 0 else p.grad.add(p, alpha=group["weight_decay"])
                p.add_(d, alpha=-group["lr"])
                if group["averaging"]:
                    state = self.state[p]
                    if "ax" not in state:
                        state["ax"], state["n"] = p.detach().clone(), torch.ones(())
                    else:
                        state["n"] += 1
                        state["ax"].add_(p - state["ax"], alpha=1.0 / state["n"].item())
        return loss

    @contextmanager
    def averaged(self):
        """Inside, every parameter holds its average (when averaging has started); restored on exit."""
        saved = []
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    ax = self.state[p].get("ax")
                    if ax is not None:
                        saved.append((p, p.detach().clone()))
                        p.copy_(ax)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, value in saved:
                    p.copy_(value)

"""The fast path a run opts into: channels-last memory layout and ``torch.compile`` of the final network.

Both are config switches (``memory_format: channels_last``, ``compile: true``; see
:class:`~.config.ExperimentConfig`), recorded in the run's config, and task-agnostic.
:func:`apply_memory_format` lays a network's 4-D parameters, buffers and ``forward`` inputs out NHWC (the
same values up to float rounding; networks without 4-D tensors are left alone). :func:`compile_network`
compiles in place with tensor-valued drop-path probabilities, so the per-epoch ramp does not recompile.

Design notes and measured speed-ups: docs/benchmarks.md#speed.
"""

from __future__ import annotations

import torch
from torch import nn

from ..tasks.spaces.cell import ScheduledDropPath

__all__ = ["MEMORY_FORMATS", "apply_memory_format", "compile_network"]

MEMORY_FORMATS = ("contiguous", "channels_last")  # the config key memory_format


def _to_channels_last(module: nn.Module, args: tuple) -> tuple:
    return tuple(
        a.contiguous(memory_format=torch.channels_last) if isinstance(a, torch.Tensor) and a.dim() == 4 else a
        for a in args
    )


def apply_memory_format(model: nn.Module, memory_format: str) -> nn.Module:
    """Lay ``model`` out in ``memory_format`` (``contiguous``: unchanged) and return it.

    Examples:
        >>> net = apply_memory_format(nn.Conv2d(3, 4, 3), "channels_last")
        >>> net(torch.zeros(1, 3, 8, 8)).is_contiguous(memory_format=torch.channels_last)
        True
    """
    if memory_format not in MEMORY_FORMATS:
        raise ValueError(f"memory_format must be one of {list(MEMORY_FORMATS)}, got {memory_format!r}")
    if memory_format == "channels_last" and not getattr(model, "_egsbench_channels_last", False):
        model.to(memory_format=torch.channels_last)
        model.register_forward_pre_hook(_to_channels_last)
        model._egsbench_channels_last = True
    return model


def compile_network(model: nn.Module, **options) -> nn.Module:
    """Compile ``model`` in place (``options`` go to ``torch.compile``) with tensor-valued drop-path probabilities."""
    for module in model.modules():
        if isinstance(module, ScheduledDropPath):
            module.use_tensor_drop_path()
    model.compile(**options)
    return model

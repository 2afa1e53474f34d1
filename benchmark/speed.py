"""The fast path of a run: the memory layout of its networks and ``torch.compile``.

``memory_format`` (``auto`` by default) picks a layout per network with :func:`resolve_memory_format` from
measured rules (:data:`CHANNELS_LAST_FROM`) and :func:`lay_out` applies it; the record says what each phase ran
in. ``compile: true`` compiles the final network (:func:`compile_network`, tensor drop-path probabilities so the
per-epoch ramp does not recompile) and, for dense methods, the search supernet (:func:`compile_supernet`).

Design notes and measured speed-ups: docs/benchmarks.md#speed and #bench_layout.
"""

from __future__ import annotations

import torch
from torch import nn

from ..tasks.spaces.cell import ScheduledDropPath

__all__ = [
    "CHANNELS_LAST_FROM",
    "MEMORY_FORMATS",
    "MEMORY_FORMAT_CHOICES",
    "apply_memory_format",
    "compile_network",
    "compile_supernet",
    "conv_width",
    "lay_out",
    "resolve_memory_format",
]

MEMORY_FORMATS = ("contiguous", "channels_last")  # the layouts a network runs in
MEMORY_FORMAT_CHOICES = ("auto", *MEMORY_FORMATS)  # the config key memory_format
# ``auto``: channels-last from this conv width up, per (device type, dtype); None: never. Each row is measured
# with python -m egsbench.benchmark.bench_layout: the CPU rows on a 2-core CPU (memory-format-cpu.csv), the CUDA
# rows on an H200 (memory-format-cuda.csv: channels-last took 0.99-1.18x the time of NCHW at C = 16 and 32,
# batch 64, in fp32 and in bf16; cuDNN's NHWC guidance did not hold for these host-bound steps; wider networks
# not measured). The dtypes are the ones a config can ask for (launch.compute_dtype: fp32, or bf16 autocast).
CHANNELS_LAST_FROM: dict[tuple[str, torch.dtype], int | None] = {
    ("cpu", torch.float32): 4,
    ("cpu", torch.bfloat16): 16,
    ("cuda", torch.float32): None,
    ("cuda", torch.bfloat16): None,
}


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


def conv_width(model: nn.Module) -> int | None:
    """The narrowest input width of ``model``'s 2-D convolutions past the image (``in_channels > 3``); None when it
    has none (a recurrent network), in which case the layout does not matter.

    Examples:
        >>> conv_width(nn.Sequential(nn.Conv2d(3, 48, 3), nn.Conv2d(48, 16, 1), nn.Conv2d(16, 16, 3)))
        16
        >>> conv_width(nn.LSTM(8, 8)) is None
        True
    """
    widths = [m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 3]
    return min(widths) if widths else None


def resolve_memory_format(
    requested: str, model: nn.Module, device: torch.device | str, dtype: torch.dtype = torch.float32
) -> str:
    """The layout ``model`` runs in: ``requested`` itself, or for ``auto`` the faster one measured for the device
    type, the compute dtype and the network's :func:`conv_width` (:data:`CHANNELS_LAST_FROM`).

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(3, 48, 3), nn.Conv2d(48, 16, 1))
        >>> resolve_memory_format("auto", net, "cpu"), resolve_memory_format("contiguous", net, "cpu")
        ('channels_last', 'contiguous')
        >>> resolve_memory_format("auto", nn.Conv2d(3, 16, 3), "cpu")  # no conv past the image
        'contiguous'
    """
    if requested in MEMORY_FORMATS:
        return requested
    if requested != "auto":
        raise ValueError(f"memory_format must be one of {list(MEMORY_FORMAT_CHOICES)}, got {requested!r}")
    width = conv_width(model)
    threshold = CHANNELS_LAST_FROM.get((torch.device(device).type, dtype))
    return "channels_last" if width is not None and threshold is not None and width >= threshold else "contiguous"


def lay_out(model: nn.Module, requested: str, device: torch.device | str, dtype: torch.dtype = torch.float32) -> str:
    """Lay ``model`` out in the layout :func:`resolve_memory_format` picks for it; returns that layout."""
    layout = resolve_memory_format(requested, model, device, dtype)
    apply_memory_format(model, layout)
    return layout


def compile_supernet(model: nn.Module, **options) -> bool:
    """Compile a supernet's search forward past its host-side active-op lists (``Supernet.compile_search_forward``);
    False when the supernet has no such path. Only for dense methods: a sampling one would recompile per sample."""
    return model.compile_search_forward(**options)


def compile_network(model: nn.Module, **options) -> nn.Module:
    """Compile ``model`` in place (``options`` go to ``torch.compile``) with tensor-valued drop-path probabilities."""
    for module in model.modules():
        if isinstance(module, ScheduledDropPath):
            module.use_tensor_drop_path()
    model.compile(**options)
    return model

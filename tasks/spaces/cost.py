"""Parameter and multiply-accumulate (MAC) counting.

Parameters follow DARTS ``utils.count_parameters_in_MB``: every named parameter whose name
does not contain ``auxiliary``. MACs follow the xautodl ``flop_benchmark`` convention for
one input sample: convolutions ``k_h * k_w * C_in / groups * C_out * H_out * W_out``, linear
layers ``in * out``, pools ``k_h * k_w * C * H_out * W_out``; BN, ReLU and additions are
free. Only modules that run in the forward pass are counted, so an auxiliary head (which
runs only in training mode) and ops a sparse supernet skips are not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["MacCount", "count_macs", "count_parameters"]


def count_parameters(model: nn.Module, exclude: tuple[str, ...] = ("auxiliary",)) -> int:
    """Number of parameters whose names contain none of ``exclude``."""
    return sum(p.numel() for name, p in model.named_parameters() if not any(x in name for x in exclude))


@dataclass
class MacCount:
    total: int = 0
    per_module: dict[str, int] = field(default_factory=dict)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _module_macs(module: nn.Module, out: torch.Tensor) -> int:
    per_sample_out = out[0]
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return kh * kw * (module.in_channels // module.groups) * per_sample_out.numel()
    if isinstance(module, nn.Linear):
        return module.in_features * per_sample_out.numel()
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        kh, kw = _pair(module.kernel_size)
        return kh * kw * per_sample_out.numel()
    return 0


@torch.no_grad()
def count_macs(model: nn.Module, *inputs, **kwargs) -> MacCount:
    """Run ``model(*inputs, **kwargs)`` once and count MACs per sample of the first input.

    Returns a :class:`MacCount` with the total and a breakdown by module name.

    Examples:
        >>> count_macs(nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.zeros(1, 3, 4, 4)).total
        3456
    """
    result = MacCount()
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.AvgPool2d)):

            def hook(mod, _inp, out, name=name):
                macs = _module_macs(mod, out)
                result.per_module[name] = result.per_module.get(name, 0) + macs
                result.total += macs

            hooks.append(module.register_forward_hook(hook))
    try:
        model(*inputs, **kwargs)
    finally:
        for h in hooks:
            h.remove()
    return result

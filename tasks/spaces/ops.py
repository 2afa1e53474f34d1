"""The eight candidate operations of the DARTS convolutional space.

Code origin: quark0/darts ``cnn/operations.py``. Every op maps ``(B, C, H, W) -> (B, C, H/stride, W/stride)``;
``affine=False`` gives the search-time variants, ``affine=True`` the final-network ones. The ops that start
with a ReLU name it ``pre_activation`` and offer ``after_activation(a)``, so a search edge computes
``relu(x)`` once for all of them (``cell.MixedEdge``).

Deviations from the paper and the original code: docs/fidelity/spaces.md
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = [
    "OPS",
    "PRIMITIVES",
    "DilConv",
    "FactorizedReduce",
    "Identity",
    "ReLUConvBN",
    "SepConv",
    "Zero",
    "make_op",
]

# The order is part of the format: alpha columns and op indices follow it (genotypes.py PRIMITIVES).
PRIMITIVES: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)


class ReLUConvBN(nn.Sequential):
    """ReLU -> conv (no bias) -> BN."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class DilConv(nn.Sequential):
    """ReLU -> depthwise dilated kxk -> pointwise 1x1 -> BN (one separable block)."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int, affine: bool = True
    ):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride, padding, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )

    @property
    def pre_activation(self) -> nn.Module:
        """The leading ReLU (a search edge applies it once for all the ops that start with it)."""
        return self[0]

    def after_activation(self, activated: torch.Tensor) -> torch.Tensor:
        """The op on an input that is already ``pre_activation(x)``."""
        return self[3](self[2](self[1](activated)))


class SepConv(nn.Sequential):
    """Two separable blocks; only the first is strided ("applied twice", DARTS)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            DilConv(c_in, c_in, kernel, stride, padding, dilation=1, affine=affine),
            DilConv(c_in, c_out, kernel, 1, padding, dilation=1, affine=affine),
        )

    @property
    def pre_activation(self) -> nn.Module:
        return self[0].pre_activation

    def after_activation(self, activated: torch.Tensor) -> torch.Tensor:
        """The op on an input that is already ``pre_activation(x)``."""
        return self[1](self[0].after_activation(activated))


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Zero(nn.Module):
    """The ``none`` op: zeros of the output shape. Sparse execution never calls it in a
    supernet; it exists so that every op name has a module and a dense reference exists."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x * 0.0
        return x[:, :, :: self.stride, :: self.stride] * 0.0


class FactorizedReduce(nn.Module):
    """Halve H and W with two offset 1x1 stride-2 convs of C_out/2 channels each."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after_activation(self.relu(x))

    @property
    def pre_activation(self) -> nn.Module:
        return self.relu

    def after_activation(self, activated: torch.Tensor) -> torch.Tensor:
        """The op on an input that is already ``pre_activation(x)``."""
        # The second path sees the input shifted by one pixel, so the two halves sample
        # complementary positions. (B, C_out, H/2, W/2)
        return self.bn(torch.cat([self.conv_1(activated), self.conv_2(activated[:, :, 1:, 1:])], dim=1))


def _pool(kind: str, c: int, stride: int, affine: bool) -> nn.Module:
    pool = (
        nn.MaxPool2d(3, stride=stride, padding=1)
        if kind == "max"
        else nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    )
    # Search cells follow every pool with a parameter-free BN (model_search.MixedOp).
    return pool if affine else nn.Sequential(pool, nn.BatchNorm2d(c, affine=False))


OpFactory = Callable[[int, int, bool], nn.Module]

OPS: dict[str, OpFactory] = {
    "none": lambda c, stride, affine: Zero(stride),
    "max_pool_3x3": lambda c, stride, affine: _pool("max", c, stride, affine),
    "avg_pool_3x3": lambda c, stride, affine: _pool("avg", c, stride, affine),
    "skip_connect": lambda c, stride, affine: Identity() if stride == 1 else FactorizedReduce(c, c, affine),
    "sep_conv_3x3": lambda c, stride, affine: SepConv(c, c, 3, stride, 1, affine),
    "sep_conv_5x5": lambda c, stride, affine: SepConv(c, c, 5, stride, 2, affine),
    "dil_conv_3x3": lambda c, stride, affine: DilConv(c, c, 3, stride, 2, 2, affine),
    "dil_conv_5x5": lambda c, stride, affine: DilConv(c, c, 5, stride, 4, 2, affine),
}


def make_op(name: str, channels: int, stride: int, affine: bool) -> nn.Module:
    """Build one op by name.

    Examples:
        >>> op = make_op("sep_conv_3x3", 16, stride=2, affine=False)
        >>> op(torch.zeros(2, 16, 8, 8)).shape
        torch.Size([2, 16, 4, 4])
    """
    try:
        factory = OPS[name]
    except KeyError:
        raise ValueError(f"unknown op {name!r}; valid ops: {', '.join(OPS)}") from None
    return factory(channels, stride, affine)

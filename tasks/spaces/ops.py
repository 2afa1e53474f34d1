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
import torch.nn.functional as F
from torch import nn

__all__ = [
    "OPS",
    "PRIMITIVES",
    "DepthwiseConv2d",
    "DilConv",
    "FactorizedReduce",
    "Identity",
    "PoolBN",
    "ReLUConvBN",
    "SepConv",
    "Zero",
    "SHORTCUT_DEVICES",
    "make_op",
    "scaled_bn",
    "takes_shortcuts",
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


# The devices where the kernel-level shortcuts (DepthwiseConv2d's, cell._accumulate's in-place sum) run: where
# they were measured faster. On an H200 the depthwise ones made the dense step 1.20x (batch 32) and 1.49x
# (batch 64) slower and the in-place sum read 0.95-0.96x, inside the spread of those host-bound steps; both stay
# off there, so the GPU figures describe this code (results/benchmarks/gpu-h200-2026-12-04.txt).
SHORTCUT_DEVICES = frozenset({"cpu"})


def takes_shortcuts(x: torch.Tensor) -> bool:
    """Whether the kernel-level shortcuts run for ``x``'s device (:data:`SHORTCUT_DEVICES`; meta: never)."""
    return x.device.type in SHORTCUT_DEVICES


class ReLUConvBN(nn.Sequential):
    """ReLU -> conv (no bias) -> BN."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )

    @property
    def pre_activation(self) -> nn.Module:
        """The leading ReLU (a search cell's preprocessing shares it with the other cell reading that input)."""
        return self[0]

    def after_activation(self, activated: torch.Tensor) -> torch.Tensor:
        """The op on an input that is already ``pre_activation(x)``."""
        return self[2](self[1](activated))


class _SamePaddedDepthwise(torch.autograd.Function):
    """A stride-1, "same"-padded depthwise convolution whose input gradient is itself such a convolution.

    For stride 1 and ``2 * padding == dilation * (kernel - 1)`` the gradient of the input is the output
    gradient correlated with the spatially flipped kernel, at the same padding and dilation. oneDNN's
    backward-data kernel for depthwise convolutions takes 1.2-1.6x (undilated) to 4.4-7.6x (dilated) the time
    of its forward kernel on a CPU (``docs/benchmarks.md#bench_engine``); the weight gradient keeps
    aten's kernel. The same sums in another order: equal up to float rounding. Twice differentiable.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, padding: tuple, dilation: tuple) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.dilation = padding, dilation
        return F.conv2d(x, weight, None, 1, padding, dilation, weight.shape[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = _SamePaddedDepthwise.apply(grad, weight.flip(-2, -1), ctx.padding, ctx.dilation)
        if ctx.needs_input_grad[1]:
            grad_w = _depthwise_weight_grad(grad, x, weight, ctx.padding, ctx.dilation)
        return grad_x, grad_w, None, None


# oneDNN's depthwise weight-gradient kernel on a CPU is fast for kernels up to 3 columns wide at dilation 1 and
# 3-5x slower per tap beyond (a 5x5 kernel 11x a 3x3's time, 5x3 as fast as 3x3, 3x3 at dilation 2 7x;
# docs/benchmarks.md#bench_engine): wider and dilated kernels are summed from pieces of that kind.
FAST_WGRAD_COLUMNS = 3


def _aten_weight_grad(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, padding, dilation) -> torch.Tensor:
    mask = (False, True, False)
    return torch.ops.aten.convolution_backward(
        grad, x, weight, None, [1, 1], list(padding), list(dilation), False, [0, 0], weight.shape[0], mask
    )[1]


def _depthwise_weight_grad(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, padding, dilation):
    """The weight gradient ``(C, 1, kh, kw)`` of the stride-1 depthwise convolution of ``x`` ``(B, C, H, W)``
    with ``weight`` at ``padding`` and ``dilation``, given its output gradient ``grad`` ``(B, C, Ho, Wo)``.

    The same sums as aten's kernel, in pieces its fast path takes: a kernel dilated by ``d`` only reads pixels of
    one of the ``d x d`` phases of the grid per output pixel, so it is the undilated kernel over the phases
    stacked along the batch (:func:`_phases`; where the sides and the padding are multiples of ``d`` the phases
    of ``x`` itself at padding ``/ d``, else of ``x`` padded); a kernel wider than :data:`FAST_WGRAD_COLUMNS` is
    blocks of at most that many columns (:func:`_column_blocks`). Differentiable.
    """
    kw, (dh, dw) = weight.shape[-1], dilation
    if (kw <= FAST_WGRAD_COLUMNS and dh == dw == 1) or dh != dw:
        return _aten_weight_grad(grad, x, weight, padding, dilation)
    (ph, pw), d = padding, dh
    if d > 1:
        if ph % d or pw % d or any(side % d for side in (*x.shape[-2:], *grad.shape[-2:])):
            extra = ((-grad.shape[-2]) % d, (-grad.shape[-1]) % d)  # grad's sides to multiples of d (zeros add 0)
            x = F.pad(x, (pw, pw + extra[1], ph, ph + extra[0]))  # (B, C, Ho' + d (kh - 1), Wo' + d (kw - 1))
            grad = F.pad(grad, (0, extra[1], 0, extra[0])) if any(extra) else grad
            ph = pw = 0
        else:  # output phase (r, s) reads input phase (r, s) only
            ph, pw = ph // d, pw // d
        x, grad = _phases(x, d), _phases(grad, d)  # (d^2 B, C, ...): a stride-1, undilated correlation
        if kw <= FAST_WGRAD_COLUMNS:
            return _aten_weight_grad(grad, x, weight, (ph, pw), (1, 1))
    return _column_blocks(grad, x, weight, (ph, pw), pad_rows=d > 1)


def _column_blocks(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, padding, pad_rows: bool):
    """The undilated weight gradient as blocks of at most :data:`FAST_WGRAD_COLUMNS` columns: block ``j`` correlates
    ``grad`` with the columns ``j - pw ...`` of ``x``, one copy made by ``F.pad`` (a negative pad crops) that
    leaves the rows to aten's padding (``pad_rows``: to the copy; aten's kernel took 2.8-3.3x as long on 4x4
    phase grids at padding 2, its padded-row path). With the phases of the input itself, 0.48-0.86 of the time of
    the previous form, slices of one padded copy that aten's kernel copied again (docs/benchmarks.md#bench_engine)."""
    (ph, pw), kw = padding, weight.shape[-1]
    wo, w_in = grad.shape[-1], x.shape[-1]
    rows, aten_rows = ((ph, ph), 0) if pad_rows else ((0, 0), ph)
    blocks = []
    for j in range(0, kw, FAST_WGRAD_COLUMNS):
        c = min(FAST_WGRAD_COLUMNS, kw - j)
        piece = F.pad(x, (pw - j, j - pw + wo + c - 1 - w_in, *rows))  # (B, C, H', Wo + c - 1)
        blocks.append(_aten_weight_grad(grad, piece, weight[..., j : j + c], (aten_rows, 0), (1, 1)))
    return torch.cat(blocks, dim=-1) if len(blocks) > 1 else blocks[0]


def _split(t: torch.Tensor, d: int) -> torch.Tensor:
    """``t`` ``(B, C, H, W)`` as the view ``(B, C, H / d, d, W / d, d)``: index ``[:, :, :, r, :, s]`` is phase
    ``(r, s)``, the pixels ``[r::d, s::d]``. Splitting a dimension is a view in any memory layout, so ops on it
    (a ``cat``, a ``copy_``) keep ``t``'s."""
    b, c, h, w = t.shape
    return t.view(b, c, h // d, d, w // d, d)


def _phases(t: torch.Tensor, d: int) -> torch.Tensor:
    """``(B, C, H, W) -> (d * d * B, C, H / d, W / d)``: phase ``(r, s)`` is batch block ``r * d + s``; one copy,
    in ``t``'s memory layout (H and W multiples of ``d``)."""
    b, c, h, w = t.shape
    v = _split(t, d)  # (B, C, H/d, d, W/d, d)
    if _layout(t) is torch.channels_last:  # copied in (r, s, B, H/d, W/d, C) order, viewed as NCHW
        return v.permute(3, 5, 0, 2, 4, 1).reshape(d * d * b, h // d, w // d, c).permute(0, 3, 1, 2)
    return v.permute(3, 5, 0, 1, 2, 4).reshape(d * d * b, c, h // d, w // d)


class _Subsample(torch.autograd.Function):
    """``x[:, :, offset::sh, offset::sw]`` as a compact tensor in ``x``'s memory layout, whose input gradient is in
    that layout too. Autograd's gradient of a slice is a zero tensor in the default layout: added to the
    channels-last gradients of the same input it makes the sum and each elementwise backward after it channels-
    mixed, 4-5x slower (a ReLU's backward: 4.10 ms against 0.80 ms at 32x64x32x32, docs/benchmarks.md#bench_engine)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, offset: int, step: tuple[int, int]) -> torch.Tensor:
        ctx.shape, ctx.offset, ctx.step, ctx.layout = x.shape, offset, step, _layout(x)
        return x[:, :, offset :: step[0], offset :: step[1]].contiguous(memory_format=ctx.layout)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (sh, sw), o = ctx.step, ctx.offset
        grad_x = torch.empty(ctx.shape, dtype=grad.dtype, device=grad.device, memory_format=ctx.layout).zero_()
        grad_x[:, :, o::sh, o::sw] = grad  # differentiable: DARTS's second order differentiates through it
        return grad_x, None, None


class _PhasePair(torch.autograd.Function):
    """``(B, C, H, W) -> (B, 2C, H/2, W/2)``, H and W even: channels ``[0, C)`` the pixels ``(2i, 2j)``, ``[C, 2C)``
    the pixels ``(2i + 1, 2j + 1)``, in ``x``'s memory layout: one copy forward, one pass backward (each input
    pixel is written once: its gradient or a zero), in that layout too (see :class:`_Subsample`)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.shape, ctx.layout = x.shape, _layout(x)
        v = _split(x, 2)
        return torch.cat([v[:, :, :, 0, :, 0], v[:, :, :, 1, :, 1]], dim=1)  # (B, 2C, H/2, W/2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        c = ctx.shape[1]
        grad_x = torch.empty(ctx.shape, dtype=grad.dtype, device=grad.device, memory_format=ctx.layout)
        # a fresh view per write: DARTS's second order differentiates through these copies
        _split(grad_x, 2)[:, :, :, 0, :, 0].copy_(grad[:, :c])
        _split(grad_x, 2)[:, :, :, 1, :, 1].copy_(grad[:, c:])
        _split(grad_x, 2)[:, :, :, 0, :, 1].zero_()  # the pixels neither phase reads
        _split(grad_x, 2)[:, :, :, 1, :, 0].zero_()
        return grad_x


def _layout(x: torch.Tensor) -> torch.memory_format:
    cl = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


def subsample(x: torch.Tensor, offset: int, step: tuple[int, int]) -> torch.Tensor:
    """``x[:, :, offset::step[0], offset::step[1]]`` ``(B, C, H', W')``: a copy in ``x``'s layout whose gradient
    is in that layout too (:class:`_Subsample`)."""
    return _Subsample.apply(x, offset, tuple(step))


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(c, c, kernel, stride, padding, dilation, groups=c, bias=False)`` (the same parameters and
    values) with two exact shortcuts for "same"-padded kernels (``2 * padding == dilation * (kernel - 1)``):

    On the devices of :data:`SHORTCUT_DEVICES` (a CPU; elsewhere it is ``nn.Conv2d``):

    - at stride 1, outside autocast, the input gradient takes the faster forward kernel
      (:class:`_SamePaddedDepthwise`);
    - where the stride equals the dilation (a reduction edge's ``dil_conv``: stride 2, dilation 2) every tap
      reads a pixel of the subsampled grid ``x[:, :, ::d, ::d]``, so the convolution is the undilated,
      stride-1 one of that grid (padding ``padding / d``): the same sums on a quarter of the pixels, where
      oneDNN's strided dilated kernels take 8-19 ms forward + backward at batch 32, 6.2-6.5x as long
      (``docs/benchmarks.md#bench_engine``).

    The constructor fixes what else the shortcuts assume (no bias, one group per channel, zero padding).
    """

    def __init__(self, c: int, kernel: int, stride: int, padding: int, dilation: int):
        super().__init__(c, c, kernel, stride, padding, dilation=dilation, groups=c, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (dh, dw), (ph, pw), (sh, sw) = self.kernel_size, self.dilation, self.padding, self.stride
        same = 2 * ph == dh * (kh - 1) and 2 * pw == dw * (kw - 1)
        if not same or not takes_shortcuts(x):  # meta (MAC counts): shapes only
            return super().forward(x)
        if (sh, sw) == (dh, dw) != (1, 1) and ph % dh == 0 and pw % dw == 0:
            x, padding, dilation = subsample(x, 0, (dh, dw)), (ph // dh, pw // dw), (1, 1)  # (B, C, H/d, W/d)
        elif (sh, sw) == (1, 1):
            padding, dilation = self.padding, self.dilation
        else:
            return super().forward(x)
        # autocast: aten's kernel, which casts both the forward's and the backward's operands itself
        if x.dtype != self.weight.dtype or torch.is_autocast_enabled(x.device.type):
            return F.conv2d(x, self.weight, None, 1, padding, dilation, self.groups)
        return _SamePaddedDepthwise.apply(x, self.weight, padding, dilation)


class DilConv(nn.Sequential):
    """ReLU -> depthwise dilated kxk -> pointwise 1x1 -> BN (one separable block)."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int, affine: bool = True
    ):
        super().__init__(
            nn.ReLU(inplace=False),
            DepthwiseConv2d(c_in, kernel, stride, padding, dilation),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )

    @property
    def pre_activation(self) -> nn.Module:
        """The leading ReLU (a search edge applies it once for all the ops that start with it)."""
        return self[0]

    def after_activation(self, activated: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """The op on an input that is already ``pre_activation(x)``; with ``scale`` (0-dim, where
        :attr:`takes_scale`) ``scale * op(x)``, the scale the closing BN's weight (:func:`scaled_bn`)."""
        y = self[2](self[1](activated))
        return self[3](y) if scale is None else scaled_bn(self[3], y, scale)

    @property
    def takes_scale(self) -> bool:
        """Whether :meth:`after_activation` can fold a scale into the closing BN (search-time BN, unobserved)."""
        return _foldable(self[3])


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

    def after_activation(self, activated: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """The op on an input that is already ``pre_activation(x)`` (``scale``: as ``DilConv``'s)."""
        first, second = self[0].after_activation(activated), self[1]
        if scale is None:
            return second(first)
        return second.after_activation(second.pre_activation(first), scale)

    @property
    def takes_scale(self) -> bool:
        """Whether the second block can fold a scale (it runs past its own ``forward`` then: not when observed)."""
        return self[1].takes_scale and not _hooked(self[1])


def _foldable(bn: nn.Module) -> bool:
    return type(bn) is nn.BatchNorm2d and not bn.affine and not _hooked(bn)


def scaled_bn(bn: nn.BatchNorm2d, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``scale * bn(x)`` for a BN without affine parameters, as one BN whose weight is ``scale`` (0-dim) on every
    channel: the same statistics, running-statistics update and values (up to float rounding), and the scale's
    gradient from the BN's backward, with no pass of its own over ``x`` (a search edge's op weight, ``cell``).
    The weight is a contiguous copy: an expanded (stride-0) weight gives wrong input gradients in the channels-
    last CPU kernel of torch 2.14 (measured: errors of 7e10)."""
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        factor = _count_batch(bn)
    batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
    track = not bn.training or bn.track_running_stats
    weight = scale.expand(x.shape[1]).contiguous()  # (C,)
    mean, var = (bn.running_mean, bn.running_var) if track else (None, None)
    return F.batch_norm(x, mean, var, weight, None, batch_stats, factor, bn.eps)


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
        a, c1, c2 = activated, self.conv_1, self.conv_2
        if takes_shortcuts(a) and not (_hooked(c1) or _hooked(c2)) and a.shape[-2] % 2 == a.shape[-1] % 2 == 0:
            # The same sums: a 1x1 stride-2 convolution reads the pixels (2i, 2j) of its input, the shifted one
            # (2i + 1, 2j + 1); the two grids side by side in channels are one stride-1 convolution of two groups,
            # whose output is the concatenation (_PhasePair: its gradient keeps the layout).
            return self.bn(F.conv2d(_PhasePair.apply(a), torch.cat([c1.weight, c2.weight]), groups=2))
        return self.bn(torch.cat([c1(a), c2(a[:, :, 1:, 1:])], dim=1))


class PoolBN(nn.Sequential):
    """A pool followed by a parameter-free BN: a search cell's pool (``model_search.MixedOp``).

    Both are functions of the input alone while training (the BN normalises with the batch's statistics),
    so the search edges that leave one node share one output (:meth:`shared_forward`); each BN still
    updates its own running statistics, as if it had run.
    """

    def __init__(self, pool: nn.Module, c: int):
        super().__init__(pool, nn.BatchNorm2d(c, affine=False))

    def share_key(self) -> tuple | None:
        """Equal keys: the same output from the same input. ``None`` (run it, do not share) when a module
        was swapped or is observed by a forward hook (cost counters and call counters see every call)."""
        pool, bn = self[0], self[1]
        if type(pool) not in (nn.MaxPool2d, nn.AvgPool2d) or type(bn) is not nn.BatchNorm2d or bn.affine:
            return None
        if _hooked(pool) or _hooked(bn):
            return None
        attrs = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "count_include_pad", "divisor_override")
        return (type(pool), *(getattr(pool, a, None) for a in attrs), bn.eps)

    def shared_forward(self, src) -> torch.Tensor:
        """``self(src.x)``, computed once per :class:`~.cell.SharedInput` and key and reused after that.

        While training, a reuse updates this BN's running statistics with the batch's, computed once per
        shared output (the same update as the kernel's up to float rounding); in eval each BN applies its
        own statistics to the shared pool output.
        """
        key = self.share_key()
        if key is None:
            return self(src.x)
        pool, bn = self[0], self[1]
        memo = src.memo
        if key not in memo:
            memo[key] = pool(src.x)  # (B, C, H/stride, W/stride)
        pooled = memo[key]
        if not bn.training:
            return bn(pooled)
        if (key, "bn") not in memo:  # the first BN: its own forward, which updates its statistics
            memo[key, "bn"] = bn(pooled)
            return memo[key, "bn"]
        if bn.track_running_stats:
            if (key, "stats") not in memo:
                memo[key, "stats"] = _batch_stats(pooled)
            _update_running_stats(bn, *memo[key, "stats"])
        return memo[key, "bn"]


def _batch_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-channel mean and unbiased variance of ``x`` ``(B, C, H, W)``, as a BN's running statistics take
    them: from BN's own statistics kernel where aten has one for the device (``var_mean`` over a channels-last
    tensor took 8x a whole BN forward on a CPU, 2.1 ms at 64x16x32x32), else from ``var_mean``."""
    with torch.no_grad():
        if x.device.type not in ("cpu", "cuda"):
            var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=1)
            return mean, var
        mean, var = torch.batch_norm_update_stats(x, None, None, 0.0)  # (C,) each, the biased variance
        n = x.numel() // x.shape[1]
        return mean, var * (n / max(n - 1, 1))


def _hooked(module: nn.Module) -> bool:
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or nn.modules.module._global_forward_hooks
        or nn.modules.module._global_forward_pre_hooks
    )


def _count_batch(bn: nn.BatchNorm2d) -> float:
    """What ``bn``'s forward does first with a training batch: count it in ``num_batches_tracked``; returns the
    factor its running statistics average the batch's in with (``1 / count`` where ``momentum`` is None)."""
    bn.num_batches_tracked.add_(1)
    return 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum


def _update_running_stats(bn: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor) -> None:
    """What ``bn``'s forward does to its buffers while training, given the batch's mean and unbiased var."""
    with torch.no_grad():
        factor = _count_batch(bn)
        bn.running_mean.mul_(1.0 - factor).add_(mean, alpha=factor)
        bn.running_var.mul_(1.0 - factor).add_(var, alpha=factor)


def _pool(kind: str, c: int, stride: int, affine: bool) -> nn.Module:
    pool = (
        nn.MaxPool2d(3, stride=stride, padding=1)
        if kind == "max"
        else nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    )
    # Search cells follow every pool with a parameter-free BN (model_search.MixedOp).
    return pool if affine else PoolBN(pool, c)


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

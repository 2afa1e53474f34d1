"""What each of the search cell's exact shortcuts is worth: each switched off in turn, side by side (issue 21).

The dense DARTS supernet's forward + backward (``bench_peer``'s ``ours_darts`` step) with the shortcuts of
``tasks/spaces/cell.py`` and ``ops.py``, all on (``all``, as shipped), each one off (``no_<name>``) and all off
(``none``: every edge runs its own ops and adds their outputs out of place), interleaved in one process on one
network:

- ``shared_pools``: the edges that leave one node share its pools with their BN (``ops.PoolBN``);
- ``inplace_sum``: a node's edges add ``w * op(x)`` into one running sum in place, one autograd node per node
  whose backward takes each weight's gradient as a dot product (``cell.weighted_sum``; ``cell._accumulate``
  where that does not run);
- ``depthwise``: a same-padded depthwise convolution takes its input gradient from the flipped-kernel
  forward convolution at stride 1, and runs a strided dilated kernel (stride = dilation, a reduction edge's
  ``dil_conv``) as the undilated one on the subsampled grid (``ops.DepthwiseConv2d``);
- ``weight_grad``: that convolution's weight gradient in pieces oneDNN's fast kernel takes (column blocks of at
  most three, a dilated kernel over the grid's phases; ``ops._depthwise_weight_grad``);
- ``subsample``: ``FactorizedReduce`` as one two-group stride-1 1x1 convolution of its two subsampled grids side
  by side in channels, whose gradient keeps the channels-last layout (``ops._PhasePair``);
- ``shared_preprocess``: the two cells that read one cell's output (three preprocessings of the stem's) share
  its preprocessing ReLU (``cell.SharedInput``, ``SearchNetwork.forward_active``);
- ``bn_weight``: a convolution op's edge weight is its closing BN's weight (``ops.scaled_bn``), so the node sum
  adds its output as it is.

Before timing it checks, on a float64 copy of the network, that ``all`` and ``none`` give the same loss and
gradients (to 1e-9 of each gradient's scale: the same function, summed in another order).
``--method`` times another method's step on the same supernet (a ``bench_methods`` variant): one that samples
its architecture (GDAS, EGS, SNAS, random) draws it inside each step, call ``i`` of every variant with the seed
``i`` (common draws), each round the mean of ``--samples`` calls, and each ratio gets its paired 95 % interval.
``--kernels`` adds the depthwise convolutions alone at the supernet's shapes: at stride 1 the input gradient,
oneDNN's backward-data kernel against the forward kernel on the flipped weights, and the weight gradient, aten's
kernel against its pieces; at stride = dilation 2 the forward + backward of ``nn.Conv2d`` against
``DepthwiseConv2d``.

    python -m egsbench.benchmark.bench_engine --rounds 7 --kernels --out results/benchmarks/engine-cpu.txt
    python -m egsbench.benchmark.bench_engine --method egs_m1 --samples 8 --out results/benchmarks/engine-egs_m1-cpu.txt
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import platform
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F
from torch import nn

from ..methods import METHODS
from ..tasks.spaces import cell, ops
from .bench_methods import BASELINE, VARIANTS, fixed_batch, make_method
from .speed import MEMORY_FORMATS
from .timing import common_draws, sampling_interval, sync, time_interleaved

__all__ = [
    "SHORTCUTS",
    "depthwise_kernels",
    "draws_inside",
    "main",
    "shortcut_variants",
    "shortcuts_off",
]

SHORTCUTS = ("shared_pools", "inplace_sum", "depthwise", "weight_grad", "subsample", "shared_preprocess", "bn_weight")


def _out_of_place(out: torch.Tensor | None, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return w * y if out is None else out + w * y


def _own_preprocessing(pre: nn.Module, s) -> torch.Tensor:
    return pre(s.x if isinstance(s, cell.SharedInput) else s)


@contextlib.contextmanager
def shortcuts_off(model: nn.Module, names: tuple[str, ...]) -> Iterator[None]:
    """Run ``model`` without the named shortcuts inside the block (the modules' own paths instead)."""
    with contextlib.ExitStack() as stack:
        if "shared_pools" in names:  # an observed module runs itself (PoolBN.share_key)
            for m in model.modules():
                if isinstance(m, ops.PoolBN):
                    stack.callback(m[0].register_forward_hook(lambda *_: None).remove)
        if "subsample" in names:  # an observed convolution runs the original (FactorizedReduce.after_activation)
            for m in model.modules():
                if isinstance(m, ops.FactorizedReduce):
                    stack.callback(m.conv_1.register_forward_hook(lambda *_: None).remove)
        if "bn_weight" in names:  # every op output is weighted by the node sum
            stack.enter_context(mock.patch.object(ops.DilConv, "takes_scale", property(lambda self: False)))
        if "shared_preprocess" in names:
            stack.enter_context(mock.patch.object(cell, "_preprocessed", _own_preprocessing))
        if "inplace_sum" in names:
            stack.enter_context(mock.patch.object(cell, "_accumulate", _out_of_place))
            stack.enter_context(mock.patch.object(cell, "weighted_sum", cell.sum_terms))  # its _accumulate: above
        if "depthwise" in names:
            stack.enter_context(mock.patch.object(ops.DepthwiseConv2d, "forward", nn.Conv2d.forward))
        if "weight_grad" in names:
            stack.enter_context(mock.patch.object(ops, "_depthwise_weight_grad", ops._aten_weight_grad))
        yield


def shortcut_variants(
    channels: int,
    layers: int,
    batch: int,
    memory_format: str = "channels_last",
    device: str | torch.device = "cpu",
    method: str = BASELINE,
) -> tuple[dict[str, Callable[[], torch.Tensor]], Callable[[torch.dtype], float]]:
    """``({variant: step}, check)``: each step one forward + backward of ``method``'s supernet (a ``bench_methods``
    variant; the dense DARTS step by default) on ``device``, returning the loss; ``check(dtype)`` runs
    :func:`same_numbers` on a copy of the network in ``dtype``, on one set of weights.

    A method that samples its architecture draws it inside each step, as its own step does; the ``i``-th call of
    every variant draws with the seed ``i`` (``timing.common_draws``), so call ``i`` of each runs the same ops and
    the variants' calls pair up (``timing.sampling_interval`` with ``paired``)."""
    m = make_method(method, channels, layers, device, memory_format)
    model = m.ctx.model
    x, y = fixed_batch(batch, device)  # the model lays x out
    # each variant's own weight function (a sampling method's: seed i on call i)
    weight_fn = (lambda: common_draws(m.sample)) if draws_inside(method) else (lambda: m.probabilities)
    variants = {
        name: functools.partial(_step, model, x, y, weight_fn(), off)
        for name, off in {"all": (), **{f"no_{s}": (s,) for s in SHORTCUTS}, "none": SHORTCUTS}.items()
    }

    def check(dtype: torch.dtype = torch.float64) -> float:
        net = copy.deepcopy(model).to(dtype)
        fixed = {t: w.detach().to(dtype) for t, w in weight_fn()().items()}
        return same_numbers(net, x.to(dtype), y, lambda: fixed)

    return variants, check


def draws_inside(method: str) -> bool:
    """Whether the ``bench_methods`` variant ``method`` samples its architecture in each step (it has ``sample``)."""
    return hasattr(METHODS.get(VARIANTS[method][0]), "sample")


def _step(model: nn.Module, x, y, weights: Callable[[], dict], off: tuple[str, ...]) -> torch.Tensor:
    """One forward + backward without the shortcuts ``off``; ``weights()`` inside it, as a method's step; synced
    (CUDA queues its kernels)."""
    model.zero_grad(set_to_none=True)
    with shortcuts_off(model, off):
        loss = F.cross_entropy(model(x, weights()), y)
        loss.backward()
    sync(x.device)
    return loss.detach()


def same_numbers(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, weights: Callable[[], dict], bound: float = 1e-9
) -> float:
    """The largest difference between the gradients of ``all`` and ``none``, relative to each gradient's scale;
    raises above ``bound``. Run in float64 (``shortcut_variants``'s check): in float32 the network's own rounding
    already moves its worst-conditioned gradients by a few percent (BN backward), with or without the shortcuts.
    BN uses batch statistics in both (training mode), so the order of the two calls does not matter. With sampled
    weights the ops not drawn have no gradient in either; a parameter with a gradient in only one is a difference."""
    loss_all = _step(model, x, y, weights, ())
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    loss_none = _step(model, x, y, weights, SHORTCUTS)
    pairs = list(zip(grads, (p.grad for p in model.parameters()), strict=True))
    if any((a is None) != (b is None) for a, b in pairs):
        raise RuntimeError("the shortcuts change which parameters get a gradient")
    worst = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)) for a, b in pairs if a is not None)
    if worst > bound or not torch.allclose(loss_all, loss_none, rtol=bound):
        raise RuntimeError(f"the shortcuts change the numbers: loss {loss_all} vs {loss_none}, gradient {worst:.2e}")
    return worst


def depthwise_kernels(
    batch: int, channels: int, layers: int, rounds: int, device: str | torch.device = "cpu"
) -> list[dict]:
    """Each distinct depthwise convolution of the supernet alone (channels-last): at stride 1 the input gradient
    by oneDNN's backward-data kernel (``aten``) and by the forward kernel on the flipped weights (``ours``); in
    reduction cells, the strided dilated ones' forward + backward as ``nn.Conv2d`` and as ``DepthwiseConv2d``."""
    shapes, rows = [], []
    c, size = channels, 32
    for i in range(layers):  # DARTS: cells layers // 3 and 2 * layers // 3 reduce (double C, halve the side)
        if i in (layers // 3, 2 * layers // 3):
            c = 2 * c  # a reduction cell's edges from its inputs: its own C at the input's side, stride 2
            shapes += [(c, size, k, 2, 2) for k in (3, 5)]
            size = size // 2
        shapes += [(c, size, k, d, 1) for k, d in ((3, 1), (5, 1), (3, 2), (5, 2))]
    for c, size, k, d, stride in dict.fromkeys(shapes):
        makes = {"input": _input_gradient_forms, "weight": _weight_gradient_forms} if stride == 1 else {}
        for grad, make in (makes or {"both": _strided_forms}).items():
            forms = make(batch, c, size, k, d, torch.device(device))
            torch.testing.assert_close(forms["ours"](), forms["aten"](), rtol=1e-4, atol=1e-3)
            r = time_interleaved({n: _synced(f, device) for n, f in forms.items()}, rounds, "aten", {})
            shape = (batch, c, size, size)
            rows.append({"shape": shape, "kernel": k, "dilation": d, "stride": stride, "grad": grad, **r["median_s"]})
    return rows


def _synced(run: Callable[[], object], device: str | torch.device) -> Callable[[], None]:
    def timed() -> None:
        run()
        sync(device)

    return timed


def _input_gradient_forms(
    batch: int, c: int, size: int, k: int, d: int, device: torch.device
) -> dict[str, Callable[[], torch.Tensor]]:
    pad = d * (k - 1) // 2  # "same" padding, stride 1: the supernet's depthwise convolutions outside reductions
    grad = torch.randn(batch, c, size, size, device=device).contiguous(memory_format=torch.channels_last)
    x, w = torch.randn_like(grad), torch.randn(c, 1, k, k, device=device)  # (B, C, H, W), (C, 1, k, k)
    mask = (True, False, False)  # the input gradient only
    return {
        "aten": lambda: torch.ops.aten.convolution_backward(
            grad, x, w, None, [1, 1], [pad, pad], [d, d], False, [0, 0], c, mask
        )[0],
        "ours": lambda: F.conv2d(grad, w.flip(-2, -1), None, 1, pad, d, c),
    }


def _weight_gradient_forms(
    batch: int, c: int, size: int, k: int, d: int, device: torch.device
) -> dict[str, Callable[[], torch.Tensor]]:
    """The weight gradient of a stride-1 "same" depthwise convolution: aten's kernel against the pieces its fast
    path takes (``ops._depthwise_weight_grad``)."""
    pad = d * (k - 1) // 2
    grad = torch.randn(batch, c, size, size, device=device).contiguous(memory_format=torch.channels_last)
    x, w = torch.randn_like(grad), torch.randn(c, 1, k, k, device=device)
    return {
        "aten": lambda: ops._aten_weight_grad(grad, x, w, (pad, pad), (d, d)),
        "ours": lambda: ops._depthwise_weight_grad(grad, x, w, (pad, pad), (d, d)),
    }


def _strided_forms(
    batch: int, c: int, size: int, k: int, d: int, device: torch.device
) -> dict[str, Callable[[], tuple]]:
    """Forward + backward of a stride-``d``, dilation-``d`` depthwise convolution: ``(input grad, weight grad)``."""
    ours = ops.DepthwiseConv2d(c, k, d, d * (k - 1) // 2, d).to(device)
    aten = nn.Conv2d(c, c, k, d, d * (k - 1) // 2, dilation=d, groups=c, bias=False).to(device)
    aten.load_state_dict(ours.state_dict())
    x = torch.randn(batch, c, size, size, device=device).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    grad = torch.randn_like(aten(x))

    def form(conv: nn.Module) -> Callable[[], tuple]:
        return lambda: torch.autograd.grad(conv(x), (x, conv.weight), grad)

    return {"aten": form(aten), "ours": form(ours)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--memory-format", default="channels_last", choices=MEMORY_FORMATS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--method", default=BASELINE, choices=list(VARIANTS), help="whose step (bench_methods)")
    parser.add_argument("--samples", type=int, default=8, help="calls per round of a step that samples")
    parser.add_argument("--kernels", action="store_true", help="also the depthwise input-gradient kernels alone")
    parser.add_argument("--out", default=None, help="also write the tables to this text file")
    args = parser.parse_args(argv)
    if args.samples < 1:
        parser.error(f"--samples must be at least 1, got {args.samples}")
    device = torch.device(args.device)
    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    else:
        where = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    sampled = draws_inside(args.method)
    step = f"{args.method} step (its draws inside it, call i of each variant on seed i)" if sampled else "dense step"
    per_round = f", each the mean of {args.samples} calls" if sampled else ""
    lines = [
        f"DARTS-space supernet, {step}, forward + backward, C={args.channels}, {args.layers} cells, 32x32, "
        f"{args.memory_format}, {where}, median of {args.rounds} interleaved rounds{per_round}; ratio = variant / all",
        f"{'batch':>5} " + " ".join(f"{n + ' s':>20} {'ratio':>6}" for n in ("all", *map("no_{}".format, SHORTCUTS))),
    ]
    lines[-1] += f" {'none s':>9} {'ratio':>6}"
    print(*lines, sep="\n")
    for batch in args.batch:
        variants, check = shortcut_variants(args.channels, args.layers, batch, args.memory_format, device, args.method)
        worst = check(torch.float64)
        repeats = dict.fromkeys(variants, args.samples) if sampled else {}
        r = time_interleaved(variants, args.rounds, "all", {}, repeats=repeats)
        cells = [f"{r['median_s'][n]:{20 if n != 'none' else 9}.3f} {r['ratio_to_all'][n]:6.3f}" for n in variants]
        lines.append(f"{batch:5d} " + " ".join(cells) + f"   (float64: gradients agree to {worst:.1e} of their scale)")
        print(lines[-1], flush=True)
        if sampled:  # each variant's calls against the same draws' calls of all
            calls = r["calls_s"]
            intervals = {n: sampling_interval(calls[n], calls["all"], paired=True) for n in variants if n != "all"}
            cells = [
                f"{n} {v['mean_ratio']:.3f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]" for n, v in intervals.items()
            ]
            lines.append(f"{batch:5d} mean over {len(calls['all'])} common draws [95 %]: " + ", ".join(cells))
            print(lines[-1], flush=True)
    if args.kernels:
        batch = args.batch[0]
        lines += [
            f"depthwise convolutions alone, channels-last, {where}, median of {args.rounds} interleaved rounds: "
            "stride 1: the input gradient and the weight gradient; stride 2: forward + backward; ratio = ours / aten",
            f"{'shape':>18} {'k':>2} {'d':>2} {'s':>2} {'gradient':>8} {'aten ms':>9} {'ours ms':>9} {'ratio':>6}",
        ]
        print(*lines[-2:], sep="\n")
        for row in depthwise_kernels(batch, args.channels, args.layers, args.rounds, device):
            shape = "x".join(map(str, row["shape"]))
            lines.append(
                f"{shape:>18} {row['kernel']:2d} {row['dilation']:2d} {row['stride']:2d} {row['grad']:>8} "
                f"{1e3 * row['aten']:9.2f} "
                f"{1e3 * row['ours']:9.2f} {row['ours'] / row['aten']:6.3f}"
            )
            print(lines[-1], flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

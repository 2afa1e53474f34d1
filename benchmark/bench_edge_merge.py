"""Edges that leave one node, merged into grouped convolutions: measured before choosing (issue 21, item 3).

The ``k`` edges that leave the same node apply the same op types to the same input, so the first separable
block of their ``sep_conv_3x3`` ops (ReLU, depthwise 3x3, pointwise 1x1, BatchNorm) can run as one wider
computation with the same parameters and gradients: the ReLU once, the input repeated ``k`` times, one
depthwise convolution of ``k * C`` channels (the edges' kernels stacked), one pointwise convolution of ``k``
groups, one BatchNorm of ``k * C`` channels (each edge's running statistics side by side), and the output
split per edge. This script times, forward + backward, in one process and interleaved:

- ``separate``: the supernet's own path (one ReLU per source, each edge's op module after it, as
  :class:`~egsbench.tasks.spaces.cell.MixedEdge` runs it);
- ``grouped``: the whole block merged as above;
- ``dw_merged``: only the depthwise convolution merged, the pointwise convolutions and BatchNorms per edge.

It first checks that the three give the same outputs and gradients (a merge that changed the numbers would
not be a candidate), then prints the median times and their ratios to ``separate``.

    python -m egsbench.benchmark.bench_edge_merge --rounds 5 --out results/benchmarks/edge-merge-cpu.txt
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch
import torch.nn.functional as F

from ..tasks.spaces.ops import make_op
from .speed import MEMORY_FORMATS, apply_memory_format
from .timing import time_interleaved

__all__ = ["FORMS", "edge_block_forms", "main"]

FORMS = ("separate", "grouped", "dw_merged")


def edge_block_forms(batch: int, channels: int, edges: int, memory_format: str, size: int = 32, seed: int = 0):
    """``(forms, params)``: each form a function that runs the first separable block of ``edges`` sep_conv_3x3
    ops on one input and returns ``(sum of the outputs weighted per edge, the outputs)``; ``params`` the ops'
    parameters and the input (what a backward differentiates)."""
    torch.manual_seed(seed)
    ops = [apply_memory_format(make_op("sep_conv_3x3", channels, 1, affine=False), memory_format) for _ in range(edges)]
    blocks = [op[0] for op in ops]  # DilConv: ReLU, depthwise, pointwise, BatchNorm
    fmt = torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
    x = torch.randn(batch, channels, size, size).contiguous(memory_format=fmt).requires_grad_()
    mix = torch.rand(edges)  # the edges' op weights
    c = channels

    def weighted(outs: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return sum((w * y).sum() for w, y in zip(mix, outs, strict=True)), outs

    def bn(y: torch.Tensor, norms) -> torch.Tensor:
        mean = torch.cat([n.running_mean for n in norms])
        var = torch.cat([n.running_var for n in norms])
        out = F.batch_norm(y, mean, var, training=True, momentum=norms[0].momentum, eps=norms[0].eps)
        for j, n in enumerate(norms):  # the edges' running statistics, updated as their own BatchNorms would
            n.running_mean.copy_(mean[j * c : (j + 1) * c])
            n.running_var.copy_(var[j * c : (j + 1) * c])
        return out

    def separate():
        r = torch.relu(x)
        return weighted([b.after_activation(r) for b in blocks])

    def depthwise_merged() -> torch.Tensor:
        weight = torch.cat([b[1].weight for b in blocks]).contiguous(memory_format=fmt)
        return F.conv2d(torch.relu(x).repeat(1, edges, 1, 1), weight, padding=1, groups=edges * c)

    def grouped():
        pointwise = torch.cat([b[2].weight for b in blocks]).contiguous(memory_format=fmt)
        y = bn(F.conv2d(depthwise_merged(), pointwise, groups=edges), [b[3] for b in blocks])
        return weighted(list(y.split(c, dim=1)))

    def dw_merged():
        ys = depthwise_merged().split(c, dim=1)
        return weighted([b[3](b[2](y)) for b, y in zip(blocks, ys, strict=True)])

    params = [x, *(p for op in blocks for p in op.parameters())]
    return {"separate": separate, "grouped": grouped, "dw_merged": dw_merged}, params


def same_numbers(forms: dict, params: list[torch.Tensor], atol: float = 1e-4) -> dict[str, float]:
    """The largest absolute difference of each form's outputs and gradients from ``separate``'s."""
    results = {}
    for name, form in forms.items():
        total, outs = form()
        grads = torch.autograd.grad(total, params)
        results[name] = (torch.cat([o.flatten() for o in outs]).detach(), [g.detach() for g in grads])
    ref_out, ref_grads = results["separate"]
    diffs = {}
    for name, (out, grads) in results.items():
        diffs[name] = max(
            [(out - ref_out).abs().max().item()]
            + [(g - r).abs().max().item() for g, r in zip(grads, ref_grads, strict=True)]
        )
        if diffs[name] > atol:
            raise AssertionError(f"{name} differs from the separate ops by {diffs[name]:.2e}: not the same block")
    return diffs


def measure(batch: int, channels: int, edges: int, memory_format: str, rounds: int) -> dict:
    forms, params = edge_block_forms(batch, channels, edges, memory_format)
    diffs = same_numbers(forms, params)

    def step(form):
        return lambda: form()[0].backward()

    config = {"batch": batch, "channels": channels, "edges": edges, "memory_format": memory_format}
    result = time_interleaved({n: step(f) for n, f in forms.items()}, rounds, "separate", config)
    return result | {"max_abs_diff": diffs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--edges", type=int, nargs="+", default=[2, 4], help="edges leaving the node (DARTS: 1-4)")
    parser.add_argument("--formats", nargs="+", default=["channels_last"], choices=MEMORY_FORMATS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=None, help="also write the table to this text file")
    args = parser.parse_args(argv)
    lines = [
        f"first separable block of k sep_conv_3x3 edges on one input, forward + backward, C={args.channels}, 32x32, "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, median of {args.rounds} "
        "interleaved rounds; ratio = form / separate (lower is faster)",
        f"{'batch':>5} {'k':>2} {'layout':>14} " + " ".join(f"{n + ' ms':>13} {'ratio':>6}" for n in FORMS),
    ]
    print(lines[0])
    print(lines[1])
    for fmt in args.formats:
        for batch in args.batch:
            for k in args.edges:
                r = measure(batch, args.channels, k, fmt, args.rounds)
                ratio = r["ratio_to_separate"]
                cells = " ".join(f"{1e3 * r['median_s'][n]:13.2f} {ratio[n]:6.2f}" for n in FORMS)
                lines.append(f"{batch:5d} {k:2d} {fmt:>14} {cells}")
                print(lines[-1], flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Time this project's DARTS-space supernet beside the ``xautodl`` package's (AutoDL-Projects) at one configuration.

Forward + backward of one batch with dense (DARTS) and Gumbel-sampled (GDAS) weights on both supernets and
EGS (M = 1, 7) on ours, interleaved round by round in one process; prints the ratios against their targets
and the differences that remain between the two supernets. Needs the optional ``xautodl`` package::

    pip install --no-deps xautodl        # or: pip install --no-deps 'egs-bench[peer]'
    python -m egsbench.benchmark.bench_peer                          # C=16, 6 cells, batch 32 and 64, 3 rounds

Method and reading: docs/benchmarks.md#bench_peer.
"""

from __future__ import annotations

import argparse
import copy
import functools
import importlib.util
import json
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .bench_methods import fixed_batch, make_method
from .speed import MEMORY_FORMATS, apply_memory_format
from .throughput import counted_flops, hardware_line, matmul_flops_per_s
from .timing import common_draws, sampling_interval, sync, time_interleaved

__all__ = [
    "BASELINE",
    "DIFFERENCES",
    "PAIRED",
    "SAMPLED",
    "TARGETS",
    "force_peer_ops",
    "main",
    "make_variants",
    "peer_available",
    "per_op_ratios",
    "per_op_variants",
    "sampling_interval",
    "time_peer",
]

BASELINE = "ours_darts"
OTHER_LAYOUT = {"channels_last": "ours_darts_nchw", "contiguous": "ours_darts_cl"}  # our dense supernet, other layout
OURS = {"ours_darts": "darts_1st", "ours_gdas": "gdas", "egs_m1": "egs_m1", "egs_m7": "egs_m7"}  # -> bench_methods
STEPS, MULTIPLIER, STEM_MULTIPLIER = 4, 4, 3  # DARTS's cell: 4 intermediate nodes, all concatenated; stem 3C
DIFFERENCES = (
    "xautodl search convs have a bias (bias=not affine); ours are bias-free (DARTS)",
    "xautodl pools have no BN after them; ours add a parameter-free BN (DARTS MixedOp), once per node (shared)",
    "xautodl adds BN+ReLU (lastact) before global pooling; ours do not (DARTS)",
    "xautodl DARTS runs and weights the none op (x*0); ours skip it (7 of 8 ops per edge)",
    "xautodl GDAS syncs with the host once per edge (.item()); ours once per cell type and forward",
    "xautodl keeps alphas in the network; ours take weights from the method (inside the timed step)",
)
# the variants whose step runs another sampled architecture on each call (its cost varies: 0.5-0.8 s per call for
# xautodl's GDAS at batch 32); --samples steps each per round
SAMPLED = ("ours_gdas", "xautodl_gdas", "egs_m1", "egs_m7")
PAIRED = ("ours_gdas", "xautodl_gdas")  # call i of each runs the same draw (timing.common_draws)
# our op names -> xautodl's (its DARTS space: "dua_sepc" two stacked separable blocks, "dil_sepc" one dilated one)
PEER_OP_NAMES = {
    "sep_conv_3x3": "dua_sepc_3x3",
    "sep_conv_5x5": "dua_sepc_5x5",
    "dil_conv_3x3": "dil_sepc_3x3",
    "dil_conv_5x5": "dil_sepc_5x5",
}
# name: (numerator, denominator, target upper bound of the ratio or None); issue 21's targets. "ours_cl" is our
# dense supernet in channels-last, whichever layout --memory-format gives the others.
TARGETS = {
    "ours_darts/xautodl_darts": ("ours_darts", "xautodl_darts", 0.40),  # ours as run by default, xautodl as shipped
    "ours_gdas/xautodl_gdas": ("ours_gdas", "xautodl_gdas", 0.40),
    "ours_cl/xautodl_darts_cl": ("ours_cl", "xautodl_darts_cl", 0.85),  # the same layout, neither compiled
    "egs_m1/ours_darts": ("egs_m1", "ours_darts", 0.15),
    "egs_m7/ours_darts": ("egs_m7", "ours_darts", None),  # compared with the active-op fraction instead
}


def peer_available() -> bool:
    """Whether the optional ``xautodl`` package is importable (``pip install --no-deps xautodl``)."""
    return importlib.util.find_spec("xautodl") is not None


def _xautodl_nets(channels: int, layers: int) -> dict[str, nn.Module]:
    if not peer_available():
        raise ModuleNotFoundError("bench_peer needs the optional xautodl package: pip install --no-deps xautodl")
    if layers % 3 or layers < 3:
        raise ValueError(f"xautodl stacks 3N cells (N normal, reduce, N-1 normal, reduce, N-1 normal); got {layers}")
    from xautodl.models.cell_operations import SearchSpaceNames
    from xautodl.models.cell_searchs import NASNetworkDARTS, NASNetworkGDAS

    # affine=False: search-time BN, as xautodl's search scripts build it (and as ours)
    kwargs = dict(
        C=channels,
        N=layers // 3,
        steps=STEPS,
        multiplier=MULTIPLIER,
        stem_multiplier=STEM_MULTIPLIER,
        num_classes=10,
        search_space=SearchSpaceNames["darts"],
        affine=False,
        track_running_stats=True,
    )
    return {"xautodl_darts": NASNetworkDARTS(**kwargs), "xautodl_gdas": NASNetworkGDAS(**kwargs)}


class _ActiveFraction:
    """Mean fraction of the non-``none`` ops that the sampled weights switch on, over every cell and call.

    ``value`` counts ops (the issue's active-op fraction); ``macs`` weights each op by its multiply-accumulates
    (a sampled pool or skip costs far less than a sampled convolution).
    """

    def __init__(self, model: nn.Module, none_index: int):
        self.none_index = none_index
        self.cells = {"normal": 0, "reduce": 0}
        for cell in model.cells:
            self.cells["reduce" if cell.reduction else "normal"] += 1
        self.op_macs = {t: c.float() for t, c in model.op_costs("macs").items()}  # (E, K), summed over cells of t
        self.active = self.total = 0
        self.active_macs = self.total_macs = 0.0

    def __call__(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for t, w in weights.items():
            on = (w.detach() != 0).cpu()  # (E, K)
            on[:, self.none_index] = False
            self.active += int(on.sum()) * self.cells[t]
            self.total += (w.shape[0] * (w.shape[1] - 1)) * self.cells[t]
            self.active_macs += float(self.op_macs[t][on].sum())
            self.total_macs += float(self.op_macs[t].sum())  # the none column costs 0
        return weights

    @property
    def value(self) -> float:
        return self.active / max(self.total, 1)

    @property
    def macs(self) -> float:
        return self.active_macs / max(self.total_macs, 1.0)


def force_peer_ops(peer: nn.Module, columns: dict[str, torch.Tensor]) -> None:
    """Set xautodl ``NASNetworkGDAS``'s alphas so that its Gumbel argmax picks ``columns[t][e]`` (a column of its
    op list) on edge ``e`` of cell type ``t``: log-softmax 0 against -2000, which no Gumbel draw (tau 10)
    overturns. Its forward then runs as shipped, on those ops."""
    with torch.no_grad():
        for t, alpha in (("normal", peer.arch_normal_parameters), ("reduce", peer.arch_reduce_parameters)):
            alpha.fill_(-1000.0).scatter_(1, columns[t].view(-1, 1).to(alpha.device), 1000.0)


def peer_columns(ops: tuple[str, ...]) -> torch.Tensor:
    """For each of our op indices, the column of that op in xautodl's DARTS op list."""
    from xautodl.models.cell_operations import SearchSpaceNames

    theirs = list(SearchSpaceNames["darts"])
    return torch.tensor([theirs.index(PEER_OP_NAMES.get(op, op)) for op in ops])


# Gradients are dropped as an optimiser's zero_grad drops them, from a list made once: nn.Module.zero_grad walks
# every module (about 4 ms on either supernet's 3,600-4,100 modules), which is no part of a step.
def _our_step(model: nn.Module, weights: Callable[[], dict], batch, device) -> Callable[[], None]:
    """One forward + backward of our supernet on ``batch`` with ``weights()`` (drawn inside the step)."""
    params, (x, y) = list(model.parameters()), batch

    def run() -> None:
        _drop_grads(params)
        F.cross_entropy(model(x, weights()), y).backward()
        sync(device)

    return run


def _peer_step(net: nn.Module, batch, device, before: Callable[[], None] | None = None) -> Callable[[], None]:
    """One forward + backward of an xautodl supernet (its forward returns ``(pooled features, logits)``)."""
    params, (x, y) = list(net.parameters()), batch

    def run() -> None:
        if before is not None:  # a draw set as its alphas (force_peer_ops): 0.15 ms with the draw, timed with it
            before()
        _drop_grads(params)
        F.cross_entropy(net(x)[1], y).backward()
        sync(device)

    return run


def make_variants(
    channels: int, layers: int, batch: int, device: str | torch.device = "cpu", memory_format: str = "channels_last"
) -> tuple[dict[str, Callable[[], None]], dict]:
    """One forward + backward per variant (``BASELINE`` first), and facts about the networks.

    Our supernets use ``memory_format``; ``ours_darts_nchw`` (or ``ours_darts_cl``) is our dense one in the
    other layout and ``xautodl_darts_cl`` xautodl's dense one in channels-last.

    Returns:
        ``(variants, info)``: ``info`` holds each network's parameter count and, under
        ``"egs_m7_active_fraction"``, an object whose ``value`` is the mean fraction of non-``none``
        ops EGS M = 7 ran in the calls made so far.
    """
    device = torch.device(device)
    data = fixed_batch(batch, device)
    ours = {name: make_method(variant, channels, layers, device, memory_format) for name, variant in OURS.items()}
    other = "contiguous" if memory_format == "channels_last" else "channels_last"
    ours_other = make_method(OURS["ours_darts"], channels, layers, device, other)
    egs_m7 = ours["egs_m7"]
    counter = _ActiveFraction(egs_m7.ctx.model, egs_m7.ctx.space.op_index("none"))
    gdas = ours["ours_gdas"]
    to_peer = peer_columns(gdas.ctx.space.ops)  # our op index -> xautodl's column
    peer_draws = common_draws(functools.partial(gdas.sample, detach=True))  # the same draws as ours_gdas's
    weight_fns = {
        "ours_darts": ours["ours_darts"].probabilities,  # softmax(alpha): dense
        "ours_gdas": common_draws(gdas.sample),  # hard straight-through Gumbel, tau = 10
        "egs_m1": ours["egs_m1"].sample,
        "egs_m7": lambda: counter(egs_m7.sample()),
    }
    torch.manual_seed(0)
    peers = {name: net.to(device) for name, net in _xautodl_nets(channels, layers).items()}
    peer_cl = apply_memory_format(copy.deepcopy(peers["xautodl_darts"]), "channels_last")  # same weights, NHWC

    def drawn() -> dict[str, torch.Tensor]:  # call i: ours_gdas's i-th draw's ops as xautodl's columns, per cell type
        return {t: to_peer[w.argmax(-1).cpu()] for t, w in peer_draws().items()}

    variants = {
        "ours_darts": _our_step(ours["ours_darts"].ctx.model, weight_fns["ours_darts"], data, device),
        "xautodl_darts": _peer_step(peers["xautodl_darts"], data, device),
        "ours_gdas": _our_step(ours["ours_gdas"].ctx.model, weight_fns["ours_gdas"], data, device),
        "xautodl_gdas": _peer_step(
            peers["xautodl_gdas"], data, device, lambda: force_peer_ops(peers["xautodl_gdas"], drawn())
        ),
        "egs_m1": _our_step(ours["egs_m1"].ctx.model, weight_fns["egs_m1"], data, device),
        "egs_m7": _our_step(egs_m7.ctx.model, weight_fns["egs_m7"], data, device),
        OTHER_LAYOUT[memory_format]: _our_step(ours_other.ctx.model, ours_other.probabilities, data, device),
        "xautodl_darts_cl": _peer_step(peer_cl, data, device),
    }
    params = {name: _weights(m.ctx.model) for name, m in ours.items()} | {n: _weights(m) for n, m in peers.items()}
    params |= {OTHER_LAYOUT[memory_format]: _weights(ours_other.ctx.model), "xautodl_darts_cl": _weights(peer_cl)}
    return variants, {"parameters": params, "egs_m7_active_fraction": counter, "memory_format": memory_format}


def _drop_grads(params: list[torch.Tensor]) -> None:
    for p in params:
        p.grad = None


def _weights(model: nn.Module) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith("arch_"))


def ratios(
    medians: dict[str, float],
    active_fraction: float,
    mac_fraction: float | None = None,
    samples: dict[str, list[float]] | None = None,
) -> dict[str, dict]:
    """The issue's ratios from median seconds per variant, each with its target and whether it is met.

    EGS M = 7's target is an upper bound: at most 15% above ``active_fraction`` x DARTS's time (faster is fine).
    ``samples`` (variant -> seconds: every call of a sampled variant, the round times of the others) gives each
    ratio with a sampled side its interval (:func:`sampling_interval`).
    """
    out = {}
    alias = {"ours_cl": "ours_darts_cl" if "ours_darts_cl" in medians else "ours_darts"}
    medians = medians | {"ours_cl": medians[alias["ours_cl"]]}
    for key, (num, den, target) in TARGETS.items():
        value = medians[num] / medians[den]
        out[key] = {"ratio": value, "target": target, "met": None if target is None else value <= target}
        if samples and (num in SAMPLED or den in SAMPLED):
            paired = {num, den} == set(PAIRED)
            out[key] |= sampling_interval(samples[alias.get(num, num)], samples[alias.get(den, den)], target, paired)
    expected = active_fraction  # EGS M = 7's time, as a fraction of DARTS's, if time followed the ops run
    value = out["egs_m7/ours_darts"]["ratio"]
    out["egs_m7/ours_darts"] |= {
        "active_fraction": active_fraction,
        "active_mac_fraction": mac_fraction,
        "target": f"<= 1.15 x {expected:.3f}",
        "met": value <= 1.15 * expected,
    }
    return out


def per_op_variants(
    channels: int, layers: int, batch: int, device: str | torch.device = "cpu", memory_format: str = "channels_last"
) -> tuple[dict[str, Callable[[], None]], list[str]]:
    """One GDAS-style step (hard one-hot weights) of each supernet with every edge forced to one op, per op.

    Ours runs the op on all 14 edges of every cell with weight 1 (a leaf that takes its gradient, as a
    straight-through sample does); xautodl's ``NASNetworkGDAS`` runs it because its alphas are set so that the
    Gumbel argmax always picks it. Returns ``({"ours:<op>" | "xautodl:<op>": step}, ops)``: where the sampled
    ratio comes from, op by op (``none`` left out: neither network runs it).
    """
    device = torch.device(device)
    data = fixed_batch(batch, device)
    method = make_method(OURS["ours_gdas"], channels, layers, device, memory_format)
    model, space = method.ctx.model, method.ctx.space
    torch.manual_seed(0)
    peer = _xautodl_nets(channels, layers)["xautodl_gdas"].to(device)
    to_peer = peer_columns(space.ops)
    ops = [op for op in space.ops if op != "none"]
    shape = (space.num_edges, space.num_ops)  # every cell type's weights, (E, K)

    def ours(op: str) -> Callable[[], None]:
        weights = {}
        for t in space.cell_types:
            w = torch.zeros(shape, device=device)
            w[:, space.op_index(op)] = 1.0
            weights[t] = w.requires_grad_()
        return _our_step(model, lambda: weights, data, device)

    def theirs(op: str) -> Callable[[], None]:
        columns = dict.fromkeys(space.cell_types, to_peer[space.op_index(op)].expand(space.num_edges))
        return _peer_step(peer, data, device, lambda: force_peer_ops(peer, columns))

    variants = {}
    for op in ops:
        variants[f"ours:{op}"], variants[f"xautodl:{op}"] = ours(op), theirs(op)
    return variants, ops


def per_op_ratios(medians: dict[str, float], ops: list[str]) -> dict[str, dict]:
    """Ours / xautodl per op from the median seconds of :func:`per_op_variants`' steps."""
    return {
        op: {
            "ours_s": medians[f"ours:{op}"],
            "xautodl_s": medians[f"xautodl:{op}"],
            "ratio": medians[f"ours:{op}"] / medians[f"xautodl:{op}"],
        }
        for op in ops
    }


def time_peer(
    channels: int,
    layers: int,
    batch: int,
    rounds: int,
    device: str | torch.device = "cpu",
    memory_format: str = "channels_last",
    samples: int = 1,
    per_op: bool = False,
) -> dict:
    """Median seconds per forward + backward of every variant, interleaved, with the issue's ratios; each round
    times ``samples`` steps of a sampled variant (:data:`SAMPLED`, new samples each) and takes their mean.
    ``per_op``: then, interleaved among themselves, :func:`per_op_variants`' steps (under ``"per_op"``)."""
    variants, info = make_variants(channels, layers, batch, device, memory_format)
    result = time_interleaved(
        variants,
        rounds,
        BASELINE,
        {"channels": channels, "layers": layers, "batch": batch, "device": str(device), "memory_format": memory_format},
        repeats=dict.fromkeys(SAMPLED, samples),
    )
    fraction = info["egs_m7_active_fraction"]
    result |= {
        "ratios": ratios(
            result["median_s"], fraction.value, fraction.macs, result["times_s"] | result.get("calls_s", {})
        ),
        "parameters": info["parameters"],
        "hardware": hardware(BASELINE, variants[BASELINE], result["median_s"][BASELINE], device),
    }
    if per_op:
        forced, ops = per_op_variants(channels, layers, batch, device, memory_format)
        result["per_op"] = per_op_ratios(time_interleaved(forced, rounds, f"ours:{ops[0]}", {})["median_s"], ops)
    return result


def hardware(name: str, step: Callable[[], None], seconds: float, device: str | torch.device) -> dict:
    """The step's counted FLOPs and FLOP/s beside the device's measured ``torch.matmul`` throughput."""
    flops, peak = counted_flops(step), matmul_flops_per_s(device=device)
    return {
        "variant": name,
        "flops": flops,
        "flops_per_s": flops / seconds,
        "matmul_flops_per_s": peak,
        "line": hardware_line(name, flops, seconds, peak),
    }


def print_peer(result: dict) -> None:
    cfg = result["config"]
    print(
        f"ours vs xautodl, forward + backward, C={cfg['channels']}, {cfg['layers']} cells, batch {cfg['batch']}, "
        f"{cfg['device']}, ours {cfg['memory_format']}, {cfg['rounds']} interleaved rounds, "
        f"{cfg['threads']} threads, sampled variants the mean of {max(cfg.get('repeats', {}).values(), default=1)} "
        "steps per round"
    )
    for name, median in result["median_s"].items():
        print(f"  {name:14s} median {median:8.3f} s   params {result['parameters'][name]:>9,d}")
    for key, r in result["ratios"].items():
        target = r["target"] if isinstance(r["target"], str) else f"<= {r['target']}"
        extra = (
            f"   (active ops {r['active_fraction']:.3f}, MACs {r['active_mac_fraction']:.3f})"
            if "active_fraction" in r
            else ""
        )
        if "ci95" in r:
            lo, hi = r["ci95"]
            calls = f"{r['calls'][0]} / {r['calls'][1]} calls" + (", common draws" if r["paired"] else "")
            extra += f"   (mean over calls {r['mean_ratio']:.3f}, 95 % {lo:.3f}-{hi:.3f}, {calls}"
            extra += f"; interval {r['verdict']} the target)" if "verdict" in r else ")"
        print(f"  {key:26s} {r['ratio']:6.3f}   target {target:22s} {'met' if r['met'] else 'MISSED'}{extra}")
    print(f"  {result['hardware']['line']}")
    if "per_op" in result:
        print("  every edge one op (GDAS-style hard weights), forward + backward, median s: ours / xautodl")
        for op, r in result["per_op"].items():
            print(f"    {op:14s} {r['ours_s']:7.3f} / {r['xautodl_s']:7.3f}   {r['ratio']:.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--layers", type=int, default=6, help="cells; a multiple of 3 (xautodl N = layers / 3)")
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--samples", type=int, default=16, help="steps per round of each sampled variant (GDAS, EGS), their mean"
    )
    parser.add_argument(
        "--per-op",
        action="store_true",
        help="also time steps with every edge forced to one op, op by op, on both GDAS supernets",
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--memory-format",
        default="channels_last",
        choices=MEMORY_FORMATS,
        help="our supernets' layout (the config key memory_format)",
    )
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.samples < 1:
        parser.error(f"--samples must be at least 1, got {args.samples}")
    if not peer_available():
        parser.error("the optional xautodl package is not installed: pip install --no-deps xautodl")
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    for batch in args.batch:
        results.append(
            time_peer(
                args.channels,
                args.layers,
                batch,
                args.rounds,
                args.device,
                args.memory_format,
                args.samples,
                args.per_op,
            )
        )
        print_peer(results[-1])
    print("differences between the two supernets:\n" + "\n".join(f"  - {d}" for d in DIFFERENCES))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "differences": list(DIFFERENCES)}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

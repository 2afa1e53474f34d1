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
import importlib.util
import json
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .bench_methods import make_method
from .speed import MEMORY_FORMATS, apply_memory_format
from .throughput import counted_flops, hardware_line, matmul_flops_per_s
from .timing import sync, time_interleaved

__all__ = ["BASELINE", "DIFFERENCES", "SAMPLED", "TARGETS", "main", "make_variants", "peer_available", "time_peer"]

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
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, generator=g).to(device)  # (B, 3, 32, 32)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)  # (B,)
    ours = {name: make_method(variant, channels, layers, device, memory_format) for name, variant in OURS.items()}
    other = "contiguous" if memory_format == "channels_last" else "channels_last"
    ours_other = make_method(OURS["ours_darts"], channels, layers, device, other)
    egs_m7 = ours["egs_m7"]
    counter = _ActiveFraction(egs_m7.ctx.model, egs_m7.ctx.space.op_index("none"))
    weight_fns = {
        "ours_darts": ours["ours_darts"].probabilities,  # softmax(alpha): dense
        "ours_gdas": ours["ours_gdas"].sample,  # hard straight-through Gumbel, tau = 10
        "egs_m1": ours["egs_m1"].sample,
        "egs_m7": lambda: counter(egs_m7.sample()),
    }
    torch.manual_seed(0)
    peers = {name: net.to(device) for name, net in _xautodl_nets(channels, layers).items()}
    peer_cl = apply_memory_format(copy.deepcopy(peers["xautodl_darts"]), "channels_last")  # same weights, NHWC

    # Gradients are dropped as an optimiser's zero_grad drops them, from a list made once: nn.Module.zero_grad
    # walks every module (about 4 ms on either supernet's 3,600-4,100 modules), which is no part of a step.
    def our_step(model: nn.Module, weights: Callable[[], dict]) -> Callable[[], None]:
        params = list(model.parameters())

        def run() -> None:
            _drop_grads(params)
            F.cross_entropy(model(x, weights()), y).backward()
            sync(device)

        return run

    def peer_step(net: nn.Module) -> Callable[[], None]:
        params = list(net.parameters())

        def run() -> None:
            _drop_grads(params)
            F.cross_entropy(net(x)[1], y).backward()  # forward returns (pooled features, logits)
            sync(device)

        return run

    variants = {
        "ours_darts": our_step(ours["ours_darts"].ctx.model, weight_fns["ours_darts"]),
        "xautodl_darts": peer_step(peers["xautodl_darts"]),
        "ours_gdas": our_step(ours["ours_gdas"].ctx.model, weight_fns["ours_gdas"]),
        "xautodl_gdas": peer_step(peers["xautodl_gdas"]),
        "egs_m1": our_step(ours["egs_m1"].ctx.model, weight_fns["egs_m1"]),
        "egs_m7": our_step(egs_m7.ctx.model, weight_fns["egs_m7"]),
        OTHER_LAYOUT[memory_format]: our_step(ours_other.ctx.model, ours_other.probabilities),
        "xautodl_darts_cl": peer_step(peer_cl),
    }
    params = {name: _weights(m.ctx.model) for name, m in ours.items()} | {n: _weights(m) for n, m in peers.items()}
    params |= {OTHER_LAYOUT[memory_format]: _weights(ours_other.ctx.model), "xautodl_darts_cl": _weights(peer_cl)}
    return variants, {"parameters": params, "egs_m7_active_fraction": counter, "memory_format": memory_format}


def _drop_grads(params: list[torch.Tensor]) -> None:
    for p in params:
        p.grad = None


def _weights(model: nn.Module) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith("arch_"))


def ratios(medians: dict[str, float], active_fraction: float, mac_fraction: float | None = None) -> dict[str, dict]:
    """The issue's ratios from median seconds per variant, each with its target and whether it is met.

    EGS M = 7's target is an upper bound: at most 15% above ``active_fraction`` x DARTS's time (faster is fine).
    """
    out = {}
    medians = medians | {"ours_cl": medians.get("ours_darts_cl", medians["ours_darts"])}
    for key, (num, den, target) in TARGETS.items():
        value = medians[num] / medians[den]
        out[key] = {"ratio": value, "target": target, "met": None if target is None else value <= target}
    expected = active_fraction  # EGS M = 7's time, as a fraction of DARTS's, if time followed the ops run
    value = out["egs_m7/ours_darts"]["ratio"]
    out["egs_m7/ours_darts"] |= {
        "active_fraction": active_fraction,
        "active_mac_fraction": mac_fraction,
        "target": f"<= 1.15 x {expected:.3f}",
        "met": value <= 1.15 * expected,
    }
    return out


def time_peer(
    channels: int,
    layers: int,
    batch: int,
    rounds: int,
    device: str | torch.device = "cpu",
    memory_format: str = "channels_last",
    samples: int = 1,
) -> dict:
    """Median seconds per forward + backward of every variant, interleaved, with the issue's ratios; each round
    times ``samples`` steps of a sampled variant (:data:`SAMPLED`, new samples each) and takes their mean."""
    variants, info = make_variants(channels, layers, batch, device, memory_format)
    result = time_interleaved(
        variants,
        rounds,
        BASELINE,
        {"channels": channels, "layers": layers, "batch": batch, "device": str(device), "memory_format": memory_format},
        repeats=dict.fromkeys(SAMPLED, samples),
    )
    fraction = info["egs_m7_active_fraction"]
    return result | {
        "ratios": ratios(result["median_s"], fraction.value, fraction.macs),
        "parameters": info["parameters"],
        "hardware": hardware(BASELINE, variants[BASELINE], result["median_s"][BASELINE], device),
    }


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
        print(f"  {key:26s} {r['ratio']:6.3f}   target {target:22s} {'met' if r['met'] else 'MISSED'}{extra}")
    print(f"  {result['hardware']['line']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--layers", type=int, default=6, help="cells; a multiple of 3 (xautodl N = layers / 3)")
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--samples", type=int, default=4, help="steps per round of each sampled variant (GDAS, EGS), their mean"
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
            time_peer(args.channels, args.layers, batch, args.rounds, args.device, args.memory_format, args.samples)
        )
        print_peer(results[-1])
    print("differences between the two supernets:\n" + "\n".join(f"  - {d}" for d in DIFFERENCES))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "differences": list(DIFFERENCES)}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""One-command device check: time search and final-training steps at the paper preset and extrapolate the full runs.

Times search steps of EGS (M = 7) and DARTS (first order) and final-training steps of DARTS_V2 on random
on-device data, then extrapolates the ``paper/egs-cifar10`` runs against the targets on one H100: search
<= 1 h, final training <= 8 h::

    python -m egsbench.benchmark.gpu_check                              # on the GPU: over 5 minutes on an H200
    python -m egsbench.benchmark.gpu_check --steps 2 --small --device cpu   # smoke test: tiny sizes, seconds

Method and reading: docs/benchmarks.md#gpu_check.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time

import torch
import torch.nn.functional as F

from .api import resolve_config
from .bench_methods import make_step
from .launch import autocast
from .speed import MEMORY_FORMATS, apply_memory_format, compile_network
from .timing import sync

__all__ = ["EVAL_MODES", "SEARCH_METHODS", "TARGET_HOURS", "main", "paper_preset", "time_eval", "time_search"]

CIFAR_TRAIN = 50_000
SEARCH_TRAIN = CIFAR_TRAIN // 2  # search-train half; the other half is search-val
SEARCH_METHODS = ("egs_m7", "darts_1st")  # bench_methods.VARIANTS
EVAL_MODES = ("fp32", "bf16", "fp32-cl", "bf16-cl")
TARGET_HOURS = {"search": 1.0, "eval": 8.0}  # one H100, issue 13
SMALL = {"search": {"channels": 2, "layers": 3, "batch": 4}, "eval": {"channels": 4, "layers": 3, "batch": 4}}


def paper_preset() -> dict[str, dict[str, int]]:
    """Sizes and epochs of the paper preset's search and evaluation (``paper/egs-cifar10``)."""
    cfg = resolve_config("paper/egs-cifar10")
    s, e = cfg.search, cfg.evaluate
    return {
        "search": {"channels": s.channels, "layers": s.layers, "batch": s.batch_size, "epochs": s.epochs},
        "eval": {
            "channels": e.channels,
            "layers": e.layers,
            "batch": e.batch_size,
            "epochs": e.epochs,
            "drop_path": e.drop_path,
            "auxiliary_weight": e.auxiliary_weight,
            "lr": e.lr,
            "momentum": e.momentum,
            "weight_decay": e.weight_decay,
            "grad_clip": e.grad_clip,
        },
    }


def _timed(run, steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per call of ``run`` over ``steps`` calls after ``warmup`` untimed ones (cuDNN autotuning, compile)."""
    for _ in range(warmup):
        run()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        run()
    sync(device)
    return (time.perf_counter() - start) / steps


def time_search(
    name: str,
    sizes: dict,
    steps: int,
    warmup: int,
    device: torch.device,
    bf16: bool = False,
    memory_format: str = "contiguous",
) -> float:
    """Seconds per ``method.step`` of the ``bench_methods`` variant ``name`` (each step syncs on its loss)."""
    step = make_step(name, sizes["channels"], sizes["layers"], sizes["batch"], device, memory_format)

    def run() -> None:
        with autocast("bf16" if bf16 else "no", device):
            step()

    return _timed(run, steps, warmup, device)


def time_eval(mode: str, sizes: dict, steps: int, warmup: int, device: torch.device, compile: bool = False) -> float:
    """Seconds per final-training step of DARTS_V2 (forward, auxiliary loss, backward, clip, SGD) in ``mode``."""
    from ..tasks.spaces import NetworkCIFAR
    from ..tasks.spaces.genotypes import GENOTYPES

    if mode not in EVAL_MODES:
        raise ValueError(f"unknown eval mode {mode!r}; valid modes: {', '.join(EVAL_MODES)}")
    bf16, layout = mode.startswith("bf16"), "channels_last" if mode.endswith("-cl") else "contiguous"
    torch.manual_seed(0)
    net = NetworkCIFAR(GENOTYPES.get("darts_v2"), sizes["channels"], 10, sizes["layers"], auxiliary=True)
    net = apply_memory_format(net.to(device), layout).train()  # as the runner does for memory_format
    if compile:
        compile_network(net)  # as the runner does for compile: true (tensor drop-path probability)
    drop_path = sizes.get("drop_path", 0.2)
    opt = torch.optim.SGD(
        net.parameters(),
        lr=sizes.get("lr", 0.025),
        momentum=sizes.get("momentum", 0.9),
        weight_decay=sizes.get("weight_decay", 3e-4),
    )
    calls = itertools.count()
    x = torch.randn(sizes["batch"], 3, 32, 32, device=device)  # (B, 3, 32, 32); the network lays it out
    y = torch.randint(0, 10, (sizes["batch"],), device=device)  # (B,)
    aux_weight, clip = sizes.get("auxiliary_weight", 0.4), sizes.get("grad_clip", 5.0)

    def run() -> None:
        # the probability changes every call, as the epoch ramp does: a compiled network must not recompile
        net.drop_path_prob = drop_path * (next(calls) % 10) / 10
        opt.zero_grad(set_to_none=True)
        with autocast("bf16" if bf16 else "no", device):
            logits, aux = net(x)
            loss = F.cross_entropy(logits, y) + aux_weight * F.cross_entropy(aux, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        opt.step()

    return _timed(run, steps, warmup, device)


def _line(label: str, seconds: float, batch: int, total_steps: int, target: float | None) -> dict:
    hours = seconds * total_steps / 3600
    entry = {
        "step_s": seconds,
        "steps_per_s": 1 / seconds,
        "images_per_s": batch / seconds,
        "total_steps": total_steps,
        "hours": hours,
        "target_hours": target,
        "met": None if target is None else hours <= target,
    }
    verdict = "" if target is None else f"target <= {target:g} h: {'met' if entry['met'] else 'MISSED'}"
    print(
        f"  {label:18s} {seconds * 1e3:9.1f} ms/step {batch / seconds:9.0f} img/s   "
        f"full run {total_steps:,d} steps = {hours:8.2f} h   {verdict}",
        flush=True,
    )
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="timed steps per item")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default min(10, steps))")
    parser.add_argument("--small", action="store_true", help="tiny networks (a CPU smoke test); not comparable")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--eval-modes",
        nargs="+",
        choices=EVAL_MODES,
        default=None,
        help="default: fp32 and bf16-cl on CUDA, fp32 elsewhere",
    )
    parser.add_argument("--bf16-search", action="store_true", help="bf16 autocast in the search steps too")
    parser.add_argument(
        "--search-memory-formats",
        nargs="+",
        choices=MEMORY_FORMATS,
        default=list(MEMORY_FORMATS),
        help="layouts of the search supernets to time",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the final network (compile untimed)")
    parser.add_argument("--no-cudnn-benchmark", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", default="gpu_check.json", help="where to write the results")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    warmup = min(10, args.steps) if args.warmup is None else args.warmup
    modes = args.eval_modes or (["fp32", "bf16-cl"] if device.type == "cuda" else ["fp32"])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark
    preset = paper_preset()
    sizes = {k: preset[k] | SMALL[k] for k in preset} if args.small else preset
    search_steps = preset["search"]["epochs"] * math.ceil(SEARCH_TRAIN / preset["search"]["batch"])
    eval_steps = preset["eval"]["epochs"] * math.ceil(CIFAR_TRAIN / preset["eval"]["batch"])
    targets = (lambda k: None) if args.small else TARGET_HOURS.get
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"gpu_check on {name}, torch {torch.__version__}, {args.steps} timed steps after {warmup} warm-up"
        + ("; SMALL sizes: the extrapolations are not comparable to the targets" if args.small else "")
    )
    result = {
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "small": args.small,
        "steps": args.steps,
        "warmup": warmup,
        "sizes": sizes,
        "settings": {
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "bf16_search": args.bf16_search,
            "compile": args.compile,
            "threads": torch.get_num_threads(),
        },
        "search": {},
        "eval": {},
    }
    s = sizes["search"]
    print(
        f"search, C={s['channels']}, {s['layers']} cells, batch {s['batch']} ({'bf16' if args.bf16_search else 'fp32'})"
    )
    for layout in args.search_memory_formats:
        for method in SEARCH_METHODS:
            seconds = time_search(method, s, args.steps, warmup, device, args.bf16_search, layout)
            target = targets("search") if method == "egs_m7" else None  # the target is EGS's; DARTS the reference
            label = method if layout == "contiguous" else f"{method}-cl"
            result["search"][label] = _line(label, seconds, s["batch"], search_steps, target)
    e = sizes["eval"]
    print(f"final training of DARTS_V2, C={e['channels']}, {e['layers']} cells, batch {e['batch']}")
    for mode in modes:
        seconds = time_eval(mode, e, args.steps, warmup, device, args.compile)
        result["eval"][mode] = _line(mode, seconds, e["batch"], eval_steps, targets("eval"))
    if device.type == "cuda":
        result["max_memory_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

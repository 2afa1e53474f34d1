"""search -> derive -> evaluate, on HuggingFace accelerate.

One loop shape throughout (accelerate's ``complete_nlp_example``): ``Accelerator``,
``set_seed`` then build, ``prepare``, ``accelerator.backward``. The same code runs on a
laptop CPU and under ``accelerate launch`` on several GPUs. The architecture search runs in
fp32 (finite-difference hypergradients and Gumbel codes do not survive reduced precision).
"""

from __future__ import annotations

import dataclasses
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from methods import METHODS, SearchContext
from methods.base import cosine_lr, set_lr
from tasks import TASKS
from tasks.spaces import SPACES, EdgeWeights, Genotype, UserError, count_macs, count_parameters

from .config import ExperimentConfig
from .plots import plot_cell
from .records import SCHEMA_VERSION, atomic_write_text, manifest, write_csv, write_json, write_record

__all__ = ["RunResult", "run_experiment"]


@dataclass
class RunResult:
    record: dict
    out_dir: Path
    genotype: Genotype
    search_curves: list[dict] = field(default_factory=list)
    eval_curves: list[dict] = field(default_factory=list)


def _cycle(loader) -> Iterator[Any]:
    while True:  # a fresh pass (and shuffle) each time the loader is exhausted
        yield from loader


def _device_name(accelerator: Accelerator) -> str:
    device = accelerator.device
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} x{accelerator.num_processes}"
    return f"{device.type} ({torch.get_num_threads()} threads) x{accelerator.num_processes}"


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


@torch.no_grad()
def evaluate_split(task, model, loader, accelerator, weights: EdgeWeights | None = None, max_batches=None) -> dict:
    """Task metrics of ``model`` on ``loader`` (a supernet when ``weights`` is given), summed over processes."""
    was_training = model.training
    model.eval()
    total = None
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        sums = task.eval_sums(model, batch, weights)
        total = sums if total is None else total + sums
    model.train(was_training)
    return task.summarize(accelerator.reduce(total, reduction="sum").cpu())


def _steps(loader, cap: int | None) -> int:
    return len(loader) if cap is None else min(len(loader), cap)


def _sgd(net, recipe) -> torch.optim.SGD:
    return torch.optim.SGD(net.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)


def train_epoch(task, net, optimizer, loader, recipe, epoch: int, accelerator: Accelerator, bar=None) -> dict:
    """One epoch of the task's final-training recipe (cosine lr, per-epoch state, clipping); returns its curve row."""
    steps = _steps(loader, recipe.max_steps_per_epoch)
    set_lr(optimizer, cosine_lr(epoch, recipe.epochs, recipe.lr, recipe.lr_min))
    task.start_epoch(net, epoch, recipe)
    net.train()
    loss_sum, metric_sums = 0.0, {}
    for i, batch in enumerate(loader):
        if i >= steps:
            break
        out = task.train_loss(net, batch, recipe)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(out.loss)
        accelerator.clip_grad_norm_(net.parameters(), recipe.grad_clip)
        optimizer.step()
        loss_sum += out.loss.item()
        for k, v in out.metrics.items():
            metric_sums[k] = metric_sums.get(k, 0.0) + v
        if bar is not None:
            bar.update()
            bar.set_postfix(loss=f"{out.loss.item():.3f}")
    row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "train_loss": loss_sum / steps}
    return row | {f"train_{k}": v / steps for k, v in metric_sums.items()}


def candidate_recipe(recipe, method_config):
    """``recipe`` with the method config's non-None ``candidate_<key>`` values (e.g. ``candidate_epochs``)."""
    keys = [f.name for f in dataclasses.fields(recipe)]
    overrides = {k: getattr(method_config, f"candidate_{k}", None) for k in keys}
    return dataclasses.replace(recipe, **{k: v for k, v in overrides.items() if v is not None})


def search(cfg: ExperimentConfig, task, accelerator: Accelerator, progress: bool) -> dict:
    """Run the architecture search and derivation; returns the genotype and the search's costs and curves."""
    space = SPACES.get(cfg.space)
    set_seed(cfg.seed)
    supernet = task.build_supernet(space, cfg.search.channels, cfg.search.layers)
    method = METHODS.get(cfg.method_name)(cfg.method)
    bs = cfg.search.batch_size
    train_loader = task.loader("search-train", bs, torch.Generator().manual_seed(cfg.seed))
    val_loader = task.loader("search-val", bs, torch.Generator().manual_seed(cfg.seed + 1))
    model, train_loader, val_loader = accelerator.prepare(supernet, train_loader, val_loader)
    steps = _steps(train_loader, cfg.search.max_steps_per_epoch)

    def train_candidate(genotype: Genotype) -> float:
        # Brief training of a final network on search-train, scored on search-val (DARTS's selection protocol).
        recipe = candidate_recipe(cfg.evaluate, cfg.method)
        set_seed(cfg.seed)  # every candidate starts from the same seed, whatever the order
        net = task.build_network(genotype, recipe)
        optimizer = _sgd(net, recipe)
        gen = torch.Generator().manual_seed(cfg.seed + 2)
        loader = task.loader("search-train", recipe.batch_size, gen, recipe=recipe)
        net, optimizer, loader = accelerator.prepare(net, optimizer, loader)
        with torch.enable_grad():  # a method may call this from inside its own no_grad derivation
            for epoch in range(recipe.epochs):
                train_epoch(task, net, optimizer, loader, recipe, epoch, accelerator)
        return evaluate_split(task, net, val_loader, accelerator)[task.score_key]

    ctx = SearchContext(
        model=model,
        space=space,
        loss=task.search_loss,
        config=cfg.search,
        steps_per_epoch=steps,
        seed=cfg.seed,
        op_costs=getattr(supernet, "op_costs", None),
        backward=accelerator.backward,
        device=accelerator.device,
        train_candidate=train_candidate,
    )
    method.setup(ctx)
    # Methods without supernet training (the DARTS random baseline) go straight to derivation.
    epochs = cfg.search.epochs if getattr(method, "trains_supernet", True) else 0
    val_iter = _cycle(val_loader)
    curves, probs_history = [], []
    start = time.perf_counter()
    bar = tqdm(total=epochs * steps, desc=f"search {cfg.method_name}", disable=not progress, leave=False)
    for epoch in range(epochs):
        method.start_epoch(epoch)
        model.train()
        totals: dict[str, float] = {}
        for i, batch in enumerate(train_loader):
            if i >= steps:
                break
            stats = method.step(batch, next(val_iter))
            for key, value in {"loss": stats.loss, **stats.metrics, **stats.extras}.items():
                totals[key] = totals.get(key, 0.0) + value
            bar.update()
            bar.set_postfix(loss=f"{stats.loss:.3f}", **{k: f"{v:.3g}" for k, v in stats.extras.items()})
        curves.append({"epoch": epoch, **{k: v / steps for k, v in totals.items()},
                       "seconds": time.perf_counter() - start})  # fmt: skip
        probs_history.append({t: p.detach().cpu().tolist() for t, p in method.probabilities().items()})
    bar.close()
    search_seconds = time.perf_counter() - start

    def score(weights: EdgeWeights, batches: int | None = cfg.search.score_batches) -> float:
        return evaluate_split(task, model, val_loader, accelerator, weights, batches)[task.score_key]

    start = time.perf_counter()
    genotype = method.derive(score)
    space.validate(genotype)
    derive_seconds = time.perf_counter() - start
    total_steps = epochs * steps
    return {
        "genotype": genotype,
        "curves": curves,
        "probabilities": probs_history,
        "cost": {
            "wall_time_s": search_seconds,
            "derive_wall_time_s": derive_seconds,
            "steps": total_steps,
            "steps_per_s": total_steps / search_seconds if search_seconds > 0 else None,
            "device_hours": search_seconds * accelerator.num_processes / 3600,
            "peak_memory_mb": _peak_memory_mb(accelerator.device),
        },
        "derive_score": getattr(method, "derive_score", None),
    }


def evaluate(cfg: ExperimentConfig, task, genotype: Genotype, accelerator: Accelerator, progress: bool) -> dict:
    """Train the derived network from scratch with the task's recipe; test on the official test split."""
    ev = cfg.evaluate
    set_seed(cfg.seed)
    net = task.build_network(genotype, ev)
    params = count_parameters(net)
    net.eval()
    macs = count_macs(net, task.example_input()).total
    net.train()
    optimizer = _sgd(net, ev)
    train_loader = task.loader("train", ev.batch_size, torch.Generator().manual_seed(cfg.seed + 2), recipe=ev)
    test_loader = task.loader("test", ev.batch_size)
    net, optimizer, train_loader, test_loader = accelerator.prepare(net, optimizer, train_loader, test_loader)
    steps = _steps(train_loader, ev.max_steps_per_epoch)
    curves = []
    test: dict = {}
    start = time.perf_counter()
    bar = tqdm(total=ev.epochs * steps, desc="evaluate", disable=not progress, leave=False)
    for epoch in range(ev.epochs):
        row = train_epoch(task, net, optimizer, train_loader, ev, epoch, accelerator, bar)
        last = epoch == ev.epochs - 1
        if last or (ev.eval_every > 0 and (epoch + 1) % ev.eval_every == 0):
            test = evaluate_split(task, net, test_loader, accelerator)
            row |= {f"test_{k}": v for k, v in test.items() if k != "count"}
        curves.append(row | {"seconds": time.perf_counter() - start})
    bar.close()
    seconds = time.perf_counter() - start
    return {
        "curves": curves,
        "test": test,
        "params": params,
        "macs": macs,
        "cost": {
            "wall_time_s": seconds,
            "steps": ev.epochs * steps,
            "device_hours": seconds * accelerator.num_processes / 3600,
            "peak_memory_mb": _peak_memory_mb(accelerator.device),
        },
    }


def run_experiment(cfg: ExperimentConfig, out_dir: str | Path, progress: bool = True) -> RunResult:
    """Run one experiment into ``out_dir`` and return its record (also written to ``record.json``)."""
    out_dir = Path(out_dir)
    if (out_dir / "record.json").exists():
        raise UserError(f"{out_dir / 'record.json'} already exists: that run is complete; pass a new --out folder")
    accelerator = Accelerator(cpu=cfg.device == "cpu")
    task = TASKS.get(cfg.task_name)(cfg.task)
    data = task.prepare_data()  # before any output, so missing data leaves nothing behind
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    accelerator.print(f"[egsbench] {cfg.method_name} on {cfg.task_name} ({cfg.preset}, seed {cfg.seed}): search")
    found = search(cfg, task, accelerator, progress)
    genotype = found["genotype"]
    accelerator.print(f"[egsbench] derived genotype {genotype.to_json()}")
    accelerator.print("[egsbench] evaluate: training the derived network from scratch")
    final = evaluate(cfg, task, genotype, accelerator, progress)
    test = final["test"]
    ev_cost = final["cost"]
    ev_rate = ev_cost["steps"] / ev_cost["wall_time_s"] if ev_cost["wall_time_s"] > 0 else None
    determinism = {
        "torch_deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "seed": cfg.seed,
    }
    record = {
        "schema_version": SCHEMA_VERSION,
        "status": "ok",
        "error": None,
        "method": cfg.method_name,
        "task": cfg.task_name,
        "space": cfg.space,
        "preset": cfg.preset,
        "seed": cfg.seed,
        "config_hash": cfg.hash(),
        "config": cfg.to_dict(),
        "metrics": {
            "test_accuracy": test.get("accuracy"),
            "test_error": test.get("error"),
            "test_loss": test.get("loss"),
            "params_m": final["params"] / 1e6,
            "macs_m": final["macs"] / 1e6,
            "search_val_score": found["derive_score"],
        },
        "genotype": genotype.to_dict(),
        "search": found["cost"],
        "evaluate": ev_cost | {"steps_per_s": ev_rate},
        "data": {"source": data.source, "sha256": data.sha256, "sizes": dict(data.sizes)},
        "manifest": manifest(_device_name(accelerator), determinism),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if accelerator.is_main_process:
        genotype.save(out_dir / "genotype.json")
        for cell_type, cell in genotype.cells.items():
            plot_cell(cell, out_dir / f"cell_{cell_type}.png", title=f"{cfg.method_name}: {cell_type} cell")
        write_csv(out_dir / "search_curves.csv", found["curves"])
        write_csv(out_dir / "eval_curves.csv", final["curves"])
        write_json(out_dir / "arch_probabilities.json", found["probabilities"])
        write_record(out_dir / "record.json", record)  # last: its presence marks a complete run
    accelerator.wait_for_everyone()
    return RunResult(record, out_dir, genotype, found["curves"], final["curves"])

"""search -> derive -> evaluate, on HuggingFace accelerate.

One loop shape throughout (accelerate's ``complete_nlp_example``): ``Accelerator``,
``set_seed`` then build, ``prepare``, ``accelerator.backward``. The same code runs on a
laptop CPU and under ``accelerate launch`` on several GPUs. The architecture search runs in
fp32 (finite-difference hypergradients and Gumbel codes do not survive reduced precision):
every ``Accelerator`` here is made with ``mixed_precision="no"``, so a user's accelerate
default of fp16 never applies silently; the precision is recorded.

Messages go through ``accelerate.logging`` (main process only); progress bars show on the
main process only. Trackers (``log_with``: tensorboard, wandb, mlflow, ... through
accelerate) get the resolved config at the start and one row per search and training epoch
as it finishes. The trained final network is written as ``model.safetensors`` beside
``genotype.json``; ``egsbench.load_network`` rebuilds it without unpickling anything.

The runner is task-agnostic: the supernet comes from ``task.build_supernet(space, cfg.search)``
and a final-training epoch from the task's protocol (``make_optimizer``, ``start_epoch``,
``train_loss``, ``end_epoch``, ``eval_weights``; see :mod:`egsbench.tasks.base`), so an image task's
SGD + cosine + drop path and a language model's hidden state, variable BPTT and SGD -> ASGD
switch run through the same loop. A task's loader may be a ``DataLoader`` (prepared: sharded and
placed by accelerate) or a plain iterable of batches (passed through; the task places them).
Loss averages divide by the steps actually taken, since such an iterable's length may be an
estimate (variable BPTT).

Several processes (``torchrun``, ``accelerate launch --multi_gpu``; gloo on CPUs, NCCL on GPUs): a
run joins the process group on whatever device it runs, with no ``device=cpu`` needed where no
accelerator is usable (:func:`use_cpu`). Only the main process checks and locks the run folder; the
others wait for its verdict (:func:`agree`), and a user mistake on any rank stops every rank. Every
rank builds the same supernet and final network (seeded before construction; the genotype and a
finished search's result come from rank 0). Every rank steps the same number of batches in every
phase: training loaders, and the search-val batches of the alpha steps, are prepared with
accelerate's ``even_batches`` (a short shard repeats its first samples, as accelerate pads), a
task's plain iterable is the whole split on every rank, and per-step losses are averaged over the
ranks before the divergence check, so all ranks stop together or none does. Evaluation loaders are
not padded (each sample counted once) and run on the unwrapped module, whose forward has no
collective, so uneven or empty evaluation shards cannot pair one rank's batch with another's sum.

Transfer (a config with ``transfer_from``, the paper's protocol for WikiText-2, ImageNet and VOC 2012):
the run first makes sure its source search exists: a finished run folder named by ``transfer_from``
is read as it is; a source config's search runs (search and derivation only, :func:`run_search`) in
``<out>/source`` or the folder ``source_run`` names, unless that folder already holds the search of
the same config and seed (a finished source run, or an earlier transfer's search), which is reused.
A source folder another process holds (its run lock, or a sweep's claim) is waited for. The
transfer then trains the source's cell on its own task; its record's ``search`` cost is the
source search's, and ``extras.transfer`` / ``extras.genotype_source`` say which search it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import (
    DistributedDataParallelKwargs,
    ProjectConfiguration,
    broadcast_object_list,
    gather_object,
    set_seed,
)
from safetensors.torch import save_model
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..methods import METHODS, SearchContext
from ..methods.signal import learned_distribution, mean_entropy, search_signal
from ..tasks import TASKS
from ..tasks.spaces import SPACES, EdgeWeights, Genotype, UserError, count_macs, count_parameters
from ..tasks.spaces.genotypes import genotype_source
from .checkpoint import Checkpointer, first_report
from .config import ExperimentConfig, candidate_recipe
from .memory import MB, MemoryProbe
from .plots import plot_cell, plot_curves, plot_probability_evolution
from .records import SCHEMA_VERSION, atomic_write_text, manifest, write_csv, write_json, write_record
from .speed import apply_memory_format, compile_network

__all__ = [
    "MODEL_FILE",
    "DivergedError",
    "RunInterrupted",
    "RunLockedError",
    "RunPosition",
    "RunResult",
    "failed_record",
    "run_experiment",
    "run_lock",
    "run_search",
]

logger = get_logger(__name__)
MODEL_FILE = "model.safetensors"  # the trained final network's weights, beside genotype.json
LogFn = Callable[[dict, int], None]  # (values, step) -> None: the trackers' per-epoch log


class DivergedError(UserError):
    """A non-finite loss (or metric, or architecture weight): the run stops, its record says failed, its last
    good checkpoint stays."""

    def __init__(self, phase: str, epoch: int, step: int, value: float, what: str = "loss"):
        super().__init__(
            f"the run diverged: non-finite {what} {value} in {phase} epoch {epoch}, step {step}; its record says "
            f"failed and the last good checkpoint is kept. Lower {phase}.lr (or {phase}.grad_clip) and use a new --out"
        )
        self.phase, self.epoch, self.step = phase, epoch, step


def _check_finite(phase: str, epoch: int, step: int, values: dict) -> None:
    """Raise :class:`DivergedError` naming the first NaN or infinity in ``values`` (numbers, nested lists).

    Called before an epoch's checkpoint: a step's loss can be finite while its update leaves NaN in the
    weights, which then shows in the architecture probabilities or the test metrics; stopping before the
    save keeps the last good checkpoint the newest.
    """
    for name, value in values.items():
        try:
            flat = torch.as_tensor(value, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):  # not numbers (a task's curve may hold a label)
            continue
        if not torch.isfinite(flat).all():
            raise DivergedError(phase, epoch, step, flat[~torch.isfinite(flat)].flatten()[0].item(), what=name)


class RunLockedError(UserError):
    """Another process holds the run folder's lock."""


@dataclass
class RunPosition:
    """Where a run is (phase, epoch) and its newest complete checkpoint per phase: what an interrupt reports."""

    phase: str = "setup"  # setup | search | derivation | evaluate | results
    epoch: int | None = None
    checkpoints: dict[str, Checkpointer] = field(default_factory=dict)  # phase -> its checkpointer

    def enter(self, phase: str, epoch: int | None = None) -> None:
        self.phase, self.epoch = phase, epoch

    def reset(self) -> None:
        """A new run in this process: set-up, nothing checkpointed."""
        self.enter("setup")
        self.checkpoints.clear()

    @property
    def saved(self) -> dict[str, int]:
        """Phase -> the epoch of its newest complete checkpoint (as the checkpointer knows it, on disk)."""
        return {phase: c.newest for phase, c in self.checkpoints.items() if c.newest is not None}

    def where(self) -> str:
        if self.phase in ("search", "evaluate") and self.epoch is not None:
            return f"{self.phase} epoch {self.epoch}"
        return {"setup": "the set-up (before the search)", "derivation": "the derivation",
                "results": "the writing of the results"}.get(self.phase, self.phase)  # fmt: skip

    def resumes_at(self) -> str:
        """What ``--resume`` does next: the epoch after the newest checkpoint of the phase it stopped in."""
        if self.phase in ("setup", "search"):
            return f"search epoch {self.saved.get('search', -1) + 1}"
        if self.phase == "derivation":
            return "the derivation (the search's checkpoints are kept)"
        return f"evaluate epoch {self.saved.get('evaluate', -1) + 1}"


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM during a run; carries where it stopped and the exit status (130 / 143)."""

    def __init__(self, position: RunPosition, exit_code: int = 130):
        super().__init__(position.where())
        self.position, self.exit_code = position, exit_code


POSITION = RunPosition()  # the current run's, in this process (one run at a time)


def _busy_message(out_dir: Path, holder: str) -> str:
    return f"{out_dir} is in use by another egsbench run (pid {holder}); wait for it to finish or pass a new --out"


LOCK = ".lock"  # held by the run writing the folder
CLAIM = ".claim"  # held by the sweep process that runs it (around the run's own subprocess)


def lock_holder(out_dir: Path, name: str = LOCK) -> str | None:
    """The pid written by the process that holds ``out_dir``'s lock ``name`` now, else None (a probe; takes nothing)."""
    try:
        fd = os.open(out_dir / name, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.read(fd, 64).decode(errors="replace").strip() or "unknown"
    finally:
        os.close(fd)  # closing drops the probe's shared lock, if it got one
    return None


@contextmanager
def run_lock(out_dir: Path, name: str = LOCK):
    """An exclusive OS lock (``flock``) on ``out_dir/<name>`` for the life of the run (or of a sweep's claim).

    The kernel releases it when the process ends, however it ends, so a crashed run never leaves a
    stale lock; a second run into the same folder fails at once instead of mixing checkpoints.
    """
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(out_dir / name, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:  # --out is a file, read-only, on a missing drive, ...
        message = f"cannot use {out_dir} as the run folder ({err.strerror}); pass --out to a writable folder"
        raise UserError(message) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunLockedError(_busy_message(out_dir, holder)) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@dataclass
class RunResult:
    record: dict
    out_dir: Path
    genotype: Genotype
    search_curves: list[dict] = field(default_factory=list)
    eval_curves: list[dict] = field(default_factory=list)


def _cycle(loader) -> Iterator[Any]:
    while True:  # a fresh pass (and shuffle) each time the loader is exhausted
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:  # an endless loop otherwise
            raise UserError("the search-val split has no batches; raise task.train_limit (search-train and "
                            "search-val are its halves) or lower search.batch_size")  # fmt: skip


def _device_name(accelerator: Accelerator) -> str:
    device = accelerator.device
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} x{accelerator.num_processes}"
    return f"{device.type} ({torch.get_num_threads()} threads) x{accelerator.num_processes}"


def count_examples(task, batch) -> int:
    """Training examples in ``batch``: the task's ``count_examples`` (a language model counts tokens), else the
    leading dimension of the batch's first tensor (images)."""
    counter = getattr(task, "count_examples", None)
    if counter is not None:
        return int(counter(batch))
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    return int(first.shape[0])


def _throughput(task, examples: int, elapsed: float, world: int, probe: MemoryProbe) -> dict:
    """The cost fields every phase records beside its wall time: examples per second and the phase's peak memory."""
    _, peak = probe.stop()
    return {
        "peak_memory_mb": peak / MB,
        "examples_per_s": examples * world / elapsed if elapsed > 0 else None,
        "example_unit": getattr(task, "example_unit", "examples"),
        "peak_memory_how": probe.how,
    }


@torch.no_grad()
def evaluate_split(task, model, loader, accelerator, weights: EdgeWeights | None = None, max_batches=None) -> dict:
    """Task metrics of ``model`` on ``loader`` (a supernet when ``weights`` is given), summed over processes.

    The forward passes run on the unwrapped module: DDP's forward broadcasts buffers, a collective per
    batch, and the shards of an evaluation loader are uneven (no padding), so the wrapped module would
    pair one rank's extra batch with another rank's next collective. The only collective here is the
    final sum, which every rank reaches once, with or without batches of its own. A plain iterable (a
    task's own loader, not sharded by accelerate) gives every rank the whole split: not summed.
    """
    net = accelerator.unwrap_model(model)
    was_training = net.training
    net.eval()
    total = None
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        sums = task.eval_sums(net, batch, weights)
        total = sums if total is None else total + sums
    net.train(was_training)
    if accelerator.num_processes > 1 and isinstance(loader, DataLoader):
        parts = [p for p in gather_object([None if total is None else total.cpu()]) if p is not None]
        total = torch.stack(parts).sum(0) if parts else None
    if total is None:
        raise UserError("no evaluation batches on any process: the split is empty; raise task.test_limit / "
                        "task.train_limit or use a larger data set")  # fmt: skip
    return task.summarize(total.cpu())


def mean_over_processes(accelerator: Accelerator, values: dict[str, float]) -> dict[str, float]:
    """``values`` averaged over the processes (one all-reduce), so every rank logs and checks the same numbers.

    A divergence check that one rank passes and another fails would leave the failing rank out of the
    next collective; deciding on the mean makes every rank stop (or go on) together.
    """
    if accelerator.num_processes == 1 or not values:
        return values
    flat = torch.tensor(list(values.values()), dtype=torch.float64, device=accelerator.device)
    flat = accelerator.reduce(flat, reduction="mean").cpu().tolist()
    return dict(zip(values, flat, strict=True))


def autocast(precision: str, device: torch.device):
    """bf16 autocast when ``precision`` asks for it (no GradScaler needed), else a no-op context."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _autocast_loss(fn: Callable, precision: str, device: torch.device) -> Callable:
    if precision == "no":
        return fn

    def loss(*args, **kwargs):
        with autocast(precision, device):
            return fn(*args, **kwargs)

    return loss


def prepare_eval_loader(accelerator: Accelerator, loader):
    """``loader`` prepared without accelerate's even-batch padding, so under several processes every
    sample is counted exactly once in the summed metrics (padding would repeat samples to even the shards)."""
    even = accelerator.even_batches
    accelerator.even_batches = False
    try:
        return accelerator.prepare(loader)
    finally:
        accelerator.even_batches = even


def _steps(loader, cap: int | None) -> int:
    return len(loader) if cap is None else min(len(loader), cap)


def _evaluator(task, net, accelerator: Accelerator, batch_size: int) -> Callable[[str], dict]:
    """``evaluate(split)``: the task's metrics of ``net`` on ``split``, each split's loader prepared once."""
    loaders: dict[str, Any] = {}

    def evaluate(split: str) -> dict:
        if split not in loaders:
            loaders[split] = prepare_eval_loader(accelerator, task.loader(split, batch_size))
        return evaluate_split(task, net, loaders[split], accelerator)

    return evaluate


def train_epoch(task, net, optimizer, loader, recipe, epoch: int, accelerator: Accelerator, bar=None,
                evaluate: Callable[[str], dict] | None = None, precision: str = "no") -> dict:  # fmt: skip
    """One epoch of the task's final-training recipe; returns its curve row.

    The task sets the epoch up (``start_epoch``: lr schedule, drop path, hidden state), gives each
    step's loss (``train_loss``) and closes the epoch (``end_epoch``: e.g. validation and an optimiser
    switch, through ``evaluate(split)``); the runner backpropagates, clips and steps.
    """
    steps = _steps(loader, recipe.max_steps_per_epoch)
    state = task.start_epoch(net, optimizer, epoch, recipe)
    lr = optimizer.param_groups[0]["lr"]  # the epoch's base lr (a task may scale it per step)
    net.train()
    loss_sum, metric_sums, taken, examples = 0.0, {}, 0, 0
    for i, batch in enumerate(loader):
        if i >= steps:
            break
        with autocast(precision, accelerator.device):  # bf16 forward when asked; backward follows autocast
            out = task.train_loss(net, batch, recipe, state)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(out.loss)
        accelerator.clip_grad_norm_(net.parameters(), recipe.grad_clip)
        values = mean_over_processes(accelerator, {"loss": out.loss.item(), **out.metrics})  # every rank agrees
        loss = values.pop("loss")
        if not math.isfinite(loss):  # before the step: the weights stay those of the last finite step
            raise DivergedError("evaluate", epoch, i, loss)
        optimizer.step()
        loss_sum += loss
        taken += 1
        examples += count_examples(task, batch)
        for k, v in values.items():
            metric_sums[k] = metric_sums.get(k, 0.0) + v
        if bar is not None:
            bar.update()
            bar.set_postfix(loss=f"{loss:.3f}")
    taken = max(taken, 1)
    row = {"epoch": epoch, "lr": lr, "train_loss": loss_sum / taken, "examples": examples}
    row |= {f"train_{k}": v / taken for k, v in metric_sums.items()}
    if evaluate is None:  # the runner's default: the task's own splits on the same accelerator
        evaluate = _evaluator(task, net, accelerator, recipe.batch_size)
    return row | task.end_epoch(net, optimizer, epoch, recipe, evaluate)


def _score_sign(task) -> float:
    """+1 when the task's candidate score is higher-is-better, -1 when lower is (methods always maximise)."""
    directions = {m.name: m.direction for m in getattr(task, "metrics", ())}
    return -1.0 if directions.get(task.score_key) == "min" else 1.0


def search(cfg: ExperimentConfig, task, accelerator: Accelerator, progress: bool, folder: Path,
           log: LogFn | None = None) -> dict:  # fmt: skip
    """Run the architecture search and derivation; returns the genotype and the search's costs and curves.

    Checkpoints after every epoch under ``folder`` and resumes from the newest one found there.
    """
    space = SPACES.get(cfg.space)
    probe = MemoryProbe(accelerator.device)
    probe.start()  # this phase's own peak: building the supernet, the search and the derivation
    set_seed(cfg.seed)
    supernet = apply_memory_format(task.build_supernet(space, cfg.search), cfg.memory_format)
    method = METHODS.get(cfg.method_name)(cfg.method)
    bs = cfg.search.batch_size
    train_gen, val_gen = torch.Generator().manual_seed(cfg.seed), torch.Generator().manual_seed(cfg.seed + 1)
    train_loader = task.loader("search-train", bs, train_gen)
    val_loader = task.loader("search-val", bs, val_gen)
    model, train_loader, step_val_loader = accelerator.prepare(supernet, train_loader, val_loader)
    # Two views of search-val: the steps' (even shards, as the training batches: every rank takes the same
    # number of steps and restarts its pass at the same step) and the scores' (no padding: each sample once).
    val_loader = prepare_eval_loader(accelerator, val_loader)
    steps = _steps(train_loader, cfg.search.max_steps_per_epoch)
    sign = _score_sign(task)

    def train_candidate(genotype: Genotype) -> float:
        # Brief training of a final network on search-train, scored on search-val (DARTS's selection protocol).
        recipe = candidate_recipe(cfg.evaluate, METHODS.get(cfg.method_name), cfg.method)
        acc = _accelerator(cfg)  # its own, so the search's checkpoints hold only the supernet
        set_seed(cfg.seed)  # every candidate starts from the same seed, whatever the order
        net = apply_memory_format(task.build_network(genotype, recipe), cfg.memory_format)
        optimizer = task.make_optimizer(net, recipe)
        loader = task.loader("search-train", recipe.batch_size, torch.Generator().manual_seed(cfg.seed + 2), recipe)
        net, optimizer, loader = acc.prepare(net, optimizer, loader)

        def on_search_val(split: str) -> dict:  # the candidate never sees the final-training splits
            return evaluate_split(task, net, val_loader, acc)

        with torch.enable_grad():  # a method may call this from inside its own no_grad derivation
            for epoch in range(recipe.epochs):
                train_epoch(task, net, optimizer, loader, recipe, epoch, acc, evaluate=on_search_val,
                            precision=cfg.mixed_precision)  # fmt: skip
        with task.eval_weights(net, optimizer):
            return sign * evaluate_split(task, net, val_loader, acc)[task.score_key]

    ctx = SearchContext(
        model=model,
        space=space,
        loss=_autocast_loss(task.search_loss, cfg.search_mixed_precision, accelerator.device),
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
    ckpt = Checkpointer(folder, accelerator)
    POSITION.checkpoints["search"] = ckpt
    curves, probs_history, elapsed, first, examples = [], [], 0.0, 0, 0
    initial = learned_distribution(method)  # before any step: where the search signal is measured from
    restored = ckpt.restore()
    if restored is not None:
        if "initial" in restored.progress:  # absent from checkpoints written before the search signal
            initial = _tensors(restored.progress["initial"])
        method.load_state_dict(restored.state["method"])
        train_gen.set_state(restored.state["train_gen"])
        val_gen.set_state(restored.state["val_gen"])
        curves, probs_history = restored.progress["curves"], restored.progress["probabilities"]
        elapsed, first = restored.progress["seconds"], restored.epoch + 1
        examples = restored.progress.get("examples", 0)  # absent from checkpoints written before it was counted
        logger.info(f"resumed the search after epoch {restored.epoch}")
    bar = tqdm(total=epochs * steps, initial=first * steps, desc=f"search {cfg.method_name}", leave=False,
               disable=not (progress and accelerator.is_main_process))  # fmt: skip
    for epoch in range(first, epochs):
        POSITION.enter("search", epoch)
        start = time.perf_counter()
        method.start_epoch(epoch)
        model.train()
        val_iter = _cycle(step_val_loader)  # restarted each epoch, so a resumed epoch sees the same batches
        totals: dict[str, float] = {}
        for i, batch in enumerate(train_loader):
            if i >= steps:
                break
            stats = method.step(batch, next(val_iter))
            examples += count_examples(task, batch)
            values = mean_over_processes(accelerator, {"loss": stats.loss, **stats.metrics, **stats.extras})
            _check_finite("search", epoch, i, values)
            for key, value in values.items():
                totals[key] = totals.get(key, 0.0) + value
            bar.update()
            bar.set_postfix(loss=f"{values['loss']:.3f}", **{k: f"{values[k]:.3g}" for k in stats.extras})
        elapsed += time.perf_counter() - start
        probs = {t: p.detach().cpu() for t, p in method.probabilities().items()}
        curves.append({"epoch": epoch, **{k: v / steps for k, v in totals.items()},
                       "arch_entropy": arch_entropy(probs), "seconds": elapsed})  # fmt: skip
        if log is not None:
            log({f"search/{k}": v for k, v in curves[-1].items() if k != "epoch"}, epoch)
        probs_history.append({t: p.tolist() for t, p in probs.items()})
        _check_finite("search", epoch, steps - 1, {**curves[-1], **{f"{t}-cell architecture probabilities": p
                                                                   for t, p in probs_history[-1].items()}})  # fmt: skip
        state = {"method": method.state_dict(), "train_gen": train_gen.get_state(), "val_gen": val_gen.get_state()}
        ckpt.save(epoch, state, {"curves": curves, "probabilities": probs_history, "seconds": elapsed,
                                 "examples": examples, "initial": _lists(initial)})  # fmt: skip
    bar.close()

    def score(weights: EdgeWeights, batches: int | None = cfg.search.score_batches) -> float:
        return sign * evaluate_split(task, model, val_loader, accelerator, weights, batches)[task.score_key]

    POSITION.enter("derivation")
    start = time.perf_counter()
    genotype = method.derive(score)
    # Every rank derived (scoring is collective); rank 0's genotype is the run's, whatever float noise did elsewhere.
    genotype = Genotype.from_dict(broadcast_object_list([genotype.to_dict()], from_process=0)[0])
    space.validate(genotype)
    derive_seconds = time.perf_counter() - start
    # NaN weights after the last step leave the losses finite but the candidates' search-val scores NaN
    _check_finite("search", max(epochs - 1, 0), max(steps - 1, 0),
                  {"search-val score of the derived genotype": getattr(method, "derive_score", None)})  # fmt: skip
    total_steps = epochs * steps
    return {
        "genotype": genotype.to_dict(),
        "signal": _search_signal(method, initial, genotype),
        "curves": curves,
        "probabilities": probs_history,
        "cost": {
            "wall_time_s": elapsed,
            "derive_wall_time_s": derive_seconds,
            "steps": total_steps,
            "steps_per_s": total_steps / elapsed if elapsed > 0 else None,
            "device_hours": (elapsed + derive_seconds) * accelerator.num_processes / 3600,
            **_throughput(task, examples, elapsed, accelerator.num_processes, probe),
        },
        "derive_score": getattr(method, "derive_score", None),
    }


def evaluate(cfg: ExperimentConfig, task, genotype: Genotype, accelerator: Accelerator, progress: bool,
             folder: Path, log: LogFn | None = None) -> dict:  # fmt: skip
    """Train the derived network from scratch with the task's recipe; test on the official test split.

    Checkpoints after every epoch under ``folder`` and resumes from the newest one found there.
    """
    ev = cfg.evaluate
    probe = MemoryProbe(accelerator.device)
    probe.start()  # this phase's own peak, not the search's
    set_seed(cfg.seed)
    net = apply_memory_format(task.build_network(genotype, ev), cfg.memory_format)
    params = count_parameters(net)
    net.eval()
    example = task.example_input()
    macs = count_macs(net, *(example if isinstance(example, tuple) else (example,))).total
    net.train()
    if cfg.compile:
        compile_network(net)
    optimizer = task.make_optimizer(net, ev)
    train_gen = torch.Generator().manual_seed(cfg.seed + 2)
    train_loader = task.loader("train", ev.batch_size, train_gen, recipe=ev)
    test_loader = task.loader("test", ev.batch_size)
    net, optimizer, train_loader = accelerator.prepare(net, optimizer, train_loader)
    test_loader = prepare_eval_loader(accelerator, test_loader)  # every test sample counts exactly once
    steps = _steps(train_loader, ev.max_steps_per_epoch)
    ckpt = Checkpointer(folder, accelerator)
    POSITION.checkpoints["evaluate"] = ckpt
    curves, test, elapsed, first = [], {}, 0.0, 0
    restored = ckpt.restore()
    if restored is not None:
        train_gen.set_state(restored.state["train_gen"])
        curves, test = restored.progress["curves"], restored.progress["test"]
        elapsed, first = restored.progress["seconds"], restored.epoch + 1
        logger.info(f"resumed the final training after epoch {restored.epoch}")
    bar = tqdm(total=ev.epochs * steps, initial=first * steps, desc="evaluate", leave=False,
               disable=not (progress and accelerator.is_main_process))  # fmt: skip
    evaluate_on = _evaluator(task, net, accelerator, ev.batch_size)
    for epoch in range(first, ev.epochs):
        POSITION.enter("evaluate", epoch)
        start = time.perf_counter()
        row = train_epoch(task, net, optimizer, train_loader, ev, epoch, accelerator, bar, evaluate_on,
                          precision=cfg.mixed_precision)  # fmt: skip
        if epoch == ev.epochs - 1 or (ev.eval_every > 0 and (epoch + 1) % ev.eval_every == 0):
            with task.eval_weights(net, optimizer):  # e.g. ASGD's averaged weights
                test = evaluate_split(task, net, test_loader, accelerator)
            row |= {f"test_{k}": v for k, v in test.items() if k != "count"}
        elapsed += time.perf_counter() - start
        curves.append(row | {"seconds": elapsed})
        if log is not None:
            log({f"evaluate/{k}": v for k, v in curves[-1].items() if k != "epoch"}, epoch)
        _check_finite("evaluate", epoch, steps - 1, curves[-1])
        ckpt.save(epoch, {"train_gen": train_gen.get_state()}, {"curves": curves, "test": test, "seconds": elapsed})
    bar.close()
    total_steps = ev.epochs * steps
    model = accelerator.unwrap_model(net)
    with task.eval_weights(net, optimizer):  # the weights the test metrics were measured with
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    return {
        "model": model,
        "curves": curves,
        "test": test,
        "params": params,
        "macs": macs,
        "cost": {
            "wall_time_s": elapsed,
            "steps": total_steps,
            "steps_per_s": total_steps / elapsed if elapsed > 0 else None,
            "device_hours": elapsed * accelerator.num_processes / 3600,
            **_throughput(task, sum(row.get("examples", 0) for row in curves), elapsed, accelerator.num_processes,
                          probe),  # fmt: skip
        },
    }


def _accelerator(cfg: ExperimentConfig, log_with: list[str] | None = None, project_dir: Path | None = None):
    # One per phase: accelerate's save_state saves every object its accelerator prepared. Always fp32 for
    # accelerate (an explicit "no" overrides a user's accelerate default of fp16; accelerate's precision is
    # fixed per process anyway); bf16, when a config asks, is autocast around the task's losses (autocast()).
    project = None
    if project_dir is not None:  # trackers write under <run folder>/logs/<run name>/
        project = ProjectConfiguration(project_dir=str(project_dir), logging_dir=str(project_dir / "logs"))
    # Sparse supernets run only the ops a step sampled; DDP must be told that parameters may go unused.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    return Accelerator(cpu=use_cpu(cfg.device), mixed_precision="no", log_with=log_with or None,
                       project_config=project, kwargs_handlers=[ddp])  # fmt: skip


def use_cpu(device: str) -> bool:
    """Whether a run with config ``device`` runs on the CPU: asked for, or no accelerator is usable.

    accelerate starts a process group only for a device it can use: on a machine without a GPU (a CUDA
    build of torch included) ``Accelerator(cpu=False)`` under ``torchrun`` gives ``DistributedType.NO``,
    every rank a separate single-process run. Saying ``cpu`` there makes it join with gloo (MULTI_CPU).
    """
    if device == "cpu":
        return True
    probe = getattr(torch, "accelerator", None)  # torch >= 2.6: CUDA, ROCm, XPU, MPS, ...
    available = probe.is_available() if probe is not None else torch.cuda.is_available()
    return not available


def check_launch(accelerator: Accelerator) -> None:
    """Refuse a launch that asked for several processes and got one.

    ``accelerate launch --num_processes N`` without ``--multi_gpu`` (with ``--cpu``, or on a machine without
    a GPU) uses accelerate's simple launcher, which starts N processes only under ``mpirun``
    (``--mpirun_hostfile``): otherwise one process runs, with ``MASTER_ADDR`` set for the N it was asked
    for. Such a run would silently be a different experiment (a per-process batch of one process).
    """
    env = os.environ
    launched = "ACCELERATE_USE_CPU" in env and "MASTER_ADDR" in env  # the simple launcher with N > 1
    ranked = any(k in env for k in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"))
    if accelerator.num_processes == 1 and launched and not ranked:
        raise UserError("accelerate launch started one process, not several: without --multi_gpu its simple launcher "
                        "needs mpirun for more. Use `accelerate launch --multi_gpu --num_processes N` (on CPUs too: "
                        "the run joins with gloo) or `torchrun --nproc_per_node N`")  # fmt: skip


DELAY_ENV = "EGSBENCH_DEBUG_DELAY"  # "RANK:SECONDS": that rank sleeps once it has joined (tests of a slow rank)


def _debug_delay(accelerator: Accelerator) -> None:
    """Sleep on the rank ``EGSBENCH_DEBUG_DELAY`` names, before its first collective (a slow-rank test hook)."""
    spec = os.environ.get(DELAY_ENV)
    if not spec:
        return
    try:
        rank, seconds = spec.split(":")
        rank, seconds = int(rank), float(seconds)
    except ValueError:
        raise UserError(f"{DELAY_ENV}={spec!r} must be RANK:SECONDS, e.g. 1:5; unset it for normal runs") from None
    if accelerator.process_index == rank:
        time.sleep(seconds)


class PeerError(UserError):
    """Another rank failed on a user mistake; that rank prints the message, this one exits quietly with it."""

    quiet = True


def agree(accelerator: Accelerator, work: Callable[[], Any], main_only: bool = False) -> Any:
    """``work()`` on every rank (or the main one), then one collective that shares who failed.

    A failure on any rank (a missing file, a folder in use, or a bug) is raised on every rank, so no rank
    goes on to a collective the failed one will never reach: the rank that failed raises its own error,
    the others a quiet :class:`PeerError` carrying its message.
    """
    result, failure = None, None
    if accelerator.is_main_process or not main_only:
        try:
            result = work()
        except Exception as err:  # a bug too: the other ranks must not wait for this one forever
            failure = err
    first = first_report(accelerator, None if failure is None else str(failure))
    if failure is not None:
        raise failure
    if first is not None:
        raise PeerError(f"rank {first[0]} failed: {first[1]}")
    return result


def apply_determinism(deterministic: bool) -> None:
    """Turn PyTorch's deterministic algorithms (and deterministic cuDNN) on or off for this process."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by deterministic cuBLAS
    torch.use_deterministic_algorithms(deterministic, warn_only=False)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic  # DARTS's train*.py set cudnn.benchmark = True


def _flat(config: dict, prefix: str = "") -> dict:
    """Dotted scalar items of a nested config, as trackers' hyperparameter tables want them."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out


def _determinism(seed: int) -> dict:
    return {
        "torch_deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "seed": seed,
    }


def _identity(cfg: ExperimentConfig, world_size: int = 1, mixed_precision: str = "no",
              deterministic: bool = False) -> dict:  # fmt: skip
    """The fields that say which run a record is; the setup ones keep a 1-GPU and an 8-GPU run apart in tables."""
    return {
        "schema_version": SCHEMA_VERSION,
        "method": cfg.method_name,
        "task": cfg.task_name,
        "space": cfg.space,
        "preset": cfg.preset,
        "seed": cfg.seed,
        "world_size": world_size,  # accelerator.num_processes
        "mixed_precision": mixed_precision,  # accelerator.mixed_precision
        "deterministic": deterministic,
        "config_hash": cfg.hash(),
        "config": cfg.to_dict(),
    }


def _check_folder(cfg: ExperimentConfig, out_dir: Path, resume: bool, probe_lock: bool = True) -> None:
    """Refuse to overwrite a finished run, to mix two configs in one folder, or to restart a partial run silently."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file, not a folder; pass --out to a new or existing folder")
    holder = lock_holder(out_dir) if probe_lock else None  # (a probe from inside our own lock would see us)
    if holder is not None:
        raise RunLockedError(_busy_message(out_dir, holder))
    if (out_dir / "record.json").exists():
        raise UserError(f"{out_dir / 'record.json'} already exists: that run is finished (ok or failed); pass a new "
                        "--out folder")  # fmt: skip
    saved = out_dir / "config.yaml"
    if not saved.exists():
        return
    if not resume:
        raise UserError(f"{out_dir} holds an unfinished run; pass --resume to continue it or a new --out folder")
    if not _holds_config(out_dir, cfg):
        raise UserError(f"{out_dir} holds a run of a different config; resume with the same config and --set "
                        "values, or pass a new --out folder")  # fmt: skip


def _holds_config(out_dir: Path, cfg: ExperimentConfig) -> bool:
    """Whether ``out_dir/config.yaml`` is ``cfg`` (seed included; the thread count changes speed, not results,
    so a resume may change it)."""
    def identity(config: dict) -> dict:
        return {k: v for k, v in config.items() if k != "threads"}

    return identity(yaml.safe_load((out_dir / "config.yaml").read_text()) or {}) == identity(cfg.to_dict())


def failed_record(cfg: ExperimentConfig, out_dir: str | Path, error: str, world_size: int = 1,
                  mixed_precision: str = "no", deterministic: bool = False) -> dict:  # fmt: skip
    """Write (and return) the record of a run that failed with ``error``; metrics and costs are null."""
    record = _identity(cfg, world_size, mixed_precision, deterministic) | {
        "status": "failed",
        "error": error,
        "metrics": None,
        "genotype": None,
        "search": None,
        "evaluate": None,
        "data": None,
        "manifest": manifest("unknown", _determinism(cfg.seed)),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_record(Path(out_dir) / "record.json", record)
    return record


def _write_figures(cfg: ExperimentConfig, out_dir: Path, genotype: Genotype, found: dict, final: dict) -> None:
    space = SPACES.get(cfg.space)
    for cell_type, cell in genotype.cells.items():
        plot_cell(cell, out_dir / f"cell_{cell_type}.png", title=f"{cfg.method_name}: {cell_type} cell")
        if found["probabilities"]:
            plot_probability_evolution(found["probabilities"], cell_type, list(space.edges), list(space.ops),
                                       out_dir / f"probabilities_{cell_type}.png")  # fmt: skip
    plot_curves(found["curves"], final["curves"], out_dir / "curves.png",
                title=f"{cfg.method_name} on {cfg.task_name} ({cfg.preset}, seed {cfg.seed})")  # fmt: skip


def _scale_for_processes(cfg: ExperimentConfig, world: int) -> tuple[ExperimentConfig, dict]:
    """The config the phases train with, and what scaling did: batch sizes are per process; with
    ``lr_scaling: linear`` both learning rates (and their floors) grow with the world size."""
    factor = world if cfg.lr_scaling == "linear" else 1
    scaled = cfg
    if factor != 1:
        blocks = {}
        for name in ("search", "evaluate"):
            block = getattr(cfg, name)
            keys = {k: getattr(block, k) * factor for k in ("lr", "lr_min") if hasattr(block, k)}
            blocks[name] = dataclasses.replace(block, **keys)
        scaled = dataclasses.replace(cfg, **blocks)
    info = {"world_size": world, "lr_scaling": cfg.lr_scaling, "lr_factor": factor}
    for name in ("search", "evaluate"):
        batch = getattr(getattr(cfg, name), "batch_size", None)
        if batch is not None:
            info[f"{name}_effective_batch_size"] = batch * world
    return scaled, info


def _extras(data, curves: list[dict]) -> dict:
    """What a task adds beyond ``test_<name>``: which split played which role, the last validation metrics."""
    extras = {}
    roles = getattr(data, "roles", None)
    if roles:
        extras["data_roles"] = dict(roles)
    valid = {k: v for k, v in (curves[-1] if curves else {}).items() if k.startswith("valid_")}
    if valid:
        extras["valid"] = valid
    return extras


def _save_weights(model: torch.nn.Module, path: Path, genotype: Genotype, run_name: str) -> None:
    """The final network's weights as safetensors (no pickle), written atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_model(model, str(tmp), metadata={"genotype": genotype.to_json(), "run": run_name})
    os.replace(tmp, path)


def _lists(probabilities: dict[str, torch.Tensor] | None) -> dict[str, list] | None:
    return None if probabilities is None else {t: p.tolist() for t, p in probabilities.items()}


def _tensors(probabilities: dict[str, list] | None) -> dict[str, torch.Tensor] | None:
    if probabilities is None:
        return None
    return {t: torch.tensor(p, dtype=torch.float64) for t, p in probabilities.items()}


def _search_signal(method, initial: dict[str, torch.Tensor] | None, genotype: Genotype) -> dict | None:
    """The record's ``search.signal`` (:mod:`egsbench.methods.signal`); None for methods that learn no distribution."""
    final = learned_distribution(method)
    if initial is None or final is None:
        return None
    rule = getattr(method, "derive_from_distribution", None)
    before = rule(initial) if rule is not None else None
    return search_signal(initial, final, genotype if before is not None else None, before)


arch_entropy = mean_entropy  # the search curves' per-epoch column (of what probabilities() reports)


def run_experiment(
    cfg: ExperimentConfig,
    out_dir: str | Path,
    progress: bool = True,
    resume: bool = False,
    log_with: list[str] | None = None,
    source_run: str | Path | None = None,
) -> RunResult:
    """Run one experiment into ``out_dir`` and return its record (also written to ``record.json``).

    With ``resume``, a folder holding an unfinished run of the same config continues from its
    last checkpoint (search epoch, finished search, or final-training epoch). ``log_with`` names
    accelerate trackers (``tensorboard``, ``wandb``, ``mlflow``, ...; logs go under ``out_dir``).
    A transfer config (``transfer_from``) first runs or reuses its source search, in ``source_run``
    (default ``<out_dir>/source``; see the module docstring).

    Under several processes (``torchrun``, ``accelerate launch``) the run folder belongs to the main
    process: it checks the folder and takes the lock while the other ranks wait for its verdict, so
    no rank ever sees another rank's lock, and a refusal stops every rank with the same message.
    """
    with _threads(cfg):
        return _run_experiment(cfg, Path(out_dir), progress, resume, log_with, source_run)


@contextmanager
def _threads(cfg: ExperimentConfig):
    """The config's intra-op thread count (recorded in the manifest's device string) for the life of a run; the
    previous count afterwards, so a notebook's or a test session's later runs are not affected."""
    before = torch.get_num_threads()
    try:
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        yield
    finally:
        torch.set_num_threads(before)


def run_search(cfg: ExperimentConfig, out_dir: str | Path, progress: bool = True, resume: bool = False) -> dict:
    """The search and derivation of ``cfg`` alone, into ``out_dir``: its ``search_result.json`` and
    ``genotype.json`` (no final training, no record). The folder stays a run folder of ``cfg``:
    ``egsbench run CONFIG --out DIR --resume`` later trains the cell and writes the record.

    Returns:
        the search result (``genotype``, ``cost``, ``curves``, ``probabilities``, ``derive_score``).
    """
    if cfg.transfer is not None:
        raise UserError(f"{cfg.run_name} transfers a cell searched elsewhere (transfer_from); search with its source")
    with _threads(cfg):
        POSITION.reset()
        return _claim_and_execute(cfg, Path(out_dir), progress, resume, None, search_only=True)


SOURCE_DIR = "source"  # a transfer run's source search, inside its run folder (unless source_run names one)
SOURCE_POLL_S = 5.0  # how often a transfer looks whether another process still holds its source folder


@dataclass
class TransferSource:
    """The search a transfer run takes its cell from: its result, its folder and its config."""

    found: dict  # search_result.json
    folder: Path
    config: ExperimentConfig
    given: str  # transfer_from's source, as the config names it

    def record_extras(self) -> dict:
        """``extras.transfer`` and ``extras.genotype_source`` of the transfer's record (the source folder may hold
        no record yet, a search alone: its run comes from the source config)."""
        run = {"method": self.config.method_name, "task": self.config.task_name, "preset": self.config.preset,
               "seed": self.config.seed, "config_hash": self.config.hash()}  # fmt: skip
        return {"transfer": {"from": self.given, "folder": str(self.folder.resolve()), **run},
                "genotype_source": genotype_source(str(self.folder)) | {"run": run}}


def _wait_for(folder: Path) -> None:
    """Block while another process holds ``folder`` (its run lock, or a sweep's claim on it)."""
    said = False
    while (holder := lock_holder(folder) or lock_holder(folder, CLAIM)) is not None:
        if not said:
            logger.warning(f"waiting for the source search in {folder} (held by pid {holder}) to finish")
            said = True
        time.sleep(SOURCE_POLL_S)


def _finished_search(folder: Path, source: ExperimentConfig, given_folder: bool) -> dict | None:
    """The search result ``folder`` holds for ``source`` (same config and seed), None when it holds none yet.

    Raises:
        UserError: the folder holds another config's run, or a failed one, or (``given_folder``: a run folder
            named by ``transfer_from``) no finished search.
    """
    record = _read_json(folder / "record.json")
    saved = folder / "config.yaml"
    if record is not None and record.get("status") == "failed":
        raise UserError(f"the source run in {folder} failed ({record.get('error')}); rerun it (delete its "
                        "record.json and pass --resume), or name another source")  # fmt: skip
    if saved.is_file() and not _holds_config(folder, source):
        raise UserError(f"{folder} holds a run of another config than the source search "
                        f"{source.run_name} ({source.hash()[:8]}); pass --source-run to a new folder")  # fmt: skip
    found = _read_json(folder / "search_result.json")
    if found is None and given_folder:
        raise UserError(f"transfer_from: {folder} holds no finished search (no search_result.json); finish it "
                        f"with egsbench run {folder / 'config.yaml'} --out {folder} --resume")  # fmt: skip
    return found


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise UserError(f"{path} cannot be read ({err}); move it away and run again") from None


def _transfer_source(cfg: ExperimentConfig, out_dir: Path, progress: bool, resume: bool,
                     source_run: str | Path | None) -> TransferSource:  # fmt: skip
    """The finished search a transfer config takes its cell from; runs it first when it does not exist yet."""
    transfer = cfg.transfer
    source = cfg.source_config()
    if transfer.is_run_folder:
        if source_run is not None:
            raise UserError(f"--source-run is for a transfer from a config; transfer_from already names the run "
                            f"folder {transfer.source}")  # fmt: skip
        folder = Path(transfer.source).expanduser()
        mine, theirs = cfg.to_dict(), source.to_dict()
        differ = [k for k in ("method", "space", "search") if mine[k] != theirs[k]]
        if differ:
            raise UserError(f"transfer_from: {folder} was searched with other {', '.join(differ)} values than this "
                            "config gives; drop those --set values (a finished search cannot change)")  # fmt: skip
        return TransferSource(_finished_search(folder, source, given_folder=True), folder, source, transfer.source)
    folder = Path(source_run) if source_run is not None else out_dir / SOURCE_DIR
    accelerator = _accelerator(cfg)
    _wait_for(folder)  # every rank looks, then all meet: no rank sees the lock the main one takes next
    accelerator.wait_for_everyone()
    found = agree(accelerator, lambda: _finished_search(folder, source, given_folder=False))
    if found is not None:
        logger.info(f"transfer: reusing the {source.task_name} search in {folder}")
    else:
        logger.info(f"transfer: {source.method_name} searches on {source.task_name} into {folder} first")
        found = run_search(source, folder, progress, resume)
    return TransferSource(found, folder, source, transfer.source)


DATA_FILE = "data.json"  # the data a run started on (source, absolute path, checksum): what --resume must match


def data_identity(data) -> dict:
    """Where the run's data came from and what it was: its source, that source's absolute path, its checksum.

    Resolved once per run, in the working directory the run started in (the record's and data.json's)."""
    _, _, location = data.source.partition(":")  # "<kind>:<location>", e.g. imagefolder:data
    path = Path(location) if location else None
    resolved = str(path.resolve()) if path is not None and path.exists() else None
    return {"source": data.source, "path": resolved, "sha256": data.sha256}


def _check_data(out_dir: Path, identity: dict) -> None:
    """Refuse to resume a run on other data than it started on (a relative data_dir read from elsewhere)."""
    saved = out_dir / DATA_FILE
    if not saved.exists():
        return
    try:
        before = json.loads(saved.read_text())
    except (OSError, ValueError):
        return  # torn: the config check and the checkpoints still guard the run
    if before.get("sha256") != identity["sha256"]:
        def where(d: dict) -> str:
            return f"{d.get('path') or d.get('source')} (sha256 {str(d.get('sha256'))[:12]})"

        raise UserError(f"{out_dir} was started on the data {where(before)} but this run reads {where(identity)}; "
                        "resume with the same data (an absolute task.data_dir) or pass a new --out")  # fmt: skip


def _run_experiment(cfg: ExperimentConfig, out_dir: Path, progress: bool, resume: bool,
                    log_with: list[str] | None, source_run: str | Path | None = None) -> RunResult:  # fmt: skip
    """:func:`run_experiment` once the thread count is set."""
    POSITION.reset()
    try:
        source = None
        if cfg.transfer is not None:
            source = _transfer_source(cfg, out_dir, progress, resume, source_run)
            POSITION.reset()
        return _claim_and_execute(cfg, out_dir, progress, resume, log_with, source=source)
    except RunInterrupted:
        raise
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM as the CLI raises it: say where, and what resumes
        raise RunInterrupted(POSITION, getattr(err, "exit_code", 130)) from None


def _claim_and_execute(cfg: ExperimentConfig, out_dir: Path, progress: bool, resume: bool,
                       log_with: list[str] | None, search_only: bool = False,
                       source: TransferSource | None = None) -> RunResult | dict:  # fmt: skip
    apply_determinism(cfg.deterministic)
    accelerator = _accelerator(cfg, log_with, out_dir)  # joins the process group, if there is one
    check_launch(accelerator)
    _debug_delay(accelerator)
    agree(accelerator, lambda: _check_folder(cfg, out_dir, resume), main_only=True)  # before any data is read
    task = TASKS.get(cfg.task_name)(cfg.task)
    data = agree(accelerator, task.prepare_data)  # before any output, so missing data leaves nothing behind
    identity = data_identity(data)
    with ExitStack() as held:

        def claim() -> None:  # the main process's: the lock, then the checks again, now that nobody else writes
            held.enter_context(run_lock(out_dir))
            _check_folder(cfg, out_dir, resume, probe_lock=False)
            _check_data(out_dir, identity)

        agree(accelerator, claim, main_only=True)
        try:
            return _execute(cfg, out_dir, accelerator, task, data, identity, progress, log_with, search_only, source)
        except DivergedError as err:
            if accelerator.is_main_process:
                failed_record(cfg, out_dir, str(err), accelerator.num_processes, cfg.mixed_precision,
                              cfg.deterministic)  # fmt: skip
            raise


def _execute(cfg: ExperimentConfig, out_dir: Path, accelerator: Accelerator, task, data, identity: dict,
             progress: bool, log_with: list[str] | None, search_only: bool = False,
             source: TransferSource | None = None) -> RunResult | dict:  # fmt: skip
    """The body of :func:`run_experiment` (``search_only``: of :func:`run_search`, returning the search result),
    inside the run folder's lock. A transfer's search result is its ``source``'s."""
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        atomic_write_text(out_dir / DATA_FILE, json.dumps(identity, indent=1))
    run_name = cfg.run_name
    scaled, scaling = _scale_for_processes(cfg, accelerator.num_processes)
    if log_with:
        accelerator.init_trackers(run_name, config=_flat(cfg.to_dict()))

    def log(values: dict, step: int) -> None:
        accelerator.log({k: v for k, v in values.items() if isinstance(v, (int, float))}, step=step)

    searched = out_dir / "search_result.json"
    found = None
    if accelerator.is_main_process and searched.exists():  # the main process's file; the others are told
        found = json.loads(searched.read_text())
    found = broadcast_object_list([found], from_process=0)[0] if accelerator.num_processes > 1 else found
    if found is not None:
        logger.info("search already finished; using its result")
    elif source is not None:  # the cell of a search on another task (transfer_from)
        found = source.found
        if accelerator.is_main_process:
            write_json(searched, found)
    else:
        logger.info(f"{cfg.method_name} on {cfg.task_name} ({cfg.preset}, seed {cfg.seed}): search")
        found = search(scaled, task, accelerator, progress, out_dir / "checkpoints" / "search", log)
        if accelerator.is_main_process:
            write_json(searched, found)
    genotype = Genotype.from_dict(found["genotype"])  # every rank's: search() broadcast rank 0's
    if search_only:
        if accelerator.is_main_process:
            write_json(out_dir / "genotype.json", genotype.to_dict())  # atomic, as every file of a run folder
        accelerator.wait_for_everyone()
        return found
    POSITION.enter("evaluate")
    logger.info(f"derived genotype {genotype.to_json()}")
    logger.info("evaluate: training the derived network from scratch")
    eval_accelerator = _accelerator(cfg)
    final = evaluate(scaled, task, genotype, eval_accelerator, progress, out_dir / "checkpoints" / "evaluate", log)
    POSITION.enter("results")
    test = final["test"]
    # The record's precision is the final training's, the phase its metrics come from.
    record = _identity(cfg, accelerator.num_processes, cfg.mixed_precision, cfg.deterministic) | {
        "status": "ok",
        "error": None,
        "metrics": {
            **{f"test_{m.name}": test.get(m.name) for m in task.metrics},
            "params_m": final["params"] / 1e6,
            "macs_m": final["macs"] / 1e6,
            "search_val_score": found["derive_score"],
        },
        "genotype": genotype.to_dict(),
        "search": found["cost"] | {"signal": found.get("signal")},  # no signal in results written before it
        "evaluate": final["cost"],
        "data": {**identity, "sizes": dict(data.sizes)},
        "manifest": manifest(_device_name(accelerator), _determinism(cfg.seed)),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    extras = _extras(data, final["curves"])
    if "count" in test:  # the test examples (tokens, pixels) the metrics summed over all processes
        extras["test_count"] = test["count"]
    for part in (task, cfg.method, source):  # optional hooks: ImageNet's fitted width, where the cell came from
        hook = getattr(part, "record_extras", None)
        extras |= hook() if callable(hook) else {}
    if accelerator.num_processes > 1 or cfg.lr_scaling != "none":
        extras["scaling"] = scaling
    if cfg.search_mixed_precision != "no":
        extras["search_mixed_precision"] = cfg.search_mixed_precision
    if extras:
        record["extras"] = extras
    if accelerator.is_main_process:
        write_json(out_dir / "genotype.json", genotype.to_dict())
        _save_weights(final["model"], out_dir / MODEL_FILE, genotype, run_name)
        write_csv(out_dir / "search_curves.csv", found["curves"])
        write_csv(out_dir / "eval_curves.csv", final["curves"])
        write_json(out_dir / "arch_probabilities.json", found["probabilities"])
        _write_figures(cfg, out_dir, genotype, found, final)
        write_record(out_dir / "record.json", record)  # last: its presence marks a complete run
    accelerator.wait_for_everyone()
    if log_with:
        accelerator.end_training()
    return RunResult(record, out_dir, genotype, found["curves"], final["curves"])

"""The two phases of a run: the architecture search (with its derivation) and the final training.

Each says what one epoch does and hands it to the :class:`~.driver.EpochDriver`, which resumes, logs,
checks and checkpoints both the same way. The search runs in fp32 unless ``search_mixed_precision`` says
otherwise; a method that trains no supernet (``trains_supernet = False``) gets none built.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object, set_seed
from torch.utils.data import DataLoader

from ..core.errors import UserError
from ..core.genotype import Genotype
from ..methods import METHODS, SearchContext
from ..methods.signal import learned_distribution, mean_entropy, search_signal
from ..tasks.spaces import SPACES, EdgeWeights, count_macs, count_parameters
from .config import ExperimentConfig, candidate_recipe
from .driver import POSITION, DivergedError, EpochDriver, LogFn, Phase, check_finite, steps_of
from .launch import (
    autocast,
    autocast_loss,
    compute_dtype,
    make_accelerator,
    mean_over_processes,
    prepare_eval_loader,
)
from .speed import compile_network, compile_supernet, lay_out

__all__ = ["arch_entropy", "evaluate_split", "search", "train_epoch", "train_final"]

arch_entropy = mean_entropy  # the search curves' per-epoch column (of what probabilities() reports)


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
        raise UserError(
            "no evaluation batches on any process: the split is empty; raise task.test_limit / "
            "task.train_limit or use a larger data set"
        )
    return task.summarize(total.cpu())


def _evaluator(task, net, accelerator: Accelerator, batch_size: int) -> Callable[[str], dict]:
    """``evaluate(split)``: the task's metrics of ``net`` on ``split``, each split's loader prepared once."""
    loaders: dict[str, Any] = {}

    def evaluate(split: str) -> dict:
        if split not in loaders:
            loaders[split] = prepare_eval_loader(accelerator, task.loader(split, batch_size))
        return evaluate_split(task, net, loaders[split], accelerator)

    return evaluate


def train_epoch(
    task,
    net,
    optimizer,
    loader,
    recipe,
    epoch: int,
    accelerator: Accelerator,
    bar=None,
    evaluate: Callable[[str], dict] | None = None,
    precision: str = "no",
) -> dict:
    """One epoch of the task's final-training recipe; returns its curve row.

    The task sets the epoch up (``start_epoch``: lr schedule, drop path, hidden state), gives each
    step's loss (``train_loss``) and closes the epoch (``end_epoch``: e.g. validation and an optimiser
    switch, through ``evaluate(split)``); the runner backpropagates, clips and steps. Loss averages
    divide by the steps taken: a task's plain iterable may estimate its length (variable BPTT).
    """
    steps = steps_of(loader, recipe.max_steps_per_epoch)
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
        examples += task.count_examples(batch)
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
    directions = {m.name: m.direction for m in task.metrics}
    return -1.0 if directions.get(task.score_key) == "min" else 1.0


def _cycle(loader) -> Iterator[Any]:
    while True:  # a fresh pass (and shuffle) each time the loader is exhausted
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:  # an endless loop otherwise
            raise UserError(
                "the search-val split has no batches; raise task.train_limit (search-train and "
                "search-val are its halves) or lower search.batch_size"
            )


def _lists(probabilities: dict[str, torch.Tensor] | None) -> dict[str, list] | None:
    return None if probabilities is None else {t: p.tolist() for t, p in probabilities.items()}


def _tensors(probabilities: dict[str, list] | None) -> dict[str, torch.Tensor] | None:
    if probabilities is None:
        return None
    return {t: torch.tensor(p, dtype=torch.float64) for t, p in probabilities.items()}


class SearchPhase(Phase):
    """The search epochs: the method's steps on search-train (and search-val batches for bilevel methods)."""

    name = "search"

    def __init__(
        self,
        method,
        task,
        model,
        train_loader,
        val_loader,
        generators,
        epochs: int,
        steps: int,
        accelerator: Accelerator,
        method_name: str,
        space=None,
    ):
        self.method, self.task, self.model, self.accelerator = method, task, model, accelerator
        self.space = space  # the searched space: the task's per-epoch measures (Task.search_measure) read it
        self.train_loader, self.val_loader, self.generators = train_loader, val_loader, generators
        self.desc, self.epochs, self.steps = f"search {method_name}", epochs, steps
        self.initial = learned_distribution(method)  # before any step: where the search signal is measured from
        self.history: list[dict] = []  # per epoch: {cell type: (E, K) probabilities as lists}
        self.examples = 0

    def train(self, epoch: int, bar) -> dict:
        self.method.start_epoch(epoch)
        self.model.train()
        val_iter = _cycle(self.val_loader)  # restarted each epoch, so a resumed epoch sees the same batches
        totals: dict[str, float] = {}
        for i, batch in enumerate(self.train_loader):
            if i >= self.steps:
                break
            stats = self.method.step(batch, next(val_iter))
            self.examples += self.task.count_examples(batch)
            values = mean_over_processes(self.accelerator, {"loss": stats.loss, **stats.metrics, **stats.extras})
            check_finite("search", epoch, i, values)
            for key, value in values.items():
                totals[key] = totals.get(key, 0.0) + value
            bar.update()
            bar.set_postfix(loss=f"{values['loss']:.3f}", **{k: f"{values[k]:.3g}" for k in stats.extras})
        return {k: v / self.steps for k, v in totals.items()}

    def measure(self, epoch: int, row: dict) -> dict:
        probs = {t: p.detach().cpu() for t, p in self.method.probabilities().items()}
        self.history.append({t: p.tolist() for t, p in probs.items()})
        learned = learned_distribution(self.method)  # the task's own measures, e.g. NAS-Bench-201's gt_* columns
        return {"arch_entropy": arch_entropy(probs)} | self.task.search_measure(self.space, learned)

    def finite(self) -> dict:
        return {f"{t}-cell architecture probabilities": p for t, p in self.history[-1].items()}

    def state(self) -> dict:
        train_gen, val_gen = self.generators
        return {"method": self.method.state_dict(), "train_gen": train_gen.get_state(), "val_gen": val_gen.get_state()}

    def progress(self) -> dict:
        return {"probabilities": self.history, "examples": self.examples, "initial": _lists(self.initial)}

    def restore(self, state: dict, progress: dict) -> None:
        if "initial" in progress:  # absent from checkpoints written before the search signal
            self.initial = _tensors(progress["initial"])
        self.method.load_state_dict(state["method"])
        self.generators[0].set_state(state["train_gen"])
        self.generators[1].set_state(state["val_gen"])
        self.history = progress["probabilities"]
        self.examples = progress.get("examples", 0)  # absent from checkpoints written before it was counted

    def signal(self, genotype: Genotype) -> dict | None:
        """The record's ``search.signal`` (:mod:`egsbench.methods.signal`); None for methods that learn no
        distribution."""
        final = learned_distribution(self.method)
        if self.initial is None or final is None:
            return None
        before = self.method.derive_from_distribution(self.initial)
        return search_signal(self.initial, final, genotype if before is not None else None, before)


def _candidate_trainer(cfg: ExperimentConfig, task, val_loader, sign: float) -> Callable[[Genotype], float]:
    """``SearchContext.train_candidate``: a final network of the genotype trained briefly on search-train with the
    method's candidate recipe and scored on search-val (DARTS's selection protocol)."""

    def train_candidate(genotype: Genotype) -> float:
        recipe = candidate_recipe(cfg.evaluate, METHODS.get(cfg.method_name), cfg.method)
        acc = make_accelerator(cfg)  # its own, so the search's checkpoints hold only the supernet
        set_seed(cfg.seed)  # every candidate starts from the same seed, whatever the order
        net = task.build_network(genotype, recipe)
        lay_out(net, cfg.memory_format, acc.device, compute_dtype(cfg.mixed_precision))
        optimizer = task.make_optimizer(net, recipe)
        loader = task.loader("search-train", recipe.batch_size, torch.Generator().manual_seed(cfg.seed + 2), recipe)
        net, optimizer, loader = acc.prepare(net, optimizer, loader)

        def on_search_val(split: str) -> dict:  # the candidate never sees the final-training splits
            return evaluate_split(task, net, val_loader, acc)

        with torch.enable_grad():  # a method may call this from inside its own no_grad derivation
            for epoch in range(recipe.epochs):
                train_epoch(
                    task,
                    net,
                    optimizer,
                    loader,
                    recipe,
                    epoch,
                    acc,
                    evaluate=on_search_val,
                    precision=cfg.mixed_precision,
                )
        with task.eval_weights(net, optimizer):
            return sign * evaluate_split(task, net, val_loader, acc)[task.score_key]

    return train_candidate


def search(
    cfg: ExperimentConfig, task, accelerator: Accelerator, progress: bool, folder: Path, log: LogFn | None = None
) -> dict:
    """Run the architecture search and derivation; returns the genotype and the search's costs and curves.

    Checkpoints after every epoch under ``folder`` and resumes from the newest one found there.
    """
    space = SPACES.get(cfg.space)
    driver = EpochDriver(folder, accelerator, progress, log)  # its memory probe: supernet, search, derivation
    set_seed(cfg.seed)
    method = METHODS.get(cfg.method_name)(cfg.method)
    supernet = layout = None
    if method.trains_supernet:
        supernet = task.build_supernet(space, cfg.search)
        layout = lay_out(supernet, cfg.memory_format, accelerator.device, compute_dtype(cfg.search_mixed_precision))
    # compile: true compiles the supernet's forward only for dense methods (the sampled ones would recompile every
    # step: docs/benchmarks.md#speed)
    compiled = bool(cfg.compile and supernet is not None and method.dense_weights and compile_supernet(supernet))
    bs = cfg.search.batch_size
    generators = torch.Generator().manual_seed(cfg.seed), torch.Generator().manual_seed(cfg.seed + 1)
    train_loader = task.loader("search-train", bs, generators[0])
    val_loader = task.loader("search-val", bs, generators[1])
    if supernet is None:
        model, (train_loader, step_val_loader) = None, accelerator.prepare(train_loader, val_loader)
    else:
        model, train_loader, step_val_loader = accelerator.prepare(supernet, train_loader, val_loader)
    # Two views of search-val: the steps' (even shards, as the training batches: every rank takes the same
    # number of steps and restarts its pass at the same step) and the scores' (no padding: each sample once).
    val_loader = prepare_eval_loader(accelerator, val_loader)
    steps = steps_of(train_loader, cfg.search.max_steps_per_epoch)
    sign = _score_sign(task)
    ctx = SearchContext(
        model=model,
        space=space,
        loss=autocast_loss(task.search_loss, cfg.search_mixed_precision, accelerator.device),
        config=cfg.search,
        steps_per_epoch=steps,
        seed=cfg.seed,
        op_costs=task.op_costs(supernet) if supernet is not None else None,
        backward=accelerator.backward,
        device=accelerator.device,
        train_candidate=_candidate_trainer(cfg, task, val_loader, sign),
    )
    method.setup(ctx)
    epochs = cfg.search.epochs if method.trains_supernet else 0  # e.g. the DARTS random baseline: derivation only
    phase = SearchPhase(
        method,
        task,
        model,
        train_loader,
        step_val_loader,
        generators,
        epochs,
        steps,
        accelerator,
        cfg.method_name,
        space,
    )
    curves = driver.run(phase)

    def score(weights: EdgeWeights, batches: int | None = cfg.search.score_batches) -> float:
        if model is None:
            raise UserError(f"method {cfg.method_name} trains no supernet, so it cannot score edge weights on one")
        return sign * evaluate_split(task, model, val_loader, accelerator, weights, batches)[task.score_key]

    POSITION.enter("derivation")
    start = time.perf_counter()
    genotype = method.derive(score)
    # Every rank derived (scoring is collective); rank 0's genotype is the run's, whatever float noise did elsewhere.
    genotype = Genotype.from_dict(broadcast_object_list([genotype.to_dict()], from_process=0)[0])
    space.validate(genotype)
    derive_seconds = time.perf_counter() - start
    # NaN weights after the last step leave the losses finite but the candidates' search-val scores NaN
    check_finite(
        "search",
        max(phase.epochs - 1, 0),
        max(phase.steps - 1, 0),
        {"search-val score of the derived genotype": method.derive_score},
    )
    cost = driver.cost(phase, phase.examples, extra_seconds=derive_seconds, unit=task.example_unit)
    return {
        "genotype": genotype.to_dict(),
        "signal": phase.signal(genotype),
        "curves": curves,
        "probabilities": phase.history,
        "cost": {
            "wall_time_s": cost.pop("wall_time_s"),
            "derive_wall_time_s": derive_seconds,
            **cost,
            "memory_format": layout,
            "compiled": compiled,
        },
        "derive_score": method.derive_score,
        "ground_truth": task.ground_truth(genotype),  # a tabular benchmark's numbers of the cell (NAS-Bench-201)
    }


class FinalPhase(Phase):
    """The final-training epochs: the task's recipe, and the test metrics every ``eval_every`` epochs."""

    name, desc = "evaluate", "evaluate"

    def __init__(self, task, net, optimizer, train_loader, test_loader, generator, recipe, accelerator, precision):
        self.task, self.net, self.optimizer, self.recipe = task, net, optimizer, recipe
        self.train_loader, self.test_loader, self.generator = train_loader, test_loader, generator
        self.accelerator, self.precision = accelerator, precision
        self.epochs, self.steps = recipe.epochs, steps_of(train_loader, recipe.max_steps_per_epoch)
        self.evaluate_on = _evaluator(task, net, accelerator, recipe.batch_size)
        self.test: dict = {}

    def train(self, epoch: int, bar) -> dict:
        ev, task = self.recipe, self.task
        row = train_epoch(
            task,
            self.net,
            self.optimizer,
            self.train_loader,
            ev,
            epoch,
            self.accelerator,
            bar,
            self.evaluate_on,
            precision=self.precision,
        )
        if epoch == ev.epochs - 1 or (ev.eval_every > 0 and (epoch + 1) % ev.eval_every == 0):
            with task.eval_weights(self.net, self.optimizer):  # e.g. ASGD's averaged weights
                self.test = evaluate_split(task, self.net, self.test_loader, self.accelerator)
            row |= {f"test_{k}": v for k, v in self.test.items() if k != "count"}
        return row

    def state(self) -> dict:
        return {"train_gen": self.generator.get_state()}

    def progress(self) -> dict:
        return {"test": self.test}

    def restore(self, state: dict, progress: dict) -> None:
        self.generator.set_state(state["train_gen"])
        self.test = progress["test"]


def train_final(
    cfg: ExperimentConfig,
    task,
    genotype: Genotype,
    accelerator: Accelerator,
    progress: bool,
    folder: Path,
    log: LogFn | None = None,
) -> dict:
    """Train the derived network from scratch with the task's recipe; test on the official test split.

    Checkpoints after every epoch under ``folder`` and resumes from the newest one found there.
    """
    ev = cfg.evaluate
    driver = EpochDriver(folder, accelerator, progress, log)  # its memory probe: this phase's own peak
    set_seed(cfg.seed)
    net = task.build_network(genotype, ev)
    layout = lay_out(net, cfg.memory_format, accelerator.device, compute_dtype(cfg.mixed_precision))
    params = count_parameters(net)
    net.eval()
    example = task.example_input()
    macs = count_macs(net, *(example if isinstance(example, tuple) else (example,))).total
    net.train()
    if cfg.compile:
        compile_network(net)
    fast_path = {"memory_format": layout, "compiled": cfg.compile}  # what the record says this phase ran
    optimizer = task.make_optimizer(net, ev)
    generator = torch.Generator().manual_seed(cfg.seed + 2)
    train_loader = task.loader("train", ev.batch_size, generator, recipe=ev)
    test_loader = task.loader("test", ev.batch_size)
    net, optimizer, train_loader = accelerator.prepare(net, optimizer, train_loader)
    test_loader = prepare_eval_loader(accelerator, test_loader)  # every test sample counts exactly once
    phase = FinalPhase(task, net, optimizer, train_loader, test_loader, generator, ev, accelerator, cfg.mixed_precision)
    curves = driver.run(phase)
    model = accelerator.unwrap_model(net)
    with task.eval_weights(net, optimizer):  # the weights the test metrics were measured with
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    examples = sum(row.get("examples", 0) for row in curves)
    return {
        "model": model,
        "curves": curves,
        "test": phase.test,
        "params": params,
        "macs": macs,
        "cost": driver.cost(phase, examples, unit=task.example_unit) | fast_path,
    }

"""search -> derive -> train the derived network, on HuggingFace accelerate: the orchestrator.

It wires a task, a method and the two phases (:mod:`.phases`) to a run folder (:mod:`.run_folder`) and the
processes of a launch (:mod:`.launch`), and writes the record. The same code runs on a laptop CPU and under
``torchrun`` / ``accelerate launch`` on several GPUs: only the main process checks and locks the run folder,
the others wait for its verdict, and a user mistake on any rank stops every rank. A transfer config
(``transfer_from``) first finds or runs its source search (:mod:`.transfer`).
"""

from __future__ import annotations

import dataclasses
import json
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import broadcast_object_list

from ..core.errors import UserError
from ..core.genotype import Genotype
from ..methods import METHODS
from ..tasks import TASKS
from .config import ExperimentConfig
from .driver import POSITION, DivergedError, RunInterrupted
from .launch import agree, apply_determinism, check_launch, debug_delay, make_accelerator, threads
from .phases import search, train_final
from .records import write_json
from .run_folder import (
    check_data,
    check_folder,
    data_identity,
    failed_record,
    ok_record,
    run_lock,
    write_outputs,
    write_start,
)
from .transfer import TransferSource, transfer_source

__all__ = ["RunResult", "run_experiment", "run_search"]

logger = get_logger(__name__)


@dataclass
class RunResult:
    record: dict
    out_dir: Path
    genotype: Genotype
    search_curves: list[dict] = field(default_factory=list)
    eval_curves: list[dict] = field(default_factory=list)


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
    (default ``<out_dir>/source``).
    """
    with threads(cfg):
        out_dir = Path(out_dir)
        POSITION.reset()
        try:
            source = None
            if cfg.transfer is not None:
                source = transfer_source(cfg, out_dir, progress, resume, source_run, run_search)
                POSITION.reset()
            return _claim_and_execute(cfg, out_dir, progress, resume, log_with, source=source)
        except RunInterrupted:
            raise
        except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM as the CLI raises it: say where, and what resumes
            raise RunInterrupted(POSITION, getattr(err, "exit_code", 130)) from None


def run_search(cfg: ExperimentConfig, out_dir: str | Path, progress: bool = True, resume: bool = False) -> dict:
    """The search and derivation of ``cfg`` alone, into ``out_dir``: its ``search_result.json`` and
    ``genotype.json`` (no final training, no record). The folder stays a run folder of ``cfg``:
    ``egsbench run CONFIG --out DIR --resume`` later trains the cell and writes the record.

    Returns:
        the search result (``genotype``, ``cost``, ``curves``, ``probabilities``, ``derive_score``).
    """
    if cfg.transfer is not None:
        raise UserError(f"{cfg.run_name} transfers a cell searched elsewhere (transfer_from); search with its source")
    with threads(cfg):
        POSITION.reset()
        return _claim_and_execute(cfg, Path(out_dir), progress, resume, None, search_only=True)


def _claim_and_execute(
    cfg: ExperimentConfig,
    out_dir: Path,
    progress: bool,
    resume: bool,
    log_with: list[str] | None,
    search_only: bool = False,
    source: TransferSource | None = None,
) -> RunResult | dict:
    """Set up the processes, check and lock the run folder, read the data, then run (failed record on divergence)."""
    apply_determinism(cfg.deterministic)
    accelerator = make_accelerator(cfg, log_with, out_dir)  # joins the process group, if there is one
    check_launch(accelerator)
    debug_delay(accelerator)
    agree(accelerator, lambda: check_folder(cfg, out_dir, resume), main_only=True)  # before any data is read
    task = TASKS.get(cfg.task_name)(cfg.task)
    data = agree(accelerator, task.prepare_data)  # before any output, so missing data leaves nothing behind
    data_id = data_identity(data)
    with ExitStack() as held:

        def claim() -> None:  # the main process's: the lock, then the checks again, now that nobody else writes
            held.enter_context(run_lock(out_dir))
            check_folder(cfg, out_dir, resume, probe_lock=False)
            check_data(out_dir, data_id)

        agree(accelerator, claim, main_only=True)
        try:
            return _execute(cfg, out_dir, accelerator, task, data, data_id, progress, log_with, search_only, source)
        except DivergedError as err:
            if accelerator.is_main_process:
                failed_record(cfg, out_dir, str(err), accelerator.num_processes, cfg.mixed_precision, cfg.deterministic)
            raise


def _execute(
    cfg: ExperimentConfig,
    out_dir: Path,
    accelerator: Accelerator,
    task,
    data,
    data_id: dict,
    progress: bool,
    log_with: list[str] | None,
    search_only: bool = False,
    source: TransferSource | None = None,
) -> RunResult | dict:
    """Inside the run folder's lock: the search (or its saved result, or a transfer's source), then the final
    training and the record (``search_only``: the search result alone)."""
    if accelerator.is_main_process:
        write_start(out_dir, cfg, data_id)
    scaled, scaling = _scale_for_processes(cfg, accelerator.num_processes)
    if log_with:
        accelerator.init_trackers(cfg.run_name, config=_flat(cfg.to_dict()))

    def log(values: dict, step: int) -> None:
        accelerator.log({k: v for k, v in values.items() if isinstance(v, (int, float))}, step=step)

    found = _found_search(cfg, out_dir, accelerator, scaled, task, progress, log, source)
    genotype = Genotype.from_dict(found["genotype"])  # every rank's: the search broadcast rank 0's
    if search_only:
        if accelerator.is_main_process:
            write_json(out_dir / "genotype.json", genotype.to_dict())  # atomic, as every file of a run folder
        accelerator.wait_for_everyone()
        return found
    POSITION.enter("evaluate")
    logger.info(f"derived genotype {genotype.to_json()}")
    logger.info("evaluate: training the derived network from scratch")
    final = train_final(
        scaled, task, genotype, make_accelerator(cfg), progress, out_dir / "checkpoints" / "evaluate", log
    )
    POSITION.enter("results")
    hooks = task.record_extras() | METHODS.get(cfg.method_name).record_extras(cfg.method)  # ImageNet's width, ...
    if source is not None:
        hooks |= source.record_extras()  # which search a transferred cell came from
    if accelerator.num_processes > 1 or cfg.lr_scaling != "none":
        hooks["scaling"] = scaling
    record = ok_record(cfg, accelerator, task, data, data_id, genotype, found, final, hooks)
    if accelerator.is_main_process:
        write_outputs(out_dir, cfg, genotype, found, final, record)
    accelerator.wait_for_everyone()
    if log_with:
        accelerator.end_training()
    return RunResult(record, out_dir, genotype, found["curves"], final["curves"])


def _found_search(
    cfg: ExperimentConfig,
    out_dir: Path,
    accelerator: Accelerator,
    scaled: ExperimentConfig,
    task,
    progress: bool,
    log,
    source: TransferSource | None,
) -> dict:
    """The run's search result: saved by an earlier attempt, a transfer's source, or searched now (and saved)."""
    searched = out_dir / "search_result.json"
    found = None
    if accelerator.is_main_process and searched.exists():  # the main process's file; the others are told
        found = json.loads(searched.read_text())
    found = broadcast_object_list([found], from_process=0)[0] if accelerator.num_processes > 1 else found
    if found is not None:
        logger.info("search already finished; using its result")
        return found
    if source is not None:  # the cell of a search on another task (transfer_from)
        found = source.found
    else:
        logger.info(f"{cfg.method_name} on {cfg.task_name} ({cfg.preset}, seed {cfg.seed}): search")
        found = search(scaled, task, accelerator, progress, out_dir / "checkpoints" / "search", log)
    if accelerator.is_main_process:
        write_json(searched, found)
    return found


def _scale_for_processes(cfg: ExperimentConfig, world: int) -> tuple[ExperimentConfig, dict]:
    """The config the phases train with, and what scaling did: batch sizes are per process; with
    ``lr_scaling: linear`` each block's declared ``lr_fields`` grow with the world size."""
    factor = world if cfg.lr_scaling == "linear" else 1
    scaled = cfg
    if factor != 1:
        blocks = {}
        for name, block in (("search", cfg.search), ("evaluate", cfg.evaluate)):
            blocks[name] = dataclasses.replace(block, **{k: getattr(block, k) * factor for k in block.lr_fields})
        scaled = dataclasses.replace(cfg, **blocks)
    info = {"world_size": world, "lr_scaling": cfg.lr_scaling, "lr_factor": factor}
    info["search_effective_batch_size"] = cfg.search.batch_size * world
    info["evaluate_effective_batch_size"] = cfg.evaluate.batch_size * world
    return scaled, info


def _flat(config: dict, prefix: str = "") -> dict:
    """Dotted scalar items of a nested config, as trackers' hyperparameter tables want them."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out

"""The epoch driver both phases run on: resume, progress, logging, finite checks, checkpoints and cost.

A phase (the search, the final training) says what one epoch does (:class:`Phase`); the driver does the
rest the same way for both, and tracks where the run is (:data:`POSITION`) for the interrupt message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from tqdm.auto import tqdm

from ..core.errors import UserError
from .checkpoint import Checkpointer
from .memory import MB, MemoryProbe

__all__ = ["POSITION", "DivergedError", "EpochDriver", "Phase", "RunInterrupted", "RunPosition", "check_finite"]

logger = get_logger(__name__)
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


def check_finite(phase: str, epoch: int, step: int, values: dict) -> None:
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
        places = {
            "setup": "the set-up (before the search)",
            "derivation": "the derivation",
            "results": "the writing of the results",
        }
        return places.get(self.phase, self.phase)

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


class Phase:
    """What a phase gives the driver: one epoch's work and the state a checkpoint keeps beyond the curves."""

    name: str  # "search" | "evaluate": the checkpoint folder, the log prefix and the interrupt message
    desc: str  # the progress bar's label
    epochs: int
    steps: int  # per epoch

    def train(self, epoch: int, bar) -> dict:
        """One epoch's steps (timed); returns its curve values."""
        raise NotImplementedError

    def measure(self, epoch: int, row: dict) -> dict:
        """Untimed values of the finished epoch added to its curve row (e.g. the architecture entropy)."""
        return {}

    def finite(self) -> dict:
        """Beyond the curve row, what must be finite before the checkpoint (e.g. architecture probabilities)."""
        return {}

    def state(self) -> dict:
        """Tensors the checkpoint's ``state.pt`` keeps (method state, data-order generators)."""
        return {}

    def progress(self) -> dict:
        """JSON values the checkpoint's ``progress.json`` keeps beside the curves and the elapsed time."""
        return {}

    def restore(self, state: dict, progress: dict) -> None:
        """Load what :meth:`state` and :meth:`progress` saved."""


@dataclass
class EpochDriver:
    """Runs a :class:`Phase`'s epochs from its newest checkpoint on, checkpointing after each one."""

    folder: Path  # the phase's checkpoints
    accelerator: Accelerator
    progress: bool = True  # a progress bar on the main process
    log: LogFn | None = None
    curves: list[dict] = field(default_factory=list)
    seconds: float = 0.0  # the phase's training wall time, resumed runs included
    probe: MemoryProbe | None = None

    def __post_init__(self):
        self.probe = MemoryProbe(self.accelerator.device)
        self.probe.start()  # this phase's own peak, from before its model is built

    def run(self, phase: Phase) -> list[dict]:
        ckpt = Checkpointer(self.folder, self.accelerator)
        POSITION.checkpoints[phase.name] = ckpt
        first = 0
        restored = ckpt.restore()
        if restored is not None:
            self.curves, self.seconds = restored.progress["curves"], restored.progress["seconds"]
            phase.restore(restored.state, restored.progress)
            first = restored.epoch + 1
            logger.info(f"resumed the {phase.name} after epoch {restored.epoch}")
        bar = tqdm(
            total=phase.epochs * phase.steps,
            initial=first * phase.steps,
            desc=phase.desc,
            leave=False,
            disable=not (self.progress and self.accelerator.is_main_process),
        )
        try:  # the bar is closed however the phase ends (a diverged epoch): the error line starts its own line
            for epoch in range(first, phase.epochs):
                POSITION.enter(phase.name, epoch)
                start = time.perf_counter()
                row = {"epoch": epoch} | phase.train(epoch, bar)
                self.seconds += time.perf_counter() - start
                row |= phase.measure(epoch, row)
                self.curves.append(row | {"seconds": self.seconds})
                if self.log is not None:
                    self.log({f"{phase.name}/{k}": v for k, v in self.curves[-1].items() if k != "epoch"}, epoch)
                check_finite(phase.name, epoch, phase.steps - 1, self.curves[-1] | phase.finite())
                ckpt.save(epoch, phase.state(), {"curves": self.curves, "seconds": self.seconds, **phase.progress()})
        finally:
            bar.close()
        return self.curves

    def cost(self, phase: Phase, examples: int, extra_seconds: float = 0.0, unit: str = "examples") -> dict:
        """The phase's cost block: wall time, steps, throughput, device hours and its peak memory."""
        world = self.accelerator.num_processes
        steps = phase.epochs * phase.steps
        _, peak = self.probe.stop()
        return {
            "wall_time_s": self.seconds,
            "steps": steps,
            "steps_per_s": steps / self.seconds if self.seconds > 0 else None,
            "device_hours": (self.seconds + extra_seconds) * world / 3600,
            "peak_memory_mb": peak / MB,
            "examples_per_s": examples * world / self.seconds if self.seconds > 0 else None,
            "example_unit": unit,
            "peak_memory_how": self.probe.how,
        }


def steps_of(loader: Any, cap: int | None) -> int:
    """Steps per epoch: the loader's length, capped by ``max_steps_per_epoch``."""
    return len(loader) if cap is None else min(len(loader), cap)

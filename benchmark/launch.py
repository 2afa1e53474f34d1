"""Processes and devices: the accelerator a phase runs on, the launch checks, and agreeing across ranks.

Several processes (``torchrun``, ``accelerate launch --multi_gpu``; gloo on CPUs, NCCL on GPUs): a run joins
the process group on whatever device it runs, with no ``device=cpu`` needed where no accelerator is usable
(:func:`use_cpu`). Only the main process checks and locks the run folder; the others wait for its verdict
(:func:`agree`), and a user mistake on any rank stops every rank.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration

from ..core.errors import UserError
from .checkpoint import first_report
from .config import ExperimentConfig

__all__ = [
    "PeerError",
    "agree",
    "apply_determinism",
    "autocast",
    "autocast_loss",
    "check_launch",
    "compute_dtype",
    "debug_delay",
    "make_accelerator",
    "mean_over_processes",
    "prepare_eval_loader",
    "threads",
    "use_cpu",
]


def make_accelerator(cfg: ExperimentConfig, log_with: list[str] | None = None, project_dir: Path | None = None):
    # One per phase: accelerate's save_state saves every object its accelerator prepared. Always fp32 for
    # accelerate (an explicit "no" overrides a user's accelerate default of fp16; accelerate's precision is
    # fixed per process anyway); bf16, when a config asks, is autocast around the task's losses (autocast()).
    project = None
    if project_dir is not None:  # trackers write under <run folder>/logs/<run name>/
        project = ProjectConfiguration(project_dir=str(project_dir), logging_dir=str(project_dir / "logs"))
    # Sparse supernets run only the ops a step sampled; DDP must be told that parameters may go unused.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    return Accelerator(
        cpu=use_cpu(cfg.device),
        mixed_precision="no",
        log_with=log_with or None,
        project_config=project,
        kwargs_handlers=[ddp],
    )


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
        raise UserError(
            "accelerate launch started one process, not several: without --multi_gpu its simple launcher "
            "needs mpirun for more. Use `accelerate launch --multi_gpu --num_processes N` (on CPUs too: "
            "the run joins with gloo) or `torchrun --nproc_per_node N`"
        )


DELAY_ENV = "EGSBENCH_DEBUG_DELAY"  # "RANK:SECONDS": that rank sleeps once it has joined (tests of a slow rank)


def debug_delay(accelerator: Accelerator) -> None:
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
    # Only on a change: the call imports torch._inductor (3-4 s), which a run that is not deterministic never needs.
    if (
        torch.are_deterministic_algorithms_enabled() != deterministic
        or torch.is_deterministic_algorithms_warn_only_enabled()
    ):
        torch.use_deterministic_algorithms(deterministic, warn_only=False)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic  # DARTS's train*.py set cudnn.benchmark = True


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


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype a phase computes its convolutions in under ``precision`` (``bf16`` autocast, else fp32)."""
    return torch.bfloat16 if precision == "bf16" else torch.float32


def autocast(precision: str, device: torch.device):
    """bf16 autocast when ``precision`` asks for it (no GradScaler needed), else a no-op context."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=compute_dtype(precision))
    return contextlib.nullcontext()


def autocast_loss(fn: Callable, precision: str, device: torch.device) -> Callable:
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


@contextmanager
def threads(cfg: ExperimentConfig):
    """The config's intra-op thread count (recorded in the manifest's device string) for the life of a run; the
    previous count afterwards, so a notebook's or a test session's later runs are not affected."""
    before = torch.get_num_threads()
    try:
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        yield
    finally:
        torch.set_num_threads(before)

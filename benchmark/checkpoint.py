"""Per-epoch checkpoints of a phase (search or evaluate), for ``egsbench run --resume``.

A checkpoint is a folder ``<run>/checkpoints/<phase>/epoch-NNNN``: accelerate's ``save_state``, ``state.pt``
(the method's state and generators, loaded with ``weights_only=True``), ``progress.json`` and, written last,
``manifest.json`` (size and sha256 of every other file). It appears whole or not at all (written under a
temporary name, then renamed), the previous one is kept until a newer one is complete, and ``restore`` skips
a checkpoint that fails its manifest or will not load, with a warning, and uses the one before.

Layout and design notes: docs/records.md#checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import RNG_STATE_NAME, broadcast_object_list, gather_object, load

from ..tasks.spaces import UserError

__all__ = ["CheckpointError", "Checkpointer", "Restored"]

logger = get_logger(__name__)
KEEP = 2  # the newest checkpoint and the one before it, the fallback when the newest is unreadable
MANIFEST = "manifest.json"
KILL_ENV = "EGSBENCH_DEBUG_KILL"  # "PHASE:EPOCH": SIGKILL every rank once that checkpoint is complete (resume tests)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM held back until the block ends, then handled (Python runs the handler on the next line).

    What the block changes on disk and what this process knows of it then agree in any interrupt's report: a
    signal between ``rename`` and the bookkeeping after it told the user ``--resume`` would redo the epoch it had
    just saved. Where signals cannot be masked (Windows, a thread other than the main one, which never runs
    Python's handlers), the block runs as it is."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def debug_kill(phase: str, epoch: int) -> None:
    """Kill this process with SIGKILL (no clean-up, as a crash or the OOM killer) when ``EGSBENCH_DEBUG_KILL``
    names this checkpoint: the resume tests stop a run at an exact point instead of racing it with a timer."""
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    try:
        at_phase, at_epoch = spec.split(":")
        at_epoch = int(at_epoch)
    except ValueError:
        raise UserError(f"{KILL_ENV}={spec!r} must be PHASE:EPOCH, e.g. search:1; unset it for normal runs") from None
    if (at_phase, at_epoch) == (phase, epoch):
        os.kill(os.getpid(), signal.SIGKILL)


class CheckpointError(UserError):
    """No readable checkpoint is left in a run folder that has some."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_manifest(folder: Path) -> None:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    entries = {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in files}
    (folder / MANIFEST).write_text(json.dumps(entries, indent=1))


def verify(folder: Path) -> str | None:
    """None when every file in the checkpoint matches its manifest, else what is wrong."""
    if not (folder / MANIFEST).exists():
        return None  # written before manifests existed: loading it is the only check
    try:
        entries = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as err:
        return f"no readable {MANIFEST} ({err})"
    for name, expected in entries.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected["bytes"] or _sha256(path) != expected["sha256"]:
            return f"{name} is truncated or changed ({path.stat().st_size} of {expected['bytes']} bytes)"
    return None


def first_report(accelerator: Accelerator, report: object | None) -> tuple[int, object] | None:
    """Every rank's ``report`` (None: nothing wrong) shared by one collective: the first rank's and its index.

    The one way ranks agree on a failure (a checkpoint that will not load, a folder refused, missing data)
    before any of them goes on to a collective the failed one would never reach.
    """
    reports = [report] if accelerator.num_processes == 1 else gather_object([report])
    return next(((rank, r) for rank, r in enumerate(reports) if r is not None), None)


@dataclass
class Restored:
    epoch: int  # the last finished epoch
    state: dict  # tensors saved beside accelerate's state
    progress: dict  # JSON-able loop state (curves, elapsed seconds, ...)


class Checkpointer:
    """Save and restore one phase's per-epoch checkpoints under ``folder``."""

    def __init__(self, folder: str | Path, accelerator: Accelerator):
        self.folder = Path(folder)
        self.accelerator = accelerator
        self.newest: int | None = None  # the epoch of the newest complete checkpoint this one saved or restored

    def _epochs(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if p.is_dir() and p.name.startswith("epoch-"))

    def save(self, epoch: int, state: dict, progress: dict) -> Path:
        final = self.folder / f"epoch-{epoch:04d}"
        tmp = self.folder / f".tmp-epoch-{epoch:04d}"
        acc = self.accelerator
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp), safe_serialization=True)
        acc.wait_for_everyone()  # every rank's random states are on disk before the manifest lists them
        if acc.is_main_process:
            torch.save(state, tmp / "state.pt")
            (tmp / "progress.json").write_text(json.dumps({"epoch": epoch, **progress}, allow_nan=False))
            _write_manifest(tmp)
            shutil.rmtree(final, ignore_errors=True)
            with signals_deferred():  # a signal between the two would name the epoch before as the newest
                tmp.rename(final)  # the checkpoint appears whole or not at all
                self.newest = epoch  # complete from here: an interrupt during the clean-up below resumes after it
            for old in self._epochs()[:-KEEP]:  # only once the new one is complete
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        self.newest = epoch  # the other ranks learn it here, once the main process has renamed it
        debug_kill(self.folder.name, epoch)
        return final

    def restore(self) -> Restored | None:
        """Load the newest readable checkpoint into the prepared objects; None when there is none.

        A checkpoint that fails verification or loading is skipped with a warning (and left on
        disk for inspection); the one before it is used. Every file counts: accelerate's
        ``load_state`` only logs a random-state file it cannot load and goes on, so that file is
        loaded here first (as accelerate loads it) and a failure rejects the checkpoint. Under
        several processes the main process verifies the manifest and every rank tries its own
        files; they agree on one checkpoint (or on none) before any rank goes on.

        Raises:
            CheckpointError: there are checkpoints, but none is readable.
        """
        acc = self.accelerator
        epochs = self._epochs()
        if acc.num_processes > 1:  # the main process's listing, so every rank tries the same folders
            epochs = broadcast_object_list([epochs], from_process=0)[0]
        problems = []
        for folder in reversed(epochs):
            problem = self._agreed(verify(folder) if acc.is_main_process else None)
            if problem is None:
                problem = self._agreed(self._try_random_states(folder))
            if problem is None:
                loaded: list = []
                problem = self._agreed(self._try_load(folder, loaded))
                if problem is None:
                    if problems:
                        logger.warning(f"resuming from {folder.name} instead: " + "; ".join(problems))
                    state, progress = loaded
                    self.newest = progress.pop("epoch")
                    return Restored(self.newest, state, progress)
            problems.append(f"checkpoint {folder} is unreadable: {problem}")
            logger.warning(problems[-1])
        if problems:
            raise CheckpointError(
                "; ".join(problems) + f". No readable checkpoint is left in {self.folder}: delete that folder to "
                "restart this phase from scratch, or pass a new --out"
            )
        return None

    def _agreed(self, problem: str | None) -> str | None:
        """This rank's ``problem`` (None: nothing wrong) -> the first rank's problem, the same on every rank."""
        first = first_report(self.accelerator, problem)
        return None if first is None else first[1]

    def _try_random_states(self, folder: Path) -> str | None:
        path = folder / f"{RNG_STATE_NAME}_{self.accelerator.process_index}.pkl"
        if not path.is_file():
            return f"{path.name} is missing"
        try:
            load(path)  # what accelerate's load_state does, which would only log the failure
        except Exception as err:
            return f"{path.name} cannot be loaded ({type(err).__name__}: {' '.join(str(err).split())[:200]})"
        return None

    def _try_load(self, folder: Path, loaded: list) -> str | None:
        try:
            self.accelerator.load_state(str(folder))
            state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
            progress = json.loads((folder / "progress.json").read_text())
        except Exception as err:  # any unreadable piece means: try the previous checkpoint
            return f"cannot be loaded ({type(err).__name__}: {' '.join(str(err).split())[:200]})"
        loaded[:] = [state, progress]
        return None

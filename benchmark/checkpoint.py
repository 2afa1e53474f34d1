"""Per-epoch checkpoints of a phase (search or evaluate), for ``egsbench run --resume``.

A checkpoint is a folder ``<run>/checkpoints/<phase>/epoch-NNNN`` holding

- what ``accelerator.save_state`` writes: the prepared model (safetensors), prepared
  optimisers and the Python, NumPy and torch random states;
- ``state.pt``: the rest of the loop's tensors (the method's ``state_dict``, data-order
  generator states), loaded back with ``torch.load(weights_only=True)``;
- ``progress.json``: the epoch just finished, the curves so far and the elapsed time.

It is written under a temporary name and renamed into place, so a process killed at any
moment leaves either the previous checkpoint or the new one, never a torn one; older
epochs are then removed. Method state goes through ``state.pt`` rather than accelerate's
``register_for_checkpointing``, which would unpickle it with ``weights_only=False``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator

__all__ = ["Checkpointer", "Restored"]


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
        if acc.is_main_process:
            torch.save(state, tmp / "state.pt")
            (tmp / "progress.json").write_text(json.dumps({"epoch": epoch, **progress}))
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)  # the checkpoint appears whole or not at all
            for old in self._epochs():
                if old != final:
                    shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return final

    def restore(self) -> Restored | None:
        """Load the newest checkpoint into the prepared objects; None when there is none."""
        epochs = self._epochs()
        if not epochs:
            return None
        latest = epochs[-1]
        self.accelerator.load_state(str(latest))
        state = torch.load(latest / "state.pt", map_location="cpu", weights_only=True)
        progress = json.loads((latest / "progress.json").read_text())
        return Restored(progress.pop("epoch"), state, progress)

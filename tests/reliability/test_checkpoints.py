"""Checkpoints that survive a torn write (issue 9, item 5): resume falls back to the previous epoch, with a warning.

A truncated or emptied checkpoint file used to end the resumed run with a traceback, the older epochs
already deleted. Here a run stops after a finished search epoch (as a kill between epochs leaves it),
the newest checkpoint's file is torn, and ``--resume`` goes on from the epoch before it.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from egsbench.benchmark.checkpoint import Checkpointer
from egsbench.benchmark.cli import main
from egsbench.testing.reliability import BASE, FAST, overrides, snapshot

SEARCH = [*FAST, "search.epochs=4"]
STOP_AFTER = 2  # the search epoch after whose checkpoint the run stops; epochs 1 and 2 are kept (two are)


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A run folder whose run stopped right after the checkpoint of search epoch ``STOP_AFTER`` (made once)."""
    save = Checkpointer.save

    def save_then_stop(self, epoch, state, progress):
        path = save(self, epoch, state, progress)
        if self.folder.name == "search" and epoch == STOP_AFTER:
            raise KeyboardInterrupt  # the CLI's Ctrl-C path; the lock goes with the stack, as with a kill
        return path

    out = tmp_path_factory.mktemp("stopped") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Checkpointer, "save", save_then_stop)
        assert main(["run", BASE, "--out", str(out), "--no-progress", *overrides(*SEARCH)]) == 130
    epochs = sorted(p.name for p in (out / "checkpoints" / "search").iterdir())
    assert epochs == ["epoch-0001", "epoch-0002"] and not (out / "search_result.json").exists()
    return out


@pytest.fixture
def interrupted(stopped_run, tmp_path):
    """A copy of ``stopped_run`` for one test to tear and resume."""
    return Path(shutil.copytree(stopped_run, tmp_path / "run"))


def _tear(path, how):
    data = path.read_bytes()
    path.write_bytes(b"" if how == "emptied" else data[: len(data) // 2])


@pytest.mark.parametrize(("name", "how"), [("model.safetensors", "truncated"), ("state.pt", "emptied")])
def test_a_torn_newest_checkpoint_falls_back_to_the_previous_epoch(cli, interrupted, caplog, name, how):
    newest = interrupted / "checkpoints" / "search" / "epoch-0002"
    _tear(newest / name, how)
    with caplog.at_level(logging.INFO):
        result = cli("run", BASE, "--out", interrupted, "--no-progress", "--resume", *overrides(*SEARCH))
    assert result.code == 0, result.err
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"checkpoint {newest} is unreadable: {name} is truncated or changed" in w for w in warnings), warnings
    assert any("resuming from epoch-0001 instead" in w for w in warnings), warnings
    assert "resumed the search after epoch 1" in caplog.text  # epoch 2 is searched again, not skipped
    rows = (interrupted / "search_curves.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["0", "1", "2", "3"]
    assert '"status": "ok"' in (interrupted / "record.json").read_text()


def test_no_readable_checkpoint_is_one_line_and_changes_nothing(cli, interrupted):
    for epoch in ("epoch-0001", "epoch-0002"):
        _tear(interrupted / "checkpoints" / "search" / epoch / "model.safetensors", "truncated")
    before = snapshot(interrupted)
    result = cli("run", BASE, "--out", interrupted, "--no-progress", "--resume", *overrides(*SEARCH))
    assert result.code == 2
    assert result.error.startswith(
        f"error: checkpoint {interrupted / 'checkpoints' / 'search' / 'epoch-0002'} is "
        "unreadable: model.safetensors is truncated or changed"
    )
    assert result.error.endswith(
        f"No readable checkpoint is left in {interrupted / 'checkpoints' / 'search'}: delete "
        "that folder to restart this phase from scratch, or pass a new --out"
    )
    after = snapshot(interrupted)
    assert {k: v for k, v in after.items() if k != ".lock"} == {k: v for k, v in before.items() if k != ".lock"}

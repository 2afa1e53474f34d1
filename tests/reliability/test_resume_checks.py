"""Resume checks what it resumes (issue 17, item 4): the data it started on, and every file of a checkpoint.

- A run with a relative ``task.data_dir``, resumed from another working directory, would read another data
  tree under the same config text: the checksum in ``data.json`` stops it (exit 2, both named), and the
  record keeps the data's absolute path.
- A random-state file that accelerate's ``load_state`` would only log (``weights_only`` refuses it) makes
  the checkpoint unreadable: resume falls back to the one before and ends with the uninterrupted record.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import shutil

import pytest

from egsbench.benchmark.checkpoint import Checkpointer, _write_manifest
from egsbench.testing.reliability import BASE, FAST, image_folder, overrides

SEARCH = [*FAST, "search.epochs=3"]


def _stop_after(epoch_to_stop: int):
    save = Checkpointer.save

    def save_then_stop(self, epoch, state, progress):
        path = save(self, epoch, state, progress)
        if self.folder.name == "search" and epoch == epoch_to_stop:
            raise KeyboardInterrupt
        return path

    return save_then_stop


def test_a_resume_on_other_data_is_refused_naming_both(cli, tmp_path, monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    image_folder(first / "data", per_class=8)
    image_folder(second / "data", classes=("cat", "dog"), per_class=9)  # same layout, other images
    out = tmp_path / "run"
    sets = overrides(*SEARCH, "task.data_dir=data", "task.train_limit=null", "task.test_limit=null")
    monkeypatch.chdir(first)
    with monkeypatch.context() as patch:
        patch.setattr(Checkpointer, "save", _stop_after(0))
        assert cli("run", BASE, "--out", out, "--no-progress", *sets).code == 130
    started = json.loads((out / "data.json").read_text())
    assert started["path"] == str((first / "data").resolve())
    monkeypatch.chdir(second)
    before = hashlib.sha256((out / "checkpoints" / "search" / "epoch-0000" / "state.pt").read_bytes()).hexdigest()
    result = cli("run", BASE, "--out", out, "--no-progress", "--resume", *sets)
    assert result.code == 2
    assert f"{out} was started on the data {first / 'data'} (sha256 {started['sha256'][:12]})" in result.error
    assert f"but this run reads {second / 'data'} (sha256 " in result.error
    assert result.error.endswith("resume with the same data (an absolute task.data_dir) or pass a new --out")
    after = hashlib.sha256((out / "checkpoints" / "search" / "epoch-0000" / "state.pt").read_bytes()).hexdigest()
    assert before == after and not (out / "record.json").exists()
    monkeypatch.chdir(first)  # the same data again: it resumes, and the record says where the data was
    assert cli("run", BASE, "--out", out, "--no-progress", "--resume", *sets).code == 0
    record = json.loads((out / "record.json").read_text())
    assert record["data"]["path"] == str((first / "data").resolve())


class NotAllowed:
    """Any class outside torch's allow-list: ``torch.load(weights_only=True)`` refuses to unpickle it."""


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    from egsbench.benchmark.cli import main

    out = tmp_path_factory.mktemp("whole") / "run"
    assert main(["run", BASE, "--out", str(out), "--no-progress", *overrides(*SEARCH)]) == 0
    return json.loads((out / "record.json").read_text())


def test_random_states_that_fail_to_load_fall_back_to_the_previous_checkpoint(cli, tmp_path, caplog, uninterrupted):
    out = tmp_path / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Checkpointer, "save", _stop_after(1))
        assert cli("run", BASE, "--out", out, "--no-progress", *overrides(*SEARCH)).code == 130
    newest = out / "checkpoints" / "search" / "epoch-0001"
    states = newest / "random_states_0.pkl"
    states.write_bytes(pickle.dumps({"random_state": NotAllowed()}))
    (newest / "manifest.json").unlink()
    _write_manifest(newest)  # its hash updated: the manifest cannot tell
    with caplog.at_level(logging.INFO):
        result = cli("run", BASE, "--out", out, "--no-progress", "--resume", *overrides(*SEARCH))
    assert result.code == 0, result.err
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"checkpoint {newest} is unreadable: random_states_0.pkl cannot be loaded" in w for w in warnings)
    assert "resumed the search after epoch 0" in caplog.text  # epoch 1 is searched again
    record = json.loads((out / "record.json").read_text())
    assert record["genotype"] == uninterrupted["genotype"] and record["metrics"] == uninterrupted["metrics"]


def test_when_no_checkpoint_has_loadable_random_states_the_resume_stops(cli, tmp_path):
    out = tmp_path / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Checkpointer, "save", _stop_after(1))
        assert cli("run", BASE, "--out", out, "--no-progress", *overrides(*SEARCH)).code == 130
    for folder in sorted((out / "checkpoints" / "search").glob("epoch-*")):
        (folder / "random_states_0.pkl").write_bytes(pickle.dumps(NotAllowed()))
        (folder / "manifest.json").unlink()
        _write_manifest(folder)
    result = cli("run", BASE, "--out", out, "--no-progress", "--resume", *overrides(*SEARCH))
    assert result.code == 2
    assert "random_states_0.pkl cannot be loaded" in result.error and "No readable checkpoint is left" in result.error
    assert not (out / "record.json").exists()
    shutil.rmtree(out / "checkpoints" / "search")  # as the message says: the phase restarts from scratch
    assert cli("run", BASE, "--out", out, "--no-progress", "--resume", *overrides(*SEARCH)).code == 0

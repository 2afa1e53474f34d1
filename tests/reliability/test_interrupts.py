"""Interrupts (issue 17, item 6): Ctrl-C and SIGTERM print one line that says where the run stopped and the
command that continues it, exit 130 / 143, and leave the newest complete checkpoint.

The in-process case stops at a known place (right after a checkpoint) and checks the whole line and the
resume; the subprocess cases send the real signals once the first checkpoint exists, wherever the run is
then, and check that the line agrees with what is on disk.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from egsbench.benchmark.checkpoint import Checkpointer, signals_deferred
from egsbench.benchmark.config import load_config
from egsbench.benchmark.launch import make_accelerator
from egsbench.testing.reliability import BASE, FAST, overrides


def test_an_interrupt_after_a_checkpoint_names_the_epoch_and_the_resume_command(cli, tmp_path, monkeypatch):
    save = Checkpointer.save

    def save_then_interrupt(self, epoch, state, progress):
        path = save(self, epoch, state, progress)
        if self.folder.name == "search" and epoch == 1:
            raise KeyboardInterrupt  # Ctrl-C just after the checkpoint of search epoch 1 is complete
        return path

    out = tmp_path / "run"
    sets = [*FAST, "search.epochs=3"]
    with monkeypatch.context() as patch:
        patch.setattr(Checkpointer, "save", save_then_interrupt)
        result = cli("run", BASE, "--out", out, "--no-progress", *overrides(*sets))
    assert result.code == 130
    command = f"egsbench run {BASE} --out {out}" + "".join(f" --set {s}" for s in sets) + " --resume"
    assert result.error == f"error: interrupted during search epoch 1; {command} continues from search epoch 2"
    assert result.err.splitlines()[-1] == result.error  # on its own line, the last one
    assert sorted(p.name for p in (out / "checkpoints" / "search").iterdir()) == ["epoch-0000", "epoch-0001"]
    resumed = cli("run", BASE, "--out", out, "--no-progress", "--resume", *overrides(*sets))
    assert resumed.code == 0, resumed.err
    assert [r.split(",")[0] for r in (out / "search_curves.csv").read_text().splitlines()[1:]] == ["0", "1", "2"]


def test_an_interrupt_in_the_final_training_names_its_epoch(cli, tmp_path, monkeypatch):
    save = Checkpointer.save

    def save_then_interrupt(self, epoch, state, progress):
        path = save(self, epoch, state, progress)
        if self.folder.name == "evaluate" and epoch == 0:
            raise KeyboardInterrupt
        return path

    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(Checkpointer, "save", save_then_interrupt)
        result = cli("run", BASE, "--out", out, "--no-progress", *overrides(*FAST, "evaluate.epochs=2"))
    assert result.code == 130
    assert result.error.startswith("error: interrupted during evaluate epoch 0; egsbench run ")
    assert result.error.endswith("--resume continues from evaluate epoch 1")


class _Stopped(Exception):
    pass


def _stop(signum, frame):
    raise _Stopped(signum)


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="signals cannot be masked here (Windows)")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_inside_a_deferred_block_is_handled_once_the_block_ends(sig):
    """The checkpoint's rename and the epoch it reports are one step: a signal raised between them (here sent to
    this thread, so it is pending at once) runs its handler after both, and only then."""
    previous = signal.signal(sig, _stop)
    done = []
    try:
        with pytest.raises(_Stopped):
            with signals_deferred():
                signal.raise_signal(sig)
                done.append("rename")
                done.append("newest")
            done.append("after the block")  # not reached: the handler raised as the block ended
        with pytest.raises(_Stopped):  # outside a block, the handler runs at once
            signal.raise_signal(sig)
            done.append("not reached")
    finally:
        signal.signal(sig, previous)
    assert done == ["rename", "newest"]


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="signals cannot be masked here (Windows)")
def test_a_signal_during_a_checkpoints_rename_is_handled_once_the_epoch_is_recorded(tmp_path, monkeypatch):
    """Checkpointer.save defers the signal: Ctrl-C arriving as the rename completes is handled only once the
    checkpointer knows the epoch it just saved, which is what the interrupt's resume line reports."""
    ckpt = Checkpointer(tmp_path / "search", make_accelerator(load_config(BASE)))
    seen = []

    def stop(signum, frame):
        seen.append(ckpt.newest)  # what the interrupt's report would read
        raise _Stopped(signum)

    rename = Path.rename

    def rename_then_signal(self, target):
        moved = rename(self, target)
        if Path(target).name == "epoch-0003":
            signal.raise_signal(signal.SIGINT)  # pending at once on this thread
        return moved

    monkeypatch.setattr(Path, "rename", rename_then_signal)
    previous = signal.signal(signal.SIGINT, stop)
    try:
        with pytest.raises(_Stopped):
            ckpt.save(3, {}, {})
    finally:
        signal.signal(signal.SIGINT, previous)
    assert seen == [3] and (tmp_path / "search" / "epoch-0003").is_dir()


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_real_signal_stops_the_run_with_the_line_and_its_exit_status(tmp_path, sig, code):
    out = tmp_path / "run"
    sets = overrides(*FAST, "search.epochs=100000")  # never finishes on its own: the signal ends it
    proc = subprocess.Popen(
        [sys.executable, "-m", "egsbench", "run", BASE, "--out", str(out), *sets],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a shell's background job inherits SIGINT ignored, and Python then keeps ignoring it: the run would never
        # see the signal (a suite started with `cmd &` hung here); the child gets the default, as a terminal's
        preexec_fn=_default_sigint,
    )
    try:
        search = out / "checkpoints" / "search"
        # a condition on disk, not a delay: any complete checkpoint (epochs of one step can rotate epoch-0000 away
        # between two looks; waiting for that one name hung the test until the 100,000 epochs ran out)
        deadline = time.monotonic() + 600  # a hang guard: a run that never checkpoints fails here, not at CI's limit
        while not any(search.glob("epoch-*")) and proc.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint appeared in 600 s"
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    line = err.strip().splitlines()[-1]
    match = re.fullmatch(
        r"error: interrupted during search epoch (\d+); egsbench run (.+) --resume continues from "
        r"search epoch (\d+)",
        line,
    )
    assert match, err
    assert match.group(2).startswith(f"{BASE} --out {out} --set ")
    newest = max(int(p.name.split("-")[1]) for p in (out / "checkpoints" / "search").glob("epoch-*"))
    assert int(match.group(3)) == newest + 1  # what --resume will do, from the checkpoints on disk
    assert int(match.group(1)) in (newest, newest + 1)  # stopped in that epoch or while saving the one before
    assert "Traceback" not in err and not (out / "record.json").exists()

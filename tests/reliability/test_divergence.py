"""Diverged runs are failures (issue 9, item 2): exit 2, a failed record in strict JSON, the last good checkpoint kept.

An absurd learning rate used to finish with status "ok", chance accuracy and a bare ``NaN`` in record.json.
"""

from __future__ import annotations

import json

import pytest

from egsbench.benchmark.records import read_record
from egsbench.testing.reliability import BASE, FAST, overrides


def _strict_json(text: str) -> dict:
    def refuse(constant: str):
        raise AssertionError(f"record.json holds {constant}, which strict JSON parsers reject")

    return json.loads(text, parse_constant=refuse)


def test_a_nan_in_final_training_fails_the_run_and_keeps_the_previous_epoch(cli, tmp_path):
    out = tmp_path / "run"
    # epoch 0: one finite step whose update (lr 1e30) wrecks the weights; epoch 1: the loss is NaN
    values = [*FAST, "evaluate.epochs=2", "evaluate.lr=1e30", "evaluate.eval_every=0"]
    result = cli("run", BASE, "--out", out, "--no-progress", *overrides(*values))
    assert result.code == 2
    assert result.error.startswith("error: the run diverged: non-finite loss nan in evaluate epoch 1, step 0;")
    assert result.error.endswith("Lower evaluate.lr (or evaluate.grad_clip) and use a new --out")

    record = _strict_json((out / "record.json").read_text())
    assert record["status"] == "failed" and "evaluate epoch 1, step 0" in record["error"]
    assert record["metrics"] is None
    assert read_record(out / "record.json")["error"] == record["error"]  # valid against the schema
    kept = sorted(p.name for p in (out / "checkpoints" / "evaluate").iterdir())
    assert kept == ["epoch-0000"]  # the last good epoch; nothing of the diverged one
    assert (out / "search_result.json").is_file()  # the search's result stays usable


def test_a_nan_in_the_search_fails_the_run(cli, tmp_path):
    out = tmp_path / "run"
    result = cli("run", BASE, "--out", out, "--no-progress", *overrides(*FAST, "search.lr=1e30"))
    assert result.code == 2
    assert result.error.startswith("error: the run diverged: non-finite ")
    assert "in search epoch 0, step 0;" in result.error
    assert result.error.endswith("Lower search.lr (or search.grad_clip) and use a new --out")
    record = _strict_json((out / "record.json").read_text())
    assert record["status"] == "failed" and "search epoch 0, step 0" in record["error"]
    assert not (out / "search_result.json").exists() and not (out / "model.safetensors").exists()


def test_the_reported_case_a_learning_rate_of_a_million_fails(cli, tmp_path):
    """``--set search.lr=1000000.0 --set evaluate.lr=1000000.0`` exited 0 with status "ok" and a bare NaN."""
    out = tmp_path / "run"
    values = [
        *FAST,
        "search.max_steps_per_epoch=2",
        "evaluate.max_steps_per_epoch=2",
        "search.lr=1000000.0",
        "evaluate.lr=1000000.0",
    ]
    result = cli("run", BASE, "--out", out, "--no-progress", *overrides(*values))
    assert result.code == 2
    assert result.error.startswith("error: the run diverged: non-finite ")
    record = _strict_json((out / "record.json").read_text())
    assert record["status"] == "failed" and record["metrics"] is None
    assert not (out / "model.safetensors").exists()  # no final network of a failed run


def test_the_error_line_is_not_glued_to_the_progress_bar_of_the_failed_epoch(cli, monkeypatch):
    """A diverged epoch leaves its bar open; the error line used to continue the bar's line."""
    from tqdm.auto import tqdm

    from egsbench.benchmark import cli as cli_module
    from egsbench.benchmark.driver import DivergedError

    def diverge(args):
        bar = tqdm(total=4, desc="search gdas")  # as the runner's loop has it when a step diverges
        bar.update()
        raise DivergedError("search", 0, 1, float("nan"))

    monkeypatch.setattr(cli_module, "_run", diverge)
    result = cli("run", BASE, "--out", "unused")
    assert result.code == 2
    assert result.error.startswith("error: the run diverged: non-finite loss nan in search epoch 0, step 1;")


def test_a_diverged_phase_closes_its_own_bar(tmp_path, monkeypatch):
    """The epoch driver closes its bar however the phase ends, so no caller depends on tqdm's private registry."""
    from tqdm.auto import tqdm

    import egsbench
    from egsbench.benchmark import driver
    from egsbench.benchmark.driver import DivergedError

    bars = []

    class Recorded(tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(driver, "tqdm", Recorded)
    with pytest.raises(DivergedError):
        egsbench.run(BASE, tmp_path / "run", [*FAST, "search.lr=1e30"], progress=True)
    assert bars and all(bar.disable for bar in bars)  # tqdm.close() disables a bar; an open one is enabled


def test_the_cli_closes_bars_without_tqdms_private_registry(cli, monkeypatch):
    """``tqdm._instances`` is private: a tqdm without it costs the last-resort sweep, not the error line."""
    from tqdm.std import tqdm

    from egsbench.benchmark import cli as cli_module
    from egsbench.benchmark.driver import DivergedError

    def diverge(args):
        raise DivergedError("search", 0, 1, float("nan"))

    monkeypatch.setattr(cli_module, "_run", diverge)
    monkeypatch.delattr(tqdm, "_instances")
    result = cli("run", BASE, "--out", "unused")
    assert result.code == 2
    assert result.error.startswith("error: the run diverged: non-finite loss nan in search epoch 0, step 1;")

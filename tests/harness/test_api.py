"""The public Python API (``egsbench.run``, ``load_network``, ``build_supernet``), trackers and determinism."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

import egsbench
from egsbench.benchmark.api import resolve_config
from egsbench.benchmark.cli import main
from egsbench.tasks import TASKS
from egsbench.tasks.spaces import ConfigError, UnknownNameError, UserError
from egsbench.testing.reliability import BASE, FAST, overrides


@pytest.fixture(scope="module")
def api_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "run"
    record = egsbench.run(
        "smoke/random-cifar10", out, overrides={"seed": 1, "evaluate.epochs": 2}, log_with="tensorboard"
    )
    return out, record


def test_run_returns_the_validated_record_it_wrote(api_run):
    out, record = api_run
    on_disk = json.loads((out / "record.json").read_text())
    assert record.seed == 1 == on_disk["seed"]
    assert record.config["evaluate"]["epochs"] == 2
    assert record.metrics.test_accuracy == on_disk["metrics"]["test_accuracy"]


def test_load_network_reproduces_the_recorded_test_accuracy(api_run):
    out, record = api_run
    net = egsbench.load_network(out)
    assert not net.training
    cfg = resolve_config("smoke/random-cifar10", {"seed": 1, "evaluate.epochs": 2})
    task = TASKS.get("cifar10")(cfg.task)
    task.prepare_data()
    total = sum(task.eval_sums(net, batch) for batch in task.loader("test", 50))
    assert task.summarize(total)["accuracy"] == pytest.approx(record.metrics.test_accuracy, abs=1e-9)


def test_load_network_refuses_mismatched_weights_and_unfinished_folders(api_run, tmp_path):
    out, _ = api_run
    with pytest.raises(UserError, match="not a finished run folder"):
        egsbench.load_network(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.yaml", "genotype.json", "model.safetensors"):
        (broken / name).write_bytes((out / name).read_bytes())
    config = (broken / "config.yaml").read_text().replace("channels: 4", "channels: 6")
    assert config != (out / "config.yaml").read_text()
    (broken / "config.yaml").write_text(config)
    with pytest.raises(UserError, match="does not fit the network"):
        egsbench.load_network(broken)


def test_tensorboard_logs_hold_search_and_training_curves(api_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = api_run
    events = sorted((out / "logs").rglob("events.out.tfevents.*"))
    assert events, "no tensorboard event file under the run's logs/"
    points: dict[str, int] = {}
    for path in events:
        acc = EventAccumulator(str(path)).Reload()
        for tag in acc.Tags()["scalars"]:
            points[tag] = points.get(tag, 0) + len(acc.Scalars(tag))
    assert {"search/seconds", "evaluate/train_loss", "evaluate/test_accuracy"} <= set(points)
    assert points["evaluate/train_loss"] == 2  # one per training epoch, as they finished


def test_overrides_accept_a_mapping_or_a_list_and_reject_a_string():
    a = resolve_config("smoke/egs-cifar10", {"method.M": 3, "task.data_dir": "embedded"})
    b = resolve_config("smoke/egs-cifar10", ["method.M=3", "task.data_dir=embedded"])
    assert a == b and a.method.M == 3
    assert resolve_config(a.to_dict()) == a
    with pytest.raises(ConfigError, match="mapping or a list"):
        resolve_config("smoke/egs-cifar10", "method.M=3")
    with pytest.raises(ConfigError, match="did you mean method.M"):
        resolve_config("smoke/egs-cifar10", {"method.MM": 3})


def test_build_supernet_steps_and_rejects_unknown_names():
    sn = egsbench.build_supernet("dag", "egs", "cifar10", channels=4, layers=3, method_config={"M": 1})
    before = [p.detach().clone() for p in sn.model.parameters()]
    batch = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    stats = sn.method.step(batch, batch)
    assert stats.loss > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, sn.model.parameters(), strict=True))
    with pytest.raises(UnknownNameError, match="did you mean 'egs'"):
        egsbench.build_supernet("dag", "egss", "cifar10")


def test_deterministic_key_turns_on_deterministic_algorithms_and_is_recorded(tmp_path):
    try:
        record = egsbench.run(
            "smoke/random-cifar10", tmp_path / "det", overrides={"deterministic": True, "evaluate.epochs": 1}
        )
        assert torch.are_deterministic_algorithms_enabled()
        assert record.config["deterministic"] is True
        assert record.manifest.determinism.torch_deterministic_algorithms is True
    finally:
        torch.use_deterministic_algorithms(False)


def test_threads_key_applies_to_the_run_only(tmp_path):
    before = torch.get_num_threads()
    want = 1 if before > 1 else 2
    # the cheapest run (one step per phase): the property is where the thread count applies
    record = egsbench.run(BASE, tmp_path / "t", overrides=[*FAST, f"threads={want}"])
    assert record.manifest.device.startswith(f"cpu ({want} threads)")
    assert torch.get_num_threads() == before  # later runs in this process are not affected


@pytest.mark.parametrize("flag", ["--calibrate", "--update-golden"])
def test_writing_regress_commands_need_an_explicit_folder_outside_site_packages(flag, tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    assert main(["regress", "--runs", str(runs), flag]) == 2
    assert "pass --out DIR" in capsys.readouterr().err
    site = Path(sysconfig.get_paths()["purelib"]) / "egsbench-golden"
    assert main(["regress", "--runs", str(runs), flag, "--out", str(site)]) == 2
    assert "refuses to write inside site-packages" in capsys.readouterr().err
    assert not site.exists()


def test_a_users_own_tasks_py_and_benchmark_folder_do_not_shadow_ours(tmp_path):
    """From a project folder with its own ``tasks.py`` and ``benchmark/``, the CLI still finds our packages."""
    (tmp_path / "tasks.py").write_text("raise RuntimeError('the user tasks.py was imported')\n")
    (tmp_path / "benchmark").mkdir()
    (tmp_path / "benchmark" / "__init__.py").write_text("raise RuntimeError('the user benchmark/ was imported')\n")
    env = {**os.environ, "PYTHONPATH": ""}
    listing = subprocess.run(
        [sys.executable, "-m", "egsbench", "list", "methods"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listing.returncode == 0, listing.stderr
    assert "egs" in listing.stdout.split()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "egsbench",
            "run",
            BASE,
            "--out",
            "r",
            *overrides(*FAST),
            "--no-progress",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads((tmp_path / "r" / "record.json").read_text())["data"]["source"].startswith("embedded:")

"""Mixed precision as a decision: a user's accelerate default never applies, bf16 only when a config asks,
the DARTS second-order step in fp32 whatever autocast is on, and the precision and scaling recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from egsbench.benchmark.api import resolve_config
from egsbench.benchmark.runner import _scale_for_processes  # the run config the phases train with
from egsbench.methods.darts import DARTS, DARTSConfig
from egsbench.testing import batch, tiny_context
from egsbench.testing.reliability import BASE, FAST, overrides


def _run(tmp_path, name: str, *extra: str, env: dict | None = None) -> dict:
    """The cheapest run (GDAS, one step per phase) through the CLI in its own process (accelerate reads its
    environment when it starts)."""
    command = [sys.executable, "-m", "egsbench", "run", BASE, "--out", str(tmp_path / name), "--no-progress"]
    done = subprocess.run(
        [*command, *overrides(*FAST), *extra],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((tmp_path / name / "record.json").read_text())


def test_a_users_accelerate_fp16_default_does_not_apply(tmp_path):
    record = _run(tmp_path, "default", env={"ACCELERATE_MIXED_PRECISION": "fp16"})
    assert record["mixed_precision"] == "no" and record["config"]["mixed_precision"] == "no"


def test_bf16_final_training_when_the_config_asks(tmp_path):
    record = _run(tmp_path, "bf16", "--set", "mixed_precision=bf16")
    assert record["mixed_precision"] == "bf16" and record["status"] == "ok"
    assert "search_mixed_precision" not in record.get("extras", {})  # the search stayed fp32


def test_darts_second_order_step_is_fp32_under_autocast():
    ctx = tiny_context("darts")
    m = DARTS(DARTSConfig(order=2))
    m.setup(ctx)
    m.start_epoch(0)
    plain = m.unrolled_gradient(batch(0), batch(1)).alpha
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = m.unrolled_gradient(batch(0), batch(1)).alpha
    for t in plain:
        assert under_autocast[t].dtype == torch.float32
        assert torch.equal(plain[t], under_autocast[t])


def test_linear_lr_scaling_multiplies_both_learning_rates_by_the_world_size():
    cfg = resolve_config("smoke/egs-cifar10", {"lr_scaling": "linear"})
    scaled, info = _scale_for_processes(cfg, 4)
    assert scaled.search.lr == 4 * cfg.search.lr and scaled.evaluate.lr == 4 * cfg.evaluate.lr
    assert info["search_effective_batch_size"] == 4 * cfg.search.batch_size and info["lr_factor"] == 4
    same, info = _scale_for_processes(resolve_config("smoke/egs-cifar10"), 4)
    assert same.search.lr == cfg.search.lr and info["lr_factor"] == 1

"""The search signal: its measures on hand-made distributions, on searches that did and did not move their
alphas, and the line the tables print under runs that did not search."""

from __future__ import annotations

import math

import pytest
import torch

from egsbench.benchmark.api import resolve_config
from egsbench.benchmark.runner import run_search
from egsbench.benchmark.tables import comparison_table, render
from egsbench.methods.signal import mean_entropy, mean_margin, moved, search_signal
from egsbench.tasks.spaces import Genotype
from tests.harness.test_tables import record

K = 8


def _one_hot(edges: int, k: int = K) -> torch.Tensor:
    return torch.eye(k)[torch.arange(edges) % k]


def test_entropy_and_margin_at_the_extremes():
    uniform = {"normal": torch.full((14, K), 1 / K), "reduce": torch.full((14, K), 1 / K)}
    assert mean_entropy(uniform) == pytest.approx(math.log(K))
    assert mean_margin(uniform) == pytest.approx(0.0)
    one_hot = {"normal": _one_hot(14), "reduce": _one_hot(14)}
    assert mean_entropy(one_hot) == pytest.approx(0.0, abs=1e-12)
    assert mean_margin(one_hot) == pytest.approx(1.0)
    half = {"normal": torch.tensor([[0.5, 0.5, 0, 0], [1.0, 0, 0, 0]])}  # entropies log 2 and 0, margins 0 and 1
    assert mean_entropy(half) == pytest.approx(math.log(2) / 2)
    assert mean_margin(half) == pytest.approx(0.5)
    assert mean_entropy({}) is None


def test_search_signal_fractions_and_derived_changes():
    start = {"normal": torch.full((14, K), 1 / K)}
    end = {"normal": _one_hot(14)}
    before = Genotype.from_dict({"normal": [[0, 2, "skip_connect"], [1, 2, "sep_conv_3x3"]], "normal_concat": [2]})
    after = Genotype.from_dict({"normal": [[0, 2, "skip_connect"], [1, 2, "max_pool_3x3"]], "normal_concat": [2]})
    signal = search_signal(start, end, after, before)
    assert signal["ops"] == K
    assert signal["entropy_start_frac"] == pytest.approx(1.0) and signal["entropy_end_frac"] == pytest.approx(0.0)
    assert signal["entropy_drop_frac"] == pytest.approx(1.0)
    assert signal["derived_changed"] == pytest.approx(0.5)  # one of the two (input, op) choices is new
    assert search_signal(start, end)["derived_changed"] is None  # no rule given: not measured
    assert moved(signal) is True and moved(search_signal(start, start)) is False and moved(None) is None


def _search(tmp_path, name, *sets):
    cfg = resolve_config(name, ["task.train_limit=64", "search.epochs=2", "search.max_steps_per_epoch=3", *sets])
    return run_search(cfg, tmp_path / name.replace("/", "-"), progress=False)["signal"]


def test_a_search_that_moved_its_alphas_and_one_that_did_not(tmp_path):
    # Adam moves each alpha by about its learning rate per step, whatever the gradient's size: 6 steps at 0.5
    # spread the logits by up to 3 (an entropy drop of a sizeable fraction of log 8); at 1e-9 nothing moves.
    name = "smoke/darts-cifar10"
    still = _search(tmp_path / "still", name, "method.order=1", "method.arch_lr=1e-9")
    pushed = _search(tmp_path / "pushed", name, "method.order=1", "method.arch_lr=0.5")
    assert still["entropy_start"] == pytest.approx(pushed["entropy_start"])  # the same initial alphas
    assert still["entropy_start_frac"] == pytest.approx(1.0, abs=1e-5)  # init 1e-3 * N(0, 1): near uniform
    assert abs(still["entropy_drop_frac"]) < 1e-6 and not moved(still)
    assert still["derived_changed"] == 0.0  # the rule reads the same argmaxes the initial noise set
    assert pushed["entropy_drop_frac"] > 0.05 and moved(pushed)
    assert pushed["margin_end"] > 10 * pushed["margin_start"]
    assert pushed["derived_changed"] > 0.0


def test_egs_measures_its_learned_alphas_not_the_credits(tmp_path):
    # p = lambda h + (1 - lambda) l is below log K from the start (the MAC credits l are fixed); the signal reads h.
    signal = _search(tmp_path, "smoke/egs-cifar10", "method.arch_lr=1e-9")
    assert signal["entropy_start_frac"] == pytest.approx(1.0, abs=1e-5)
    assert not moved(signal)
    assert signal["derived_changed"] is not None  # derive: mode is a rule on h


def _with_signal(rec, drop):
    rec["search"]["signal"] = {"entropy_drop_frac": drop}
    return rec


def test_the_table_says_when_the_distributions_did_not_move():
    still = [_with_signal(record("darts", s, 3.0 + s, {"order": 1}, preset="proxy"), 0.001) for s in range(2)]
    table = comparison_table(still)
    assert "did not move: these rows compare cells drawn at random" in render(table)
    assert table["Search signal (ΔH %)"].dropna().tolist() == [pytest.approx(0.1)]
    moving = [_with_signal(record("darts", s, 3.0 + s, {"order": 1}, preset="proxy"), 0.2) for s in range(2)]
    assert "did not move" not in render(comparison_table(moving))
    # a mixed table names the rows that did not move
    text = render(comparison_table(moving + [_with_signal(record("gdas", 0, 3.0, {}, preset="proxy"), 0.0)]))
    assert "did not move (gdas proxy)" in text
    # runs without a signal (random search, older records) are no reason for the line
    assert "did not move" not in render(comparison_table([record("random", 0, 3.0, {}, preset="proxy")]))

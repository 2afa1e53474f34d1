"""Random search: the uniform sampler, weight-sharing steps and selection, the DARTS baseline, resume, end to end."""

from __future__ import annotations

import copy
import math
import zlib
from collections import Counter
from itertools import combinations

import pytest
import torch

from egsbench.benchmark.config import candidate_recipe, load_config
from egsbench.benchmark.runner import run_experiment
from egsbench.methods import METHODS, SearchMethod
from egsbench.methods.random_search import (
    RandomSearch,
    RandomSearchConfig,
    cell_genotype,
    one_hot_weights,
    sample_cells,
)
from egsbench.tasks import TrainConfig
from egsbench.tasks.spaces import SPACES, ConfigError, Genotype
from egsbench.testing import batch, op_calls, tiny_context

SPACE = SPACES.get("darts")
NONE = SPACE.op_index("none")


def _tolerance(p: float, n: int) -> float:
    return 5 * math.sqrt(p * (1 - p) / n)  # 5 sigma: a false failure is ~1 in 3.5 million


def _build(config=None, **ctx_kwargs):
    method = RandomSearch(config or RandomSearchConfig())
    ctx = tiny_context("darts", **ctx_kwargs)
    method.setup(ctx)
    method.start_epoch(0)
    return method, ctx


def _genotype_of(weights) -> Genotype:
    """The genotype a one-hot weighting encodes (every node concatenated)."""
    cells = {t: [(*SPACE.edges[e], k) for e, k in w.nonzero().tolist()] for t, w in weights.items()}
    return cell_genotype(SPACE, {t: sorted(entries, key=lambda c: (c[1], c[0])) for t, entries in cells.items()})


# -- config --------------------------------------------------------------------------------------
def test_registered_with_paper_defaults_per_variant():
    assert METHODS.get("random") is RandomSearch
    assert RandomSearch.space == "darts" and RandomSearch.config_class is RandomSearchConfig
    ws, baseline = RandomSearchConfig(), RandomSearchConfig(variant="darts_baseline")
    assert (ws.n_candidates, ws.score_batches, ws.n_rescore) == (1000, 10, 10)
    assert (baseline.n_candidates, baseline.candidate_epochs) == (24, 100)
    assert RandomSearch(ws).trains_supernet and not RandomSearch(baseline).trains_supernet


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"variant": "weight-sharing"}, "method.variant"),
        ({"n_candidates": 0}, "method.n_candidates"),
        ({"n_rescore": 0}, "method.n_rescore"),
        ({"score_batches": 0}, "method.score_batches"),
        ({"candidate_epochs": 0}, "method.candidate_epochs"),
        ({"candidate_layers": 0}, "method.candidate_layers"),
    ],
)
def test_bad_config_values_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        RandomSearchConfig(**kwargs)


def test_bad_variant_in_a_config_file_names_the_key():
    with pytest.raises(ConfigError, match=r"method\.variant must be one of \['weight_sharing', 'darts_baseline'\]"):
        load_config("smoke/random-cifar10", ["method.variant=darts"])


def test_candidate_recipe_applies_only_the_methods_set_overrides():
    config = RandomSearchConfig(variant="darts_baseline", candidate_layers=8)
    recipe = candidate_recipe(TrainConfig(), RandomSearch, config)
    assert (recipe.epochs, recipe.layers, recipe.channels, recipe.batch_size) == (100, 8, 36, 96)
    assert candidate_recipe(TrainConfig(), SearchMethod, object()) == TrainConfig()  # methods without overrides


# -- sampler -------------------------------------------------------------------------------------
def test_sampler_is_uniform_over_ops_and_input_pairs():
    g, n = torch.Generator().manual_seed(0), 6000
    ops, pairs = Counter(), {dst: Counter() for dst in SPACE.intermediate_nodes}
    for _ in range(n):
        for entries in sample_cells(SPACE, g, range(SPACE.num_ops)).values():
            ops.update(k for _, _, k in entries)
            for dst in SPACE.intermediate_nodes:
                srcs = tuple(src for src, d, _ in entries if d == dst)
                assert len(srcs) == 2 and srcs[0] < srcs[1]  # two distinct inputs, sorted
                pairs[dst][srcs] += 1
    total = sum(ops.values())
    assert total == n * 2 * 8
    for k in range(SPACE.num_ops):  # 'none' included
        assert abs(ops[k] / total - 1 / 8) < _tolerance(1 / 8, total), (SPACE.ops[k], ops[k] / total)
    for dst, counts in pairs.items():
        choices = list(combinations(range(dst), 2))  # C(dst, 2) unordered pairs of predecessors
        assert set(counts) == set(choices)
        p = 1 / len(choices)
        for pair in choices:
            assert abs(counts[pair] / (2 * n) - p) <= _tolerance(p, 2 * n), (dst, pair)


def test_derivation_sampler_never_draws_none_and_is_uniform_over_the_rest():
    g, n = torch.Generator().manual_seed(1), 2000
    cell_ops = [k for k in range(SPACE.num_ops) if k != NONE]
    ops = Counter(k for _ in range(n) for es in sample_cells(SPACE, g, cell_ops).values() for _, _, k in es)
    total = sum(ops.values())
    assert NONE not in ops and set(ops) == set(cell_ops)
    for k in cell_ops:
        assert abs(ops[k] / total - 1 / 7) < _tolerance(1 / 7, total)


# -- weight sharing ------------------------------------------------------------------------------
def test_step_runs_only_the_sampled_ops_and_updates_only_their_weights():
    method, ctx = _build()
    seen = []
    loss = ctx.loss
    ctx.loss = lambda m, batch, weights: seen.append(weights) or loss(m, batch, weights)
    before = {n: p.detach().clone() for n, p in ctx.model.named_parameters()}
    with op_calls(ctx.model) as calls:
        stats = method.step(batch(0), batch(1))
    assert math.isfinite(stats.loss) and stats.extras["lr"] == pytest.approx(0.025)
    (weights,) = seen
    for t, w in weights.items():
        assert set(w.unique().tolist()) <= {0.0, 1.0} and (w.sum(-1) <= 1).all()  # one-hot or all zero
        for dst in SPACE.intermediate_nodes:
            rows = [SPACE.edge_index(src, dst) for src in range(dst)]
            assert int(w[rows].sum()) == 2, f"{t} node {dst} does not have exactly 2 inputs"
    expected = Counter()
    for i, cell in enumerate(ctx.model.cells):
        w = weights["reduce" if cell.reduction else "normal"]
        expected.update((i, e, k) for e, k in w.nonzero().tolist() if k != NONE)
    assert calls == expected and all(v == 1 for v in calls.values())
    run_per_type = sum(int(w.sum() - w[:, NONE].sum()) for w in weights.values())
    assert stats.extras["ops_per_edge"] == pytest.approx(run_per_type / (2 * 14))
    changed = {n for n, p in ctx.model.named_parameters() if not torch.equal(before[n], p)}
    assert "classifier.weight" in changed
    # Ops that did not run got no gradient, hence no weight decay: their weights are untouched.
    ran = {f"cells.{i}.edges.{e}.ops.{k}." for i, e, k in expected}
    assert all(any(n.startswith(r) for r in ran) for n in changed if ".edges." in n)
    assert any(".edges." in n for n in changed)


def test_derive_rescores_the_first_round_leaders_on_the_full_split_and_keeps_the_best():
    cfg = RandomSearchConfig(n_candidates=40, score_batches=3, n_rescore=5)
    method, ctx = _build(cfg)
    g = torch.Generator().manual_seed(9)
    quick = {t: torch.randn(14, 8, generator=g) for t in SPACE.cell_types}
    full = {t: torch.randn(14, 8, generator=g) for t in SPACE.cell_types}
    calls = []

    def score(weights, batches=None):
        calls.append((weights, batches))
        table = quick if batches is not None else full  # the full re-score ranks differently
        return float(sum((w * table[t]).sum() for t, w in weights.items()))

    genotype = method.derive(score)
    SPACE.validate(genotype)
    assert all(op != "none" for cell in genotype.cells.values() for _, _, op in cell.edges)
    assert [b for _, b in calls] == [3] * 40 + [None] * 5
    assert method.candidate_scores == [score(w, b) for w, b in calls[:40]]
    leaders = sorted(range(40), key=method.candidate_scores.__getitem__, reverse=True)[:5]
    assert [i for i, _ in method.rescores] == leaders
    rescored = [calls[40 + j][0] for j in range(5)]
    best = max(range(5), key=lambda j: method.rescores[j][1])
    assert genotype == _genotype_of(rescored[best])
    assert method.derive_score == max(s for _, s in method.rescores)
    assert genotype != _genotype_of(calls[leaders[0]][0])  # this seed: the full re-score changed the winner
    assert method.derive(score) == genotype  # seeded


def test_non_finite_candidate_scores_rank_last_and_scoring_uses_batch_statistics():
    cfg = RandomSearchConfig(n_candidates=6, score_batches=1, n_rescore=3)
    method, ctx = _build(cfg)
    bns = [m for m in ctx.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert any(bn.track_running_stats for bn in bns)  # else the batch-statistics checks below would hold vacuously
    counter = iter(range(100))
    hidden = []

    def score(weights, batches=None):
        hidden.append(all(bn.running_mean is None for bn in bns if bn.track_running_stats))
        i = next(counter)
        return math.nan if i % 2 == 0 else float(i)  # every other candidate overflows

    method.derive(score)
    assert all(hidden)  # train-mode BatchNorm while scoring
    firsts = method.candidate_scores
    leaders = [i for i, _ in method.rescores]
    assert all(math.isfinite(firsts[i]) for i in leaders)  # the three finite ones, NaNs below them
    assert math.isfinite(method.derive_score)
    assert all(bn.running_mean is not None for bn in bns if bn.track_running_stats)  # restored afterwards


# -- DARTS baseline ------------------------------------------------------------------------------
def test_darts_baseline_trains_every_candidate_once_and_keeps_the_best():
    trained = []

    def value(genotype):  # a deterministic stand-in for the trained network's search-val accuracy
        return float(zlib.crc32(genotype.to_json().encode()) % 1000)

    def train_candidate(genotype):
        SPACE.validate(genotype)
        trained.append(genotype)
        return value(genotype)

    method, ctx = _build(RandomSearchConfig(variant="darts_baseline", n_candidates=6), train_candidate=train_candidate)
    before = [p.detach().clone() for p in ctx.model.parameters()]
    stats = method.step(batch(0), batch(1))  # a no-op: nothing to train
    assert math.isnan(stats.loss)
    assert all(torch.equal(a, b) for a, b in zip(before, ctx.model.parameters(), strict=True))

    def no_score(*_, **__):
        raise AssertionError("darts_baseline must not score with the supernet")

    genotype = method.derive(no_score)
    assert len(trained) == 6 and len(set(trained)) == 6
    assert method.candidate_scores == [value(g) for g in trained]
    assert genotype == max(trained, key=value)
    assert method.derive_score == max(method.candidate_scores)


def test_darts_baseline_needs_a_candidate_trainer():
    with pytest.raises(ValueError, match="train_candidate"):
        _build(RandomSearchConfig(variant="darts_baseline"))


# -- resume --------------------------------------------------------------------------------------
def test_state_dict_round_trip_resumes_identically():
    a, ctx_a = _build()
    a.step(batch(0), batch(1))
    state = copy.deepcopy(a.state_dict())  # as a checkpoint on disk would hold it
    model_state = copy.deepcopy(ctx_a.model.state_dict())

    b, ctx_b = _build()
    ctx_b.model.load_state_dict(model_state)
    b.load_state_dict(state)
    assert b.epoch == a.epoch
    for method in (a, b):
        method.start_epoch(1)
        method.step(batch(2), batch(3))
    for pa, pb in zip(ctx_a.model.parameters(), ctx_b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)
    next_a, next_b, next_fresh = a.sample(), b.sample(), _build()[0].sample()
    assert all(torch.equal(next_a[t], next_b[t]) for t in SPACE.cell_types)  # the same generator stream
    assert any(not torch.equal(next_a[t], next_fresh[t]) for t in SPACE.cell_types)


def test_one_hot_weights_round_trip_to_the_genotype():
    cells = sample_cells(SPACE, torch.Generator().manual_seed(4), [k for k in range(8) if k != NONE])
    assert _genotype_of(one_hot_weights(SPACE, cells)) == cell_genotype(SPACE, cells)


# -- end to end ----------------------------------------------------------------------------------
def test_darts_baseline_end_to_end_through_the_runner(tmp_path):
    overrides = [
        "method.variant=darts_baseline",
        "method.n_candidates=2",
        "method.candidate_epochs=1",
        "method.candidate_channels=4",
        "method.candidate_layers=3",
    ]
    cfg = load_config("smoke/random-cifar10", overrides)
    result = run_experiment(cfg, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "record.json").is_file()
    genotype = Genotype.load(tmp_path / "run" / "genotype.json")
    SPACES.get("darts").validate(genotype)
    record = result.record
    assert record["method"] == "random" and record["space"] == "darts" and record["genotype"] == genotype.to_dict()
    assert record["search"]["steps"] == 0 and result.search_curves == []  # no supernet training
    assert 0.0 <= record["metrics"]["search_val_score"] <= 100.0

"""Method `fixed`: evaluate a given genotype without searching."""

from __future__ import annotations

import json

import pytest
import torch

from egsbench.benchmark.cli import main
from egsbench.benchmark.config import load_config
from egsbench.benchmark.runner import run_experiment
from egsbench.methods import METHODS
from egsbench.methods.fixed import Fixed, FixedConfig
from egsbench.tasks.spaces import DARTS_V2, GENOTYPES, ConfigError, UnknownNameError, genotype_weights
from egsbench.testing import batch, tiny_context


def test_registered_without_supernet_training_and_defaults_to_darts_v2():
    assert METHODS.get("fixed") is Fixed and Fixed.trains_supernet is False
    method = Fixed(FixedConfig())
    assert method.derive(lambda weights, batches=None: 0.0) == DARTS_V2


@pytest.mark.parametrize("name", [n for n in GENOTYPES.names() if not n.endswith("_rnn")])  # CNN cells, dag space
def test_derives_the_named_genotype_and_trains_nothing(name):
    method = Fixed(FixedConfig(genotype=name))
    ctx = tiny_context("dag")
    method.setup(ctx)
    before = [p.detach().clone() for p in ctx.model.parameters()]
    method.start_epoch(0)
    method.step(batch(0), batch(1))
    assert all(torch.equal(a, b) for a, b in zip(before, ctx.model.parameters(), strict=True))
    assert method.derive(lambda weights, batches=None: 0.0) == GENOTYPES.get(name)
    weights = method.probabilities()
    assert all(torch.equal(weights[t], w) for t, w in genotype_weights(ctx.space, GENOTYPES.get(name)).items())
    assert int(weights["normal"].sum()) == len(GENOTYPES.get(name)["normal"].edges)


def test_genotype_from_a_json_file(tmp_path):
    path = tmp_path / "genotype.json"
    GENOTYPES.get("egs_released_m4").save(path)
    cfg = load_config("smoke/fixed-cifar10", [f"method.genotype={path}"])
    assert Fixed(cfg.method).genotype == GENOTYPES.get("egs_released_m4")


@pytest.mark.parametrize(
    "content, match",
    [
        ('{"normal": [[0, 2]], "normal_concat": [2]}', "list of \\[src, dst, op\\] triples"),
        (
            '{"normal": [[0, 2, "conv_9x9"]], "normal_concat": [2], "reduce": [], "reduce_concat": [2]}',
            "op 'conv_9x9' is not a valid op",
        ),
        ('{"normal": [], "normal_concat": [2]}', "space 'dag' needs \\['normal', 'reduce'\\]"),
        ("[1, 2", "not valid JSON"),
    ],
)
def test_bad_genotype_files_fail_at_config_time_naming_the_key(tmp_path, content, match):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(ConfigError, match=f"method.genotype: .*bad.json.*{match}"):
        load_config("smoke/fixed-cifar10", [f"method.genotype={bad}"])


def test_unknown_genotype_name_fails_at_config_time():
    with pytest.raises(UnknownNameError, match="did you mean 'darts_v2'"):
        load_config("smoke/fixed-cifar10", ["method.genotype=darts_v3"])


def test_checkpoint_of_another_genotype_is_refused():
    method = Fixed(FixedConfig(genotype="darts_v1"))
    state = Fixed(FixedConfig(genotype="darts_v2")).state_dict()
    with pytest.raises(ValueError, match="checkpoint holds genotype"):
        method.load_state_dict(state)


def test_list_genotypes(capsys):
    assert main(["list", "genotypes"]) == 0
    assert capsys.readouterr().out.split() == GENOTYPES.names()


def test_smoke_run_trains_only_the_given_cell(tmp_path):
    result = run_experiment(load_config("smoke/darts_v2-cifar10"), tmp_path / "run", progress=False)
    record = result.record
    assert record["method"] == "fixed" and record["genotype"] == DARTS_V2.to_dict()
    assert record["search"]["steps"] == 0 and record["metrics"]["search_val_score"] is None
    assert record["metrics"]["test_accuracy"] is not None
    assert json.loads((tmp_path / "run" / "genotype.json").read_text()) == DARTS_V2.to_dict()

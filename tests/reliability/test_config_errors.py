"""Config mistakes (issue 9, items 3 and 6): exit 2, one ``error:`` line naming the key and the fix, no run folder."""

from __future__ import annotations

import json

import pytest

from egsbench.benchmark.config import MAX_YAML_BYTES, load_config, read_yaml_file
from egsbench.tasks.spaces import ConfigError
from egsbench.testing.reliability import BASE, FAST, overrides


@pytest.mark.parametrize(
    ("values", "message"),
    [
        # silent wrong results before: a NaN or infinite lr, no final training, a search from untrained weights
        (["search.lr=.nan"], "config key 'search.lr' must be a finite number, got nan"),
        (["evaluate.lr=.inf"], "config key 'evaluate.lr' must be a finite number, got inf"),
        (["evaluate.epochs=0"], "config key evaluate.epochs must be >= 1, got 0"),
        (
            ["search.epochs=0"],
            "config key search.epochs must be >= 1 for method 'gdas', got 0 (it would derive from untrained weights)",
        ),
        # tracebacks before, and a half-started folder that then demanded --resume
        (["search.batch_size=0"], "config key search.batch_size must be >= 1, got 0"),
        (["evaluate.batch_size=0"], "config key evaluate.batch_size must be >= 1, got 0"),
        (["search.channels=0"], "config key search.channels must be >= 1, got 0"),
        (["evaluate.channels=-1"], "config key evaluate.channels must be >= 1, got -1"),
        (["evaluate.layers=0"], "config key evaluate.layers must be >= 1, got 0"),
        (["search.lr=-0.1"], "config key search.lr must be > 0, got -0.1"),
        (["evaluate.drop_path=1.5"], "config key evaluate.drop_path must be in [0, 1), got 1.5"),
        (["task.train_limit=1"], "config key task.train_limit must be >= 2, got 1"),
        (["seed=-1"], "config key seed must be in [0, 4294967295], got -1"),  # crashed in set_seed after mkdir
        # a float spelling YAML reads as a string is a number; the run then fails on the real mistake
        (["search.lr=1e6", "search.batch_size=0"], "config key search.batch_size must be >= 1, got 0"),
    ],
)
def test_a_bad_value_in_any_block_is_named_before_any_folder_exists(cli, tmp_path, values, message):
    out = tmp_path / "run"
    result = cli("run", BASE, "--out", out, "--no-progress", *overrides(*values))
    assert result.code == 2
    assert message in result.error
    assert not out.exists()


def test_a_config_file_that_is_not_utf8(cli, tmp_path):
    config = tmp_path / "latin1.yaml"
    config.write_bytes("# caf\xe9\npreset: smoke\nmethod: {name: gdas}\ntask: {name: cifar10}\n".encode("latin-1"))
    result = cli("run", config, "--out", tmp_path / "run")
    assert result.code == 2
    assert result.error == f"error: {config} is not UTF-8 text (invalid continuation byte at byte 5); save it as UTF-8"
    assert not (tmp_path / "run").exists()


def test_a_config_file_that_is_a_yaml_list_with_overrides(cli, tmp_path):
    config = tmp_path / "list.yaml"
    config.write_text("- preset: smoke\n- method: {name: gdas}\n")
    result = cli("run", config, "--out", tmp_path / "run", "--set", "seed=1")
    assert result.code == 2
    assert result.error.startswith(f"error: {config} must hold a YAML mapping with keys preset, seed,")
    assert result.error.endswith("got a list")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("spelling", ["1e6", "1E6", "1e-3", "+2.5e+3", ".5", "5.", "1000000.0"])
def test_every_float_spelling_is_a_number(spelling):
    assert load_config(BASE, [f"search.lr={spelling}"]).search.lr == float(spelling)


def test_zero_search_epochs_is_allowed_where_the_method_trains_no_supernet():
    assert load_config("smoke/random-baseline-cifar10", ["search.epochs=0"]).search.epochs == 0


def test_egs_M_above_its_cap_is_refused_before_the_search(cli, tmp_path):
    # issue 17: M >= 171 ran the whole search, then overflowed in the derivation; any M up to the cap now derives
    assert load_config("smoke/egs-cifar10", ["method.M=500"]).method.M == 500
    out = tmp_path / "run"
    result = cli("run", "smoke/egs-cifar10", "--out", out, "--no-progress", *overrides(*FAST, "method.M=100001"))
    assert result.code == 2
    assert result.error.startswith("error: method.M must be <= 100000, got 100001: every step draws M Gumbel samples")
    assert result.error.endswith("; set method.M <= 100000")
    assert not out.exists()


def test_too_few_evaluate_layers_for_the_auxiliary_head(cli, tmp_path):
    # issue 17: the search ran, then the final training crashed in the auxiliary head (a 16x16 map, not 8x8)
    out = tmp_path / "run"
    result = cli("run", BASE, "--out", out, "--no-progress", *overrides(*FAST, "evaluate.layers=1"))
    assert result.code == 2
    assert result.error == (
        "error: evaluate.layers=1 is too few for the auxiliary head (needs >= 2: the CIFAR head reads the 8x8 map "
        "after both reduction cells, at layers//3 and 2*layers//3, which are one cell at 1 layer); set "
        "evaluate.layers >= 2 or evaluate.auxiliary_weight=0"
    )
    assert not out.exists()
    assert load_config(BASE, ["evaluate.layers=1", "evaluate.auxiliary_weight=0"]).evaluate.layers == 1  # no head


@pytest.mark.parametrize(("layers", "cells"), [(1, "cell 0"), (2, "cells 0 and 1")])
def test_a_supernet_without_a_normal_cell(cli, tmp_path, layers, cells):
    out = tmp_path / "run"
    result = cli("run", BASE, "--out", out, "--no-progress", *overrides(*FAST, f"search.layers={layers}"))
    assert result.code == 2
    assert result.error == (
        f"error: search.layers={layers} builds a supernet without a normal cell (reduction cells sit at layers//3 "
        f"and 2*layers//3: {cells}), so the normal cell would never be searched; set search.layers >= 3"
    )
    assert not out.exists()


def test_candidate_layers_are_checked_against_the_evaluate_block(cli, tmp_path):
    # random search's darts_baseline trains candidates on evaluate + method.candidate_*: checked before the run too
    out = tmp_path / "run"
    result = cli(
        "run", "smoke/random-baseline-cifar10", "--out", out, "--no-progress", *overrides("method.candidate_layers=1")
    )
    assert result.code == 2
    assert result.error.startswith("error: the candidates' recipe (the evaluate block with ")
    assert "method.candidate_layers=1): evaluate.layers=1 is too few for the auxiliary head" in result.error
    assert not out.exists()


def _oversized(path, size: int = 1_100_000):
    """A valid config padded with comment lines to ``size`` bytes (1.1 MB by default)."""
    head = b"preset: smoke\nmethod: {name: gdas}\ntask: {name: cifar10, data_dir: embedded}\n"
    line = b"#" * 99 + b"\n"
    path.write_bytes(head + line * ((size - len(head)) // len(line)) + b"#" * ((size - len(head)) % len(line)))
    assert path.stat().st_size == size
    return path


def test_a_config_over_the_size_limit_is_refused_before_parsing(cli, tmp_path, monkeypatch):
    # a 48 MB config was still being parsed after 120 s, at 4.1 GB
    config = _oversized(tmp_path / "huge.yaml")
    monkeypatch.setattr("yaml.safe_load", lambda *a, **k: pytest.fail("parsed"))  # never reached
    result = cli("run", config, "--out", tmp_path / "run")
    assert result.code == 2
    assert result.error == (
        f"error: config {config} is 1.1 MB; configs are limited to 1 MB: a config holds a few dozen keys (the bundled "
        "ones are under 2 KB), so pass the YAML written for egsbench, not a data or log file"
    )
    assert not (tmp_path / "run").exists()


def test_the_size_limit_of_yaml_files_for_sweeps_too(tmp_path):
    with pytest.raises(ConfigError, match=r"^sweep file .* is 1,000,001 bytes; sweep files are limited to 1 MB: "):
        read_yaml_file(_oversized(tmp_path / "sweep.yaml", MAX_YAML_BYTES + 1), "sweep file")
    assert read_yaml_file(_oversized(tmp_path / "ok.yaml", MAX_YAML_BYTES))["preset"] == "smoke"  # at the limit


def test_a_boolean_node_index_in_a_genotype_file(cli, tmp_path):
    # bool is an int in Python: "true" was node 1, reported as "edge (1, 2, 'sep_conv_3x3') is listed twice"
    genotype = tmp_path / "genotype.json"
    cells = {
        "normal": [[True, 2, "sep_conv_3x3"], [1, 2, "sep_conv_3x3"]],
        "normal_concat": [2],
        "reduce": [[0, 2, "max_pool_3x3"]],
        "reduce_concat": [2],
    }
    genotype.write_text(json.dumps(cells))
    out = tmp_path / "run"
    result = cli("run", "smoke/fixed-cifar10", "--out", out, "--no-progress", *overrides(f"method.genotype={genotype}"))
    assert result.code == 2
    assert result.error == (
        f"error: method.genotype: {genotype}: genotype 'normal': edge [true, 2, \"sep_conv_3x3\"]: src true is a "
        "boolean, not a node index; write node indices as integers (0, 1, ...)"
    )
    assert not out.exists()

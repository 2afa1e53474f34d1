from __future__ import annotations

import pytest

from egsbench.benchmark.config import bundled_configs, load_config, parse_config
from egsbench.tasks.spaces import ConfigError, UnknownNameError


@pytest.mark.parametrize("name", bundled_configs())
def test_every_bundled_config_validates(name):
    cfg = load_config(name)
    assert cfg.preset == name.split("/")[0]
    assert cfg.to_dict()["method"]["name"] == cfg.method_name


def test_bundled_presets_exist_for_egs():
    assert {"smoke/egs-cifar10", "proxy/egs-cifar10", "paper/egs-cifar10"} <= set(bundled_configs())


def test_paper_preset_has_the_paper_settings():
    cfg = load_config("paper/egs-cifar10")
    assert (cfg.method.M, cfg.method.lam, cfg.method.tau) == (7, 0.5, 1.0)
    assert (cfg.search.channels, cfg.search.layers, cfg.search.batch_size, cfg.search.epochs) == (16, 8, 64, 50)
    ev = cfg.evaluate
    assert (ev.channels, ev.layers, ev.epochs, ev.batch_size) == (36, 20, 600, 96)
    assert (ev.cutout, ev.drop_path, ev.auxiliary_weight) == (16, 0.2, 0.4)


def test_overrides_are_typed_yaml_scalars():
    cfg = load_config(
        "smoke/egs-cifar10",
        [
            "method.M=4",
            "method.tau_final=0.5",
            "search.max_steps_per_epoch=null",
            "task.data_dir=/some/where",
            "seed=3",
        ],
    )
    assert cfg.method.M == 4 and cfg.method.tau_final == 0.5 and cfg.search.max_steps_per_epoch is None
    assert cfg.task.data_dir == "/some/where" and cfg.seed == 3
    assert load_config("smoke/egs-cifar10").hash() != cfg.hash()
    seeds = [load_config("smoke/egs-cifar10", [f"seed={k}"]) for k in (0, 1)]
    assert seeds[0].hash() == seeds[1].hash()  # the hash identifies a run up to its seed


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["method.MM=4"], r"unknown config key method\.MM; did you mean method\.M\?"),
        (["search.epoch=2"], r"unknown config key search\.epoch; did you mean search\.epochs\?"),
        (["method.M=four"], r"'method\.M' must be int"),
        (["method.lam=yes"], r"'method\.lam' must be float"),
        (["evaluate.cutout=1.5"], r"'evaluate\.cutout' must be int"),
        (["seeds=1"], r"unknown config key 'seeds'; did you mean 'seed'\?"),
        (["method.M=0"], r"method\.M must be >= 1"),
        (["preset=huge"], r"'preset' must be one of"),
        (["method.M"], r"not of the form key=value"),
        (["space=darts"], r"method 'egs' derives cells with any in-degree, which space 'darts' rejects"),
    ],
)
def test_bad_keys_and_types_name_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config("smoke/egs-cifar10", overrides)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["method.name=egss"], r"unknown method 'egss'; did you mean 'egs'\? Valid methods: .*egs"),
        (["task.name=cifar"], r"unknown task 'cifar'; did you mean 'cifar10'\?"),
        (["space=dags"], r"unknown space 'dags'; did you mean 'dag'\?"),
    ],
)
def test_unknown_names_list_valid_ones_and_the_closest(overrides, match):
    with pytest.raises(UnknownNameError, match=match):
        load_config("smoke/egs-cifar10", overrides)


def test_unknown_config_name_suggests_a_bundled_one():
    with pytest.raises(UnknownNameError, match=r"unknown config 'smoke/egs-cifar'; did you mean 'smoke/egs-cifar10'"):
        load_config("smoke/egs-cifar")


def test_config_path_and_block_shapes(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: {name: egs}\ntask: {name: cifar10, data_dir: embedded}\n")
    cfg = load_config(str(path))
    assert cfg.method.M == 7 and cfg.preset == "custom"
    with pytest.raises(ConfigError, match="'method' must be a mapping with a 'name'"):
        parse_config({"method": "egs", "task": {"name": "cifar10"}})
    path.write_text("method: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(path))

"""Composed configs (issue 20 item 5): base fragments, combinations from fragments, pydantic types, the JSON schema."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from egsbench.benchmark.config import (
    CONFIG_DIR,
    build_dataclass,
    bundled_configs,
    compose,
    config_description,
    config_type_problems,
    load_config,
    parse_config,
    read_config,
)
from egsbench.benchmark.config_schema import SCHEMA_PATH, config_schema, own
from egsbench.methods import METHODS
from egsbench.tasks import TASKS
from egsbench.tasks.spaces import ConfigError

GOLDEN = Path(__file__).parents[2] / "results" / "golden"
SHIPPED = sorted(CONFIG_DIR.rglob("*.yaml"))
VALIDATOR = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# -- composition ----------------------------------------------------------------------------------------------------
def test_bases_merge_in_order_then_the_file_wins_key_by_key(tmp_path):
    _write(
        tmp_path / "a.yaml",
        "seed: 1\ntask: {name: cifar10, data_dir: embedded, train_limit: 256}\nsearch: {epochs: 1, batch_size: 32}\n",
    )
    _write(tmp_path / "sub/b.yaml", "seed: 2\nsearch: {batch_size: 16, channels: 4}\n")
    config = _write(tmp_path / "c.yaml", "base: [a, sub/b.yaml]\nmethod: {name: egs}\ntask: {train_limit: 64}\n")
    raw = read_config(str(config))
    assert raw == {
        "seed": 2,  # b after a
        "task": {"name": "cifar10", "data_dir": "embedded", "train_limit": 64},  # the file's own key last
        "search": {"epochs": 1, "batch_size": 16, "channels": 4},  # mappings merge key by key
        "method": {"name": "egs"},
    }
    cfg = load_config(str(config), ["search.channels=8"])  # overrides apply to the composed config
    assert (cfg.seed, cfg.search.batch_size, cfg.search.channels, cfg.task.train_limit) == (2, 16, 8, 64)


def test_a_base_names_a_bundled_fragment_and_a_fragment_may_have_bases(tmp_path):
    _write(tmp_path / "mid.yaml", "base: smoke/cifar10\nsearch: {epochs: 2}\n")
    config = _write(tmp_path / "c.yaml", "base: [mid]\nmethod: {name: gdas}\n")
    cfg = load_config(str(config))
    smoke = load_config("smoke/gdas-cifar10")
    assert (cfg.preset, cfg.task, cfg.search.epochs) == ("smoke", smoke.task, 2)
    assert dataclasses.replace(cfg.search, epochs=1, score_batches=smoke.search.score_batches) == smoke.search


def test_parse_config_composes_a_mapping_with_bundled_bases():
    raw = yaml.safe_load((CONFIG_DIR / "smoke" / "egs-cifar10.yaml").read_text(encoding="utf-8"))
    assert "base" in raw and "task" not in raw  # the shared blocks live in the fragment
    assert parse_config(raw).hash() == load_config("smoke/egs-cifar10").hash()


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"c.yaml": "base: [nowhere]\n"}, r"c\.yaml: base fragment 'nowhere' not found \(.*nowhere\.yaml.*\); name"),
        (
            {"c.yaml": "base: [a]\n", "a.yaml": "base: [b]\n", "b.yaml": "base: [a]\n"},
            r"b\.yaml: base fragment 'a' includes itself \(.*a\.yaml -> .*b\.yaml -> .*a\.yaml\)",
        ),
        ({"c.yaml": "base: [c]\n"}, r"c\.yaml: base fragment 'c' includes itself"),
        ({"c.yaml": "base: {a: 1}\n"}, r"c\.yaml: base must be a fragment file or a list of them, got \{'a': 1\}"),
        ({"c.yaml": "base: [a]\n", "a.yaml": "- 1\n"}, r"fragment .*a\.yaml must hold a YAML mapping, got a list"),
        ({"c.yaml": "base: [a]\n", "a.yaml": "x: [\n"}, r"a\.yaml is not valid YAML"),
    ],
)
def test_a_bad_base_is_a_config_error_naming_the_file(tmp_path, files, message):
    for name, text in files.items():
        _write(tmp_path / name, text)
    with pytest.raises(ConfigError, match=message):
        load_config(str(tmp_path / "c.yaml"))


def test_compose_leaves_its_arguments_unchanged(tmp_path):
    data = {"base": ["smoke/cifar10"], "search": {"epochs": 3}}
    before = json.dumps(data)
    assert compose(data)["search"]["epochs"] == 3 and json.dumps(data) == before
    assert compose({"seed": 4}) == {"seed": 4}  # no base: as is


# -- combinations that ship no file ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["demo/fixed-cifar10", "smoke/fixed-wt2-search", "smoke/fixed-ptb"])
def test_a_combination_not_shipped_resolves_from_its_fragment(name):
    preset, rest = name.split("/")
    method, task = rest.split("-", 1)
    assert name not in bundled_configs()
    fragment = yaml.safe_load((CONFIG_DIR / "_fragments" / preset / f"{task}.yaml").read_text(encoding="utf-8"))
    cfg = load_config(name, ["method.genotype=darts_v2" if task == "cifar10" else "method.genotype=darts_v2_rnn"])
    assert (cfg.method_name, cfg.preset) == (method, preset)
    assert cfg.space == fragment.get("space", METHODS.get(method).space)
    for block in ("task", "search", "evaluate"):
        resolved = cfg.to_dict()[block]
        assert {key: resolved[key] for key in fragment[block]} == fragment[block], block


def test_a_combination_on_a_transfer_task_asks_for_transfer_from():
    with pytest.raises(ConfigError, match=r"fragment smoke/imagenet holds no search block .* transfer_from"):
        load_config("smoke/gdas-imagenet")


# -- shipped files --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_every_shipped_file_opens_with_the_schema_line_and_validates_against_the_schema(path):
    first, *rest = path.read_text(encoding="utf-8").splitlines()
    assert first.startswith("# yaml-language-server: $schema=")
    assert (path.parent / first.split("=", 1)[1]).resolve() == SCHEMA_PATH.resolve()
    assert rest[0].startswith("# "), "the explanatory comment follows the schema line"
    errors = [error.message for error in VALIDATOR.iter_errors(yaml.safe_load("\n".join(rest)))]
    assert not errors


def test_the_description_skips_the_schema_line():
    assert config_description("smoke/egs-cifar10").startswith("Seconds on a CPU")


@pytest.mark.parametrize("record", sorted(GOLDEN.glob("*.json")), ids=lambda p: p.stem)
def test_golden_records_keep_their_config_hashes(record):
    data = json.loads(record.read_text(encoding="utf-8"))
    data_dir = data["config"]["task"]["data_dir"]  # the PTB records ran on the shared copy: task.data_dir=DIR
    cfg = load_config(f"{data['preset']}/{data['method']}-{data['task']}", [f"task.data_dir={data_dir or ''}"])
    assert cfg.hash() == data["config_hash"]


# -- types (pydantic) -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("method.M=7.5", r"config key 'method\.M' must be int, got 7\.5 \(float\)"),
        ("method.M=true", r"config key 'method\.M' must be int, got True \(bool\)"),
        ("method.lam=true", r"config key 'method\.lam' must be float, got True \(bool\)"),
        ("method.tau_final=fast", r"config key 'method\.tau_final' must be float or None, got 'fast' \(str\)"),
        ("search.max_steps_per_epoch=2.0", r"config key 'search\.max_steps_per_epoch' must be int or None, got 2\.0"),
        ("seed=one", r"config key 'seed' must be int, got 'one' \(str\)"),
        ("threads=1.5", r"config key 'threads' must be int or None, got 1\.5 \(float\)"),
        ("deterministic=1", r"config key 'deterministic' must be bool, got 1 \(int\)"),
        ("method.lam=.nan", r"config key 'method\.lam' must be a finite number, got nan"),
    ],
)
def test_types_are_strict_and_named(override, message):
    with pytest.raises(ConfigError, match=f"^{message}"):
        load_config("smoke/egs-cifar10", [override])


def test_an_int_field_refuses_a_string_of_digits():  # --set reads 7 as a number; a YAML file may quote it
    with pytest.raises(ConfigError, match=r"^config key 'method\.M' must be int, got '7' \(str\)$"):
        build_dataclass(METHODS.get("egs").config_class, {"M": "7"}, "method")


def test_a_float_field_takes_an_int_and_stores_a_float():
    cfg = load_config("smoke/egs-cifar10", ["method.lam=1", "search.lr=2"])
    assert (cfg.method.lam, cfg.search.lr) == (1.0, 2.0) and type(cfg.method.lam) is type(cfg.search.lr) is float


def test_list_fields_take_a_list_or_a_tuple_of_the_item_type():
    snas = METHODS.get("snas").config_class
    assert build_dataclass(snas, {"resource_metrics": ("macs",)}, "method").resource_metrics == ["macs"]
    with pytest.raises(ConfigError, match=r"'method\.resource_metrics' must be list\[str\], got 'macs' \(str\)"):
        build_dataclass(snas, {"resource_metrics": "macs"}, "method")
    with pytest.raises(ConfigError, match=r"'method\.resource_metrics' must be list\[str\], got \[1\]"):
        build_dataclass(snas, {"resource_metrics": [1]}, "method")


def test_the_first_wrong_key_in_file_order_is_reported():
    with pytest.raises(ConfigError, match=r"'method\.tau' must be float"):
        build_dataclass(METHODS.get("egs").config_class, {"tau": "x", "M": "y"}, "method")
    with pytest.raises(ConfigError, match=r"unknown config key method\.lamb; did you mean method\.lam\? Valid keys: M"):
        build_dataclass(METHODS.get("egs").config_class, {"lamb": 1, "M": "y"}, "method")


def test_record_type_problems_name_each_wrong_key_and_ignore_unknown_ones():
    config = load_config("smoke/egs-cifar10").to_dict()
    config["method"] |= {"M": "7", "gone": 1}
    config["search"] |= {"epochs": 1.5}
    assert config_type_problems(config) == [
        "field config.method.M: must be int, got '7' (str)",
        "field config.search.epochs: must be int, got 1.5 (float)",
    ]


# -- JSON schema ----------------------------------------------------------------------------------------------------
def test_the_committed_schema_is_current():
    committed = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert committed == config_schema(), (
        f"{SCHEMA_PATH} is stale: regenerate it with `python -m egsbench.benchmark.config_schema` and commit it"
    )


def test_the_schema_has_a_block_per_registered_method_and_task():
    schema = config_schema()
    methods = {d["properties"]["name"]["const"] for d in _options(schema, "method")}
    tasks = {d["properties"]["name"]["const"] for d in _options(schema, "task")}
    assert (methods, tasks) == (set(own(METHODS)), set(own(TASKS)))
    assert {"egs", "darts", "fixed"} <= methods and {"cifar10", "ptb", "wt2"} <= tasks
    egs = next(d for d in _options(schema, "method") if d["properties"]["name"]["const"] == "egs")
    assert egs["additionalProperties"] is False and egs["properties"]["M"]["type"] == "integer"


@pytest.mark.parametrize(
    ("config", "valid"),
    [
        ({"method": {"name": "egs", "M": 4}, "task": {"name": "cifar10"}}, True),
        ({"method": {"name": "egs", "MM": 4}}, False),  # an unknown key
        ({"method": {"name": "egs", "M": "4"}}, False),  # a wrong type
        ({"task": {"name": "ptb"}, "search": {"channels": 4}}, False),  # a CNN key in the LM task's search block
        ({"task": {"name": "cifar10"}, "search": {"channels": 4}}, True),
        ({"seeds": 1}, False),
        ({"preset": "huge"}, False),
    ],
)
def test_the_schema_refuses_what_the_loader_refuses(config, valid):
    validator = jsonschema.Draft202012Validator(config_schema())
    assert validator.is_valid(config) is valid


def _options(schema: dict, key: str) -> list[dict]:
    return [schema["$defs"][ref["$ref"].rsplit("/", 1)[-1]] for ref in schema["properties"][key]["anyOf"]]

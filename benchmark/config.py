"""Experiment configs: one YAML file validated into the components' own dataclasses.

``CONFIG`` on the command line is a path or a bundled name such as ``smoke/egs-cifar10``
(``benchmark/configs/<preset>/<name>.yaml``), or ``<preset>/<method>-<task>`` composed from the fragments. A
file's ``base:`` list names fragments merged in order before its own keys. Dotted overrides (``--set
method.M=4``) are parsed as YAML scalars. Unknown keys and wrong types raise :class:`ConfigError` naming the key.

Layout, names, composition and validation: docs/configs.md.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import pydantic
import yaml

from ..core.registry import unknown_name_message
from ..methods import METHODS, SearchConfig, SearchMethod
from ..tasks import TASKS, WEIGHT_FIELDS, Task, TrainConfig
from ..tasks.spaces import SPACES, ConfigError, UnknownNameError
from .speed import MEMORY_FORMAT_CHOICES

__all__ = [
    "CONFIG_DIR",
    "MAX_YAML_BYTES",
    "ExperimentConfig",
    "block_model",
    "bundled_configs",
    "compose",
    "config_description",
    "config_type_problems",
    "load_config",
    "parse_config",
    "read_config",
    "read_yaml_file",
]

# Shipped data is read through importlib.resources, never relative to the working directory.
CONFIG_DIR = Path(str(files(__package__) / "configs"))
FRAGMENT_DIR = CONFIG_DIR / "_fragments"  # base: entries that are no path next to the file: <preset>/<task>
SCHEMA_LINE = "# yaml-language-server: $schema="  # first line of the shipped configs: editors complete their keys
PRESETS = ("smoke", "proxy", "paper", "demo", "custom")
MAX_YAML_BYTES = 1_000_000  # configs and sweep files (read_yaml_file): a few dozen keys, never megabytes
TOP_KEYS = (
    "preset",
    "seed",
    "space",
    "method",
    "task",
    "search",
    "evaluate",
    "device",
    "deterministic",
    "threads",
    "mixed_precision",
    "search_mixed_precision",
    "lr_scaling",
    "memory_format",
    "compile",
    "figures",
    "transfer_from",
)
# keys that change how a run goes but none of its numbers: out of the config hash (with the seed), and a resume or
# a transfer's source may differ in them
RESULT_NEUTRAL = ("threads", "figures")
# keys a transfer run (``transfer_from``) passes on to the search it runs: how to run, not what to run (not
# figures: a search alone draws none)
RUNTIME_KEYS = ("device", "deterministic", "threads", "search_mixed_precision", "lr_scaling", "memory_format")


@dataclass
class ExperimentConfig:
    method_name: str
    method: Any  # the method's config dataclass instance
    task_name: str
    task: Any  # the task's config dataclass instance
    search: Any = field(default_factory=SearchConfig)  # the task's search block
    evaluate: Any = field(default_factory=TrainConfig)  # the task's evaluate block
    space: str = "dag"  # defaults to the method's own space
    preset: str = "custom"
    seed: int = 0
    device: str = "auto"  # auto (accelerate's choice) | cpu
    # torch.use_deterministic_algorithms + cuDNN deterministic kernels: slower on a GPU, bit-identical reruns
    deterministic: bool = False
    # intra-op CPU threads of this run (torch.set_num_threads); None = torch's default (all cores). Sweeps running
    # several runs side by side set it so they do not oversubscribe the cores. Not part of the config hash.
    threads: int | None = None
    # Precision is a decision, never a user's accelerate default: the final training may use bf16/fp16 autocast
    # when asked; the search stays fp32 unless search_mixed_precision asks (DARTS's second-order step is fp32 always).
    mixed_precision: str = "no"  # final training: no | bf16 (autocast of the training forward; test metrics in fp32)
    search_mixed_precision: str = "no"  # search: no | bf16 (autocast of the search loss)
    # Several processes: batch_size is per process (effective batch = batch_size x world size); "linear" scales
    # both learning rates by the world size (Goyal et al.), "none" keeps them as configured. Recorded.
    lr_scaling: str = "none"
    # The fast path (see benchmark/speed.py): channels_last lays every 4-D weight and input out NHWC, in the search
    # and the final training (the same values up to float rounding; faster convolutions and pools on CPUs, measured);
    # auto picks per network from the device, dtype and width (speed.resolve_memory_format) and the record says
    # what each phase ran in. compile runs the final network through torch.compile and, for the dense methods, the
    # search supernet's forward (the sampling methods' supernets stay eager).
    memory_format: str = field(default="auto", metadata={"omit_default": True})  # auto | contiguous | channels_last
    compile: bool = field(default=False, metadata={"omit_default": True})
    # the run folder's PNG figures (cells, probabilities, curves: about 0.5 s of rendering per run); false for many
    # tiny runs (CI, tests, large sweeps), whose CSVs and JSON hold the same numbers. Not part of the config hash.
    figures: bool = field(default=True, metadata={"omit_default": True})
    # A transfer run: {"source": <config name or path, or run folder>, "task": <the task it searched on>}. The
    # method, space and search blocks are the source's (a search on that task); this config trains and tests its
    # cell on this config's task (see Transfer).
    transfer_from: dict | None = field(default=None, metadata={"omit_default": True})

    def to_dict(self) -> dict:
        return _omit_defaults(self) | {
            "preset": self.preset,
            "seed": self.seed,
            "space": self.space,
            "device": self.device,
            "deterministic": self.deterministic,
            "threads": self.threads,
            "mixed_precision": self.mixed_precision,
            "search_mixed_precision": self.search_mixed_precision,
            "lr_scaling": self.lr_scaling,
            "method": {"name": self.method_name, **_block(self.method)},
            "task": {"name": self.task_name, **_block(self.task)},
            "search": _block(self.search),
            "evaluate": _block(self.evaluate),
        }

    @property
    def run_name(self) -> str:
        """``method-task-preset-seed<k>``: the trackers' run name, kept in model.safetensors' metadata."""
        return f"{self.method_name}-{self.task_name}-{self.preset}-seed{self.seed}"

    @property
    def transfer(self) -> Transfer | None:
        """Where this config's cell is searched (``transfer_from``), or None for a config that searches itself."""
        return (
            None if self.transfer_from is None else Transfer(self.transfer_from["source"], self.transfer_from["task"])
        )

    def source_config(self) -> ExperimentConfig:
        """The search a transfer config takes its cell from, at this config's seed (see :class:`Transfer`)."""
        if self.transfer is None:
            raise ConfigError(f"{self.run_name} has no transfer_from: it searches on its own task")
        return self.transfer.config(self)

    def hash(self) -> str:
        """sha256 of the resolved config without the seed (and the thread count, which changes speed, not results,
        and whether figures are drawn): the identity of a run up to its seed."""
        data = {k: v for k, v in self.to_dict().items() if k != "seed" and k not in RESULT_NEUTRAL}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Transfer:
    """A transfer config's source: the search whose cell it trains on another task (the paper's protocol for
    WikiText-2, ImageNet and VOC 2012: search on PTB or CIFAR-10, train the best cell on the target).

    ``source`` is a config (a bundled name such as ``paper/egs-ptb`` or a YAML path), whose search the
    transfer runs (or reuses) at its own seed, or a finished run folder, whose search result it reuses as is.
    """

    source: str
    task: str  # the task the source searched on (ptb, cifar10)

    @property
    def is_run_folder(self) -> bool:
        return Path(self.source).expanduser().is_dir()

    def config(self, target: ExperimentConfig) -> ExperimentConfig:
        """The source search's config: the source's own blocks for its task and final training, the ``target``'s
        method, space and search blocks (a ``--set method.M=7`` on the transfer changes the search), seed and
        runtime keys. A run folder's config is its ``config.yaml`` as it ran."""
        raw = _source_raw(self.source)
        if self.is_run_folder:
            return parse_config(raw)
        mine = target.to_dict()
        raw |= {key: mine[key] for key in ("method", "space", "search", "seed", *RUNTIME_KEYS) if key in mine}
        return parse_config(raw)


def _source_raw(source: str) -> dict:
    """The raw config of a transfer source: a run folder's ``config.yaml`` or a config file (bundled name or path)."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        path = folder / "config.yaml"
        if not path.is_file():
            raise ConfigError(
                f"transfer_from: {source} is a folder without config.yaml, not a run folder; name a "
                "finished search's run folder or a config such as paper/egs-ptb"
            )
        data = read_yaml_file(path, "config") or {}
        if not isinstance(data, dict):
            raise ConfigError(f"transfer_from: {path} must hold a YAML mapping, got a {type(data).__name__}")
    else:
        try:
            data = read_config(source)
        except (UnknownNameError, ConfigError) as err:
            raise ConfigError(f"transfer_from: {err}") from None
    if data.get("transfer_from") is not None:
        raise ConfigError(
            f"transfer_from: {source} is itself a transfer config; name the search config it transfers "
            f"from ({data['transfer_from']}) instead"
        )
    return data


def _with_source(data: dict) -> dict:
    """``data`` with the method, space and search blocks a transfer takes from its source (its own keys win),
    and ``transfer_from`` as ``{"source", "task"}``."""
    given = data["transfer_from"]
    if isinstance(given, str):
        given = {"source": given}
    if not isinstance(given, dict) or not isinstance(given.get("source"), str) or set(given) - {"source", "task"}:
        raise ConfigError(
            f"config key transfer_from must be a config name (e.g. paper/egs-ptb) or a run folder, got "
            f"{data['transfer_from']!r}"
        )
    data = dict(data)
    complete = all(key in data for key in ("method", "search")) and isinstance(given.get("task"), str)
    if not complete:  # a config written by hand; config.yaml of a transfer run holds every block
        raw = _source_raw(given["source"])
        for key in ("method", "search"):
            mine, theirs = data.get(key) or {}, raw.get(key) or {}
            if not isinstance(mine, dict) or not isinstance(theirs, dict):
                raise ConfigError(f"config block {key!r} must be a mapping")
            data[key] = {**theirs, **mine}
        if "space" in raw:
            data.setdefault("space", raw["space"])
        source_task = raw.get("task")
        if not isinstance(source_task, dict) or not isinstance(source_task.get("name"), str):
            raise ConfigError(f"transfer_from: {given['source']} names no task (task: {{name: ...}})")
        given = {"source": given["source"], "task": source_task["name"]}
    if given["task"] not in TASKS.names():
        raise ConfigError(unknown_name_message("transfer_from task", given["task"], TASKS.names()))
    data["transfer_from"] = given
    return data


def _omit_defaults(config: Any) -> dict:
    """The fields of ``config`` marked ``omit_default``, unless they sit at their default: fields added after
    records were published, left out of ``to_dict`` (and so of the hash) until set, so those records keep theirs."""
    return {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if f.metadata.get("omit_default") and getattr(config, f.name) != f.default
    }


def _block(block: Any) -> dict:
    """A config block as a dict; its ``omit_default`` fields only when set (see :func:`_omit_defaults`)."""
    marked = {f.name for f in dataclasses.fields(block) if f.metadata.get("omit_default")}
    return {k: v for k, v in dataclasses.asdict(block).items() if k not in marked} | _omit_defaults(block)


def bundled_configs() -> list[str]:
    """The shipped config names, ``<preset>/<name>`` (the fragments under ``_fragments/`` are no configs)."""
    paths = (p for p in CONFIG_DIR.glob("*/*.yaml") if not p.parent.name.startswith("_"))
    return sorted(str(p.relative_to(CONFIG_DIR).with_suffix("")) for p in paths)


def config_description(source: str) -> str:
    """The first line of a config's opening comment (what it runs, and for a paper config the row it stands for);
    ``""`` when the file opens without a comment. The ``yaml-language-server`` line is skipped."""
    for line in resolve_config_path(source).read_text(encoding="utf-8", errors="replace").splitlines():
        if line.strip() and not line.startswith(SCHEMA_LINE):
            return line.lstrip("#").strip() if line.startswith("#") else ""
    return ""


# -- composition: base fragments ------------------------------------------------------------------------------------
def compose(data: dict, path: Path | None = None, _chain: tuple[Path, ...] = ()) -> dict:
    """``data`` with its ``base:`` fragments merged in: each fragment (itself composed) in order, then ``data``'s own
    keys; mappings merge key by key, anything else is replaced (later wins).

    A ``base:`` entry is a YAML file relative to ``path``'s folder (``.yaml`` optional), else a bundled fragment
    ``<preset>/<task>`` under ``benchmark/configs/_fragments/``.

    Raises:
        ConfigError: a fragment that is missing, not a mapping, or includes itself; the message names the file.
    """
    base = data.get("base")
    if base is None:
        return data
    where = str(path) if path is not None else "the config"
    entries = [base] if isinstance(base, str) else base
    if not isinstance(entries, list) or not all(isinstance(entry, str) for entry in entries):
        raise ConfigError(f"{where}: base must be a fragment file or a list of them, got {base!r}")
    chain = (*_chain, path.resolve()) if path is not None else _chain
    merged: dict = {}
    for entry in entries:
        fragment = _fragment_path(entry, path, where)
        if fragment in chain:
            cycle = " -> ".join(str(p) for p in (*chain[chain.index(fragment) :], fragment))
            raise ConfigError(f"{where}: base fragment {entry!r} includes itself ({cycle}); remove one of the bases")
        raw = read_yaml_file(fragment, "config fragment") or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"config fragment {fragment} must hold a YAML mapping, got a {type(raw).__name__}")
        merged = _merge(merged, compose(raw, fragment, chain))
    return _merge(merged, {key: value for key, value in data.items() if key != "base"})


def _fragment_path(entry: str, path: Path | None, where: str) -> Path:
    name = entry if entry.endswith(".yaml") else f"{entry}.yaml"
    candidates = ([path.parent / Path(name).expanduser()] if path is not None else []) + [FRAGMENT_DIR / name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    shipped = sorted(str(p.relative_to(FRAGMENT_DIR).with_suffix("")) for p in FRAGMENT_DIR.glob("*/*.yaml"))
    looked = " or ".join(str(c) for c in candidates)
    raise ConfigError(
        f"{where}: base fragment {entry!r} not found ({looked}); name a YAML file relative to the "
        f"config or a bundled fragment: {', '.join(shipped)}"
    )


def _merge(into: dict, data: dict) -> dict:
    """A new mapping: ``into`` updated by ``data``, nested mappings merged (neither argument changes)."""
    out = dict(into)
    for key, value in data.items():
        both = isinstance(out.get(key), dict) and isinstance(value, dict)
        out[key] = _merge(out[key], value) if both else value
    return out


def _combination(name: str) -> dict | None:
    """``<preset>/<method>-<task>`` that ships no file: the preset's ``<task>`` fragment and the method at its
    defaults (its own space unless the fragment names one), or None when no fragment and method match.

    Raises:
        ConfigError: the fragment holds no search block (its configs train a cell searched elsewhere).
    """
    preset, _, rest = name.partition("/")
    if not preset or preset.startswith((".", "_")) or "/" in rest:
        return None
    for fragment in sorted((FRAGMENT_DIR / preset).glob("*.yaml"), key=lambda p: -len(p.stem)):  # longest first
        method = rest.removesuffix(f"-{fragment.stem}")
        if method != rest and method in METHODS.names():
            base = f"{preset}/{fragment.stem}"
            data = compose({"base": [base], "method": {"name": method}})
            if "search" not in data:
                raise ConfigError(
                    f"config {name!r}: fragment {base} holds no search block (its configs train a cell searched "
                    f"elsewhere); write a config with base: [{base}], method: {{name: {method}}} and transfer_from: "
                    "<the search config> (docs/configs.md)"
                )
            return data
    return None


# -- validation: pydantic models of the components' dataclasses ------------------------------------------------------
# strict: an int field refuses "7", 7.5 and true; a float field takes an int (as float) but not a string, nan or inf
_STRICT = pydantic.ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


@functools.cache
def block_model(cls: type) -> type[pydantic.BaseModel]:
    """The pydantic model of config dataclass ``cls``: its ``__init__`` fields with their types and defaults. It checks
    names and types only; the dataclass, built from the checked values, still runs its ``__post_init__`` ranges."""
    hints = typing.get_type_hints(cls)
    fields = {}
    for f in dataclasses.fields(cls):
        if f.init:
            if f.default_factory is not dataclasses.MISSING:
                fields[f.name] = (hints[f.name], pydantic.Field(default_factory=f.default_factory))
            else:
                fields[f.name] = (hints[f.name], ... if f.default is dataclasses.MISSING else f.default)
    return pydantic.create_model(cls.__name__, __config__=_STRICT, __module__=cls.__module__, **fields)


@dataclass
class TopLevel:
    """The top-level scalars of a config file (their checks beyond type are in :func:`parse_config`)."""

    preset: str = "custom"
    seed: int = 0
    space: str = "dag"  # default: the method's own space
    device: str = "auto"
    deterministic: bool = False
    threads: int | None = None
    mixed_precision: str = "no"
    search_mixed_precision: str = "no"
    lr_scaling: str = "none"
    memory_format: str = "auto"
    compile: bool = False
    figures: bool = True


TOP_LEVEL = tuple(f.name for f in dataclasses.fields(TopLevel))  # the scalar keys, typed by TopLevel


def _check(cls: type, data: dict, where: str, *, unknown: bool = True) -> list[tuple[str, str]]:
    """``(key, problem)`` for each wrong key of ``data`` under ``cls``'s model, in ``data``'s order (unknown keys
    too if ``unknown``), and the checked values under ``""``: ``[("", values)]`` when there is no problem."""
    try:
        checked = block_model(cls).model_validate({key: _lists(value) for key, value in data.items()})
    except pydantic.ValidationError as err:
        order = {key: i for i, key in enumerate(data)}
        found = {}
        for error in err.errors():
            key = error["loc"][0] if error["loc"] else ""
            if key in found or (error["type"] == "extra_forbidden" and not unknown):
                continue
            found[key] = _problem(cls, error, data.get(key), f"{where}.{key}" if where else str(key))
        return sorted(found.items(), key=lambda item: order.get(item[0], len(order)))
    return [("", {key: value for key, value in checked if key in checked.model_fields_set})]


def _problem(cls: type, error: dict, value: Any, key: str) -> str:
    """One ``ValidationError`` entry as the one-line message of the hand-written checker it replaced."""
    if error["type"] == "extra_forbidden":
        names = list(block_model(cls).model_fields)
        close = difflib.get_close_matches(key.rsplit(".", 1)[-1], names, n=1, cutoff=0.5)
        where = key.rsplit(".", 1)[0]
        hint = f"; did you mean {where}.{close[0]}?" if close else ""
        return f"unknown config key {key}{hint} Valid keys: {', '.join(names)}"
    if error["type"] == "finite_number":  # .nan / .inf never make sense as a hyperparameter
        return f"config key {key!r} must be a finite number, got {value}"
    expected = _type_name(block_model(cls).model_fields[error["loc"][0]].annotation)
    return f"config key {key!r} must be {expected}, got {value!r} ({type(value).__name__})"


def _type_name(hint: Any) -> str:
    """``int``, ``float or None``, ``list[str]``: a field's type as a message says it."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(option) for option in typing.get_args(hint))
    if hint is type(None):
        return "None"
    return str(hint) if typing.get_origin(hint) is not None else hint.__name__


def _lists(value: Any) -> Any:
    """Tuples as lists (YAML gives lists; a caller in Python may pass a tuple for a list field)."""
    return [_lists(v) for v in value] if isinstance(value, (list, tuple)) else value


def build_dataclass(cls: type, data: Any, where: str) -> Any:
    """Validate a mapping into dataclass ``cls``; errors name ``where.key``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config block {where!r} must be a mapping, got {type(data).__name__}")
    key, result = _check(cls, data, where)[0]
    if key:
        raise ConfigError(result)
    try:
        return cls(**result)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"invalid {where} config: {err}") from None


def config_type_problems(config: dict) -> list[str]:
    """Wrong types in a resolved config (as a run record holds it), one line per key, naming ``config.<block>.<key>``.

    Only the values of keys that the installed components declare are checked: a record of a method or
    task that is not installed, or of a key an older version had, is not a problem here. Ranges are not
    checked either: this guards readers (tables, reports) against values of the wrong type, such as a
    string ``M``.

    Args:
        config: the ``config`` of a record: ``{"method": {"name": ...}, "task": {...}, "search": ..., ...}``.
    """
    method, task = config.get("method"), config.get("task")
    method_cls = METHODS.get(method["name"]) if _installed(method, METHODS) else None
    task_cls = TASKS.get(task["name"]) if _installed(task, TASKS) else None
    search_cls = task_cls.search_config_class if task_cls is not None else SearchConfig
    transfer = config.get("transfer_from")
    if isinstance(transfer, dict):  # a transfer's search block is its source task's (unchecked when not installed)
        source = {"name": transfer.get("task")}
        search_cls = TASKS.get(source["name"]).search_config_class if _installed(source, TASKS) else None
    classes = {
        "method": method_cls.config_class if method_cls is not None else None,
        "task": task_cls.config_class if task_cls is not None else None,
        "search": search_cls,
        "evaluate": task_cls.train_config_class if task_cls is not None else TrainConfig,
    }
    problems = []
    for block, cls in classes.items():
        values = config.get(block)
        if cls is None or not isinstance(values, dict):
            continue
        values = {key: value for key, value in values.items() if key != "name"}
        for key, problem in _check(cls, values, block, unknown=False):
            if key:
                where = f"{block}.{key}"
                problems.append(f"field config.{where}: " + problem.replace(f"config key {where!r} ", "", 1))
    return problems


def _installed(block: Any, registry) -> bool:
    return isinstance(block, dict) and isinstance(block.get("name"), str) and block["name"] in registry


def _named_block(block: Any, key: str) -> tuple[str, dict]:
    if not isinstance(block, dict) or "name" not in block:
        raise ConfigError(f"config block {key!r} must be a mapping with a 'name', e.g. {key}: {{name: ...}}")
    block = dict(block)
    return str(block.pop("name")), block


def _seed(value: int) -> int:
    if not 0 <= value < 2**32:  # what set_seed (NumPy) takes; a bad seed must fail before the run folder exists
        raise ConfigError(f"config key seed must be in [0, {2**32 - 1}], got {value}")
    return value


def _check_subclass(cls: type, base: type, what: str, base_name: str) -> None:
    """A registered plug-in must subclass the seam's base class, whose optional hooks the harness calls."""
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(
            f"{what} is registered to {cls!r}, which does not subclass {base_name}; derive it from "
            f"{base_name} (its optional hooks have defaults the runner calls)"
        )


def parse_config(data: dict) -> ExperimentConfig:
    """Validate a raw config mapping (after overrides) into an :class:`ExperimentConfig`; a ``base:`` list in it
    names bundled fragments (see :func:`compose`)."""
    if not isinstance(data, dict):
        raise ConfigError("a config file must be a YAML mapping with keys " + ", ".join(TOP_KEYS))
    data = compose(data)
    for key in data:
        if key not in TOP_KEYS:
            close = difflib.get_close_matches(str(key), TOP_KEYS, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown config key {key!r}{hint} Valid top-level keys: {', '.join(TOP_KEYS)}")
    transfer = None
    if data.get("transfer_from") is not None:
        data = _with_source(data)
        transfer = data["transfer_from"]
    method_name, method_block = _named_block(data.get("method"), "method")
    task_name, task_block = _named_block(data.get("task"), "task")
    method_cls, task_cls = METHODS.get(method_name), TASKS.get(task_name)
    _check_subclass(method_cls, SearchMethod, f"method {method_name!r}", "egsbench.methods.SearchMethod")
    _check_subclass(task_cls, Task, f"task {task_name!r}", "egsbench.tasks.Task")
    if transfer is not None and not method_cls.trains_supernet:
        raise ConfigError(
            f"transfer_from: {transfer['source']} runs method {method_name}, which searches nothing; "
            "train its cell with method: {name: fixed, genotype: ...} and no transfer_from"
        )
    key, top = _check(TopLevel, {key: data[key] for key in TOP_LEVEL if key in data}, "", unknown=False)[0]
    if key:
        raise ConfigError(top)
    method_space = method_cls.space
    space = top.get("space", method_space)
    if SPACES.get(space).inputs_per_node is not None and SPACES.get(method_space).inputs_per_node is None:
        raise ConfigError(
            f"method {method_name!r} derives cells with any in-degree, which space {space!r} rejects; "
            f"set space: {method_space}"
        )
    preset = top.get("preset", "custom")
    if preset not in PRESETS:
        raise ConfigError(f"config key 'preset' must be one of {list(PRESETS)}, got {preset!r}")
    device = top.get("device", "auto")
    if device not in DEVICES:
        raise ConfigError(f"config key 'device' must be 'auto' or 'cpu', got {device!r}")
    searched_on = TASKS.get(transfer["task"]) if transfer is not None else task_cls  # a transfer searches the source's
    search = build_dataclass(searched_on.search_config_class, data.get("search"), "search")
    if not isinstance(search, SearchConfig):  # a plug-in task's search block must carry what methods read
        raise ConfigError(
            f"task {task_name!r}: its search block {type(search).__name__} does not subclass "
            f"egsbench.core.SearchConfig, whose fields {list(WEIGHT_FIELDS)} methods read"
        )
    method = build_dataclass(method_cls.config_class, method_block, "method")
    # the class may say, or its instance for this config (random: only variant=darts_baseline trains nothing)
    if search.epochs == 0 and method_cls(method).trains_supernet:
        raise ConfigError(
            f"config key search.epochs must be >= 1 for method {method_name!r}, got 0 (it would derive from untrained "
            "weights); only methods that train no supernet (e.g. fixed, random variant=darts_baseline) take 0"
        )
    evaluate = build_dataclass(task_cls.train_config_class, data.get("evaluate"), "evaluate")
    _check_candidate_recipe(method_cls, method, evaluate)
    return ExperimentConfig(
        method_name=method_name,
        method=method,
        task_name=task_name,
        task=build_dataclass(task_cls.config_class, task_block, "task"),
        search=search,
        evaluate=evaluate,
        space=space,
        preset=preset,
        seed=_seed(top.get("seed", 0)),
        device=device,
        deterministic=top.get("deterministic", False),
        threads=_threads(top.get("threads")),
        mixed_precision=_choice(top, "mixed_precision", "no", PRECISIONS),
        search_mixed_precision=_choice(top, "search_mixed_precision", "no", PRECISIONS),
        lr_scaling=_choice(top, "lr_scaling", "none", LR_SCALINGS),
        memory_format=_choice(top, "memory_format", "auto", MEMORY_FORMAT_CHOICES),
        compile=top.get("compile", False),
        figures=top.get("figures", True),
        transfer_from=transfer,
    )


def candidate_recipe(recipe: Any, method_cls: type, method_config: Any) -> Any:
    """``recipe`` with the method's ``candidate_recipe`` overrides: what its candidates train with."""
    return dataclasses.replace(recipe, **method_cls.candidate_recipe(method_config))


def _check_candidate_recipe(method_cls: type, method: Any, evaluate: Any) -> None:
    """The candidates' recipe (e.g. random search's ``darts_baseline``) must validate now, not mid-search."""
    values = method_cls.candidate_recipe(method)
    try:
        candidate_recipe(evaluate, method_cls, method)
    except ConfigError as err:
        used = ", ".join(f"method.candidate_{key}={value}" for key, value in values.items())
        raise ConfigError(f"the candidates' recipe (the evaluate block with {used}): {err}") from None


_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


PRECISIONS = ("no", "bf16")  # fp16 would need a GradScaler around every optimiser, methods' included
LR_SCALINGS = ("none", "linear")
DEVICES = ("auto", "cpu")


def _choice(top: dict, key: str, default: str, valid: tuple[str, ...]) -> str:
    value = top.get(key, default)
    if value not in valid:
        raise ConfigError(f"config key {key} must be one of {list(valid)}, got {value!r}")
    return value


def _threads(value: int | None) -> int | None:
    if value is not None and value < 1:
        raise ConfigError(f"config key threads must be >= 1 (or null for torch's default), got {value}")
    return value


def apply_override(data: dict, assignment: str) -> None:
    """Apply ``a.b.c=value`` to a nested mapping; the value is parsed as a YAML scalar."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} is not of the form key=value (e.g. --set method.M=4)")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key!r}: {part!r} is not a config block")
        node = child
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 1e6 (no dot) as a string; every float spelling Python knows is a number
    node[parts[-1]] = value


def resolve_config_path(source: str) -> Path:
    path = Path(source)
    if path.is_file():
        return path
    name = source[:-5] if source.endswith(".yaml") else source
    bundled = CONFIG_DIR / f"{name}.yaml"
    if bundled.is_file():
        return bundled
    raise UnknownNameError(
        unknown_name_message("config", source, bundled_configs()) + " (or pass the path of a YAML file)"
    )


def read_yaml_file(path: Path, what: str = "config") -> Any:
    """The YAML document in ``path`` (None when empty), after checking its size and encoding.

    A file over ``MAX_YAML_BYTES`` is refused before a byte of it is parsed: PyYAML builds the whole document
    in memory (a 48 MB config was still being parsed after 120 s, at 4.1 GB).

    Args:
        path: the file.
        what: what it is, for the messages ("config", "sweep file"); its plural is ``what + "s"``.

    Raises:
        ConfigError: too large, not UTF-8 or not YAML; the message names the file and what to do.
    """
    size = path.stat().st_size
    if size > MAX_YAML_BYTES:
        shown = f"{size / 1e6:.1f} MB" if size >= 1.05 * MAX_YAML_BYTES else f"{size:,} bytes"
        raise ConfigError(
            f"{what} {path} is {shown}; {what}s are limited to {MAX_YAML_BYTES / 1e6:g} MB: a {what} holds a few "
            "dozen keys (the bundled ones are under 2 KB), so pass the YAML written for egsbench, not a data or log "
            "file"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None


def read_config(source: str) -> dict:
    """The raw config ``source`` names (a path, a bundled name or ``<preset>/<method>-<task>`` composed from the
    fragments), its ``base:`` fragments merged in: what overrides apply to before validation."""
    try:
        path = resolve_config_path(source)
    except UnknownNameError:
        combination = _combination(source[:-5] if source.endswith(".yaml") else source)
        if combination is None:
            raise
        return compose(combination)
    data = read_yaml_file(path, "config") or {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path} must hold a YAML mapping with keys {', '.join(TOP_KEYS)}, got a {type(data).__name__}"
        )
    return compose(data, path)


def load_config(source: str, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read ``source`` (a path, bundled name or fragment combination), apply ``--set`` overrides, validate."""
    data = read_config(source)
    for assignment in overrides or []:
        apply_override(data, assignment)
    return parse_config(data)

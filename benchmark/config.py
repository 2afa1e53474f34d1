"""Experiment configs: one YAML file validated into the components' own dataclasses.

Layout::

    preset: smoke            # smoke | proxy | paper | custom
    seed: 0
    space: dag               # a name in SPACES
    method: {name: egs, M: 7, ...}        # -> the method's config dataclass
    task: {name: cifar10, data_dir: ...}  # -> the task's config dataclass
    search: {epochs: 50, ...}             # -> the task's search_config_class
    evaluate: {epochs: 600, ...}          # -> the task's train_config_class

``CONFIG`` on the command line is a path or a bundled name such as ``smoke/egs-cifar10``
(``benchmark/configs/<preset>/<name>.yaml``). Dotted overrides (``--set method.M=4``) are
parsed as YAML scalars. Unknown keys and wrong types raise :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from ..core.registry import unknown_name_message
from ..methods import METHODS, SearchConfig, SearchMethod
from ..tasks import TASKS, WEIGHT_FIELDS, Task, TrainConfig
from ..tasks.spaces import SPACES, ConfigError, UnknownNameError
from .speed import MEMORY_FORMATS

__all__ = [
    "CONFIG_DIR",
    "MAX_YAML_BYTES",
    "ExperimentConfig",
    "bundled_configs",
    "config_description",
    "config_type_problems",
    "load_config",
    "parse_config",
    "read_yaml_file",
]

# Shipped data is read through importlib.resources, never relative to the working directory.
CONFIG_DIR = Path(str(files(__package__) / "configs"))
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
    "transfer_from",
)
# keys a transfer run (``transfer_from``) passes on to the search it runs: how to run, not what to run
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
    # The GPU path (see benchmark/speed.py): channels_last lays every 4-D weight and input out NHWC, in the search
    # and the final training (the same values up to float rounding; faster convolutions and pools on CPUs and
    # tensor cores); compile runs the final network through torch.compile (the search stays eager).
    memory_format: str = field(default="contiguous", metadata={"omit_default": True})  # contiguous | channels_last
    compile: bool = field(default=False, metadata={"omit_default": True})
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
        return None if self.transfer_from is None else Transfer(self.transfer_from["source"],
                                                                  self.transfer_from["task"])  # fmt: skip

    def source_config(self) -> ExperimentConfig:
        """The search a transfer config takes its cell from, at this config's seed (see :class:`Transfer`)."""
        if self.transfer is None:
            raise ConfigError(f"{self.run_name} has no transfer_from: it searches on its own task")
        return self.transfer.config(self)

    def hash(self) -> str:
        """sha256 of the resolved config without the seed (and the thread count, which changes speed, not results):
        the identity of a run up to its seed."""
        data = {k: v for k, v in self.to_dict().items() if k not in ("seed", "threads")}
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
            raise ConfigError(f"transfer_from: {source} is a folder without config.yaml, not a run folder; name a "
                              "finished search's run folder or a config such as paper/egs-ptb")  # fmt: skip
    else:
        try:
            path = resolve_config_path(source)
        except UnknownNameError as err:
            raise ConfigError(f"transfer_from: {err}") from None
    data = read_yaml_file(path, "config") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"transfer_from: {path} must hold a YAML mapping, got a {type(data).__name__}")
    if data.get("transfer_from") is not None:
        raise ConfigError(f"transfer_from: {source} is itself a transfer config; name the search config it transfers "
                          f"from ({data['transfer_from']}) instead")  # fmt: skip
    return data


def _with_source(data: dict) -> dict:
    """``data`` with the method, space and search blocks a transfer takes from its source (its own keys win),
    and ``transfer_from`` as ``{"source", "task"}``."""
    given = data["transfer_from"]
    if isinstance(given, str):
        given = {"source": given}
    if not isinstance(given, dict) or not isinstance(given.get("source"), str) or set(given) - {"source", "task"}:
        raise ConfigError(f"config key transfer_from must be a config name (e.g. paper/egs-ptb) or a run folder, got "
                          f"{data['transfer_from']!r}")  # fmt: skip
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
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
            if f.metadata.get("omit_default") and getattr(config, f.name) != f.default}  # fmt: skip


def _block(block: Any) -> dict:
    """A config block as a dict; its ``omit_default`` fields only when set (see :func:`_omit_defaults`)."""
    marked = {f.name for f in dataclasses.fields(block) if f.metadata.get("omit_default")}
    return {k: v for k, v in dataclasses.asdict(block).items() if k not in marked} | _omit_defaults(block)


def bundled_configs() -> list[str]:
    return sorted(str(p.relative_to(CONFIG_DIR).with_suffix("")) for p in CONFIG_DIR.glob("*/*.yaml"))


def config_description(source: str) -> str:
    """The first line of a config's opening comment (what it runs, and for a paper config the row it stands for);
    ``""`` when the file opens without a comment."""
    for line in resolve_config_path(source).read_text(encoding="utf-8", errors="replace").splitlines():
        if line.strip():
            return line.lstrip("#").strip() if line.startswith("#") else ""
    return ""


def _check_type(value: Any, hint: Any, key: str) -> Any:
    """Return ``value`` if it fits ``hint`` (ints are accepted as floats), else raise naming ``key``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(hint):
            try:
                return _check_type(value, option, key)
            except ConfigError as err:
                errors.append(err)
        raise errors[-1]
    if hint is type(None):
        if value is None:
            return None
    elif hint is Any:
        return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):  # .nan / .inf never make sense as a hyperparameter
                raise ConfigError(f"config key {key!r} must be a finite number, got {value}")
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint in (str, bool):
        if isinstance(value, hint):
            return value
    elif origin in (tuple, list):
        if isinstance(value, (list, tuple)):
            args = typing.get_args(hint)
            item = args[0] if args else Any
            return origin(_check_type(v, item, key) for v in value)
    else:
        return value
    name = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"config key {key!r} must be {name}, got {value!r} ({type(value).__name__})")


def build_dataclass(cls: type, data: Any, where: str) -> Any:
    """Validate a mapping into dataclass ``cls``; errors name ``where.key``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config block {where!r} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
            hint = f"; did you mean {where}.{close[0]}?" if close else ""
            raise ConfigError(f"unknown config key {where}.{key}{hint} Valid keys: {', '.join(names)}")
        kwargs[key] = _check_type(value, hints[key], f"{where}.{key}")
    try:
        return cls(**kwargs)
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
        hints = typing.get_type_hints(cls)
        for key, value in values.items():
            if key in hints and key != "name":
                where = f"{block}.{key}"
                try:
                    _check_type(value, hints[key], where)
                except ConfigError as err:
                    problems.append(f"field config.{where}: " + str(err).replace(f"config key {where!r} ", "", 1))
    return problems


def _installed(block: Any, registry) -> bool:
    return isinstance(block, dict) and isinstance(block.get("name"), str) and block["name"] in registry.names()


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
        raise ConfigError(f"{what} is registered to {cls!r}, which does not subclass {base_name}; derive it from "
                          f"{base_name} (its optional hooks have defaults the runner calls)")  # fmt: skip


def parse_config(data: dict) -> ExperimentConfig:
    """Validate a raw config mapping (after overrides) into an :class:`ExperimentConfig`."""
    if not isinstance(data, dict):
        raise ConfigError("a config file must be a YAML mapping with keys " + ", ".join(TOP_KEYS))
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
        raise ConfigError(f"transfer_from: {transfer['source']} runs method {method_name}, which searches nothing; "
                          "train its cell with method: {name: fixed, genotype: ...} and no transfer_from")  # fmt: skip
    method_space = method_cls.space
    space = _check_type(data.get("space", method_space), str, "space")
    if SPACES.get(space).inputs_per_node is not None and SPACES.get(method_space).inputs_per_node is None:
        raise ConfigError(
            f"method {method_name!r} derives cells with any in-degree, which space {space!r} rejects; "
            f"set space: {method_space}"
        )
    preset = _check_type(data.get("preset", "custom"), str, "preset")
    if preset not in PRESETS:
        raise ConfigError(f"config key 'preset' must be one of {list(PRESETS)}, got {preset!r}")
    device = _check_type(data.get("device", "auto"), str, "device")
    if device not in ("auto", "cpu"):
        raise ConfigError(f"config key 'device' must be 'auto' or 'cpu', got {device!r}")
    searched_on = TASKS.get(transfer["task"]) if transfer is not None else task_cls  # a transfer searches the source's
    search = build_dataclass(searched_on.search_config_class, data.get("search"), "search")
    if not isinstance(search, SearchConfig):  # a plug-in task's search block must carry what methods read
        raise ConfigError(f"task {task_name!r}: its search block {type(search).__name__} does not subclass "
                          f"egsbench.core.SearchConfig, whose fields {list(WEIGHT_FIELDS)} methods read")  # fmt: skip
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
        seed=_seed(_check_type(data.get("seed", 0), int, "seed")),
        device=device,
        deterministic=_check_type(data.get("deterministic", False), bool, "deterministic"),
        threads=_threads(_check_type(data.get("threads"), int | None, "threads")),
        mixed_precision=_choice(data, "mixed_precision", "no", PRECISIONS),
        search_mixed_precision=_choice(data, "search_mixed_precision", "no", PRECISIONS),
        lr_scaling=_choice(data, "lr_scaling", "none", ("none", "linear")),
        memory_format=_choice(data, "memory_format", "contiguous", MEMORY_FORMATS),
        compile=_check_type(data.get("compile", False), bool, "compile"),
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


def _choice(data: dict, key: str, default: str, valid: tuple[str, ...]) -> str:
    value = _check_type(data.get(key, default), str, key)
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


def load_config(source: str, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read ``source`` (a path or bundled name), apply ``--set`` overrides, validate."""
    path = resolve_config_path(source)
    data = read_yaml_file(path, "config") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a YAML mapping with keys {', '.join(TOP_KEYS)}, got a "
                          f"{type(data).__name__}")  # fmt: skip
    for assignment in overrides or []:
        apply_override(data, assignment)
    return parse_config(data)

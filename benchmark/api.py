"""The public Python API, for notebooks and scripts: ``egsbench.run``, ``load_network``, ``build_supernet``.

The command line is a thin layer over the same functions, so a run started from Python writes
the same run folder (config, genotype, ``model.safetensors``, curves, ``record.json``) as
``egsbench run``.

Examples:
    >>> import torch, egsbench
    >>> record = egsbench.run("smoke/egs-cifar10", "runs/nb", overrides={"seed": 1})  # data, minutes  # doctest: +SKIP
    >>> record.metrics.test_error  # doctest: +SKIP
    >>> net = egsbench.load_network("runs/nb")  # the run's trained final network, in eval mode  # doctest: +SKIP
    >>> sn = egsbench.build_supernet("dag", "egs", "cifar10", channels=4, layers=3)
    >>> batch = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])  # (images (B, 3, H, W), labels (B,))
    >>> stats = sn.method.step(batch, batch)  # one search step
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..methods import METHODS, SearchContext, SearchMethod
from ..tasks import TASKS
from ..tasks.spaces import SPACES, ConfigError, Genotype, GenotypeError, UserError
from .config import ExperimentConfig, apply_override, build_dataclass, load_config, parse_config, read_yaml_file

__all__ = ["RunFolderMismatchError", "Supernet", "build_supernet", "load_network", "resolve_config", "run"]


def _override_list(overrides: Mapping[str, Any] | Sequence[str] | None) -> list[str]:
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        # JSON is valid YAML, so every value (lists, None, strings with '=') survives apply_override's parser.
        return [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    if isinstance(overrides, str):
        raise ConfigError(f"overrides must be a mapping or a list of 'key=value' strings, got the string {overrides!r}")
    return list(overrides)


def resolve_config(
    config: str | Path | Mapping | ExperimentConfig, overrides: Mapping[str, Any] | Sequence[str] | None = None
) -> ExperimentConfig:
    """An :class:`ExperimentConfig` from a bundled name, a YAML path, a mapping or a config, with overrides.

    Args:
        config: ``"smoke/egs-cifar10"``, a path to a YAML file, the YAML's content as a dict, or a config.
        overrides: dotted keys, ``{"method.M": 4, "seed": 1}`` or ``["method.M=4", "seed=1"]``.
    """
    assignments = _override_list(overrides)
    if isinstance(config, ExperimentConfig):
        if not assignments:
            return config
        config = config.to_dict()
    if isinstance(config, Mapping):
        data = json.loads(json.dumps(config))  # a deep copy that the overrides may edit
        for assignment in assignments:
            apply_override(data, assignment)
        return parse_config(data)
    return load_config(str(config), assignments)


def run(
    config: str | Path | Mapping | ExperimentConfig,
    out: str | Path,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    *,
    resume: bool = False,
    progress: bool = False,
    log_with: str | Sequence[str] | None = None,
    source_run: str | Path | None = None,
):
    """Search, derive and evaluate one config into the run folder ``out``; return its :class:`Record`.

    Args:
        config: a bundled config name (``egsbench list configs``), a YAML path, a mapping or a config.
        out: the run folder to write; it must not hold a finished run.
        overrides: dotted overrides, as ``--set`` on the command line.
        resume: continue an unfinished run of the same config in ``out`` from its last checkpoint.
        progress: show progress bars.
        log_with: accelerate tracker name(s), e.g. ``"tensorboard"``; logs go under ``out``.
        source_run: a transfer config's (``transfer_from``) source search folder: the search runs there, or is
            reused when the folder holds the same config's search; default ``out/source``.

    Returns:
        The validated run record (also written to ``out/record.json``).
    """
    from .records import Record
    from .runner import run_experiment

    cfg = resolve_config(config, overrides)
    trackers = [log_with] if isinstance(log_with, str) else list(log_with or [])
    result = run_experiment(cfg, out, progress=progress, resume=resume, log_with=trackers, source_run=source_run)
    return Record.model_validate(result.record)


class RunFolderMismatchError(UserError, ValueError):
    """A run folder whose files disagree: e.g. a ``genotype.json`` edited after the weights were trained."""


def _edge_text(edge: tuple | None) -> str:
    return "nothing" if edge is None else json.dumps(list(edge))


def _genotype_difference(trained: Genotype, found: Genotype) -> str:
    """The first place where ``found`` (genotype.json) differs from ``trained`` (the weights' metadata)."""
    for cell_type in sorted(set(trained.cells) | set(found.cells)):
        a, b = trained.cells.get(cell_type), found.cells.get(cell_type)
        if a is None or b is None:
            return f"the {cell_type} cell is only in {'genotype.json' if a is None else 'the weights'}"
        for i, (x, y) in enumerate(itertools.zip_longest(a.edges, b.edges)):
            if x != y:
                return f"{cell_type} edge {i} is {_edge_text(y)} in genotype.json, {_edge_text(x)} in the weights"
        if a.concat != b.concat:
            return f"{cell_type}_concat is {list(b.concat)} in genotype.json, {list(a.concat)} in the weights"
    return "they differ"


def _check_trained_identity(folder: Path, weights: Path, cfg: ExperimentConfig, genotype: Genotype) -> None:
    """Compare ``genotype.json`` and ``config.yaml`` with what ``model.safetensors`` records of its own run.

    The runner stores the genotype and the run name (``method-task-preset-seed``) in the file's metadata. A
    genotype edit that changes no weight's shape (``max_pool_3x3`` for ``avg_pool_3x3``) would otherwise load
    silently into another network. Files without that metadata are not checked.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), "pt") as f:
            meta = f.metadata() or {}
    except SafetensorError as err:
        raise UserError(f"{weights} is not a readable safetensors file ({err}); copy it again from the run") from None
    if "genotype" in meta:
        try:
            trained = Genotype.from_json(meta["genotype"])
        except GenotypeError as err:
            raise RunFolderMismatchError(f"{weights}: the genotype in its metadata is unreadable ({err})") from None
        if trained != genotype:
            raise RunFolderMismatchError(
                f"{folder / 'genotype.json'} is not the genotype {weights} was trained with (its metadata): "
                f"{_genotype_difference(trained, genotype)}; restore genotype.json (the record's genotype) or pass "
                "the run folder the weights came from"
            )
    name = cfg.run_name
    if "run" in meta and meta["run"] != name:
        raise RunFolderMismatchError(
            f"{folder / 'config.yaml'} describes run {name}, but {weights} was trained by run {meta['run']} (its "
            "metadata); restore config.yaml or pass the run folder the weights came from"
        )


def load_network(run_dir: str | Path) -> nn.Module:
    """The trained final network of a finished run, rebuilt from its config and genotype, in eval mode.

    Weights come from ``model.safetensors`` (no pickle is ever loaded); every key must match, and the
    genotype and run name stored in its metadata must match ``genotype.json`` and ``config.yaml``.

    Raises:
        UserError: the folder is not a finished run folder, or its files do not match each other
            (:class:`RunFolderMismatchError` when they load but describe different runs).
    """
    from safetensors.torch import load_model

    from .run_folder import MODEL_FILE

    folder = Path(run_dir)
    missing = [name for name in ("config.yaml", "genotype.json", MODEL_FILE) if not (folder / name).is_file()]
    if missing:
        raise UserError(
            f"{folder} is not a finished run folder (missing {', '.join(missing)}); pass the --out folder of a "
            "run that completed (its record.json exists)"
        )
    cfg = parse_config(read_yaml_file(folder / "config.yaml", "config") or {})
    try:
        genotype = Genotype.load(folder / "genotype.json")
    except GenotypeError as err:
        raise GenotypeError(f"{folder / 'genotype.json'}: {err}") from None
    _check_trained_identity(folder, folder / MODEL_FILE, cfg, genotype)
    net = TASKS.get(cfg.task_name)(cfg.task).build_network(genotype, cfg.evaluate)
    try:
        load_model(net, str(folder / MODEL_FILE), strict=True)
    except (RuntimeError, ValueError) as err:  # key or shape mismatch between the weights and the rebuilt network
        message = f"{folder / MODEL_FILE} does not fit the network its config and genotype build: {err}"
        raise UserError(message) from None
    return net.eval()


@dataclass
class Supernet:
    """A supernet with its search method set up on it: ``method.step(train_batch, val_batch)`` searches."""

    model: nn.Module
    method: SearchMethod
    context: SearchContext
    task: Any


def build_supernet(
    space: str,
    method: str,
    task: str,
    *,
    channels: int | None = None,
    layers: int | None = None,
    method_config: Mapping[str, Any] | Any | None = None,
    task_config: Mapping[str, Any] | Any | None = None,
    search: Mapping[str, Any] | None = None,
    seed: int = 0,
    steps_per_epoch: int = 1,
) -> Supernet:
    """A task's supernet of ``space`` with ``method`` set up on it, for benchmarks and experiments.

    No data is loaded: feed the task's batches (for CIFAR-10, ``(images (B, 3, 32, 32), labels (B,))``)
    to ``method.step``. Method and task configs are validated like the YAML blocks.

    Examples:
        >>> import torch, egsbench
        >>> sn = egsbench.build_supernet("dag", "egs", "cifar10", channels=4, layers=3, method_config={"M": 1})
        >>> batch = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
        >>> stats = sn.method.step(batch, batch)
        >>> stats.loss > 0
        True
    """
    import torch

    method_cls, task_cls = METHODS.get(method), TASKS.get(task)
    space_obj = SPACES.get(space)

    def block(value, cls, where):
        return value if dataclasses.is_dataclass(value) else build_dataclass(cls, dict(value or {}), where)

    torch.manual_seed(seed)
    task_obj = task_cls(block(task_config, task_cls.config_class, "task"))
    sizes = {k: v for k, v in (("channels", channels), ("layers", layers)) if v is not None}  # CNN search blocks
    search_cfg = build_dataclass(task_cls.search_config_class, {**sizes, **(search or {})}, "search")
    model = task_obj.build_supernet(space_obj, search_cfg)
    method_obj = method_cls(block(method_config, method_cls.config_class, "method"))
    ctx = SearchContext(
        model=model,
        space=space_obj,
        loss=task_obj.search_loss,
        config=search_cfg,
        steps_per_epoch=steps_per_epoch,
        seed=seed,
        op_costs=task_obj.op_costs(model),
    )
    method_obj.setup(ctx)
    method_obj.start_epoch(0)
    return Supernet(model, method_obj, ctx, task_obj)

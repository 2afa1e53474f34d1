"""Sweeps: methods x tasks x presets x seeds (x an optional grid of overrides), one run folder each.

A sweep file::

    name: cifar-smoke
    out: runs/cifar-smoke          # default: runs/<name>; --out overrides
    methods: [egs, darts, random]
    tasks: [cifar10]
    presets: [smoke]
    seeds: [0, 1]
    grid: {method.M: [4, 7]}       # optional: the cartesian product of these overrides
    set: [task.data_dir=/data/cifar10-jpg.tar.gz]   # optional: overrides for every run

Each run uses the bundled config ``<preset>/<method>-<task>`` (or ``config:`` to name one
explicitly for every run) and writes ``<out>/<preset>/<method>-<task>[-<grid>]/seed<k>/``.
A run whose folder already holds an ``ok`` record is skipped, so an interrupted sweep
resumes where it stopped; a run that fails is recorded as failed, with its error, and the
sweep goes on. Runs execute one after another in this process; several sweeps (or
``--shard i/n``) can share an output folder, since records are written atomically.
"""

from __future__ import annotations

import itertools
import json
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..tasks.spaces import ConfigError

from .config import load_config
from .records import atomic_write_text

__all__ = ["SweepRun", "SweepSpec", "load_sweep", "plan_runs", "run_sweep"]


@dataclass
class SweepSpec:
    name: str
    methods: list[str]
    tasks: list[str]
    presets: list[str]
    seeds: list[int]
    out: str | None = None
    config: str | None = None  # one config for every run instead of <preset>/<method>-<task>
    grid: dict[str, list] = field(default_factory=dict)
    set: list[str] = field(default_factory=list)


@dataclass
class SweepRun:
    config: str
    overrides: list[str]
    folder: Path
    label: str


def load_sweep(path: str | Path) -> SweepSpec:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file {path} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    from .config import build_dataclass

    data.setdefault("name", path.stem)
    for key in ("methods", "tasks", "presets", "seeds"):
        if isinstance(data.get(key), (str, int)):
            data[key] = [data[key]]
    if "config" in data:
        data.setdefault("methods", ["-"])
        data.setdefault("tasks", ["-"])
        data.setdefault("presets", ["-"])
    missing = [k for k in ("methods", "tasks", "presets", "seeds") if k not in data]
    if missing:
        raise ConfigError(f"sweep {path} needs keys {missing} (lists), e.g. seeds: [0, 1]")
    spec = build_dataclass(SweepSpec, data, "sweep")
    for key, values in spec.grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep grid key {key!r} needs a non-empty list of values")
    return spec


def _tag(assignments: dict) -> str:
    return "-".join(f"{k.split('.')[-1]}{v}" for k, v in assignments.items())


def plan_runs(spec: SweepSpec, out: Path) -> list[SweepRun]:
    """Every run of the sweep, in a fixed order, validated before anything runs."""
    keys = list(spec.grid)
    runs = []
    for preset, method, task in itertools.product(spec.presets, spec.methods, spec.tasks):
        config = spec.config or f"{preset}/{method}-{task}"
        for values in itertools.product(*(spec.grid[k] for k in keys)):
            assignments = dict(zip(keys, values, strict=True))
            grid_overrides = [f"{k}={json.dumps(v)}" for k, v in assignments.items()]
            base = Path(config).stem if spec.config else f"{method}-{task}"
            name = base + (f"-{_tag(assignments)}" if assignments else "")
            for seed in spec.seeds:
                overrides = [*spec.set, *grid_overrides, f"seed={seed}"]
                load_config(config, overrides)  # fail before the first run on a bad name or key
                folder = out / (preset if not spec.config else "custom") / name / f"seed{seed}"
                runs.append(SweepRun(config, overrides, folder, f"{config} {' '.join(overrides)}"))
    return runs


def _is_done(folder: Path) -> bool:
    record = folder / "record.json"
    if not record.is_file():
        return False
    try:
        return json.loads(record.read_text()).get("status", "ok") == "ok"
    except json.JSONDecodeError:
        return False


def run_sweep(spec: SweepSpec, out: Path, progress: bool = False, shard: tuple[int, int] = (0, 1)) -> dict:
    """Run (this shard of) the sweep; returns counts of ran, skipped and failed runs."""
    from .runner import failed_record, run_experiment

    runs = plan_runs(spec, out)
    index, count = shard
    summary = {"ran": 0, "skipped": 0, "failed": 0, "total": len(runs)}
    for i, run in enumerate(runs):
        if i % count != index:
            continue
        if _is_done(run.folder):
            summary["skipped"] += 1
            print(f"[sweep] skip (done) {run.label}")
            continue
        (run.folder / "record.json").unlink(missing_ok=True)  # a failed attempt is retried
        print(f"[sweep] run {i + 1}/{len(runs)}: {run.label}")
        cfg = load_config(run.config, run.overrides)
        try:
            run_experiment(cfg, run.folder, progress=progress)
            summary["ran"] += 1
        except Exception as err:  # any failure of one run is recorded; the sweep goes on
            summary["failed"] += 1
            message = f"{type(err).__name__}: {err}"
            print(f"[sweep] FAILED {run.label}: {message}")
            atomic_write_text(run.folder / "traceback.txt", traceback.format_exc())
            failed_record(cfg, run.folder, message)
    return summary

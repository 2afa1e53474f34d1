"""The papers' reported numbers (``results/references/*.csv``) and which runs reproduce them.

A row names the ``method``, ``task``, ``preset`` and ``selector`` (method-config values, e.g. ``{"M": 7}``) of
the runs that reproduce it; the tables, their order and titles are the ones ``results/references/README.md``
lists, which also says what every column means. Everything per task or per method comes from the registered
classes: a task's ``main_metric`` and ``reference_table`` (:func:`task_metric`), a method's ``variant_keys``
(:func:`variant_of`) and ``ablation_key`` (:func:`ablation_reference`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.registry import unknown_name_message
from ..methods import METHODS
from ..tasks import TASKS
from ..tasks.spaces import UnknownNameError, UserError

__all__ = [
    "REFERENCE_DIR",
    "TABLES",
    "TaskMetric",
    "ablation_reference",
    "reference_titles",
    "row_name",
    "load_reference",
    "reported_column",
    "config_rows",
    "references_for",
    "row_label",
    "rows_reproduced",
    "searched_on",
    "task_metric",
    "variant_of",
]

REFERENCE_DIR = Path(str(files("egsbench.results") / "references"))

# a row of the README's table of tables: | `<name>.csv` | <title> | ...
_README_ROW = re.compile(r"^\| `(?P<name>[\w-]+)\.csv` \| (?P<title>[^|]+?) \|")


def reference_titles(root: str | Path = REFERENCE_DIR) -> dict[str, str]:
    """Table name -> its title (``"DARTS-EGS paper, Table 1 (CIFAR-10)"``), in the order of the table of tables
    in ``<root>/README.md``; the file of a table is ``<root>/<name>.csv``."""
    lines = (Path(root) / "README.md").read_text(encoding="utf-8").splitlines()
    return {m["name"]: m["title"] for m in map(_README_ROW.match, lines) if m}


TABLES = reference_titles()  # table name -> title, as results/references/README.md lists them

_INT_COLUMNS = ("M", "ops")


@dataclass(frozen=True)
class TaskMetric:
    """A task's main metric as the tables and the regression gate read it."""

    key: str  # in record["metrics"]: test_<name>
    label: str  # column header, e.g. "Test error (%)"
    direction: str  # "max" (higher is better) or "min"
    table: str | None  # the task's reference table (a name in TABLES), None when it has none
    # (run column gt_<name>, label) of the task's ground_truth_metrics, the looked-up numbers shown beside (nb201)
    ground_truth: tuple[tuple[str, str], ...] = dataclasses.field(default=(), repr=False)


def task_metric(task: str) -> TaskMetric | None:
    """The main metric of ``task`` as its class in ``TASKS`` declares it; None when no such task is installed.

    Raises:
        UserError: the task names a ``main_metric`` it does not declare in ``metrics``.

    Examples:
        >>> task_metric("cifar10")
        TaskMetric(key='test_error', label='Test error (%)', direction='min', table='cifar10')
    """
    try:
        cls = TASKS.get(task)
    except UnknownNameError:
        return None
    metrics = {m.name: m for m in cls.metrics}
    main = cls.main_metric
    if main not in metrics:
        raise UserError(
            f"task {task!r} ({cls.__module__}.{cls.__qualname__}) names main_metric {main!r}, which is "
            f"not among its metrics ({', '.join(metrics) or 'none'}); declare it in `metrics`"
        )
    metric = metrics[main]
    truth = tuple((f"gt_{m.name}", m.label or f"Ground truth {m.name}") for m in cls.ground_truth_metrics)
    return TaskMetric(
        f"test_{metric.name}", metric.label or f"Test {metric.name}", metric.direction, cls.reference_table, truth
    )


def reported_column(columns: Iterable[str], key: str, table: str) -> str:
    """The column, among ``columns`` of reference ``table``, that reports the record metric ``key``.

    Raises:
        UserError: the table has neither ``<key>`` nor ``<key>_pct``.
    """
    columns = [str(c) for c in columns]
    for column in (key, f"{key}_pct"):
        if column in columns:
            return column
    raise UserError(
        f"reference table {table} has no column {key} or {key}_pct for the metric {key}; "
        f"its columns are {', '.join(columns)}"
    )


def load_reference(table: str, root: str | Path = REFERENCE_DIR) -> pd.DataFrame:
    """One reference table as a frame, one row per reported architecture.

    Args:
        table: a name in ``TABLES``: cifar10, imagenet_mobile, ptb, wt2, sampling_times, voc2012.
        root: the folder of the CSVs.

    Examples:
        >>> load_reference("cifar10").set_index("architecture").loc["DARTS-EGS (M=7)", "test_error_pct"]
        np.float64(2.79)
    """
    if table not in TABLES:
        raise UnknownNameError(unknown_name_message("reference table", table, sorted(TABLES)))
    path = Path(root) / f"{table}.csv"
    stat = path.stat()
    return _read_reference(path, stat.st_mtime_ns, stat.st_size).copy()  # a copy: callers may edit theirs


@functools.lru_cache(maxsize=32)
def _read_reference(path: Path, mtime_ns: int, size: int) -> pd.DataFrame:
    """A reference CSV, parsed once per version of the file (``egsbench list configs`` asks for a table per config)."""
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    for column in _INT_COLUMNS:
        if column in frame:
            frame[column] = frame[column].astype("Int64")
    for column in ("method", "task", "preset", "selector", "genotype", "searched_on", "note"):
        if column not in frame:  # ``genotype`` and ``searched_on`` are optional
            frame[column] = None
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame


def _selects(selector: str | None, method_config: Mapping[str, Any]) -> bool:
    wanted = json.loads(selector) if selector else {}
    return all(key in method_config and method_config[key] == value for key, value in wanted.items())


def references_for(
    method: str,
    task: str,
    preset: str | None,
    method_config: Mapping[str, Any],
    tables: list[str] | None = None,
    root: str | Path = REFERENCE_DIR,
    searched_on: str | None = None,
) -> pd.DataFrame:
    """The reference rows a run reproduces, from every table, with ``table`` and ``row`` (position in it) columns.

    A row matches a run of its ``method`` whose config satisfies its ``selector`` and whose cell was
    searched where the row's was (its ``searched_on``: both blank, or the same task), or a run of any
    method whose config's ``genotype`` is the row's ``genotype`` (a published cell trained as is).

    Args:
        method: the registered method name (``egs``, ``darts``, ``fixed``...).
        task: the task name (``cifar10``...).
        preset: the run's preset; reported numbers are tied to ``paper``. None matches rows of any
            preset: the row a ``smoke`` or ``proxy`` run stands for, shown beside it for context.
        method_config: the run's method config (the ``method`` block of its config); a row matches
            when every key of its selector is there with the same value.
        tables: the tables to search; all by default.
        root: the folder of the CSVs.
        searched_on: the task a transfer run's cell was searched on (:func:`searched_on`); None for a run that
            searched on its own task.

    Examples:
        >>> rows = references_for("darts", "cifar10", "paper", {"order": 2})
        >>> rows["architecture"].tolist()
        ['DARTS (2nd order) + cutout']
        >>> references_for("fixed", "cifar10", "paper", {"genotype": "darts_v2"})["architecture"].tolist()
        ['DARTS (2nd order) + cutout']
        >>> references_for("egs", "wt2", "paper", {"M": 4}, searched_on="ptb")["architecture"].tolist()
        ['DARTS-EGS (M=4)']
        >>> references_for("egs", "wt2", "paper", {"M": 4})["architecture"].tolist()  # searched on WikiText-2
        []
    """
    found = []
    genotype = method_config.get("genotype")
    for table in tables or list(TABLES):
        frame = load_reference(table, root)
        keep = frame["method"] == method
        keep &= frame["selector"].map(lambda s: _selects(s, method_config))
        keep &= frame["searched_on"].map(lambda task: task == searched_on)
        if isinstance(genotype, str):
            keep |= frame["genotype"] == genotype
        keep &= frame["task"] == task
        if preset is not None:
            keep &= frame["preset"] == preset
        if keep.any():
            found.append(frame[keep].assign(table=table, row=frame.index[keep]))  # row: position in its table
    if not found:
        return pd.DataFrame(columns=["table", "row", "architecture", "method", "task", "preset", "selector"])
    return pd.concat(found, ignore_index=True)


def searched_on(config: Mapping[str, Any] | None) -> str | None:
    """The task a transfer run's cell was searched on, from its resolved config (``transfer_from.task``);
    None for a run that searched on its own task (or trained a given cell).

    Examples:
        >>> searched_on({"transfer_from": {"source": "paper/egs-ptb", "task": "ptb"}})
        'ptb'
    """
    transfer = (config or {}).get("transfer_from")
    return transfer.get("task") if isinstance(transfer, Mapping) else None


def rows_reproduced(
    method: str,
    task: str,
    method_config: Mapping[str, Any],
    source_task: str | None = None,
    preset: str | None = "paper",
) -> list[str]:
    """The reference rows a config reproduces, as ``"Table 1: DARTS-EGS (M=7)"`` (``"Table 5: M=7"`` in Table 5).

    Args:
        method, task, method_config: the config's method name, task name and method block.
        source_task: where a transfer config's cell is searched (:func:`searched_on`), else None.
        preset: the rows' preset to match (``paper``); None for the rows a smaller preset stands for.

    Examples:
        >>> rows_reproduced("egs", "cifar10", {"M": 7})
        ['Table 1: DARTS-EGS (M=7)', 'Table 5: M=7']
    """
    rows = references_for(method, task, preset, method_config, searched_on=source_task)
    return [row_label(row["table"], row) for _, row in rows.iterrows()]


@functools.cache
def row_name(table: str, root: str | Path = REFERENCE_DIR) -> str:
    """The column that names a row of ``table``: its first (``architecture``; ``M`` in Table 5, an ablation)."""
    with open(Path(root) / f"{table}.csv", encoding="utf-8") as f:
        return f.readline().strip().split(",", 1)[0]


def ablation_reference(key: str, root: str | Path = REFERENCE_DIR) -> str | None:
    """The reference table of the ablation over the method-config ``key`` (a method's ``ablation_key``): the table
    whose rows are named by ``key`` (``sampling_times`` for ``M``); None when there is none."""
    return next((table for table in TABLES if row_name(table, root) == key), None)


def row_label(table: str, row: Mapping[str, Any]) -> str:
    """A reference row as ``"Table 1: DARTS-EGS (M=7)"``: where in the paper (``Table 1``, ``Section 4.3.2``) and
    the row's name (``M=7`` in an ablation table, whose rows are named by a method-config key)."""
    where = TABLES[table].split(", ", 1)[-1].split(" (")[0]
    name = row_name(table)
    return f"{where}: " + (str(row[name]) if name == "architecture" else f"{name}={row[name]}")


def config_rows(cfg: Any) -> list[str]:
    """The rows a bundled or user config (an ``ExperimentConfig``) reproduces: none unless its preset is ``paper``."""
    if cfg.preset != "paper":
        return []
    source = cfg.transfer.task if cfg.transfer else None
    return rows_reproduced(cfg.method_name, cfg.task_name, dataclasses.asdict(cfg.method), source)


def variant_of(method: str, method_config: Mapping[str, Any]) -> dict[str, Any]:
    """The values of ``method_config`` that distinguish variants of ``method`` (``{"M": 7}``): its class's
    ``variant_keys``; none for a method that is not installed."""
    try:
        keys = METHODS.get(method).variant_keys
    except UnknownNameError:
        keys = ()
    return {key: method_config[key] for key in keys if key in method_config}

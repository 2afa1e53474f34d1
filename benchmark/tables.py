"""Comparison tables laid out like the paper's: its rows in order, each followed by the reproduced runs
(mean ± std over seeds) that stand for it, then the groups no row stands for.

A reproduced row shows the reported number beside its own at any preset and the Δ only at the row's
preset (``paper``). Which metric and reference table a task uses comes from its class (``task_metric``);
records of a task that is not installed get every recorded ``test_*`` metric (and ``gt_*`` ground truth) and no
reference numbers.
Groups and statistics: :mod:`.groups`; text: :mod:`.render`.

Examples:
    >>> records = load_records("runs/")  # needs finished runs  # doctest: +SKIP
    >>> print(render(comparison_table(records, "cifar10"), "md"))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from ..core.registry import unknown_name_message
from ..methods import METHODS
from ..tasks import TASKS
from ..tasks.spaces import UnknownNameError, UserError
from .groups import (
    GROUND_TRUTH,
    STD,
    _label,
    _setups,
    _split_variant,
    runs_frame,
    setup_label,
    signal_notes,
    summarize,
)
from .layout import _config_column, _noted, _without_empty_signal, ablation_key, paper_layout
from .records import Record
from .references import (
    TABLES,
    ablation_reference,
    references_for,
    task_metric,
)
from .render import _TITLES, FORMATS, SIGNAL, _notes, render

__all__ = [
    "FORMATS",
    "ablation_table",
    "comparison_table",
    "render",
    "render_tables",
    "runs_frame",
    "setup_label",
    "signal_notes",
    "summarize",
]


def _unknown_task(task: str, why: str) -> UnknownNameError:
    return UnknownNameError(f"{unknown_name_message('task', task, TASKS.names())}; {why}")


def _only_task(runs: pd.DataFrame, task: str | None) -> str:
    """``task``, or when None the one task ``runs`` hold."""
    if task is not None:
        return task
    tasks = sorted(runs["task"].dropna().unique()) if len(runs) else []
    if len(tasks) != 1:
        listed = ", ".join(tasks) or "none"
        raise UserError(f"the records hold {len(tasks)} tasks ({listed}); pass the task of the table (--task)")
    return tasks[0]


def _only_ablation_key() -> str:
    """The one ablation key the installed methods declare (EGS's ``M``)."""
    keys = sorted({k for name in METHODS.names() if (k := ablation_key(name))})
    if len(keys) != 1:
        listed = ", ".join(keys) or "none"
        raise UserError(f"the installed methods declare {len(keys)} ablation keys ({listed}); pass the ablation's key")
    return keys[0]


# ---- tables ----------------------------------------------------------------------------------


def comparison_table(records: Iterable[dict | Record], task: str | None = None) -> pd.DataFrame:
    """The paper's Table 1 for one task, with the reproduced rows inserted under the rows they stand for.

    Every row of the task's reference table keeps its place (Preset ``reported``: the reported error,
    params, search cost, ops and search type); under it come the groups of runs that reproduce it
    (their method config matches its selector, or they trained its published genotype), then the
    groups no row stands for. A reproduced row shows its mean ± std, the reported number beside it
    and, only at the row's preset (``paper``), the Δ. Numbers stay numeric; ``render`` formats them.
    A task without a reference table gets its groups alone; for a task that is not installed, see
    the module docstring.

    Args:
        records: run records (dicts or ``Record`` models).
        task: the task's registered name; None: the one task of the records.

    Raises:
        UnknownNameError: the task is not installed and no record names it.
        UserError: ``task`` is None and the records hold several tasks (or none).
    """
    runs = runs_frame(records)
    task = _only_task(runs, task)
    spec = task_metric(task)
    runs = runs[runs["task"] == task]
    if spec is None:
        if runs.empty:
            raise _unknown_task(task, "no record names it either")
        return _uninstalled_task_table(runs)
    return paper_layout(runs, spec, spec.table, task, "architecture")


def _uninstalled_task_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Every recorded ``test_*`` metric, mean ± std per group; no reference numbers (see the module docstring)."""
    keys = [c for c in runs.columns if str(c).startswith("test_") and runs[c].notna().any()]
    keys += [c for c in runs.columns if str(c).startswith(GROUND_TRUTH) and runs[c].notna().any()]  # looked up
    groups = summarize(runs, keys[0] if keys else "params_m", keys[1:])
    columns = {
        "Architecture": [_label(m, v) for m, v in zip(groups["method"], groups["variant"], strict=True)],
        "Preset": groups["preset"],
        "Setup": _setups(groups),
    }
    for i, key in enumerate(keys):
        columns |= (
            {key: groups["mean"], key + STD: groups["std"]}
            if i == 0
            else {key: groups[key], key + STD: groups[key + STD]}
        )
    columns |= {
        "Params (M)": groups["params_m"],
        "Search cost (GPU days)": groups["search_gpu_days"],
        SIGNAL: 100 * groups["entropy_drop"],
        "Seeds": groups["seeds"],
        "Failed": groups["failed"],
    }
    table = _config_column(pd.DataFrame(columns), groups, runs, ["Architecture", "Preset", "Setup"])
    order = ["Architecture", "Preset", "Setup", *(["Config"] if "Config" in table else [])]
    return _noted(_without_empty_signal(table.sort_values(order).reset_index(drop=True)), groups)


def ablation_table(records: Iterable[dict | Record], task: str | None = None, key: str | None = None) -> pd.DataFrame:
    """The paper's Table 5 (EGS over the number of sampling times M), with the reproduced rows under each M.

    The reported rows (Preset ``reported``: test error and params per M) keep their order; under
    each come the EGS runs of that M and the runs of a released cell of that M (``fixed`` with
    ``genotype: egs_released_m7``), as in :func:`comparison_table`. ``Best`` marks the reproduced
    row with the best mean of each preset and setup, by the direction of the task's main metric
    (lowest error, highest accuracy...). A task the table does not cover gets its EGS groups alone.

    Args:
        records: run records (dicts or ``Record`` models); runs of other methods and tasks are ignored.
        task: the task of the sweep (None: the one task of the records); the paper reports M = 1..9 on
            CIFAR-10 (preset ``paper``).
        key: the method-config key swept (a method class's ``ablation_key``); None: the one the installed
            methods declare. Its reference table is the one whose rows it names (``ablation_reference``).

    Raises:
        UnknownNameError: the task is not installed (its main metric and direction are unknown).
    """
    runs = runs_frame(records)
    task = _only_task(runs, task)
    spec = task_metric(task)
    if spec is None:
        raise _unknown_task(task, "the M ablation needs the task's main metric: install the plug-in that provides it")
    key = key or _only_ablation_key()
    table = ablation_reference(key)
    runs = runs[runs["task"] == task]

    def published(method: str, variant: str) -> bool:  # a released cell of the ablation's table (egs_released_m7)
        values, source = _split_variant(variant)
        if table is None:
            return False
        return not references_for(method, task, None, values, tables=[table], searched_on=source).empty

    swept = {method for method in runs["method"].dropna().unique() if ablation_key(method) == key}
    pairs = zip(runs["method"], runs["variant"], strict=True)
    keep = [method in swept or published(method, variant) for method, variant in pairs]
    return paper_layout(runs[pd.Series(keep, index=runs.index, dtype=bool)], spec, table, task, key)


def _sections(records: list[dict | Record]) -> list[tuple[str, pd.DataFrame]]:
    runs = runs_frame(records)
    sections = []
    for task in sorted(runs["task"].dropna().unique()):
        spec = task_metric(task)
        if spec is None:
            title = (
                f"{task}: reproduced; task {task} is not installed, so every recorded test metric is shown "
                "without reference numbers"
            )
        elif spec.table is None:
            title = f"{task}: reproduced ({task} has no reference table)"
        else:
            title = f"{task}: reproduced vs {TABLES.get(spec.table, spec.table)}"
        sections.append((title, comparison_table(records, task)))
        if spec is not None:
            sections += _ablation_sections(records, runs[runs["task"] == task], task)
    return sections


def _ablation_sections(records: list[dict | Record], runs: pd.DataFrame, task: str) -> list[tuple[str, pd.DataFrame]]:
    """A titled ablation table per method with an ``ablation_key`` that ran more than one variant on ``task``."""
    sections = []
    for method in sorted(runs["method"].dropna().unique()):
        key = ablation_key(method)
        if key is not None and runs.loc[runs["method"] == method, "variant"].nunique() > 1:  # a sweep over the key
            table = ablation_reference(key)
            title = f"{task}: {METHODS.get(method).__name__} over {key}" + (f" vs {TABLES[table]}" if table else "")
            sections.append((title, ablation_table(records, task, key)))
    return sections


def render_tables(records: Iterable[dict | Record], fmt: str = "md") -> str:
    """Every table the records make, each under a title: per task, the comparison table, and the M
    ablation where EGS ran with more than one M. For one parseable CSV, render one table instead.

    Args:
        records: run records (dicts or ``Record`` models).
        fmt: one of ``FORMATS``.
    """
    if fmt not in FORMATS:
        raise UnknownNameError(unknown_name_message("table format", fmt, list(FORMATS)))
    parts = []
    for title, table in _sections(list(records)):
        notes = _notes(table.attrs.get("notes", []), fmt) if fmt == "csv" else ""  # render adds them in the others
        parts.append(_TITLES[fmt](title) + render(table, fmt) + notes)
    return "\n".join(parts)

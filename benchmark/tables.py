"""Comparison tables laid out like the paper's: its rows, with the reproduced runs (mean ± std over seeds)
inserted under the rows they stand for.

A table of a task with a reference table (``results/references/``) lists every row of it in the
paper's order, Preset ``reported``, with the paper's numbers in the table's own columns (error,
params, search cost, ops, search type for Table 1; error and params per M for Table 5; valid and
test perplexity for PTB...). Under each come the reproduced groups that stand for it: runs whose
method config matches its selector (``darts`` with ``order: 2``), or runs of its published cell
(``fixed`` with ``genotype: darts_v2``). A reproduced row carries the reported number beside its
own for context at any preset; the Δ only at the row's preset (``paper``), since a ``smoke`` or
``proxy`` run is not the paper's experiment. Groups no row stands for (GDAS, a saved genotype)
follow the paper's rows.

Pure functions on run records (the dicts ``read_record`` and ``load_records`` return, or ``Record``
models). Runs are grouped by method, task, preset, the method-config values that make variants
(``references.VARIANT_KEYS``: M for egs, order for darts...), the config hash (the whole resolved
config but the seed, so two configs never share a row) and the run setup (``world_size``,
``mixed_precision``, ``deterministic``): a 1-GPU and an 8-GPU run, or an fp32 and a bf16 run, are
never one row. A record without those fields (hand-made, or older than schema 3) ran as one fp32
process. Where rows of different configs would look alike, a ``Config`` column tells them apart:
the short hash and the config values that differ. Two records of the same config, setup and seed
(a run repeated into another folder) count once, the newer by ``created``; the table carries a note
saying so (``table.attrs["notes"]``, printed under it). Failed runs (``status: failed``) are left
out of the statistics and counted in ``Failed``; a record without ``status`` is a finished run.

Which number a task's table shows comes from the task (``references.task_metric``: its class in
``TASKS`` declares ``main_metric``, that metric's direction and label, and its
``reference_table``), so a plug-in task gets a table without a line here. Records of a task that
is not installed (a plug-in missing from this environment) still get a table: every recorded
``test_*`` metric, mean ± std, with no reference numbers, since neither the main metric, its
direction nor its table is known; ``ablation_table`` needs the task and raises.

Examples:
    >>> records = load_records("runs/")  # needs finished runs  # doctest: +SKIP
    >>> print(render(comparison_table(records, "cifar10"), "md"))  # doctest: +SKIP
    >>> print(render(ablation_table(records), "latex"))  # doctest: +SKIP
"""

from __future__ import annotations

import html
import json
import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from ..core.registry import unknown_name_message
from ..methods import METHODS
from ..methods.signal import MOVED_FRAC
from ..tasks import TASKS
from ..tasks.spaces import UnknownNameError, UserError
from .records import Record
from .references import (
    TABLES,
    TaskMetric,
    ablation_reference,
    load_reference,
    references_for,
    reported_column,
    searched_on,
    task_metric,
    variant_of,
)

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

FORMATS = ("md", "csv", "latex", "html")
SETUP = ["world_size", "mixed_precision", "deterministic"]
# variant: the JSON of variant_of(...), e.g. '{"M": 7}'; config_hash: the record's, of the config without the seed
GROUP = ["method", "task", "preset", "variant", "config_hash", *SETUP]
NOT_IDENTITY = ("seed", "threads")  # config keys that never make two runs different configs
STD = " std"  # a column "X std" holds the std of column "X"; md/latex/html print them as "X ± std"
REPORTED = "reported"  # the Preset of a row the paper reports (not a run of ours)
PRESET_ORDER = ("paper", "proxy", "smoke")  # runs under their paper row: nearest the paper's setting first
# columns of a reference table that describe a row rather than report a number of it
_REFERENCE_META = ("architecture", "source", "method", "task", "preset", "selector", "genotype", "searched_on",
                   "note")  # fmt: skip
SEARCHED_ON = "searched_on"  # in a group's variant: the task a transfer run's cell was searched on
_DESCRIPTORS = ("ops", "search_type")  # facts of the method and its space: a reproduced row repeats its paper row's
SIGNAL = "Search signal (ΔH %)"  # the mean entropy drop of the runs' op distributions, % of log K
_COLUMN_LABELS = {"params_m": "Params (M)", "search_cost_gpu_days": "Search cost (GPU days)", "ops": "Ops",
                  "search_type": "Search type"}  # fmt: skip


# ---- records -> one row per run ------------------------------------------------------------


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _variant(method: str, method_config: dict, config: dict | None = None) -> str:
    """The JSON of the values that make a table row: the method's variant keys, and for a transfer run the task
    its cell was searched on (a PTB cell on WikiText-2 is never one row with a WikiText-2 search)."""
    variant = variant_of(method, method_config)
    source = searched_on(config)
    return json.dumps(variant | ({SEARCHED_ON: source} if source else {}), sort_keys=True)


def _split_variant(variant: str) -> tuple[dict, str | None]:
    """A group's variant JSON as (method-config values, the task its cell was searched on or None)."""
    values = json.loads(variant)
    return values, values.pop(SEARCHED_ON, None)


def _run_row(record: dict | Record) -> dict:
    if isinstance(record, Record):
        record = record.model_dump(mode="json")
    method = record.get("method")
    method_config = (record.get("config") or {}).get("method") or {}
    search, evaluate = record.get("search") or {}, record.get("evaluate") or {}
    hours = search.get("device_hours")
    signal = search.get("signal") or {}
    search_s = [search.get("wall_time_s"), search.get("derive_wall_time_s")]
    return {
        **((record.get("extras") or {}).get("valid") or {}),  # the last validation numbers (e.g. valid_ppl)
        **(record.get("metrics") or {}),
        "method": method,
        "task": record.get("task"),
        "preset": record.get("preset"),
        "seed": record.get("seed"),
        "variant": _variant(method, method_config, record.get("config")),
        "config_hash": record.get("config_hash"),
        # absent before schema 3 (and from hand-made dicts): such runs were one fp32 process
        "world_size": record.get("world_size", 1),
        "mixed_precision": record.get("mixed_precision", "no"),
        "deterministic": bool(record.get("deterministic", False)),
        "ok": record.get("status") in (None, "ok"),
        "search_gpu_days": None if hours is None else hours / 24,
        "entropy_drop": signal.get("entropy_drop_frac"),  # the search signal (egsbench.methods.signal)
        "search_s": None if None in search_s else sum(search_s),
        "evaluate_s": evaluate.get("wall_time_s"),
        "created": record.get("created"),
        "config": record.get("config"),
    }


def runs_frame(records: Iterable[dict | Record]) -> pd.DataFrame:
    """One row per run: the grouping keys, seed, ok, search cost, wall times and the record's metrics.

    The one flattening of records into a frame: the tables and the command line's per-run table
    (``cli.results_table``) both read this.

    Args:
        records: record dicts (as ``load_records`` returns them) or ``Record`` models.
    """
    frame = pd.DataFrame([_run_row(r) for r in records])
    first = [*GROUP, "seed", "ok", "search_gpu_days", "search_s", "evaluate_s"]
    frame = frame.reindex(columns=list(dict.fromkeys([*first, *frame.columns])))
    return frame.astype({"ok": bool, "deterministic": bool})


def setup_label(world_size: int, mixed_precision: str, deterministic: bool) -> str:
    """How a table shows a run's setup: ``x1 fp32``, ``x8 bf16 deterministic``."""
    precision = "fp32" if mixed_precision == "no" else mixed_precision
    return f"x{world_size} {precision}" + (" deterministic" if deterministic else "")


# ---- statistics ------------------------------------------------------------------------------


def latest_per_seed(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """``runs`` with one row per group of ``GROUP`` and seed (the newest by ``created``), and a note per repeat.

    Two records of one config, setup and seed are one run done twice (a rerun into another folder); counting
    both would weigh that seed double. Records without ``created`` keep their input order (the last wins).
    """
    if runs.empty:
        return runs, []
    key = [*GROUP, "seed"]
    created = pd.to_datetime(runs.get("created"), utc=True, errors="coerce", format="ISO8601")
    ordered = runs.assign(_created=created.to_numpy(), _position=range(len(runs)))
    ordered = ordered.sort_values(["_created", "_position"], na_position="first", kind="stable")
    notes = []
    for values, group in ordered.groupby(key, dropna=False, sort=True):
        if len(group) > 1:
            row = dict(zip(key, values, strict=True))
            kept = group.iloc[-1]["created"]
            when = f", created {kept}" if isinstance(kept, str) else ""
            notes.append(
                f"{row['method']}/{row['task']}/{row['preset']} seed {row['seed']} (config "
                f"{str(row['config_hash'])[:8]}, {setup_label(*(row[c] for c in SETUP))}): {len(group)} records of "
                f"the same config and seed; counted once, the newest{when}"
            )
    kept = ordered[~ordered.duplicated(key, keep="last")].sort_values("_position")
    return kept.drop(columns=["_created", "_position"]), notes


def summarize(runs: pd.DataFrame, metric: str, more: Sequence[str] = ()) -> pd.DataFrame:
    """Per group of ``GROUP``: mean, std (ddof=1, NaN for one seed) and count of ``metric`` over the ok runs,
    the mean and std of each of ``more`` (columns ``<name>`` and ``<name> std``), mean params and search cost,
    and the count of failed runs.

    A seed recorded twice in a group counts once (see :func:`latest_per_seed`); the notes saying so are
    in the result's ``attrs["notes"]``.
    """
    runs, notes = latest_per_seed(runs)
    nan = pd.Series(math.nan, index=runs.index)
    numeric = [metric, *more, "params_m", "search_gpu_days", "entropy_drop"]
    runs = runs.assign(**{col: pd.to_numeric(runs.get(col, nan), errors="coerce") for col in numeric})
    aggregates = {"mean": (metric, "mean"), "std": (metric, "std"), "seeds": (metric, "count"),
                  "params_m": ("params_m", "mean"), "search_gpu_days": ("search_gpu_days", "mean"),
                  "entropy_drop": ("entropy_drop", "mean"), "entropy_drop_min": ("entropy_drop", "min")}  # fmt: skip
    for name in more:
        aggregates |= {name: (name, "mean"), name + STD: (name, "std")}
    stats = runs[runs["ok"]].groupby(GROUP, dropna=False).agg(**aggregates)
    failed = (~runs["ok"]).groupby([runs[c] for c in GROUP], dropna=False).sum().rename("failed")
    out = stats.join(failed, how="outer").reset_index()
    out = out.fillna({"seeds": 0, "failed": 0}).astype({"seeds": int, "failed": int})
    out.attrs["notes"] = [*notes, *signal_notes(out)]
    return out


def signal_notes(rows: pd.DataFrame) -> list[str]:
    """The line under a table whose runs' architecture distributions did not move (``methods.signal.moved``).

    ``rows``: a ``runs_frame`` (one row per run) or a ``summarize`` frame (one per group, with the group's
    smallest drop in ``entropy_drop_min``); a group counts as still when any of its runs is.
    """
    drop = pd.to_numeric(rows["entropy_drop_min" if "entropy_drop_min" in rows else "entropy_drop"], errors="coerce")
    measured = rows[drop.notna()]
    still = measured[drop[drop.notna()] < MOVED_FRAC]
    if still.empty:
        return []
    names = dict.fromkeys(f"{_label(m, v)} {p}" for m, v, p in zip(still["method"], still["variant"], still["preset"],
                                                                     strict=True))  # fmt: skip
    which = "" if len(still) == len(measured) else f" ({', '.join(names)})"
    return [f"the architecture distributions did not move{which}: these rows compare cells drawn at random "
            f"(the mean edge entropy fell by less than {MOVED_FRAC:.0%} of log K; the search signal is that drop "
            "in % of log K)"]  # fmt: skip


def _with_references(summary: pd.DataFrame, key: str, table: str | None) -> pd.DataFrame:
    """Adds ``ref`` (the row of reference ``table`` the group stands for, at any preset, or None), ``reported``
    (its value of ``key``) and ``delta`` (mean - reported, only where the group ran at the row's preset: a
    ``smoke`` or ``proxy`` run is shown beside the paper's number for context, never measured against it)."""
    refs, reported = [], []
    for _, row in summary.iterrows():
        values, source = _split_variant(row["variant"])
        found = pd.DataFrame() if table is None else references_for(
            row["method"], row["task"], None, values, tables=[table], searched_on=source)  # fmt: skip
        ref = found.iloc[0] if len(found) else None
        refs.append(ref)
        reported.append(None if ref is None else ref.get(reported_column(ref.index, key, table)))
    reported = pd.to_numeric(pd.Series(reported, index=summary.index, dtype=object))
    at_its_preset = [ref is not None and ref["preset"] == preset for ref, preset in zip(refs, summary["preset"],
                                                                                           strict=True)]  # fmt: skip
    delta = (summary["mean"] - reported).where(pd.Series(at_its_preset, index=summary.index, dtype=bool))
    return summary.assign(ref=pd.Series(refs, index=summary.index, dtype=object), reported=reported, delta=delta)


def _label(method: str, variant: str) -> str:
    """``egs (M=4)``; a transfer run's group says where its cell was searched: ``egs (M=4; ptb search)``."""
    values, source = _split_variant(variant)
    text = ", ".join(f"{k}={v}" for k, v in values.items())
    text += f"; {source} search" if source else ""
    return f"{method} ({text.removeprefix('; ')})" if text else method


def _setups(groups: pd.DataFrame) -> list[str]:
    return [setup_label(*values) for values in zip(*(groups[c] for c in SETUP), strict=True)]


def _flat(config: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted items of a nested config, without the keys that are no part of its identity."""
    if not isinstance(config, dict):
        return {}
    out = {}
    for key, value in config.items():
        if not prefix and key in NOT_IDENTITY:
            continue
        out |= _flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
    return out


def _config_column(table: pd.DataFrame, groups: pd.DataFrame, runs: pd.DataFrame, shown: list[str]) -> pd.DataFrame:
    """``table`` with a ``Config`` column after ``Setup`` where rows alike in ``shown`` come from different configs.

    Each such row shows its config hash (8 characters) and the config values in which it differs from the
    rows it would be mistaken for (at most three, then a count); other rows show the hash alone.
    """
    if table.empty or not table.duplicated(shown, keep=False).any():
        return table
    configs = {}
    for config_hash, config in zip(runs["config_hash"], runs["config"], strict=True):
        configs.setdefault(config_hash, _flat(config))
    labels = [str(h)[:8] if isinstance(h, str) else "-" for h in groups["config_hash"]]
    for _, index in table.groupby(shown, dropna=False).groups.items():
        if len(index) < 2:
            continue
        flats = {i: configs.get(groups.loc[i, "config_hash"], {}) for i in index}
        keys = sorted({k for flat in flats.values() for k in flat})
        differ = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flats.values()}) > 1]
        for i in index:
            items = [f"{k}={json.dumps(flats[i].get(k))}" for k in differ[:3]]
            items += [f"+{len(differ) - 3} more"] if len(differ) > 3 else []
            labels[i] += f" ({', '.join(items)})" if items else ""
    position = list(table.columns).index("Setup") + 1
    return table.copy().assign(Config=labels)[[*table.columns[:position], "Config", *table.columns[position:]]]


def _ref_value(ref: pd.Series | None, column: str) -> Any:
    return None if ref is None or _is_missing(ref.get(column)) else ref.get(column)


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


def ablation_key(method: str) -> str | None:
    """The method-config key ``method`` sweeps in an ablation (its class's ``ablation_key``); None for a method
    without one or not installed."""
    try:
        return METHODS.get(method).ablation_key
    except UnknownNameError:
        return None


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
    return _paper_layout(runs, spec, spec.table, task, "architecture")


def _noted(table: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    table.attrs["notes"] = list(summary.attrs.get("notes", []))
    return table


def _uninstalled_task_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Every recorded ``test_*`` metric, mean ± std per group; no reference numbers (see the module docstring)."""
    keys = [c for c in runs.columns if str(c).startswith("test_") and runs[c].notna().any()]
    groups = summarize(runs, keys[0] if keys else "params_m", keys[1:])
    columns = {
        "Architecture": [_label(m, v) for m, v in zip(groups["method"], groups["variant"], strict=True)],
        "Preset": groups["preset"],
        "Setup": _setups(groups),
    }
    for i, key in enumerate(keys):
        columns |= {key: groups["mean"], key + STD: groups["std"]} if i == 0 else {
            key: groups[key], key + STD: groups[key + STD]}  # fmt: skip
    columns |= {"Params (M)": groups["params_m"], "Search cost (GPU days)": groups["search_gpu_days"],
                SIGNAL: 100 * groups["entropy_drop"], "Seeds": groups["seeds"], "Failed": groups["failed"]}  # fmt: skip
    table = _config_column(pd.DataFrame(columns), groups, runs, ["Architecture", "Preset", "Setup"])
    order = ["Architecture", "Preset", "Setup", *(["Config"] if "Config" in table else [])]
    return _noted(_without_empty_signal(table.sort_values(order).reset_index(drop=True)), groups)


def ablation_table(
    records: Iterable[dict | Record], task: str | None = None, key: str | None = None
) -> pd.DataFrame:
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
    return _paper_layout(runs[pd.Series(keep, index=runs.index, dtype=bool)], spec, table, task, key)


def _paper_layout(runs: pd.DataFrame, spec: TaskMetric, table: str | None, task: str, name: str) -> pd.DataFrame:
    """The rows of reference ``table`` for ``task`` in its order, each followed by the groups of ``runs`` that
    stand for it (nearest the paper's preset first), then the groups no row stands for.

    The columns follow the table's: its main metric (mean ± std of the runs, the reported number, Δ),
    params and search cost (the runs' own), ops and search type (the paper row's, facts of the method),
    and any other number it reports (a run's metric of that name, e.g. ``valid_ppl``, else blank).

    Args:
        runs: ``runs_frame`` rows of the runs to show.
        spec: the task's main metric.
        table: a name in ``TABLES``, or None for the groups alone.
        task: rows of ``table`` tied to another task are left out.
        name: the table's column that names a row (``architecture``; ``M`` for Table 5).
    """
    reference = _reference_rows(table, task)
    table = table if len(reference) else None
    label = "Architecture" if name == "architecture" else name
    metric_column = reported_column(reference.columns, spec.key, table) if table else spec.key
    data = [c for c in reference.columns if c not in (*_REFERENCE_META, name)] if table else [
        metric_column, "params_m", "search_cost_gpu_days"]  # fmt: skip
    record_keys = {}  # other reported numbers -> the run metric that reproduces each, if the runs record one
    for column in data:
        if column != metric_column and column not in _COLUMN_LABELS:
            found = [k for k in (column.removesuffix("_pct"), f"test_{column.removesuffix('_pct')}")
                     if k in runs and runs[k].notna().any()]  # fmt: skip
            record_keys[column] = found[0] if found else None
    summary = summarize(runs, spec.key, sorted({k for k in record_keys.values() if k}))
    groups = _with_references(summary, spec.key, table)
    summary.attrs["notes"] = [*summary.attrs.get("notes", []), *_own_search_notes(groups, reference)]
    refs = list(groups["ref"])
    variants = [json.loads(v) for v in groups["variant"]]
    names = [_ref_value(ref, name) if ref is not None else (variant.get(name) if name != "architecture" else None)
             for ref, variant in zip(refs, variants, strict=True)]  # fmt: skip
    methods = [_label(m, v) for m, v in zip(groups["method"], groups["variant"], strict=True)]
    ours = {label: [n if n is not None else m for n, m in zip(names, methods, strict=True)] if name == "architecture"
            else names, "Method": methods, "Preset": groups["preset"], "Setup": _setups(groups)}  # fmt: skip
    theirs = {label: reference[name] if table else [], "Method": None, "Preset": REPORTED, "Setup": None}
    nan = math.nan
    for column in data:
        paper = reference[column] if table else []
        if column == metric_column:
            ours |= {spec.label: groups["mean"], spec.label + STD: groups["std"], _reported_label(spec):
                     groups["reported"], "Δ": groups["delta"]}  # fmt: skip
            theirs |= {spec.label: paper, spec.label + STD: nan, _reported_label(spec): nan, "Δ": nan}
        elif column in ("params_m", "search_cost_gpu_days"):
            ours[_COLUMN_LABELS[column]] = groups["search_gpu_days" if column != "params_m" else "params_m"]
            theirs[_COLUMN_LABELS[column]] = paper
        elif column in _DESCRIPTORS:
            ours[_COLUMN_LABELS[column]] = [_ref_value(ref, column) for ref in refs]
            theirs[_COLUMN_LABELS[column]] = paper
        else:
            key, column_label = record_keys[column], _column_label(column)
            ours |= {column_label: groups[key] if key else nan, column_label + STD: groups[key + STD] if key else nan}
            theirs |= {column_label: paper, column_label + STD: nan}
    ours |= {SIGNAL: 100 * groups["entropy_drop"], "Seeds": groups["seeds"], "Failed": groups["failed"]}
    theirs |= {SIGNAL: nan, "Seeds": pd.NA, "Failed": pd.NA}
    ours = pd.DataFrame(ours, index=groups.index)
    ours = _config_column(ours, groups, runs, [label, "Method", "Preset", "Setup"])
    ours["_ref"] = [_ref_position(ref) for ref in refs]
    ours["_rank"] = [PRESET_ORDER.index(p) if p in PRESET_ORDER else len(PRESET_ORDER) for p in ours["Preset"]]
    theirs = pd.DataFrame(theirs, index=reference.index if table else pd.RangeIndex(0))
    theirs = theirs.assign(_ref=[float(i) for i in theirs.index], _rank=-1)
    if name != "architecture":  # an ablation over the method-config key ``name``
        swept = groups["method"].map(lambda m: ablation_key(m) == name).astype(bool)  # a released cell: not ranked
        ours["Best"] = ""
        ours.loc[swept, "Best"] = _best(ours.loc[swept, spec.label], ours.loc[swept, ["Preset", "Setup"]], spec)
        theirs["Best"] = ""
    if "Config" in ours:
        theirs["Config"] = None
    both = pd.concat([theirs[ours.columns], ours], ignore_index=True) if len(theirs) else ours
    config = ["Config"] if "Config" in both else []
    paired = both[both["_ref"] != math.inf].sort_values(["_ref", "_rank", "Method", "Setup", *config],
                                                        na_position="first", kind="stable")  # fmt: skip
    alone = both[both["_ref"] == math.inf].sort_values([label, "_rank", "Method", "Setup", *config], kind="stable")
    out = pd.concat([paired, alone], ignore_index=True).drop(columns=["_ref", "_rank"])
    for column in (label if name != "architecture" else None, "Ops", "Seeds", "Failed"):
        if column in out:
            out[column] = pd.array([None if v is None or v is pd.NA or _is_missing(v) else int(v) for v in out[column]],
                                   dtype="Int64")  # fmt: skip
    for column in out.columns:
        if column not in (label, "Method", "Preset", "Setup", "Config", "Search type", "Best"):
            out[column] = pd.to_numeric(out[column], errors="coerce") if out[column].dtype == object else out[column]
    return _noted(_without_empty_signal(out), summary)


def _without_empty_signal(table: pd.DataFrame) -> pd.DataFrame:
    """The search-signal column only where some run measured one (not for random search, fixed cells, old records)."""
    return table.drop(columns=SIGNAL) if SIGNAL in table and table[SIGNAL].isna().all() else table


def _own_search_notes(groups: pd.DataFrame, reference: pd.DataFrame) -> list[str]:
    """A note per group that searched on the table's task where the paper's rows of its method transfer a cell
    searched elsewhere (a WikiText-2 search under Table 4): tabled alone, without a reported number or a Δ."""
    if not len(reference):
        return []
    transfers = reference[reference["searched_on"].notna()]
    notes = []
    for _, group in groups[groups["ref"].isna()].iterrows():
        values, source = _split_variant(group["variant"])
        rows = transfers[transfers["method"] == group["method"]]
        if source is None and len(rows):
            notes.append(f"{_label(group['method'], group['variant'])} ({group['preset']}) searched on {group['task']} "
                         f"itself; the paper's rows of {group['method']} here train a cell searched on "
                         f"{', '.join(sorted(set(rows['searched_on'])))} (a transfer_from config), so it is tabled "
                         "alone, without a reported number")  # fmt: skip
    return notes


def _reference_rows(table: str | None, task: str) -> pd.DataFrame:
    """The rows of reference ``table`` that belong in ``task``'s table: tied to it, or to no task (NASNet...)."""
    if table is None:
        return pd.DataFrame()
    frame = load_reference(table)
    return frame[frame["task"].isna() | (frame["task"] == task)]


def _column_label(column: str) -> str:
    """``valid_ppl`` -> ``Valid ppl``; ``top5_error_pct`` -> ``Top5 error (%)``."""
    text = column.removesuffix("_pct").replace("_", " ")
    return text[:1].upper() + text[1:] + (" (%)" if column.endswith("_pct") else "")


def _best(means: pd.Series, within: pd.DataFrame, spec: TaskMetric) -> list[str]:
    """``"best"`` on the row with the best mean of each group of ``within`` (ties: each of them), else ``""``."""
    marks = [""] * len(means)
    for _, index in within.groupby(list(within.columns), dropna=False).groups.items():
        values = means.loc[index].dropna()
        if len(values):
            best = values.min() if spec.direction == "min" else values.max()
            for position in values.index[values == best]:
                marks[means.index.get_loc(position)] = "best"
    return marks


def _ref_position(ref: pd.Series | None) -> float:
    return math.inf if ref is None else float(ref["row"])


def _reported_label(spec: TaskMetric) -> str:
    return "Reported (%)" if "(%)" in spec.label else "Reported"


# ---- rendering -------------------------------------------------------------------------------


def _cell(value: Any, column: str) -> str:
    if _is_missing(value) or value is pd.NA:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return str(value)
    if column == "Δ":
        return f"{value:+.2f}"
    if column == SIGNAL:
        return f"{value:.1f}"
    if column.startswith("Search cost"):
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"  # 3150, not 3.15e+03
    return f"{value:.2f}"


def _display(table: pd.DataFrame) -> pd.DataFrame:
    """Strings for every cell; each ``X std`` column folded into ``X`` as ``mean ± std``."""
    out = {}
    for column in table.columns:
        if column.endswith(STD) and column[: -len(STD)] in table.columns:
            continue
        cells = [_cell(v, column) for v in table[column]]
        if column + STD in table.columns:
            stds = [_cell(s, column) for s in table[column + STD]]
            cells = [c if s == "-" or c == "-" else f"{c} ± {s}" for c, s in zip(cells, stds, strict=True)]
        out[column] = cells
    return pd.DataFrame(out, columns=list(out))


def _numeric(table: pd.DataFrame) -> list[bool]:
    display_columns = [c for c in table.columns if not (c.endswith(STD) and c[: -len(STD)] in table.columns)]
    return [pd.api.types.is_numeric_dtype(table[c]) for c in display_columns]


def _markdown(cells: pd.DataFrame, numeric: list[bool]) -> str:
    def line(values):
        return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"

    rule = "| " + " | ".join("--:" if n else ":--" for n in numeric) + " |"
    return "\n".join([line(cells.columns), rule, *(line(row) for row in cells.itertuples(index=False))]) + "\n"


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "Δ": r"$\Delta$"}  # fmt: skip


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def _latex(cells: pd.DataFrame, numeric: list[bool]) -> str:
    def line(values):
        return " & ".join(_latex_escape(v) for v in values) + r" \\"

    spec = "".join("r" if n else "l" for n in numeric)
    body = [line(row) for row in cells.itertuples(index=False)]
    rows = [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", line(cells.columns), r"\midrule", *body, r"\bottomrule"]
    return "\n".join([*rows, r"\end{tabular}"]) + "\n"


def _html(cells: pd.DataFrame, numeric: list[bool]) -> str:
    def row(values, tag):
        return "<tr>" + "".join(f"<{tag}>{html.escape(str(v))}</{tag}>" for v in values) + "</tr>"

    body = [row(r, "td") for r in cells.itertuples(index=False)]
    parts = ["<table>", "<thead>", row(cells.columns, "th"), "</thead>", "<tbody>", *body, "</tbody>", "</table>"]
    return "\n".join(parts) + "\n"


def render(table: pd.DataFrame, fmt: str = "md") -> str:
    """A table from ``comparison_table`` or ``ablation_table`` as text.

    The table's notes (``attrs["notes"]``: seeds recorded twice) follow it, except in ``csv``, which stays
    one parseable table (the command line prints them on stderr).

    Args:
        table: the frame to print.
        fmt: ``md`` (GitHub Markdown), ``csv`` (numbers to 6 significant digits, std in its own column),
            ``latex`` (booktabs ``tabular``) or ``html`` (a plain ``<table>``).
    """
    if fmt == "csv":
        return table.to_csv(index=False, float_format="%.6g")  # 6 digits: no float noise like 0.00999999
    writers = {"md": _markdown, "latex": _latex, "html": _html}
    if fmt not in writers:
        raise UnknownNameError(unknown_name_message("table format", fmt, list(FORMATS)))
    return writers[fmt](_display(table), _numeric(table)) + _notes(table.attrs.get("notes", []), fmt)


_NOTES = {
    "md": lambda n: f"\nNote: {n}\n",
    "csv": lambda n: f"# Note: {n}\n",
    "latex": lambda n: f"% Note: {_latex_escape(n)}\n",
    "html": lambda n: f'<p class="note">Note: {html.escape(n)}</p>\n',
}


def _notes(notes: list[str], fmt: str) -> str:
    return "".join(_NOTES[fmt](note) for note in notes)


_TITLES = {
    "md": lambda t: f"### {t}\n\n",
    "csv": lambda t: f"# {t}\n",
    "latex": lambda t: f"% {_latex_escape(t)}\n",
    "html": lambda t: f"<h3>{html.escape(t)}</h3>\n",
}


def _sections(records: list[dict | Record]) -> list[tuple[str, pd.DataFrame]]:
    runs = runs_frame(records)
    sections = []
    for task in sorted(runs["task"].dropna().unique()):
        spec = task_metric(task)
        if spec is None:
            title = (f"{task}: reproduced; task {task} is not installed, so every recorded test metric is shown "
                     "without reference numbers")  # fmt: skip
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

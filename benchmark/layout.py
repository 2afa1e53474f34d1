"""The paper's layout of a table: its reference rows in order, each followed by the groups of runs that stand
for it (nearest the paper's preset first), then the groups no row stands for.

``paper_layout`` is the one builder behind :func:`.tables.comparison_table` and :func:`.tables.ablation_table`;
the columns follow the reference table's (main metric with the reported number and Δ, params, search cost, the
paper row's ops and search type, any other number it reports).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from ..methods import METHODS
from ..tasks.spaces import UnknownNameError
from .config import RESULT_NEUTRAL
from .groups import PRESET_ORDER, STD, _is_missing, _label, _setups, _split_variant, summarize
from .references import TaskMetric, load_reference, references_for, reported_column
from .render import SIGNAL

__all__ = ["ablation_key", "paper_layout"]

NOT_IDENTITY = ("seed", *RESULT_NEUTRAL)  # config keys that never make two runs different configs
REPORTED = "reported"  # the Preset of a row the paper reports (not a run of ours)
# columns of a reference table that describe a row rather than report a number of it
_REFERENCE_META = ("architecture", "source", "method", "task", "preset", "selector", "genotype", "searched_on", "note")
_DESCRIPTORS = ("ops", "search_type")  # facts of the method and its space: a reproduced row repeats its paper row's
_COLUMN_LABELS = {
    "params_m": "Params (M)",
    "search_cost_gpu_days": "Search cost (GPU days)",
    "ops": "Ops",
    "search_type": "Search type",
}


def _with_references(summary: pd.DataFrame, key: str, table: str | None) -> pd.DataFrame:
    """Adds ``ref`` (the row of reference ``table`` the group stands for, at any preset, or None), ``reported``
    (its value of ``key``) and ``delta`` (mean - reported, only where the group ran at the row's preset: a
    ``smoke`` or ``proxy`` run is shown beside the paper's number for context, never measured against it)."""
    refs, reported = [], []
    for _, row in summary.iterrows():
        values, source = _split_variant(row["variant"])
        found = (
            pd.DataFrame()
            if table is None
            else references_for(row["method"], row["task"], None, values, tables=[table], searched_on=source)
        )
        ref = found.iloc[0] if len(found) else None
        refs.append(ref)
        reported.append(None if ref is None else ref.get(reported_column(ref.index, key, table)))
    reported = pd.to_numeric(pd.Series(reported, index=summary.index, dtype=object))
    at_its_preset = [
        ref is not None and ref["preset"] == preset for ref, preset in zip(refs, summary["preset"], strict=True)
    ]
    delta = (summary["mean"] - reported).where(pd.Series(at_its_preset, index=summary.index, dtype=bool))
    return summary.assign(ref=pd.Series(refs, index=summary.index, dtype=object), reported=reported, delta=delta)


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


def ablation_key(method: str) -> str | None:
    """The method-config key ``method`` sweeps in an ablation (its class's ``ablation_key``); None for a method
    without one or not installed."""
    try:
        return METHODS.get(method).ablation_key
    except UnknownNameError:
        return None


def _noted(table: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    table.attrs["notes"] = list(summary.attrs.get("notes", []))
    return table


def paper_layout(runs: pd.DataFrame, spec: TaskMetric, table: str | None, task: str, name: str) -> pd.DataFrame:
    """The rows of reference ``table`` for ``task`` in its order, each followed by the groups of ``runs`` that
    stand for it (nearest the paper's preset first), then the groups no row stands for.

    The columns follow the table's: its main metric (mean ± std of the runs, the reported number, Δ),
    params and search cost (the runs' own), ops and search type (the paper row's, facts of the method),
    and any other number it reports (a run's metric of that name, e.g. ``valid_ppl``, else blank); then the
    task's ground-truth numbers where runs record them (``spec.ground_truth``: NAS-Bench-201's lookups).

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
    if table:
        data = [c for c in reference.columns if c not in (*_REFERENCE_META, name)]
    else:
        data = [metric_column, "params_m", "search_cost_gpu_days"]
    record_keys = _record_keys(runs, data, metric_column)
    truth = [(key, label) for key, label in spec.ground_truth if key in runs]  # looked-up numbers (nb201)
    summary = summarize(runs, spec.key, sorted({k for k in record_keys.values() if k} | {k for k, _ in truth}))
    groups = _with_references(summary, spec.key, table)
    summary.attrs["notes"] = [*summary.attrs.get("notes", []), *_own_search_notes(groups, reference)]
    methods = [_label(m, v) for m, v in zip(groups["method"], groups["variant"], strict=True)]
    ours = {label: _row_names(groups, name, methods), "Method": methods, "Preset": groups["preset"]}
    ours["Setup"] = _setups(groups)
    theirs = {label: reference[name] if table else [], "Method": None, "Preset": REPORTED, "Setup": None}
    for column in data:
        paper_values = reference[column] if table else []
        mine, paper = _number_columns(column, groups, paper_values, spec, metric_column, record_keys)
        ours |= mine
        theirs |= paper
    for key, column in truth:  # the runs' ground truth (mean ± std over seeds); the paper rows report none here
        ours |= {column: groups[key], column + STD: groups[key + STD]}
        theirs |= {column: math.nan, column + STD: math.nan}
    ours |= {SIGNAL: 100 * groups["entropy_drop"], "Seeds": groups["seeds"], "Failed": groups["failed"]}
    theirs |= {SIGNAL: math.nan, "Seeds": pd.NA, "Failed": pd.NA}
    ours = pd.DataFrame(ours, index=groups.index)
    ours = _config_column(ours, groups, runs, [label, "Method", "Preset", "Setup"])
    ours["_ref"] = [_ref_position(ref) for ref in groups["ref"]]
    ours["_rank"] = [PRESET_ORDER.index(p) if p in PRESET_ORDER else len(PRESET_ORDER) for p in ours["Preset"]]
    theirs = pd.DataFrame(theirs, index=reference.index if table else pd.RangeIndex(0))
    theirs = theirs.assign(_ref=[float(i) for i in theirs.index], _rank=-1)
    if name != "architecture":  # an ablation over the method-config key ``name``
        _mark_best(ours, theirs, groups, spec, name)
    out = _typed(_interleave(ours, theirs, label), label, name)
    return _noted(_without_empty_signal(out), summary)


def _record_keys(runs: pd.DataFrame, data: list[str], metric_column: str) -> dict[str, str | None]:
    """Each reported number of ``data`` other than the main metric, params, search cost, ops and search type ->
    the run metric that reproduces it (``valid_ppl``; ``test_<name>``), or None when the runs record none."""
    keys = {}
    for column in data:
        if column != metric_column and column not in _COLUMN_LABELS:
            bare = column.removesuffix("_pct")
            found = [k for k in (bare, f"test_{bare}") if k in runs and runs[k].notna().any()]
            keys[column] = found[0] if found else None
    return keys


def _row_names(groups: pd.DataFrame, name: str, methods: list[str]) -> list:
    """The name column of the reproduced rows: their reference row's name; else, in an ablation, the group's value
    of the swept key, and in an architecture table the group's method label."""
    names = []
    for ref, variant, method in zip(groups["ref"], groups["variant"], methods, strict=True):
        if ref is not None:
            names.append(_ref_value(ref, name))
        else:
            names.append(json.loads(variant).get(name) if name != "architecture" else None)
        if name == "architecture" and names[-1] is None:
            names[-1] = method
    return names


def _number_columns(
    column: str,
    groups: pd.DataFrame,
    paper: Any,
    spec: TaskMetric,
    metric_column: str,
    record_keys: dict[str, str | None],
) -> tuple[dict, dict]:
    """The table columns of the reference column ``column``: (the reproduced rows', the reported rows')."""
    nan = math.nan
    if column == metric_column:
        reported = _reported_label(spec)
        mine = {spec.label: groups["mean"], spec.label + STD: groups["std"], reported: groups["reported"]}
        return mine | {"Δ": groups["delta"]}, {spec.label: paper, spec.label + STD: nan, reported: nan, "Δ": nan}
    if column in ("params_m", "search_cost_gpu_days"):
        own = groups["search_gpu_days" if column != "params_m" else "params_m"]
        return {_COLUMN_LABELS[column]: own}, {_COLUMN_LABELS[column]: paper}
    if column in _DESCRIPTORS:  # the paper row's, a fact of the method
        facts = [_ref_value(ref, column) for ref in groups["ref"]]
        return {_COLUMN_LABELS[column]: facts}, {_COLUMN_LABELS[column]: paper}
    key, label = record_keys[column], _column_label(column)
    mine = {label: groups[key] if key else nan, label + STD: groups[key + STD] if key else nan}
    return mine, {label: paper, label + STD: nan}


def _mark_best(ours: pd.DataFrame, theirs: pd.DataFrame, groups: pd.DataFrame, spec: TaskMetric, key: str) -> None:
    """A ``Best`` column: ``best`` on the best swept group (a method whose ``ablation_key`` is ``key``) of each
    preset and setup; a released cell's run is shown, not ranked, and the paper's rows are never ranked."""
    swept = groups["method"].map(lambda m: ablation_key(m) == key).astype(bool)
    ours["Best"] = ""
    ours.loc[swept, "Best"] = _best(ours.loc[swept, spec.label], ours.loc[swept, ["Preset", "Setup"]], spec)
    theirs["Best"] = ""


def _interleave(ours: pd.DataFrame, theirs: pd.DataFrame, label: str) -> pd.DataFrame:
    """The reported rows in order, each followed by the reproduced groups that stand for it (``_ref``, nearest the
    paper's preset first: ``_rank``), then the groups no row stands for, by name."""
    if "Config" in ours:
        theirs["Config"] = None
    both = pd.concat([theirs[ours.columns], ours], ignore_index=True) if len(theirs) else ours
    config = ["Config"] if "Config" in both else []
    paired = both[both["_ref"] != math.inf].sort_values(
        ["_ref", "_rank", "Method", "Setup", *config], na_position="first", kind="stable"
    )
    alone = both[both["_ref"] == math.inf].sort_values([label, "_rank", "Method", "Setup", *config], kind="stable")
    return pd.concat([paired, alone], ignore_index=True).drop(columns=["_ref", "_rank"])


def _typed(out: pd.DataFrame, label: str, name: str) -> pd.DataFrame:
    """Counts (and an ablation's key) as nullable integers, every other number column numeric."""
    for column in (label if name != "architecture" else None, "Ops", "Seeds", "Failed"):
        if column in out:
            values = [None if v is None or v is pd.NA or _is_missing(v) else int(v) for v in out[column]]
            out[column] = pd.array(values, dtype="Int64")
    for column in out.columns:
        if column not in (label, "Method", "Preset", "Setup", "Config", "Search type", "Best"):
            out[column] = pd.to_numeric(out[column], errors="coerce") if out[column].dtype == object else out[column]
    return out


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
            notes.append(
                f"{_label(group['method'], group['variant'])} ({group['preset']}) searched on {group['task']} "
                f"itself; the paper's rows of {group['method']} here train a cell searched on "
                f"{', '.join(sorted(set(rows['searched_on'])))} (a transfer_from config), so it is tabled "
                "alone, without a reported number"
            )
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

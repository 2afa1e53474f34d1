"""Comparison tables: reproduced runs, mean ± std over seeds, next to the papers' numbers.

Pure functions on run records (the dicts ``run_experiment`` writes to ``record.json``), except
``load_records``, which gathers them from a folder. Runs are grouped by method, task, preset and
the method-config values that make variants (``references.VARIANT_KEYS``: M for egs, order for
darts...). Failed runs (``status: failed``) are left out of the statistics and counted in
``Failed``; a record without ``status`` is a finished run.

Examples:
    >>> records = load_records("runs/")  # doctest: +SKIP
    >>> print(render(comparison_table(records, "cifar10"), "md"))  # doctest: +SKIP
    >>> print(render(ablation_table(records), "latex"))  # doctest: +SKIP
"""

from __future__ import annotations

import html
import json
import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..tasks.spaces import UnknownNameError
from ..tasks.spaces.registry import unknown_name_message

from .references import TABLES, references_for, variant_of
from .store import RecordStore

__all__ = [
    "FORMATS",
    "TASK_METRICS",
    "ablation_table",
    "comparison_table",
    "load_records",
    "render",
    "render_tables",
    "runs_frame",
    "summarize",
]

FORMATS = ("md", "csv", "latex", "html")
GROUP = ["method", "task", "preset", "variant"]  # variant: the JSON of variant_of(...), e.g. '{"M": 7}'
STD = " std"  # a column "X std" holds the std of column "X"; md/latex/html print them as "X ± std"


@dataclass(frozen=True)
class TaskMetric:
    record_key: str  # key in record["metrics"]
    table: str  # reference table (references.TABLES)
    reported: str  # its column with the reported value
    label: str  # column header


TASK_METRICS = {
    "cifar10": TaskMetric("test_error", "cifar10", "test_error_pct", "Test error (%)"),
    # provisional: these tasks do not exist yet; the record keys follow the runner's test_<metric> pattern
    "imagenet": TaskMetric("test_error", "imagenet_mobile", "top1_error_pct", "Top-1 error (%)"),
    "ptb": TaskMetric("test_perplexity", "ptb", "test_ppl", "Test perplexity"),
    "wt2": TaskMetric("test_perplexity", "wt2", "test_ppl", "Test perplexity"),
    "voc2012": TaskMetric("test_miou", "voc2012", "miou_pct", "mIoU (%)"),
}


# ---- records -> one row per run ------------------------------------------------------------


def load_records(root: str | Path, strict: bool = True) -> list[dict]:
    """Every run's ``record.json`` under ``root``, validated (``RecordStore.scan``); version-1 records come
    upgraded in memory, with ``config`` from the ``config.yaml`` beside them.

    Args:
        root: a run or sweep folder (``--out``), searched at any depth.
        strict: raise ``RecordError`` naming every bad file; False skips them (see ``RecordStore``).
    """
    return RecordStore.scan(root, strict).records()


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _unflatten(row: dict) -> dict:
    """``{"metrics.test_error": 3.0}`` (``pd.json_normalize``) -> ``{"metrics": {"test_error": 3.0}}``; drops NaN."""
    nested: dict = {}
    for key, value in row.items():
        if _is_missing(value):
            continue
        *parents, leaf = str(key).split(".")
        node = nested
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return nested


def _variant(method: str, method_config: dict) -> str:
    # a frame column with blanks turns M=7 into 7.0: bring whole floats back to int so both group together
    variant = variant_of(method, method_config)
    variant = {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in variant.items()}
    return json.dumps(variant, sort_keys=True)


def _as_records(records: Iterable[dict] | pd.DataFrame) -> list[dict]:
    if isinstance(records, pd.DataFrame):
        return [_unflatten(row) for row in records.to_dict("records")]
    return list(records)


def _run_row(record: dict) -> dict:
    method = record.get("method")
    method_config = (record.get("config") or {}).get("method") or {}
    hours = (record.get("search") or {}).get("device_hours")
    return {
        **(record.get("metrics") or {}),
        "method": method,
        "task": record.get("task"),
        "preset": record.get("preset"),
        "seed": record.get("seed"),
        "variant": _variant(method, method_config),
        "ok": record.get("status") in (None, "ok"),
        "search_gpu_days": None if hours is None else hours / 24,
    }


def runs_frame(records: Iterable[dict] | pd.DataFrame) -> pd.DataFrame:
    """One row per run: method, task, preset, seed, variant, ok, search_gpu_days and the record's metrics.

    Args:
        records: record dicts, or a frame of them (nested columns, or dotted ones from ``pd.json_normalize``).
    """
    frame = pd.DataFrame([_run_row(r) for r in _as_records(records)])
    frame = frame.reindex(columns=list(dict.fromkeys([*GROUP, "seed", "ok", "search_gpu_days", *frame.columns])))
    frame["ok"] = frame["ok"].astype(bool)
    return frame


# ---- statistics ------------------------------------------------------------------------------


def _metric(task: str) -> TaskMetric:
    if task not in TASK_METRICS:
        raise UnknownNameError(unknown_name_message("table task", task, sorted(TASK_METRICS)))
    return TASK_METRICS[task]


def summarize(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean, std (ddof=1, NaN for one seed) and count of ``metric`` over the ok runs of each group; failures counted."""
    nan = pd.Series(math.nan, index=runs.index)
    runs = runs.assign(
        **{col: pd.to_numeric(runs.get(col, nan), errors="coerce") for col in (metric, "params_m", "search_gpu_days")}
    )
    stats = (
        runs[runs["ok"]]
        .groupby(GROUP, dropna=False)
        .agg(
            mean=(metric, "mean"),
            std=(metric, "std"),
            seeds=(metric, "count"),
            params_m=("params_m", "mean"),
            search_gpu_days=("search_gpu_days", "mean"),
        )
    )
    failed = (~runs["ok"]).groupby([runs[c] for c in GROUP], dropna=False).sum().rename("failed")
    out = stats.join(failed, how="outer").reset_index()
    return out.fillna({"seeds": 0, "failed": 0}).astype({"seeds": int, "failed": int})


def _reference(row: pd.Series, table: str) -> pd.Series | None:
    rows = references_for(row["method"], row["task"], row["preset"], json.loads(row["variant"]), tables=[table])
    return rows.iloc[0] if len(rows) else None


def _with_references(summary: pd.DataFrame, spec: TaskMetric, table: str) -> pd.DataFrame:
    """Adds ``ref`` (the matching reference row or None) and ``reported`` to each group."""
    refs = [_reference(row, table) for _, row in summary.iterrows()]
    reported = [None if ref is None else ref.get(spec.reported) for ref in refs]
    return summary.assign(ref=refs, reported=pd.to_numeric(pd.Series(reported, index=summary.index, dtype=object)))


def _label(method: str, variant: str) -> str:
    values = ", ".join(f"{k}={v}" for k, v in json.loads(variant).items())
    return f"{method} ({values})" if values else method


def _ref_value(ref: pd.Series | None, column: str) -> Any:
    return None if ref is None or _is_missing(ref.get(column)) else ref.get(column)


# ---- tables ----------------------------------------------------------------------------------


def comparison_table(records: Iterable[dict] | pd.DataFrame, task: str = "cifar10") -> pd.DataFrame:
    """The paper's Table 1 layout for one task: reproduced mean ± std beside the reported number.

    Rows are (method, preset, variant) groups of the task's runs, in the order of the reference
    table, then the groups it has no row for. Numbers stay numeric; ``render`` formats them.

    Args:
        records: run records (dicts or a frame of them).
        task: a name in ``TASK_METRICS``.
    """
    spec = _metric(task)
    runs = runs_frame(records)
    groups = _with_references(summarize(runs[runs["task"] == task], spec.record_key), spec, spec.table)
    table = pd.DataFrame(
        {
            "Architecture": [
                _ref_value(ref, "architecture") or _label(method, variant)
                for ref, method, variant in zip(groups["ref"], groups["method"], groups["variant"], strict=True)
            ],
            "Preset": groups["preset"],
            spec.label: groups["mean"],
            spec.label + STD: groups["std"],
            _reported_label(spec): groups["reported"],
            "Δ": groups["mean"] - groups["reported"],
            "Params (M)": groups["params_m"],
            "Search cost (GPU days)": groups["search_gpu_days"],
            "Ops": pd.array([_ref_value(r, "ops") for r in groups["ref"]], dtype="Int64"),
            "Search type": [_ref_value(r, "search_type") for r in groups["ref"]],
            "Seeds": groups["seeds"],
            "Failed": groups["failed"],
        }
    )
    table = table.assign(_order=[_ref_position(r) for r in groups["ref"]])
    return table.sort_values(["_order", "Architecture", "Preset"]).drop(columns="_order").reset_index(drop=True)


def ablation_table(records: Iterable[dict] | pd.DataFrame, task: str = "cifar10") -> pd.DataFrame:
    """The paper's Table 5: EGS runs over the number of sampling times M, beside the reported numbers.

    Args:
        records: run records (dicts or a frame of them); runs of other methods and tasks are ignored.
        task: the task of the sweep; the paper reports M = 1..9 on cifar10 (preset ``paper``).
    """
    spec = _metric(task)
    runs = runs_frame(records)
    runs = runs[(runs["task"] == task) & (runs["method"] == "egs")]
    groups = _with_references(summarize(runs, spec.record_key), spec, "sampling_times")
    table = pd.DataFrame(
        {
            "M": pd.array([json.loads(v).get("M") for v in groups["variant"]], dtype="Int64"),
            "Preset": groups["preset"],
            spec.label: groups["mean"],
            spec.label + STD: groups["std"],
            _reported_label(spec): groups["reported"],
            "Δ": groups["mean"] - groups["reported"],
            "Params (M)": groups["params_m"],
            "Params reported (M)": pd.to_numeric(groups["ref"].map(lambda r: _ref_value(r, "params_m"))),
            "Seeds": groups["seeds"],
            "Failed": groups["failed"],
        }
    )
    return table.sort_values(["M", "Preset"], na_position="last").reset_index(drop=True)


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
    if column.startswith("Search cost"):
        return f"{value:.3g}"
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
    return writers[fmt](_display(table), _numeric(table))


_TITLES = {
    "md": lambda t: f"### {t}\n\n",
    "csv": lambda t: f"# {t}\n",
    "latex": lambda t: f"% {_latex_escape(t)}\n",
    "html": lambda t: f"<h3>{html.escape(t)}</h3>\n",
}


def _sections(records: list[dict]) -> list[tuple[str, pd.DataFrame]]:
    runs = runs_frame(records)
    sections = []
    for task in sorted(t for t in runs["task"].dropna().unique() if t in TASK_METRICS):
        spec = TASK_METRICS[task]
        sections.append((f"{task}: reproduced vs {TABLES[spec.table]}", comparison_table(records, task)))
        egs = runs[(runs["task"] == task) & (runs["method"] == "egs")]
        if egs["variant"].nunique() > 1:  # a sweep over M
            sections.append((f"{task}: EGS over M vs {TABLES['sampling_times']}", ablation_table(records, task)))
    return sections


def render_tables(records: Iterable[dict] | pd.DataFrame, fmt: str = "md") -> str:
    """Every table the records make, each under a title: per task, the comparison table, and the M
    ablation where EGS ran with more than one M. For one parseable CSV, render one table instead.

    Args:
        records: run records (dicts or a frame of them); tasks without a layout are named, not dropped silently.
        fmt: one of ``FORMATS``.
    """
    if fmt not in FORMATS:
        raise UnknownNameError(unknown_name_message("table format", fmt, list(FORMATS)))
    records = _as_records(records)
    parts = [_TITLES[fmt](title) + render(table, fmt) for title, table in _sections(records)]
    tasks = runs_frame(records)["task"].dropna().unique()
    left_out = sorted(t for t in tasks if t not in TASK_METRICS)
    if left_out:
        note = f"runs of {', '.join(left_out)} left out: no table layout (known tasks: {', '.join(TASK_METRICS)})"
        parts.append(_TITLES[fmt](note))
    return "\n".join(parts)

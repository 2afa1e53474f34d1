"""Methods head to head on one task, with the uncertainty of each difference (``egsbench compare``).

Each group of :mod:`.groups` (ok runs, the newest record per seed) against its preset's baseline group: Δ with a
95 % bootstrap interval, Welch's p with Holm's correction, wins/ties/losses on shared seeds and the seeds a t-test
would need (:mod:`.stats`); per group, the genotypes' Jaccard agreement beside random cells'. From few seeds the
bootstrap interval is too narrow; the rendered notes say so and say how every number is made.

Examples:
    >>> c = compare_runs(load_records("runs/"), task="cifar10")  # needs finished runs  # doctest: +SKIP
    >>> print(render_comparison(c, "md"))  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.registry import unknown_name_message
from ..tasks import TASKS
from ..tasks.spaces import UnknownNameError, UserError
from .groups import GROUP, PRESET_ORDER, SETUP, STD, _label, latest_per_seed, runs_frame, setup_label, signal_notes
from .records import Record
from .references import load_reference, task_metric
from .render import _TITLES, FORMATS, _notes, render
from .stats import (
    ALPHA,
    DRAWS,
    POWER,
    RESAMPLES,
    SEED,
    TIE,
    _agreement,
    bootstrap_ci,
    genotype_set,
    holm,
    jaccard,
    pareto_front,
    random_jaccard,
    seeds_needed,
    t_test_power,
    welch_p,
    win_tie_loss,
)

__all__ = [
    "Comparison",
    "bootstrap_ci",
    "compare_runs",
    "genotype_set",
    "holm",
    "jaccard",
    "pareto_front",
    "plot_comparison",
    "random_jaccard",
    "render_comparison",
    "seeds_needed",
    "t_test_power",
    "welch_p",
    "win_tie_loss",
]

FEW_SEEDS = 10  # below this many seeds in a group, the notes warn that the bootstrap interval is too narrow
COST = "Search cost (device-h)"


@dataclass
class Comparison:
    """One task's comparison; frames keep numbers numeric, :func:`render_comparison` formats them."""

    task: str
    metric: str  # the record key, e.g. test_error
    label: str  # e.g. "Test error (%)"
    direction: str  # "min" or "max": which way is better
    baseline: str  # the method the others are measured against
    methods: pd.DataFrame  # a row per group: label, preset, mean, std, n, cost_h, cost_h_std, is_baseline
    pairs: pd.DataFrame  # a row per group against its preset's baseline: delta, ci, p, p_holm, w/t/l, seeds_needed
    agreement: pd.DataFrame  # a row per group: genotypes, distinct, jaccard, random_jaccard
    notes: list[str] = field(default_factory=list)
    signal: pd.DataFrame | None = None  # a row per group: the search signal's means over seeds (methods.signal)
    # (run column, label) of the task's ground truth (nb201: gt_cifar10, ...); ``methods`` has <column> (mean) and
    # "<column> std" for each
    ground_truth: list[tuple[str, str]] = field(default_factory=list)


# ---- records -> comparison -------------------------------------------------------------------


def _metric(task: str, metric: str | None, runs: pd.DataFrame) -> tuple[str, str, str]:
    """(record key, label, direction) of ``metric`` (``error`` or ``test_error``; None: the task's main metric)."""
    try:
        cls = TASKS.get(task)
    except UnknownNameError:
        raise UserError(
            f"task {task!r} is not installed, so the direction of its metrics is unknown; install the "
            "plug-in that provides it"
        ) from None
    declared = {f"test_{m.name}": m for m in cls.metrics} | {f"gt_{m.name}": m for m in cls.ground_truth_metrics}
    key = f"test_{cls.main_metric}" if metric is None else metric
    key = key if key.startswith(("test_", "gt_")) else f"test_{key}"
    recorded = [k for k in declared if k in runs and pd.to_numeric(runs[k], errors="coerce").notna().any()]
    if key not in recorded:
        raise UserError(unknown_name_message(f"metric of {task} runs", metric or key, recorded or list(declared)))
    found = declared[key]
    return key, found.label or f"Test {found.name}", found.direction


def _group_labels(groups: pd.DataFrame) -> list[str]:
    """``egs (M=7)``; where two groups of a preset would read alike, their setup, then their config hash."""
    labels = [_label(m, v) for m, v in zip(groups["method"], groups["variant"], strict=True)]
    extras = [
        lambda i: f" [{setup_label(*(groups.iloc[i][c] for c in SETUP))}]",
        lambda i: f" {str(groups.iloc[i]['config_hash'])[:8]}",
    ]
    for extra in extras:
        keys = list(zip(groups["preset"], labels, strict=True))
        labels = [label + extra(i) if keys.count(keys[i]) > 1 else label for i, label in enumerate(labels)]
    return labels


def compare_runs(
    records: Iterable[dict | Record], task: str | None = None, metric: str | None = None, baseline: str | None = None
) -> Comparison:
    """Every group of ``task``'s runs against the baseline's group in its preset (see the module docstring).

    Args:
        records: run records (dicts or ``Record`` models); failed runs are left out.
        task: the task to compare; None for the only task of the records.
        metric: a declared metric of the task, ``error`` or ``test_error``; None for its main metric.
        baseline: a method name (``darts``) or a group label (``darts (order=2)``); None for the method the
            task's reference table lists first (DARTS in every table of the paper) if it ran, else the first
            method alphabetically.

    Raises:
        UserError: no such task, metric or baseline in the records (the message lists those there), or the
            task is not installed (its metrics' directions are unknown).
    """
    records = [r.model_dump(mode="json") if isinstance(r, Record) else r for r in records]
    searches = [r.get("search") or {} for r in records]
    runs = runs_frame(records).assign(
        genotype=[r.get("genotype") for r in records],
        space=[r.get("space") for r in records],
        signal=[s.get("signal") for s in searches],
        search_wall_s=[s.get("wall_time_s") for s in searches],
    )
    tasks = sorted(runs["task"].dropna().unique()) if len(runs) else []
    if task is None and len(tasks) != 1:
        raise UserError(
            f"records of {len(tasks)} tasks ({', '.join(tasks) or 'none'}): pass the task to compare (--task)"
        )
    task = task or tasks[0]
    if task not in tasks:
        raise UserError(unknown_name_message("task of the records", task, tasks))
    runs = runs[(runs["task"] == task) & runs["ok"]]
    if runs.empty:
        raise UserError(f"no finished run of {task} (every record of it failed); nothing to compare")
    key, label, direction = _metric(task, metric, runs)
    runs, notes = latest_per_seed(runs)
    runs = runs.assign(value=pd.to_numeric(runs[key], errors="coerce"))
    if runs["value"].isna().any():
        notes.append(f"{int(runs['value'].isna().sum())} ok runs record no {key} and are left out")
    runs = runs[runs["value"].notna()]
    if runs.empty:  # the newest record of every seed lacks the metric
        raise UserError(f"no run of {task} records {key} in its newest record of a seed; nothing to compare")
    keys, members = zip(*runs.groupby(GROUP, dropna=False, sort=True), strict=True)
    methods = pd.DataFrame([dict(zip(GROUP, k, strict=True)) for k in keys])
    methods["label"] = _group_labels(methods)
    hours = [24 * pd.to_numeric(g["search_gpu_days"], errors="coerce") for g in members]
    methods = methods.assign(
        mean=[g["value"].mean() for g in members],
        std=[g["value"].std() for g in members],
        n=[len(g) for g in members],
        cost_h=[h.mean() for h in hours],
        cost_h_std=[h.std() for h in hours],
    )
    spec = task_metric(task)
    truth = [(k, label) for k, label in (spec.ground_truth if spec else ()) if k in runs and k != key]
    for column, _ in truth:  # the looked-up numbers of each group's cells (nb201), mean and std over seeds
        found = [pd.to_numeric(g[column], errors="coerce") for g in members]
        methods[column], methods[column + STD] = [v.mean() for v in found], [v.std() for v in found]
    values = {i: dict(zip(g["seed"], g["value"], strict=True)) for i, g in enumerate(members)}
    baseline, chosen, base_notes = _baselines(methods, baseline or _default_baseline(task, methods))
    methods["is_baseline"] = [i in chosen.values() for i in methods.index]
    rank = [PRESET_ORDER.index(p) if p in PRESET_ORDER else len(PRESET_ORDER) for p in methods["preset"]]
    order = (
        methods.assign(_rank=rank)
        .sort_values(["_rank", "preset", "is_baseline", "label"], ascending=[True, True, False, True])
        .index
    )
    methods = methods.loc[order]
    pairs = _pairs(methods, chosen, values, direction)
    agreement = pd.DataFrame(
        [_agreement(list(members[i]["genotype"]), list(members[i]["space"])) for i in methods.index],
        index=methods.index,
    )
    agreement = pd.concat([methods[["label", "preset"]], agreement], axis=1)
    signal = pd.DataFrame([_signal(members[i]) for i in methods.index], index=methods.index)
    signal = pd.concat([methods[["label", "preset"]], signal], axis=1)
    notes = _explain(methods, pairs, label, direction, chosen) + base_notes + notes
    return Comparison(
        task,
        key,
        label,
        direction,
        baseline,
        methods.reset_index(drop=True),
        pairs.reset_index(drop=True),
        agreement.reset_index(drop=True),
        notes,
        signal.reset_index(drop=True),
        truth,
    )


_SIGNAL_FIELDS = ("entropy_start_frac", "entropy_end_frac", "entropy_drop_frac", "margin_end", "derived_changed")


def _signal(runs: pd.DataFrame) -> dict:
    """A group's search signal: each field's mean over the seeds that recorded one, and the search wall time."""
    signals = [s for s in runs["signal"] if isinstance(s, Mapping)]
    row = {"signals": len(signals), "search_min": pd.to_numeric(runs["search_wall_s"], errors="coerce").mean() / 60}
    for name in _SIGNAL_FIELDS:
        values = [s[name] for s in signals if s.get(name) is not None]
        row[name] = float(np.mean(values)) if values else math.nan
    drops = [s["entropy_drop_frac"] for s in signals if s.get("entropy_drop_frac") is not None]
    row["entropy_drop_std"] = float(np.std(drops, ddof=1)) if len(drops) > 1 else math.nan
    row["entropy_drop_min"] = min(drops) if drops else math.nan
    return row


def _default_baseline(task: str, methods: pd.DataFrame) -> str:
    """The method ``task``'s reference table lists first if it ran, else the first of ``methods`` alphabetically."""
    names = sorted(methods["method"].unique())
    spec = task_metric(task)
    if spec is not None and spec.table is not None:
        rows = load_reference(spec.table)
        listed = rows.loc[(rows["task"] == task) & rows["method"].notna(), "method"]
        if len(listed) and listed.iloc[0] in names:
            return listed.iloc[0]
    return names[0]


def _baselines(methods: pd.DataFrame, baseline: str) -> tuple[str, dict[str, int], list[str]]:
    """The baseline's name, its group (row index) per preset and notes on presets without or with several."""
    names = sorted(methods["method"].unique())
    if baseline not in names and baseline not in set(methods["label"]):
        raise UserError(unknown_name_message("baseline method", baseline, names))
    chosen, notes = {}, []
    for preset, rows in methods.groupby("preset", sort=True):
        found = rows[(rows["label"] == baseline) | (rows["method"] == baseline)].sort_values("label")
        if found.empty:
            notes.append(f"preset {preset}: no {baseline} runs, so its groups are not compared")
            continue
        chosen[preset] = found.index[0]
        if len(found) > 1:
            notes.append(
                f"preset {preset}: baseline {found['label'].iloc[0]} (of {', '.join(found['label'])}); "
                "pass its label as --baseline for another"
            )
    return baseline, chosen, notes


def _pairs(methods: pd.DataFrame, chosen: dict, values: dict, direction: str) -> pd.DataFrame:
    rows = []
    for i, row in methods[~methods["is_baseline"]].iterrows():
        if row["preset"] not in chosen:
            continue
        b = chosen[row["preset"]]
        a_values, b_values = list(values[i].values()), list(values[b].values())
        low, high = bootstrap_ci(a_values, b_values)
        n_a, n_b = len(a_values), len(b_values)
        pooled = (
            math.nan
            if min(n_a, n_b) < 2
            else math.sqrt(((n_a - 1) * row["std"] ** 2 + (n_b - 1) * methods.loc[b, "std"] ** 2) / (n_a + n_b - 2))
        )
        delta = row["mean"] - methods.loc[b, "mean"]
        wins, ties, losses = win_tie_loss(values[i], values[b], direction)
        rows.append(
            {
                "index": i,
                "label": row["label"],
                "preset": row["preset"],
                "baseline": methods.loc[b, "label"],
                "delta": delta,
                "ci_low": low,
                "ci_high": high,
                "p": welch_p(a_values, b_values),
                "wins": wins,
                "ties": ties,
                "losses": losses,
                "seeds_needed": seeds_needed(delta, pooled) if min(n_a, n_b) >= 2 else None,
            }
        )
    columns = [
        "index",
        "label",
        "preset",
        "baseline",
        "delta",
        "ci_low",
        "ci_high",
        "p",
        "wins",
        "ties",
        "losses",
        "seeds_needed",
    ]
    pairs = pd.DataFrame(rows, columns=columns).set_index("index")
    pairs.index.name = None
    pairs["p_holm"] = holm(pairs["p"].to_numpy(float))
    pairs["seeds_needed"] = pd.array(pairs["seeds_needed"], dtype="Int64")
    better = (pairs["delta"] < 0) if direction == "min" else (pairs["delta"] > 0)
    resolved = pairs["p_holm"] < ALPHA
    pairs["verdict"] = np.where(resolved & better, "better", np.where(resolved, "worse", "not resolved"))
    return pairs


def _explain(methods: pd.DataFrame, pairs: pd.DataFrame, label: str, direction: str, chosen: dict) -> list[str]:
    way = "lower" if direction == "min" else "higher"
    k = int(pairs["p"].notna().sum())
    notes = [
        f"Δ: the row's mean {label} minus its preset's baseline's ({way} is better); 95% CI: percentile "
        f"bootstrap over seeds, each group resampled independently ({RESAMPLES:,} resamples, seed {SEED})",
        f"p (Welch): two-sided Welch t-test; p (Holm): Holm's step-down adjustment over the "
        f"{k} pair{'' if k == 1 else 's'} with a p-value; better/worse: adjusted p < {ALPHA}; "
        "not resolved: these seeds cannot tell the difference from noise (not that the methods are equal)",
        f"W/T/L: wins, ties (within {TIE:g}) and losses against the baseline on the seeds both ran; seeds "
        f"needed: per method, for a two-sided t-test at alpha {ALPHA} to detect the observed Δ at the pooled "
        f"std with power {POWER} (noncentral t), as uncertain as that Δ and std",
    ]
    compared = methods.loc[sorted(set(pairs.index) | {chosen[p] for p in pairs["preset"]}), "n"]
    few = int(compared[compared >= 2].min()) if (compared >= 2).any() else FEW_SEEDS  # one seed: its own note
    if few < FEW_SEEDS:
        narrow = "from n = 3 a nominal 95% interval covers the true Δ far less often; read it with the p-value"
        notes.append(f"few seeds (as few as {few}): the percentile bootstrap interval is too narrow ({narrow})")
    single = methods.loc[methods["n"] < 2, "label"].tolist()
    if single:
        notes.append(f"{', '.join(single)}: one seed, and a single seed gives no uncertainty (no std, CI or p)")
    return notes


# ---- output ----------------------------------------------------------------------------------


def _p(value: float) -> str:
    return "-" if math.isnan(value) else "<0.001" if value < 0.001 else f"{value:.3f}"


def _table(c: Comparison, fmt: str) -> pd.DataFrame:
    """The comparison as one table: a row per group, the pair columns blank on the baselines."""
    pairs = c.pairs.merge(c.methods[["label", "preset"]].reset_index(), on=["label", "preset"]).set_index("index")
    pairs = pairs.reindex(c.methods.index)
    table = {
        "Method": c.methods["label"],
        "Preset": c.methods["preset"],
        c.label: c.methods["mean"],
        c.label + STD: c.methods["std"],
        "Seeds": c.methods["n"],
        COST: c.methods["cost_h"],
        COST + STD: c.methods["cost_h_std"],
    }
    for column, label in c.ground_truth:  # e.g. NAS-Bench-201's test accuracies of the groups' cells
        table |= {label: c.methods[column], label + STD: c.methods[column + STD]}
    table["Δ"] = pairs["delta"]
    if fmt == "csv":
        table |= {
            "CI low": pairs["ci_low"],
            "CI high": pairs["ci_high"],
            "p (Welch)": pairs["p"],
            "p (Holm)": pairs["p_holm"],
            "Wins": pairs["wins"].astype("Int64"),
            "Ties": pairs["ties"].astype("Int64"),
            "Losses": pairs["losses"].astype("Int64"),
        }
    else:
        table |= {
            "95% CI": [
                "-" if math.isnan(lo) else f"[{lo:+.2f}, {hi:+.2f}]"
                for lo, hi in zip(pairs["ci_low"], pairs["ci_high"], strict=True)
            ],
            "p (Welch)": [_p(p) for p in pairs["p"]],
            "p (Holm)": [_p(p) for p in pairs["p_holm"]],
            "W/T/L": [
                "-" if pd.isna(w) else f"{int(w)}/{int(t)}/{int(lo)}"
                for w, t, lo in zip(pairs["wins"], pairs["ties"], pairs["losses"], strict=True)
            ],
        }
    verdicts = pairs["verdict"].where(~c.methods["is_baseline"], "baseline").fillna("-")
    table |= {"Seeds needed": pairs["seeds_needed"].astype("Int64"), "Verdict": verdicts}
    out = pd.DataFrame(table).reset_index(drop=True)
    out.attrs["notes"] = c.notes
    return out


def _agreement_table(c: Comparison) -> pd.DataFrame:
    a = c.agreement
    out = pd.DataFrame(
        {
            "Method": a["label"],
            "Preset": a["preset"],
            "Genotypes": a["genotypes"],
            "Distinct": a["distinct"],
            "Jaccard (seed pairs)": a["jaccard"],
            "Jaccard (random cells)": a["random_jaccard"],
        }
    )
    out.attrs["notes"] = [
        "Jaccard: entries shared / entries of either, of two seeds' derived (cell type, input, node, op) sets, mean "
        "over pairs of "
        f"seeds; random cells: the same for random cells of the same sizes ({DRAWS:,} draws, seed {SEED}; in a "
        "space without a fixed in-degree the draw is uniform over (input, node, op), an approximation). Above "
        "random: the seeds find similar cells"
    ]
    return out


def _signal_table(c: Comparison) -> pd.DataFrame:
    g = c.signal
    drop = "Entropy drop (% log K)"
    out = pd.DataFrame(
        {
            "Method": g["label"],
            "Preset": g["preset"],
            "Search (min)": g["search_min"],
            "Entropy start (/log K)": g["entropy_start_frac"],
            "Entropy end (/log K)": g["entropy_end_frac"],
            drop: 100 * g["entropy_drop_frac"],
            drop + STD: 100 * g["entropy_drop_std"],
            "Top-1 margin (end)": g["margin_end"],
            "Derived choices changed (%)": 100 * g["derived_changed"],
            "Runs": g["signals"],
        }
    )
    out.attrs["notes"] = [
        "the mean over seeds of each run's search.signal (egsbench.methods.signal): the learned op distribution's mean "
        "edge entropy before the first and after the last step, as a fraction of log K, its drop, the mean gap between "
        "each edge's two most probable ops, and the share of the derived (input, node, op) choices the method's rule "
        "would not take from the initial distribution; Runs: seeds with a signal (none for random search and fixed "
        "cells, which learn no distribution)",
        *signal_notes(g.assign(method=g["label"], variant="{}")),  # a group is still when any of its runs is
    ]
    return out


def render_comparison(comparison: Comparison, fmt: str = "md") -> str:
    """The comparison table and the genotype-agreement table, each under a title, notes under each.

    Args:
        comparison: from :func:`compare_runs`.
        fmt: ``md``, ``csv`` (numbers in their own columns, titles and notes as ``#`` lines), ``latex`` or ``html``.
    """
    if fmt not in FORMATS:
        raise UnknownNameError(unknown_name_message("table format", fmt, list(FORMATS)))
    c = comparison
    sections = [
        (f"{c.task}: {c.label} against {c.baseline}", _table(c, fmt)),
        (f"{c.task}: search signal", _signal_table(c)),
        (f"{c.task}: genotype agreement across seeds", _agreement_table(c)),
    ]
    parts = []
    for title, table in sections:
        notes = _notes(table.attrs["notes"], fmt) if fmt == "csv" else ""  # render adds them in the others
        parts.append(_TITLES[fmt](title) + render(table, fmt) + notes)
    return "\n".join(parts)


def plot_comparison(comparison: Comparison, path: str | Path) -> Path:
    """The metric against search cost (mean ± std over seeds on both axes), a labelled point per group, and
    each preset's Pareto front (lower cost, better metric) as a step line through its highlighted points.

    The x axis is logarithmic when the costs span more than 10x. Written atomically as PNG.
    """
    from .plots import _save, subplots

    m = comparison.methods
    presets = list(dict.fromkeys(m["preset"]))
    fig, ax = subplots(figsize=(7, 4.8), dpi=110)
    for k, preset in enumerate(presets):
        rows = m[(m["preset"] == preset) & m["cost_h"].notna() & m["mean"].notna()]
        color = f"C{k}"
        ax.errorbar(
            rows["cost_h"],
            rows["mean"],
            xerr=rows["cost_h_std"].fillna(0),
            yerr=rows["std"].fillna(0),
            fmt="o",
            color=color,
            ms=5,
            capsize=3,
            label=preset if len(presets) > 1 else None,
        )
        front = rows[pareto_front(rows["cost_h"], rows["mean"], comparison.direction)].sort_values("cost_h")
        ax.step(front["cost_h"], front["mean"], where="post", color=color, ls="--", lw=1, alpha=0.8)
        ax.scatter(front["cost_h"], front["mean"], s=120, facecolors="none", edgecolors=color, lw=1.5, zorder=3)
        for _, row in rows.iterrows():
            ax.annotate(
                row["label"], (row["cost_h"], row["mean"]), xytext=(5, 5), textcoords="offset points", fontsize=7
            )
    costs = m["cost_h"].dropna()
    if len(costs) and costs.min() > 0 and costs.max() / costs.min() > 10:
        ax.set_xscale("log")
    way = "lower" if comparison.direction == "min" else "higher"
    ax.set(
        xlabel="search cost (device-hours)",
        ylabel=f"{comparison.label} ({way} is better)",
        title=f"{comparison.task}: {comparison.label} against search cost (circled: Pareto front)",
    )
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    if len(presets) > 1:
        ax.legend(fontsize=7, title="preset", title_fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(fig, path)
    return path

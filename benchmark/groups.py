"""Run records as a frame and per-group statistics: the rows every table and ``egsbench compare`` are made of.

A group is one method variant (its class's ``variant_keys``) of one task, preset, config and run setup;
``runs_frame`` is the one flattening of records, ``summarize`` the mean ± std over seeds (a seed recorded twice
counts once, the newer).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from ..methods.signal import MOVED_FRAC
from .records import Record
from .references import searched_on, variant_of

__all__ = [
    "GROUND_TRUTH",
    "GROUP",
    "SETUP",
    "STD",
    "latest_per_seed",
    "runs_frame",
    "setup_label",
    "signal_notes",
    "summarize",
]

SETUP = ["world_size", "mixed_precision", "deterministic"]
# variant: the JSON of variant_of(...), e.g. '{"M": 7}'; config_hash: the record's, of the config without the seed
GROUP = ["method", "task", "preset", "variant", "config_hash", *SETUP]
STD = " std"  # a column "X std" holds the std of column "X"; md/latex/html print them as "X ± std"
GROUND_TRUTH = "gt_"  # the prefix of a run's ground-truth columns: record.ground_truth.metrics (Task.ground_truth)
PRESET_ORDER = ("paper", "proxy", "smoke")  # runs under their paper row: nearest the paper's setting first
SEARCHED_ON = "searched_on"  # in a group's variant: the task a transfer run's cell was searched on


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
    truth = (record.get("ground_truth") or {}).get("metrics") or {}  # a tabular benchmark's numbers (nb201)
    return {
        **((record.get("extras") or {}).get("valid") or {}),  # the last validation numbers (e.g. valid_ppl)
        **(record.get("metrics") or {}),
        **{f"{GROUND_TRUTH}{name}": value for name, value in truth.items()},
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
    aggregates = {
        "mean": (metric, "mean"),
        "std": (metric, "std"),
        "seeds": (metric, "count"),
        "params_m": ("params_m", "mean"),
        "search_gpu_days": ("search_gpu_days", "mean"),
        "entropy_drop": ("entropy_drop", "mean"),
        "entropy_drop_min": ("entropy_drop", "min"),
    }
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
    names = dict.fromkeys(
        f"{_label(m, v)} {p}" for m, v, p in zip(still["method"], still["variant"], still["preset"], strict=True)
    )
    which = "" if len(still) == len(measured) else f" ({', '.join(names)})"
    return [
        f"the architecture distributions did not move{which}: these rows compare cells drawn at random "
        f"(the mean edge entropy fell by less than {MOVED_FRAC:.0%} of log K; the search signal is that drop "
        "in % of log K)"
    ]


def _label(method: str, variant: str) -> str:
    """``egs (M=4)``; a transfer run's group says where its cell was searched: ``egs (M=4; ptb search)``."""
    values, source = _split_variant(variant)
    text = ", ".join(f"{k}={v}" for k, v in values.items())
    text += f"; {source} search" if source else ""
    return f"{method} ({text.removeprefix('; ')})" if text else method


def _setups(groups: pd.DataFrame) -> list[str]:
    return [setup_label(*values) for values in zip(*(groups[c] for c in SETUP), strict=True)]

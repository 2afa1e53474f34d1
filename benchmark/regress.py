"""The regression gate: reproduced numbers against reported and golden ones, under explicit tolerances.

Two comparisons, both driven by ``results/tolerances.yaml``:

(a) ``reported``: every ``paper``-preset record against the paper's number for its method
    and config (``results/references/``), with tolerances in percentage points;
(b) ``golden``: every committed golden record (``results/golden/*.json``, ``smoke`` preset)
    against the fresh record of the same method, task, preset, seed and config hash.
    Tolerances come from the measured run-to-run spread (``egsbench regress --calibrate``
    writes them), never from guesses. A golden with no fresh run, or whose config changed,
    is a failure too: refresh it deliberately with ``--update-golden``.

``egsbench regress --runs DIR`` prints a table of every check and exits 1 when any fails.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass
from importlib.resources import files
from pathlib import Path

import yaml

from ..tasks.spaces import ConfigError

__all__ = [
    "Check",
    "calibrate",
    "compare_golden",
    "compare_reported",
    "load_tolerances",
    "render_checks",
    "write_tolerances",
]

RESULTS = Path(str(files("egsbench.results")))
GOLDEN_DIR = RESULTS / "golden"
TOLERANCES = RESULTS / "tolerances.yaml"


@dataclass
class Check:
    kind: str  # reported | golden
    run: str  # method/task/preset/seed
    metric: str
    expected: float | str | None
    actual: float | str | None
    tolerance: float | str | None
    ok: bool
    note: str = ""

    @property
    def delta(self) -> float | None:
        if isinstance(self.expected, (int, float)) and isinstance(self.actual, (int, float)):
            return self.actual - self.expected
        return None


def load_tolerances(path: str | Path = TOLERANCES) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"tolerance file {path} not found; create it or run egsbench regress --calibrate")
    data = yaml.safe_load(path.read_text()) or {}
    for section in ("reported", "golden"):
        if section not in data:
            raise ConfigError(f"{path} needs a {section!r} section")
    return data


def _run_key(record: dict) -> tuple:
    return record["method"], record["task"], record["preset"], record["seed"]


def _label(record: dict) -> str:
    return "/".join(str(x) for x in _run_key(record))


def _within(expected: float, actual: float, tol: float) -> bool:
    return actual is not None and expected is not None and abs(actual - expected) <= tol + 1e-12


def compare_golden(records: list[dict], golden: list[dict], tolerances: dict) -> list[Check]:
    """Check each golden record against the fresh record of the same run."""
    fresh = {_run_key(r): r for r in records if r.get("status", "ok") == "ok"}
    tol = tolerances["golden"]
    checks = []
    for gold in golden:
        label = _label(gold)
        rec = fresh.get(_run_key(gold))
        if rec is None:
            checks.append(Check("golden", label, "record", "present", "missing", None, False, "no fresh run"))
            continue
        if rec["config_hash"] != gold["config_hash"]:
            checks.append(Check("golden", label, "config_hash", gold["config_hash"], rec["config_hash"], None, False,
                                "config changed: refresh with --update-golden"))  # fmt: skip
            continue
        method_tol = {**tol.get("default", {}), **tol.get(gold["method"], {})}
        method_tol.pop("seeds", None)
        for metric, limit in method_tol.items():
            if metric == "genotype":
                same = rec["genotype"] == gold["genotype"]
                checks.append(Check("golden", label, "genotype", "golden", "same" if same else "changed", limit,
                                    same or limit != "exact"))  # fmt: skip
                continue
            expected, actual = gold["metrics"].get(metric), rec["metrics"].get(metric)
            checks.append(Check("golden", label, metric, expected, actual, float(limit),
                                _within(expected, actual, float(limit))))  # fmt: skip
    return checks


def compare_reported(records: list[dict], tolerances: dict) -> list[Check]:
    """Check ``paper``-preset records (mean over seeds) against the paper's numbers.

    Each task is compared with its main table (``tables.TASK_METRICS``: Table 1 for CIFAR-10),
    so a run is never held to two rows at once (e.g. EGS M=4 in Tables 1 and 5).
    """
    from .references import references_for
    from .tables import TASK_METRICS

    tol = tolerances["reported"]
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        if r.get("preset") == "paper" and r.get("status", "ok") == "ok" and r["task"] in TASK_METRICS:
            method_cfg = json.dumps((r.get("config") or {}).get("method", {}), sort_keys=True)
            groups.setdefault((r["method"], r["task"], method_cfg), []).append(r)
    checks = []
    for (method, task, method_cfg), runs in groups.items():
        spec = TASK_METRICS[task]
        refs = references_for(method, task, "paper", json.loads(method_cfg), tables=[spec.table])
        for _, ref in refs.iterrows():
            for metric, column in ((spec.record_key, spec.reported), ("params_m", "params_m")):
                if metric not in tol or column not in ref or ref[column] != ref[column]:
                    continue
                actual = statistics.mean(r["metrics"][metric] for r in runs)
                expected, limit = float(ref[column]), float(tol[metric])
                checks.append(Check("reported", f"{method}/{task}/paper/n={len(runs)}", metric, expected, actual, limit,
                                    _within(expected, actual, limit), str(ref.get("architecture", ""))))  # fmt: skip
    return checks


def render_checks(checks: list[Check]) -> str:
    import pandas as pd

    if not checks:
        return "no checks ran"
    rows = []
    for c in checks:
        row = asdict(c)
        row["delta"] = c.delta
        row["status"] = "ok" if c.ok else "REGRESSION"
        rows.append(row)
    frame = pd.DataFrame(rows)[["status", "kind", "run", "metric", "expected", "actual", "delta", "tolerance", "note"]]
    return frame.to_string(index=False, float_format=lambda v: f"{v:.4g}")


GOLDEN_METRICS = ("test_accuracy", "test_loss", "params_m", "macs_m", "search_val_score")


def calibrate(records: list[dict], metrics: tuple[str, ...] = GOLDEN_METRICS, k: float = 3.0) -> dict:
    """Golden tolerances from measured spread: ``k`` sample standard deviations over the seeds of each method.

    The seed-to-seed spread of a ``smoke`` run bounds what randomness alone (data order,
    initialisation, sampling) does to a number; a change that moves a golden number by more
    than ``k`` of those is a change in behaviour.
    """
    by_method: dict[str, list[dict]] = {}
    for r in records:
        if r.get("preset") == "smoke" and r.get("status", "ok") == "ok":
            by_method.setdefault(r["method"], []).append(r)
    out: dict[str, dict] = {}
    for method, runs in sorted(by_method.items()):
        if len(runs) < 3:
            raise ConfigError(f"calibrating {method} needs at least 3 seeds of its smoke run, found {len(runs)}")
        out[method] = {"seeds": len(runs)}
        for metric in metrics:
            values = [r["metrics"][metric] for r in runs if r["metrics"].get(metric) is not None]
            if len(values) == len(runs):
                spread = statistics.stdev(values)
                out[method][metric] = float(f"{k * spread:.4g}") if math.isfinite(spread) else 0.0
    return out


def write_tolerances(golden: dict, path: str | Path = TOLERANCES, reported: dict | None = None) -> Path:
    """Write the tolerance file: the ``reported`` section kept (or given), ``golden`` from :func:`calibrate`."""
    path = Path(path)
    if reported is None:
        reported = load_tolerances(path)["reported"] if path.is_file() else {"test_error": 0.27}
    header = (
        "# Tolerances of `egsbench regress`.\n"
        "# reported: |reproduced mean - paper| per metric, in the metric's unit. test_error 0.27 percentage points\n"
        "#   = 3 x 0.09, the std of 10 evaluations of one cell measured by the DARTS authors (quark0/darts README).\n"
        "# golden: per method, 3 x the sample std over the seeds of its smoke run (the count is under `seeds`),\n"
        "#   written by `egsbench regress --calibrate --runs DIR`. `genotype: report` shows, never fails, a changed\n"
        "#   genotype; `exact` fails on one.\n"
    )
    data = {"reported": reported, "golden": {"default": {"genotype": "report"}, **golden}}
    from .records import atomic_write_text

    atomic_write_text(path, header + yaml.safe_dump(data, sort_keys=False))
    return path

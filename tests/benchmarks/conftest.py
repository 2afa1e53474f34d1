"""pytest-benchmark cases: opt-in, timed with ``benchmark.pedantic``, with each case's ratio to its group's baseline.

They are skipped unless asked for, so a bare ``pytest`` neither spends minutes timing nor needs the plug-in::

    pytest tests/benchmarks --benchmark-only --benchmark-autosave   # time, save .benchmarks/<machine>/NNNN_*.json
    pytest tests/benchmarks --benchmark-only --benchmark-compare    # time again, compare with the last saved run
    EGSBENCH_BENCH=1 pytest tests/benchmarks                        # same as --benchmark-only for these files
    tox -e bench                                                    # the first line

Sizes and rounds are small by default; ``EGSBENCH_BENCH_SIZE=C,cells,batch`` and ``EGSBENCH_BENCH_ROUNDS=N``
change them. Cases run one after another, so their ratios carry more machine noise than the interleaved
scripts' (``python -m egsbench.benchmark.bench_search_step``); the JSON is for comparing commits.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

BENCH_DIR = Path(__file__).resolve().parent
ENV = "EGSBENCH_BENCH"


def _sizes() -> dict[str, int]:
    channels, layers, batch = (int(v) for v in os.environ.get("EGSBENCH_BENCH_SIZE", "8,5,16").split(","))
    return {"channels": channels, "layers": layers, "batch": batch}


SIZES = _sizes()  # small: a CPU times every case in about a minute
ROUNDS = int(os.environ.get("EGSBENCH_BENCH_ROUNDS", "5"))
_MEDIANS = pytest.StashKey[dict[str, dict[str, tuple[float, float | None]]]]()


def skip_reason(config: pytest.Config) -> str | None:
    """Why the cases in this folder are skipped in this session, or ``None`` when they run.

    Reads the plug-in's ``--benchmark-only`` only when the plug-in is loaded, so a bare ``pytest``
    (or ``-p no:benchmark``, or no pytest-benchmark at all) never meets an unknown option.
    """
    if not config.pluginmanager.hasplugin("benchmark"):
        return "pytest-benchmark is not installed or was disabled (pip install 'egs-bench[test]')"
    if config.getoption("benchmark_only", default=False) or os.environ.get(ENV, "") not in ("", "0"):
        return None
    return f"benchmarks run with --benchmark-only or {ENV}=1 (tox -e bench)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = skip_reason(config)
    if reason is None:
        return
    for item in items:
        if BENCH_DIR in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def bench_sizes() -> dict[str, int]:
    """``channels``, ``layers`` and ``batch`` of the timed supernets."""
    return dict(SIZES)


@pytest.fixture
def timed(benchmark, request: pytest.FixtureRequest):
    """``timed(run, group=, name=, baseline=, label=)``: time ``run``, record its ratio to the group's ``baseline``.

    The baseline case must run first in its group (parametrize it first); a case timed without it
    (e.g. under ``-k``) gets no ratio. The ratio goes into the saved JSON as ``extra_info["ratio_to_<label>"]``
    (``label`` defaults to the baseline's name), beside the sizes and thread count.
    """

    def measure(run, *, group: str, name: str, baseline: str, label: str | None = None) -> float | None:
        benchmark.group = group
        benchmark.extra_info.update(SIZES | {"threads": torch.get_num_threads(), "variant": name})
        benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1, iterations=1)
        if benchmark.stats is None:  # --benchmark-disable: ran once, untimed
            return None
        median = benchmark.stats.stats.median
        medians = request.config.stash.setdefault(_MEDIANS, {}).setdefault(group, {})
        if name == baseline:
            ratio = 1.0
        else:
            ratio = median / medians[baseline][0] if baseline in medians else None
        if ratio is not None:
            benchmark.extra_info[f"ratio_to_{label or baseline}"] = ratio
        medians[name] = (median, ratio)
        return median

    return measure


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    groups = config.stash.get(_MEDIANS, {})
    if not groups:
        return
    terminalreporter.section("EGS-Bench: median step time and ratio to each group's baseline")
    sizes = ", ".join(f"{k}={v}" for k, v in SIZES.items())
    terminalreporter.write_line(f"{sizes}, {ROUNDS} rounds each (one case after another, not interleaved)")
    for group, medians in groups.items():
        terminalreporter.write_line(f"{group}:")
        for name, (median, ratio) in medians.items():
            shown = f"{ratio:7.3f}" if ratio is not None else "    n/a"
            terminalreporter.write_line(f"  {name:14s} median {median * 1e3:10.2f} ms   ratio {shown}")

"""``egsbench compare`` (issue 19, item 3): the statistics against scipy and hand-computed cases, the
comparison of synthetic records, the command line and the report's section. No training."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from egsbench.benchmark.cli import main
from egsbench.benchmark.compare import (
    bootstrap_ci,
    compare_runs,
    genotype_set,
    holm,
    jaccard,
    pareto_front,
    plot_comparison,
    random_jaccard,
    render_comparison,
    seeds_needed,
    welch_p,
    win_tie_loss,
)
from egsbench.benchmark.records import write_record
from egsbench.benchmark.report import write_report
from egsbench.tasks.spaces import DARTS_V1, DARTS_V2, SPACES, UserError
from tests.harness.test_records import make_record  # a small schema-valid record

METHOD_CONFIGS = {"darts": {"order": 1}, "egs": {"M": 7}, "gdas": {}, "snas": {}}


def run(method, seed, error, hours=1.0, genotype=DARTS_V1, preset="smoke", **changes):
    """A record of a cifar10 run in the ``darts`` space, cut down to what ``compare_runs`` reads."""
    config = METHOD_CONFIGS[method]
    return {
        "method": method,
        "task": "cifar10",
        "space": "darts",
        "preset": preset,
        "seed": seed,
        "config_hash": f"{method}-{preset}",
        "config": {"method": {"name": method, **config}, "seed": seed},
        "metrics": {"test_error": error, "test_accuracy": 100 - error, "params_m": 1.0},
        "search": {"wall_time_s": hours * 3600, "device_hours": hours},
        "genotype": genotype.to_dict(),
    } | changes


@pytest.fixture
def records():
    """darts (baseline, 5 seeds), egs clearly better, gdas clearly worse (3 seeds), snas on one seed."""
    return [
        *(run("darts", s, e, hours=10.0) for s, e in enumerate([3.0, 3.2, 2.9, 3.1, 3.3])),
        *(run("egs", s, e, hours=2.0) for s, e in enumerate([2.6, 2.7, 2.5, 2.8, 2.7])),
        *(run("gdas", s, e, hours=0.5, genotype=DARTS_V2) for s, e in enumerate([3.6, 3.8, 3.7])),
        run("snas", 0, 3.1, hours=100.0),
        run("egs", 9, 50.0, status="failed"),  # a failed run never counts
    ]


# ---- statistics ------------------------------------------------------------------------------


def test_welch_p_is_scipys_and_a_hand_checked_case():
    a, b = [2.71, 2.83, 2.64, 2.95, 2.77], [3.02, 3.11, 2.98, 3.40]
    assert welch_p(a, b) == stats.ttest_ind(a, b, equal_var=False).pvalue
    # means 2 and 5, variances 1 and 1: t = -3 / sqrt(2/3), Welch's df = (2/3)^2 / (2 (1/3)^2 / 2) = 4
    assert welch_p([1, 2, 3], [4, 5, 6]) == pytest.approx(2 * stats.t.sf(3 / math.sqrt(2 / 3), 4), rel=1e-12)
    assert math.isnan(welch_p([1.0], [2.0, 3.0])) and math.isnan(welch_p([1.0, 1.0], [2.0, 2.0]))


@pytest.mark.parametrize(
    "pvalues, adjusted",
    [
        ([0.01, 0.04, 0.03], [0.03, 0.06, 0.06]),  # 3 x 0.01; 2 x 0.03; max(0.06, 1 x 0.04)
        ([0.5, 0.6], [1.0, 1.0]),  # capped at 1
        ([0.2, math.nan, 0.01], [0.2, math.nan, 0.02]),  # a missing p stays missing and does not count in m
        ([], []),
    ],
)
def test_holm_step_down(pvalues, adjusted):
    np.testing.assert_allclose(holm(pvalues), adjusted, rtol=1e-12)


def test_bootstrap_interval_covers_the_true_difference_at_about_the_nominal_rate():
    rng = np.random.default_rng(19)
    hits = 0
    for _ in range(200):
        low, high = bootstrap_ci(rng.normal(1.5, 1.0, 10), rng.normal(1.0, 1.0, 10))
        hits += low <= 0.5 <= high
    assert 0.88 <= hits / 200 <= 0.99  # a percentile interval from 10 seeds runs a little under 95%


def test_bootstrap_is_reproducible_and_needs_two_seeds_per_group():
    a, b = [2.6, 2.7, 2.5], [3.0, 3.2, 2.9]
    assert bootstrap_ci(a, b) == bootstrap_ci(a, b)
    low, high = bootstrap_ci(a, b)
    assert low < np.mean(a) - np.mean(b) < high < 0
    assert all(math.isnan(x) for x in bootstrap_ci([2.6], b))


def test_wins_ties_losses_count_matched_seeds_only():
    values = {0: 1.0, 1: 2.0, 2: 3.0, 3: 0.5, 5: 0.0}  # seed 5: the baseline did not run it
    baseline = {0: 2.0, 1: 2.0 + 1e-12, 2: 1.0, 3: 1.0, 7: 9.0}  # seed 1: a tie within 1e-9
    assert win_tie_loss(values, baseline, "min") == (2, 1, 1)
    assert win_tie_loss(values, baseline, "max") == (1, 1, 2)
    assert win_tie_loss({0: 1.0}, {1: 1.0}, "min") == (0, 0, 0)


def _power(n, effect, alpha=0.05):
    """The two-sided pooled t-test's power, written out again from scipy's noncentral t."""
    df, ncp = 2 * n - 2, effect * math.sqrt(n / 2)
    critical = stats.t.isf(alpha / 2, df)
    return stats.nct.sf(critical, df, ncp) + stats.nct.cdf(-critical, df, ncp)


@pytest.mark.parametrize("delta, sd", [(0.5, 1.0), (-0.3, 0.2), (1.0, 1.0), (0.05, 0.4), (3.0, 1.0)])
def test_seeds_needed_is_the_fewest_with_power_0_8(delta, sd):
    n = seeds_needed(delta, sd)
    assert _power(n, abs(delta) / sd) >= 0.8
    assert n == 2 or _power(n - 1, abs(delta) / sd) < 0.8


def test_seeds_needed_known_values_and_unresolvable_cases():
    assert [seeds_needed(d, 1.0) for d in (0.5, 0.8, 1.0)] == [64, 26, 17]  # Cohen's / G*Power's table
    assert seeds_needed(0.0, 1.0) is None and seeds_needed(0.5, 0.0) is None and seeds_needed(math.nan, 1.0) is None


def test_pareto_front_respects_the_metric_direction():
    costs = [1.0, 2.0, 3.0, 4.0, 2.0, math.nan, 4.0]
    values = [5.0, 3.0, 3.0, 1.0, 4.0, 0.0, 1.0]  # (3, 3) and (2, 4) are dominated by (2, 3); (4, 1) is there twice
    assert pareto_front(costs, values, "min").tolist() == [True, True, False, True, False, False, True]
    assert pareto_front(costs, values, "max").tolist() == [True, False, False, False, False, False, False]


def test_jaccard_of_identical_genotypes_is_one_and_random_cells_lie_between():
    a, b = genotype_set(DARTS_V1.to_dict()), genotype_set(DARTS_V2)
    assert jaccard(a, genotype_set(DARTS_V1)) == 1.0
    assert jaccard(a, b) == len(a & b) / len(a | b) and 0 < jaccard(a, b) < 1
    for space in ("darts", "dag"):
        assert 0 < random_jaccard(SPACES.get(space), a, b) < 1
    assert random_jaccard(SPACES.get("darts"), a, b) == random_jaccard(SPACES.get("darts"), a, b)  # seeded


# ---- compare_runs ----------------------------------------------------------------------------


def test_compare_runs_per_method_and_against_the_baseline(records):
    c = compare_runs(records)
    assert (c.task, c.metric, c.direction, c.baseline) == ("cifar10", "test_error", "min", "darts")
    methods = c.methods.set_index("label")
    assert methods.index.tolist() == ["darts (order=1)", "egs (M=7)", "gdas", "snas"]  # the baseline first
    assert methods.loc["egs (M=7)", "n"] == 5  # the failed seed 9 left out
    assert methods.loc["egs (M=7)", "mean"] == pytest.approx(2.66)
    assert methods.loc["egs (M=7)", "std"] == pytest.approx(np.std([2.6, 2.7, 2.5, 2.8, 2.7], ddof=1))
    assert methods.loc["darts (order=1)", "cost_h"] == pytest.approx(10.0)
    pairs = c.pairs.set_index("label")
    assert pairs.loc["egs (M=7)", "delta"] == pytest.approx(2.66 - 3.1)
    darts = [3.0, 3.2, 2.9, 3.1, 3.3]
    p_raw = [welch_p([2.6, 2.7, 2.5, 2.8, 2.7], darts), welch_p([3.6, 3.8, 3.7], darts)]  # every seed of each
    np.testing.assert_allclose(pairs.loc[["egs (M=7)", "gdas"], "p_holm"], holm(p_raw))
    assert pairs["verdict"].tolist() == ["better", "worse", "not resolved"]
    assert pairs.loc["gdas", ["wins", "ties", "losses"]].tolist() == [0, 0, 3]  # seeds 0-2 only
    assert pd.isna(pairs.loc["snas", "p"]) and pd.isna(pairs.loc["snas", "ci_low"])
    assert pd.isna(pairs.loc["snas", "seeds_needed"])
    assert any("single seed gives no uncertainty" in n and "snas" in n for n in c.notes)
    assert any("Holm" in n and "2 pairs" in n for n in c.notes)
    agreement = c.agreement.set_index("label")
    assert agreement.loc["egs (M=7)", "jaccard"] == 1.0 and 0 < agreement.loc["egs (M=7)", "random_jaccard"] < 1
    assert agreement.loc["egs (M=7)", "distinct"] == 1 and pd.isna(agreement.loc["snas", "jaccard"])


def test_metric_aliases_direction_and_baseline_choice(records):
    assert compare_runs(records, metric="error").pairs.equals(compare_runs(records, metric="test_error").pairs)
    accuracy = compare_runs(records, metric="accuracy", baseline="egs")  # higher is better: the verdicts flip
    assert (accuracy.metric, accuracy.direction) == ("test_accuracy", "max")
    assert accuracy.pairs.set_index("label").loc["darts (order=1)", "verdict"] == "worse"
    no_darts = [r for r in records if r["method"] != "darts"]
    assert compare_runs(no_darts).baseline == "egs"  # the first method alphabetically
    assert compare_runs(records, baseline="darts (order=1)").pairs.equals(compare_runs(records).pairs)


def test_default_baseline_is_the_method_the_reference_table_lists_first(records, monkeypatch):
    import egsbench.benchmark.compare as compare

    table = compare.load_reference("cifar10")
    assert table.loc[table["method"].notna(), "method"].iloc[0] == "darts"  # why the default is darts on CIFAR-10
    snas_first = pd.concat([table[table["method"] == "snas"], table[table["method"] != "snas"]])
    monkeypatch.setattr(compare, "load_reference", lambda name: snas_first)
    assert compare_runs(records).baseline == "snas"  # read from the table, not a name in the harness


def test_a_seed_recorded_twice_counts_once(records):
    again = run("egs", 0, 9.9, hours=2.0, created="2030-01-01T00:00:00+00:00")  # newer: it replaces seed 0
    c = compare_runs([*records, again])
    egs = c.methods.set_index("label").loc["egs (M=7)"]
    assert egs["n"] == 5 and egs["mean"] == pytest.approx((9.9 + 2.7 + 2.5 + 2.8 + 2.7) / 5)
    assert any("counted once" in n for n in c.notes)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"metric": "eror"}, "unknown metric of cifar10 runs 'eror'; did you mean 'test_error'?"),
        (
            {"baseline": "dart"},
            "unknown baseline method 'dart'; did you mean 'darts'? Valid baseline methods: darts, egs, gdas, snas",
        ),
        ({"task": "ptb"}, "unknown task of the records 'ptb'"),
    ],
)
def test_bad_names_are_refused_with_the_valid_ones(records, kwargs, message):
    with pytest.raises(UserError, match="^" + message.replace("(", r"\(").replace("?", r"\?")) as err:
        compare_runs(records, **kwargs)
    assert "\n" not in str(err.value)


def test_render_and_plot(records, tmp_path):
    c = compare_runs(records)
    md = render_comparison(c, "md")
    assert "| egs (M=7) | smoke | 2.66 ± 0.11 | 5 |" in md and "better" in md and "baseline" in md
    assert "genotype agreement" in md and "Note: snas: one seed" in md
    csv = render_comparison(c, "csv")
    first = csv.split("\n\n")[0].splitlines()
    table = pd.read_csv(io.StringIO("\n".join(line for line in first if not line.startswith("#"))))
    assert table["Verdict"].tolist() == ["baseline", "better", "worse", "not resolved"]
    assert r"\begin{tabular}" in render_comparison(c, "latex")
    path = plot_comparison(c, tmp_path / "figure.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(tmp_path.glob(".*.tmp.png"))


# ---- the command line and the report ---------------------------------------------------------


def write_runs(root, methods=("darts", "egs"), seeds=3):
    """Schema-valid record.json files: ``methods`` x ``seeds``, each method a little worse than the previous."""
    for m, method in enumerate(methods):
        for seed in range(seeds):
            error = 3.0 - 0.3 * m + 0.1 * seed
            record = make_record(
                method=method,
                space="darts",
                seed=seed,
                config_hash=f"{method}-hash",
                config={"preset": "smoke", "seed": seed, "method": {"name": method, **METHOD_CONFIGS[method]}},
                metrics=make_record()["metrics"] | {"test_error": error, "test_accuracy": 100 - error},
                genotype=DARTS_V1.to_dict(),
            )
            write_record(root / f"{method}-{seed}" / "record.json", record)
    return root


def test_cli_prints_the_tables_and_writes_the_plot(tmp_path, capsys):
    runs = write_runs(tmp_path / "runs")
    assert main(["compare", "--runs", str(runs)]) == 0
    out, err = capsys.readouterr()
    assert "### cifar10: Test error (%) against darts" in out and "| egs (M=7) | smoke |" in out
    assert "genotype agreement across seeds" in out
    plot = runs / "compare_cifar10_test_error.png"
    assert plot.is_file() and f"plot: {plot}" in err
    plot.unlink()
    assert main(["compare", "--runs", str(runs), "--plot", "none", "--format", "csv", "--metric", "accuracy"]) == 0
    assert capsys.readouterr().out.startswith("# cifar10: Test accuracy (%) against darts\nMethod,Preset,")
    assert not list(runs.glob("*.png"))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--baseline", "nope"], "unknown baseline method 'nope'; Valid baseline methods: darts, egs"),
        (["--metric", "f1"], "unknown metric of cifar10 runs 'f1';"),
        (["--task", "ptb"], "unknown task of the records 'ptb'"),
    ],
)
def test_cli_bad_names_exit_2_with_one_line(tmp_path, capsys, args, message):
    runs = write_runs(tmp_path / "runs")
    assert main(["compare", "--runs", str(runs), *args]) == 2  # a traceback would fail the test here
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and err.startswith(f"error: {message}")
    assert not list(runs.glob("*.png"))


def test_report_has_a_comparison_section_for_two_methods_only(tmp_path):
    two = write_runs(tmp_path / "two")
    page = write_report(two, tmp_path / "two.html").read_text()
    assert "<h2>Comparison</h2>" in page and 'alt="compare_cifar10_test_error.png"' in page
    assert "<h3>cifar10: genotype agreement across seeds</h3>" in page
    assert not list(two.glob("*.png"))  # the figure lives in the page only
    one = write_runs(tmp_path / "one", methods=("egs",))
    assert "<h2>Comparison</h2>" not in write_report(one, tmp_path / "one.html").read_text()


def test_the_search_signal_section_averages_each_groups_runs(records):
    signal = {
        "ops": 8,
        "entropy_start": 2.08,
        "entropy_end": 1.5,
        "entropy_start_frac": 1.0,
        "margin_start": 0.0,
        "margin_end": 0.3,
        "derived_changed": 0.5,
    }
    for rec in records:
        if rec["method"] == "egs":  # drops of 20 % and 30 % of log K over the seeds
            drop = 0.2 if rec["seed"] % 2 == 0 else 0.3
            rec["search"]["signal"] = signal | {"entropy_end_frac": 1 - drop, "entropy_drop_frac": drop}
        elif rec["method"] == "gdas":  # did not move
            rec["search"]["signal"] = signal | {"entropy_end_frac": 0.999, "entropy_drop_frac": 0.001}
    c = compare_runs(records)
    rows = c.signal.set_index("label")
    # egs seeds 0..4 (the failed seed 9 left out): 0.2, 0.3, 0.2, 0.3, 0.2
    assert rows.loc["egs (M=7)", "entropy_drop_frac"] == pytest.approx(0.24)
    assert rows.loc["egs (M=7)", "signals"] == 5 and rows.loc["darts (order=1)", "signals"] == 0
    assert rows.loc["egs (M=7)", "search_min"] == pytest.approx(120.0)  # 2 h of search
    md = render_comparison(c, "md")
    assert "search signal" in md and "| egs (M=7) | smoke | 120.00 |" in md
    assert "did not move (gdas smoke)" in md  # the still group is named; darts and snas recorded no signal

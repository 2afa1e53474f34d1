from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from egsbench.benchmark.records import Record, load_records, write_json
from egsbench.benchmark.references import (
    REFERENCE_DIR,
    TABLES,
    ablation_reference,
    load_reference,
    reference_titles,
    references_for,
    row_label,
    task_metric,
    variant_of,
)
from egsbench.benchmark.tables import (
    FORMATS,
    ablation_table,
    comparison_table,
    render,
    render_tables,
    runs_frame,
)
from egsbench.methods import METHODS
from egsbench.tasks import TASKS, Metric
from egsbench.tasks.spaces import UnknownNameError, UserError
from egsbench.tasks.spaces.genotypes import GENOTYPES
from tests.harness.test_records import make_record  # a small schema-valid record


def record(
    method,
    seed,
    error,
    config,
    *,
    status=None,
    preset="paper",
    params=3.0,
    hours=24.0,
    task="cifar10",
    metrics=None,
    **setup,
):
    """A run record as ``run_experiment`` writes it, cut down to the fields the tables read.

    ``metrics`` replaces the CIFAR-10 metrics made from ``error``; ``setup`` adds world_size,
    mixed_precision or deterministic (absent: one fp32 process, as before schema 3).
    """
    rec = setup | {
        "schema_version": 1,
        "method": method,
        "task": task,
        "space": "dag",
        "preset": preset,
        "seed": seed,
        "config_hash": f"{method}-{preset}-{json.dumps(config, sort_keys=True)}",  # the config's; the seed is no part
        "metrics": (metrics or {"test_accuracy": None if error is None else 100 - error, "test_error": error})
        | {"params_m": params},
        "search": {"wall_time_s": hours * 3600, "device_hours": hours},
        "config": {"method": {"name": method, **config}, "seed": seed, "preset": preset},
    }
    if status is not None:
        rec["status"] = status
    return rec


@pytest.fixture
def records():
    """Two methods x three seeds, plus runs that must stay out of the statistics or apart from them."""
    return [
        record("egs", 0, 2.70, {"M": 7, "tau": 1.0}, params=2.8, hours=12.0),
        record("egs", 1, 2.80, {"M": 7, "tau": 1.0}, params=2.9, hours=24.0),
        record("egs", 2, 2.90, {"M": 7, "tau": 1.0}, params=3.0, hours=36.0),
        record("darts", 0, 3.00, {"order": 2}, params=3.3, hours=96.0),
        record("darts", 1, 3.10, {"order": 2}, params=3.3, hours=96.0),
        record("darts", 2, 3.50, {"order": 2}, params=3.3, hours=96.0),
        record("darts", 3, None, {"order": 2}, status="failed"),
        record("darts", 4, 99.0, {"order": 2}, status="failed"),  # a failed run's numbers never count
        record("egs", 0, 3.20, {"M": 4}),
        record("egs", 0, 50.0, {"M": 7}, preset="smoke"),
    ]


class PennTreebank:
    """A stand-in plug-in task, cut down to what the tables and the gate read: perplexity, lower is better."""

    metrics = (Metric("ppl", "min", "Test perplexity"), Metric("loss", "min", "Test loss"))
    main_metric = "ppl"
    score_key = "ppl"
    reference_table = "ptb"  # results/references/ptb.csv reports test_ppl
    ground_truth_metrics = ()  # no tabular-benchmark lookups (nb201 has them)


@pytest.fixture
def ptb_plugin(monkeypatch):
    """``PennTreebank`` registered as the task ``ptb`` for one test, as an installed plug-in would be."""
    monkeypatch.setitem(TASKS._entries, "ptb", PennTreebank)
    return PennTreebank


def ptb_record(method, seed, ppl, config, **kwargs):
    return record(method, seed, None, config, task="ptb", metrics={"test_ppl": ppl, "test_loss": 4.0}, **kwargs)


def _row(table, column, value):
    rows = table[table[column] == value]
    assert len(rows) == 1, f"{len(rows)} rows with {column}={value!r}"
    return rows.iloc[0]


def ours(table):
    """The reproduced rows of a table (the paper's own rows have Preset ``reported``)."""
    return table[table["Preset"] != "reported"]


def reported(table):
    """The paper's rows of a table."""
    return table[table["Preset"] == "reported"]


# ---- references --------------------------------------------------------------------------------


@pytest.mark.parametrize("table", sorted(TABLES))
def test_references_load_with_sources_and_valid_ties(table):
    frame = load_reference(table)
    assert len(frame) > 0 and frame["source"].notna().all()
    assert {"method", "task", "preset", "selector", "note"} <= set(frame.columns)
    tied = frame[frame["method"].notna()]
    assert len(tied) > 0
    assert (tied["preset"] == "paper").all()
    assert tied["task"].isin(["cifar10", "imagenet", "ptb", "wt2", "voc2012"]).all()
    for method, selector in zip(tied["method"], tied["selector"], strict=True):
        # every selector key is a variant key, so grouping runs by variant finds their reference row
        assert set(json.loads(selector)) <= set(METHODS.get(method).variant_keys)
    untied = frame[frame["method"].isna()]
    assert untied[["task", "preset", "selector", "genotype"]].isna().all().all()
    named = frame["genotype"].dropna()
    assert set(named) <= set(GENOTYPES.names())  # a published cell the fixed method can train
    assert frame.loc[named.index, "task"].notna().all()


def test_cifar10_table_ties_rows_to_methods():
    frame = load_reference("cifar10").set_index("architecture")
    expected = {
        "DARTS-EGS (M=7)": ("egs", {"M": 7}, 2.79),
        "DARTS-EGS (M=4)": ("egs", {"M": 4}, 3.01),
        "DARTS (1st order) + cutout": ("darts", {"order": 1}, 3.00),
        "DARTS (2nd order) + cutout": ("darts", {"order": 2}, 2.76),
        "SNAS + moderate + cutout": ("snas", {"constraint": "moderate"}, 2.85),
        "Random search baseline + cutout": ("random", {"variant": "darts_baseline"}, 3.29),
    }
    for arch, (method, selector, error) in expected.items():
        row = frame.loc[arch]
        assert (row["method"], json.loads(row["selector"]), row["test_error_pct"]) == (method, selector, error)
        assert (row["task"], row["preset"]) == ("cifar10", "paper")
    for arch in ("NASNet-A + cutout", "AmoebaNet-A", "ENAS + cutout", "DenseNet-BC"):
        assert frame.loc[arch, "method"] is None
    assert frame.loc["DARTS-EGS (M=7)", "ops"] == 7 and str(frame["ops"].dtype) == "Int64"


@pytest.mark.parametrize(
    ("method", "task", "config", "source", "table", "architecture"),
    [
        ("egs", "cifar10", {"M": 7, "tau": 1.0, "lam": 0.5}, None, "cifar10", "DARTS-EGS (M=7)"),
        ("egs", "cifar10", {"M": 4}, None, "cifar10", "DARTS-EGS (M=4)"),
        ("darts", "cifar10", {"order": 1}, None, "cifar10", "DARTS (1st order) + cutout"),
        ("snas", "cifar10", {"constraint": "aggressive"}, None, "cifar10", "SNAS + aggressive + cutout"),
        ("random", "cifar10", {"variant": "darts_baseline"}, None, "cifar10", "Random search baseline + cutout"),
        ("darts", "ptb", {"order": 2}, None, "ptb", "DARTS (second order)"),
        ("egs", "imagenet", {"M": 4}, "cifar10", "imagenet_mobile", "DARTS-EGS (M=4)"),  # a CIFAR-10 cell transferred
        ("egs", "wt2", {"M": 7}, "ptb", "wt2", "DARTS-EGS (M=7)"),  # the PTB cell on WikiText-2 (transfer_from)
        ("darts", "voc2012", {"order": 1}, "cifar10", "voc2012", "DARTS"),  # VOC names no order: {} matches any
    ],
)
def test_selectors_pick_the_right_reference_row(method, task, config, source, table, architecture):
    rows = references_for(method, task, "paper", config, tables=[table], searched_on=source)
    assert rows["architecture"].tolist() == [architecture]
    if source is not None:  # a search on the row's own task is another experiment than the paper's transfer
        assert references_for(method, task, "paper", config, tables=[table]).empty
        assert references_for(method, task, "paper", config, tables=[table], searched_on=task).empty


@pytest.mark.parametrize(
    ("genotype", "tables", "imagenet"),
    [
        ("darts_v1", {"cifar10": "DARTS (1st order) + cutout"}, []),
        ("darts_v2", {"cifar10": "DARTS (2nd order) + cutout"}, ["DARTS (searched on CIFAR-10)"]),
        ("egs_released_m4", {"cifar10": "DARTS-EGS (M=4)", "sampling_times": 4}, ["DARTS-EGS (M=4)"]),
        ("egs_released_m7", {"cifar10": "DARTS-EGS (M=7)", "sampling_times": 7}, ["DARTS-EGS (M=7)"]),
        ("snas_mild", {"cifar10": "SNAS + mild + cutout"}, ["SNAS (mild constraint)"]),
        ("pcdarts", {}, []),  # a published cell the DARTS-EGS paper's tables do not list
        ("darts_v2_rnn", {}, []),  # a recurrent cell: no CIFAR-10 or ImageNet row
    ],
)
def test_a_published_genotype_reproduces_its_rows(genotype, tables, imagenet):
    rows = references_for("fixed", "cifar10", "paper", {"name": "fixed", "genotype": genotype})
    found = {row["table"]: row["architecture"] if row["table"] == "cifar10" else row["M"] for _, row in rows.iterrows()}
    assert found == tables  # Table 1 and Table 5 rows only: the cell's Table 2 (ImageNet) row belongs to imagenet runs
    transferred = references_for("fixed", "imagenet", "paper", {"genotype": genotype})
    assert (transferred["architecture"].tolist() if len(transferred) else []) == imagenet
    assert set(transferred["table"]) <= {"imagenet_mobile"}


@pytest.mark.parametrize(
    ("task", "genotype", "architecture"),
    [
        ("ptb", "darts_v1_rnn", ["DARTS (first order)"]),
        ("ptb", "darts_v2_rnn", ["DARTS (second order)"]),
        ("wt2", "darts_v2_rnn", ["DARTS (searched on PTB)"]),  # the PTB cell transferred, as DARTS reports it
        ("wt2", "darts_v1_rnn", []),
    ],
)
def test_the_recurrent_darts_cells_reproduce_their_rows(task, genotype, architecture):
    rows = references_for("fixed", task, "paper", {"genotype": genotype}, tables=[task])
    assert (rows["architecture"].tolist() if len(rows) else []) == architecture


def test_a_saved_genotype_and_other_presets():
    assert references_for("fixed", "cifar10", "paper", {"genotype": "runs/x/genotype.json"}).empty
    assert references_for("fixed", "cifar10", "smoke", {"genotype": "darts_v2"}).empty  # numbers are the paper's
    rows = references_for("fixed", "cifar10", None, {"genotype": "darts_v2"})  # None: the row it stands for
    assert rows["architecture"].tolist() == ["DARTS (2nd order) + cutout"]


def test_selectors_that_match_nothing():
    assert references_for("random", "cifar10", "paper", {"variant": "weight_sharing"}).empty
    assert references_for("egs", "cifar10", "paper", {}).empty  # no M in the config: no row claims the run
    assert references_for("egs", "cifar10", "smoke", {"M": 7}).empty  # reported numbers are tied to paper
    assert references_for("gdas", "cifar10", "paper", {}).empty  # the paper does not report GDAS


def test_references_for_spans_tables():
    rows = references_for("egs", "cifar10", "paper", {"M": 4})
    assert rows["table"].tolist() == ["cifar10", "sampling_times"]
    assert rows["test_error_pct"].tolist() == [3.01, 3.05]  # the paper's Table 1 and Table 5 disagree


def test_unknown_table_lists_the_valid_ones():
    with pytest.raises(UnknownNameError, match="did you mean 'cifar10'.*imagenet_mobile.*sampling_times"):
        load_reference("cifar")


# ---- statistics --------------------------------------------------------------------------------


def test_comparison_table_mean_std_delta_and_seeds(records):
    table = comparison_table(records, "cifar10")
    egs = _row(table[table["Preset"] == "paper"], "Architecture", "DARTS-EGS (M=7)")
    assert egs["Method"] == "egs (M=7)"
    assert egs["Test error (%)"] == pytest.approx(2.80)
    assert egs["Test error (%) std"] == pytest.approx(0.10)  # sample std (ddof=1) over seeds
    assert egs["Reported (%)"] == 2.79 and egs["Δ"] == pytest.approx(0.01)
    assert egs["Params (M)"] == pytest.approx(2.9) and egs["Search cost (GPU days)"] == pytest.approx(1.0)
    assert (egs["Ops"], egs["Search type"], egs["Seeds"], egs["Failed"]) == (7, "gradient-based", 3, 0)

    darts = _row(ours(table), "Architecture", "DARTS (2nd order) + cutout")
    assert darts["Test error (%)"] == pytest.approx(3.20)
    assert darts["Test error (%) std"] == pytest.approx(pd.Series([3.0, 3.1, 3.5]).std())
    assert darts["Δ"] == pytest.approx(3.20 - 2.76) and darts["Search cost (GPU days)"] == pytest.approx(4.0)
    assert (darts["Seeds"], darts["Failed"]) == (3, 2)  # failed runs counted, left out of the mean

    m4 = _row(ours(table), "Architecture", "DARTS-EGS (M=4)")
    assert m4["Seeds"] == 1 and pd.isna(m4["Test error (%) std"]) and m4["Δ"] == pytest.approx(0.19)

    # another preset: its own row under the same paper row, the reported number for context, no delta
    smoke = _row(table, "Preset", "smoke")
    assert smoke["Architecture"] == "DARTS-EGS (M=7)" and smoke["Method"] == "egs (M=7)"
    assert smoke["Reported (%)"] == 2.79 and pd.isna(smoke["Δ"]) and smoke["Test error (%)"] == 50.0
    # the reproduced rows follow the paper's order: DARTS, then DARTS-EGS M=4, M=7 (paper before smoke)
    assert ours(table)["Architecture"].tolist() == [
        "DARTS (2nd order) + cutout",
        "DARTS-EGS (M=4)",
        "DARTS-EGS (M=7)",
        "DARTS-EGS (M=7)",
    ]
    assert ours(table)["Preset"].tolist() == ["paper", "paper", "paper", "smoke"]


def _assert_paper_layout(table, reference, name="architecture"):
    """The paper's rows in the reference table's order, each reproduced row right under its counterpart (same
    name) or in the block after the last paper row (a group no row stands for)."""
    label = "Architecture" if name == "architecture" else name
    assert reported(table)[label].tolist() == reference[name].tolist()
    last_paper = max(i for i, preset in enumerate(table["Preset"]) if preset == "reported")
    under = None
    for i, row in table.iterrows():
        if row["Preset"] == "reported":
            under = row[label]
        elif i < last_paper or (under is not None and row[label] == under):
            assert row[label] == under, f"row {i} ({row['Method']}) is not under its paper row"


@pytest.mark.parametrize(
    ("preset", "shows_delta"),
    [("smoke", False), ("proxy", False), ("paper", True)],
)
def test_a_reproduced_row_shows_its_preset_the_reported_value_and_a_delta_only_at_paper(preset, shows_delta):
    runs = [record("darts", s, e, {"order": 2}, preset=preset, params=0.5) for s, e in enumerate((3.0, 3.4))]
    table = comparison_table(runs, "cifar10")
    row = _row(ours(table), "Architecture", "DARTS (2nd order) + cutout")
    assert (row["Preset"], row["Method"], row["Reported (%)"]) == (preset, "darts (order=2)", 2.76)
    assert row["Test error (%)"] == pytest.approx(3.2)
    if shows_delta:
        assert row["Δ"] == pytest.approx(3.2 - 2.76)
    else:
        assert pd.isna(row["Δ"])
    line = next(line for line in render(table, "md").splitlines() if f"| {preset} |" in line)
    assert f"| {preset} | x1 fp32 | 3.20 ± 0.28 | 2.76 | {'+0.44' if shows_delta else '-'} |" in line
    _assert_paper_layout(table, load_reference("cifar10"))


def test_the_paper_rows_keep_their_numbers_and_order():
    reference = load_reference("cifar10").set_index("architecture")
    table = comparison_table([record("gdas", 0, 3.1, {}), record("egs", 0, 2.9, {"M": 7})], "cifar10")
    _assert_paper_layout(table, reference.reset_index())
    nasnet = _row(reported(table), "Architecture", "NASNet-A + cutout")
    assert (
        nasnet["Test error (%)"],
        nasnet["Params (M)"],
        nasnet["Search cost (GPU days)"],
        nasnet["Ops"],
        nasnet["Search type"],
    ) == (2.65, 3.3, 2000, 13, "RL")
    assert pd.isna(nasnet["Reported (%)"]) and pd.isna(nasnet["Seeds"]) and nasnet["Method"] is None
    assert table["Method"].tolist()[-1] == "gdas"  # the paper has no GDAS row: after the paper's rows
    assert table["Preset"].tolist()[-1] == "paper" and table["Architecture"].tolist()[-1] == "gdas"


@pytest.mark.parametrize(
    ("genotype", "architecture", "params"),
    [
        ("darts_v2", "DARTS (2nd order) + cutout", 3.3),
        ("darts_v1", "DARTS (1st order) + cutout", 3.3),
        ("egs_released_m7", "DARTS-EGS (M=7)", 2.9),
        ("egs_released_m4", "DARTS-EGS (M=4)", 2.6),
    ],
)
def test_a_fixed_published_cell_sits_beside_its_paper_row(genotype, architecture, params):
    runs = [record("fixed", s, e, {"genotype": genotype}, params=3.0, hours=0.0) for s, e in enumerate((2.8, 3.0))]
    runs += [record("darts", 0, 3.1, {"order": 2}), record("fixed", 0, 3.5, {"genotype": "runs/x/genotype.json"})]
    table = comparison_table(runs, "cifar10")
    _assert_paper_layout(table, load_reference("cifar10"))
    position = next(i for i, m in enumerate(table["Method"]) if m == f"fixed (genotype={genotype})")
    paper = table.iloc[position - 1 if genotype != "darts_v2" else position - 2]  # darts (order=2) sorts first
    assert (paper["Preset"], paper["Architecture"], paper["Params (M)"]) == ("reported", architecture, params)
    fixed = table.iloc[position]
    assert fixed["Architecture"] == architecture and fixed["Search cost (GPU days)"] == 0
    assert fixed["Δ"] == pytest.approx(2.9 - paper["Test error (%)"]) and fixed["Params (M)"] == 3.0
    saved = _row(table, "Method", "fixed (genotype=runs/x/genotype.json)")  # not a published cell: no paper row
    assert pd.isna(saved["Reported (%)"]) and saved.name == len(table) - 1


def test_a_group_of_only_failed_runs_shows_its_failures():
    table = comparison_table([record("snas", 0, None, {"constraint": "mild"}, status="failed")], "cifar10")
    row = _row(ours(table), "Architecture", "SNAS + mild + cutout")
    assert (row["Seeds"], row["Failed"]) == (0, 1) and pd.isna(row["Test error (%)"])


def test_records_without_status_count_as_ok_and_other_tasks_are_left_out(records):
    assert runs_frame(records)["ok"].sum() == 8
    other = record("egs", 0, 1.0, {"M": 7}, task="imagenet")
    assert len(comparison_table([*records, other], "cifar10")) == len(comparison_table(records, "cifar10"))


def test_a_task_that_is_not_installed_shows_every_recorded_metric_without_references():
    runs = [record("egs", s, e, {"M": 7}, task="cifar100") for s, e in enumerate((24.0, 26.0))]
    assert task_metric("cifar100") is None  # no such task here
    table = comparison_table([*runs, record("egs", 2, None, {"M": 7}, task="cifar100", status="failed")], "cifar100")
    assert list(table.columns) == [
        "Architecture",
        "Preset",
        "Setup",
        "test_accuracy",
        "test_accuracy std",
        "test_error",
        "test_error std",
        "Params (M)",
        "Search cost (GPU days)",
        "Seeds",
        "Failed",
    ]
    row = _row(table, "Architecture", "egs (M=7)")
    assert row["test_error"] == pytest.approx(25.0) and row["test_accuracy"] == pytest.approx(75.0)
    assert (row["Seeds"], row["Failed"]) == (2, 1)
    with pytest.raises(UnknownNameError, match="unknown task 'cifar100'.* needs the task's main metric: install"):
        ablation_table(runs, "cifar100")  # the ablation needs the main metric


def test_record_models_give_the_same_table_as_dicts():
    runs = [
        make_record(seed=s, preset="paper", metrics=make_record()["metrics"] | {"test_error": e})
        for s, e in enumerate((2.7, 2.9))
    ]
    expected = comparison_table(runs, "cifar10")
    pd.testing.assert_frame_equal(comparison_table([Record.model_validate(r) for r in runs], "cifar10"), expected)
    assert _row(ours(expected), "Architecture", "DARTS-EGS (M=7)")["Test error (%)"] == pytest.approx(2.8)


def test_runs_of_different_setups_are_different_rows():
    runs = [record("egs", s, 2.8, {"M": 7}) for s in range(2)]
    runs += [record("egs", s, 3.0, {"M": 7}, world_size=8) for s in range(2)]
    runs += [record("egs", 0, 3.5, {"M": 7}, world_size=8, mixed_precision="bf16", deterministic=True)]
    table = ours(comparison_table(runs, "cifar10"))
    assert table["Architecture"].tolist() == ["DARTS-EGS (M=7)"] * 3
    assert table["Setup"].tolist() == ["x1 fp32", "x8 bf16 deterministic", "x8 fp32"]
    assert table["Test error (%)"].tolist() == pytest.approx([2.8, 3.5, 3.0])
    assert table["Seeds"].tolist() == [2, 1, 2]
    assert table["Reported (%)"].tolist() == [2.79] * 3  # each setup is held to the paper's number
    assert runs_frame(runs).groupby(["world_size", "mixed_precision", "deterministic"]).size().tolist() == [2, 1, 2]


def test_a_plug_in_task_with_a_lower_is_better_metric_gets_its_table(ptb_plugin):
    runs = [ptb_record("darts", s, ppl, {"order": 2}) for s, ppl in enumerate((55.0, 56.0))]
    runs += [ptb_record("egs", s, ppl, {"M": m}) for m, ppl in ((4, 57.0), (7, 54.0)) for s in range(2)]
    table = comparison_table(runs, "ptb")
    darts = _row(ours(table), "Architecture", "DARTS (second order)")
    assert darts["Test perplexity"] == pytest.approx(55.5) and darts["Reported"] == 55.7
    assert darts["Δ"] == pytest.approx(-0.2) and darts["Ops"] == 4
    assert ours(table)["Architecture"].tolist() == ["DARTS (second order)", "DARTS-EGS (M=4)", "DARTS-EGS (M=7)"]
    text = render_tables(runs, "md")
    assert "ptb: reproduced vs DARTS-EGS paper, Table 3 (Penn Treebank)" in text and "| Test perplexity |" in text
    _assert_paper_layout(table, load_reference("ptb"))
    paper = _row(reported(table), "Architecture", "DARTS (second order)")
    assert (paper["Valid ppl"], paper["Test perplexity"], paper["Search cost (GPU days)"]) == (58.1, 55.7, 1)
    assert pd.isna(darts["Valid ppl"])  # the runs record no valid_ppl: blank, never the paper's number
    fixed = comparison_table([*runs, ptb_record("fixed", 0, 56.5, {"genotype": "darts_v2_rnn"})], "ptb")
    _assert_paper_layout(fixed, load_reference("ptb"))
    row = _row(fixed, "Method", "fixed (genotype=darts_v2_rnn)")
    assert (row["Architecture"], row["Reported"], row["Δ"]) == ("DARTS (second order)", 55.7, pytest.approx(0.8))
    ablation = ablation_table(runs, "ptb")  # no reported M ablation on PTB; lowest perplexity is best
    assert ablation[["M", "Best"]].values.tolist() == [[4, ""], [7, "best"]]
    assert ablation["Reported"].isna().all()


def test_the_valid_perplexity_a_run_records_in_extras_fills_its_column(ptb_plugin):
    runs = [
        ptb_record("darts", s, ppl, {"order": 2}, extras={"valid": {"valid_ppl": v, "valid_loss": 4.1}})
        for s, (ppl, v) in enumerate(((55.0, 58.0), (56.0, 59.0)))
    ]
    darts = _row(ours(comparison_table(runs, "ptb")), "Architecture", "DARTS (second order)")
    assert darts["Valid ppl"] == pytest.approx(58.5)  # the runs' mean, beside the paper's 58.1


def test_a_task_whose_main_metric_is_not_among_its_metrics_is_named(monkeypatch):
    broken = type("Broken", (PennTreebank,), {"main_metric": "perplexity"})
    monkeypatch.setitem(TASKS._entries, "ptb", broken)
    with pytest.raises(
        UserError, match="task 'ptb' .* names main_metric 'perplexity', which is not among its metrics \\(ppl, loss\\)"
    ):
        comparison_table([ptb_record("darts", 0, 55.0, {"order": 2})], "ptb")


def test_empty_and_unknown_inputs():
    alone = comparison_table([], "cifar10")  # no runs: the paper's table alone
    assert ours(alone).empty and alone["Architecture"].tolist() == load_reference("cifar10")["architecture"].tolist()
    assert "Architecture" in render(alone, "md")
    with pytest.raises(UnknownNameError, match="unknown task 'cifar100'; did you mean 'cifar10'.*; no record names it"):
        comparison_table([], "cifar100")
    with pytest.raises(UnknownNameError, match="Valid table formats: md, csv, latex, html"):
        render(comparison_table([], "cifar10"), "xlsx")


# ---- ablation over M -----------------------------------------------------------------------------


def test_ablation_table_over_m():
    runs = [
        record("egs", s, e, {"M": m}, params=p)
        for m, es, p in [(1, (3.3, 3.5), 2.3), (9, (2.7, 2.8), 3.0)]
        for s, e in enumerate(es)
    ]
    runs += [record("egs", 2, None, {"M": 9}, status="failed"), record("darts", 0, 3.0, {"order": 2})]
    table = ablation_table(runs)
    assert ours(table)["M"].tolist() == [1, 9]  # darts runs are not part of the sweep
    m1, m9 = ours(table).iloc[0], ours(table).iloc[1]
    assert m1["Test error (%)"] == pytest.approx(3.4) and m1["Reported (%)"] == 3.38
    assert m1["Δ"] == pytest.approx(0.02) and m1["Test error (%) std"] == pytest.approx(pd.Series([3.3, 3.5]).std())
    assert m1["Params (M)"] == pytest.approx(2.3)
    assert (m9["Reported (%)"], m9["Seeds"], m9["Failed"]) == (2.73, 2, 1)
    assert ours(table)["Best"].tolist() == ["", "best"]  # error: lower is better
    assert (reported(table)["Best"] == "").all()  # the paper's rows are not ranked


def test_ablation_rows_carry_params_per_m_beside_the_papers():
    runs = [record("egs", 0, 40.0 + m, {"M": m}, preset="smoke", params=0.01 * m) for m in (1, 4, 7)]
    runs += [record("egs", 0, 2.9, {"M": 7}, params=2.7), record("fixed", 0, 2.8, {"genotype": "egs_released_m7"})]
    runs += [record("fixed", 0, 3.0, {"genotype": "darts_v2"})]  # not a cell of the M sweep
    table = ablation_table(runs)
    reference = load_reference("sampling_times")
    _assert_paper_layout(table, reference, "M")
    assert reported(table)["Params (M)"].tolist() == reference["params_m"].tolist()  # the paper's params per M
    assert reported(table)["Test error (%)"].tolist() == reference["test_error_pct"].tolist()
    assert ours(table)["M"].tolist() == [1, 4, 7, 7, 7]
    assert ours(table)["Method"].tolist() == [
        "egs (M=1)",
        "egs (M=4)",
        "egs (M=7)",
        "fixed (genotype=egs_released_m7)",
        "egs (M=7)",
    ]
    assert ours(table)["Params (M)"].tolist() == pytest.approx([0.01, 0.04, 2.7, 3.0, 0.07])  # each run's own
    assert ours(table)["Reported (%)"].tolist() == [3.38, 3.05, 2.79, 2.79, 2.79]
    assert ours(table)["Δ"].notna().tolist() == [False, False, True, True, False]  # smoke rows: no delta
    assert ours(table)["Best"].tolist() == ["best", "", "best", "", ""]  # per preset, EGS runs only
    assert "Params reported (M)" not in table  # the paper row above says it


# ---- output formats ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_renders_the_numbers(records, fmt):
    text = render(comparison_table(records, "cifar10"), fmt)
    assert "DARTS-EGS (M=7)" in text and "2.79" in text
    if fmt == "md":
        lines = text.splitlines()
        assert all(line.startswith("| ") and line.endswith(" |") for line in lines)
        row = (
            "| DARTS-EGS (M=7) | egs (M=7) | paper | x1 fp32 | 2.80 ± 0.10 | 2.79 | +0.01 | 2.90 | 1 | 7 "
            "| gradient-based | 3 | 0 |"
        )
        assert row in lines
        paper = "| DARTS-EGS (M=7) | - | reported | - | 2.79 | - | - | 2.90 | 1 | 7 | gradient-based | - | - |"
        assert lines.index(paper) + 1 == lines.index(row)  # the reproduced row right under the paper's
        assert "| NASNet-A + cutout | - | reported | - | 2.65 | - | - | 3.30 | 2000 | 13 | RL | - | - |" in lines
    elif fmt == "latex":
        assert r"\toprule" in text and r"\midrule" in text and r"\bottomrule" in text
        assert r"Test error (\%)" in text and r"2.80 $\pm$ 0.10" in text and r"$\Delta$" in text
        assert "%" not in text.replace(r"\%", "")  # an unescaped % would comment out the rest of the line
    elif fmt == "html":
        assert text.startswith("<table>") and "<th>Test error (%)</th>" in text and "<td>2.80 ± 0.10</td>" in text
    else:
        back = pd.read_csv(io.StringIO(text))
        assert list(back.columns) == list(comparison_table(records, "cifar10").columns)
        row = _row(back[back["Preset"] == "paper"], "Architecture", "DARTS-EGS (M=7)")
        assert row["Test error (%)"] == pytest.approx(2.80) and row["Test error (%) std"] == pytest.approx(0.10)
        assert row["Seeds"] == 3


@pytest.mark.parametrize("fmt", FORMATS)
def test_ablation_renders(fmt):
    text = render(ablation_table([record("egs", 0, 2.9, {"M": 7}), record("egs", 1, 2.7, {"M": 7})]), fmt)
    assert "2.79" in text
    assert "7,egs (M=7),paper,x1 fp32,2.8,0.141421,2.79,0.01,3,2,0,best" in text if fmt == "csv" else "2.80" in text


def test_latex_escapes_special_characters():
    table = pd.DataFrame({"Architecture": ["a_b & c # 50%"], "Seeds": [1]})
    assert r"a\_b \& c \# 50\%" in render(table, "latex")
    assert "a_b &amp; c # 50%" in render(table, "html")


# ---- gathering records and rendering them all ----------------------------------------------------


def test_load_records_validates_and_upgrades_old_records(tmp_path):
    v1 = make_record(schema_version=1, preset="paper")
    for key in ("status", "error", "config"):
        del v1[key]
    del v1["evaluate"]["steps_per_s"], v1["manifest"]["determinism"]
    write_json(tmp_path / "sweep" / "m7-seed0" / "record.json", v1)
    (tmp_path / "sweep" / "m7-seed0" / "config.yaml").write_text("method:\n  name: egs\n  M: 7\n")
    write_json(tmp_path / "sweep" / "m7-seed1" / "record.json", make_record(seed=1, preset="paper"))
    (tmp_path / "sweep" / "running").mkdir()  # a run still going: no record yet
    found = load_records(tmp_path / "sweep")
    assert [r["seed"] for r in found] == [0, 1] and found[0]["config"]["method"]["M"] == 7
    assert _row(ours(comparison_table(found)), "Architecture", "DARTS-EGS (M=7)")["Seeds"] == 2

    (tmp_path / "sweep" / "torn").mkdir()
    (tmp_path / "sweep" / "torn" / "record.json").write_text('{"schema_version": 2, "meth')
    with pytest.raises(UserError, match="torn"):
        load_records(tmp_path / "sweep")
    assert len(load_records(tmp_path / "sweep", strict=False)) == 2
    with pytest.raises(UserError, match="no folder"):
        load_records(tmp_path / "missing")


@pytest.mark.parametrize("fmt", FORMATS)
def test_render_tables_gives_each_task_and_the_m_sweep_a_titled_table(records, fmt):
    plugin = record("darts", 0, 55.0, {"order": 1}, task="mnist")  # a plug-in that is not installed here
    text = render_tables([*records, plugin], fmt)
    assert "Table 1 (CIFAR-10)" in text and "DARTS-EGS (M=7)" in text
    assert "Table 5" in text  # egs ran with M=4 and M=7
    assert "task mnist is not installed" in text and "darts (order=1)" in text  # shown, not dropped
    assert "Table 5" not in render_tables(records[:3], fmt)  # one M: no ablation


def test_render_tables_rejects_unknown_formats(records):
    with pytest.raises(UnknownNameError, match="did you mean 'md'"):
        render_tables(records, "mdx")


# ---- names come from the classes and the reference files ---------------------------------------


def test_reference_titles_and_order_come_from_the_readme(tmp_path):
    readme = REFERENCE_DIR / "README.md"
    lines = readme.read_text().splitlines()
    assert list(TABLES) == [ln.split("`")[1].removesuffix(".csv") for ln in lines if ln.startswith("| `")]
    assert TABLES["sampling_times"] == "DARTS-EGS paper, Table 5 (CIFAR-10, number of sampling times M)"
    rows = ["| file | title | what |", "| --- | --- | --- |", "| `b.csv` | Second | x |", "| `a.csv` | A, B (x) | y |"]
    (tmp_path / "README.md").write_text("\n".join(rows) + "\n")
    assert list(reference_titles(tmp_path).items()) == [("b", "Second"), ("a", "A, B (x)")]  # the README's order


def test_the_ablation_table_is_the_one_its_key_names():
    keys = {METHODS.get(name).ablation_key for name in METHODS.names()} - {None}
    assert keys == {"M"}
    assert ablation_reference("M") == "sampling_times" and ablation_reference("order") is None
    assert row_label("sampling_times", {"M": 7}) == "Table 5: M=7"
    assert row_label("cifar10", {"architecture": "DARTS-EGS (M=7)"}) == "Table 1: DARTS-EGS (M=7)"


def test_variants_come_from_the_method_class():
    assert variant_of("darts", {"order": 2, "arch_lr": 3e-4}) == {"order": 2}
    assert variant_of("not-installed", {"order": 2}) == {}  # an uninstalled method's runs: one variant


def test_a_single_table_defaults_to_the_records_task():
    ptb = [ptb_record("darts", s, 57.0 + s, {"order": 2}) for s in (0, 1)]
    pd.testing.assert_frame_equal(comparison_table(ptb), comparison_table(ptb, "ptb"))
    with pytest.raises(UserError, match="2 tasks"):
        comparison_table([*ptb, record("egs", 0, 2.9, {"M": 7})])

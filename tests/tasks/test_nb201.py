"""Task ``nb201``: the NATS-Bench lookup (arch string -> index -> accuracies) on a fixture in the API's own format,
the per-epoch ground-truth curve, the errors a user can act on, and a smoke search through the command line.

The fixture (``egsbench.testing.write_nats_tss``) holds a few cells with made-up accuracies, not the real file.
"""

from __future__ import annotations

import csv
import json
import sys

import pytest
import torch

from egsbench.benchmark.cli import main
from egsbench.benchmark.records import GroundTruth
from egsbench.core.genotype_formats import from_nb201_string, to_nb201_string
from egsbench.tasks.nb201 import MISSING_PACKAGE, NATSLookup, NB201Config, NB201Task
from egsbench.tasks.spaces import SPACES, DataError, DataNotFoundError, Genotype, UserError, argmax_genotype
from egsbench.testing.nats import FIXTURE_CELLS, HP12_SCALE, SEEDS, all_nb201_archs, write_nats_tss

nats_bench = pytest.importorskip("nats_bench")  # the test extra installs it (pip install 'egs-bench[nb201]')

SPACE = SPACES.get("nb201")
BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
MISSING = "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|"  # a cell the fixture holds no results for


def _initial_arch(seed: int = 0) -> str:
    """The argmax cell of DARTS's initial alphas (methods.base.init_alphas: 1e-3 * N(0, 1), seeded by the run seed),
    the cell a DARTS search with arch_lr 0 derives and looks up after every epoch."""
    alphas = 1e-3 * torch.randn((6, 5), generator=torch.Generator().manual_seed(seed))
    return to_nb201_string(argmax_genotype(SPACE, {"normal": alphas}))


INITIAL = _initial_arch()
CELLS = FIXTURE_CELLS | {INITIAL: {"cifar10": 81.0, "cifar100": 52.0, "ImageNet16-120": 27.0}}


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory):
    return write_nats_tss(tmp_path_factory.mktemp("nats") / "nats-tss", CELLS)


@pytest.fixture(scope="module")
def fixture_file(tmp_path_factory):
    return write_nats_tss(tmp_path_factory.mktemp("nats-file") / "tss.pickle.pbz2", CELLS, fast_mode=False)


def test_the_fixture_is_read_by_nats_bench_itself(fixture_dir, fixture_file):
    for path, fast in ((fixture_dir, True), (fixture_file, False)):
        api = nats_bench.create(str(path), "tss", fast_mode=fast, verbose=False)
        assert len(api) == 15625
        index = api.query_index_by_arch(BEST)
        info = api.get_more_info(index, "cifar100", hp="200", is_random=False)
        assert info["test-accuracy"] == pytest.approx(73.0) and "valid-accuracy" in info
        one = api.get_more_info(index, "cifar100", hp="200", is_random=SEEDS[0])  # a single trial: mean - 0.5
        assert one["test-accuracy"] == pytest.approx(72.5)
        assert "cifar10-valid" in api.query_info_str_by_arch(BEST, "200")  # every data set's costs and metrics


@pytest.mark.parametrize("fast", [True, False], ids=["directory", "file"])
def test_lookup_goes_from_arch_string_to_index_to_test_accuracies(fixture_dir, fixture_file, fast):
    lookup = NATSLookup(fixture_dir if fast else fixture_file)
    for arch, accuracies in CELLS.items():
        index, values = lookup.test_accuracies(arch)
        assert index == all_nb201_archs().index(arch) == lookup.index(arch)
        expected = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet16_120": "ImageNet16-120"}
        assert values == pytest.approx({name: accuracies[dataset] for name, dataset in expected.items()})
    index, values = NATSLookup(fixture_dir, hp="12").test_accuracies(BEST)
    assert values["cifar10"] == pytest.approx(HP12_SCALE * 94.0)
    index, values = lookup.test_accuracies(MISSING)  # listed, not evaluated in the fixture: null, not a crash
    assert index == all_nb201_archs().index(MISSING) and set(values.values()) == {None}


def _task(benchmark_file) -> NB201Task:
    config = NB201Config(data_dir="embedded", train_limit=16, test_limit=8, benchmark_file=str(benchmark_file))
    task = NB201Task(config)
    task.prepare_data()
    return task


def test_search_measure_looks_up_the_current_argmax_cell_each_epoch(fixture_dir):
    task = _task(fixture_dir)
    best = torch.full((6, 5), 0.1).index_fill_(1, torch.tensor([3]), 0.6)  # nor_conv_3x3 everywhere ...
    best[3] = torch.tensor([0.1, 0.6, 0.1, 0.1, 0.1])  # ... but skip_connect on 3 <- 0: BEST
    epochs = [task.search_measure(SPACE, {"normal": p}) for p in (torch.full((6, 5), 0.2), best)]
    assert [row["gt_arch"] for row in epochs] == ["|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", BEST]
    assert [row["gt_cifar10"] for row in epochs] == pytest.approx([10.0, 94.0])
    assert task.search_measure(SPACE, None) == {}  # random search learns no distribution


def test_ground_truth_is_a_valid_record_block(fixture_dir):
    truth = _task(fixture_dir).ground_truth(from_nb201_string(BEST))
    assert GroundTruth.model_validate(truth).metrics == pytest.approx(
        {"cifar10": 94.0, "cifar100": 73.0, "imagenet16_120": 46.0}
    )
    assert truth["arch"] == BEST and truth["hp"] == "200" and truth["index"] == all_nb201_archs().index(BEST)


def test_missing_file_wrong_file_and_missing_package_are_user_errors(tmp_path, monkeypatch):
    with pytest.raises(DataNotFoundError, match=r"no NATS-Bench topology benchmark at .*task\.benchmark_file"):
        _task(tmp_path / "nowhere")
    (tmp_path / "bogus.pickle.pbz2").write_bytes(b"not a benchmark")
    with pytest.raises(DataError, match="is not a NATS-Bench topology benchmark"):
        _task(tmp_path / "bogus.pickle.pbz2")
    monkeypatch.setitem(sys.modules, "nats_bench", None)  # as if it were not installed
    with pytest.raises(UserError, match="nats_bench package, which is not installed") as err:
        NATSLookup(tmp_path)
    assert str(err.value) == MISSING_PACKAGE and "pip install 'egs-bench[nb201]'" in MISSING_PACKAGE


def test_missing_file_on_the_command_line_is_one_line_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", "smoke/darts1-nb201", "--out", str(out), "--no-progress"]
    assert main([*args, "--set", f"task.benchmark_file={tmp_path / 'nowhere'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: no NATS-Bench topology benchmark at ")
    assert not (out / "config.yaml").exists()  # the benchmark is opened with the data, before any output


def test_smoke_search_records_the_ground_truth_and_its_per_epoch_curve(fixture_dir, tmp_path, capsys):
    """DARTS (first order) with arch_lr 0 keeps its initial alphas, so the derived cell is known: INITIAL."""
    out = tmp_path / "run"
    overrides = {
        "task.benchmark_file": str(fixture_dir),
        "task.train_limit": 32,
        "task.test_limit": 16,
        "method.arch_lr": 0,
        "search.batch_size": 8,
        "search.max_steps_per_epoch": 1,
        "evaluate.batch_size": 8,
        "evaluate.max_steps_per_epoch": 1,
        "threads": 1,
    }
    sets = [arg for key, value in overrides.items() for arg in ("--set", f"{key}={value}")]
    assert main(["run", "smoke/darts1-nb201", "--out", str(out), "--no-progress", *sets]) == 0
    record = json.loads((out / "record.json").read_text())
    truth = record["ground_truth"]
    assert (truth["arch"], truth["hp"]) == (INITIAL, "200")
    assert truth["metrics"] == pytest.approx({"cifar10": 81.0, "cifar100": 52.0, "imagenet16_120": 27.0})
    assert Genotype.from_dict(record["genotype"]) == from_nb201_string(INITIAL)
    with open(out / "search_curves.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["gt_arch"] for row in rows] == [INITIAL, INITIAL]  # search.epochs 2: one lookup per epoch
    assert [float(row["gt_imagenet16_120"]) for row in rows] == pytest.approx([27.0, 27.0])
    capsys.readouterr()
    assert main(["table", "--runs", str(out)]) == 0
    table = capsys.readouterr().out
    assert "GT CIFAR-10 test acc (%)" in table and "81.00" in table and "GT ImageNet16-120 test acc (%)" in table
    assert main(["compare", "--runs", str(out), "--plot", "none"]) == 0
    compared = capsys.readouterr().out
    assert "GT CIFAR-100 test acc (%)" in compared and "52.00" in compared
    assert main(["compare", "--runs", str(out), "--plot", "none", "--metric", "gt_cifar10"]) == 0
    assert "nb201: GT CIFAR-10 test acc (%) against darts" in capsys.readouterr().out

"""The ImageNet (mobile setting) transfer task: timm data on ImageFolder / tar fixtures, the mobile network, the
600 M MAC cap and width fit, and a transfer run end to end (fixed method, seconds on a CPU)."""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import egsbench
from egsbench.benchmark.api import resolve_config
from egsbench.tasks import TASKS
from egsbench.tasks.imagenet import (
    ImageNet,
    ImageNetConfig,
    ImageNetTrainConfig,
    fit_channels,
    mobile_macs,
)
from egsbench.tasks.spaces import (
    DARTS_V2,
    GENOTYPES,
    Cell,
    CellGenotype,
    ConfigError,
    DataError,
    DataNotFoundError,
    Genotype,
    NetworkImageNet,
    count_macs,
    count_parameters,
)
from egsbench.testing import check_task

WNIDS = ("n01440764", "n01443537", "n01484850")


def _write_jpegs(root: Path, per_split: dict[str, int], size=(48, 40)) -> Path:
    """``root/<split>/<wnid>/<wnid>_<i>.JPEG``: seeded random RGB images, as real JPEG files."""
    for s, (split, n) in enumerate(per_split.items()):
        for c, wnid in enumerate(WNIDS):
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.random.default_rng([s, c, i]).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG", quality=90)
    return root


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory) -> Path:
    return _write_jpegs(tmp_path_factory.mktemp("imagenet"), {"train": 6, "val": 3})


@pytest.fixture(scope="module")
def cifar_as_imagenet(cifar_tar, tmp_path_factory) -> Path:
    """A handful of the shared CIFAR-10 JPEGs resized to 224x224: 3 classes, 4 train + 2 val images each."""
    root = tmp_path_factory.mktemp("cifar224")
    taken: dict[str, int] = {}
    with tarfile.open(cifar_tar) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) != 3 or parts[0] != "train":
                continue
            cls = parts[1]
            if len(taken) == 3 and all(n == 6 for n in taken.values()):
                break
            if taken.get(cls, 0) == 6 or (cls not in taken and len(taken) == 3):
                continue
            i = taken.get(cls, 0)
            taken[cls] = i + 1
            split = "train" if i < 4 else "val"
            image = Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB").resize((224, 224))
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            image.save(root / split / cls / f"{i:04d}.JPEG", quality=90)
    return root


def _task(root: Path, **kwargs) -> ImageNet:
    return ImageNet(ImageNetConfig(data_dir=str(root), image_size=kwargs.pop("image_size", 32), workers=0, **kwargs))


# -- data -----------------------------------------------------------------------------------------
def test_image_folder_loads_through_timm_with_limits(jpeg_folder):
    task = _task(jpeg_folder, train_per_class=4)
    info = task.prepare_data()
    assert info.source == f"imagefolder:{jpeg_folder}" and len(info.sha256) == 64
    assert dict(info.sizes) == {"search-train": 6, "search-val": 6, "train": 12, "test": 9}
    x, y = next(iter(task.loader("train", 5, torch.Generator().manual_seed(0))))
    assert x.shape == (5, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    x, y = next(iter(task.loader("test", 9)))
    assert y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # val in class order, mapped with the training split's classes
    assert abs(x.mean().item()) < 2.5  # normalised with ImageNet's mean and std


def test_image_folder_passes_the_task_checks(jpeg_folder):
    check_task(_task(jpeg_folder))


def test_the_shared_cifar10_images_resized_to_224_load_and_train(cifar_as_imagenet):
    task = _task(cifar_as_imagenet, image_size=64)
    assert dict(task.prepare_data().sizes) == {"search-train": 6, "search-val": 6, "train": 12, "test": 6}
    net = task.build_network(DARTS_V2, ImageNetTrainConfig(channels=4, layers=3, auxiliary_weight=0.4))
    x, y = next(iter(task.loader("train", 4, torch.Generator().manual_seed(0))))
    out = task.train_loss(net.train(), (x, y), ImageNetTrainConfig(channels=4, layers=3))
    out.loss.backward()
    assert x.shape == (4, 3, 64, 64) and torch.isfinite(out.loss)


def test_tar_archives_load_like_the_folder(jpeg_folder, tmp_path):
    for split in ("train", "val"):
        with tarfile.open(tmp_path / f"{split}.tar", "w") as tar:
            tar.add(jpeg_folder / split, arcname=".")
    folder, packed = _task(jpeg_folder).prepare_data(), _task(tmp_path).prepare_data()
    assert packed.source == f"imagefolder:{tmp_path}" and dict(packed.sizes) == dict(folder.sizes)


def test_per_class_tar_shards_load(jpeg_folder, tmp_path):
    for split in ("train", "val"):
        (tmp_path / split).mkdir()
        for wnid in WNIDS:
            with tarfile.open(tmp_path / split / f"{wnid}.tar", "w") as tar:
                tar.add(jpeg_folder / split / wnid, arcname=".")
    info = _task(tmp_path).prepare_data()
    assert info.sizes["train"] == 18 and info.sizes["test"] == 9


def test_per_class_shards_without_timms_tar_reader_are_one_clear_error(tmp_path, monkeypatch):
    """timm.data.readers does not export ReaderImageInTar; a timm without its module gets a DataError."""
    monkeypatch.setitem(sys.modules, "timm.data.readers.reader_image_in_tar", None)  # import fails
    for split in ("train", "val"):
        (tmp_path / split).mkdir()
        (tmp_path / split / f"{WNIDS[0]}.tar").write_bytes(b"")
    with pytest.raises(DataError, match=r"per-class \.tar shards, which need timm's ReaderImageInTar.*extract each"):
        _task(tmp_path).prepare_data()


@pytest.mark.parametrize("layout", ["nothing", "no-val", "unset"])
def test_missing_data_names_the_layouts_and_the_fix(tmp_path, monkeypatch, layout):
    monkeypatch.delenv("EGSBENCH_IMAGENET", raising=False)
    if layout == "no-val":
        _write_jpegs(tmp_path, {"train": 1})
    task = ImageNet(ImageNetConfig(data_dir=None if layout == "unset" else str(tmp_path)))
    with pytest.raises(DataNotFoundError, match=r"train/<wnid>/\*\.JPEG.*train\.tar.*hf_dataset.*task\.data_dir"):
        task.prepare_data()


def test_a_search_on_imagenet_fails_at_config_time():
    data = resolve_config("smoke/darts_v2-imagenet").to_dict()
    data["method"], data["search"]["epochs"] = {"name": "egs"}, 1
    with pytest.raises(ConfigError, match="transfer task. Transfer a CIFAR-10 search"):
        resolve_config(data)


@pytest.mark.parametrize("key, value", [("image_size", 40), ("train_per_class", 0), ("workers", -1)])
def test_bad_task_keys_are_refused(key, value):
    with pytest.raises(ConfigError, match=f"task.{key}"):
        ImageNetConfig(**{key: value})


@pytest.mark.parametrize("key, value", [("channels", 47), ("schedule", "cosine"), ("fit_macs", 0.0)])
def test_bad_evaluate_keys_are_refused(key, value):
    with pytest.raises(ConfigError, match=f"evaluate.{key}"):
        ImageNetTrainConfig(**{key: value})


# -- network, MACs, the mobile cap ----------------------------------------------------------------
def _cell(reduce: bool) -> Cell:
    first = "avg_pool_3x3" if reduce else "sep_conv_3x3"
    edges = [(0, 2, first), (1, 2, "skip_connect")]
    return Cell(CellGenotype(edges, (2,)), 2, c_pp=8, c_p=8, c=4, reduction=reduce, reduction_prev=False).eval()


@pytest.mark.parametrize(
    "reduce, hand",
    [
        # two 1x1 preprocess convs 8->4 at 8x8: 2 * 8*4*64; sep_conv_3x3 at C=4, 8x8: 2 x (dw 9*4*64 + pw 4*4*64)
        (False, 2 * 8 * 4 * 64 + 2 * (9 * 4 * 64 + 4 * 4 * 64)),
        # preprocess as above; avg pool 3x3 s2 -> 4x4: 9*4*16; skip s2 = FactorizedReduce: two 1x1 4->2 at 4x4
        (True, 2 * 8 * 4 * 64 + 9 * 4 * 16 + 2 * 4 * 2 * 16),
    ],
    ids=["normal", "reduce"],
)
def test_cell_macs_match_a_hand_count(reduce, hand):
    assert count_macs(_cell(reduce), torch.zeros(1, 8, 8, 8), torch.zeros(1, 8, 8, 8)).total == hand


def test_darts_v2_mobile_network_params_and_macs():
    net = NetworkImageNet(DARTS_V2, 48, 1000, 14, auxiliary=True)
    assert count_parameters(net) == 4_718_752  # 4.7 M reported; the auxiliary head is excluded, as DARTS counts
    macs = mobile_macs(DARTS_V2, 48, 14)
    assert macs == count_macs(net.eval(), torch.zeros(1, 3, 224, 224)).total  # meta-device count == real count
    assert macs == 531_181_632  # 574 M reported; other counters 523 M and 544.6 M (quark0/darts#46)
    assert mobile_macs(DARTS_V2, 50, 14) == 574_795_800  # C = 50: the first release's --init_channels default


def test_mobile_network_shapes_and_auxiliary_head_at_small_inputs():
    net = NetworkImageNet(DARTS_V2, 8, 5, 5, auxiliary=True, image_size=64).train()
    logits, aux = net(torch.randn(2, 3, 64, 64))
    assert logits.shape == aux.shape == (2, 5)
    with pytest.raises(ValueError, match="even channel count"):
        NetworkImageNet(DARTS_V2, 7, 5, 5)


def test_the_cap_refuses_a_wide_network_with_its_measured_macs():
    task = ImageNet(ImageNetConfig(num_classes=1000))
    wide = ImageNetTrainConfig(channels=64)
    measured = mobile_macs(DARTS_V2, 64, 14) / 1e6
    with pytest.raises(ConfigError, match=rf"{measured:.1f} M multiply-adds at 224x224, above .* 600 M"):
        task.build_network(DARTS_V2, wide)


def test_fit_macs_lowers_the_width_to_the_largest_that_fits_and_records_it():
    task = ImageNet(ImageNetConfig(num_classes=1000))
    budget = mobile_macs(DARTS_V2, 20, 5) + 1  # a 5-cell network: C = 20 fits, C = 22 does not
    net = task.build_network(DARTS_V2, ImageNetTrainConfig(channels=64, layers=5, fit_macs=budget, auxiliary_weight=0))
    assert task.fitted["channels"] == 20 and net.stem0[3].out_channels == 20
    assert mobile_macs(DARTS_V2, 22, 5) > budget
    assert task.record_extras()["imagenet"] == {
        "channels": 20,
        "configured_channels": 64,
        "macs_224_m": pytest.approx((budget - 1) / 1e6),
        "fit_macs_m": pytest.approx(budget / 1e6),
    }
    assert fit_channels(DARTS_V2, 14, 600e6, 48) == 48  # what fits already is kept
    with pytest.raises(ConfigError, match="no even C fits"):
        fit_channels(DARTS_V2, 14, 1e6, 48)


# -- transfer runs end to end ---------------------------------------------------------------------
def _cifar_run_folder(root: Path) -> Path:
    """A finished CIFAR-10 run's folder as the runner leaves it (genotype.json + record.json)."""
    root.mkdir()
    GENOTYPES.get("egs_released_m7").save(root / "genotype.json")
    record = {"method": "egs", "task": "cifar10", "preset": "smoke", "seed": 3, "config_hash": "abc123"}
    (root / "record.json").write_text(json.dumps(record))
    return root


def test_a_cifar10_run_folder_transfers_to_imagenet_in_one_run(jpeg_folder, tmp_path):
    source = _cifar_run_folder(tmp_path / "egs-cifar10")
    overrides = {"task.data_dir": str(jpeg_folder), "method.genotype": str(source), "threads": 1}
    record = egsbench.run("smoke/darts_v2-imagenet", tmp_path / "run", overrides=overrides)
    assert record.status == "ok" and record.task == "imagenet"
    metrics = record.model_dump()["metrics"]
    assert 0 <= metrics["test_top1_error"] <= 100 and metrics["test_top5_error"] == 0  # 3 classes: top-5 is all
    extras = record.model_dump()["extras"]
    assert extras["genotype_source"]["run"] == {
        "method": "egs",
        "task": "cifar10",
        "preset": "smoke",
        "seed": 3,
        "config_hash": "abc123",
    }
    assert extras["genotype_source"]["path"] == str((source / "genotype.json").resolve())
    assert extras["imagenet"]["channels"] == 8
    assert Genotype.from_dict(record.model_dump()["genotype"]) == GENOTYPES.get("egs_released_m7")
    net = egsbench.load_network(tmp_path / "run")
    assert net(torch.zeros(1, 3, 64, 64))[0].shape == (1, 3)


def test_a_cifar10_search_transfers_to_imagenet_through_transfer_from(jpeg_folder, tmp_path):
    """smoke/egs-imagenet: the CIFAR-10 search runs first (search only, into <out>/source), then its cell trains on
    ImageNet data; the record carries the search's cost and where the cell came from, and sits under Table 2."""
    from egsbench.benchmark.references import rows_reproduced, searched_on

    record = egsbench.run("smoke/egs-imagenet", tmp_path / "run", overrides={"task.data_dir": str(jpeg_folder)})
    dumped = record.model_dump()
    source = tmp_path / "run" / "source"
    found = json.loads((source / "search_result.json").read_text())
    assert not (source / "record.json").exists()  # the source folder holds the search only, resumable to a full run
    assert dumped["search"] == found["cost"] | {"signal": found["signal"]} and dumped["genotype"] == found["genotype"]
    assert dumped["extras"]["transfer"] | {"folder": None} == {
        "from": "smoke/egs-cifar10",
        "folder": None,
        "method": "egs",
        "task": "cifar10",
        "preset": "smoke",
        "seed": 0,
        "config_hash": resolve_config("smoke/egs-cifar10").hash(),
    }
    assert dumped["method"] == "egs" and dumped["config"]["method"]["M"] == 7
    assert searched_on(dumped["config"]) == "cifar10"
    assert rows_reproduced("egs", "imagenet", {"M": 7}, "cifar10", preset=None) == ["Table 2: DARTS-EGS (M=7)"]


def test_imagenet_is_registered_with_its_reference_table():
    cls = TASKS.get("imagenet")
    assert cls.reference_table == "imagenet_mobile" and cls.main_metric == "top1_error"


@pytest.mark.parametrize(
    "schedule, expected",
    [("poly", lambda e: 0.1 * (1 - e / 10)), ("step", lambda e: 0.1 * 0.97**e)],
)
def test_lr_schedules_through_timm(schedule, expected):
    task = ImageNet(ImageNetConfig(num_classes=10))
    recipe = ImageNetTrainConfig(channels=4, layers=3, epochs=10, schedule=schedule)
    net = task.build_network(DARTS_V2, recipe)
    optimizer = task.make_optimizer(net, recipe)
    for epoch in (0, 3, 9, 3):  # a function of the epoch: a resumed run gets the same lr
        task.start_epoch(net, optimizer, epoch, recipe)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected(epoch))


def test_train_loss_is_timms_label_smoothing_on_both_heads():
    task = ImageNet(ImageNetConfig(num_classes=10, image_size=32))
    recipe = ImageNetTrainConfig(channels=4, layers=3, label_smoothing=0.1, auxiliary_weight=0.4)
    torch.manual_seed(0)
    net = task.build_network(DARTS_V2, recipe).train()
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 7])
    torch.manual_seed(1)
    loss = task.train_loss(net, (x, y), recipe).loss
    torch.manual_seed(1)
    logits, aux = net(x)
    smooth = torch.nn.functional.cross_entropy  # the same loss: (1 - s) * nll + s * mean(-log p)
    torch.testing.assert_close(loss, smooth(logits, y, label_smoothing=0.1) + 0.4 * smooth(aux, y, label_smoothing=0.1))


def test_paper_configs_hold_the_recipe_and_their_cells_fit_the_mobile_cap():
    for genotype in ("darts_v2", "egs_released_m7"):
        name = f"paper/{genotype}-imagenet"
        cfg = resolve_config(name)
        ev = cfg.evaluate
        assert (ev.channels, ev.layers, ev.epochs, ev.batch_size) == (48, 14, 250, 128)
        assert (ev.lr, ev.weight_decay, ev.momentum, ev.grad_clip) == (0.1, 3e-5, 0.9, 5.0)
        assert (ev.label_smoothing, ev.auxiliary_weight, ev.schedule, ev.mac_cap) == (0.1, 0.4, "poly", 600e6)
        assert cfg.task.image_size == 224 and cfg.method.genotype == genotype
        assert mobile_macs(GENOTYPES.get(genotype), 48, 14) <= 600e6
    # the released M = 4 cell does not fit at C = 48 (607.6 M); fitted, it trains at C = 46
    assert mobile_macs(GENOTYPES.get("egs_released_m4"), 48, 14) == 607_621_632
    assert fit_channels(GENOTYPES.get("egs_released_m4"), 14, 600e6, 48) == 46


def test_fixed_runs_of_the_published_cells_sit_beside_their_table_2_rows():
    from egsbench.benchmark.references import references_for

    for genotype, row in (("darts_v2", "DARTS (searched on CIFAR-10)"), ("egs_released_m7", "DARTS-EGS (M=7)")):
        rows = references_for("fixed", "imagenet", "paper", {"genotype": genotype}, tables=["imagenet_mobile"])
        assert rows["architecture"].tolist() == [row]


def test_a_hugging_face_dataset_folder_loads_through_timms_hfds_reader(tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(WNIDS))})
    (tmp_path / "hf" / "data").mkdir(parents=True)
    for split, n in (("train", 4), ("validation", 2)):
        images, labels = [], []
        for c in range(len(WNIDS)):
            for i in range(n):
                buf = io.BytesIO()
                pixels = np.random.default_rng([c, i]).integers(0, 256, (40, 48, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(buf, "JPEG")
                images.append({"bytes": buf.getvalue(), "path": None})
                labels.append(c)
        table = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
        table.to_parquet(str(tmp_path / "hf" / "data" / f"{split}-00000-of-00001.parquet"))  # the Hub's layout
    task = ImageNet(
        ImageNetConfig(hf_dataset=str(tmp_path / "hf"), data_dir=str(tmp_path / "cache"), image_size=32, workers=0)
    )
    info = task.prepare_data()
    assert info.source == f"hfds:{tmp_path / 'hf'}" and dict(info.sizes)["train"] == 12 and info.sizes["test"] == 6
    x, y = next(iter(task.loader("test", 6)))
    assert x.shape == (6, 3, 32, 32) and y.tolist() == [0, 0, 1, 1, 2, 2]


def test_a_flat_validation_folder_is_told_to_sort_into_class_folders(jpeg_folder, tmp_path):
    import shutil

    shutil.copytree(jpeg_folder / "train", tmp_path / "train")
    (tmp_path / "val").mkdir()
    for image in (jpeg_folder / "val").rglob("*.JPEG"):
        shutil.copy(image, tmp_path / "val" / image.name)  # ILSVRC2012_img_val.tar's layout: no class folders
    with pytest.raises(DataError, match="val images come flat: sort them into <wnid>/ folders"):
        _task(tmp_path).prepare_data()

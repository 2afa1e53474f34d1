"""VOC 2012 segmentation: the loader on VOC-layout fixtures, a hand-computed confusion matrix and mIoU, aligned
augmentation, bad inputs, the cell backbone's output stride, the poly schedule and a fixed transfer run end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file, save_model
from torch import nn

from egsbench.benchmark.config import load_config
from egsbench.benchmark.runner import run_experiment
from egsbench.benchmark.tables import comparison_table
from egsbench.tasks import TASKS
from egsbench.tasks.spaces import (
    DARTS_V2,
    GENOTYPES,
    SPACES,
    ConfigError,
    DataError,
    DataNotFoundError,
    NetworkImageNet,
    count_macs,
    count_parameters,
)
from egsbench.tasks.voc import (
    IGNORE,
    MEAN,
    STD,
    VOC2012,
    TrainTransform,
    VOCConfig,
    VOCSearchConfig,
    VOCTrainConfig,
    read_pair,
)
from egsbench.testing import voc_palette, write_voc_fixture

# Two hand-made 4x6 val masks (row = label map of one image row) and the stub's prediction: class 1 in columns
# 0-2, class 0 in columns 3-5 (and anywhere on the padding, which is labelled 255 and never counts).
MASK_A = np.array([[0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1], [255] * 6, [2] * 6], dtype=np.uint8)
MASK_B = np.array([[1, 1, 1, 1, 255, 0]] * 4, dtype=np.uint8)
# By hand: A rows 0-1 give (0->1) x6, (1->0) x6; row 3 gives (2->1) x3, (2->0) x3. B each of 4 rows: (1->1) x3,
# (1->0) x1, (0->0) x1. Rows are labels, columns predictions.
EXPECTED_CM = {(0, 0): 4, (0, 1): 6, (1, 0): 10, (1, 1): 12, (2, 0): 3, (2, 1): 3}


def _palette_png(mask: np.ndarray, path) -> None:
    png = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.tobytes())
    png.putpalette(voc_palette())
    png.save(path)


def write_tree(root, train: dict, val: dict):
    """A VOC tree with the given masks ({id: (H, W) uint8}) and random JPEG images of their sizes."""
    voc = root / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, mask in {**train, **val}.items():
        Image.fromarray(rng.integers(0, 256, (*mask.shape, 3), dtype=np.uint8)).save(voc / "JPEGImages" / f"{i}.jpg")
        _palette_png(mask, voc / "SegmentationClass" / f"{i}.png")
    (voc / "ImageSets/Segmentation/train.txt").write_text("".join(f"{i}\n" for i in train))
    (voc / "ImageSets/Segmentation/val.txt").write_text("".join(f"{i}\n" for i in val))
    return voc


class FixedPrediction(nn.Module):
    """Predicts class 1 in columns 0-2 and class 0 elsewhere, whatever the input."""

    def forward(self, x):
        B, _, H, W = x.shape
        logits = torch.zeros(B, 21, H, W)
        logits[:, 1, :, :3] = 10.0
        logits[:, 0, :, 3:] = 10.0
        return logits


@pytest.fixture
def hand_task(tmp_path):
    train = {f"t{i}": MASK_A for i in range(2)}
    write_tree(tmp_path, train, {"a": MASK_A, "b": MASK_B})
    task = VOC2012(VOCConfig(data_dir=str(tmp_path), crop_size=8, workers=0))
    task.prepare_data()
    return task


# -- loader ----------------------------------------------------------------------------------------
def test_loader_reads_the_fixture_and_keeps_the_255_boundary(tmp_path):
    root = write_voc_fixture(tmp_path / "data", n_train=8, n_val=4)
    task = VOC2012(VOCConfig(data_dir=str(root), crop_size=32, workers=0))
    info = task.prepare_data()
    assert info.source.startswith("voc:") and len(info.sha256) == 64
    assert dict(info.sizes) == {"search-train": 4, "search-val": 4, "train": 8, "test": 4}
    assert "VOC2012 val" in info.roles["test"]
    x, y = next(iter(task.loader("test", 4)))
    assert x.shape == (4, 3, 40, 48) and x.dtype == torch.float32  # the largest image (40x48) beyond the 32 canvas
    assert y.shape == (4, 40, 48) and y.dtype == torch.int64
    image, mask = read_pair(*task.items["test"][1])  # a 36x44 image
    assert image.dtype == mask.dtype == torch.uint8 and image.shape == (3, *mask.shape)
    h, w = mask.shape
    assert (h, w) == (36, 44) and torch.equal(y[1, :h, :w], mask.long())  # labels as stored, 255 boundary too
    assert (mask == IGNORE).any() and (y[1, h:] == IGNORE).all() and (y[1, :, w:] == IGNORE).all()
    assert (x[1, :, h:] == 0).all() and (x[1, :, :, w:] == 0).all()  # padding is the mean (0 after normalisation)
    xt, yt = next(iter(task.loader("train", 4, torch.Generator().manual_seed(0))))
    assert xt.shape == (4, 3, 32, 32) and yt.shape == (4, 32, 32)
    assert set(yt.unique().tolist()) <= set(range(21)) | {IGNORE}


def test_worker_processes_stream_seeded_batches_and_report_bad_files(tmp_path):
    root = write_voc_fixture(tmp_path / "data", n_train=4, n_val=2)
    task = VOC2012(VOCConfig(data_dir=str(root), crop_size=32, workers=2))
    task.prepare_data()
    first = [next(iter(task.loader("train", 2, torch.Generator().manual_seed(3)))) for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(first[0], first[1], strict=True))  # workers seeded by the generator
    _palette_png(np.full((40, 48), 40, dtype=np.uint8), task.items["test"][0][1])
    with pytest.raises(DataError, match="holds label values \\[40\\]"):  # raised in a worker, same type
        next(iter(task.loader("test", 1)))


def test_sbd_train_aug_adds_images_but_never_val_ones(tmp_path):
    root = write_voc_fixture(tmp_path / "data", n_train=4, n_val=2, n_sbd=3)
    task = VOC2012(VOCConfig(data_dir=str(root / "VOCdevkit"), crop_size=32, workers=0))  # VOCdevkit itself
    info = task.prepare_data()
    assert info.sizes["train"] == 7 and info.sizes["test"] == 2 and "3 SBD images" in info.roles["train"]
    train_ids = {image.stem for image, _ in task.items["train"]}
    assert not train_ids & {image.stem for image, _ in task.items["test"]}
    assert {m.parent.name for _, m in task.items["train"]} == {"SegmentationClass", "SegmentationClassAug"}
    assert VOC2012(VOCConfig(data_dir=str(root), sbd=False, workers=0)).prepare_data().sizes["train"] == 4
    next(iter(task.loader("train", 7)))  # grey (L) SBD masks read like palette ones
    plain = write_voc_fixture(tmp_path / "plain", n_train=2, n_val=1)
    with pytest.raises(DataNotFoundError, match="SegmentationClassAug"):
        VOC2012(VOCConfig(data_dir=str(plain), sbd=True)).prepare_data()


# -- metric ----------------------------------------------------------------------------------------
def test_confusion_matrix_and_miou_match_the_hand_computed_answer(hand_task):
    model = FixedPrediction()
    sums = sum(hand_task.eval_sums(model, batch) for batch in hand_task.loader("test", 2))
    cm = sums[:441].view(21, 21)
    expected = torch.zeros(21, 21, dtype=torch.float64)
    for (label, pred), count in EXPECTED_CM.items():
        expected[label, pred] = count
    assert torch.equal(cm, expected)  # exact counts; the 255 row of A, B's 255 column and all padding never count
    metrics = hand_task.summarize(sums)
    # IoU_0 = 4 / (10 + 17 - 4), IoU_1 = 12 / (22 + 21 - 12), IoU_2 = 0 / 6; classes 3..20 have no union
    assert metrics["miou"] == pytest.approx(100 * (4 / 23 + 12 / 31 + 0) / 3, abs=1e-12)
    assert metrics["pixel_accuracy"] == pytest.approx(100 * 16 / 38, abs=1e-12)
    assert metrics["classes"] == 3 and metrics["count"] == 38
    right, wrong = math.log1p(20 * math.exp(-10)), 10 + math.log1p(20 * math.exp(-10))  # CE of logits 10 vs 0
    assert metrics["loss"] == pytest.approx((16 * right + 22 * wrong) / 38, rel=1e-6)


def test_confusion_matrices_of_two_processes_sum_to_the_whole(hand_task):
    model = FixedPrediction()
    (whole,) = list(hand_task.loader("test", 2))
    halves = [(whole[0][i : i + 1], whole[1][i : i + 1]) for i in range(2)]  # what two processes would see
    parts = [hand_task.eval_sums(model, half) for half in halves]
    total = hand_task.eval_sums(model, whole)
    assert torch.equal((parts[0] + parts[1])[:441], total[:441])
    assert hand_task.summarize(parts[0] + parts[1]) == pytest.approx(hand_task.summarize(total))


# -- augmentation ----------------------------------------------------------------------------------
def _coloured_pair():
    """A 32x48 mask of 8x8 blocks of classes and an image whose colour encodes each pixel's class."""
    labels = (np.arange(4)[:, None] * 6 + np.arange(6)[None, :]) % 21  # (4, 6) blocks
    mask = np.kron(labels, np.ones((8, 8), dtype=np.int64)).astype(np.uint8)  # (32, 48)
    colours = np.stack([np.arange(21) * 12, 255 - np.arange(21) * 12, (np.arange(21) * 37) % 256], 1)  # (21, 3)
    image = colours[mask].astype(np.uint8)  # (32, 48, 3)
    return torch.from_numpy(image).permute(2, 0, 1).contiguous(), torch.from_numpy(mask), torch.tensor(colours)


def test_augmentation_keeps_image_and_mask_aligned():
    image, mask, colours = _coloured_pair()
    torch.manual_seed(0)
    flip_only = TrainTransform(crop=32, scale=(1.0, 1.0))
    seen = set()
    for _ in range(16):  # no scaling and a crop of the full height: exactly the image or its mirror
        x, y = flip_only(image, mask)
        pixels = (x * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)) * 255
        assert torch.allclose(pixels, colours[y].permute(2, 0, 1).float(), atol=1e-3)
        seen.add(bool(y[0, 0] < y[0, -1]))  # row 0 holds classes 0..5 left to right: increasing unless flipped
    assert len(seen) == 2  # flipped and unflipped crops both occurred
    scaled = TrainTransform(crop=40, scale=(0.5, 2.0))
    for _ in range(20):
        x, y = scaled(image, mask)
        assert x.shape == (3, 40, 40) and y.shape == (40, 40)
        pixels = ((x * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)) * 255).permute(1, 2, 0)
        labelled = y != IGNORE
        assert labelled.any() and (x.permute(1, 2, 0)[~labelled] == 0).all()  # padding: the mean, label 255
        # Away from label edges (one label in the 3x3 neighbourhood, off the crop border) bilinear reads only pixels
        # of that block (scales 0.5-2), so the colour is exactly the label's; a misaligned mask breaks this.
        yf = y[None, None].float()
        interior = (F.max_pool2d(yf, 3, 1, 1) == -F.max_pool2d(-yf, 3, 1, 1))[0, 0] & labelled
        interior[[0, -1], :] = interior[:, [0, -1]] = False
        assert interior.sum() > 100
        assert ((pixels[interior] - colours[y[interior]].float()).abs().amax(1) < 1).all()


# -- bad inputs ------------------------------------------------------------------------------------
def test_missing_data_names_the_layout_and_what_to_do(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        VOC2012(VOCConfig(data_dir=str(tmp_path / "nowhere"))).prepare_data()
    message = str(err.value)
    assert "VOCdevkit/VOC2012" in message and "task.data_dir" in message and "task.download=true" in message
    voc = write_tree(tmp_path / "d", {"t": MASK_A}, {"v": MASK_B})
    (voc / "ImageSets/Segmentation/val.txt").unlink()
    with pytest.raises(DataNotFoundError, match="val.txt"):
        VOC2012(VOCConfig(data_dir=str(tmp_path / "d"))).prepare_data()


def _no_mask(voc):
    (voc / "SegmentationClass" / "v.png").unlink()


def _small_mask(voc):
    _palette_png(MASK_B[:3], voc / "SegmentationClass" / "v.png")


def _label_30(voc):
    _palette_png(np.where(MASK_B == 1, 30, MASK_B).astype(np.uint8), voc / "SegmentationClass" / "v.png")


def _rgb_mask(voc):
    Image.fromarray(np.zeros((*MASK_B.shape, 3), dtype=np.uint8)).save(voc / "SegmentationClass" / "v.png")


@pytest.mark.parametrize(
    "damage, message",
    [
        (_no_mask, "has no mask .*v.png"),
        (_small_mask, "v.png is 6x3 but its image .*v.jpg is 6x4"),
        (_label_30, "v.png holds label values \\[30\\] outside 0..20 and 255"),
        (_rgb_mask, "v.png is a RGB image"),
    ],
    ids=["image-without-mask", "mask-size", "label-values", "rgb-mask"],
)
def test_bad_masks_raise_data_errors_naming_the_file(tmp_path, damage, message):
    voc = write_tree(tmp_path, {"t": MASK_A, "u": MASK_A}, {"v": MASK_B})
    damage(voc)
    task = VOC2012(VOCConfig(data_dir=str(tmp_path), crop_size=8, workers=0))
    with pytest.raises(DataError, match=message):
        task.prepare_data()  # missing files and sizes: here
        next(iter(task.loader("test", 1)))  # values and modes: when the item is read


def test_a_search_on_voc_is_refused_at_config_time():
    with pytest.raises(ConfigError, match="transfer-only.*method fixed"):
        load_config("smoke/darts_v2-voc2012", ["search.epochs=5"])
    with pytest.raises(ConfigError, match="output_stride must be 16 or 8"):
        VOCTrainConfig(output_stride=32)
    with pytest.raises(ConfigError, match="batch_size must be >= 2"):
        VOCTrainConfig(batch_size=1)
    with pytest.raises(ConfigError, match="channels must be even"):
        VOCTrainConfig(channels=5)


# -- network and recipe ----------------------------------------------------------------------------
@pytest.mark.parametrize("output_stride", [16, 8])
def test_backbone_output_stride_and_logits_at_the_input_size(output_stride):
    task = VOC2012(VOCConfig(crop_size=64))
    recipe = VOCTrainConfig(channels=4, layers=5, aspp_channels=8, output_stride=output_stride)
    net = task.build_network(DARTS_V2, recipe).eval()
    assert net.backbone.strides.count(2) == (1 if output_stride == 16 else 0)  # reduce cells: at 1 and 3
    assert net.backbone(torch.zeros(1, 3, 64, 64)).shape[-1] == 64 // output_stride
    assert net(torch.zeros(2, 3, 50, 38)).shape == (2, 21, 50, 38)  # padded to the stride inside, cropped back
    rates = [branch[0].dilation[0] for branch in net.aspp.branches[1:]]
    assert rates == ([6, 12, 18] if output_stride == 16 else [12, 24, 36])
    assert net.num_parameters() > 0 and count_macs(net, task.example_input()).total > 0


def test_paper_sized_backbone_is_the_imagenet_network_without_its_classifier():
    net = VOC2012(VOCConfig()).build_network(DARTS_V2, VOCTrainConfig())  # C = 48, 14 cells, ASPP 256
    imagenet = NetworkImageNet(DARTS_V2, channels=48, num_classes=1000, layers=14)
    assert count_parameters(net.backbone) == count_parameters(imagenet) - count_parameters(imagenet.classifier)
    assert count_parameters(net) == 9_987_533  # 3,949,752 backbone + 6,037,781 ASPP and classifier


def test_poly_schedule_runs_from_lr_to_zero_per_iteration(hand_task):
    recipe = VOCTrainConfig(channels=4, layers=3, aspp_channels=8, epochs=2, batch_size=2, lr=0.01)
    net = hand_task.build_network(DARTS_V2, recipe)
    optimizer = hand_task.make_optimizer(net, recipe)
    lrs = []
    for epoch in range(2):
        state = hand_task.start_epoch(net, optimizer, epoch, recipe)
        for _ in range(state.steps):  # one train image pair per batch of 2: one iteration per epoch
            state.step()
            lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.01, 0.01 * 0.5**0.9])


def test_backbone_weights_load_by_name(tmp_path):
    recipe = VOCTrainConfig(channels=4, layers=3, aspp_channels=8)
    task = VOC2012(VOCConfig(crop_size=32))
    torch.manual_seed(0)
    source = task.build_network(DARTS_V2, recipe)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in source.backbone.state_dict().items()}, str(path))  # ImageNet-style names
    torch.manual_seed(1)
    loaded = task.build_network(
        DARTS_V2, VOCTrainConfig(channels=4, layers=3, aspp_channels=8, backbone_weights=str(path))
    )
    assert torch.equal(loaded.backbone.stem0[0].weight, source.backbone.stem0[0].weight)
    assert not torch.equal(loaded.classifier.weight, source.classifier.weight)  # the head stays fresh
    with pytest.raises(DataError, match="no stem0/stem1/cells weights"):
        save_file({"other": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
        task.build_network(
            DARTS_V2,
            VOCTrainConfig(backbone_weights=str(tmp_path / "other.safetensors"), channels=4, layers=3, aspp_channels=8),
        )


def test_imagenet_network_weights_fill_the_backbone(tmp_path):
    imagenet = NetworkImageNet(DARTS_V2, channels=8, num_classes=10, layers=5)
    save_model(imagenet, str(tmp_path / "model.safetensors"))  # as an imagenet run writes it
    recipe = VOCTrainConfig(channels=8, layers=5, aspp_channels=8, backbone_weights=str(tmp_path / "model.safetensors"))
    net = VOC2012(VOCConfig(crop_size=32)).build_network(DARTS_V2, recipe)
    theirs = imagenet.state_dict()
    same = [k for k, v in net.backbone.state_dict().items() if k in theirs and torch.equal(v, theirs[k])]
    # all but the input reduction of the cell after the stride-1 reduce cell (ReLUConvBN there, FactorizedReduce there)
    assert not [k for k in net.backbone.state_dict() if k not in same and not k.startswith("cells.4.preprocess0")]
    assert any(k.startswith("cells.3.") for k in same)  # the stride-1 reduce cell's ops keep their weights


# -- no supernet, and end to end --------------------------------------------------------------------
def test_voc_builds_no_supernet_and_says_what_to_do_instead():
    # The other conformance checks run over the registry (tests/tasks/test_conformance.py).
    task = TASKS.get("voc2012")(VOCConfig(crop_size=32))
    with pytest.raises(ConfigError, match="no search supernet.*transfer_from.*method: fixed"):
        task.build_supernet(SPACES.get("dag"), VOCSearchConfig())


def test_published_cell_run_sits_beside_its_paper_row(tmp_path):
    root = write_voc_fixture(tmp_path / "data", n_train=8, n_val=4)
    cfg = load_config("smoke/darts_v2-voc2012", [f"task.data_dir={root}"])
    record = run_experiment(cfg, tmp_path / "run", progress=False).record
    table = comparison_table([record], "voc2012")
    assert table["Architecture"].tolist() == ["DARTS", "DARTS", "DARTS-EGS"]  # the run under the DARTS row
    ours = table[table["Preset"] == "smoke"].iloc[0]
    assert ours["mIoU (%)"] == record["metrics"]["test_miou"] and ours["Reported (%)"] == 75.4


def test_fixed_transfer_run_end_to_end(tmp_path):
    root = write_voc_fixture(tmp_path / "data", n_train=8, n_val=4)
    cifar_run = tmp_path / "cifar-run"
    cifar_run.mkdir()
    GENOTYPES.get("egs_released_m7").save(cifar_run / "genotype.json")  # as a CIFAR-10 run folder holds it
    cfg = load_config("smoke/darts_v2-voc2012", [f"task.data_dir={root}", f"method.genotype={cifar_run}"])
    record = run_experiment(cfg, tmp_path / "run", progress=False).record
    m = record["metrics"]
    assert 0 <= m["test_miou"] <= 100 and 0 <= m["test_pixel_accuracy"] <= 100 and m["params_m"] > 0
    assert record["config"]["method"]["genotype"] == str(cifar_run)  # where the cell came from
    assert record["extras"]["genotype_source"]["path"] == str((cifar_run / "genotype.json").resolve())
    assert record["genotype"] == GENOTYPES.get("egs_released_m7").to_dict()
    assert record["extras"]["data_roles"]["test"].startswith("VOC2012 val")
    assert record["data"]["sizes"] == {"search-train": 4, "search-val": 4, "train": 8, "test": 4}

"""PASCAL VOC 2012 semantic segmentation: the transfer task of the paper's Section 4.3.2.

The paper reports mIoU on VOC 2012 for cells searched on CIFAR-10 (DARTS 75.4 %, DARTS-EGS
76.8 %) and gives nothing else: no network, recipe, split, crop or pretraining. Everything
below is this benchmark's choice, taken from DeepLabv3 (Chen et al. 2017, arXiv:1706.05587,
Sec. 4) and torchvision's segmentation reference where the paper is silent.

Data: torchvision's ``VOCSegmentation`` layout under ``task.data_dir`` (the folder holding
``VOCdevkit``, ``VOCdevkit`` itself or ``VOC2012`` itself):
``VOCdevkit/VOC2012/{JPEGImages/*.jpg, SegmentationClass/*.png, ImageSets/Segmentation/{train,val}.txt}``.
Masks are palette (P) PNGs whose indices are the labels, 0..20, 255 = boundary / ignore. The
SBD augmented training set is used when present (``task.sbd: null``; ``true`` requires it,
``false`` ignores it) in the usual DeepLab layout: grey (L) or palette PNGs in
``VOC2012/SegmentationClassAug/`` and the list ``ImageSets/Segmentation/train_aug.txt`` (or
``ImageSets/SegmentationAug/train_aug.txt``; lines are ids or DeepLab's
``/JPEGImages/x.jpg /SegmentationClassAug/x.png`` pairs). train = VOC train + SBD train_aug,
minus every VOC val image (10,582 images); the raw SBD ``benchmark_RELEASE`` ``.mat`` files are
not read (convert them to SegmentationClassAug first). The reported split (``test``) is VOC
val (1,449 images): the test server's labels are not public, and DeepLab reports val too.
search-train / search-val are the halves of a fixed permutation of train (they exist for the
Task protocol; nothing searches on them, see below). Images stream from disk, one file per item
(a ``Dataset`` read by DataLoader workers, ``task.workers``); nothing decodes the whole set, and
``DataInfo.sha256`` hashes every used file's name and size, not its pixels (reading 2 GB at every
start would be slow).
Problems name the file: a listed image without its JPEG or mask, and a mask of another size than
its image (file headers, read for every used pair), fail in ``prepare_data``; a label outside 0..20
and 255 or an RGB mask fails when the item is read (in a worker, the DataError carries the worker's
traceback).

Augmentation (train, search splits): random scale in [0.5, 2.0] (image bilinear, mask
nearest-exact), pad bottom/right to the crop (image with the mean, i.e. 0 after
normalisation; mask with 255), random ``crop_size`` crop (513 at the paper preset),
horizontal flip with p = 0.5, ImageNet mean/std normalisation. Evaluation is on the whole
image at its own size: each image is padded bottom/right (mean / 255) onto a canvas of
``crop_size`` square (every VOC image, at most 500 x 500, fits a 513 canvas, as in DeepLab's
evaluation), or onto the batch's largest size when an image is larger than the canvas; padded
pixels carry 255 and never count.

Network (:class:`SegmentationNetwork`): the backbone is the cell network of a genotype with
DARTS's ImageNet stems (two stride-2 3x3 convs, then a third: stride 8), ``layers`` cells with
the reduction cells at ``layers // 3`` and ``2 * layers // 3``, as ``NetworkImageNet``. For an
output stride of 16 the first reduction cell keeps its stride 2 (stride 16) and the second runs
the *reduce* genotype at stride 1 (its ops built non-strided, channels still doubled), so the
last third of the cells stays at stride 16; output stride 8 runs both reduce cells at stride 1.
DeepLab keeps the resolution of ResNet's last blocks with atrous convolution; DARTS ops have
fixed dilations, so the cells are left as they are and the head supplies the large receptive
fields. The network pads its input bottom/right to a multiple of the output stride (DARTS's
``FactorizedReduce`` needs even sides at every reduction; 513 -> 528) and crops the logits
back. Head: DeepLabv3's ASPP: a 1x1 conv, three 3x3 atrous convs (rates 6/12/18 at OS 16,
doubled at OS 8), image pooling (global average -> 1x1 conv, upsampled), each conv-BN-ReLU with
``aspp_channels`` (256); concat -> 1x1 projection -> BN -> ReLU -> dropout (0.5, torchvision's
ASPP) -> 1x1 classifier (21) -> bilinear upsampling to the input. No auxiliary head, no decoder.
Sizes at the paper preset (C = 48, 14 cells, ASPP 256, 513 x 513): DARTS_V2 9,987,533 parameters
(backbone 3,949,752, exactly ``NetworkImageNet`` without its classifier; head 6,037,781) and
11.60 G multiply-adds; egs_released_m7 10,229,933 (backbone 4,192,152: its reduce cell's
skip_connect from the inputs is an identity at stride 1, not a ``FactorizedReduce``) and 11.78 G.
The backbone is trained from scratch unless ``evaluate.backbone_weights`` names the
``model.safetensors`` of a run of the same genotype (an ImageNet run): its stem and cell
weights of matching name and shape are loaded. DeepLab's backbones are ImageNet-pretrained,
and the paper's numbers are unlikely to be reachable without that.

Recipe (DeepLabv3 Sec. 4.1): SGD, momentum 0.9, weight decay 1e-4, lr 0.007 with the poly
schedule ``lr * (1 - iter / max_iter) ** 0.9`` per iteration, batch 16, 30k iterations
(46 epochs of 661 full batches of 10,582 images: 30,406), cross entropy with ``ignore_index`` 255.
Deviations: gradients are clipped at 5 (the runner always clips; DARTS's value), BN statistics
are per process (no SyncBN), and the last partial training batch is dropped (the image-pooling
branch's BN needs two or more images per batch).

Metric: a 21 x 21 confusion matrix (rows label, columns prediction) over the non-ignored
pixels, exact integer counts (``torch.bincount``, held in float64: exact below 2^53 pixels),
summed over batches and processes by the runner; then IoU_c = TP / (TP + FP + FN) and mIoU =
the mean over the classes whose union is non-zero (TensorFlow's ``mean_iou``, DeepLab's metric;
torchvision's reference returns NaN when a class is absent from both). On VOC val every class
is present, so the two agree. Also pixel accuracy and the mean loss per valid pixel.

Transfer only: the paper searches on CIFAR-10 and transfers the cells; a search here is refused
at config time (``search.epochs`` must be 0; a method that trains no supernet, random's
``darts_baseline``, passes that check and would train its candidates on the search halves).
Evaluate a cell with method ``fixed``:
``egsbench run paper/darts_v2-voc2012 --set task.data_dir=DIR``, with ``--set method.genotype=RUN``
(a CIFAR-10 run folder or its ``genotype.json``) for a searched cell; the record keeps the genotype
and where it came from (``extras.genotype_source``: the file, its sha256 and the source run).
The runner still builds a supernet for every run; :class:`SegmentationSupernet` (DARTS's CIFAR
supernet with a per-pixel classifier) exists for that and for the conformance checks, and is
never trained.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ...core.errors import check_range
from ..base import SPLITS, TASKS, CNNSearchConfig, DataInfo, Metric, Task
from ..spaces import (
    Cell,
    ConfigError,
    DataError,
    DataNotFoundError,
    EdgeWeights,
    Genotype,
    LossOutput,
    SearchNetwork,
    SearchSpace,
    active_ops,
    count_parameters,
)
from ..spaces.cell import ScheduledDropPath
from ..spaces.cnn import cell_stack, imagenet_stems
from ..training import no_swap, set_lr, sgd

__all__ = [
    "ASPP",
    "CLASSES",
    "CellBackbone",
    "SegmentationNetwork",
    "SegmentationSupernet",
    "VOC2012",
    "VOCConfig",
    "VOCSearchConfig",
    "VOCTrainConfig",
    "confusion_matrix",
    "segmentation_metrics",
    "write_voc_fixture",
]

CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
           "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
           "tvmonitor")  # fmt: skip
NUM_CLASSES = len(CLASSES)  # 21
IGNORE = 255  # boundary / void pixels in VOC masks
MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics, as every ImageNet-style backbone expects
STD = (0.229, 0.224, 0.225)
LAYOUT = "VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation/{train,val}.txt}"
AUG_LISTS = ("ImageSets/Segmentation/train_aug.txt", "ImageSets/SegmentationAug/train_aug.txt")
TRANSFER_ONLY = (
    "task voc2012 is transfer-only (the paper searches on CIFAR-10 and transfers the cell): search.epochs must be 0. "
    "Transfer a CIFAR-10 search (transfer_from: paper/egs-cifar10, as paper/egs-voc2012) or train a cell with "
    "method fixed, e.g. egsbench run paper/darts_v2-voc2012 --set method.genotype=RUN (the CIFAR-10 run folder)"
)


logger = logging.getLogger(__name__)


def default_data_dir() -> str:
    return os.environ.get("EGSBENCH_VOC", str(Path.home() / ".cache" / "egsbench" / "datasets" / "voc"))


# -- configs -------------------------------------------------------------------------------------
@dataclass
class VOCConfig:
    data_dir: str | None = None  # holds VOCdevkit (or is VOCdevkit / VOC2012); None: $EGSBENCH_VOC or ~/.cache/...
    download: bool = False  # torchvision's VOCSegmentation download (2 GB) into data_dir, only when asked
    sbd: bool | None = None  # SBD train_aug (SegmentationClassAug): None = when present, true = required
    train_limit: int | None = None  # the first N of a fixed permutation of train (proxy and smoke presets)
    test_limit: int | None = None
    split_seed: int = 0  # permutation behind the limits and the search halves
    crop_size: int = 513  # training crop and evaluation canvas (DeepLab: 513)
    scale_min: float = 0.5  # random scale range of training images
    scale_max: float = 2.0
    workers: int = 4  # DataLoader worker processes decoding images (0: in the main process)

    def __post_init__(self):
        check_range("task.train_limit", self.train_limit, low=2)  # two search halves of at least one image
        check_range("task.test_limit", self.test_limit, low=1)
        check_range("task.crop_size", self.crop_size, low=8)
        check_range("task.scale_min", self.scale_min, low=0, low_open=True)
        check_range("task.scale_max", self.scale_max, low=self.scale_min)
        check_range("task.workers", self.workers, low=0)


@dataclass
class VOCSearchConfig(CNNSearchConfig):
    """The ``search:`` block: no search on VOC (epochs 0); it sizes the supernet the runner builds and never trains."""

    epochs: int = 0
    batch_size: int = 8
    channels: int = 4
    layers: int = 3

    def __post_init__(self):
        if self.epochs != 0:
            raise ConfigError(TRANSFER_ONLY)
        super().__post_init__()


@dataclass
class VOCTrainConfig:
    """The ``evaluate:`` block: DeepLabv3's VOC recipe on a cell backbone (see the module docstring)."""

    epochs: int = 46  # 46 x 661 iterations of batch 16 on train_aug = 30,406 ~ DeepLabv3's 30k
    batch_size: int = 16  # per process; >= 2 (the image-pooling branch's BN)
    channels: int = 48  # C of the cell backbone (DARTS's ImageNet network: 48 and 14 cells)
    layers: int = 14
    output_stride: int = 16  # 16 or 8: input size / backbone feature size
    aspp_channels: int = 256
    aspp_rates: list[int] = field(default_factory=lambda: [6, 12, 18])  # at output stride 16; doubled at 8
    dropout: float = 0.5  # after the ASPP projection (torchvision's ASPP)
    lr: float = 0.007
    poly_power: float = 0.9  # lr * (1 - iter / max_iter) ** poly_power, per iteration
    momentum: float = 0.9
    weight_decay: float = 1e-4
    grad_clip: float = 5.0  # DeepLab does not clip; the runner always does, at DARTS's value
    drop_path: float = 0.0  # DARTS's ImageNet recipe trains without drop path
    backbone_weights: str | None = None  # model.safetensors of a run of the same genotype (e.g. ImageNet)
    max_steps_per_epoch: int | None = None  # None = one pass over train
    eval_every: int = 0  # mIoU on val every N epochs for the curves (0: only after the last epoch)

    def __post_init__(self):
        for key in ("epochs", "channels", "layers", "aspp_channels", "max_steps_per_epoch"):
            check_range(f"evaluate.{key}", getattr(self, key), low=1)
        check_range("evaluate.batch_size", self.batch_size, low=2)
        if self.channels % 2:
            raise ConfigError(f"config key evaluate.channels must be even (the stem's C/2, FactorizedReduce), got "
                              f"{self.channels}")  # fmt: skip
        if self.output_stride not in (8, 16):
            raise ConfigError(f"config key evaluate.output_stride must be 16 or 8, got {self.output_stride}")
        if not self.aspp_rates or min(self.aspp_rates) < 1:
            raise ConfigError(f"config key evaluate.aspp_rates must be dilation rates >= 1, got {self.aspp_rates}")
        check_range("evaluate.lr", self.lr, low=0, low_open=True)
        check_range("evaluate.momentum", self.momentum, 0, 1, high_open=True)
        for key in ("poly_power", "weight_decay", "eval_every"):
            check_range(f"evaluate.{key}", getattr(self, key), low=0)
        check_range("evaluate.grad_clip", self.grad_clip, low=0, low_open=True)
        check_range("evaluate.dropout", self.dropout, 0, 1, high_open=True)
        check_range("evaluate.drop_path", self.drop_path, 0, 1, high_open=True)


# -- data ----------------------------------------------------------------------------------------
def find_voc(data_dir: str | None, download: bool = False, sbd: bool | None = None) -> Path:
    """The ``VOC2012`` folder under ``data_dir`` (downloaded there when asked), checked; else ``DataNotFoundError``."""
    root = Path(os.path.expanduser(data_dir or default_data_dir()))
    candidates = (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root)
    voc = next((c for c in candidates if (c / "JPEGImages").is_dir()), None)
    if voc is None and download:
        try:
            from torchvision.datasets import VOCSegmentation

            VOCSegmentation(str(root), year="2012", image_set="trainval", download=True)  # checks the tar's md5
            voc = root / "VOCdevkit" / "VOC2012"
        except Exception as err:  # network errors come in many types; the message is what matters
            raise DataNotFoundError(f"PASCAL VOC 2012 download into {root} failed ({type(err).__name__}: {err}); "
                                    "copy the data there or pass --set task.data_dir=PATH") from None  # fmt: skip
    if voc is None:
        raise DataNotFoundError(
            f"PASCAL VOC 2012 not found under {root} (expected {root}/{LAYOUT}, torchvision's VOCSegmentation "
            "layout); untar VOCtrainval_11-May-2012.tar (host.robots.ox.ac.uk/pascal/VOC/voc2012) there, pass "
            "--set task.data_dir=PATH, or --set task.download=true to fetch it"
        )
    for need in ("SegmentationClass", "ImageSets/Segmentation/train.txt", "ImageSets/Segmentation/val.txt"):
        if not (voc / need).exists():
            raise DataNotFoundError(f"{voc} lacks {need} (expected {LAYOUT}); the segmentation part of "
                                    "VOCtrainval_11-May-2012.tar has it: untar the whole archive there")  # fmt: skip
    if sbd and _find_sbd(voc) is None:
        raise DataNotFoundError(
            f"task.sbd is true but {voc} has no SegmentationClassAug/ with {' or '.join(AUG_LISTS)}; add the SBD "
            "augmented masks (SegmentationClassAug.zip, as DeepLab uses) and train_aug.txt, or set task.sbd=null"
        )
    return voc


def _find_sbd(voc: Path) -> Path | None:
    """The train_aug list when the SBD augmented masks are there."""
    if not (voc / "SegmentationClassAug").is_dir():
        return None
    return next((voc / rel for rel in AUG_LISTS if (voc / rel).is_file()), None)


def _read_ids(path: Path) -> list[str]:
    """Ids of a list file: one per line, or DeepLab's ``/JPEGImages/x.jpg /SegmentationClassAug/x.png`` pairs."""
    ids = [Path(line.split()[0]).stem for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DataError(f"{path} lists no images; it should hold one image id per line")
    return ids


def voc_items(voc: Path, sbd: bool | None) -> tuple[dict[str, list[tuple[Path, Path]]], dict[str, str]]:
    """``({"train": [(image, mask)...], "test": [...]}, roles)``; every listed image must have its JPEG and mask."""
    lists = voc / "ImageSets" / "Segmentation"
    val = _read_ids(lists / "val.txt")
    train = [(i, voc / "SegmentationClass") for i in _read_ids(lists / "train.txt")]
    aug = _find_sbd(voc) if sbd is not False else None
    roles = {"train": f"VOC2012 train ({len(train)} images)", "test": f"VOC2012 val ({len(val)} images)"}
    if aug is not None:
        seen = {i for i, _ in train} | set(val)  # SBD overlaps VOC val: those images never train
        extra = [(i, voc / "SegmentationClassAug") for i in dict.fromkeys(_read_ids(aug)) if i not in seen]
        train += extra
        roles["train"] += f" + {len(extra)} SBD images from {aug.name} (SegmentationClassAug), minus VOC val"
    images = {p.stem for p in (voc / "JPEGImages").iterdir() if p.suffix == ".jpg"}
    masks: dict[Path, set[str]] = {}
    out = {}
    for split, entries in (("train", train), ("test", [(i, voc / "SegmentationClass") for i in val])):
        items = []
        for i, folder in entries:
            if i not in images:
                raise DataError(f"{voc / 'JPEGImages' / (i + '.jpg')} is listed in ImageSets but missing; restore it")
            if folder not in masks:
                masks[folder] = {p.stem for p in folder.iterdir() if p.suffix == ".png"}
            if i not in masks[folder]:
                raise DataError(f"image {voc / 'JPEGImages' / (i + '.jpg')} has no mask {folder / (i + '.png')}; "
                                "restore the mask or remove the id from the list")  # fmt: skip
            items.append((voc / "JPEGImages" / f"{i}.jpg", folder / f"{i}.png"))
        out[split] = items
    return out, roles


def read_pair(image_path: Path, mask_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``(image (3, H, W) uint8, mask (H, W) uint8)``; raise ``DataError`` naming the file on any problem."""
    try:
        with Image.open(image_path) as img:
            image = np.array(img.convert("RGB"), dtype=np.uint8)  # (H, W, 3), writable
        with Image.open(mask_path) as m:
            if m.mode not in ("P", "L"):
                raise DataError(f"mask {mask_path} is a {m.mode} image; VOC masks are palette (P) or grey (L) PNGs "
                                "whose values are the labels: convert colours to palette indices")  # fmt: skip
            mask = np.asarray(m, dtype=np.uint8)  # (H, W): palette indices = labels
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{image_path} or {mask_path} is not a readable image ({err}); replace that file") from None
    if mask.shape != image.shape[:2]:
        raise DataError(f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image {image_path} is "
                        f"{image.shape[1]}x{image.shape[0]}; they must be the same size")  # fmt: skip
    bad = (mask >= NUM_CLASSES) & (mask != IGNORE)
    if bad.any():
        raise DataError(f"mask {mask_path} holds label values {sorted(set(mask[bad].tolist()))[:8]} outside 0..20 and "
                        "255 (VOC's 21 classes and ignore); fix or remove that mask")  # fmt: skip
    return torch.from_numpy(image).permute(2, 0, 1).contiguous(), torch.from_numpy(mask.copy())


class TrainTransform:
    """Random scale, pad, random crop and flip of one (image, mask) pair; returns a normalised float image and
    int64 labels. Draws from torch's global generator (seeded per worker by the DataLoader)."""

    def __init__(self, crop: int, scale: tuple[float, float], mean=MEAN, std=STD):
        self.crop, self.scale = crop, scale
        self.mean, self.std = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = torch.empty(()).uniform_(*self.scale).item()
        H, W = mask.shape
        h, w = max(1, round(H * s)), max(1, round(W * s))
        x = F.interpolate(image[None].float(), size=(h, w), mode="bilinear", align_corners=False)[0]  # (3, h, w)
        y = F.interpolate(mask[None, None].float(), size=(h, w), mode="nearest-exact")[0, 0]  # (h, w), exact labels
        x = (x / 255.0 - self.mean) / self.std
        ph, pw = max(self.crop - h, 0), max(self.crop - w, 0)
        x = F.pad(x, (0, pw, 0, ph), value=0.0)  # 0 = the mean after normalisation
        y = F.pad(y, (0, pw, 0, ph), value=float(IGNORE))
        top = torch.randint(0, y.shape[0] - self.crop + 1, ()).item()
        left = torch.randint(0, y.shape[1] - self.crop + 1, ()).item()
        x = x[:, top : top + self.crop, left : left + self.crop]
        y = y[top : top + self.crop, left : left + self.crop]
        if torch.rand(()) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        return x.contiguous(), y.long()  # (3, crop, crop), (crop, crop)


class EvalTransform:
    """Normalisation only: the whole image at its own size."""

    def __init__(self, mean=MEAN, std=STD):
        self.mean, self.std = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (image.float() / 255.0 - self.mean) / self.std, mask.long()


class PadCollate:
    """Pad a batch bottom/right onto a ``size``-square canvas (or the batch's largest image): images with 0 (the
    mean), labels with 255, so padding never counts."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, samples: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        H = max(self.size, *(y.shape[0] for _, y in samples))
        W = max(self.size, *(y.shape[1] for _, y in samples))
        x = torch.zeros(len(samples), 3, H, W)
        y = torch.full((len(samples), H, W), IGNORE, dtype=torch.int64)
        for i, (xi, yi) in enumerate(samples):
            x[i, :, : yi.shape[0], : yi.shape[1]] = xi
            y[i, : yi.shape[0], : yi.shape[1]] = yi
        return x, y  # (B, 3, H, W), (B, H, W)


class VOCFiles(Dataset):
    """(image, mask) file pairs read one item at a time."""

    def __init__(self, items: list[tuple[Path, Path]], transform):
        self.items, self.transform = items, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(*read_pair(*self.items[index]))


def check_sizes(items: list[tuple[Path, Path]]) -> None:
    """Every mask the size of its image, from the file headers (no decoding); ``DataError`` naming the pair."""
    for image_path, mask_path in items:
        try:
            with Image.open(image_path) as img, Image.open(mask_path) as m:
                image_size, mask_size = img.size, m.size  # (W, H)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise DataError(f"{image_path} or {mask_path} is not a readable image ({err}); replace that file") from None
        if image_size != mask_size:
            raise DataError(f"mask {mask_path} is {mask_size[0]}x{mask_size[1]} but its image {image_path} is "
                            f"{image_size[0]}x{image_size[1]}; they must be the same size")  # fmt: skip


def _checksum(items: dict[str, list[tuple[Path, Path]]]) -> str:
    """sha256 of every used file's name and size per split (not the pixels: hashing 2 GB at every start is slow)."""
    h = hashlib.sha256()
    for split in sorted(items):
        for image, mask in items[split]:
            h.update(f"{split}|{image.name}|{image.stat().st_size}|{mask.parent.name}/{mask.name}|"
                     f"{mask.stat().st_size}\n".encode())  # fmt: skip
    return h.hexdigest()


# -- networks ------------------------------------------------------------------------------------
def _conv_bn_relu(c_in: int, c_out: int, kernel: int = 1, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel - 1) // 2
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, padding=padding, dilation=dilation, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=False))  # fmt: skip


class CellBackbone(ScheduledDropPath, nn.Module):
    """The cell network of a genotype at output stride 16 or 8 (see the module docstring).

    The stems and cells are :class:`~.spaces.cnn.NetworkImageNet`'s, built here because the second reduction
    cell runs at stride 1; ``stem0``/``stem1``/``cells`` carry its names, so its weights load by name.
    """

    def __init__(self, genotype: Genotype, channels: int, layers: int, output_stride: int = 16, in_channels: int = 3):
        super().__init__()
        self.drop_path_prob = 0.0
        self.stem0, self.stem1 = imagenet_stems(in_channels, channels)  # strides 4 and 8
        # stem0's output is at twice stem1's resolution; at output stride 16 only the first reduce cell strides
        self.cells, self.out_channels, _ = cell_stack(Cell, genotype, layers, channels, channels, channels,
                                                      reduction_prev=True, strided_reductions=1 if output_stride == 16
                                                      else 0)  # fmt: skip

    @property
    def strides(self) -> list[int]:
        """Each cell's stride, 1 or 2."""
        return [2 if cell.reduction else 1 for cell in self.cells]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = self.stem0(x)  # (B, C, H/4, W/4)
        s1 = self.stem1(s0)  # (B, C, H/8, W/8)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, self.drop_path_arg())
        return s1  # (B, out_channels, H/os, W/os)


class ASPP(nn.Module):
    """DeepLabv3's atrous spatial pyramid pooling, ending in the projection (BN, ReLU, dropout)."""

    def __init__(self, c_in: int, c_out: int, rates: tuple[int, ...], dropout: float):
        super().__init__()
        self.branches = nn.ModuleList([_conv_bn_relu(c_in, c_out, 1)] + [_conv_bn_relu(c_in, c_out, 3, r)
                                                                         for r in rates])  # fmt: skip
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), _conv_bn_relu(c_in, c_out, 1))  # image-level features
        self.project = nn.Sequential(_conv_bn_relu((len(rates) + 2) * c_out, c_out, 1), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.interpolate(self.pool(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.project(torch.cat([b(x) for b in self.branches] + [pooled], dim=1))  # (B, c_out, h, w)


class SegmentationNetwork(nn.Module):
    """Cell backbone + ASPP + 1x1 classifier, logits upsampled to the input: ``forward(x) -> (B, classes, H, W)``."""

    def __init__(self, genotype: Genotype, channels: int, layers: int, num_classes: int = NUM_CLASSES,
                 output_stride: int = 16, aspp_channels: int = 256, aspp_rates: tuple[int, ...] = (6, 12, 18),
                 dropout: float = 0.5):  # fmt: skip
        super().__init__()
        self.output_stride = output_stride
        self.backbone = CellBackbone(genotype, channels, layers, output_stride)
        self.aspp = ASPP(self.backbone.out_channels, aspp_channels, tuple(aspp_rates), dropout)
        self.classifier = nn.Conv2d(aspp_channels, num_classes, 1)

    @property
    def drop_path_prob(self) -> float:
        return self.backbone.drop_path_prob

    @drop_path_prob.setter
    def drop_path_prob(self, value: float) -> None:
        self.backbone.drop_path_prob = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        ph, pw = -H % self.output_stride, -W % self.output_stride
        padded = F.pad(x, (0, pw, 0, ph))  # sides divisible by the output stride (0 = the mean)
        logits = self.classifier(self.aspp(self.backbone(padded)))  # (B, classes, H'/os, W'/os)
        logits = F.interpolate(logits, size=padded.shape[-2:], mode="bilinear", align_corners=False)
        return logits[..., :H, :W]  # (B, classes, H, W)

    def num_parameters(self) -> int:
        return count_parameters(self)


class SegmentationSupernet(SearchNetwork):
    """DARTS's CIFAR supernet with a per-pixel 1x1 classifier, logits upsampled to the input.

    Only for the Task protocol (the runner builds a supernet for every run) and the conformance checks:
    voc2012 refuses a search, so it is never trained.
    """

    def __init__(self, space: SearchSpace, channels: int, layers: int, num_classes: int, image_size: int):
        super().__init__(space, channels, num_classes, layers, image_size=image_size)
        self.classifier = nn.Conv2d(self.classifier.in_features, num_classes, 1)

    def forward(self, x: torch.Tensor, weights: EdgeWeights) -> torch.Tensor:
        H, W = x.shape[-2:]
        padded = F.pad(x, (0, -W % 4, 0, -H % 4))  # two reductions: sides divisible by 4
        active = {t: active_ops(w, self._zero_index) for t, w in weights.items()}
        drop_prob = self.drop_path_prob if self.training else 0.0
        s0 = s1 = self.stem(padded)
        for cell in self.cells:
            t = self.cell_type(cell)
            s0, s1 = s1, cell(s0, s1, weights[t], active[t], drop_prob)
        logits = F.interpolate(self.classifier(s1), size=padded.shape[-2:], mode="bilinear", align_corners=False)
        return logits[..., :H, :W]  # (B, classes, H, W)


def load_backbone_weights(net: SegmentationNetwork, path: str) -> int:
    """Load the stem and cell weights of ``path`` (safetensors) whose names and shapes match; returns how many."""
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise DataNotFoundError(f"evaluate.backbone_weights {path} is not a file; pass the model.safetensors of a run "
                                "of the same genotype")  # fmt: skip
    own = net.backbone.state_dict()
    found = {k: v for k, v in load_file(path).items() if k in own and own[k].shape == v.shape}
    if not found:
        raise DataError(f"{path} holds no stem0/stem1/cells weights of this backbone's names and shapes; was it "
                        "trained with the same genotype and channels?")  # fmt: skip
    net.backbone.load_state_dict(found, strict=False)
    logger.info(f"backbone: {len(found)} of its {len(own)} tensors loaded from {path}; the others (the input "
                "reduction of the cell after the stride-1 reduce cell) and the head start fresh")  # fmt: skip
    return len(found)


# -- metrics -------------------------------------------------------------------------------------
def confusion_matrix(pred: torch.Tensor, label: torch.Tensor, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """Exact ``(classes, classes)`` int64 counts over the non-ignored pixels: row = label, column = prediction."""
    valid = label != IGNORE
    index = label[valid] * num_classes + pred[valid]
    return torch.bincount(index.flatten(), minlength=num_classes**2).view(num_classes, num_classes)


def segmentation_metrics(cm: torch.Tensor) -> dict[str, float]:
    """mIoU (mean over classes with a non-zero union), pixel accuracy (both %) and the number of such classes."""
    cm = cm.double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    present = union > 0
    miou = 100.0 * (tp[present] / union[present]).mean().item() if present.any() else 0.0
    total = cm.sum().item()
    return {"miou": miou, "pixel_accuracy": 100.0 * tp.sum().item() / max(total, 1), "classes": int(present.sum())}


def _masked_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross entropy over the non-ignored pixels (0 when there are none, instead of NaN)."""
    total = F.cross_entropy(logits, y, ignore_index=IGNORE, reduction="sum")
    return total / (y != IGNORE).sum().clamp(min=1)


def _pixel_accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    valid = y != IGNORE
    return 100.0 * (logits.detach().argmax(1)[valid] == y[valid]).float().mean().nan_to_num(0.0).item()


class PolyLR:
    """DeepLab's poly schedule, set before every step: ``lr * (1 - iter / max_iter) ** power``."""

    def __init__(self, optimizer: torch.optim.Optimizer, config: VOCTrainConfig, epoch: int, steps: int):
        self.optimizer, self.config, self.steps = optimizer, config, steps
        self.iteration = epoch * steps  # from the epoch, so a resumed run continues the schedule

    def lr(self) -> float:
        progress = min(self.iteration / max(self.config.epochs * self.steps, 1), 1.0)
        return self.config.lr * (1.0 - progress) ** self.config.poly_power

    def step(self) -> None:
        set_lr(self.optimizer, self.lr())
        self.iteration += 1


# -- the task ------------------------------------------------------------------------------------
@TASKS.register("voc2012")
class VOC2012(Task):
    """PASCAL VOC 2012 segmentation of a transferred cell (see the module docstring)."""

    config_class = VOCConfig
    search_config_class = VOCSearchConfig
    train_config_class = VOCTrainConfig
    num_classes = NUM_CLASSES
    metrics = (
        Metric("miou", "max", "mIoU (%)"),
        Metric("pixel_accuracy", "max", "Pixel accuracy (%)"),
        Metric("loss", "min", "Test loss"),
    )
    main_metric = "miou"  # the paper reports mIoU
    score_key = "miou"
    reference_table = "voc2012"

    def __init__(self, config: VOCConfig):
        self.config = config
        self.items: dict[str, list[tuple[Path, Path]]] | None = None

    @classmethod
    def conformance_config(cls, tmp_path: Path) -> VOCConfig:
        """A VOC-layout fixture of 8 train and 4 val images under ``tmp_path``, 32-pixel crops, no workers."""
        root = write_voc_fixture(Path(tmp_path) / "voc", n_train=8, n_val=4)
        return VOCConfig(data_dir=str(root), crop_size=32, workers=0)

    @classmethod
    def conformance_recipes(cls) -> tuple[VOCSearchConfig, VOCTrainConfig]:
        """A 3-cell C=4 supernet and final network with an 8-channel ASPP (seconds on a CPU)."""
        return VOCSearchConfig(batch_size=4), VOCTrainConfig(channels=4, layers=3, epochs=1, batch_size=4,
                                                             aspp_channels=8)  # fmt: skip

    # -- data ------------------------------------------------------------------------------------
    def prepare_data(self) -> DataInfo:
        cfg = self.config
        voc = find_voc(cfg.data_dir, cfg.download, cfg.sbd)
        items, roles = voc_items(voc, cfg.sbd)
        checksum = _checksum(items)
        gen = torch.Generator().manual_seed(cfg.split_seed)
        train = [items["train"][i] for i in torch.randperm(len(items["train"]), generator=gen)[: cfg.train_limit]]
        test = items["test"]
        if cfg.test_limit is not None:
            test = [test[i] for i in torch.randperm(len(test), generator=gen)[: cfg.test_limit]]
        if len(train) < 2:
            raise DataError(f"{voc} lists {len(train)} training image(s); the search halves need at least 2")
        check_sizes(train + test)  # here, so a size mismatch fails before any output with one line
        half = len(train) // 2
        self.items = {"search-train": train[:half], "search-val": train[half : 2 * half], "train": train, "test": test}
        roles = roles | {"search-train": "first half of train", "search-val": "second half of train"}
        return DataInfo(source=f"voc:{voc}", sha256=checksum, sizes={s: len(v) for s, v in self.items.items()},
                        roles=roles)  # fmt: skip

    def loader(self, split: str, batch_size: int, generator: torch.Generator | None = None,
               recipe: VOCTrainConfig | None = None) -> DataLoader:  # fmt: skip
        if self.items is None:
            self.prepare_data()
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid splits: {SPLITS}")
        cfg = self.config
        training = split != "test"
        transform = TrainTransform(cfg.crop_size, (cfg.scale_min, cfg.scale_max)) if training else EvalTransform()
        data = VOCFiles(self.items[split], transform)
        return DataLoader(
            data,
            batch_size=batch_size,
            shuffle=training,
            drop_last=training and len(data) > batch_size,  # no batch of one for the image-pooling BN
            collate_fn=None if training else PadCollate(cfg.crop_size),
            generator=generator,
            num_workers=cfg.workers,
            persistent_workers=False,
        )

    # -- networks --------------------------------------------------------------------------------
    def build_supernet(self, space: SearchSpace, config: VOCSearchConfig) -> SegmentationSupernet:
        return SegmentationSupernet(space, config.channels, config.layers, self.num_classes, self.config.crop_size)

    def build_network(self, genotype: Genotype, config: VOCTrainConfig) -> SegmentationNetwork:
        rates = tuple(r * 16 // config.output_stride for r in config.aspp_rates)
        net = SegmentationNetwork(genotype, config.channels, config.layers, self.num_classes, config.output_stride,
                                  config.aspp_channels, rates, config.dropout)  # fmt: skip
        if config.backbone_weights:
            load_backbone_weights(net, config.backbone_weights)
        return net

    def example_input(self) -> torch.Tensor:
        return torch.zeros(1, 3, self.config.crop_size, self.config.crop_size)

    # -- losses and metrics ----------------------------------------------------------------------
    def search_loss(self, model: nn.Module, batch: Any, weights: EdgeWeights) -> LossOutput:
        x, y = batch
        logits = model(x, weights)
        return LossOutput(_masked_loss(logits, y), {"pixel_accuracy": _pixel_accuracy(logits, y)})

    def make_optimizer(self, model: nn.Module, config: VOCTrainConfig) -> torch.optim.SGD:
        return sgd(model, config)

    def _steps_per_epoch(self, config: VOCTrainConfig) -> int:
        """Iterations per epoch of the train loader, per process (as accelerate shards it)."""
        n = len(self.items["train"]) if self.items else 1
        batches = n // config.batch_size if n > config.batch_size else 1
        dist = torch.distributed
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        steps = math.ceil(batches / world)
        return min(steps, config.max_steps_per_epoch or steps)

    def start_epoch(self, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int,
                    config: VOCTrainConfig) -> PolyLR:  # fmt: skip
        schedule = PolyLR(optimizer, config, epoch, self._steps_per_epoch(config))
        set_lr(optimizer, schedule.lr())  # the epoch's first lr, which the curves report
        getattr(model, "module", model).drop_path_prob = config.drop_path * epoch / max(config.epochs, 1)
        return schedule

    def train_loss(self, model: nn.Module, batch: Any, config: VOCTrainConfig, state: PolyLR | None = None):
        if state is not None:
            state.step()  # this iteration's lr, before the runner's optimizer.step()
        x, y = batch
        logits = model(x)  # (B, classes, H, W)
        return LossOutput(_masked_loss(logits, y), {"pixel_accuracy": _pixel_accuracy(logits, y)})

    def end_epoch(self, model, optimizer, epoch: int, config: VOCTrainConfig, evaluate) -> dict[str, float]:
        return {}  # no validation split: the recipe trains a fixed number of iterations

    eval_weights = staticmethod(no_swap)

    @torch.no_grad()
    def eval_sums(self, model: nn.Module, batch: Any, weights: EdgeWeights | None = None) -> torch.Tensor:
        """The flattened confusion matrix (441 exact counts) and the summed loss, as one float64 vector."""
        x, y = batch
        out = model(x) if weights is None else model(x, weights)
        logits = out[0] if isinstance(out, tuple) else out
        loss = F.cross_entropy(logits, y, ignore_index=IGNORE, reduction="sum")
        cm = confusion_matrix(logits.argmax(1), y, self.num_classes)
        return torch.cat([cm.flatten().double(), loss.double().view(1)])

    def summarize(self, sums: torch.Tensor) -> dict[str, float]:
        k = self.num_classes
        cm = sums[: k * k].view(k, k)
        count = int(cm.sum().item())
        return segmentation_metrics(cm) | {"loss": sums[k * k].item() / max(count, 1), "count": count}


# -- fixtures ------------------------------------------------------------------------------------
def voc_palette() -> list[int]:
    """VOC's 256-colour palette (the devkit's ``bitget`` colour map), flat RGB."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def _fixture_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Background with two labelled rectangles, each outlined by a 1-pixel 255 boundary, as VOC masks are."""
    mask = np.zeros((h, w), dtype=np.uint8)
    for _ in range(2):
        label = int(rng.integers(1, NUM_CLASSES))
        y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
        y1, x1 = y0 + int(rng.integers(h // 4, h // 2)), x0 + int(rng.integers(w // 4, w // 2))
        mask[y0:y1, x0:x1] = IGNORE
        mask[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1] = label
    return mask


def write_voc_fixture(root: str | Path, n_train: int = 8, n_val: int = 4, sizes=((40, 48), (36, 44)),
                      n_sbd: int = 0, seed: int = 0) -> Path:  # fmt: skip
    """Write a tiny VOC 2012 tree under ``root`` (``VOCdevkit/VOC2012/...``): JPEG images, palette-PNG masks, lists.

    Image sizes cycle through ``sizes`` ((H, W) pairs). ``n_sbd`` > 0 adds SBD-style images with grey masks in
    ``SegmentationClassAug/`` and a ``train_aug.txt`` listing the VOC train ids, those and one VOC val id (which
    must not train). Returns ``root``.
    """
    voc = Path(root) / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    palette = voc_palette()
    ids = {"train": [f"2007_{i:06d}" for i in range(n_train)], "val": [f"2008_{i:06d}" for i in range(n_val)],
           "aug": [f"2009_{i:06d}" for i in range(n_sbd)]}  # fmt: skip
    for k, i in enumerate(ids["train"] + ids["val"] + ids["aug"]):
        h, w = sizes[k % len(sizes)]
        mask = _fixture_mask(rng, h, w)
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        image[mask != 0] //= 2  # objects a little darker than the background
        Image.fromarray(image).save(voc / "JPEGImages" / f"{i}.jpg", quality=95)
        if i in ids["aug"]:
            (voc / "SegmentationClassAug").mkdir(exist_ok=True)
            Image.fromarray(mask).save(voc / "SegmentationClassAug" / f"{i}.png")  # grey (L), as SBD's PNGs
        else:
            png = Image.frombytes("P", (w, h), mask.tobytes())
            png.putpalette(palette)
            png.save(voc / "SegmentationClass" / f"{i}.png")
    lists = voc / "ImageSets" / "Segmentation"
    (lists / "train.txt").write_text("".join(f"{i}\n" for i in ids["train"]))
    (lists / "val.txt").write_text("".join(f"{i}\n" for i in ids["val"]))
    (lists / "trainval.txt").write_text("".join(f"{i}\n" for i in ids["train"] + ids["val"]))
    if n_sbd:
        aug = ids["train"] + ids["aug"] + ids["val"][:1]
        (voc / "SegmentationClassAug").mkdir(exist_ok=True)
        for i in ids["train"] + ids["val"][:1]:  # SBD's copies of VOC masks (the val one must be skipped)
            Image.open(voc / "SegmentationClass" / f"{i}.png").save(voc / "SegmentationClassAug" / f"{i}.png")
        (lists / "train_aug.txt").write_text("".join(f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png\n"
                                                     for i in aug))  # fmt: skip
    return Path(root)

"""PASCAL VOC 2012 files: where they are, reading an (image, mask) pair, augmentation, the streaming dataset.

``find_voc`` accepts torchvision's ``VOCSegmentation`` layout under ``task.data_dir`` (the folder
holding ``VOCdevkit``, ``VOCdevkit`` itself or ``VOC2012`` itself) and adds SBD's
``SegmentationClassAug`` masks with a ``train_aug.txt`` list when present. Masks are palette (P) or
grey (L) PNGs whose values are the labels, 0..20 and 255 (ignore). Images stream from disk one file
per item; every problem raises ``DataError`` naming the file.

Deviations from the paper and original code: docs/fidelity/voc.md
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..spaces import DataError, DataNotFoundError

__all__ = [
    "AUG_LISTS",
    "CLASSES",
    "IGNORE",
    "LAYOUT",
    "MEAN",
    "NUM_CLASSES",
    "STD",
    "EvalTransform",
    "PadCollate",
    "TrainTransform",
    "VOCFiles",
    "check_sizes",
    "checksum",
    "default_data_dir",
    "find_voc",
    "read_pair",
    "voc_items",
]

CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
NUM_CLASSES = len(CLASSES)  # 21
IGNORE = 255  # boundary / void pixels in VOC masks
MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics, as every ImageNet-style backbone expects
STD = (0.229, 0.224, 0.225)
LAYOUT = "VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation/{train,val}.txt}"
AUG_LISTS = ("ImageSets/Segmentation/train_aug.txt", "ImageSets/SegmentationAug/train_aug.txt")


def default_data_dir() -> str:
    return os.environ.get("EGSBENCH_VOC", str(Path.home() / ".cache" / "egsbench" / "datasets" / "voc"))


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
            raise DataNotFoundError(
                f"PASCAL VOC 2012 download into {root} failed ({type(err).__name__}: {err}); "
                "copy the data there or pass --set task.data_dir=PATH"
            ) from None
    if voc is None:
        raise DataNotFoundError(
            f"PASCAL VOC 2012 not found under {root} (expected {root}/{LAYOUT}, torchvision's VOCSegmentation "
            "layout); untar VOCtrainval_11-May-2012.tar (host.robots.ox.ac.uk/pascal/VOC/voc2012) there, pass "
            "--set task.data_dir=PATH, or --set task.download=true to fetch it"
        )
    for need in ("SegmentationClass", "ImageSets/Segmentation/train.txt", "ImageSets/Segmentation/val.txt"):
        if not (voc / need).exists():
            raise DataNotFoundError(
                f"{voc} lacks {need} (expected {LAYOUT}); the segmentation part of "
                "VOCtrainval_11-May-2012.tar has it: untar the whole archive there"
            )
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
                raise DataError(
                    f"image {voc / 'JPEGImages' / (i + '.jpg')} has no mask {folder / (i + '.png')}; "
                    "restore the mask or remove the id from the list"
                )
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
                raise DataError(
                    f"mask {mask_path} is a {m.mode} image; VOC masks are palette (P) or grey (L) PNGs "
                    "whose values are the labels: convert colours to palette indices"
                )
            mask = np.asarray(m, dtype=np.uint8)  # (H, W): palette indices = labels
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{image_path} or {mask_path} is not a readable image ({err}); replace that file") from None
    if mask.shape != image.shape[:2]:
        raise DataError(
            f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image {image_path} is "
            f"{image.shape[1]}x{image.shape[0]}; they must be the same size"
        )
    bad = (mask >= NUM_CLASSES) & (mask != IGNORE)
    if bad.any():
        raise DataError(
            f"mask {mask_path} holds label values {sorted(set(mask[bad].tolist()))[:8]} outside 0..20 and "
            "255 (VOC's 21 classes and ignore); fix or remove that mask"
        )
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
            raise DataError(
                f"mask {mask_path} is {mask_size[0]}x{mask_size[1]} but its image {image_path} is "
                f"{image_size[0]}x{image_size[1]}; they must be the same size"
            )


def checksum(items: dict[str, list[tuple[Path, Path]]]) -> str:
    """sha256 of every used file's name and size per split (not the pixels: hashing 2 GB at every start is slow)."""
    h = hashlib.sha256()
    for split in sorted(items):
        for image, mask in items[split]:
            h.update(
                f"{split}|{image.name}|{image.stat().st_size}|{mask.parent.name}/{mask.name}|"
                f"{mask.stat().st_size}\n".encode()
            )
    return h.hexdigest()

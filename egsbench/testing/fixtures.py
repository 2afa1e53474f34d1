"""Tiny on-disk data fixtures for task checks: real files in the format each task reads, written in milliseconds.

Every writer is seeded, so the same call writes the same files on every machine. Tasks import them
inside their ``conformance_config`` class methods (this package imports the tasks, not the reverse).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

__all__ = ["voc_palette", "write_image_folder", "write_lm_files", "write_voc_fixture"]

VOC_CLASSES = 21  # background + 20 object classes, labels 0..20 (egsbench.tasks.voc.data.NUM_CLASSES)
VOC_IGNORE = 255  # boundary / void label (egsbench.tasks.voc.data.IGNORE)
LM_ROLES = ("train", "valid", "test")  # the files a language-model task reads (egsbench.tasks.lm.ROLES)


def write_image_folder(
    root: str | Path,
    classes: Sequence[str] = ("cat", "dog", "frog"),
    per_class: int = 8,
    size: int = 32,
    splits: Sequence[str] = ("train", "test"),
) -> Path:
    """Write an ImageFolder tree ``root/<split>/<class>/<i>.png`` of seeded random RGB images (PNG: lossless).

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     root = write_image_folder(Path(tmp) / "data", per_class=2)
        ...     sorted(p.name for p in (root / "train").iterdir())
        ['cat', 'dog', 'frog']
    """
    root = Path(root)
    for s, split in enumerate(splits):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                rng = np.random.default_rng([s, c, i])  # the same files on every call and machine
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)  # (H, W, 3)
                Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    return root


def write_lm_files(folder: str | Path, pattern: str, lines: int = 40, vocab: int = 30, seed: int = 0) -> Path:
    """Write ``train``/``valid``/``test`` files of ``pattern`` with ``lines`` random sentences (tests, fixtures)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    words = [f"w{i}" for i in range(vocab)]
    for i, split in enumerate(LM_ROLES):
        text = []
        for _ in range(lines if split == "train" else max(lines // 2, 4)):
            n = int(torch.randint(3, 12, (), generator=gen))
            text.append(" ".join(words[j] for j in torch.randint(0, vocab - 2 * (i > 0), (n,), generator=gen).tolist()))
        (folder / pattern.format(split=split)).write_text("\n".join(text) + "\n")
    return folder


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
        label = int(rng.integers(1, VOC_CLASSES))
        y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
        y1, x1 = y0 + int(rng.integers(h // 4, h // 2)), x0 + int(rng.integers(w // 4, w // 2))
        mask[y0:y1, x0:x1] = VOC_IGNORE
        mask[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1] = label
    return mask


def write_voc_fixture(
    root: str | Path, n_train: int = 8, n_val: int = 4, sizes=((40, 48), (36, 44)), n_sbd: int = 0, seed: int = 0
) -> Path:
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
    ids = {
        "train": [f"2007_{i:06d}" for i in range(n_train)],
        "val": [f"2008_{i:06d}" for i in range(n_val)],
        "aug": [f"2009_{i:06d}" for i in range(n_sbd)],
    }
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
        (lists / "train_aug.txt").write_text(
            "".join(f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png\n" for i in aug)
        )
    return Path(root)

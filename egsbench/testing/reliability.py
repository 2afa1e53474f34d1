"""Shared pieces of the reliability cases (``tests/reliability`` and ``scripts/reliability_cases.py``).

The cheapest end-to-end run and its overrides, a snapshot of what a command leaves behind, and
ImageFolder trees in the real on-disk formats (PNG and JPEG mixed, as real trees are).
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["BASE", "FAST", "image", "image_folder", "jpeg_bytes", "overrides", "snapshot", "tar_gz"]

# The cheapest end-to-end run: GDAS (one sampled op per edge), one step per epoch, a few dozen images, no PNG
# figures (drawing them took 0.75 s of a 1.83 s one-step GDAS smoke run, profiled).
BASE = "smoke/gdas-cifar10"
FAST = [
    "figures=false",
    "task.train_limit=64",
    "task.test_limit=32",
    "search.batch_size=16",
    "search.max_steps_per_epoch=1",
    "search.score_batches=1",
    "evaluate.batch_size=16",
    "evaluate.max_steps_per_epoch=1",
    "evaluate.epochs=1",
]


def overrides(*values: str) -> list[str]:
    """``--set`` arguments for each of ``values``.

    Examples:
        >>> overrides("seed=1", "search.epochs=2")
        ['--set', 'seed=1', '--set', 'search.epochs=2']
    """
    return [x for v in values for x in ("--set", v)]


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` (relative path -> sha256 of its bytes, or "dir"); {} when absent."""
    root = Path(root)
    if not root.exists():
        return {}
    if root.is_file():
        return {".": hashlib.sha256(root.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
    }


def image(path: Path, size: int = 32, seed: int = 0, fmt: str | None = None) -> Path:
    """A random RGB image of ``size`` x ``size`` saved as PNG or JPEG (by suffix, or ``fmt``)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, fmt or ("JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"))
    return path


def image_folder(root: Path, classes=("cat", "dog"), per_class: int = 4, size: int = 32, test_classes=None) -> Path:
    """An ImageFolder tree ``root/{train,test}/<class>/<i>.png|jpg`` (PNG and JPEG mixed)."""
    seed = 0
    for split, names in (("train", classes), ("test", test_classes or classes)):
        for name in names:
            for i in range(per_class):
                seed += 1
                image(root / split / name / f"{i}.{'png' if i % 2 else 'jpg'}", size, seed)
    return root


def tar_gz(folder: Path, path: Path) -> Path:
    """``folder`` packed as a ``.tar.gz`` under one top-level folder, as CIFAR-10 mirrors ship it."""
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return path


def jpeg_bytes(size: int = 32) -> bytes:
    """A black ``size`` x ``size`` JPEG, as bytes (for files that claim one format and hold another)."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((size, size, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()

"""Tiny on-disk data fixtures for task checks: real files in the format a task reads, written in milliseconds."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["write_image_folder"]


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

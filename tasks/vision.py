"""Image data shared by the vision tasks: reading, caching and batch-wise augmentation.

Each split is held in memory as one ``uint8`` tensor ``(N, 3, H, W)`` and augmented a batch at a
time in the loader's ``collate_fn``. Readers take an ImageFolder tree ``<root>/<split>/<class>/*``
(or a ``.tar``/``.tar.gz`` of one, read in place) or an ``.npz`` of JPEG bytes; decoded folders are
cached as ``.npz`` under ``$EGSBENCH_CACHE`` (default ``~/.cache/egsbench``), keyed on every file's
path, size and modification time, so any change rebuilds the cache (an ``.npz`` of JPEG bytes, the embedded
subset, goes through the same cache). Every problem raises
``DataError`` naming the file and the fix.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .spaces import DataError

__all__ = [
    "BatchAugment",
    "ImageSplit",
    "cache_dir",
    "read_image_folder",
    "read_jpeg_npz",
    "sha256_file",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass
class ImageSplit:
    images: torch.Tensor  # (N, 3, H, W) uint8
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> ImageSplit:
        return ImageSplit(self.images[index], self.labels[index])


def cache_dir() -> Path:
    return Path(os.environ.get("EGSBENCH_CACHE", Path.home() / ".cache" / "egsbench"))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _decode(data: bytes, where: str = "image") -> np.ndarray:
    """One image's ``(H, W, 3)`` uint8 pixels; ``where`` (its path) names it in the error of an unreadable one."""
    if not data:
        raise DataError(f"{where} is not a readable image (it is empty, 0 bytes); replace or delete that file")
    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)  # (H, W, 3)
    except UnidentifiedImageError:  # PIL's message names the in-memory buffer, not the file
        reason = f"no image format recognises its {len(data)} bytes"
    except (OSError, SyntaxError, ValueError) as err:  # PIL's other ways of saying "corrupt"
        reason = _BUFFER.sub("the file", str(err)) or type(err).__name__
    raise DataError(f"{where} is not a readable image ({reason}); replace or delete that file")


_BUFFER = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


def _stack(images: list[np.ndarray], labels: list[int], names: list[str], where: str) -> ImageSplit:
    if not images:
        raise DataError(f"{where} holds no images ({', '.join(IMAGE_SUFFIXES)}); put <class>/<image> files there")
    shapes: dict[tuple, int] = {}
    for img in images:
        shapes[img.shape] = shapes.get(img.shape, 0) + 1
    if len(shapes) > 1:
        common = max(shapes, key=shapes.get)
        odd, shape = next((n, img.shape) for n, img in zip(names, images, strict=True) if img.shape != common)
        raise DataError(
            f"images in {where} have mixed sizes: {odd} is {_size(shape)} while {shapes[common]} others "
            f"are {_size(common)}; resize them all to one size"
        )
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W)
    return ImageSplit(x, torch.tensor(labels, dtype=torch.int64))


def _size(shape: tuple) -> str:
    return f"{shape[1]}x{shape[0]}"


def _check_classes(found: dict[str, list[str]], where: str) -> list[str]:
    """The class list, identical in every split; raise naming the classes one split lacks."""
    splits = list(found)
    for split in splits[1:]:
        a, b = set(found[splits[0]]), set(found[split])
        if a != b:
            only_a, only_b = sorted(a - b), sorted(b - a)
            parts = [f"{', '.join(only_a)} only in {splits[0]}/"] if only_a else []
            parts += [f"{', '.join(only_b)} only in {split}/"] if only_b else []
            raise DataError(
                f"{where}: the splits have different classes ({'; '.join(parts)}); every class needs "
                "images in every split"
            )
    return sorted(found[splits[0]])


def _read_tree(root: Path, splits: tuple[str, ...]) -> tuple[dict[str, ImageSplit], list[str]]:
    for split in splits:
        if not (root / split).is_dir():
            raise DataError(f"{root} has no {split}/ folder; an ImageFolder tree needs {'/, '.join(splits)}/")
    found = {s: [p.name for p in (root / s).iterdir() if p.is_dir()] for s in splits}
    for split, names in found.items():
        if not names:
            raise DataError(f"{root / split} holds no class folders; an ImageFolder split needs <class>/<image> files")
    classes = _check_classes(found, str(root))
    out = {}
    for split in splits:
        images, labels, names = [], [], []
        for label, name in enumerate(classes):
            files = [f for f in sorted((root / split / name).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
            if not files:
                raise DataError(f"{root / split / name} holds no images; add some or remove the class from every split")
            for f in files:
                images.append(_decode(f.read_bytes(), str(f)))
                labels.append(label)
                names.append(str(f))
        out[split] = _stack(images, labels, names, str(root / split))
    return out, classes


def _read_tar(path: Path, splits: tuple[str, ...]) -> tuple[dict[str, ImageSplit], list[str]]:
    found: dict[str, dict[str, list[tuple[str, bytes]]]] = {s: {} for s in splits}
    try:
        tar = tarfile.open(path)
    except (tarfile.TarError, EOFError, OSError) as err:
        raise DataError(f"{path} is not a readable tar archive ({err}); download or pack it again") from None
    with tar:
        try:
            members = list(tar)
        except (tarfile.TarError, EOFError, OSError, ValueError) as err:  # gzip reports truncation in several ways
            reason = err or type(err).__name__
            raise DataError(f"{path} is truncated or corrupt ({reason}); download it again") from None
        for member in members:
            parts = Path(member.name).parts
            if parts and parts[0] == ".":
                parts = parts[1:]
            # Accept <split>/<class>/<file> with or without one leading top-level folder.
            if len(parts) == 4 and parts[1] in splits:
                parts = parts[1:]
            if not member.isfile() or len(parts) != 3 or parts[0] not in splits:
                continue
            if Path(parts[2]).suffix.lower() in IMAGE_SUFFIXES:
                try:
                    data = tar.extractfile(member).read()
                except (tarfile.TarError, EOFError, OSError) as err:
                    message = f"{path} is truncated or corrupt at {member.name} ({err}); download it again"
                    raise DataError(message) from None
                found[parts[0]].setdefault(parts[1], []).append((parts[2], data))
    if not found[splits[0]]:
        raise DataError(f"{path} holds no <split>/<class>/<image> entries for splits {splits}")
    classes = _check_classes({s: list(found[s]) for s in splits}, str(path))
    out = {}
    for split in splits:
        images, labels, names = [], [], []
        for label, name in enumerate(classes):
            for file, data in sorted(found[split].get(name, [])):
                where = f"{path}:{split}/{name}/{file}"
                images.append(_decode(data, where))
                labels.append(label)
                names.append(where)
        out[split] = _stack(images, labels, names, f"{path}:{split}/")
    return out, classes


def _content_key(path: Path, splits: tuple[str, ...]) -> str:
    """A key that changes whenever any image changes: per-file (path, size, mtime) for a tree, the archive's own."""
    h = hashlib.sha256(f"{path}|{splits}".encode())
    if path.is_file():
        stat = path.stat()
        h.update(f"|{stat.st_size}|{stat.st_mtime_ns}".encode())
    else:
        for split in splits:
            for f in sorted((path / split).rglob("*")) if (path / split).is_dir() else ():
                if f.is_file():
                    stat = f.stat()
                    h.update(f"|{f.relative_to(path)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def read_image_folder(path: str | Path, splits: tuple[str, ...] = ("train", "test")) -> tuple[dict, list[str]]:
    """Read an ImageFolder tree (or a tar archive of one) into memory, through the cache.

    Returns ``({split: ImageSplit}, class_names)``.
    """
    path = Path(path).resolve()
    read = _read_tar if path.is_file() else _read_tree
    return _through_cache(path, _content_key(path, splits), lambda: read(path, splits))


def _through_cache(path: Path, key: str, read) -> tuple[dict[str, ImageSplit], list[str]]:
    """``read()``'s splits from ``$EGSBENCH_CACHE/decoded/<name>-<key>.npz``, decoding and writing it (atomically)
    the first time: every later process loads the pixels instead of decoding the images again."""
    cached = cache_dir() / "decoded" / f"{path.name}-{key}.npz"
    if cached.exists():
        with np.load(cached) as z:
            splits = [k[: -len("_x")] for k in z.files if k.endswith("_x")]
            data = {s: ImageSplit(torch.from_numpy(z[f"{s}_x"]), torch.from_numpy(z[f"{s}_y"])) for s in splits}
            return data, [str(c) for c in z["classes"]]
    data, classes = read()
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".tmp{os.getpid()}.npz")
    arrays = {f"{s}_x": d.images.numpy() for s, d in data.items()} | {
        f"{s}_y": d.labels.numpy() for s, d in data.items()
    }
    np.savez(tmp, classes=np.array(classes), **arrays)
    os.replace(tmp, cached)  # atomic: a concurrent reader sees the old state or the whole file
    return data, classes


def read_jpeg_npz(path: str | Path) -> tuple[dict[str, ImageSplit], list[str]]:
    """Read an npz of JPEG bytes: ``<split>_jpeg`` (uint8), ``<split>_offsets``, ``<split>_labels``, ``classes``;
    decoded once, then through the cache like an image folder (keyed on the file's path, size and mtime)."""
    path = Path(path).resolve()
    return _through_cache(path, _content_key(path, ()), lambda: _decode_jpeg_npz(path))


def _decode_jpeg_npz(path: str | Path) -> tuple[dict[str, ImageSplit], list[str]]:
    with np.load(path) as z:
        classes = [str(c) for c in z["classes"]]
        splits = [k[: -len("_jpeg")] for k in z.files if k.endswith("_jpeg")]
        out = {}
        for s in splits:
            blob, offsets = z[f"{s}_jpeg"].tobytes(), z[f"{s}_offsets"]
            names = [f"{path}:{s}[{i}]" for i in range(len(offsets) - 1)]
            images = [_decode(blob[a:b], n) for n, a, b in zip(names, offsets[:-1], offsets[1:], strict=True)]
            out[s] = _stack(images, z[f"{s}_labels"].tolist(), names, f"{path}:{s}")
    return out, classes


class BatchAugment:
    """``collate_fn`` that turns ``uint8`` samples into a normalised float batch, augmenting if asked.

    Order as torchvision's DARTS pipeline: zero-pad + random crop, horizontal flip,
    normalise, then cutout (one square hole of ``cutout`` pixels, centre uniform over the
    image, clipped at the border; p = 1).
    """

    def __init__(self, mean, std, crop_padding: int = 0, flip: bool = False, cutout: int = 0):
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.crop_padding, self.flip, self.cutout = crop_padding, flip, cutout

    def __call__(self, samples) -> tuple[torch.Tensor, torch.Tensor]:
        """``samples``: a list of ``(image, label)`` or one gathered ``(images (B, 3, H, W), labels (B,))`` pair.

        Runs on the images' device; the random draws come from the CPU generator either way, so a batch
        augments alike on a CPU and on a GPU.
        """
        if isinstance(samples, tuple):
            x, y = samples
            x = x.float().div_(255.0)  # (B, 3, H, W)
        else:
            x = torch.stack([s[0] for s in samples]).float().div_(255.0)  # (B, 3, H, W)
            y = torch.stack([s[1] for s in samples])
        B, _, H, W = x.shape
        dev = x.device
        if self.crop_padding:
            p = self.crop_padding
            padded = torch.nn.functional.pad(x, (p, p, p, p))
            dy, dx = torch.randint(0, 2 * p + 1, (2, B)).to(dev)
            rows = (dy[:, None] + torch.arange(H, device=dev))[:, None, :, None]  # (B, 1, H, 1)
            cols = (dx[:, None] + torch.arange(W, device=dev))[:, None, None, :]  # (B, 1, 1, W)
            batch_i = torch.arange(B, device=dev)[:, None, None, None]
            x = padded[batch_i, torch.arange(3, device=dev)[None, :, None, None], rows, cols]
        if self.flip:
            flip = (torch.rand(B) < 0.5).to(dev)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if self.mean.device != dev:  # moved once, not per batch
            self.mean, self.std = self.mean.to(dev), self.std.to(dev)
        x = (x - self.mean) / self.std
        if self.cutout:
            cy, cx = (t.to(dev) for t in (torch.randint(0, H, (B,)), torch.randint(0, W, (B,))))
            half = self.cutout // 2
            ys, xs = torch.arange(H, device=dev)[None, :, None], torch.arange(W, device=dev)[None, None, :]
            # Exact DARTS Cutout box: rows [cy - half, cy + half), cols likewise.
            hole = (
                (ys >= (cy - half)[:, None, None])
                & (ys < (cy + half)[:, None, None])
                & (xs >= (cx - half)[:, None, None])
                & (xs < (cx + half)[:, None, None])
            )
            x = x * (~hole)[:, None].float()
        return x, y

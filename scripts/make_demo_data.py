"""Build the embedded CIFAR-10 demo subset (``tasks/data/cifar10_demo.npz``) from real CIFAR-10 JPEGs.

Usage::

    python scripts/make_demo_data.py ../shared/data/cifar10-jpg.tar.gz

The source is an ImageFolder archive (``train/<class>/*.jpg``, ``test/<class>/*.jpg``). A
seeded choice of images per class is stored byte for byte (no re-encoding) as one
concatenated ``uint8`` blob per split plus offsets and labels, well under 2 MB.
"""

from __future__ import annotations

import argparse
import random
import tarfile
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "tasks" / "data" / "cifar10_demo.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive", type=Path)
    parser.add_argument("--train-per-class", type=int, default=160)
    parser.add_argument("--test-per-class", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    files: dict[str, dict[str, dict[str, bytes]]] = {"train": {}, "test": {}}
    with tarfile.open(args.archive) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if member.isfile() and len(parts) == 3 and parts[0] in files:
                files[parts[0]].setdefault(parts[1], {})[parts[2]] = tar.extractfile(member).read()
    classes = sorted(files["train"])
    rng = random.Random(args.seed)
    arrays = {"classes": np.array(classes)}
    for split, per_class in (("train", args.train_per_class), ("test", args.test_per_class)):
        blobs, labels = [], []
        for label, name in enumerate(classes):
            for fname in rng.sample(sorted(files[split][name]), per_class):
                blobs.append(files[split][name][fname])
                labels.append(label)
        order = rng.sample(range(len(blobs)), len(blobs))  # interleave classes
        blobs, labels = [blobs[i] for i in order], [labels[i] for i in order]
        arrays[f"{split}_jpeg"] = np.frombuffer(b"".join(blobs), dtype=np.uint8)
        arrays[f"{split}_offsets"] = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
        arrays[f"{split}_labels"] = np.array(labels, dtype=np.int64)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()

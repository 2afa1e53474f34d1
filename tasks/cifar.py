"""CIFAR-10 image classification with DARTS's search and evaluation protocol (``cifar10``).

``task.data_dir`` is ``embedded`` (the real subset shipped in the package), a torchvision
``cifar-10-batches-py`` folder (fetched there with ``download: true``), or an ImageFolder tree
(or a ``.tar``/``.tar.gz`` of one). The search halves a fixed permutation of the training set;
final training uses all of it with cutout, and the reported metric is on the official test split.
Images are decoded once into ``uint8`` tensors and augmented a batch at a time (``device_cache``
keeps them on the GPU).

Deviations from the paper and original code: docs/fidelity/cifar.md
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass, field
from functools import partial
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..core.errors import check_range
from .base import SPLITS, TASKS, CNNSearchConfig, DataInfo, Metric, Task, TrainConfig
from .spaces import (
    ConfigError,
    DataError,
    DataNotFoundError,
    EdgeWeights,
    Genotype,
    LossOutput,
    NetworkCIFAR,
    SearchNetwork,
    SearchSpace,
)
from .training import auxiliary_loss, batch_accuracy, cosine_lr, forward_logits, no_swap, set_lr, sgd
from .vision import BatchAugment, ImageSplit, read_image_folder, read_jpeg_npz

__all__ = ["CIFAR10", "CIFAR10Config", "EMBEDDED_DATA"]

MEAN = (0.49139968, 0.48215827, 0.44653124)
STD = (0.24703233, 0.24348505, 0.26158768)
EMBEDDED_DATA = Path(str(files(__package__) / "data" / "cifar10_demo.npz"))


def default_data_dir() -> str:
    return os.environ.get("EGSBENCH_CIFAR10", str(Path.home() / ".cache" / "egsbench" / "datasets" / "cifar10"))


@dataclass
class CIFAR10Config:
    data_dir: str | None = None  # None: $EGSBENCH_CIFAR10 or ~/.cache/egsbench/datasets/cifar10; or "embedded"
    download: bool = False  # fetch the torchvision copy into data_dir when it is missing
    train_limit: int | None = None  # use the first N images of a fixed permutation of the training set
    test_limit: int | None = None
    split_seed: int = 0  # permutation behind the search-train/search-val halves and the limits
    resize: bool = False  # resize images of another size to 32x32 (antialiased bilinear) instead of refusing them
    # Down-sampled CIFAR-10 (antialiased bilinear on load, crop padding scaled with the side): the CPU proxy's 16x16
    # costs a quarter of the 32x32 compute. Not the papers' data: its accuracies are not comparable with theirs.
    image_size: int = field(default=32, metadata={"omit_default": True})
    # Loading (docs/fidelity/cifar.md); added after the first records, so left out of the config hash at defaults.
    workers: int = field(default=0, metadata={"omit_default": True})  # DataLoader worker processes
    pin_memory: bool = field(default=True, metadata={"omit_default": True})  # page-locked batches (CUDA only)
    device_cache: bool = field(default=False, metadata={"omit_default": True})  # uint8 tensors on the GPU

    def __post_init__(self):
        check_range("task.train_limit", self.train_limit, low=2)  # two search halves of at least one image
        check_range("task.test_limit", self.test_limit, low=1)
        check_range("task.workers", self.workers, low=0)
        check_range("task.image_size", self.image_size, low=8, high=32)


class BatchedImages(Dataset):
    """``uint8`` images ``(N, 3, H, W)`` and labels ``(N,)``; a batch of indices is one gather (``__getitems__``)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, device=self.images.device)
        return self.images[index], self.labels[index]


def _cache_device() -> torch.device:
    """The current accelerator (accelerate sets each process's CUDA device); the CPU without one."""
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def _read_pickles(folder: Path) -> dict[str, ImageSplit]:
    """Read the official python-pickle batches (``data_batch_1..5``, ``test_batch``) in ``folder``."""
    out = {}
    for split, names in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
        images, labels = [], []
        for name in names:
            with open(folder / name, "rb") as f:
                batch = pickle.load(f, encoding="latin1")
            images.append(torch.as_tensor(batch["data"], dtype=torch.uint8).view(-1, 3, 32, 32))
            labels.append(torch.as_tensor(batch["labels"], dtype=torch.int64))
        out[split] = ImageSplit(torch.cat(images), torch.cat(labels))
    return out


def _download(root: Path) -> None:
    from torchvision.datasets import CIFAR10 as TorchvisionCIFAR10

    TorchvisionCIFAR10(str(root), train=True, download=True)  # fetches and checks the md5 of the archive


def _is_image_folder(path: Path) -> bool:
    return (path / "train").is_dir() and (path / "test").is_dir()


def load_cifar10(data_dir: str | None, download: bool) -> tuple[dict[str, ImageSplit], str]:
    """Return ``({"train": ..., "test": ...}, source)`` or raise a ``DataNotFoundError`` that says what to do."""
    if data_dir == "embedded":
        data, _ = read_jpeg_npz(EMBEDDED_DATA)
        return data, f"embedded:{EMBEDDED_DATA.name}"
    root = Path(os.path.expanduser(data_dir or default_data_dir()))
    batches = root if root.name == "cifar-10-batches-py" else root / "cifar-10-batches-py"
    if batches.is_dir():
        return _read_pickles(batches), f"torchvision:{batches}"
    if root.is_file() and root.name.endswith((".tar", ".tar.gz", ".tgz")):
        return read_image_folder(root)[0], f"imagefolder-tar:{root}"
    if _is_image_folder(root):
        return read_image_folder(root)[0], f"imagefolder:{root}"
    if download:
        try:
            _download(root)
            return _read_pickles(root / "cifar-10-batches-py"), f"torchvision:{root / 'cifar-10-batches-py'}"
        except Exception as err:  # network errors come in many types; the message is what matters
            raise DataNotFoundError(
                f"CIFAR-10 download into {root} failed ({type(err).__name__}: {err}); copy the data there "
                "or pass --set task.data_dir=PATH"
            ) from None
    raise DataNotFoundError(
        f"CIFAR-10 not found at {root} (looked for {root}/cifar-10-batches-py, an ImageFolder tree "
        f"{root}/train/<class>/* + {root}/test/<class>/*, or a .tar.gz of one); pass --set task.data_dir=PATH, "
        "--set task.download=true to fetch it, or --set task.data_dir=embedded for the bundled subset"
    )


def _checksum(data: dict[str, ImageSplit]) -> str:
    h = hashlib.sha256()
    for split in sorted(data):
        h.update(data[split].images.numpy().tobytes())
        h.update(data[split].labels.numpy().tobytes())
    return h.hexdigest()


@TASKS.register("cifar10")
class CIFAR10(Task):
    """CIFAR-10 with the DARTS search and evaluation recipe."""

    config_class = CIFAR10Config
    search_config_class = CNNSearchConfig
    train_config_class = TrainConfig
    num_classes = 10
    image_size = 32  # networks, MAC counts and augmentation assume 32x32 inputs
    metrics = (
        Metric("accuracy", "max", "Test accuracy (%)"),
        Metric("error", "min", "Test error (%)"),
        Metric("loss", "min", "Test loss"),
    )
    main_metric = "error"  # the papers' tables report test error
    score_key = "accuracy"  # candidates are ranked by search-val accuracy
    example_unit = "images"  # throughput in the record: training images per second
    reference_table = "cifar10"
    mean, std = MEAN, STD  # per-channel normalisation of the [0, 1] pixels

    def __init__(self, config: CIFAR10Config):
        self.config = config
        self.image_size = config.image_size  # the class's 32 unless the config down-samples
        self.splits: dict[str, ImageSplit] | None = None
        self._cached: dict[str, BatchedImages] = {}  # device_cache: each split's tensors, moved once

    @classmethod
    def conformance_config(cls, tmp_path: Path) -> CIFAR10Config:
        """The embedded subset, limited to 32 training and 16 test images (for ``egsbench.testing``)."""
        return CIFAR10Config(data_dir="embedded", train_limit=32, test_limit=16)

    @classmethod
    def conformance_recipes(cls) -> tuple[CNNSearchConfig, TrainConfig]:
        """A 3-cell C=4 supernet and final network (for ``egsbench.testing``)."""
        return CNNSearchConfig(channels=4, layers=3, epochs=1, batch_size=4), TrainConfig(
            channels=4, layers=3, epochs=1, batch_size=4
        )

    # -- data ----------------------------------------------------------------------------------
    def prepare_data(self) -> DataInfo:
        cfg = self.config
        data, source = load_cifar10(cfg.data_dir, cfg.download)
        return self._split(data, source)

    def _fit_size(self, split: ImageSplit, source: str) -> ImageSplit:
        """Refuse (or, with ``task.resize``, resize) images that are not ``image_size`` square."""
        size = self.image_size
        h, w = split.images.shape[-2:]
        if (h, w) == (size, size):
            return split
        if not self.config.resize and size == type(self).image_size:  # a smaller task.image_size asks for it
            raise DataError(
                f"images from {source} are {w}x{h}; this task's networks expect {size}x{size}. Resize the "
                f"data, or pass --set task.resize=true to resize on load"
            )
        x = F.interpolate(split.images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return ImageSplit(x.round().clamp(0, 255).to(torch.uint8), split.labels)

    def _split(self, data: dict[str, ImageSplit], source: str) -> DataInfo:
        """Limit, permute and halve the training set into the search splits; keep the official test split."""
        cfg = self.config
        checksum = _checksum(data)  # of the pixels as read, before any resize
        data = {split: self._fit_size(d, source) for split, d in data.items()}
        gen = torch.Generator().manual_seed(cfg.split_seed)
        train = data["train"].subset(torch.randperm(len(data["train"]), generator=gen)[: cfg.train_limit])
        test = data["test"]
        if cfg.test_limit is not None:
            test = test.subset(torch.randperm(len(test), generator=gen)[: cfg.test_limit])
        half = len(train) // 2
        self.splits = {
            "search-train": train.subset(torch.arange(half)),
            "search-val": train.subset(torch.arange(half, 2 * half)),
            "train": train,
            "test": test,
        }
        return DataInfo(source=source, sha256=checksum, sizes={s: len(d) for s, d in self.splits.items()})

    def loader(
        self, split: str, batch_size: int, generator: torch.Generator | None = None, recipe: TrainConfig | None = None
    ) -> DataLoader:
        if self.splits is None:
            self.prepare_data()
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid splits: {SPLITS}")
        data = self.splits[split]
        training = split != "test"
        augment = BatchAugment(
            self.mean,
            self.std,
            crop_padding=4 * self.image_size // 32 if training else 0,  # DARTS's 4 pixels at 32x32
            flip=training,
            cutout=recipe.cutout if split == "train" and recipe is not None else 0,
        )
        cfg = self.config
        dataset = self._cached.get(split) if cfg.device_cache else None
        if dataset is None:
            device = _cache_device() if cfg.device_cache else torch.device("cpu")
            dataset = BatchedImages(data.images.to(device), data.labels.to(device))
            if cfg.device_cache:
                self._cached[split] = dataset
        on_host = dataset.images.device.type == "cpu"
        workers = cfg.workers if on_host else 0  # CUDA tensors stay in the main process
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=training,
            drop_last=False,
            collate_fn=augment,
            generator=generator,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=cfg.pin_memory and on_host and torch.cuda.is_available(),
        )

    # -- networks ------------------------------------------------------------------------------
    def build_supernet(self, space: SearchSpace, config: CNNSearchConfig) -> SearchNetwork:
        return SearchNetwork(space, config.channels, self.num_classes, config.layers, image_size=self.image_size)

    def build_network(self, genotype: Genotype, config: TrainConfig) -> NetworkCIFAR:
        if config.auxiliary_weight > 0 and self.image_size != type(self).image_size:
            raise ConfigError(
                f"the auxiliary head expects the 8x8 maps of 32x32 inputs, not {self.image_size}x"
                f"{self.image_size}; set evaluate.auxiliary_weight=0 with task.image_size"
            )
        return NetworkCIFAR(genotype, config.channels, self.num_classes, config.layers, config.auxiliary_weight > 0)

    def example_input(self) -> torch.Tensor:
        return torch.zeros(1, 3, self.image_size, self.image_size)

    # -- losses and metrics --------------------------------------------------------------------
    def search_loss(self, model: nn.Module, batch: Any, weights: EdgeWeights) -> LossOutput:
        x, y = batch
        logits = model(x, weights)
        loss = F.cross_entropy(logits, y)
        return LossOutput(loss, {"accuracy": batch_accuracy(logits, y)})

    # -- final-training recipe: SGD, per-epoch cosine lr, drop path ramp -----------------------
    def make_optimizer(self, model: nn.Module, config: TrainConfig) -> torch.optim.SGD:
        return sgd(model, config)

    def start_epoch(self, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, config: TrainConfig) -> None:
        set_lr(optimizer, cosine_lr(epoch, config.epochs, config.lr, config.lr_min))
        # DARTS: drop_path_prob = drop_path * epoch / epochs, on the unwrapped model.
        getattr(model, "module", model).drop_path_prob = config.drop_path * epoch / max(config.epochs, 1)

    def end_epoch(self, model, optimizer, epoch: int, config: TrainConfig, evaluate) -> dict[str, float]:
        return {}  # no validation split: DARTS trains a fixed number of epochs

    eval_weights = staticmethod(no_swap)

    def train_loss(self, model: nn.Module, batch: Any, config: TrainConfig, state: Any = None) -> LossOutput:
        criterion = partial(F.cross_entropy, label_smoothing=config.label_smoothing)
        return auxiliary_loss(model, batch, criterion, config.auxiliary_weight)

    @torch.no_grad()
    def eval_sums(self, model: nn.Module, batch: Any, weights: EdgeWeights | None = None) -> torch.Tensor:
        x, y = batch
        logits = forward_logits(model, x, weights)  # (B, classes)
        loss = F.cross_entropy(logits, y, reduction="sum")
        correct = (logits.argmax(dim=1) == y).sum()
        return torch.stack([correct.double(), torch.full_like(loss, len(y), dtype=torch.float64), loss.double()])

    def summarize(self, sums: torch.Tensor) -> dict[str, float]:
        correct, count, loss = sums.tolist()
        accuracy = 100.0 * correct / max(count, 1)
        return {"accuracy": accuracy, "error": 100.0 - accuracy, "loss": loss / max(count, 1), "count": int(count)}

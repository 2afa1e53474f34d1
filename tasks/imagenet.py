"""ImageNet in the mobile setting (``imagenet``): a cell searched on CIFAR-10, trained with DARTS's ImageNet recipe.

The DARTS-EGS paper's Section 4.1.3 (Table 2): 224x224 inputs, at most 600 M multiply-adds, top-1 and
top-5 error on the validation set. Data are read through timm from ``task.data_dir`` (an ImageFolder
tree, tar archives or per-class tar shards) or a Hugging Face dataset, streamed from disk. Transfer
only: ``search.epochs`` must stay 0. A network above ``evaluate.mac_cap`` (counted by
:func:`mobile_macs`) is refused; ``evaluate.fit_macs`` narrows C to fit instead.

Deviations from the paper and original code: docs/fidelity/imagenet.md
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, ImageDataset, create_dataset, create_transform
from timm.loss import LabelSmoothingCrossEntropy
from timm.scheduler import PolyLRScheduler, StepLRScheduler
from torch import nn
from torch.utils.data import DataLoader

from ..core.errors import check_range
from .base import SPLITS, TASKS, CNNSearchConfig, DataInfo, Metric, Task
from .spaces import (
    ConfigError,
    DataError,
    DataNotFoundError,
    EdgeWeights,
    Genotype,
    LossOutput,
    NetworkImageNet,
    SearchNetwork,
    SearchSpace,
    count_macs,
)
from .training import auxiliary_loss, batch_accuracy, forward_logits, no_swap, sgd

__all__ = [
    "MOBILE_IMAGE_SIZE",
    "MOBILE_MAC_CAP",
    "ImageNet",
    "ImageNetConfig",
    "ImageNetSearchConfig",
    "ImageNetTrainConfig",
    "fit_channels",
    "mobile_macs",
]

MOBILE_IMAGE_SIZE = 224  # the mobile setting counts multiply-adds at 224x224
MOBILE_MAC_CAP = 600e6
TRAIN_SPLITS = ("train",)
EVAL_SPLITS = ("validation", "val", "valid")  # timm's synonyms; the first found is used
VALPREP = "ILSVRC2012's val images come flat: sort them into <wnid>/ folders, e.g. with the usual valprep.sh"
CROP_PCT = 0.875  # evaluation resize = image_size / 0.875 (256 at 224), then a centre crop


def default_data_dir() -> str | None:
    return os.environ.get("EGSBENCH_IMAGENET")


# -- configs --------------------------------------------------------------------------------------
@dataclass
class ImageNetConfig:
    data_dir: str | None = None  # required (or $EGSBENCH_IMAGENET): docs/fidelity/imagenet.md lists the layouts
    hf_dataset: str | None = None  # a Hugging Face dataset name or local folder, read by timm's hfds/ reader
    image_size: int = 224  # training and test resolution; smoke presets use 32-64
    num_classes: int | None = None  # None: the number of class folders in the training split
    train_per_class: int | None = None  # first N training images of every class; None = all
    test_per_class: int | None = None
    split_seed: int = 0  # permutation behind the search-train/search-val halves (conformance only)
    workers: int = 4  # DataLoader worker processes that decode JPEGs; 0 decodes in the main process

    def __post_init__(self):
        check_range("task.image_size", self.image_size, low=16)
        check_range("task.num_classes", self.num_classes, low=2)
        check_range("task.train_per_class", self.train_per_class, low=1)
        check_range("task.test_per_class", self.test_per_class, low=1)
        check_range("task.workers", self.workers, low=0)
        if self.image_size % 32:  # stems /8, two reductions /4; FactorizedReduce needs even maps
            raise ConfigError(
                f"config key task.image_size must be a multiple of 32 (the network halves it five "
                f"times), got {self.image_size}"
            )


@dataclass
class ImageNetSearchConfig(CNNSearchConfig):
    """The ``search:`` block: ImageNet is transfer-only, so ``epochs`` stays 0."""

    epochs: int = 0

    def __post_init__(self):
        super().__post_init__()
        if self.epochs != 0:
            raise ConfigError(
                f"config key search.epochs must be 0 for task imagenet, got {self.epochs}: ImageNet (mobile setting) "
                "is a transfer task. Transfer a CIFAR-10 search (transfer_from: paper/egs-cifar10, as "
                "paper/egs-imagenet) or train a cell with method: {name: fixed, genotype: <cifar10 run folder>} "
                "(or a genotype name such as darts_v2)"
            )


@dataclass
class ImageNetTrainConfig:
    """The ``evaluate:`` block: DARTS's ImageNet recipe with the DARTS-EGS paper's poly schedule."""

    lr_fields: ClassVar[tuple[str, ...]] = ("lr", "lr_min")  # what lr_scaling: linear multiplies by the world size

    epochs: int = 250
    batch_size: int = 128
    channels: int = 48  # C of the final network (even); lowered to fit fit_macs when that is set
    layers: int = 14
    lr: float = 0.1
    lr_min: float = 0.0
    schedule: str = "poly"  # "poly" (DARTS-EGS paper) or "step" (DARTS: x decay_rate every epoch); timm schedulers
    poly_power: float = 1.0  # the paper gives none; 1.0 decays linearly to lr_min
    decay_rate: float = 0.97  # schedule "step"
    momentum: float = 0.9
    weight_decay: float = 3e-5
    grad_clip: float = 5.0
    label_smoothing: float = 0.1
    auxiliary_weight: float = 0.4  # 0 builds no head
    drop_path: float = 0.0  # DARTS trains ImageNet without drop path; ramped linearly over the epochs when > 0
    mac_cap: float | None = MOBILE_MAC_CAP  # refuse networks above this many MACs at 224x224; None: no cap
    fit_macs: float | None = None  # lower channels to the largest even C whose network fits this many MACs
    max_steps_per_epoch: int | None = None
    eval_every: int = 1

    def __post_init__(self):
        for key in ("epochs", "batch_size", "layers", "max_steps_per_epoch"):
            check_range(f"evaluate.{key}", getattr(self, key), low=1)
        check_range("evaluate.channels", self.channels, low=2)
        if self.channels % 2:
            raise ConfigError(f"config key evaluate.channels must be even (the stem halves it), got {self.channels}")
        check_range("evaluate.lr", self.lr, low=0, low_open=True)
        check_range("evaluate.lr_min", self.lr_min, low=0, high=self.lr)
        if self.schedule not in ("poly", "step"):
            raise ConfigError(f"config key evaluate.schedule must be 'poly' or 'step', got {self.schedule!r}")
        check_range("evaluate.poly_power", self.poly_power, low=0, low_open=True)
        check_range("evaluate.decay_rate", self.decay_rate, 0, 1, low_open=True)
        check_range("evaluate.momentum", self.momentum, 0, 1, high_open=True)
        for key in ("weight_decay", "auxiliary_weight", "eval_every"):
            check_range(f"evaluate.{key}", getattr(self, key), low=0)
        check_range("evaluate.grad_clip", self.grad_clip, low=0, low_open=True)
        check_range("evaluate.label_smoothing", self.label_smoothing, 0, 1, high_open=True)
        check_range("evaluate.drop_path", self.drop_path, 0, 1, high_open=True)
        check_range("evaluate.mac_cap", self.mac_cap, low=0, low_open=True)
        check_range("evaluate.fit_macs", self.fit_macs, low=0, low_open=True)


# -- the mobile cap -------------------------------------------------------------------------------
@torch.no_grad()
def mobile_macs(
    genotype: Genotype, channels: int, layers: int, num_classes: int = 1000, image_size: int = MOBILE_IMAGE_SIZE
) -> int:
    """Multiply-adds of the ImageNet network for one ``image_size`` image: convolutions, the classifier and the
    cells' 3x3 pools (BN, ReLU, additions and the global average pool are free; the auxiliary head does not run
    at inference).

    The network is built on the ``meta`` device (shapes only, no memory, no arithmetic), so a count takes
    milliseconds even at C = 48.

    Examples:
        >>> from egsbench.tasks.spaces import DARTS_V2
        >>> round(mobile_macs(DARTS_V2, 48, 14) / 1e6, 1)
        531.2
    """
    with torch.device("meta"):
        net = NetworkImageNet(genotype, channels, num_classes, layers).eval()
        return count_macs(net, torch.zeros(1, 3, image_size, image_size)).total


def fit_channels(genotype: Genotype, layers: int, budget: float, channels: int, num_classes: int = 1000) -> int:
    """The largest even C <= ``channels`` whose network has at most ``budget`` MACs at 224x224.

    Raises:
        ConfigError: even C = 2 exceeds the budget.
    """
    if mobile_macs(genotype, channels, layers, num_classes) <= budget:
        return channels
    low, high = 1, channels // 2  # search C = 2k; MACs grow with C
    if mobile_macs(genotype, 2, layers, num_classes) > budget:
        raise ConfigError(
            f"evaluate.fit_macs: no even C fits {budget / 1e6:.1f} M MACs at {layers} cells (C = 2 "
            f"already has {mobile_macs(genotype, 2, layers, num_classes) / 1e6:.1f} M); raise the "
            "budget or lower evaluate.layers"
        )
    while low < high:
        mid = (low + high + 1) // 2
        if mobile_macs(genotype, 2 * mid, layers, num_classes) <= budget:
            low = mid
        else:
            high = mid - 1
    return 2 * low


# -- data -----------------------------------------------------------------------------------------
class _SeededTransform:
    """A timm transform whose Python-``random`` draws (timm's random resized crop) follow torch's generator.

    timm's crop draws from Python's ``random``, which neither ``torch.manual_seed`` nor a loader's generator
    seeds in the main process; here each sample reseeds it from one torch draw, then restores its state.
    """

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, image):
        state = random.getstate()
        random.seed(int(torch.randint(0, 2**62, ()).item()))
        try:
            return self.transform(image)
        finally:
            random.setstate(state)


def _split_path(root: Path, names: tuple[str, ...]) -> Path | None:
    """``root/<name>`` (folder) or ``root/<name>.tar`` for the first name that exists."""
    for name in names:
        for path in (root / name, root / f"{name}.tar"):
            if path.exists():
                return path
    return None


def _not_found(where: str) -> DataNotFoundError:
    return DataNotFoundError(
        f"ImageNet not found {where}. Accepted: an ImageFolder tree DIR/train/<wnid>/*.JPEG + DIR/val/<wnid>/*.JPEG; "
        "DIR/train.tar + DIR/val.tar (class folders or per-class tars inside); DIR/train/ + DIR/val/ holding "
        "per-class .tar shards; or a Hugging Face dataset (--set task.hf_dataset=imagenet-1k with its cache in DIR). "
        "Pass --set task.data_dir=DIR (or set $EGSBENCH_IMAGENET)"
    )


def _folder_dataset(path: Path, class_map: dict | None) -> ImageDataset:
    """A timm dataset over a split folder or tar: images in class folders, or per-class tar shards."""
    if path.is_dir() and not any(p.is_dir() for p in path.iterdir()) and any(path.glob("*.tar")):
        return ImageDataset(str(path), reader=_shards_reader(path)(str(path), class_map=class_map or ""))
    return create_dataset("", root=str(path), search_split=False, class_map=class_map)


def _shards_reader(path: Path) -> type:
    """timm's reader of a folder of per-class tars: ``create_reader`` picks it for one .tar file only, and
    ``timm.data.readers`` does not export it, so it is imported from its module (guarded: a timm without it)."""
    try:
        from timm.data.readers.reader_image_in_tar import ReaderImageInTar
    except ImportError:
        import timm

        raise DataError(
            f"{path} holds per-class .tar shards, which need timm's ReaderImageInTar "
            f"(timm.data.readers.reader_image_in_tar), absent from timm {timm.__version__}; extract each shard into "
            f"{path}/<wnid>/ (an ImageFolder tree) or install a timm that has it"
        ) from None
    return ReaderImageInTar


def _targets(dataset) -> list[int]:
    """The label of every sample of a timm dataset, without decoding an image."""
    reader = dataset.reader
    if hasattr(reader, "targets"):  # tar reader
        return [int(t) for t in reader.targets]
    if hasattr(reader, "samples"):  # folder reader
        return [int(t) for _, t in reader.samples]
    return [int(t) for t in reader.dataset[reader.label_key]]  # hfds reader


def _class_map(dataset) -> dict:
    reader = dataset.reader
    return dict(getattr(reader, "class_to_idx", None) or getattr(reader, "class_name_to_idx", None) or {})


def _first_per_class(targets: list[int], limit: int | None) -> list[int]:
    if limit is None:
        return list(range(len(targets)))
    seen: dict[int, int] = {}
    keep = []
    for i, t in enumerate(targets):
        if seen.get(t, 0) < limit:
            seen[t] = seen.get(t, 0) + 1
            keep.append(i)
    return keep


class _Split:
    """A timm dataset, the indices used from it, and their labels; the transform is set per loader."""

    def __init__(self, dataset, index: list[int], targets: list[int]):
        self.dataset, self.index, self.targets = dataset, index, targets

    def __len__(self) -> int:
        return len(self.index)

    def subset(self, positions) -> _Split:
        return _Split(self.dataset, [self.index[p] for p in positions], [self.targets[p] for p in positions])

    def names(self) -> list[str]:
        reader = self.dataset.reader
        if hasattr(reader, "_filename"):
            return [str(reader._filename(i)) for i in self.index]
        return [str(i) for i in self.index]  # hfds: the row number in the named dataset


class _Transformed(torch.utils.data.Dataset):
    """``dataset[index[i]]`` with ``transform`` applied, so two splits can share one timm dataset."""

    def __init__(self, split: _Split, transform):
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        image, target = self.split.dataset[self.split.index[i]]  # a PIL image: the timm dataset has no transform
        return self.transform(image), target


@TASKS.register("imagenet")
class ImageNet(Task):
    """ImageNet, mobile setting: a CIFAR-10 cell trained with DARTS's ImageNet recipe (docs/fidelity/imagenet.md)."""

    config_class = ImageNetConfig
    search_config_class = ImageNetSearchConfig
    train_config_class = ImageNetTrainConfig
    metrics = (
        Metric("top1_error", "min", "Top-1 error (%)"),
        Metric("top5_error", "min", "Top-5 error (%)"),
        Metric("accuracy", "max", "Top-1 accuracy (%)"),
        Metric("loss", "min", "Test loss"),
    )
    main_metric = "top1_error"  # Table 2's first column
    score_key = "accuracy"
    reference_table = "imagenet_mobile"
    mean, std = IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    def __init__(self, config: ImageNetConfig):
        self.config = config
        self.splits: dict[str, _Split] | None = None
        self.classes: int | None = config.num_classes
        self.fitted: dict[str, Any] = {}  # what build_network did to meet the mobile cap, for the record

    @classmethod
    def conformance_config(cls, tmp_path: Path) -> ImageNetConfig:
        """A 3-class ImageFolder of 40x40 PNGs, 6 per class and split, read at 32x32 (for ``egsbench.testing``)."""
        from ..testing.fixtures import write_image_folder  # test-only helper, imported when the checks ask

        root = write_image_folder(tmp_path / "imagenet", per_class=6, size=40, splits=("train", "val"))
        return ImageNetConfig(data_dir=str(root), image_size=32, workers=0)

    @classmethod
    def conformance_recipes(cls) -> tuple[ImageNetSearchConfig, ImageNetTrainConfig]:
        """A 3-cell C=4 supernet and final network (for ``egsbench.testing``)."""
        return ImageNetSearchConfig(channels=4, layers=3, batch_size=4), ImageNetTrainConfig(
            channels=4, layers=3, epochs=1, batch_size=4
        )

    # -- data ------------------------------------------------------------------------------------
    def _datasets(self) -> tuple[Any, Any, str]:
        cfg = self.config
        root = cfg.data_dir or default_data_dir()
        if cfg.hf_dataset:
            try:
                train = create_dataset(f"hfds/{cfg.hf_dataset}", root=root, split="train")
                test = create_dataset(f"hfds/{cfg.hf_dataset}", root=root, split="validation")
            except (FileNotFoundError, ConnectionError, OSError, ValueError) as err:
                raise DataNotFoundError(
                    f"Hugging Face dataset {cfg.hf_dataset!r} (cache {root}) could not be read "
                    f"({type(err).__name__}: {err}); download it once online, or pass a local "
                    "folder as task.hf_dataset"
                ) from None
            return train, test, f"hfds:{cfg.hf_dataset}"
        if root is None:
            raise _not_found("(task.data_dir is not set)")
        base = Path(os.path.expanduser(root))
        train_path, test_path = _split_path(base, TRAIN_SPLITS), _split_path(base, EVAL_SPLITS)
        if train_path is None or test_path is None:
            missing = "train" if train_path is None else "val"
            raise _not_found(f"at {base} (no {missing} split)")
        try:
            train = _folder_dataset(train_path, None)
            test = _folder_dataset(test_path, _class_map(train))  # the training split's class indices
        except (RuntimeError, AssertionError, OSError) as err:  # timm's "Found 0 images", unreadable tars
            raise DataError(
                f"{base}: {err}; put <wnid>/<image> files (or per-class tars) in train/ and val/ ({VALPREP})"
            ) from None
        return train, test, f"imagefolder:{base}"

    def prepare_data(self) -> DataInfo:
        cfg = self.config
        train, test, source = self._datasets()
        train_targets, test_targets = _targets(train), _targets(test)
        classes = len(set(train_targets))
        if cfg.num_classes is not None and classes != cfg.num_classes:
            raise DataError(
                f"{source}: the training split has {classes} classes, task.num_classes is "
                f"{cfg.num_classes}; fix the data or pass --set task.num_classes={classes}"
            )
        if not test_targets:
            raise DataError(
                f"{source}: the validation split holds no images of the training split's classes ({VALPREP})"
            )
        self.classes = classes
        keep = _first_per_class(train_targets, cfg.train_per_class)
        train_split = _Split(train, keep, [train_targets[i] for i in keep])
        keep = _first_per_class(test_targets, cfg.test_per_class)
        test_split = _Split(test, keep, [test_targets[i] for i in keep])
        order = torch.randperm(len(train_split), generator=torch.Generator().manual_seed(cfg.split_seed)).tolist()
        half = len(order) // 2
        self.splits = {
            "search-train": train_split.subset(order[:half]),
            "search-val": train_split.subset(order[half : 2 * half]),
            "train": train_split,
            "test": test_split,
        }
        h = hashlib.sha256()
        for split in ("train", "test"):
            for name, target in zip(self.splits[split].names(), self.splits[split].targets, strict=True):
                h.update(f"{split}|{name}|{target}\n".encode())
        return DataInfo(source=source, sha256=h.hexdigest(), sizes={s: len(d) for s, d in self.splits.items()})

    def transform(self, training: bool):
        """timm's training (random resized crop, flip, colour jitter) or evaluation (resize, centre crop) transform."""
        size = self.config.image_size
        if training:
            t = create_transform(
                size,
                is_training=True,
                scale=(0.08, 1.0),
                hflip=0.5,
                color_jitter=(0.4, 0.4, 0.4, 0.2),
                interpolation="bilinear",
                mean=self.mean,
                std=self.std,
            )
            return _SeededTransform(t)
        return create_transform(
            size, is_training=False, crop_pct=CROP_PCT, interpolation="bilinear", mean=self.mean, std=self.std
        )

    def loader(self, split: str, batch_size: int, generator: torch.Generator | None = None, recipe: Any = None):
        if self.splits is None:
            self.prepare_data()
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid splits: {SPLITS}")
        training = split != "test"
        workers = self.config.workers
        return DataLoader(
            _Transformed(self.splits[split], self.transform(training)),
            batch_size=batch_size,
            shuffle=training,
            drop_last=False,
            generator=generator,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    # -- networks --------------------------------------------------------------------------------
    def num_classes(self) -> int:
        if self.classes is None:
            self.prepare_data()  # counts the class folders (no image is decoded)
        return self.classes

    def build_supernet(self, space: SearchSpace, config: ImageNetSearchConfig) -> SearchNetwork:
        return SearchNetwork(
            space, config.channels, self.num_classes(), config.layers, image_size=self.config.image_size
        )

    def build_network(self, genotype: Genotype, config: ImageNetTrainConfig) -> NetworkImageNet:
        """The mobile network of ``genotype``, after the MAC cap (refuse) or fit (narrow) of ``config``."""
        classes = self.num_classes()
        channels = config.channels
        if config.fit_macs is not None:
            channels = fit_channels(genotype, config.layers, config.fit_macs, config.channels, classes)
        macs = mobile_macs(genotype, channels, config.layers, classes)
        if config.mac_cap is not None and macs > config.mac_cap:
            raise ConfigError(
                f"the network of this genotype (C = {channels}, {config.layers} cells) has {macs / 1e6:.1f} M "
                f"multiply-adds at 224x224, above the mobile setting's {config.mac_cap / 1e6:.0f} M "
                f"(evaluate.mac_cap); pass --set evaluate.fit_macs={config.mac_cap:.0f} to lower C to fit, lower "
                "evaluate.channels, or --set evaluate.mac_cap=null to train it anyway"
            )
        self.fitted = {"channels": channels, "configured_channels": config.channels, "macs_224_m": macs / 1e6}
        if config.fit_macs is not None:
            self.fitted["fit_macs_m"] = config.fit_macs / 1e6
        return NetworkImageNet(
            genotype, channels, classes, config.layers, config.auxiliary_weight > 0, image_size=self.config.image_size
        )

    def example_input(self) -> torch.Tensor:
        return torch.zeros(1, 3, self.config.image_size, self.config.image_size)

    def record_extras(self) -> dict[str, Any]:
        """What the run record keeps under ``extras.imagenet``: the C trained (after a fit) and its MACs at 224."""
        return {"imagenet": dict(self.fitted)} if self.fitted else {}

    # -- losses and metrics ----------------------------------------------------------------------
    def search_loss(self, model: nn.Module, batch: Any, weights: EdgeWeights) -> LossOutput:
        x, y = batch
        logits = model(x, weights)
        return LossOutput(F.cross_entropy(logits, y), {"accuracy": batch_accuracy(logits, y)})

    def make_optimizer(self, model: nn.Module, config: ImageNetTrainConfig) -> torch.optim.SGD:
        return sgd(model, config)

    def start_epoch(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, config: ImageNetTrainConfig
    ) -> None:
        if config.schedule == "poly":
            scheduler = PolyLRScheduler(
                optimizer, t_initial=config.epochs, power=config.poly_power, lr_min=config.lr_min
            )
        else:
            scheduler = StepLRScheduler(optimizer, decay_t=1, decay_rate=config.decay_rate)
        scheduler.step(epoch)  # timm's schedulers are functions of the epoch: a resumed run gets the same lr
        getattr(model, "module", model).drop_path_prob = config.drop_path * epoch / max(config.epochs, 1)

    def end_epoch(self, model, optimizer, epoch: int, config: ImageNetTrainConfig, evaluate) -> dict[str, float]:
        return {}  # DARTS reports the last epoch's validation numbers as the test numbers

    eval_weights = staticmethod(no_swap)

    def train_loss(self, model: nn.Module, batch: Any, config: ImageNetTrainConfig, state: Any = None) -> LossOutput:
        criterion = LabelSmoothingCrossEntropy(config.label_smoothing)
        return auxiliary_loss(model, batch, criterion, config.auxiliary_weight)

    @torch.no_grad()
    def eval_sums(self, model: nn.Module, batch: Any, weights: EdgeWeights | None = None) -> torch.Tensor:
        x, y = batch
        logits = forward_logits(model, x, weights)  # (B, classes)
        loss = F.cross_entropy(logits, y, reduction="sum")
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices  # (B, 5)
        correct1 = (top5[:, 0] == y).sum()
        correct5 = (top5 == y[:, None]).any(dim=1).sum()
        count = torch.full_like(loss, len(y), dtype=torch.float64)
        return torch.stack([correct1.double(), correct5.double(), count, loss.double()])

    def summarize(self, sums: torch.Tensor) -> dict[str, float]:
        correct1, correct5, count, loss = sums.tolist()
        top1 = 100.0 * correct1 / max(count, 1)
        top5 = 100.0 * correct5 / max(count, 1)
        return {
            "accuracy": top1,
            "top1_error": 100.0 - top1,
            "top5_error": 100.0 - top5,
            "loss": loss / max(count, 1),
            "count": int(count),
        }

"""The ``voc2012`` task: PASCAL VOC 2012 semantic segmentation of a cell searched on CIFAR-10 (paper Sec. 4.3.2).

Transfer only: ``search.epochs`` must be 0 and the task builds no supernet. Train a cell with method
``fixed`` (``egsbench run paper/darts_v2-voc2012 --set task.data_dir=DIR``, ``--set method.genotype=RUN``
for a CIFAR-10 run folder) or transfer a search (``transfer_from``). The paper gives no network or
recipe: both are DeepLabv3's. The reported split is VOC val, scored as mIoU from an exact confusion
matrix that the runner sums over batches and processes.

Deviations from the paper and original code: docs/fidelity/voc.md
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ...core.errors import check_range
from ..base import SPLITS, TASKS, CNNSearchConfig, DataInfo, Metric, Task
from ..spaces import ConfigError, DataError, EdgeWeights, Genotype, LossOutput
from ..training import forward_logits, no_swap, set_lr, sgd
from .data import (
    IGNORE,
    NUM_CLASSES,
    EvalTransform,
    PadCollate,
    TrainTransform,
    VOCFiles,
    check_sizes,
    checksum,
    find_voc,
    voc_items,
)
from .model import SegmentationNetwork, load_backbone_weights

__all__ = [
    "VOC2012",
    "PolyLR",
    "VOCConfig",
    "VOCSearchConfig",
    "VOCTrainConfig",
    "confusion_matrix",
    "segmentation_metrics",
]

TRANSFER_ONLY = (
    "task voc2012 is transfer-only (the paper searches on CIFAR-10 and transfers the cell): search.epochs must be 0. "
    "Transfer a CIFAR-10 search (transfer_from: paper/egs-cifar10, as paper/egs-voc2012) or train a cell with "
    "method fixed, e.g. egsbench run paper/darts_v2-voc2012 --set method.genotype=RUN (the CIFAR-10 run folder)"
)


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
    """The ``search:`` block: no search on VOC, so ``epochs`` must be 0 (the other keys keep old configs valid)."""

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
    """The ``evaluate:`` block: DeepLabv3's VOC recipe (Sec. 4.1) on a cell backbone."""

    lr_fields: ClassVar[tuple[str, ...]] = ("lr",)  # what lr_scaling: linear multiplies by the world size

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
            raise ConfigError(
                f"config key evaluate.channels must be even (the stem's C/2, FactorizedReduce), got {self.channels}"
            )
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
    """PASCAL VOC 2012 segmentation of a transferred cell; no supernet (the base class's ``build_supernet`` refuses)."""

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
        from ...testing.fixtures import write_voc_fixture  # test-only helper, imported when the checks ask

        root = write_voc_fixture(Path(tmp_path) / "voc", n_train=8, n_val=4)
        return VOCConfig(data_dir=str(root), crop_size=32, workers=0)

    @classmethod
    def conformance_recipes(cls) -> tuple[VOCSearchConfig, VOCTrainConfig]:
        """A 3-cell C=4 final network with an 8-channel ASPP (seconds on a CPU); the search block is unused."""
        return VOCSearchConfig(batch_size=4), VOCTrainConfig(
            channels=4, layers=3, epochs=1, batch_size=4, aspp_channels=8
        )

    # -- data ------------------------------------------------------------------------------------
    def prepare_data(self) -> DataInfo:
        cfg = self.config
        voc = find_voc(cfg.data_dir, cfg.download, cfg.sbd)
        items, roles = voc_items(voc, cfg.sbd)
        digest = checksum(items)
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
        return DataInfo(
            source=f"voc:{voc}", sha256=digest, sizes={s: len(v) for s, v in self.items.items()}, roles=roles
        )

    def loader(
        self,
        split: str,
        batch_size: int,
        generator: torch.Generator | None = None,
        recipe: VOCTrainConfig | None = None,
    ) -> DataLoader:
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
    def build_network(self, genotype: Genotype, config: VOCTrainConfig) -> SegmentationNetwork:
        rates = tuple(r * 16 // config.output_stride for r in config.aspp_rates)
        net = SegmentationNetwork(
            genotype,
            config.channels,
            config.layers,
            self.num_classes,
            config.output_stride,
            config.aspp_channels,
            rates,
            config.dropout,
        )
        if config.backbone_weights:
            load_backbone_weights(net, config.backbone_weights)
        return net

    def example_input(self) -> torch.Tensor:
        return torch.zeros(1, 3, self.config.crop_size, self.config.crop_size)

    # -- recipe and metrics ----------------------------------------------------------------------
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

    def start_epoch(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, config: VOCTrainConfig
    ) -> PolyLR:
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
        logits = forward_logits(model, x, weights)  # (B, classes, H, W)
        loss = F.cross_entropy(logits, y, ignore_index=IGNORE, reduction="sum")
        cm = confusion_matrix(logits.argmax(1), y, self.num_classes)
        return torch.cat([cm.flatten().double(), loss.double().view(1)])

    def summarize(self, sums: torch.Tensor) -> dict[str, float]:
        k = self.num_classes
        cm = sums[: k * k].view(k, k)
        count = int(cm.sum().item())
        return segmentation_metrics(cm) | {"loss": sums[k * k].item() / max(count, 1), "count": count}

"""PASCAL VOC 2012 semantic segmentation (``voc2012``): a CIFAR-10 cell transferred as a segmentation backbone.

``data`` finds and reads the files, ``model`` builds the cell backbone with DeepLabv3's ASPP head,
``task`` holds the configs, the metrics and the registered :class:`VOC2012` task (importing this
package registers it). Transfer only: the task builds no supernet.

Deviations from the paper and original code: docs/fidelity/voc.md
"""

from __future__ import annotations

from .data import (
    CLASSES,
    IGNORE,
    MEAN,
    NUM_CLASSES,
    STD,
    EvalTransform,
    PadCollate,
    TrainTransform,
    VOCFiles,
    check_sizes,
    find_voc,
    read_pair,
    voc_items,
)
from .model import ASPP, CellBackbone, SegmentationNetwork, load_backbone_weights
from .task import (
    VOC2012,
    PolyLR,
    VOCConfig,
    VOCSearchConfig,
    VOCTrainConfig,
    confusion_matrix,
    segmentation_metrics,
)

__all__ = [
    "ASPP",
    "CLASSES",
    "IGNORE",
    "MEAN",
    "NUM_CLASSES",
    "STD",
    "VOC2012",
    "CellBackbone",
    "EvalTransform",
    "PadCollate",
    "PolyLR",
    "SegmentationNetwork",
    "TrainTransform",
    "VOCConfig",
    "VOCFiles",
    "VOCSearchConfig",
    "VOCTrainConfig",
    "check_sizes",
    "confusion_matrix",
    "find_voc",
    "load_backbone_weights",
    "read_pair",
    "segmentation_metrics",
    "voc_items",
]

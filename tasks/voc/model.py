"""The segmentation network: a genotype's cell backbone at output stride 16 or 8, DeepLabv3's ASPP head.

``SegmentationNetwork(genotype, ...)(x)`` returns ``(B, classes, H, W)`` logits for any input size
(padded inside to a multiple of the output stride, cropped back). The backbone's stems and cells
carry ``NetworkImageNet``'s names, so ``load_backbone_weights`` fills them from an ImageNet run of
the same genotype; the second reduction cell runs at stride 1 (both at output stride 8).

Deviations from the paper and original code: docs/fidelity/voc.md
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..spaces import Cell, DataError, DataNotFoundError, Genotype, count_parameters
from ..spaces.cell import ScheduledDropPath
from ..spaces.cnn import cell_stack, imagenet_stems
from .data import NUM_CLASSES

__all__ = ["ASPP", "CellBackbone", "SegmentationNetwork", "load_backbone_weights"]

logger = logging.getLogger(__name__)


def _conv_bn_relu(c_in: int, c_out: int, kernel: int = 1, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel - 1) // 2
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=False),
    )


class CellBackbone(ScheduledDropPath, nn.Module):
    """The cell network of a genotype at output stride 16 or 8: DARTS's ImageNet stems, then the cells.

    The stems and cells are :class:`~egsbench.tasks.spaces.NetworkImageNet`'s, built here because the second reduction
    cell runs at stride 1; ``stem0``/``stem1``/``cells`` carry its names, so its weights load by name.
    """

    def __init__(self, genotype: Genotype, channels: int, layers: int, output_stride: int = 16, in_channels: int = 3):
        super().__init__()
        self.drop_path_prob = 0.0
        self.stem0, self.stem1 = imagenet_stems(in_channels, channels)  # strides 4 and 8
        # stem0's output is at twice stem1's resolution; at output stride 16 only the first reduce cell strides
        self.cells, self.out_channels, _ = cell_stack(
            Cell,
            genotype,
            layers,
            channels,
            channels,
            channels,
            reduction_prev=True,
            strided_reductions=1 if output_stride == 16 else 0,
        )

    @property
    def strides(self) -> list[int]:
        """Each cell's stride, 1 or 2."""
        return [2 if cell.reduction else 1 for cell in self.cells]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = self.stem0(x)  # (B, C, H/4, W/4)
        s1 = self.stem1(s0)  # (B, C, H/8, W/8)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, self.drop_path_arg())
        return s1  # (B, out_channels, H/os, W/os)


class ASPP(nn.Module):
    """DeepLabv3's atrous spatial pyramid pooling, ending in the projection (BN, ReLU, dropout)."""

    def __init__(self, c_in: int, c_out: int, rates: tuple[int, ...], dropout: float):
        super().__init__()
        self.branches = nn.ModuleList(
            [_conv_bn_relu(c_in, c_out, 1)] + [_conv_bn_relu(c_in, c_out, 3, r) for r in rates]
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), _conv_bn_relu(c_in, c_out, 1))  # image-level features
        self.project = nn.Sequential(_conv_bn_relu((len(rates) + 2) * c_out, c_out, 1), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.interpolate(self.pool(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.project(torch.cat([b(x) for b in self.branches] + [pooled], dim=1))  # (B, c_out, h, w)


class SegmentationNetwork(nn.Module):
    """Cell backbone + ASPP + 1x1 classifier, logits upsampled to the input: ``forward(x) -> (B, classes, H, W)``."""

    def __init__(
        self,
        genotype: Genotype,
        channels: int,
        layers: int,
        num_classes: int = NUM_CLASSES,
        output_stride: int = 16,
        aspp_channels: int = 256,
        aspp_rates: tuple[int, ...] = (6, 12, 18),
        dropout: float = 0.5,
    ):
        super().__init__()
        self.output_stride = output_stride
        self.backbone = CellBackbone(genotype, channels, layers, output_stride)
        self.aspp = ASPP(self.backbone.out_channels, aspp_channels, tuple(aspp_rates), dropout)
        self.classifier = nn.Conv2d(aspp_channels, num_classes, 1)

    @property
    def drop_path_prob(self) -> float:
        return self.backbone.drop_path_prob

    @drop_path_prob.setter
    def drop_path_prob(self, value: float) -> None:
        self.backbone.drop_path_prob = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        ph, pw = -H % self.output_stride, -W % self.output_stride
        padded = F.pad(x, (0, pw, 0, ph))  # sides divisible by the output stride (0 = the mean)
        logits = self.classifier(self.aspp(self.backbone(padded)))  # (B, classes, H'/os, W'/os)
        logits = F.interpolate(logits, size=padded.shape[-2:], mode="bilinear", align_corners=False)
        return logits[..., :H, :W]  # (B, classes, H, W)

    def num_parameters(self) -> int:
        return count_parameters(self)


def load_backbone_weights(net: SegmentationNetwork, path: str) -> int:
    """Load the stem and cell weights of ``path`` (safetensors) whose names and shapes match; returns how many."""
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise DataNotFoundError(
            f"evaluate.backbone_weights {path} is not a file; pass the model.safetensors of a run of the same genotype"
        )
    own = net.backbone.state_dict()
    found = {k: v for k, v in load_file(path).items() if k in own and own[k].shape == v.shape}
    if not found:
        raise DataError(
            f"{path} holds no stem0/stem1/cells weights of this backbone's names and shapes; was it "
            "trained with the same genotype and channels?"
        )
    net.backbone.load_state_dict(found, strict=False)
    logger.info(
        f"backbone: {len(found)} of its {len(own)} tensors loaded from {path}; the others (the input "
        "reduction of the cell after the stride-1 reduce cell) and the head start fresh"
    )
    return len(found)

"""DARTS-style convolutional networks: the search supernet and the final CIFAR and ImageNet networks.

Code origin: quark0/darts ``cnn/model_search.py`` (``Network``) and ``cnn/model.py`` (``NetworkCIFAR``,
``NetworkImageNet`` and their auxiliary heads). :class:`SearchNetwork` takes edge weights from its caller on
every forward pass (``forward(x, weights)``, one ``(E, K)`` tensor per cell type, shared by all cells of that
type); the final networks are built from any ``dag`` genotype (DARTS genotypes are a special case, with the
original's parameter counts) and return ``(logits, aux_logits)``.

Deviations from the paper and the original code: docs/fidelity/spaces.md
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ...core.genotype import Genotype
from .cell import Cell, ScheduledDropPath, SearchCell, SharedInput, active_ops, drop_path
from .cost import MacCount, count_macs, count_parameters
from .ops import Identity
from .space import SearchSpace
from .weighting import Supernet

__all__ = [
    "AuxiliaryHeadCIFAR",
    "AuxiliaryHeadImageNet",
    "NetworkCIFAR",
    "NetworkImageNet",
    "SearchNetwork",
    "cell_stack",
    "edge_op_costs",
    "imagenet_stems",
]

STEM_MULTIPLIER = 3


def _stem(in_channels: int, c: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))


def _is_reduction(i: int, layers: int) -> bool:
    return i in (layers // 3, 2 * layers // 3)


@torch.no_grad()
def _count_memory_access(model: nn.Module, *inputs) -> MacCount:
    """Memory access cost per module for one sample: input + output elements + own parameters.

    Counted for convolutions, pools and identities, as SNAS's per-op ``mac`` attributes.
    """
    result = MacCount()
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, Identity)):

            def hook(mod, inp, out, name=name):
                value = inp[0][0].numel() + out[0].numel() + sum(p.numel() for p in mod.parameters(recurse=False))
                result.per_module[name] = result.per_module.get(name, 0) + value
                result.total += value

            hooks.append(module.register_forward_hook(hook))
    try:
        model(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return result


class SearchNetwork(Supernet, nn.Module):
    """The DARTS CNN supernet over ``space``.

    Args:
        space: the search space (ops, cell types ``normal``/``reduce``, edges).
        channels: initial channels C (16 in the DARTS search).
        num_classes: classifier outputs.
        layers: number of cells L (8 in the DARTS search).
        in_channels: image channels.
        image_size: side of the (square) input, used for cost measurement only.

    ``drop_path_prob`` (default 0, off) drops each executed non-identity op output per sample
    in training mode; search methods that use search-time drop path (SNAS) set it.

    Examples:
        >>> from egsbench.tasks.spaces import SPACES
        >>> space = SPACES.get("darts")
        >>> net = SearchNetwork(space, channels=4, num_classes=10, layers=3)
        >>> w = {t: torch.full((space.num_edges, space.num_ops), 1 / space.num_ops) for t in space.cell_types}
        >>> net(torch.zeros(2, 3, 16, 16), w).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        space: SearchSpace,
        channels: int,
        num_classes: int,
        layers: int,
        in_channels: int = 3,
        image_size: int = 32,
    ):
        super().__init__()
        if tuple(space.cell_types) != ("normal", "reduce"):
            raise ValueError(f"SearchNetwork needs cell types ('normal', 'reduce'), space has {space.cell_types}")
        self.space = space
        self.input_shape = (in_channels, image_size, image_size)
        self.drop_path_prob = 0.0
        c_curr = STEM_MULTIPLIER * channels
        self.stem = _stem(in_channels, c_curr)
        c_pp, c_p, c_curr = c_curr, c_curr, channels
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = _is_reduction(i, layers)
            c_curr = c_curr * 2 if reduction else c_curr
            self.cells.append(SearchCell(space, c_pp, c_p, c_curr, reduction, reduction_prev))
            reduction_prev = reduction
            c_pp, c_p = c_p, space.n_nodes * c_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)
        zero = space.zero_op
        self._zero_index = space.op_index(zero) if zero in space.ops else None

    def cell_type(self, cell: SearchCell) -> str:
        return "reduce" if cell.reduction else "normal"

    def forward(self, x: torch.Tensor, weights: Mapping[str, torch.Tensor]) -> torch.Tensor:
        active = {t: active_ops(w, self._zero_index) for t, w in weights.items()}  # one host sync per cell type
        return self.forward_active(x, weights, active, self.drop_path_prob if self.training else 0.0)

    def forward_active(
        self, x: torch.Tensor, weights: Mapping[str, torch.Tensor], active: dict[str, list[list[int]]], drop_prob: float
    ) -> torch.Tensor:
        """The forward given the ops each edge runs: the part :meth:`compile_search_forward` compiles, to which
        ``active`` is a constant (a dense method's never changes, so it compiles once)."""
        s0 = s1 = SharedInput(self.stem(x))  # (B, 3C, H, W); the cells reading one state share its ReLU
        for cell in self.cells:
            t = self.cell_type(cell)
            s0, s1 = s1, SharedInput(cell(s0, s1, weights[t], active[t], drop_prob))
        return self.classifier(self.global_pooling(s1.x).flatten(1))  # (B, num_classes)

    def compile_search_forward(self, **options) -> bool:
        self.forward_active = torch.compile(self.forward_active, **options)
        return True

    def op_costs(self, metric: str = "macs", per_cell: bool = False) -> dict[str, torch.Tensor]:
        """Cost of each op at each edge, summed over all cells of a type: ``{cell_type: (E, K)}``.

        ``metric`` is ``"macs"`` (multiply-accumulates for one input, pools included),
        ``"params"``, or ``"mac_memory"`` (memory access cost for one input: input plus output
        feature-map elements plus parameters of every conv, pool and identity, ShuffleNet V2's
        MAC as SNAS's ``operations.py`` counts it; FactorizedReduce's shifted path reads
        ``(H-1)(W-1)`` positions, where SNAS counts ``H*W``). The zero op costs 0; identity
        costs 0 except under ``mac_memory`` (it reads and writes its feature map).

        ``per_cell=True`` returns ``{cell_type: (n_cells_of_type, E, K)}`` instead, one slice
        per cell in network order (SNAS penalises each cell's cost separately).
        """
        return edge_op_costs(self, metric, per_cell)


@torch.no_grad()
def edge_op_costs(net: nn.Module, metric: str = "macs", per_cell: bool = False) -> dict[str, torch.Tensor]:
    """:meth:`SearchNetwork.op_costs` of any supernet with its layout: ``space``, ``input_shape``, ``cells`` (whose
    ops are named ``cells.{i}.edges.{e}.ops.{k}``) and ``cell_type(cell)`` (None for a cell of no type: a fixed
    block), called as ``net(x, weights)``."""
    space = net.space
    E, K = space.num_edges, space.num_ops
    if metric == "params":
        per_module = {name: p.numel() for name, p in net.named_parameters()}
    elif metric in ("macs", "mac_memory"):
        was_training = net.training
        net.eval()
        device = next(net.parameters()).device
        ones = {t: torch.ones(E, K, device=device) for t in space.cell_types}
        x = torch.zeros(1, *net.input_shape, device=device)
        counter = count_macs if metric == "macs" else _count_memory_access
        per_module = counter(net, x, ones).per_module
        net.train(was_training)
    else:
        raise ValueError(f"unknown cost metric {metric!r}; use 'macs', 'params' or 'mac_memory'")
    per_cell_costs = torch.zeros(len(net.cells), E, K, dtype=torch.float64)
    for name, value in per_module.items():
        parts = name.split(".")
        # cells.{i}.edges.{e}.ops.{k}[.<rest>]: an identity op is itself the counted module
        if len(parts) >= 6 and parts[0] == "cells" and parts[2] == "edges" and parts[4] == "ops":
            per_cell_costs[int(parts[1]), int(parts[3]), int(parts[5])] += value
    out = {}
    for t in space.cell_types:
        rows = [i for i, cell in enumerate(net.cells) if net.cell_type(cell) == t]
        out[t] = per_cell_costs[rows] if per_cell else per_cell_costs[rows].sum(dim=0)
    return out


def cell_stack(
    cell_class: type[Cell],
    genotype: Genotype,
    layers: int,
    c_pp: int,
    c_p: int,
    c: int,
    reduction_prev: bool,
    strided_reductions: int = 2,
) -> tuple[nn.ModuleList, int, int | None]:
    """A final network's ``layers`` cells (reduce cells at layers // 3 and 2 layers // 3, each doubling C), with
    the output channels of the last cell and of cell ``2 layers // 3`` (where the auxiliary head reads).

    Only the first ``strided_reductions`` reduce cells halve the resolution; later ones run the reduce genotype
    at stride 1 (a segmentation backbone's output stride 16: ``strided_reductions=1`` after the ImageNet stems).
    """
    cells, c_aux, strided = nn.ModuleList(), None, 0
    for i in range(layers):
        reduce_cell = _is_reduction(i, layers)
        stride2 = reduce_cell and strided < strided_reductions
        strided += stride2
        c = c * 2 if reduce_cell else c
        cell = cell_class(genotype["reduce" if reduce_cell else "normal"], 2, c_pp, c_p, c, stride2, reduction_prev)
        cells.append(cell)
        reduction_prev = stride2
        c_pp, c_p = c_p, cell.multiplier * c
        if i == 2 * layers // 3:
            c_aux = c_p
    return cells, c_p, c_aux


def _run_cells(net: nn.Module, s0: torch.Tensor, s1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A final network's cells over its stem outputs, then its classifier: ``(logits, auxiliary logits or None)``."""
    aux = None
    for i, cell in enumerate(net.cells):
        s0, s1 = s1, cell(s0, s1, net.drop_path_arg())
        if i == net.aux_index and net.auxiliary is not None and net.training:
            aux = net.auxiliary(s1)
    return net.classifier(net.global_pooling(s1).flatten(1)), aux


class AuxiliaryHeadCIFAR(nn.Module):
    """Auxiliary classifier on the 8x8 feature map after cell ``2L // 3``."""

    def __init__(self, c: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),  # 8x8 -> 2x2
            nn.Conv2d(c, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=False),
            nn.Conv2d(128, 768, 2, bias=False),  # 2x2 -> 1x1
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=False),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class NetworkCIFAR(ScheduledDropPath, nn.Module):
    """The final CIFAR network for a genotype (DARTS ``NetworkCIFAR``).

    ``forward`` returns ``(logits, aux_logits)``; ``aux_logits`` is None unless the network
    has an auxiliary head and is training. ``drop_path_prob`` is set by the training loop.
    Parameter counts exclude the auxiliary head (``count_parameters``), as DARTS reports.
    """

    def __init__(
        self,
        genotype: Genotype,
        channels: int,
        num_classes: int,
        layers: int,
        auxiliary: bool = False,
        in_channels: int = 3,
    ):
        super().__init__()
        if auxiliary and layers < 2:  # one cell is both reductions: the head would read a 16x16 map, not 8x8
            raise ValueError(
                f"NetworkCIFAR's auxiliary head needs layers >= 2 (it reads the 8x8 map after both "
                f"reduction cells), got {layers}"
            )
        self.drop_path_prob = 0.0
        c_curr = STEM_MULTIPLIER * channels
        self.stem = _stem(in_channels, c_curr)
        self.cells, c_p, c_aux = cell_stack(Cell, genotype, layers, c_curr, c_curr, channels, reduction_prev=False)
        self.aux_index = 2 * layers // 3
        self.auxiliary = AuxiliaryHeadCIFAR(c_aux, num_classes) if auxiliary else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        s0 = s1 = self.stem(x)
        return _run_cells(self, s0, s1)

    def num_parameters(self) -> int:
        return count_parameters(self)


# -- ImageNet (mobile setting) ------------------------------------------------------------------
class AuxiliaryHeadImageNet(nn.Module):
    """Auxiliary classifier after cell ``2L // 3``: a 7x7 map at 224 px (DARTS's docstring says 14x14; it is 7x7).

    Args:
        c: input channels.
        num_classes: classifier outputs.
        size: side of the input map; DARTS's ``AvgPool2d(5, stride=2)`` gives the 2x2 map the 2x2 conv needs
            only at 7 or 8, so other sizes pool adaptively to 2x2 (smoke-sized inputs).
    """

    def __init__(self, c: int, num_classes: int, size: int = 7):
        super().__init__()
        darts_pool = (size - 5) // 2 + 1 == 2
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.AvgPool2d(5, stride=2, padding=0, count_include_pad=False) if darts_pool else nn.AdaptiveAvgPool2d(2),
            nn.Conv2d(c, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=False),
            nn.Conv2d(128, 768, 2, bias=False),  # 2x2 -> 1x1; DARTS has no BN here (docs/fidelity/spaces.md)
            nn.ReLU(inplace=False),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def _timm_drop_path(x: torch.Tensor, drop_prob: float | torch.Tensor) -> torch.Tensor:
    if isinstance(drop_prob, torch.Tensor):  # a compiled network's probability: the branch-free path
        return drop_path(x, drop_prob)
    from timm.layers import drop_path as timm_drop_path  # here: importing timm costs seconds, a CIFAR run needs none

    return timm_drop_path(x, drop_prob, training=True)  # Cell calls it only while training


class ImageNetCell(Cell):
    """A final-network cell whose drop path is timm's (``timm.layers.drop_path``); otherwise :class:`.cell.Cell`."""

    drop_path = staticmethod(_timm_drop_path)


def imagenet_stems(in_channels: int, c: int) -> tuple[nn.Sequential, nn.Sequential]:
    stem0 = nn.Sequential(
        nn.Conv2d(in_channels, c // 2, 3, stride=2, padding=1, bias=False),  # (B, C/2, H/2, W/2)
        nn.BatchNorm2d(c // 2),
        nn.ReLU(inplace=False),
        nn.Conv2d(c // 2, c, 3, stride=2, padding=1, bias=False),  # (B, C, H/4, W/4)
        nn.BatchNorm2d(c),
    )
    stem1 = nn.Sequential(
        nn.ReLU(inplace=False),
        nn.Conv2d(c, c, 3, stride=2, padding=1, bias=False),  # (B, C, H/8, W/8)
        nn.BatchNorm2d(c),
    )
    return stem0, stem1


def _down(size: int, times: int) -> int:
    """Side of a map after ``times`` stride-2, padding-1, 3x3 convs (or 1x1 stride-2 reductions): ceil(size / 2)."""
    for _ in range(times):
        size = (size + 1) // 2
    return size


class NetworkImageNet(ScheduledDropPath, nn.Module):
    """The final ImageNet network for a genotype (DARTS ``NetworkImageNet``, mobile setting: C=48, 14 cells).

    ``forward`` returns ``(logits, aux_logits)`` as :class:`NetworkCIFAR`; parameter counts exclude the
    auxiliary head. ``image_size`` sizes only the auxiliary head's pooling (docs/fidelity/spaces.md).

    Examples:
        >>> from egsbench.tasks.spaces import DARTS_V2
        >>> net = NetworkImageNet(DARTS_V2, channels=8, num_classes=5, layers=3, image_size=64).eval()
        >>> net(torch.zeros(2, 3, 64, 64))[0].shape
        torch.Size([2, 5])
    """

    def __init__(
        self,
        genotype: Genotype,
        channels: int,
        num_classes: int,
        layers: int,
        auxiliary: bool = False,
        in_channels: int = 3,
        image_size: int = 224,
    ):
        super().__init__()
        if channels < 2 or channels % 2:
            raise ValueError(
                f"NetworkImageNet needs an even channel count >= 2 (stem C/2, FactorizedReduce), got {channels}"
            )
        self.drop_path_prob = 0.0
        self.stem0, self.stem1 = imagenet_stems(in_channels, channels)
        # s0 (stem0) has twice the resolution of s1 (stem1): the first cell reduces its s0 input
        self.cells, c_p, c_aux = cell_stack(
            ImageNetCell, genotype, layers, channels, channels, channels, reduction_prev=True
        )
        self.aux_index = 2 * layers // 3
        aux_size = _down(image_size, 3 + sum(_is_reduction(i, layers) for i in range(self.aux_index + 1)))
        self.auxiliary = AuxiliaryHeadImageNet(c_aux, num_classes, aux_size) if auxiliary else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        s0 = self.stem0(x)  # (B, C, H/4, W/4)
        s1 = self.stem1(s0)  # (B, C, H/8, W/8)
        return _run_cells(self, s0, s1)

    def num_parameters(self) -> int:
        return count_parameters(self)

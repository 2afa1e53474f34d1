"""NAS-Bench-201's cell space (``nb201``): its five ops, the search supernet and the final network.

Code origin: D-X-Y/AutoDL-Projects (xautodl) ``models/cell_operations.py`` (ops, ``ResNetBasicblock``),
``models/cell_searchs/search_cells.py`` (``NAS201SearchCell``), ``search_model_darts.py`` and
``search_model_gdas.py`` (``TinyNetworkDarts``, ``TinyNetworkGDAS``), ``models/cell_infers/tiny_network.py``
(``TinyNetwork``). A cell is node 0 (its input) and nodes 1-3; every edge ``src < dst`` holds one of ``none,
skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3``; the cell outputs node 3. Both networks: a 3x3 stem conv
and BN, three stages of N cells at C, 2C and 4C joined by stride-2 ResNet basic blocks, BN and ReLU, global pooling,
a linear classifier. :class:`NB201SearchNetwork` takes edge weights as every supernet here (``forward(x, weights)``:
one ``(6, 5)`` tensor for the ``normal`` cells) and runs only the ops whose weight is non-zero.

Deviations from the paper and the original code: docs/fidelity/nb201.md
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ...core.genotype import CellGenotype, Genotype, GenotypeError
from .cell import MixedEdge, active_ops, sum_into_nodes
from .cnn import edge_op_costs
from .ops import Identity, ReLUConvBN, Zero
from .space import SPACES, SearchSpace
from .weighting import Supernet

__all__ = [
    "NB201",
    "NB201_PRIMITIVES",
    "NB201Network",
    "NB201SearchNetwork",
    "NorConv",
    "ResNetBasicblock",
    "make_nb201_op",
]

# xautodl cell_operations.NAS_BENCH_201: the order is part of the format (alpha columns, NATS-Bench's op indices).
NB201_PRIMITIVES: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NB201 = SearchSpace(
    "nb201",
    ops=NB201_PRIMITIVES,
    cell_types=("normal",),
    n_inputs=1,
    n_nodes=3,
    one_op_per_edge=True,
    output_node=3,
)
SPACES.add("nb201", NB201)


class NorConv(nn.Sequential):
    """``nor_conv_kxk``: ReLU -> conv k x k (stride 1) -> BN.

    ``affine=False`` is the search variant of xautodl's NATS-algos defaults (``--affine 0 --track_running_stats 0``):
    the conv has a bias (``bias=not affine``) and the BN neither learns a scale and shift nor keeps running
    statistics; ``affine=True`` the final network's (no bias, affine BN with running statistics).
    """

    def __init__(self, channels: int, kernel: int, affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(channels, channels, kernel, padding=kernel // 2, bias=not affine),
            nn.BatchNorm2d(channels, affine=affine, track_running_stats=affine),
        )

    @property
    def pre_activation(self) -> nn.Module:
        """The leading ReLU (a search edge applies it once for both convolutions)."""
        return self[0]

    def after_activation(self, activated: torch.Tensor) -> torch.Tensor:
        """The op on an input that is already ``pre_activation(x)``."""
        return self[2](self[1](activated))


def make_nb201_op(name: str, channels: int, stride: int = 1, affine: bool = True) -> nn.Module:
    """One NAS-Bench-201 op by name; every op maps ``(B, C, H, W)`` to itself (cells never change the shape).

    Examples:
        >>> make_nb201_op("nor_conv_3x3", 8, affine=False)(torch.zeros(2, 8, 4, 4)).shape
        torch.Size([2, 8, 4, 4])
    """
    if stride != 1:
        raise ValueError(f"NAS-Bench-201 cells never reduce (the ResNet blocks do); got stride {stride}")
    if name == "none":
        return Zero(1)
    if name == "skip_connect":
        return Identity()
    if name in ("nor_conv_1x1", "nor_conv_3x3"):
        return NorConv(channels, int(name[-1]), affine)
    if name == "avg_pool_3x3":  # xautodl POOLING: no preprocessing at C_in == C_out, no BN after the pool
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown NAS-Bench-201 op {name!r}; valid ops: {', '.join(NB201_PRIMITIVES)}")


class ResNetBasicblock(nn.Module):
    """The stride-2 block between stages: two ReLU-conv 3x3-BN (the first strided) plus a pooled 1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, 1, affine=True)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1, affine=True)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, stride=2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))  # (B, C_out, H/2, W/2)


def _stem(in_channels: int, c: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))


def _layout(channels: int, cells_per_stage: int) -> list[tuple[int, bool]]:
    """``(C, is the ResNet block)`` per position: N cells at C, a block to 2C, N cells, a block to 4C, N cells."""
    n = cells_per_stage
    return (
        [(channels, False)] * n
        + [(2 * channels, True)]
        + [(2 * channels, False)] * n
        + [(4 * channels, True)]
        + [(4 * channels, False)] * n
    )


class _Head(nn.Module):
    """BN -> ReLU -> global average pool -> linear (xautodl's ``lastact``, ``global_pooling``, ``classifier``)."""

    def __init__(self, c: int, num_classes: int):
        super().__init__()
        self.lastact = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.global_pooling(self.lastact(x)).flatten(1))  # (B, num_classes)


class NB201SearchCell(nn.Module):
    """A search cell of a one-input space: node ``j`` is the sum over ``i < j`` of edge ``(i, j)``'s mixed ops."""

    def __init__(self, space: SearchSpace, channels: int):
        super().__init__()
        self.space = space
        self.edges = nn.ModuleList(MixedEdge(space.ops, channels, 1, make=make_nb201_op) for _ in space.edges)

    def forward(
        self, x: torch.Tensor, weights: torch.Tensor, active: list[list[int]], drop_prob: float = 0.0
    ) -> torch.Tensor:
        nodes = [x]  # (B, C, H, W) each
        zeros = lambda: torch.zeros_like(x)  # a node whose every edge is `none`
        sum_into_nodes(self.edges, nodes, self.space.intermediate_nodes, weights, active, drop_prob, zeros)
        return nodes[self.space.output_node if self.space.output_node is not None else -1]


class NB201SearchNetwork(Supernet, nn.Module):
    """The NAS-Bench-201 supernet (xautodl ``TinyNetworkDarts``'s layout) over a one-input, one-cell-type space.

    Args:
        space: the space (``nb201``): cell type ``normal``, one input node.
        channels: C of the first stage (16 in NATS-Bench).
        num_classes: classifier outputs.
        cells_per_stage: N (5 in NATS-Bench): 3N cells and two ResNet blocks.
        in_channels: image channels.
        image_size: side of the (square) input, used for cost measurement only.

    Examples:
        >>> from egsbench.tasks.spaces import SPACES
        >>> space = SPACES.get("nb201")
        >>> net = NB201SearchNetwork(space, channels=4, num_classes=10, cells_per_stage=1)
        >>> net(torch.zeros(2, 3, 16, 16), {"normal": torch.full((6, 5), 0.2)}).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        space: SearchSpace,
        channels: int,
        num_classes: int,
        cells_per_stage: int,
        in_channels: int = 3,
        image_size: int = 32,
    ):
        super().__init__()
        if tuple(space.cell_types) != ("normal",) or space.n_inputs != 1:
            raise ValueError(
                f"NB201SearchNetwork needs one cell type 'normal' with one input node; space {space.name!r} has "
                f"{space.cell_types} and {space.n_inputs} inputs"
            )
        self.space = space
        self.input_shape = (in_channels, image_size, image_size)
        self.drop_path_prob = 0.0  # search-time drop path, for methods that use it (SNAS); off by default
        self.stem = _stem(in_channels, channels)
        self.cells = nn.ModuleList()
        c_prev = channels
        for c, block in _layout(channels, cells_per_stage):
            self.cells.append(ResNetBasicblock(c_prev, c) if block else NB201SearchCell(space, c))
            c_prev = c
        self.head = _Head(c_prev, num_classes)
        zero = space.zero_op
        self._zero_index = space.op_index(zero) if zero in space.ops else None

    def cell_type(self, cell: nn.Module) -> str | None:
        return "normal" if isinstance(cell, NB201SearchCell) else None

    def forward(self, x: torch.Tensor, weights: Mapping[str, torch.Tensor]) -> torch.Tensor:
        active = {t: active_ops(w, self._zero_index) for t, w in weights.items()}  # one host sync per forward
        return self.forward_active(x, weights, active, self.drop_path_prob if self.training else 0.0)

    def forward_active(
        self, x: torch.Tensor, weights: Mapping[str, torch.Tensor], active: dict[str, list[list[int]]], drop_prob: float
    ) -> torch.Tensor:
        """The forward given the ops each edge runs (what :meth:`compile_search_forward` compiles)."""
        feature = self.stem(x)  # (B, C, H, W)
        for cell in self.cells:
            if isinstance(cell, NB201SearchCell):
                feature = cell(feature, weights["normal"], active["normal"], drop_prob)
            else:
                feature = cell(feature)
        return self.head(feature)

    def compile_search_forward(self, **options) -> bool:
        self.forward_active = torch.compile(self.forward_active, **options)
        return True

    def op_costs(self, metric: str = "macs", per_cell: bool = False) -> dict[str, torch.Tensor]:
        """Cost of each op at each edge, as :meth:`~.cnn.SearchNetwork.op_costs` counts it: ``{"normal": (6, 5)}``
        (``per_cell``: ``(3N, 6, 5)``)."""
        return edge_op_costs(self, metric, per_cell)


class NB201Cell(nn.Module):
    """A final-network cell from a one-op-per-edge cell genotype (xautodl ``InferCell``); node ``j`` sums its
    inputs' ops, a node with none is zeros (as xautodl's ``none`` ops sum to), the output is the concat node."""

    def __init__(self, cell: CellGenotype, channels: int):
        super().__init__()
        if len(cell.concat) != 1:
            raise GenotypeError(f"a NAS-Bench-201 cell outputs one node; this one concatenates {list(cell.concat)}")
        self.links = [(src, dst) for src, dst, _ in cell.edges]
        self.ops = nn.ModuleList(make_nb201_op(op, channels, 1, affine=True) for _, _, op in cell.edges)
        self.output = cell.concat[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = {0: x}
        for dst in range(1, self.output + 1):
            node = None
            for (src, d), op in zip(self.links, self.ops, strict=True):
                if d == dst:
                    y = op(nodes[src])
                    node = y if node is None else node + y
            nodes[dst] = node if node is not None else torch.zeros_like(x)
        return nodes[self.output]


class NB201Network(nn.Module):
    """The final NAS-Bench-201 network of a genotype (xautodl ``TinyNetwork``): C = 16 and N = 5 in the benchmark.

    ``forward`` returns ``(logits, None)`` (no auxiliary head), as the other final networks.

    Examples:
        >>> g = Genotype.from_dict({"normal": [[0, 1, "nor_conv_3x3"], [1, 3, "skip_connect"]], "normal_concat": [3]})
        >>> NB201Network(g, channels=4, num_classes=10, cells_per_stage=1)(torch.zeros(2, 3, 8, 8))[0].shape
        torch.Size([2, 10])
    """

    def __init__(self, genotype: Genotype, channels: int, num_classes: int, cells_per_stage: int, in_channels: int = 3):
        super().__init__()
        NB201.validate(genotype)
        self.stem = _stem(in_channels, channels)
        self.cells = nn.ModuleList()
        c_prev = channels
        for c, block in _layout(channels, cells_per_stage):
            self.cells.append(ResNetBasicblock(c_prev, c) if block else NB201Cell(genotype["normal"], c))
            c_prev = c
        self.head = _Head(c_prev, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        feature = self.stem(x)
        for cell in self.cells:
            feature = cell(feature)
        return self.head(feature), None

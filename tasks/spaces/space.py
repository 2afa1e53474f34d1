"""Search spaces: op names and cell topologies.

A cell is a DAG of ordered nodes: nodes ``0 .. n_inputs-1`` are the cell inputs, the next
``n_nodes`` are intermediate nodes, and every edge ``(src, dst)`` with ``src < dst`` carries
the space's candidate ops. Two spaces share the DARTS topology (2 inputs, 4 intermediate nodes,
14 edges, 8 ops): ``darts`` accepts only DARTS-style genotypes (exactly two (src, op) entries per
node), and ``dag`` (the EGS space, "all feed-forward networks with n ordered nodes") accepts any
in-degree and several ops per edge. A one-op-per-edge space (``nb201``, :mod:`.nb201`) holds one op, ``none``
included, on every edge and outputs one node; :func:`argmax_genotype` is its derivation rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch

from ...core.genotype import CellGenotype, Edge, Genotype, GenotypeError, live_nodes
from ...core.registry import Registry
from .ops import PRIMITIVES

__all__ = ["DARTS_V1", "DARTS_V2", "SPACES", "SearchSpace", "argmax_genotype", "genotype_weights", "one_op_cell"]


@dataclass(frozen=True)
class SearchSpace:
    """Op names and cell topology of a cell-based search space.

    Attributes:
        name: registry name.
        ops: candidate op names; column ``k`` of an alpha tensor is ``ops[k]``.
        cell_types: e.g. ``("normal", "reduce")``; all share one edge list here.
        n_inputs: input nodes per cell.
        n_nodes: intermediate nodes per cell.
        inputs_per_node: exact number of (src, op) entries per intermediate node in a valid
            genotype (2 for DARTS-style spaces), or None for any in-degree.
        zero_op: name of the "no connection" op, never part of a genotype.
        one_op_per_edge: NAS-Bench-201's cells: at most one op per edge (an edge left out holds ``none``), and a
            node without inputs is zeros, not an error; methods derive such cells per edge
            (:func:`argmax_genotype`).
        output_node: the one node a cell outputs (NAS-Bench-201: the last), its genotype's only concat node;
            None: the genotype's concat nodes.
    """

    name: str
    ops: tuple[str, ...] = PRIMITIVES
    cell_types: tuple[str, ...] = ("normal", "reduce")
    n_inputs: int = 2
    n_nodes: int = 4
    inputs_per_node: int | None = None
    zero_op: str = "none"
    one_op_per_edge: bool = False
    output_node: int | None = None
    edges: tuple[tuple[int, int], ...] = field(init=False)

    def __post_init__(self):
        # Destination-major order, as DARTS enumerates them: (0,2) (1,2) (0,3) (1,3) (2,3) ...
        edges = tuple((src, dst) for dst in range(self.n_inputs, self.n_inputs + self.n_nodes) for src in range(dst))
        object.__setattr__(self, "edges", edges)

    @property
    def num_edges(self) -> int:
        return len(self.edges)

    @property
    def num_ops(self) -> int:
        return len(self.ops)

    @property
    def intermediate_nodes(self) -> list[int]:
        return list(range(self.n_inputs, self.n_inputs + self.n_nodes))

    def edge_index(self, src: int, dst: int) -> int:
        return self.edges.index((src, dst))

    def op_index(self, name: str) -> int:
        return self.ops.index(name)

    def validate(self, genotype: Genotype) -> Genotype:
        """Raise :class:`GenotypeError` naming the first problem; return the genotype."""
        if set(genotype.cells) != set(self.cell_types):
            raise GenotypeError(
                f"genotype has cell types {sorted(genotype.cells)}, space {self.name!r} needs {list(self.cell_types)}"
            )
        nodes = self.intermediate_nodes
        for cell_type, cell in genotype.cells.items():
            where = f"{cell_type} cell"
            seen = set()
            for src, dst, op in cell.edges:
                if op not in self.ops or op == self.zero_op:
                    valid = [o for o in self.ops if o != self.zero_op]
                    raise GenotypeError(f"{where}: op {op!r} is not a valid op; use one of {valid}")
                if dst not in nodes or not 0 <= src < dst:
                    raise GenotypeError(
                        f"{where}: edge ({src}, {dst}) is not in the space; need 0 <= src < dst and dst in {nodes}"
                    )
                if (src, dst, op) in seen:
                    raise GenotypeError(f"{where}: edge ({src}, {dst}, {op!r}) is listed twice")
                if self.one_op_per_edge and any((s, d) == (src, dst) for s, d, _ in seen):
                    raise GenotypeError(
                        f"{where}: edge ({src}, {dst}) has several ops; space {self.name!r} holds one op per edge"
                    )
                seen.add((src, dst, op))
            if self.inputs_per_node is not None:
                for node in nodes:
                    degree = sum(1 for _, dst, _ in cell.edges if dst == node)
                    if degree != self.inputs_per_node:
                        raise GenotypeError(
                            f"{where}: node {node} has {degree} inputs; space {self.name!r} needs exactly "
                            f"{self.inputs_per_node} (use the 'dag' space for any in-degree)"
                        )
            if self.output_node is not None:
                if tuple(cell.concat) != (self.output_node,):
                    raise GenotypeError(
                        f"{where}: concat is {list(cell.concat)}; space {self.name!r} outputs node "
                        f"{self.output_node} alone, so the concat must be [{self.output_node}]"
                    )
                continue
            live = live_nodes(cell.edges, self.n_inputs)
            for src, dst, _ in cell.edges:
                if src not in live and not self.one_op_per_edge:  # NAS-Bench-201: such a node is zeros
                    raise GenotypeError(f"{where}: edge ({src}, {dst}) leaves node {src}, which has no inputs")
            if not cell.concat:
                raise GenotypeError(f"{where}: concat is empty; the cell needs at least one output node")
            for node in cell.concat:
                if node not in live or node < self.n_inputs:
                    raise GenotypeError(f"{where}: concat node {node} is not an intermediate node with inputs")
        return genotype


def genotype_weights(space: SearchSpace, genotype: Genotype, device=None) -> dict[str, torch.Tensor]:
    """Edge weights ``{cell type: (E, K)}`` of a genotype in ``space``'s supernet: 1 at each (edge, op) it keeps.

    Examples:
        >>> g = Genotype.from_dict({"normal": [[0, 2, "skip_connect"]], "normal_concat": [2]})
        >>> w = genotype_weights(SPACES.get("dag"), g)["normal"]
        >>> w.sum().item(), w[0, 3].item()
        (1.0, 1.0)
    """
    weights = {}
    for cell_type, cell in genotype.cells.items():
        w = torch.zeros(space.num_edges, space.num_ops)
        for src, dst, op in cell.edges:
            w[space.edge_index(src, dst), space.op_index(op)] = 1.0
        weights[cell_type] = w.to(device)
    return weights


def one_op_cell(space: SearchSpace, edges: Iterable[Edge]) -> CellGenotype:
    """A cell of a one-op-per-edge space from one ``(src, dst, op)`` per edge: the non-``none`` edges in the
    NAS-Bench-201 arch string's order (by node, then input), output ``space.output_node``."""
    kept = sorted((e for e in edges if e[2] != space.zero_op), key=lambda e: (e[1], e[0]))
    return CellGenotype(tuple(kept), (space.output_node,) if space.output_node is not None else ())


def argmax_genotype(space: SearchSpace, probabilities: Mapping[str, torch.Tensor]) -> Genotype:
    """Per edge the most probable op, ``none`` included (the first on ties): how xautodl's NAS-Bench-201 search
    networks derive a cell (``TinyNetworkDarts.genotype``, GDAS's, SETN's). ``probabilities``: ``{cell type: (E,
    K)}``.

    Examples:
        >>> space = SPACES.get("nb201")
        >>> p = torch.zeros(6, 5).index_fill_(1, torch.tensor([3]), 1.0)  # nor_conv_3x3 on every edge
        >>> p[0] = torch.tensor([1.0, 0, 0, 0, 0])  # none on edge 1 <- 0
        >>> argmax_genotype(space, {"normal": p})["normal"].edges[:2]
        ((0, 2, 'nor_conv_3x3'), (1, 2, 'nor_conv_3x3'))
    """
    cells = {}
    for cell_type, p in probabilities.items():
        best = p.detach().cpu().argmax(dim=-1).tolist()  # (E,)
        edges = [(src, dst, space.ops[k]) for (src, dst), k in zip(space.edges, best, strict=True)]
        cells[cell_type] = one_op_cell(space, edges)
    return Genotype(cells)


SPACES: Registry[SearchSpace] = Registry("space", group="egsbench.spaces")
SPACES.add("darts", SearchSpace("darts", inputs_per_node=2))
SPACES.add("dag", SearchSpace("dag"))

# Published cells (quark0/darts cnn/genotypes.py): DARTS_V1 from first-order, DARTS_V2 from second-order search.
DARTS_V1 = Genotype.from_darts(
    normal=[
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("skip_connect", 0),
        ("sep_conv_3x3", 1),
        ("skip_connect", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("skip_connect", 2),
    ],
    normal_concat=[2, 3, 4, 5],
    reduce=[
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 1),
        ("skip_connect", 2),
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 0),
        ("skip_connect", 2),
        ("skip_connect", 2),
        ("avg_pool_3x3", 0),
    ],
    reduce_concat=[2, 3, 4, 5],
)
DARTS_V2 = Genotype.from_darts(
    normal=[
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 1),
        ("skip_connect", 0),
        ("skip_connect", 0),
        ("dil_conv_3x3", 2),
    ],
    normal_concat=[2, 3, 4, 5],
    reduce=[
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 1),
        ("skip_connect", 2),
        ("max_pool_3x3", 1),
        ("max_pool_3x3", 0),
        ("skip_connect", 2),
        ("skip_connect", 2),
        ("max_pool_3x3", 1),
    ],
    reduce_concat=[2, 3, 4, 5],
)

"""Search spaces (op names and cell topologies) and genotypes (derived architectures).

A cell is a DAG of ordered nodes: nodes ``0 .. n_inputs-1`` are the cell inputs, the next
``n_nodes`` are intermediate nodes, and every edge ``(src, dst)`` with ``src < dst`` carries
the space's candidate ops. A genotype lists, per cell type, the ``(src, dst, op)`` triples
that survived the search plus the nodes concatenated into the cell output.

JSON format (lossless round trip)::

    {"normal": [[0, 2, "sep_conv_3x3"], ...], "normal_concat": [2, 3, 4, 5],
     "reduce": [[0, 2, "max_pool_3x3"], ...], "reduce_concat": [2, 3, 4, 5]}

Two spaces share the DARTS topology (2 inputs, 4 intermediate nodes, 14 edges, 8 ops):
``darts`` accepts only DARTS-style genotypes (exactly two (src, op) entries per node), and
``dag`` (the EGS space, "all feed-forward networks with n ordered nodes") accepts any
in-degree and several ops per edge.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import UserError
from .ops import PRIMITIVES
from .registry import Registry

__all__ = [
    "DARTS_V1",
    "DARTS_V2",
    "SPACES",
    "CellGenotype",
    "Genotype",
    "GenotypeError",
    "SearchSpace",
    "genotype_weights",
    "prune_cell",
]

Edge = tuple[int, int, str]


class GenotypeError(UserError, ValueError):
    """A genotype that does not fit its space; the message names the offending entry."""


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
    """

    name: str
    ops: tuple[str, ...] = PRIMITIVES
    cell_types: tuple[str, ...] = ("normal", "reduce")
    n_inputs: int = 2
    n_nodes: int = 4
    inputs_per_node: int | None = None
    zero_op: str = "none"
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
                seen.add((src, dst, op))
            if self.inputs_per_node is not None:
                for node in nodes:
                    degree = sum(1 for _, dst, _ in cell.edges if dst == node)
                    if degree != self.inputs_per_node:
                        raise GenotypeError(
                            f"{where}: node {node} has {degree} inputs; space {self.name!r} needs exactly "
                            f"{self.inputs_per_node} (use the 'dag' space for any in-degree)"
                        )
            live = _live_nodes(cell.edges, self.n_inputs)
            for src, dst, _ in cell.edges:
                if src not in live:
                    raise GenotypeError(f"{where}: edge ({src}, {dst}) leaves node {src}, which has no inputs")
            if not cell.concat:
                raise GenotypeError(f"{where}: concat is empty; the cell needs at least one output node")
            for node in cell.concat:
                if node not in live or node < self.n_inputs:
                    raise GenotypeError(f"{where}: concat node {node} is not an intermediate node with inputs")
        return genotype


@dataclass(frozen=True)
class CellGenotype:
    edges: tuple[Edge, ...]
    concat: tuple[int, ...]

    def ops_on(self, src: int, dst: int) -> list[str]:
        return [op for s, d, op in self.edges if (s, d) == (src, dst)]


@dataclass(frozen=True)
class Genotype:
    """A derived architecture: one :class:`CellGenotype` per cell type.

    Examples:
        >>> g = Genotype.from_dict({"normal": [[0, 2, "skip_connect"]], "normal_concat": [2]})
        >>> Genotype.from_json(g.to_json()) == g
        True
    """

    cells: Mapping[str, CellGenotype]

    def __getitem__(self, cell_type: str) -> CellGenotype:
        return self.cells[cell_type]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Genotype) and dict(self.cells) == dict(other.cells)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.cells.items())))

    def to_dict(self) -> dict:
        out: dict = {}
        for cell_type, cell in self.cells.items():
            out[cell_type] = [[src, dst, op] for src, dst, op in cell.edges]
            out[f"{cell_type}_concat"] = list(cell.concat)
        return out

    @classmethod
    def from_dict(cls, data: Mapping) -> Genotype:
        if not isinstance(data, Mapping):
            raise GenotypeError(f"a genotype is a JSON object, got {type(data).__name__}")
        cells = {}
        for key, value in data.items():
            if key.endswith("_concat"):
                continue
            concat_key = f"{key}_concat"
            if concat_key not in data:
                raise GenotypeError(f"genotype has {key!r} but no {concat_key!r}")
            try:
                edges = tuple(_edge(key, entry) for entry in value)
                concat = tuple(_node_index(n, f"genotype {concat_key!r}:") for n in data[concat_key])
            except (TypeError, ValueError) as err:
                if isinstance(err, GenotypeError):
                    raise
                raise GenotypeError(
                    f"genotype {key!r} must be a list of [src, dst, op] triples and {concat_key!r} a list of ints"
                ) from None
            cells[key] = CellGenotype(edges, concat)
        orphans = [k for k in data if k.endswith("_concat") and k[: -len("_concat")] not in data]
        if orphans:
            raise GenotypeError(f"genotype has {orphans[0]!r} without its cell list")
        return cls(cells)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> Genotype:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as err:
            raise GenotypeError(f"genotype is not valid JSON: {err}") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Genotype:
        return cls.from_json(Path(path).read_text())

    @classmethod
    def from_darts(cls, normal, normal_concat, reduce, reduce_concat) -> Genotype:
        """From the original ``Genotype(normal=[(op, src), ...], ...)`` layout: entries 2i, 2i+1 feed node i+2."""

        def cell(pairs, concat):
            return CellGenotype(tuple((src, 2 + i // 2, op) for i, (op, src) in enumerate(pairs)), tuple(concat))

        return cls({"normal": cell(normal, normal_concat), "reduce": cell(reduce, reduce_concat)})


def _node_index(value, where: str) -> int:
    """A node index of a genotype's JSON: an int (or an integral float); a boolean or a fraction is refused.

    ``bool`` is a subclass of ``int``, so ``int(True)`` is 1: a ``true`` would silently become node 1.
    """
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        kind = "a boolean" if isinstance(value, bool) else "a fraction"
        raise GenotypeError(f"{where} {json.dumps(value)} is {kind}, not a node index; write node indices as integers "
                            "(0, 1, ...)")  # fmt: skip
    return int(value)


def _edge(cell_type: str, entry) -> Edge:
    src, dst, op = entry
    shown = json.dumps(entry) if isinstance(entry, (list, tuple)) else repr(entry)
    where = f"genotype {cell_type!r}: edge {shown}:"
    return _node_index(src, f"{where} src"), _node_index(dst, f"{where} dst"), str(op)


def _live_nodes(edges: Iterable[Edge], n_inputs: int) -> set[int]:
    """Inputs plus every node reachable through an edge from a live node."""
    live = set(range(n_inputs))
    for src, dst, _ in sorted(edges, key=lambda e: e[1]):
        if src in live:
            live.add(dst)
    return live


def prune_cell(edges: Iterable[Edge], n_inputs: int, n_nodes: int) -> CellGenotype:
    """Drop edges that leave nodes without inputs; concat every live intermediate node.

    Used by derivations that may leave a node unconnected (EGS, SNAS): such a node would
    output zeros, so it and its outgoing edges are removed rather than built.
    """
    edges = sorted(set(edges), key=lambda e: (e[1], e[0], e[2]))
    live = _live_nodes(edges, n_inputs)
    kept = tuple(e for e in edges if e[0] in live)
    concat = tuple(n for n in range(n_inputs, n_inputs + n_nodes) if n in live)
    return CellGenotype(kept, concat)


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


SPACES: Registry[SearchSpace] = Registry("space", group="egsbench.spaces")
SPACES.add("darts", SearchSpace("darts", inputs_per_node=2))
SPACES.add("dag", SearchSpace("dag"))

# Published cells (quark0/darts cnn/genotypes.py): DARTS_V1 from first-order, DARTS_V2 from second-order search.
DARTS_V1 = Genotype.from_darts(
    normal=[("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
            ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
    reduce_concat=[2, 3, 4, 5],
)  # fmt: skip
DARTS_V2 = Genotype.from_darts(
    normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    reduce_concat=[2, 3, 4, 5],
)  # fmt: skip

"""Genotypes: the derived architectures every method returns and every task builds.

A genotype lists, per cell type, the ``(src, dst, op)`` triples that survived the search plus the
nodes concatenated into the cell output. Its JSON form round-trips losslessly::

    {"normal": [[0, 2, "sep_conv_3x3"], ...], "normal_concat": [2, 3, 4, 5],
     "reduce": [[0, 2, "max_pool_3x3"], ...], "reduce_concat": [2, 3, 4, 5]}

A genotype file may also carry a ``"source"`` entry (where a published cell comes from); reading skips
it, so it never becomes part of the genotype. Which genotypes a space accepts is the space's business
(:class:`egsbench.tasks.spaces.SearchSpace`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

__all__ = ["METADATA_KEYS", "CellGenotype", "Edge", "Genotype", "GenotypeError", "live_nodes", "prune_cell"]

Edge = tuple[int, int, str]
METADATA_KEYS = frozenset({"source"})  # entries of a genotype file that describe it rather than hold a cell


class GenotypeError(UserError, ValueError):
    """A genotype that does not fit its space; the message names the offending entry."""


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
        """The genotype of a JSON object; its ``METADATA_KEYS`` entries (``"source"``) are skipped."""
        if not isinstance(data, Mapping):
            raise GenotypeError(f"a genotype is a JSON object, got {type(data).__name__}")
        cells = {}
        for key, value in data.items():
            if key.endswith("_concat") or key in METADATA_KEYS:
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
        raise GenotypeError(
            f"{where} {json.dumps(value)} is {kind}, not a node index; write node indices as integers (0, 1, ...)"
        )
    return int(value)


def _edge(cell_type: str, entry) -> Edge:
    src, dst, op = entry
    shown = json.dumps(entry) if isinstance(entry, (list, tuple)) else repr(entry)
    where = f"genotype {cell_type!r}: edge {shown}:"
    return _node_index(src, f"{where} src"), _node_index(dst, f"{where} dst"), str(op)


def live_nodes(edges: Iterable[Edge], n_inputs: int) -> set[int]:
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
    live = live_nodes(edges, n_inputs)
    kept = tuple(e for e in edges if e[0] in live)
    concat = tuple(n for n in range(n_inputs, n_inputs + n_nodes) if n in live)
    return CellGenotype(kept, concat)

"""Genotypes in other projects' text forms: DARTS's ``Genotype(...)`` and NAS-Bench-201's arch string.

- DARTS (quark0/darts ``cnn/genotypes.py``, ``rnn/genotypes.py``): ``Genotype(normal=[(op, src), ...],
  normal_concat=range(2, 6), reduce=[...], reduce_concat=[2, 3, 4, 5])``; entries ``2i, 2i + 1`` feed node
  ``i + 2``. A recurrent cell is ``Genotype(recurrent=[(op, src), ...], concat=range(1, 9))``, entry ``i``
  feeding node ``i + 1``. Only genotypes with exactly that many inputs per node can be written this way.
- NAS-Bench-201 (D-X-Y/NAS-Bench-201 ``Structure.tostr``): ``|op~src|+|op~src|op~src|+|...|``, one ``+``
  group per node ``j = 1, 2, ...`` listing its inputs ``0 .. j-1``. Here that cell is ``{"normal": [[src, dst,
  op], ...], "normal_concat": [3]}``: one op per edge, ``none`` edges left out (written back as ``none``).

Text is read with :mod:`ast` (never evaluated); mistakes raise :class:`GenotypeError` naming the bad token.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence

from .genotype import CellGenotype, Edge, Genotype, GenotypeError

__all__ = ["from_darts_string", "from_nb201_string", "to_darts_string", "to_nb201_string"]

RECURRENT = "recurrent"  # DARTS's recurrent namedtuple: fields ``recurrent`` and ``concat``
NB201_CELL = "normal"
NB201_NONE = "none"
MAX_NODES = 1000


def _inputs(cell_type: str) -> int:
    """Input nodes of a DARTS cell, which is also how many (op, src) entries each intermediate node has."""
    return 1 if cell_type == RECURRENT else 2


def _concat_text(concat: Sequence[int]) -> str:
    nodes = list(concat)
    if len(nodes) > 1 and nodes == list(range(nodes[0], nodes[-1] + 1)):
        return f"range({nodes[0]}, {nodes[-1] + 1})"
    return repr(nodes)


def to_darts_string(genotype: Genotype) -> str:
    """DARTS's ``Genotype(...)`` text: two (op, src) entries per node of a CNN cell, one of a recurrent cell.

    Raises:
        GenotypeError: a node with another number of inputs (e.g. a cell of the ``dag`` space), or
            intermediate nodes that are not numbered consecutively.

    Examples:
        >>> g = Genotype.from_dict({"normal": [[0, 2, "skip_connect"], [1, 2, "sep_conv_3x3"]], "normal_concat": [2]})
        >>> to_darts_string(g)
        "Genotype(normal=[('skip_connect', 0), ('sep_conv_3x3', 1)], normal_concat=[2])"
        >>> from_darts_string(to_darts_string(g)) == g
        True
    """
    fields = []
    for cell_type, cell in genotype.cells.items():
        k = _inputs(cell_type)
        edges = sorted(cell.edges, key=lambda e: e[1])  # stable: a node's entries keep their order
        nodes = sorted({dst for _, dst, _ in edges})
        if nodes and nodes != list(range(k, k + len(nodes))):
            raise GenotypeError(
                f"genotype {cell_type!r}: intermediate nodes {nodes} are not numbered {k}, {k + 1}, ...; "
                "DARTS's Genotype form implies each node's index from its position, so write it as JSON"
            )
        for node in nodes:
            degree = sum(1 for _, dst, _ in edges if dst == node)
            if degree != k:
                raise GenotypeError(
                    f"genotype {cell_type!r}: node {node} has {degree} input(s); DARTS's Genotype form holds exactly "
                    f"{k} (op, input) pair(s) per node (the darts{'_rnn' if k == 1 else ''} space), so write this "
                    "genotype as JSON"
                )
        pairs = ", ".join(repr((op, src)) for src, _, op in edges)
        concat_key = "concat" if cell_type == RECURRENT else f"{cell_type}_concat"
        fields.append(f"{cell_type}=[{pairs}], {concat_key}={_concat_text(cell.concat)}")
    return f"Genotype({', '.join(fields)})"


def _parse_call(text: str) -> ast.Call:
    """The ``Genotype(...)`` call in ``text``; the wrapper, its name or an ``X = `` in front are optional."""
    stripped = text.strip()
    candidates = [stripped, f"Genotype({stripped})"]
    if stripped.startswith("("):
        candidates.insert(1, f"Genotype{stripped}")
    for candidate in candidates:
        try:
            tree = ast.parse(candidate, mode="exec")
        except (SyntaxError, ValueError, RecursionError, MemoryError):  # ValueError: a NUL byte
            continue
        if len(tree.body) != 1:
            continue
        node = tree.body[0]
        if isinstance(node, ast.Assign):  # ``PDARTS = Genotype(...)`` pasted from a genotypes.py
            node = node.value
        elif isinstance(node, ast.Expr):
            node = node.value
        if isinstance(node, ast.Call) and node.keywords and not node.args:
            return node
    raise GenotypeError(
        f"not a DARTS genotype: {_short(stripped)}; expected Genotype(normal=[('op', input), ...], "
        "normal_concat=range(2, 6), ...) with keyword fields"
    )


def _literal(node: ast.AST, where: str):
    """A constant, list or tuple of them, or ``range(...)`` of ints; anything else is refused, never evaluated."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(item, where) for item in node.elts]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("range", "list", "tuple"):
        args = [_literal(a, where) for a in node.args]
        ints = all(isinstance(a, int) for a in args)
        if node.func.id == "range" and 1 <= len(args) <= 3 and ints and (len(args) < 3 or args[2] != 0):
            if len(range(*args)) <= MAX_NODES:  # a range of a trillion nodes is a typo, not a cell
                return list(range(*args))
        if node.func.id != "range" and len(args) == 1 and isinstance(args[0], list):
            return args[0]
    raise GenotypeError(f"{where}: {_short(ast.unparse(node))} is not a literal list, tuple or range(a, b)")


def from_darts_string(text: str) -> Genotype:
    """Read DARTS's ``Genotype(...)`` text (CNN cells or the recurrent cell) into a :class:`Genotype`.

    Accepts ``range(a, b)``, lists or tuples for the concat nodes, any namedtuple name, no wrapper at all
    (``normal=[...], normal_concat=...``) and a leading ``NAME = `` as in a ``genotypes.py``.

    Examples:
        >>> g = from_darts_string("Genotype(recurrent=[('sigmoid', 0), ('relu', 1)], concat=range(1, 3))")
        >>> g.to_dict()
        {'recurrent': [[0, 1, 'sigmoid'], [1, 2, 'relu']], 'recurrent_concat': [1, 2]}
        >>> from_darts_string("normal=[('skip_connect', 0), ('sep_conv_3x3', 1)], normal_concat=(2,)").to_dict()
        {'normal': [[0, 2, 'skip_connect'], [1, 2, 'sep_conv_3x3']], 'normal_concat': [2]}
    """
    call = _parse_call(text)
    fields = {}
    for keyword in call.keywords:
        if keyword.arg is None:
            raise GenotypeError("not a DARTS genotype: **kwargs; write each field as name=value")
        fields[keyword.arg] = _literal(keyword.value, f"DARTS genotype field {keyword.arg!r}")
    cells, used = {}, set()
    for name, pairs in fields.items():
        if name == "concat" or name.endswith("_concat"):
            continue
        concat_key = "concat" if name == RECURRENT and "concat" in fields else f"{name}_concat"
        if concat_key not in fields:
            raise GenotypeError(f"DARTS genotype has {name!r} but no {concat_key!r}")
        cells[name] = _darts_cell(name, pairs, fields[concat_key])
        used.add(concat_key)
    orphans = [k for k in fields if k not in cells and k not in used]
    if orphans or not cells:
        raise GenotypeError(f"DARTS genotype field {(orphans or ['(none)'])[0]!r} has no cell list")
    return Genotype(cells)


def _darts_cell(cell_type: str, pairs, concat) -> CellGenotype:
    k = _inputs(cell_type)
    where = f"DARTS genotype {cell_type!r}"
    if not isinstance(pairs, list):
        raise GenotypeError(f"{where} must be a list of (op, input) pairs, got {pairs!r}")
    edges: list[Edge] = []
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str) and isinstance(pair[1], int)):
            raise GenotypeError(
                f"{where}: entry {i} {_short(repr(tuple(pair) if isinstance(pair, list) else pair))} is not an (op, "
                "input) pair such as ('sep_conv_3x3', 0)"
            )
        op, src = pair
        edges.append((src, k + i // k, op))
    if len(pairs) % k:
        raise GenotypeError(f"{where} has {len(pairs)} entries; DARTS's form needs {k} per node")
    if not isinstance(concat, list) or not all(isinstance(n, int) for n in concat):
        raise GenotypeError(f"{where}: concat {concat!r} is not a list of node indices")
    return CellGenotype(tuple(edges), tuple(concat))


def to_nb201_string(genotype: Genotype) -> str:
    """NAS-Bench-201's arch string of a one-cell genotype: every edge ``i -> j`` once, ``none`` where it has no op.

    Raises:
        GenotypeError: more than one cell type, several ops on one edge, or a concat other than the last node.

    Examples:
        >>> g = Genotype.from_dict({"normal": [[0, 1, "nor_conv_3x3"], [1, 2, "skip_connect"]], "normal_concat": [2]})
        >>> to_nb201_string(g)
        '|nor_conv_3x3~0|+|none~0|skip_connect~1|'
        >>> from_nb201_string(to_nb201_string(g)) == g
        True
    """
    if set(genotype.cells) != {NB201_CELL}:
        raise GenotypeError(
            f"an NAS-Bench-201 arch string holds one cell, {NB201_CELL!r}; this genotype has {sorted(genotype.cells)}"
        )
    cell = genotype[NB201_CELL]
    last = max((dst for _, dst, _ in cell.edges), default=0)
    if len(cell.concat) != 1 or cell.concat[0] < max(last, 1):
        raise GenotypeError(
            f"genotype 'normal_concat' {list(cell.concat)}: an NAS-Bench-201 cell outputs its last node only"
        )
    n = cell.concat[0]
    ops: dict[tuple[int, int], str] = {}
    for src, dst, op in cell.edges:
        if not 0 <= src < dst:
            raise GenotypeError(f"genotype 'normal': edge [{src}, {dst}, {op!r}] does not go forward from a node")
        if (src, dst) in ops:
            raise GenotypeError(
                f"genotype 'normal': edge ({src}, {dst}) has ops {ops[src, dst]!r} and {op!r}; "
                "an NAS-Bench-201 edge carries exactly one"
            )
        if not op or any(c in op for c in "|~+"):
            raise GenotypeError(f"genotype 'normal': op {op!r} cannot be written in an NAS-Bench-201 arch string")
        ops[src, dst] = op
    groups = ("|" + "|".join(f"{ops.get((i, j), NB201_NONE)}~{i}" for i in range(j)) + "|" for j in range(1, n + 1))
    return "+".join(groups)


def from_nb201_string(text: str) -> Genotype:
    """Read an NAS-Bench-201 arch string; ``none`` entries are dropped, the last node is the output.

    Examples:
        >>> g = from_nb201_string("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|none~1|none~2|")
        >>> g.to_dict()["normal"]
        [[0, 1, 'nor_conv_3x3'], [0, 2, 'nor_conv_3x3'], [1, 2, 'avg_pool_3x3'], [0, 3, 'skip_connect']]
        >>> g["normal"].concat
        (3,)
    """
    stripped = text.strip()
    groups = stripped.split("+")
    edges: list[Edge] = []
    for node, group in enumerate(groups, start=1):
        if len(group) < 2 or not (group.startswith("|") and group.endswith("|")):
            raise GenotypeError(
                f"not an NAS-Bench-201 arch string: node {node}'s group {_short(group)!r} is not |op~input|...|; "
                "expected e.g. |nor_conv_3x3~0|+|skip_connect~0|none~1|"
            )
        seen = set()
        for token in group[1:-1].split("|"):
            op, sep, src_text = token.partition("~")
            if not sep or not op or not src_text.isdigit():
                raise GenotypeError(
                    f"NAS-Bench-201 arch string: token {_short(token)!r} of node {node} is not op~input (e.g. "
                    "nor_conv_3x3~0)"
                )
            src = int(src_text)
            if src >= node or src in seen:
                problem = "repeats input" if src in seen else "reads node"
                raise GenotypeError(
                    f"NAS-Bench-201 arch string: token {token!r} of node {node} {problem} {src}; node {node} reads "
                    f"each of nodes 0..{node - 1} once"
                )
            seen.add(src)
            if op != NB201_NONE:
                edges.append((src, node, op))
    edges.sort(key=lambda e: (e[1], e[0]))  # the order to_nb201_string writes, whatever order the text had
    return Genotype({NB201_CELL: CellGenotype(tuple(edges), (len(groups),))})


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."

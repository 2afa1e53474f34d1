"""Figures for a run folder: a diagram of each derived cell.

Inputs on the left (green), intermediate nodes left to right, the concatenated output on
the right (yellow). Every (src, dst, op) triple is one labelled arrow; several ops on one
edge fan out as separate arcs. Dashed arrows feed the output concat.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on CI and servers
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch  # noqa: E402

from tasks.spaces import CellGenotype  # noqa: E402

__all__ = ["plot_cell"]


def _positions(cell: CellGenotype, n_inputs: int) -> dict[int, tuple[float, float]]:
    nodes = sorted({d for _, d, _ in cell.edges} | set(cell.concat))
    pos = {i: (0.0, 1.5 - 3.0 * i / max(n_inputs - 1, 1)) for i in range(n_inputs)}
    for j, node in enumerate(nodes):
        pos[node] = (1.0 + j, 0.8 * (1 if j % 2 else -1))
    return pos


def plot_cell(cell: CellGenotype, path: str | Path, title: str = "", n_inputs: int = 2) -> None:
    """Draw one cell genotype to a PNG at ``path``."""
    pos = _positions(cell, n_inputs)
    out_x = max(x for x, _ in pos.values()) + 1.0
    fig, ax = plt.subplots(figsize=(2.2 + 1.6 * out_x, 4.0), dpi=100)
    counts: dict[tuple[int, int], int] = {}
    for src, dst, op in cell.edges:
        k = counts.get((src, dst), 0)
        counts[(src, dst)] = k + 1
        rad = 0.15 + 0.25 * k
        arrow = FancyArrowPatch(
            pos[src], pos[dst], connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>", mutation_scale=12,
            shrinkA=14, shrinkB=14, color="0.25", lw=1.0,
        )  # fmt: skip
        ax.add_patch(arrow)
        (x0, y0), (x1, y1) = pos[src], pos[dst]
        mx, my = (x0 + x1) / 2, (y0 + y1) / 2
        # Label at the arc's midpoint: offset perpendicular to the chord by rad * length / 2.
        ax.text(mx + rad * (y1 - y0) / 2, my - rad * (x1 - x0) / 2, op, fontsize=7, ha="center", va="center",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85})  # fmt: skip
    for node in cell.concat:
        ax.add_patch(FancyArrowPatch(pos[node], (out_x, 0.0), arrowstyle="-|>", mutation_scale=10,
                                     shrinkA=14, shrinkB=16, color="0.55", lw=0.8, linestyle="--"))  # fmt: skip
    for node, (x, y) in pos.items():
        color = "#a8e6a1" if node < n_inputs else "#aed6f1"
        ax.scatter([x], [y], s=700, c=color, edgecolors="0.2", zorder=3)
        ax.text(x, y, f"c_{{k-{n_inputs - node}}}" if node < n_inputs else str(node), ha="center", va="center",
                fontsize=8, zorder=4)  # fmt: skip
    ax.scatter([out_x], [0.0], s=900, c="#f9e79f", edgecolors="0.2", zorder=3)
    ax.text(out_x, 0.0, "c_{k}", ha="center", va="center", fontsize=8, zorder=4)
    ax.set_xlim(-0.6, out_x + 0.6)
    ax.set_ylim(-2.2, 2.2)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)

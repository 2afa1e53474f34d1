"""Figures for a run folder, written atomically as PNG.

- ``plot_cell``: a diagram of a derived cell. Inputs on the left (green), intermediate nodes
  left to right, the concatenated output on the right (yellow). Every (src, dst, op) triple
  is one labelled arrow; several ops on one edge fan out as separate arcs; dashed arrows
  feed the output concat.
- ``plot_probability_evolution``: per edge, a heatmap block of each op's probability over the
  search epochs, the blocks side by side.
- ``plot_curves``: search and final-training loss and accuracy against epochs.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch

from ..core.genotype import CellGenotype

__all__ = ["plot_cell", "plot_curves", "plot_probability_evolution", "subplots"]


def subplots(nrows: int = 1, ncols: int = 1, *, figsize, dpi: int = 100, squeeze: bool = True):
    """``pyplot.subplots`` without pyplot: a detached ``Figure`` renders on any machine (no display,
    no backend switch), and a notebook's own pyplot state and backend are left alone."""
    fig = Figure(figsize=figsize, dpi=dpi)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


def _positions(cell: CellGenotype, n_inputs: int) -> dict[int, tuple[float, float]]:
    # a source without inputs of its own is drawn too (a NAS-Bench-201 cell may leave node 1 without inputs)
    nodes = sorted({d for _, d, _ in cell.edges} | {s for s, _, _ in cell.edges if s >= n_inputs} | set(cell.concat))
    pos = {i: (0.0, 1.5 - 3.0 * i / max(n_inputs - 1, 1)) for i in range(n_inputs)}
    for j, node in enumerate(nodes):
        pos[node] = (1.5 * (1 + j), 0.9 * (1 if j % 2 else -1))
    return pos


def plot_cell(cell: CellGenotype, path: str | Path, title: str = "", n_inputs: int = 2) -> None:
    """Draw one cell genotype to a PNG at ``path``: one arrow per edge, labelled with all its ops."""
    pos = _positions(cell, n_inputs)
    out_x = max(x for x, _ in pos.values()) + 1.5
    ops_on: dict[tuple[int, int], list[str]] = {}
    for src, dst, op in cell.edges:
        ops_on.setdefault((src, dst), []).append(op)
    fig, ax = subplots(figsize=(1.0 + 0.75 * (out_x + 1.4), 5.2), dpi=110)
    for (src, dst), ops in ops_on.items():
        (x0, y0), (x1, y1) = pos[src], pos[dst]
        rad = 0.25 if (dst - src) % 2 else -0.25
        ax.add_patch(
            FancyArrowPatch(
                pos[src],
                pos[dst],
                connectionstyle=f"arc3,rad={rad}",
                arrowstyle="-|>",
                mutation_scale=12,
                shrinkA=15,
                shrinkB=15,
                color="0.3",
                lw=1.0,
            )
        )
        # Label at the arc's midpoint: the chord's midpoint moved perpendicular by rad * length / 2.
        ax.text(
            (x0 + x1) / 2 + rad * (y1 - y0) / 2,
            (y0 + y1) / 2 - rad * (x1 - x0) / 2,
            "\n".join(ops),
            fontsize=6,
            ha="center",
            va="center",
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "0.7", "alpha": 0.9},
        )
    for node in cell.concat:
        ax.add_patch(
            FancyArrowPatch(
                pos[node],
                (out_x, 0.0),
                arrowstyle="-|>",
                mutation_scale=10,
                shrinkA=15,
                shrinkB=17,
                color="0.55",
                lw=0.8,
                linestyle="--",
            )
        )
    for node, (x, y) in pos.items():
        color = "#a8e6a1" if node < n_inputs else "#aed6f1"
        label = f"$c_{{k-{n_inputs - node}}}$" if node < n_inputs else str(node)
        ax.scatter([x], [y], s=800, c=color, edgecolors="0.2", zorder=3)
        ax.text(x, y, label, ha="center", va="center", fontsize=9, zorder=4)
    ax.scatter([out_x], [0.0], s=900, c="#f9e79f", edgecolors="0.2", zorder=3)
    ax.text(out_x, 0.0, "$c_k$", ha="center", va="center", fontsize=9, zorder=4)
    ax.set_xlim(-0.7, out_x + 0.7)
    ax.set_ylim(-3.2, 3.2)
    ax.set_aspect("equal")  # arc3 bends in display space: equal scales keep the labels on their arcs
    ax.axis("off")
    ax.set_title(title or "cell", fontsize=10)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.92)  # axes off: only the title needs room
    _save(fig, path)


def _save(fig, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    tmp.replace(path)


def plot_probability_evolution(
    history: list[dict[str, list[list[float]]]],
    cell_type: str,
    edges: list[tuple[int, int]],
    ops: list[str],
    path: str | Path,
    title: str = "",
) -> None:
    """One heatmap block per edge, side by side: each op's probability (rows) after each search epoch (columns).

    One axes for all edges (one panel each cost ~1 s of rendering per figure; this is ~0.1 s)."""
    import numpy as np

    probs = np.array([epoch[cell_type] for epoch in history])  # (epochs, E, K)
    epochs, n_edges, n_ops = probs.shape
    width = epochs + 1  # each edge's columns and a blank one
    image = np.full((n_ops, n_edges * width - 1), np.nan)
    for e in range(n_edges):
        image[:, e * width : e * width + epochs] = probs[:, e, :].T
    fig, ax = subplots(figsize=(min(2.5 + 0.12 * image.shape[1], 16.0), 0.25 * n_ops + 1.7), dpi=100)
    shown = ax.imshow(np.ma.masked_invalid(image), aspect="auto", cmap="viridis", vmin=0.0, vmax=float(probs.max()))
    ax.set_yticks(range(n_ops))
    ax.set_yticklabels(ops, fontsize=6)
    ax.set_xticks([e * width + (epochs - 1) / 2 for e in range(n_edges)])
    ax.set_xticklabels([f"{src}->{dst}" for src, dst in edges], fontsize=6, rotation=90)
    ax.set_xlabel(f"edge (each block: epochs 0 to {epochs - 1}, left to right)", fontsize=7)
    fig.colorbar(shown, ax=ax, shrink=0.8, label="p(op)")
    fig.subplots_adjust(left=0.1, bottom=0.3, top=0.88)
    ax.set_title(title or f"{cell_type} cell: op probabilities per edge over search epochs", fontsize=9)
    _save(fig, path)


def plot_curves(search_rows: list[dict], eval_rows: list[dict], path: str | Path, title: str = "") -> None:
    """Search loss/accuracy and final-training loss/accuracy against epochs."""
    fig, (ax_loss, ax_acc) = subplots(1, 2, figsize=(9, 3.4), dpi=100)
    series = [
        (search_rows, "loss", ax_loss, "search train loss"),
        (eval_rows, "train_loss", ax_loss, "final train loss"),
        (search_rows, "accuracy", ax_acc, "search train acc"),
        (eval_rows, "train_accuracy", ax_acc, "final train acc"),
        (eval_rows, "test_accuracy", ax_acc, "final test acc"),
    ]
    for rows, key, ax, label in series:
        points = [(float(r["epoch"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", ms=3, label=label)
    ax_loss.set(xlabel="epoch", ylabel="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    # fixed margins, not tight_layout (which draws the whole figure once more to measure it)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.14, top=0.86 if title else 0.95, wspace=0.22)
    _save(fig, path)

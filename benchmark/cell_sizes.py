"""How large are the cells EGS derives? Ops per cell and parameters at evaluation size, per M.

    python -m egsbench.benchmark.cell_sizes [--out results/benchmarks/cell_sizes.md] [--mass 0.6 0.9]

Derives cells with :func:`methods.egs.derive_mode` from synthetic alphas (uniform, or peaked on one op family),
with no search, for M = 1, 4, 7, 9, and prints Markdown tables beside the paper's Table 5, the authors'
released cells and DARTS's cells. Cells marked ``*`` fell back from an all-``none`` derivation
(:class:`methods.egs.EmptyCellWarning`).

Method and reading: docs/benchmarks.md#cell_sizes.
"""

from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path

import torch

from ..methods.egs import EmptyCellWarning, derive_mode, efficiency_credits
from ..tasks.spaces import GENOTYPES, SPACES, Genotype, NetworkCIFAR, SearchNetwork, SearchSpace, count_parameters
from .references import load_reference

__all__ = ["FAMILIES", "cell_size_rows", "evaluation_params", "main", "peaked_alphas", "render_markdown"]

FAMILIES = {
    "pools": ("max_pool_3x3", "avg_pool_3x3"),
    "skip": ("skip_connect",),
    "sep convs": ("sep_conv_3x3", "sep_conv_5x5"),
    "dil convs": ("dil_conv_3x3", "dil_conv_5x5"),
}
MS = (1, 4, 7, 9)
EVAL_CHANNELS, EVAL_LAYERS = 36, 20  # the paper's CIFAR-10 evaluation network
SEARCH_CHANNELS, SEARCH_LAYERS = 16, 8  # the paper preset's supernet, for the efficiency credits


def peaked_alphas(family: tuple[str, ...] | None, mass: float, space: SearchSpace | None = None) -> torch.Tensor:
    """``(E, K)`` alphas whose softmax puts ``mass`` evenly on ``family``'s ops on every edge (uniform if None).

    Examples:
        >>> round(torch.softmax(peaked_alphas(("skip_connect",), 0.9), -1)[0, 3].item(), 4)
        0.9
    """
    space = space or SPACES.get("dag")
    K = space.num_ops
    if family is None:
        return torch.zeros(space.num_edges, K)
    inside = torch.tensor([op in family for op in space.ops])
    h = torch.where(inside, mass / int(inside.sum()), (1 - mass) / int((~inside).sum()))
    return torch.log(h).expand(space.num_edges, K).clone()


def evaluation_params(genotype: Genotype, channels: int = EVAL_CHANNELS, layers: int = EVAL_LAYERS) -> int:
    """Parameters of the CIFAR-10 evaluation network for ``genotype`` (auxiliary head excluded, as DARTS counts)."""
    return count_parameters(NetworkCIFAR(genotype, channels, 10, layers, auxiliary=False))


def _efficiency_credits() -> dict[str, torch.Tensor]:
    space = SPACES.get("dag")
    torch.manual_seed(0)
    supernet = SearchNetwork(space, SEARCH_CHANNELS, 10, SEARCH_LAYERS, image_size=32)
    return {t: efficiency_credits(c.float()) for t, c in supernet.op_costs("macs").items()}


def _ops(genotype: Genotype) -> str:
    return "/".join(str(len(genotype[t].edges)) for t in ("normal", "reduce"))


def cell_size_rows(mass: float = 0.6, ms: tuple[int, ...] = MS) -> list[dict]:
    """One row per (alphas, distribution): for each M, ``{"ops": "n/r", "params_m": float, "fallback": bool}``."""
    space, credits = SPACES.get("dag"), _efficiency_credits()
    cache: dict[Genotype, int] = {}
    rows = []
    for name, family in [("uniform", None), *FAMILIES.items()]:
        alpha = peaked_alphas(family, mass, space)
        h = torch.softmax(alpha, dim=-1)
        for source in ("h", "p"):
            probs = {t: h if source == "h" else 0.5 * h + 0.5 * credits[t] for t in space.cell_types}
            row = {"alphas": name if family is None else f"{name} ({mass:.0%})", "from": source, "cells": {}}
            for M in ms:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", EmptyCellWarning)
                    genotype = derive_mode(probs, space, M)
                if genotype not in cache:
                    cache[genotype] = evaluation_params(genotype)
                fallback = any(issubclass(w.category, EmptyCellWarning) for w in caught)
                row["cells"][M] = {"ops": _ops(genotype), "params_m": cache[genotype] / 1e6, "fallback": fallback}
            rows.append(row)
    return rows


def _reference_rows() -> list[tuple[str, dict[int, str]]]:
    table5 = load_reference("sampling_times").set_index("M")["params_m"]
    table1 = load_reference("cifar10").set_index("architecture")["params_m"]
    paper = {int(M): f"{v:.2f} M" for M, v in table5.items()}
    for M in (4, 7):
        paper[M] += f" (Table 1: {table1[f'DARTS-EGS (M={M})']:.1f} M)"
    released = {}
    for M in (4, 7):
        genotype = GENOTYPES.get(f"egs_released_m{M}")
        released[M] = f"{_ops(genotype)} ops, {evaluation_params(genotype) / 1e6:.2f} M"
    darts = ", ".join(
        f"{name}: {_ops(GENOTYPES.get(name))} ops, {evaluation_params(GENOTYPES.get(name)) / 1e6:.2f} M"
        for name in ("darts_v1", "darts_v2")
    )
    return [("paper, Table 5 (params)", paper), ("authors' released cells", released), (f"DARTS cells ({darts})", {})]


def render_markdown(rows: list[dict], ms: tuple[int, ...] = MS) -> str:
    head = "| alphas | derive from | " + " | ".join(f"M = {M}" for M in ms) + " |"
    lines = [head, "|" + " --- |" * (2 + len(ms))]
    labels = {"h": "h (any lambda; = p at lambda 1)", "p": "p at lambda 0.5"}
    for row in rows:
        cells = []
        for M in ms:
            c = row["cells"][M]
            cells.append(f"{c['ops']} ops, {c['params_m']:.2f} M{' *' if c['fallback'] else ''}")
        lines.append(f"| {row['alphas']} | {labels[row['from']]} | " + " | ".join(cells) + " |")
    for label, values in _reference_rows():
        lines.append(f"| {label} | | " + " | ".join(values.get(M, "") for M in ms) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m egsbench.benchmark.cell_sizes", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--mass",
        type=float,
        nargs="+",
        default=[0.6, 0.9],
        help="softmax mass of the peaked op family, one table each (default: 0.6 0.9)",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown tables to this file")
    args = parser.parse_args(argv)
    if not all(0 < m < 1 for m in args.mass) or any(math.isnan(m) for m in args.mass):
        parser.error("--mass values must lie in (0, 1)")
    parts = [
        "# EGS cell sizes (`python -m egsbench.benchmark.cell_sizes`)\n",
        f"Cells derived by `derive: mode` from synthetic alphas: `normal/reduce` ops per cell, parameters at "
        f"C = {EVAL_CHANNELS}, {EVAL_LAYERS} cells (auxiliary head excluded). `*`: every node derived to 'none'; "
        "each node kept its best non-'none' pair (EmptyCellWarning).",
    ]
    for mass in args.mass:
        parts.append(f"\n### Family alphas with {mass:.0%} of h on the family\n")
        parts.append(render_markdown(cell_size_rows(mass)))
    text = "\n".join(parts) + "\n"
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The cell-size table of EGS mode derivation (benchmark/cell_sizes.py)."""

from __future__ import annotations

import torch

from egsbench.benchmark.cell_sizes import FAMILIES, cell_size_rows, peaked_alphas, render_markdown


def test_peaked_alphas_put_the_mass_on_the_family():
    h = torch.softmax(peaked_alphas(FAMILIES["sep convs"], 0.6), -1)
    assert torch.allclose(h[:, 4:6].sum(-1), torch.full((14,), 0.6))
    assert torch.allclose(h.sum(-1), torch.ones(14))
    assert torch.allclose(torch.softmax(peaked_alphas(None, 0.6), -1), torch.full((14, 8), 1 / 8))


def test_rows_for_M_1():
    rows = {(r["alphas"], r["from"]): r["cells"][1] for r in cell_size_rows(0.9, ms=(1,))}
    # One op at 90% per edge: M = 1 keeps one (input, op) pair on each of the 4 nodes.
    assert rows[("skip (90%)", "h")]["ops"] == "4/4" and not rows[("skip (90%)", "h")]["fallback"]
    # Uniform h: the pooled 'none' (1/8) beats every pair (1/(8 x in-degree)): every node is 'none', the cell falls
    # back to each node's best pair, and those are pools here (no parameters beyond the skeleton).
    uniform = rows[("uniform", "h")]
    assert uniform["ops"] == "4/4" and uniform["fallback"]
    assert rows[("sep convs (90%)", "h")]["params_m"] > uniform["params_m"]
    table = render_markdown(cell_size_rows(0.9, ms=(1,)), ms=(1,))
    assert "| paper, Table 5 (params) | | 2.29 M |" in table and "authors' released cells" in table

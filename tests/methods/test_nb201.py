"""Every method searches the NAS-Bench-201 space (``nb201``) and derives one op per edge, by its documented rule."""

from __future__ import annotations

import pytest
import torch

from egsbench.core.genotype_formats import to_nb201_string
from egsbench.methods import METHODS
from egsbench.methods.egs import EGS, EGSConfig, EmptyCellWarning, derive_mode
from egsbench.methods.random_search import cell_genotype, sample_cells
from egsbench.tasks.spaces import SPACES
from egsbench.testing.methods import (
    build,
    check_derive_is_valid,
    check_distribution_hooks,
    check_gradients_reach_alpha,
    check_step_changes_parameters,
    score,
)

SPACE = SPACES.get("nb201")
SEARCHING = [name for name in METHODS.names() if name != "fixed"]  # fixed trains a given cell: nothing to derive
# forward and backward through the supernet, alpha's gradient, and a genotype the space accepts (one op per edge)
CHECKS = (check_step_changes_parameters, check_gradients_reach_alpha, check_distribution_hooks, check_derive_is_valid)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
@pytest.mark.parametrize("name", SEARCHING)
def test_every_method_searches_the_nb201_space(name, check):
    check(METHODS.get(name), None, "nb201")


def _probs(rows: dict[int, list[float]]) -> torch.Tensor:
    p = torch.full((6, 5), 0.2)
    for e, row in rows.items():
        p[e] = torch.tensor(row)
    return p


# edge 1<-0: none wins; 2<-0: nor_conv_3x3; 3<-2: avg_pool_3x3; the rest: uniform, so none (the first)
PROBS = _probs({0: [0.6, 0.1, 0.1, 0.1, 0.1], 1: [0.1, 0.1, 0.1, 0.6, 0.1], 5: [0.1, 0.1, 0.1, 0.1, 0.6]})
ARGMAX = "|none~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|avg_pool_3x3~2|"


@pytest.mark.parametrize("name", ["darts", "gdas", "snas"])
def test_argmax_methods_derive_xautodls_per_edge_argmax_with_none(name):
    method, _ = build(METHODS.get(name), space="nb201")
    assert to_nb201_string(method.derive_from_distribution({"normal": PROBS})) == ARGMAX


def test_egs_mode_keeps_the_node_rules_edges_each_with_its_most_probable_kept_op():
    # M = 2 draws from node 3's joint distribution most probably hit exactly {3<-0 nor_conv_3x3, 3<-0 nor_conv_1x1}
    # (P = 0.055 against 0.034 for the 3x3 alone): one op per edge keeps the 3x3, the more probable. Node 1: the 3x3
    # alone; node 2: {2<-0 skip_connect, the pooled none}, none dropped
    probs = _probs(
        {
            0: [0.05, 0.05, 0.1, 0.7, 0.1],
            1: [0.05, 0.8, 0.05, 0.05, 0.05],
            2: [0.6, 0.1, 0.1, 0.1, 0.1],
            3: [0.0, 0.0, 0.45, 0.55, 0.0],
        }
    )  # edges 3<-1 and 3<-2 uniform
    genotype = derive_mode({"normal": probs}, SPACE, M=2)
    SPACE.validate(genotype)
    assert to_nb201_string(genotype) == "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|nor_conv_3x3~0|none~1|none~2|"


def test_egs_mode_falls_back_when_the_output_has_no_path_from_the_input():
    probs = _probs({e: [0.96, 0.01, 0.01, 0.01, 0.01] for e in range(6)})
    probs[3] = torch.tensor([0.9, 0.0, 0.0, 0.1, 0.0])  # 3<-0's best real op: nor_conv_3x3
    with pytest.warns(EmptyCellWarning, match="output node 3 without a path"):
        genotype = derive_mode({"normal": probs}, SPACE, M=1)
    assert genotype["normal"].concat == (3,) and (0, 3, "nor_conv_3x3") in genotype["normal"].edges
    SPACE.validate(genotype)


def test_egs_sampled_derivation_cuts_each_code_to_one_op_per_edge():
    method, _ = build(EGS, EGSConfig(M=4, derive="sample", derive_candidates=3), space="nb201")
    SPACE.validate(method.derive(score))


def test_random_search_draws_an_op_none_included_on_every_edge():
    gen = torch.Generator().manual_seed(0)
    ops = list(range(5))
    cells = [sample_cells(SPACE, gen, ops)["normal"] for _ in range(200)]
    assert all(sorted((d, s) for s, d, _ in cell) == [(d, s) for s, d in SPACE.edges] for cell in cells)
    assert any(k == 0 for cell in cells for _, _, k in cell)  # none is drawn like any op
    trained = [sample_cells(SPACE, gen, ops, redraw_empty=True)["normal"] for _ in range(200)]
    for cell in trained:  # xautodl's forward_urs: no node whose ops are all none
        assert all(any(k != 0 for _, d, k in cell if d == node) for node in (1, 2, 3))
    SPACE.validate(cell_genotype(SPACE, {"normal": cells[0]}))

"""The NAS-Bench-201 space (``nb201``): its shape, genotypes, supernet and final network, against xautodl's code."""

from __future__ import annotations

import pytest
import torch

from egsbench.core.genotype_formats import from_nb201_string, to_nb201_string
from egsbench.tasks.spaces import (
    NB201_PRIMITIVES,
    SPACES,
    Genotype,
    GenotypeError,
    NB201Network,
    NB201SearchNetwork,
    argmax_genotype,
    count_parameters,
    genotype_weights,
)
from egsbench.testing import op_calls

SPACE = SPACES.get("nb201")
BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
DEAD_NODE = "|none~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|none~0|none~1|skip_connect~2|"  # node 1 has no inputs
EMPTY = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


def test_the_space_is_nas_bench_201s_cell():
    assert SPACE.ops == NB201_PRIMITIVES == ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    assert SPACE.cell_types == ("normal",) and SPACE.n_inputs == 1 and SPACE.intermediate_nodes == [1, 2, 3]
    # xautodl's edge2index: sorted "1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2"
    assert SPACE.edges == ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
    assert (SPACE.num_edges, SPACE.num_ops, SPACE.one_op_per_edge, SPACE.output_node) == (6, 5, True, 3)


@pytest.mark.parametrize("arch", [BEST, DEAD_NODE, EMPTY])
def test_arch_strings_are_valid_genotypes_and_round_trip(arch):
    genotype = SPACE.validate(from_nb201_string(arch))
    assert to_nb201_string(genotype) == arch and genotype["normal"].concat == (3,)


@pytest.mark.parametrize(
    "cell, message",
    [
        ({"normal": [[0, 1, "skip_connect"], [0, 1, "nor_conv_3x3"]], "normal_concat": [3]}, "several ops"),
        ({"normal": [[0, 1, "skip_connect"]], "normal_concat": [1, 3]}, r"concat must be \[3\]"),
        ({"normal": [[0, 1, "sep_conv_3x3"]], "normal_concat": [3]}, "not a valid op"),
        ({"normal": [[0, 4, "skip_connect"]], "normal_concat": [3]}, "not in the space"),
    ],
)
def test_genotypes_outside_the_space_are_refused(cell, message):
    with pytest.raises(GenotypeError, match=message):
        SPACE.validate(Genotype.from_dict(cell))


def test_argmax_genotype_keeps_none_as_an_op_and_the_first_of_ties():
    probs = torch.full((6, 5), 0.1)
    probs[0, 0] = 0.6  # edge 1 <- 0: none
    probs[1, 3] = 0.6  # edge 2 <- 0: nor_conv_3x3
    probs[5] = 0.2  # edge 3 <- 2: a tie over all ops, so none (the first)
    for e in (2, 3, 4):
        probs[e, 1] = 0.6  # skip_connect
    assert to_nb201_string(argmax_genotype(SPACE, {"normal": probs})) == (
        "|none~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|skip_connect~1|none~2|"
    )


def test_supernet_runs_only_the_weighted_ops_and_trains():
    torch.manual_seed(0)
    net = NB201SearchNetwork(SPACE, channels=4, num_classes=10, cells_per_stage=2)
    assert [net.cell_type(c) for c in net.cells] == ["normal"] * 2 + [None] + ["normal"] * 2 + [None] + ["normal"] * 2
    weights = genotype_weights(SPACE, from_nb201_string(DEAD_NODE))  # 3 ops in each of the 6 cells
    with op_calls(net) as calls:
        logits = net(torch.randn(2, 3, 8, 8), weights)
    assert logits.shape == (2, 10)
    ran = {(e, k) for _, e, k in calls}
    assert ran == {(1, 2), (2, 4), (5, 1)} and len(calls) == 6 * 3 and set(calls.values()) == {1}
    logits.sum().backward()
    conv = net.cells[0].edges[1].ops[2]
    assert conv[1].weight.grad is not None and net.cells[0].edges[0].ops[3][1].weight.grad is None


def test_op_costs_per_edge_and_per_cell():
    net = NB201SearchNetwork(SPACE, channels=4, num_classes=10, cells_per_stage=1, image_size=8)
    macs = net.op_costs("macs")["normal"]
    assert macs.shape == (6, 5) and (macs[:, :2] == 0).all()  # none and skip are free
    assert (macs[:, 3] > macs[:, 2]).all() and (macs[:, 4] > 0).all()  # a 3x3 conv costs more than a 1x1
    assert net.op_costs("params", per_cell=True)["normal"].shape == (3, 6, 5)


def _copy_weights(theirs: torch.nn.Module, ours: torch.nn.Module) -> None:
    """xautodl's parameters and buffers into ours, in registration order (the layouts match module by module)."""
    mine = [t for n, t in ours.state_dict().items()]
    other = [t for n, t in theirs.state_dict().items() if "arch_parameters" not in n]
    assert [t.shape for t in mine] == [t.shape for t in other]
    with torch.no_grad():
        for a, b in zip(mine, other, strict=True):
            a.copy_(b)


def test_supernet_matches_xautodls_darts_supernet():
    pytest.importorskip("xautodl")
    from xautodl.models.cell_operations import NAS_BENCH_201
    from xautodl.models.cell_searchs.search_model_darts import TinyNetworkDarts

    # NATS-algos' defaults: affine 0, track_running_stats 0; C = 16, N = 5 in the benchmark
    theirs = TinyNetworkDarts(16, 5, 4, 10, NAS_BENCH_201, False, False)
    assert count_parameters(NB201SearchNetwork(SPACE, 16, 10, 5)) == sum(
        p.numel() for n, p in theirs.named_parameters() if "arch" not in n
    )  # 1,692,826
    torch.manual_seed(0)
    theirs = TinyNetworkDarts(4, 1, 4, 10, NAS_BENCH_201, False, False)
    ours = NB201SearchNetwork(SPACE, 4, 10, 1)
    _copy_weights(theirs, ours)
    x = torch.randn(3, 3, 8, 8)
    expected = theirs(x)[1]
    alphas = torch.softmax(theirs.arch_parameters.detach(), dim=-1)
    assert torch.allclose(ours(x, {"normal": alphas}), expected, atol=1e-5)


@pytest.mark.parametrize("arch, params", [(BEST, 1_288_506), (DEAD_NODE, 101_306), (EMPTY, 73_306)])
def test_final_network_matches_xautodls_tiny_network(arch, params):
    pytest.importorskip("xautodl")
    from xautodl.models.cell_infers.tiny_network import TinyNetwork
    from xautodl.models.cell_searchs.genotypes import Structure

    genotype = from_nb201_string(arch)
    theirs = TinyNetwork(16, 5, Structure.str2structure(arch), 10)
    assert count_parameters(NB201Network(genotype, 16, 10, 5)) == sum(p.numel() for p in theirs.parameters()) == params
    torch.manual_seed(0)
    theirs = TinyNetwork(4, 1, Structure.str2structure(arch), 10).eval()
    ours = NB201Network(genotype, 4, 10, 1).eval()
    _copy_weights(theirs, ours)
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(ours(x)[0], theirs(x)[1], atol=1e-5)

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from egsbench.tasks.spaces import (
    DARTS_V1,
    DARTS_V2,
    SPACES,
    CellGenotype,
    Genotype,
    NetworkCIFAR,
    SearchNetwork,
    cnn,
    count_macs,
    count_parameters,
    drop_path,
)
from egsbench.testing import aten_calls, autograd_nodes, op_calls


def uniform(space, value=None):
    v = 1.0 / space.num_ops if value is None else value
    return {t: torch.full((space.num_edges, space.num_ops), v) for t in space.cell_types}


@pytest.mark.parametrize("space_name", ["darts", "dag"])
def test_search_supernet_parameter_count_matches_darts(space_name):
    # quark0/darts issue #16 log: "param size = 1.930618MB" for C=16, 8 cells, 10 classes.
    net = SearchNetwork(SPACES.get(space_name), channels=16, num_classes=10, layers=8)
    assert count_parameters(net) == 1_930_618


@pytest.mark.parametrize("genotype, expected", [(DARTS_V2, 3_349_342), (DARTS_V1, 3_169_414)])
def test_final_network_parameter_count_matches_darts(genotype, expected):
    net = NetworkCIFAR(genotype, channels=36, num_classes=10, layers=20, auxiliary=True)
    assert count_parameters(net) == expected
    assert sum(p.numel() for p in net.auxiliary.parameters()) > 400_000  # excluded, but present


def test_supernet_shapes_and_cell_outputs():
    space = SPACES.get("dag")
    net = SearchNetwork(space, channels=4, num_classes=7, layers=5)
    assert [c.reduction for c in net.cells] == [False, True, False, True, False]
    assert net(torch.randn(3, 3, 16, 16), uniform(space)).shape == (3, 7)
    cell = net.cells[1]
    out = cell(
        torch.randn(2, 12, 16, 16),
        torch.randn(2, 16, 16, 16),
        uniform(space)["reduce"],
        [list(range(1, 8))] * space.num_edges,
    )
    assert out.shape == (2, 4 * 8, 8, 8)


def test_sparse_execution_skips_zero_weights_and_never_runs_the_zero_op():
    space = SPACES.get("dag")
    net = SearchNetwork(space, channels=4, num_classes=10, layers=3)
    weights = {t: torch.zeros(space.num_edges, space.num_ops) for t in space.cell_types}
    sep3, none = space.op_index("sep_conv_3x3"), space.op_index("none")
    weights["normal"][:, sep3] = 1.0
    weights["normal"][:, none] = 1.0  # non-zero weight on the zero op: still never executed
    weights["reduce"][3, space.op_index("max_pool_3x3")] = 1.0
    with op_calls(net) as calls:
        net(torch.randn(2, 3, 16, 16), weights)
    ran = set(calls)
    assert ran, "no op ran"
    assert all(k == sep3 or (e, k) == (3, 1) for _, e, k in ran)
    assert not any(k == none for _, _, k in ran)
    # With 3 cells the layout is normal, reduce, reduce: 14 sep_conv_3x3 edges + 2 x 1 max_pool edge.
    assert [c.reduction for c in net.cells] == [False, True, True]
    assert len(ran) == 14 + 2 and all(v == 1 for v in calls.values())


def test_sparse_execution_matches_dense_mixing(monkeypatch):
    torch.manual_seed(0)
    space = SPACES.get("dag")
    net = SearchNetwork(space, channels=4, num_classes=10, layers=3).eval()
    x = torch.randn(2, 3, 16, 16)
    w = {
        t: torch.rand(space.num_edges, space.num_ops) * (torch.rand(space.num_edges, space.num_ops) < 0.4)
        for t in space.cell_types
    }
    sparse = net(x, w)
    # Dense reference: every op runs and is multiplied by its (possibly zero) weight.
    monkeypatch.setattr(cnn, "active_ops", lambda weights, zero: [list(range(weights.shape[1]))] * weights.shape[0])
    dense = net(x, w)
    assert torch.allclose(sparse, dense, atol=1e-6)


def test_gradients_reach_edge_weights_of_active_ops_only():
    space = SPACES.get("dag")
    net = SearchNetwork(space, channels=4, num_classes=10, layers=3)
    w = {t: torch.zeros(space.num_edges, space.num_ops) for t in space.cell_types}
    for t in w:
        w[t][:, space.op_index("sep_conv_3x3")] = 1.0
        w[t].requires_grad_()
    net(torch.randn(2, 3, 16, 16), w).sum().backward()
    grad = w["normal"].grad
    assert grad[:, space.op_index("sep_conv_3x3")].abs().sum() > 0
    assert grad[:, space.op_index("dil_conv_5x5")].abs().sum() == 0


def test_final_network_accepts_several_ops_per_edge_and_any_in_degree():
    cell = CellGenotype(
        (
            (0, 2, "sep_conv_3x3"),
            (0, 2, "skip_connect"),
            (1, 2, "max_pool_3x3"),
            (0, 3, "dil_conv_5x5"),
            (1, 3, "avg_pool_3x3"),
            (2, 3, "sep_conv_5x5"),
            (3, 5, "skip_connect"),
        ),
        (2, 3, 5),
    )
    genotype = Genotype({"normal": cell, "reduce": cell})
    SPACES.get("dag").validate(genotype)
    net = NetworkCIFAR(genotype, channels=4, num_classes=10, layers=5, auxiliary=True)
    logits, aux = net(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10) and aux.shape == (2, 10)
    net.eval()
    logits, aux = net(torch.randn(2, 3, 32, 32))
    assert aux is None
    assert net.cells[0].multiplier == 3


def test_drop_path_zeroes_whole_samples_and_keeps_the_mean():
    torch.manual_seed(0)
    x = torch.ones(4000, 2, 2, 2)
    y = drop_path(x, 0.3)
    per_sample = y.flatten(1)
    values = per_sample[:, 0].unique().tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / 0.7)
    assert (per_sample == per_sample[:, :1]).all()
    assert abs(y.mean().item() - 1.0) < 0.05
    assert drop_path(x, 0.0) is x


def test_drop_path_applies_only_in_training_and_not_to_identity():
    genotype = Genotype(
        {t: CellGenotype(((0, 2, "skip_connect"), (1, 2, "skip_connect")), (2,)) for t in ("normal", "reduce")}
    )
    net = NetworkCIFAR(genotype, channels=4, num_classes=10, layers=3)
    net.drop_path_prob = 0.9
    cell = net.cells[0].train()
    s = torch.randn(8, 12, 8, 8)
    torch.manual_seed(0)
    a = cell(s, s, 0.9)
    torch.manual_seed(1)
    b = cell(s, s, 0.9)
    assert torch.equal(a, b)  # identity edges are never dropped


def test_mac_counter_counts_convs_linears_and_pools():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 10)
    )
    count = count_macs(model, torch.zeros(1, 3, 8, 8))
    conv, pool, linear = 9 * 3 * 8 * 8 * 8, 4 * 8 * 4 * 4, 128 * 10
    assert count.total == conv + pool + linear
    assert count.per_module == {"0": conv, "1": pool, "3": linear}
    dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
    assert count_macs(dw, torch.zeros(1, 8, 4, 4)).total == 9 * 8 * 16


def test_darts_v2_macs_are_in_the_published_range():
    net = NetworkCIFAR(DARTS_V2, channels=36, num_classes=10, layers=20, auxiliary=True).eval()
    macs = count_macs(net, torch.zeros(1, 3, 32, 32)).total
    assert 500e6 < macs < 560e6  # xautodl reports ~0.53 GMACs for DARTS-V2 on CIFAR-10


def test_op_costs_rank_ops_by_macs():
    space = SPACES.get("dag")
    net = SearchNetwork(space, channels=4, num_classes=10, layers=3)
    costs = net.op_costs("macs")["normal"]
    k = space.op_index
    assert (costs[:, k("none")] == 0).all() and (costs[:, k("skip_connect")] == 0).all()
    assert (costs[:, k("sep_conv_5x5")] > costs[:, k("sep_conv_3x3")]).all()
    assert (costs[:, k("sep_conv_3x3")] > costs[:, k("dil_conv_3x3")]).all()
    assert (costs[:, k("max_pool_3x3")] > 0).all()
    params = net.op_costs("params")["reduce"]
    assert (params[:2, k("skip_connect")] > 0).all()  # FactorizedReduce on the reduction inputs has weights
    with pytest.raises(ValueError, match="unknown cost metric"):
        net.op_costs("latency")


def test_op_costs_per_cell_sum_to_the_per_type_costs():
    net = SearchNetwork(SPACES.get("dag"), channels=4, num_classes=10, layers=3, image_size=16)
    for metric in ("macs", "params", "mac_memory"):
        summed, per_cell = net.op_costs(metric), net.op_costs(metric, per_cell=True)
        assert per_cell["normal"].shape == (1, 14, 8) and per_cell["reduce"].shape == (2, 14, 8)
        for t in summed:
            assert torch.equal(per_cell[t].sum(0), summed[t])


def test_mac_memory_matches_the_snas_formulas():
    # SNAS operations.py: MAC = input + output feature-map elements + parameters, per conv / pool / identity.
    space = SPACES.get("dag")
    net = SearchNetwork(space, channels=4, num_classes=10, layers=3, image_size=16)
    costs = net.op_costs("mac_memory", per_cell=True)
    k = space.op_index
    normal, reduce = costs["normal"][0], costs["reduce"][0]  # cell 0: C=4 at 16x16; cell 1: C=8, 16x16 -> 8x8
    c, hw = 4, 16 * 16
    for op, kernel in (("sep_conv_3x3", 3), ("sep_conv_5x5", 5)):
        assert normal[0, k(op)] == hw * (7 * c + c) + 2 * c * kernel**2 + 2 * c * c
    for op, kernel in (("dil_conv_3x3", 3), ("dil_conv_5x5", 5)):
        assert normal[0, k(op)] == hw * (3 * c + c) + c * kernel**2 + c * c
    for op in ("max_pool_3x3", "avg_pool_3x3", "skip_connect"):
        assert normal[0, k(op)] == 2 * c * hw
    assert (normal[:, k("none")] == 0).all()
    c, out = 8, 8 * 8  # stride-2 edges of the reduction cell
    assert reduce[0, k("sep_conv_3x3")] == out * (10 * c + c) + 2 * c * 9 + 2 * c * c
    assert reduce[0, k("dil_conv_3x3")] == out * (6 * c + c) + c * 9 + c * c
    assert reduce[0, k("max_pool_3x3")] == 5 * c * out
    # FactorizedReduce: SNAS counts 2 * (4 * out) * c inputs; the shifted path reads (H-1)(W-1) positions.
    assert reduce[0, k("skip_connect")] == (16 * 16 + 15 * 15) * c + 2 * (c // 2) * out + 2 * c * (c // 2)
    assert (reduce[4, k("skip_connect")] == 2 * c * out).all()  # edge (2, 3): stride 1, identity


def test_search_drop_path_is_off_by_default_per_op_and_never_on_identity():
    torch.manual_seed(0)
    space = SPACES.get("dag")
    net = SearchNetwork(space, channels=4, num_classes=10, layers=3).train()
    x = torch.randn(8, 3, 16, 16)
    only = {}
    for op in ("skip_connect", "sep_conv_3x3"):
        w = {t: torch.zeros(space.num_edges, space.num_ops) for t in space.cell_types}
        w["normal"][:, space.op_index(op)] = 1.0
        w["reduce"][:, space.op_index("max_pool_3x3")] = 1.0
        only[op] = w
    cell, s = net.cells[0], torch.randn(8, 12, 8, 8)
    active = [[space.op_index("skip_connect")]] * space.num_edges
    a = cell(s, s, only["skip_connect"]["normal"], active, drop_prob=0.9)
    b = cell(s, s, only["skip_connect"]["normal"], active, drop_prob=0.0)
    assert torch.equal(a, b)  # identity is never dropped
    active = [[space.op_index("sep_conv_3x3")]] * space.num_edges
    torch.manual_seed(1)
    node2 = cell(s, s, only["sep_conv_3x3"]["normal"], active, drop_prob=0.9)[:, :4]  # two dropped ops, (8, C, H, W)
    zero = (node2.flatten(1) == 0).all(dim=1)
    assert zero.any() and not zero.all()  # whole samples dropped, per op (both ops gone: p = 0.81)
    assert net.drop_path_prob == 0.0
    torch.manual_seed(2)
    y0 = net(x, only["sep_conv_3x3"])
    net.drop_path_prob = 0.5
    torch.manual_seed(2)
    assert not torch.equal(net(x, only["sep_conv_3x3"]), y0)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x, only["sep_conv_3x3"]), net(x, only["sep_conv_3x3"]))  # no drop in eval


def weighted_sum(w: torch.Tensor, outputs: dict[int, torch.Tensor]) -> torch.Tensor:
    """``sum_k w[k] * outputs[k]`` as an edge adds it up (a multiply, then fused multiply-adds, in op order)."""
    out = None
    for k, y in outputs.items():
        out = w[k] * y if out is None else out.addcmul(w[k], y)
    return out


@pytest.mark.parametrize("stride", [1, 2])
def test_a_shared_relu_gives_each_ops_own_output_and_gradients(stride):
    """The mixed edge computes relu(x) once for the ops that start with one; outputs and gradients are exactly
    those of calling every op on x by itself (its own ReLU), and the parameters are the ops' own."""
    from egsbench.tasks.spaces.cell import MixedEdge

    space = SPACES.get("darts")
    torch.manual_seed(0)
    edge = MixedEdge(space.ops, 8, stride).eval()  # eval: the two passes see the same BN statistics
    shares = [k for k, op in enumerate(edge.ops) if hasattr(op, "after_activation")]
    assert len(shares) == 4 + (stride == 2)  # four convolutions (+ FactorizedReduce as the strided skip)
    x = torch.randn(4, 8, 8, 8, requires_grad=True)
    w = torch.softmax(torch.randn(len(space.ops)), 0)
    active = [k for k in range(len(space.ops)) if space.ops[k] != "none"]
    shared = edge(x, w, active)
    shared.square().sum().backward()
    grads = [x.grad.clone()] + [p.grad.clone() for p in edge.parameters()]
    x.grad = None
    edge.zero_grad()
    separate = weighted_sum(w, {k: edge.ops[k](x) for k in active})
    separate.square().sum().backward()
    assert torch.equal(shared, separate)
    for a, b in zip(grads, [x.grad] + [p.grad for p in edge.parameters()], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)  # summation order may differ in the last bit


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_a_nodes_weighted_sum_is_autograds_in_values_and_gradients(layout):
    """cell.weighted_sum (one autograd node per search-cell node on a CPU): the values of a multiply then
    multiply-adds in order, bit for bit; the gradients of the weights (dot products) and of the terms, first and
    second order, as autograd's own graph gives them, also where the output's gradient is a slice of a concat
    (the last node's); weights of another dtype (autocast) take the out-of-place sum."""
    from egsbench.tasks.spaces.cell import weighted_sum

    torch.manual_seed(0)
    weights = torch.rand(5, 4, dtype=torch.double, requires_grad=True)
    index = [(0, 1), (0, 3), (2, 0), (4, 2)]
    ys = [torch.randn(2, 3, 5, 6, dtype=torch.double).contiguous(memory_format=layout) for _ in index]
    ys = [y.requires_grad_() for y in ys]
    out = weighted_sum(weights, index, ys)
    assert type(out.grad_fn).__name__ == "_WeightedSumBackward" and out.stride() == ys[0].stride()
    ref = weights[index[0]] * ys[0]
    for (e, k), y in zip(index[1:], ys[1:], strict=True):
        ref = ref.addcmul(weights[e, k], y)
    assert torch.equal(out, ref)
    for node, reference in ((out, ref), (torch.cat([out, torch.zeros_like(ref)], 1)[:, :3], ref)):  # then a slice
        g = torch.randn_like(reference)
        grads = torch.autograd.grad(node, (weights, *ys), g, create_graph=True)
        grads_ref = torch.autograd.grad(reference, (weights, *ys), g, create_graph=True)
        for a, b in zip(grads, grads_ref, strict=True):
            torch.testing.assert_close(a, b)
        second = torch.autograd.grad(sum(t.square().sum() for t in grads), (weights, *ys))
        second_ref = torch.autograd.grad(sum(t.square().sum() for t in grads_ref), (weights, *ys))
        for a, b in zip(second, second_ref, strict=True):
            torch.testing.assert_close(a, b)
    mixed = weighted_sum(weights.float(), index, ys)
    assert "WeightedSum" not in type(mixed.grad_fn).__name__
    torch.testing.assert_close(mixed, ref, rtol=1e-6, atol=1e-6)
    # terms that hold their weight already (an op's closing BN took it) are added as they are
    scaled = [False, True, True, False]
    terms = [weights[e, k] * y if s else y for (e, k), y, s in zip(index, ys, scaled, strict=True)]
    out = weighted_sum(weights, index, terms, scaled)
    assert type(out.grad_fn).__name__ == "_WeightedSumBackward"
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(ref)
    grads = torch.autograd.grad(out, (weights, *ys), g, create_graph=True)
    grads_ref = torch.autograd.grad(ref, (weights, *ys), g, create_graph=True)
    for a, b in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(a, b)
    for flags in ([True] * 4, [True, False, False, True]):  # none unscaled; a scaled first term
        terms = [weights[i] * y if f else y for i, y, f in zip(index, ys, flags, strict=True)]
        torch.testing.assert_close(weighted_sum(weights, index, terms, flags), ref)
    alone = weights[index[0]] * ys[0]  # one scaled term: the node is a copy of it, not the term itself
    node = weighted_sum(weights, index[:1], [alone], [True])
    assert torch.equal(node, alone) and node.data_ptr() != alone.data_ptr()
    # every term scaled and the node's gradient a slice of a concat's: the terms still get it dense, in their layout
    terms = [(weights[i] * y).detach().requires_grad_() for i, y in zip(index, ys, strict=True)]
    sliced = torch.cat([weighted_sum(weights, index, terms, [True] * 4), torch.zeros_like(ref)], 1)[:, :3]
    grads = torch.autograd.grad(sliced, terms, g)
    assert all(t.is_contiguous(memory_format=layout) and torch.equal(t, g) for t in grads)


def test_a_cells_op_weights_are_one_autograd_node_with_the_same_gradients():
    """cell.entries: the active entries of an (E, K) weight tensor as 0-dim tensors of one autograd node; the
    entries used get their gradients, the unused none, first and second order, as indexing gives them."""
    from egsbench.tasks.spaces.cell import entries

    torch.manual_seed(0)
    weights = torch.rand(4, 3, dtype=torch.double, requires_grad=True)
    active = [[0, 2], [], [1], [0, 1, 2]]
    picked = entries(weights, active)
    assert [sorted(d) for d in picked] == active
    assert all(torch.equal(picked[e][k], weights[e, k]) for e, ks in enumerate(active) for k in ks)
    assert len({type(v.grad_fn).__name__ for d in picked for v in d.values()}) == 1
    used = [(0, 2), (2, 1), (3, 0), (3, 2)]  # (0, 0) and (3, 1) picked but unused
    coef = torch.tensor([1.5, -2.0, 0.5, 3.0], dtype=torch.double)

    def loss(values):
        return sum(c * values[i].square() for i, c in enumerate(coef))

    out = torch.autograd.grad(loss([picked[e][k] for e, k in used]), weights, create_graph=True)[0]
    ref = torch.autograd.grad(loss([weights[e, k] for e, k in used]), weights, create_graph=True)[0]
    torch.testing.assert_close(out, ref)
    assert out[0, 0] == 0 and out[3, 1] == 0 and out[0, 2] != 0
    torch.testing.assert_close(*(torch.autograd.grad(g.sum(), weights)[0] for g in (out, ref)))
    assert entries(weights, [[], []]) == [{}, {}]


def test_an_op_with_a_swapped_activation_applies_its_own():
    from egsbench.tasks.spaces.cell import MixedEdge

    space = SPACES.get("darts")
    torch.manual_seed(0)
    edge = MixedEdge(space.ops, 8, 1).eval()
    sep3 = space.op_index("sep_conv_3x3")
    edge.ops[sep3][0][0] = nn.GELU()  # the leading activation of sep_conv_3x3 only
    x = torch.randn(4, 8, 8, 8)
    w = torch.softmax(torch.randn(len(space.ops)), 0)
    active = [k for k in range(len(space.ops)) if space.ops[k] != "none"]
    with torch.no_grad():
        separate = weighted_sum(w, {k: edge.ops[k](x) for k in active})
        assert torch.equal(edge(x, w, active), separate)
        relu_everywhere = separate - w[sep3] * edge.ops[sep3](x) + w[sep3] * edge.ops[sep3].after_activation(x.relu())
        assert not torch.allclose(edge(x, w, active), relu_everywhere)  # the GELU did take effect


def _observe_every_module(net: nn.Module) -> None:
    """A no-op forward hook on every module: an observed module always runs itself, so nothing is shared."""
    for m in net.modules():
        m.register_forward_hook(lambda *_: None)


@pytest.mark.parametrize("reduction", [False, True])
def test_edges_leaving_one_node_share_its_pools_with_the_same_values_gradients_and_statistics(reduction):
    """A search cell computes each pool + BN once per source node (and stride) and relu(x) once per node; the
    output, the gradients and every BN's running statistics are those of each edge running its own ops."""
    from egsbench.tasks.spaces.cell import SearchCell

    space = SPACES.get("darts")
    torch.manual_seed(0)
    shared = SearchCell(space, 8, 8, 8, reduction=reduction, reduction_prev=False).train()
    separate = copy.deepcopy(shared)
    _observe_every_module(separate)
    w = torch.softmax(torch.randn(space.num_edges, space.num_ops), -1)
    active = [[k for k in range(space.num_ops) if space.ops[k] != "none"]] * space.num_edges
    s0, s1 = torch.randn(4, 8, 8, 8), torch.randn(4, 8, 8, 8)
    with aten_calls() as pools:
        out = shared(s0, s1, w, active)
    reference = separate(s0, s1, w, active)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)  # sums in another order: the last bits
    out.square().sum().backward()
    reference.square().sum().backward()
    for (name, a), b in zip(shared.named_parameters(), separate.parameters(), strict=True):
        # the gradient is summed before the shared backward, not after: float rounding, relative to its scale
        assert (a.grad - b.grad).abs().max() <= 1e-5 * b.grad.abs().max(), name
    for (name, a), b in zip(shared.named_buffers(), separate.buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)  # running stats and batch counts
    # 5 nodes have outgoing edges: one max pool and one avg pool each, where 14 edges ran 14 of each
    assert pools["max_pool2d_with_indices"] == pools["avg_pool2d"] == 5


def test_pool_sharing_in_eval_keeps_each_bn_s_own_statistics_and_stops_for_a_swapped_module():
    from egsbench.tasks.spaces.cell import SearchCell

    space = SPACES.get("darts")
    torch.manual_seed(0)
    cell = SearchCell(space, 8, 8, 8, reduction=False, reduction_prev=False)
    for m in cell.modules():  # every BN its own statistics, as after sparse (sampled) training
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    cell.eval()
    separate = copy.deepcopy(cell)
    _observe_every_module(separate)
    w = torch.softmax(torch.randn(space.num_edges, space.num_ops), -1)
    active = [list(range(1, space.num_ops))] * space.num_edges
    s0, s1 = torch.randn(2, 8, 8, 8), torch.randn(2, 8, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(cell(s0, s1, w, active), separate(s0, s1, w, active), rtol=1e-5, atol=1e-6)
    max_pool = space.op_index("max_pool_3x3")
    assert cell.edges[0].ops[max_pool].share_key() == cell.edges[2].ops[max_pool].share_key() is not None
    for net in (cell, separate):  # the same changes to both: a shared output must follow them
        net.edges[0].ops[max_pool][0] = nn.Identity()  # not a pool: not shared
        net.edges[2].ops[max_pool][0].kernel_size, net.edges[2].ops[max_pool][0].padding = 5, 2  # another key
    assert cell.edges[0].ops[max_pool].share_key() is None
    assert cell.edges[2].ops[max_pool].share_key() != cell.edges[5].ops[max_pool].share_key()
    with torch.no_grad():
        torch.testing.assert_close(cell(s0, s1, w, active), separate(s0, s1, w, active), rtol=1e-5, atol=1e-6)


def test_the_cells_reading_one_state_share_its_preprocessing_relu(monkeypatch):
    """Every cell output feeds two cells' preprocessing and the stem's output three: each is ReLU'd once. The
    output and the gradients are those of each preprocessing applying its own ReLU (float64)."""
    from egsbench.tasks.spaces import cell as cell_module

    net, x, w = _float64_supernet(layers=5, size=16)

    def run():
        net.zero_grad()
        for v in w.values():
            v.grad = None
        with torch.no_grad(), aten_calls() as calls:
            net(x, w)
        net(x, w).square().sum().backward()
        return calls["relu"], [p.grad.clone() for p in net.parameters()] + [v.grad.clone() for v in w.values()]

    shared_relus, grads = run()
    monkeypatch.setattr(cell_module, "_preprocessed", lambda pre, s: pre(s.x))
    own_relus, grads_own = run()
    assert own_relus - shared_relus == 5  # 2 per cell down to one per state read: the stem's and 4 cells'
    for a, b in zip(grads, grads_own, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_the_search_cell_without_the_shortcuts_is_the_same_function(monkeypatch):
    """sum_into_nodes on a device outside ops.SHORTCUT_DEVICES (a GPU; here the CPU with the set emptied), the
    path torch.compile traces as well: autograd's own graph of the same sums, the same loss and gradients
    (float64), none of the shortcut nodes in the graph."""
    from egsbench.tasks.spaces import ops

    net, x, w = _float64_supernet(layers=3, size=8)

    def run():
        loss = net(x, w).square().sum()
        params = [*net.parameters(), *w.values()]
        return loss, torch.autograd.grad(loss, params, allow_unused=True), autograd_nodes(loss)

    loss, grads, names = run()
    monkeypatch.setattr(ops, "SHORTCUT_DEVICES", frozenset())
    loss_plain, grads_plain, names_plain = run()
    assert "_WeightedSumBackward" in names and "_EntriesBackward" in names
    assert not names_plain & {"_WeightedSumBackward", "_EntriesBackward", "_PhasePairBackward"}
    torch.testing.assert_close(loss_plain, loss, rtol=1e-12, atol=0)
    for a, b in zip(grads_plain, grads, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def _float64_supernet(layers: int, size: int) -> tuple[SearchNetwork, torch.Tensor, dict[str, torch.Tensor]]:
    """A seeded float64 DARTS supernet (C = 4), a batch of 2 images and dense softmax weights per cell type."""
    torch.manual_seed(0)
    space = SPACES.get("darts")
    net = SearchNetwork(space, channels=4, num_classes=10, layers=layers).double()
    x = torch.randn(2, 3, size, size, dtype=torch.double)
    shape = (space.num_edges, space.num_ops)
    w = {t: torch.softmax(torch.randn(shape, dtype=torch.double), 1).requires_grad_() for t in space.cell_types}
    return net, x, w

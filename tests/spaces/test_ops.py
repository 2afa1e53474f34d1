from __future__ import annotations

import pytest
import torch
from torch import nn

from egsbench.tasks.spaces import PRIMITIVES, make_op
from egsbench.tasks.spaces.ops import DepthwiseConv2d, FactorizedReduce
from egsbench.testing import autograd_nodes


@pytest.mark.parametrize("name", PRIMITIVES)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("affine", [False, True])
def test_op_shapes(name, stride, affine):
    op = make_op(name, 8, stride, affine)
    out = op(torch.randn(2, 8, 16, 16))
    assert out.shape == (2, 8, 16 // stride, 16 // stride)


@pytest.mark.parametrize("stride", [1, 2])
def test_zero_op_is_zero(stride):
    assert make_op("none", 4, stride, False)(torch.randn(1, 4, 8, 8)).abs().sum() == 0


def test_search_variants_have_no_affine_bn_and_pools_carry_bn():
    for name in PRIMITIVES:
        for module in make_op(name, 8, 1, affine=False).modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                assert not module.affine, name
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in make_op("max_pool_3x3", 8, 1, False).modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in make_op("max_pool_3x3", 8, 1, True).modules())


def test_skip_with_stride_is_factorized_reduce():
    assert isinstance(make_op("skip_connect", 8, 2, True), FactorizedReduce)
    x = torch.randn(1, 8, 8, 8)
    assert make_op("skip_connect", 8, 1, True)(x) is x


def test_avg_pool_excludes_padding():
    op = make_op("avg_pool_3x3", 1, 1, affine=True)
    out = op(torch.ones(1, 1, 4, 4))
    assert torch.allclose(out, torch.ones_like(out))  # count_include_pad=True would give 4/9 in the corners


def test_unknown_op_and_odd_factorized_reduce_raise():
    with pytest.raises(ValueError, match="unknown op 'conv_7x7'"):
        make_op("conv_7x7", 8, 1, True)
    with pytest.raises(ValueError, match="even"):
        FactorizedReduce(8, 7)


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "dilation"),
    [(3, 1, 1, 1), (5, 1, 2, 1), (3, 1, 2, 2), (5, 1, 4, 2), (3, 2, 2, 2), (5, 2, 4, 2), (3, 2, 1, 1), (3, 1, 0, 1)],
)
def test_depthwise_conv_is_nn_conv2d_in_values_gradients_and_parameters(kernel, stride, padding, dilation):
    """The separable and dilated convolutions' depthwise layer: nn.Conv2d's parameters, outputs and gradients
    (first and second order) whether or not it takes a shortcut: the flipped-kernel input gradient (stride 1,
    "same" padding: the first four cases) and the subsampled grid (stride = dilation 2: the next two)."""
    torch.manual_seed(0)
    dw = DepthwiseConv2d(6, kernel, stride, padding, dilation).double()
    ref = nn.Conv2d(6, 6, kernel, stride, padding, dilation=dilation, groups=6, bias=False).double()
    assert dw.state_dict().keys() == ref.state_dict().keys()
    ref.load_state_dict(dw.state_dict())
    x = torch.randn(2, 6, 9, 9, dtype=torch.double, requires_grad=True)
    y, y_ref = dw(x), ref(x)
    torch.testing.assert_close(y, y_ref)
    fast = 2 * padding == dilation * (kernel - 1) and stride in (1, dilation)
    assert ("SamePaddedDepthwise" in type(y.grad_fn).__name__) == fast  # the path the case means to test
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, dw.weight), g, create_graph=True)
    grads_ref = torch.autograd.grad(y_ref, (x, ref.weight), g, create_graph=True)
    for a, b in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(a, b)
    second = torch.autograd.grad(sum(t.square().sum() for t in grads), (x, dw.weight))  # DARTS's exact hypergradient
    second_ref = torch.autograd.grad(sum(t.square().sum() for t in grads_ref), (x, ref.weight))
    for a, b in zip(second, second_ref, strict=True):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(dw, (x,))
    assert isinstance(make_op("dil_conv_5x5", 6, 1, affine=False)[1], DepthwiseConv2d)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize(
    ("kernel", "padding", "dilation", "size"),
    [
        (5, 2, 1, (9, 10)),
        (7, 3, 1, (8, 9)),
        (3, 2, 2, (9, 10)),
        (5, 4, 2, (8, 9)),
        (5, 6, 3, (10, 11)),
        (7, 6, 2, (9, 10)),
        (3, 2, 2, (8, 12)),
        (5, 4, 2, (8, 8)),
        (7, 6, 3, (9, 12)),
    ],
)
def test_depthwise_weight_gradient_in_pieces_is_atens(kernel, padding, dilation, size, layout):
    """The weight gradient from column blocks of at most three (oneDNN's fast kernel) and, dilated, from the
    phases of the grid stacked along the batch (a 7x7 at dilation 2: both, three blocks): aten's own, first and
    second order, in either layout (sides that are no multiple of the dilation pad to one; the last three cases:
    the phases of the input itself)."""
    from egsbench.tasks.spaces import ops

    torch.manual_seed(0)
    x = torch.randn(3, 4, *size, dtype=torch.double).contiguous(memory_format=layout).requires_grad_()
    w = torch.randn(4, 1, kernel, kernel, dtype=torch.double)
    out = torch.nn.functional.conv2d(x, w, None, 1, padding, dilation, 4)
    g = torch.randn_like(out).requires_grad_()
    ours = ops._depthwise_weight_grad(g, x, w, (padding, padding), (dilation, dilation))
    aten = ops._aten_weight_grad(g, x, w, (padding, padding), (dilation, dilation))
    torch.testing.assert_close(ours, aten)
    v = torch.randn_like(aten)
    second = torch.autograd.grad((ours * v).sum(), (g, x))
    second_ref = torch.autograd.grad((aten * v).sum(), (g, x))
    for a, b in zip(second, second_ref, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
def test_factorized_reduce_subsamples_and_keeps_the_gradient_layout(layout):
    """FactorizedReduce as one two-group stride-1 1x1 convolution of its two subsampled grids side by side (on a
    CPU): the original's values and gradients, first and second order; the input gradient keeps the input's
    layout (autograd's slice gradient is NCHW); an observed conv (a MAC counter's hook) runs the original."""
    torch.manual_seed(0)
    size = 8
    fr = FactorizedReduce(6, 8, affine=True).double()
    fr.bn.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(2, 6, size, size, dtype=torch.double).contiguous(memory_format=layout)
    x.requires_grad_()

    def run(observed: bool):
        handle = fr.conv_2.register_forward_hook(lambda *_: None) if observed else None
        try:
            y = fr.after_activation(x)  # the gradient of x as the ReLU's backward receives it
            grads = torch.autograd.grad(y.square().sum(), (x, *fr.parameters()), create_graph=True)
            second = torch.autograd.grad(sum(t.square().sum() for t in grads), (x, fr.conv_1.weight))
        finally:
            if handle is not None:
                handle.remove()
        return y, grads, second

    (y, grads, second), (y_ref, grads_ref, second_ref) = run(False), run(True)
    torch.testing.assert_close(y, y_ref)
    for a, b in zip((*grads, *second), (*grads_ref, *second_ref), strict=True):
        torch.testing.assert_close(a, b)
    assert grads[0].is_contiguous(memory_format=layout)
    from egsbench.tasks.spaces.ops import _PhasePair

    pair = _PhasePair.apply(x)  # what the two-group convolution reads: both grids, dense in x's layout
    assert pair.is_contiguous(memory_format=layout)
    assert torch.equal(pair, torch.cat([x[:, :, ::2, ::2], x[:, :, 1::2, 1::2]], 1))
    if layout is torch.channels_last:
        assert not grads_ref[0].is_contiguous(memory_format=torch.channels_last)
    assert "_PhasePairBackward" in autograd_nodes(y) and "_PhasePairBackward" not in autograd_nodes(y_ref)


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_a_scale_folded_into_a_search_bn_is_the_scaled_bn(momentum, layout):
    """ops.scaled_bn: ``scale * bn(x)`` as a BN whose weight is the scale: values, the gradients of x and of the
    scale (first and second order), the running statistics while training and their use in eval; a separable
    op folds its weight only where its closing BN is a search BN nobody observes."""
    from egsbench.tasks.spaces.ops import SepConv, scaled_bn

    torch.manual_seed(0)
    bn = nn.BatchNorm2d(5, affine=False, momentum=momentum).double()
    ref = nn.BatchNorm2d(5, affine=False, momentum=momentum).double()
    x = torch.randn(4, 5, 6, 7, dtype=torch.double).contiguous(memory_format=layout).requires_grad_()
    scale = torch.tensor(0.7, dtype=torch.double, requires_grad=True)
    for _ in range(2):  # twice: momentum None averages over num_batches_tracked
        y, y_ref = scaled_bn(bn, x, scale), scale * ref(x)
    torch.testing.assert_close(y, y_ref)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(bn, name), getattr(ref, name))
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, scale), g, create_graph=True)
    grads_ref = torch.autograd.grad(y_ref, (x, scale), g, create_graph=True)
    for a, b in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(a, b)
    second = torch.autograd.grad(sum(t.square().sum() for t in grads), (x, scale))
    second_ref = torch.autograd.grad(sum(t.square().sum() for t in grads_ref), (x, scale))
    for a, b in zip(second, second_ref, strict=True):
        torch.testing.assert_close(a, b)
    bn.eval(), ref.eval()
    torch.testing.assert_close(scaled_bn(bn, x, scale), scale * ref(x))
    op = SepConv(5, 5, 3, 1, 1, affine=False)
    assert op.takes_scale and not SepConv(5, 5, 3, 1, 1, affine=True).takes_scale
    handle = op[1][3].register_forward_hook(lambda *_: None)  # a counter observing the closing BN
    assert not op.takes_scale
    handle.remove()
    calls = []
    handle = op[1].register_forward_hook(lambda *_: calls.append(1))  # observing the second block
    assert not op.takes_scale
    op.after_activation(torch.randn(2, 5, 6, 6).relu())
    assert calls == [1]  # unscaled, the second block runs as a module: its hooks see it
    handle.remove()


def test_depthwise_conv_under_autocast_is_nn_conv2d_under_autocast():
    """bf16 autocast (a config's mixed_precision): aten's kernel casts the operands, forward and backward."""
    torch.manual_seed(0)
    dw = DepthwiseConv2d(6, 5, 1, 4, 2)
    ref = nn.Conv2d(6, 6, 5, 1, 4, dilation=2, groups=6, bias=False)
    ref.load_state_dict(dw.state_dict())
    x = torch.randn(2, 6, 9, 9, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, y_ref = dw(x), ref(x)
    assert y.dtype == torch.bfloat16 and torch.equal(y, y_ref)
    y.float().square().sum().backward()
    y_ref.float().square().sum().backward()
    assert dw.weight.grad.dtype == torch.float32 and torch.equal(dw.weight.grad, ref.weight.grad)


def test_the_kernel_shortcuts_run_only_on_the_devices_measured_faster(monkeypatch):
    """ops.SHORTCUT_DEVICES decides, for the depthwise convolution and the in-place node sum alike: a CPU takes
    them; any other device (meta here, as CUDA would) runs nn.Conv2d's kernel and adds out of place."""
    from egsbench.tasks.spaces import ops
    from egsbench.tasks.spaces.cell import _accumulate

    assert ops.SHORTCUT_DEVICES == {"cpu"}
    dw = DepthwiseConv2d(4, 3, 1, 1, 1)
    for device, shortcut in (("cpu", True), ("meta", False)):
        conv = dw.to(device)
        y = conv(torch.randn(2, 4, 8, 8, device=device, requires_grad=True))
        assert ("SamePaddedDepthwise" in type(y.grad_fn).__name__) == shortcut
        out, w, term = (torch.ones(2, 3, device=device) for _ in range(3))
        assert (_accumulate(out, w, term) is out) == shortcut  # addcmul_ returns the tensor it added into
    monkeypatch.setattr(ops, "SHORTCUT_DEVICES", frozenset({"cpu", "meta"}))
    out = torch.ones(2, 3, device="meta")
    assert _accumulate(out, out, out) is out  # the one switch, read where the sum is made


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_a_shared_pools_batch_statistics_are_the_unbiased_ones(layout):
    """ops._batch_stats (the other BNs' running averages of a shared pool): BN's statistics kernel, the mean and
    the unbiased variance var_mean gives; a device without that kernel (meta here) takes var_mean's shapes."""
    from egsbench.tasks.spaces import ops

    torch.manual_seed(0)
    x = (torch.randn(3, 5, 4, 6, dtype=torch.double) * 2 + 1).contiguous(memory_format=layout)
    mean, var = ops._batch_stats(x)
    var_ref, mean_ref = torch.var_mean(x, dim=(0, 2, 3), correction=1)
    torch.testing.assert_close(mean, mean_ref)
    torch.testing.assert_close(var, var_ref)
    assert [t.shape for t in ops._batch_stats(x.to("meta"))] == [torch.Size([5])] * 2

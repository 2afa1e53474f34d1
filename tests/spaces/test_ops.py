from __future__ import annotations

import pytest
import torch

from egsbench.tasks.spaces import PRIMITIVES, make_op
from egsbench.tasks.spaces.ops import FactorizedReduce


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

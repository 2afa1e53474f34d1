"""Sparse methods keep SGD momentum and weight decay of ops that did not run in a step, as the originals did.

The originals ran on PyTorch < 2.0, whose ``zero_grad`` zeroed gradients instead of setting them to
``None``; an op that ran once thus kept being decayed and carried by momentum in later steps.
"""

from __future__ import annotations

import pytest
import torch

from egsbench.methods.egs import EGS, EGSConfig
from egsbench.methods.gdas import GDAS, GDASConfig
from egsbench.methods.random_search import RandomSearch, RandomSearchConfig
from egsbench.testing import batch, tiny_context


@pytest.mark.parametrize(
    "method_cls, config, space",
    [
        (EGS, EGSConfig(M=2, lam=1.0), "dag"),
        (GDAS, GDASConfig(), "darts"),
        (RandomSearch, RandomSearchConfig(), "darts"),
    ],
)
def test_ops_that_did_not_run_keep_momentum_and_weight_decay(method_cls, config, space):
    torch.manual_seed(0)
    method = method_cls(config)
    ctx = tiny_context(space)
    method.setup(ctx)
    method.start_epoch(0)
    method.step(batch(0), batch(1))
    params = list(ctx.model.parameters())
    carried = [p for p in params if "momentum_buffer" in method.w_optimizer.state.get(p, {})]
    before = [p.detach().clone() for p in carried]
    method.step(batch(2), batch(3))
    idle = [i for i, p in enumerate(carried) if p.grad is None or not p.grad.any()]
    assert idle, "the case needs an op that ran in the first step and not in the second"
    for i in idle:
        assert carried[i].grad is not None, "the gradient of an op that ran once is zeroed, not set to None"
        assert not torch.equal(before[i], carried[i].detach()), "an op that did not run lost momentum/weight decay"

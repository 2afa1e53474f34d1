"""The recipe pieces tasks share (``egsbench.tasks.training``) and the fixtures ``egsbench.testing`` exports."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import egsbench.testing
from egsbench.tasks import lm
from egsbench.tasks.training import AveragedSGD, auxiliary_loss, forward_logits, inner_optimizer


class _TwoHeads(nn.Module):
    """Fixed logits and auxiliary logits (or none), whatever the input; ``weights`` selects the supernet call."""

    def __init__(self, aux: bool):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]))  # (B=2, classes=3)
        self.aux = nn.Parameter(torch.tensor([[0.0, 3.0, 0.0], [1.0, 0.0, 0.0]])) if aux else None
        self.calls: list[str] = []

    def forward(self, x, weights=None):
        self.calls.append("supernet" if weights is not None else "network")
        return self.logits, self.aux


@pytest.mark.parametrize("aux", [True, False], ids=["auxiliary-head", "no-head"])
def test_auxiliary_loss_adds_the_weighted_head_loss_and_reports_accuracy(aux):
    model, y = _TwoHeads(aux), torch.tensor([0, 2])
    out = auxiliary_loss(model, (torch.zeros(2, 1), y), F.cross_entropy, 0.4)
    expected = F.cross_entropy(model.logits, y) + (0.4 * F.cross_entropy(model.aux, y) if aux else 0.0)
    assert torch.equal(out.loss, expected)  # the same operations in the same order: bit-identical
    assert out.metrics == {"accuracy": 50.0}  # row 0 right (class 0), row 1 wrong (predicts 1, label 2)


def test_forward_logits_drops_the_auxiliary_output_and_passes_weights_to_a_supernet():
    model = _TwoHeads(aux=True)
    assert forward_logits(model, torch.zeros(2, 1)) is model.logits
    assert forward_logits(model, torch.zeros(2, 1), {"normal": torch.ones(1)}) is model.logits
    assert model.calls == ["network", "supernet"]
    plain = nn.Linear(1, 3)
    assert torch.equal(forward_logits(plain, torch.ones(2, 1)), plain(torch.ones(2, 1)))  # a bare tensor as is


def test_inner_optimizer_unwraps_accelerates_wrapper():
    opt = AveragedSGD(nn.Linear(1, 1).parameters(), lr=0.1)

    class Wrapped:  # accelerate's AcceleratedOptimizer keeps the optimiser in ``.optimizer``
        optimizer = opt

    assert inner_optimizer(Wrapped()) is opt and inner_optimizer(opt) is opt


def test_fixture_writers_are_exported_and_old_lm_imports_still_resolve(tmp_path):
    for name in ("voc_palette", "write_image_folder", "write_lm_files", "write_voc_fixture"):
        assert name in egsbench.testing.__all__ and callable(getattr(egsbench.testing, name))
    assert lm.write_lm_files is egsbench.testing.write_lm_files  # tests/harness and tests/reliability import it
    folder = egsbench.testing.write_lm_files(tmp_path / "ptb", "ptb.{split}.txt", lines=8)
    assert sorted(p.name for p in folder.iterdir()) == ["ptb.test.txt", "ptb.train.txt", "ptb.valid.txt"]
    with pytest.raises(AttributeError, match="no attribute 'write_nothing'"):
        lm.write_nothing  # noqa: B018

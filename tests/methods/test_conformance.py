"""Every registered method passes the same checks (``egsbench.testing``): a new method is tested for free."""

from __future__ import annotations

import pytest

from egsbench.methods import METHODS
from egsbench.methods.darts import DARTS
from egsbench.testing import METHOD_CHECKS, check_method
from egsbench.testing.methods import check_declares_config_and_space, check_gradients_reach_alpha, recurrent_counterpart

# Configs a method needs in the recurrent space (a fixed genotype must be a recurrent cell).
RECURRENT_CONFIGS = {"fixed": {"genotype": "darts_v2_rnn"}}


@pytest.mark.parametrize("check", METHOD_CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
@pytest.mark.parametrize("name", METHODS.names())
def test_method_conformance(name, check):
    check(METHODS.get(name))


@pytest.mark.parametrize("check", METHOD_CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
@pytest.mark.parametrize("name", METHODS.names())
def test_method_conformance_in_the_recurrent_space(name, check):
    """The same checks on the DARTS recurrent cell: ``darts`` methods in ``darts_rnn``, ``dag`` ones in ``dag_rnn``."""
    cls = METHODS.get(name)
    config = cls.config_class(**RECURRENT_CONFIGS.get(name, {}))
    check(cls, config, recurrent_counterpart(cls.space))


class _FrozenAlpha(DARTS):
    """DARTS whose architecture optimiser never steps: alpha gets a gradient but never moves."""

    def step(self, train_batch, val_batch):
        self.a_optimizer.step = lambda *args, **kwargs: None
        return super().step(train_batch, val_batch)


class _NoSpace(DARTS):
    space = "nas-bench-201"


def test_checks_catch_a_method_whose_alpha_never_moves():
    with pytest.raises(AssertionError, match="alpha"):
        check_gradients_reach_alpha(_FrozenAlpha)


def test_checks_catch_an_unregistered_space():
    with pytest.raises(AssertionError, match="nas-bench-201"):
        check_declares_config_and_space(_NoSpace)
    with pytest.raises(AssertionError, match="nas-bench-201"):
        check_method(_NoSpace)

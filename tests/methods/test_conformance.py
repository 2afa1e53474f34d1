"""Every registered method passes the same checks: a new method is tested for free."""

from __future__ import annotations

import pytest

from egsbench.methods import METHODS
from egsbench.testing import METHOD_CHECKS as CHECKS


def test_every_method_declares_config_and_space():
    for name in METHODS.names():
        cls = METHODS.get(name)
        assert hasattr(cls, "config_class") and getattr(cls, "space", None) in ("darts", "dag"), name


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
@pytest.mark.parametrize("name", METHODS.names())
def test_method_conformance(name, check):
    check(METHODS.get(name))

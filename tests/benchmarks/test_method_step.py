"""One full ``method.step`` (every forward, backward and update) per method, ratio to DARTS first order."""

from __future__ import annotations

import pytest

from egsbench.benchmark.bench_methods import BASELINE, VARIANTS, make_step

ORDER = (BASELINE, *(name for name in VARIANTS if name != BASELINE))  # the baseline first


@pytest.mark.parametrize("variant", ORDER)
def test_method_step(timed, bench_sizes, variant):
    median = timed(make_step(variant, **bench_sizes), group="method-step", name=variant, baseline=BASELINE)
    assert median is None or median > 0

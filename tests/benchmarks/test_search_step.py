"""One search step (forward + backward of the DARTS CNN supernet, ``dag`` space) per edge weighting:
dense softmax (DARTS: every op runs) against EGS codes at M = 1 and M = 7 (only sampled ops run)."""

from __future__ import annotations

import pytest

from egsbench.benchmark.bench_search_step import BASELINE, make_variants

VARIANTS = (BASELINE, "egs_m1", "egs_m7", "egs_m1_lam1")  # the baseline first: the others' ratios need it


@pytest.mark.parametrize("variant", VARIANTS)
def test_search_step(timed, bench_sizes, variant):
    run = make_variants(**bench_sizes)[variant]
    median = timed(run, group="search-step", name=variant, baseline=BASELINE, label="dense")
    assert median is None or median > 0

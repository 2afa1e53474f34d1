"""This project's DARTS-space supernet beside xautodl's (``NASNetworkDARTS``, ``NASNetworkGDAS``), forward + backward.

Skipped unless the optional ``xautodl`` package is installed (``pip install --no-deps xautodl``). The
cells count must be a multiple of 3 (xautodl's N = cells / 3); ``EGSBENCH_BENCH_SIZE`` layers that are
not are rounded up. The interleaved script, with the issue's ratios and targets, is
``python -m egsbench.benchmark.bench_peer``.
"""

from __future__ import annotations

import pytest

from egsbench.benchmark.bench_peer import BASELINE, make_variants, peer_available

pytestmark = pytest.mark.skipif(not peer_available(), reason="xautodl is not installed (pip install --no-deps xautodl)")

VARIANTS = (
    BASELINE,
    "xautodl_darts",
    "ours_gdas",
    "xautodl_gdas",
    "egs_m1",
    "egs_m7",
    "ours_darts_nchw",
    "xautodl_darts_cl",
)  # the baseline first


@pytest.mark.parametrize("variant", VARIANTS)
def test_peer_step(timed, bench_sizes, variant):
    layers = -(-bench_sizes["layers"] // 3) * 3
    variants, _ = make_variants(bench_sizes["channels"], layers, bench_sizes["batch"])
    median = timed(variants[variant], group="peer", name=variant, baseline=BASELINE)
    assert median is None or median > 0

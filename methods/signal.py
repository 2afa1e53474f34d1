"""The search signal: how far a search moved its architecture distribution, and whether that moved its cells.

A search whose alphas stay near their initial values derives what the initial noise dictates: a cell drawn
at random. :func:`search_signal` measures this per run (the record's ``search.signal``) from the method's
*learned* per-edge op distribution (``learned_probabilities``: EGS's ``h``, not ``p``) at the start and the
end of the search; methods that learn none get no signal. A run counts as having searched when its entropy
fell by at least ``MOVED_FRAC`` of ``log K`` (:func:`moved`); the tables flag groups whose runs did not.

The fields and how to read them: docs/records.md#searchsignal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from ..tasks.spaces import Genotype

__all__ = [
    "MOVED_FRAC",
    "derived_pairs",
    "edge_rows",
    "learned_distribution",
    "mean_entropy",
    "mean_margin",
    "moved",
    "search_signal",
]

MOVED_FRAC = 0.02  # an entropy drop under 2 % of log K is "did not move"


def learned_distribution(method: Any) -> dict[str, torch.Tensor] | None:
    """The method's learned ``{cell type: (E, K)}`` op distribution, detached on the CPU; None if it learns none."""
    get = getattr(method, "learned_probabilities", None) or method.probabilities
    probs = get()
    if probs is None:
        return None
    return {t: p.detach().double().cpu() for t, p in probs.items()}


def edge_rows(probabilities: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    """Every edge's op distribution as the rows of one ``(edges, K)`` float64 tensor, rows normalised."""
    rows = [torch.as_tensor(p).reshape(-1, torch.as_tensor(p).shape[-1]).double() for p in probabilities.values()]
    rows = [r for r in rows if r.numel()]
    if not rows:
        return None
    p = torch.cat(rows)
    return p / p.sum(-1, keepdim=True).clamp_min(1e-30)


def mean_entropy(probabilities: Mapping[str, torch.Tensor]) -> float | None:
    """Mean over edges of the op distribution's entropy (nats): ``log K`` when uniform, 0 when one-hot."""
    p = edge_rows(probabilities)
    if p is None:
        return None
    return float(-(p * p.clamp_min(1e-30).log()).sum(-1).mean())


def mean_margin(probabilities: Mapping[str, torch.Tensor]) -> float | None:
    """Mean over edges of (most probable op's probability - the second's): 0 when uniform, 1 when one-hot."""
    p = edge_rows(probabilities)
    if p is None or p.shape[-1] < 2:
        return None
    top = p.topk(2, dim=-1).values
    return float((top[:, 0] - top[:, 1]).mean())


def derived_pairs(genotype: Genotype) -> set[tuple[str, int, int, str]]:
    """The genotype's (cell type, input, node, op) choices."""
    return {(t, src, dst, op) for t, cell in genotype.cells.items() for src, dst, op in cell.edges}


def search_signal(
    initial: Mapping[str, torch.Tensor],
    final: Mapping[str, torch.Tensor],
    derived: Genotype | None = None,
    initial_derived: Genotype | None = None,
) -> dict[str, float | None]:
    """The record's ``search.signal`` from the learned distribution at the start and end of a search.

    ``derived`` is the run's genotype and ``initial_derived`` what the method's rule gives for
    ``initial``; ``derived_changed`` is null unless both are given.
    """
    k = next(iter(final.values())).shape[-1]
    log_k = math.log(k)
    start, end = mean_entropy(initial), mean_entropy(final)
    changed = None
    if derived is not None and initial_derived is not None:
        now, before = derived_pairs(derived), derived_pairs(initial_derived)
        changed = len(now - before) / len(now) if now else None
    return {
        "ops": k,
        "entropy_start": start,
        "entropy_end": end,
        "entropy_start_frac": start / log_k,
        "entropy_end_frac": end / log_k,
        "entropy_drop_frac": (start - end) / log_k,
        "margin_start": mean_margin(initial),
        "margin_end": mean_margin(final),
        "derived_changed": changed,
    }


def moved(signal: Mapping[str, Any] | None, threshold: float = MOVED_FRAC) -> bool | None:
    """Whether a run's distribution moved measurably (entropy drop >= ``threshold`` of log K); None without one."""
    if not signal or signal.get("entropy_drop_frac") is None:
        return None
    return signal["entropy_drop_frac"] >= threshold

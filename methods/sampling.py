"""Gumbel sampling helpers shared by the stochastic methods (SNAS, GDAS, EGS)."""

from __future__ import annotations

import torch

__all__ = ["gumbel_like", "straight_through"]


def gumbel_like(x: torch.Tensor, generator: torch.Generator | None = None, samples: int | None = None) -> torch.Tensor:
    """Standard Gumbel noise ``-log(-log U)`` of ``x``'s shape (with a leading ``samples`` axis if given).

    ``U`` is drawn from the open interval (0, 1) so the noise is always finite.
    """
    shape = x.shape if samples is None else (samples, *x.shape)
    u = torch.rand(shape, generator=generator, dtype=x.dtype, device=x.device if generator is None else "cpu")
    tiny = torch.finfo(x.dtype).tiny
    u = u.clamp(tiny, 1.0 - torch.finfo(x.dtype).eps)
    return (-torch.log(-torch.log(u))).to(x.device)


def straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """``hard`` in the forward pass, the gradient of ``soft`` in the backward pass.

    Written as ``hard + (soft - soft.detach())`` so the forward value is exactly ``hard``
    (``hard - soft.detach() + soft`` can be off by one ulp).
    """
    return hard + (soft - soft.detach())

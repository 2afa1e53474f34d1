"""DAG cells: the search cell (every edge mixes all ops) and the final cell (a genotype).

The search cell executes sparsely: an edge computes only the ops whose weight is non-zero, and the zero op
never, so sampled weightings (GDAS, EGS, random search) pay only for what they sample; an op that did not run
gets no gradient. Search-time drop path (``drop_path_prob``, off by default) is for methods that use it
(SNAS).

Deviations from the paper and the original code: docs/fidelity/spaces.md
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ...core.genotype import CellGenotype
from .ops import FactorizedReduce, Identity, PoolBN, ReLUConvBN, _layout, make_op, takes_shortcuts
from .space import SearchSpace

__all__ = [
    "Cell",
    "MixedEdge",
    "ScheduledDropPath",
    "SearchCell",
    "SharedInput",
    "active_ops",
    "drop_path",
    "entries",
    "sum_into_nodes",
]


def active_ops(weights: torch.Tensor, zero_index: int | None) -> list[list[int]]:
    """Indices of the non-zero, non-zero-op entries of each row of ``weights`` ``(E, K)``.

    One host transfer per cell type and forward pass, shared by all cells of that type.
    """
    mask = weights.detach() != 0
    if zero_index is not None:
        mask[:, zero_index] = False
    return [row.nonzero().flatten().tolist() for row in mask.cpu()]


def _preprocess(c_pp: int, c_p: int, c: int, reduction_prev: bool, affine: bool) -> tuple[nn.Module, nn.Module]:
    # After a reduction cell s0 is twice the resolution of s1, so it is factorized down.
    pre0 = FactorizedReduce(c_pp, c, affine) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0, affine)
    return pre0, ReLUConvBN(c_p, c, 1, 1, 0, affine)


class SharedInput:
    """One node's state ``x`` and what the ops of the edges leaving it compute once from it, in one forward.

    The edges that leave a node see the same input, so ``relu(x)`` (the convolutions' leading ReLU) and the
    output of a pool followed by a parameter-free BN are the same on all of them: they are computed for the
    first op that needs them and reused by the others (:meth:`relu`, :meth:`memo`). Reuse gives the same
    values; the gradient is summed before the shared op's backward instead of after it (exact up to the
    order of float additions).
    """

    __slots__ = ("_relu", "memo", "x")

    def __init__(self, x: torch.Tensor):
        self.x = x  # (B, C, H, W)
        self._relu: torch.Tensor | None = None
        self.memo: dict = {}

    def relu(self) -> torch.Tensor:
        if self._relu is None:
            self._relu = torch.relu(self.x)
        return self._relu


class MixedEdge(nn.Module):
    """All candidate ops of one edge; adds ``w_k * op_k(x)`` over the active ``k`` only.

    The ops that begin with a plain ReLU of the edge's input (the four convolutions; ``FactorizedReduce``)
    take ``relu(x)`` from :class:`SharedInput`, and a pool with its BN (``ops.PoolBN``) its shared output,
    so the edges leaving one node compute each of them once, in the forward, the backward and the
    activations kept. The values are the original ops'. An op whose ``pre_activation`` was swapped for
    another module (a GELU, say) applies its own.
    """

    def __init__(self, op_names: tuple[str, ...], channels: int, stride: int, make: Callable[..., nn.Module] = make_op):
        super().__init__()
        # make(name, channels, stride, affine): the space's op factory (NAS-Bench-201's ops: nb201.make_nb201_op)
        self.ops = nn.ModuleList(make(name, channels, stride, affine=False) for name in op_names)

    def forward(
        self,
        x: torch.Tensor | SharedInput,
        weights: torch.Tensor,
        active: list[int],
        drop_prob: float = 0.0,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """``out + sum_k weights[k] * op_k(x)`` over ``active`` (``None`` when both are empty).

        ``out``, a node's running sum, is added to in place (one pass per op, no new tensor); pass a
        :class:`SharedInput` to share work with the other edges leaving the same node.
        """
        for k, y, _ in self.outputs(x, active, drop_prob):
            out = _accumulate(out, weights[k], y)
        return out

    def outputs(self, x: torch.Tensor | SharedInput, active: list[int], drop_prob: float = 0.0, scales=None):
        """``(k, y, scaled)`` for each ``k`` in ``active``, in order (drop path applied): ``y = op_k(x)``, or,
        where ``scales`` (a sequence of 0-dim tensors indexed by ``k``) is given and the op can fold it into its
        closing BN (``ops.scaled_bn``), ``scales[k] * op_k(x)`` with ``scaled`` true."""
        src = x if isinstance(x, SharedInput) else SharedInput(x)
        for k in active:
            op = self.ops[k]
            scaled = False
            if type(getattr(op, "pre_activation", None)) is nn.ReLU:
                scaled = scales is not None and getattr(op, "takes_scale", False)
                y = op.after_activation(src.relu(), scales[k]) if scaled else op.after_activation(src.relu())
            elif isinstance(op, PoolBN):
                y = op.shared_forward(src)
            else:
                y = op(src.x)
            if drop_prob > 0.0 and not isinstance(op, Identity):
                y = drop_path(y, drop_prob)  # one mask per sample and op (SNAS search-time drop path)
            yield k, y, scaled


def _accumulate(out: torch.Tensor | None, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``out + w * y``: in place into ``out`` (a sum this module made; autograd saves ``w`` and ``y``, never
    ``out``) where :func:`~.ops.takes_shortcuts`; out of place for the first term, where the dtypes differ
    (autocast) and on other devices."""
    if out is None:
        return w * y
    if out.dtype != y.dtype or not takes_shortcuts(out):
        return out + w * y
    return out.addcmul_(w, y)


def sum_into_nodes(edges, states: list, nodes: list[int], weights, active, drop_prob: float, zeros) -> list:
    """Append every intermediate node to ``states``: the sum of its incoming edges' outputs, in edge order.

    ``edges[e]`` is the :class:`MixedEdge` of the space's ``e``-th edge (destination-major); ``zeros()`` makes a
    node whose incoming edges all ran nothing. Each node's edges share a :class:`SharedInput` of it and add
    into one running sum (:func:`weighted_sum` on the devices of ``ops.SHORTCUT_DEVICES``). Shared by the
    DARTS-space and the NAS-Bench-201 search cells.
    """
    inputs = [SharedInput(s) for s in states]
    e = 0
    fused = takes_shortcuts(weights) and not torch.compiler.is_compiling()
    # each active op's weight as a 0-dim tensor, for the ops that can take it as a BN weight
    scales = entries(weights, active) if fused else [None] * len(active)
    for dst in nodes:
        index, ys, scaled = [], [], []
        for src in range(dst):
            for k, y, s in edges[e].outputs(inputs[src], active[e], drop_prob, scales[e]):
                index.append((e, k))
                ys.append(y)
                scaled.append(s)
            e += 1
        if not ys:
            states.append(zeros())
        else:  # one autograd node per node where the shortcuts run, else autograd's graph of the same sums
            states.append((weighted_sum if fused else sum_terms)(weights, index, ys, scaled))
        inputs.append(SharedInput(states[-1]))
    return states


def entries(weights: torch.Tensor, active: list[list[int]]) -> list[dict[int, torch.Tensor]]:
    """``weights[e, k]`` ``(E, K)`` as 0-dim tensors, ``{k: weights[e, k]}`` per edge ``e`` for ``k`` in
    ``active[e]``: one autograd node (:class:`_Entries`), whose backward writes the gradients that came back
    into one ``(E, K)`` tensor. ``unbind`` (one view per entry) had its backward make a zero tensor for each of
    the ``E * K`` entries the step did not use: in a GDAS step (DARTS space, batch 32) 104 of 112 per cell,
    620 per step."""
    index = [(e, k) for e, ks in enumerate(active) for k in ks]
    if not index:
        return [{} for _ in active]
    values = iter(_Entries.apply(weights, index))
    return [{k: next(values) for k in ks} for ks in active]


class _Entries(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weights: torch.Tensor, index: list[tuple[int, int]]):
        ctx.index, ctx.shape = index, weights.shape
        ctx.set_materialize_grads(False)  # unused entries: None, no zero tensors
        rows, cols = zip(*index, strict=True)
        return tuple(weights[list(rows), list(cols)].unbind())

    @staticmethod
    def backward(ctx, *grads):
        used = [(ek, g) for ek, g in zip(ctx.index, grads, strict=True) if g is not None]
        if not used:
            return None, None
        return _scatter([ek for ek, _ in used], torch.stack([g for _, g in used]), ctx.shape), None


def _scatter(index: list[tuple[int, int]], values: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """A zero ``shape`` ``(E, K)`` tensor with ``values[i]`` added at ``index[i]``: an ``(E, K)`` weight gradient
    from per-entry ones, in one ``index_put`` (differentiable again)."""
    rows, cols = (torch.tensor(c, device=values.device) for c in zip(*index, strict=True))
    return values.new_zeros(shape).index_put((rows, cols), values, accumulate=True)


def weighted_sum(
    weights: torch.Tensor, index: list[tuple[int, int]], ys: list[torch.Tensor], scaled: list[bool] | None = None
) -> torch.Tensor:
    """``sum_i weights[index[i]] * ys[i]`` (``weights`` ``(E, K)``, each ``ys[i]`` ``(B, C, H, W)``), where a term
    whose ``scaled[i]`` is true already holds its weight (``MixedEdge.outputs``) and is added as it is: a
    multiply (or a copy), then fused multiply-adds in place, in order (as :func:`_accumulate` adds); where the
    dtypes agree, one autograd node (:class:`_WeightedSum`) whose backward reads each unscaled term once for its
    weight's gradient."""
    scaled = scaled or [False] * len(ys)
    if any(y.dtype != weights.dtype for y in ys):  # autocast: autograd's own graph
        return sum_terms(weights, index, ys, scaled)
    return _WeightedSum.apply(weights, index, scaled, *ys)


def sum_terms(weights: torch.Tensor, index: list[tuple[int, int]], ys: list[torch.Tensor], scaled: list[bool]):
    """:func:`weighted_sum` as autograd's own graph: each term through :func:`_accumulate`, a scaled one out of
    place (autocast's dtypes; ``bench_engine`` times the engine with it)."""
    out = None
    for (e, k), y, s in zip(index, ys, scaled, strict=True):
        if s:
            out = y if out is None else out + y
        else:
            out = _accumulate(out, weights[e, k], y)
    return out


class _WeightedSum(torch.autograd.Function):
    """One node's weighted sum as one autograd node.

    Autograd's own graph of ``w * y`` and ``addcmul_`` costs, per term: a select of ``w`` from its row and of
    the row from ``weights`` (each a zero tensor and a copy in the backward), ``y * 1`` (``addcmul``'s
    ``value``), ``grad * that`` and its sum for ``w``'s gradient, and ``grad * w`` for ``y``'s. Here: a dot
    product of ``grad`` and ``y`` (a read of both, no temporary) and ``grad * w``; the weights' gradient is one
    ``(E, K)`` tensor. The same values; the weight gradient summed in another order. Differentiable again.
    """

    @staticmethod
    def forward(ctx, weights: torch.Tensor, index: list[tuple[int, int]], scaled: list[bool], *ys: torch.Tensor):
        ctx.index, ctx.scaled, ctx.layout = index, scaled, _layout(ys[0])
        ctx.save_for_backward(weights, *(y for y, s in zip(ys, scaled, strict=True) if not s))  # unscaled terms
        terms = list(zip(index, scaled, ys, strict=True))
        if not scaled[0]:
            out, rest = ys[0] * weights[index[0]], terms[1:]
        elif len(ys) == 1:
            return ys[0].clone()  # (the output may not be an input)
        else:  # a scaled first term needs no pass of its own: the sum starts as it plus the second term
            (e, k), s, y = terms[1]
            out, rest = (ys[0] + y if s else torch.addcmul(ys[0], weights[e, k], y)), terms[2:]
        for (e, k), s, y in rest:
            if s:
                out.add_(y)
            else:
                out.addcmul_(weights[e, k], y)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        weights, *ys = ctx.saved_tensors  # the unscaled terms
        unscaled = [ek for ek, s in zip(ctx.index, ctx.scaled, strict=True) if not s]
        grad = _dense_in(grad, ctx.layout)  # the terms' backward kernels get a dense gradient (see below)
        grad_w = None
        if ctx.needs_input_grad[0] and ys:
            flat = _flat(grad)
            dots = torch.stack([torch.dot(flat, _flat(_dense_in(y, ctx.layout))) for y in ys])
            grad_w = _scatter(unscaled, dots, weights.shape)
        needs = ctx.needs_input_grad[3:]
        grad_ys = [
            None if not need else grad if s else grad * weights[e, k]
            for (e, k), s, need in zip(ctx.index, ctx.scaled, needs, strict=True)
        ]
        return grad_w, None, None, *grad_ys


def _dense_in(t: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
    """``t`` dense in ``layout`` (a copy only where it is not). A node's gradient is a channel slice of its cell's
    concatenated output gradient: strided, and in the layout of whatever produced that (the global pool's backward
    writes the last cell's contiguous). Passed on as it is, a scaled term's BN backward (``ops.scaled_bn``), which
    takes it unmultiplied, ran 13x as long on the channels-last CPU kernel (5.2 ms against 0.39 ms at 32x16x32x32),
    and a contiguous gradient of a channels-last input 5x; the copy costs one pass per node."""
    return t if t.is_contiguous(memory_format=layout) else t.contiguous(memory_format=layout)


def _flat(t: torch.Tensor) -> torch.Tensor:
    """A dense tensor's elements as a 1-D view, in memory order."""
    return t.reshape(-1) if t.is_contiguous() else t.permute(0, 2, 3, 1).reshape(-1)


class SearchCell(nn.Module):
    """A search cell of ``space``: output = concat of all intermediate nodes, ``n_nodes * C`` channels."""

    def __init__(self, space: SearchSpace, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.space = space
        self.reduction = reduction
        self.preprocess0, self.preprocess1 = _preprocess(c_pp, c_p, c, reduction_prev, affine=False)
        self.edges = nn.ModuleList(
            MixedEdge(space.ops, c, stride=2 if reduction and src < space.n_inputs else 1) for src, _ in space.edges
        )

    def forward(
        self,
        s0: torch.Tensor | SharedInput,
        s1: torch.Tensor | SharedInput,
        weights: torch.Tensor,
        active: list[list[int]],
        drop_prob: float = 0.0,
    ) -> torch.Tensor:
        """``drop_prob`` > 0 drops each executed non-identity op output per sample (callers pass 0 in eval).

        An input passed as a :class:`SharedInput` shares its preprocessing ReLU with the other cell that reads it
        (every cell output feeds two cells; the stem's output three preprocessings)."""
        states = [_preprocessed(self.preprocess0, s0), _preprocessed(self.preprocess1, s1)]  # each (B, C, H, W)
        stride = 2 if self.reduction else 1
        # A node whose every edge was zero is zeros of the cell's output size.
        zeros = lambda: torch.zeros_like(states[0][:, :, ::stride, ::stride])
        sum_into_nodes(self.edges, states, self.space.intermediate_nodes, weights, active, drop_prob, zeros)
        return torch.cat(states[self.space.n_inputs :], dim=1)  # (B, n_nodes * C, H/stride, W/stride)


def _preprocessed(pre: nn.Module, s: torch.Tensor | SharedInput) -> torch.Tensor:
    if not isinstance(s, SharedInput):
        return pre(s)
    if type(getattr(pre, "pre_activation", None)) is nn.ReLU:
        return pre.after_activation(s.relu())
    return pre(s.x)


def drop_path(x: torch.Tensor, drop_prob: float | torch.Tensor) -> torch.Tensor:
    """Zero whole samples with probability ``drop_prob`` and rescale the rest (out-of-place).

    A 0-dim tensor ``drop_prob`` (a compiled network's, see :class:`ScheduledDropPath`) takes a path with no
    branch on its value, so ``torch.compile`` traces it once for every probability (at 0 the mask is all ones).
    """
    if isinstance(drop_prob, torch.Tensor):
        keep = 1.0 - drop_prob.to(x.dtype)
        mask = torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) < keep
        return x / keep * mask
    if drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x / keep * mask


class ScheduledDropPath:
    """Mixin for final networks: ``drop_path_prob``, the training loop's per-epoch drop-path probability.

    Eager networks read it as a float. :meth:`use_tensor_drop_path` (called before ``torch.compile``) adds a
    0-dim buffer that the setter updates in place and the cells receive instead: a compiled graph then reads
    the new probability every epoch instead of guarding on a float and recompiling. Eager numerics are
    untouched (the float path draws its masks with ``bernoulli_`` as before).
    """

    @property
    def drop_path_prob(self) -> float:
        return getattr(self, "_drop_prob", 0.0)

    @drop_path_prob.setter
    def drop_path_prob(self, value: float) -> None:
        object.__setattr__(self, "_drop_prob", float(value))
        tensor = getattr(self, "_drop_tensor", None)
        if tensor is not None:
            tensor.fill_(float(value))

    def use_tensor_drop_path(self) -> None:
        if getattr(self, "_drop_tensor", None) is None:
            self.register_buffer("_drop_tensor", torch.tensor(self.drop_path_prob), persistent=False)

    def drop_path_arg(self) -> float | torch.Tensor:
        """What the cells get: the buffer once :meth:`use_tensor_drop_path` ran, else the float."""
        tensor = getattr(self, "_drop_tensor", None)
        return self.drop_path_prob if tensor is None else tensor


class Cell(nn.Module):
    """A final-network cell built from one cell genotype (any in-degree, several ops per edge).

    ``drop_path(y, drop_prob)`` (class attribute) drops each non-identity op output while training; a
    subclass may swap in another implementation of the same thing.
    """

    drop_path = staticmethod(drop_path)

    def __init__(
        self, genotype: CellGenotype, n_inputs: int, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool
    ):
        super().__init__()
        if n_inputs != 2:
            raise ValueError(f"CNN cells take exactly 2 inputs, got n_inputs={n_inputs}")
        self.reduction = reduction
        self.preprocess0, self.preprocess1 = _preprocess(c_pp, c_p, c, reduction_prev, affine=True)
        self.links = [(src, dst) for src, dst, _ in genotype.edges]
        self.ops = nn.ModuleList(
            make_op(op, c, 2 if reduction and src < n_inputs else 1, affine=True) for src, _, op in genotype.edges
        )
        self.nodes = sorted({dst for _, dst in self.links})
        self.concat = list(genotype.concat)
        self.multiplier = len(self.concat)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states = {0: self.preprocess0(s0), 1: self.preprocess1(s1)}
        for dst in self.nodes:
            node = None
            for (src, d), op in zip(self.links, self.ops, strict=True):
                if d != dst:
                    continue
                y = op(states[src])
                if self.training and not isinstance(op, Identity):
                    y = self.drop_path(y, drop_prob)
                node = y if node is None else node + y
            states[dst] = node
        return torch.cat([states[n] for n in self.concat], dim=1)  # (B, len(concat) * C, H', W')

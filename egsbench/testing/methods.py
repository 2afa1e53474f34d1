"""Checks every search method must pass, whatever it is. The project's tests run them over
``METHODS``; a plug-in package runs ``check_method(MyMethod)`` from its own tests.

A method class provides ``config_class`` and ``space`` (the name of the space its genotypes
belong to: ``darts`` for two-inputs-per-node cells, ``dag`` for any in-degree).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from ..methods import SearchConfig, SearchContext, SearchMethod
from ..tasks.base import TrainConfig
from ..tasks.spaces import (
    SPACES,
    Genotype,
    LossOutput,
    NB201SearchNetwork,
    RNNModel,
    SearchNetwork,
    SearchRNNCell,
    SearchSpace,
)

CHANNELS, LAYERS, SIZE, BATCH = 4, 3, 16, 4
VOCAB, HIDDEN, SEQ = 12, 6, 5  # the tiny language model of recurrent spaces


@contextmanager
def op_calls(net: torch.nn.Module) -> Iterator[Counter]:
    """Count, while open, how often each op of a CNN supernet ran: ``Counter({(cell, edge, op): calls})``.

    Counted on each op's leaf layers (the most calls of any of them): a search edge may run an op's
    layers after its shared activation, past the op's own ``forward``. Filled when the block exits.

    Examples:
        >>> net = SearchNetwork(SPACES.get("darts"), 4, 10, 3)
        >>> w = {t: torch.zeros(14, 8) for t in ("normal", "reduce")}
        >>> w["normal"][0, 3] = 1.0  # skip_connect on edge 0 of the normal cell
        >>> with op_calls(net) as calls:
        ...     _ = net(torch.zeros(2, 3, 8, 8), w)
        >>> dict(calls)
        {(0, 0, 3): 1}
    """
    per_leaf, hooks = Counter(), []
    for name, module in net.named_modules():
        parts = name.split(".")  # cells.{i}.edges.{e}.ops.{k}[.<layer>]
        if len(parts) >= 6 and parts[2] == "edges" and parts[4] == "ops" and not any(True for _ in module.children()):
            hooks.append(module.register_forward_hook(lambda *_, n=name: per_leaf.update([n])))
    calls: Counter = Counter()
    try:
        yield calls
    finally:
        for h in hooks:
            h.remove()
        for leaf, n in per_leaf.items():
            parts = leaf.split(".")
            key = (int(parts[1]), int(parts[3]), int(parts[5]))
            calls[key] = max(calls[key], n)


def autograd_nodes(t: torch.Tensor) -> set[str]:
    """The type names of every node in ``t``'s autograd graph (``_WeightedSumBackward``, ``AddmmBackward0``, ...).

    Examples:
        >>> x = torch.ones(2, requires_grad=True)
        >>> sorted(autograd_nodes((2 * x).sum()))
        ['AccumulateGrad', 'MulBackward0', 'SumBackward0']
    """
    seen, todo, names = set(), [t.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        todo += [n for n, _ in node.next_functions]
    return names


@contextmanager
def aten_calls() -> Iterator[Counter]:
    """Count the aten ops run inside the block by name (``max_pool2d_with_indices``, ``addcmul_``, ...).

    Examples:
        >>> with aten_calls() as calls:
        ...     _ = torch.relu(torch.ones(2))
        >>> calls["relu"]
        1
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    calls: Counter = Counter()

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            calls[func.overloadpacket.__name__] += 1
            return func(*args, **(kwargs or {}))

    with Count():
        yield calls


def is_recurrent(space) -> bool:
    """Whether ``space`` (a name or a space) is a recurrent-cell space (cell type ``recurrent``)."""
    space = SPACES.get(space) if isinstance(space, str) else space
    return tuple(space.cell_types) == ("recurrent",)


def recurrent_counterpart(space: str) -> str:
    """The recurrent space of a method's CNN space: ``darts`` -> ``darts_rnn``, ``dag`` -> ``dag_rnn``."""
    return space if is_recurrent(space) else f"{space}_rnn"


def fake_train_candidate(genotype: Genotype) -> float:
    """Stand-in for the runner's brief training of a candidate: a deterministic function of the genotype."""
    return float(sum(len(op) * (src + 1) for cell in genotype.cells.values() for src, _, op in cell.edges) % 97)


def tiny_context(
    space: str | SearchSpace = "dag", seed: int = 0, epochs: int = 2, train_candidate=None, **search
) -> SearchContext:
    """A 3-cell C=4 supernet of ``space`` (a registered name, or a :class:`SearchSpace` of one's own) on 16x16
    inputs with a plain cross-entropy loss (for a recurrent space: a 6-unit language model over 12 words; for
    ``nb201``: one cell per stage); ``search`` sets :class:`SearchConfig` fields (e.g. ``lr=0.1``)."""
    torch.manual_seed(seed)
    space = space if isinstance(space, SearchSpace) else SPACES.get(space)
    if is_recurrent(space):
        model = RNNModel(VOCAB, HIDDEN, HIDDEN, SearchRNNCell(space, HIDDEN, HIDDEN, 0.1, 0.1), 0.1, 0.1)

        def loss(m, data, weights):
            x, y = data
            logits = m(x, None, weights)[0].reshape(-1, VOCAB)
            return LossOutput(F.cross_entropy(logits, y.reshape(-1)), {})
    else:
        if tuple(space.cell_types) == ("normal",):  # NAS-Bench-201's supernet: one cell per stage
            model = NB201SearchNetwork(space, CHANNELS, 10, 1, image_size=SIZE)
        else:
            model = SearchNetwork(space, CHANNELS, 10, LAYERS, image_size=SIZE)

        def loss(m, data, weights):
            x, y = data
            logits = m(x, weights)
            accuracy = 100.0 * (logits.argmax(1) == y).float().mean().item()
            return LossOutput(F.cross_entropy(logits, y), {"accuracy": accuracy})

    return SearchContext(
        model=model,
        space=space,
        loss=loss,
        config=SearchConfig(epochs=epochs, **search),
        steps_per_epoch=2,
        seed=seed,
        op_costs=model.op_costs,
        train_candidate=train_candidate,
    )


def batch(seed: int = 0, n: int = BATCH, space=None) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random batch for :func:`tiny_context`'s supernet: images ``(n, 3, 16, 16)`` and labels ``(n,)``;
    for a recurrent ``space``, tokens ``(5, n)`` and their next tokens ``(5, n)``."""
    g = torch.Generator().manual_seed(seed)
    if space is not None and is_recurrent(space):
        tokens = torch.randint(0, VOCAB, (SEQ + 1, n), generator=g)
        return tokens[:-1], tokens[1:]
    return torch.randn(n, 3, SIZE, SIZE, generator=g), torch.randint(0, 10, (n,), generator=g)


def build(method_cls, config=None, seed: int = 0, space: str | SearchSpace | None = None):
    """``method_cls`` set up on a fresh tiny context of ``space`` (default its own), at epoch 0; returns
    ``(method, ctx)``."""
    method = method_cls(config if config is not None else method_cls.config_class())
    ctx = tiny_context(space or method_cls.space, seed, train_candidate=fake_train_candidate)
    method.setup(ctx)
    method.start_epoch(0)
    return method, ctx


def score(weights, batches=None) -> float:
    """A fake search-val score that depends on the weights (and, weakly, on the batch count)."""
    total = sum((w.detach() * torch.arange(w.numel()).view_as(w).sin()).sum() for w in weights.values())
    return float(total) + (0.0 if batches is None else 1e-3 * batches)


def _alphas(method) -> dict[str, torch.Tensor]:
    alphas = getattr(method, "alphas", None)
    return dict(alphas.items()) if alphas is not None else {}


def _snapshot(method, ctx):
    return [p.detach().clone() for p in ctx.model.parameters()], {
        t: a.detach().clone() for t, a in _alphas(method).items()
    }


REQUIRED = ("setup", "step", "probabilities", "derive", "state_dict", "load_state_dict")


def check_declares_config_and_space(method_cls, config=None, space: str | None = None):
    """The class subclasses ``SearchMethod``, overrides its required members, names its config dataclass and the
    registered space its genotypes belong to, and its declared hooks are consistent with its config."""
    assert isinstance(method_cls, type) and issubclass(method_cls, SearchMethod), (
        f"{method_cls!r} must subclass egsbench.methods.SearchMethod (its optional hooks have the runner's defaults)"
    )
    assert any("config_class" in vars(c) for c in method_cls.__mro__), (
        f"{method_cls.__name__} needs a `config_class` dataclass"
    )
    missing = [name for name in REQUIRED if getattr(method_cls, name) is getattr(SearchMethod, name)]
    assert not missing, f"{method_cls.__name__} does not override the required members of SearchMethod: {missing}"
    assert method_cls.space in SPACES.names(), (
        f"{method_cls.__name__}.space is {method_cls.space!r}; expected one of {SPACES.names()}"
    )
    config = config if config is not None else method_cls.config_class()
    assert isinstance(config, method_cls.config_class), f"the config is not a {method_cls.config_class.__name__}"
    fields = {f.name for f in dataclasses.fields(config)}
    for key in (*method_cls.variant_keys, *([method_cls.ablation_key] if method_cls.ablation_key else [])):
        assert key in fields, f"{method_cls.__name__} names {key!r} as a variant or ablation key; its config lacks it"
    recipe = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(method_cls.candidate_recipe(config)) - recipe)
    assert not unknown, f"{method_cls.__name__}.candidate_recipe sets {unknown}, which no evaluate recipe has"
    extras = method_cls.record_extras(config)
    assert isinstance(extras, dict), f"{method_cls.__name__}.record_extras returned {type(extras).__name__}, not a dict"


def check_distribution_hooks(method_cls, config=None, space: str | None = None):
    """``learned_probabilities`` matches ``probabilities``' layout (or is None), and ``derive_from_distribution``
    of the current distribution is None or a genotype of the method's space."""
    method, ctx = build(method_cls, config, space=space)
    probs, learned = method.probabilities(), method.learned_probabilities()
    if learned is not None:
        assert learned.keys() == probs.keys(), f"learned_probabilities() has {sorted(learned)}, not {sorted(probs)}"
        for t, p in learned.items():
            assert p.shape == probs[t].shape, f"learned_probabilities()[{t!r}] is {tuple(p.shape)}"
    derived = method.derive_from_distribution(learned if learned is not None else probs)
    if derived is not None:
        assert isinstance(derived, Genotype), f"derive_from_distribution returned {type(derived).__name__}"
        ctx.space.validate(derived)


def check_step_changes_parameters(method_cls, config=None, space: str | None = None):
    method, ctx = build(method_cls, config, space=space)
    weights, alphas = _snapshot(method, ctx)
    stats = method.step(batch(0, space=space), batch(1, space=space))
    changed_w = any(not torch.equal(a, b) for a, b in zip(weights, ctx.model.parameters(), strict=True))
    changed_a = any(not torch.equal(alphas[t], a) for t, a in _alphas(method).items())
    if method.trains_supernet:
        assert math.isfinite(stats.loss), f"the step's loss is {stats.loss}"
        assert changed_w, "a step changed nothing: the supernet weights did not change"
    else:  # e.g. the DARTS random baseline: its steps must leave the supernet alone
        assert not changed_w and not changed_a, "a method without supernet training changed parameters"


def check_gradients_reach_alpha(method_cls, config=None, space: str | None = None):
    method, ctx = build(method_cls, config, space=space)
    alphas = _alphas(method)
    if not alphas:
        return  # methods without architecture parameters (random search) have nothing to check
    before = {t: a.detach().clone() for t, a in alphas.items()}
    method.step(batch(0, space=space), batch(1, space=space))
    for t, a in alphas.items():
        assert a.grad is not None and a.grad.abs().sum() > 0, f"no gradient reached alpha[{t}]"
        assert not torch.equal(before[t], a.detach()), f"alpha[{t}] did not move"


def check_state_dict_round_trip(method_cls, config=None, space: str | None = None):
    torch.manual_seed(0)
    a, ctx_a = build(method_cls, config, space=space)
    a.step(batch(0, space=space), batch(1, space=space))
    state = copy.deepcopy(a.state_dict())
    model_state = copy.deepcopy(ctx_a.model.state_dict())
    b, ctx_b = build(method_cls, config, seed=0, space=space)
    ctx_b.model.load_state_dict(model_state)
    b.load_state_dict(state)
    for key, value in state.items():  # plain entries (epoch, temperature) come back as they were
        if isinstance(value, (int, float)):
            assert b.state_dict()[key] == value, f"{key} not restored"
    for method, seed in ((a, 7), (b, 7)):
        torch.manual_seed(seed)
        method.start_epoch(1)
        method.step(batch(2, space=space), batch(3, space=space))
    for pa, pb in zip(ctx_a.model.parameters(), ctx_b.model.parameters(), strict=True):
        assert torch.equal(pa, pb), "a resumed method diverged from the uninterrupted one (weights)"
    for t, alpha in _alphas(a).items():
        assert torch.equal(alpha, _alphas(b)[t]), "a resumed method diverged from the uninterrupted one (alpha)"
    assert a.derive(score) == b.derive(score)


def check_derive_is_valid(method_cls, config=None, space: str | None = None) -> Genotype:
    method, ctx = build(method_cls, config, space=space)
    method.step(batch(0, space=space), batch(1, space=space))
    genotype = method.derive(score)
    ctx.space.validate(genotype)
    for cell in genotype.cells.values():
        assert all(op != ctx.space.zero_op for _, _, op in cell.edges)
    if ctx.space.inputs_per_node is not None:  # DARTS-style: exactly two (input, op) entries per node
        for cell in genotype.cells.values():
            for node in ctx.space.intermediate_nodes:
                assert sum(1 for _, dst, _ in cell.edges if dst == node) == ctx.space.inputs_per_node
    return genotype


def check_same_seed_same_genotype(method_cls, config=None, space: str | None = None):
    genotypes = []
    for _ in range(2):
        torch.manual_seed(0)
        method, _ = build(method_cls, config, seed=3, space=space)
        method.step(batch(0, space=space), batch(1, space=space))
        genotypes.append(method.derive(score))
    assert genotypes[0] == genotypes[1]


METHOD_CHECKS = (
    check_declares_config_and_space,
    check_distribution_hooks,
    check_step_changes_parameters,
    check_gradients_reach_alpha,
    check_state_dict_round_trip,
    check_derive_is_valid,
    check_same_seed_same_genotype,
)


def check_method(method_cls, config=None, space: str | None = None) -> None:
    """Run every method check on ``method_cls`` (with ``config``, default its ``config_class()``) in ``space``
    (default the method's own; e.g. ``recurrent_counterpart(method_cls.space)`` for the recurrent cell)."""
    for check in METHOD_CHECKS:
        check(method_cls, config, space)

"""The DARTS recurrent cell: search space, search cell (sparse), final cell and the language model around it.

Code origin: quark0/darts ``rnn/`` (``model_search.py``, ``model.py``, ``genotypes.py``); the language model
is AWD-LSTM's (Merity et al. 2018) with the LSTM replaced by the cell. Node 0 (``s0``) is the single input
node and every node is a highway bypass ``s_j + sigmoid(c) * (f(g) - s_j)`` of a predecessor, with ops
``none, tanh, relu, sigmoid, identity``; ``h_t`` is the mean of the concat nodes. Two spaces of 8
intermediate nodes: ``darts_rnn`` (one predecessor per node) and ``dag_rnn`` (any in-degree, several ops per
edge, as EGS derives); :func:`rnn_space` makes other sizes.

Deviations from the paper and the original code: docs/fidelity/rnn.md
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ...core.errors import DataError
from ...core.genotype import CellGenotype, Genotype
from .cell import active_ops
from .space import SPACES, SearchSpace
from .weighting import Supernet

__all__ = [
    "DARTS_V1_RNN",
    "DARTS_V2_RNN",
    "RNN_PRIMITIVES",
    "LockedDropout",
    "RNNCell",
    "RNNModel",
    "SearchRNNCell",
    "embedded_dropout",
    "rnn_space",
]

RNN_PRIMITIVES = ("none", "tanh", "relu", "sigmoid", "identity")  # quark0/darts rnn/genotypes.py order
CELL_INIT = 0.04  # DARTS INITRANGE for W0, W_i and the embedding
ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid, "identity": lambda x: x}


def rnn_space(name: str, n_nodes: int = 8, inputs_per_node: int | None = None) -> SearchSpace:
    """A recurrent-cell space: input node 0 (``s0``), ``n_nodes`` intermediate nodes, the five RNN ops."""
    return SearchSpace(
        name,
        ops=RNN_PRIMITIVES,
        cell_types=("recurrent",),
        n_inputs=1,
        n_nodes=n_nodes,
        inputs_per_node=inputs_per_node,
    )


SPACES.add("darts_rnn", rnn_space("darts_rnn", inputs_per_node=1))
SPACES.add("dag_rnn", rnn_space("dag_rnn"))


def _from_darts(pairs: list[tuple[str, int]]) -> Genotype:
    """From ``Genotype(recurrent=[(op, pred), ...], concat=range(1, 9))``: entry i feeds node i + 1."""
    edges = tuple((src, i + 1, op) for i, (op, src) in enumerate(pairs))
    return Genotype({"recurrent": CellGenotype(edges, tuple(range(1, len(pairs) + 1)))})


# Published cells (quark0/darts rnn/genotypes.py): V1 from first-order, V2 from second-order search.
DARTS_V1_RNN = _from_darts(
    [("relu", 0), ("relu", 1), ("tanh", 2), ("relu", 3), ("relu", 4), ("identity", 1), ("relu", 5), ("relu", 1)]
)
DARTS_V2_RNN = _from_darts(
    [("sigmoid", 0), ("relu", 1), ("relu", 1), ("identity", 1), ("tanh", 2), ("sigmoid", 5), ("tanh", 3), ("relu", 5)]
)


def _mask(like: torch.Tensor, shape: tuple[int, ...], p: float) -> torch.Tensor:
    """A variational dropout mask ``Bernoulli(1 - p) / (1 - p)`` of ``shape`` (ones when ``p`` is 0)."""
    if p <= 0.0:
        return like.new_ones(shape)
    return like.new_empty(shape).bernoulli_(1.0 - p) / (1.0 - p)


class _CellBase(nn.Module):
    """What both cells share: ``W0``, the variational masks and the time loop."""

    def __init__(self, ninp: int, nhid: int, dropoutx: float, dropouth: float):
        super().__init__()
        self.nhid, self.dropoutx, self.dropouth = nhid, dropoutx, dropouth
        self.w0 = nn.Linear(ninp + nhid, 2 * nhid, bias=False)

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.uniform_(module.weight, -CELL_INIT, CELL_INIT)

    def init_state(self, x: torch.Tensor, h: torch.Tensor, mx: torch.Tensor, mh: torch.Tensor) -> torch.Tensor:
        c0, h0 = self.w0(torch.cat([x * mx, h * mh], dim=-1)).split(self.nhid, dim=-1)  # (B, H) each
        return h + torch.sigmoid(c0) * (torch.tanh(h0) - h)

    def forward(self, inputs: torch.Tensor, hidden: torch.Tensor, weights: torch.Tensor | None = None):
        """``inputs`` (T, B, ninp), ``hidden`` (B, H) -> (outputs (T, B, H), last hidden (B, H))."""
        batch = inputs.shape[1]
        p_x, p_h = (self.dropoutx, self.dropouth) if self.training else (0.0, 0.0)
        mx = _mask(inputs, (batch, inputs.shape[2]), p_x)  # sampled once per sequence (variational)
        mh = _mask(inputs, (batch, self.nhid), p_h)
        plan = self.plan(weights)
        outputs = []
        for x in inputs:
            hidden = self.step(x, hidden, mx, mh, plan)
            outputs.append(hidden)
        return torch.stack(outputs), hidden


class SearchRNNCell(_CellBase):
    """The search cell of ``space``: every edge mixes its active ops with the method's weights.

    One ``W_i`` per intermediate node, shared by all its predecessors; one ``BatchNorm1d`` without
    affine parameters on ``s0`` and every node (search only), as DARTS's ``model_search.py``.
    """

    def __init__(self, space: SearchSpace, ninp: int, nhid: int, dropoutx: float = 0.75, dropouth: float = 0.25):
        super().__init__(ninp, nhid, dropoutx, dropouth)
        if space.cell_types != ("recurrent",) or space.n_inputs != 1:
            raise ValueError(f"space {space.name!r} is not a recurrent-cell space (one input node, cell 'recurrent')")
        self.space = space
        self.ws = nn.ModuleList(nn.Linear(nhid, 2 * nhid, bias=False) for _ in space.intermediate_nodes)
        self.bn = nn.BatchNorm1d(nhid, affine=False)
        self.reset_parameters()
        zero = space.ops.index(space.zero_op) if space.zero_op in space.ops else None
        self._zero = zero

    def plan(self, weights: torch.Tensor) -> list[list[tuple[int, int, int]]]:
        """Per intermediate node, its active ``(src, edge, op)`` entries (one host transfer per forward)."""
        active = active_ops(weights, self._zero)
        entries: list[list[tuple[int, int, int]]] = [[] for _ in self.space.intermediate_nodes]
        for e, (src, dst) in enumerate(self.space.edges):
            entries[dst - 1].extend((src, e, k) for k in active[e])
        return [weights, entries]

    def step(self, x, h, mx, mh, plan) -> torch.Tensor:
        weights, entries = plan
        states = [self.bn(self.init_state(x, h, mx, mh))]
        for i, node_entries in enumerate(entries):
            if not node_entries:  # every edge into this node was zero
                states.append(torch.zeros_like(states[0]))
                continue
            preds = sorted({src for src, _, _ in node_entries})
            ch = self.ws[i](torch.stack([states[j] * mh for j in preds]))  # (P, B, 2H)
            c, g = ch.split(self.nhid, dim=-1)
            c = torch.sigmoid(c)
            node = None
            for src, e, k in node_entries:
                p, s = preds.index(src), states[src]
                y = weights[e, k] * (s + c[p] * (ACTIVATIONS[self.space.ops[k]](g[p]) - s))
                node = y if node is None else node + y
            states.append(self.bn(node))
        return torch.stack(states[1:]).mean(dim=0)  # (B, H): mean of all intermediate nodes


class RNNCell(_CellBase):
    """A final recurrent cell built from a genotype's ``recurrent`` cell (any in-degree, several ops per edge)."""

    def __init__(self, genotype: CellGenotype, ninp: int, nhid: int, dropoutx: float = 0.75, dropouth: float = 0.25):
        super().__init__(ninp, nhid, dropoutx, dropouth)
        self.nodes = sorted({dst for _, dst, _ in genotype.edges})
        self.entries = {n: [(src, op) for src, dst, op in genotype.edges if dst == n] for n in self.nodes}
        self.ws = nn.ModuleDict({str(n): nn.Linear(nhid, 2 * nhid, bias=False) for n in self.nodes})
        self.concat = list(genotype.concat)
        self.reset_parameters()

    def plan(self, weights) -> None:
        return None

    def step(self, x, h, mx, mh, plan) -> torch.Tensor:
        states = {0: self.init_state(x, h, mx, mh)}
        for n in self.nodes:
            entries = self.entries[n]
            preds = sorted({src for src, _ in entries})
            ch = self.ws[str(n)](torch.stack([states[j] * mh for j in preds]))  # (P, B, 2H)
            c, g = ch.split(self.nhid, dim=-1)
            c = torch.sigmoid(c)
            outs = []
            for src, op in entries:
                p, s = preds.index(src), states[src]
                outs.append(s + c[p] * (ACTIVATIONS[op](g[p]) - s))
            states[n] = outs[0] if len(outs) == 1 else torch.stack(outs).mean(dim=0)
        return torch.stack([states[n] for n in self.concat]).mean(dim=0)  # (B, H)


class LockedDropout(nn.Module):
    """Variational dropout over time: one mask per sequence, shared by every step (AWD-LSTM)."""

    def forward(self, x: torch.Tensor, p: float) -> torch.Tensor:  # x (T, B, C)
        if not self.training or p <= 0.0:
            return x
        return x * _mask(x, (1, x.shape[1], x.shape[2]), p)


def embedded_dropout(embed: nn.Embedding, words: torch.Tensor, p: float) -> torch.Tensor:
    """Embedding lookup with whole rows (words) of the matrix dropped with probability ``p`` (AWD-LSTM ``dropoute``)."""
    weight = embed.weight
    if p > 0.0:
        weight = weight * _mask(weight, (weight.shape[0], 1), p)
    return F.embedding(words, weight)


class RNNModel(Supernet, nn.Module):
    """Embedding -> recurrent cell -> tied decoder, with AWD-LSTM's dropouts (DARTS ``RNNModel``).

    Used for search (``cell`` a :class:`SearchRNNCell`, ``forward(tokens, hidden, weights)``) and
    final training (an :class:`RNNCell`, ``forward(tokens, hidden)``). Requires ``ninp == nhid``
    (the decoder is tied to the embedding; DARTS: emsize = nhid = nhidlast).
    """

    def __init__(
        self,
        ntoken: int,
        ninp: int,
        nhid: int,
        cell: _CellBase,
        dropout: float = 0.75,
        dropouti: float = 0.2,
        dropoute: float = 0.0,
        vocab_digest: int = 0,
    ):
        super().__init__()
        # The vocabulary's identity travels with the weights: loading weights trained on another vocabulary
        # (same size or not) fails with a clear message instead of silently mis-mapping words.
        self.register_buffer("vocab_digest", torch.tensor(vocab_digest, dtype=torch.int64))
        if ninp != nhid:
            raise ValueError(f"tied embeddings need emsize == nhid, got {ninp} and {nhid}")
        self.ntoken, self.nhid = ntoken, nhid
        self.dropout, self.dropouti, self.dropoute = dropout, dropouti, dropoute
        self.lockdrop = LockedDropout()
        self.encoder = nn.Embedding(ntoken, ninp)
        self.cell = cell
        self.decoder = nn.Linear(ninp, ntoken)
        self.decoder.weight = self.encoder.weight  # tied
        # DARTS rnn/model.py init_weights: U(-INITRANGE, INITRANGE) for the embedding (and the tied decoder
        # weight, drawn again there into the same tensor), zero decoder bias.
        nn.init.uniform_(self.encoder.weight, -CELL_INIT, CELL_INIT)
        nn.init.zeros_(self.decoder.bias)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        theirs = state_dict.get(prefix + "vocab_digest")
        if theirs is not None and int(theirs) != int(self.vocab_digest):
            theirs_n = state_dict.get(prefix + "encoder.weight")
            size = "?" if theirs_n is None else theirs_n.shape[0]
            raise DataError(
                f"these weights were trained on another vocabulary ({size} words, digest {int(theirs)}) than the data "
                f"({self.ntoken} words, digest {int(self.vocab_digest)}); use the data (task.data_dir and the split "
                "roles) the run was trained on"
            )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def init_hidden(self, batch_size: int) -> torch.Tensor:
        return self.encoder.weight.new_zeros(batch_size, self.nhid)

    def forward(
        self,
        tokens: torch.Tensor,
        hidden: torch.Tensor | None = None,
        weights: Mapping[str, torch.Tensor] | None = None,
    ):
        """``tokens`` (T, B) -> (logits (T, B, V), last hidden (B, H), raw cell outputs (T, B, H) for TAR)."""
        if hidden is None:
            hidden = self.init_hidden(tokens.shape[1])
        emb = embedded_dropout(self.encoder, tokens, self.dropoute if self.training else 0.0)  # (T, B, E)
        emb = self.lockdrop(emb, self.dropouti)
        raw, hidden = self.cell(emb, hidden, None if weights is None else weights["recurrent"])
        out = self.lockdrop(raw, self.dropout)
        return self.decoder(out), hidden, raw

    def op_costs(self, metric: str = "macs", per_cell: bool = False) -> dict[str, torch.Tensor]:
        """Cost of each op at each edge per token: ``{"recurrent": (E, K)}`` (a search cell only); with
        ``per_cell``, ``(1, E, K)`` (one cell, shared by every time step).

        Every non-zero op of an edge ``(j, i)`` needs the product ``s_j W_i``: ``2 H^2`` MACs and
        ``W_i``'s ``2 H^2`` parameters (shared by the node's edges; each op is charged in full). The
        activation and the highway are element-wise and free, as BN and additions in the CNN count;
        the zero op costs 0.
        """
        if metric not in ("macs", "params", "mac_memory"):
            raise ValueError(f"unknown cost metric {metric!r}; use 'macs', 'params' or 'mac_memory'")
        space = self.cell.space
        cost = torch.full((space.num_edges, space.num_ops), 2.0 * self.nhid * self.nhid, dtype=torch.float64)
        if metric == "mac_memory":  # reads s_j, W_i and writes c, g
            cost += 3.0 * self.nhid
        cost[:, space.ops.index(space.zero_op)] = 0.0
        return {"recurrent": cost.unsqueeze(0) if per_cell else cost}

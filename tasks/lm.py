"""Word-level language modelling on Penn Treebank (``ptb``) and WikiText-2 (``wt2``) with DARTS's RNN protocol.

Text comes from ``task.data_dir`` (PTB ``ptb.{train,valid,test}.txt``, WikiText-2 ``wiki.*.tokens``) or,
for WikiText-2 only, the hub (``hub: true``). ``train_split`` / ``valid_split`` / ``test_split`` name the file
that plays each role; roles sharing a file cut it into contiguous parts, and ``DataInfo.roles`` says which
part played which. search-train is the train role, search-val the valid role. Batches carry their pass's
hidden state (truncated BPTT), so every forward pass on one batch starts from the same state.

Deviations from the paper and original code: docs/fidelity/lm.md
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..core.config import SearchConfig
from ..core.errors import check_range
from .base import SPLITS, TASKS, DataInfo, Metric, Task
from .spaces import ConfigError, DataError, DataNotFoundError, EdgeWeights, Genotype, LossOutput, SearchSpace
from .spaces.rnn import RNNCell, RNNModel, SearchRNNCell
from .training import AveragedSGD, inner_optimizer, no_swap

__all__ = ["LMBatch", "LMConfig", "LMSearchConfig", "LMTrainConfig", "PTB", "WikiText2", "batchify"]

ROLES = ("train", "valid", "test")
EOS, UNK = "<eos>", "<unk>"
# Share of a valid/test role's tokens outside the training role's vocabulary (read as <unk>): warned above
# OOV_WARN, refused above OOV_REFUSE (the perplexity would mostly measure how well <unk> is predicted).
OOV_WARN, OOV_REFUSE = 0.05, 0.5

logger = logging.getLogger(__name__)


@dataclass
class LMConfig:
    """The ``task:`` block: where the text is and which file plays which role."""

    data_dir: str | None = None  # None: $EGSBENCH_PTB / $EGSBENCH_WT2, else ~/.cache/egsbench/datasets/<task>
    hub: bool = False  # load from the HuggingFace hub (needs network) instead of data_dir
    train_split: str = "train"  # the file (train | valid | test) playing the training role; the vocabulary's
    valid_split: str = "valid"
    test_split: str = "test"
    holdout: float = 0.1  # share of a file given to each later role that shares it (docs/fidelity/lm.md)
    max_tokens: int | None = None  # cap on each role's tokens (smoke presets)
    eval_batch_size: int = 10  # valid / search-val scoring batch in final training (DARTS: 10)
    test_batch_size: int = 1  # DARTS: 1

    def __post_init__(self):
        for key in ("train_split", "valid_split", "test_split"):
            if getattr(self, key) not in ROLES:
                raise ValueError(f"task.{key} must be one of {list(ROLES)}, got {getattr(self, key)!r}")
        check_range("task.holdout", self.holdout, 0, 0.5, low_open=True, high_open=True)
        check_range("task.max_tokens", self.max_tokens, low=10)
        check_range("task.eval_batch_size", self.eval_batch_size, low=1)
        check_range("task.test_batch_size", self.test_batch_size, low=1)


@dataclass
class LMSearchConfig(SearchConfig):
    """The ``search:`` block: supernet size, BPTT and the weight optimiser (DARTS ``rnn/train_search.py``)."""

    epochs: int = 50
    batch_size: int = 256
    lr: float = 20.0  # SGD without momentum; constant (lr_min == lr), as DARTS
    lr_min: float = 20.0
    momentum: float = 0.0
    weight_decay: float = 5e-7
    grad_clip: float = 0.25
    max_steps_per_epoch: int | None = None
    score_batches: int | None = None
    emsize: int = 300  # == nhid (tied decoder)
    nhid: int = 300
    bptt: int = 35  # halved with probability 0.05 per batch, no jitter (DARTS search)
    bptt_jitter: float = 0.0
    dropout: float = 0.75  # locked dropout on the cell outputs
    dropouth: float = 0.25  # on the hidden state fed to W0 and W_i
    dropoutx: float = 0.75  # on the input fed to W0
    dropouti: float = 0.2  # locked dropout on the embeddings
    dropoute: float = 0.0  # embedding rows
    beta: float = 1e-3  # temporal activation regularisation (TAR) of the weight step
    # The alpha loss: "nll" as DARTS's model_search.py _loss; "nll+tar" adds the weights' TAR (this project before).
    alpha_loss: str = "nll"

    def __post_init__(self):
        _check_common(self, "search")
        if self.alpha_loss not in ("nll", "nll+tar"):
            raise ConfigError(f"search.alpha_loss must be 'nll' (DARTS) or 'nll+tar', got {self.alpha_loss!r}")
        check_range("search.epochs", self.epochs, low=0)
        check_range("search.momentum", self.momentum, 0, 1, high_open=True)
        check_range("search.score_batches", self.score_batches, low=1)


@dataclass
class LMTrainConfig:
    """The ``evaluate:`` block: AWD-LSTM-style training of the derived cell (DARTS ``rnn/train.py``, PTB)."""

    lr_fields: ClassVar[tuple[str, ...]] = ("lr",)  # what lr_scaling: linear multiplies by the world size

    epochs: int = 1600
    batch_size: int = 64
    emsize: int = 850
    nhid: int = 850
    lr: float = 20.0  # SGD, no momentum, lr * seq_len / bptt per batch; ASGD after the trigger
    weight_decay: float = 8e-7
    grad_clip: float = 0.25
    max_steps_per_epoch: int | None = None
    # Test-set evaluation every N epochs for the curves, the last epoch always; 0: the last epoch only (at batch 1
    # a test pass is ~82k sequential steps on PTB). Validation runs every epoch regardless (the ASGD trigger).
    eval_every: int = 0
    bptt: int = 35
    bptt_jitter: float = 5.0  # seq_len ~ N(bptt', 5), bptt' = bptt (p .95) or bptt / 2; at least 5
    max_seq_len_delta: int = 20  # seq_len <= bptt + 20
    dropout: float = 0.75
    dropouth: float = 0.25
    dropoutx: float = 0.75
    dropouti: float = 0.2
    dropoute: float = 0.1
    beta: float = 1e-3
    asgd: bool = True  # switch to averaged SGD on the non-monotone trigger
    nonmono: int = 5  # switch when the validation loss is worse than the best of all but the last 5 epochs

    def __post_init__(self):
        _check_common(self, "evaluate")
        check_range("evaluate.epochs", self.epochs, low=1)
        check_range("evaluate.eval_every", self.eval_every, low=0)
        check_range("evaluate.max_seq_len_delta", self.max_seq_len_delta, low=0)
        check_range("evaluate.nonmono", self.nonmono, low=1)


def _check_common(cfg, where: str) -> None:
    for key in ("batch_size", "emsize", "nhid", "bptt", "max_steps_per_epoch"):
        check_range(f"{where}.{key}", getattr(cfg, key), low=1)
    check_range(f"{where}.lr", cfg.lr, low=0, low_open=True)
    if hasattr(cfg, "lr_min"):
        check_range(f"{where}.lr_min", cfg.lr_min, low=0, high=cfg.lr)
    for key in ("weight_decay", "bptt_jitter", "beta"):
        check_range(f"{where}.{key}", getattr(cfg, key), low=0)
    check_range(f"{where}.grad_clip", cfg.grad_clip, low=0, low_open=True)
    for key in ("dropout", "dropouth", "dropoutx", "dropouti", "dropoute"):
        check_range(f"{where}.{key}", getattr(cfg, key), 0, 1, high_open=True)
    if cfg.emsize != cfg.nhid:
        raise ValueError(f"{where}.emsize must equal {where}.nhid (the decoder is tied to the embedding)")


# -- batches ------------------------------------------------------------------------------------


def batchify(data: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``(N,)`` token ids -> ``(N // B, B)``: B contiguous columns, the remainder trimmed (reference ``batchify``)."""
    steps = data.numel() // batch_size
    if steps < 2:
        raise DataError(
            f"{data.numel()} tokens cannot fill a batch of {batch_size} columns of 2 tokens; use a "
            "smaller batch_size or more text"
        )
    return data[: steps * batch_size].view(batch_size, steps).t().contiguous()


class _Carry:
    """The hidden state carried across the batches of one pass over a split."""

    def __init__(self):
        self.hidden: torch.Tensor | None = None  # left by the last batch, detached
        self.index, self.incoming = -1, None  # the batch now in use and the state it started from

    def start(self, index: int) -> torch.Tensor | None:
        if index != self.index:
            self.index, self.incoming = index, self.hidden
        return self.incoming

    def leave(self, hidden: torch.Tensor) -> None:
        self.hidden = hidden.detach()  # truncated BPTT: no gradient flows into an earlier batch

    def __eq__(self, other: object) -> bool:  # a carrier is not batch data: any two compare equal
        return isinstance(other, _Carry)

    __hash__ = object.__hash__


class LMBatch(NamedTuple):
    x: torch.Tensor  # (L, B) inputs
    y: torch.Tensor  # (L, B) next tokens
    index: int  # position in its pass
    carry: _Carry


class BPTTLoader:
    """The batches of one split in order: fixed length ``bptt``, or DARTS's variable length with ``generator``."""

    def __init__(
        self,
        data: torch.Tensor,
        bptt: int,
        generator: torch.Generator | None = None,
        variable: bool = False,
        jitter: float = 0.0,
        max_delta: int = 20,
    ):
        self.data, self.bptt, self.generator = data, bptt, generator
        self.variable, self.jitter, self.max_delta = variable, jitter, max_delta

    def __len__(self) -> int:  # exact for fixed length, the fixed-length count otherwise
        return max(1, math.ceil((self.data.shape[0] - 1) / self.bptt))

    def _seq_len(self) -> int:
        if not self.variable:
            return self.bptt
        gen = self.generator
        bptt = self.bptt if torch.rand((), generator=gen).item() < 0.95 else self.bptt / 2
        if self.jitter <= 0:
            return max(1, int(bptt))
        seq_len = max(5, int(bptt + self.jitter * torch.randn((), generator=gen).item()))
        return min(seq_len, self.bptt + self.max_delta)

    def __iter__(self) -> Iterator[LMBatch]:
        carry, i, index = _Carry(), 0, 0
        while i < self.data.shape[0] - 1:
            seq_len = min(self._seq_len(), self.data.shape[0] - 1 - i)
            yield LMBatch(self.data[i : i + seq_len], self.data[i + 1 : i + 1 + seq_len], index, carry)
            i, index = i + seq_len, index + 1


# -- data ---------------------------------------------------------------------------------------


def _cache_dir() -> str | None:
    """``$EGSBENCH_CACHE/hf-datasets`` when set (tests isolate caches this way), else the datasets default."""
    root = os.environ.get("EGSBENCH_CACHE")
    return str(Path(root) / "hf-datasets") if root else None


def check_text_file(path: Path, what: str) -> None:
    """Refuse an unreadable, empty or non-UTF-8 text file with one line naming it (``what``: e.g. "the official
    Penn Treebank test file"), before the ``datasets`` loader turns it into a traceback."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path} cannot be read ({err.strerror}); replace it with {what}") from None
    if not data:
        raise DataError(f"{path} is empty (0 bytes); replace it with {what}")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}: "
            f"{err.reason}); save it as UTF-8"
        ) from None


def oov_rates(tokens: dict[str, list[str]], vocab: dict[str, int]) -> dict[str, float]:
    """Share of each non-training role's tokens that are not in ``vocab`` (the training role's words and ``<unk>``).

    A literal ``<unk>`` (PTB's preprocessed files hold them) is in the vocabulary, so it is not counted; ``<eos>``
    tokens count in the total, as they do in the perplexity.
    """
    return {
        role: sum(w not in vocab for w in toks) / max(len(toks), 1) for role, toks in tokens.items() if role != "train"
    }


def _read_lines(path: Path) -> list[str]:
    """The lines of a text file through the ``datasets`` text loader (cached as Arrow, keyed on the file)."""
    from datasets import load_dataset  # heavy import, only when text is read
    from datasets.utils import logging as ds_logging

    shown = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        ds = load_dataset("text", data_files={"split": str(path)}, split="split", cache_dir=_cache_dir())
    finally:
        if shown:
            ds_logging.enable_progress_bar()
    return ds["text"]


def _tokens(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        out.extend(line.split() + [EOS])
    return out


@dataclass
class _Loaded:
    tokens: dict[str, list[str]]  # role -> tokens
    roles: dict[str, str]  # role -> where it came from
    source: str


class LanguageModelTask(Task):
    """Shared by :class:`PTB` and :class:`WikiText2`; a subclass names its files, hub id and env variable."""

    config_class = LMConfig
    search_config_class = LMSearchConfig
    train_config_class = LMTrainConfig
    metrics = (Metric("ppl", "min", "Test perplexity"), Metric("loss", "min", "Test loss (nats/token)"))
    main_metric = "ppl"
    score_key = "ppl"  # candidates ranked by search-val perplexity (lower is better)
    example_unit = "tokens"  # throughput in the record: predicted tokens per second
    conformance_space, conformance_genotype = "dag_rnn", "darts_v2_rnn"  # for egsbench.testing.check_task
    name = ""
    label = ""
    env = ""
    file_patterns: tuple[str, ...] = ("{split}.txt",)
    hub_id: tuple[str, ...] = ()  # load_dataset arguments
    hub_splits = {"train": "train", "valid": "validation", "test": "test"}
    hub_field = "text"

    def __init__(self, config: LMConfig):
        self.config = config
        self.vocab: dict[str, int] | None = None
        self.oov: dict[str, float] = {}  # role -> share of its tokens outside the vocabulary (``oov_rates``)
        self.ids: dict[str, torch.Tensor] = {}  # role -> (N,) token ids
        self._search: LMSearchConfig | None = None
        self._train: LMTrainConfig | None = None  # the final-training recipe of the network built last

    @classmethod
    def conformance_config(cls, tmp_path: Path) -> LMConfig:
        """Three tiny files in the official layout under ``tmp_path`` (for ``egsbench.testing``)."""
        from ..testing.fixtures import write_lm_files  # test-only helper, imported when the checks ask

        folder = Path(tmp_path) / cls.name
        write_lm_files(folder, cls.file_patterns[0], lines=40)
        return LMConfig(data_dir=str(folder), eval_batch_size=2, test_batch_size=2)

    @classmethod
    def conformance_recipes(cls) -> tuple[LMSearchConfig, LMTrainConfig]:
        return (
            LMSearchConfig(emsize=8, nhid=8, batch_size=4, bptt=6, epochs=1),
            LMTrainConfig(emsize=8, nhid=8, batch_size=4, bptt=6, epochs=1),
        )

    # -- data ----------------------------------------------------------------------------------
    def _folder(self) -> Path:
        default = Path.home() / ".cache" / "egsbench" / "datasets" / self.name
        return Path(os.path.expanduser(self.config.data_dir or os.environ.get(self.env, str(default))))

    def _find(self, folder: Path, split: str) -> Path | None:
        for pattern in self.file_patterns:
            path = folder / pattern.format(split=split)
            if path.is_file():
                return path
        return None

    def _load_local(self) -> _Loaded:
        folder = self._folder()
        needed = sorted({self.config.train_split, self.config.valid_split, self.config.test_split}, key=ROLES.index)
        paths = {split: self._find(folder, split) for split in needed}
        missing = [s for s, p in paths.items() if p is None]
        if missing:
            wanted = ", ".join(" or ".join(p.format(split=s) for p in self.file_patterns) for s in missing)
            online = "--set task.hub=true when online, " if self.hub_id else ""
            raise DataNotFoundError(
                f"{self.label} not found: {folder} lacks {wanted}. Put the official files there (PTB: the Mikolov "
                f"ptb.*.txt of awd-lstm-lm's getdata.sh; WikiText-2: wiki.*.tokens), pass --set task.data_dir=DIR, "
                f"set ${self.env}, {online}or let other files play the missing roles "
                "(--set task.train_split=valid ...)"
            )
        for s, p in paths.items():  # every file, before any is parsed
            check_text_file(p, f"the official {self.label} {s} file")
        lines = {s: _read_lines(p) for s, p in paths.items()}
        for s, p in paths.items():
            if not any(line.strip() for line in lines[s]):
                raise DataError(f"{p} is empty (no words); replace it with the official {self.label} {s} file")
        return _Loaded(
            {s: _tokens(v) for s, v in lines.items()}, {s: str(p) for s, p in paths.items()}, f"local:{folder}"
        )

    def _load_hub(self) -> _Loaded:
        if not self.hub_id:
            patterns = " or ".join(p.format(split="{train,valid,test}") for p in self.file_patterns)
            raise ConfigError(
                f"task.hub=true: {self.label} has no Hub copy that `datasets` loads (docs/fidelity/lm.md); put its "
                f"official files ({patterns}) in a folder, pass --set task.data_dir=DIR (or set ${self.env}) and "
                "drop task.hub"
            )
        from datasets import load_dataset

        try:
            ds = load_dataset(*self.hub_id, cache_dir=_cache_dir())
        except Exception as err:  # offline, renamed dataset, ...: the message is what matters
            raise DataNotFoundError(
                f"{self.label} could not be loaded from the hub ({'/'.join(self.hub_id)}: {type(err).__name__}: "
                f"{err}); pass --set task.data_dir=DIR with the official files and task.hub=false"
            ) from None
        tokens = {s: _tokens(ds[h][self.hub_field]) for s, h in self.hub_splits.items()}
        return _Loaded(
            tokens,
            {s: f"hub:{'/'.join(self.hub_id)}:{h}" for s, h in self.hub_splits.items()},
            f"hub:{'/'.join(self.hub_id)}",
        )

    def _assign_roles(self, loaded: _Loaded) -> tuple[dict[str, list[str]], dict[str, str]]:
        """Each role's tokens; roles sharing a file cut it in contiguous parts (train, valid, test order)."""
        cfg = self.config
        wanted = {"train": cfg.train_split, "valid": cfg.valid_split, "test": cfg.test_split}
        out, where = {}, {}
        for split in ROLES:
            sharing = [r for r in ROLES if wanted[r] == split]
            if not sharing:
                continue
            toks = loaded.tokens[split]
            n, k = len(toks), len(sharing)
            sizes = [int(n * cfg.holdout)] * (k - 1)
            bounds = [0, n - sum(sizes)]
            for size in sizes:
                bounds.append(bounds[-1] + size)
            for r, a, b in zip(sharing, bounds[:-1], bounds[1:], strict=True):
                out[r] = toks[a:b][: cfg.max_tokens]
                part = "" if k == 1 else f" tokens [{a}, {b})"
                cap = "" if cfg.max_tokens is None else f" first {cfg.max_tokens}"
                where[r] = f"{loaded.roles[split]}{part}{cap}"
        return out, where

    def prepare_data(self) -> DataInfo:
        if self.vocab is not None:
            return self._info
        loaded = self._load_hub() if self.config.hub else self._load_local()
        tokens, roles = self._assign_roles(loaded)
        vocab = {}
        for word in tokens["train"]:
            vocab.setdefault(word, len(vocab))
        vocab.setdefault(UNK, len(vocab))
        unk = vocab[UNK]
        self.oov = self._check_oov(tokens, vocab, roles)
        self.vocab = vocab
        self.ids = {r: torch.tensor([vocab.get(w, unk) for w in t], dtype=torch.long) for r, t in tokens.items()}
        h = hashlib.sha256("\n".join(vocab).encode())
        for r in ROLES:
            h.update(self.ids[r].numpy().tobytes())
        split_role = {"search-train": "train", "search-val": "valid", **{r: r for r in ROLES}}
        sizes = {split: len(self.ids[role]) for split, role in split_role.items()}
        roles = {split: roles[role] for split, role in split_role.items()}
        roles["vocabulary"] = f"{len(vocab)} words from the train role"
        self._info = DataInfo(source=loaded.source, sha256=h.hexdigest(), sizes=sizes, roles=roles)
        return self._info

    def _check_oov(self, tokens: dict[str, list[str]], vocab: dict[str, int], where: dict[str, str]) -> dict:
        """The valid and test roles' out-of-vocabulary rates; warns above ``OOV_WARN``, refuses above ``OOV_REFUSE``."""
        rates = oov_rates(tokens, vocab)
        for role in ("test", "valid"):
            if rates[role] > OOV_REFUSE:
                raise DataError(
                    f"{where[role]}: {rates[role]:.1%} of the {role} role's {len(tokens[role])} tokens are not in the "
                    f"vocabulary of the training role ({where['train']}) and would be read as {UNK}; the {role} text "
                    f"must use the training text's vocabulary (for {self.label}: the official preprocessed files, "
                    f"rare words already {UNK}), or let another file play the role (--set task.{role}_split=...)"
                )
        for role, rate in rates.items():
            if rate > OOV_WARN:
                logger.warning(
                    f"WARNING: {rate:.1%} of the {role} role's tokens ({where[role]}) are not in the "
                    f"training role's vocabulary and are read as {UNK}: its perplexity is not comparable "
                    "with published numbers"
                )
        return {role: round(rate, 6) for role, rate in rates.items()}

    def record_extras(self) -> dict[str, Any]:
        """What the run record keeps under ``extras``: the valid and test roles' out-of-vocabulary rates."""
        return {"oov_rate": dict(self.oov)} if self.vocab is not None else {}

    @property
    def vocab_digest(self) -> int:
        """The vocabulary's identity as one int64 (stored in every network, checked when weights load)."""
        self.prepare_data()
        return int.from_bytes(hashlib.sha256("\n".join(self.vocab).encode()).digest()[:7], "big")

    def loader(self, split: str, batch_size: int, generator: torch.Generator | None = None, recipe: Any = None):
        self.prepare_data()
        if split not in (*SPLITS, "valid"):
            raise ValueError(f"unknown split {split!r}; valid splits: {(*SPLITS, 'valid')}")
        role = {"search-train": "train", "search-val": "valid"}.get(split, split)
        training = split in ("search-train", "train")
        evaluation = split in ("valid", "test") and recipe is None
        if evaluation:  # final-training evaluation batches, as DARTS: the network's own recipe's fixed BPTT
            batch_size = self.config.eval_batch_size if split == "valid" else self.config.test_batch_size
            recipe = self._train
        cfg = recipe if recipe is not None else (self._search or LMSearchConfig())
        data = batchify(self.ids[role], batch_size)
        return BPTTLoader(
            data,
            cfg.bptt,
            generator,
            variable=training,
            jitter=cfg.bptt_jitter,
            max_delta=getattr(cfg, "max_seq_len_delta", 0),
        )

    # -- networks ------------------------------------------------------------------------------
    def _model(self, cell: nn.Module, cfg) -> RNNModel:
        model = RNNModel(
            len(self.vocab),
            cfg.emsize,
            cfg.nhid,
            cell,
            cfg.dropout,
            cfg.dropouti,
            cfg.dropoute,
            vocab_digest=self.vocab_digest,
        )
        return model

    def build_supernet(self, space: SearchSpace, config: LMSearchConfig) -> RNNModel:
        self.prepare_data()
        self._search = config  # the search loaders' BPTT
        cell = SearchRNNCell(space, config.emsize, config.nhid, config.dropoutx, config.dropouth)
        return self._model(cell, config)

    def build_network(self, genotype: Genotype, config: LMTrainConfig) -> RNNModel:
        self.prepare_data()
        self._train = config  # the evaluation loaders' BPTT (set here, so a resumed final training has it too)
        if "recurrent" not in genotype.cells:
            cells = sorted(genotype.cells)
            raise DataError(f"{self.label} needs a genotype with a 'recurrent' cell (e.g. darts_v2_rnn), got {cells}")
        cell = RNNCell(genotype["recurrent"], config.emsize, config.nhid, config.dropoutx, config.dropouth)
        return self._model(cell, config)

    def example_input(self) -> tuple[torch.Tensor]:
        return (torch.zeros(1, 1, dtype=torch.long),)  # one token (T=1, B=1): MACs per token

    # -- losses and metrics --------------------------------------------------------------------
    def _forward(self, model: nn.Module, batch: LMBatch, weights: EdgeWeights | None = None):
        device = next(model.parameters()).device
        x, y = batch.x.to(device), batch.y.to(device)
        hidden = batch.carry.start(batch.index)
        args = (x, hidden) if weights is None else (x, hidden, weights)
        logits, hidden, raw = model(*args)
        batch.carry.leave(hidden)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)), raw

    @staticmethod
    def count_examples(batch: LMBatch) -> int:
        """Tokens predicted in ``batch`` (the runner's throughput unit here)."""
        return batch.y.numel()

    def search_loss(self, model: nn.Module, batch: LMBatch, weights: EdgeWeights) -> LossOutput:
        loss, raw = self._forward(model, batch, weights)
        cfg = self._search or LMSearchConfig()
        tar = cfg.beta * (raw[1:] - raw[:-1]).pow(2).mean() if raw.shape[0] > 1 else 0.0
        # The weights follow NLL + TAR (train_search.py); alpha follows the NLL alone (model_search.py _loss).
        arch = loss if cfg.alpha_loss == "nll" else None
        return LossOutput(loss + tar, {"ppl": math.exp(min(loss.item(), 50.0))}, arch=arch)

    def make_optimizer(self, model: nn.Module, config: LMTrainConfig) -> AveragedSGD:
        return AveragedSGD(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    def start_epoch(self, model: nn.Module, optimizer, epoch: int, config: LMTrainConfig):
        for group in optimizer.param_groups:
            group["lr"] = config.lr
        return optimizer

    def train_loss(self, model: nn.Module, batch: LMBatch, config: LMTrainConfig, state: Any = None) -> LossOutput:
        if state is not None:  # DARTS/AWD-LSTM: lr scaled by the batch's length
            for group in state.param_groups:
                group["lr"] = config.lr * batch.x.shape[0] / config.bptt
        loss, raw = self._forward(model, batch)
        tar = config.beta * (raw[1:] - raw[:-1]).pow(2).mean() if raw.shape[0] > 1 else 0.0
        return LossOutput(loss + tar, {"ppl": math.exp(min(loss.item(), 50.0))})

    def end_epoch(self, model: nn.Module, optimizer, epoch: int, config: LMTrainConfig, evaluate) -> dict:
        """Validate (with averaged weights once averaging) and switch SGD -> ASGD on the non-monotone trigger."""
        opt = inner_optimizer(optimizer)
        with self.eval_weights(model, optimizer):
            val = evaluate("valid")
        switched = False
        if isinstance(opt, AveragedSGD):
            history = opt.param_groups[0]["val_history"]
            if (
                config.asgd
                and not opt.averaging
                and len(history) > config.nonmono
                and val["loss"] > min(history[: -config.nonmono])
            ):
                opt.start_averaging()
                switched = True
            history.append(val["loss"])
        averaging = isinstance(opt, AveragedSGD) and opt.averaging
        return {
            "valid_ppl": val["ppl"],
            "valid_loss": val["loss"],
            "asgd": float(averaging),
            "asgd_switch": float(switched),
        }

    def eval_weights(self, model: nn.Module, optimizer):
        opt = inner_optimizer(optimizer)
        return opt.averaged() if isinstance(opt, AveragedSGD) else no_swap(model, optimizer)

    @torch.no_grad()
    def eval_sums(self, model: nn.Module, batch: LMBatch, weights: EdgeWeights | None = None) -> torch.Tensor:
        loss, _ = self._forward(model, batch, weights)
        n = batch.y.numel()
        return torch.stack([loss.double() * n, torch.tensor(float(n), dtype=torch.float64, device=loss.device)])

    def summarize(self, sums: torch.Tensor) -> dict[str, float]:
        total, count = sums.tolist()
        loss = total / max(count, 1)
        return {"ppl": math.exp(min(loss, 700.0)), "loss": loss, "count": int(count)}


@TASKS.register("ptb")
class PTB(LanguageModelTask):
    """Penn Treebank (Mikolov), DARTS's search and evaluation recipe."""

    name, label, env = "ptb", "Penn Treebank", "EGSBENCH_PTB"
    file_patterns = ("ptb.{split}.txt", "{split}.txt")
    # No hub id: `ptb_text_only` is a loading script, which datasets 4 no longer runs, and no script-free copy
    # of the Mikolov files is known for certain; local files only (task.hub=true says so).
    hub_id = ()
    reference_table = "ptb"


@TASKS.register("wt2")
class WikiText2(LanguageModelTask):
    """WikiText-2 (word level); DARTS transfers the PTB cell with 700/700 units."""

    name, label, env = "wt2", "WikiText-2", "EGSBENCH_WT2"
    file_patterns = ("wiki.{split}.tokens", "{split}.txt")
    hub_id = ("wikitext", "wikitext-2-v1")
    reference_table = "wt2"


def __getattr__(name: str):
    """``write_lm_files`` moved to ``egsbench.testing.fixtures``; old imports from here still resolve (lazily)."""
    if name == "write_lm_files":
        from ..testing.fixtures import write_lm_files

        return write_lm_files
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

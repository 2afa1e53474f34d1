"""A fixed genotype: train and test a published (or any saved) cell without searching.

``method: {name: fixed, genotype: NAME_OR_PATH}`` takes a name in ``GENOTYPES`` (``egsbench list genotypes``),
a genotype JSON file or a run folder (its ``genotype.json``: ``--set method.genotype=runs/egs-cifar10``
transfers a CIFAR-10 search's cell to ImageNet); the record keeps where the cell came from under
``extras.genotype_source``. No supernet is trained (``trains_supernet = False``): a run is the task's final
training and test of that cell, with zero search cost and no ``search_val_score``. The method's ``space`` is
``dag``, so any CNN genotype validates; a recurrent one needs ``space: dag_rnn``.

Deviations from the paper and the original code: docs/fidelity/fixed.md
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..tasks.spaces import SPACES, ConfigError, Genotype, GenotypeError, genotype_weights, load_genotype
from ..tasks.spaces.genotypes import genotype_source
from .base import ScoreFn, SearchContext, SearchMethod, StepStats
from .registry import METHODS

__all__ = ["Fixed", "FixedConfig"]

SPACE = "dag"  # any in-degree: DARTS cells and the released EGS cells alike


def _check_in_some_space(genotype: Genotype) -> None:
    """Raise unless an any-in-degree space with the genotype's cell types accepts it (``dag``, ``dag_rnn``, ``nb201``).

    A ``normal``-only cell fits ``nb201`` but may be meant for ``dag``: when no space accepts it, the error names
    what each candidate (and ``dag``) objects to, so a CIFAR-10 user is not told only about node 3 of NB201.
    """
    candidates = [SPACES.get(name) for name in SPACES.names()]
    candidates = [s for s in candidates if s.inputs_per_node is None and set(s.cell_types) == set(genotype.cells)]
    if SPACE not in [s.name for s in candidates]:
        candidates.append(SPACES.get(SPACE))
    problems = []
    for space in candidates:
        try:
            space.validate(genotype)
            return
        except GenotypeError as err:
            problems.append(str(err))
    raise GenotypeError(problems[0] if len(problems) == 1 else "; or, ".join(problems))


@dataclass
class FixedConfig:
    genotype: str = "darts_v2"  # a name in GENOTYPES (egsbench list genotypes) or the path of a genotype JSON file

    def __post_init__(self):
        # Fail at config time: an unknown name lists the valid ones; a bad file names itself and the problem.
        try:
            genotype = load_genotype(self.genotype)
        except GenotypeError as err:
            raise ConfigError(f"method.genotype: {err}") from None  # the message names the file
        try:
            _check_in_some_space(genotype)
        except GenotypeError as err:
            raise ConfigError(f"method.genotype: {self.genotype}: {err}") from None


@METHODS.register("fixed")
class Fixed(SearchMethod):
    """Returns a given genotype; trains nothing (see the module docstring and docs/fidelity/fixed.md)."""

    config_class = FixedConfig
    variant_keys = ("genotype",)  # each published cell is its own row
    space = SPACE
    trains_supernet = False

    @classmethod
    def record_extras(cls, config: FixedConfig) -> dict:
        """Where the cell came from, for the run record (a name, or a file / run folder with its checksum and run)."""
        return {"genotype_source": genotype_source(config.genotype)}

    def __init__(self, config: FixedConfig):
        self.config = config
        self.genotype: Genotype = load_genotype(config.genotype)
        self.derive_score: float | None = None
        self.epoch = 0

    def setup(self, ctx: SearchContext) -> None:
        self.ctx = ctx
        ctx.space.validate(self.genotype)

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def step(self, train_batch, val_batch) -> StepStats:
        """Nothing to train (the runner never calls this): the supernet and everything else stay as they are."""
        return StepStats(loss=math.nan, extras={"ops_per_edge": 0.0})

    def probabilities(self) -> dict[str, torch.Tensor]:
        """The genotype as ``{cell type: (E, K)}`` indicators: 1 at each (edge, op) it keeps."""
        return genotype_weights(self.ctx.space, self.genotype)

    def learned_probabilities(self) -> None:
        """None: a fixed cell learns no distribution, so its runs carry no search signal."""
        return None

    def derive(self, score: ScoreFn) -> Genotype:
        return self.genotype

    def state_dict(self) -> dict:
        return {"genotype": self.genotype.to_dict(), "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        saved = Genotype.from_dict(state["genotype"])
        if saved != self.genotype:
            raise ValueError(f"checkpoint holds genotype {saved.to_json()}, the config gives {self.genotype.to_json()}")
        self.epoch = state["epoch"]

"""Search spaces: ops, cells, networks, genotypes and cost counting.

The CNN networks (:mod:`.cnn`, which needs timm) load on first use, so a method importing this
package loads neither timm nor any task.
"""

from ...core.errors import ConfigError, DataError, DataNotFoundError, UserError
from ...core.genotype import CellGenotype, Genotype, GenotypeError, prune_cell
from ...core.registry import Registry, UnknownNameError
from .cell import Cell, SearchCell, active_ops, drop_path
from .cost import MacCount, count_macs, count_parameters
from .genotypes import GENOTYPES, load_genotype
from .nb201 import NB201, NB201_PRIMITIVES, NB201Network, NB201SearchNetwork  # registers the nb201 space
from .ops import OPS, PRIMITIVES, make_op
from .rnn import DARTS_V1_RNN, DARTS_V2_RNN, RNN_PRIMITIVES, RNNCell, RNNModel, SearchRNNCell, rnn_space
from .space import DARTS_V1, DARTS_V2, SPACES, SearchSpace, argmax_genotype, genotype_weights, one_op_cell
from .weighting import EdgeWeights, LossOutput, Supernet

__all__ = [
    "DARTS_V1",
    "DARTS_V2",
    "DARTS_V1_RNN",
    "DARTS_V2_RNN",
    "RNN_PRIMITIVES",
    "RNNCell",
    "RNNModel",
    "SearchRNNCell",
    "rnn_space",
    "GENOTYPES",
    "NB201",
    "NB201_PRIMITIVES",
    "NB201Network",
    "NB201SearchNetwork",
    "OPS",
    "PRIMITIVES",
    "SPACES",
    "AuxiliaryHeadCIFAR",
    "AuxiliaryHeadImageNet",
    "ConfigError",
    "DataError",
    "DataNotFoundError",
    "UserError",
    "Cell",
    "CellGenotype",
    "Genotype",
    "GenotypeError",
    "MacCount",
    "NetworkCIFAR",
    "NetworkImageNet",
    "EdgeWeights",
    "LossOutput",
    "Registry",
    "SearchCell",
    "SearchNetwork",
    "SearchSpace",
    "Supernet",
    "UnknownNameError",
    "active_ops",
    "argmax_genotype",
    "count_macs",
    "count_parameters",
    "drop_path",
    "genotype_weights",
    "load_genotype",
    "make_op",
    "one_op_cell",
    "prune_cell",
]

_LAZY = {"AuxiliaryHeadCIFAR", "AuxiliaryHeadImageNet", "NetworkCIFAR", "NetworkImageNet", "SearchNetwork"}


def __getattr__(name: str):
    if name in _LAZY:
        from . import cnn

        return getattr(cnn, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

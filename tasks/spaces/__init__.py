"""Search spaces: ops, cells, networks, genotypes and cost counting."""

from .cell import Cell, SearchCell, active_ops, drop_path
from .cnn import AuxiliaryHeadCIFAR, AuxiliaryHeadImageNet, NetworkCIFAR, NetworkImageNet, SearchNetwork
from .cost import MacCount, count_macs, count_parameters
from .errors import ConfigError, DataError, DataNotFoundError, UserError
from .genotype import (
    DARTS_V1,
    DARTS_V2,
    SPACES,
    CellGenotype,
    Genotype,
    GenotypeError,
    SearchSpace,
    genotype_weights,
    prune_cell,
)
from .genotypes import GENOTYPES, load_genotype
from .ops import OPS, PRIMITIVES, make_op
from .registry import Registry, UnknownNameError
from .rnn import DARTS_V1_RNN, DARTS_V2_RNN, RNN_PRIMITIVES, RNNCell, RNNModel, SearchRNNCell, rnn_space
from .weighting import EdgeWeights, LossOutput

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
    "UnknownNameError",
    "active_ops",
    "count_macs",
    "count_parameters",
    "drop_path",
    "genotype_weights",
    "load_genotype",
    "make_op",
    "prune_cell",
]

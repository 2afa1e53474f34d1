"""What every layer shares and nothing of theirs: registry, errors, genotype, search-config base, schedules.

Spaces, methods, tasks and the harness import from here; this package imports only the standard
library and torch.
"""

from .config import WEIGHT_FIELDS, SearchConfig
from .errors import ConfigError, DataError, DataNotFoundError, UnknownNameError, UserError, check_range
from .genotype import CellGenotype, Genotype, GenotypeError, prune_cell
from .registry import Registry
from .schedule import anneal, cosine_lr, set_lr

__all__ = [
    "WEIGHT_FIELDS",
    "CellGenotype",
    "ConfigError",
    "DataError",
    "DataNotFoundError",
    "Genotype",
    "GenotypeError",
    "Registry",
    "SearchConfig",
    "UnknownNameError",
    "UserError",
    "anneal",
    "check_range",
    "cosine_lr",
    "prune_cell",
    "set_lr",
]

"""Published cells by name: the ``GENOTYPES`` registry and :func:`load_genotype`.

``egsbench list genotypes`` prints the names; ``method: {name: fixed, genotype: NAME_OR_PATH}`` trains and
tests one without searching.

- ``darts_v1``, ``darts_v2``: DARTS first- and second-order cells (quark0/darts ``cnn/genotypes.py``
  ``DARTS_V1``/``DARTS_V2``), defined in :mod:`.space`.
- ``darts_v1_rnn``, ``darts_v2_rnn``: DARTS's recurrent cells (``rnn/genotypes.py``), defined in :mod:`.rnn`.
- ``egs_released_m4``, ``egs_released_m7``: the DARTS-EGS authors' released CIFAR-10 cells (XinbangZhang/DATA-NAS);
  several (input, op) pairs per node, so they belong to the ``dag`` space.
- ``gdas_v1``, ``pcdarts``, ``pdarts``, ``snas_mild``: GDAS, PC-DARTS, P-DARTS and SNAS (mild) CIFAR-10 cells.
These ``PUBLISHED`` cells ship as ``results/genotypes/<name>.json`` (read through ``importlib.resources``),
each with a ``"source"`` entry (paper, code, reported numbers) kept in ``SOURCES``, not in the genotype.

Parameter counts and the cells' sources: docs/fidelity/spaces.md, docs/fidelity/rnn.md
"""

from __future__ import annotations

import hashlib
import json
from importlib.resources import files
from pathlib import Path

from ...core.errors import UnknownNameError
from ...core.genotype import Genotype, GenotypeError
from ...core.registry import Registry, unknown_name_message
from .rnn import DARTS_V1_RNN, DARTS_V2_RNN
from .space import DARTS_V1, DARTS_V2

__all__ = ["GENOTYPES", "PUBLISHED", "SOURCES", "genotype_source", "load_genotype"]

RESULTS_PACKAGE = "egsbench.results"  # shipped data, read through importlib.resources

GENOTYPES: Registry[Genotype] = Registry("genotype")
GENOTYPES.add("darts_v1", DARTS_V1)
GENOTYPES.add("darts_v2", DARTS_V2)
GENOTYPES.add("darts_v1_rnn", DARTS_V1_RNN)  # recurrent cells: spaces darts_rnn / dag_rnn, tasks ptb / wt2
GENOTYPES.add("darts_v2_rnn", DARTS_V2_RNN)
PUBLISHED = ("egs-released-m4", "egs-released-m7", "gdas-v1", "pcdarts", "pdarts", "snas-mild")  # results/genotypes/
SOURCES: dict[str, dict] = {}  # name -> the file's "source" entry (paper, code, reported numbers)
for _stem in PUBLISHED:
    _data = json.loads((files(RESULTS_PACKAGE) / "genotypes" / f"{_stem}.json").read_text())
    GENOTYPES.add(_stem.replace("-", "_"), Genotype.from_dict(_data))  # from_dict skips the "source" entry
    if "source" in _data:
        SOURCES[_stem.replace("-", "_")] = _data["source"]


def load_genotype(name_or_path: str) -> Genotype:
    """A registered genotype by name, else the genotype JSON file at that path, or a run folder's ``genotype.json``.

    Raises:
        UnknownNameError: neither a registered name nor an existing file; the message lists the names.
        GenotypeError: the file is not a valid genotype.

    Examples:
        >>> len(load_genotype("darts_v2")["normal"].edges)
        8
    """
    if name_or_path in GENOTYPES:
        return GENOTYPES.get(name_or_path)
    path = Path(name_or_path).expanduser()
    if path.is_dir() and (path / "genotype.json").is_file():  # a finished run's folder (e.g. a CIFAR-10 search)
        path = path / "genotype.json"
    if path.is_file():
        try:
            return Genotype.load(path)
        except GenotypeError as err:
            raise GenotypeError(f"{path}: {err}") from None
    raise UnknownNameError(
        unknown_name_message("genotype", name_or_path, GENOTYPES.names())
        + " (or pass the path of a genotype JSON file or of a run folder holding genotype.json; see "
        "`egsbench list genotypes`)"
    )


def genotype_source(name_or_path: str) -> dict:
    """Where a genotype given as ``name_or_path`` came from, for a run record (a transfer run's provenance).

    A registered name gives ``{"name": ...}``; a file or run folder gives its resolved ``path``, the
    ``sha256`` of the genotype file, and, when the folder holds the ``record.json`` of the run that
    derived it, that run's ``method``, ``task``, ``preset``, ``seed`` and ``config_hash``.

    Examples:
        >>> genotype_source("darts_v2")
        {'name': 'darts_v2'}
    """
    if name_or_path in GENOTYPES:
        return {"name": name_or_path}
    path = Path(name_or_path).expanduser().resolve()
    file = path / "genotype.json" if path.is_dir() else path
    source: dict = {"path": str(file), "sha256": hashlib.sha256(file.read_bytes()).hexdigest()}
    record = file.parent / "record.json"
    if record.is_file():
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):  # a record that does not parse says nothing about the cell
            return source
        source["run"] = {k: data.get(k) for k in ("method", "task", "preset", "seed", "config_hash")}
    return source

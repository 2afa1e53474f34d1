"""``egsbench genotype convert``: a genotype from wherever it is, written in another project's form.

A source is a registered name (``egsbench list genotypes``), a genotype JSON file, a run folder (its
``genotype.json``), DARTS's ``Genotype(normal=[...], ...)`` text or NAS-Bench-201's ``|op~0|+|...|`` arch
string, given on the command line or in a file. The forms: :mod:`egsbench.core.genotype_formats`.
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import UnknownNameError, UserError
from ..core.genotype import Genotype, GenotypeError
from ..core.genotype_formats import from_darts_string, from_nb201_string, to_darts_string, to_nb201_string
from ..core.registry import unknown_name_message
from ..tasks.spaces.genotypes import GENOTYPES

__all__ = ["FORMS", "SOURCE_FORMS", "format_genotype", "read_genotype"]

FORMS = ("json", "darts", "nb201")  # what a genotype can be written as
SOURCE_FORMS = ("name", *FORMS)  # what --from accepts
_READERS = {"json": Genotype.from_json, "darts": from_darts_string, "nb201": from_nb201_string}
_WRITERS = {"json": Genotype.to_json, "darts": to_darts_string, "nb201": to_nb201_string}


def detect_form(text: str) -> str:
    """``json`` for an object, ``nb201`` for a ``|``-led arch string, else ``darts``.

    Examples:
        >>> [detect_form(t) for t in ('{"normal": []}', "|skip_connect~0|", "Genotype(normal=[])")]
        ['json', 'nb201', 'darts']
    """
    head = text.lstrip()[:1]
    return {"{": "json", "|": "nb201"}.get(head, "darts")


def _existing(source: str) -> Path | None:
    """``source`` as an existing file or folder, else None (a long DARTS string is no path, not an OSError)."""
    try:
        path = Path(source).expanduser()
        return path if path.exists() else None
    except (OSError, ValueError):
        return None


def _looks_like_a_name(source: str) -> bool:
    return bool(source) and all(c.isalnum() or c in "_-." for c in source)


def read_genotype(source: str, form: str | None = None) -> Genotype:
    """The genotype ``source`` names or holds; ``form`` (one of ``SOURCE_FORMS``) skips detection.

    Raises:
        UnknownNameError: a name that is not registered (the message lists the closest).
        GenotypeError: text or a file that does not parse; the message names the file and the bad token.

    Examples:
        >>> read_genotype("|nor_conv_3x3~0|+|skip_connect~0|none~1|").to_dict()
        {'normal': [[0, 1, 'nor_conv_3x3'], [0, 2, 'skip_connect']], 'normal_concat': [2]}
        >>> read_genotype("darts_v2") == read_genotype(format_genotype(read_genotype("darts_v2"), "darts"))
        True
    """
    if form is not None and form not in SOURCE_FORMS:
        raise UnknownNameError(unknown_name_message("genotype form", form, list(SOURCE_FORMS)))
    if form in (None, "name") and source in GENOTYPES:
        return GENOTYPES.get(source)
    path = None if form == "name" else _existing(source)
    if form == "name" or (path is None and form is None and _looks_like_a_name(source)):
        raise UnknownNameError(
            unknown_name_message("genotype", source, GENOTYPES.names())
            + " (or pass a genotype JSON file, a run folder, a DARTS Genotype(...) string or an NAS-Bench-201 "
            "arch string)"
        )
    if path is not None and path.is_dir():
        path = path / "genotype.json"
        if not path.is_file():
            raise UserError(f"{path.parent} is a folder without genotype.json; pass a run folder or a genotype file")
    text = path.read_text() if path is not None else source
    form = form or detect_form(text)
    try:
        return _READERS[form](text)
    except GenotypeError as err:
        where = f"{path}: " if path is not None else ""
        raise GenotypeError(f"{where}{err} (read as {form}; pass --from to choose another form)") from None


def format_genotype(genotype: Genotype, form: str) -> str:
    """``genotype`` as text of ``form`` (one of ``FORMS``): JSON on one line, DARTS's or NAS-Bench-201's string.

    Examples:
        >>> print(format_genotype(read_genotype("darts_v2_rnn"), "darts")[:52])
        Genotype(recurrent=[('sigmoid', 0), ('relu', 1), ('r
    """
    if form not in _WRITERS:
        raise UnknownNameError(unknown_name_message("genotype form", form, list(FORMS)))
    return _WRITERS[form](genotype)

"""DARTS's ``Genotype(...)`` text and NAS-Bench-201's arch string: round trips over the registry, and every
malformed input raises a GenotypeError that names what was wrong."""

from __future__ import annotations

import pytest

from egsbench.core.genotype_formats import from_darts_string, from_nb201_string, to_darts_string, to_nb201_string
from egsbench.tasks.spaces import DARTS_V1, DARTS_V2, DARTS_V2_RNN, GENOTYPES, SPACES, Genotype, GenotypeError

# quark0/darts cnn/genotypes.py DARTS_V2, as printed there (lists) and as a search log prints it (range)
DARTS_V2_TEXT = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])"
)
RNN_V2_TEXT = (
    "Genotype(recurrent=[('sigmoid', 0), ('relu', 1), ('relu', 1), ('identity', 1), ('tanh', 2), ('sigmoid', 5), "
    "('tanh', 3), ('relu', 5)], concat=range(1, 9))"
)
NB201_TEXT = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def _darts_form(genotype: Genotype) -> bool:
    """Whether a registered cell belongs to a space of DARTS's form (darts, darts_rnn)."""
    space = SPACES.get("darts_rnn" if "recurrent" in genotype.cells else "darts")
    try:
        space.validate(genotype)
    except GenotypeError:
        return False
    return True


@pytest.mark.parametrize("name", GENOTYPES.names())
def test_every_registered_cell_of_darts_form_round_trips_and_the_others_are_refused(name):
    genotype = GENOTYPES.get(name)
    if _darts_form(genotype):
        assert from_darts_string(to_darts_string(genotype)) == genotype
    else:  # the released EGS cells: several (input, op) pairs per node
        with pytest.raises(GenotypeError, match=r"node \d has \d input\(s\); DARTS's Genotype form holds exactly"):
            to_darts_string(genotype)


def test_darts_text_reads_as_the_original_and_writes_back_with_range():
    assert from_darts_string(DARTS_V2_TEXT) == DARTS_V2
    assert to_darts_string(DARTS_V2) == DARTS_V2_TEXT.replace("[2, 3, 4, 5]", "range(2, 6)")
    assert from_darts_string(RNN_V2_TEXT) == DARTS_V2_RNN
    assert to_darts_string(DARTS_V2_RNN) == RNN_V2_TEXT


@pytest.mark.parametrize(
    "text",
    [
        DARTS_V2_TEXT.replace("[2, 3, 4, 5]", "range(2, 6)"),
        DARTS_V2_TEXT.replace("[2, 3, 4, 5]", "(2, 3, 4, 5)"),
        DARTS_V2_TEXT.replace("[2, 3, 4, 5]", "list(range(2, 6))"),
        DARTS_V2_TEXT.replace("Genotype(", "genotypes.Genotype(", 1),  # a qualified name
        DARTS_V2_TEXT.replace("Genotype(", "MyCell(", 1),  # any namedtuple name
        DARTS_V2_TEXT[len("Genotype(") : -1],  # no wrapper
        DARTS_V2_TEXT[len("Genotype") :],  # parentheses, no name
        "DARTS_V2 = " + DARTS_V2_TEXT,  # a line of a genotypes.py
        "\n  " + DARTS_V2_TEXT.replace(", ", ",\n    ") + "\n",  # spread over lines
        DARTS_V2_TEXT.replace("('", "['").replace("), ", "], ").replace(")]", "]]"),  # lists for pairs
    ],
)
def test_darts_text_variants(text):
    assert from_darts_string(text) == DARTS_V2


@pytest.mark.parametrize(
    "text, message",
    [
        ("hello", "not a DARTS genotype: hello"),
        ("Genotype(normal=__import__('os').system('true'), normal_concat=[2])", "is not a literal list"),
        ("Genotype(normal=[('skip_connect', 0), ('sep_conv_3x3', 'one')], normal_concat=[2])", "entry 1"),
        ("Genotype(normal=[('skip_connect', 0)], normal_concat=[2])", "has 1 entries; DARTS's form needs 2 per node"),
        ("Genotype(normal=[('skip_connect', 0), ('skip_connect', 1)])", "has 'normal' but no 'normal_concat'"),
        ("Genotype(normal=[], normal_concat=[], reduce_concat=[2])", "field 'reduce_concat' has no cell list"),
        ("Genotype(normal=[], normal_concat=range(10**12))", "is not a literal list"),
        ("Genotype(normal=[], normal_concat=range(0, 1000000000000))", "is not a literal list"),
        ("Genotype(normal=[], normal_concat=range(0, 4, 0))", "is not a literal list"),
        ("Genotype(**cells)", "not a DARTS genotype"),
    ],
)
def test_bad_darts_text_raises_naming_the_problem(text, message):
    with pytest.raises(GenotypeError, match=message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        from_darts_string(text)


def test_darts_form_refuses_gaps_between_nodes():
    gap = Genotype.from_dict({"normal": [[0, 2, "skip_connect"], [1, 2, "skip_connect"], [0, 4, "skip_connect"],
                                         [1, 4, "skip_connect"]], "normal_concat": [2, 4]})  # fmt: skip
    with pytest.raises(GenotypeError, match=r"intermediate nodes \[2, 4\] are not numbered 2, 3"):
        to_darts_string(gap)


def test_nb201_round_trip_fills_and_drops_none():
    genotype = from_nb201_string(NB201_TEXT)
    assert genotype.to_dict() == {
        "normal": [[0, 1, "nor_conv_3x3"], [0, 2, "nor_conv_3x3"], [1, 2, "avg_pool_3x3"], [0, 3, "skip_connect"],
                   [1, 3, "nor_conv_3x3"], [2, 3, "skip_connect"]],
        "normal_concat": [3],
    }  # fmt: skip
    assert to_nb201_string(genotype) == NB201_TEXT
    sparse = from_nb201_string("|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|")
    assert sparse.to_dict() == {"normal": [[0, 3, "skip_connect"]], "normal_concat": [3]}
    assert to_nb201_string(sparse) == "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"
    shuffled = from_nb201_string("|nor_conv_3x3~0|+|avg_pool_3x3~1|nor_conv_3x3~0|+" + NB201_TEXT.split("+")[2])
    assert shuffled == genotype  # edges come out in (dst, src) order whatever order the text had


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "node 1's group '' is not |op~input|"),
        ("nor_conv_3x3~0", "node 1's group 'nor_conv_3x3~0' is not |op~input|"),
        ("|nor_conv_3x3-0|", "token 'nor_conv_3x3-0' of node 1 is not op~input"),
        ("|nor_conv_3x3~a|", "token 'nor_conv_3x3~a' of node 1 is not op~input"),
        ("|~0|", "token '~0' of node 1 is not op~input"),
        (
            "|skip_connect~0|+|skip_connect~0|skip_connect~2|",
            "token 'skip_connect~2' of node 2 reads node 2; node 2 reads each of nodes 0..1 once",
        ),
        ("|skip_connect~0|+|skip_connect~0|none~0|", "token 'none~0' of node 2 repeats input 0"),
    ],
)
def test_bad_nb201_text_raises_naming_the_token(text, message):
    with pytest.raises(GenotypeError, match=message.replace("|", r"\|").replace("(", r"\(")):
        from_nb201_string(text)


@pytest.mark.parametrize(
    "genotype, message",
    [
        (DARTS_V1, "holds one cell, 'normal'; this genotype has \\['normal', 'reduce'\\]"),
        (
            Genotype.from_dict({"normal": [[0, 1, "skip_connect"], [0, 1, "nor_conv_3x3"]], "normal_concat": [1]}),
            "edge \\(0, 1\\) has ops 'skip_connect' and 'nor_conv_3x3'",
        ),
        (
            Genotype.from_dict({"normal": [[0, 1, "skip_connect"], [1, 2, "skip_connect"]], "normal_concat": [1]}),
            "'normal_concat' \\[1\\]: an NAS-Bench-201 cell outputs its last node only",
        ),
        (Genotype.from_dict({"normal": [[0, 1, "a|b"]], "normal_concat": [1]}), "op 'a\\|b' cannot be written"),
        (Genotype.from_dict({"normal": [[1, 1, "skip_connect"]], "normal_concat": [1]}), "does not go forward"),
    ],
)
def test_genotypes_an_nb201_string_cannot_hold_are_refused(genotype, message):
    with pytest.raises(GenotypeError, match=message):
        to_nb201_string(genotype)

from __future__ import annotations

import json

import pytest

from egsbench.tasks.spaces import DARTS_V1, DARTS_V2, SPACES, CellGenotype, Genotype, GenotypeError, prune_cell


@pytest.mark.parametrize("genotype", [DARTS_V1, DARTS_V2])
def test_json_round_trip_is_lossless(genotype, tmp_path):
    assert Genotype.from_json(genotype.to_json()) == genotype
    genotype.save(tmp_path / "g.json")
    assert Genotype.load(tmp_path / "g.json") == genotype
    data = json.loads(genotype.to_json())
    assert list(data) == ["normal", "normal_concat", "reduce", "reduce_concat"]
    assert data["normal"][0][1:] == [2, "sep_conv_3x3"]  # first entry feeds node 2


def test_round_trip_keeps_several_ops_per_edge_and_order():
    g = Genotype.from_dict(
        {
            "normal": [[1, 2, "skip_connect"], [0, 2, "sep_conv_3x3"], [0, 2, "max_pool_3x3"], [2, 3, "dil_conv_5x5"]],
            "normal_concat": [3, 2],
        }
    )
    again = Genotype.from_json(g.to_json())
    assert again == g and again.to_dict() == g.to_dict()
    assert again["normal"].ops_on(0, 2) == ["sep_conv_3x3", "max_pool_3x3"]


def test_darts_space_accepts_published_cells_and_dag_accepts_any_in_degree():
    SPACES.get("darts").validate(DARTS_V2)
    g = Genotype(
        {
            t: CellGenotype(((0, 2, "skip_connect"), (0, 2, "sep_conv_3x3"), (2, 5, "max_pool_3x3")), (2, 5))
            for t in ("normal", "reduce")
        }
    )
    SPACES.get("dag").validate(g)
    with pytest.raises(GenotypeError, match="node 2 has 2 inputs|node 3 has 0 inputs"):
        SPACES.get("darts").validate(g)


@pytest.mark.parametrize(
    "edges, concat, message",
    [
        ([[0, 2, "none"]], [2], "not a valid op"),
        ([[0, 2, "conv_9x9"]], [2], "not a valid op"),
        ([[3, 2, "skip_connect"]], [2], "not in the space"),
        ([[0, 6, "skip_connect"]], [2], "not in the space"),
        ([[0, 2, "skip_connect"], [0, 2, "skip_connect"]], [2], "listed twice"),
        ([[3, 4, "skip_connect"]], [4], "no inputs"),
        ([[0, 2, "skip_connect"]], [3], "concat node 3"),
        ([[0, 2, "skip_connect"]], [], "concat is empty"),
    ],
)
def test_invalid_genotypes_name_the_problem(edges, concat, message):
    cell = {"normal": edges, "normal_concat": concat, "reduce": [[0, 2, "skip_connect"]], "reduce_concat": [2]}
    with pytest.raises(GenotypeError, match=message):
        SPACES.get("dag").validate(Genotype.from_dict(cell))


def test_malformed_json_raises_genotype_error():
    with pytest.raises(GenotypeError, match="not valid JSON"):
        Genotype.from_json("{")
    with pytest.raises(GenotypeError, match="no 'normal_concat'"):
        Genotype.from_dict({"normal": []})
    with pytest.raises(GenotypeError, match="triples"):
        Genotype.from_dict({"normal": [[0, 2]], "normal_concat": [2]})


@pytest.mark.parametrize(
    ("edges", "concat", "message"),
    [
        # bool is an int in Python: [true, 2, op] became edge (1, 2, op), reported as "listed twice" beside [1, 2, op]
        (
            [[True, 2, "sep_conv_3x3"], [1, 2, "sep_conv_3x3"]],
            [2],
            "genotype 'normal': edge [true, 2, \"sep_conv_3x3\"]: src true is a boolean, not a node index",
        ),
        ([[0, False, "sep_conv_3x3"]], [2], 'edge [0, false, "sep_conv_3x3"]: dst false is a boolean'),
        ([[0, 2, "sep_conv_3x3"]], [True], "genotype 'normal_concat': true is a boolean, not a node index"),
        ([[0, 2.5, "sep_conv_3x3"]], [2], 'edge [0, 2.5, "sep_conv_3x3"]: dst 2.5 is a fraction, not a node index'),
    ],
)
def test_node_indices_must_be_integers(edges, concat, message):
    with pytest.raises(GenotypeError) as err:
        Genotype.from_dict({"normal": edges, "normal_concat": concat})
    assert message in str(err.value) and str(err.value).endswith("write node indices as integers (0, 1, ...)")
    assert Genotype.from_dict({"normal": [[0, 2.0, "sep_conv_3x3"]], "normal_concat": [2]})["normal"].edges == (
        (0, 2, "sep_conv_3x3"),
    )  # an integral float (2.0) is the node it names


def test_prune_cell_drops_dead_nodes():
    cell = prune_cell([(3, 4, "skip_connect"), (0, 2, "sep_conv_3x3"), (2, 5, "max_pool_3x3")], 2, 4)
    assert cell.edges == ((0, 2, "sep_conv_3x3"), (2, 5, "max_pool_3x3"))
    assert cell.concat == (2, 5)

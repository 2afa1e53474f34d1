"""``egsbench genotype convert``: every kind of source, every form, the --out file, and one-line errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from egsbench.benchmark.cli import _parser, main
from egsbench.benchmark.genotype_convert import FORMS, SOURCE_FORMS, detect_form, format_genotype, read_genotype
from egsbench.core.genotype_formats import from_darts_string, to_darts_string
from egsbench.tasks.spaces import DARTS_V2, DARTS_V2_RNN, GENOTYPES, Genotype, GenotypeError

NB201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def convert(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["genotype", "convert", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_parser_offers_the_module_forms():
    for form in FORMS:
        assert _parser().parse_args(["genotype", "convert", "darts_v2", "--to", form]).to == form
    for form in SOURCE_FORMS:
        assert _parser().parse_args(["genotype", "convert", "x", "--to", "json", "--from", form]).source_form == form
    with pytest.raises(SystemExit):
        _parser().parse_args(["genotype", "convert", "darts_v2", "--to", "yaml"])


def test_a_name_prints_in_each_form_and_reads_back(capsys):
    code, out, err = convert(capsys, "darts_v2", "--to", "darts")
    assert code == 0 and not err and from_darts_string(out) == DARTS_V2
    code, out, _ = convert(capsys, out.strip(), "--to", "json")  # the DARTS text as SOURCE
    assert code == 0 and Genotype.from_json(out) == DARTS_V2
    code, out, _ = convert(capsys, NB201, "--to", "nb201")
    assert code == 0 and out == NB201 + "\n"


def test_files_and_run_folders(capsys, tmp_path):
    code, out, _ = convert(capsys, "darts_v2_rnn", "--to", "json", "--out", tmp_path / "cell.json")
    assert code == 0 and out == f"genotype: {tmp_path / 'cell.json'}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cell.json"]  # written atomically: no temporary left
    assert Genotype.load(tmp_path / "cell.json") == DARTS_V2_RNN
    run = tmp_path / "run"
    run.mkdir()
    DARTS_V2.save(run / "genotype.json")
    assert convert(capsys, run, "--to", "darts")[1].strip() == to_darts_string(DARTS_V2)
    text = tmp_path / "genotypes.py"
    text.write_text(f"DARTS_V2 = {to_darts_string(DARTS_V2)}\n")  # a line of a DARTS genotypes.py
    assert Genotype.from_json(convert(capsys, text, "--to", "json")[1]) == DARTS_V2
    (tmp_path / "arch.txt").write_text(NB201 + "\n")
    assert convert(capsys, tmp_path / "arch.txt", "--to", "nb201")[1].strip() == NB201


def test_a_shipped_file_with_its_source_entry_converts(capsys):
    from importlib.resources import files

    path = files("egsbench.results") / "genotypes" / "pcdarts.json"
    assert "source" in json.loads(path.read_text())
    code, out, _ = convert(capsys, path, "--to", "darts")
    assert code == 0 and from_darts_string(out) == GENOTYPES.get("pcdarts")


@pytest.mark.parametrize(
    "args, message",
    [
        (["darts_v3", "--to", "json"], "unknown genotype 'darts_v3'; did you mean 'darts_v2'?"),
        (["darts_v2", "--to", "json", "--from", "nb201"], "node 1's group 'darts_v2' is not |op~input|...|"),
        (["egs_released_m7", "--to", "darts"], "DARTS's Genotype form holds exactly 2 (op, input) pair(s) per node"),
        (["darts_v2", "--to", "nb201"], "holds one cell, 'normal'"),
        (["|nor_conv_3x3~0|+|skip_connect~3|", "--to", "json"], "token 'skip_connect~3' of node 2"),
        (["Genotype(normal=[('skip_connect', 0)], normal_concat=[2])", "--to", "json"], "DARTS's form needs 2"),
        (["|skip_connect~0|", "--to", "json", "--from", "name"], "unknown genotype '|skip_connect~0|'"),
    ],
)
def test_user_mistakes_exit_2_with_one_error_line(capsys, args, message):
    code, out, err = convert(capsys, *args)
    assert code == 2 and not out
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert message in err


def test_out_refuses_a_folder_and_leaves_it_alone(capsys, tmp_path):
    code, _, err = convert(capsys, "darts_v2", "--to", "json", "--out", tmp_path)
    assert code == 2 and f"--out {tmp_path} is a folder" in err and not list(tmp_path.iterdir())
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = convert(capsys, empty, "--to", "json")
    assert code == 2 and "is a folder without genotype.json" in err


def test_a_bad_genotype_file_names_the_file(capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"normal": [[0, 2]], "normal_concat": [2]}')
    code, _, err = convert(capsys, bad, "--to", "darts")
    assert code == 2 and err.startswith(f"error: {bad}: genotype 'normal' must be a list of [src, dst, op] triples")


def test_detection_and_the_python_api():
    assert [detect_form(t) for t in (' {"a": 1}', NB201, "normal=[]")] == ["json", "nb201", "darts"]
    assert format_genotype(read_genotype(NB201), "nb201") == NB201
    with pytest.raises(GenotypeError, match="not a DARTS genotype"):  # too long for a path: no OSError on the way
        read_genotype("x" * 5000 + "(")


def test_the_command_line_prints_no_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "egsbench", "genotype", "convert", "egs_released_m4", "--to", "nb201"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: an NAS-Bench-201 arch string holds one cell, 'normal'; "
                                                 "this genotype has ['normal', 'reduce']"]  # fmt: skip


def test_a_reader_that_closes_stdout_ends_the_command_quietly(monkeypatch, tmp_path):
    """``egsbench ... | head``: the CLI exits 141 (as SIGPIPE would) instead of printing a BrokenPipeError traceback."""

    class ClosedPipe(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def fileno(self):
            return sink.fileno()

    with open(tmp_path / "sink", "w") as sink:
        monkeypatch.setattr(sys, "stdout", ClosedPipe())
        assert main(["genotype", "convert", "darts_v2", "--to", "darts"]) == 141

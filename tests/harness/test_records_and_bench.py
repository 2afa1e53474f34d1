from __future__ import annotations

import json

import pytest

from egsbench.benchmark.records import atomic_write_text, manifest, write_csv, write_json


def test_atomic_write_replaces_whole_files_and_leaves_nothing_on_failure(tmp_path):
    path = tmp_path / "record.json"
    write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}

    with pytest.raises(TypeError):
        write_json(path, {"a": object()})  # not serialisable: fails before anything is written
    with pytest.raises(TypeError):
        atomic_write_text(path, None)  # fails while writing the temporary file
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_write_csv_unions_columns(tmp_path):
    write_csv(tmp_path / "c.csv", [{"epoch": 0, "loss": 1.0}, {"epoch": 1, "loss": 0.5, "test_accuracy": 40.0}])
    lines = (tmp_path / "c.csv").read_text().splitlines()
    assert lines[0] == "epoch,loss,test_accuracy" and lines[2] == "1,0.5,40.0"


def test_manifest_names_versions_and_device():
    m = manifest("cpu")
    assert m["device"] == "cpu" and m["packages"]["torch"] and m["python"]


def test_atomic_files_get_the_usual_mode(tmp_path):
    import os
    import stat

    umask = os.umask(0o022)
    os.umask(umask)
    write_json(tmp_path / "r.json", {})
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o666 & ~umask

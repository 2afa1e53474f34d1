"""The case table of issue 9: every user mistake and failure through the real CLI, as a Markdown table.

Builds its fixtures (ImageFolder trees of PNG/JPEG, a .tar.gz, bad configs and records) in a temporary
folder, runs ``python -m egsbench ...`` once per case and prints: the command, the exit code, the
``error:`` line (or the warning, for the cases that recover) and what was left behind.

    python scripts/reliability_cases.py            # about ten minutes on two busy CPU cores
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from egsbench.testing.reliability import BASE, FAST, image, image_folder, overrides, snapshot


def egsbench(*args, wait: bool = True):
    command = [sys.executable, "-m", "egsbench", *map(str, args)]
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def fixtures(tmp: Path) -> dict[str, Path]:
    fx = {}
    shutil.rmtree(image_folder(tmp / "no-class-folders") / "train")
    (tmp / "no-class-folders" / "train").mkdir()
    fx["no-class-folders"] = tmp / "no-class-folders"
    for f in (image_folder(tmp / "empty-class") / "train" / "dog").iterdir():
        f.unlink()
    fx["empty-class"] = tmp / "empty-class"
    (image_folder(tmp / "corrupt") / "train" / "dog" / "2.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    fx["corrupt"] = tmp / "corrupt"
    fx["class-mismatch"] = image_folder(tmp / "class-mismatch", test_classes=("cat",))
    shutil.make_archive(str(tmp / "whole"), "gztar", tmp, "corrupt")
    whole = (tmp / "whole.tar.gz").read_bytes()
    (tmp / "truncated.tar.gz").write_bytes(whole[: len(whole) // 2])
    fx["truncated"] = tmp / "truncated.tar.gz"
    image(image_folder(tmp / "mixed") / "train" / "cat" / "9.png", 48)
    fx["mixed"] = tmp / "mixed"
    fx["64x64"] = image_folder(tmp / "big", size=64)
    (tmp / "latin1.yaml").write_bytes("# caf\xe9\npreset: smoke\nmethod: {name: gdas}\n".encode("latin-1"))
    (tmp / "list.yaml").write_text("- preset: smoke\n- method: {name: gdas}\n")
    (tmp / "a-file").write_text("not a folder\n")
    return fx


def records(tmp: Path) -> dict[str, Path]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.harness.test_records import make_record

    good = make_record()
    cases = {
        "torn": b'{"schema_version": 3, "meth',
        "incomplete": json.dumps({k: v for k, v in good.items() if k != "metrics"}).encode(),
        "schema-9": json.dumps(good | {"schema_version": 9}).encode(),
        "string-M": json.dumps(good | {"config": good["config"] | {"method": {"name": "egs", "M": "7"}}}).encode(),
        "latin1": json.dumps(good).replace('"egs"', '"egs\\u00e9"', 1).encode().replace(b"\\u00e9", b"\xe9"),
    }
    out = {}
    for name, content in cases.items():
        (tmp / "records" / name / "run").mkdir(parents=True)
        (tmp / "records" / name / "run" / "record.json").write_bytes(content)
        out[name] = tmp / "records" / name
    (tmp / "records" / "empty").mkdir()
    out["empty"] = tmp / "records" / "empty"
    return out


def line(proc, want: str = "error:") -> str:
    found = [x for x in (proc.stderr + proc.stdout).splitlines() if x.startswith(want) or want in x]
    return found[-1] if found else ""


def row(rows: list, command: str, proc, left: str, want: str = "error:") -> None:
    traceback = " (TRACEBACK)" if "Traceback" in proc.stderr else ""
    rows.append((command, proc.returncode, line(proc, want) + traceback, left))
    print(f"{proc.returncode} {command}", file=sys.stderr)


def left_run(out: Path) -> str:
    return "nothing (no --out folder)" if not out.exists() else "FOLDER: " + ", ".join(sorted(snapshot(out))[:6])


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="egsbench-cases-"))
    os.environ["EGSBENCH_CACHE"] = str(tmp / "cache")
    fx, rx, rows = fixtures(tmp), records(tmp), []
    out = tmp / "out"

    configs = [
        ["search.lr=.nan"],
        ["evaluate.lr=.inf"],
        ["evaluate.epochs=0"],
        ["search.epochs=0"],
        ["search.batch_size=0"],
        ["evaluate.batch_size=0"],
        ["search.channels=0"],
        ["evaluate.layers=0"],
        ["seed=-1"],
        ["search.lr=1e6", "search.batch_size=0"],
    ]
    for values in configs:
        row(
            rows,
            f"run {BASE} " + " ".join(f"--set {v}" for v in values),
            egsbench("run", BASE, "--out", out, *overrides(*values)),
            left_run(out),
        )
    for name in ("latin1.yaml", "list.yaml"):
        extra = ["--set", "seed=1"] if name == "list.yaml" else []
        row(rows, f"run {name} {' '.join(extra)}", egsbench("run", tmp / name, "--out", out, *extra), left_run(out))
    for name, data in fx.items():
        before = snapshot(data)
        proc = egsbench("run", BASE, "--out", out, *overrides(*FAST, f"task.data_dir={data}"))
        row(
            rows,
            f"run {BASE} --set task.data_dir=<{name}>",
            proc,
            left_run(out) + ("; data unchanged" if snapshot(data) == before else "; DATA CHANGED"),
        )
    for target in (tmp / "a-file", Path("/sys/egsbench-run")):
        before = snapshot(target)
        proc = egsbench("run", BASE, "--out", target, *overrides(*FAST))
        row(
            rows,
            f"run {BASE} --out {'<a file>' if target.name == 'a-file' else target}",
            proc,
            "unchanged" if snapshot(target) == before else "CHANGED",
        )

    for values, name in (
        (
            [
                "search.lr=1000000.0",
                "evaluate.lr=1000000.0",
                "search.max_steps_per_epoch=2",
                "evaluate.max_steps_per_epoch=2",
            ],
            "lr-1e6",
        ),
        (["evaluate.epochs=2", "evaluate.lr=1e30", "evaluate.eval_every=0"], "eval-1e30"),
        (["search.lr=1e30"], "search-1e30"),
    ):
        folder = tmp / name
        proc = egsbench("run", BASE, "--out", folder, *overrides(*FAST, *values))
        record = json.loads((folder / "record.json").read_text(), parse_constant=lambda c: f"BARE {c}")
        kept = sorted(str(p.relative_to(folder)) for p in folder.glob("checkpoints/*/epoch-*"))
        row(
            rows,
            f"run {BASE} " + " ".join(f"--set {v}" for v in values if "max_steps" not in v),
            proc,
            f"record.json status {record['status']} (strict JSON); checkpoints kept: {', '.join(kept) or 'none'}",
        )

    busy = tmp / "busy"
    first = egsbench("run", BASE, "--out", busy, *overrides(*FAST, "search.epochs=50"), wait=False)
    while not ((busy / ".lock").exists() and (busy / "config.yaml").exists()) and first.poll() is None:
        time.sleep(0.1)
    before = snapshot(busy)
    second = egsbench("run", BASE, "--out", busy, *overrides(*FAST, "search.epochs=50", "seed=1"))
    unchanged = yaml.safe_load((busy / "config.yaml").read_text())["seed"] == 0 and "record.json" not in before
    row(
        rows,
        f"run {BASE} --out <folder of a running run> --set seed=1",
        second,
        "first run's folder untouched (its config.yaml says seed 0)" if unchanged else "MIXED",
    )
    first.send_signal(signal.SIGKILL)
    first.wait()

    torn = tmp / "torn"
    values = [*FAST, "search.epochs=6"]
    first = egsbench("run", BASE, "--out", torn, *overrides(*values), wait=False)
    while not (torn / "checkpoints" / "search" / "epoch-0002").exists() and first.poll() is None:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    newest = sorted((torn / "checkpoints" / "search").glob("epoch-*"))[-1]
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    copy = Path(shutil.copytree(torn, tmp / "torn-all"))
    proc = egsbench("run", BASE, "--out", torn, "--resume", *overrides(*values))
    resumed = next((x.split("] ")[-1] for x in proc.stderr.splitlines() if "resumed the search" in x), "")
    row(
        rows,
        f"run {BASE} --out <killed run, newest checkpoint {newest.name} truncated> --resume",
        proc,
        f"{resumed}; record status {json.loads((torn / 'record.json').read_text())['status']}",
        want="instead",
    )
    for folder in (copy / "checkpoints" / "search").glob("epoch-*"):
        (folder / "state.pt").write_bytes(b"")
    before = snapshot(copy)
    proc = egsbench("run", BASE, "--out", copy, "--resume", *overrides(*values))
    row(
        rows,
        f"run {BASE} --out <killed run, every checkpoint emptied> --resume",
        proc,
        "unchanged" if snapshot(copy) == before else "CHANGED",
    )

    for name, folder in rx.items():
        for command in (["report"], ["table"], ["regress"]):
            if name == "empty" and command == ["regress"]:
                continue
            before = snapshot(folder)
            proc = egsbench(*command, "--runs", folder)
            row(
                rows,
                f"{' '.join(command)} --runs <{name} record>"
                if name != "empty"
                else f"{' '.join(command)} --runs <empty folder>",
                proc,
                "unchanged" if snapshot(folder) == before else "CHANGED",
            )
    for command in (["report"], ["table"]):
        proc = egsbench(*command, "--runs", tmp / "missing")
        created = (tmp / "missing").exists()
        row(rows, f"{command[0]} --runs <missing>", proc, "CREATED" if created else "not created")

    sweep = tmp / "sweep.yaml"
    sweep.write_text(
        yaml.safe_dump({"name": "t", "methods": ["gdas"], "tasks": ["cifar10"], "presets": ["smoke"], "seeds": [0]})
    )
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from egsbench.benchmark.sweep import load_sweep, plan_runs

    [run] = plan_runs(load_sweep(sweep), tmp / "sweep-out")
    Path(run.folder).mkdir(parents=True)
    shutil.copy(rx["latin1"] / "run" / "record.json", Path(run.folder) / "record.json")
    before = snapshot(tmp / "sweep-out")
    proc = egsbench("sweep", sweep, "--out", tmp / "sweep-out")
    row(
        rows,
        "sweep <file> --out <folder with a non-UTF-8 record.json>",
        proc,
        "unchanged" if snapshot(tmp / "sweep-out") == before else "CHANGED",
    )

    print("| command | exit | error line | left behind |")
    print("| :-- | --: | :-- | :-- |")
    for command, code, error, left in rows:
        print(f"| `{command}` | {code} | {error.replace('|', '/')} | {left} |")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

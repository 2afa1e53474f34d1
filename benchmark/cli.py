"""``egsbench`` (also ``python -m egsbench``).

    egsbench run CONFIG --out DIR [--set key=value ...] [--resume] [--log-with tensorboard]
    egsbench list methods|tasks|spaces|configs|genotypes|sweeps
    egsbench demo [--out DIR]
    egsbench sweep SWEEP [--out DIR] [--shard I/N] [--set key=value ...]
    egsbench table [--runs DIR] [--format md|csv|latex|html] [--ablation]
    egsbench compare [--runs DIR] [--task TASK] [--baseline METHOD] [--metric NAME] [--format md|csv|latex]
                     [--plot PATH|none]
    egsbench regress [--runs DIR] [--tolerances FILE] [--golden DIR]
    egsbench regress --runs DIR --calibrate --out DIR | --update-golden --out DIR
    egsbench report [--runs DIR] [--out FILE]
    egsbench genotype convert SOURCE --to json|darts|nb201 [--from name|json|darts|nb201] [--out FILE]

A user mistake (unknown name, bad config key, missing data) prints one ``error:`` line and
exits with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import site
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

from ..tasks.spaces import UserError

__all__ = ["main"]

DEMO_CONFIGS = (
    "demo/egs-cifar10",
    "demo/darts-cifar10",
    "demo/snas-cifar10",
    "demo/gdas-cifar10",
    "demo/random-cifar10",
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="egsbench", description="Benchmark suite for differentiable NAS.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="search -> derive -> evaluate one config")
    run.add_argument(
        "config", help="a YAML path or a bundled name such as smoke/egs-cifar10 (see: egsbench list configs)"
    )
    run.add_argument("--out", required=True, type=Path, help="run folder to write (config, genotype, curves, record)")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set method.M=4 (repeatable)",
    )
    run.add_argument("--resume", action="store_true", help="continue an unfinished run in --out from its checkpoint")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    run.add_argument(
        "--source-run",
        type=Path,
        default=None,
        metavar="DIR",
        help="a transfer config's source search folder: run there, or reused when it holds the same "
        "config's search (default: <out>/source)",
    )
    run.add_argument(
        "--log-with",
        action="append",
        default=[],
        metavar="TRACKER",
        help="an accelerate tracker: tensorboard, wandb, mlflow, comet_ml, aim, ... (repeatable); logs go under --out",
    )

    lst = sub.add_parser("list", help="list registered components, bundled configs or bundled sweeps")
    lst.add_argument("what", choices=["methods", "tasks", "spaces", "configs", "genotypes", "sweeps"])

    demo = sub.add_parser("demo", help="run EGS on the embedded CIFAR-10 subset and print a results table")
    demo.add_argument("--out", type=Path, default=None, help="folder for the run folders (default: a temp dir)")
    demo.add_argument("--no-progress", action="store_true")

    sweep = sub.add_parser("sweep", help="run methods x tasks x presets x seeds; skips finished runs")
    sweep.add_argument(
        "sweep", help="a bundled sweep name such as smoke/five-methods (see: egsbench list sweeps) or a YAML path"
    )
    sweep.add_argument("--out", type=Path, default=None, help="output folder (default: the file's out: or runs/<name>)")
    sweep.add_argument("--shard", default="0/1", help="run only runs i, i+n, i+2n, ... (I/N), for parallel workers")
    sweep.add_argument(
        "--backend",
        default="local",
        choices=["local", "slurm", "ray"],
        help="where runs execute: local subprocesses, Slurm through submitit, or Ray tasks",
    )
    sweep.add_argument("--jobs", type=int, default=None, help="local: runs side by side (default: the file's jobs)")
    sweep.add_argument("--threads", type=int, default=None, help="intra-op threads per run (default: cores // jobs)")
    sweep.add_argument("--retries", type=int, default=None, help="extra attempts per failed run (default: file's)")
    sweep.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value of every run, after the file's set: (repeatable)",
    )
    sweep.add_argument("--address", default=None, help="ray: address of an existing cluster (default: a local one)")
    sweep.add_argument(
        "--cluster",
        default=None,
        choices=["slurm", "local", "debug"],
        help="slurm: submitit cluster (default: slurm if present; local: jobs run here)",
    )
    sweep.add_argument("--progress", action="store_true", help="(per-run logs go to <run>/attemptN.log)")
    sweep.add_argument("--report", action="store_true", help="write <out>/report.html at the end")

    table = sub.add_parser("table", help="mean +/- std over seeds beside the reported numbers")
    table.add_argument("--runs", type=Path, default=Path("runs"), help="folder of run folders (searched recursively)")
    table.add_argument("--format", default="md", choices=["md", "csv", "latex", "html"])
    table.add_argument("--task", help="the task of a single table (with --ablation or csv; default: the records' one)")
    table.add_argument("--ablation", action="store_true", help="the M-ablation table (paper Table 5) only")

    compare = sub.add_parser(
        "compare",
        help="methods against a baseline: Δ with a bootstrap CI, Welch + Holm p, "
        "wins, seeds needed, genotype agreement; a cost-vs-metric plot",
    )
    compare.add_argument("--runs", type=Path, default=Path("runs"), help="folder of run folders (searched recursively)")
    compare.add_argument("--task", default=None, help="the task to compare (default: each task of the records)")
    compare.add_argument(
        "--baseline",
        default=None,
        metavar="METHOD",
        help="method (or a row's label, e.g. 'darts (order=2)') the others are measured against "
        "(default: the method the task's reference table lists first, if it ran, else the first "
        "alphabetically)",
    )
    compare.add_argument(
        "--metric",
        default=None,
        metavar="NAME",
        help="a test metric of the task: error or test_error (default: its main metric)",
    )
    compare.add_argument("--format", default="md", choices=["md", "csv", "latex", "html"])
    compare.add_argument(
        "--plot",
        default=None,
        metavar="PATH",
        help="the metric-vs-search-cost figure (default: <runs>/compare_<task>_<metric>.png; none: no figure)",
    )

    regress = sub.add_parser(
        "regress", help="reproduced numbers against reported and golden ones; exit 1 on regression"
    )
    regress.add_argument("--runs", type=Path, default=Path("runs"))
    regress.add_argument("--tolerances", type=Path, default=None, help="default: results/tolerances.yaml")
    regress.add_argument("--golden", type=Path, default=None, help="default: results/golden")
    regress.add_argument(
        "--task",
        action="append",
        default=None,
        metavar="TASK",
        help="check only the golden records of this task (repeatable; default: all), e.g. "
        "--task cifar10 on a machine without the PTB files",
    )
    regress.add_argument(
        "--update-golden", action="store_true", help="copy the smoke records in --runs into --out as golden records"
    )
    regress.add_argument(
        "--calibrate",
        action="store_true",
        help="write --out/tolerances.yaml from the seed spread of smoke runs in --runs",
    )
    regress.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder that --calibrate / --update-golden write to (never inside site-packages), "
        "e.g. results/ or results/golden/ in a source checkout",
    )

    report = sub.add_parser("report", help="one self-contained HTML report of a folder of runs")
    report.add_argument("--runs", type=Path, default=Path("runs"))
    report.add_argument("--out", type=Path, default=None, help="default: <runs>/report.html")

    genotype = sub.add_parser("genotype", help="work with genotypes: convert between JSON, DARTS and NAS-Bench-201")
    genotype_sub = genotype.add_subparsers(dest="genotype_command", required=True)
    convert = genotype_sub.add_parser(
        "convert", help="print a genotype as JSON, DARTS's Genotype(...) text or an NAS-Bench-201 arch string"
    )
    convert.add_argument(
        "source",
        help="a registered name (see: egsbench list genotypes), a genotype JSON file, a run folder, "
        "a DARTS Genotype(...) string or an NAS-Bench-201 arch string (or a file holding either)",
    )
    convert.add_argument("--to", required=True, choices=["json", "darts", "nb201"], help="the form to write")
    convert.add_argument(
        "--from",
        dest="source_form",
        default=None,
        choices=["name", "json", "darts", "nb201"],
        help="what SOURCE is (default: detected: a name, a path, then { json, | nb201, else darts)",
    )
    convert.add_argument("--out", type=Path, default=None, help="write the text to FILE (atomically) instead of stdout")
    return parser


def _say(text: str) -> None:
    """Print on the main process only (``accelerate launch`` starts one CLI per process)."""
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(text)


def results_table(records: list[dict]) -> str:
    """A fixed-width table of run records, one row each: the task's test metrics, size and wall times."""
    import pandas as pd

    from .tables import runs_frame, signal_notes

    frame = runs_frame(records)
    frame["signal"] = 100 * pd.to_numeric(frame["entropy_drop"], errors="coerce")
    metrics = [c for c in frame.columns if str(c).startswith(("test_", "gt_"))]  # whatever the tasks record
    frame[metrics] = frame[metrics].apply(pd.to_numeric, errors="coerce")  # a null (a cell a lookup lacks): "-"
    columns = ["method", "task", "preset", "seed", *metrics, "params_m", "macs_m", "signal", "search_s", "evaluate_s"]
    labels = {
        "params_m": "params (M)",
        "macs_m": "MACs (M)",
        "search_s": "search (s)",
        "evaluate_s": "eval (s)",
        "signal": "search signal (ΔH %)",
    }
    table = frame.reindex(columns=columns).rename(columns=labels)
    text = table.to_string(index=False, float_format=lambda v: f"{v:.2f}", na_rep="-")
    return text + "".join(f"\nNote: {note}" for note in signal_notes(frame))


def _run(args) -> int:
    from .config import load_config
    from .runner import run_experiment

    cfg = load_config(args.config, args.overrides)
    if args.source_run is not None and cfg.transfer is None:
        raise UserError(
            f"--source-run is for a transfer config (one with transfer_from); {args.config} searches on "
            "its own task: drop --source-run"
        )
    result = run_experiment(
        cfg,
        args.out,
        progress=not args.no_progress,
        resume=args.resume,
        log_with=args.log_with,
        source_run=args.source_run,
    )
    _say(results_table([result.record]))
    _say(f"run folder: {result.out_dir}")
    return 0


def _list(args) -> int:
    from ..tasks.spaces import GENOTYPES
    from .config import bundled_configs
    from .registry import METHODS, SPACES, TASKS

    names = {"methods": METHODS, "tasks": TASKS, "spaces": SPACES, "genotypes": GENOTYPES}
    if args.what == "configs":
        print(config_catalogue(bundled_configs()))
    elif args.what == "sweeps":
        print(sweep_catalogue())
    else:
        print("\n".join(names[args.what].names()))
    return 0


def config_catalogue(configs: list[str], width: int = 110) -> str:
    """One line per config: its name, the paper rows it reproduces (``paper`` configs: ``[Table 1: DARTS-EGS
    (M=7)]``) and the first line of its comment, cut to ``width`` characters."""
    from .config import config_description, load_config
    from .references import config_rows

    pad = max((len(name) for name in configs), default=0)
    lines = []
    for name in configs:
        rows = config_rows(load_config(name))
        text = (f"[{'; '.join(rows)}] " if rows else "") + config_description(name)
        lines.append(f"{name:<{pad}}  {text if len(text) <= width else text[: width - 3] + '...'}")
    return "\n".join(lines)


def sweep_catalogue(width: int = 110) -> str:
    """One line per bundled sweep: its name, its number of runs and the first line of its comment."""
    from math import prod

    from .sweep import bundled_sweeps, load_sweep, sweep_description

    names = bundled_sweeps()
    pad = max((len(name) for name in names), default=0)
    lines = []
    for name in names:
        spec = load_sweep(name)
        size = [spec.methods, spec.tasks, spec.presets, spec.seeds, *spec.grid.values()]
        text = f"{prod(len(values) for values in size):>3} runs  {sweep_description(name)}"
        lines.append(f"{name:<{pad}}  {text if len(text) <= width else text[: width - 3] + '...'}")
    return "\n".join(lines)


def _demo(args) -> int:
    from .config import load_config
    from .runner import run_experiment

    out = args.out or Path(tempfile.mkdtemp(prefix="egsbench-demo-"))
    start = time.perf_counter()
    records = []
    for name in DEMO_CONFIGS:
        cfg = load_config(name)
        folder = out / name.replace("/", "-")
        records.append(run_experiment(cfg, folder, progress=not args.no_progress).record)
    sizes = records[0]["data"]["sizes"]
    _say(
        f"\nEGS-Bench demo: embedded real CIFAR-10 subset ({sizes['train']} train / {sizes['test']} test images), "
        "CPU-sized networks; not comparable to paper numbers."
    )
    _say(results_table(records))
    _say(
        "What this shows: every method runs search -> derive -> final training on real images and writes a run "
        "folder. What it cannot show: which method is better. Twelve search steps barely move the architecture "
        "distributions (the search signal column), and one seed tested on 400 images leaves a spread of several "
        "points, so the ranking above is noise. For a comparison: the proxy studies in results/studies/ and "
        "egsbench compare."
    )
    _say(f"total wall time {time.perf_counter() - start:.0f} s; run folders under {out}")
    return 0


def _sweep(args) -> int:
    from .sweep import load_sweep, run_sweep

    spec = load_sweep(args.sweep)
    out = args.out or Path(spec.out or Path("runs") / spec.name)
    try:
        index, count = (int(x) for x in args.shard.split("/"))
        assert 0 <= index < count
    except (ValueError, AssertionError):
        raise UserError(f"--shard must be I/N with 0 <= I < N, got {args.shard!r}") from None
    changes = {k: getattr(args, k) for k in ("jobs", "threads", "retries") if getattr(args, k) is not None}
    if args.overrides:
        changes["set"] = [*spec.set, *args.overrides]  # after the file's: the later value of a key wins
    if changes:
        from dataclasses import replace

        spec = replace(spec, **changes)  # validated again by SweepSpec.__post_init__
    out.mkdir(parents=True, exist_ok=True)
    summary = run_sweep(
        spec,
        out,
        progress=args.progress,
        shard=(index, count),
        backend=args.backend,
        address=args.address,
        cluster=args.cluster,
    )
    for failure in summary["failures"]:
        print(f"[sweep] FAILED {failure}")
    print(
        f"sweep {spec.name}: {summary['ran']} ran, {summary['skipped']} skipped (done), {summary['failed']} failed, "
        f"of {summary['total']} runs in {summary['seconds']:.0f} s ({args.backend}, {summary['threads_per_run']} "
        f"threads per run); records under {out}"
    )
    if args.report:
        from .report import write_report

        print(f"report: {write_report(out, out / 'report.html', spec.name)}")
    return 1 if summary["failed"] else 0


def _records(runs: Path) -> list[dict]:
    """Every record under ``runs``, validated; a missing folder, a bad record or no record at all is exit 2."""
    from .records import RecordError, load_records

    records = load_records(runs)
    if not records:
        raise RecordError(
            f"no run records (record.json) under {runs}; pass --runs the --out folder of a finished run or sweep"
        )
    return records


def _table(args) -> int:
    from .tables import ablation_table, comparison_table, render, render_tables

    records = _records(args.runs)
    if args.ablation or args.format == "csv":
        table = ablation_table(records, args.task) if args.ablation else comparison_table(records, args.task)
        print(render(table, args.format))
        if args.format == "csv":  # one parseable CSV on stdout; render puts the notes under the other formats
            for note in table.attrs.get("notes", []):
                print(f"note: {note}", file=sys.stderr)
    else:
        print(render_tables(records, args.format))
    return 0


def _compare(args) -> int:
    from .compare import compare_runs, plot_comparison, render_comparison

    records = _records(args.runs)
    tasks = [args.task] if args.task else sorted({r["task"] for r in records})
    if args.plot not in (None, "none") and len(tasks) > 1:
        raise UserError(
            f"--plot names one file, and the records hold {len(tasks)} tasks ({', '.join(tasks)}): "
            "pass --task, or drop --plot for one figure per task under --runs"
        )
    comparisons = [compare_runs(records, task, args.metric, args.baseline) for task in tasks]  # all checked first
    print("\n".join(render_comparison(c, args.format) for c in comparisons))
    if args.plot != "none":
        for c in comparisons:
            path = plot_comparison(c, args.plot or args.runs / f"compare_{c.task}_{c.metric}.png")
            print(f"plot: {path}", file=sys.stderr)  # stdout stays the table alone (one parseable CSV)
    return 0


def _genotype(args) -> int:
    from .genotype_convert import format_genotype, read_genotype
    from .records import atomic_write_text

    text = format_genotype(read_genotype(args.source, args.source_form), args.to)
    if args.out is None:
        print(text)
        return 0
    if args.out.is_dir():
        raise UserError(f"--out {args.out} is a folder; pass the path of the file to write")
    atomic_write_text(args.out, text + "\n")
    print(f"genotype: {args.out}")
    return 0


def _regress(args) -> int:
    import json
    import shutil

    from .records import load_records, read_record
    from .regress import (
        GOLDEN_DIR,
        TOLERANCES,
        calibrate,
        compare_golden,
        compare_reported,
        load_tolerances,
        render_checks,
        write_tolerances,
    )

    golden_dir = args.golden or GOLDEN_DIR
    if args.calibrate or args.update_golden:  # writing commands: an explicit folder, never site-packages
        out_dir = writable_folder(args.out, "--calibrate" if args.calibrate else "--update-golden")
    records = load_records(args.runs)  # an empty folder is not an error here: every golden run is missing
    if args.calibrate:
        path = write_tolerances(calibrate(records), out_dir / TOLERANCES.name)
        print(f"wrote golden tolerances to {path}")
        return 0
    if args.update_golden:
        golden_dir = out_dir
        golden_dir.mkdir(parents=True, exist_ok=True)
        smoke = [p for p in sorted(args.runs.rglob("record.json")) if json.loads(p.read_text())["preset"] == "smoke"]
        for path in smoke:
            r = json.loads(path.read_text())
            shutil.copyfile(path, golden_dir / f"{r['method']}-{r['task']}-seed{r['seed']}.json")
        print(f"wrote {len(smoke)} golden records to {golden_dir}")
        return 0
    tolerances = load_tolerances(args.tolerances) if args.tolerances else load_tolerances()
    golden = [read_record(p) for p in sorted(golden_dir.glob("*.json"))]  # older versions upgraded
    if args.task:
        have = sorted({g["task"] for g in golden})
        unknown = sorted(set(args.task) - set(have))
        if unknown:
            raise UserError(
                f"--task {', '.join(unknown)}: no golden record of that task in {golden_dir} "
                f"(tasks with golden records: {', '.join(have)})"
            )
        golden = [g for g in golden if g["task"] in args.task]
    checks = compare_reported(records, tolerances) + compare_golden(records, golden, tolerances)
    print(render_checks(checks))
    failed = [c for c in checks if not c.ok]
    print(f"\n{len(checks)} checks, {len(failed)} regressions")
    return 1 if failed else 0


def _install_dirs() -> list[Path]:
    dirs = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")} | set(site.getsitepackages())
    dirs.add(site.getusersitepackages())
    return [Path(d).resolve() for d in dirs if d]


def writable_folder(out: Path | None, command: str) -> Path:
    """``out`` resolved, refusing a missing value or a folder inside an installation's site-packages."""
    if out is None:
        raise UserError(f"{command} writes files: pass --out DIR (e.g. --out results/golden in a source checkout)")
    resolved = out.resolve()
    for root in _install_dirs():
        if resolved == root or root in resolved.parents:
            raise UserError(
                f"{command} refuses to write inside site-packages ({resolved}); pass --out to a folder "
                "of your own, e.g. a source checkout's results/"
            )
    return resolved


def _report(args) -> int:
    from .report import write_report

    print(f"report: {write_report(args.runs, args.out or args.runs / 'report.html')}")
    return 0


def _close_progress_bars() -> None:
    """Close the bars a failed run left open, so the error line starts a line of its own.

    The epoch driver closes its own bar however a phase ends; this catches any other (a library's). tqdm has no
    public registry of live bars: its private ``_instances`` is read if it is there, else nothing is closed.
    """
    from tqdm.std import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process was, so a run stops as on Ctrl-C (locks released, checkpoints kept)."""

    exit_code = 143  # 128 + SIGTERM, as a shell reports a process that SIGTERM ended


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def _interrupted(args, err: KeyboardInterrupt) -> tuple[str, int]:
    """The one line an interrupt prints (where the run stopped and the command that continues it) and its status."""
    from .driver import RunInterrupted

    code = getattr(err, "exit_code", 130)
    if not isinstance(err, RunInterrupted) or args.command != "run":
        return "error: interrupted", code
    sets = "".join(f" --set {shlex.quote(o)}" for o in args.overrides)
    source = f" --source-run {shlex.quote(str(args.source_run))}" if args.source_run is not None else ""
    command = f"egsbench run {shlex.quote(str(args.config))} --out {shlex.quote(str(args.out))}{sets}{source} --resume"
    where, then = err.position.where(), err.position.resumes_at()
    return f"error: interrupted during {where}; {command} continues from {then}", code


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    previous = None
    if threading.current_thread() is threading.main_thread():  # signal handlers can only be set there
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    if not logging.getLogger().handlers:  # the library logs through accelerate.logging; the CLI shows INFO
        logging.basicConfig(level=logging.INFO, format="[egsbench] %(message)s", stream=sys.stderr)
        logging.getLogger("accelerate").setLevel(logging.WARNING)  # its per-checkpoint INFO lines are noise here
    try:
        commands = {
            "run": _run,
            "list": _list,
            "demo": _demo,
            "sweep": _sweep,
            "table": _table,
            "compare": _compare,
            "regress": _regress,
            "report": _report,
            "genotype": _genotype,
        }
        return commands[args.command](args)
    except UserError as err:
        _close_progress_bars()
        if not getattr(err, "quiet", False):  # another rank's mistake: that rank prints it
            print("error: " + " ".join(str(err).splitlines()), file=sys.stderr)  # always one line
        return 2
    except KeyboardInterrupt as err:
        _close_progress_bars()
        line, code = _interrupted(args, err)
        print(line, file=sys.stderr, flush=True)
        return code
    except BrokenPipeError:  # stdout closed by a reader (egsbench ... | head): stop quietly, as SIGPIPE would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush must not raise again
        return 141  # 128 + SIGPIPE, as a shell reports it
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())

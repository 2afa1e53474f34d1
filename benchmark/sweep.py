"""Sweeps: methods x tasks x presets x seeds (x an optional grid of overrides), one run folder each.

Each run runs in its own subprocess into ``<out>/<preset>/<method>-<task>[-<grid>]/seed<k>-<hash>/`` and
finished runs are skipped, so a sweep can be rerun (or run twice into one ``out``) safely; backends are
``local``, ``slurm`` (submitit) and ``ray``. ``SWEEP`` is a path or a bundled name such as ``smoke/five-methods``
(``results/sweeps/<name>.yaml``, ``egsbench list sweeps``). The sweep file's keys, locking, retries and transfer
runs: ``docs/sweeps.md``.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from pathlib import Path

from ..core.registry import unknown_name_message
from ..tasks.spaces import ConfigError, UnknownNameError, UserError
from .config import build_dataclass, load_config, read_yaml_file
from .records import RecordError, atomic_write_text, read_record

__all__ = [
    "BACKENDS",
    "SWEEP_DIR",
    "SweepRun",
    "SweepSpec",
    "bundled_sweeps",
    "execute_run",
    "load_sweep",
    "plan_runs",
    "resolve_sweep_path",
    "run_sweep",
    "sweep_description",
]

BACKENDS = ("local", "slurm", "ray")
# Shipped sweeps are read through importlib.resources, never relative to the working directory.
SWEEP_DIR = Path(str(files("egsbench.results") / "sweeps"))


@dataclass
class SweepSpec:
    name: str
    methods: list[str]
    tasks: list[str]
    presets: list[str]
    seeds: list[int]
    out: str | None = None
    config: str | None = None  # one config for every run instead of <preset>/<method>-<task>
    grid: dict[str, list] = field(default_factory=dict)
    set: list[str] = field(default_factory=list)
    retries: int = 1  # extra attempts after a failure; each resumes from the run's checkpoints
    jobs: int = 1  # local backend: runs side by side
    threads: int | None = None  # intra-op threads per run; None: cores // jobs (local), 1 per requested CPU
    gpus_per_run: int = 0  # slurm / ray request; slurm runs `accelerate launch` over them when > 1
    time_min: int = 120  # slurm time limit per run
    partition: str | None = None  # slurm partition

    def __post_init__(self):
        if self.retries < 0 or self.jobs < 1 or self.gpus_per_run < 0 or self.time_min < 1:
            raise ConfigError("sweep keys need retries >= 0, jobs >= 1, gpus_per_run >= 0 and time_min >= 1")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"sweep key threads must be >= 1, got {self.threads}")


@dataclass
class SweepRun:
    """One run of a sweep: what to run, where, and with how many threads and GPUs."""

    config: str
    overrides: list[str]
    folder: str
    label: str
    config_hash: str
    threads: int = 1
    gpus: int = 0
    retries: int = 1
    source_run: str | None = None  # a transfer's source search: the folder of another run of this sweep

    def command(self) -> list[str]:
        """The run's command line; several GPUs start it under ``accelerate launch``."""
        args = ["run", self.config, "--out", self.folder, "--resume", "--no-progress"]
        args += [x for o in self.overrides for x in ("--set", o)]
        args += ["--source-run", self.source_run] if self.source_run else []
        if self.gpus > 1:
            return [
                sys.executable,
                "-m",
                "accelerate.commands.launch",
                "--multi_gpu",
                "--num_processes",
                str(self.gpus),
                "-m",
                "egsbench",
                *args,
            ]
        return [sys.executable, "-m", "egsbench", *args]


def bundled_sweeps() -> list[str]:
    """The shipped sweep names: paths under ``results/sweeps/`` without ``.yaml`` (``smoke/five-methods``)."""
    paths = [*SWEEP_DIR.glob("*.yaml"), *SWEEP_DIR.glob("*/*.yaml")]
    return sorted(p.relative_to(SWEEP_DIR).with_suffix("").as_posix() for p in paths)


def resolve_sweep_path(source: str | Path) -> Path:
    """The sweep file ``source`` names: a path to a YAML file, else a bundled name (``egsbench list sweeps``).

    Raises:
        UnknownNameError: neither; the message gives the closest bundled name and every one.
    """
    path = Path(source)
    if path.is_file():
        return path
    name = str(source).removesuffix(".yaml")
    if name in bundled_sweeps():  # a listed name only: "../x" never reaches outside the folder
        return SWEEP_DIR / f"{name}.yaml"
    raise UnknownNameError(
        unknown_name_message("sweep", str(source), bundled_sweeps()) + " (or pass the path of a sweep YAML file)"
    )


def sweep_description(source: str | Path) -> str:
    """The first line of a sweep file's opening comment (what it runs); ``""`` when it opens without one."""
    for line in resolve_sweep_path(source).read_text(encoding="utf-8", errors="replace").splitlines():
        if line.strip():
            return line.lstrip("#").strip() if line.startswith("#") else ""
    return ""


def load_sweep(source: str | Path) -> SweepSpec:
    """The sweep a path or bundled name (``smoke/five-methods``) names, validated; its ``name`` defaults to the
    file's stem."""
    path = resolve_sweep_path(source)
    data = read_yaml_file(path, "sweep file") or {}  # size (1 MB), UTF-8 and YAML checked, one line each
    if not isinstance(data, dict):
        raise ConfigError(f"sweep file {path} must hold a YAML mapping (methods, tasks, presets, seeds, ...)")
    data.setdefault("name", path.stem)
    for key in ("methods", "tasks", "presets", "seeds"):
        if isinstance(data.get(key), (str, int)):
            data[key] = [data[key]]
    if "config" in data:
        data.setdefault("methods", ["-"])
        data.setdefault("tasks", ["-"])
        data.setdefault("presets", ["-"])
    missing = [k for k in ("methods", "tasks", "presets", "seeds") if k not in data]
    if missing:
        raise ConfigError(f"sweep {path} needs keys {missing} (lists), e.g. seeds: [0, 1]")
    spec = build_dataclass(SweepSpec, data, "sweep")
    for key, values in spec.grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep grid key {key!r} needs a non-empty list of values")
    return spec


def _safe(text: str) -> str:
    """A folder-name fragment: no separators, no '..', nothing a shell or a file system would trip on."""
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text).strip("._") or "_"


def _tag(assignments: dict) -> str:
    return "-".join(_safe(f"{k.split('.')[-1]}{v}") for k, v in assignments.items())


def plan_runs(spec: SweepSpec, out: Path, threads: int = 1) -> list[SweepRun]:
    """Every run of the sweep, in a fixed order, validated (configs and folders) before anything runs."""
    keys = list(spec.grid)
    root = out.resolve()
    runs, seeds, sources = [], [], []  # sources: per run, (config hash, seed) of the search it transfers from, or None
    for preset, method, task in itertools.product(spec.presets, spec.methods, spec.tasks):
        config = spec.config or f"{preset}/{method}-{task}"
        for values in itertools.product(*(spec.grid[k] for k in keys)):
            assignments = dict(zip(keys, values, strict=True))
            grid_overrides = [f"{k}={json.dumps(v)}" for k, v in assignments.items()]
            base = _safe(Path(config).stem if spec.config else f"{method}-{task}")
            name = base + (f"-{_tag(assignments)}" if assignments else "")
            for seed in spec.seeds:
                overrides = [*spec.set, *grid_overrides, f"seed={seed}"]
                cfg = load_config(config, overrides)  # fail before the first run on a bad name or key
                group = _safe(preset) if not spec.config else "custom"
                folder = (root / group / name / f"seed{seed}-{cfg.hash()[:8]}").resolve()
                if root not in folder.parents:
                    raise ConfigError(f"sweep run folder {folder} would lie outside --out {root}")
                runs.append(
                    SweepRun(
                        config,
                        overrides,
                        str(folder),
                        f"{config} {' '.join(overrides)}",
                        cfg.hash(),
                        threads,
                        spec.gpus_per_run,
                        spec.retries,
                    )
                )
                seeds.append(seed)
                transfer = cfg.transfer
                if transfer is not None and not transfer.is_run_folder:
                    sources.append((cfg.source_config().hash(), seed))
                else:
                    sources.append(None)
    folders = {(run.config_hash, seed): run.folder for run, seed in zip(runs, seeds, strict=True)}
    for run, source in zip(runs, sources, strict=True):
        if source is not None and source in folders:
            run.source_run = folders[source]
    return runs


def _waves(runs: list[SweepRun]) -> list[list[SweepRun]]:
    """The runs in the order their dependencies allow: transfers that reuse another run's search after the rest."""
    first = [run for run in runs if run.source_run is None]
    then = [run for run in runs if run.source_run is not None]
    return [wave for wave in (first, then) if wave]


def _record(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "record.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_done(run: SweepRun) -> bool:
    record = _record(Path(run.folder))
    return bool(record) and record.get("status") == "ok" and record.get("config_hash") == run.config_hash


def _check_records(runs: list[SweepRun]) -> None:
    """Refuse to start while a run folder holds a record that cannot be read (torn, not UTF-8, off the schema).

    Such a file is not ours to overwrite or to take for a finished run: the user decides (see the message).

    Raises:
        RecordError: naming every such file.
    """
    bad = []
    for run in runs:
        path = Path(run.folder) / "record.json"
        if path.is_file():
            try:
                read_record(path)
            except RecordError as err:
                bad.append(str(err))
    if bad:
        raise RecordError(
            f"{len(bad)} unreadable record file(s) in this sweep's run folders: {'; '.join(bad)}. "
            "Nothing ran; move or delete them and run the sweep again",
            bad,
        )


def execute_run(run: SweepRun) -> dict:
    """Run one sweep run in subprocesses, retrying per its policy; returns ``{"label", "status", "error"}``.

    Module-level and picklable, so submitit and Ray can ship it to a worker. The run is claimed first
    (an OS lock on ``<folder>/.claim`` held around its attempts): a run another sweep has claimed is
    ``busy``, one that is finished once claimed is ``done``, and both are left alone. A failed record
    is written when the last attempt did not leave an ``ok`` one (unless the run wrote its own failed
    record), and never over an ``ok`` record.
    """
    from .run_folder import CLAIM, RunLockedError, lock_holder, run_lock

    folder = Path(run.folder)
    holder = lock_holder(folder)
    if holder is not None:  # a hand-started run (or an older sweep) is writing there: its result is its own
        return {"label": run.label, "status": "busy", "error": f"in use by pid {holder}", "attempts": 0}
    try:
        with run_lock(folder, CLAIM):
            if _is_done(run):  # another sweep finished it since this one looked
                return {"label": run.label, "status": "done", "error": None, "attempts": 0}
            return _attempts(run, folder)
    except RunLockedError:
        holder = lock_holder(folder, CLAIM)
        return {"label": run.label, "status": "busy", "error": f"claimed by pid {holder}", "attempts": 0}


def _attempts(run: SweepRun, folder: Path) -> dict:
    """The attempts of a claimed run (see :func:`execute_run`)."""
    from .run_folder import failed_record

    env = {**os.environ, "OMP_NUM_THREADS": str(run.threads), "MKL_NUM_THREADS": str(run.threads)}
    if run.threads < (os.cpu_count() or 1):  # runs side by side: sleeping threads give their cores back
        env["OMP_WAIT_POLICY"] = "PASSIVE"  # a run alone on the machine keeps spinning (passive cost it ~25 %)
    command = [*run.command(), "--set", f"threads={run.threads}"]
    error = None
    for attempt in range(run.retries + 1):
        record = _record(folder)
        if record and record.get("status") == "failed":
            (folder / "record.json").unlink()  # a failed attempt is retried; its checkpoints stay for --resume
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / f"attempt{attempt + 1}.log", done.stdout + "\n--- stderr ---\n" + done.stderr)
        record = _record(folder)
        if record and record.get("status") == "ok":  # whoever wrote it (a run started by hand finished it)
            status = "ok" if done.returncode == 0 else "done"
            return {"label": run.label, "status": status, "error": None, "attempts": attempt + 1}
        tail = (done.stderr or done.stdout).strip().splitlines()
        error = (tail[-1] if tail else "") or f"exit status {done.returncode}"
        if done.returncode == 2 and "in use by another egsbench run" in error:  # a hand-started run took it
            return {"label": run.label, "status": "busy", "error": error.removeprefix("error: "), "attempts": attempt}
        if done.returncode < 0:
            error = f"killed by signal {-done.returncode} (out of memory?): {error}"
        if done.returncode == 2:
            break  # a user mistake (bad data path, diverged config): the same attempt would fail the same way
    if not (record and record.get("status") == "failed"):  # (an ok record returned above: never written over)
        failed_record(load_config(run.config, run.overrides), folder, error)
    return {"label": run.label, "status": "failed", "error": error, "attempts": attempt + 1}


def _local(runs: list[SweepRun], jobs: int, say: Callable[[str], None]) -> list[dict]:
    with ThreadPoolExecutor(max_workers=jobs) as pool:  # threads only wait on subprocesses
        results = []
        for result in pool.map(execute_run, runs):
            say(f"[sweep] {result['status']}: {result['label']}" + (f" ({result['error']})" if result["error"] else ""))
            results.append(result)
    return results


def _slurm(runs: list[SweepRun], out: Path, spec: SweepSpec, cluster: str | None) -> list[dict]:
    try:
        import submitit
    except ImportError:
        raise UserError("--backend slurm needs submitit: pip install 'egs-bench[sweep]'") from None
    executor = submitit.AutoExecutor(folder=str(out / "_submitit" / "%j"), cluster=cluster)
    cpus = max(1, runs[0].threads) if runs else 1
    params = {"timeout_min": spec.time_min, "cpus_per_task": cpus, "name": f"egsbench-{_safe(spec.name)}"}
    if executor.cluster == "slurm":
        params |= {"slurm_gpus_per_node": spec.gpus_per_run, "slurm_partition": spec.partition}
        params = {k: v for k, v in params.items() if v is not None}
    elif spec.gpus_per_run:
        params["gpus_per_node"] = spec.gpus_per_run
    executor.update_parameters(**params)
    jobs = executor.map_array(execute_run, runs)  # one job array, one task per run
    return [job.result() for job in jobs]


def _ray(runs: list[SweepRun], spec: SweepSpec, address: str | None) -> list[dict]:
    try:
        import ray
    except ImportError:
        raise UserError("--backend ray needs ray: pip install 'egs-bench[sweep]'") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        remote = ray.remote(execute_run)
        refs = [remote.options(num_cpus=run.threads, num_gpus=run.gpus).remote(run) for run in runs]
        return ray.get(refs)
    finally:
        if started:
            ray.shutdown()


def run_sweep(
    spec: SweepSpec,
    out: Path,
    progress: bool = False,
    shard: tuple[int, int] = (0, 1),
    backend: str = "local",
    address: str | None = None,
    cluster: str | None = None,
) -> dict:
    """Run (this shard of) the sweep on ``backend``; returns counts of ran, skipped and failed runs.

    Args:
        spec: the sweep.
        out: the folder of run folders.
        progress: unused by subprocess runs (kept for the CLI's flag); per-run logs are ``attemptN.log``.
        shard: ``(i, n)``: only runs i, i+n, i+2n, ... (for several sweep processes sharing ``out``).
        backend: ``local``, ``slurm`` or ``ray``.
        address: Ray cluster address (default: a local instance).
        cluster: submitit cluster (``None``: slurm when available; ``"local"``: submitit's local executor).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown sweep backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    cores = os.cpu_count() or 1
    threads = spec.threads or (max(1, cores // spec.jobs) if backend == "local" else 1)
    runs = plan_runs(spec, out, threads)
    index, count = shard
    summary = {"ran": 0, "skipped": 0, "failed": 0, "total": len(runs), "failures": []}
    mine = [run for i, run in enumerate(runs) if i % count == index]
    _check_records(mine)
    todo = []
    for run in mine:
        if _is_done(run):
            summary["skipped"] += 1
            print(f"[sweep] skip (done) {run.label}")
        else:
            todo.append(run)
    start = time.perf_counter()
    results = []
    for wave in _waves(todo):  # a transfer starts once the run whose search it trains has finished
        if backend == "local":
            results += _local(wave, spec.jobs, print)
        elif backend == "slurm":
            results += _slurm(wave, out, spec, cluster)
        else:
            results += _ray(wave, spec, address)
    for result in results:
        if result["status"] == "busy":
            summary["skipped"] += 1
            print(f"[sweep] skip (running elsewhere: {result['error']}) {result['label']}")
            continue
        if result["status"] == "done":
            summary["skipped"] += 1
            print(f"[sweep] skip (finished by another process) {result['label']}")
            continue
        summary["ran" if result["status"] == "ok" else "failed"] += 1
        if result["status"] != "ok":
            summary["failures"].append(f"{result['label']}: {result['error']}")
    summary["seconds"] = time.perf_counter() - start
    summary["threads_per_run"] = threads
    atomic_write_text(out / "sweep.json", json.dumps({"spec": asdict(spec), "backend": backend, **summary}, indent=1))
    return summary

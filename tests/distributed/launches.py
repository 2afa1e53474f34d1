"""The two-process launches of the distributed tests, run one after another in a background thread.

The launches start when the test session has collected them (``tests/conftest.py``), so they run
beside the rest of the suite, on a loaded machine, and the distributed tests, which the session
puts last, wait for their results. Nothing here depends on timing: every launch is waited for
(a generous timeout only turns a hang into a failure), and one launch has a rank sleep before its
first collective (``EGSBENCH_DEBUG_DELAY``) so the others must wait for it.

Each launch is two processes on the CPU (gloo), with one OpenMP thread each. Started by
``torchrun`` or by ``accelerate launch --multi_gpu`` (accelerate's launcher for several local
processes; on a machine without a GPU the run joins with gloo by itself, no ``device=cpu``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
TIMEOUT_S = 1200  # per launch; a hang fails the test instead of the session
SHARED_PTB = Path(os.environ.get("EGSBENCH_SHARED_DATA", HERE.parents[1] / ".." / "shared" / "data")) / "ptb"

# Every method, in its smoke config (seconds per run on a CPU).
METHODS = {
    "egs": ("smoke/egs-cifar10", []),
    "darts1": ("smoke/darts-cifar10", ["method.order=1"]),
    "darts2": ("smoke/darts-cifar10", ["method.order=2"]),
    "snas": ("smoke/snas-cifar10", []),
    "gdas": ("smoke/gdas-cifar10", []),
    "random": ("smoke/random-cifar10", []),
}
# The data sizes: the smoke configs' (even shards; one training step per epoch, which is all that two ranks
# need to agree on alphas, weights and the genotype, while evaluation still covers every test image), and 64
# training / 32 test images, which leave the ranks uneven or empty shards (search-val 32 images: one batch of
# 32, nothing for rank 1 without padding).
SIZES = {
    "full": ["search.max_steps_per_epoch=1", "evaluate.max_steps_per_epoch=1"],
    "small": ["task.train_limit=64", "task.test_limit=32"],
}
# The CLI cases' runs draw no figures (0.75 s of a 1.83 s one-step GDAS smoke run, profiled); the slow-rank
# launches draw them (the main process only).
NO_FIGURES = ["figures=false"]
LAUNCHERS = ("torchrun", "accelerate")


def cli_cases() -> list[tuple[str, str, str]]:
    """``(launcher, size, method)``: every method under both launchers and on both sizes, once each.

    The launchers alternate the sizes method by method (torchrun: egs full, darts1 small, ...; accelerate the
    other size of each), so each launcher also meets both sizes. What a launcher decides (how the processes
    start and join) does not depend on the data size, nor what a size exercises (even, uneven or empty shards)
    on the launcher: the full product would run every smoke run twice more for no property of its own.
    """
    sizes = list(SIZES)
    return [(kind, sizes[(i + k) % 2], method) for k, kind in enumerate(LAUNCHERS) for i, method in enumerate(METHODS)]


def repeated(kind: str, method: str) -> bool:
    """Whether the CLI case runs twice (the repeat must give the same genotype and metrics): each method once, the
    first half of the methods under torchrun, the rest under accelerate, so both launchers and both sizes repeat.
    Whether two runs of one config on two processes agree is the run's property, not the launcher's that started
    them; repeating every case ran six more smoke runs on two ranks for no property of their own."""
    half = list(METHODS).index(method) * len(LAUNCHERS) // len(METHODS)
    return LAUNCHERS[half] == kind


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher(kind: str) -> list[str]:
    """The command that starts two local processes of what follows (a script, or ``-m module``)."""
    if kind == "torchrun":
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(free_port()),
        ]
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
    ]


@dataclass
class Launch:
    name: str
    command: list[str]  # after the launcher
    kind: str = "torchrun"
    env: dict | None = None
    out: Path | None = None
    done: subprocess.CompletedProcess | None = None
    error: str | None = None  # a timeout or a failure to start
    process: subprocess.Popen | None = None

    def run(self) -> None:
        inherited = {k: v for k, v in os.environ.items() if k != "EGSBENCH_DEBUG_DELAY"}
        env = {**inherited, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", **(self.env or {})}
        command = [*launcher(self.kind), *self.command]
        # A session of its own: stop() ends the launcher and both ranks together.
        self.process = subprocess.Popen(
            command,
            env=env,
            cwd=self.out,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = self.process.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.stop()
            stdout, stderr = self.process.communicate()
            self.error = f"{self.name} did not finish in {TIMEOUT_S} s (a hang?): {stderr[-2000:]}"
            return
        self.done = subprocess.CompletedProcess(command, self.process.returncode, stdout, stderr)
        (self.out / "launch.log").write_text(stdout + "\n--- stderr ---\n" + stderr)

    def save(self) -> None:
        """Write what happened to ``out/result.json`` (atomically): a pytest-xdist worker reads it with ``load``."""
        from egsbench.benchmark.records import atomic_write_text

        done = self.done
        result = {"error": self.error, "done": None if done is None else [done.returncode, done.stdout, done.stderr]}
        atomic_write_text(self.out / "result.json", json.dumps(result))

    def load(self) -> bool:
        """Read ``out/result.json`` once it exists (the launch ran in another process); False until then."""
        path = self.out / "result.json"
        if not path.is_file():
            return False
        result = json.loads(path.read_text())
        self.error = result["error"]
        if result["done"] is not None:
            returncode, stdout, stderr = result["done"]
            self.done = subprocess.CompletedProcess(self.command, returncode, stdout, stderr)
        return True

    def stop(self) -> None:
        """Kill the launch's processes (the launcher and its ranks) if they still run."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)

    def failure(self) -> str | None:
        """None when the launch exited 0, else what happened (the end of its output)."""
        if self.error:
            return self.error
        if self.done.returncode != 0:
            err = self.done.stderr
            first = err.find("Traceback (most recent call last)")  # the failing rank's own, before the launcher's
            shown = err[first : first + 4000] if first >= 0 else ""
            return f"{self.name} exited {self.done.returncode}:\n{shown}\n...\n{err[-2000:]}"
        return None


def plan(root: Path, prepare: bool = True) -> dict[str, Launch]:
    """The launches under ``root``; ``prepare=False`` writes no input files (a reader of their results)."""
    launches: dict[str, Launch] = {}
    worker = [str(HERE / "worker.py"), str(root / "alphas")]
    worker += [f"{name},{config}" + "".join(f",{o}" for o in sets) for name, (config, sets) in METHODS.items()]
    worker += [
        "random_baseline,smoke/random-baseline-cifar10",
        "fixed,smoke/fixed-cifar10",
        "gdas_uneven,smoke/gdas-cifar10,task.train_limit=70",
        "egs_uneven,smoke/egs-cifar10,task.train_limit=70",
    ]
    launches["alphas"] = Launch("alphas", worker, out=root / "alphas")
    for kind in LAUNCHERS:
        specs = [
            {
                "name": name,
                "config": METHODS[name][0],
                "set": [*METHODS[name][1], *SIZES[size], *NO_FIGURES],
                "repeats": 2 if repeated(kind, name) else 1,
            }
            for launched_by, size, name in cli_cases()
            if launched_by == kind
        ]
        folder = root / f"cli-{kind}"
        launches[f"cli-{kind}"] = Launch(
            f"cli-{kind}", [str(HERE / "cli_runs.py"), str(folder), json.dumps(specs)], kind, out=folder
        )
    small = [x for o in SIZES["small"] for x in ("--set", o)]
    # The real entry points, each with one rank slow to arrive at its first collective.
    for kind, rank, config in (("torchrun", 1, "smoke/gdas-cifar10"), ("accelerate", 0, "smoke/egs-cifar10")):
        name = f"slow-rank{rank}-{kind}"
        launches[name] = Launch(
            name,
            ["-m", "egsbench", "run", config, "--out", str(root / name / "run"), "--no-progress", *small],
            kind,
            env={"EGSBENCH_DEBUG_DELAY": f"{rank}:8"},
            out=root / name,
        )
    # A language model (plain-iterable loaders, not sharded: every rank reads the whole split), on the shared PTB copy.
    ptb = SHARED_PTB if SHARED_PTB.is_dir() else None
    if ptb is not None:
        command = [
            "-m",
            "egsbench",
            "run",
            "smoke/darts-ptb",
            "--out",
            str(root / "ptb-torchrun" / "run"),
            "--no-progress",
            "--set",
            f"task.data_dir={ptb.resolve()}",
        ]
        launches["ptb-torchrun"] = Launch("ptb-torchrun", command, out=root / "ptb-torchrun")
    # A transfer (smoke/egs-wt2): the PTB search (search only, into <out>/source) then the WikiText-2 training, in
    # one two-process command, on LM files written in the official layouts.
    from egsbench.tasks.lm import write_lm_files

    lm = root / "wt2-transfer" / "data"
    ptb_files, wt2 = lm / "ptb", lm / "wt2"
    if prepare:
        write_lm_files(ptb_files, "ptb.{split}.txt", lines=60)
        write_lm_files(wt2, "wiki.{split}.tokens", lines=60, seed=1)
    env = {"EGSBENCH_PTB": str(ptb_files)}
    command = [
        "-m",
        "egsbench",
        "run",
        "smoke/egs-wt2",
        "--out",
        str(root / "wt2-transfer" / "run"),
        "--no-progress",
        "--set",
        f"task.data_dir={wt2}",
    ]
    launches["wt2-transfer"] = Launch("wt2-transfer", command, env=env, out=root / "wt2-transfer")
    # A folder that holds a finished run (the first slow-rank launch's): the main process refuses it.
    launches["refused"] = Launch(
        "refused",
        [
            "-m",
            "egsbench",
            "run",
            "smoke/gdas-cifar10",
            "--out",
            str(root / "slow-rank1-torchrun" / "run"),
            "--no-progress",
            *small,
        ],
        out=root / "refused",
    )
    return launches


class Background:
    """The launches, run in order in one daemon thread; ``get(name)`` waits for that one.

    Under pytest-xdist the controller process runs them and the worker that holds the distributed tests reads
    their results from the shared folder (:class:`Results`).
    """

    def __init__(self, root: Path):
        self.launches = plan(root)
        self.finished = {name: threading.Event() for name in self.launches}
        self.thread: threading.Thread | None = None
        self.stopping = False

    def start(self) -> None:
        if self.thread is None:
            for launch in self.launches.values():
                launch.out.mkdir(parents=True, exist_ok=True)
            self.thread = threading.Thread(target=self._run, daemon=True, name="egsbench-distributed")
            self.thread.start()

    def _run(self) -> None:
        for name, launch in self.launches.items():
            if self.stopping:
                launch.error = f"{name} was not started: the test session ended first"
                self.finished[name].set()
                continue
            try:
                launch.run()
            except Exception as err:  # reported by the test that asks for it
                launch.error = f"{name} could not start: {err!r}"
            launch.save()
            self.finished[name].set()

    def stop(self) -> None:
        """End the launches (a session that ends before they did): nothing outlives the test session."""
        self.stopping = True
        for launch in self.launches.values():
            launch.stop()

    def get(self, name: str) -> Launch:
        self.start()
        self.finished[name].wait()
        return self.launches[name]


class Results:
    """The launches a :class:`Background` in another process (the xdist controller) runs under ``root``:
    ``get(name)`` waits for that one's ``result.json``."""

    def __init__(self, root: Path):
        self.launches = plan(root, prepare=False)

    def get(self, name: str) -> Launch:
        launch = self.launches[name]
        limit = TIMEOUT_S * len(self.launches)  # every earlier launch ends first, each within TIMEOUT_S
        deadline = time.monotonic() + limit
        while not launch.load():
            if time.monotonic() > deadline:
                launch.error = f"{name}: no result from the xdist controller in {limit} s"
                break
            time.sleep(0.5)
        return launch

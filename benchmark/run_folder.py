"""The run folder: its lock, the checks that say whose folder it is, and the files a run writes there.

A folder holds one run: a second process into it fails at once (an OS lock the kernel drops however the
holder ends: ``filelock``, flock on POSIX and msvcrt on Windows), a finished run is never overwritten, and a
partial run continues only with ``--resume``, the same config and the same data. Every file is written
atomically; ``record.json`` last.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator
from filelock import FileLock, Timeout
from safetensors.torch import save_model

from ..core.errors import UserError
from ..core.genotype import Genotype
from ..tasks.spaces import SPACES
from .config import RESULT_NEUTRAL, ExperimentConfig
from .records import SCHEMA_VERSION, atomic_write_text, manifest, write_csv, write_json, write_record

MODEL_FILE = "model.safetensors"  # the trained final network's weights, beside genotype.json
DATA_FILE = "data.json"  # the data a run started on (source, absolute path, checksum): what --resume must match
LOCK = ".lock"  # held by the run writing the folder; its pid is in ".lock.pid" while it holds it
CLAIM = ".claim"  # held by the sweep process that runs it (around the run's own subprocess)
# A probe holds a lock for microseconds, so a try that meets one (a sweep or a transfer looking at the folder)
# tries again for this long before it calls the folder busy; a run's holder keeps it for the run's life.
RETRY_S, POLL_S = 0.2, 0.01


class RunLockedError(UserError):
    """Another process holds the run folder's lock."""


def _busy_message(out_dir: Path, holder: str) -> str:
    return f"{out_dir} is in use by another egsbench run (pid {holder}); wait for it to finish or pass a new --out"


def _pid_file(out_dir: Path, name: str) -> Path:
    """Where the holder of lock ``name`` writes its pid (not the lock file: a locker may truncate that one, and
    Windows refuses to read a locked file)."""
    return out_dir / f"{name}.pid"


def _read_holder(out_dir: Path, name: str) -> str:
    try:
        return _pid_file(out_dir, name).read_text().strip() or "unknown"
    except OSError:  # the holder has not written it yet
        return "unknown"


def lock_holder(out_dir: Path, name: str = LOCK) -> str | None:
    """The pid written by the process that holds ``out_dir``'s lock ``name`` now, else None (a probe: it takes
    the lock for an instant when free and creates nothing)."""
    path = out_dir / name
    if not path.is_file():
        return None
    probe = FileLock(path)
    try:
        probe.acquire(timeout=RETRY_S, poll_interval=POLL_S)
    except Timeout:
        return _read_holder(out_dir, name)
    except OSError:  # a lock file this user cannot open: nobody runs there as this user
        return None
    probe.release()
    return None


@contextmanager
def run_lock(out_dir: Path, name: str = LOCK):
    """An exclusive OS lock on ``out_dir/<name>`` for the life of the run (or of a sweep's claim).

    The OS releases it when the process ends, however it ends, so a crashed run never leaves a
    stale lock; a second run into the same folder fails at once instead of mixing checkpoints.
    """
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(out_dir / name)  # flock on POSIX, msvcrt.locking on Windows
        lock.acquire(timeout=RETRY_S, poll_interval=POLL_S)
    except Timeout:  # (a TimeoutError, so an OSError: caught first)
        raise RunLockedError(_busy_message(out_dir, _read_holder(out_dir, name))) from None
    except OSError as err:  # --out is a file, read-only, on a missing drive, ...
        message = f"cannot use {out_dir} as the run folder ({err.strerror}); pass --out to a writable folder"
        raise UserError(message) from None
    pid = _pid_file(out_dir, name)
    try:
        atomic_write_text(pid, str(os.getpid()))
        yield
    finally:
        try:
            pid.unlink(missing_ok=True)  # while the lock is still held: the next holder writes its own
        finally:
            lock.release()


def determinism(seed: int) -> dict:
    return {
        "torch_deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "seed": seed,
    }


def identity(
    cfg: ExperimentConfig, world_size: int = 1, mixed_precision: str = "no", deterministic: bool = False
) -> dict:
    """The fields that say which run a record is; the setup ones keep a 1-GPU and an 8-GPU run apart in tables."""
    return {
        "schema_version": SCHEMA_VERSION,
        "method": cfg.method_name,
        "task": cfg.task_name,
        "space": cfg.space,
        "preset": cfg.preset,
        "seed": cfg.seed,
        "world_size": world_size,  # accelerator.num_processes
        "mixed_precision": mixed_precision,  # accelerator.mixed_precision
        "deterministic": deterministic,
        "config_hash": cfg.hash(),
        "config": cfg.to_dict(),
    }


def check_folder(cfg: ExperimentConfig, out_dir: Path, resume: bool, probe_lock: bool = True) -> None:
    """Refuse to overwrite a finished run, to mix two configs in one folder, or to restart a partial run silently."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file, not a folder; pass --out to a new or existing folder")
    holder = lock_holder(out_dir) if probe_lock else None  # (a probe from inside our own lock would see us)
    if holder is not None:
        raise RunLockedError(_busy_message(out_dir, holder))
    if (out_dir / "record.json").exists():
        raise UserError(
            f"{out_dir / 'record.json'} already exists: that run is finished (ok or failed); pass a new --out folder"
        )
    saved = out_dir / "config.yaml"
    if not saved.exists():
        return
    if not resume:
        raise UserError(f"{out_dir} holds an unfinished run; pass --resume to continue it or a new --out folder")
    if not holds_config(out_dir, cfg):
        raise UserError(
            f"{out_dir} holds a run of a different config; resume with the same config and --set "
            "values, or pass a new --out folder"
        )


def holds_config(out_dir: Path, cfg: ExperimentConfig) -> bool:
    """Whether ``out_dir/config.yaml`` is ``cfg`` (seed included; the thread count and the figures change no
    number, so a resume may change them: ``RESULT_NEUTRAL``)."""

    def identity(config: dict) -> dict:
        return {k: v for k, v in config.items() if k not in RESULT_NEUTRAL}

    return identity(yaml.safe_load((out_dir / "config.yaml").read_text()) or {}) == identity(cfg.to_dict())


def failed_record(
    cfg: ExperimentConfig,
    out_dir: str | Path,
    error: str,
    world_size: int = 1,
    mixed_precision: str = "no",
    deterministic: bool = False,
) -> dict:
    """Write (and return) the record of a run that failed with ``error``; metrics and costs are null."""
    record = identity(cfg, world_size, mixed_precision, deterministic) | {
        "status": "failed",
        "error": error,
        "metrics": None,
        "genotype": None,
        "search": None,
        "evaluate": None,
        "data": None,
        "manifest": manifest("unknown", determinism(cfg.seed)),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_record(Path(out_dir) / "record.json", record)
    return record


def data_identity(data) -> dict:
    """Where the run's data came from and what it was: its source, that source's absolute path, its checksum.

    Resolved once per run, in the working directory the run started in (the record's and data.json's)."""
    _, _, location = data.source.partition(":")  # "<kind>:<location>", e.g. imagefolder:data
    path = Path(location) if location else None
    resolved = str(path.resolve()) if path is not None and path.exists() else None
    return {"source": data.source, "path": resolved, "sha256": data.sha256}


def check_data(out_dir: Path, identity: dict) -> None:
    """Refuse to resume a run on other data than it started on (a relative data_dir read from elsewhere)."""
    saved = out_dir / DATA_FILE
    if not saved.exists():
        return
    try:
        before = json.loads(saved.read_text())
    except (OSError, ValueError):
        return  # torn: the config check and the checkpoints still guard the run
    if before.get("sha256") != identity["sha256"]:

        def where(d: dict) -> str:
            return f"{d.get('path') or d.get('source')} (sha256 {str(d.get('sha256'))[:12]})"

        raise UserError(
            f"{out_dir} was started on the data {where(before)} but this run reads {where(identity)}; "
            "resume with the same data (an absolute task.data_dir) or pass a new --out"
        )


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise UserError(f"{path} cannot be read ({err}); move it away and run again") from None


def _write_figures(cfg: ExperimentConfig, out_dir: Path, genotype: Genotype, found: dict, final: dict) -> None:
    # matplotlib (0.5 s) loads where a run draws its figures, not in every process that imports the runner
    # (a sweep's parent, the CLI's other commands, a run that stops at an error)
    from .plots import plot_cell, plot_curves, plot_probability_evolution

    space = SPACES.get(cfg.space)
    for cell_type, cell in genotype.cells.items():
        title = f"{cfg.method_name}: {cell_type} cell"
        plot_cell(cell, out_dir / f"cell_{cell_type}.png", title=title, n_inputs=space.n_inputs)
        if found["probabilities"]:
            plot_probability_evolution(
                found["probabilities"],
                cell_type,
                list(space.edges),
                list(space.ops),
                out_dir / f"probabilities_{cell_type}.png",
            )
    plot_curves(
        found["curves"],
        final["curves"],
        out_dir / "curves.png",
        title=f"{cfg.method_name} on {cfg.task_name} ({cfg.preset}, seed {cfg.seed})",
    )


def _save_weights(model: torch.nn.Module, path: Path, genotype: Genotype, run_name: str) -> None:
    """The final network's weights as safetensors (no pickle), written atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_model(model, str(tmp), metadata={"genotype": genotype.to_json(), "run": run_name})
    os.replace(tmp, path)


def write_start(out_dir: Path, cfg: ExperimentConfig, data: dict) -> None:
    """What a run folder says from its first moment: the config it runs and the data it started on."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    atomic_write_text(out_dir / DATA_FILE, json.dumps(data, indent=1))


def write_outputs(
    out_dir: Path, cfg: ExperimentConfig, genotype: Genotype, found: dict, final: dict, record: dict
) -> None:
    """A finished run's files: cell, weights, curves, probabilities, figures (unless ``figures: false``), and
    ``record.json`` last (its presence marks a complete run)."""
    write_json(out_dir / "genotype.json", genotype.to_dict())
    _save_weights(final["model"], out_dir / MODEL_FILE, genotype, cfg.run_name)
    write_csv(out_dir / "search_curves.csv", found["curves"])
    write_csv(out_dir / "eval_curves.csv", final["curves"])
    write_json(out_dir / "arch_probabilities.json", found["probabilities"])
    if cfg.figures:
        _write_figures(cfg, out_dir, genotype, found, final)
    write_record(out_dir / "record.json", record)


def ok_record(
    cfg: ExperimentConfig,
    accelerator: Accelerator,
    task,
    data,
    data_id: dict,
    genotype: Genotype,
    found: dict,
    final: dict,
    hook_extras: dict,
) -> dict:
    """The record of a finished run (validated against the record schema when written); ``hook_extras`` are
    what the task, the method and a transfer add to its ``extras``."""
    test = final["test"]
    # The record's precision is the final training's, the phase its metrics come from.
    record = identity(cfg, accelerator.num_processes, cfg.mixed_precision, cfg.deterministic) | {
        "status": "ok",
        "error": None,
        "metrics": {
            **{f"test_{m.name}": test.get(m.name) for m in task.metrics},
            "params_m": final["params"] / 1e6,
            "macs_m": final["macs"] / 1e6,
            "search_val_score": found["derive_score"],
        },
        "genotype": genotype.to_dict(),
        **({"ground_truth": found["ground_truth"]} if found.get("ground_truth") else {}),  # Task.ground_truth
        "search": found["cost"] | {"signal": found.get("signal")},  # no signal in results written before it
        "evaluate": final["cost"],
        "data": {**data_id, "sizes": dict(data.sizes)},
        "manifest": manifest(device_name(accelerator), determinism(cfg.seed)),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    extras = _data_extras(data, final["curves"])
    if "count" in test:  # the test examples (tokens, pixels) the metrics summed over all processes
        extras["test_count"] = test["count"]
    extras |= hook_extras  # the task's, the method's, a transfer's source's, the process scaling
    if cfg.search_mixed_precision != "no":
        extras["search_mixed_precision"] = cfg.search_mixed_precision
    if extras:
        record["extras"] = extras
    return record


def _data_extras(data, curves: list[dict]) -> dict:
    """What a task adds beyond ``test_<name>``: which split played which role, the last validation metrics."""
    extras = {}
    if data.roles:
        extras["data_roles"] = dict(data.roles)
    valid = {k: v for k, v in (curves[-1] if curves else {}).items() if k.startswith("valid_")}
    if valid:
        extras["valid"] = valid
    return extras


def device_name(accelerator: Accelerator) -> str:
    device = accelerator.device
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} x{accelerator.num_processes}"
    return f"{device.type} ({torch.get_num_threads()} threads) x{accelerator.num_processes}"

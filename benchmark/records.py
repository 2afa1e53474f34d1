"""Run records: the ``Record`` model of ``record.json``, reading (with upgrades), validation and atomic writes.

Every file of a run folder is written to a temporary name and renamed into place, so a record exists whole or
not at all. Validation is strict (no coercion, closed objects, no NaN) and ``read_record`` upgrades older
schema versions in memory, never on disk. The folder's files, the schema rules and the upgrades:
``docs/records.md``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from datetime import datetime
from importlib import metadata
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails, PydanticCustomError

from ..tasks.spaces import UserError
from .config import config_type_problems

__all__ = [
    "SCHEMA_FILE",
    "SCHEMA_VERSION",
    "GroundTruth",
    "Record",
    "RecordError",
    "atomic_write_text",
    "load_records",
    "manifest",
    "read_record",
    "record_paths",
    "upgrade_record",
    "validate_record",
    "write_csv",
    "write_json",
    "write_record",
    "write_schema",
]

SCHEMA_VERSION = 3
SCHEMA_FILE = Path(str(files("egsbench.results") / "schema" / "record.schema.json"))
PACKAGES = ("egs-bench", "torch", "torchvision", "accelerate", "timm", "numpy", "pandas", "pydantic")
NEEDED_WHEN_OK = ("metrics", "genotype", "search", "evaluate", "data")

logger = logging.getLogger(__name__)


class RecordError(UserError, ValueError):
    """A run record that does not match the schema, or cannot be read; ``problems`` lists each one."""

    def __init__(self, message: str, problems: Iterable[str] = ()):
        super().__init__(message)
        self.problems = list(problems)


# --- the model -----------------------------------------------------------------------------------------------------


class _Closed(BaseModel):
    # strict: a record is machine-written JSON, so a string where a number belongs is a bug, not an input to coerce
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


Count = Annotated[int, Field(ge=0)]
Amount = Annotated[float, Field(ge=0)]  # seconds, hours, megabytes, millions
Rate = Annotated[float, Field(ge=0)] | None  # null when nothing ran (zero steps or zero time)
_METRIC_NAME = re.compile(r"test_[a-z0-9_]+")


class Metrics(_Closed):
    """The evaluated network's numbers: the task's metrics as ``test_<name>`` (e.g. ``test_error``, in the
    task's unit), plus its size and the search's score of the chosen candidate; null where not measured."""

    model_config = ConfigDict(
        extra="allow",  # the task's test_<name> metrics; their names are checked below
        json_schema_extra={"propertyNames": {"pattern": r"^(test_[a-z0-9_]+|params_m|macs_m|search_val_score)$"}},
    )
    __pydantic_extra__: dict[str, float | None] = Field(init=False)

    params_m: Amount | None
    macs_m: Amount | None
    search_val_score: float | None

    @model_validator(mode="after")
    def _metric_names(self) -> Metrics:
        for key in self.__pydantic_extra__ or {}:
            if not _METRIC_NAME.fullmatch(key):
                raise PydanticCustomError("unknown_metric", "unknown metric {key}", {"key": key})
        return self

    def __getitem__(self, key: str) -> float | None:
        """``metrics["test_error"]``, as in the JSON file (task metrics are extra fields)."""
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None


class _Throughput(_Closed):
    # optional: records written before they were measured lack them
    examples_per_s: Rate = Field(None, description="training examples (example_unit) per second, all processes")
    example_unit: str | None = Field(None, description="what one example is: images, tokens, ...")
    peak_memory_how: str | None = Field(None, description="how peak_memory_mb was measured (benchmark.memory)")
    memory_format: Literal["contiguous", "channels_last"] | None = Field(
        None,
        description="the layout the phase's network ran in (memory_format auto resolves per device, dtype and "
        "width); null when the phase trained no network or the record predates it",
    )
    compiled: bool | None = Field(
        None, description="whether the phase ran its network through torch.compile; null in older records"
    )


class SearchSignal(_Closed):
    """How far the search moved its learned op distribution (``egsbench.methods.signal``)."""

    ops: Count = Field(description="K, the ops per edge")
    entropy_start: Amount = Field(description="mean per-edge entropy before the first step (nats)")
    entropy_end: Amount = Field(description="mean per-edge entropy after the last step (nats)")
    entropy_start_frac: Amount = Field(description="entropy_start / log K (1: uniform)")
    entropy_end_frac: Amount = Field(description="entropy_end / log K")
    entropy_drop_frac: float = Field(description="(entropy_start - entropy_end) / log K")
    margin_start: Amount | None = Field(description="mean per-edge gap between the two most probable ops, at the start")
    margin_end: Amount | None = Field(description="the same after the last step")
    derived_changed: Annotated[float, Field(ge=0, le=1)] | None = Field(
        description="fraction of the derived (input, node, op) choices the method's rule would not take from the "
        "initial distribution; null when the derivation is no rule on the distribution"
    )


class SearchCost(_Throughput):
    signal: SearchSignal | None = Field(
        None,
        description="null for methods that learn no distribution, transfers "
        "of fixed cells and records written before it was measured",
    )
    wall_time_s: Amount
    derive_wall_time_s: Amount
    steps: Count
    steps_per_s: Rate
    device_hours: Amount = Field(description="wall time x processes")
    peak_memory_mb: Amount = Field(description="the phase's own peak (MiB; CPU: resident set, CUDA: tensors)")


class EvaluateCost(_Throughput):
    wall_time_s: Amount
    steps: Count
    steps_per_s: Rate
    device_hours: Amount = Field(description="wall time x processes")
    peak_memory_mb: Amount = Field(description="the phase's own peak (MiB; CPU: resident set, CUDA: tensors)")


class Data(_Closed):
    source: str
    path: str | None = Field(
        None,
        description="the source's absolute path when it is a local file or folder "
        "(what --resume compares with the checksum)",
    )
    sha256: str = Field(description="of the decoded examples, so two sources with equal content agree")
    sizes: dict[str, Count] = Field(description="examples per split after limits")


class Determinism(_Closed):
    torch_deterministic_algorithms: bool
    cudnn_deterministic: bool
    cudnn_benchmark: bool
    cudnn_allow_tf32: bool | None = Field(default=None, description="TF32 in cuDNN convolutions; null before 0.2")
    matmul_allow_tf32: bool | None = Field(default=None, description="TF32 in CUDA matmuls; null before 0.2")
    seed: int


class Manifest(_Closed):
    git_sha: str | None = Field(description="null outside a git checkout")
    python: str
    packages: dict[str, str | None]
    platform: str
    device: str
    determinism: Determinism | None = Field(description="null only in upgraded version-1 records")


class GroundTruth(_Closed):
    """The derived cell looked up in a tabular benchmark (``Task.ground_truth``; NAS-Bench-201 in NATS-Bench):
    numbers the benchmark's authors measured, not this run."""

    benchmark: str = Field(description="the benchmark, e.g. 'NATS-Bench topology (tss)'")
    file: str = Field(description="the benchmark file or directory read")
    hp: str = Field(description="the benchmark's training schedule read (NATS-Bench: '12' or '200' epochs)")
    arch: str = Field(description="the cell in the benchmark's notation (NAS-Bench-201's arch string)")
    index: int = Field(ge=-1, description="its index in the benchmark; -1 when the benchmark lists no such cell")
    metrics: dict[str, float | None] = Field(
        description="the task's ground_truth_metrics by name (nb201: test accuracy (%) on cifar10, cifar100, "
        "imagenet16_120, the mean over the benchmark's trials); null where the file holds no number"
    )


class Record(_Closed):
    """One run of ``search -> derive -> evaluate``: what ran, where, what it scored and what it cost.

    A failed run (``status: failed``) says why in ``error`` and leaves metrics, genotype, costs and data null.
    """

    model_config = ConfigDict(json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema"})

    schema_version: Literal[3]
    status: Literal["ok", "failed"]
    error: str | None = Field(description="what went wrong, for a failed run")
    method: str
    task: str
    space: str
    preset: str
    seed: int
    world_size: int = Field(ge=1, description="processes the run was launched with (accelerate)")
    mixed_precision: Literal["no", "fp16", "bf16", "fp8"]
    deterministic: bool = Field(description="the config's `deterministic` switch")
    config_hash: str
    config: dict[str, Any] | None = Field(description="the resolved config; null only in upgraded v1 records")
    metrics: Metrics | None
    genotype: dict[str, Any] | None = Field(description="its content is the search space's to validate")
    ground_truth: GroundTruth | None = Field(
        None, description="the task's tabular-benchmark lookup of the genotype (nb201); absent for other tasks"
    )
    search: SearchCost | None
    evaluate: EvaluateCost | None
    data: Data | None
    manifest: Manifest
    created: str = Field(json_schema_extra={"format": "date-time"})
    extras: dict[str, Any] = Field(default_factory=dict, description="anything else a tool keeps with the record")

    @field_validator("created")
    @classmethod
    def _iso_date_time(cls, value: str) -> str:
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("must be an ISO 8601 date-time") from None
        return value

    @model_validator(mode="after")
    def _status_agrees(self) -> Record:
        problems = []
        if self.status == "ok":
            problems += [
                f"field {k} must not be null when status is 'ok'" for k in NEEDED_WHEN_OK if getattr(self, k) is None
            ]
            if self.error is not None:
                problems.append(f"field error must be null when status is 'ok', got {_show(self.error)}")
        elif not self.error:
            problems.append("field error must say what went wrong when status is 'failed'")
        if problems:
            raise ValueError("\n".join(problems))  # _problems splits them again
        return self


def record_json_schema() -> dict:
    """The JSON Schema of ``record.json`` (what ``results/schema/record.schema.json`` holds)."""
    return Record.model_json_schema()


def write_schema(path: str | Path = SCHEMA_FILE) -> Path:
    """Write :func:`record_json_schema` to ``path`` (by default the checked-in copy) and return the path."""
    atomic_write_text(path, json.dumps(record_json_schema(), indent=2) + "\n")
    return Path(path)


# --- validation ----------------------------------------------------------------------------------------------------


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _problems(error: ErrorDetails) -> list[str]:
    """One pydantic error as lines naming the field's dotted path (the record's own check may give several)."""
    path = ".".join(str(part) for part in error["loc"])
    if error["type"] == "value_error" and not path:  # Record._status_agrees: its lines already name their fields
        return str(error["ctx"]["error"]).splitlines()
    return [_problem(error, path)]


def _problem(error: ErrorDetails, path: str) -> str:
    kind = error["type"]
    if kind == "missing":
        return f"missing field {path}"
    if kind == "extra_forbidden":
        return f"unknown field {path} (extra fields belong under extras)"
    if kind == "unknown_metric":
        return f"unknown field {path}.{error['ctx']['key']} (a task's metrics are recorded as test_<name>)"
    message = str(error["ctx"]["error"]) if kind == "value_error" else error["msg"][0].lower() + error["msg"][1:]
    return f"field {path}: {message}, got {_show(error['input'])}"


def _version_problem(version: Any) -> str:
    if version is None:
        return "missing field schema_version"
    if isinstance(version, int) and not isinstance(version, bool) and version in _UPGRADES:
        return (
            f"field schema_version is {version}, an older record: read it with read_record, which upgrades it "
            "in memory, or re-run the experiment to write a current one"
        )
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        return (
            f"field schema_version is {version}, newer than this egs-bench reads ({SCHEMA_VERSION}); upgrade egs-bench"
        )
    return f"field schema_version must be {SCHEMA_VERSION}, got {_show(version)}"


def validate_record(record: dict | Record, where: str = "record") -> dict:
    """Check ``record`` against :class:`Record` (the current version) and return it as a dict.

    The values in ``config`` are checked against the types the installed method and task declare
    (``config.method.M`` must be an int for egs), since the tables read them.

    Args:
        record: a parsed ``record.json`` (returned as is when valid), or a ``Record``.
        where: how messages name the record, e.g. ``"record runs/x/record.json"``.

    Raises:
        RecordError: naming every offending field by its dotted path.

    Examples:
        >>> validate_record({"schema_version": 3}, where="record r.json")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        egsbench.benchmark.records.RecordError: record r.json: ... problems: missing field status; ...
    """
    if isinstance(record, Record):  # an absent ground truth stays absent (most tasks have none)
        record = record.model_dump(mode="json", exclude={"ground_truth"} if record.ground_truth is None else None)
    if not isinstance(record, dict):
        raise RecordError(f"{where}: must be a JSON object, got {_show(record)}")
    version = record.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        problem = _version_problem(version)
        raise RecordError(f"{where}: {problem}", [problem])
    try:
        Record.model_validate(record)
    except ValidationError as err:
        problems = [line for e in err.errors(include_url=False) for line in _problems(e)]
    else:
        problems = config_type_problems(record["config"]) if record["config"] is not None else []
    if problems:
        head = problems[0] if len(problems) == 1 else f"{len(problems)} problems: " + "; ".join(problems)
        raise RecordError(f"{where}: {head}", problems) from None
    return record


# --- upgrades ------------------------------------------------------------------------------------------------------


def _from_v1(record: dict, folder: Path | None) -> dict:
    config = None
    if folder is not None and (folder / "config.yaml").is_file():
        try:
            loaded = yaml.safe_load((folder / "config.yaml").read_text())
        except (OSError, yaml.YAMLError):
            loaded = None  # only fills a field v1 never had: an unreadable config leaves it null
        config = loaded if isinstance(loaded, dict) else None
    out = {"schema_version": 2, "status": "ok", "error": None} | {
        k: v for k, v in record.items() if k != "schema_version"
    }
    out.setdefault("config", config)
    if isinstance(out.get("evaluate"), dict) and "steps_per_s" not in out["evaluate"]:
        ev = out["evaluate"]
        seconds, steps = ev.get("wall_time_s"), ev.get("steps")
        numbers = all(isinstance(x, int | float) and not isinstance(x, bool) for x in (seconds, steps))
        out["evaluate"] = ev | {"steps_per_s": steps / seconds if numbers and seconds > 0 else None}
    if isinstance(out.get("manifest"), dict):
        out["manifest"] = {"determinism": None} | out["manifest"]
    return out


def _from_v2(record: dict, folder: Path | None) -> dict:
    added = {"world_size": 1, "mixed_precision": "no", "deterministic": False}
    out = {}
    for key, value in record.items():  # the new identity fields go after seed, where the runner writes them
        out[key] = value
        if key == "seed":
            out |= added
    return out | {k: v for k, v in added.items() if k not in out} | {"schema_version": 3}


_UPGRADES = {1: _from_v1, 2: _from_v2}  # version -> a record of the next version


def upgrade_record(record: Any, folder: str | Path | None = None) -> Any:
    """An older record as the current version, in memory (see the module docstring for what is filled).

    Args:
        record: a parsed record; returned unchanged if it is not an older version.
        folder: its run folder, whose ``config.yaml`` fills a version-1 record's ``config``.
    """
    if not isinstance(record, dict):
        return record
    original = version = record.get("schema_version")
    while isinstance(version, int) and not isinstance(version, bool) and version in _UPGRADES:
        record = _UPGRADES[version](record, None if folder is None else Path(folder))
        version = record["schema_version"]
    if version != original:
        record["extras"] = (record.get("extras") or {}) | {"upgraded_from": original}
    return record


# --- reading and writing records -----------------------------------------------------------------------------------


def read_record(path: str | Path) -> dict:
    """Parse and validate one ``record.json``, upgrading an older version in memory.

    Raises:
        RecordError: naming ``path`` when the file cannot be read, is not JSON (torn or not a record) or
            breaks the schema.
    """
    path = Path(path)
    where = f"record {path}"
    try:
        record = json.loads(path.read_text())
    except OSError as err:
        problem = f"cannot read it ({err.strerror or err})"
        raise RecordError(f"{where}: {problem}", [problem]) from err
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        problem = f"not valid JSON ({err}); the file is torn or not a run record: delete it or re-run that experiment"
        raise RecordError(f"{where}: {problem}", [problem]) from err
    run_folder = path.parent if path.name == "record.json" else None  # a loose file's neighbours are not its own
    return validate_record(upgrade_record(record, run_folder), where)


def _non_finite(value: Any, path: str) -> str | None:
    """The dotted path of the first NaN or infinity in ``value``, if any."""
    if isinstance(value, float) and not math.isfinite(value):
        return path or "(the record)"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _non_finite(item, f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


def write_record(path: str | Path, record: dict | Record) -> None:
    """Validate ``record`` and write it atomically to ``path`` as strict JSON (nothing is written if it is invalid).

    Raises:
        RecordError: the record breaks the schema, or holds a NaN or infinity (JSON has no such numbers).
    """
    where = f"record {path}"
    record = validate_record(record, where)
    try:
        text = json.dumps(record, indent=1, allow_nan=False)
    except ValueError:
        problem = f"field {_non_finite(record, '')} is NaN or infinite, which JSON cannot hold; store null instead"
        raise RecordError(f"{where}: {problem}", [problem]) from None
    atomic_write_text(path, text + "\n")


def record_paths(root: str | Path) -> list[Path]:
    """The ``record.json`` of every run folder under ``root`` (a run or sweep folder), at any depth, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise RecordError(f"no folder {root} to scan for run records; pass the --out folder of a run or sweep")
    return sorted(p for p in root.rglob("record.json") if p.is_file())


def load_records(root: str | Path, strict: bool = True) -> list[dict]:
    """Every run record under ``root``, validated, older versions upgraded in memory (see :func:`read_record`).

    A folder whose run is still going has no ``record.json`` yet and is not a problem.

    Args:
        root: a run or sweep folder (``--out``), searched at any depth.
        strict: raise one ``RecordError`` naming every bad file (torn, not JSON, off the schema); False skips
            them with a logged warning each.
    """
    records, errors = [], []
    for path in record_paths(root):
        try:
            records.append(read_record(path))
        except RecordError as err:
            errors.append(err)
    if errors and strict:
        lines = "; ".join(str(e) for e in errors)
        raise RecordError(
            f"{len(errors)} bad record file(s) under {root}: {lines}. Move or delete them and run again",
            [str(e) for e in errors],
        )
    for err in errors:
        logger.warning("skipped %s", err)
    return records


# --- files ---------------------------------------------------------------------------------------------------------


_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _write_temporary(folder: Path, prefix: str, text: str) -> str:
    """Write ``text`` to a new hidden temporary file in ``folder`` (flushed to disk) and return its path."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{prefix}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the mode a plain open() would
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _write_temporary(path.parent, path.name, text)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=False) + "\n")


def write_csv(path: str | Path, rows: Iterable[dict]) -> None:
    rows = list(rows)
    buf = io.StringIO()
    if rows:
        fields = list(dict.fromkeys(k for row in rows for k in row))
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def manifest(device: str, determinism: dict | None = None) -> dict:
    """Provenance of a run: code version, package versions, machine and determinism flags."""
    return {
        "git_sha": _git_sha(),
        "python": sys.version.split()[0],
        "packages": {p: _version(p) for p in PACKAGES},
        "platform": platform.platform(),
        "device": device,
        "determinism": determinism,
    }

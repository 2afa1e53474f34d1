"""Run records: the versioned ``record.json`` schema and atomic file writes (the store is in ``store.py``).

A run folder holds ``config.yaml`` (resolved), ``genotype.json``, ``cell_<type>.png``,
``search_curves.csv``, ``eval_curves.csv`` and ``record.json``. Every file is written to a
temporary name in the same folder and renamed into place, so a crash never leaves a
half-written record: a record either exists whole or not at all.

``RECORD_SCHEMA`` describes ``record.json`` (version ``SCHEMA_VERSION``) in a small subset of JSON
Schema: ``type``, ``nullable``, ``required``, ``properties``, ``additionalProperties``, ``enum``,
``minimum``/``maximum`` and ``format: date-time``. Unlike JSON Schema, an object with ``properties``
is closed: a key it does not list is an error, and extra fields belong under the top-level ``extras``.
Errors name the field's dotted path (``field metrics.test_error must be a number or null, got 'abc'``).

Version-1 records (before ``status``, ``error``, ``config``, ``evaluate.steps_per_s`` and
``manifest.determinism``) are upgraded in memory by ``read_record``, never rewritten on disk: they were
written only by completed runs, so ``status`` is ``"ok"``; ``config`` comes from the run folder's
``config.yaml`` when there is one (else null); ``evaluate.steps_per_s`` is computed from its steps and
wall time; ``manifest.determinism`` is null (it was not recorded); ``extras.upgraded_from`` is ``1``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from ..tasks.spaces import UserError

__all__ = [
    "RECORD_SCHEMA",
    "SCHEMA_VERSION",
    "RecordError",
    "atomic_write_text",
    "manifest",
    "read_record",
    "upgrade_record",
    "validate_record",
    "write_csv",
    "write_json",
    "write_record",
]

SCHEMA_VERSION = 2
PACKAGES = ("egs-bench", "torch", "torchvision", "accelerate", "timm", "numpy", "pandas")


class RecordError(UserError, ValueError):
    """A run record that does not match the schema, or cannot be read; ``problems`` lists each one."""

    def __init__(self, message: str, problems: Iterable[str] = ()):
        super().__init__(message)
        self.problems = list(problems)


# --- schema --------------------------------------------------------------------------------------------------------


def _object(properties: dict, nullable: bool = False, optional: tuple[str, ...] = ()) -> dict:
    """A closed object whose keys are all required (a value may still be null where its schema allows)."""
    required = [k for k in properties if k not in optional]
    return {"type": "object", "nullable": nullable, "required": required, "properties": properties}


_STR = {"type": "string"}
_COUNT = {"type": "integer", "minimum": 0}
_SECONDS = {"type": "number", "minimum": 0}
_RATE = {"type": "number", "minimum": 0, "nullable": True}  # null when nothing ran (zero steps or zero time)
_PERCENT = {"type": "number", "minimum": 0, "maximum": 100, "nullable": True}  # null for tasks without it
_FLAG = {"type": "boolean"}
_ANY_OBJECT = {"type": "object", "additionalProperties": True}

RECORD_SCHEMA: dict = _object(
    {
        "schema_version": {"type": "integer", "enum": [SCHEMA_VERSION]},
        "status": {"type": "string", "enum": ["ok", "failed"]},
        "error": {"type": "string", "nullable": True},  # what went wrong, for a failed run
        "method": _STR,
        "task": _STR,
        "space": _STR,
        "preset": _STR,
        "seed": {"type": "integer"},
        "config_hash": _STR,
        "config": _ANY_OBJECT | {"nullable": True},  # the resolved config; null only in upgraded v1 records
        "metrics": _object(
            {
                "test_accuracy": _PERCENT,
                "test_error": _PERCENT,
                "test_loss": {"type": "number", "nullable": True},
                "params_m": {"type": "number", "minimum": 0, "nullable": True},
                "macs_m": {"type": "number", "minimum": 0, "nullable": True},
                "search_val_score": {"type": "number", "nullable": True},
            },
            nullable=True,
        ),
        "genotype": _ANY_OBJECT | {"nullable": True},  # its content is the search space's to validate
        "search": _object(
            {
                "wall_time_s": _SECONDS,
                "derive_wall_time_s": _SECONDS,
                "steps": _COUNT,
                "steps_per_s": _RATE,
                "device_hours": _SECONDS,
                "peak_memory_mb": _SECONDS,
            },
            nullable=True,
        ),
        "evaluate": _object(
            {
                "wall_time_s": _SECONDS,
                "steps": _COUNT,
                "steps_per_s": _RATE,
                "device_hours": _SECONDS,
                "peak_memory_mb": _SECONDS,
            },
            nullable=True,
        ),
        "data": _object(
            {"source": _STR, "sha256": _STR, "sizes": {"type": "object", "additionalProperties": _COUNT}},
            nullable=True,
        ),
        "manifest": _object(
            {
                "git_sha": {"type": "string", "nullable": True},  # null outside a git checkout
                "python": _STR,
                "packages": {"type": "object", "additionalProperties": {"type": "string", "nullable": True}},
                "platform": _STR,
                "device": _STR,
                "determinism": _object(  # null only in upgraded v1 records
                    {
                        "torch_deterministic_algorithms": _FLAG,
                        "cudnn_deterministic": _FLAG,
                        "cudnn_benchmark": _FLAG,
                        "seed": {"type": "integer"},
                    },
                    nullable=True,
                ),
            }
        ),
        "created": {"type": "string", "format": "date-time"},
        "extras": _ANY_OBJECT,  # anything else a tool wants to keep with the record
    },
    optional=("extras",),
)
NEEDED_WHEN_OK = ("metrics", "genotype", "search", "evaluate", "data")

_KINDS = {"object": "an object", "string": "a string", "integer": "an integer", "number": "a number",
          "boolean": "true or false"}  # fmt: skip


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is(value: Any, kind: str) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):  # bool is an int subclass, but True is not a seed or a step count
        return False
    return isinstance(value, int) if kind == "integer" else isinstance(value, int | float)


def _check(value: Any, schema: dict, path: str, problems: list[str]) -> None:
    """Append to ``problems`` one line per place where ``value`` breaks ``schema``."""
    nullable = schema.get("nullable", False)
    if value is None and nullable:
        return
    kind = schema["type"]
    if not _is(value, kind):
        expected = _KINDS[kind] + (" or null" if nullable else "")
        problems.append(f"field {path} must be {expected}, got {_show(value)}")
        return
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"field {path} must be one of {', '.join(map(repr, schema['enum']))}, got {_show(value)}")
    if "minimum" in schema and value < schema["minimum"]:
        problems.append(f"field {path} must be >= {schema['minimum']}, got {_show(value)}")
    if "maximum" in schema and value > schema["maximum"]:
        problems.append(f"field {path} must be <= {schema['maximum']}, got {_show(value)}")
    if schema.get("format") == "date-time":
        try:
            datetime.fromisoformat(value)
        except ValueError:
            problems.append(f"field {path} must be an ISO 8601 date-time, got {_show(value)}")
    if kind == "object":
        _check_object(value, schema, path, problems)


def _check_object(value: dict, schema: dict, path: str, problems: list[str]) -> None:
    prefix = f"{path}." if path else ""
    properties = schema.get("properties", {})
    for key in schema.get("required", ()):
        if key not in value:
            problems.append(f"missing field {prefix}{key}")
    extra = schema.get("additionalProperties", False)
    for key, item in value.items():
        if key in properties:
            _check(item, properties[key], prefix + key, problems)
        elif isinstance(extra, dict):
            _check(item, extra, prefix + key, problems)
        elif not extra:
            problems.append(f"unknown field {prefix}{key} (extra fields belong under extras)")


def validate_record(record: Any, where: str = "record") -> dict:
    """Check ``record`` against ``RECORD_SCHEMA`` (the current version) and return it.

    Args:
        record: a parsed ``record.json``.
        where: how messages name the record, e.g. ``"record runs/x/record.json"``.

    Raises:
        RecordError: naming every offending field by its dotted path.

    Examples:
        >>> validate_record({"schema_version": 2}, where="record r.json")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        benchmark.records.RecordError: record r.json: ... problems: missing field status; ...
    """
    if not isinstance(record, dict):
        raise RecordError(f"{where}: must be a JSON object, got {_show(record)}")
    version = record.get("schema_version")
    if version != SCHEMA_VERSION:
        raise RecordError(f"{where}: {_version_problem(version)}", [_version_problem(version)])
    problems: list[str] = []
    _check(record, RECORD_SCHEMA, "", problems)
    status = record.get("status")
    if status == "ok":
        problems += [f"field {k} must not be null when status is 'ok'" for k in NEEDED_WHEN_OK
                     if k in record and record[k] is None]  # fmt: skip
        if record.get("error") is not None:
            problems.append(f"field error must be null when status is 'ok', got {_show(record['error'])}")
    elif status == "failed" and not record.get("error"):
        problems.append("field error must say what went wrong when status is 'failed'")
    if problems:
        head = problems[0] if len(problems) == 1 else f"{len(problems)} problems: " + "; ".join(problems)
        raise RecordError(f"{where}: {head}", problems)
    return record


def _version_problem(version: Any) -> str:
    if version is None:
        return "missing field schema_version"
    if version == 1:
        return ("field schema_version is 1, an older record: read it with read_record, which upgrades it in "
                "memory, or re-run the experiment to write a current one")  # fmt: skip
    if _is(version, "integer") and version > SCHEMA_VERSION:
        return (f"field schema_version is {version}, newer than this egs-bench reads ({SCHEMA_VERSION}); "
                "upgrade egs-bench")  # fmt: skip
    return f"field schema_version must be {SCHEMA_VERSION}, got {_show(version)}"


def upgrade_record(record: dict, folder: str | Path | None = None) -> dict:
    """A version-1 record as the current version, in memory (see the module docstring for what is filled).

    Args:
        record: a parsed version-1 record (returned unchanged if it is not one).
        folder: its run folder, whose ``config.yaml`` fills ``config``.
    """
    if not isinstance(record, dict) or record.get("schema_version") != 1:
        return record
    config = None
    if folder is not None and (Path(folder) / "config.yaml").is_file():
        try:
            loaded = yaml.safe_load((Path(folder) / "config.yaml").read_text())
        except (OSError, yaml.YAMLError):
            loaded = None  # only fills a field v1 never had: an unreadable config leaves it null
        config = loaded if isinstance(loaded, dict) else None
    out = {"schema_version": SCHEMA_VERSION, "status": "ok", "error": None} | {
        k: v for k, v in record.items() if k != "schema_version"
    }
    out.setdefault("config", config)
    if isinstance(out.get("evaluate"), dict) and "steps_per_s" not in out["evaluate"]:
        ev = out["evaluate"]
        seconds, steps = ev.get("wall_time_s"), ev.get("steps")
        rate = steps / seconds if _is(steps, "number") and _is(seconds, "number") and seconds > 0 else None
        out["evaluate"] = ev | {"steps_per_s": rate}
    if isinstance(out.get("manifest"), dict):
        out["manifest"] = {"determinism": None} | out["manifest"]
    out["extras"] = (out.get("extras") or {}) | {"upgraded_from": 1}
    return out


def read_record(path: str | Path) -> dict:
    """Parse and validate one ``record.json``, upgrading a version-1 record in memory.

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
    run_folder = path.parent if path.name == "record.json" else None  # a store's flat files have no config.yaml
    return validate_record(upgrade_record(record, run_folder), where)


def write_record(path: str | Path, record: dict) -> None:
    """Validate ``record`` and write it atomically to ``path`` (nothing is written if it is invalid)."""
    write_json(path, validate_record(record, f"record {path}"))


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


# --- store ---------------------------------------------------------------------------------------------------------

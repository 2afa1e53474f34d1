"""``RecordStore``: a folder of run records that several processes can add to at once."""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

from .records import RECORD_SCHEMA, RecordError, _write_temporary, read_record, validate_record

__all__ = ["RecordStore"]

_IDENTITY = ("method", "task", "space", "preset", "seed", "config_hash", "status", "error", "created")
_FLATTENED = ("metrics", "search", "evaluate")
# Dotted names as pd.json_normalize writes them (``metrics.test_error``), so the tables can nest rows back.
FRAME_COLUMNS = (
    list(_IDENTITY)
    + [f"{part}.{k}" for part in _FLATTENED for k in RECORD_SCHEMA["properties"][part]["properties"]]
    + ["data.sha256", "manifest.device", "manifest.git_sha", "path"]
)


def _stem(record: dict) -> str:
    parts = [record["method"], record["task"], record["preset"], f"seed{record['seed']}", record["config_hash"]]
    return "_".join(re.sub(r"[^\w.-]+", "-", str(p)) for p in parts)


def _publish(tmp: str, folder: Path, stem: str) -> Path:
    """Give the finished file ``tmp`` a name of its own in ``folder``, never replacing another writer's file."""
    name = f"{stem}.json"
    for _ in range(64):
        path = folder / name
        try:
            os.link(tmp, path)  # atomic, and fails instead of replacing: no two writers can take one name
            return path
        except FileExistsError:
            name = f"{stem}.{secrets.token_hex(4)}.json"
        except OSError:  # a file system without hard links: a 128-bit random name cannot collide in practice
            path = folder / f"{stem}.{secrets.token_hex(16)}.json"
            os.replace(tmp, path)
            return path
    raise RecordError(f"store {folder}: could not find a free file name for {stem}.json")


class RecordStore:
    """A folder of run records, one JSON file each, that many processes can add to at once.

    ``add`` writes the whole record to a hidden temporary file in the folder, then hard-links it to its
    final name (``os.link`` is atomic and fails rather than replace an existing file, so two writers that
    pick the same name never lose a record: the loser takes a random suffix), then removes the temporary
    name. A reader therefore only ever sees complete records, and ignores hidden ``.*.tmp`` files.

    Reading validates every file. A file that is torn, not JSON or breaks the schema is never skipped
    silently: with ``strict=True`` (the default) reading raises a ``RecordError`` naming every bad path;
    with ``strict=False`` the good records are returned and ``store.errors`` holds one ``RecordError``
    per bad file (its message starts with the path), refreshed on each read.

    Args:
        root: the folder (created on the first ``add``).
        strict: raise on bad files (else collect them into ``errors``).
        pattern: which files under ``root`` are records.

    Examples:
        >>> store = RecordStore("results/records")  # doctest: +SKIP
        >>> store.add(record)  # doctest: +SKIP
        PosixPath('results/records/egs_cifar10_smoke_seed0_df4d9e8b9aea7baf.json')
        >>> frame = store.frame(status="ok")  # doctest: +SKIP
        >>> frame.groupby(["method", "task"])["metrics.test_error"].agg(["mean", "std"])  # doctest: +SKIP
        >>> RecordStore.scan("runs/sweep-1").find(method="egs", seed=0)  # doctest: +SKIP
    """

    def __init__(self, root: str | Path, strict: bool = True, pattern: str = "*.json"):
        self.root = Path(root)
        self.strict = strict
        self.pattern = pattern
        self.errors: list[RecordError] = []

    @classmethod
    def scan(cls, root: str | Path, strict: bool = True) -> RecordStore:
        """A read-only store of the ``record.json`` of every run folder under ``root``, at any depth."""
        if not Path(root).is_dir():
            raise RecordError(f"no folder {root} to scan for run records; pass the --out folder of a run or sweep")
        return cls(root, strict, pattern="**/record.json")

    def paths(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.glob(self.pattern) if p.is_file() and not p.name.startswith("."))

    def add(self, record: dict) -> Path:
        """Validate ``record`` and write it to a new file of its own; returns that file's path."""
        if self.pattern != "*.json":
            raise RecordError(f"store {self.root} was scanned from run folders and is read-only; "
                              "add records to a RecordStore(folder) of their own")  # fmt: skip
        validate_record(record, f"record for store {self.root}")
        self.root.mkdir(parents=True, exist_ok=True)
        stem = _stem(record)
        tmp = _write_temporary(self.root, stem, json.dumps(record, indent=1) + "\n")
        try:
            return _publish(tmp, self.root, stem)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def _load(self, filters: dict) -> list[tuple[Path, dict]]:
        unknown = sorted(set(filters) - set(RECORD_SCHEMA["properties"]))
        if unknown:
            raise RecordError(f"cannot filter records on {', '.join(unknown)}: a record has no such field; "
                              f"use one of {', '.join(RECORD_SCHEMA['properties'])}")  # fmt: skip
        loaded, errors = [], []
        for path in self.paths():
            try:
                loaded.append((path, read_record(path)))
            except RecordError as err:
                errors.append(err)
        self.errors = errors
        if errors and self.strict:
            lines = "; ".join(str(e) for e in errors)
            raise RecordError(f"{len(errors)} bad record file(s) in {self.root}: {lines}. Move or delete them, "
                              "or read with strict=False to get the others", [str(e) for e in errors])  # fmt: skip
        return [(p, r) for p, r in loaded if all(r.get(k) == v for k, v in filters.items())]

    def records(self, **filters: Any) -> list[dict]:
        """Every valid record whose top-level fields equal ``filters`` (e.g. ``method="egs", status="ok"``)."""
        return [record for _, record in self._load(filters)]

    def find(
        self,
        method: str | None = None,
        task: str | None = None,
        preset: str | None = None,
        seed: int | None = None,
        config_hash: str | None = None,
    ) -> list[dict]:
        """The records of one experiment; arguments left as None match anything."""
        given = {"method": method, "task": task, "preset": preset, "seed": seed, "config_hash": config_hash}
        return self.records(**{k: v for k, v in given.items() if v is not None})

    def frame(self, **filters: Any):
        """A pandas DataFrame, one row per record: identity, ``metrics.*``, ``search.*``, ``evaluate.*``, path."""
        import pandas as pd  # only the tables need it

        rows = []
        for path, r in self._load(filters):
            row = {k: r[k] for k in _IDENTITY}
            for part in _FLATTENED:
                row |= {f"{part}.{k}": v for k, v in (r[part] or {}).items()}
            row["data.sha256"] = (r["data"] or {}).get("sha256")
            row |= {"manifest.device": r["manifest"]["device"], "manifest.git_sha": r["manifest"]["git_sha"]}
            rows.append(row | {"path": str(path)})
        return pd.DataFrame(rows, columns=FRAME_COLUMNS)

    def __repr__(self) -> str:
        return f"RecordStore({str(self.root)!r}, pattern={self.pattern!r})"

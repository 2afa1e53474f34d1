"""Transfer runs (``transfer_from``, the paper's protocol for WikiText-2, ImageNet and VOC 2012): finding the
search a cell comes from, and running it first when it does not exist yet.

A finished run folder named by ``transfer_from`` is read as it is; a source config's search runs (search and
derivation only) in ``<out>/source`` or the folder ``source_run`` names, unless that folder already holds the
search of the same config and seed, which is reused. A source folder another process holds (its run lock, or
a sweep's claim) is waited for. The transfer's record takes its ``search`` cost from the source search, and
``extras.transfer`` / ``extras.genotype_source`` say which search it was.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from accelerate.logging import get_logger

from ..core.errors import UserError
from ..tasks.spaces.genotypes import genotype_source
from .config import ExperimentConfig
from .launch import agree, make_accelerator
from .run_folder import CLAIM, holds_config, lock_holder, read_json

__all__ = ["SOURCE_DIR", "TransferSource", "transfer_source"]

logger = get_logger(__name__)

SOURCE_DIR = "source"  # a transfer run's source search, inside its run folder (unless source_run names one)
SOURCE_POLL_S = 5.0  # how often a transfer looks whether another process still holds its source folder


@dataclass
class TransferSource:
    """The search a transfer run takes its cell from: its result, its folder and its config."""

    found: dict  # search_result.json
    folder: Path
    config: ExperimentConfig
    given: str  # transfer_from's source, as the config names it

    def record_extras(self) -> dict:
        """``extras.transfer`` and ``extras.genotype_source`` of the transfer's record (the source folder may hold
        no record yet, a search alone: its run comes from the source config)."""
        run = {
            "method": self.config.method_name,
            "task": self.config.task_name,
            "preset": self.config.preset,
            "seed": self.config.seed,
            "config_hash": self.config.hash(),
        }
        return {
            "transfer": {"from": self.given, "folder": str(self.folder.resolve()), **run},
            "genotype_source": genotype_source(str(self.folder)) | {"run": run},
        }


def _wait_for(folder: Path) -> None:
    """Block while another process holds ``folder`` (its run lock, or a sweep's claim on it)."""
    said = False
    while (holder := lock_holder(folder) or lock_holder(folder, CLAIM)) is not None:
        if not said:
            logger.warning(f"waiting for the source search in {folder} (held by pid {holder}) to finish")
            said = True
        time.sleep(SOURCE_POLL_S)


def _finished_search(folder: Path, source: ExperimentConfig, given_folder: bool) -> dict | None:
    """The search result ``folder`` holds for ``source`` (same config and seed), None when it holds none yet.

    Raises:
        UserError: the folder holds another config's run, or a failed one, or (``given_folder``: a run folder
            named by ``transfer_from``) no finished search.
    """
    record = read_json(folder / "record.json")
    saved = folder / "config.yaml"
    if record is not None and record.get("status") == "failed":
        raise UserError(
            f"the source run in {folder} failed ({record.get('error')}); rerun it (delete its "
            "record.json and pass --resume), or name another source"
        )
    if saved.is_file() and not holds_config(folder, source):
        raise UserError(
            f"{folder} holds a run of another config than the source search "
            f"{source.run_name} ({source.hash()[:8]}); pass --source-run to a new folder"
        )
    found = read_json(folder / "search_result.json")
    if found is None and given_folder:
        raise UserError(
            f"transfer_from: {folder} holds no finished search (no search_result.json); finish it "
            f"with egsbench run {folder / 'config.yaml'} --out {folder} --resume"
        )
    return found


def transfer_source(
    cfg: ExperimentConfig,
    out_dir: Path,
    progress: bool,
    resume: bool,
    source_run: str | Path | None,
    run_search: Callable[..., dict],
) -> TransferSource:
    """The finished search a transfer config takes its cell from; runs it first (``run_search``) when it does not
    exist yet."""
    transfer = cfg.transfer
    source = cfg.source_config()
    if transfer.is_run_folder:
        if source_run is not None:
            raise UserError(
                f"--source-run is for a transfer from a config; transfer_from already names the run "
                f"folder {transfer.source}"
            )
        folder = Path(transfer.source).expanduser()
        mine, theirs = cfg.to_dict(), source.to_dict()
        differ = [k for k in ("method", "space", "search") if mine[k] != theirs[k]]
        if differ:
            raise UserError(
                f"transfer_from: {folder} was searched with other {', '.join(differ)} values than this "
                "config gives; drop those --set values (a finished search cannot change)"
            )
        return TransferSource(_finished_search(folder, source, given_folder=True), folder, source, transfer.source)
    folder = Path(source_run) if source_run is not None else out_dir / SOURCE_DIR
    accelerator = make_accelerator(cfg)
    _wait_for(folder)  # every rank looks, then all meet: no rank sees the lock the main one takes next
    accelerator.wait_for_everyone()
    found = agree(accelerator, lambda: _finished_search(folder, source, given_folder=False))
    if found is not None:
        logger.info(f"transfer: reusing the {source.task_name} search in {folder}")
    else:
        logger.info(f"transfer: {source.method_name} searches on {source.task_name} into {folder} first")
        found = run_search(source, folder, progress, resume)
    return TransferSource(found, folder, source, transfer.source)

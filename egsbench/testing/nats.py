"""A small NATS-Bench topology benchmark in the API's own on-disk format, for tests and trying task ``nb201``.

:func:`write_nats_tss` builds each cell's results with ``nats_bench``'s own classes (``ResultsCount``,
``ArchResults``) and writes them with its ``pickle_save`` (bz2-compressed pickles of their ``state_dict``), as
``nats_bench.create(path, "tss", fast_mode=...)`` reads them: a directory holding ``meta.pickle.pbz2`` (every
one of the 15625 arch strings, in this module's order, not the real file's) and one ``<index:06d>.pickle.pbz2``
per cell with results (fast mode), or one ``.pickle.pbz2`` file with all of it. Only the cells given get results,
with made-up accuracies (:data:`FIXTURE_CELLS`): it stands in for the real file in tests, never for its numbers.

    python -c "from egsbench.testing import write_nats_tss; print(write_nats_tss('DIR/nats-tss'))"
    egsbench run smoke/darts-nb201 --set task.benchmark_file=DIR/nats-tss
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path

__all__ = ["DATASETS", "FIXTURE_CELLS", "HP12_SCALE", "SEEDS", "all_nb201_archs", "write_nats_tss"]

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
SEEDS = (777, 888)  # two trials per data set: a lookup reads their mean, so each is the value -/+ SPREAD
SPREAD = 0.5
# NATS-Bench's data sets and the evaluation sets it keeps for each (nats_bench ArchResults.get_metrics)
DATASETS = {
    "cifar10-valid": (10, ("x-valid", "ori-test")),
    "cifar10": (10, ("ori-test",)),
    "cifar100": (100, ("x-valid", "x-test", "ori-test")),
    "ImageNet16-120": (120, ("x-valid", "x-test", "ori-test")),
}
HP_EPOCHS = {"12": 12, "200": 200}
HP12_SCALE = 0.9
# arch string -> final test accuracy (%) at hp 200 per data set; made up for the fixture (ordered like the real
# ones: 3x3 convolutions best, no path from the input worst); hp 12 reads HP12_SCALE times them
FIXTURE_CELLS: dict[str, dict[str, float]] = {
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|": {
        "cifar10": 94.0,
        "cifar100": 73.0,
        "ImageNet16-120": 46.0,
    },
    "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|": {
        "cifar10": 93.0,
        "cifar100": 70.0,
        "ImageNet16-120": 43.0,
    },
    "|nor_conv_1x1~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|nor_conv_1x1~0|nor_conv_1x1~1|nor_conv_1x1~2|": {
        "cifar10": 90.0,
        "cifar100": 65.0,
        "ImageNet16-120": 38.0,
    },
    "|avg_pool_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|avg_pool_3x3~0|avg_pool_3x3~1|avg_pool_3x3~2|": {
        "cifar10": 60.0,
        "cifar100": 30.0,
        "ImageNet16-120": 15.0,
    },
    "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|": {
        "cifar10": 55.0,
        "cifar100": 25.0,
        "ImageNet16-120": 12.0,
    },
    "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|": {"cifar10": 10.0, "cifar100": 1.0, "ImageNet16-120": 0.83},
}


def all_nb201_archs() -> list[str]:
    """The 15625 NAS-Bench-201 arch strings (5 ops on 6 edges), in ``itertools.product`` order over the edges
    ``1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2`` (the real benchmark lists them in another order)."""
    out = []
    for a, b, c, d, e, f in itertools.product(OPS, repeat=6):
        out.append(f"|{a}~0|+|{b}~0|{c}~1|+|{d}~0|{e}~1|{f}~2|")
    return out


def _results(index: int, arch: str, accuracies: Mapping[str, float], hp: str):
    """The ``ArchResults`` of one cell at schedule ``hp``: every data set of :data:`DATASETS` (a data set missing
    from ``accuracies`` gets CIFAR-10's value), two trials, a curve per epoch that ends at the given accuracy."""
    from nats_bench.api_utils import ArchResults, ResultsCount

    epochs = HP_EPOCHS[hp]
    scale = 1.0 if hp == "200" else HP12_SCALE
    results = ArchResults(index, arch)
    for dataset, (classes, eval_names) in DATASETS.items():
        final = scale * accuracies.get(dataset, accuracies.get("cifar10", 50.0))
        for seed, sign in zip(SEEDS, (-1.0, 1.0), strict=True):
            last = final + sign * SPREAD
            curve = [last * (i + 1) / epochs for i in range(epochs)]  # rises to `last` at the final epoch
            losses = [5.0 * (1.0 - a / 100.0) for a in curve]
            config = {"name": "infer.tiny", "channel": 16, "num_cells": 5, "arch_str": arch, "class_num": classes}
            count = ResultsCount(dataset, None, None, None, 0.1, 10.0, config, seed, epochs, [0.01])
            train = dict(enumerate(curve))
            count.update_train_info(train, train, dict(enumerate(losses)), dict.fromkeys(range(epochs), 1.0))
            accs, eval_losses, times = {}, {}, {}
            for name in eval_names:
                for i in range(epochs):
                    accs[f"{name}@{i}"], eval_losses[f"{name}@{i}"], times[f"{name}@{i}"] = curve[i], losses[i], 0.1
            count.update_eval(accs, eval_losses, times)
            results.update(dataset, seed, count)
    return results


def write_nats_tss(
    path: str | Path, cells: Mapping[str, Mapping[str, float]] | None = None, fast_mode: bool = True
) -> Path:
    """Write a NATS-Bench topology benchmark holding results for ``cells`` (default :data:`FIXTURE_CELLS`).

    Args:
        path: the directory to create (``fast_mode``), or the file (``.pickle.pbz2`` is appended when missing).
        cells: arch string -> ``{data set: final test accuracy (%)}`` at hp 200 (NATS-Bench data set names:
            ``cifar10``, ``cifar100``, ``ImageNet16-120``; others default to the CIFAR-10 value).
        fast_mode: a directory of per-cell files (NATS-Bench's ``-simple`` archive) or one file.

    Returns:
        What ``nats_bench.create(path, "tss", fast_mode=fast_mode)`` and ``task.benchmark_file`` take.

    Raises:
        ImportError: ``nats_bench`` is not installed (``pip install 'egs-bench[nb201]'``).
    """
    from nats_bench.api_utils import pickle_save

    cells = FIXTURE_CELLS if cells is None else cells
    archs = all_nb201_archs()
    index = {arch: i for i, arch in enumerate(archs)}
    unknown = [arch for arch in cells if arch not in index]
    if unknown:
        raise ValueError(f"not NAS-Bench-201 arch strings: {unknown}")
    infos = {}
    for arch, accuracies in cells.items():
        infos[index[arch]] = {hp: _results(index[arch], arch, accuracies, hp).state_dict() for hp in HP_EPOCHS}
    path = Path(path)
    if fast_mode:
        path.mkdir(parents=True, exist_ok=True)
        pickle_save({"meta_archs": archs}, str(path / "meta.pickle"))  # pickle_save appends .pbz2
        for i, hps in infos.items():
            pickle_save(hps, str(path / f"{i:06d}.pickle"))
        return path
    stem = str(path).removesuffix(".pbz2")
    path.parent.mkdir(parents=True, exist_ok=True)
    pickle_save({"meta_archs": archs, "arch2infos": infos, "evaluated_indexes": sorted(infos)}, stem)
    return Path(f"{stem}.pbz2")

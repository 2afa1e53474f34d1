"""One rank of two-process CPU (gloo) searches, started by ``torchrun`` from test_two_processes.py.

For each ``NAME=CONFIG`` argument the rank runs the search and derivation and counts the test
samples its summed metrics saw, then writes ``<out>/<NAME>.rank<k>.json``: the architecture
probabilities after every search epoch (a function of the alphas), the genotype it holds and the
sample count; the test compares the ranks. All runs share one launch, so process start-up and
the gloo rendezvous are paid once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from egsbench.benchmark.config import load_config
from egsbench.benchmark.launch import make_accelerator, prepare_eval_loader
from egsbench.benchmark.phases import evaluate_split, search
from egsbench.tasks import TASKS
from egsbench.tasks.spaces import Genotype

COMMON = ["evaluate.epochs=1", "task.test_limit=101", "search.max_steps_per_epoch=2"]


def main(out: str, *runs: str) -> None:
    for run in runs:
        name, config, *overrides = run.split(",")
        cfg = load_config(config, [*COMMON, *overrides])
        accelerator = make_accelerator(cfg)
        task = TASKS.get(cfg.task_name)(cfg.task)
        data = task.prepare_data()
        found = search(cfg, task, accelerator, progress=False, folder=Path(out) / name / "checkpoints")
        net = accelerator.prepare(task.build_network(Genotype.from_dict(found["genotype"]), cfg.evaluate))
        test = evaluate_split(task, net, prepare_eval_loader(accelerator, task.loader("test", 7)), accelerator)
        result = {
            "rank": accelerator.process_index,
            "world_size": accelerator.num_processes,
            "probabilities": found["probabilities"],
            "genotype": found["genotype"],
            "test_count": test["count"],
            "test_size": data.sizes["test"],
        }
        (Path(out) / f"{name}.rank{accelerator.process_index}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:])

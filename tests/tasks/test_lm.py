"""Language modelling (ptb, wt2): data and roles, the recurrent cell, carried hidden state, ASGD, bad inputs, runs."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from egsbench.benchmark.config import bundled_configs, load_config
from egsbench.benchmark.runner import run_experiment
from egsbench.tasks import TASKS
from egsbench.tasks.lm import LMConfig, LMSearchConfig, LMTrainConfig, batchify
from egsbench.tasks.spaces import (
    GENOTYPES,
    SPACES,
    ConfigError,
    DataError,
    DataNotFoundError,
    RNNCell,
    RNNModel,
    SearchRNNCell,
    count_parameters,
    genotype_weights,
)
from egsbench.tasks.spaces import rnn as rnn_module
from egsbench.tasks.training import AveragedSGD
from egsbench.testing import write_lm_files
from egsbench.testing.tasks import check_task

from ..conftest import SHARED_DATA

PTB = SHARED_DATA / "ptb"
WT2 = SHARED_DATA / "wikitext-2"


@pytest.fixture
def ptb_files(tmp_path):
    return write_lm_files(tmp_path / "ptb", "ptb.{split}.txt", lines=60)


def _task(folder, **kwargs):
    return TASKS.get("ptb")(LMConfig(data_dir=str(folder), eval_batch_size=2, test_batch_size=2, **kwargs))


def test_darts_v2_rnn_has_the_published_parameter_count():
    # 850/850 on PTB (10k words): embedding 8.5M (tied decoder weight) + decoder bias 10k + W0 (1700 x 1700)
    # + 8 x W_i (850 x 1700) = 22,960,000, DARTS's "23M"; the vocabulary-digest buffer is not a parameter.
    genotype = GENOTYPES.get("darts_v2_rnn")
    SPACES.get("darts_rnn").validate(genotype)
    net = RNNModel(10000, 850, 850, RNNCell(genotype["recurrent"], 850, 850))
    assert count_parameters(net) == 8_500_000 + 10_000 + 1700 * 1700 + 8 * 850 * 1700 == 22_960_000


def test_search_cell_shapes_and_sparse_execution(monkeypatch):
    space = SPACES.get("dag_rnn")
    cell = SearchRNNCell(space, 6, 6, 0.0, 0.0).eval()
    weights = torch.zeros(space.num_edges, space.num_ops)
    weights[:, space.op_index("relu")] = 1.0  # tanh has weight 0 everywhere: it must never run
    calls = []
    monkeypatch.setitem(rnn_module.ACTIVATIONS, "tanh", lambda x: calls.append(1) or torch.tanh(x))
    out, hidden = cell(torch.randn(7, 3, 6), torch.zeros(3, 6), weights)
    assert out.shape == (7, 3, 6) and hidden.shape == (3, 6) and torch.equal(out[-1], hidden)
    assert not calls
    weights[:, space.op_index("tanh")] = 0.5
    cell(torch.randn(2, 3, 6), torch.zeros(3, 6), weights)
    assert calls


def test_genotype_in_supernet_matches_one_predecessor_per_node():
    genotype = GENOTYPES.get("darts_v2_rnn")
    w = genotype_weights(SPACES.get("darts_rnn"), genotype)["recurrent"]
    assert w.shape == (36, 5) and w.sum() == 8  # 1 + 2 + ... + 8 edges, one op per node


def test_batchify_and_bptt_batches_follow_the_reference(ptb_files):
    data = torch.arange(23)
    b = batchify(data, 4)  # 23 // 4 = 5 rows, 3 trimmed
    assert b.shape == (5, 4) and b[:, 1].tolist() == [5, 6, 7, 8, 9]
    task = _task(ptb_files)
    batch = next(iter(task.loader("test", 2)))
    assert torch.equal(batch.y[:-1], batch.x[1:])  # targets are the inputs shifted by one step
    lengths = {b.x.shape[0] for b in task.loader("train", 2, torch.Generator().manual_seed(0), LMTrainConfig(bptt=12))}
    assert len(lengths) > 1  # variable BPTT length in training


def test_hidden_state_is_carried_across_batches_and_detached(ptb_files):
    task = _task(ptb_files)
    net = task.build_network(GENOTYPES.get("darts_v2_rnn"), LMTrainConfig(emsize=8, nhid=8, bptt=6))
    first, second = list(task.loader("test", 2))[:2]
    assert first.carry.start(first.index) is None  # a pass starts from zeros
    out = task.train_loss(net, first, LMTrainConfig(emsize=8, nhid=8, bptt=6))
    left = first.carry.hidden
    assert left is not None and not left.requires_grad and out.loss.requires_grad
    task.train_loss(net, second, LMTrainConfig(emsize=8, nhid=8, bptt=6))
    assert second.carry.incoming is left  # the second batch started where the first ended
    again = second.carry.start(second.index)
    assert again is left  # every pass over the same batch (a bilevel step) starts from the same state


def test_embedding_init_and_the_alpha_loss_follow_darts(ptb_files):
    """rnn/model.py: embedding (tied decoder) U(-0.04, 0.04), decoder bias 0; model_search.py ``_loss``: the alpha
    loss is the NLL alone, the weights' loss adds TAR (train_search.py); ``alpha_loss: nll+tar`` adds it to both."""
    torch.manual_seed(0)  # on some initialisations the hidden states move so little that NLL + TAR rounds to NLL
    task = _task(ptb_files)
    space = SPACES.get("darts_rnn")
    cfg = LMSearchConfig(batch_size=2, emsize=32, nhid=32, bptt=6, beta=10.0)  # TAR large enough to see
    net = task.build_supernet(space, cfg)
    emb = net.encoder.weight
    assert emb.abs().max() <= 0.04 and emb.abs().max() > 0.035 and not net.decoder.bias.any()
    weights = {"recurrent": torch.softmax(torch.zeros(space.num_edges, space.num_ops), -1)}
    out = task.search_loss(net, next(iter(task.loader("search-train", 2))), weights)
    assert out.arch is not None and out.arch_loss < out.loss  # NLL < NLL + TAR
    task = _task(ptb_files)
    task.build_supernet(space, LMSearchConfig(batch_size=2, emsize=32, nhid=32, alpha_loss="nll+tar"))
    out = task.search_loss(net, next(iter(task.loader("search-train", 2))), weights)
    assert out.arch is None and out.arch_loss is out.loss
    with pytest.raises(ConfigError, match="search.alpha_loss"):
        LMSearchConfig(alpha_loss="tar")


def test_untrained_model_perplexity_is_near_the_vocabulary_size(ptb_files):
    task = _task(ptb_files)
    task.prepare_data()
    net = task.build_network(GENOTYPES.get("darts_v2_rnn"), LMTrainConfig(emsize=16, nhid=16)).eval()
    sums = sum(task.eval_sums(net, b) for b in task.loader("test", 2))
    ppl, vocab = task.summarize(sums)["ppl"], len(task.vocab)
    assert 0.8 * vocab < ppl < 1.25 * vocab


def test_asgd_switches_on_the_non_monotone_trigger_and_averages():
    net = torch.nn.Linear(2, 1, bias=False)
    opt = AveragedSGD(net.parameters(), lr=0.1)
    task = TASKS.get("ptb")(LMConfig())
    cfg = LMTrainConfig(nonmono=2)
    # AWD-LSTM: switch when len(history) > nonmono and loss > min(history[:-nonmono]). Epoch 4 (3.2) is not worse
    # than min(5, 4); epoch 5 (3.1) is worse than min(5, 4, 3) = 3.
    losses = [5.0, 4.0, 3.0, 3.5, 3.2, 3.1]
    switched = []
    for epoch, value in enumerate(losses):
        row = task.end_epoch(net, opt, epoch, cfg, lambda split, v=value: {"loss": v, "ppl": math.exp(v)})
        switched.append(row["asgd_switch"])
    assert switched == [0, 0, 0, 0, 0, 1] and opt.averaging
    iterates = []
    for _ in range(3):
        net.weight.grad = torch.ones_like(net.weight)
        opt.step()
        iterates.append(net.weight.detach().clone())
    with task.eval_weights(net, opt):
        assert torch.allclose(net.weight, torch.stack(iterates).mean(0))
    assert torch.equal(net.weight, iterates[-1])  # restored after evaluation
    state = opt.state_dict()
    assert state["param_groups"][0]["averaging"] and len(state["param_groups"][0]["val_history"]) == 6


def test_missing_files_name_what_to_provide(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"ptb\.train\.txt.*task\.data_dir"):
        _task(tmp_path / "nothing").prepare_data()
    with pytest.raises(DataNotFoundError, match=r"wiki\.valid\.tokens or valid\.txt"):
        TASKS.get("wt2")(LMConfig(data_dir=str(tmp_path))).prepare_data()


def test_ptb_has_no_hub_route_and_says_to_use_the_files(tmp_path):
    """``ptb_text_only`` is a loading script datasets 4 no longer runs: task.hub=true on ptb is a config error."""
    with pytest.raises(ConfigError, match=r"task\.hub=true: Penn Treebank has no Hub copy.*ptb\.\{train,valid,test\}"):
        _task(tmp_path, hub=True).prepare_data()
    with pytest.raises(DataNotFoundError) as missing:  # nor does the missing-files message offer the hub
        _task(tmp_path / "nothing").prepare_data()
    assert "task.hub" not in str(missing.value)


def test_wikitext2_hub_route_loads_its_id_and_names_it_when_offline(monkeypatch):
    import datasets

    calls = []

    def offline(*args, **kwargs):
        calls.append(args)
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataNotFoundError, match=r"wikitext/wikitext-2-v1: ConnectionError: no network.*data_dir"):
        TASKS.get("wt2")(LMConfig(hub=True)).prepare_data()
    assert calls == [("wikitext", "wikitext-2-v1")]


def test_an_empty_file_is_refused(ptb_files):
    (ptb_files / "ptb.test.txt").write_text("\n\n")
    with pytest.raises(DataError, match="ptb.test.txt is empty"):
        _task(ptb_files).prepare_data()


def test_weights_from_another_vocabulary_are_refused(ptb_files, tmp_path):
    genotype, cfg = GENOTYPES.get("darts_v2_rnn"), LMTrainConfig(emsize=8, nhid=8)
    state = _task(ptb_files).build_network(genotype, cfg).state_dict()
    other = write_lm_files(tmp_path / "other", "ptb.{split}.txt", lines=60, vocab=30, seed=1)
    (other / "ptb.train.txt").write_text((other / "ptb.train.txt").read_text().replace("w1 ", "x1 "))
    net = _task(other).build_network(genotype, cfg)
    with pytest.raises(DataError, match="another vocabulary"):
        net.load_state_dict(state)


def test_roles_sharing_a_file_cut_it_and_are_recorded(ptb_files):
    task = _task(ptb_files, train_split="valid", valid_split="valid", test_split="valid", holdout=0.2)
    info = task.prepare_data()
    n = sum(len(line.split()) + 1 for line in (ptb_files / "ptb.valid.txt").read_text().splitlines())
    assert info.sizes["train"] + info.sizes["valid"] + info.sizes["test"] == n
    assert info.sizes["valid"] == info.sizes["test"] == int(0.2 * n)
    assert "ptb.valid.txt tokens [0," in info.roles["train"] and "ptb.train" not in json.dumps(dict(info.roles))


@pytest.mark.parametrize("name", ["ptb", "wt2"])
def test_task_conformance(name, tmp_path):
    task = TASKS.get(name)(TASKS.get(name).conformance_config(tmp_path))
    check_task(task, space="dag_rnn", genotype=GENOTYPES.get("darts_v2_rnn"))


def test_shared_ptb_and_wikitext2_text():
    if not (PTB / "ptb.valid.txt").is_file() or not (WT2 / "valid.txt").is_file():
        pytest.skip(f"shared PTB / WikiText-2 text not available under {SHARED_DATA}")
    ptb = TASKS.get("ptb")(LMConfig(data_dir=str(PTB), train_split="valid", test_split="test"))
    info = ptb.prepare_data()
    assert info.sizes["train"] + info.sizes["valid"] == 73760 and info.sizes["test"] == 82430  # README counts
    assert "<eos>" in ptb.vocab and "<unk>" in ptb.vocab and len(ptb.vocab) < 10001
    # The train role is PTB valid's first 90 % (the official train file, absent here, leaves no word out): the
    # other roles' words outside it, 4.65 % of valid's last 10 % and 4.45 % of test; PTB's own <unk>s are known.
    assert ptb.record_extras() == {
        "oov_rate": {"valid": pytest.approx(0.0465, abs=5e-4), "test": pytest.approx(0.0445, abs=5e-4)}
    }
    wt2 = TASKS.get("wt2")(LMConfig(data_dir=str(WT2), train_split="valid", valid_split="valid", test_split="valid"))
    sizes = wt2.prepare_data().sizes
    assert sizes["valid"] == sizes["test"] > 0 and sizes["train"] > 8 * sizes["test"]


SMOKE = [c for c in bundled_configs() if c.startswith("smoke/") and c.endswith("-ptb")]


@pytest.mark.parametrize("config", SMOKE)
def test_smoke_search_and_evaluation_per_method(config, tmp_path):
    folder = write_lm_files(tmp_path / "ptb", "ptb.{split}.txt", lines=80)
    cfg = load_config(config, [f"task.data_dir={folder}", "task.max_tokens=400", "figures=false"])
    record = run_experiment(cfg, tmp_path / "run", progress=False).record
    m = record["metrics"]
    assert set(m) >= {"test_ppl", "test_loss", "params_m"} and m["test_ppl"] == pytest.approx(math.exp(m["test_loss"]))
    assert "valid_ppl" in record["extras"]["valid"] and "search-train" in record["extras"]["data_roles"]
    assert set(record["extras"]["oov_rate"]) == {"valid", "test"}  # the task's record_extras, kept by the runner
    ev = record["evaluate"]  # throughput in tokens: each step predicts batch x (its BPTT length) tokens
    assert ev["example_unit"] == "tokens" and ev["examples_per_s"] > ev["steps_per_s"] * cfg.evaluate.batch_size
    SPACES.get(record["space"]).validate(type(GENOTYPES.get("darts_v2_rnn")).from_dict(record["genotype"]))


def test_search_config_carries_the_weight_optimiser_fields():
    cfg = LMSearchConfig()
    assert (cfg.lr, cfg.lr_min, cfg.momentum, cfg.grad_clip) == (20.0, 20.0, 0.0, 0.25)  # DARTS rnn search
    with pytest.raises(ValueError, match="emsize"):
        LMSearchConfig(emsize=10, nhid=12)


@pytest.mark.parametrize("phase", ["search", "evaluate"])
def test_a_run_stopped_after_an_epoch_resumes_to_the_uninterrupted_record(phase, tmp_path, monkeypatch):
    """Resume restores what a recurrent run carries between epochs: alphas and sampling state in the search, the
    weights, the optimiser (SGD or ASGD with its averages and validation history) and the data order in training,
    and the evaluation batches keep the final-training recipe's BPTT (they once fell back to the default 35 when a
    resumed run skipped the supernet: validation losses 1e-8 apart)."""
    from egsbench.benchmark.checkpoint import Checkpointer

    folder = write_lm_files(tmp_path / "ptb", "ptb.{split}.txt", lines=80)
    overrides = [
        f"task.data_dir={folder}",
        "task.max_tokens=400",
        "search.epochs=2",
        "evaluate.epochs=3",
        "figures=false",
    ]
    cfg = load_config("smoke/egs-ptb", overrides)
    reference = run_experiment(cfg, tmp_path / "whole", progress=False).record
    save = Checkpointer.save

    def save_then_stop(self, epoch, state, progress):
        path = save(self, epoch, state, progress)
        if self.folder.name == phase and epoch == 0:
            raise KeyboardInterrupt
        return path

    with monkeypatch.context() as patch:
        patch.setattr(Checkpointer, "save", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            run_experiment(cfg, tmp_path / "stopped", progress=False)
    assert not (tmp_path / "stopped" / "record.json").exists()
    resumed = run_experiment(cfg, tmp_path / "stopped", progress=False, resume=True).record
    assert resumed["genotype"] == reference["genotype"]
    assert resumed["metrics"] == reference["metrics"] and resumed["extras"]["valid"] == reference["extras"]["valid"]
    for name in ("search_curves.csv", "eval_curves.csv"):  # every column but the wall-clock seconds
        tables = [list(csv.DictReader((tmp_path / run / name).open())) for run in ("stopped", "whole")]
        rows = [[{k: v for k, v in row.items() if k != "seconds"} for row in table] for table in tables]
        assert rows[0] == rows[1] and ("arch_entropy" if name.startswith("search") else "test_loss") in rows[0][0]
    # evaluate.eval_every: 0 (the LM default): the test set only after the last epoch, empty test cells before.
    assert [row["test_loss"] != "" for row in rows[0]] == [False, False, True]

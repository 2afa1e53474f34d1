"""Every registered task passes the same checks (``egsbench.testing``) on the tiny data of its
``conformance_config``: a new task is tested for free."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from egsbench.tasks import TASKS, Task, TrainConfig
from egsbench.tasks.cifar import CIFAR10
from egsbench.tasks.spaces import SPACES, ConfigError
from egsbench.testing import TASK_CHECKS, check_task, conformance_task, write_image_folder
from egsbench.testing.tasks import check_data_splits, check_declares_metrics, check_supernet_search_loss


@pytest.fixture(scope="module")
def task_for(tmp_path_factory):
    """One instance per task name for the module, so each prepares its data once."""
    built = {}

    def get(name: str):
        if name not in built:
            built[name] = conformance_task(TASKS.get(name), tmp_path_factory.mktemp(name))
        return built[name]

    return get


@pytest.mark.parametrize("check", TASK_CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
@pytest.mark.parametrize("name", TASKS.names())
def test_task_conformance(task_for, name, check):
    task = task_for(name)
    if check is check_supernet_search_loss and type(task).build_supernet is Task.build_supernet:
        # A transfer-only task (voc2012) has no supernet: the base class refuses, saying what to do instead.
        with pytest.raises(ConfigError, match="no search supernet.*transfer_from.*method: fixed"):
            task.build_supernet(SPACES.get(task.conformance_space), task.conformance_recipes()[0])
        return
    check(task)


def test_cifar10_conformance_config_is_tiny_and_embedded(task_for):
    info = task_for("cifar10").prepare_data()
    assert info.source.startswith("embedded:")
    assert dict(info.sizes) == {"search-train": 16, "search-val": 16, "train": 32, "test": 16}


def test_check_task_runs_on_an_image_folder_fixture(tmp_path):
    root = write_image_folder(tmp_path / "data", classes=("a", "b"), per_class=6)
    task = CIFAR10(CIFAR10.config_class(data_dir=str(root)))
    check_task(task)
    assert task.prepare_data().sizes["test"] == 12


# -- the checks must fail on broken tasks ---------------------------------------------------------
class _NoHook(Task):  # a task class that does not override conformance_config
    config_class = dict


class _WrongMainMetric(CIFAR10):
    main_metric = "bleu"


@dataclasses.dataclass
class _RecipeWithoutLrMin(TrainConfig):
    lr_fields = ("lr", "lr_peak")  # names a key the block does not have


class _UndeclaredLrFields(CIFAR10):
    train_config_class = _RecipeWithoutLrMin


class _SearchLossWithoutGradient(CIFAR10):
    def search_loss(self, model, batch, weights):
        out = super().search_loss(model, batch, weights)
        return dataclasses.replace(out, loss=out.loss.detach().requires_grad_())


class _UnseededAugmentation(CIFAR10):
    def loader(self, split, batch_size, generator=None, recipe=None):
        torch.manual_seed(torch.seed())  # reseeds from the OS: the same seeds no longer give the same batch
        return super().loader(split, batch_size, generator, recipe)


class _EmptyTestSplit(CIFAR10):
    def prepare_data(self):  # (config validation refuses test_limit=0, so empty the split after loading)
        info = super().prepare_data()
        self.splits["test"] = self.splits["test"].subset(torch.arange(0))
        return dataclasses.replace(info, sizes={**info.sizes, "test": 0})


def test_a_task_without_conformance_config_is_told_what_to_add(tmp_path):
    with pytest.raises(NotImplementedError, match="has no `conformance_config\\(tmp_path\\)` class method; add one"):
        conformance_task(_NoHook, tmp_path)


@pytest.mark.parametrize(
    "task_cls, check, message",
    [
        (_WrongMainMetric, check_declares_metrics, "main_metric 'bleu'"),
        (_UndeclaredLrFields, check_declares_metrics, r"lr_fields names \['lr_peak'\]"),
        (_SearchLossWithoutGradient, check_supernet_search_loss, "no gradient reached"),
        (_UnseededAugmentation, check_data_splits, "different first batches"),
        (_EmptyTestSplit, check_data_splits, "split 'test' is empty"),
    ],
    ids=["main-metric", "lr-fields", "gradient", "seeding", "empty-split"],
)
def test_checks_catch_broken_tasks(tmp_path, task_cls, check, message):
    with pytest.raises(AssertionError, match=message):
        check(conformance_task(task_cls, tmp_path))


def test_checks_name_the_protocol_members_a_task_lacks():
    class HalfATask(Task):
        metrics = ()

        def prepare_data(self): ...

        def build_supernet(self, space, config): ...  # it can search, so it must give search_loss

    with pytest.raises(AssertionError, match="lacks members of the Task protocol: .*'build_network'.*'search_loss'"):
        check_declares_metrics(HalfATask())

    class NotATask:
        metrics = ()

    with pytest.raises(AssertionError, match="must subclass egsbench.tasks.Task"):
        check_declares_metrics(NotATask())

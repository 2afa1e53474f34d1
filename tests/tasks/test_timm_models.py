"""Derived networks as timm models: registry, pretrained_cfg, genotype forms, features_only, and the weight round
trip (create, save, load, same output) through both of timm's loading routes."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_model

from egsbench.tasks.imagenet import mobile_macs
from egsbench.tasks.spaces import DARTS_V2, GENOTYPES, NetworkCIFAR, NetworkImageNet, UnknownNameError
from egsbench.tasks.timm_models import EgsBenchCIFAR, EgsBenchImageNet, take_indices

TINY = {
    "egsbench_cifar": dict(channels=4, layers=3, num_classes=10),
    "egsbench_imagenet": dict(channels=4, layers=3, num_classes=7, img_size=64),
}
SIZE = {"egsbench_cifar": 32, "egsbench_imagenet": 64}


def _x(name: str, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, SIZE[name], SIZE[name], generator=torch.Generator().manual_seed(0))


def test_both_models_are_in_timms_registry_once_the_module_is_imported():
    assert set(timm.list_models("egsbench_*")) == {"egsbench_cifar", "egsbench_imagenet"}


@pytest.mark.parametrize(
    "name, size, classes, mean0",
    [("egsbench_cifar", 32, 10, 0.4914), ("egsbench_imagenet", 224, 1000, 0.485)],
)
def test_pretrained_cfg(name, size, classes, mean0):
    cfg = timm.models.get_pretrained_cfg(name)
    assert cfg.input_size == (3, size, size) and cfg.num_classes == classes
    assert cfg.mean[0] == pytest.approx(mean0, abs=1e-4) and not cfg.url and not cfg.hf_hub_id
    assert timm.create_model(name, genotype="darts_v2", **TINY[name]).pretrained_cfg["classifier"] == "classifier"


@pytest.mark.parametrize("name", sorted(TINY))
def test_forward_is_timms_logits_only_and_the_head_interface(name):
    net = timm.create_model(name, genotype="darts_v2", **TINY[name]).train()
    x = _x(name)
    assert net(x).shape == (2, TINY[name]["num_classes"])  # a tensor, not (logits, aux): timm's train.py loop
    features = net.forward_features(x)
    assert net.forward_head(features, pre_logits=True).shape == (2, net.num_features)
    net.reset_classifier(3)
    assert net.eval()(x).shape == (2, 3) and net.get_classifier().out_features == 3


def test_genotype_forms_build_the_same_network(tmp_path):
    path = tmp_path / "cell.json"
    DARTS_V2.save(path)
    run = tmp_path / "run"
    run.mkdir()
    DARTS_V2.save(run / "genotype.json")
    shapes = {
        form: [tuple(p.shape) for p in EgsBenchCIFAR(genotype=g, channels=4, layers=3).parameters()]
        for form, g in [
            ("name", "darts_v2"),
            ("genotype", DARTS_V2),
            ("dict", DARTS_V2.to_dict()),
            ("json", str(path)),
            ("run", str(run)),
            ("default", None),
        ]
    }
    assert len({tuple(s) for s in shapes.values()}) == 1
    m7 = EgsBenchCIFAR(genotype="egs_released_m7", channels=4, layers=3)
    assert [tuple(p.shape) for p in m7.parameters()] != shapes["name"]
    with pytest.raises(UnknownNameError, match="did you mean 'darts_v2'"):
        EgsBenchCIFAR(genotype="darts_v3")


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("route", ["checkpoint_path", "pretrained_file"])
def test_round_trip_create_save_load_same_output(name, route, tmp_path):
    torch.manual_seed(0)
    net = timm.create_model(name, genotype="egs_released_m7", **TINY[name]).eval()
    path = tmp_path / "model.safetensors"
    save_model(net, str(path))
    if route == "checkpoint_path":
        loaded = timm.create_model(name, genotype="egs_released_m7", checkpoint_path=str(path), **TINY[name])
    else:
        loaded = timm.create_model(
            name, genotype="egs_released_m7", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **TINY[name]
        )
    x = _x(name)
    torch.testing.assert_close(loaded.eval()(x), net(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    "name, project_cls", [("egsbench_cifar", NetworkCIFAR), ("egsbench_imagenet", NetworkImageNet)]
)
def test_weights_of_the_projects_network_with_an_auxiliary_head_load(name, project_cls, tmp_path):
    """A run's model.safetensors comes from the project's class, auxiliary head included."""
    t = TINY[name]
    kwargs = {"image_size": t["img_size"]} if "img_size" in t else {}
    torch.manual_seed(1)
    run_net = project_cls(DARTS_V2, t["channels"], t["num_classes"], t["layers"], auxiliary=True, **kwargs).eval()
    path = tmp_path / "model.safetensors"
    save_model(run_net, str(path))
    x = _x(name)
    for loaded in (
        timm.create_model(name, genotype="darts_v2", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **t),
        timm.create_model(name, genotype="darts_v2", auxiliary=True, checkpoint_path=str(path), **t),
    ):
        torch.testing.assert_close(loaded.eval()(x), run_net(x)[0], rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="auxiliary"):  # the strict route without the head names the extra keys
        timm.create_model(name, genotype="darts_v2", checkpoint_path=str(path), **t)


@pytest.mark.parametrize(
    "name, strides",
    [("egsbench_cifar", [1, 1, 2, 4]), ("egsbench_imagenet", [4, 8, 8, 16, 32])],
)
def test_features_only_gives_the_maps_feature_info_describes(name, strides):
    backbone = timm.create_model(name, genotype="darts_v2", features_only=True, **TINY[name]).eval()
    assert backbone.feature_info.reduction() == strides
    maps = backbone(_x(name))
    size = SIZE[name]
    assert [m.shape[1] for m in maps] == backbone.feature_info.channels()
    assert [size // m.shape[-1] for m in maps] == strides
    last_two = timm.create_model(name, genotype="darts_v2", features_only=True, out_indices=(-2, -1), **TINY[name])
    assert len(last_two.eval()(_x(name))) == 2


@pytest.mark.parametrize("count, indices", [(5, None), (5, 1), (5, 5), (5, [0, 2]), (5, (-2, -1)), (4, [-4, 3])])
def test_take_indices_answers_as_timms_private_helper(count, indices):
    """timm keeps `feature_take_indices` private (timm.models._features), so the models use their own copy; this
    holds it to timm's convention for as long as timm has the helper."""
    features = pytest.importorskip("timm.models._features")
    assert take_indices(count, indices) == tuple(features.feature_take_indices(count, indices))


@pytest.mark.parametrize("indices", [0, 6, [5], [-6, 0]])
def test_take_indices_out_of_range_raises(indices):
    with pytest.raises(ValueError, match=r"must be 1 to 5|out of range: 5 maps"):
        take_indices(5, indices)


def test_fit_macs_narrows_the_imagenet_model():
    net = EgsBenchImageNet(genotype="darts_v2", channels=16, layers=3, num_classes=10, fit_macs=5e6)
    c = net.channels
    assert c < 16 and c % 2 == 0 and net.stem0[3].out_channels == c
    assert mobile_macs(DARTS_V2, c, 3, 10) <= 5e6 < mobile_macs(DARTS_V2, c + 2, 3, 10)


def test_released_egs_cell_builds_as_a_timm_model():
    net = timm.create_model("egsbench_cifar", genotype=GENOTYPES.get("egs_released_m7"), channels=4, layers=3)
    assert isinstance(net, EgsBenchCIFAR) and net.eval()(_x("egsbench_cifar")).shape == (2, 10)


@pytest.mark.parametrize("epochs, lr, lr_min", [(600, 0.025, 0.0), (50, 0.025, 0.001)])
def test_timms_cosine_schedule_is_the_projects_bit_for_bit(epochs, lr, lr_min):
    """So the CIFAR recipe and the search could switch to timm's scheduler without moving a golden record."""
    from timm.scheduler import CosineLRScheduler

    from egsbench.tasks.training import cosine_lr

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = CosineLRScheduler(optimizer, t_initial=epochs, lr_min=lr_min)
    for epoch in range(epochs):
        scheduler.step(epoch)
        assert optimizer.param_groups[0]["lr"] == cosine_lr(epoch, epochs, lr, lr_min)


def test_timms_drop_path_draws_the_projects_mask_but_rounds_differently():
    """Why the ImageNet cells use timm's drop path and the CIFAR cells keep the project's (golden records)."""
    from timm.layers import drop_path as timm_drop_path

    from egsbench.tasks.spaces import drop_path

    x = torch.randn(64, 8, 4, 4)
    torch.manual_seed(0)
    ours = drop_path(x, 0.3)  # x / keep * mask
    torch.manual_seed(0)
    theirs = timm_drop_path(x, 0.3, training=True)  # x * (mask / keep)
    assert torch.equal(ours == 0, theirs == 0)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=0)

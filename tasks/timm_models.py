"""Derived networks as timm models: ``egsbench_cifar`` and ``egsbench_imagenet``.

Importing this module registers both with timm (``import egsbench`` alone does not), so a searched cell
trains with timm's own ``train.py`` and loads the weights a run wrote::

    import egsbench.tasks.timm_models, timm
    net = timm.create_model("egsbench_imagenet", genotype="runs/egs-cifar10")  # a run folder, JSON, or a name
    net = timm.create_model("egsbench_cifar", genotype="darts_v2", pretrained=True,
                            pretrained_cfg_overlay=dict(file="runs/darts_v2-cifar10/model.safetensors"))

Genotype forms, a run's C and cells, auxiliary-head weights, ``features_only``, and where these models
deviate from timm's usual ones: docs/fidelity/timm_models.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from .cifar import MEAN as CIFAR_MEAN
from .cifar import STD as CIFAR_STD
from .imagenet import fit_channels
from .spaces import Genotype, NetworkCIFAR, NetworkImageNet, load_genotype

__all__ = ["EgsBenchCIFAR", "EgsBenchImageNet", "resolve_genotype", "take_indices"]


def resolve_genotype(genotype: Genotype | Mapping | str | Path | None) -> Genotype:
    """A genotype from a Genotype, its dict, a registered name, a JSON file or a run folder (None: ``darts_v2``)."""
    if isinstance(genotype, Genotype):
        return genotype
    if isinstance(genotype, Mapping):
        return Genotype.from_dict(dict(genotype))
    return load_genotype(str(genotype or "darts_v2"))


def take_indices(count: int, indices: int | Sequence[int] | None) -> tuple[list[int], int]:
    """The feature maps ``forward_intermediates(indices=...)`` takes, by timm's convention, and the largest.

    None takes all ``count`` maps, an int ``n`` the last ``n``, a sequence those positions (negative ones count
    from the end). timm's own helper (``timm.models._features.feature_take_indices``) is private, so this is
    ours; it raises ValueError where timm's asserts.

    Examples:
        >>> take_indices(5, 2), take_indices(5, [0, -1]), take_indices(3, None)
        (([3, 4], 4), ([0, 4], 4), ([0, 1, 2], 2))
    """
    if indices is None:
        indices = count
    if isinstance(indices, int):
        if not 0 < indices <= count:
            raise ValueError(f"indices={indices} takes the last n feature maps: n must be 1 to {count}")
        take = list(range(count - indices, count))
    else:
        take = [count + i if i < 0 else i for i in indices]
        bad = [i for i, t in zip(indices, take, strict=True) if not 0 <= t < count]
        if bad:
            raise ValueError(f"feature indices {bad} are out of range: {count} maps, indices -{count} to {count - 1}")
    return take, max(take)


def _cell_channels(cell: nn.Module) -> int:
    return cell.multiplier * cell.preprocess1[1].out_channels  # len(concat) * C of the cell


class _TimmInterface:
    """timm's model interface over a DARTS-style network with ``cells``, ``global_pooling`` and ``classifier``."""

    feature_points: list  # where each feature_info entry is taken: a stem's name or a cell index

    def _timm_init(self, num_classes: int, drop_rate: float, drop_path_rate: float, global_pool: str) -> None:
        if global_pool != "avg":
            raise ValueError(f"global_pool must be 'avg' (DARTS networks average-pool), got {global_pool!r}")
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = self.classifier.in_features
        self.drop_rate = drop_rate
        self.drop_path_prob = drop_path_rate

    def _feature_info(self, stems: list[tuple[str, int, int]], first_stride: int) -> None:
        """``stems``: (module, channels, stride); then the last cell of each stage and the last cell."""
        info = [dict(num_chs=c, reduction=r, module=name) for name, c, r in stems]
        points: list = [name for name, _, _ in stems]
        stride, n = first_stride, len(self.cells)
        for i, cell in enumerate(self.cells):
            last_of_stage = i == n - 1 or self.cells[i + 1].reduction
            if last_of_stage and i not in points:
                info.append(dict(num_chs=_cell_channels(cell), reduction=stride, module=f"cells.{i}"))
                points.append(i)
            stride = stride * 2 if i + 1 < n and self.cells[i + 1].reduction else stride
        self.feature_info, self.feature_points = info, points

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pooling(x).flatten(1)  # (B, num_features)
        if self.drop_rate > 0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.classifier(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_intermediates(x, indices=[], intermediates_only=False)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ):
        """The maps of ``feature_info`` picked by ``indices`` (timm's convention), and the last cell's output."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take, max_index = take_indices(len(self.feature_info), indices) if indices != [] else ([], -1)
        wanted = {self.feature_points[t]: t for t in take}
        out: dict[int, torch.Tensor] = {}
        s0, s1 = self._stems(x, wanted, out)
        last_cell = len(self.cells) - 1
        if stop_early and intermediates_only and isinstance(self.feature_points[max_index], int):
            last_cell = self.feature_points[max_index]
        for i, cell in enumerate(self.cells[: last_cell + 1]):
            s0, s1 = s1, cell(s0, s1, self.drop_path_arg())
            if i in wanted:
                out[wanted[i]] = s1
        intermediates = [out[t] for t in take]
        return intermediates if intermediates_only else (s1, intermediates)


class EgsBenchCIFAR(_TimmInterface, NetworkCIFAR):
    """:class:`~.spaces.NetworkCIFAR` with timm's interface (see the module docstring)."""

    def __init__(
        self,
        genotype: Any = None,
        num_classes: int = 10,
        in_chans: int = 3,
        channels: int = 36,
        layers: int = 20,
        auxiliary: bool = False,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
    ):
        super().__init__(resolve_genotype(genotype), channels, num_classes, layers, auxiliary, in_chans)
        self._timm_init(num_classes, drop_rate, drop_path_rate, global_pool)
        self._feature_info([("stem", self.stem[0].out_channels, 1)], first_stride=1)

    def _stems(self, x, wanted, out):
        s = self.stem(x)  # (B, 3C, H, W)
        if "stem" in wanted:
            out[wanted["stem"]] = s
        return s, s


class EgsBenchImageNet(_TimmInterface, NetworkImageNet):
    """:class:`~.spaces.NetworkImageNet` with timm's interface; ``fit_macs`` narrows C as ``evaluate.fit_macs``."""

    def __init__(
        self,
        genotype: Any = None,
        num_classes: int = 1000,
        in_chans: int = 3,
        channels: int = 48,
        layers: int = 14,
        auxiliary: bool = False,
        img_size: int = 224,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        fit_macs: float | None = None,
        global_pool: str = "avg",
    ):
        genotype = resolve_genotype(genotype)
        if fit_macs is not None:
            channels = fit_channels(genotype, layers, fit_macs, channels, num_classes)
        super().__init__(genotype, channels, num_classes, layers, auxiliary, in_chans, image_size=img_size)
        self._timm_init(num_classes, drop_rate, drop_path_rate, global_pool)
        self.channels = channels
        self._feature_info([("stem0", channels, 4), ("stem1", channels, 8)], first_stride=8)

    def _stems(self, x, wanted, out):
        s0 = self.stem0(x)  # (B, C, H/4, W/4)
        s1 = self.stem1(s0)  # (B, C, H/8, W/8)
        for name, s in (("stem0", s0), ("stem1", s1)):
            if name in wanted:
                out[wanted[name]] = s
        return s0, s1


def _drop_auxiliary(state_dict: dict, model: nn.Module) -> dict:
    """timm's ``pretrained_filter_fn``: a run's ``auxiliary.*`` tensors go when the model has no head."""
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    if getattr(model, "auxiliary", None) is None:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("auxiliary.")}
    return state_dict


def _cfg(**kwargs) -> dict:
    # No url / hf_hub_id: there are no released weights; pretrained_cfg_overlay=dict(file=...) names a run's.
    return dict(url="", classifier="classifier", interpolation="bilinear", license="mit", **kwargs)


default_cfgs = generate_default_cfgs(
    {
        "egsbench_cifar": _cfg(
            num_classes=10,
            input_size=(3, 32, 32),
            pool_size=(8, 8),
            crop_pct=1.0,
            mean=CIFAR_MEAN,
            std=CIFAR_STD,
            first_conv="stem.0",
        ),
        "egsbench_imagenet": _cfg(
            num_classes=1000,
            input_size=(3, 224, 224),
            pool_size=(7, 7),
            crop_pct=0.875,
            mean=IMAGENET_DEFAULT_MEAN,
            std=IMAGENET_DEFAULT_STD,
            first_conv="stem0.0",
        ),
    }
)


def _create(cls: type, variant: str, pretrained: bool, features: int, **kwargs) -> nn.Module:
    overlay = kwargs.get("pretrained_cfg_overlay")
    if overlay and overlay.get("file") and "num_classes" in kwargs:
        # A run's file carries its own classifier: without this timm would drop it as "another head".
        kwargs["pretrained_cfg_overlay"] = {"num_classes": kwargs["num_classes"], **overlay}
    return build_model_with_cfg(
        cls,
        variant,
        pretrained,
        pretrained_filter_fn=_drop_auxiliary,
        feature_cfg=dict(feature_cls="getter", out_indices=tuple(range(features))),
        **kwargs,
    )


@register_model
def egsbench_cifar(pretrained: bool = False, **kwargs) -> EgsBenchCIFAR:
    """A derived cell's CIFAR network (DARTS evaluation network: C=36, 20 cells by default)."""
    return _create(EgsBenchCIFAR, "egsbench_cifar", pretrained, features=4, **kwargs)


@register_model
def egsbench_imagenet(pretrained: bool = False, **kwargs) -> EgsBenchImageNet:
    """A derived cell's ImageNet mobile network (C=48, 14 cells by default; ``fit_macs=600e6`` fits the cap)."""
    return _create(EgsBenchImageNet, "egsbench_imagenet", pretrained, features=5, **kwargs)

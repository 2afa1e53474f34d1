"""``imagefolder32``: classification on any ImageFolder tree of 32x32 RGB images.

The layout is ``data_dir/train/<class>/*`` and ``data_dir/test/<class>/*`` (or a ``.tar.gz``
of that tree); the class count comes from the folders and the normalisation from the
training images. Everything else (splits, augmentation, networks, losses, the DARTS
recipe) is CIFAR-10's, so the task is a subclass that only replaces the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from egsbench.tasks import TASKS, DataInfo
from egsbench.tasks.cifar import CIFAR10, CIFAR10Config
from egsbench.tasks.spaces import DataNotFoundError
from egsbench.tasks.vision import read_image_folder


@dataclass
class ImageFolder32Config(CIFAR10Config):
    """CIFAR-10's keys; ``data_dir`` is required."""


@TASKS.register("imagefolder32")
class ImageFolder32(CIFAR10):
    config_class = ImageFolder32Config
    reference_table = None  # no paper reports on a user's folder: tables show reproduced rows only

    @classmethod
    def conformance_config(cls, tmp_path: Path) -> ImageFolder32Config:
        """Three classes of eight random PNGs per split under ``tmp_path`` (for ``egsbench.testing.check_task``)."""
        from egsbench.testing import write_image_folder  # test-only helper: imported when the checks ask

        return ImageFolder32Config(data_dir=str(write_image_folder(tmp_path / "imagefolder32")))

    def prepare_data(self) -> DataInfo:
        path = Path(self.config.data_dir or "")
        if not self.config.data_dir or not path.exists():
            raise DataNotFoundError(
                f"no ImageFolder tree at {str(path)!r}; pass --set task.data_dir=DIR with DIR/train/<class>/*.png "
                "and DIR/test/<class>/*.png (32x32 RGB)"
            )
        data, classes = read_image_folder(path)
        if tuple(data["train"].images.shape[1:]) != (3, 32, 32):
            raise DataNotFoundError(
                f"{path} holds {tuple(data['train'].images.shape[2:])} images; this task needs 32x32"
            )
        self.num_classes = len(classes)
        pixels = data["train"].images.float() / 255  # (N, 3, 32, 32)
        self.mean = tuple(pixels.mean(dim=(0, 2, 3)).tolist())
        self.std = tuple(pixels.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist())
        return self._split(data, source=f"imagefolder:{path}")

"""Data mistakes (issue 9, item 4): caught while loading, before the search starts, named with their path.

Each fixture is written in the real on-disk format (an ImageFolder tree of PNG and JPEG files, or a
``.tar.gz`` of one) and passed with ``--set task.data_dir=...``; the data is left as it was and no run
folder is created.
"""

from __future__ import annotations

import shutil

import pytest

from egsbench.tasks.cifar import CIFAR10, CIFAR10Config

from .conftest import BASE, FAST, image, image_folder, jpeg_bytes, overrides, snapshot, tar_gz


def _train_without_class_folders(root):
    shutil.rmtree(image_folder(root) / "train")
    (root / "train").mkdir()
    return root, f"{root / 'train'} holds no class folders; an ImageFolder split needs <class>/<image> files"


def _class_without_images(root):
    for f in (image_folder(root) / "train" / "dog").iterdir():
        f.unlink()
    return root, f"{root / 'train' / 'dog'} holds no images; add some or remove the class from every split"


def _corrupt_jpeg(root):
    bad = image_folder(root) / "train" / "dog" / "2.jpg"
    bad.write_bytes(jpeg_bytes()[:40])  # a JPEG cut short
    return root, f"{bad} is not a readable image"


def _class_missing_from_test(root):
    image_folder(root, test_classes=("cat",))
    return root, f"{root}: the splits have different classes (dog only in train/); every class needs images in every"


def _truncated_tar_gz(root):
    whole = tar_gz(image_folder(root / "cifar"), root / "cifar.tar.gz").read_bytes()
    shutil.rmtree(root / "cifar")
    path = root / "cut.tar.gz"
    path.write_bytes(whole[: len(whole) // 2])
    return path, f"{path} is truncated or corrupt"


def _mixed_sizes(root):
    odd = image(image_folder(root) / "train" / "cat" / "9.png", size=48)
    return root, f"images in {root / 'train'} have mixed sizes: {odd} is 48x48 while 8 others are 32x32"


def _wrong_size(root):
    image_folder(root, size=64)  # passed loading, ran the whole search, then failed in evaluation before
    return root, (f"images from imagefolder:{root} are 64x64; this task's networks expect 32x32. Resize the data, or "
                  "pass --set task.resize=true to resize on load")  # fmt: skip


@pytest.mark.parametrize(
    "make",
    [_train_without_class_folders, _class_without_images, _corrupt_jpeg, _class_missing_from_test, _truncated_tar_gz,
     _mixed_sizes, _wrong_size],
)  # fmt: skip
def test_bad_data_is_one_line_naming_the_file(cli, tmp_path, make):
    data, message = make(tmp_path / "data")
    before = snapshot(tmp_path / "data")
    out = tmp_path / "run"
    result = cli("run", BASE, "--out", out, "--no-progress", *overrides(*FAST, f"task.data_dir={data}"))
    assert result.code == 2
    assert message in result.error
    assert not out.exists()
    assert snapshot(tmp_path / "data") == before


def test_images_of_another_size_are_resized_when_the_task_is_told_to(tmp_path):
    root = image_folder(tmp_path / "data", size=64)
    task = CIFAR10(CIFAR10Config(data_dir=str(root), resize=True))
    info = task.prepare_data()
    assert task.splits["train"].images.shape[1:] == (3, 32, 32)
    assert info.sizes["train"] == 8 and info.sizes["test"] == 8


def test_a_replaced_image_rebuilds_the_decoded_cache(tmp_path, monkeypatch):
    """The cache was keyed on the root folder only, so new pixels under train/<class>/ were never read."""
    root = image_folder(tmp_path / "data")
    cache = tmp_path / "cache"
    monkeypatch.setenv("EGSBENCH_CACHE", str(cache))
    first = CIFAR10(CIFAR10Config(data_dir=str(root))).prepare_data().sha256
    assert len(list(cache.rglob("*.npz"))) == 1
    again = CIFAR10(CIFAR10Config(data_dir=str(root))).prepare_data().sha256
    assert again == first and len(list(cache.rglob("*.npz"))) == 1  # unchanged data: read from the cache

    target = root / "train" / "cat" / "1.png"
    stat = target.stat()
    image(target, seed=999)  # same name, other pixels
    assert (target.stat().st_size, target.stat().st_mtime_ns) != (stat.st_size, stat.st_mtime_ns)
    changed = CIFAR10(CIFAR10Config(data_dir=str(root))).prepare_data().sha256
    assert changed != first
    assert len(list(cache.rglob("*.npz"))) == 2  # a new entry for the new content
    shutil.rmtree(cache)
    assert CIFAR10(CIFAR10Config(data_dir=str(root))).prepare_data().sha256 == changed  # as a cold read gives

"""CIFAR-10 readers on fixtures written in the real on-disk formats, the shared real copy, and augmentation."""

from __future__ import annotations

import io
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from egsbench.tasks import TrainConfig
from egsbench.tasks.cifar import CIFAR10, CIFAR10Config, load_cifar10
from egsbench.tasks.spaces import DataNotFoundError
from egsbench.tasks.vision import BatchAugment

CLASSES = ["airplane", "automobile", "bird"]


def _image(label: int, i: int) -> np.ndarray:
    rng = np.random.default_rng(100 * label + i)
    return rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)


def write_image_folder(root, n_train=4, n_test=2):
    for split, n in (("train", n_train), ("test", n_test)):
        for label, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(_image(label, i)).save(root / split / name / f"{i:04d}.png")  # lossless
    return root


def test_image_folder_tree_and_tar_archive_read_the_same_pixels(tmp_path):
    root = write_image_folder(tmp_path / "cifar")
    data, source = load_cifar10(str(root), download=False)
    assert source.startswith("imagefolder:")
    assert data["train"].images.shape == (12, 3, 32, 32) and data["train"].images.dtype == torch.uint8
    assert data["train"].labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert torch.equal(data["train"].images[5].permute(1, 2, 0), torch.from_numpy(_image(1, 1)))
    archive = tmp_path / "cifar.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root / "train", arcname="train")
        tar.add(root / "test", arcname="test")
    from_tar, source = load_cifar10(str(archive), download=False)
    assert source.startswith("imagefolder-tar:")
    for split in ("train", "test"):
        assert torch.equal(from_tar[split].images, data[split].images)
        assert torch.equal(from_tar[split].labels, data[split].labels)
    again, _ = load_cifar10(str(archive), download=False)  # second read comes from the cache
    assert torch.equal(again["test"].images, data["test"].images)


def test_torchvision_pickle_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    images = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = np.stack([_image(i % 3, i).transpose(2, 0, 1).reshape(-1) for i in range(3)])  # (N, 3072) CHW rows
        images[name] = x
        with open(folder / name, "wb") as f:
            pickle.dump({"data": x, "labels": [0, 1, 2], "batch_label": name}, f)
    data, source = load_cifar10(str(tmp_path), download=False)
    assert source.startswith("torchvision:")
    assert data["train"].images.shape == (15, 3, 32, 32) and len(data["test"]) == 3
    assert torch.equal(data["test"].images[1].permute(1, 2, 0), torch.from_numpy(_image(1, 1)))


def test_missing_data_says_where_it_looked_and_what_to_do(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        load_cifar10(str(tmp_path / "nowhere"), download=False)
    message = str(err.value)
    assert str(tmp_path / "nowhere") in message and "task.data_dir" in message and "task.download=true" in message


def test_splits_are_disjoint_halves_and_limits_apply(tmp_path):
    root = write_image_folder(tmp_path / "cifar", n_train=10, n_test=5)
    task = CIFAR10(CIFAR10Config(data_dir=str(root), train_limit=20, test_limit=6))
    info = task.prepare_data()
    assert dict(info.sizes) == {"search-train": 10, "search-val": 10, "train": 20, "test": 6}
    st, sv = task.splits["search-train"].images, task.splits["search-val"].images
    flat = lambda x: {bytes(i.numpy().tobytes()) for i in x}  # noqa: E731
    assert not flat(st) & flat(sv)
    assert len(set(task.splits["search-train"].labels.tolist())) > 1  # the permutation mixes classes
    x, y = next(iter(task.loader("search-train", 4)))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (4,)


def test_embedded_subset_is_real_and_balanced():
    data, source = load_cifar10("embedded", download=False)
    assert source == "embedded:cifar10_demo.npz"
    assert data["train"].images.shape == (1600, 3, 32, 32) and len(data["test"]) == 400
    assert torch.bincount(data["train"].labels).tolist() == [160] * 10
    assert data["train"].images.float().std() > 40  # natural images, not constants


def test_a_jpeg_npz_is_decoded_once_per_file_version_and_callers_get_their_own_tensors(tmp_path, monkeypatch):
    from egsbench.tasks import vision

    monkeypatch.setenv("EGSBENCH_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "subset.npz"

    def write(colour: int) -> None:
        jpeg = _jpeg(colour)
        np.savez(
            path,
            classes=np.array(["a"]),
            train_jpeg=np.frombuffer(jpeg, dtype=np.uint8),
            train_offsets=np.array([0, len(jpeg)]),
            train_labels=np.array([0]),
        )

    write(0)
    decodes = []
    real = vision._decode_jpeg_npz
    monkeypatch.setattr(vision, "_decode_jpeg_npz", lambda p: decodes.append(p) or real(p))
    first, _ = vision.read_jpeg_npz(path)
    first["train"].images.fill_(7)  # a caller's change never reaches the next caller
    second, classes = vision.read_jpeg_npz(path)  # from the cache: what another process would read
    assert len(decodes) == 1 and classes == ["a"] and int(second["train"].images.max()) < 7
    assert torch.equal(second["train"].labels, torch.tensor([0]))
    write(255)
    os.utime(path, ns=(2, 2))  # another version of the file (the key: path, size, modification time) decodes again
    third, _ = vision.read_jpeg_npz(path)
    assert len(decodes) == 2 and int(third["train"].images.min()) > 200


def _jpeg(colour: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (colour,) * 3).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def test_real_cifar10_archive_reads_all_images(cifar_tar):
    task = CIFAR10(CIFAR10Config(data_dir=str(cifar_tar)))
    info = task.prepare_data()
    assert dict(info.sizes) == {"search-train": 25000, "search-val": 25000, "train": 50000, "test": 10000}
    assert torch.bincount(task.splits["test"].labels).tolist() == [1000] * 10


def test_augmentation_crop_flip_cutout():
    torch.manual_seed(0)
    img = torch.arange(3 * 8 * 8, dtype=torch.uint8).view(3, 8, 8)
    samples = [(img, torch.tensor(0))] * 64
    plain = BatchAugment((0, 0, 0), (1, 1, 1))(samples)[0]
    assert torch.allclose(plain[0], img.float() / 255)
    cropped = BatchAugment((0, 0, 0), (1, 1, 1), crop_padding=2)(samples)[0]
    assert cropped.shape == (64, 3, 8, 8)
    assert (cropped == 0).any()  # zero padding shows at some borders
    assert not all(torch.equal(c, plain[0]) for c in cropped)
    flipped = BatchAugment((0, 0, 0), (1, 1, 1), flip=True)(samples)[0]
    n_flipped = sum(torch.equal(f, plain[0].flip(-1)) for f in flipped)
    assert 10 < n_flipped < 54
    ones = [(torch.full((3, 32, 32), 255, dtype=torch.uint8), torch.tensor(0))] * 256
    cut = BatchAugment((0, 0, 0), (1, 1, 1), cutout=16)(ones)[0]
    holes = (cut[:, 0] == 0).flatten(1).sum(1)
    assert holes.max() == 256 and holes.min() >= 64  # a 16x16 hole, clipped at the border


def test_cutout_only_on_the_final_training_split():
    task = CIFAR10(CIFAR10Config(data_dir="embedded"))
    assert task.loader("train", 8, recipe=TrainConfig(cutout=16)).collate_fn.cutout == 16
    assert task.loader("search-train", 8).collate_fn.cutout == 0
    test_loader = task.loader("test", 8)
    assert test_loader.collate_fn.crop_padding == 0 and not test_loader.collate_fn.flip


def _batches(task: CIFAR10, split: str, seed: int = 0, n: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(seed)  # the augmentation draws from the global generator
    loader = task.loader(split, 16, torch.Generator().manual_seed(seed), TrainConfig(cutout=8))
    return [b for _, b in zip(range(n), loader, strict=False)]


def test_gathered_batches_equal_the_per_sample_collate():
    """One gather per batch (``__getitems__``) gives the batches the per-sample path gave: same images, labels,
    crops, flips and cutout holes for the same seeds."""
    task = CIFAR10(CIFAR10Config(data_dir="embedded", train_limit=64, test_limit=32))
    task.prepare_data()
    gathered = _batches(task, "train")
    split = task.splits["train"]
    augment = BatchAugment(task.mean, task.std, crop_padding=4, flip=True, cutout=8)
    per_sample = DataLoader(
        TensorDataset(split.images, split.labels),
        batch_size=16,
        shuffle=True,
        collate_fn=augment,
        generator=torch.Generator().manual_seed(0),
    )
    torch.manual_seed(0)
    for (x, y), (x_ref, y_ref) in zip(gathered, per_sample, strict=False):
        assert torch.equal(y, y_ref) and torch.equal(x, x_ref)


def test_device_cache_and_workers_keep_the_data_and_leave_the_hash_alone(tmp_path):
    base = CIFAR10Config(data_dir="embedded", train_limit=64, test_limit=32)
    cached = CIFAR10(CIFAR10Config(data_dir="embedded", train_limit=64, test_limit=32, device_cache=True))
    plain = CIFAR10(base)
    for a, b in zip(_batches(cached, "train"), _batches(plain, "train"), strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert cached.loader("test", 8).dataset is cached.loader("test", 8).dataset  # moved once, then reused
    workers = CIFAR10(CIFAR10Config(data_dir="embedded", train_limit=64, test_limit=32, workers=2))
    seen = torch.cat([y for _, y in workers.loader("test", 8)])
    assert torch.equal(seen, torch.cat([y for _, y in plain.loader("test", 8)]))  # test order is fixed
    from egsbench.benchmark.api import resolve_config

    default = resolve_config("smoke/egs-cifar10")
    assert "workers" not in default.to_dict()["task"] and "device_cache" not in default.to_dict()["task"]
    fed = resolve_config("smoke/egs-cifar10", {"task.workers": 2, "task.device_cache": True})
    assert fed.to_dict()["task"]["workers"] == 2 and fed.hash() != default.hash()

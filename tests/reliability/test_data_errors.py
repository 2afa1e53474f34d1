"""Data mistakes (issue 9, item 4): caught while loading, before the search starts, named with their path.

Each fixture is written in the real on-disk format (an ImageFolder tree of PNG and JPEG files, or a
``.tar.gz`` of one) and passed with ``--set task.data_dir=...``; the data is left as it was and no run
folder is created.
"""

from __future__ import annotations

import logging
import shutil

import pytest

from egsbench.tasks import TASKS
from egsbench.tasks.cifar import CIFAR10, CIFAR10Config
from egsbench.tasks.lm import LMConfig, write_lm_files
from egsbench.testing.reliability import BASE, FAST, image, image_folder, jpeg_bytes, overrides, snapshot, tar_gz


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


def _zero_byte_image(root):
    empty = image_folder(root) / "train" / "cat" / "3.png"
    empty.write_bytes(b"")  # issue 17: the message showed <_io.BytesIO object at 0x...> where the problem was
    return root, f"{empty} is not a readable image (it is empty, 0 bytes); replace or delete that file"


def _zero_byte_image_in_tar_gz(root):
    (image_folder(root / "cifar") / "test" / "dog" / "1.png").write_bytes(b"")
    path = tar_gz(root / "cifar", root / "cifar.tar.gz")
    shutil.rmtree(root / "cifar")
    return path, f"{path}:test/dog/1.png is not a readable image (it is empty, 0 bytes); replace or delete that file"


def _text_named_png(root):
    bad = image_folder(root) / "test" / "cat" / "1.png"
    bad.write_text("not an image\n")
    return root, f"{bad} is not a readable image (no image format recognises its 13 bytes); replace or delete that file"


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
    return root, (
        f"images from imagefolder:{root} are 64x64; this task's networks expect 32x32. Resize the data, or "
        "pass --set task.resize=true to resize on load"
    )


@pytest.mark.parametrize(
    "make",
    [
        _train_without_class_folders,
        _class_without_images,
        _corrupt_jpeg,
        _zero_byte_image,
        _zero_byte_image_in_tar_gz,
        _text_named_png,
        _class_missing_from_test,
        _truncated_tar_gz,
        _mixed_sizes,
        _wrong_size,
    ],
)
def test_bad_data_is_one_line_naming_the_file(cli, tmp_path, make):
    data, message = make(tmp_path / "data")
    before = snapshot(tmp_path / "data")
    out = tmp_path / "run"
    result = cli("run", BASE, "--out", out, "--no-progress", *overrides(*FAST, f"task.data_dir={data}"))
    assert result.code == 2
    assert message in result.error
    assert "BytesIO" not in result.error  # the file, never PIL's in-memory buffer
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


# ---- language modelling text (issue 17, items 3 and 4) ------------------------------------------------------------
# PTB's files are ptb.{train,valid,test}.txt, WikiText-2's (this layout) {train,valid,test}.txt; every role from its
# own file, so each one is read.
LM_ROLES = ["task.train_split=train", "task.valid_split=valid", "task.test_split=test", "task.max_tokens=null"]


def _unseen_words(count: int) -> str:
    return "\n".join(" ".join(f"unseen{i}x{j}" for j in range(8)) for i in range(count)) + "\n"


def _lm_zero_bytes(folder, name):
    (folder / name).write_bytes(b"")
    return f"error: {folder / name} is empty (0 bytes); replace it with the official "


def _lm_latin1(folder, name):
    (folder / name).write_bytes("w1 w2\nw3 caf\xe9 w4\n".encode("latin-1"))  # a Latin-1 e-acute at byte 12
    return f"error: {folder / name} is not UTF-8 text (byte 0xe9 at offset 12: invalid continuation byte); save it as"


@pytest.mark.parametrize(
    ("task", "pattern", "role", "make"),
    [
        ("ptb", "ptb.{split}.txt", "train", _lm_zero_bytes),
        ("ptb", "ptb.{split}.txt", "valid", _lm_latin1),
        ("ptb", "ptb.{split}.txt", "test", _lm_zero_bytes),
        ("ptb", "ptb.{split}.txt", "test", _lm_latin1),
        ("wt2", "{split}.txt", "train", _lm_latin1),
        ("wt2", "{split}.txt", "valid", _lm_zero_bytes),
        ("wt2", "{split}.txt", "test", _lm_latin1),
    ],
)
def test_an_empty_or_non_utf8_text_file_is_one_line_naming_it(cli, tmp_path, task, pattern, role, make):
    # a datasets DatasetGenerationError traceback before
    folder = write_lm_files(tmp_path / "data", pattern, lines=60)
    message = make(folder, pattern.format(split=role))
    before = snapshot(folder)
    out = tmp_path / "run"
    result = cli(
        "run",
        f"smoke/gdas-{task}" + ("-search" if task == "wt2" else ""),
        "--out",
        out,
        "--no-progress",
        *overrides(*LM_ROLES, f"task.data_dir={folder}"),
    )
    assert result.code == 2
    assert result.error.startswith(message)
    assert not out.exists()
    assert snapshot(folder) == before


def test_a_test_file_of_unseen_words_is_refused(cli, tmp_path):
    # every test word became <unk> before: test ppl 19.4, status ok
    folder = write_lm_files(tmp_path / "ptb", "ptb.{split}.txt", lines=60)
    (folder / "ptb.test.txt").write_text(_unseen_words(10))
    out = tmp_path / "run"
    result = cli(
        "run", "smoke/gdas-ptb", "--out", out, "--no-progress", *overrides(*LM_ROLES, f"task.data_dir={folder}")
    )
    assert result.code == 2
    assert result.error == (
        f"error: {folder / 'ptb.test.txt'}: 88.9% of the test role's 90 tokens are not in the vocabulary of the "
        f"training role ({folder / 'ptb.train.txt'}) and would be read as <unk>; the test text must use the training "
        "text's vocabulary (for Penn Treebank: the official preprocessed files, rare words already <unk>), or let "
        "another file play the role (--set task.test_split=...)"
    )  # 80 unseen words of 90 tokens: each line's <eos> is known
    assert not out.exists()


def test_a_few_unseen_words_are_recorded_and_warned_about(tmp_path, caplog):
    folder = write_lm_files(tmp_path / "ptb", "ptb.{split}.txt", lines=60)
    test = folder / "ptb.test.txt"
    known = test.read_text()
    n = sum(len(line.split()) + 1 for line in known.splitlines())
    test.write_text(known + "<unk> unseen1 unseen2\n")  # <unk> is in the vocabulary (PTB's files hold it)
    task = TASKS.get("ptb")(LMConfig(data_dir=str(folder)))
    with caplog.at_level(logging.WARNING, logger="egsbench.tasks.lm"):
        task.prepare_data()
    assert task.record_extras() == {"oov_rate": {"valid": 0.0, "test": round(2 / (n + 4), 6)}}
    assert not caplog.records  # 2 of 237 tokens: under 5 %

    test.write_text(known + _unseen_words(3))  # 24 of 260 tokens: warned, still runs
    task = TASKS.get("ptb")(LMConfig(data_dir=str(folder)))
    with caplog.at_level(logging.WARNING, logger="egsbench.tasks.lm"):
        task.prepare_data()
    rate = task.record_extras()["oov_rate"]["test"]
    assert rate == round(24 / (n + 27), 6) and 0.05 < rate < 0.5
    assert f"{rate:.1%} of the test role's tokens ({test}) are not in the training role's vocabulary" in caplog.text

import io
import pickle
import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from opai_lib import data
from tests.conftest import shared_cifar_available


def test_synthetic_is_deterministic_and_split_differs():
    a, b = data.synthetic(True, seed=3), data.synthetic(True, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.images.shape == (640, 32, 32, 3) and a.images.dtype == torch.uint8
    assert not torch.equal(a.images, data.synthetic(False, seed=3).images)


def test_balanced_indices_draws_k_distinct_per_class():
    labels = torch.arange(5).repeat_interleave(20)
    idx = data.balanced_indices(labels, 7, seed=1)
    assert len(set(idx.tolist())) == 35
    assert torch.bincount(labels[idx]).tolist() == [7] * 5
    assert torch.equal(idx, data.balanced_indices(labels, 7, seed=1))
    assert not torch.equal(idx, data.balanced_indices(labels, 7, seed=2))
    with pytest.raises(ValueError, match="per_class = 21, but class 0 has only 20 images"):
        data.balanced_indices(labels, 21, seed=0)


def test_balanced_indices_names_the_class_too_small():
    labels = torch.cat([torch.arange(4).repeat_interleave(10), torch.full((3,), 4)])
    with pytest.raises(ValueError, match=r"per_class = 5, but class 4 has only 3 images; "
                                         r"allowed: 1\.\.3"):
        data.balanced_indices(labels, 5, seed=0)
    # with num_classes, a class with no image at all is named, not silently left out
    with pytest.raises(ValueError, match="per_class = 2, but class 5 has only 0 images"):
        data.balanced_indices(labels, 2, seed=0, num_classes=6)
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.2, got 4"):
        data.balanced_indices(labels, 2, seed=0, num_classes=3)
    with pytest.raises(ValueError, match="per_class must be an integer >= 1, got 2.5"):
        data.balanced_indices(labels, 2.5, seed=0)
    assert torch.equal(data.balanced_indices(labels, 3, seed=0, num_classes=5),
                       data.balanced_indices(labels, 3, seed=0))


def test_max_per_class_of_every_registered_dataset():
    assert set(data.PER_CLASS) == set(data.DATASETS.names())
    assert data.max_per_class("cifar10", "train") == 5000
    assert data.max_per_class("cifar10", "test") == 1000
    assert data.max_per_class("cifar100", "train") == 500
    assert data.max_per_class("cifar100", "test") == 100
    assert data.max_per_class("imagenet", "train") is None
    for split in ("train", "test"):
        labels = data.load_dataset("synthetic", split).labels
        assert torch.bincount(labels).tolist() == [data.max_per_class("synthetic", split)] * 10
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        data.max_per_class("mnist", "train")
    with pytest.raises(ValueError, match="split must be 'train' or 'test', got 'val'"):
        data.max_per_class("cifar10", "val")


def test_crop_flip_gives_a_window_of_the_padded_image():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 8, 8, 3), dtype=torch.uint8)
    out = data.augment_crop_flip(x, g, pad=2)
    assert out.shape == x.shape
    padded = F.pad(x, (0, 0, 2, 2, 2, 2))
    seen_flip = set()
    for i in range(len(x)):
        windows = [(padded[i, dy:dy + 8, dx:dx + 8], False) for dy in range(5) for dx in range(5)]
        windows += [(w.flip(1), True) for w, _ in windows]
        matches = [f for w, f in windows if torch.equal(w, out[i])]
        assert matches, f"image {i} is not a crop of its padded original"
        seen_flip.update(matches)
    assert seen_flip == {True, False}  # both flipped and unflipped images occur


def test_batches_are_a_function_of_seed_and_epoch(toy):
    train, _ = toy
    def first(seed, epoch):
        b = data.batches(train, 32, train=True, seed=seed)
        b.set_epoch(epoch)
        return next(iter(b))
    x0, y0 = first(0, 0)
    x1, y1 = first(0, 0)
    assert torch.equal(x0, x1) and torch.equal(y0, y1)
    assert not torch.equal(first(0, 1)[0], x0) and not torch.equal(first(1, 0)[0], x0)
    assert x0.shape == (32, 3, 32, 32) and x0.is_contiguous(memory_format=torch.channels_last)


def test_eval_batches_cover_the_set_once_and_normalise(toy):
    _, test = toy
    b = data.batches(test, 48, train=False)
    xs, ys = zip(*b, strict=True)
    assert len(b) == len(xs) == 4 and torch.equal(torch.cat(ys), test.labels)
    raw = test.images.permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(test.mean).view(1, 3, 1, 1), torch.tensor(test.std).view(1, 3, 1, 1)
    assert torch.allclose(torch.cat(xs), (raw - mean) / std, atol=1e-5)


def test_process_shards_partition_each_epoch(toy):
    train, _ = toy
    shards = [data.TensorBatches(train, 16, True, seed=5, rank=r, world_size=2)
              for r in range(2)]
    seen = [torch.cat([y for _, y in s]) for s in shards]
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(5 * 100_003))
    assert sum(len(s) for s in seen) == len(train)
    assert torch.equal(torch.sort(torch.cat(seen)).values, torch.sort(train.labels).values)
    assert torch.equal(seen[0], train.labels[order[0::2]])


def test_unknown_dataset_and_split():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'; choose one of"):
        data.load_dataset("mnist")
    with pytest.raises(ValueError, match="split must be"):
        data.load_dataset("synthetic", "val")


def _jpeg_bytes(color):
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _tiny_jpeg_tar(path):
    with tarfile.open(path, "w:gz") as tar:
        for split in ("train", "test"):
            for cls, color in [("cat", (200, 10, 10)), ("airplane", (10, 10, 200))]:
                for i in (10, 2, 1):  # numeric, not lexical, order must win
                    payload = _jpeg_bytes(tuple(min(255, c + i) for c in color))
                    info = tarfile.TarInfo(f"cifar10-jpeg/{split}/{cls}/{i:04d}.jpg")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))


def test_jpeg_tarball_from_data_dir_is_checked(tmp_path, monkeypatch):
    _tiny_jpeg_tar(tmp_path / "cifar10-jpeg.tar.gz")
    monkeypatch.setenv("OPAI_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("OPAI_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="checksum mismatch"):
        data.load_dataset("cifar10", "train", download=False)


def test_jpeg_tarball_decoding_order(tmp_path, monkeypatch):
    _tiny_jpeg_tar(tmp_path / "t.tar.gz")
    for s in data._decode_jpeg_tar(tmp_path / "t.tar.gz").values():
        assert s.classes == ["airplane", "cat"] and s.labels.tolist() == [0, 0, 0, 1, 1, 1]
        blue = s.images[:3, 16, 16, 2].int()
        assert (blue[1:] > blue[:-1]).all()  # files 0001, 0002, 0010 in that order


def test_one_load_of_the_jpeg_copy_decodes_and_caches_both_splits(tmp_path, monkeypatch):
    _tiny_jpeg_tar(tmp_path / "cifar10-jpeg.tar.gz")
    tar = tmp_path / "cifar10-jpeg.tar.gz"
    monkeypatch.setenv("OPAI_CACHE_DIR", str(tmp_path / "cache"))
    test = data._cifar_jpeg(tar, "test")
    assert test.images.shape == (6, 32, 32, 3) and test.classes == ["airplane", "cat"]
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert [n.rsplit("-", 1)[1] for n in cached] == ["test.pt", "train.pt"]
    expected = data._decode_jpeg_tar(tar)["train"]
    monkeypatch.setattr(data, "_decode_jpeg_tar", None)  # the train split is read, not decoded
    train = data._cifar_jpeg(tar, "train")
    assert torch.equal(train.images, expected.images) and train.labels.tolist() == [0] * 3 + [1] * 3



def _write_cifar10_pickles(root, per_batch=4):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                         b"labels": list(range(per_batch))}, f)
    return folder


def test_cifar10_pickles_from_data_dir(tmp_path, monkeypatch):
    folder = _write_cifar10_pickles(tmp_path)
    monkeypatch.setenv("OPAI_DATA_DIR", str(tmp_path))
    s = data.load_dataset("cifar10", "train", download=False)
    assert s.name == "CIFAR-10" and len(s) == 20 and s.classes[3] == "c3"
    with open(folder / "data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="bytes")[b"data"][1]
    # CHW rows of the pickle become an HWC image
    assert torch.equal(s.images[1], torch.from_numpy(raw.reshape(3, 32, 32).transpose(1, 2, 0)))


def test_cifar100_pickles(tmp_path, monkeypatch):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    with open(folder / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"f{i}".encode() for i in range(100)]}, f)
    for split, n in [("train", 6), ("test", 3)]:
        with open(folder / split, "wb") as f:
            pickle.dump({b"data": np.zeros((n, 3072), np.uint8),
                         b"fine_labels": [99] * n, b"coarse_labels": [0] * n}, f)
    monkeypatch.setenv("OPAI_DATA_DIR", str(tmp_path))
    s = data.load_dataset("cifar100", "test", download=False)
    assert s.name == "CIFAR-100" and s.num_classes == 100 and s.labels.tolist() == [99] * 3


def test_missing_data_without_download_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("OPAI_DATA_DIR", str(tmp_path))
    with pytest.raises(data.DataUnavailable, match="download is off"):
        data.load_dataset("cifar10", "train", download=False)


def test_download_goes_through_torchvision(tmp_path, monkeypatch):
    import torchvision

    calls = []

    class FakeCIFAR10:
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            if not (tmp_path / "cifar-10-batches-py").exists():
                _write_cifar10_pickles(tmp_path)

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    monkeypatch.setenv("OPAI_DATA_DIR", str(tmp_path))
    s = data.load_dataset("cifar10", "test")
    assert len(s) == 4 and calls == [(str(tmp_path), True, True), (str(tmp_path), False, True)]


def test_failed_download_says_what_to_do(tmp_path, monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", offline)
    monkeypatch.setenv("OPAI_DATA_DIR", str(tmp_path))
    with pytest.raises(data.DataUnavailable, match="Set OPAI_DATA_DIR"):
        data.load_dataset("cifar100", "train")


def test_corrupt_cache_is_moved_aside_and_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("OPAI_CACHE_DIR", str(tmp_path))
    (tmp_path / "broken.pt").write_bytes(b"not a tensor file")
    built = data.synthetic(True, per_class=2)
    with pytest.warns(UserWarning, match=r"broken\.pt is unreadable.*moved aside"):
        got = data._cached("broken", lambda: built)
    assert torch.equal(got.images, built.images)
    assert torch.equal(data._cached("broken", lambda: None).labels, built.labels)
    aside = [p.name for p in tmp_path.glob("broken.pt.corrupt-*")]
    assert len(aside) == 1 and (tmp_path / aside[0]).read_bytes() == b"not a tensor file"


def test_cache_is_written_atomically_with_a_name_of_its_own(tmp_path, monkeypatch):
    monkeypatch.setenv("OPAI_CACHE_DIR", str(tmp_path))
    (tmp_path / "toy.tmp").mkdir()  # the old shared temporary name, taken by another writer
    built = data.synthetic(True, per_class=2)
    got = data._cached("toy", lambda: built)
    assert torch.equal(got.images, built.images)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy.pt", "toy.tmp"]
    again = data._cached("toy", lambda: None)  # read back, not rebuilt
    assert torch.equal(again.images, built.images) and again.classes == built.classes


@pytest.mark.parametrize("variable", ["OPAI_DATA_DIR", "OPAI_IMAGENET_DIR"])
def test_set_but_empty_data_variable_is_an_error(variable, tmp_path, monkeypatch):
    monkeypatch.setenv("OPAI_SHARED_DATA", str(tmp_path))  # no shared copy to fall back on
    monkeypatch.delenv("OPAI_DATA_DIR", raising=False)
    monkeypatch.delenv("OPAI_IMAGENET_DIR", raising=False)
    monkeypatch.setenv(variable, "")
    name = "cifar10" if variable == "OPAI_DATA_DIR" else "imagenet"
    with pytest.raises(ValueError, match=f"{variable} is set but empty"):
        data.load_dataset(name, "train", download=False)


def test_every_opai_folder_variable_treats_empty_the_same(monkeypatch):
    monkeypatch.setenv("OPAI_CACHE_DIR", "")
    with pytest.raises(ValueError, match="OPAI_CACHE_DIR is set but empty"):
        data.cache_dir()
    monkeypatch.setenv("OPAI_SHARED_DATA", " ")
    with pytest.raises(ValueError, match="OPAI_SHARED_DATA is set but empty"):
        data.shared_data_dir()
    monkeypatch.delenv("OPAI_SHARED_DATA")
    assert data.shared_data_dir().name == "data"


def test_imagenet_without_any_folder_variable_says_what_to_set(tmp_path, monkeypatch):
    for split in ("train", "val"):
        (tmp_path / "imagenet" / split / "n01").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # an "imagenet" folder here is not a source
    monkeypatch.delenv("OPAI_IMAGENET_DIR", raising=False)
    monkeypatch.delenv("OPAI_DATA_DIR", raising=False)
    with pytest.raises(data.DataUnavailable, match="no ImageNet folder: set OPAI_IMAGENET_DIR"):
        data.load_dataset("imagenet", "train")


def test_imagenet_folder(tmp_path, monkeypatch):
    for split in ("train", "val"):
        for wnid in ("n01", "n02"):
            (tmp_path / split / wnid).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (300, 260), (i * 90, 40, 40)).save(
                    tmp_path / split / wnid / f"{i}.JPEG")
    monkeypatch.setenv("OPAI_IMAGENET_DIR", str(tmp_path))
    val = data.load_dataset("imagenet", "test")
    x, y = next(iter(data.batches(val, 4, train=False, workers=0)))
    assert x.shape == (4, 3, 224, 224) and y.tolist() == [0, 0, 1, 1]
    monkeypatch.setenv("OPAI_IMAGENET_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(data.DataUnavailable, match="OPAI_IMAGENET_DIR"):
        data.load_dataset("imagenet", "train")


@pytest.mark.slow
@pytest.mark.skipif(not shared_cifar_available(), reason="needs the shared CIFAR-10 copy")
def test_max_per_class_matches_the_cifar10_copy():
    for split in ("train", "test"):
        counts = torch.bincount(data.load_dataset("cifar10", split, download=False).labels)
        assert counts.tolist() == [data.max_per_class("cifar10", split)] * 10

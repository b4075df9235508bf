"""Datasets, where they come from, and the mini-batches a run trains on.

Small datasets (CIFAR-10/100, the synthetic test set) live in memory as one uint8 tensor
(N, H, W, C); batches are cut, cropped, flipped and normalised on tensors, with no
per-image PIL work in the training loop. ImageNet is a folder of files, read when a batch
or an index asks for them (``ImageFolderSet``).

Where CIFAR-10 comes from, in order: ``$OPAI_DATA_DIR`` when it is set (and then only
there); otherwise the offline copy "CIFAR-10 (JPEG q75)" in ``../shared/data``; otherwise
torchvision's download. An ``OPAI_*`` folder variable set to an empty string is an error,
not "unset". ``data/README.md`` gives every source with its checksum and licence.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import pickle
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import Dataset

from opai_lib.config import check_integer
from opai_lib.registry import Registry
from opai_lib.store import atomic_write, read_torch

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CIFAR10_JPEG_SHA256 = "efac85c8ed52f4ead1e1f1b670d8dcf435d551fccebdd8b6365e0a01a504f3a4"
CIFAR10_JPEG_NAME = "CIFAR-10 (JPEG q75)"
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class DataUnavailable(FileNotFoundError):
    """No source of a dataset could be found or fetched."""


# ---------------------------------------------------------------------------------------
# Locations.


def env_dir(variable: str) -> Path | None:
    """The folder ``$variable`` names, None when unset; set but empty is an error, because
    a set variable means "that folder only" and an empty one names no folder."""
    value = os.environ.get(variable)
    if value is None:
        return None
    if not value.strip():
        raise ValueError(f"environment variable {variable} is set but empty ({value!r}); "
                         "set it to a folder or unset it")
    return Path(value)


def shared_data_dir() -> Path:
    """``$OPAI_SHARED_DATA``, else the nearest ``shared/data`` beside the project or above it."""
    if (shared := env_dir("OPAI_SHARED_DATA")) is not None:
        return shared
    for parent in PROJECT_ROOT.parents:
        if (parent / "shared" / "data").is_dir():
            return parent / "shared" / "data"
    return PROJECT_ROOT.parent / "shared" / "data"


def cache_dir() -> Path:
    """Decoded arrays and downloads: ``$OPAI_CACHE_DIR`` or ``data/cache`` (git-ignored)."""
    path = env_dir("OPAI_CACHE_DIR") or PROJECT_ROOT / "data" / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def verify_sha256(path: Path, expected: str) -> None:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise ValueError(
            f"checksum mismatch for {path}: sha256 {digest.hexdigest()}, expected {expected}. "
            "The file is corrupt or a different version; replace it.")


# ---------------------------------------------------------------------------------------
# In-memory image sets.


@dataclass
class ImageSet:
    """Images (N, H, W, C) uint8 and labels (N,) int64, with the facts a book must state."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str
    mean: tuple[float, ...] = CIFAR_MEAN
    std: tuple[float, ...] = CIFAR_STD

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError("images must be a uint8 tensor of shape (N, H, W, C)")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, indices: torch.Tensor) -> ImageSet:
        return ImageSet(self.images[indices], self.labels[indices], self.classes, self.name,
                        self.mean, self.std)


def balanced_indices(labels: torch.Tensor, per_class: int, seed: int,
                     num_classes: int | None = None) -> torch.Tensor:
    """``per_class`` distinct indices of every class, drawn with ``seed``, grouped by class.

    The classes are those in ``labels``, or 0..num_classes-1 when it is given (a class
    with no image is then an error rather than silently left out).
    """
    check_integer("per_class", per_class, 1)
    if num_classes is not None:
        check_integer("num_classes", num_classes, 1)
    if labels.ndim != 1 or labels.is_floating_point() or (len(labels) and labels.min() < 0):
        raise ValueError("labels must be a 1-d tensor of class indices >= 0")
    present = torch.bincount(labels, minlength=num_classes or 0)
    if num_classes is None:
        classes = torch.nonzero(present).flatten()
    else:
        if len(present) > num_classes:
            raise ValueError(f"labels must be in 0..{num_classes - 1}, got {len(present) - 1}")
        classes = torch.arange(num_classes)
    if not len(classes):
        raise ValueError("labels hold no image to draw from")
    counts = present[classes]
    smallest = int(counts.argmin())
    if per_class > counts[smallest]:
        raise ValueError(f"per_class = {per_class}, but class {int(classes[smallest])} has only "
                         f"{int(counts[smallest])} images; allowed: 1..{int(counts[smallest])}")
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in classes:
        members = torch.nonzero(labels == c).flatten()
        picks.append(members[torch.randperm(len(members), generator=g)[:per_class]])
    return torch.cat(picks)


# ---------------------------------------------------------------------------------------
# Sources.


def _read_cifar_pickles(folder: Path, files: list[str], label_key: bytes) -> tuple:
    images, labels = [], []
    for fname in files:
        with open(folder / fname, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(batch[label_key])
    images = np.concatenate(images).transpose(0, 2, 3, 1)
    return torch.from_numpy(np.ascontiguousarray(images)), torch.tensor(labels)


def _cifar_from_pickles(root: Path, hundred: bool, train: bool) -> ImageSet:
    if hundred:
        folder, meta_file, names_key = root / "cifar-100-python", "meta", b"fine_label_names"
        files, label_key = ["train" if train else "test"], b"fine_labels"
    else:
        folder, meta_file, names_key = root / "cifar-10-batches-py", "batches.meta", b"label_names"
        files = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
        label_key = b"labels"
    with open(folder / meta_file, "rb") as f:
        classes = [c.decode() for c in pickle.load(f, encoding="bytes")[names_key]]
    images, labels = _read_cifar_pickles(folder, files, label_key)
    return ImageSet(images, labels, classes, "CIFAR-100" if hundred else "CIFAR-10")


def _download_cifar(root: Path, hundred: bool) -> None:
    """torchvision's download (verifies its MD5s); needs internet."""
    import torchvision

    cls = torchvision.datasets.CIFAR100 if hundred else torchvision.datasets.CIFAR10
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as err:  # network errors come in many types; report them all the same way
        raise DataUnavailable(
            f"could not download {'CIFAR-100' if hundred else 'CIFAR-10'} into {root}: {err}. "
            "Set OPAI_DATA_DIR to a folder that holds the dataset.") from err


def _decode_jpeg_tar(tar_path: Path) -> dict[str, ImageSet]:
    """Decode the JPEG copy, ``{train,test}/<class>/NNNN.jpg``, in one pass over the archive
    (unpacking it took as long as decoding the test split): {split: ImageSet}, classes in
    alphabetical order."""
    from PIL import Image

    entries = {}
    with tarfile.open(tar_path) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if member.isfile() and len(parts) >= 3 and parts[-3] in ("train", "test"):
                key = (parts[-3], parts[-2], int(Path(parts[-1]).stem))
                entries[key] = tar.extractfile(member).read()
    out = {}
    for split in ("train", "test"):
        found = {k[1:]: v for k, v in entries.items() if k[0] == split}
        if not found:
            raise ValueError(f"{tar_path} holds no {split}/<class>/NNNN.jpg images")
        classes = sorted({c for c, _ in found})
        keys = sorted(found, key=lambda k: (classes.index(k[0]), k[1]))
        images = np.stack([np.asarray(Image.open(io.BytesIO(found[k])).convert("RGB"))
                           for k in keys])
        labels = torch.tensor([classes.index(c) for c, _ in keys])
        out[split] = ImageSet(torch.from_numpy(images), labels, classes, CIFAR10_JPEG_NAME)
    return out


def _cifar_jpeg(tar_path: Path, split: str) -> ImageSet:
    """The JPEG copy's ``split`` from the cache, or decoded: one pass decodes both splits
    and caches both (a run reads the other next, and the pass costs seconds)."""
    keys = {s: f"cifar10-jpeg-{CIFAR10_JPEG_SHA256[:12]}-{s}" for s in ("train", "test")}
    decoded: dict[str, ImageSet] = {}

    def build(s: str) -> ImageSet:
        if not decoded:
            decoded.update(_decode_jpeg_tar(tar_path))
        return decoded[s]

    got = _cached(keys[split], lambda: build(split))
    if decoded:  # this split was decoded here: cache the other one too
        other = "test" if split == "train" else "train"
        _cached(keys[other], lambda: decoded[other])
    return got


def _cached(key: str, build) -> ImageSet:
    """Build an ImageSet once and keep its tensors in the cache directory; written
    atomically (concurrent builders never share a temporary file), and a damaged file is
    moved aside with a warning and rebuilt (``store.read_torch``)."""
    path = cache_dir() / f"{key}.pt"
    if (d := read_torch(path)) is not None:
        return ImageSet(**d)
    data = build()
    atomic_write(path, lambda tmp: torch.save(vars(data), tmp))
    return data


def _find_jpeg_tar(folder: Path) -> Path | None:
    for candidate in (folder / "cifar10-jpeg" / "cifar10-jpeg.tar.gz",
                      folder / "cifar10-jpeg.tar.gz"):
        if candidate.exists():
            return candidate
    return None


def _load_cifar(hundred: bool, train: bool, download: bool) -> ImageSet:
    user_dir = env_dir("OPAI_DATA_DIR")
    root = user_dir if user_dir else cache_dir() / "torchvision"
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    tar = None if hundred else _find_jpeg_tar(root if user_dir else shared_data_dir())
    tried = [str(folder)] + ([] if hundred else [str(root if user_dir else shared_data_dir())])
    if not folder.exists() and tar is not None:
        verify_sha256(tar, CIFAR10_JPEG_SHA256)
        return _cifar_jpeg(tar, "train" if train else "test")
    if not folder.exists():
        if not download:
            raise DataUnavailable(f"no {'CIFAR-100' if hundred else 'CIFAR-10'} found "
                                  f"(looked in {', '.join(tried)}) and download is off. "
                                  "Set OPAI_DATA_DIR to a folder that holds it.")
        _download_cifar(root, hundred)
    return _cifar_from_pickles(root, hundred, train)


SYNTHETIC_PER_CLASS = 64  # images per class of the registered synthetic set


def synthetic(train: bool, num_classes: int = 10, per_class: int = SYNTHETIC_PER_CLASS,
              size: int = 32,
              seed: int = 0) -> ImageSet:
    """A learnable toy set: each class is a fixed smooth colour pattern plus pixel noise."""
    g = torch.Generator().manual_seed(seed)
    prototypes = F.interpolate(torch.rand(num_classes, 3, 4, 4, generator=g), size=size,
                               mode="bilinear", align_corners=False)
    g.manual_seed(seed * 2 + int(train) + 1)  # train and test images differ, same classes
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    noise = 0.25 * torch.randn(len(labels), 3, size, size, generator=g)
    images = ((prototypes[labels] + noise).clamp(0, 1) * 255).round().to(torch.uint8)
    return ImageSet(images.permute(0, 2, 3, 1).contiguous(), labels,
                    [f"class{i}" for i in range(num_classes)], "synthetic",
                    (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


class FolderImages:
    """The images of an ``ImageFolderSet`` seen as one (N, size, size, 3) uint8 tensor, of
    which only the rows indexed are read: what materials and concept discovery index."""

    def __init__(self, paths: list[str], size: int):
        self.paths, self.size = paths, size

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), self.size, self.size, 3)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, indices) -> torch.Tensor:
        """Images ``indices`` (a 1-d tensor or array of indices) as (B, size, size, 3)."""
        rows = torch.as_tensor(indices).reshape(-1).tolist()
        return torch.stack([decode(self.paths[i], self.size) for i in rows]) if rows else \
            torch.empty((0, self.size, self.size, 3), dtype=torch.uint8)

    def identity(self) -> str:
        """What a cache key holds of these images: side, file names and byte sizes (not the
        folder, so a copy elsewhere keys the same)."""
        return json.dumps([self.size, [(str(Path(p).relative_to(Path(p).parents[1])),
                                         os.path.getsize(p)) for p in self.paths]])


def _eval_transform(size: int):
    """ImageNet's evaluation view at side ``size``: shorter side to size * 8/7 (256 for
    224), centre crop."""
    import torchvision.transforms as T

    return T.Compose([T.Resize(round(size * 8 / 7)), T.CenterCrop(size)])


def decode(path: str, size: int) -> torch.Tensor:
    """One image file as (size, size, 3) uint8, in the evaluation view."""
    from PIL import Image

    with Image.open(path) as image:
        view = _eval_transform(size)(image.convert("RGB"))
    return torch.from_numpy(np.array(view, dtype=np.uint8))


class _Files(Dataset):
    """Files and labels as a torch Dataset of normalised (3, size, size) tensors."""

    def __init__(self, paths: list[str], labels: list[int], transform):
        self.paths, self.labels, self.transform = paths, labels, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.paths[i]) as image:
            return self.transform(image.convert("RGB")), self.labels[i]


@dataclass
class ImageFolderSet:
    """A dataset too large for memory: image files ``<split>/<class>/*`` read when a batch
    or an index asks for them, at side ``size`` (224 for ImageNet). It answers what an
    ImageSet answers (``len``, ``labels``, ``classes``, ``num_classes``, ``images``,
    ``subset``), so runs, materials and concept discovery take either."""

    paths: list[str]
    labels: torch.Tensor
    classes: list[str]
    size: int = 224
    name: str = "ImageNet"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self):
        check_integer("size", self.size, 8)
        if len(self.paths) != len(self.labels):
            raise ValueError(f"{len(self.paths)} files but {len(self.labels)} labels")

    @classmethod
    def scan(cls, split: Path, size: int = 224, name: str = "ImageNet") -> ImageFolderSet:
        """Every image of ``split/<class>/``, classes in alphabetical order."""
        from torchvision.datasets import folder

        classes, index = folder.find_classes(str(split))
        samples = folder.make_dataset(str(split), index, extensions=folder.IMG_EXTENSIONS)
        return cls([p for p, _ in samples], torch.tensor([k for _, k in samples]), classes,
                   size, name)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def images(self) -> FolderImages:
        return FolderImages(self.paths, self.size)

    def subset(self, indices: torch.Tensor) -> ImageFolderSet:
        return dataclasses.replace(self, paths=[self.paths[i] for i in indices.tolist()],
                                   labels=self.labels[indices])

    def folder(self, augment: bool) -> Dataset:
        """The files as a torch Dataset; random-resized crops and flips when ``augment``."""
        import torchvision.transforms as T

        view = T.Compose([T.RandomResizedCrop(self.size), T.RandomHorizontalFlip()]) \
            if augment else _eval_transform(self.size)
        tf = T.Compose([view, T.ToTensor(), T.Normalize(self.mean, self.std)])
        return _Files(self.paths, self.labels.tolist(), tf)


IMAGE_SETS = (ImageSet, ImageFolderSet)  # what load_dataset returns


def _imagenet(train: bool, download: bool, size: int) -> ImageFolderSet:
    root = env_dir("OPAI_IMAGENET_DIR")
    if root is None and (user_dir := env_dir("OPAI_DATA_DIR")) is not None:
        root = user_dir / "imagenet"
    if root is None:
        raise DataUnavailable("no ImageNet folder: set OPAI_IMAGENET_DIR to a folder with "
                              "train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (or put it in "
                              "$OPAI_DATA_DIR/imagenet)")
    split = root / ("train" if train else "val")
    if not split.is_dir():
        raise DataUnavailable(f"ImageNet folder {split} not found (ImageNet cannot be downloaded "
                              "automatically). Set OPAI_IMAGENET_DIR to a folder with "
                              "train/<wnid>/*.JPEG and val/<wnid>/*.JPEG.")
    return ImageFolderSet.scan(split, size, "ImageNet" if size == 224 else f"ImageNet {size}px")


DATASETS = Registry("dataset")
DATASETS.add("cifar10", lambda train, download: _load_cifar(False, train, download))
DATASETS.add("cifar100", lambda train, download: _load_cifar(True, train, download))
DATASETS.add("synthetic", lambda train, download: synthetic(train))
# Image folders and the side their images are read at: ImageNet's 224, and the same folder
# at 64 px (the scale of Chrabaszcz et al.'s downsampled ImageNet: runs that fit a CPU).
FOLDER_SIZES = {"imagenet": 224, "imagenet64": 64}
for _name, _size in FOLDER_SIZES.items():
    DATASETS.add(_name, lambda train, download, size=_size: _imagenet(train, download, size))

# Images per class of each registered dataset, (train, test), known without reading it;
# None where only reading the data tells (ImageNet's classes differ in size).
PER_CLASS: dict[str, tuple[int, int] | None] = {
    "cifar10": (5000, 1000), "cifar100": (500, 100),
    "synthetic": (SYNTHETIC_PER_CLASS, SYNTHETIC_PER_CLASS), "imagenet": None,
    "imagenet64": None}


def max_per_class(dataset: str, split: str) -> int | None:
    """Images per class of the ``split`` ("train" or "test") of ``dataset``, the most a
    class-balanced subset can draw; None when unknown until the data is read."""
    DATASETS.get(dataset)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    counts = PER_CLASS[dataset]
    return None if counts is None else counts[split == "test"]


def load_dataset(name: str, split: str = "train", download: bool = True):
    """The ``split`` ("train" or "test") of dataset ``name``: an ImageSet or ImageFolderSet."""
    loader = DATASETS.get(name)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return loader(split == "train", download)


# ---------------------------------------------------------------------------------------
# Batches.


def augment_crop_flip(x: torch.Tensor, g: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop after zero padding by ``pad`` and random horizontal flip, on (B, H, W, C)."""
    b, h, w, _ = x.shape
    padded = F.pad(x, (0, 0, pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b, 1, 1), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (b, 1, 1), generator=g)
    flip = torch.rand(b, 1, 1, generator=g) < 0.5
    cols = torch.arange(w).view(1, 1, w)
    cols = torch.where(flip, w - 1 - cols, cols)
    rows = torch.arange(h).view(1, h, 1)
    return padded[torch.arange(b).view(b, 1, 1), rows + dy, cols + dx]


class TensorBatches:
    """Mini-batches ``(x, y)`` of an ImageSet: shuffled per epoch, augmented on tensors.

    The order and the augmentation of epoch ``e`` depend only on ``(seed, e)``, so a run
    resumed at epoch ``e`` sees exactly the batches an uninterrupted run would. Under
    DistributedDataParallel, rank ``r`` of ``w`` takes every w-th example of that order.
    ``x`` is float32 NCHW in channels-last memory layout.
    """

    def __init__(self, data: ImageSet, batch_size: int, train: bool, seed: int = 0,
                 augment: bool | None = None, normalization=None, device="cpu",
                 rank: int = 0, world_size: int = 1):
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.data, self.batch_size, self.train, self.seed = data, batch_size, train, seed
        self.augment = train if augment is None else augment
        mean, std = normalization or (data.mean, data.std)
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255
        self.images, self.labels = data.images.to(device), data.labels.to(device)
        self.rank, self.world_size, self.epoch = rank, world_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> torch.Tensor:
        n = len(self.labels)
        if not self.train:
            return torch.arange(n)[self.rank:: self.world_size]
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(n, generator=g)[self.rank:: self.world_size]
        full = len(order) - len(order) % self.batch_size  # drop the last partial batch
        return order[:full] if full else order

    def __len__(self) -> int:
        return -(-len(self._order()) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch + 7)
        order = self._order()
        for start in range(0, len(order), self.batch_size):
            idx = order[start: start + self.batch_size].to(self.images.device)
            x = self.images[idx]
            if self.augment:
                x = augment_crop_flip(x, g)
            # (B, H, W, C) permuted to NCHW is already channels-last in memory.
            x = (x.permute(0, 3, 1, 2).float() - self.mean) / self.std
            yield x, self.labels[idx]


def batches(data, batch_size: int, train: bool, seed: int = 0, device="cpu",
            normalization=None, augment: bool | None = None, workers: int = 4):
    """Batches of any dataset ``load_dataset`` returns; ``batch_size`` counts all processes.

    Under DistributedDataParallel each process gets ``batch_size / world_size`` examples of
    every step, so a run gives the same steps on any number of processes.
    """
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if not (isinstance(batch_size, int) and batch_size >= 1 and batch_size % world == 0):
        raise ValueError(f"batch_size must be a positive multiple of the {world} processes, "
                         f"got {batch_size!r}")
    if isinstance(data, ImageSet):
        return TensorBatches(data, batch_size // world, train, seed, augment, normalization,
                             device, rank, world)
    from torch.utils.data import DataLoader, DistributedSampler

    folder = data.folder(train if augment is None else augment)
    sampler = DistributedSampler(folder, world, rank, shuffle=train, seed=seed) \
        if world > 1 else None
    g = torch.Generator().manual_seed(seed)
    return DataLoader(folder, batch_size // world, shuffle=train and sampler is None,
                      sampler=sampler, num_workers=min(workers, os.cpu_count() or 1),
                      drop_last=train, generator=g, pin_memory=torch.cuda.is_available())

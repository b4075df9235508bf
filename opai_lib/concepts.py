"""ACE: concepts of a class discovered from image segments, and their TCAV importance.

Automatic Concept-based Explanation (Ghorbani et al. 2019) as the DOP paper uses it
(Yang et al. 2022, section 3.2, Algorithm 1): the images of a class are cut into SLIC
superpixels at several resolutions; every segment becomes a *patch* (the full-size image
with all other pixels at the dataset mean, at its original position: the paper's
discriminative image patch) and a *crop* (the patch's bounding box resized to the input
size). The crops' bottleneck activations, averaged over positions, are clustered with
KMeans; clusters that pass ACE's acceptance rules are concepts (their members nearest the
centre are kept). A concept's CAV is the unit normal of a linear classifier separating its
crops from a negative set in the full bottleneck activation space, one CAV per negative
set; its TCAV score against negative set i is the fraction of held-out images of the class
whose class-logit gradient at the bottleneck has a positive dot product with CAV i
(eq. 5). Concepts are ranked by mean TCAV.

Beyond the paper, significance is calibrated: ACE's paired t-test against one random
concept is kept (``ttest_p``), and a permutation test compares a concept's mean TCAV with
those of ``num_null`` null concepts made of random patches (``null_p``). Negatives are
random patches by default, which removes the "a patch, not a photo" direction every CAV
shares when the negatives are whole images.

Discovery runs once per (classifier, layer, dataset, settings, seed, split, class) and is
cached under ``data.cache_dir() / "concepts"``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from opai_lib import data as data_mod
from opai_lib import models
from opai_lib.config import check_integer, check_parameter, check_types, param, require
from opai_lib.store import atomic_write, read_torch

CACHE_FORMAT = 1  # part of every cache key: bump when what is stored changes
TESTS = ("null", "ttest", "none")  # what a concept must pass, see Concept.significant


# ---------------------------------------------------------------------------------------
# Settings.


@dataclass(frozen=True)
class ACESettings:
    """Every knob of concept discovery; all of them are part of the cache key.

    Defaults are for 32x32 images (measured on CIFAR-10 with the pretrained ResNet-20:
    about 640 segments and 14 accepted clusters per class); ``for_image_size`` gives ACE's
    own settings for ImageNet-size images.
    """

    n_segments: tuple = param((3, 6, 12), "SLIC segments asked for, one entry per resolution")
    compactness: float = param(5.0, "SLIC compactness (colour versus space)")
    slic_sigma: float = param(0.5, "SLIC Gaussian pre-smoothing width, pixels")
    min_area: int = param(10, "segments with fewer pixels are dropped")
    max_jaccard: float = param(0.5, "a segment overlapping an earlier resolution's by more "
                                     "(intersection over union) is a duplicate and dropped")
    discovery_images: int = param(50, "images of the class segmented for discovery (per split)")
    tcav_images: int = param(50, "held-out images of the class the TCAV score is measured on")
    n_clusters: int = param(20, "KMeans clusters per class")
    min_cluster_size: int = param(20, "a cluster needs more members than this to be a concept")
    concept_size: int = param(40, "members nearest the centre kept per concept; also the "
                                   "size of every negative set and null concept")
    num_negatives: int = param(20, "negative sets, one CAV and one TCAV score per set")
    negatives: str = param("patches", "what negative sets hold: segments of random images "
                                       "or whole random images (ACE)", ("patches", "images"))
    num_null: int = param(50, "null concepts of random patches calibrating the TCAV test")
    cav_alpha: float = param(0.01, "L2 penalty of the CAV's linear SVM (tcav's default)")
    ttest_p: float = param(0.01, "ACE's paired t-test: significant when p is below this")
    level: float = param(0.05, "the null test: significant when its permutation p-value "
                                "is at most this")
    material_test: str = param("null", "the test a concept must pass to feed materials",
                               TESTS)

    def __post_init__(self):
        check_types(self)
        require(len(self.n_segments) >= 1 and all(isinstance(n, int) and n >= 2
                                                   for n in self.n_segments),
                self, "n_segments", "a non-empty tuple of integers >= 2")
        require(self.compactness > 0, self, "compactness", "a positive number")
        require(self.slic_sigma >= 0, self, "slic_sigma", "a number >= 0")
        require(self.min_area >= 1, self, "min_area", "an integer >= 1")
        require(0 < self.max_jaccard <= 1, self, "max_jaccard", "0 < max_jaccard <= 1")
        for name, low in [("discovery_images", 2), ("tcav_images", 2), ("n_clusters", 1),
                          ("min_cluster_size", 0), ("concept_size", 4), ("num_negatives", 2),
                          ("num_null", 2)]:
            require(getattr(self, name) >= low, self, name, f"an integer >= {low}")
        require(self.cav_alpha > 0, self, "cav_alpha", "a positive number")
        require(0 < self.ttest_p < 1, self, "ttest_p", "0 < ttest_p < 1")
        require(0 < self.level < 1, self, "level", "0 < level < 1")
        require(1 / (self.num_null + 1) <= self.level, self, "num_null",
                f">= {int(np.ceil(1 / self.level)) - 1}: with fewer null concepts no "
                f"permutation p-value can reach level {self.level}")

    @classmethod
    def for_image_size(cls, size: int, **overrides) -> ACESettings:
        """Settings for square images of side ``size``: ours for <= 64 px, else ACE's."""
        if size <= 64:
            return cls(**overrides)
        ace = dict(n_segments=(15, 50, 80), compactness=20.0, slic_sigma=1.0,
                   min_area=max(1, int(0.001 * size * size) + 1), n_clusters=25)
        return cls(**{**ace, **overrides})


# Small settings for the synthetic test set (32 noisy images a class on the smoke profile:
# 8 for TCAV and two blocks of 12 for discovery), for plumbing checks
# only: SLIC needs more compactness to cut its noisy images at all, and TCAV under the tiny
# net is noise there (null concepts reach mean scores from 0 to 1, no concept passes the
# null test), so materials draw from the top concepts without a test.
SYNTHETIC_SETTINGS = dict(n_segments=(6, 12), compactness=20.0, discovery_images=12,
                          tcav_images=8, n_clusters=6, min_cluster_size=4, concept_size=10,
                          num_negatives=5, num_null=20, material_test="none")


@dataclass(frozen=True)
class Classifier:
    """A trained classifier, the bottleneck layer ACE works in, and the input statistics the
    classifier expects (``(mean, std)`` per channel, on images scaled to [0, 1]).

    ``fixed=True`` says the name alone identifies the weights (checksum-verified published
    weights, or a seeded recipe): the cache key then holds the name, not a hash of the
    weights, which may differ in the last bits between machines and thread counts.
    """

    model: nn.Module
    layer: str
    normalization: tuple
    name: str
    fixed: bool = False

    def __post_init__(self):
        modules = dict(self.model.named_modules())
        if self.layer not in modules or not self.layer:
            inner = [n for n in modules if n.count(".") <= 1 and n]
            raise ValueError(f"model {self.name!r} has no layer {self.layer!r}; its layers "
                             f"include {inner[:40]}")


def reference_classifier(name: str = "resnet20", layer: str | None = None,
                         weights: str | Path | None = None) -> Classifier:
    """The classifier the concepts are discovered with.

    ``"resnet20"`` (default; also resnet32/44/56): the pretrained CIFAR-10 ResNet, bottleneck
    ``layer3.1`` (inside the last stage: its output ``layer3`` feeds only global average
    pooling and a linear layer, so its gradient is the same for every image). It expects
    inputs normalised with ImageNet statistics (``models.PRETRAINED_NORMALIZATION``).
    Any other name is a torchvision classifier with ``weights`` (``torchvision_classifier``).
    """
    if name in models.PRETRAINED:
        model = models.load_pretrained(name)
        return Classifier(model.eval(), layer or "layer3.1", models.PRETRAINED_NORMALIZATION,
                          f"pretrained-{name}", fixed=True)
    if weights is None:
        raise ValueError(f"no reference classifier {name!r} without weights; choose one of "
                         f"{sorted(models.PRETRAINED)}, or a torchvision classifier with its "
                         "weights (e.g. 'resnet50', weights='IMAGENET1K_V1')")
    return torchvision_classifier(name, weights, layer)


# The bottleneck of a torchvision ResNet when no layer is given: a block inside the last
# stage, not its last block (whose output feeds only pooling and the linear layer).
TORCHVISION_LAYERS = {"resnet18": "layer4.0", "resnet34": "layer4.1", "resnet50": "layer4.1",
                      "resnet101": "layer4.1", "resnet152": "layer4.1"}


def _torchvision_weights(arch: str, weights: str | Path) -> tuple[dict, str, bool]:
    """The state dict of ``weights`` for ``arch``, its name and whether the name alone
    identifies it (torchvision's published weights)."""
    import torchvision

    enum = torchvision.models.get_model_weights(arch)
    if str(weights) in enum.__members__:
        published = enum[str(weights)]  # DEFAULT resolves to its concrete name
        try:
            return published.get_state_dict(progress=False), published.name, True
        except OSError as err:  # offline, and not in torch hub's cache
            raise FileNotFoundError(
                f"torchvision's {arch} weights {published.name} are not in torch hub's cache "
                f"({torch.hub.get_dir()}/checkpoints) and could not be downloaded ({err}); put "
                f"{Path(published.url).name} there") from err
    path = Path(weights)
    if not path.exists():
        path = Path(torch.hub.get_dir()) / "checkpoints" / path.name
    if not path.exists():
        raise FileNotFoundError(
            f"weights {str(weights)!r} of {arch} not found: allowed: a name of torchvision's "
            f"{list(enum.__members__)}, a state-dict file, or a file name in "
            f"{Path(torch.hub.get_dir()) / 'checkpoints'}")
    return torch.load(path, map_location="cpu"), path.name, False


def torchvision_classifier(arch: str, weights: str | Path, layer: str | None = None
                           ) -> Classifier:
    """torchvision's classifier ``arch`` (any of ``torchvision.models.list_models``) at
    ``layer`` (default: ``TORCHVISION_LAYERS``), inputs in ImageNet statistics.

    ``weights``: a name of torchvision's published weights (``IMAGENET1K_V1``; read from torch
    hub's cache, downloaded when online), or a state-dict file, as a path or a file name in
    torch hub's ``checkpoints`` folder (``$TORCH_HOME``); its last linear layer sets the
    number of classes. Its name, ``torchvision:<arch>:<weights>``, is how a run's material
    names it (``named_classifier``).
    """
    import torchvision

    archs = torchvision.models.list_models(module=torchvision.models)
    check_parameter(arch in archs, "arch", arch, f"a torchvision classifier, one of {archs}")
    check_parameter(layer is not None or arch in TORCHVISION_LAYERS, "layer", layer,
                    f"a layer name (there is a default only for {sorted(TORCHVISION_LAYERS)})")
    state, name, fixed = _torchvision_weights(arch, weights)
    outputs = [t.shape[0] for t in state.values() if t.ndim == 2][-1]
    model = torchvision.models.get_model(arch, weights=None, num_classes=outputs)
    model.load_state_dict(state)
    return Classifier(model.eval(), layer or TORCHVISION_LAYERS[arch],
                      (data_mod.IMAGENET_MEAN, data_mod.IMAGENET_STD),
                      f"torchvision:{arch}:{name}", fixed)


CLASSIFIER_NAMES = ("'pretrained-<resnet20|32|44|56>@<layer>', "
                    "'torchvision:<arch>:<weights>@<layer>'")


def built_in_classifier(spec: str) -> bool:
    """Whether ``spec`` (``name@layer``) names a classifier built without data: a
    pretrained CIFAR-10 ResNet or a torchvision classifier with its weights."""
    name, _, layer = spec.rpartition("@")
    pretrained = name.startswith("pretrained-") and \
        name.removeprefix("pretrained-") in models.PRETRAINED
    return bool(layer) and (pretrained or (name.startswith("torchvision:")
                                           and name.count(":") == 2))


def named_classifier(spec: str, data) -> Classifier:
    """The classifier a concept material names as ``name@layer`` (a ``Classifier``'s name
    and layer): one of ``CLASSIFIER_NAMES``, or the default classifier of ``data`` (the
    synthetic set's is trained on it)."""
    name, _, layer = spec.rpartition("@")
    if not built_in_classifier(spec):
        clf = default_classifier(data)
    elif name.startswith("pretrained-"):
        clf = reference_classifier(name.removeprefix("pretrained-"), layer)
    else:
        _, arch, weights = name.split(":")
        clf = torchvision_classifier(arch, weights, layer)
    check_parameter(f"{clf.name}@{clf.layer}" == spec, "classifier", spec,
                    f"{CLASSIFIER_NAMES}, or the default discovery's of {data.name} "
                    f"({clf.name}@{clf.layer})")
    return clf


# ---------------------------------------------------------------------------------------
# Segments, patches and crops.


@dataclass
class Segments:
    """Superpixels of some images: ``masks[s]`` is segment s of ``images[image_of[s]]``."""

    images: torch.Tensor      # (n, H, W, C) uint8, the segmented images
    masks: torch.Tensor       # (S, H, W) bool
    image_of: torch.Tensor    # (S,) int64 index into images
    resolution: torch.Tensor  # (S,) int64 index into settings.n_segments

    def __len__(self) -> int:
        return len(self.masks)

    def subset(self, idx: torch.Tensor) -> Segments:
        return Segments(self.images, self.masks[idx], self.image_of[idx], self.resolution[idx])


def segment_image(image: np.ndarray, settings: ACESettings) -> tuple[np.ndarray, np.ndarray]:
    """SLIC superpixels of one (H, W, C) uint8 image at every resolution of ``settings``.

    Segments below ``min_area`` pixels are dropped, and so is a segment whose Jaccard overlap
    with a kept segment of an earlier resolution exceeds ``max_jaccard`` (ACE's rules;
    unlike ACE's loop, every label is visited). Returns masks (S, H, W) and resolutions (S,).
    """
    from skimage.segmentation import slic

    kept, resolution = [], []
    for r, n in enumerate(settings.n_segments):
        labels = slic(image, n_segments=n, compactness=settings.compactness,
                      sigma=settings.slic_sigma, start_label=0, channel_axis=-1)
        earlier = np.stack(kept) if kept else np.zeros((0, *labels.shape), bool)
        for lab in np.unique(labels):
            mask = labels == lab
            if mask.sum() < settings.min_area:
                continue
            inter = (earlier & mask).sum((1, 2))
            union = (earlier | mask).sum((1, 2))
            if len(earlier) and (inter / union).max() > settings.max_jaccard:
                continue
            kept.append(mask)
            resolution.append(r)
    if not kept:
        return np.zeros((0, *image.shape[:2]), bool), np.zeros(0, np.int64)
    return np.stack(kept), np.asarray(resolution, np.int64)


def segment_images(images: torch.Tensor, settings: ACESettings) -> Segments:
    """All segments of a stack of (n, H, W, C) uint8 images."""
    masks, image_of, resolution = [], [], []
    for i, image in enumerate(images.numpy()):
        m, r = segment_image(image, settings)
        masks.append(m)
        resolution.append(r)
        image_of.append(np.full(len(m), i))
    return Segments(images, torch.from_numpy(np.concatenate(masks)),
                    torch.from_numpy(np.concatenate(image_of)).long(),
                    torch.from_numpy(np.concatenate(resolution)).long())


def fill_value(mean: tuple) -> torch.Tensor:
    """The dataset mean as a uint8 pixel (C,): the colour outside a patch."""
    return (torch.tensor(mean) * 255).round().to(torch.uint8)


def patches(segments: Segments, mean: tuple) -> torch.Tensor:
    """Discriminative image patches (S, H, W, C) uint8: each segment at its original
    position, every other pixel at the dataset ``mean``."""
    source = segments.images[segments.image_of]
    return torch.where(segments.masks[..., None], source, fill_value(mean))


def crops(segments: Segments, mean: tuple, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Each patch cropped to its segment's bounding box (both ends included; ACE drops the
    last row and column) and resized bicubically to ``size`` (default: the image size);
    (S, H, W, C) uint8. One batched bicubic resampling: where the kernel reaches past the
    box it reads the mean-filled pixels around it (and the image's edge pixels beyond it)."""
    full = patches(segments, mean).permute(0, 3, 1, 2).float()
    n, _, h, w = full.shape
    out_h, out_w = size or (h, w)
    rows, cols = segments.masks.any(2), segments.masks.any(1)
    idx_h, idx_w = torch.arange(h).expand(n, h), torch.arange(w).expand(n, w)
    r0 = torch.where(rows, idx_h, h).amin(1)
    r1 = torch.where(rows, idx_h, -1).amax(1)
    c0 = torch.where(cols, idx_w, w).amin(1)
    c1 = torch.where(cols, idx_w, -1).amax(1)

    def axis(start, stop, out, full_len):  # normalised source coordinates (align_corners=False)
        centres = (torch.arange(out) + 0.5).view(1, -1) / out
        src = start.view(-1, 1) + centres * (stop - start + 1).view(-1, 1) - 0.5
        return (2 * src + 1) / full_len - 1

    gy, gx = axis(r0, r1, out_h, h), axis(c0, c1, out_w, w)
    grid = torch.stack([gx[:, None, :].expand(n, out_h, out_w),
                        gy[:, :, None].expand(n, out_h, out_w)], dim=-1)
    out = F.grid_sample(full, grid, mode="bicubic", padding_mode="border", align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


# ---------------------------------------------------------------------------------------
# Bottleneck activations and gradients.


def _inputs(images: torch.Tensor, normalization: tuple) -> torch.Tensor:
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in normalization)
    return (images.permute(0, 3, 1, 2).float() / 255 - mean) / std


class _Bottleneck:
    """Context: the named layer's output is recorded, or replaced by a leaf tensor whose
    gradient autograd can return."""

    def __init__(self, clf: Classifier, leaf: bool):
        self.module = dict(clf.model.named_modules())[clf.layer]
        self.leaf, self.value = leaf, None

    def _hook(self, module, inputs, output):
        if not torch.is_tensor(output):
            raise ValueError(f"layer output is a {type(output).__name__}, not a tensor; "
                             "choose a layer that returns one tensor")
        self.value = output.detach().requires_grad_(True) if self.leaf else output.detach()
        return self.value if self.leaf else None

    def __enter__(self):
        self.handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def activations(clf: Classifier, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Bottleneck activations (N, ...) of (N, H, W, C) uint8 images, model in eval mode."""
    clf.model.eval()
    out = []
    with torch.no_grad(), _Bottleneck(clf, leaf=False) as hook:
        for start in range(0, len(images), batch_size):
            clf.model(_inputs(images[start: start + batch_size], clf.normalization))
            out.append(hook.value)
    return torch.cat(out)


def class_gradients(clf: Classifier, images: torch.Tensor, label: int,
                    batch_size: int = 256) -> torch.Tensor:
    """d logit_label / d bottleneck for each image, flattened: (N, D). Eval mode, so each
    image's gradient depends on that image only."""
    clf.model.eval()
    out = []
    with _Bottleneck(clf, leaf=True) as hook, torch.enable_grad():
        for start in range(0, len(images), batch_size):
            logits = clf.model(_inputs(images[start: start + batch_size], clf.normalization))
            (grad,) = torch.autograd.grad(logits[:, label].sum(), hook.value)
            out.append(grad.flatten(1))
    return torch.cat(out)


def check_gradient_spread(grads: torch.Tensor, layer: str, min_cosine: float = 0.99) -> None:
    """Raise when (nearly) every image has the same gradient at the bottleneck.

    Then the sign of <gradient, CAV> is the same for every image and every TCAV score is
    0 or 1: the layers after the bottleneck are (nearly) linear in it, as global average
    pooling followed by a linear classifier is.
    """
    mean = grads.mean(0, keepdim=True)
    cos = F.cosine_similarity(grads, mean.expand_as(grads), dim=1)
    if len(grads) > 1 and cos.min() > min_cosine:
        raise ValueError(
            f"bottleneck {layer!r} gives nearly the same class-logit gradient for every image "
            f"(cosine with the mean gradient >= {cos.min().item():.4f} for all "
            f"{len(grads)} images): what follows it is (nearly) linear in it, e.g. global "
            "average pooling then a linear layer, so every TCAV score would be exactly 0 or "
            "1. Choose a layer with a nonlinearity after it, e.g. a block inside the last "
            "stage ('layer3.1' of a CIFAR ResNet-20) instead of the stage's output.")


# ---------------------------------------------------------------------------------------
# CAVs and TCAV scores.


def train_cav(positive: torch.Tensor, negative: torch.Tensor, alpha: float,
              seed: int) -> tuple[torch.Tensor, float]:
    """A concept activation vector: the unit normal of a linear SVM (tcav's SGDClassifier,
    hinge loss) separating ``positive`` from ``negative`` activations (flattened), pointing
    towards the positives; and its accuracy on a held-out third (stratified split, classes
    truncated to the same size first, as tcav does)."""
    from sklearn.linear_model import SGDClassifier
    from sklearn.model_selection import train_test_split

    n = min(len(positive), len(negative))
    x = torch.cat([positive[:n].flatten(1), negative[:n].flatten(1)]).numpy()
    y = np.r_[np.ones(n), np.zeros(n)]
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.33, stratify=y,
                                              random_state=seed)
    svm = SGDClassifier(alpha=alpha, max_iter=1000, tol=1e-3, random_state=seed)
    svm.fit(x_tr, y_tr)
    direction = torch.from_numpy(svm.coef_[0]).float()
    return direction / direction.norm().clamp_min(1e-12), float(svm.score(x_te, y_te))


def train_cavs(positive: torch.Tensor, negatives: list[torch.Tensor], alpha: float,
               seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One CAV per negative set: (num_negatives, D) and their accuracies. Trained in threads
    (scikit-learn's SGD releases the GIL); each CAV has its own seed, so the result does not
    depend on the thread count. A plain thread pool: joblib's polls for its results, which
    costs more than these small fits on the smoke profile."""
    def fit(i: int) -> tuple[torch.Tensor, float]:
        return train_cav(positive, negatives[i], alpha, seed * 1009 + i)

    threads = min(torch.get_num_threads(), len(negatives))
    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            pairs = list(pool.map(fit, range(len(negatives))))
    else:
        pairs = [fit(i) for i in range(len(negatives))]
    return torch.stack([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])


def tcav_scores(grads: torch.Tensor, cavs: torch.Tensor) -> torch.Tensor:
    """Eq. 5: per CAV, the fraction of images whose gradient has a positive dot product with
    it (moving along the CAV raises the class logit)."""
    return (grads @ cavs.T > 0).float().mean(0)


def ttest_p(scores: torch.Tensor, random_scores: torch.Tensor) -> float:
    """ACE's test: paired t-test of a concept's TCAV scores against a random concept's, over
    the same negative sets. Identical score lists (no evidence either way) give p = 1."""
    from scipy import stats  # imported here: runs that need no test skip its second

    diff = (scores - random_scores).numpy()
    if np.allclose(diff, diff[0]):
        return 0.0 if diff[0] != 0 else 1.0
    return float(stats.ttest_rel(scores.numpy(), random_scores.numpy()).pvalue)


def null_p(mean_tcav: float, null_means: torch.Tensor) -> float:
    """Permutation p-value of a mean TCAV score among null concepts' mean scores
    (one-sided, high): (1 + #null >= score) / (1 + #null)."""
    return float((1 + (null_means >= mean_tcav).sum()) / (1 + len(null_means)))


def false_positive_rates(null_means: torch.Tensor, null_ttest_p: torch.Tensor,
                         settings: ACESettings) -> dict[str, float]:
    """How often each test calls a null concept significant: the t-test as ACE runs it, and
    the null test with each null concept left out of the null distribution it is tested
    against (leave-one-out)."""
    loo = [null_p(float(null_means[j]), torch.cat([null_means[:j], null_means[j + 1:]]))
           for j in range(len(null_means))]
    return {"ttest": float((null_ttest_p < settings.ttest_p).float().mean()),
            "null": float(np.mean(np.asarray(loo) <= settings.level))}


# ---------------------------------------------------------------------------------------
# Concepts.


@dataclass
class Concept:
    """A concept of class ``label``: segment indices (into the class's Segments, nearest the
    centre first), its direction (the unit mean of its CAVs), its TCAV scores against each
    negative set and both tests' p-values."""

    label: int
    members: torch.Tensor
    centre: torch.Tensor
    direction: torch.Tensor
    tcav: torch.Tensor
    cav_accuracy: float
    ttest_p: float
    null_p: float

    @property
    def mean_tcav(self) -> float:
        return float(self.tcav.mean())

    def significant(self, test: str, settings: ACESettings) -> bool:
        if test == "ttest":
            return self.ttest_p < settings.ttest_p
        if test == "null":
            return self.null_p <= settings.level
        if test == "none":
            return True
        raise ValueError(f"test must be 'ttest', 'null' or 'none', got {test!r}")


@dataclass
class ClassConcepts:
    """Discovery's result for one class: its segments, its concepts ranked by mean TCAV,
    and the null concepts' and random concept's scores on the same TCAV images."""

    label: int
    segments: Segments
    concepts: list[Concept]
    null_means: torch.Tensor
    null_ttest_p: torch.Tensor
    random_tcav: torch.Tensor
    timings: dict = field(default_factory=dict)


def accept_clusters(assign: np.ndarray, distance: np.ndarray, image_of: np.ndarray,
                    settings: ACESettings) -> list[np.ndarray]:
    """ACE's acceptance rules. A cluster larger than ``min_cluster_size`` is a concept if its
    members come from many distinct images: more than half its size, or more than a quarter
    of its size and of the discovery images, or more than a tenth of its size and half the
    discovery images. Returns, per concept, its ``concept_size`` members nearest the centre."""
    n_images = settings.discovery_images
    kept = []
    for c in np.unique(assign):
        members = np.flatnonzero(assign == c)
        size, distinct = len(members), len(np.unique(image_of[members]))
        if size <= settings.min_cluster_size:
            continue
        if (distinct > 0.5 * size
                or (distinct > 0.25 * size and distinct > 0.25 * n_images)
                or (distinct > 0.1 * size and distinct > 0.5 * n_images)):
            order = np.argsort(distance[members], kind="stable")
            kept.append(members[order[: settings.concept_size]])
    return kept


def cluster_segments(acts: torch.Tensor, image_of: torch.Tensor, settings: ACESettings,
                     seed: int) -> list[tuple[np.ndarray, torch.Tensor]]:
    """KMeans on position-averaged activations; (members, centre) of accepted clusters.
    One BLAS/OpenMP thread: on a few hundred points threads only cost (4-40x slower measured
    on a shared 2-core machine), and the result does not depend on the machine's threads."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    pooled = acts.flatten(2).mean(2).numpy() if acts.ndim > 2 else acts.numpy()
    k = min(settings.n_clusters, len(pooled))
    with threadpool_limits(1):
        km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(pooled)
    distance = np.linalg.norm(pooled - km.cluster_centers_[km.labels_], axis=1)
    accepted = accept_clusters(km.labels_, distance, image_of.numpy(), settings)
    return [(m, torch.from_numpy(km.cluster_centers_[km.labels_[m[0]]]).float())
            for m in accepted]


# ---------------------------------------------------------------------------------------
# The random bank: negative sets, the random concept and the null concepts.


@dataclass
class RandomBank:
    """What every class is compared with: negative sets (crops), a random concept and its
    CAVs (for ACE's t-test), and null concepts' CAVs (for the calibrated test)."""

    negatives: torch.Tensor    # (num_negatives, concept_size, H, W, C) uint8 crops
    negative_acts: torch.Tensor  # (num_negatives, concept_size, D)
    random_cavs: torch.Tensor  # (num_negatives, D)
    null_cavs: torch.Tensor    # (num_null, num_negatives, D)
    timings: dict = field(default_factory=dict)


def random_patches(data: data_mod.ImageSet, count: int, settings: ACESettings,
                   rng: np.random.Generator, exclude: np.ndarray) -> torch.Tensor:
    """``count`` crops of one random segment each of distinct random training images."""
    pool = np.setdiff1d(np.arange(len(data)), exclude)
    if count > len(pool):
        raise ValueError(f"{count} random patches need as many images; the dataset has "
                         f"{len(pool)} outside the TCAV images")
    chosen = rng.choice(pool, size=count, replace=False)
    segs = segment_images(data.images[torch.from_numpy(chosen)], settings)
    pick = [rng.choice(np.flatnonzero(segs.image_of.numpy() == i)) for i in range(count)]
    return crops(segs.subset(torch.tensor(np.asarray(pick))), data.mean)


def build_random_bank(clf: Classifier, data: data_mod.ImageSet, settings: ACESettings,
                      seed: int, exclude: np.ndarray) -> RandomBank:
    t = {}
    rng = np.random.default_rng([seed, 7919])
    n, size = settings.num_negatives + 1, settings.concept_size
    t0 = time.perf_counter()
    if settings.negatives == "patches":
        sets = random_patches(data, n * size, settings, rng, exclude)
    else:
        pool = np.setdiff1d(np.arange(len(data)), exclude)
        sets = data.images[torch.from_numpy(rng.choice(pool, size=n * size, replace=False))]
    nulls = random_patches(data, settings.num_null * size, settings, rng, exclude)
    t["random segments"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    acts = activations(clf, sets).reshape(n, size, -1)
    null_acts = activations(clf, nulls).reshape(settings.num_null, size, -1)
    t["random activations"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    negatives = list(acts[1:])
    random_cavs, _ = train_cavs(acts[0], negatives, settings.cav_alpha, seed)
    null_cavs = torch.stack([train_cavs(a, negatives, settings.cav_alpha, seed + 1 + j)[0]
                             for j, a in enumerate(null_acts)])
    t["null and random CAVs"] = time.perf_counter() - t0
    return RandomBank(sets.view(n, size, *sets.shape[1:])[1:], acts[1:], random_cavs,
                      null_cavs, t)


# ---------------------------------------------------------------------------------------
# Discovery: one class, then all classes with caching.


def class_images(data: data_mod.ImageSet, label: int, settings: ACESettings, seed: int,
                 split: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the TCAV images and of discovery split ``split`` of class ``label``:
    disjoint blocks of one seeded permutation of the class, TCAV images first (the caller
    checks the class is large enough)."""
    members = np.flatnonzero(data.labels.numpy() == label)
    order = np.random.default_rng([seed, label]).permutation(members)
    start = settings.tcav_images + split * settings.discovery_images
    return order[: settings.tcav_images], order[start: start + settings.discovery_images]


def discover_class(clf: Classifier, data: data_mod.ImageSet, label: int, bank: RandomBank,
                   settings: ACESettings, seed: int, split: int = 0) -> ClassConcepts:
    """ACE for one class against a prepared random bank."""
    check_discovery(data, [label], settings, seed, split, clf)
    t = {}
    tcav_idx, disc_idx = class_images(data, label, settings, seed, split)
    t0 = time.perf_counter()
    grads = class_gradients(clf, data.images[torch.from_numpy(tcav_idx)], label)
    check_gradient_spread(grads, clf.layer)
    t["gradients"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    segs = segment_images(data.images[torch.from_numpy(disc_idx)], settings)
    t["segments"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    acts = activations(clf, crops(segs, data.mean))
    negatives = list(bank.negative_acts)
    t["activations"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    clusters = cluster_segments(acts, segs.image_of, settings, seed)
    t["clustering"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    random_tcav = tcav_scores(grads, bank.random_cavs)
    null_tcav = torch.stack([tcav_scores(grads, c) for c in bank.null_cavs])
    null_means = null_tcav.mean(1)
    null_tp = torch.tensor([ttest_p(s, random_tcav) for s in null_tcav])
    concepts = []
    for c, (members, centre) in enumerate(clusters):
        cavs, acc = train_cavs(acts[torch.from_numpy(members)], negatives, settings.cav_alpha,
                               seed * 7 + label * 101 + c)
        scores = tcav_scores(grads, cavs)
        direction = cavs.mean(0) / cavs.mean(0).norm().clamp_min(1e-12)
        concepts.append(Concept(label, torch.from_numpy(members), centre, direction, scores,
                                float(acc.mean()), ttest_p(scores, random_tcav),
                                null_p(float(scores.mean()), null_means)))
    concepts.sort(key=lambda k: -k.mean_tcav)
    t["concept CAVs and TCAV"] = time.perf_counter() - t0
    return ClassConcepts(label, segs, concepts, null_means, null_tp, random_tcav, t)


def fingerprint(*parts) -> str:
    """A short hash of tensors (by their bytes) and JSON-able values."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, nn.Module):
            for name, tensor in part.state_dict().items():
                h.update(name.encode())
                h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        elif torch.is_tensor(part):
            h.update(part.contiguous().numpy().tobytes())
        elif isinstance(part, data_mod.FolderImages):
            h.update(part.identity().encode())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _cache_load_or_build(path: Path, build, use_cache: bool):
    """The cached object at ``path``, else ``build()`` (cached through ``store.atomic_write``;
    a damaged cache file is moved aside with a warning naming it, and rebuilt)."""
    if use_cache and (obj := read_torch(path, weights_only=False)) is not None:
        return obj
    obj = build()
    if use_cache:
        atomic_write(path, lambda tmp: torch.save(obj, tmp))
    return obj


@dataclass
class ConceptSet:
    """Concepts of several classes discovered with one classifier, layer and settings."""

    settings: ACESettings
    classifier: str
    layer: str
    dataset: str
    mean: tuple
    classes: dict[int, ClassConcepts]
    bank_timings: dict = field(default_factory=dict)

    def top(self, label: int, n: int = 5, test: str = "null") -> list[Concept]:
        """The ``n`` highest-ranked concepts of ``label`` that pass ``test``
        ('null', 'ttest' or 'none')."""
        self.check_label(label)
        check_integer("n", n, 1)
        if test not in TESTS:
            raise ValueError(f"test must be one of {TESTS}, got {test!r}")
        return [c for c in self.classes[label].concepts
                if c.significant(test, self.settings)][:n]

    def check_label(self, label) -> None:
        """A ValueError unless concepts of class ``label`` were discovered."""
        if label not in self.classes:
            raise ValueError(f"no concepts discovered for class {label!r}; have "
                             f"{sorted(self.classes)}")

    def false_positive_rates(self) -> dict[int, dict[str, float]]:
        return {k: false_positive_rates(c.null_means, c.null_ttest_p, self.settings)
                for k, c in self.classes.items()}

    def timings(self) -> dict[str, float]:
        """Seconds per stage when it was computed (cached results keep their times),
        summed over the classes."""
        total = dict(self.bank_timings)
        for c in self.classes.values():
            for stage, sec in c.timings.items():
                total[stage] = total.get(stage, 0.0) + sec
        return total


def _check_image_set(data) -> None:
    if not isinstance(data, data_mod.IMAGE_SETS):
        raise ValueError("discovery needs an ImageSet or ImageFolderSet (what load_dataset "
                         f"returns), got {type(data).__name__}")


def check_discovery(data: data_mod.ImageSet, classes, settings: ACESettings | None, seed: int,
                    split: int, clf: Classifier | None = None
                    ) -> tuple[list[int], ACESettings]:
    """Every argument of a discovery checked before any compute (a default classifier's
    training, gradients, segmentation), so a bad one fails in milliseconds, not minutes.
    Returns the classes as a list and the settings (the image size's default if None)."""
    _check_image_set(data)
    settings = settings or ACESettings.for_image_size(data.images.shape[1])
    if not isinstance(settings, ACESettings):
        raise ValueError(f"settings must be an ACESettings, got {type(settings).__name__}")
    classes = list(range(data.num_classes)) if classes is None else classes
    if isinstance(classes, (str, bytes)) or not hasattr(classes, "__iter__"):
        raise ValueError(f"classes must be a list of class indices, got {classes!r}")
    classes = list(classes)
    if not classes or any(isinstance(k, bool) or not isinstance(k, int)
                          or not 0 <= k < data.num_classes for k in classes):
        raise ValueError(f"classes must be class indices in 0..{data.num_classes - 1}, "
                         f"got {classes}")
    check_integer("seed", seed, 0)
    check_integer("split", split, 0)
    counts = torch.bincount(data.labels, minlength=data.num_classes)
    need = settings.tcav_images + (split + 1) * settings.discovery_images
    small = min(classes, key=lambda k: int(counts[k]))
    if counts[small] < need:
        raise ValueError(f"every class needs {need} images (tcav_images + (split + 1) * "
                         f"discovery_images); class {small} has only {int(counts[small])}")
    # The random bank draws distinct images outside every class's TCAV images.
    pool = len(data) - int(counts.clamp(max=settings.tcav_images).sum())
    bank = settings.concept_size * max(settings.num_negatives + 1, settings.num_null)
    if bank > pool:
        raise ValueError(
            f"the random bank needs {bank} images (concept_size * max(num_negatives + 1, "
            f"num_null)) outside the TCAV images; the dataset has {pool}")
    if clf is not None:
        if not isinstance(clf, Classifier):
            raise ValueError(f"clf must be a Classifier, got {type(clf).__name__}")
        channels, outputs = models.io_sizes(clf.model)
        if channels is not None and data.images.shape[3] != channels:
            raise ValueError(f"images have {data.images.shape[3]} channels; classifier "
                             f"{clf.name!r} takes {channels}")
        if outputs is not None and max(classes) >= outputs:
            raise ValueError(f"class {max(classes)} has no logit: classifier {clf.name!r} has "
                             f"{outputs} outputs; allowed classes: 0..{outputs - 1}")
    return classes, settings


def discover(clf: Classifier, data: data_mod.ImageSet, classes=None,
             settings: ACESettings | None = None, seed: int = 0, split: int = 0,
             use_cache: bool = True) -> ConceptSet:
    """Concepts of ``classes`` (default: all) of ``data`` (training images, an ImageSet).

    Cached on disk per class, keyed by the classifier's weights, its layer, the dataset's
    images and labels, ``settings``, ``seed`` and ``split`` (which disjoint block of
    discovery images; the TCAV images and the random bank are shared across splits).
    """
    classes, settings = check_discovery(data, classes, settings, seed, split, clf)
    tcav_all = np.concatenate([class_images(data, k, settings, seed, 0)[0]
                               for k in range(data.num_classes)])
    base = fingerprint(clf.name if clf.fixed else clf.model, clf.layer,
                       list(clf.normalization), data.images, data.labels,
                       dataclasses.asdict(settings), seed, CACHE_FORMAT)
    root = data_mod.cache_dir() / "concepts"
    bank = None

    def get_bank() -> RandomBank:
        nonlocal bank
        if bank is None:
            bank = _cache_load_or_build(
                root / f"bank-{base}.pt",
                lambda: build_random_bank(clf, data, settings, seed, tcav_all), use_cache)
        return bank

    paths = {k: root / f"class-{base}-s{split}-c{k}.pt" for k in classes}
    for k in classes:  # the layer guard, before the random bank is built
        if not (use_cache and paths[k].exists()):
            tcav_idx = class_images(data, k, settings, seed, split)[0]
            grads = class_gradients(clf, data.images[torch.from_numpy(tcav_idx)], k)
            check_gradient_spread(grads, clf.layer)
    result = {}
    for k in classes:
        result[k] = _cache_load_or_build(
            paths[k],
            lambda k=k: discover_class(clf, data, k, get_bank(), settings, seed, split),
            use_cache)
    return ConceptSet(settings, clf.name, clf.layer, data.name, tuple(data.mean), result,
                      bank.timings if bank is not None else {})


# ---------------------------------------------------------------------------------------
# What the concepts are worth: stability across discovery sets, the classifier's verdict.


def stability(splits: list[ConceptSet], label: int, n: int = 5, test: str = "null"
              ) -> dict[str, float]:
    """Does a disjoint discovery set find the same top concepts of ``label``?

    For every ordered pair of splits (a, b) and every top-``n`` concept of a passing
    ``test``, the concept of b with the closest direction (cosine of unit mean CAVs) is
    found among all of b's concepts. ``agreement``: how often that match is among b's top
    concepts; ``chance``: the same rate for a match drawn at random; ``cosine``: the mean
    cosine of the matches.
    """
    if len(splits) < 2:
        raise ValueError(f"stability needs at least 2 concept sets, got {len(splits)}")
    for found in splits:
        found.top(label, n, test)  # checks label, n and test
    hits, chance, cosines = [], [], []
    for a in splits:
        for b in splits:
            if a is b:
                continue
            everything = b.classes[label].concepts
            top_b = {id(c) for c in b.top(label, n, test)}
            if not everything:
                continue
            dirs = torch.stack([c.direction for c in everything])
            for concept in a.top(label, n, test):
                cos = dirs @ concept.direction
                best = int(cos.argmax())
                hits.append(id(everything[best]) in top_b)
                chance.append(len(top_b) / len(everything))
                cosines.append(float(cos[best]))
    if not hits:
        return {"agreement": float("nan"), "chance": float("nan"), "cosine": float("nan")}
    return {"agreement": float(np.mean(hits)), "chance": float(np.mean(chance)),
            "cosine": float(np.mean(cosines))}


def shared_direction(found: ConceptSet) -> float:
    """Mean cosine between the directions of every two concepts of ``found`` (all classes):
    near 0 when concepts point their own ways, high when all CAVs share a component (as
    they do against whole-image negatives: "a patch, not a photo")."""
    dirs = torch.stack([c.direction for cc in found.classes.values() for c in cc.concepts])
    if len(dirs) < 2:
        raise ValueError(f"need at least 2 concepts, found {len(dirs)}")
    cos = dirs @ dirs.T
    return float((cos.sum() - cos.diagonal().sum()) / (len(dirs) * (len(dirs) - 1)))


def classifier_agreement(clf: Classifier, found: ConceptSet, label: int, n: int = 5,
                         test: str = "null") -> list[dict[str, float]]:
    """How often the classifier itself assigns a top concept's members to ``label``: as
    full-size patches (the DOP material) and as resized crops (what ACE clusters)."""
    top = found.top(label, n, test)  # checks label, n and test first
    cc = found.classes[label]
    rows = []
    for concept in top:
        segs = cc.segments.subset(concept.members)
        row = {}
        for kind, images in [("patch", patches(segs, found.mean)),
                             ("crop", crops(segs, found.mean))]:
            with torch.no_grad():
                pred = clf.model.eval()(_inputs(images, clf.normalization)).argmax(1)
            row[kind] = float((pred == label).float().mean())
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------
# Defaults per dataset.

CIFAR10_NAMES = ("CIFAR-10", data_mod.CIFAR10_JPEG_NAME)
IMAGENET_NAMES = ("ImageNet", "ImageNet 64px")  # the names of data.FOLDER_SIZES' sets
IMAGENET_CLASSIFIER = ("resnet50", "IMAGENET1K_V1")  # torchvision's, with its classic weights
_TRAINED: dict[str, Classifier] = {}


def _synthetic_classifier(data: data_mod.ImageSet) -> Classifier:
    """The tiny net trained on the synthetic set ``data`` for 2 epochs (seed 0) at ``bn1``."""
    from opai_lib.config import Recipe
    from opai_lib.train import train

    model = models.get_model("tiny", data.num_classes, seed=0)
    train(model, data_mod.batches(data, 64, train=True, seed=0),
          Recipe(epochs=2, batch_size=64, lr=0.05, schedule="constant"), progress=False)
    return Classifier(model.eval(), "bn1", (data.mean, data.std),
                      "synthetic-tiny-2-epochs-seed-0", fixed=True)


def default_classifier(data: data_mod.ImageSet) -> Classifier:
    """The reference classifier of a dataset: the pretrained ResNet-20 at ``layer3.1`` for
    CIFAR-10; torchvision's ResNet-50 with its ImageNet weights at ``layer4.1`` for ImageNet
    (when torch hub's cache holds them or can download them); for the synthetic set, the
    tiny net trained on it for 2 epochs (seed 0, 2 s), at ``bn1``, kept in the cache folder
    so that a notebook's kernel and its sweep's workers train it once between them."""
    if data.name in CIFAR10_NAMES:
        return reference_classifier("resnet20")
    if data.name in IMAGENET_NAMES:
        return torchvision_classifier(*IMAGENET_CLASSIFIER)
    if data.name == "synthetic":
        key = fingerprint(data.images, data.labels, CACHE_FORMAT)
        if key not in _TRAINED:  # trained once per cache folder, read once per process
            _TRAINED[key] = _cache_load_or_build(
                data_mod.cache_dir() / "classifiers" / f"synthetic-tiny-{key}.pt",
                lambda: _synthetic_classifier(data), use_cache=True)
        return _TRAINED[key]
    raise ValueError(f"no default classifier for dataset {data.name!r}; build a Classifier and "
                     "call discover(classifier, data) yourself")


def default_discovery(dataset: str) -> tuple[str, ACESettings]:
    """The default discovery of registered dataset ``dataset``, known without reading it:
    its classifier as ``name@layer`` (``default_classifier``) and its settings
    (``default_settings``). A run's concept material holds both, so they are in its key."""
    if dataset == "cifar10":
        return "pretrained-resnet20@layer3.1", ACESettings.for_image_size(32)
    if dataset == "synthetic":
        return "synthetic-tiny-2-epochs-seed-0@bn1", ACESettings(**SYNTHETIC_SETTINGS)
    if dataset in data_mod.FOLDER_SIZES:
        arch, weights = IMAGENET_CLASSIFIER
        return f"torchvision:{arch}:{weights}@{TORCHVISION_LAYERS[arch]}", \
            ACESettings.for_image_size(data_mod.FOLDER_SIZES[dataset])
    raise ValueError(f"no default concept discovery for dataset {dataset!r} (there is one for "
                     f"cifar10, synthetic and {sorted(data_mod.FOLDER_SIZES)}); name a "
                     "classifier and ACE settings in the Material, or discover concepts with "
                     "your own Classifier and feed materials.make_material the ConceptSet")


def default_settings(data: data_mod.ImageSet) -> ACESettings:
    if data.name == "synthetic":
        return ACESettings(**SYNTHETIC_SETTINGS)
    return ACESettings.for_image_size(data.images.shape[1])


def discover_default(data: data_mod.ImageSet, classes=None, seed: int = 0, split: int = 0
                     ) -> ConceptSet:
    """``discover`` with the dataset's default classifier and settings (cached)."""
    _check_image_set(data)
    settings = default_settings(data)
    classes, _ = check_discovery(data, classes, settings, seed, split)
    return discover(default_classifier(data), data, classes, settings, seed, split)

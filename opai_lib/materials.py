"""What a pruning criterion is fed: the DOP paper's materials behind one function.

``make_material(name, data, per_class, seed)`` returns a batch ``(x, y)``: ``x`` float NCHW in the
normalisation of the network being pruned (``data.mean``/``data.std``), after the training
augmentation (``data.augment_crop_flip``), ``y`` the class labels grouped by class.

- ``image``: class-balanced random training images (what SNIP and GraSP use).
- ``dop``: discriminative image patches (Yang et al. 2022, Algorithm 1): segments of the
  top concepts of each class at their original position, the rest at the dataset mean;
  ``per_class`` patches spread evenly over the top ``top`` concepts (the paper: 5 concepts,
  2 patches each for SNIP, 6 for GraSP).
- ``stitch``: Super Stitching (Algorithm 2): per image, the top concepts in ascending order
  of importance each contribute one randomly popped segment per round, pasted at its
  original position, until the covered-pixel ratio r (eq. 6) reaches ``sigma``.
- ablations (section 4.2): ``all_ones`` (inputs of ones, real labels), ``random_segment``
  (random segments of the class's discovery images, not chosen by concept, same count and
  fill as ``dop``), ``less_patch`` (one patch per class, whatever ``per_class`` says).
- controls from the literature: ``random_labels`` (the ``image`` batch with its labels
  shuffled among its examples; Su et al. 2020), ``shuffled_pixels`` (each image of the
  ``image`` batch with its pixel positions permuted, all channels alike; Su et al. 2020),
  ``gaussian`` (standard normal inputs in the network's normalised space with balanced
  labels, as NTK-SAP feeds).

Concept materials are drawn from a ``concepts.ConceptSet``; without one, the cached
discovery with the dataset's default classifier (``concepts.discover_default``: for
CIFAR-10 the pretrained ResNet-20 at ``layer3.1``) is used. A run's ``Material`` names its
discovery (classifier and ACE settings), the dataset's default unless given.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from opai_lib import concepts as concepts_mod
from opai_lib import data as data_mod
from opai_lib.config import check_integer, check_parameter, check_types, param, require
from opai_lib.registry import Registry

MATERIALS = Registry("material")
CONCEPT_MATERIALS = ("dop", "stitch", "random_segment", "less_patch")


@dataclass(frozen=True)
class Request:
    """The validated arguments of one ``make_material`` call."""

    data: data_mod.ImageSet
    per_class: int
    seed: int
    concepts: concepts_mod.ConceptSet | None
    sigma: float
    top: int
    test: str | None

    def rng(self, label: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, label])

    def labels(self) -> range:
        return range(self.data.num_classes)


def finish(images: torch.Tensor, labels: torch.Tensor, req: Request, augment: bool
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Training augmentation on (B, H, W, C) uint8, then the dataset's normalisation."""
    if augment:
        g = torch.Generator().manual_seed(req.seed)
        images = data_mod.augment_crop_flip(images, g)
    mean = torch.tensor(req.data.mean).view(1, -1, 1, 1)
    std = torch.tensor(req.data.std).view(1, -1, 1, 1)
    x = (images.permute(0, 3, 1, 2).float() / 255 - mean) / std
    return x.contiguous(), labels


def _choose(pool_size: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` indices of a pool, without replacement while the pool lasts."""
    reps = -(-count // pool_size)
    return np.concatenate([rng.permutation(pool_size) for _ in range(reps)])[:count]


def _top(req: Request, label: int) -> list[concepts_mod.Concept]:
    top = req.concepts.top(label, req.top, req.test)
    if not top:
        raise ValueError(f"class {label} has no concept passing the {req.test!r} test; use "
                         "test='none' or other settings")
    return top


@MATERIALS.register("image")
def image_material(req: Request, augment: bool):
    idx = data_mod.balanced_indices(req.data.labels, req.per_class, req.seed)
    return finish(req.data.images[idx], req.data.labels[idx], req, augment)


def _control_rng(req: Request) -> torch.Generator:
    """The draws of a control, apart from those of the images it starts from."""
    return torch.Generator().manual_seed(req.seed * 7919 + 1)


@MATERIALS.register("random_labels")
def random_labels_material(req: Request, augment: bool):
    x, y = image_material(req, augment)
    return x, y[torch.randperm(len(y), generator=_control_rng(req))]


@MATERIALS.register("shuffled_pixels")
def shuffled_pixels_material(req: Request, augment: bool):
    x, y = image_material(req, augment)
    g = _control_rng(req)
    flat = x.flatten(2)  # (B, C, H*W): one permutation per image, the same for its channels
    order = torch.stack([torch.randperm(flat.shape[-1], generator=g) for _ in range(len(x))])
    shuffled = flat.gather(2, order[:, None, :].expand_as(flat))
    return shuffled.view_as(x).contiguous(), y


@MATERIALS.register("gaussian")
def gaussian_material(req: Request, augment: bool):
    """Standard normal inputs (no augmentation: there is no image to move)."""
    _, h, w, c = req.data.images.shape
    y = torch.arange(req.data.num_classes).repeat_interleave(req.per_class)
    return torch.randn(len(y), c, h, w, generator=_control_rng(req)), y


@MATERIALS.register("all_ones")
def all_ones_material(req: Request, augment: bool):
    """Inputs of exactly one (no augmentation, no normalisation: nothing to move)."""
    _, h, w, c = req.data.images.shape
    y = torch.arange(req.data.num_classes).repeat_interleave(req.per_class)
    return torch.ones(len(y), c, h, w), y


def _segment_patches(req: Request, label: int, members: torch.Tensor) -> torch.Tensor:
    segs = req.concepts.classes[label].segments.subset(members)
    return concepts_mod.patches(segs, req.data.mean)


@MATERIALS.register("dop")
def dop_material(req: Request, augment: bool):
    images = []
    for k in req.labels():
        top, rng = _top(req, k), req.rng(k)
        counts = [req.per_class // len(top) + (i < req.per_class % len(top))
                  for i in range(len(top))]
        for concept, n in zip(top, counts, strict=True):
            if n:
                pick = concept.members[_choose(len(concept.members), n, rng)]
                images.append(_segment_patches(req, k, pick))
    y = torch.arange(req.data.num_classes).repeat_interleave(req.per_class)
    return finish(torch.cat(images), y, req, augment)


@MATERIALS.register("less_patch")
def less_patch_material(req: Request, augment: bool):
    """One patch per class: a random member of the class's top concept."""
    images = []
    for k in req.labels():
        best = _top(req, k)[0]
        pick = best.members[_choose(len(best.members), 1, req.rng(k))]
        images.append(_segment_patches(req, k, pick))
    return finish(torch.cat(images), torch.arange(req.data.num_classes), req, augment)


@MATERIALS.register("random_segment")
def random_segment_material(req: Request, augment: bool):
    images = []
    for k in req.labels():
        n_segments = len(req.concepts.classes[k].segments)
        pick = torch.from_numpy(_choose(n_segments, req.per_class, req.rng(k)))
        images.append(_segment_patches(req, k, pick))
    y = torch.arange(req.data.num_classes).repeat_interleave(req.per_class)
    return finish(torch.cat(images), y, req, augment)


def stitch(segments: concepts_mod.Segments, concept_members: list[torch.Tensor], sigma: float,
           fill: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, float]:
    """Algorithm 2: one Super Stitching image (H, W, C) uint8 and its coverage r.

    ``concept_members`` are the concepts' segment indices in ascending order of importance.
    Each round, every concept with segments left in the waiting list pops one at random and
    pastes it at its original position (later, more important, segments on top); rounds go
    on until the covered fraction of pixels reaches ``sigma``. An empty waiting list is
    refilled with every concept's segments.
    """
    h, w, c = segments.images.shape[1:]
    canvas = fill.view(1, 1, c).expand(h, w, c).clone()
    covered = torch.zeros(h, w, dtype=torch.bool)
    waiting: list[list[int]] = [[] for _ in concept_members]
    while covered.float().mean() < sigma:
        if not any(waiting):
            before = covered.clone()
            waiting = [[int(i) for i in rng.permutation(m.numpy())] for m in concept_members]
        for queue in waiting:
            if queue:
                s = queue.pop()
                mask = segments.masks[s]
                canvas[mask] = segments.images[segments.image_of[s]][mask]
                covered |= mask
        if not any(waiting) and torch.equal(before, covered):
            union = covered.float().mean().item()
            raise ValueError(f"the concepts' segments cover only {union:.2f} of the image; "
                             f"no stitching reaches sigma={sigma}")
    return canvas, float(covered.float().mean())


def stitched(found: concepts_mod.ConceptSet, label: int, sigma: float, count: int, seed: int,
             top: int = 5, test: str | None = None) -> tuple[torch.Tensor, list[float]]:
    """``count`` Super Stitching images (B, H, W, C) uint8 of class ``label`` from its ``top``
    concepts passing ``test`` (default: ``settings.material_test``), and their coverages."""
    test = test or found.settings.material_test
    req = Request(None, count, seed, found, sigma, top, test)
    ascending = [c.members for c in reversed(_top(req, label))]
    segs, rng = found.classes[label].segments, req.rng(label)
    fill = concepts_mod.fill_value(found.mean)
    pairs = [stitch(segs, ascending, sigma, fill, rng) for _ in range(count)]
    return torch.stack([p[0] for p in pairs]), [p[1] for p in pairs]


@MATERIALS.register("stitch")
def stitch_material(req: Request, augment: bool):
    images = [stitched(req.concepts, k, req.sigma, req.per_class, req.seed, req.top,
                       req.test)[0] for k in req.labels()]
    y = torch.arange(req.data.num_classes).repeat_interleave(req.per_class)
    return finish(torch.cat(images), y, req, augment)


def make_material(name: str, data: data_mod.ImageSet, per_class: int, seed: int,
             concepts: concepts_mod.ConceptSet | None = None, sigma: float = 0.5,
             top: int = 5, test: str | None = None, augment: bool = True
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch ``(x, y)`` of material ``name`` (see ``MATERIALS.names()``): ``per_class``
    examples of every class of ``data`` (training images), drawn with ``seed``.

    ``concepts`` feeds the concept materials (default: the cached discovery with the
    dataset's default classifier); ``top`` concepts per class among those that pass ``test``
    ('null', 'ttest' or 'none'; default: the concepts' ``settings.material_test``, 'null'
    unless set otherwise); fewer when fewer pass, an error when none does. ``sigma`` is
    Super Stitching's coverage threshold.
    """
    build = MATERIALS.get(name)
    if not isinstance(data, data_mod.IMAGE_SETS):
        raise ValueError(f"data must be an ImageSet or ImageFolderSet, got {type(data).__name__}")
    for arg, value, low in [("per_class", per_class, 1), ("top", top, 1), ("seed", seed, 0)]:
        check_integer(arg, value, low)
    if not (isinstance(sigma, (int, float)) and 0 < sigma <= 1):
        raise ValueError(f"sigma must be a number in (0, 1], got {sigma!r}")
    if test is not None and test not in concepts_mod.TESTS:
        raise ValueError(f"test must be one of {concepts_mod.TESTS}, got {test!r}")
    if name in CONCEPT_MATERIALS:
        if concepts is None:
            concepts = concepts_mod.discover_default(data)
        missing = sorted(set(range(data.num_classes)) - set(concepts.classes))
        if missing:
            raise ValueError(f"material {name!r} needs concepts of every class; the concept "
                             f"set lacks classes {missing}")
        test = test or concepts.settings.material_test
    return build(Request(data, per_class, seed, concepts, float(sigma), top, test), augment)


# ---------------------------------------------------------------------------------------
# A material as part of a run: every choice named, so a run's key holds it.

@dataclass(frozen=True)
class Material:
    """What a run feeds its criterion: ``batches`` class-balanced batches of ``per_class``
    examples of every class, of material ``name``, drawn with the run's seed.

    Options a material does not read stay None (an error if given), so two runs that differ
    only there share one key. ``for_dataset`` fills what the dataset decides unless given:
    the identity of the discovery (classifier and ACE settings) and the concept test.
    """

    name: str = param("image", "see MATERIALS.names()")
    per_class: int = param(10, "examples of every class in each batch")
    batches: int = param(1, "class-balanced batches of distinct examples")
    top: int | None = param(None, "concept materials: concepts per class (default 5)")
    sigma: float | None = param(None, "stitch: Super Stitching's coverage threshold "
                                "(default 0.5; the paper also uses 0.75)")
    test: str | None = param(None, "concept materials: the test a concept passes ('null', "
                             "'ttest', 'none'; default: the discovery settings')")
    classifier: str | None = param(None, "concept materials: the discovery's classifier as "
                                   "name@layer (concepts.named_classifier); None: the "
                                   "dataset's default")
    ace: concepts_mod.ACESettings | None = param(None, "concept materials: the ACE settings; "
                                                 "None: the dataset's default")

    def __post_init__(self):
        check_types(self)
        MATERIALS.get(self.name)
        require(self.per_class >= 1, self, "per_class", "an integer >= 1")
        require(self.batches >= 1, self, "batches", "an integer >= 1")
        require(self.name != "less_patch" or self.per_class == 1, self, "per_class",
                "1 for less_patch (one patch per class)")
        require(self.name != "less_patch" or self.batches == 1, self, "batches",
                "1 for less_patch (one patch per class)")
        concept = self.name in CONCEPT_MATERIALS
        for name, used in [("top", concept), ("test", concept), ("classifier", concept),
                           ("ace", concept), ("sigma", self.name == "stitch")]:
            require(used or getattr(self, name) is None, self, name,
                    f"None: material {self.name!r} does not read it")
        if concept and self.top is None:
            object.__setattr__(self, "top", 5)
        if self.name == "stitch" and self.sigma is None:
            object.__setattr__(self, "sigma", 0.5)
        require(self.top is None or self.top >= 1, self, "top", "an integer >= 1")
        require(self.sigma is None or 0 < self.sigma <= 1, self, "sigma", "0 < sigma <= 1")
        require(self.test is None or self.test in concepts_mod.TESTS, self, "test",
                f"None or one of {concepts_mod.TESTS}")

    def for_dataset(self, dataset: str) -> Material:
        """This material with what ``dataset`` decides filled in: for concept materials the
        classifier and ACE settings left None (``concepts.default_discovery``) and, unless
        given, the test those settings name."""
        if self.name not in CONCEPT_MATERIALS:
            return self
        classifier, ace = self.classifier, self.ace
        if ace is None or not concepts_mod.built_in_classifier(classifier or ""):
            default = concepts_mod.default_discovery(dataset)
            check_parameter(classifier in (None, default[0])
                            or concepts_mod.built_in_classifier(classifier),
                            "Material.classifier", classifier,
                            f"None, {concepts_mod.CLASSIFIER_NAMES}, or the default "
                            f"discovery's of {dataset} ({default[0]})")
            classifier, ace = classifier or default[0], ace or default[1]
        return dataclasses.replace(self, classifier=classifier, ace=ace,
                                   test=self.test or ace.material_test)

    def make(self, data: data_mod.ImageSet, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The batches; concept materials draw from the discovery this material names
        (``concepts.named_classifier`` with its ACE settings; cached)."""
        options = {}
        if self.name in CONCEPT_MATERIALS:
            clf = concepts_mod.named_classifier(self.classifier, data)
            options = dict(concepts=concepts_mod.discover(clf, data, settings=self.ace),
                           top=self.top, test=self.test)
        if self.sigma is not None:
            options["sigma"] = self.sigma
        x, y = make_material(self.name, data, self.per_class * self.batches, seed, **options)
        order = torch.arange(len(y)).view(data.num_classes, self.batches, self.per_class)
        return [(x[order[:, b].flatten()], y[order[:, b].flatten()]) for b in range(self.batches)]

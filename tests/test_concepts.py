"""ACE and TCAV: answers known in advance on tiny models, synthetic activations and images."""

import numpy as np
import pytest
import torch
from torch import nn

from opai_lib import concepts as C
from opai_lib import data, models

# The synthetic set is noisy: SLIC needs more compactness there to cut it at all.
TINY = dict(n_segments=(6, 12), compactness=20.0, discovery_images=8, tcav_images=8, n_clusters=4,
            min_cluster_size=3, concept_size=6, num_negatives=3, num_null=4, level=0.2)


def as_images(x: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] (N, C, H, W) as uint8 (N, H, W, C)."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def linear_head_model(seed=0):
    """flatten -> Linear (the bottleneck, named '1') -> Linear head: logits linear in it."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 8), nn.Linear(8, 2)).eval()


def gap_head_model(seed=0):
    """conv -> ReLU (the bottleneck, '1') -> global average pooling -> Linear."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 3)).eval()


NORM = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def test_gradient_equals_head_weight_and_tcav_is_one_or_zero():
    model = linear_head_model()
    clf = C.Classifier(model, "1", NORM, "linear")
    images = as_images(torch.rand(12, 3, 4, 4, generator=torch.Generator().manual_seed(1)))
    grads = C.class_gradients(clf, images, label=1)
    w = model[2].weight[1].detach()
    torch.testing.assert_close(grads, w.expand(12, -1))  # hand derivation: d(w.a + b)/da = w
    g = torch.Generator().manual_seed(2)
    unit = w / w.norm()
    negatives = [torch.randn(20, 8, generator=g) for _ in range(5)]
    aligned, _ = C.train_cavs(torch.randn(20, 8, generator=g) + 4 * unit, negatives, 0.01, 0)
    opposite, _ = C.train_cavs(torch.randn(20, 8, generator=g) - 4 * unit, negatives, 0.01, 0)
    assert (aligned @ unit > 0.5).all() and (opposite @ unit < -0.5).all()
    assert C.tcav_scores(grads, aligned).tolist() == [1.0] * 5
    assert C.tcav_scores(grads, opposite).tolist() == [0.0] * 5


def test_tcav_counts_positive_dot_products():
    grads = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0], [2.0, -1.0]])
    cavs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert C.tcav_scores(grads, cavs).tolist() == [0.5, 0.25]


def test_constant_gradient_guard_fires_on_gap_then_linear_head():
    clf = C.Classifier(gap_head_model(), "1", NORM, "gap")
    images = as_images(torch.rand(10, 3, 8, 8, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="same class-logit gradient.*linear"):
        C.check_gradient_spread(C.class_gradients(clf, images, 0), "1")
    conv = C.Classifier(gap_head_model(), "0", NORM, "gap")  # before the ReLU: varies
    C.check_gradient_spread(C.class_gradients(conv, images, 0), "0")


def test_guard_stops_discovery_at_a_resnet_stage_output(tmp_path, monkeypatch):
    monkeypatch.setenv("OPAI_CACHE_DIR", str(tmp_path))
    model = models.get_model("resnet20", width=0.25, seed=0).eval()
    train = data.synthetic(train=True)
    settings = C.ACESettings(**TINY)
    with pytest.raises(ValueError, match="'layer3' gives nearly the same"):
        C.discover(C.Classifier(model, "layer3", NORM, "r20"), train, [0], settings)
    images = train.images[:16]
    C.check_gradient_spread(
        C.class_gradients(C.Classifier(model, "layer3.1", NORM, "r20"), images, 0), "layer3.1")
    assert not list(tmp_path.glob("concepts/*"))  # nothing computed, nothing cached


def test_unknown_layer_is_an_error_naming_layers():
    with pytest.raises(ValueError, match="no layer 'layer9'.*layer3"):
        C.Classifier(models.get_model("resnet20", width=0.25), "layer9", NORM, "r20")


def test_imagenet_classifier_needs_its_weights_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="weights '.*missing.pth' of resnet50 not found"):
        C.reference_classifier("resnet50", weights=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="no reference classifier 'vgg' without weights"):
        C.reference_classifier("vgg")
    with pytest.raises(ValueError, match="arch = 'vgg'; allowed: a torchvision classifier"):
        C.reference_classifier("vgg", weights="x.pth")
    with pytest.raises(ValueError, match="layer = None; allowed: a layer name"):
        C.reference_classifier("vgg11", weights="x.pth")


def test_any_torchvision_classifier_from_a_weights_file(tmp_path, monkeypatch):
    """A state dict in torch hub's checkpoints folder, found by file name; its last linear
    layer sets the classes, and the name a material uses builds the same classifier."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    trained = torchvision.models.mobilenet_v3_small(num_classes=3)
    torch.save(trained.state_dict(), tmp_path / "hub" / "checkpoints" / "mine.pth")
    clf = C.reference_classifier("mobilenet_v3_small", "features.6", "mine.pth")
    assert (clf.name, clf.layer, clf.fixed) == ("torchvision:mobilenet_v3_small:mine.pth",
                                                "features.6", False)
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(clf.model(x), trained.eval()(x)) and clf.model(x).shape == (2, 3)
    again = C.named_classifier(f"{clf.name}@{clf.layer}", data.synthetic(train=True))
    assert C.fingerprint(again.model) == C.fingerprint(clf.model)
    with pytest.raises(ValueError, match="no layer 'features.99'"):
        C.reference_classifier("mobilenet_v3_small", "features.99", "mine.pth")


def test_whole_image_negatives_are_training_images():
    train = data.synthetic(train=True)
    clf = C.Classifier(models.get_model("tiny", seed=0).eval(), "bn1", NORM, "tiny")
    settings = C.ACESettings(**{**TINY, "negatives": "images"})
    exclude = np.arange(8)
    bank = C.build_random_bank(clf, train, settings, seed=0, exclude=exclude)
    assert bank.negatives.shape == (3, 6, 32, 32, 3)
    assert bank.random_cavs.shape == (3, 8 * 32 * 32)
    assert bank.null_cavs.shape == (4, 3, 8 * 32 * 32)
    flat = train.images.flatten(1)
    for image in bank.negatives.flatten(0, 1):
        match = (flat == image.flatten()).all(1).nonzero().flatten()
        assert len(match) == 1 and match.item() not in exclude


def test_settings_are_validated():
    with pytest.raises(ValueError, match="num_null"):
        C.ACESettings(num_null=10)  # (1 + 0) / 11 > 0.05: the null test could never pass
    with pytest.raises(ValueError, match="negatives"):
        C.ACESettings(negatives="noise")
    with pytest.raises(ValueError, match="n_segments"):
        C.ACESettings(n_segments=(3, 1))
    assert C.ACESettings.for_image_size(224).n_segments == (15, 50, 80)


def smooth_images(n, seed=0):
    """Smooth colour fields (no noise): SLIC at the 32x32 defaults cuts them in pieces."""
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=32,
                                        mode="bilinear", align_corners=False)
    return as_images(x)


def test_slic_segments_of_one_resolution_are_disjoint_and_filtered():
    settings = C.ACESettings()
    for image in smooth_images(5).numpy():
        masks, resolution = C.segment_image(image, settings)
        assert len(masks) >= 3 and (masks.sum((1, 2)) >= settings.min_area).all()
        for r in np.unique(resolution):
            assert masks[resolution == r].sum(0).max() == 1  # disjoint pixels
        for i in range(len(masks)):  # no kept segment duplicates one of an earlier resolution
            earlier = masks[resolution < resolution[i]]
            inter = (earlier & masks[i]).sum((1, 2))
            union = (earlier | masks[i]).sum((1, 2))
            assert len(earlier) == 0 or (inter / union).max() <= settings.max_jaccard


def test_patches_keep_the_segment_in_place_and_fill_the_rest():
    train = data.load_dataset("synthetic", "train")
    segs = C.segment_images(train.images[:3], C.ACESettings())
    p = C.patches(segs, train.mean)
    fill = C.fill_value(train.mean)
    source = train.images[segs.image_of]
    inside = segs.masks[..., None].expand_as(p)
    assert torch.equal(p[inside], source[inside])
    assert (p[~segs.masks] == fill).all()


def test_crop_of_a_whole_image_is_the_image_and_crops_have_input_size():
    train = data.load_dataset("synthetic", "train")
    whole = C.Segments(train.images[:2], torch.ones(2, 32, 32, dtype=torch.bool),
                       torch.tensor([0, 1]), torch.tensor([0, 0]))
    assert torch.equal(C.crops(whole, train.mean), train.images[:2])
    segs = C.segment_images(train.images[:2], C.ACESettings())
    assert C.crops(segs, train.mean).shape == (len(segs), 32, 32, 3)
    assert C.crops(segs, train.mean, size=(16, 16)).shape == (len(segs), 16, 16, 3)


def test_acceptance_rules_of_ace():
    s = C.ACESettings(discovery_images=40, min_cluster_size=20, concept_size=5)
    image_of = np.concatenate([np.arange(30), np.zeros(30, int), np.arange(12).repeat(2)])
    assign = np.repeat([0, 1, 2], [30, 30, 24])
    distance = np.arange(len(assign), dtype=float)[::-1]
    kept = C.accept_clusters(assign, distance, image_of, s)
    # cluster 0: 30 distinct of 30 -> kept; cluster 1: one image -> dropped;
    # cluster 2: 12 distinct of 24 (not > half; > a quarter and > 10 = 0.25 * 40) -> kept.
    assert [sorted(k.tolist()) for k in kept] == [list(range(25, 30)), list(range(79, 84))]


def null_world(seed, n_sets, set_size=20, dim=16):
    """Random 'patch' activations: every set drawn from the same distribution."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(set_size, dim, generator=g) + 0.5 for _ in range(n_sets)]


def test_calibrated_test_passes_fresh_null_concepts_at_its_nominal_rate():
    settings = C.ACESettings()  # level 0.05
    g = torch.Generator().manual_seed(0)
    grads = torch.randn(50, 16, generator=g) + torch.linspace(-1, 1, 16)  # a class's gradients
    negatives = null_world(1, 10)

    def mean_tcav(concept, seed):
        return float(C.tcav_scores(grads, C.train_cavs(concept, negatives, 0.01, seed)[0]).mean())

    calibration = torch.tensor([mean_tcav(c, i) for i, c in enumerate(null_world(2, 50))])
    fresh = [mean_tcav(c, 100 + i) for i, c in enumerate(null_world(3, 50))]
    passed = sum(C.null_p(m, calibration) <= settings.level for m in fresh)
    assert passed <= 5  # at most 10 % of 50 at the 5 % level
    important = torch.randn(20, 16, generator=g) + 0.5 + 3 * torch.linspace(-1, 1, 16)
    assert C.null_p(mean_tcav(important, 999), calibration) <= settings.level
    loo = C.false_positive_rates(calibration, torch.ones(50), settings)
    assert loo["null"] <= 0.1 and loo["ttest"] == 0.0


def test_ttest_matches_scipy_and_handles_identical_scores():
    from scipy import stats

    a, b = torch.tensor([0.9, 0.8, 1.0, 0.7]), torch.tensor([0.5, 0.6, 0.4, 0.6])
    assert C.ttest_p(a, b) == pytest.approx(stats.ttest_rel(a.numpy(), b.numpy()).pvalue)
    assert C.ttest_p(b, b) == 1.0


@pytest.fixture(scope="module")
def synthetic_concepts(tmp_path_factory):
    """Tiny trained net on the synthetic set; discovery cached in a temporary directory."""
    from opai_lib.config import Recipe
    from opai_lib.train import train

    mp = pytest.MonkeyPatch()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: threads only cost, most under a loaded CPU
    mp.setenv("OPAI_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    train_set = data.synthetic(train=True)
    model = models.get_model("tiny", seed=0)
    train(model, data.batches(train_set, 64, train=True, seed=0),
          Recipe(epochs=2, batch_size=64, lr=0.05, schedule="constant"), progress=False)
    clf = C.Classifier(model.eval(), "bn1", (train_set.mean, train_set.std), "tiny")
    settings = C.ACESettings(**TINY)
    found = C.discover(clf, train_set, [0, 1], settings, seed=0)
    yield clf, train_set, settings, found
    mp.undo()
    torch.set_num_threads(threads)


def test_discovery_ranks_concepts_and_keeps_tcav_images_apart(synthetic_concepts):
    clf, train_set, settings, found = synthetic_concepts
    for k, cc in found.classes.items():
        assert cc.concepts, f"no concept for class {k}"
        means = [c.mean_tcav for c in cc.concepts]
        assert means == sorted(means, reverse=True)
        for c in cc.concepts:
            assert len(c.members) <= settings.concept_size and c.tcav.shape == (3,)
            assert 0 < c.null_p <= 1 and 0 <= c.ttest_p <= 1
        assert cc.null_means.shape == (settings.num_null,)
        tcav_idx, disc_idx = C.class_images(train_set, k, settings, 0, 0)
        assert not set(tcav_idx) & set(disc_idx)
        assert (train_set.labels[disc_idx] == k).all()
        assert torch.equal(cc.segments.images, train_set.images[disc_idx])


def test_discovery_is_cached_and_deterministic(synthetic_concepts, tmp_path, monkeypatch):
    clf, train_set, settings, found = synthetic_concepts
    again = C.discover(clf, train_set, [0, 1], settings, seed=0)  # from the cache
    assert [c.mean_tcav for c in again.classes[0].concepts] == \
        [c.mean_tcav for c in found.classes[0].concepts]
    monkeypatch.setenv("OPAI_CACHE_DIR", str(tmp_path))
    fresh = C.discover(clf, train_set, [0], settings, seed=0)  # recomputed, same seed
    assert [c.members.tolist() for c in fresh.classes[0].concepts] == \
        [c.members.tolist() for c in found.classes[0].concepts]
    assert len(list((tmp_path / "concepts").glob("*.pt"))) == 2  # bank + class 0
    other = C.discover(clf, train_set, [0], settings, seed=1)
    assert other.classes[0].segments.images.shape == fresh.classes[0].segments.images.shape
    assert not torch.equal(other.classes[0].segments.images, fresh.classes[0].segments.images)


def test_discover_validates_before_compute(synthetic_concepts):
    clf, train_set, settings, _ = synthetic_concepts
    with pytest.raises(ValueError, match="classes"):
        C.discover(clf, train_set, [10], settings)
    with pytest.raises(ValueError, match="needs 72 images"):
        C.discover(clf, train_set, [0], C.ACESettings(**{**TINY, "discovery_images": 64}))


@pytest.fixture
def no_compute(monkeypatch):
    """Every expensive step of discovery raises: a ValueError proves the check came first."""
    def computed(*args, **kwargs):
        raise RuntimeError("computed")

    for step in ("class_gradients", "segment_images", "build_random_bank", "activations",
                 "default_classifier"):
        monkeypatch.setattr(C, step, computed)


ARGUMENT_ERRORS = [
    (dict(classes=[10]), r"classes must be class indices in 0\.\.9, got \[10\]"),
    (dict(classes=[-1]), r"classes must be class indices in 0\.\.9"),
    (dict(classes=[1.0]), "classes must be class indices"),
    (dict(classes=[True]), "classes must be class indices"),
    (dict(classes=[]), "classes must be class indices"),
    (dict(classes=3), "classes must be a list of class indices, got 3"),
    (dict(seed=1.5), "seed must be an integer >= 0, got 1.5"),
    (dict(seed=-1), "seed must be an integer >= 0, got -1"),
    (dict(split=-1), "split must be an integer >= 0, got -1"),
    (dict(split=7), r"every class needs \d+ images .*; class 0 has only 64"),
]


@pytest.mark.parametrize(("kwargs", "message"), ARGUMENT_ERRORS + [
    (dict(settings=C.ACESettings(**{**TINY, "concept_size": 40, "num_null": 20})),
     r"random bank needs 800 images .* the dataset has 560"),
    (dict(settings=C.ACESettings(**{**TINY, "num_negatives": 99})),
     r"random bank needs 600 images .* the dataset has 560"),
])
def test_every_discovery_argument_is_checked_before_compute(kwargs, message, no_compute):
    train = data.synthetic(train=True)
    clf = C.Classifier(models.get_model("tiny", seed=0).eval(), "bn1", NORM, "tiny")
    args = dict(classes=[0], settings=C.ACESettings(**TINY), seed=0, split=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        C.discover(clf, train, **args)


@pytest.mark.parametrize(("kwargs", "message"), ARGUMENT_ERRORS)
def test_discover_default_checks_before_training_its_classifier(kwargs, message, no_compute):
    with pytest.raises(ValueError, match=message):
        C.discover_default(data.synthetic(train=True), **kwargs)


def test_classifier_must_fit_the_images_and_classes(no_compute):
    train = data.synthetic(train=True)
    settings = C.ACESettings(**TINY)
    five = C.Classifier(models.get_model("tiny", num_classes=5).eval(), "bn1", NORM, "five")
    with pytest.raises(ValueError, match=r"class 7 has no logit: classifier 'five' has 5 "
                                         r"outputs; allowed classes: 0\.\.4"):
        C.discover(five, train, [0, 7], settings)
    gray = C.Classifier(models.TinyConvNet(in_channels=1).eval(), "bn1", NORM, "gray")
    with pytest.raises(ValueError, match="images have 3 channels; classifier 'gray' takes 1"):
        C.discover(gray, train, [0], settings)
    with pytest.raises(ValueError, match="discovery needs an ImageSet or ImageFolderSet"):
        C.discover(five, "train", [0], settings)
    with pytest.raises(ValueError, match="discovery needs an ImageSet or ImageFolderSet"):
        C.discover_default("train")
    with pytest.raises(ValueError, match=r"classes must be class indices in 0\.\.9"):
        C.discover_class(five, train, 12, None, settings, seed=0)


def fake_concept(label, direction, mean_tcav=0.5):
    return C.Concept(label, torch.arange(3), torch.zeros(2), torch.tensor(direction),
                     torch.full((4,), mean_tcav), 0.8, 0.5, 0.5)


def fake_set(directions_by_class, settings=None):
    segs = C.Segments(torch.zeros(1, 4, 4, 3, dtype=torch.uint8),
                      torch.ones(3, 4, 4, dtype=torch.bool), torch.zeros(3, dtype=torch.long),
                      torch.zeros(3, dtype=torch.long))
    classes = {k: C.ClassConcepts(k, segs, [fake_concept(k, d, 1 - i / 10)
                                            for i, d in enumerate(dirs)],
                                  torch.zeros(50), torch.ones(50), torch.zeros(4))
               for k, dirs in directions_by_class.items()}
    return C.ConceptSet(settings or C.ACESettings(), "fake", "l", "d", (0.5,) * 3, classes)


def test_shared_direction_is_the_mean_pairwise_cosine():
    found = fake_set({0: [[1.0, 0.0], [0.0, 1.0]], 1: [[1.0, 0.0]]})
    assert C.shared_direction(found) == pytest.approx((0 + 1 + 0) / 3)


def test_stability_finds_the_same_top_concepts():
    a = fake_set({0: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]})
    b = fake_set({0: [[0.0, 0.99, 0.1], [0.99, 0.0, 0.1], [0.1, 0.1, 0.99]]})
    same = C.stability([a, b], 0, n=2, test="none")
    assert same["agreement"] == 1.0 and same["chance"] == pytest.approx(2 / 3)
    c = fake_set({0: [[0.0, 0.0, 1.0], [0.1, 0.0, 0.99], [0.99, 0.1, 0.0]]})
    moved = C.stability([a, c], 0, n=2, test="none")
    assert moved["agreement"] == 0.0  # the top concepts of a are the last one of c


def test_concept_set_queries_check_label_n_and_test_first():
    found = fake_set({0: [[1.0, 0.0]], 1: []})
    for call in (lambda: found.top(3), lambda: C.stability([found, found], 3),
                 lambda: C.classifier_agreement(None, found, 3)):
        with pytest.raises(ValueError, match=r"no concepts discovered for class 3; have \[0, 1\]"):
            call()
    with pytest.raises(ValueError, match="test must be one of .*, got 'nul'"):
        found.top(1, 5, "nul")  # class 1 has no concept: nothing else would notice
    with pytest.raises(ValueError, match="n must be an integer >= 1, got 0"):
        found.top(0, 0)


def test_a_damaged_concept_cache_is_moved_aside_and_rebuilt(tmp_path):
    from opai_lib.concepts import _cache_load_or_build

    path = tmp_path / "class3.pt"
    path.write_bytes(b"PK\x03\x04 not a whole archive")
    with pytest.warns(UserWarning, match="class3.pt is unreadable"):
        assert _cache_load_or_build(path, lambda: {"built": 1}, use_cache=True) == {"built": 1}
    assert len(list(tmp_path.glob("class3.pt.corrupt-*"))) == 1
    assert _cache_load_or_build(path, lambda: {"built": 2}, use_cache=True) == {"built": 1}


def test_synthetic_classifier_is_trained_once_per_cache_folder(monkeypatch, tmp_path):
    """A second process (an empty in-process memo) reads the trained net back, bit for bit;
    a damaged cache file is moved aside and the net trained again."""
    monkeypatch.setenv("OPAI_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(C, "_TRAINED", {})
    train = data.synthetic(train=True, per_class=8)
    first = C.default_classifier(train)
    monkeypatch.setattr(C, "_TRAINED", {})
    monkeypatch.setattr(C, "_synthetic_classifier", lambda d: pytest.fail("trained again"))
    again = C.default_classifier(train)
    assert again is not first and (again.name, again.layer) == (first.name, first.layer)
    kept = again.model.state_dict()
    assert all(torch.equal(t, kept[name]) for name, t in first.model.state_dict().items())
    [path] = (data.cache_dir() / "classifiers").glob("synthetic-tiny-*.pt")
    path.write_bytes(b"torn")
    monkeypatch.setattr(C, "_TRAINED", {})
    monkeypatch.setattr(C, "_synthetic_classifier", lambda d: first)
    with pytest.warns(UserWarning, match=path.name):
        assert C.default_classifier(train) is first

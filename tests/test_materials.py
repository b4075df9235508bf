"""Materials: shapes, labels and seeds as requested; Super Stitching reaches its coverage."""

import numpy as np
import pytest
import torch

from opai_lib import concepts as C
from opai_lib import data
from opai_lib.materials import MATERIALS, make_material, stitch


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Synthetic training set and its default concepts (tiny net trained on it, cached in a
    temporary directory); TCAV is noise there, so its materials use no test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: threads only cost, most under a loaded CPU
    mp = pytest.MonkeyPatch()
    mp.setenv("OPAI_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    train = data.synthetic(train=True)
    found = C.discover_default(train)
    assert found.settings.material_test == "none"
    yield train, found
    mp.undo()
    torch.set_num_threads(threads)


def normalised(train, images):
    mean = torch.tensor(train.mean).view(1, -1, 1, 1)
    std = torch.tensor(train.std).view(1, -1, 1, 1)
    return (images.permute(0, 3, 1, 2).float() / 255 - mean) / std


@pytest.mark.parametrize("name", ["image", "dop", "stitch", "all_ones", "random_segment"])
def test_shapes_labels_and_seeds(world, name):
    train, found = world
    x, y = make_material(name, train, per_class=3, seed=0, concepts=found, test="none")
    assert x.shape == (30, 3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(y, torch.arange(10).repeat_interleave(3))
    x_again, _ = make_material(name, train, per_class=3, seed=0, concepts=found, test="none")
    assert torch.equal(x, x_again)
    if name != "all_ones":
        x_other, _ = make_material(name, train, per_class=3, seed=1, concepts=found)
        assert not torch.equal(x, x_other)


def test_less_patch_has_one_per_class(world):
    train, found = world
    x, y = make_material("less_patch", train, per_class=10, seed=0, concepts=found, test="none")
    assert x.shape == (10, 3, 32, 32) and torch.equal(y, torch.arange(10))
    best = [found.top(k, 1, "none")[0] for k in range(10)]
    x, _ = make_material("less_patch", train, per_class=1, seed=0, concepts=found, test="none",
                    augment=False)
    for k, concept in enumerate(best):
        members = found.classes[k].segments.subset(concept.members)
        candidates = normalised(train, C.patches(members, train.mean))
        assert (candidates - x[k]).abs().flatten(1).amax(1).min() < 1e-5


def test_all_ones_is_ones(world):
    train, found = world
    x, _ = make_material("all_ones", train, per_class=2, seed=0)
    assert torch.equal(x, torch.ones(20, 3, 32, 32))


def test_image_material_is_balanced_training_images(world):
    train, _ = world
    x, y = make_material("image", train, per_class=4, seed=3, augment=False)
    idx = data.balanced_indices(train.labels, 4, 3)
    torch.testing.assert_close(x, normalised(train, train.images[idx]))
    assert torch.equal(y, train.labels[idx])


def test_dop_draws_evenly_from_the_top_concepts(world):
    train, found = world
    x, y = make_material("dop", train, per_class=10, seed=0, concepts=found, test="none", top=5,
                    augment=False)
    for k in range(10):
        top = found.top(k, 5, "none")
        members = [normalised(train, C.patches(found.classes[k].segments.subset(c.members),
                                               train.mean)) for c in top]
        owner = []
        for img in x[y == k]:
            dist = [(m - img).abs().flatten(1).amax(1).min().item() for m in members]
            owner.append(int(np.argmin(dist)))
            assert min(dist) < 1e-5  # every patch is a member of a top concept, unchanged
        counts = np.bincount(owner, minlength=len(top))
        assert counts.max() - counts.min() <= 1


def test_random_segment_uses_segments_of_the_class(world):
    train, found = world
    x, y = make_material("random_segment", train, per_class=5, seed=0, concepts=found,
                    augment=False)
    for k in range(10):
        pool = normalised(train, C.patches(found.classes[k].segments, train.mean))
        for img in x[y == k]:
            assert (pool - img).abs().flatten(1).amax(1).min() < 1e-5


def painted_segments(masks):
    """Segments of white images (255) whose fill is black: covered pixels are visible."""
    n = len(masks)
    images = torch.full((n, *masks.shape[1:], 3), 255, dtype=torch.uint8)
    images[:, :, :, 0] = torch.arange(n).view(n, 1, 1) * 10  # tell the sources apart
    return C.Segments(images, masks, torch.arange(n), torch.zeros(n, dtype=torch.long))


@pytest.mark.parametrize("sigma", [0.5, 0.75])
def test_every_stitched_image_reaches_coverage_sigma(world, sigma):
    train, found = world
    fill = C.fill_value(train.mean)
    for k in range(10):
        cc = found.classes[k]
        ascending = [c.members for c in reversed(found.top(k, 5, "none"))]
        for seed in range(5):
            canvas, r = stitch(cc.segments, ascending, sigma, fill, np.random.default_rng(seed))
            assert r >= sigma
    # Independent check on segments whose pixels never equal the fill.
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(30, 16, 16, generator=g) < 0.1
    segs = painted_segments(masks)
    for seed in range(10):
        canvas, r = stitch(segs, [torch.arange(0, 15), torch.arange(15, 30)], sigma,
                           torch.zeros(3, dtype=torch.uint8), np.random.default_rng(seed))
        visible = (canvas != 0).any(-1).float().mean().item()
        assert visible == pytest.approx(r) and r >= sigma


def test_stitching_pastes_important_concepts_last():
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[:, :6] = True  # the same pixels: the later paste wins
    segs = painted_segments(masks)
    canvas, r = stitch(segs, [torch.tensor([0]), torch.tensor([1])], 0.5,
                       torch.zeros(3, dtype=torch.uint8), np.random.default_rng(0))
    assert r == 0.75 and (canvas[:6, :, 0] == 10).all()  # segment 1, the important concept


def test_stitching_that_cannot_reach_sigma_is_an_error():
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[:, :2] = True
    with pytest.raises(ValueError, match="cover only 0.25"):
        stitch(painted_segments(masks), [torch.tensor([0]), torch.tensor([1])], 0.5,
               torch.zeros(3, dtype=torch.uint8), np.random.default_rng(0))


def test_default_concepts_come_from_the_cache(world):
    train, found = world
    x, _ = make_material("dop", train, per_class=2, seed=0, augment=False)  # discover_default
    y, _ = make_material("dop", train, per_class=2, seed=0, concepts=found, augment=False)
    assert torch.equal(x, y)


def test_a_class_without_significant_concepts_is_an_error(world):
    train, found = world
    empty = [k for k in range(10) if not found.top(k, 5, "null")]
    if not empty:
        pytest.skip("every class has a concept passing the null test")
    with pytest.raises(ValueError, match="no concept passing the 'null' test"):
        make_material("dop", train, 2, 0, concepts=found, test="null")


def test_arguments_are_validated_before_compute(world):
    train, found = world
    assert MATERIALS.names() == ["all_ones", "dop", "gaussian", "image", "less_patch",
                                 "random_labels", "random_segment", "shuffled_pixels", "stitch"]
    with pytest.raises(ValueError, match="unknown material 'photos'.*stitch"):
        make_material("photos", train, 2, 0)
    with pytest.raises(ValueError, match="per_class must be an integer >= 1, got 0"):
        make_material("image", train, 0, 0)
    with pytest.raises(ValueError, match="sigma"):
        make_material("stitch", train, 2, 0, concepts=found, sigma=1.5)
    with pytest.raises(ValueError, match="test must be"):
        make_material("dop", train, 2, 0, concepts=found, test="chi2")
    partial = C.ConceptSet(found.settings, found.classifier, found.layer, found.dataset,
                           found.mean, {0: found.classes[0]})
    with pytest.raises(ValueError, match=r"lacks classes \[1, 2"):
        make_material("dop", train, 2, 0, concepts=partial)


def test_controls_keep_what_they_should_and_break_what_they_should():
    train = data.synthetic(train=True)
    x, y = make_material("image", train, 3, seed=5)
    xl, yl = make_material("random_labels", train, 3, seed=5)
    assert torch.equal(xl, x)  # the same images
    assert sorted(yl.tolist()) == sorted(y.tolist()) and not torch.equal(yl, y)
    xs, ys = make_material("shuffled_pixels", train, 3, seed=5)
    assert torch.equal(ys, y) and not torch.equal(xs, x)
    for a, b in zip(xs, x, strict=True):  # each image: its own pixels (C values together)
        rows_a = torch.unique(a.flatten(1).T, dim=0, return_counts=True)
        rows_b = torch.unique(b.flatten(1).T, dim=0, return_counts=True)
        assert all(torch.equal(p, q) for p, q in zip(rows_a, rows_b, strict=True))
    xg, yg = make_material("gaussian", train, 3, seed=5)
    assert xg.shape == x.shape and torch.equal(yg, y)
    big, _ = make_material("gaussian", train, 40, seed=1)
    assert abs(big.mean().item()) < 0.02 and abs(big.std().item() - 1) < 0.02
    again, _ = make_material("gaussian", train, 3, seed=5)
    assert torch.equal(again, xg)
    other, _ = make_material("gaussian", train, 3, seed=6)
    assert not torch.equal(other, xg)

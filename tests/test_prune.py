"""Selection, schedules, layer collapse and prune_at_init."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from opai_lib import criteria, data, masks, models, prune

SPARSITIES = [0.0, 0.001, 0.1, 0.25, 1 / 3, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999]


def tied_scores(seed=0):
    """Scores of four layers with few distinct values, so most scores tie."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(16, 3, 3, 3), (32, 16, 3, 3), (32, 32, 1, 1), (10, 32)]
    return {f"l{i}.weight": torch.randint(0, 4, s, generator=g).float()
            for i, s in enumerate(shapes)}


def kept(mask):
    return sum(int(m.sum()) for m in mask.values())


def material(per_class=2):
    return prune.scoring_batches(data.synthetic(train=True, per_class=8), per_class, seed=0)


@pytest.mark.parametrize("scope", prune.SCOPES)
def test_exactly_round_of_density_times_n_kept_with_tied_scores(scope):
    scores = tied_scores()
    n = sum(s.numel() for s in scores.values())
    for s in SPARSITIES:
        mask = prune.select(scores, s, scope, seed=1)
        assert kept(mask) == round((1 - s) * n), (scope, s)


def test_global_selection_keeps_the_highest_scores_and_breaks_ties_by_seed():
    scores = tied_scores()
    mask = prune.select(scores, 0.7, "global", seed=0)
    flat_s = torch.cat([s.flatten() for s in scores.values()])
    flat_m = torch.cat([m.flatten() for m in mask.values()])
    assert flat_s[flat_m].min() >= flat_s[~flat_m].max()
    again = prune.select(scores, 0.7, "global", seed=0)
    other = prune.select(scores, 0.7, "global", seed=1)
    assert all(torch.equal(mask[n], again[n]) for n in mask)
    assert not all(torch.equal(mask[n], other[n]) for n in mask)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_selection_in_every_float_type_cuts_at_the_sorted_kth_score(dtype):
    # independent of the selection's own search: the k-th largest from a full sort; every
    # score above it kept, none below, exactly k in all (ties at the cut, -inf never kept)
    g = torch.Generator().manual_seed(0)
    scores = {"a": (torch.rand(3000, generator=g) * 50).floor().to(dtype),
              "b": torch.randn(40, 9, generator=g).to(dtype)}
    scores["b"][0] = -math.inf
    flat = torch.cat([v.flatten() for v in scores.values()]).double()
    for sparsity in (0.1, 0.5, 0.93):
        k = round((1 - sparsity) * flat.numel())
        cut = flat.sort(descending=True).values[k - 1]
        keep = torch.cat([m.flatten() for m in prune.select(scores, sparsity).values()])
        assert int(keep.sum()) == k and bool(keep[flat > cut].all())
        assert not bool(keep[flat < cut].any())


def test_a_budget_beyond_the_finite_scores_keeps_them_all_and_draws_the_rest():
    # most scores -inf (an iterative criterion's pruned weights): below their count every
    # kept score is finite; above it all finite ones are kept and seeded -inf fill the rest
    g = torch.Generator().manual_seed(1)
    scores = {"a": torch.rand(1000, generator=g)}
    scores["a"][torch.randperm(1000, generator=g)[:900]] = -math.inf
    finite = scores["a"] > -math.inf
    for sparsity, k in ((0.95, 50), (0.9, 100), (0.7, 300)):
        keep = prune.select(scores, sparsity, seed=3)["a"]
        assert int(keep.sum()) == k
        assert bool(keep[finite].all()) if k >= 100 else not bool(keep[~finite].any())
    assert not torch.equal(prune.select(scores, 0.7, seed=3)["a"],
                           prune.select(scores, 0.7, seed=4)["a"])


@pytest.mark.parametrize("scope", ["global", "layerwise", "erk"])
def test_weights_outside_within_count_as_minus_infinity(scope):
    """``within`` is the -inf fill done by hand, ties and budgets past the alive weights
    included; a layer ``within`` does not name is all alive."""
    g = torch.Generator().manual_seed(2)
    scores = {"a": torch.randint(0, 4, (40, 30), generator=g).float(),
              "b": torch.rand(300, generator=g), "c": torch.rand(50, generator=g)}
    scores["b"][:7] = -math.inf  # -inf of its own, inside the alive weights
    within = {"a": torch.rand(40, 30, generator=g) < 0.2, "b": torch.rand(300, generator=g) < 0.5}
    filled = {n: s.masked_fill(~within[n], -math.inf) if n in within else s
              for n, s in scores.items()}
    for sparsity in (0.5, 0.8, 0.97):
        for seed in (0, 1):
            got = prune.select(scores, sparsity, scope, seed, within=within)
            expected = prune.select(filled, sparsity, scope, seed)
            assert all(torch.equal(got[n], expected[n]) for n in scores), (sparsity, seed)
    # past the alive weights (0.5 keeps 775 of 1550, about 440 alive): all of them kept
    kept = prune.select(scores, 0.5, "global", 0, within=within)
    assert sum(int((within[n] & (scores[n] > -math.inf)).sum()) for n in within) + 50 < 775
    assert all(bool(kept[n][within[n] & (scores[n] > -math.inf)].all()) for n in within)


def test_ties_are_not_broken_by_position():
    """All-equal scores: each position is kept about as often as the density."""
    scores = {"a": torch.zeros(40), "b": torch.zeros(60)}
    freq = sum(torch.cat([m.float() for m in prune.select(scores, 0.5, seed=s).values()])
               for s in range(200)) / 200
    assert 0.35 < float(freq[:50].mean()) < 0.65 and 0.35 < float(freq[50:].mean()) < 0.65


def test_layerwise_selection_keeps_each_layers_share_and_its_best():
    scores = tied_scores()
    mask = prune.select(scores, 0.9, "layerwise", seed=0)
    for n, s in scores.items():
        assert abs(int(mask[n].sum()) - 0.1 * s.numel()) <= 1
        assert s[mask[n]].min() >= s[~mask[n]].max()


def test_erk_densities_match_their_formula():
    shapes = {"conv1": (16, 3, 3, 3), "conv2": (32, 16, 3, 3), "conv3": (64, 32, 3, 3),
              "fc": (10, 64)}
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    n_total = sum(sizes.values())
    for kind, raw in (("erk", lambda s: sum(s) / math.prod(s)),
                      ("er", lambda s: (s[0] + s[1]) / (s[0] * s[1]))):
        for density in (0.05, 0.1, 0.3):
            d = prune.erk_densities(shapes, density, kind)
            dense = [n for n in shapes if d[n] == 1.0]
            rest = [n for n in shapes if n not in dense]
            eps = (density * n_total - sum(sizes[n] for n in dense)) / \
                sum(raw(shapes[n]) * sizes[n] for n in rest)
            for n in rest:
                assert d[n] == pytest.approx(eps * raw(shapes[n]))
                assert d[n] < 1
            assert sum(d[n] * sizes[n] for n in shapes) == pytest.approx(density * n_total)
    # At density 0.3 ERK would give conv1 more than 1: it is dense, the others share the rest.
    assert prune.erk_densities(shapes, 0.3, "erk")["conv1"] == 1.0
    budgets = prune.layer_budgets(shapes, 0.1, "erk")
    d = prune.erk_densities(shapes, 0.1, "erk")
    assert all(abs(budgets[n] - d[n] * sizes[n]) < 1 for n in shapes)
    assert sum(budgets.values()) == round(0.1 * n_total)


def test_schedules_end_exactly_at_the_target():
    d = prune.schedule_densities(0.01, 4)
    assert d == pytest.approx([0.01 ** 0.25, 0.01 ** 0.5, 0.01 ** 0.75, 0.01]) and d[-1] == 0.01
    assert prune.schedule_densities(0.2, 4, "linear") == pytest.approx([0.8, 0.6, 0.4, 0.2])
    assert prune.schedule_densities(0.3, 1) == [0.3]


@pytest.mark.parametrize("name", ["force", "iter_snip", "synflow"])
def test_iterative_criteria_reach_the_target_exactly(name):
    net = models.get_model("tiny", width=0.5, seed=0)
    n = sum(p.numel() for p in models.prunable(net).values())
    for s in (0.5, 0.9, 0.97):
        mask = prune.prune_at_init(net, name, material(), s, seed=0, rounds=5,
                                   on_collapse="allow")
        assert kept(mask) == round((1 - s) * n)


def test_iterative_snip_never_revives_a_pruned_weight():
    """With two rounds, round one's mask at density sqrt(d) contains round two's."""
    net, batches = models.get_model("tiny", width=0.5, seed=0), material()
    first = prune.prune_at_init(net, "iter_snip", batches, 1 - 0.3, seed=0, rounds=1)
    second = prune.prune_at_init(net, "iter_snip", batches, 1 - 0.09, seed=0, rounds=2)
    assert all(not (second[n] & ~first[n]).any() for n in first)


def test_same_seed_same_mask():
    net, batches = models.get_model("tiny", width=0.5, seed=0), material()
    for name in criteria.CRITERIA.names():
        a = prune.prune_at_init(net, name, batches, 0.8, seed=3, rounds=2, on_collapse="allow")
        b = prune.prune_at_init(net, name, batches, 0.8, seed=3, rounds=2, on_collapse="allow")
        assert all(torch.equal(a[n], b[n]) for n in a), name
    c = prune.prune_at_init(net, "random", None, 0.8, seed=4)
    assert not all(torch.equal(a[n], c[n]) for n in a)


def test_prune_at_init_leaves_model_and_global_rng_alone():
    net = models.get_model("tiny", width=0.5, seed=0)
    before = copy.deepcopy(net.state_dict())
    rng = torch.get_rng_state()
    for name in criteria.CRITERIA.names():
        prune.prune_at_init(net, name, material(), 0.8, seed=0, rounds=2, on_collapse="allow")
    assert torch.equal(rng, torch.get_rng_state())
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert all(p.grad is None and p.requires_grad for p in net.parameters())


def test_random_criterion_layouts():
    net = models.get_model("resnet20", width=0.25, seed=0)
    n = {k: p.numel() for k, p in models.prunable(net).items()}
    uniform = masks.density(prune.prune_at_init(net, "random", None, 0.9, seed=0))
    assert all(abs(uniform[k] - 0.1) <= 1 / n[k] for k in n)
    erk = prune.prune_at_init(net, "random", None, 0.9, seed=0, scope="erk")
    expected = prune.layer_budgets({k: p.shape for k, p in models.prunable(net).items()},
                                   0.1, "erk")
    assert {k: int(m.sum()) for k, m in erk.items()} == expected


def test_first_and_last_layer_can_stay_dense():
    net = models.get_model("tiny", width=0.5, seed=0)
    mask = prune.prune_at_init(net, "magnitude", None, 0.5, first_layer=False, last_layer=False)
    assert list(mask) == ["conv2.weight"]


def test_snip_collapses_a_layer_at_99_percent_where_iterative_synflow_does_not():
    """Tanaka et al. 2020: single-shot saliencies empty whole layers at extreme sparsity;
    SynFlow's iterative conservation keeps every layer. (Single-shot SynFlow collapses too.)"""
    batches = material(4)
    for seed in range(3):
        net = models.get_model("tiny", width=0.5, seed=seed)
        with pytest.raises(ValueError, match="layer collapse"):
            prune.prune_at_init(net, "snip", batches, 0.99, seed=0)
        mask = prune.prune_at_init(net, "synflow", None, 0.99, seed=0)
        assert not masks.empty_layers(mask)
        single = prune.prune_at_init(net, "synflow", None, 0.99, rounds=1, on_collapse="allow")
        assert masks.empty_layers(single)


def test_repair_gives_each_empty_layer_one_weight_and_keeps_the_count():
    net, batches = models.get_model("tiny", width=0.5, seed=0), material(4)
    collapsed = prune.prune_at_init(net, "snip", batches, 0.99, on_collapse="allow")
    repaired = prune.prune_at_init(net, "snip", batches, 0.99, on_collapse="repair")
    assert masks.empty_layers(collapsed) and not masks.empty_layers(repaired)
    assert kept(repaired) == kept(collapsed)
    for n in masks.empty_layers(collapsed):
        assert int(repaired[n].sum()) == 1


def test_density_report():
    mask = prune.select(tied_scores(), 0.9, "global", seed=0)
    table = prune.density_report(mask)
    assert list(table.index) == [*mask, "total"]
    d = masks.density(mask)
    assert np.allclose(table["density"], [d[n] for n in mask] + [d["total"]])


def test_scoring_batches_are_class_balanced_and_distinct():
    images = data.synthetic(train=True, per_class=8)
    batches = prune.scoring_batches(images, per_class=3, num_batches=2, seed=0)
    assert len(batches) == 2
    for x, y in batches:
        assert x.shape == (30, 3, 32, 32) and torch.equal(torch.bincount(y), torch.full((10,), 3))
    assert not torch.equal(batches[0][0], batches[1][0])
    again = prune.scoring_batches(images, per_class=3, num_batches=2, seed=0)
    assert torch.equal(batches[1][0], again[1][0])


class Exploding(nn.Module):
    """A model whose forward pass fails: a ValueError proves validation came first."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        raise RuntimeError("computed")


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(criterion="snp"), r"unknown criterion 'snp'; choose one of \[.*'snip'"),
    (dict(sparsity=1.0), r"sparsity must be a float in \[0, 1\), got 1.0"),
    (dict(sparsity=-0.1), "sparsity must be a float"),
    (dict(sparsity="0.9"), "sparsity must be a float"),
    (dict(sparsity=True), "sparsity must be a float"),
    (dict(seed=1.5), "seed must be an integer"),
    (dict(scope="local"), "SnipOptions.scope must be one of"),
    (dict(rounds=0), "SnipOptions.rounds = 0; allowed: an integer >= 1"),
    (dict(schedule="cosine"), "schedule must be one of"),
    (dict(on_collapse="ignore"), "on_collapse must be one of"),
    (dict(temprature=100), r"unknown option\(s\) \['temprature'\] of SnipOptions"),
    (dict(options=criteria.GraspOptions()), "options of 'snip' must be one SnipOptions"),
    (dict(material=None), "needs material"),
    (dict(material=[]), "material holds no batch"),
    (dict(material=(torch.zeros(3, 4), torch.zeros(2).long())), "material batch 0"),
    (dict(material=5), "material must be"),
])
def test_bad_input_fails_before_compute(kwargs, message):
    args = dict(criterion="snip", material=(torch.zeros(3, 4), torch.zeros(3).long()),
                sparsity=0.5, seed=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        prune.prune_at_init(Exploding(), **args)


class ExplodingConvNet(nn.Module):
    """Three input channels, ten classes; its forward pass fails (validation comes first)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 10))

    def forward(self, x):
        raise RuntimeError("computed")


GOOD = (torch.zeros(4, 3, 8, 8), torch.tensor([0, 3, 9, 9]))


@pytest.mark.parametrize(("material", "message"), [
    ((torch.zeros(4, 1, 8, 8), GOOD[1]),
     r"material batch 0: x of shape \(4, 1, 8, 8\) has 1 channels; allowed: 3"),
    ([GOOD, (GOOD[0], torch.tensor([0, 1, 10, 2]))],
     r"material batch 1: label 10; allowed: 0\.\.9 \(the model's 10 outputs\)"),
    ((GOOD[0], torch.tensor([0, -1, 2, 3])), r"material batch 0: label -1; allowed: 0\.\.9"),
    ((torch.zeros(0, 3, 8, 8), torch.zeros(0).long()), "material batch 0 .* B >= 1"),
])
def test_material_is_checked_against_the_model_before_compute(material, message):
    with pytest.raises(ValueError, match=message):
        prune.prune_at_init(ExplodingConvNet(), "snip", material, 0.5)
    with pytest.raises(RuntimeError, match="computed"):  # a good batch reaches the model
        prune.prune_at_init(ExplodingConvNet(), "snip", GOOD, 0.5)


def test_scoring_batches_name_a_class_without_images():
    images = data.synthetic(train=True, per_class=8)
    images = images.subset(torch.nonzero(images.labels != 9).flatten())
    with pytest.raises(ValueError, match="class 9 has only 0 images"):
        prune.scoring_batches(images, per_class=2)


@pytest.mark.parametrize("name, options", [("snip", {}), ("grasp", {}), ("random", {}),
                                           ("synflow", {"rounds": 3}),
                                           ("iter_snip", {"rounds": 3})])
def test_masks_at_several_sparsities_are_the_masks_one_by_one(name, options):
    net, batches = models.get_model("tiny", width=0.5, seed=0), material()
    data = None if name in ("random", "synflow") else batches
    sparsities = [0.3, 0.6, 0.8]
    several = prune.masks_at_init(net, name, data, sparsities, seed=3, **options)
    assert list(several) == sparsities
    for s in sparsities:
        one = prune.prune_at_init(net, name, data, s, seed=3, **options)
        assert all(torch.equal(one[k], several[s][k]) for k in one), s


def test_masks_at_init_checks_its_sparsities():
    net = models.get_model("tiny", width=0.5, seed=0)
    with pytest.raises(ValueError, match="at least one"):
        prune.masks_at_init(net, "random", None, [])
    with pytest.raises(ValueError, match="sparsity"):
        prune.masks_at_init(net, "random", None, [0.5, 1.5])


def test_material_masks_differ_only_by_the_draw():
    from opai_lib import anatomy, data
    from opai_lib.materials import Material

    net = models.get_model("tiny", width=0.5, seed=0)
    train = data.synthetic(train=True)
    got = anatomy.material_masks(net, "snip", Material("image", per_class=2), "synthetic",
                                 train, draws=[0, 1, 0], sparsities=[0.3, 0.6])
    assert list(got) == [0, 1] and list(got[0]) == [0.3, 0.6]
    again = anatomy.material_masks(net, "snip", Material("image", per_class=2), "synthetic",
                                   train, draws=[0], sparsities=[0.6])
    assert all(torch.equal(again[0][0.6][k], got[0][0.6][k]) for k in got[0][0.6])
    assert any(not torch.equal(got[0][0.6][k], got[1][0.6][k]) for k in got[0][0.6])
    with pytest.raises(ValueError, match="Material"):
        anatomy.material_masks(net, "snip", "image", "synthetic", train, [0], [0.5])


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_select_names_the_tensor_whose_scores_hold_nan(scope):
    scores = {"a": torch.rand(4, 3), "b": torch.tensor([0.5, float("nan"), 0.1])}
    with pytest.raises(ValueError, match="scores of b contain NaN"):
        prune.select(scores, 0.5, scope)

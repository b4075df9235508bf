"""The chapter on what PaI scores reward: its small network, its materials, its collapse
curves and its figures, against computations made here independently of the library."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from opai_lib import collapse, models, plots, prune, toy  # noqa: E402

SIZES = [2, 6, 6, 2]


def moons(seed=0, per_class=20):
    x, y = toy.two_moons(per_class, seed=seed)
    return [(x.double(), y)]


def weights(net):
    return [layer.weight.detach() for layer in net.layers]


# ---------------------------------------------------------------------------------------
# The network and its data.


def test_mlp_is_seeded_leaves_the_global_rng_and_prunes_every_weight():
    state = torch.random.get_rng_state()
    a, b, c = toy.mlp(SIZES, seed=3), toy.mlp(SIZES, seed=3), toy.mlp(SIZES, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.layers[1].weight, c.layers[1].weight)
    assert list(models.prunable(a)) == ["layers.0.weight", "layers.1.weight", "layers.2.weight"]
    assert all((layer.bias == 0).all() for layer in a.layers)
    assert a(torch.zeros(5, 2)).shape == (5, 2)
    with pytest.raises(ValueError, match=r"sizes = \[2\]; allowed: a list of at least two"):
        toy.mlp([2])


def test_two_moons_are_balanced_seeded_and_centred():
    x, y = toy.two_moons(200, seed=1)
    assert x.shape == (400, 2) and y.tolist() == [0] * 200 + [1] * 200
    assert torch.equal(x, toy.two_moons(200, seed=1)[0])
    assert not torch.equal(x, toy.two_moons(200, seed=2)[0])
    assert x.mean(0).abs().max() < 0.1
    clean, _ = toy.two_moons(50, noise=0.0, seed=0)
    upper = clean[:50] + torch.tensor([0.5, 0.25])
    torch.testing.assert_close(upper.norm(dim=1), torch.ones(50))  # the unit half circle


def test_materials_change_only_what_they_name():
    x, y = toy.material("moons", 30, 5)[0]
    xr, yr = toy.material("random_labels", 30, 5)[0]
    xg, yg = toy.material("gaussian", 30, 5)[0]
    xo, yo = toy.material("all_ones", 30, 5)[0]
    assert torch.equal(xr, x) and not torch.equal(yr, y)
    assert sorted(yr.tolist()) == sorted(y.tolist())
    assert torch.equal(yg, y) and torch.equal(yo, y)
    assert not torch.equal(xg, x) and (xo == 1).all()
    with pytest.raises(ValueError, match="material = 'images'; allowed: one of"):
        toy.material("images", 30, 5)


# ---------------------------------------------------------------------------------------
# The three scores on the drawn network, computed independently.


def test_snip_on_the_mlp_is_weight_times_the_plain_gradient():
    net, batches = toy.mlp(SIZES, seed=0).double(), moons()
    scores = prune.scores_at_init(net, "snip", batches)
    (x, y), = batches
    grads = torch.autograd.grad(F.cross_entropy(net(x), y), [layer.weight for layer in net.layers])
    for name, w, g in zip(scores, weights(net), grads, strict=True):
        torch.testing.assert_close(scores[name], (w * g).abs())


def test_grasp_on_the_mlp_is_theta_times_finite_differences_of_the_gradient():
    """Hg = (grad L(theta + eps g) - grad L(theta - eps g)) / (2 eps), weights only."""
    net, batches, T, eps = toy.mlp(SIZES, seed=0).double(), moons(), 200.0, 1e-4
    scores = prune.scores_at_init(net, "grasp", batches, reinit_linear=False)
    (x, y), = batches
    w = [p.clone().requires_grad_() for p in weights(net)]
    b = [layer.bias.detach() for layer in net.layers]

    def grad(ws):
        h = x
        for i, (wi, bi) in enumerate(zip(ws, b, strict=True)):
            h = F.linear(h if i == 0 else h.relu(), wi, bi)
        return torch.autograd.grad(F.cross_entropy(h / T, y), ws)

    g = grad(w)
    plus = grad([(wi + eps * gi).detach().requires_grad_() for wi, gi in zip(w, g, strict=True)])
    minus = grad([(wi - eps * gi).detach().requires_grad_() for wi, gi in zip(w, g, strict=True)])
    for name, wi, p, m in zip(scores, w, plus, minus, strict=True):
        hg = (p - m) / (2 * eps)
        torch.testing.assert_close(scores[name], wi.detach() * hg, rtol=1e-6, atol=1e-12)


def test_synflow_on_the_mlp_is_the_sum_of_path_products_through_each_edge():
    """R = 1^T |W3| |W2| |W1| 1; an edge's score is |w| times the paths into its input unit
    times the paths out of its output unit, and every layer's scores add up to R."""
    net = toy.mlp(SIZES, seed=2).double()
    scores = prune.scores_at_init(net, "synflow", moons(), rounds=1, double=True)
    w1, w2, w3 = (w.abs() for w in weights(net))
    ones = torch.ones(2, dtype=torch.float64)
    into1, into2 = ones, w1 @ ones            # paths from the inputs into each layer's inputs
    out1, out2, out3 = ones @ w3 @ w2, ones @ w3, torch.ones(2, dtype=torch.float64)
    expected = [w1 * out1[:, None] * into1, w2 * out2[:, None] * into2,
                w3 * out3[:, None] * (w2 @ w1 @ ones)]
    for name, e in zip(scores, expected, strict=True):
        torch.testing.assert_close(scores[name], e)
    totals = collapse.layer_totals({"synflow": scores})["synflow"]
    torch.testing.assert_close(torch.tensor(totals.to_numpy()),
                               (ones @ w3 @ w2 @ w1 @ ones).repeat(3))


def test_synflow_masks_do_not_depend_on_the_material():
    net = toy.mlp(SIZES, seed=0)
    found = toy.material_masks(net, {"synflow": ("synflow", {"rounds": 3})}, per_class=10, draws=2,
                               sparsity=0.7)
    first = found["synflow"]["moons"][0]
    for drawn in found["synflow"].values():
        for mask in drawn:
            assert all(torch.equal(mask[n], first[n]) for n in first)
    table = toy.overlap_table(found)
    assert (table.loc["synflow"] == 1).all()


def test_overlap_table_counts_pairs_of_draws_by_hand():
    def mask(*kept):
        m = torch.zeros(4, dtype=torch.bool)
        m[list(kept)] = True
        return {"w": m}

    found = {"c": {"moons": [mask(0, 1), mask(0, 2), mask(0, 1)], "gaussian": [mask(2, 3)]}}
    table = toy.overlap_table(found)
    # moons pairs (i != j): 1/2, 1, 1/2, 1/2, 1, 1/2; gaussian against each moons draw: 0, 1/2, 0
    assert table.loc["c", "moons"] == pytest.approx(4 / 6)
    assert table.loc["c", "gaussian"] == pytest.approx(1 / 6)


# ---------------------------------------------------------------------------------------
# Layer collapse.


def random_scores(seed, sizes=(12, 300, 40, 5)):
    g = torch.Generator().manual_seed(seed)
    return {f"l{i}": torch.rand(n, generator=g) for i, n in enumerate(sizes)}


def test_sparsity_grid_is_evenly_spaced_in_log_density():
    grid = collapse.sparsity_grid(0.9, 0.999, 5)
    assert grid[0] == pytest.approx(0.9) and grid[-1] == pytest.approx(0.999)
    assert np.diff(np.log(1 - np.array(grid))) == pytest.approx([np.log(10) / -2] * 4)
    with pytest.raises(ValueError, match=r"lowest, highest = \(0.99, 0.9\); allowed: 0 < lowest"):
        collapse.sparsity_grid(0.99, 0.9, 5)
    nan = float("nan")
    assert collapse.in_words(0.993861, 0.995532) == "between 99.386 and 99.553 %"
    assert collapse.in_words(nan, 0.8) == "at or below 80 %"
    assert collapse.in_words(0.9999, nan) == "nowhere up to 99.99 %"


@pytest.mark.parametrize("seed", range(4))
def test_empty_layers_never_decrease_along_one_scores_global_masks(seed):
    scores = random_scores(seed)
    grid = collapse.sparsity_grid(0.5, 0.995, 30)
    table = collapse.curve({s: prune.select(scores, s) for s in grid})
    assert (np.diff(table["empty layers"]) >= 0).all()
    assert (np.diff(table["sparsest layer density"]) <= 0).all()
    first = collapse.first_collapse(table.assign(criterion="c")).loc["c"]
    at = grid.index(first["empty layer at"])
    assert grid[at - 1] == first["whole up to"]
    assert table["empty layers"][at] > 0 and table["empty layers"][at - 1] == 0
    assert first["layer emptied"] == table["first empty"][at]


@pytest.mark.parametrize("seed", range(3))
def test_layerwise_scope_keeps_every_layer_while_density_times_size_is_at_least_one(seed):
    scores = random_scores(seed)
    smallest = min(s.numel() for s in scores.values())
    for sparsity in collapse.sparsity_grid(0.5, 0.999, 40):
        mask = prune.select(scores, sparsity, scope="layerwise", seed=seed)
        if (1 - sparsity) * smallest >= 1:
            assert not any(not m.any() for m in mask.values()), sparsity


@pytest.mark.parametrize("seed", range(4))
def test_critical_sparsity_is_where_global_selection_first_empties_a_layer(seed):
    scores = random_scores(seed)
    total = sum(s.numel() for s in scores.values())
    sparsity, layer = collapse.critical_sparsity(scores)
    whole = prune.select(scores, sparsity)
    kept = sum(int(m.sum()) for m in whole.values())
    assert all(m.any() for m in whole.values())
    fewer = prune.select(scores, 1 - (kept - 1) / total)
    assert [n for n, m in fewer.items() if not m.any()] == [layer]


def test_curve_says_when_the_network_is_cut():
    net = models.get_model("tiny", width=0.5, seed=0)
    full = {n: torch.ones_like(p, dtype=torch.bool) for n, p in models.prunable(net).items()}
    stem_cut = {**full, "conv1.weight": torch.zeros_like(full["conv1.weight"])}
    table = collapse.curve({0.1: full, 0.2: stem_cut}, net)
    assert table["cut"].tolist() == [False, True]
    assert table["first empty"].tolist() == ["", "conv1.weight"]
    first = collapse.first_collapse(table.assign(criterion="c")).loc["c"]
    assert (first["connected up to"], first["cut at"]) == (0.1, 0.2)
    never = collapse.first_collapse(table[:1].assign(criterion="c")).loc["c"]
    assert never["whole up to"] == 0.1 and np.isnan(never["empty layer at"])


# ---------------------------------------------------------------------------------------
# The figures.


def test_network_graph_draws_one_edge_per_weight_kept_ones_thick():
    net = toy.mlp(SIZES, seed=0)
    scores = prune.scores_at_init(net, "magnitude", None)
    mask = prune.select(scores, 0.75)
    ax = plots.network_graph(scores, mask)
    pruned, kept = ax.collections[:2]
    assert len(kept.get_segments()) == 15 and len(pruned.get_segments()) == 45
    assert kept.get_linewidths()[0] > pruned.get_linewidths()[0]
    ranks = plots.score_ranks(scores)
    assert ranks["layers.1.weight"].shape == (6, 6)
    assert min(r.min() for r in ranks.values()) == 0 and max(r.max() for r in ranks.values()) == 1
    with pytest.raises(ValueError, match="chain of layers"):
        plots.network_graph({"a": torch.ones(3, 2), "b": torch.ones(2, 4)}, mask)
    plt.close("all")


def test_collapse_curves_draw_every_criterion_and_its_first_collapse():
    grid = collapse.sparsity_grid(0.5, 0.995, 12)
    found = {label: {s: prune.select(random_scores(seed), s, scope=scope) for s in grid}
             for label, seed, scope in [("global", 0, "global"), ("layerwise", 1, "layerwise")]}
    table = collapse.curves(found)
    axes = plots.collapse_curves(table)
    labels = [line.get_label() for line in axes[1].get_lines()]
    assert {"global", "layerwise", "overall density"} <= set(labels)
    assert axes[0].get_xscale() == "log" and axes[0].get_xlim()[0] > axes[0].get_xlim()[1]
    plt.close("all")


def test_arms_of_a_model_score_once_and_their_critical_sparsity_splits_the_grid():
    net = models.get_model("tiny", width=0.5, seed=0)
    arms = {"mag": ("magnitude", {}), "sf": ("synflow", {"rounds": 2}), "rand": ("random", {})}
    assert collapse.one_shot_global(arms) == ["mag"]
    first_round = collapse.dense_scores(net, arms, None)
    expected = prune.scores_at_init(net, "synflow", None, rounds=1)
    assert all(torch.equal(first_round["sf"][n], expected[n]) for n in expected)
    grid = collapse.sparsity_grid(0.5, 0.999, 15)
    table = collapse.curves(collapse.masks_by_arm(net, arms, None, grid))
    exact = collapse.critical_table(first_round, ["mag"])
    critical, layer = collapse.critical_sparsity(first_round["mag"])
    assert exact.loc["mag"].tolist() == [critical, layer]
    mag = table[table["criterion"] == "mag"]
    assert ((mag["empty layers"] > 0) == (mag["sparsity"] > critical)).all()
    assert mag["empty layers"].iloc[-1] > 0
    sizes = {n: p.numel() for n, p in models.prunable(net).items()}
    said = collapse.summary(collapse.first_collapse(table), exact, sizes)
    assert said["mag_critical"] == 100 * critical
    assert said["mag_next"] == layer.removesuffix(".weight")
    assert said["mag_next_size"] == sizes[layer] and said["smallest_layer"] == min(sizes.values())
    assert said["random_bound"] == pytest.approx(100 * (1 - 1 / min(sizes.values())))
    assert said["sf_empties"].startswith(("between", "nowhere", "at or below"))

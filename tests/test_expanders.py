"""Expander masks: exact degrees, simple graphs, sizes, seeds, uniformity, expansion oracles."""

import collections
import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from opai_lib import expanders, masks, models

GENERATORS = ("random", "xnet", "rreg")


@pytest.fixture(scope="module")
def vgg():
    return models.get_model("vgg16_bn", width=0.25)


@pytest.fixture(scope="module")
def resnet():
    return models.get_model("resnet20", width=0.5)


def graphs(mask, model, first_layer=None):
    """Channel graphs of the layers ``expander_mask`` sparsifies by default."""
    _, sparse = expanders.sparse_layers(model, first_layer)
    return {n: expanders.channel_graph(mask[n]) for n in sparse}


# ---------------------------------------------------------------------------------------
# Generators.

SHAPES = [(3, 16, 10), (16, 16, 37), (16, 32, 100), (64, 32, 1000), (8, 8, 63), (5, 9, 45),
          (32, 32, 1)]


@pytest.mark.parametrize("generator", GENERATORS)
@pytest.mark.parametrize("n_in,n_out,edges", SHAPES)
def test_generators_draw_exactly_the_requested_simple_graph(generator, n_in, n_out, edges):
    # A bool biadjacency cannot hold a multi-edge; merged duplicates would show as fewer edges.
    graph = expanders.GENERATORS.get(generator).sample(n_in, n_out, edges,
                                                      np.random.default_rng(0))
    assert graph.shape == (n_in, n_out) and graph.dtype == bool
    assert graph.sum() == edges
    left = graph.sum(1)
    if generator in ("xnet", "rreg"):
        assert left.max() - left.min() <= 1
    if generator == "rreg":
        right = graph.sum(0)
        assert right.max() - right.min() <= 1


def balanced_graphs(n_in, n_out, edges):
    """All simple graphs with ``edges`` edges and both degree sequences within one: brute force."""
    codes = np.arange(2 ** (n_in * n_out))
    g = ((codes[:, None] >> np.arange(n_in * n_out)) & 1).reshape(-1, n_in, n_out)
    left, right = g.sum(2), g.sum(1)
    ok = ((g.sum((1, 2)) == edges) & (np.ptp(left, 1) <= 1) & (np.ptp(right, 1) <= 1))
    return {x.astype(bool).tobytes() for x in g[ok]}


@pytest.mark.parametrize("n_in,n_out,edges", [(4, 4, 8), (3, 6, 6), (3, 4, 6)])
def test_rreg_samples_uniformly(n_in, n_out, edges):
    # Every labelled graph with balanced degrees must come up equally often.
    support = balanced_graphs(n_in, n_out, edges)
    rng = np.random.default_rng(0)
    counts = collections.Counter(expanders.rreg_graph(n_in, n_out, edges, rng).tobytes()
                                 for _ in range(20 * len(support)))
    assert set(counts) <= support
    assert stats.chisquare([counts[g] for g in support]).pvalue > 1e-3


def test_rreg_matches_exact_uniform_sampler_on_four_cycles():
    # Rejection from the configuration model is exactly uniform over simple 3-regular graphs.
    rng = np.random.default_rng(0)

    def four_cycles(g):
        common = g.astype(np.int64) @ g.T.astype(np.int64)
        np.fill_diagonal(common, 0)
        return (common * (common - 1) // 2).sum() / 2

    exact = []
    while len(exact) < 300:
        v = rng.permutation(np.repeat(np.arange(40), 3))
        codes = np.repeat(np.arange(40), 3) * 40 + v
        if len(np.unique(codes)) == len(codes):
            g = np.zeros(1600, dtype=bool)
            g[codes] = True
            exact.append(four_cycles(g.reshape(40, 40)))
    ours = [four_cycles(expanders.rreg_graph(40, 40, 120, rng)) for _ in range(300)]
    assert stats.mannwhitneyu(exact, ours).pvalue > 1e-3
    # The chain's circulant starting point is far from uniform: without switches it shows.
    start = [four_cycles(expanders.rreg_graph(40, 40, 120, rng, sweeps=0)) for _ in range(50)]
    assert stats.mannwhitneyu(exact, start).pvalue < 1e-6


# ---------------------------------------------------------------------------------------
# Sizing a mask by degree.


def test_degree_convention_per_generator(vgg):
    d = 5
    for generator in ("xnet", "rreg"):
        for name, g in graphs(expanders.expander_mask(vgg, generator, degree=d), vgg).items():
            n_in, n_out = g.shape
            left, right = g.sum(1), g.sum(0)
            if generator == "xnet":  # every input node has exactly d neighbours
                assert (left == min(d, n_out)).all(), name
            elif d * max(n_in, n_out) >= n_in * n_out:
                assert g.all(), name  # e.g. the first layer 3 -> 16: complete
            else:  # d on the larger side, within one on the other
                big, small = (left, right) if n_in >= n_out else (right, left)
                assert (big == d).all() and small.max() - small.min() <= 1, name
    mask = expanders.expander_mask(vgg, "random", degree=d)
    kept = sum(int(g.sum()) for g in graphs(mask, vgg).values())
    expected = sum(n_in * min(d, n_out) for n_in, n_out in
                   (g.shape for g in graphs(mask, vgg).values()))
    assert abs(kept - expected) < 4 * math.sqrt(expected)  # Binomial around d / n_out


def test_degree_ignores_density(vgg):
    a = expanders.expander_mask(vgg, "xnet", degree=4, density=0.5)
    b = expanders.expander_mask(vgg, "xnet", degree=4)
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_official_parameter_count_reproduces_the_papers_pp_column():
    # Stewart et al., CIFAR-10 VGG-16 table: PP is one number per degree (+- over methods).
    paper = {60: 13.79, 30: 7.07, 15: 3.62, 3: 0.79}
    for d, pp in paper.items():
        ours = [100 * c["kept"] / c["dense"] for c in
                (expanders.official_parameter_count(g, d, seed=0) for g in GENERATORS)]
        assert abs(np.mean(ours) - pp) < 0.06, (d, ours)
        # Without the configuration model's merged multi-edges rreg would keep more.
        xnet = expanders.official_parameter_count("xnet", d)
        assert ours[2] < 100 * (xnet["kept"] + sum((max(i, o) - i) * d * k for i, o, k in
                                                    expanders.PAPER_VGG16_SPARSE)) / xnet["dense"]


# ---------------------------------------------------------------------------------------
# Sizing a mask by density: the same count for every generator.


@pytest.mark.parametrize("density", [0.05, 0.2, 0.6])
def test_density_gives_every_generator_the_same_count(vgg, density):
    params, sparse = expanders.sparse_layers(vgg)
    total = sum(p.numel() for p in params.values())
    counts = {}
    for generator in GENERATORS:
        mask = expanders.expander_mask(vgg, generator, density=density)
        assert set(mask) == set(models.prunable(vgg))
        counts[generator] = {n: int(m.sum()) for n, m in mask.items()}
        # Within one edge (one kernel of weights) per sparse layer of the target.
        slack = sum(params[n][0, 0].numel() for n in sparse)
        assert abs(masks.density(mask)["total"] * total - density * total) <= slack
        for name in set(params) - set(sparse):
            assert mask[name].all()
    assert counts["random"] == counts["xnet"] == counts["rreg"]


def test_kept_kernels_are_whole(vgg):
    mask = expanders.expander_mask(vgg, "rreg", density=0.1)
    for name, m in mask.items():
        if m.dim() == 4:
            per_kernel = m.flatten(2).sum(-1)
            assert ((per_kernel == 0) | (per_kernel == m.shape[2] * m.shape[3])).all(), name


def test_first_and_last_layer_follow_the_official_code(vgg, resnet):
    names = list(models.prunable(vgg))
    mask = expanders.expander_mask(vgg, "xnet", degree=2)
    assert not mask[names[0]].all() and mask[names[-1]].all()  # VGG: first conv sparse
    names = list(models.prunable(resnet))
    mask = expanders.expander_mask(resnet, "xnet", degree=2)
    assert mask[names[0]].all() and mask[names[-1]].all()  # ResNet: stem and fc dense
    mask = expanders.expander_mask(resnet, "xnet", degree=2, first_layer=True,
                                   last_layer=True)
    assert not mask[names[0]].all() and not mask[names[-1]].all()


# ---------------------------------------------------------------------------------------
# Seeds.


def test_same_seed_same_mask_and_equal_shapes_differ(vgg):
    a = expanders.expander_mask(vgg, "rreg", degree=3, seed=7)
    b = expanders.expander_mask(vgg, "rreg", degree=3, seed=7)
    c = expanders.expander_mask(vgg, "rreg", degree=3, seed=8)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)
    by_shape = collections.defaultdict(list)
    for m in a.values():
        if not m.all():
            by_shape[tuple(m.shape)].append(m)
    repeated = [ms for ms in by_shape.values() if len(ms) > 1]
    assert repeated  # VGG-16 has several 128->128 (x0.25) layers
    for ms in repeated:
        for x, y in itertools.combinations(ms, 2):
            assert not torch.equal(x, y)


# ---------------------------------------------------------------------------------------
# Expansion.


def test_sampled_expansion_matches_exact_expectation():
    rng = np.random.default_rng(3)
    graph = expanders.xnet_graph(5, 7, 12, rng)

    def exact(g):  # E over k uniform in [1, ceil(n/2)), S uniform of size k, of |N(S)|/k
        n = g.shape[0]
        means = [np.mean([g[list(s)].any(0).sum() / k for s in itertools.combinations(range(n), k)])
                 for k in range(1, max(2, math.ceil(n / 2)))]
        return np.mean(means)

    expected = (exact(graph) + exact(graph.T)) / 2
    sampled = expanders.ExpansionSampler(5, 7, samples=40000, seed=0)(graph)
    assert sampled == pytest.approx(expected, rel=0.01)


def test_spectral_closed_forms():
    complete = expanders.spectral(np.ones((3, 5), dtype=bool))
    assert complete["sigma1"] == pytest.approx(math.sqrt(15))
    assert complete["sigma2"] == pytest.approx(0, abs=1e-9)
    cycle = np.eye(4, dtype=bool) | np.roll(np.eye(4, dtype=bool), 1, axis=1)  # C_8
    s = expanders.spectral(cycle)  # eigenvalues of C_8: 2 cos(2 pi k / 8)
    assert (s["sigma1"], s["sigma2"], s["ramanujan_bound"]) == pytest.approx((2, math.sqrt(2), 2))
    two = np.kron(np.eye(2, dtype=bool), cycle)  # disconnected: sigma2 = sigma1
    assert expanders.spectral(two)["sigma2"] == pytest.approx(2)


def test_best_of_keeps_the_most_expanding_draw(resnet):
    one = expanders.expander_mask(resnet, "rreg", density=0.1, samples=200)
    best = expanders.expander_mask(resnet, "rreg", density=0.1, best_of=4, samples=200)
    for name, g in graphs(best, resnet).items():
        score = expanders.ExpansionSampler(*g.shape, samples=200,
                                           seed=expanders._layer_seed(0, name, "select"))
        assert score(g) >= score(expanders.channel_graph(one[name]))


def test_rreg_expands_more_than_random_at_equal_density(resnet):
    gaps, spectral_gaps = [], []
    for seed in range(3):
        e = {g: expanders.network_expansion(
                expanders.expander_mask(resnet, g, density=0.1, seed=seed), samples=300, seed=seed)
             for g in ("random", "rreg")}
        assert e["random"]["density"] == e["rreg"]["density"]
        gaps.append(e["rreg"]["expansion"] - e["random"]["expansion"])
        spectral_gaps.append(e["random"]["sigma2_over_bound"] - e["rreg"]["sigma2_over_bound"])
    assert np.mean(gaps) > 0.01  # about +0.1 (3 %) at this density
    assert np.mean(spectral_gaps) > 0.02  # rreg sits closer to Ramanujan


def test_layer_report_counts(vgg):
    mask = expanders.expander_mask(vgg, "xnet", degree=3)
    rows = expanders.layer_report(mask, samples=50)
    assert [r["layer"] for r in rows] == list(mask)
    for r in rows:
        assert r["kept"] == r["edges"] * r["kernel"]
        assert r["density"] == pytest.approx(r["kept"] / r["weights"])


# ---------------------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize("kwargs,message", [
    ({"generator": "expander"}, "unknown expander generator"),
    ({"degree": 0}, "ExpanderOptions.degree = 0"),
    ({"degree": 2.5}, "ExpanderOptions.degree must be of type"),
    ({}, "give a degree"),
    ({"density": 1.5}, "density must be"),
    ({"density": 0.0}, "density must be"),
    ({"density": 1e-6}, "below what the dense layers"),
    ({"degree": 3, "best_of": 0}, "ExpanderOptions.best_of = 0"),
    ({"degree": 3, "bset_of": 2}, r"unknown option\(s\) \['bset_of'\]"),
    ({"degree": 3, "seed": -1}, "seed must be"),
])
def test_bad_input_fails_before_compute(resnet, kwargs, message):
    kwargs = {"generator": "rreg", **kwargs}
    with pytest.raises(ValueError, match=message):
        expanders.expander_mask(resnet, **kwargs)


def test_network_expansion_leaves_out_dense_layers(resnet):
    mask = expanders.expander_mask(resnet, "rreg", density=0.2)  # stem and fc dense
    sparse = {n: m for n, m in mask.items() if not m.all()}
    assert len(sparse) == len(mask) - 2
    rows = expanders.layer_report(sparse, samples=100)
    e = expanders.network_expansion(mask, samples=100)
    assert e["expansion"] == pytest.approx(np.mean([r["expansion"] for r in rows]))
    assert e["density"] == pytest.approx(masks.density(mask)["total"])


def test_options_or_keywords_never_both(resnet):
    with pytest.raises(ValueError, match="options of expander 'rreg' must be one ExpanderOptions"):
        expanders.expander_mask(resnet, "rreg", density=0.2,
                                options=expanders.ExpanderOptions(), best_of=2)

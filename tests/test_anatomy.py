"""Tests of opai_lib.anatomy: mask comparisons, effective sparsity, sanity checks and the
within/between permutation test.

Every expected value is computed independently of the function under test: by hand, by
scipy, by a double loop over ``masks.overlap``, or (for effective masks) by a brute-force
boolean reachability computation over the network's units written out here with numpy.
"""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from torch import nn

from opai_lib import anatomy, config, experiments, masks, models, record, study


def _rand_mask(shapes: dict, density: float, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(s, generator=g) < density for n, s in shapes.items()}


# ---------------------------------------------------------------------------------------
# Brute-force reachability (independent of the autograd path counting the library uses).
#
# A network is described as a list of layers: ("linear", name), ("conv", name, stride,
# padding), ("maxpool", k), ("gap",) (global average pool + flatten). Every unit of every
# activation is a graph node; a kept weight connects each input unit it reads to the output
# unit it writes. A kept weight is effective iff, for at least one of its uses, its input
# unit is reachable from the network input and its output unit reaches the network output.


def _forward_reach(layers, mask, first):
    reach = [first]
    for layer in layers:
        x = reach[-1]
        if layer[0] == "linear":
            k = mask[layer[1]].numpy().astype(np.int64)
            reach.append(k @ x.astype(np.int64) > 0)
        elif layer[0] == "conv":
            k = mask[layer[1]].numpy().astype(np.int64)
            stride, pad = layer[2], layer[3]
            co, _, kh, kw = k.shape
            ho = (x.shape[1] + 2 * pad - kh) // stride + 1
            wo = (x.shape[2] + 2 * pad - kw) // stride + 1
            xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad))).astype(np.int64)
            out = np.zeros((co, ho, wo), dtype=bool)
            for ky in range(kh):
                for kx in range(kw):
                    window = xp[:, ky:ky + stride * (ho - 1) + 1:stride,
                                kx:kx + stride * (wo - 1) + 1:stride]
                    out |= np.einsum("oc,chw->ohw", k[:, :, ky, kx], window) > 0
            reach.append(out)
        elif layer[0] == "maxpool":
            c, h, w = x.shape
            s = layer[1]
            reach.append(x.reshape(c, h // s, s, w // s, s).any(axis=(2, 4)))
        elif layer[0] == "gap":
            reach.append(x.any(axis=(1, 2)))
        else:  # pragma: no cover
            raise AssertionError(layer)
    return reach


def brute_force_effective(layers, mask, first):
    """Effective mask by forward and backward boolean reachability."""
    reach = _forward_reach(layers, mask, first)
    back = np.ones(reach[-1].shape, dtype=bool)  # every output unit is an output
    eff = {}
    for i in range(len(layers) - 1, -1, -1):
        layer, x = layers[i], reach[i]
        if layer[0] == "linear":
            k = mask[layer[1]].numpy()
            eff[layer[1]] = k & np.outer(back, x)
            back = k.T.astype(np.int64) @ back.astype(np.int64) > 0
        elif layer[0] == "conv":
            k = mask[layer[1]].numpy()
            stride, pad = layer[2], layer[3]
            _, _, kh, kw = k.shape
            ho, wo = back.shape[1], back.shape[2]
            xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad))).astype(np.int64)
            back_p = np.zeros(xp.shape, dtype=bool)
            e = np.zeros(k.shape, dtype=bool)
            b = back.astype(np.int64)
            for ky in range(kh):
                for kx in range(kw):
                    idx = (slice(None), slice(ky, ky + stride * (ho - 1) + 1, stride),
                           slice(kx, kx + stride * (wo - 1) + 1, stride))
                    kk = k[:, :, ky, kx]
                    e[:, :, ky, kx] = kk & (np.einsum("ohw,chw->oc", b, xp[idx]) > 0)
                    back_p[idx] |= np.einsum("oc,ohw->chw", kk.astype(np.int64), b) > 0
            eff[layer[1]] = e
            back = back_p[:, pad:pad + x.shape[1], pad:pad + x.shape[2]]
        elif layer[0] == "maxpool":
            s = layer[1]
            back = np.repeat(np.repeat(back, s, axis=1), s, axis=2)
        elif layer[0] == "gap":
            back = np.broadcast_to(back[:, None, None], x.shape).copy()
    return eff


# ---------------------------------------------------------------------------------------
# Small networks.

IMG = 2  # MLP input: the library feeds ones of shape (1, 3, IMG, IMG); Flatten -> 12


def mlp(bias_value: float = 0.7) -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * IMG * IMG, 5), nn.ReLU(),
                        nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    with torch.no_grad():  # nonzero biases: they must not count as paths
        for m in net:
            if isinstance(m, nn.Linear):
                m.bias.fill_(bias_value)
    return net


MLP_LAYERS = [("linear", "1.weight"), ("linear", "3.weight"), ("linear", "5.weight")]
MLP_FIRST = np.ones(3 * IMG * IMG, dtype=bool)


def convnet(pool: bool = False) -> nn.Sequential:
    """Conv-BN-ReLU-Conv(stride 2)-BN-ReLU-AvgPool-Flatten-Linear with biases, BN and
    (to make sure only connectivity counts) negative biases and BN scales."""
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=True), nn.BatchNorm2d(4), nn.ReLU(),
        nn.MaxPool2d(2) if pool else nn.Identity(),
        nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=True), nn.BatchNorm2d(6), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.bias.fill_(-5.0)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(-2.0)
                m.bias.fill_(-3.0)
                m.running_mean.fill_(10.0)
    return net


CONV_IMG = 8


def conv_layers(pool: bool):
    return ([("conv", "0.weight", 1, 1)] + ([("maxpool", 2)] if pool else [])
            + [("conv", "4.weight", 2, 1), ("gap",), ("linear", "9.weight")])


CONV_FIRST = np.ones((3, CONV_IMG, CONV_IMG), dtype=bool)


def shapes(net):
    return {n: p.shape for n, p in models.prunable(net).items()}


def assert_masks_equal(got, expected):
    assert set(got) == set(expected)
    for n in expected:
        e = expected[n] if isinstance(expected[n], np.ndarray) else expected[n].numpy()
        assert got[n].dtype == torch.bool, n
        assert np.array_equal(got[n].numpy(), e), n


# ---------------------------------------------------------------------------------------
# 1. layer_overlap, density_difference


def test_layer_overlap_self_complement_and_empty_layers():
    a = _rand_mask({"x": (6, 7), "y": (30,)}, 0.4, seed=3)
    a["z"] = torch.zeros(4, 4, dtype=bool)  # keeps nothing
    assert int(a["x"].sum()) > 0 and int(a["y"].sum()) > 0
    same = anatomy.layer_overlap(a, a)
    assert same["x"] == 1.0 and same["y"] == 1.0 and math.isnan(same["z"])
    comp = anatomy.layer_overlap(a, {n: ~m for n, m in a.items()})
    assert comp["x"] == 0.0 and comp["y"] == 0.0 and math.isnan(comp["z"])


def test_layer_overlap_hand_example():
    a = {"x": torch.tensor([1, 1, 1, 1, 0, 0, 0, 0], dtype=bool)}
    b = {"x": torch.tensor([0, 1, 0, 1, 0, 1, 0, 0], dtype=bool)}
    assert anatomy.layer_overlap(a, b)["x"] == pytest.approx(2 / 4)
    assert anatomy.layer_overlap(b, a)["x"] == pytest.approx(2 / 3)


def test_layer_overlap_and_density_difference_reject_different_tensors():
    a = {"x": torch.ones(3, dtype=bool)}
    b = {"y": torch.ones(3, dtype=bool)}
    with pytest.raises(ValueError):
        anatomy.layer_overlap(a, b)
    with pytest.raises(ValueError):
        anatomy.layer_overlap(a, {**a, **b})
    with pytest.raises(ValueError):
        anatomy.density_difference(a, b)


def test_density_difference_hand_count():
    a = {"x": torch.zeros(10, dtype=bool), "y": torch.ones(2, 5, dtype=bool)}
    b = {"x": torch.zeros(10, dtype=bool), "y": torch.zeros(2, 5, dtype=bool)}
    a["x"][[0, 4, 9]] = True           # 3 of 10
    b["x"][[1, 2, 3, 5, 6, 7, 8]] = True  # 7 of 10
    b["y"][0, :2] = True               # 2 of 10
    d = anatomy.density_difference(a, b)
    assert d == {"x": pytest.approx(0.3 - 0.7), "y": pytest.approx(1.0 - 0.2)}


# ---------------------------------------------------------------------------------------
# 2. score_spearman


def test_score_spearman_identical_and_negated():
    g = torch.Generator().manual_seed(0)
    s = {"a": torch.randn(5, 4, generator=g), "b": torch.randn(17, generator=g)}
    assert anatomy.score_spearman(s, s) == pytest.approx(1.0)
    assert anatomy.score_spearman(s, {n: -v for n, v in s.items()}) == pytest.approx(-1.0)


def test_score_spearman_matches_scipy_on_concatenation():
    g = torch.Generator().manual_seed(1)
    a = {"w1": torch.randn(3, 5, generator=g), "w2": torch.randn(2, 2, 3, generator=g)}
    b = {"w1": a["w1"] + torch.randn(3, 5, generator=g),
         "w2": torch.randn(2, 2, 3, generator=g)}
    x = np.concatenate([a["w1"].numpy().ravel(), a["w2"].numpy().ravel()])
    y = np.concatenate([b["w1"].numpy().ravel(), b["w2"].numpy().ravel()])
    expected = stats.spearmanr(x, y).statistic
    assert anatomy.score_spearman(a, b) == pytest.approx(expected, abs=1e-12)


def test_score_spearman_minus_inf_ranks_lowest():
    inf = float("inf")
    a = {"p": torch.tensor([-inf, 0.5, 2.0]), "q": torch.tensor([1.0, -inf])}
    b = {"p": torch.tensor([-10.0, 1.0, 3.0]), "q": torch.tensor([2.0, -5.0])}
    # by hand: ranks of a = [1.5, 3, 5, 4, 1.5] (the two -inf tie lowest), of b = [1, 3, 5, 4, 2]
    ra, rb = np.array([1.5, 3, 5, 4, 1.5]), np.array([1, 3, 5, 4, 2.0])
    expected = np.corrcoef(ra, rb)[0, 1]
    assert anatomy.score_spearman(a, b) == pytest.approx(expected, abs=1e-12)
    # a -inf in front of increasing values is a perfect monotone match
    c = {"p": torch.tensor([-inf, -1e30, 0.0, 3.0])}
    d = {"p": torch.tensor([0.0, 1.0, 2.0, 3.0])}
    assert anatomy.score_spearman(c, d) == pytest.approx(1.0)


def test_score_spearman_rejects_nan_and_different_tensors():
    a = {"p": torch.tensor([1.0, 2.0, 3.0])}
    bad = {"p": torch.tensor([1.0, float("nan"), 3.0])}
    with pytest.raises(ValueError):
        anatomy.score_spearman(a, bad)
    with pytest.raises(ValueError):
        anatomy.score_spearman(bad, a)
    with pytest.raises(ValueError):
        anatomy.score_spearman(a, {"q": a["p"]})


# ---------------------------------------------------------------------------------------
# 3. effective_mask / effective_sparsity


def test_dense_mlp_is_fully_effective():
    net = mlp()
    mask = {n: torch.ones(s, dtype=bool) for n, s in shapes(net).items()}
    eff = anatomy.effective_mask(net, mask, image_size=IMG)
    assert_masks_equal(eff, mask)
    info = anatomy.effective_sparsity(net, mask, image_size=IMG)
    assert info["sparsity"] == 0.0 and info["effective sparsity"] == 0.0
    assert info["unused kept"] == 0 and info["dead layers"] == []
    assert all(v == 1.0 for v in info["layer effective density"].values())


def test_cut_middle_layer_is_100_percent_effective_sparsity():
    net = mlp()
    mask = {n: torch.ones(s, dtype=bool) for n, s in shapes(net).items()}
    mask["3.weight"][:] = False
    info = anatomy.effective_sparsity(net, mask, image_size=IMG)
    total = 12 * 5 + 5 * 4 + 4 * 3
    assert info["sparsity"] == pytest.approx(1 - (12 * 5 + 4 * 3) / total)
    assert info["effective sparsity"] == 1.0
    assert info["unused kept"] == 12 * 5 + 4 * 3
    assert sorted(info["dead layers"]) == sorted(mask)
    assert all(v == 0.0 for v in info["layer effective density"].values())


def test_hand_built_mlp_mask_disconnected_hidden_units():
    net = mlp()
    mask = {n: torch.zeros(s, dtype=bool) for n, s in shapes(net).items()}
    mask["1.weight"][0, :] = True   # layer 1: only weights into hidden unit 0
    mask["3.weight"][:, 1] = True   # layer 2: only weights out of hidden unit 1
    mask["5.weight"][:] = True      # layer 3 dense
    eff = anatomy.effective_mask(net, mask, image_size=IMG)
    # unit 0 has no way out, unit 1 no way in: no kept weight is on any path
    assert not eff["1.weight"].any() and not eff["3.weight"].any()
    assert not eff["5.weight"].any()
    assert_masks_equal(eff, brute_force_effective(MLP_LAYERS, mask, MLP_FIRST))
    info = anatomy.effective_sparsity(net, mask, image_size=IMG)
    assert info["effective sparsity"] == 1.0
    assert info["unused kept"] == 12 + 4 + 12

    # add a live route through hidden units 2 -> 3: exactly that route becomes effective
    mask["1.weight"][2, [0, 5]] = True
    mask["3.weight"][3, 2] = True
    eff = anatomy.effective_mask(net, mask, image_size=IMG)
    expected = brute_force_effective(MLP_LAYERS, mask, MLP_FIRST)
    assert_masks_equal(eff, expected)
    assert int(eff["1.weight"].sum()) == 2 and int(eff["3.weight"].sum()) == 1
    assert eff["5.weight"][:, 3].all() and int(eff["5.weight"].sum()) == 3


@pytest.mark.parametrize("seed", range(6))
def test_random_mlp_masks_match_brute_force(seed):
    net = mlp()
    mask = _rand_mask(shapes(net), [0.15, 0.25, 0.4][seed % 3], seed=seed)
    expected = brute_force_effective(MLP_LAYERS, mask, MLP_FIRST)
    eff = anatomy.effective_mask(net, mask, image_size=IMG)
    assert_masks_equal(eff, expected)
    info = anatomy.effective_sparsity(net, mask, image_size=IMG)
    total = sum(m.numel() for m in mask.values())
    used = sum(int(e.sum()) for e in expected.values())
    kept = sum(int(m.sum()) for m in mask.values())
    assert info["effective sparsity"] == pytest.approx(1 - used / total)
    assert info["sparsity"] == pytest.approx(1 - kept / total)
    assert info["unused kept"] == kept - used
    assert sorted(info["dead layers"]) == sorted(n for n, e in expected.items() if not e.any())


def test_dense_first_layer_left_out_of_the_mask():
    """A prunable layer the mask does not name (first_layer=False) counts as dense."""
    net = mlp()
    full = _rand_mask(shapes(net), 0.3, seed=11)
    full["1.weight"][:] = True
    partial = {n: m for n, m in full.items() if n != "1.weight"}
    eff = anatomy.effective_mask(net, partial, image_size=IMG)
    expected = brute_force_effective(MLP_LAYERS, full, MLP_FIRST)
    assert set(eff) == set(partial)
    for n in partial:
        assert np.array_equal(eff[n].numpy(), expected[n]), n


@pytest.mark.parametrize("pool", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_conv_bn_bias_net_matches_brute_force(seed, pool):
    """Biases, BatchNorm (negative scales and shifts) do not matter: only connectivity."""
    net = convnet(pool)
    mask = _rand_mask(shapes(net), [0.5, 0.2, 0.1, 0.3][seed], seed=100 + seed)
    eff = anatomy.effective_mask(net, mask, image_size=CONV_IMG)
    for n in mask:
        assert not (eff[n] & ~mask[n]).any(), n  # effective is a subset of the mask
    assert_masks_equal(eff, brute_force_effective(conv_layers(pool), mask, CONV_FIRST))


def test_conv_net_cut_layer_kills_the_rest():
    net = convnet()
    for cut in ("0.weight", "4.weight", "9.weight"):
        mask = _rand_mask(shapes(net), 0.5, seed=7)
        mask[cut][:] = False
        info = anatomy.effective_sparsity(net, mask, image_size=CONV_IMG)
        assert info["effective sparsity"] == 1.0, cut
        assert sorted(info["dead layers"]) == sorted(mask), cut


def test_effective_mask_leaves_the_model_unchanged():
    net = convnet()
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    grads = [p.requires_grad for p in net.parameters()]
    mask = _rand_mask(shapes(net), 0.5, seed=0)
    anatomy.effective_sparsity(net, mask, image_size=CONV_IMG)
    after = net.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert before[k].dtype == after[k].dtype and torch.equal(before[k], after[k]), k
    assert net.training
    assert [p.requires_grad for p in net.parameters()] == grads
    assert all(p.grad is None for p in net.parameters())
    assert isinstance(net[1], nn.BatchNorm2d)


def test_resnet20_cut_block_conv_and_option_a_shortcut():
    model = models.get_model("resnet20", 10, 0.25, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mask = {n: torch.ones(p.shape, dtype=bool) for n, p in models.prunable(model).items()}
    mask["layer2.0.conv1.weight"][:] = False
    eff = anatomy.effective_mask(model, mask)
    # By hand: layer2.0's residual branch is cut, so its output is the option-A shortcut
    # of its input: 4 channels zero-padded to 8, i.e. channels 2..5 carry paths and
    # 0, 1, 6, 7 carry none. Hence layer2.0.conv2 is dead, layer2.1.conv1 keeps exactly
    # its weights from input channels 2..5, and layer2.1's residual branch refills all 8
    # channels, so every other layer is fully effective (layer1 reaches the output via the
    # shortcut, layer3 is fed through it).
    assert not eff["layer2.0.conv1.weight"].any()
    assert not eff["layer2.0.conv2.weight"].any()
    expected_21 = torch.zeros(8, 8, 3, 3, dtype=bool)
    expected_21[:, 2:6] = True
    assert torch.equal(eff["layer2.1.conv1.weight"], expected_21)
    special = {"layer2.0.conv1.weight", "layer2.0.conv2.weight", "layer2.1.conv1.weight"}
    for n in mask:
        if n not in special:
            assert eff[n].all(), n
    info = anatomy.effective_sparsity(model, mask)
    assert sorted(info["dead layers"]) == ["layer2.0.conv1.weight", "layer2.0.conv2.weight"]
    assert info["unused kept"] == 8 * 8 * 9 + 8 * 4 * 9
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_resnet20_projection_shortcut_refills_every_channel():
    """Contrast with option A: the dense 1x1 projection (option B) feeds all 8 channels of
    layer2.0's output, so cutting layer2.0.conv1 kills only layer2.0.conv2."""
    model = models.get_model("resnet20_proj", 10, 0.25, seed=0)
    mask = {n: torch.ones(p.shape, dtype=bool) for n, p in models.prunable(model).items()}
    assert "layer2.0.shortcut.0.weight" in mask
    mask["layer2.0.conv1.weight"][:] = False
    eff = anatomy.effective_mask(model, mask)
    for n in mask:
        if n in ("layer2.0.conv1.weight", "layer2.0.conv2.weight"):
            assert not eff[n].any(), n
        else:
            assert eff[n].all(), n


def test_effective_mask_rejects_non_parameter_names():
    net = mlp()
    mask = {n: torch.ones(s, dtype=bool) for n, s in shapes(net).items()}
    mask["7.weight"] = torch.ones(3, dtype=bool)
    with pytest.raises(ValueError):
        anatomy.effective_mask(net, mask, image_size=IMG)
    with pytest.raises(ValueError):
        anatomy.effective_sparsity(net, {"nope": torch.ones(1, dtype=bool)}, image_size=IMG)


# ---------------------------------------------------------------------------------------
# 4. overlap_matrix


def test_overlap_matrix_matches_double_loop():
    sh = {"x": (8, 9), "y": (40,)}
    ms = [_rand_mask(sh, d, seed=i) for i, d in enumerate([0.2, 0.5, 0.8, 0.35])]
    m = anatomy.overlap_matrix(ms)
    expected = np.array([[masks.overlap(a, b) for b in ms] for a in ms])
    assert m.shape == (4, 4)
    np.testing.assert_allclose(m, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.diag(m), 1.0, rtol=0, atol=1e-12)


def test_overlap_matrix_rejects_bad_input():
    sh = {"x": (5,), "y": (3,)}
    good = _rand_mask(sh, 0.6, seed=0)
    good["x"][0] = True
    empty = {n: torch.zeros(s, dtype=bool) for n, s in sh.items()}
    with pytest.raises(ValueError):
        anatomy.overlap_matrix([])
    with pytest.raises(ValueError):
        anatomy.overlap_matrix([good, empty])
    with pytest.raises(ValueError):
        anatomy.overlap_matrix([good, {"x": good["x"]}])


# ---------------------------------------------------------------------------------------
# 5. within_between


N_WEIGHTS = 2000


def test_within_between_same_material_is_not_significant():
    def draw(seed):
        g = torch.Generator().manual_seed(seed)
        return {"w": torch.rand(N_WEIGHTS, generator=g) < 0.3}

    first = [draw(s) for s in range(8)]
    second = [draw(s) for s in range(1000, 1008)]
    r = anatomy.within_between(first, second, permutations=200, seed=0)
    assert r["p"] > 0.05
    assert r["draws"] == (8, 8)
    for key in ("within first", "within second", "within", "between"):
        assert r[key] == pytest.approx(0.3, abs=0.03), key


def _concentrated(seed, first_half: bool):
    """Exactly 400 of one half's 1000 weights and 100 of the other's."""
    g = torch.Generator().manual_seed(seed)
    half = N_WEIGHTS // 2
    m = torch.zeros(N_WEIGHTS, dtype=bool)
    many = torch.randperm(half, generator=g)[:400]
    few = torch.randperm(half, generator=g)[:100]
    if first_half:
        m[many] = True
        m[half + few] = True
    else:
        m[half + many] = True
        m[few] = True
    return {"w": m}


def test_within_between_different_materials():
    first = [_concentrated(s, True) for s in range(8)]
    second = [_concentrated(s, False) for s in range(100, 108)]
    perms = 200
    r = anatomy.within_between(first, second, permutations=perms, seed=0)
    # hand computation from the overlaps of every pair (masks.overlap, a double loop)
    draws = first + second
    o = np.array([[masks.overlap(a, b) for b in draws] for a in draws])
    a_idx, b_idx = range(8), range(8, 16)
    wa = [o[i, j] for i in a_idx for j in a_idx if i != j]
    wb = [o[i, j] for i in b_idx for j in b_idx if i != j]
    between = [o[i, j] for i in a_idx for j in b_idx] + [o[j, i] for i in a_idx for j in b_idx]
    assert r["within first"] == pytest.approx(np.mean(wa), abs=1e-12)
    assert r["within second"] == pytest.approx(np.mean(wb), abs=1e-12)
    assert r["within"] == pytest.approx(np.mean(wa + wb), abs=1e-12)
    assert r["between"] == pytest.approx(np.mean(between), abs=1e-12)
    assert r["difference"] == pytest.approx(np.mean(wa + wb) - np.mean(between), abs=1e-12)
    # expected levels: within (400^2 + 100^2) / 1000 / 500 = 0.34, between 0.16
    assert r["within"] == pytest.approx(0.34, abs=0.03)
    assert r["between"] == pytest.approx(0.16, abs=0.03)
    assert r["difference"] > 0
    assert r["p"] == pytest.approx(1 / (1 + perms))
    assert r["draws"] == (8, 8)


def test_within_between_is_exact_when_the_relabellings_are_few():
    # three draws of mask A against three of mask B: of the 20 ways to split 6 draws in
    # 3 + 3, only the true split and its mirror keep A with A (within 1 > between o); a
    # mixed split has within (1 + 2o) / 3 below between (4 + 5o) / 9. So p = 2 / 20.
    a, b = _concentrated(0, True), _concentrated(0, False)
    r = anatomy.within_between([a] * 3, [b] * 3, permutations=20, seed=0)
    assert r["within"] == 1 and r["p"] == pytest.approx(2 / 20, abs=1e-15)
    sampled = anatomy.within_between([a] * 3, [b] * 3, permutations=7, seed=0)
    assert sampled["p"] in [k / 8 for k in range(1, 9)]  # 7 < 20: random relabellings


def test_within_between_needs_two_draws_each():
    m = {"w": torch.ones(10, dtype=bool)}
    with pytest.raises(ValueError):
        anatomy.within_between([m], [m, m])
    with pytest.raises(ValueError):
        anatomy.within_between([m, m], [m])
    with pytest.raises(ValueError):
        anatomy.within_between([], [])


# ---------------------------------------------------------------------------------------
# The chapter's tables


def test_holm_hand_example():
    # sorted 0.01, 0.02, 0.04 times 3, 2, 1 -> 0.03, 0.04, 0.04 (monotone), then capped at 1
    assert anatomy.holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert anatomy.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def _draws(first_half: float, n: int, seed: int) -> dict:
    """``n`` masks over 400 weights keeping 100, a share ``first_half`` of them among the
    first 200, at two 'sparsities' that are the same masks (enough for table shapes)."""
    out = {}
    for d in range(n):
        g = torch.Generator().manual_seed(seed + d)
        m = torch.zeros(400, dtype=torch.bool)
        k = round(100 * first_half)
        m[torch.randperm(200, generator=g)[:k]] = True
        m[200 + torch.randperm(200, generator=g)[:100 - k]] = True
        mask = {"a": m[:300].view(30, 10), "b": m[300:].clone()}
        out[d] = {0.75: mask, 0.5: {n_: t.clone() for n_, t in mask.items()}}
    return out


def test_within_between_table_agrees_with_within_between():
    found = {"images": _draws(0.5, 5, 0), "far": _draws(0.9, 5, 100),
             "same": _draws(0.5, 5, 200)}
    table = anatomy.within_between_table(found, "images", permutations=100, seed=1)
    assert list(table["material"]) == ["far", "far", "same", "same"]
    assert list(table["sparsity %"]) == [75.0, 50.0, 75.0, 50.0]
    r = anatomy.within_between([m[0.75] for m in found["far"].values()],
                               [m[0.75] for m in found["images"].values()], 100, 1)
    row = table.iloc[0]
    assert row["between"] == pytest.approx(r["between"]) and row["p"] == pytest.approx(r["p"])
    assert row["difference"] > 0 and row["draws"] == 5
    with pytest.raises(ValueError, match="reference"):
        anatomy.within_between_table(found, "nothing")
    # two criteria: one table, Holm over all its rows together
    both = anatomy.tests({"SNIP": found, "GraSP": found}, "images", permutations=100, seed=1)
    assert list(both["criterion"]) == ["SNIP"] * 4 + ["GraSP"] * 4
    assert both["p (Holm)"].tolist() == pytest.approx(anatomy.holm(both["p"].tolist()))
    assert anatomy.min_permutations(100) == 8000  # 1 / 8001 < 0.05 / 100, with room


def test_layer_table_reference_row_is_its_within_overlap():
    found = {"images": _draws(0.5, 4, 0), "far": _draws(0.9, 4, 100)}
    density, overlap = anatomy.layer_table(found, "images", 0.75)
    assert list(density.index) == ["images", "far"] and list(density.columns) == ["a", "b"]
    ref = [m[0.75] for m in found["images"].values()]
    within_a = np.mean([anatomy.layer_overlap(x, y)["a"] for i, x in enumerate(ref)
                        for j, y in enumerate(ref) if i != j])
    assert overlap.loc["images", "a"] == pytest.approx(within_a)
    assert density.loc["far", "a"] == pytest.approx(
        np.mean([m[0.75]["a"].float().mean().item() for m in found["far"].values()]))


def test_one_path_counter_serves_many_masks_as_fresh_copies_do():
    """Re-weighting the same copy must leave nothing of the previous mask behind (weights,
    gradients): each answer equals the brute-force path enumeration."""
    net = mlp()
    full = {n: torch.ones(s, dtype=bool) for n, s in shapes(net).items()}
    cut = {n: m.clone() for n, m in full.items()}
    cut["3.weight"][:] = False
    sparse = {n: torch.rand(s, generator=torch.Generator().manual_seed(3)) < 0.5
              for n, s in shapes(net).items()}
    counter = anatomy.PathCounter(net)
    for mask in (full, cut, sparse, full, cut):
        assert_masks_equal(counter.effective_mask(mask, image_size=IMG),
                           brute_force_effective(MLP_LAYERS, mask, MLP_FIRST))


def test_effective_table_averages_effective_sparsity():
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 3))
    names = list(models.prunable(net))
    dense = {n: torch.ones_like(p, dtype=torch.bool) for n, p in net.named_parameters()
             if n in names}
    cut = {n: m.clone() for n, m in dense.items()}
    cut[names[1]][:] = False  # the last layer cut: nothing is effective
    found = {"x": {0: {0.5: dense}, 1: {0.5: cut}}}
    table = anatomy.effective_table(found, net, draws=2, image_size=2)
    assert table.loc[0, "effective sparsity %"] == pytest.approx(50.0)  # mean of 0 and 100
    assert table.loc[0, "dead layers"] == 2 and table.loc[0, "draws"] == 2


@pytest.mark.parametrize("kwargs, name", [
    ({"draws": 1}, "draws"), ({"draws": 2.5}, "draws"), ({"sparsities": [1.2]}, "sparsities"),
    ({"sparsities": [0.5, 0.5]}, "sparsities"), ({"sparsities": 0.5}, "sparsities"),
    ({"control_draws": 1}, "control_draws"), ({"criteria": ("foo",)}, "criteria"),
    ({"criteria": "snip"}, "criteria"), ({"seed": -1}, "seed"),
    ({"materials": ["DOP"]}, "materials"), ({"materials": ["images", "nothing"]}, "materials"),
    ({"model_name": "nonet"}, "nonet")])
def test_chapter_checks_its_parameters_before_any_mask(kwargs, name, monkeypatch):
    monkeypatch.setattr(anatomy, "_found", lambda *a: pytest.fail("masks made"))
    args = {"profile": "smoke", "model_name": "resnet20", "draws": 2,
            "sparsities": [0.5, 0.7], "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=name):
        anatomy.chapter(**args)


SMALL = anatomy.MaskDraws(draws=2, control_draws=3, sparsities=(0.9,), criteria=("snip",),
                          materials=("images", "gaussian"))


@pytest.mark.parametrize("make, name", [
    (lambda: anatomy.WithinBetween(SMALL, permutations=79), "permutations"),
    (lambda: anatomy.LayerMaps(SMALL, sparsity=0.95), "sparsity"),
    (lambda: anatomy.EffectiveSparsity(SMALL, draws=3), "draws"),
    (lambda: anatomy.ScoreCorrelations(SMALL, draws=3), "draws")])
def test_tables_check_their_options_when_built(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_a_table_is_kept_read_back_and_verified(tmp_path, monkeypatch):
    monkeypatch.setenv("OPAI_RUNS_DIR", str(tmp_path))
    anatomy._found.cache_clear()
    table = anatomy.WithinBetween(SMALL, permutations=80)
    got = anatomy.read(table)
    # the same test made directly from the arms, without the record
    P = config.get_profile("smoke")
    train, _ = study.profile_data(P)
    arms = [a for a in experiments.anatomy_arms(P) if a.method == "snip"
            and a.label in ("images", "gaussian")]
    found = anatomy.arm_masks(SMALL.network(), arms, P.dataset, train,
                              {"images": 2, "gaussian": 3}, [0.9])
    want = anatomy.tests({"SNIP": found}, "images", 80)
    pd.testing.assert_frame_equal(got, want)
    assert got["draws"].tolist() == [3]  # a control has its own count of draws
    anatomy._found.cache_clear()
    monkeypatch.setattr(anatomy, "_found", lambda *a: pytest.fail("masks made again"))
    pd.testing.assert_frame_equal(anatomy.read(table), want)
    minutes, cpus = anatomy.cost([table])
    assert minutes > 0 and cpus == config.cpu_model()
    kept = anatomy.store_dir("smoke")
    monkeypatch.undo()
    rows = record.verify(kept, n=1)  # made again, from the record's options
    assert rows[0]["run"] == "WithinBetween" and rows[0]["verdict"] == "identical"


def test_distance_ratio_in_units_of_the_references_own_spread():
    assert anatomy.distance_ratio(0.8, 0.9) == pytest.approx(2.0)  # twice as far
    assert anatomy.distance_ratio(0.9, 0.9) == pytest.approx(1.0)  # no farther
    assert anatomy.distance_ratio(0.5, 1.0) == math.inf  # a reference that never varies


# ---------------------------------------------------------------------------------------
# score_table and yardstick


def _snip_arms():
    from opai_lib.experiments import Arm
    from opai_lib.materials import Material

    return [Arm("images", "snip", Material("image", per_class=2)),
            Arm("all-ones", "snip", Material("all_ones", per_class=2)),
            Arm("gaussian", "snip", Material("gaussian", per_class=2))]


def test_score_table_matches_scipy_on_the_same_draws(toy):
    from scipy import stats

    from opai_lib import prune

    train, _ = toy
    model = models.get_model("tiny", train.num_classes, 0.5, seed=0)
    arms = _snip_arms()
    out = anatomy.score_table(model, arms, "synthetic", train, 3, "images", seed=0)
    assert out["material"].tolist() == ["all-ones", "gaussian"]

    def flat(arm_index, d):  # draw d of arm i, as arm_masks draws it
        arm = arms[arm_index]
        scores = prune.scores_at_init(model, "snip", arm.material.make(
            train, arm_index * anatomy.DRAW_STRIDE + d), 0)
        return torch.cat([s.flatten() for s in scores.values()]).double().numpy()

    rho = lambda a, b: stats.spearmanr(a, b).statistic  # noqa: E731
    img = [flat(0, d) for d in range(3)]
    gauss = [flat(2, d) for d in range(3)]
    within_ref = np.mean([rho(img[i], img[j]) for i, j in [(0, 1), (0, 2), (1, 2)]])
    between = np.mean([rho(g, i) for g in gauss for i in img])
    row = out.set_index("material").loc["gaussian"]
    assert row["within reference"] == pytest.approx(within_ref, abs=1e-9)
    assert row["between"] == pytest.approx(between, abs=1e-9)
    # constant inputs have nothing to draw: their scores agree perfectly with themselves
    assert out.set_index("material").loc["all-ones", "within"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="reference 'DOP' is not an arm"):
        anatomy.score_table(model, arms, "synthetic", train, 2, "DOP")


def test_scores_at_init_are_what_masks_are_selected_from(toy):
    from opai_lib import prune

    train, _ = toy
    model = models.get_model("tiny", train.num_classes, 0.5, seed=2)
    batch = _snip_arms()[0].material.make(train, 5)
    scores = prune.scores_at_init(model, "grasp", batch, seed=3)
    by_select = prune.select(scores, 0.8, seed=3 * 1000)
    direct = prune.prune_at_init(model, "grasp", batch, 0.8, seed=3)
    assert all(torch.equal(by_select[n], direct[n]) for n in direct)
    with pytest.raises(ValueError, match="allowed: rounds=1"):
        prune.scores_at_init(model, "synflow", None, rounds=3)


def test_yardstick_hand_example():
    a = {"w": torch.tensor([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=torch.bool)}
    b = {"w": torch.tensor([1, 1, 0, 0, 1, 1, 0, 0, 0, 0], dtype=torch.bool)}
    fixed = {"w": torch.tensor([0, 0, 0, 1, 1, 1, 1, 0, 0, 0], dtype=torch.bool)}
    found = {"images": {0: {0.6: a}, 1: {0.6: b}}}
    out = anatomy.yardstick(found, "images", {0.6: fixed})
    row = out.iloc[0]
    assert row["sparsity %"] == 60.0
    assert row["within reference"] == pytest.approx(0.5)  # a and b share 2 of 4
    assert row["between"] == pytest.approx((1 / 4 + 2 / 4) / 2)  # fixed vs a: 1, vs b: 2
    assert row["distance ratio"] == pytest.approx((1 - 0.375) / 0.5)


def test_material_masks_score_a_material_with_nothing_to_draw_once(toy, monkeypatch):
    from opai_lib import prune
    from opai_lib.materials import Material

    train, _ = toy
    model = models.get_model("tiny", train.num_classes, 0.5, seed=0)
    calls = []
    real = prune.masks_at_init
    monkeypatch.setattr(prune, "masks_at_init", lambda *a, **k: calls.append(1) or real(*a, **k))
    ones = anatomy.material_masks(model, "snip", Material("all_ones", per_class=2), "synthetic",
                                  train, [0, 1, 2], [0.9])
    assert len(calls) == 1
    assert all(torch.equal(ones[2][0.9][n], ones[0][0.9][n]) for n in ones[0][0.9])
    images = anatomy.material_masks(model, "snip", Material("image", per_class=2), "synthetic",
                                    train, [0, 1, 2], [0.9])
    assert len(calls) == 4  # images differ at every draw: scored three times
    assert masks.overlap(images[0][0.9], images[1][0.9]) < 1.0


def test_glue_tests_counts_and_ratios_under_a_prefix(monkeypatch):
    import myst_nb
    import pandas as pd

    glued = {}
    monkeypatch.setattr(myst_nb, "glue", lambda k, v, display: glued.__setitem__(k, v))
    table = pd.DataFrame({"criterion": ["SNIP", "SNIP", "GraSP"],
                          "material": ["DOP", "DOP", "random labels"],
                          "sparsity %": [90.0, 95.0, 90.0], "distance ratio": [2.5, 1.0, 0.99],
                          "p (Holm)": [0.001, 0.2, 0.01]})
    anatomy.glue_tests(table, labels=("DOP",), prefix="vgg")
    assert glued["vgg_cells"] == 3 and glued["vgg_cells_moved"] == 2
    assert glued["vgg_cells_moved_near"] == 1  # GraSP's passes at a ratio under 1
    assert glued["vgg_snip_dop_moved"] == 1 and glued["vgg_snip_dop_cells"] == 2
    assert glued["vgg_grasp_dop_cells"] == 0
    assert glued["vgg_snip_dop_95_ratio"] == 1.0
    assert glued["vgg_grasp_random_labels_90_ratio"] == 0.99
    anatomy.glue_tests(table, labels=("DOP",))
    assert glued["cells"] == 3 and glued["snip_dop_90_ratio"] == 2.5


def test_the_smoke_chapter_draws_only_the_materials_its_prose_quotes():
    smoke = anatomy.chapter("smoke", "resnet20", None, None, 0)
    assert smoke.materials == anatomy.PROSE_MATERIALS
    assert {a.label for a in smoke.arms()} == set(anatomy.PROSE_MATERIALS)
    assert anatomy.chapter("cpu", "resnet20", None, None, 0).materials == ()
    chosen = anatomy.chapter("smoke", "resnet20", None, None, 0, materials=["images", "DOP"])
    assert chosen.materials == ("images", "DOP")
    second = anatomy.chapter("smoke", "vgg16_bn", None, None, 0, materials=["images", "DOP"])
    full = anatomy.chapter_tables(anatomy.chapter("cpu", "resnet20", None, None, 0), second,
                                  20000, None, 0.95, 2)
    assert full["spearman"].masks == full["tests"].masks  # the published table's key
    tables = anatomy.chapter_tables(smoke, second, 20000, None, 0.95, 2)
    assert tables["spearman"].masks.materials == anatomy.PROSE_SCORES
    assert tables["spearman"].masks.draws == tables["tests"].masks.draws
    picked = anatomy.chapter_tables(smoke, second, 20000, None, 0.95, 2,
                                    ["images", "random labels"])
    assert picked["spearman"].masks.materials == ("images", "random labels")
    for bad in (["DOP"], ["images", "one patch"], "images"):  # one patch: not drawn
        with pytest.raises(ValueError, match="score_materials"):
            anatomy.chapter_tables(smoke, second, 20000, None, 0.95, 2, bad)


@pytest.mark.parametrize("profile, rounds", [("smoke", 5), ("cpu", 100)])
def test_the_synflow_yardstick_runs_in_the_profiles_rounds(monkeypatch, profile, rounds):
    seen = {}
    monkeypatch.setattr(anatomy, "_found", lambda setting: {})  # no masks, no data read
    monkeypatch.setattr(anatomy.MaskDraws, "network", lambda self: None)
    monkeypatch.setattr(anatomy, "synflow_yardstick",
                        lambda found, model, seed, options: seen.setdefault("o", options))
    anatomy.SynflowYardstick(anatomy.MaskDraws(profile=profile)).frames()
    assert seen["o"].rounds == rounds


def test_score_materials_follow_the_drawn_order_and_default_to_those_drawn():
    second = anatomy.chapter("smoke", "vgg16_bn", None, None, 0, materials=["images", "DOP"])
    smoke = anatomy.chapter("smoke", "resnet20", None, None, 0)
    swapped = anatomy.chapter_tables(smoke, second, 20000, None, 0.95, 2, ["DOP", "images"])
    assert swapped["spearman"].masks.materials == ("images", "DOP")  # one key, any order
    every = anatomy.chapter_tables(smoke, second, 20000, None, 0.95, 2,
                                   list(anatomy.PROSE_MATERIALS))
    assert every["spearman"].masks == smoke  # all drawn: the masks' own setting
    no_dop = anatomy.chapter("smoke", "resnet20", None, None, 0,
                             materials=["images", "random labels"])
    tables = anatomy.chapter_tables(no_dop, second, 20000, None, 0.95, 2)
    assert tables["spearman"].masks == no_dop  # images alone would correlate nothing

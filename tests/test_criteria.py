"""Every criterion against an independent computation on a small net."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from opai_lib import criteria, models


def tiny_net(seed=0):
    return models.get_model("tiny", width=0.5, seed=seed).double()


def batch(seed=0, n=12):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g, dtype=torch.float64), \
        torch.randint(0, 10, (n,), generator=g)


def names_of(net):
    return list(models.prunable(net))


def call(net, params, x):
    return functional_call(net, params, (x,))


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_snip_is_the_gradient_with_respect_to_an_all_ones_mask():
    net, batches = tiny_net(), [batch(0), batch(1)]
    names = names_of(net)
    scores = criteria.score("snip", net, batches, names, None, gen())
    ref = copy.deepcopy(net).eval()
    params = dict(ref.named_parameters())
    ones = {n: torch.ones_like(params[n], requires_grad=True) for n in names}
    masked = {k: p * ones[k] if k in ones else p for k, p in params.items()}
    loss = sum(F.cross_entropy(call(ref, masked, x), y) for x, y in batches)
    grads = torch.autograd.grad(loss, [ones[n] for n in names])
    for n, g in zip(names, grads, strict=True):
        torch.testing.assert_close(scores[n], g.abs())


def test_iterative_snip_and_force_score_the_masked_net():
    net, batches = tiny_net(), [batch(0)]
    names = names_of(net)
    g = gen(3)
    mask = {n: torch.rand(p.shape, generator=g) < 0.5 for n, p in models.prunable(net).items()}
    ref = copy.deepcopy(net).train()
    params = dict(ref.named_parameters())
    effective = {k: (p * mask[k]).detach().requires_grad_() if k in mask else p
                 for k, p in params.items()}
    x, y = batches[0]
    grads = torch.autograd.grad(F.cross_entropy(call(ref, effective, x), y),
                                [effective[n] for n in names])
    iter_snip = criteria.score("iter_snip", net, batches, names, mask, gen())
    force = criteria.score("force", net, batches, names, mask, gen())
    for n, grad in zip(names, grads, strict=True):
        torch.testing.assert_close(iter_snip[n], (effective[n] * grad).abs())
        torch.testing.assert_close(force[n], (params[n] * grad).abs())
        assert (iter_snip[n][~mask[n]] == 0).all()  # pruned weights score 0 in Iter-SNIP
        assert (force[n][~mask[n]] > 0).any()  # but may come back in FORCE


@pytest.mark.parametrize("bn_mode", ["train", "eval"])
def test_grasp_hessian_gradient_product_matches_autograd_hvp(bn_mode):
    net, batches, T = tiny_net(), [batch(0), batch(1)], 200.0
    names = names_of(net)
    scores = criteria.score("grasp", net, batches, names, None, gen(), temperature=T,
                            bn_mode=bn_mode, reinit_linear=False)
    ref = copy.deepcopy(net).train(bn_mode == "train")
    params = dict(ref.named_parameters())

    def loss(*weights):
        p = {**params, **dict(zip(names, weights, strict=True))}
        return sum(F.cross_entropy(call(ref, p, x) / T, y) for x, y in batches)

    theta = tuple(params[n].detach() for n in names)
    g = torch.autograd.grad(loss(*[t.requires_grad_() for t in theta]), theta)
    _, hg = torch.autograd.functional.hvp(loss, tuple(t.detach() for t in theta), g)
    for n, t, h in zip(names, theta, hg, strict=True):
        torch.testing.assert_close(scores[n], t * h)  # = -S: keeping the highest removes max S


def test_grasp_reinitialises_the_linear_layers_of_its_copy_only():
    net, batches = tiny_net(), [batch(0)]
    names = names_of(net)
    before = copy.deepcopy(net.state_dict())
    scores = criteria.score("grasp", net, batches, names, None, gen(5))
    ref = copy.deepcopy(net)
    nn.init.xavier_normal_(ref.fc.weight, generator=gen(5))
    expected = criteria.score("grasp", ref, batches, names, None, gen(5), reinit_linear=False)
    for n in names:
        torch.testing.assert_close(scores[n], expected[n])
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])


def test_synflow_matches_the_closed_form_of_a_two_layer_linear_net():
    g = gen(0)
    net = nn.Sequential(nn.Linear(5, 4, bias=False), nn.ReLU(), nn.Linear(4, 3, bias=False))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))  # mixed signs: the ReLU would cut them
    before = copy.deepcopy(net.state_dict())
    names = names_of(net)
    scores = criteria.score("synflow", net, None, names, None, gen(), input_shape=(5,), double=True)
    w1, w2 = net[0].weight.detach().abs().double(), net[2].weight.detach().abs().double()
    # R = 1^T |W2| |W1| 1; dR/dW1[i,j] = sum_k |W2|[k,i], dR/dW2[k,i] = sum_j |W1|[i,j].
    torch.testing.assert_close(scores["0.weight"], w1 * w2.sum(0)[:, None])
    torch.testing.assert_close(scores["2.weight"], w2 * w1.sum(1)[None, :])
    assert scores["0.weight"].dtype == torch.float64
    for k, v in net.state_dict().items():  # the caller's weights keep their signs
        assert torch.equal(v, before[k])


def test_synflow_on_a_mask_and_in_float32():
    net = models.get_model("tiny", width=0.5, seed=1)
    names = names_of(net)
    mask = {n: torch.rand(p.shape, generator=gen(2)) < 0.5
            for n, p in models.prunable(net).items()}
    s32 = criteria.score("synflow", net, None, names, mask, gen())
    s64 = criteria.score("synflow", net, None, names, mask, gen(), double=True)
    for n in names:
        assert (s32[n][~mask[n]] == 0).all() and (s32[n] >= 0).all()
        torch.testing.assert_close(s32[n].double(), s64[n], rtol=1e-4, atol=0)
    with pytest.raises(ValueError, match="input_shape"):
        criteria.score("synflow", net, [batch(0)], names, None, gen(), input_shape=(3, 32, 32))


def test_prospr_is_the_meta_gradient_through_sgd_steps():
    net, x, y = tiny_net(), *batch(0)
    names = names_of(net)
    lr, mom = 0.3, 0.9
    scores = criteria.score("prospr", net, [(x, y)], names, None, gen(), steps=2, lr=lr,
                            momentum=mom, bn_mode="eval")
    ref = copy.deepcopy(net).eval()
    params = {k: p.detach() for k, p in ref.named_parameters()}

    def loss(p):
        return F.cross_entropy(call(ref, p, x), y)

    def after_two_steps(m):
        p0 = {k: p * m[k] if k in m else p for k, p in params.items()}
        v1 = torch.func.grad(loss)(p0)
        p1 = {k: p0[k] - lr * v1[k] for k in p0}
        g1 = torch.func.grad(loss)(p1)
        p2 = {k: p1[k] - lr * (mom * v1[k] + g1[k]) for k in p0}
        return loss(p2)

    meta = torch.func.grad(after_two_steps)({n: torch.ones_like(params[n]) for n in names})
    for n in names:
        torch.testing.assert_close(scores[n], meta[n].abs())


def test_magnitude_and_random():
    net = tiny_net()
    names = names_of(net)
    params = dict(net.named_parameters())
    mag = criteria.score("magnitude", net, None, names, None, gen())
    assert all(torch.equal(mag[n], params[n].detach().abs()) for n in names)
    a = criteria.score("random", net, None, names, None, gen(7))
    b = criteria.score("random", net, None, names, None, gen(7))
    c = criteria.score("random", net, None, names, None, gen(8))
    assert all(torch.equal(a[n], b[n]) for n in names)
    assert not all(torch.equal(a[n], c[n]) for n in names)
    assert all(((a[n] >= 0) & (a[n] < 1)).all() for n in names)


@pytest.mark.parametrize("name", criteria.CRITERIA.names())
def test_every_criterion_scores_every_prunable_tensor_and_leaves_the_model(name):
    net = models.get_model("tiny", width=0.5, seed=0)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics that train mode would move
            m.running_mean.fill_(0.3)
    net.bn2.eval()  # mixed modes: each module's own must come back
    modes = [m.training for m in net.modules()]
    before = copy.deepcopy(net.state_dict())
    x, y = batch(0)
    names = names_of(net)
    scores = criteria.score(name, net, [(x.float(), y)], names, None, gen())
    assert [m.training for m in net.modules()] == modes
    assert list(scores) == names
    for n, p in models.prunable(net).items():
        assert scores[n].shape == p.shape and torch.isfinite(scores[n]).all()
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in net.parameters())


def test_bad_options_are_rejected():
    net, names = tiny_net(), names_of(tiny_net())
    with pytest.raises(ValueError, match="SnipOptions.bn_mode must be one of"):
        criteria.score("snip", net, [batch(0)], names, None, gen(), bn_mode="inference")
    with pytest.raises(ValueError, match="GraspOptions.temperature = 0; allowed: a positive"):
        criteria.score("grasp", net, [batch(0)], names, None, gen(), temperature=0)
    with pytest.raises(ValueError, match="ProsprOptions.steps must be of type int, got 1.5"):
        criteria.score("prospr", net, [batch(0)], names, None, gen(), steps=1.5)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['temprature'\]"):
        criteria.score("grasp", net, [batch(0)], names, None, gen(), temprature=100)
    with pytest.raises(ValueError, match="SynflowOptions.input_shape"):
        criteria.CRITERIA.get("synflow").options(input_shape=(3, 0, 32))

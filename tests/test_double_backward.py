"""The fused double backward against finite differences and PyTorch's generic one."""

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from opai_lib import criteria, double_backward, models

CONV_GEOMETRIES = [  # (in, out, kernel, stride, padding, bias, height, width)
    (3, 4, 3, 1, 1, False, 7, 7),
    (4, 6, 3, 2, 1, True, 8, 6),
    (2, 3, (1, 3), 1, (0, 2), False, 5, 6),
    (3, 2, 5, 2, 0, True, 9, 9),
    (2, 4, 1, 2, 0, False, 6, 5),
]


def hessian_vector_product(loss, inputs, v):
    """H v by differentiating the gradient's inner product with v (second order only)."""
    grads = torch.autograd.grad(loss, inputs, create_graph=True)
    return torch.autograd.grad(sum((g * t).sum() for g, t in zip(grads, v, strict=True)), inputs)


def fused(module: nn.Module) -> nn.Module:
    return double_backward.fuse(copy.deepcopy(module))


@pytest.mark.parametrize("geometry", CONV_GEOMETRIES)
def test_conv_second_derivatives_match_finite_differences(geometry):
    c_in, c_out, k, stride, padding, bias, h, w = geometry
    conv = nn.Conv2d(c_in, c_out, k, stride, padding, bias=bias).double()
    conv.requires_grad_(False)
    net = fused(conv)
    assert type(net) is double_backward.FusedConv2d
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, c_in, h, w, dtype=torch.float64, generator=gen, requires_grad=True)
    weight = conv.weight.clone().requires_grad_(True)

    def f(x, weight):  # a non-linear head so that second derivatives are not trivial
        return torch.tanh(functional_call(net, {"weight": weight}, (x,)))

    assert torch.autograd.gradcheck(f, (x, weight))
    assert torch.autograd.gradgradcheck(f, (x, weight))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("geometry", CONV_GEOMETRIES)
def test_conv_hessian_vector_product_matches_pytorch(geometry, channels_last):
    c_in, c_out, k, stride, padding, bias, h, w = geometry
    torch.manual_seed(1)
    conv = nn.Conv2d(c_in, c_out, k, stride, padding, bias=bias).requires_grad_(False)
    x = torch.randn(3, c_in, h, w)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    target = torch.randn_like(conv(x))
    v = (torch.randn_like(x), torch.randn_like(conv.weight))

    def hvp(module):
        inputs = (x.clone().requires_grad_(True), conv.weight.clone().requires_grad_(True))
        y = functional_call(module, {"weight": inputs[1]}, (inputs[0],))
        return hessian_vector_product((torch.tanh(y) * target).sum(), inputs, v)

    for ours, generic in zip(hvp(fused(conv)), hvp(conv), strict=True):
        torch.testing.assert_close(ours, generic, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape, eps", [((4, 3, 3, 2), 1e-5), ((2, 3, 1, 1), 0.3),
                                        ((1, 3, 2, 3), 0.3)])
def test_batchnorm_second_derivatives_match_finite_differences(shape, eps):
    # A large eps makes an eps mistake visible above gradgradcheck's tolerance.
    bn = nn.BatchNorm2d(3, eps=eps).double().requires_grad_(False)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, 1.5, -2.0]))
        bn.bias.copy_(torch.tensor([0.1, -0.3, 0.0]))
    net = fused(bn).train()
    assert type(net) is double_backward.FusedBatchNorm2d
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(*shape, dtype=torch.float64, generator=gen) + 2).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: torch.sin(net(x)), (x,))
    assert torch.autograd.gradgradcheck(lambda x: torch.sin(net(x)), (x,))


@pytest.mark.parametrize("channels_last", [False, True])
def test_batchnorm_hessian_vector_product_matches_pytorch(channels_last):
    torch.manual_seed(2)
    bn = nn.BatchNorm2d(4).requires_grad_(False)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.uniform_(-1, 1)
    x = torch.randn(8, 4, 5, 5) * 0.5 + 1.0
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    target, v = torch.randn_like(x), torch.randn_like(x)

    def hvp(module):
        inputs = (x.clone().requires_grad_(True),)
        return hessian_vector_product((torch.tanh(module.train()(inputs[0])) * target).sum(),
                                      inputs, (v,))[0]

    torch.testing.assert_close(hvp(fused(bn)), hvp(copy.deepcopy(bn)), rtol=1e-4, atol=1e-5)


def test_fused_batchnorm_statistics_stay_accurate_in_channels_last_layout():
    # A large mean relative to the spread is where a one-pass variance loses digits.
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(64, 8, 16, 16, generator=gen) * 0.5 + 3.0
    bn = nn.BatchNorm2d(8).requires_grad_(False)
    exact = F.batch_norm(x.double(), None, None, training=True)
    for layout in (torch.contiguous_format, torch.channels_last):
        y = fused(bn).train()(x.contiguous(memory_format=layout))
        assert (y.double() - exact).abs().max() < 2e-6


def test_fused_layers_compute_the_same_forward_and_keep_their_names():
    model = models.get_model("resnet20", num_classes=10, width=0.25, seed=0)
    model.requires_grad_(False)
    x = torch.randn(4, 3, 32, 32)
    net = fused(model)
    assert list(net.state_dict()) == list(model.state_dict())
    for mode in (True, False):  # train mode updates running statistics: fresh copies
        torch.testing.assert_close(fused(model).train(mode)(x),
                                   copy.deepcopy(model).train(mode)(x), rtol=1e-4, atol=1e-5)
    kinds = {type(m) for m in net.modules()}
    assert nn.Conv2d not in kinds and nn.BatchNorm2d not in kinds


def test_fuse_leaves_unsupported_layers_alone():
    grouped = nn.Conv2d(4, 4, 3, groups=2)
    dilated = nn.Conv2d(4, 4, 3, dilation=2)
    same = nn.Conv2d(4, 4, 3, padding="same")
    plain_bn = nn.BatchNorm2d(4, affine=False)
    net = fused(nn.Sequential(grouped, dilated, same, plain_bn))
    assert [type(m) for m in net] == [nn.Conv2d] * 3 + [nn.BatchNorm2d]


def test_fused_batchnorm_with_trainable_affine_parameters_gets_their_gradients():
    bn = nn.BatchNorm2d(3).train()
    x = torch.randn(4, 3, 5, 5).requires_grad_(True)
    target = torch.randn(4, 3, 5, 5)
    grads = [torch.autograd.grad((torch.tanh(m(x)) * target).sum(), [x, m.weight, m.bias])
             for m in (fused(bn), bn)]
    for ours, generic in zip(*grads, strict=True):
        torch.testing.assert_close(ours, generic)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_fused_batchnorm_updates_running_statistics_like_pytorch(momentum):
    bn = nn.BatchNorm2d(3, momentum=momentum).requires_grad_(False).train()
    net = fused(bn)
    for step in range(3):
        x = torch.randn(4, 3, 5, 5) * (step + 1) + step
        net(x), bn(x)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(net, name), getattr(bn, name))


def test_fused_batchnorm_refuses_one_value_per_channel_like_pytorch():
    net = fused(nn.BatchNorm2d(3).requires_grad_(False)).train()
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        net(torch.randn(1, 3, 1, 1))


@pytest.mark.parametrize("needs", [(True, False), (False, True)])
def test_conv_second_derivatives_when_only_one_input_needs_grad(needs):
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1).double().requires_grad_(False)
    net = fused(conv)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 2, 7, 6, dtype=torch.float64, generator=gen).requires_grad_(needs[0])
    weight = conv.weight.clone().requires_grad_(needs[1])
    inputs = [t for t in (x, weight) if t.requires_grad]

    def f(*args):
        xs, ws = (args[0], weight) if needs[0] else (x, args[0])
        return torch.tanh(functional_call(net, {"weight": ws}, (xs,)))

    assert torch.autograd.gradgradcheck(f, inputs)


def test_conv_changed_after_fuse_to_an_unsupported_mode_runs_pytorchs_own():
    conv = nn.Conv2d(2, 2, 3, padding=1)
    net = fused(conv)
    net.padding_mode = conv.padding_mode = "reflect"
    x = torch.randn(1, 2, 6, 6)
    torch.testing.assert_close(net(x), conv(x))


def test_third_derivatives_are_refused():
    conv = double_backward.fuse(nn.Conv2d(2, 2, 3).requires_grad_(False))
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    (g,) = torch.autograd.grad(torch.tanh(conv(x)).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="second derivatives only"):
        torch.autograd.grad((g * g).sum(), x, create_graph=True)


def test_grasp_scores_of_resnet20_match_the_generic_double_backward():
    model = models.get_model("resnet20", num_classes=10, width=0.5, seed=0)
    names = models.prunable(model)
    gen = torch.Generator().manual_seed(4)
    batch = (torch.randn(16, 3, 32, 32, generator=gen), torch.arange(16) % 10)
    ours = criteria.score("grasp", model, [batch], names, None, None, reinit_linear=False)

    # The same computation through PyTorch's own double backward, in float64.
    net = copy.deepcopy(model).double().train().requires_grad_(False)
    params = dict(net.named_parameters())
    weights = [params[n].requires_grad_(True) for n in names]
    loss = F.cross_entropy(net(batch[0].double()) / 200, batch[1])
    grads = torch.autograd.grad(loss, weights, create_graph=True)
    hg = hessian_vector_product(loss, weights, [g.detach() for g in grads])
    for n, w, h in zip(names, weights, hg, strict=True):
        expected = (w * h).detach()
        err = (ours[n].double() - expected).abs().max() / expected.abs().max()
        assert err < 1e-3, n

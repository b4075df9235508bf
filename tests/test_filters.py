import copy

import pytest
import torch
import torch.nn.functional as F

from opai_lib import data, filters, masks, models
from opai_lib.config import Recipe
from opai_lib.train import train


def test_masked_block_equals_the_physically_smaller_block():
    model = models.get_model("resnet20", seed=0).eval()
    for m in model.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.bias.data.uniform_(-1, 1)
    block = model.layer2[1]
    w1, w2 = block.conv1.weight.detach().clone(), block.conv2.weight.detach().clone()
    mask = filters.l1_filter_mask(model, 0.5)
    keep = mask["layer2.1.conv1.weight"][:, 0, 0, 0]
    assert int(keep.sum()) == 16
    # the dropped filters are the 16 with the smallest L1 norms
    norms = w1.abs().sum(dim=(1, 2, 3))
    assert norms[~keep].max() <= norms[keep].min()

    x = torch.randn(2, 32, 16, 16)
    bn1, bn2 = block.bn1, block.bn2
    h = F.conv2d(x, w1[keep], padding=1)
    h = F.batch_norm(h, bn1.running_mean[keep], bn1.running_var[keep], bn1.weight[keep],
                     bn1.bias[keep], eps=bn1.eps)
    h = F.conv2d(F.relu(h), w2[:, keep], padding=1)
    h = F.batch_norm(h, bn2.running_mean, bn2.running_var, bn2.weight, bn2.bias, eps=bn2.eps)
    small = F.relu(h + x)

    masks.apply_mask(model, mask)
    with torch.no_grad():
        assert torch.allclose(block(x), small, atol=1e-5)


def test_vgg_chains_filters_and_keeps_one_per_layer():
    model = models.get_model("vgg16_bn", width=0.125)
    mask = filters.l1_filter_mask(model, 0.99)
    first, second = mask["features.0.weight"], mask["features.3.weight"]
    kept = first[:, 0, 0, 0]
    assert int(kept.sum()) == 1  # at least one filter survives
    assert torch.equal(second[:, :, 0, 0].any(0), kept)  # consumer reads only kept maps
    assert "classifier.weight" not in mask


def test_bad_fraction_and_model():
    with pytest.raises(ValueError, match="fraction must be a float in \\[0, 1\\)"):
        filters.l1_filter_mask(models.get_model("resnet20"), 1.0)
    with pytest.raises(ValueError, match="filter pruning knows"):
        filters.l1_filter_mask(models.get_model("tiny"), 0.5)


def randomised_batchnorm(model):
    """Non-trivial BatchNorm statistics and affine parameters, drawn from seed 0."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) * 2 - 1)
    return model


@pytest.mark.parametrize("name, width", [("resnet20", 0.5), ("resnet20_proj", 0.25),
                                         ("vgg16_bn", 0.125)])
def test_smaller_network_gives_the_masked_originals_outputs(name, width):
    model = randomised_batchnorm(models.get_model(name, width=width, seed=0)).eval()
    keep = filters.l1_filters(model, 0.5)
    small = filters.remove_filters(model, keep).eval()
    masked = copy.deepcopy(model)
    masks.apply_mask(masked, filters.l1_filter_mask(model, 0.5))
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(small(x), masked(x), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(model(x), masked(x), atol=1e-3)  # the pruning did something
    modules = dict(small.named_modules())
    for pair in filters.producer_consumer_pairs(model):
        n = int(keep[pair.producer].sum())
        assert modules[pair.producer].weight.shape[0] == n
        assert modules[pair.norm].running_mean.shape == (n,)
        assert modules[pair.consumer].weight.shape[1] == n
    assert filters.parameter_count(small) < filters.parameter_count(masked) \
        < filters.parameter_count(model)
    assert filters.multiply_adds(small) < filters.multiply_adds(model) \
        == filters.multiply_adds(masked)


def test_smaller_network_trains_and_keeps_an_attached_mask_cut_to_size(toy):
    model = models.get_model("resnet20", width=0.25, seed=0)
    keep = filters.l1_filters(model, 0.5)
    mask = filters.as_mask(model, keep)
    mask["linear.weight"] = torch.rand(10, 16, generator=torch.Generator().manual_seed(0)) < 0.5
    masks.apply_mask(model, mask)
    small = filters.remove_filters(model, keep)
    cut = masks.get_mask(small)
    assert cut["layer1.0.conv1.weight"].shape == (2, 4, 3, 3)
    assert cut["layer1.0.conv1.weight"].all() and cut["layer1.0.conv2.weight"].all()
    assert torch.equal(cut["linear.weight"], mask["linear.weight"])
    train(small, data.batches(toy[0], 64, True), Recipe(epochs=1, batch_size=64, lr=0.05),
          device="cpu", progress=False, stop_step=2)
    assert masks.pruned_nonzero(small) == 0


def test_counts_by_hand_on_a_quarter_width_resnet20():
    """ResNet-20 at width 1/4: stages of 4, 8 and 16 channels at 32, 16 and 8 pixels."""
    model = models.get_model("resnet20", width=0.25)
    conv = lambda c_in, c_out: 9 * c_in * c_out  # weights of a 3x3 convolution
    stem, head = conv(3, 4), 16 * 10 + 10
    bn = 2 * (4 + 3 * 2 * 4 + 3 * 2 * 8 + 3 * 2 * 16)  # gamma and beta of 19 BatchNorms
    blocks = [(4, 4, 4)] * 3 + [(4, 8, 8)] + [(8, 8, 8)] * 2 + [(8, 16, 16)] + [(16, 16, 16)] * 2
    dense = stem + head + bn + sum(conv(i, m) + conv(m, o) for i, m, o in blocks)
    assert dense == 17326
    assert filters.parameter_count(model) == dense
    pixels = [32 * 32] * 3 + [16 * 16] * 3 + [8 * 8] * 3  # output size of each block
    macs = 32 * 32 * conv(3, 4) + 16 * 10 + sum(
        p * (conv(i, m) + conv(m, o)) for p, (i, m, o) in zip(pixels, blocks, strict=True))
    assert macs == 2617504
    assert filters.multiply_adds(model) == macs

    small = filters.remove_filters(model, filters.l1_filters(model, 0.5))
    halved = [(i, m // 2, o) for i, m, o in blocks]  # the first conv of each block halved
    bn_small = bn - 2 * (3 * 2 + 3 * 4 + 3 * 8)
    assert filters.parameter_count(small) == stem + head + bn_small + sum(
        conv(i, m) + conv(m, o) for i, m, o in halved)
    assert filters.multiply_adds(small) == 32 * 32 * conv(3, 4) + 16 * 10 + sum(
        p * (conv(i, m) + conv(m, o)) for p, (i, m, o) in zip(pixels, halved, strict=True))
    assert filters.multiply_adds(small, image_size=64) == 4 * (filters.multiply_adds(small)
                                                               - 160) + 160


def test_vgg16_counts_match_the_published_figures():
    model = models.get_model("vgg16_bn")
    assert filters.multiply_adds(model) == 313_201_664  # about 313M, DESIGN.md
    assert filters.parameter_count(model) == 14_724_042


def test_bad_keep_vectors_and_sizes():
    model = models.get_model("resnet20", width=0.25)
    keep = filters.l1_filters(model, 0.5)
    with pytest.raises(ValueError, match="keep must name exactly the producers"):
        filters.remove_filters(model, {k: v for k, v in list(keep.items())[1:]})
    empty = {**keep, "layer1.0.conv1": torch.zeros(4, dtype=torch.bool)}
    with pytest.raises(ValueError, match=r"keep\['layer1.0.conv1'\] must be a bool vector of 4 "
                                         r"filters keeping at least one, .* keeping 0"):
        filters.remove_filters(model, empty)
    with pytest.raises(ValueError, match="must be a bool vector of 4"):
        filters.as_mask(model, {**keep, "layer1.0.conv1": torch.ones(4)})
    with pytest.raises(ValueError, match="image_size must be an integer >= 1, got 0"):
        filters.multiply_adds(model, image_size=0)
    with pytest.raises(ValueError, match="not TinyConvNet: it has no producer-consumer pair"):
        filters.remove_filters(models.get_model("tiny"), keep)

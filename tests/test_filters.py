import pytest
import torch
import torch.nn.functional as F

from opai_lib import filters, masks, models


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

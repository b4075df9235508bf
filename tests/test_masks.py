import pytest
import torch

from opai_lib import data, masks, models
from opai_lib.config import Recipe
from opai_lib.train import load_weights, train


def bernoulli_mask(model, density, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=g) < density
            for n, p in models.prunable(model).items()}


def test_apply_mask_zeroes_exactly_the_pruned_weights():
    model = models.get_model("tiny")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    mask = bernoulli_mask(model, 0.3)
    masks.apply_mask(model, mask)
    for n, p in model.named_parameters():
        if n in mask:
            assert torch.equal(p, before[n] * mask[n])
        else:
            assert torch.equal(p, before[n])
    assert set(masks.get_mask(model)) == set(mask)


def test_bad_masks_are_rejected_before_any_change():
    model = models.get_model("tiny")
    w = model.conv1.weight.detach().clone()
    good = torch.ones_like(model.conv1.weight, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"mask for conv2.weight has shape \(3,\)"):
        masks.apply_mask(model, {"conv1.weight": ~good, "conv2.weight": torch.ones(3).bool()})
    assert torch.equal(model.conv1.weight, w)
    with pytest.raises(TypeError, match="bool tensor"):
        masks.apply_mask(model, {"conv1.weight": good.float()})
    with pytest.raises(KeyError, match="conv9.weight"):
        masks.apply_mask(model, {"conv9.weight": good})


def test_density_and_empty_layers():
    mask = {"a": torch.tensor([True, False, False, False]), "b": torch.zeros(4, dtype=torch.bool)}
    d = masks.density(mask)
    assert d == {"a": 0.25, "b": 0.0, "total": 0.125}
    assert masks.empty_layers(mask) == ["b"]


@pytest.mark.parametrize("nesterov", [False, True])
def test_pruned_weights_stay_zero_through_sgd(nesterov, toy):
    train_set, _ = toy
    model = models.get_model("tiny", seed=1)
    masks.apply_mask(model, bernoulli_mask(model, 0.2))
    kept = {n: p.detach().clone() for n, p in models.prunable(model).items()}
    recipe = Recipe(epochs=2, batch_size=32, lr=0.1, momentum=0.9, nesterov=nesterov,
                    weight_decay=5e-3, schedule="constant")
    train(model, data.batches(train_set, 32, True), recipe, device="cpu", progress=False)
    assert masks.pruned_nonzero(model) == 0
    mask = masks.get_mask(model)
    moved = [(p[mask[n]] != kept[n][mask[n]]).float().mean()
             for n, p in models.prunable(model).items()]
    assert min(moved) > 0.9  # the kept weights did train


def test_masked_resnet20_at_90_percent_trains_with_pruned_weights_at_zero(toy):
    train_set, _ = toy
    model = models.get_model("resnet20", seed=0)
    masks.apply_mask(model, bernoulli_mask(model, 0.1))
    recipe = Recipe(epochs=1, batch_size=64, lr=0.1, nesterov=True, weight_decay=5e-4,
                    schedule="constant")
    train(model, data.batches(train_set, 64, True), recipe, device="cpu", progress=False)
    assert masks.pruned_nonzero(model) == 0
    assert abs(masks.density(masks.get_mask(model))["total"] - 0.1) < 0.01


def test_mask_survives_save_and_load(tmp_path):
    model = models.get_model("tiny", seed=2)
    mask = bernoulli_mask(model, 0.5)
    masks.apply_mask(model, mask)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    fresh = models.get_model("tiny", seed=3)
    load_weights(fresh, torch.load(tmp_path / "m.pt"))
    assert all(torch.equal(masks.get_mask(fresh)[n], mask[n]) for n in mask)
    for (n, p), q in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(p, q), n


def test_overlap_of_masks_is_one_for_equal_zero_for_disjoint_and_density_for_random():
    g = torch.Generator().manual_seed(0)
    a = {"w": torch.rand(200, 100, generator=g) < 0.3, "v": torch.rand(50, generator=g) < 0.3}
    assert masks.overlap(a, a) == 1.0
    assert masks.overlap(a, {n: ~m for n, m in a.items()}) == 0.0
    b = {n: torch.rand(m.shape, generator=g) < 0.1 for n, m in a.items()}
    assert abs(masks.overlap(a, b) - 0.1) < 0.02  # independent draws: b's density
    with pytest.raises(ValueError, match="different tensors"):
        masks.overlap(a, {"w": a["w"]})


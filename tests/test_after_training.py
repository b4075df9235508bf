"""Pruning after training: exact magnitude selection, schedules, retraining, instability."""

import copy
import math

import pytest
import torch

from opai_lib import after_training, data, masks, models
from opai_lib.config import Recipe
from opai_lib.train import evaluate, train
from tests.untouchable import Untouchable

RETRAIN = Recipe(epochs=1, batch_size=32, lr=0.05, nesterov=True, weight_decay=5e-3,
                 schedule="cosine")


@pytest.fixture(scope="module")
def trained():
    """The tiny net trained for two epochs on the toy set, with its batches."""
    train_set = data.synthetic(train=True, per_class=32)
    test_set = data.synthetic(train=False, per_class=16)
    model = models.get_model("tiny", seed=0)
    batches = data.batches(train_set, 32, True, seed=1)
    train(model, batches, Recipe(epochs=2, batch_size=32, lr=0.1, schedule="cosine"),
          device="cpu", progress=False)
    return model, batches, data.batches(test_set, 80, False)


def weights(model):
    return {n: p.detach() for n, p in models.prunable(model).items()}


def test_global_magnitude_keeps_exactly_the_k_largest(trained):
    model = trained[0]
    w = weights(model)
    n = sum(t.numel() for t in w.values())
    for sparsity in (0.0, 0.3, 0.9, 0.97):
        mask = after_training.magnitude_mask(model, sparsity)
        k = round((1 - sparsity) * n)
        ranked = sorted(((abs(float(v)), name, i) for name, t in w.items()
                         for i, v in enumerate(t.flatten().tolist())), reverse=True)
        expected = {(name, i) for _, name, i in ranked[:k]}
        got = {(name, i) for name, m in mask.items()
               for i in torch.nonzero(m.flatten()).flatten().tolist()}
        assert got == expected, sparsity


def test_layerwise_magnitude_keeps_the_largest_of_each_layer(trained):
    model = trained[0]
    mask = after_training.magnitude_mask(model, 0.75, scope="layerwise")
    total = sum(m.numel() for m in mask.values())
    assert sum(int(m.sum()) for m in mask.values()) == round(0.25 * total)
    for name, t in weights(model).items():
        k = int(mask[name].sum())
        assert abs(k - 0.25 * t.numel()) <= 1, name  # every layer at the same density
        ranked = sorted(t.abs().flatten().tolist(), reverse=True)
        assert sorted(t.abs()[mask[name]].tolist(), reverse=True) == ranked[:k], name


def test_weights_already_pruned_are_never_kept(trained):
    model = copy.deepcopy(trained[0])
    w = weights(model)
    # an attached mask pruning the largest weight of every layer
    first = {n: t.abs() < t.abs().max() for n, t in w.items()}
    masks.apply_mask(model, first)
    second = after_training.magnitude_mask(model, 0.5)
    assert all(not (second[n] & ~first[n]).any() for n in first)


def test_iterative_schedule_reaches_the_target_count_with_pruned_weights_at_zero(trained):
    model, batches, test_batches = copy.deepcopy(trained[0]), trained[1], trained[2]
    n = sum(t.numel() for t in weights(model).values())
    steps = after_training.prune_and_retrain(model, batches, RETRAIN, test_batches,
                                             sparsity=0.9, rounds=3)
    # exponential schedule: density 0.1 ** (t / 3) after step t, the last exactly 0.1
    assert [s["kept"] for s in steps] == [round(0.1 ** (t / 3) * n) for t in (1, 2, 3)]
    assert steps[-1]["kept"] == round(0.1 * n)
    assert steps[-1]["sparsity"] == pytest.approx(1 - round(0.1 * n) / n, abs=1e-12)
    params = dict(model.named_parameters())
    mask = masks.get_mask(model)
    assert sum(int(m.sum()) for m in mask.values()) == round(0.1 * n)
    for name, m in mask.items():
        assert (params[name][~m] == 0).all(), name  # momentum and weight decay moved none
        assert (params[name][m] != 0).all(), name


def test_records_before_after_pruning_and_after_retraining(trained):
    model, batches, test_batches = copy.deepcopy(trained[0]), trained[1], trained[2]
    dense = evaluate(trained[0], test_batches)["accuracy"]
    one_step = copy.deepcopy(trained[0])
    masks.apply_mask(one_step, after_training.magnitude_mask(one_step, 1 - 0.2 ** 0.5))
    pruned_once = evaluate(one_step, test_batches)["accuracy"]

    steps = after_training.prune_and_retrain(model, batches, RETRAIN, test_batches,
                                             sparsity=0.8, rounds=2, schedule="exponential")
    assert steps[0]["accuracy_before"] == dense
    assert steps[0]["accuracy_pruned"] == pruned_once
    assert steps[1]["accuracy_before"] == steps[0]["accuracy_retrained"]
    assert steps[-1]["accuracy_retrained"] == evaluate(model, test_batches)["accuracy"]
    for s in steps:
        assert s["drop"] == s["accuracy_before"] - s["accuracy_pruned"]
        assert s["instability"] == pytest.approx(s["drop"] / s["accuracy_before"])
    assert after_training.mean_instability(steps) == pytest.approx(
        (steps[0]["instability"] + steps[1]["instability"]) / 2)


def test_without_retraining_each_step_starts_where_the_last_ended(trained):
    model, _, test_batches = copy.deepcopy(trained[0]), trained[1], trained[2]
    before = {n: p.clone() for n, p in model.state_dict().items()}
    steps = after_training.prune_and_retrain(model, None, None, test_batches, sparsity=0.95,
                                             rounds=3, schedule="linear", scope="layerwise")
    assert [s["accuracy_retrained"] for s in steps] == [None] * 3
    assert steps[1]["accuracy_before"] == steps[0]["accuracy_pruned"]
    # no training: kept weights unchanged, and one shot at 95 % gives the same mask
    mask = masks.get_mask(model)
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n][m], before[n][m]) for n, m in mask.items())
    one_shot = after_training.magnitude_mask(trained[0], 0.95, scope="layerwise")
    assert all(torch.equal(mask[n], one_shot[n]) for n in mask)


@pytest.mark.parametrize("kwargs, message", [
    ({"sparsity": 1.0}, r"MagnitudeOptions.sparsity = 1.0; allowed: a number in \[0, 1\)"),
    ({"sparsity": -0.1}, r"MagnitudeOptions.sparsity = -0.1; allowed"),
    ({"scope": "blockwise"}, r"MagnitudeOptions.scope must be one of \('global', "),
    ({"rounds": 0}, r"MagnitudeOptions.rounds = 0; allowed: an integer >= 1"),
    ({"schedule": "cubic"}, r"MagnitudeOptions.schedule must be one of"),
    ({"pruning": "l1"}, r"unknown option\(s\) \['pruning'\] of MagnitudeOptions"),
])
def test_bad_options_fail_before_any_compute(kwargs, message):
    model = models.get_model("tiny")
    with pytest.raises(ValueError, match=message):
        after_training.prune_and_retrain(model, Untouchable(), RETRAIN, Untouchable(), **kwargs)


def test_bad_arguments_fail_before_any_compute():
    model = models.get_model("tiny")
    with pytest.raises(ValueError, match=r"\(train_batches, recipe\) = .*allowed: both given"):
        after_training.prune_and_retrain(model, Untouchable(), None, Untouchable())
    with pytest.raises(ValueError, match="recipe = .*allowed: a config.Recipe or None"):
        after_training.prune_and_retrain(model, Untouchable(), {"epochs": 1}, Untouchable())
    with pytest.raises(ValueError, match="MagnitudeOptions.sparsity = 1.5"):
        after_training.magnitude_mask(model, 1.5)
    with pytest.raises(ValueError, match="MagnitudeOptions.scope must be one of"):
        after_training.magnitude_mask(model, 0.5, scope="local")
    with pytest.raises(ValueError, match="steps = \\[\\]; allowed: the records of at least"):
        after_training.mean_instability([])


def test_layer_collapse_is_an_error_naming_the_layer():
    model = models.get_model("tiny", seed=0)
    with torch.no_grad():
        model.fc.weight.mul_(1e-6)  # the head's weights are the smallest by far
    with pytest.raises(ValueError, match="layer collapse: .* kept no weight in fc.weight"):
        after_training.magnitude_mask(model, 0.9)
    mask = after_training.magnitude_mask(model, 0.9, scope="layerwise")
    assert math.isclose(masks.density(mask)["fc.weight"], 0.1, abs_tol=0.01)

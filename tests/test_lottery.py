"""Lottery tickets: training from a step, exact rewinding, IMP's masks, the reinit control."""

import copy

import pytest
import torch
import torch.nn.functional as F

from opai_lib import data, lottery, masks, models
from opai_lib.config import Recipe
from opai_lib.train import train
from tests.untouchable import Untouchable

RECIPE = Recipe(epochs=2, batch_size=32, lr=0.1, nesterov=True, weight_decay=5e-4,
                schedule="cosine", warmup_epochs=0.5)


@pytest.fixture(scope="module")
def setting():
    """The tiny net at initialisation, the toy set's batches (10 steps an epoch)."""
    train_set = data.synthetic(train=True, per_class=32)
    test_set = data.synthetic(train=False, per_class=16)
    return (models.get_model("tiny", seed=0), data.batches(train_set, 32, True, seed=1),
            data.batches(test_set, 80, False))


@pytest.fixture(scope="module")
def tickets(setting):
    """IMP to 80 % sparsity in two rounds, rewound to step 0 and to step 5."""
    model, batches, test_batches = setting
    return {k: lottery.find_ticket(model, batches, RECIPE, test_batches, sparsity=0.8,
                                   rounds=2, rewind_step=k) for k in (0, 5)}


def test_training_from_a_step_takes_that_steps_batch_and_learning_rate(setting):
    """One step from step 13: the 4th batch of the 2nd epoch at lr * factor(1.3), by hand."""
    model, batches, _ = setting
    recipe = Recipe(epochs=2, batch_size=32, lr=0.1, momentum=0.0, weight_decay=0.0,
                    schedule="cosine", warmup_epochs=0.5)
    net = copy.deepcopy(model)
    history = train(net, batches, recipe, device="cpu", progress=False, start_step=13,
                    stop_step=14)
    batches.set_epoch(1)
    x, y = list(batches)[3]
    by_hand = copy.deepcopy(model)
    F.cross_entropy(by_hand(x), y).backward()
    lr = 0.1 * recipe.lr_factor(1.3)
    for (name, p), q in zip(by_hand.named_parameters(), net.parameters(), strict=True):
        assert torch.allclose(p - lr * p.grad, q, atol=1e-6), name
    assert len(history) == 1 and history[0]["epoch"] == 2
    assert history[0]["lr"] == pytest.approx(0.1 * recipe.lr_factor(1.4))


def test_bad_steps_are_refused(setting):
    model, batches, _ = setting
    for start, stop in [(-1, None), (5, 5), (0, 21), (20, None), (0, 2.5)]:
        with pytest.raises(ValueError, match=r"start_step"):
            train(copy.deepcopy(model), batches, RECIPE, device="cpu", start_step=start,
                  stop_step=stop)
    with pytest.raises(ValueError, match="checkpoint = .*allowed: None when start_step"):
        train(copy.deepcopy(model), batches, RECIPE, device="cpu", checkpoint="x.ckpt",
              stop_step=3)


def test_rewinding_to_step_zero_restores_the_initial_weights(setting, tickets):
    model = setting[0]
    ticket = tickets[0]
    fresh = models.get_model("tiny", seed=0)
    for name, value in fresh.state_dict().items():
        assert torch.equal(ticket.rewind_state[name], value), name
        assert torch.equal(model.state_dict()[name], value), name  # the model is untouched
    for r in range(3):
        net = ticket.network(model, r)
        params = dict(net.named_parameters())
        for name, m in ticket.masks[r].items():
            assert torch.equal(params[name][m], fresh.state_dict()[name][m]), (r, name)
            assert (params[name][~m] == 0).all(), (r, name)


def test_rewinding_to_step_k_restores_the_weights_after_k_steps(setting, tickets):
    model, batches, test_batches = setting
    ticket = tickets[5]
    after_k = copy.deepcopy(model)
    train(after_k, batches, RECIPE, device="cpu", progress=False, stop_step=5)
    for name, value in after_k.state_dict().items():
        assert torch.equal(ticket.rewind_state[name], value), name
    assert not torch.equal(ticket.rewind_state["conv1.weight"], model.conv1.weight)
    # every round trained from the rewound weights: its result is reproduced from them
    for r in (1, 2):
        net = ticket.network(model, r)
        result = lottery.train_ticket(net, batches, RECIPE, test_batches, start_step=5)
        assert result["accuracy"] == ticket.rounds[r]["accuracy"]
        assert result["loss"] == ticket.rounds[r]["loss"]


def test_imp_masks_shrink_to_the_target_count(setting, tickets):
    model = setting[0]
    n = sum(p.numel() for p in models.prunable(model).values())
    for ticket in tickets.values():
        kept = [sum(int(m.sum()) for m in mask.values()) for mask in ticket.masks]
        assert kept == [n, round(0.2 ** 0.5 * n), round(0.2 * n)]  # exponential schedule
        assert [r["kept"] for r in ticket.rounds] == kept
        assert ticket.rounds[-1]["sparsity"] == pytest.approx(0.8, abs=1 / n)
        for before, after in zip(ticket.masks[1:], ticket.masks[2:], strict=False):
            assert all(not (after[k] & ~before[k]).any() for k in before)  # nested
    # the two rewind points train differently, so their masks differ
    assert any(not torch.equal(tickets[0].masks[2][k], tickets[5].masks[2][k])
               for k in tickets[0].masks[2])


def test_imp_prunes_the_smallest_trained_weights_of_the_previous_round(setting, tickets):
    """Round 1's mask is the magnitude mask of the dense network trained from step 0."""
    model, batches, _ = setting
    dense = copy.deepcopy(model)
    train(dense, batches, RECIPE, device="cpu", progress=False)
    w = torch.cat([p.detach().abs().flatten() for p in models.prunable(dense).values()])
    k = round(0.2 ** 0.5 * w.numel())
    kept = torch.cat([m.flatten() for m in tickets[0].masks[1].values()])
    assert int(kept.sum()) == k
    assert w[kept].min() > w[~kept].max()


def test_reinitialised_control_keeps_the_mask_and_changes_the_weights(setting, tickets):
    model = setting[0]
    ticket = tickets[0]
    mask = ticket.masks[-1]
    control = lottery.reinitialised(ticket.network(model), mask, seed=1)
    params = dict(control.named_parameters())
    attached = masks.get_mask(control)
    for name, m in mask.items():
        assert torch.equal(attached[name], m), name
        assert (params[name][~m] == 0).all(), name
        assert (params[name][m] != ticket.rewind_state[name][m]).all(), name
    again = lottery.reinitialised(model, mask, seed=1)
    other = lottery.reinitialised(model, mask, seed=2)
    assert all(torch.equal(p, q) for p, q in zip(control.parameters(), again.parameters(),
                                                 strict=True))
    assert not torch.equal(again.conv2.weight, other.conv2.weight)


def test_reinitialised_resets_batchnorm_statistics(setting, tickets):
    trained = copy.deepcopy(setting[0])
    train(trained, setting[1], RECIPE, device="cpu", progress=False, stop_step=3)
    control = lottery.reinitialised(trained, tickets[0].masks[1], seed=1)
    assert torch.equal(control.bn1.running_mean, torch.zeros_like(control.bn1.running_mean))
    assert torch.equal(control.bn1.running_var, torch.ones_like(control.bn1.running_var))
    assert torch.equal(control.bn1.weight, torch.ones_like(control.bn1.weight))


@pytest.mark.parametrize("kwargs, message", [
    ({"rewind_step": 20}, r"LotteryOptions.rewind_step = 20; allowed: below the recipe's 20 "),
    ({"rewind_step": -1}, r"LotteryOptions.rewind_step = -1; allowed: an integer >= 0"),
    ({"rounds": 0}, r"LotteryOptions.rounds = 0; allowed: an integer >= 1"),
    ({"sparsity": 1.0}, r"LotteryOptions.sparsity = 1.0; allowed: a number in \[0, 1\)"),
    ({"scope": "channel"}, r"LotteryOptions.scope must be one of"),
    ({"rewind": 3}, r"unknown option\(s\) \['rewind'\] of LotteryOptions"),
])
def test_bad_options_fail_before_any_compute(kwargs, message):
    with pytest.raises(ValueError, match=message):
        lottery.find_ticket(models.get_model("tiny"), Untouchable(), RECIPE, Untouchable(),
                            **kwargs)


def test_a_masked_model_or_a_missing_recipe_is_refused():
    model = models.get_model("tiny")
    masks.apply_mask(model, {"fc.weight": torch.rand(10, 16) < 0.5})
    with pytest.raises(ValueError, match=r"model = 'TinyConvNet'; allowed: a dense network"):
        lottery.find_ticket(model, Untouchable(), RECIPE, Untouchable())
    with pytest.raises(ValueError, match="recipe = None; allowed: a config.Recipe"):
        lottery.find_ticket(models.get_model("tiny"), Untouchable(), None, Untouchable())

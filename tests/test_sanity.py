"""The sanity checks of Frankle et al. (2021): each does what it says, as a run names it."""

import dataclasses

import pytest
import torch

from opai_lib import config, masks, models, prune, sanity, study
from opai_lib.criteria import IterSnipOptions
from opai_lib.materials import Material
from opai_lib.study import RunConfig

SMOKE = config.get_profile("smoke")


def test_shuffle_within_layers():
    mask = {"a": torch.zeros(20, 50, dtype=bool), "full": torch.ones(3, 4, dtype=bool),
            "empty": torch.zeros(7, dtype=bool)}
    g = torch.Generator().manual_seed(0)
    mask["a"].view(-1)[torch.randperm(1000, generator=g)[:500]] = True
    original = {n: m.clone() for n, m in mask.items()}
    s1 = sanity.shuffle_within_layers(mask, seed=1)
    for n in mask:
        assert s1[n].shape == mask[n].shape and s1[n].dtype == torch.bool
        assert int(s1[n].sum()) == int(mask[n].sum()), n
        assert torch.equal(mask[n], original[n])  # input untouched
    assert s1["full"].all() and not s1["empty"].any()
    assert not torch.equal(s1["a"], mask["a"])  # 1 in C(1000, 500) to collide
    again = sanity.shuffle_within_layers(mask, seed=1)
    assert all(torch.equal(s1[n], again[n]) for n in mask)
    other = sanity.shuffle_within_layers(mask, seed=2)
    assert not torch.equal(s1["a"], other["a"])


def test_inverted_then_select_keeps_the_lowest():
    scores = {"a": torch.tensor([[5.0, 1.0], [3.0, 7.0]]),
              "b": torch.tensor([2.0, 8.0, 4.0, 6.0])}
    inv = sanity.inverted(scores)
    assert torch.equal(scores["a"], torch.tensor([[5.0, 1.0], [3.0, 7.0]]))  # not in place
    mask = prune.select(inv, 0.5)
    # the 4 lowest of {5, 1, 3, 7, 2, 8, 4, 6} are 1, 2, 3, 4
    assert torch.equal(mask["a"], torch.tensor([[False, True], [True, False]]))
    assert torch.equal(mask["b"], torch.tensor([True, False, True, False]))
    mask = prune.select(inv, 0.75)  # 2 kept: scores 1 and 2
    assert torch.equal(mask["a"], torch.tensor([[False, True], [False, False]]))
    assert torch.equal(mask["b"], torch.tensor([True, False, False, False]))


def test_inverted_magnitude_keeps_the_smallest_weights():
    model = models.get_model("tiny", 10, 0.5, seed=3)
    weights = models.prunable(model)
    mask = prune.prune_at_init(model, "magnitude", None, 0.8, invert=True)
    flat = torch.cat([w.detach().abs().flatten() for w in weights.values()])
    k = round(0.2 * flat.numel())
    cut = flat.sort().values[k - 1]  # the k-th smallest magnitude
    for name, w in weights.items():
        assert torch.equal(mask[name], w.detach().abs() <= cut), name
    assert sum(int(m.sum()) for m in mask.values()) == k


def test_inverted_snip_at_half_is_the_complement():
    """With no tied scores, the lowest half and the highest half of one ranking partition
    the weights: the inverted mask is the complement of the mask."""
    model = models.get_model("tiny", 10, 0.5, seed=1)
    x, y = torch.randn(20, 3, 32, 32, generator=torch.Generator().manual_seed(0)), \
        torch.arange(20) % 10
    n = sum(w.numel() for w in models.prunable(model).values())
    assert n % 2 == 0
    top = prune.prune_at_init(model, "snip", (x, y), 0.5, seed=0)
    low = prune.prune_at_init(model, "snip", (x, y), 0.5, seed=0, invert=True)
    for name in top:
        assert torch.equal(low[name], ~top[name]), name


def test_invert_is_refused_where_there_is_no_one_shot_ranking():
    model = models.get_model("tiny", 10, 0.5, seed=1)
    with pytest.raises(ValueError, match="several rounds"):
        prune.prune_at_init(model, "synflow", None, 0.5, invert=True, rounds=2)
    with pytest.raises(ValueError, match="invert must be True or False"):
        prune.prune_at_init(model, "synflow", None, 0.5, invert="yes")


# ---------------------------------------------------------------------------------------
# Runs that name a check, or a draw of their material.

def test_late_fields_leave_earlier_keys_alone_and_change_a_key_when_set():
    base = RunConfig(method="snip", sparsity=0.9)
    assert base.key() == "1055824c87fc5ee1"  # as pinned in test_runconfig, before the fields
    keys = {base.key()} | {dataclasses.replace(base, sanity=c).key() for c in sanity.CHECKS}
    keys.add(dataclasses.replace(base, draw=7).key())
    assert len(keys) == 5
    # a run's own draw is the run: same config, same key
    assert dataclasses.replace(base, seed=4, draw=4) == dataclasses.replace(base, seed=4)
    assert dataclasses.replace(base, seed=4, draw=4).key() == \
        dataclasses.replace(base, seed=4).key()


@pytest.mark.parametrize("fields,match", [
    (dict(method="dense", sanity="shuffle"), "dense baseline"),
    (dict(method="expander:rreg", sparsity=0.9, sanity="invert"), "one-shot criterion"),
    (dict(method="iter_snip", sparsity=0.9, sanity="invert",
          options=IterSnipOptions(rounds=5)), "one-shot criterion"),
    (dict(method="snip", sparsity=0.9, sanity="flip"), "must be one of"),
    (dict(method="random", sparsity=0.9, draw=1), "does not"),
    (dict(method="snip", sparsity=0.9, draw=-1), "integer >= 0"),
    (dict(method="snip", sparsity=0.9, draw=1.0), "must be of type"),
])
def test_bad_checks_and_draws_are_refused_when_built(fields, match):
    with pytest.raises(ValueError, match=match):
        RunConfig(**fields)


def _mask(cfg):
    train_set, _ = study.profile_data(SMOKE)
    model = study.initial_model(cfg, train_set.num_classes)
    return study.make_mask(cfg, model, train_set)


def test_a_shuffled_run_keeps_every_layer_count_and_moves_the_weights():
    cfg = study.config_from_profile(SMOKE, model="tiny", method="snip", sparsity=0.8, seed=2)
    plain, shuffled = _mask(cfg), _mask(dataclasses.replace(cfg, sanity="shuffle"))
    assert {n: int(m.sum()) for n, m in plain.items()} == \
        {n: int(m.sum()) for n, m in shuffled.items()}
    assert masks.overlap(plain, shuffled) < 0.5  # random within layers: about the density


def test_a_draw_changes_the_material_not_the_network():
    cfg = study.config_from_profile(SMOKE, model="tiny", method="snip", sparsity=0.8, seed=2,
                                    material=Material("image", per_class=4))
    train_set, _ = study.profile_data(SMOKE)
    other = dataclasses.replace(cfg, draw=5)
    assert dataclasses.replace(cfg, draw=2).key() == cfg.key()
    # by hand: the seed-2 network fed the examples of draw 5, scored with seed 2
    model = models.get_model("tiny", train_set.num_classes, SMOKE.width, seed=2)
    by_hand = prune.prune_at_init(model, "snip", cfg.material.make(train_set, 5), 0.8, seed=2)
    got = _mask(other)
    assert all(torch.equal(got[n], by_hand[n]) for n in by_hand)
    assert masks.overlap(_mask(cfg), got) < 1.0


@pytest.mark.slow
def test_checked_runs_train_what_they_name(tmp_path):
    """Four smoke runs: the shuffled mask keeps the layer counts, the reinitialised run
    trains the same mask from other weights, the inverted mask keeps no weight the plain
    mask keeps at 50 %."""
    cfg = study.config_from_profile(SMOKE, model="tiny", method="snip", sparsity=0.5, seed=1)
    plain, shuffled, reinit, inverted = study.sweep(
        [cfg] + [dataclasses.replace(cfg, sanity=c) for c in ("shuffle", "reinit", "invert")],
        tmp_path)
    read = {r["key"]: study.read_mask(r, tmp_path) for r in (plain, shuffled, inverted)}
    assert reinit["mask_sha256"] == plain["mask_sha256"]
    assert reinit["history"] != plain["history"]
    assert reinit["config"]["sanity"] == "reinit"
    assert shuffled["layer_kept"] == plain["layer_kept"]
    assert shuffled["mask_sha256"] != plain["mask_sha256"]
    assert masks.overlap(read[plain["key"]], read[inverted["key"]]) == 0.0

"""The study's grids, their tables and verdicts, and the ``sweep`` command, checked by hand.

Nothing here trains a network: grids are RunConfigs (cheap to build), records are made up.
"""

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from opai_lib import __main__ as cli
from opai_lib import config, expander_study, study
from opai_lib import experiments as E
from opai_lib import verdicts as V
from opai_lib.materials import Material
from opai_lib.store import Store

CPU = config.get_profile("cpu")
CIFAR_CLASSES = 10

# The decisive cells of each chapter, (method, label, sparsity), written out by hand:
# the paper's claims and the reference ("images") cells of the same method and sparsity.
DECISIVE = {
    "dop_sparsity": {(m, label, s) for m in ("snip", "grasp") for label in ("DOP", "images")
                     for s in (0.9, 0.95)},
    "ablations": {("snip", "all-ones (BN eval)", 0.9), ("snip", "all-ones (BN eval)", 0.95),
                  ("grasp", "all-ones (BN train)", 0.9), ("grasp", "all-ones (BN train)", 0.95),
                  ("snip", "images", 0.9), ("snip", "images", 0.95),
                  ("grasp", "images", 0.9), ("grasp", "images", 0.95)},
    "super_stitching": {("grasp", "stitching σ=0.5", 0.95), ("grasp", "stitching σ=0.75", 0.95),
                        ("grasp", "images", 0.95)},
    "budget": set(),
}
# Runs with 3 seeds per cell, 6 per decisive cell:
# dop_sparsity: 16 material cells (8 decisive) + dense (1 cell) + random (4 cells) -> 48+24+3+12
# ablations: 12 arms x 4 sparsities, 8 decisive -> 48 + 40*3
# super_stitching: 11 arms x 2 sparsities, 3 decisive -> 18 + 19*3
# budget: 3 arms x 1 sparsity x 3 epoch budgets (4, 8, 16), 3 seeds -> 27
TOTAL = {"dop_sparsity": 87, "ablations": 168, "super_stitching": 75, "budget": 27}
# Grids whose every cell is decisive, with their own seeds:
# sanity_checks: 5 masks (SNIP: images, DOP; GraSP: images, DOP, stitching 0.5) x 4 checks
#   (none, shuffle, reinit, invert) x 2 sparsities x 4 seeds -> 160
# material_draws: 4 arms (SNIP, GraSP x images, DOP) x 1 sparsity x 6 draws -> 24
ALL_DECISIVE = {"sanity_checks": (160, 4), "material_draws": (24, 6)}


@pytest.fixture(scope="module")
def grids():
    return {name: e.runs(CPU) for name, e in E.EXPERIMENTS.items()}


def cell(run):
    return run.arm.method, run.arm.label, run.sparsity


# ---------------------------------------------------------------------------------------
# verdict


@pytest.mark.parametrize("mean, half, sign, expected", [
    (3.0, 1.0, 1, "supported"),            # [2, 4] on the paper's (positive) side
    (-3.0, 1.0, -1, "supported"),          # [-4, -2] on the paper's (negative) side
    (1.0, 0.5, 1, "supported"),            # [0.5, 1.5]: small, but excludes 0 on its side
    (3.0, 1.0, -1, "contradicted"),
    (-3.0, 1.0, 1, "contradicted"),
    (0.5, 1.0, 1, "smaller than 2 points"),   # [-0.5, 1.5]
    (-0.2, 1.7, -1, "smaller than 2 points"),  # [-1.9, 1.5]
    (0.0, 1.0, 0, "smaller than 2 points"),
    (1.0, 0.5, 0, "smaller than 2 points"),   # no claimed sign: a real but small effect
    (1.0, 1.5, 1, "unresolved"),           # [-0.5, 2.5]: includes 0, too wide
    (0.5, 1.5, 1, "unresolved"),           # [-1, 2]: 2 is not inside the open (-2, 2)
    (-1.0, 5.0, -1, "unresolved"),
    (5.0, math.nan, 1, "unresolved"),      # one seed: no interval
    (math.nan, 1.0, -1, "unresolved"),
    (3.0, 1.0, 0, "differs (no claim)"),   # excludes 0, no claimed sign, wider than margin
    (-3.0, 0.5, 0, "differs (no claim)"),
])
def test_verdict_outcomes(mean, half, sign, expected):
    assert V.verdict(mean, half, sign) == expected


def test_verdict_margin_is_a_parameter():
    assert V.verdict(0.5, 1.0, 1, margin=1.0) == "unresolved"  # [-0.5, 1.5] reaches past 1
    assert V.verdict(1.0, 2.0, 1, margin=5.0) == "smaller than 5 points"  # [-1, 3]
    assert V.verdict(0.5, 1.0, 1, margin=2.5) == "smaller than 2.5 points"


@pytest.mark.parametrize("sign", [2, -2, 0.5, "1", None])
def test_verdict_rejects_other_signs(sign):
    with pytest.raises(ValueError, match="paper_sign"):
        V.verdict(1.0, 1.0, sign)


# ---------------------------------------------------------------------------------------
# Experiment.runs


@pytest.mark.parametrize("name", sorted(TOTAL))
def test_runs_seeds_per_cell(grids, name):
    runs = grids[name]
    assert len(runs) == TOTAL[name]
    seeds = {}
    for r in runs:
        seeds.setdefault((*cell(r), r.epochs), []).append(r.seed)
        assert r.decisive == (cell(r) in DECISIVE[name])
        assert r.config.seed == r.seed and r.config.draw is None and r.config.sanity is None
        assert r.config.sparsity == pytest.approx(r.sparsity)
    assert {c[:3] for c in seeds if c[:3] in DECISIVE[name]} == DECISIVE[name]
    for c, s in seeds.items():
        assert sorted(s) == list(range(6 if c[:3] in DECISIVE[name] else 3)), c


@pytest.mark.parametrize("name", sorted(ALL_DECISIVE))
def test_all_decisive_grids_use_their_own_seeds(grids, name):
    total, n = ALL_DECISIVE[name]
    runs = grids[name]
    assert len(runs) == total and all(r.decisive for r in runs)
    seeds = {}
    for r in runs:
        seeds.setdefault((*cell(r), r.arm.check), []).append(r.seed)
    assert all(sorted(s) == list(range(n)) for s in seeds.values())
    assert E.EXPERIMENTS[name].runs(config.get_profile("smoke"))[-1].seed == 0  # smoke: 1


def test_sanity_grid_checks_the_study_masks():
    runs = E.EXPERIMENTS["sanity_checks"].runs(CPU)
    plain = {r.config.key() for r in runs if r.arm.check is None}
    study_keys = {r.config.key() for name in ("dop_sparsity", "super_stitching")
                  for r in E.EXPERIMENTS[name].runs(CPU, seeds=4, decisive_seeds=4)}
    assert plain <= study_keys  # the unchecked masks are the chapters' own runs
    for r in runs:
        assert r.config.sanity == r.arm.check and r.config.seed == r.seed
        if r.arm.check is not None:  # the same run but for the check (and an inverted
            options = r.config.options  # ranking may empty layers: shown, not refused)
            assert options.on_collapse == ("allow" if r.arm.check == "invert" else "error")
            twin = dataclasses.replace(r.config, sanity=None, options=dataclasses.replace(
                options, on_collapse="error"))
            assert twin.key() in plain
    assert {(r.arm.criterion, r.arm.label) for r in runs} == {
        ("SNIP", "images"), ("SNIP", "DOP"), ("GraSP", "images"), ("GraSP", "DOP"),
        ("GraSP", "stitching σ=0.5")}


def test_draw_grid_keeps_one_network():
    runs = E.EXPERIMENTS["material_draws"].runs(CPU)
    assert {r.config.seed for r in runs} == {0}
    assert sorted({r.config.draw for r in runs}, key=str) == [1, 2, 3, 4, 5, None]
    dop = {r.config.key() for r in E.EXPERIMENTS["dop_sparsity"].runs(CPU)}
    assert {r.config.key() for r in runs if r.seed == 0} <= dop  # draw 0 is seed 0's run


def test_budget_stretches_the_profiles_recipe():
    runs = E.EXPERIMENTS["budget"].runs(CPU, seeds=1)
    assert sorted({r.epochs for r in runs}) == [4, 8, 16]  # cpu profile: 4 epochs
    for r in runs:
        assert r.config.recipe == dataclasses.replace(CPU.recipe, epochs=r.epochs)
    four = [r for r in runs if r.epochs == 4]  # the profile's own budget: the chapters' keys
    dop = {r.config.key() for r in E.EXPERIMENTS["dop_sparsity"].runs(CPU)}
    assert {r.config.key() for r in four} <= dop


@pytest.mark.parametrize("name", sorted(E.EXPERIMENTS))
def test_runs_order_decisive_first_seed_major(grids, name):
    runs = grids[name]
    flags = [r.decisive for r in runs]
    n = sum(flags)
    assert flags == [True] * n + [False] * (len(runs) - n)
    for block in (runs[:n], runs[n:]):
        block_seeds = [r.seed for r in block]
        assert block_seeds == sorted(block_seeds)  # seed never decreases


@pytest.mark.parametrize("name", sorted(E.EXPERIMENTS))
def test_decisive_cells_are_named_as_the_tables_name_the_decisive_runs(grids, name):
    named = {(r.arm.criterion, r.arm.label, round(100 * r.sparsity, 2))
             for r in grids[name] if r.decisive}
    cells = E.EXPERIMENTS[name].decisive_cells()
    assert len(cells) == len(E.EXPERIMENTS[name].decisive) and set(cells) <= named


@pytest.mark.parametrize("name", sorted(E.EXPERIMENTS))
def test_runs_keys_unique(grids, name):
    keys = [r.config.key() for r in grids[name]]
    assert len(set(keys)) == len(keys)


def test_runs_other_seed_counts():
    runs = E.EXPERIMENTS["super_stitching"].runs(CPU, seeds=2, decisive_seeds=4)
    assert len(runs) == 3 * 4 + 19 * 2
    assert [r.seed for r in runs[:12]] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert all(r.decisive for r in runs[:12]) and not any(r.decisive for r in runs[12:])
    one = E.EXPERIMENTS["dop_sparsity"].runs(CPU, sparsities=(0.5,))
    assert {r.sparsity for r in one if r.arm.method != "dense"} == {0.5}
    assert not any(r.decisive for r in one)  # no claim at 50 %
    assert len(one) == 5 * 3 + 3  # four material arms and random at 0.5, dense; 3 seeds


def test_dense_arm_once_per_seed_at_sparsity_zero(grids):
    dense = [r for r in grids["dop_sparsity"] if r.arm.method == "dense"]
    assert [r.seed for r in dense] == [0, 1, 2]
    assert all(r.sparsity == 0 and r.config.sparsity == 0 and not r.decisive for r in dense)
    assert E.Arm("dense", "dense").config(CPU, "resnet20", 0.9, 0).sparsity == 0


def test_same_cell_same_key_across_experiments(grids):
    def keys(name, labels):
        return {(r.arm.method, r.arm.label, r.sparsity, r.seed): r.config.key()
                for r in grids[name] if r.arm.label in labels and r.arm.method in ("snip", "grasp")}

    dop = keys("dop_sparsity", ("images", "DOP"))
    abl = keys("ablations", ("images", "DOP"))
    # SNIP and GraSP x images and DOP x 4 sparsities: decisive cells 6 seeds, the others 3
    assert len(dop) == 8 * 6 + 8 * 3
    # images are decisive in both (6 seeds at 90 and 95 %); DOP only in dop_sparsity, so
    # the ablations have its seeds 0-2 alone
    common = abl.keys() & dop.keys()
    assert common == abl.keys()
    assert len(common) == 2 * (2 * 6 + 2 * 3) + 2 * 4 * 3
    assert all(abl[c] == dop[c] for c in common)
    stitch = keys("super_stitching", ("images", "DOP"))
    assert stitch and all(r[0] == "grasp" and dop[r] == k for r, k in stitch.items())


@pytest.mark.parametrize("kwargs, name", [
    (dict(seeds=0), "seeds"), (dict(seeds=1.5), "seeds"), (dict(seeds=True), "seeds"),
    (dict(decisive_seeds=0), "decisive_seeds"), (dict(decisive_seeds=2.0), "decisive_seeds"),
    (dict(sparsities=(0.9, 1.0)), "sparsities"), (dict(sparsities=(0,)), "sparsities"),
    (dict(sparsities=(-0.1,)), "sparsities"), (dict(sparsities=("0.9",)), "sparsities"),
])
def test_runs_reject_bad_parameters(kwargs, name):
    with pytest.raises(ValueError, match=name):
        E.EXPERIMENTS["dop_sparsity"].runs(CPU, **kwargs)


def test_get_experiment():
    assert E.get_experiment("ablations") is E.EXPERIMENTS["ablations"]
    with pytest.raises(ValueError, match="unknown experiment 'nope'"):
        E.get_experiment("nope")


# ---------------------------------------------------------------------------------------
# Materials per arm


# (method, material name, sigma) -> examples per class on the cpu profile (10 per class for
# SNIP and the other image criteria, 30 for GraSP; stitching 0.5 as GraSP, 0.75 a third)
PER_CLASS = {
    ("snip", "image", None): 10, ("snip", "dop", None): 10, ("snip", "all_ones", None): 10,
    ("snip", "random_segment", None): 10, ("snip", "less_patch", None): 1,
    ("grasp", "image", None): 30, ("grasp", "dop", None): 30, ("grasp", "all_ones", None): 30,
    ("grasp", "random_segment", None): 30, ("grasp", "less_patch", None): 1,
    ("grasp", "stitch", 0.5): 30, ("grasp", "stitch", 0.75): 10,
    ("iter_snip", "image", None): 10, ("force", "image", None): 10,
    ("prospr", "image", None): 10,
}


@pytest.mark.parametrize("name", sorted(E.EXPERIMENTS))
def test_materials_follow_the_papers_counts(grids, name):
    for r in grids[name]:
        m = r.config.material
        if r.arm.method in ("dense", "random", "magnitude", "synflow"):
            assert m is None and r.arm.material is None
            continue
        assert (r.arm.method, m.name, m.sigma) in PER_CLASS, (r.arm, m)
        assert m.per_class == PER_CLASS[(r.arm.method, m.name, m.sigma)], r.arm.label
        assert m.batches == 1
        assert E.samples(m, CIFAR_CLASSES) == m.per_class * 10
        label_material = {"images": "image", "DOP": "dop", "random segments": "random_segment",
                          "one patch": "less_patch"}
        if r.arm.label.startswith("all-ones"):
            mode = r.arm.label.removeprefix("all-ones (BN ").removesuffix(")")
            assert m.name == "all_ones"
            assert r.config.options.on_collapse == "allow"
            assert r.config.options.bn_mode == mode
        elif r.arm.label in label_material:
            assert m.name == label_material[r.arm.label]
            assert r.config.options.on_collapse == ("allow" if r.arm.check == "invert"
                                                     else "error")
        else:
            assert m.name == "stitch" and r.arm.label == f"stitching σ={m.sigma:g}"


def test_all_ones_arms_of_the_ablations(grids):
    arms = {(r.arm.method, r.arm.label): r.config.options for r in grids["ablations"]
            if r.arm.label.startswith("all-ones")}
    assert {k: (o.bn_mode, o.on_collapse) for k, o in arms.items()} == {
        ("snip", "all-ones (BN eval)"): ("eval", "allow"),
        ("snip", "all-ones (BN train)"): ("train", "allow"),
        ("grasp", "all-ones (BN eval)"): ("eval", "allow"),
        ("grasp", "all-ones (BN train)"): ("train", "allow")}


def test_smoke_profile_scales_the_counts():
    smoke = config.get_profile("smoke")  # score_per_class 2
    per_class = {(a.method, a.label): a.material.per_class for a in E.stitching_arms(smoke)
                 if a.material is not None}
    assert per_class[("grasp", "images")] == 6
    assert per_class[("grasp", "stitching σ=0.5")] == 6
    assert per_class[("grasp", "stitching σ=0.75")] == 2
    assert per_class[("force", "images")] == 2


def test_samples():
    assert E.samples(None, 10) == 0
    assert E.samples(Material("image", per_class=10), 10) == 100
    assert E.samples(Material("image", per_class=3, batches=2), 10) == 60
    assert E.samples(Material("dop", per_class=30), 100) == 3000
    assert E.samples(Material("less_patch", per_class=1), 10) == 10


# ---------------------------------------------------------------------------------------
# frame, summary, effects on made-up records


def fake(run, accuracy, empty=(), density=0.05, share=None, masked=True):
    """A record as ``study.run`` writes it, reduced to what ``frame`` reads."""
    common = {"key": run.config.key(), "accuracy": accuracy, "seconds": 60.0,
              "machine": {"cpu": "a CPU", "threads": 1, "device": "cpu"}}
    if not masked:
        return {**common, "mask_shapes": {}, "density": 1.0}
    share = share or {"head": 0.05, "stage3": 0.15, "stage1": 0.5, "stage2": 0.3}
    return {**common,
            "mask_shapes": {"conv1.weight": [16, 3, 3, 3]}, "empty_layers": list(empty),
            "sparsest_layer": {"name": "conv1.weight", "density": density},
            "stage_share": share}


def pick(runs, method, label, sparsity, seed):
    (run,) = [r for r in runs if (r.arm.method, r.arm.label, r.sparsity, r.seed)
              == (method, label, sparsity, seed)]
    return run


def test_frame_rows(grids):
    runs = grids["dop_sparsity"]
    a = pick(runs, "snip", "DOP", 0.9, 4)
    b = pick(runs, "grasp", "images", 0.8, 1)
    d = pick(runs, "dense", "dense", 0.0, 2)
    rows = [a, b, d, pick(runs, "snip", "images", 0.6, 0)]
    recs = [fake(a, 0.6125, empty=["layer3.2.conv2.weight", "fc.weight"], density=0.0123),
            fake(b, 0.5, share={"stage1": 0.2, "stage2": 0.3, "stage3": 0.4, "head": 0.1}),
            fake(d, 0.7, masked=False), None]
    out = E.frame(rows, recs, CIFAR_CLASSES)
    assert len(out) == 3  # the None record is skipped
    assert out["key"].tolist() == [a.config.key(), b.config.key(), d.config.key()]
    first = out.iloc[0]
    assert (first["criterion"], first["material"], first["seed"]) == ("SNIP", "DOP", 4)
    assert first["sparsity %"] == 90 and bool(first["decisive"])
    assert first["accuracy %"] == pytest.approx(61.25)
    assert first["samples"] == 100 and first["rounds"] == 1
    assert first["empty layers"] == 2
    assert first["sparsest layer %"] == pytest.approx(1.23)
    assert first["last stage %"] == pytest.approx(15.0)  # stage3, not head nor stage1
    second = out.iloc[1]
    assert (second["criterion"], second["material"]) == ("GraSP", "images")
    assert second["sparsity %"] == 80
    assert second["samples"] == 300 and not bool(second["decisive"])
    assert second["last stage %"] == pytest.approx(40.0)
    assert second["empty layers"] == 0 and second["sparsest layer %"] == pytest.approx(5.0)
    dense = out.iloc[2]
    assert (dense["criterion"], dense["material"], dense["sparsity %"]) == ("dense", "dense", 0)
    assert dense["samples"] == 0 and dense["empty layers"] == 0 and math.isnan(dense["rounds"])
    assert dense["sparsest layer %"] == 100 and math.isnan(dense["last stage %"])
    assert dense["accuracy %"] == pytest.approx(70.0)


def test_frame_and_summary_count_the_rounds_of_iterative_criteria(grids):
    runs = grids["super_stitching"]
    picked = [pick(runs, m, label, 0.95, 0) for m, label in
              [("force", "images"), ("synflow", "all-ones"), ("grasp", "images")]]
    out = E.frame(picked, [fake(r, 0.5) for r in picked], CIFAR_CLASSES)
    # the options' defaults: FORCE 60 rounds (naver/force), SynFlow 100, GraSP one shot
    assert out["rounds"].tolist() == [60, 100, 1]
    small = config.get_profile("smoke")
    smoke = [pick(E.get_experiment("super_stitching").runs(small), "force", "images", 0.95, 0)]
    capped = E.frame(smoke, [fake(smoke[0], 0.5)], 4)["rounds"].tolist()
    assert capped == [small.max_rounds] and 1 < small.max_rounds < 60  # what the run did
    summ = E.summary(out)
    assert summ.set_index("criterion").loc["FORCE", "rounds"] == 60
    assert "rounds" in E.shown(summ).data.columns
    assert "rounds" not in E.shown(summ[summ["criterion"] == "GraSP"]).data.columns


def test_frame_sparsity_percent_is_rounded(grids):
    r = pick(grids["dop_sparsity"], "snip", "images", 0.95, 0)
    out = E.frame([r], [fake(r, 0.3)], CIFAR_CLASSES)
    assert out["sparsity %"].tolist() == [95.0]  # 100 * 0.95 is 94.99999999999999


def test_frame_lengths_must_match(grids):
    runs = grids["dop_sparsity"][:3]
    with pytest.raises(ValueError, match="3 runs but 2 records"):
        E.frame(runs, [fake(r, 0.5) for r in runs[:2]], CIFAR_CLASSES)


def test_summary_per_cell(grids):
    runs = grids["dop_sparsity"]
    r0, r1 = (pick(runs, "snip", "DOP", 0.9, s) for s in (0, 1))
    g0 = pick(runs, "grasp", "DOP", 0.9, 0)
    recs = [fake(r0, 0.50, empty=["a"], density=0.02,
                 share={"stage1": 0.5, "stage2": 0.3, "stage3": 0.2, "head": 0.0}),
            fake(r1, 0.54, empty=["a", "b"], density=0.01,
                 share={"stage1": 0.5, "stage2": 0.25, "stage3": 0.25, "head": 0.0}),
            fake(g0, 0.40)]
    out = E.summary(E.frame([r0, r1, g0], recs, CIFAR_CLASSES)).set_index("criterion")
    snip = out.loc["SNIP"]
    assert snip["count"] == 2 and snip["mean"] == pytest.approx(52.0)
    std = math.sqrt(2 * 2.0 ** 2)  # sample standard deviation of {50, 54}
    assert snip["ci95"] == pytest.approx(stats.t.ppf(0.975, 1) * std / math.sqrt(2))
    assert snip["samples"] == 100
    assert snip["empty layers (max)"] == 2
    assert snip["sparsest layer % (min)"] == pytest.approx(1.0)
    assert snip["last stage % (min)"] == pytest.approx(20.0)
    grasp = out.loc["GraSP"]
    assert grasp["count"] == 1 and grasp["mean"] == pytest.approx(40.0)
    assert math.isnan(grasp["ci95"]) and grasp["samples"] == 300


def test_effects_pair_by_seed(grids):
    runs = grids["dop_sparsity"]
    chosen, recs = [], []
    for seed, (img, dop) in enumerate([(0.50, 0.51), (0.40, 0.42), (0.30, 0.33)]):
        for label, acc in (("images", img), ("DOP", dop)):
            r = pick(runs, "snip", label, 0.9, seed)
            chosen.append(r)
            recs.append(fake(r, acc))
    extra = pick(runs, "snip", "DOP", 0.9, 4)  # no images run with seed 4: left out
    lonely = pick(runs, "grasp", "DOP", 0.95, 0)  # no GraSP images run at all: no row
    chosen += [extra, lonely]
    recs += [fake(extra, 0.99), fake(lonely, 0.2)]
    out = E.effects(E.frame(chosen, recs, CIFAR_CLASSES), "images")
    assert len(out) == 1
    row = out.iloc[0]
    assert (row["criterion"], row["sparsity %"], row["material"]) == ("SNIP", 90, "DOP")
    assert row["count"] == 3
    assert row["per_seed"] == pytest.approx([1.0, 2.0, 3.0])
    assert row["mean"] == pytest.approx(2.0)
    # the sample standard deviation of {1, 2, 3} is 1
    assert row["ci95"] == pytest.approx(stats.t.ppf(0.975, 2) * 1 / math.sqrt(3))
    judged = V.with_paper(out, "images").iloc[0]
    assert judged["paper effect"] == pytest.approx(64.12 - 61.06)
    # [2 - 2.48, 2 + 2.48] includes 0 and reaches past 2 points: three seeds are too few
    assert judged["verdict"] == "unresolved"


# ---------------------------------------------------------------------------------------
# The paper


def test_paper_effect():
    assert V.paper_effect("SNIP", "DOP", "images", 90) == pytest.approx(64.12 - 61.06)
    assert V.paper_effect("SNIP", "DOP", "images", 90.0) == pytest.approx(3.06)
    assert V.paper_effect("GraSP", "DOP", "images", 95) == pytest.approx(60.02 - 61.76)
    assert V.paper_effect("GraSP", "stitching σ=0.75", "images", 60) == pytest.approx(
        73.94 - 73.87)
    assert math.isnan(V.paper_effect("SNIP", "random segments", "images", 90))
    assert math.isnan(V.paper_effect("SNIP", "DOP", "images", 70))
    assert math.isnan(V.paper_effect("FORCE", "images", "images", 90))


def test_with_paper_signs_and_verdicts():
    rows = pd.DataFrame([
        ("SNIP", 90.0, "DOP", 3.0, 1.0),                   # paper +3.06
        ("SNIP", 90.0, "DOP", -3.0, 1.0),
        ("GraSP", 95.0, "DOP", -3.0, 1.0),                 # paper -1.74
        ("SNIP", 90.0, "all-ones (BN eval)", -5.0, 1.0),   # Figure 4: claimed negative
        ("GraSP", 95.0, "all-ones (BN train)", 5.0, 1.0),
        ("SNIP", 90.0, "random segments", 5.0, 1.0),       # no claim, wider than 2
        ("SNIP", 90.0, "random segments", 0.5, 1.0),       # no claim, within 2
        ("SNIP", 90.0, "DOP", 10.0, math.nan),             # one seed
    ], columns=["criterion", "sparsity %", "material", "mean", "ci95"])
    out = V.with_paper(rows, "images")
    assert out["verdict"].tolist() == [
        "supported", "contradicted", "supported", "supported", "contradicted",
        "differs (no claim)", "smaller than 2 points", "unresolved"]
    paper = out["paper effect"].tolist()
    assert paper[0] == pytest.approx(3.06) and paper[2] == pytest.approx(-1.74)
    assert all(math.isnan(p) for p in paper[3:7])
    # +3.06 lies in 3 +- 1, not in -3 +- 1; -1.74 not in -3 +- 1; no number, no interval
    assert out["paper in interval"].tolist() == ["yes", "no", "no", *[None] * 5]
    assert len(rows.columns) == 5  # the input is left as it was


def test_with_paper_judges_figure_4_against_dop():
    rows = pd.DataFrame([
        ("SNIP", 95.0, "random segments", -5.0, 1.0),  # worse at higher sparsity: claimed
        ("SNIP", 60.0, "random segments", -5.0, 1.0),  # "similar": no sign to check
        ("SNIP", 60.0, "random segments", 0.5, 1.0),
        ("GraSP", 80.0, "one patch", 3.0, 1.0),        # claimed worse than DOP
    ], columns=["criterion", "sparsity %", "material", "mean", "ci95"])
    out = V.with_paper(rows, "DOP")
    assert out["verdict"].tolist() == ["supported", "differs (no claim)",
                                       "smaller than 2 points", "contradicted"]
    assert out["sign"].tolist() == [-1, 0, 0, -1]


def test_paper_sign_reads_figure_4_against_its_reference():
    # the paper ran both criteria through GraSP's code: GraSP in train mode, SNIP's mode
    # unknown, so SNIP's all-ones is claimed worse in both modes, GraSP's in train only
    claimed = {("SNIP", "eval"): -1, ("SNIP", "train"): -1, ("GraSP", "train"): -1,
               ("GraSP", "eval"): 0}
    for crit in ("SNIP", "GraSP"):
        for pct in (60, 80, 90, 95):
            for ref in ("images", "DOP"):  # worse than both
                for mode in ("eval", "train"):
                    assert V.paper_sign(crit, f"all-ones (BN {mode})", ref, pct,
                                        math.nan) == claimed[crit, mode]
            assert V.paper_sign(crit, "one patch", "DOP", pct, math.nan) == -1
            assert V.paper_sign(crit, "one patch", "images", pct, math.nan) == 0  # no claim
        # random segments: "similar" to DOP at lower sparsity, worse at higher
        signs = [V.paper_sign(crit, "random segments", "DOP", p, math.nan) for p in
                 (60.0, 80.0, 90.0, 95.0)]
        assert signs == [0, 0, -1, -1]
    assert V.paper_sign("SNIP", "all-ones (BN eval)", "images", 98, math.nan) == 0  # not run
    assert V.paper_sign("GraSP", "DOP", "images", 95, -1.74) == -1  # Table 1's own sign
    assert len(V.PAPER_SIGN) == 3 * 2 * 4 + 2 * 2 + 2 * 4  # all-ones, segments, one patch


# ---------------------------------------------------------------------------------------
# study.table and study.paired_differences on DataFrames


def test_table_on_a_dataframe():
    df = pd.DataFrame({"m": ["a", "a", "b"], "acc": [50.0, 54.0, 40.0]})
    out = study.table(df, ["m"], "acc").set_index("m")
    assert out.loc["a", "mean"] == pytest.approx(52.0) and out.loc["a", "count"] == 2
    assert out.loc["a", "ci95"] == pytest.approx(
        stats.t.ppf(0.975, 1) * math.sqrt(8.0) / math.sqrt(2))
    assert math.isnan(out.loc["b", "ci95"])
    with pytest.raises(ValueError, match="nope"):
        study.table(df, ["nope"], "acc")
    with pytest.raises(ValueError, match="accuracy"):
        study.table(df, ["m"])  # the default value column is "accuracy"


def test_paired_differences_on_a_dataframe():
    df = pd.DataFrame({"c": ["x"] * 5, "mat": ["ref", "new", "ref", "new", "new"],
                       "seed": [0, 0, 1, 1, 2], "v": [10.0, 12.0, 20.0, 21.0, 99.0]})
    out = study.paired_differences(df, ["c"], "mat", "ref", "v")
    assert len(out) == 1
    assert out.iloc[0]["per_seed"] == pytest.approx([2.0, 1.0])
    assert out.iloc[0]["mean"] == pytest.approx(1.5) and out.iloc[0]["count"] == 2
    with pytest.raises(ValueError, match="missing_column"):
        study.paired_differences(df, ["missing_column"], "mat", "ref", "v")
    with pytest.raises(ValueError, match="seed"):
        study.paired_differences(df.drop(columns="seed"), ["c"], "mat", "ref", "v")
    with pytest.raises(ValueError, match="no run has mat = 'images'"):
        study.paired_differences(df, ["c"], "mat", "images", "v")


def test_finished_reads_without_computing(tmp_path, grids):
    cfgs = [r.config for r in grids["dop_sparsity"][:3]]
    Store(tmp_path).write(cfgs[1].key(), {"key": cfgs[1].key(), "accuracy": 0.5})
    out = study.finished(cfgs, tmp_path)
    assert out[0] is None and out[2] is None
    assert out[1] == {"key": cfgs[1].key(), "accuracy": 0.5}


# ---------------------------------------------------------------------------------------
# python -m opai_lib sweep


@pytest.fixture
def no_compute(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the sweep computed something")

    monkeypatch.setattr(study, "sweep", boom)


def listed(text):
    """The keys of the runs a --list prints (lines indented by two spaces)."""
    return [line.split()[0] for line in text.splitlines() if line.startswith("  ")]


def test_cli_list(tmp_path, capsys, grids, no_compute):
    runs = grids["dop_sparsity"]
    assert cli.main(["sweep", "dop_sparsity", "--list", "--store", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert f"{len(runs)} runs, {len(runs)} missing" in text and str(tmp_path) in text
    assert listed(text) == [r.config.key() for r in runs]
    done = runs[5].config.key()
    Store(tmp_path).write(done, {"key": done, "accuracy": 0.5})
    assert cli.main(["sweep", "dop_sparsity", "--list", "--store", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert f"{len(runs)} runs, {len(runs) - 1} missing" in text
    assert listed(text) == [r.config.key() for i, r in enumerate(runs) if i != 5]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{done}.json", f"{done}.npz"]


def test_cli_lists_the_expander_chapters_grid(tmp_path, capsys, no_compute):
    from opai_lib import expander_study

    assert cli.main(["sweep", "expanders", "--list", "--seeds", "2", "--profile", "smoke",
                     "--store", str(tmp_path)]) == 0
    want = [c.key() for c in expander_study.configs("smoke", 2)]
    assert listed(capsys.readouterr().out) == want and len(set(want)) == len(want)


def test_cli_shard(tmp_path, capsys, grids, no_compute):
    runs = grids["dop_sparsity"]
    assert cli.main(["sweep", "dop_sparsity", "--list", "--shard", "1/3",
                     "--store", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    expected = [runs[i].config.key() for i in range(1, len(runs), 3)]
    assert len(expected) == 29
    assert "29 runs, 29 missing" in text
    assert listed(text) == expected


def test_cli_shards_cover_the_grid_once(tmp_path, capsys, grids, no_compute):
    keys = []
    for i in range(4):
        cli.main(["sweep", "ablations", "--list", "--shard", f"{i}/4", "--store", str(tmp_path)])
        keys += listed(capsys.readouterr().out)
    assert sorted(keys) == sorted(r.config.key() for r in grids["ablations"])


def test_cli_decisive_only_and_seeds(tmp_path, capsys, no_compute):
    assert cli.main(["sweep", "super_stitching", "--list", "--decisive-only", "--seeds", "1",
                     "--decisive-seeds", "2", "--store", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "6 runs, 6 missing" in text  # 3 decisive cells x 2 seeds
    lines = [line for line in text.splitlines() if line.startswith("  ")]
    assert len(lines) == 6 and all(line.endswith("(decisive)") for line in lines)
    assert [line.split("seed ")[1].split()[0] for line in lines] == ["0"] * 3 + ["1"] * 3


def test_cli_computes_the_missing_runs(tmp_path, capsys, grids, monkeypatch):
    calls = []
    monkeypatch.setattr(study, "sweep", lambda cfgs, store, workers: calls.append(
        ([c.key() for c in cfgs], store, workers)))
    runs = grids["super_stitching"]
    done = runs[0].config.key()
    Store(tmp_path).write(done, {"key": done, "accuracy": 0.5})
    assert cli.main(["sweep", "super_stitching", "--shard", "0/2", "--workers", "3",
                     "--store", str(tmp_path)]) == 0
    expected = [runs[i].config.key() for i in range(2, len(runs), 2)]
    assert calls == [(expected, str(tmp_path), 3)]
    assert capsys.readouterr().out.rstrip().endswith("done")


@pytest.mark.parametrize("shard", ["3/2", "2/2", "-1/3", "1/0", "x", "1/2/3", ""])
def test_cli_bad_shard(tmp_path, capsys, shard, no_compute):
    with pytest.raises(SystemExit) as exc:
        cli.main(["sweep", "dop_sparsity", "--list", "--shard", shard, "--store", str(tmp_path)])
    assert exc.value.code == 2
    assert "--shard" in capsys.readouterr().err


def test_cli_unknown_experiment(tmp_path, capsys, no_compute):
    with pytest.raises(SystemExit):
        cli.main(["sweep", "nope", "--list", "--store", str(tmp_path)])
    assert "invalid choice" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# Hand-made run tables (the columns ``frame`` gives that the functions below read)

RUN_COLUMNS = ["criterion", "material", "sparsity %", "seed", "accuracy %"]


def runs_table(rows):
    """A run table from (criterion, material, sparsity %, seed, accuracy %) tuples, all
    trained for 4 epochs, masks as chosen (no sanity check)."""
    return pd.DataFrame(rows, columns=RUN_COLUMNS).assign(epochs=4, check="none")


def cells(criterion, accuracies):
    """Rows of one criterion from {(material, sparsity %): [accuracy of seed 0, 1, ...]};
    None: no run for that seed."""
    return [(criterion, m, float(s), seed, float(a))
            for (m, s), values in accuracies.items()
            for seed, a in enumerate(values) if a is not None]


# ---------------------------------------------------------------------------------------
# detectable_effect


def t_formula(sd, n, power=0.8, alpha=0.05):
    return (stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(power, n - 1)) * sd / math.sqrt(n)


@pytest.mark.parametrize("sd, n, power, alpha", [
    (1.0, 2, 0.8, 0.05), (2.0, 6, 0.8, 0.05), (0.5, 10, 0.9, 0.05), (3.0, 34, 0.8, 0.01),
    (1.5, 100, 0.5, 0.1)])
def test_detectable_effect_is_the_t_formula(sd, n, power, alpha):
    assert V.detectable_effect(sd, n, power, alpha) == pytest.approx(
        t_formula(sd, n, power, alpha))


def test_detectable_effect_anchors():
    # sd 2: (2.5706 + 0.9195) * 2 / sqrt(6) = 2.850; (2.0345 + 0.8527) * 2 / sqrt(34) = 0.990
    assert V.detectable_effect(2.0, 6) == pytest.approx(2.85, abs=0.005)
    assert V.detectable_effect(2.0, 34) == pytest.approx(0.99, abs=0.005)
    assert V.detectable_effect(4.0, 6) == pytest.approx(2 * V.detectable_effect(2.0, 6))
    # a higher power or a stricter level needs a larger effect
    assert V.detectable_effect(1.0, 6, power=0.9) > V.detectable_effect(1.0, 6)
    assert V.detectable_effect(1.0, 6, alpha=0.01) > V.detectable_effect(1.0, 6)


def test_detectable_effect_decreases_with_pairs():
    values = [V.detectable_effect(1.0, n) for n in range(2, 60)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))


@pytest.mark.parametrize("n", [1, 0, -3, 2.0, True])
def test_detectable_effect_needs_two_pairs(n):
    with pytest.raises(ValueError, match="n must be an integer >= 2"):
        V.detectable_effect(1.0, n)


def test_detectable_effect_has_its_power_by_simulation():
    """With the true mean difference at the detectable effect, a paired t-test at 5 %
    rejects in about 80 % of repetitions."""
    n, reps = 10, 4000
    delta = V.detectable_effect(1.0, n)
    rng = np.random.default_rng(12345)
    differences = rng.normal(delta, 1.0, size=(reps, n))
    p = stats.ttest_1samp(differences, 0.0, axis=1).pvalue
    assert 0.74 <= (p < 0.05).mean() <= 0.86
    # the same power from the noncentral t distribution (no simulation)
    crit, ncp = stats.t.ppf(0.975, n - 1), delta * math.sqrt(n)
    exact = stats.nct.sf(crit, n - 1, ncp) + stats.nct.cdf(-crit, n - 1, ncp)
    assert 0.76 <= exact <= 0.84


# ---------------------------------------------------------------------------------------
# paired_sd


def test_paired_sd_pools_by_pairs():
    rows = pd.DataFrame({"per_seed": [[1.0, 2.0, 3.0], [0.0, 4.0], [7.0]]})
    # squares about the mean: 1 + 0 + 1 = 2 (2 degrees of freedom), 4 + 4 = 8 (1)
    assert V.paired_sd(rows) == pytest.approx(math.sqrt((2 + 8) / (2 + 1)))
    assert V.paired_sd(rows.iloc[:1]) == pytest.approx(1.0)
    assert V.paired_sd(rows.iloc[1:]) == pytest.approx(math.sqrt(8.0))  # the single is ignored


def test_paired_sd_nan_without_two_pairs():
    assert math.isnan(V.paired_sd(pd.DataFrame({"per_seed": [[1.0], [3.0]]})))
    assert math.isnan(V.paired_sd(pd.DataFrame({"per_seed": []})))


# ---------------------------------------------------------------------------------------
# gap_growth

# SNIP, per seed (DOP - images at 95) - (DOP - images at 90):
# seed 0: (45 - 40) - (61 - 60) = 4; seed 1: (46 - 44) - (62 - 62) = 2;
# seed 2: (50 - 42) - (63 - 61) = 6; seed 3 has no DOP run at 95 %: dropped.
GAP_SNIP = {("images", 90): [60, 62, 61, 70], ("images", 95): [40, 44, 42, 50],
            ("DOP", 90): [61, 62, 63, 71], ("DOP", 95): [45, 46, 50, None],
            ("images", 80): [1, 1, 1, 1], ("DOP", 80): [99, 99, 99, 99],  # other sparsity
            ("one patch", 95): [0, 0, 0, 0]}  # other material


def test_gap_growth_per_seed():
    runs = runs_table(cells("SNIP", GAP_SNIP))
    out = E.gap_growth(runs, {"SNIP": "DOP"}, "images", 90, 95)
    assert list(out.columns) == ["criterion", "material", "mean", "ci95", "count", "per_seed"]
    assert len(out) == 1
    row = out.iloc[0]
    assert (row["criterion"], row["material"]) == ("SNIP", "DOP")
    assert row["per_seed"] == pytest.approx([4.0, 2.0, 6.0])
    assert row["count"] == 3 and row["mean"] == pytest.approx(4.0)
    # the sample standard deviation of {4, 2, 6} is 2
    assert row["ci95"] == pytest.approx(stats.t.ppf(0.975, 2) * 2 / math.sqrt(3))
    # float sparsities name the same cells
    again = E.gap_growth(runs, {"SNIP": "DOP"}, "images", 90.0, 95.0).iloc[0]
    assert again["per_seed"] == pytest.approx([4.0, 2.0, 6.0])
    # the other way round: the gap from 95 to 90 is the negative
    back = E.gap_growth(runs, {"SNIP": "DOP"}, "images", 95, 90).iloc[0]
    assert back["per_seed"] == pytest.approx([-4.0, -2.0, -6.0])


def test_gap_growth_has_no_pairs_for_a_criterion_missing_a_cell():
    grasp = {("images", 90): [50, 51], ("images", 95): [30, 31], ("DOP", 90): [52, 53]}
    runs = runs_table(cells("SNIP", GAP_SNIP) + cells("GraSP", grasp))
    out = E.gap_growth(runs, {"GraSP": "DOP", "SNIP": "DOP", "SynFlow": "DOP"}, "images",
                       90, 95).set_index("criterion")
    assert list(out.index) == ["GraSP", "SNIP", "SynFlow"]  # every criterion asked for
    assert out.loc["SNIP", "count"] > 0
    for crit in ("GraSP", "SynFlow"):  # a cell missing: no pair, NaN
        assert out.loc[crit, "count"] == 0 and math.isnan(out.loc[crit, "mean"])
        assert out.loc[crit, "per_seed"] == []
    # a sparsity no run has: no pair
    assert E.gap_growth(runs, {"SNIP": "DOP"}, "images", 90, 60)["count"].tolist() == [0]


def test_gap_growth_own_all_ones():
    assert E.OWN_ALL_ONES == {"SNIP": "all-ones (BN eval)", "GraSP": "all-ones (BN train)"}
    snip = {("images", 90): [60, 60], ("images", 95): [40, 40],
            ("all-ones (BN eval)", 90): [55, 56], ("all-ones (BN eval)", 95): [30, 29],
            ("all-ones (BN train)", 90): [0, 0], ("all-ones (BN train)", 95): [0, 0]}
    grasp = {("images", 90): [60, 62], ("images", 95): [50, 52],
             ("all-ones (BN train)", 90): [58, 60], ("all-ones (BN train)", 95): [49, 47],
             ("all-ones (BN eval)", 90): [10, 10], ("all-ones (BN eval)", 95): [90, 90]}
    runs = runs_table(cells("SNIP", snip) + cells("GraSP", grasp))
    out = E.gap_growth(runs, E.OWN_ALL_ONES, "images", 90, 95).set_index("criterion")
    assert out.loc["SNIP", "material"] == "all-ones (BN eval)"
    # (30 - 40) - (55 - 60) = -5; (29 - 40) - (56 - 60) = -7
    assert out.loc["SNIP", "per_seed"] == pytest.approx([-5.0, -7.0])
    assert out.loc["GraSP", "material"] == "all-ones (BN train)"
    # (49 - 50) - (58 - 60) = 1; (47 - 52) - (60 - 62) = -3
    assert out.loc["GraSP", "per_seed"] == pytest.approx([1.0, -3.0])
    assert out.loc["GraSP", "mean"] == pytest.approx(-1.0)


def test_gap_growth_takes_pairs_of_one_criterion_in_two_modes():
    snip = {("images", 90): [60, 60], ("images", 95): [40, 40],
            ("all-ones (BN eval)", 90): [55, 56], ("all-ones (BN eval)", 95): [30, 29],
            ("all-ones (BN train)", 90): [65, 66], ("all-ones (BN train)", 95): [44, 43]}
    out = E.gap_growth(runs_table(cells("SNIP", snip)), E.PAPER_ALL_ONES, "images", 90, 95)
    assert list(zip(out["criterion"], out["material"], strict=True)) == list(E.PAPER_ALL_ONES)
    # BN train leads images by 5 and 6 at 90 %, by 4 and 3 at 95 %: the lead shrinks, -1, -3
    assert out["per_seed"].iloc[1] == pytest.approx([-1.0, -3.0])
    assert out["count"].tolist() == [2, 2, 0]  # no GraSP runs


def test_gap_growth_on_no_runs():
    out = E.gap_growth(runs_table([]), E.OWN_ALL_ONES, "images", 90, 95)
    assert out["count"].tolist() == [0, 0] and out["mean"].isna().all()
    assert list(out.columns) == ["criterion", "material", "mean", "ci95", "count", "per_seed"]


# ---------------------------------------------------------------------------------------
# seed_counts and the checks of Experiment.runs


@pytest.mark.parametrize("profile, seeds, decisive, expected", [
    ("smoke", None, None, (1, 1)), ("cpu", None, None, (3, 6)),
    ("smoke", 4, 5, (4, 5)), ("cpu", 1, None, (1, 6)), ("cpu", None, 9, (3, 9)),
    ("smoke", None, 7, (1, 7)), ("some other profile", None, None, (3, 6))])
def test_seed_counts(profile, seeds, decisive, expected):
    assert E.seed_counts(profile, seeds, decisive) == expected


def test_runs_decisive_seeds_at_least_seeds():
    with pytest.raises(ValueError, match="decisive_seeds"):
        E.EXPERIMENTS["dop_sparsity"].runs(CPU, seeds=4, decisive_seeds=3)
    runs = E.EXPERIMENTS["super_stitching"].runs(CPU, seeds=2, decisive_seeds=2)
    assert len(runs) == 22 * 2  # 11 arms x 2 sparsities, 2 seeds each


@pytest.mark.parametrize("sparsities", [(), [], (0.9, 0.9), [0.6, 0.9, 0.6], 0.9, "0.9", 1,
                                        (True,), (0.9, None), (0.9, math.nan)])
def test_runs_reject_bad_sparsities(sparsities):
    with pytest.raises(ValueError, match="sparsities"):
        E.EXPERIMENTS["dop_sparsity"].runs(CPU, sparsities=sparsities)


def test_runs_reject_unhashable_sparsities():
    with pytest.raises(ValueError, match="sparsities"):
        E.EXPERIMENTS["dop_sparsity"].runs(CPU, sparsities=[[0.9]])


def test_runs_take_sparsities_as_a_list_or_tuple():
    for given in ([0.9], (0.9,)):
        runs = E.EXPERIMENTS["dop_sparsity"].runs(CPU, sparsities=given)
        assert {r.sparsity for r in runs if r.arm.method != "dense"} == {0.9}
    for given in (iter([0.9]), np.array([0.9])):
        with pytest.raises(ValueError, match="sparsities"):
            E.EXPERIMENTS["dop_sparsity"].runs(CPU, sparsities=given)


# ---------------------------------------------------------------------------------------
# effects against one arm


def test_effects_against_one_arm():
    runs = runs_table(
        cells("SNIP", {("images", 90): [60, 62, 61], ("DOP", 90): [63, 63, 60],
                       ("images", 95): [40, 41], ("DOP", 95): [44, None]})
        + cells("GraSP", {("images", 90): [66, 64], ("images", 95): [50, 51, 52]})
        + cells("random", {("random (uniform)", 90): [58, 59, 57],
                           ("random (uniform)", 95): [45, 47]})
        + [("dense", "dense", 0.0, s, 80.0 + s) for s in range(3)])
    out = E.effects(runs, ("random", "random (uniform)"))
    assert list(out.columns) == ["check", "sparsity %", "epochs", "arm", "mean", "ci95",
                                 "count", "per_seed"]
    got = {(r["arm"], r["sparsity %"]): r["per_seed"] for _, r in out.iterrows()}
    assert got == {  # minus random at the same sparsity and seed
        ("SNIP: images", 90): pytest.approx([2.0, 3.0, 4.0]),
        ("SNIP: images", 95): pytest.approx([-5.0, -6.0]),
        ("SNIP: DOP", 90): pytest.approx([5.0, 4.0, 3.0]),
        ("SNIP: DOP", 95): pytest.approx([-1.0]),
        ("GraSP: images", 90): pytest.approx([8.0, 5.0]),
        ("GraSP: images", 95): pytest.approx([5.0, 4.0]),  # seed 2 has no random run
    }
    # arms in order of appearance, sparsities ascending within an arm
    assert list(zip(out["arm"], out["sparsity %"], strict=True)) == [
        ("SNIP: images", 90), ("SNIP: images", 95), ("SNIP: DOP", 90), ("SNIP: DOP", 95),
        ("GraSP: images", 90), ("GraSP: images", 95)]
    row = out.iloc[0]
    assert row["mean"] == pytest.approx(3.0) and row["count"] == 3
    assert row["ci95"] == pytest.approx(stats.t.ppf(0.975, 2) / math.sqrt(3))
    assert math.isnan(out.iloc[3]["ci95"])  # one pair
    # against SNIP fed images: random is an arm like the others, the reference is not
    other = E.effects(runs, ("SNIP", "images"))
    assert "SNIP: images" not in set(other["arm"]) and "dense: dense" not in set(other["arm"])
    rand = other[other["arm"] == "random: random (uniform)"].set_index("sparsity %")
    assert rand.loc[90, "per_seed"] == pytest.approx([-2.0, -3.0, -4.0])
    # the dense arm is left out even where the reference has runs at its sparsity (0 %)
    at_zero = pd.concat([runs, runs_table([("random", "random (uniform)", 0.0, s, 10.0)
                                           for s in range(3)])])
    paired = E.effects(at_zero, ("random", "random (uniform)"))
    assert "dense: dense" not in set(paired["arm"]) and 0.0 not in set(paired["sparsity %"])
    assert len(paired) == 6


# ---------------------------------------------------------------------------------------
# beside_paper


def test_beside_paper():
    rows = pd.DataFrame(
        [("SNIP", "DOP", 90.0, 50.0), ("SNIP", "images", 95.0, 30.0),
         ("GraSP", "stitching σ=0.75", 95.0, 40.0), ("dense", "dense", 0.0, 70.0),
         ("SNIP", "random segments", 90.0, 45.0), ("SNIP", "DOP", 70.0, 55.0),
         ("random", "random (uniform)", 90.0, 35.0), ("FORCE", "images", 90.0, 44.0)],
        columns=["criterion", "material", "sparsity %", "mean"])
    out = V.beside_paper(rows)
    paper = out["paper %"].tolist()
    assert paper[:4] == [64.12, 36.43, 62.06, 76.47]  # Tables 1 and 2; the dense ResNet-50
    assert V.PAPER_DENSE == 76.47
    assert all(math.isnan(p) for p in paper[4:])
    assert "paper %" not in rows  # the input is left as it was
    assert out.drop(columns="paper %").equals(rows)


# ---------------------------------------------------------------------------------------
# ordered


def test_ordered_text_by_appearance_numbers_ascending_stable():
    rows = pd.DataFrame({"material": ["images", "DOP", "images", "all-ones", "DOP"],
                         "sparsity %": [95.0, 90.0, 90.0, 60.0, 90.0],
                         "tag": ["a", "b", "c", "d", "e"]}, index=[10, 11, 12, 13, 14])
    out = E.ordered(rows, ["material", "sparsity %"])
    assert out["tag"].tolist() == ["c", "a", "b", "e", "d"]  # not alphabetical; b, e tie
    assert out.index.tolist() == [0, 1, 2, 3, 4]
    by_number = E.ordered(rows, ["sparsity %"])
    assert by_number["tag"].tolist() == ["d", "b", "c", "e", "a"]  # the ties keep their order
    ints = pd.DataFrame({"n": [3, 1, 2, 1], "tag": list("wxyz")})
    assert E.ordered(ints, ["n"])["tag"].tolist() == ["x", "z", "y", "w"]
    assert rows["tag"].tolist() == ["a", "b", "c", "d", "e"]  # the input is left as it was


# ---------------------------------------------------------------------------------------
# shown


SUMMARY_ROWS = pd.DataFrame(
    [("SNIP", "DOP", 90.0, 61.256, 1.5, 3, 2.1234, 100, 2, 1.234, 15.0, 64.12),
     ("dense", "dense", 0.0, 80.0, math.nan, 1, math.nan, 0, 0, 100.0, math.nan, 76.47)],
    columns=["criterion", "material", "sparsity %", "mean", "std", "count", "ci95", "samples",
             "empty layers (max)", "sparsest layer % (min)", "last stage % (min)", "paper %"])


def test_thinnest_last_stage_finds_the_worst_cell_beside_its_reference():
    rows = pd.DataFrame({
        "criterion": ["SNIP", "SNIP", "SNIP", "GraSP", "dense"],
        "material": ["images", "all-ones (BN train)", "all-ones (BN train)", "one patch", "dense"],
        "sparsity %": [95.0, 95.0, 90.0, 95.0, 0.0],
        "last stage % (min)": [52.8, 4.95, 20.0, 30.0, math.nan],
        "sparsest layer % (min)": [1.0, 0.1, 0.5, 0.7, 100.0]})
    thin = E.thinnest_last_stage(rows)
    assert thin["arm"] == "SNIP fed all-ones (BN train) at 95 %"
    assert (thin["last stage %"], thin["sparsest layer %"]) == (4.95, 0.1)
    assert thin["reference last stage %"] == 52.8
    alone = E.thinnest_last_stage(rows.iloc[3:])  # no images row for GraSP at 95 %
    assert alone["arm"] == "GraSP fed one patch at 95 %"
    assert math.isnan(alone["reference last stage %"])
    empty = E.thinnest_last_stage(rows.iloc[4:])  # dense only
    assert empty["arm"] == "no masked cell yet" and math.isnan(empty["last stage %"])


def test_shown_summary():
    styled = E.shown(SUMMARY_ROWS)
    assert isinstance(styled, pd.io.formats.style.Styler)
    assert list(styled.data.columns) == [
        "criterion", "material", "sparsity %", "accuracy %", "n", "± 95 %", "samples",
        "empty layers (worst)", "sparsest layer % (worst)", "last stage % (worst)", "paper %"]
    assert styled.data["accuracy %"].tolist() == [61.26, 80.0]  # rounded to 2 digits
    html = styled.to_html()
    assert "61.26" in html and "2.12" in html and "1.23" in html
    assert ">90<" in html and ">90.00<" not in html  # sparsity as a plain number
    assert "–" in html and "nan" not in html.lower()  # the dense row's missing values
    assert ">std<" not in html
    assert list(SUMMARY_ROWS.columns)[3] == "mean"  # the input is left as it was


def test_shown_effects():
    rows = pd.DataFrame(
        [("SNIP", 90.0, "DOP", 2.0, 2.484, 3, [1.0, 2.0, 3.0], 3.06, "unresolved"),
         ("GraSP", 95.0, "DOP", -1.0, math.nan, 1, [-1.0], -1.74, "unresolved")],
        columns=["criterion", "sparsity %", "material", "mean", "ci95", "count", "per_seed",
                 "paper effect", "verdict"])
    styled = E.shown(rows)
    assert list(styled.data.columns) == ["criterion", "sparsity %", "material", "difference",
                                         "± 95 %", "n", "paper", "verdict"]
    html = styled.to_html()
    assert "2.48" in html and "–" in html and "per_seed" not in html and "[1.0" not in html
    cross = rows.drop(columns=["criterion", "material", "paper effect", "verdict"]).assign(
        arm=["SNIP: DOP", "GraSP: DOP"])
    assert list(E.shown(cross).data.columns) == ["sparsity %", "difference", "± 95 %", "n",
                                                  "arm"]
    # a verdict table (``verdicts.claims``) has no per-seed lists: its mean is a difference
    claims = rows.drop(columns="per_seed").assign(**{"sparsity %": [90.0, math.nan]})
    assert "difference" in E.shown(claims).data.columns
    assert "nan" not in E.shown(claims).to_html().lower()  # a gap-growth row's sparsity
    # without per-seed differences or a verdict, a mean is an accuracy
    assert "accuracy %" in E.shown(rows.drop(columns=["per_seed", "verdict"])).data.columns


def test_shown_says_the_sign_figure_4_claims_where_the_paper_has_no_number():
    rows = pd.DataFrame([("SNIP", 90.0, "all-ones (BN eval)", -3.0, 1.0, 6),
                         ("GraSP", 90.0, "all-ones (BN eval)", -3.0, 1.0, 6),  # not its mode
                         ("SNIP", 90.0, "DOP", 2.0, 1.0, 6)],
                        columns=["criterion", "sparsity %", "material", "mean", "ci95", "count"])
    paper = E.shown(V.with_paper(rows, "images")).data["paper"].tolist()
    assert paper[0] == "worse" and math.isnan(paper[1]) and paper[2] == pytest.approx(3.06)


def test_check_effects_pair_each_check_with_its_own_mask():
    rows = [("GraSP", "DOP", 90.0, s, 60.0 + s) for s in range(3)]
    rows += [("GraSP", "images", 90.0, s, 50.0 + 2 * s) for s in range(3)]
    runs = runs_table(rows)
    checked = pd.concat([
        runs.assign(check="shuffled", **{"accuracy %": runs["accuracy %"] - [1, 2, 3] * 2}),
        runs.assign(check="inverted", **{"accuracy %": runs["accuracy %"] - 20.0}).iloc[:4],
        runs])
    out = E.check_effects(checked).set_index(["material", "check"])
    assert out.loc[("DOP", "shuffled"), "per_seed"] == pytest.approx([-1, -2, -3])
    assert out.loc[("images", "shuffled"), "per_seed"] == pytest.approx([-1, -2, -3])
    # inverted: DOP seeds 0-2 and images seed 0 only (iloc[:4])
    assert out.loc[("DOP", "inverted"), "count"] == 3
    assert out.loc[("images", "inverted"), "per_seed"] == pytest.approx([-20.0])
    assert out.loc[("DOP", "shuffled"), "mean"] == pytest.approx(-2.0)
    assert out.loc[("DOP", "shuffled"), "ci95"] == pytest.approx(
        stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3))
    assert "none" not in out.index.get_level_values("check")
    assert "check" in E.shown(out.reset_index()).data.columns  # it varies: shown
    assert "check" not in E.shown(E.effects(runs, "images")).data.columns  # constant: hidden


def test_inverted_cuts_and_collapsed_counts_find_the_runs_with_an_empty_layer():
    runs = pd.concat([
        runs_table([("SNIP", "DOP", 90.0, s, 10.0) for s in range(3)]).assign(
            check="inverted", **{"empty layers": [1, 0, 2]}),
        runs_table([("GraSP", "DOP", 90.0, s, 50.0) for s in range(2)]).assign(
            check="inverted", **{"empty layers": [0, 0]}),
        runs_table([("GraSP", "DOP", 90.0, 0, 50.0)]).assign(**{"empty layers": [3]})])
    out = E.inverted_cuts(runs).set_index("criterion")
    assert out.loc["SNIP"].tolist() == [3, 2] and out.loc["GraSP"].tolist() == [2, 0]
    # all runs with an empty layer: SNIP's two inverted ones and GraSP's chosen mask
    assert E.collapsed_counts(runs) == (3, 1)


def test_draw_spread_against_the_seed_spread():
    draws = runs_table([("SNIP", "DOP", 90.0, s, a) for s, a in enumerate([50, 52, 54])]
                       + [("GraSP", "DOP", 90.0, s, a) for s, a in enumerate([40, 40])])
    seeds = runs_table([("SNIP", "DOP", 90.0, s, a) for s, a in enumerate([50, 54, 58, 62])]
                       + [("SNIP", "images", 90.0, 0, 10.0)])
    out = E.draw_spread(draws, seeds).set_index("criterion")
    assert out.loc["SNIP", "sd over draws"] == pytest.approx(2.0)
    assert out.loc["SNIP", "sd over seeds"] == pytest.approx(np.std([50, 54, 58, 62], ddof=1))
    assert out.loc["SNIP", "variance ratio"] == pytest.approx(
        4.0 / np.var([50, 54, 58, 62], ddof=1))
    assert (out.loc["SNIP", "draws"], out.loc["SNIP", "seeds"]) == (3, 4)
    # no seed runs of GraSP: no share, not an error
    assert out.loc["GraSP", "seeds"] == 0 and math.isnan(out.loc["GraSP", "variance ratio"])
    assert out.loc["GraSP", "sd over draws"] == 0.0
    # planned but not run: a row with no draws, NaN spread
    planned = E.EXPERIMENTS["material_draws"].runs(CPU)
    empty = E.draw_spread(draws.iloc[:0], seeds, planned)
    assert len(empty) == 4 and (empty["draws"] == 0).all()
    assert empty["variance ratio"].isna().all()
    assert empty.set_index(["criterion", "material"]).loc[("SNIP", "DOP"), "seeds"] == 4


def test_shown_digits():
    styled = E.shown(SUMMARY_ROWS, digits=1)
    assert styled.data["accuracy %"].tolist() == [61.3, 80.0]
    assert "61.3" in styled.to_html()


# ---------------------------------------------------------------------------------------
# Zero records: empty tables, not errors

SUMMARY_COLUMNS = ["criterion", "material", "check", "sparsity %", "epochs", "mean", "std",
                   "count", "ci95", "samples", "rounds", "empty layers (max)",
                   "sparsest layer % (min)", "last stage % (min)"]
EFFECT_COLUMNS = ["criterion", "check", "sparsity %", "epochs", "material", "mean", "ci95", "count",
                  "per_seed"]


def test_tables_of_no_records(grids):
    runs = grids["dop_sparsity"][:4]
    for table in (E.frame([], [], CIFAR_CLASSES), E.frame(runs, [None] * 4, CIFAR_CLASSES)):
        assert table.empty and list(table.columns) == E.FRAME_COLUMNS
        summary = E.summary(table)
        assert summary.empty and list(summary.columns) == SUMMARY_COLUMNS
        beside = V.beside_paper(summary)
        assert beside.empty and list(beside.columns) == [*SUMMARY_COLUMNS, "paper %"]
        effects = E.effects(table, "images")
        assert effects.empty and list(effects.columns) == EFFECT_COLUMNS
        judged = V.with_paper(effects, "images")
        assert judged.empty
        assert list(judged.columns) == [*EFFECT_COLUMNS, "paper effect", "verdict",
                                        "paper in interval", "sign"]
        against = E.effects(table, ("random", "random (uniform)"))
        assert against.empty
        assert list(against.columns) == ["check", "sparsity %", "epochs", "arm", "mean",
                                         "ci95", "count", "per_seed"]
        assert math.isnan(V.paired_sd(effects))
        E.shown(beside).to_html()
        E.shown(judged).to_html()


# ---------------------------------------------------------------------------------------
# _last_stage


def test_last_stage_is_the_largest_number():
    assert E._last_stage({"stage9": 0.3, "stage10": 0.2, "stage2": 0.4, "head": 0.1}) == 0.2
    assert E._last_stage({"stage1": 0.6, "stage2": 0.4}) == 0.4
    assert E._last_stage({"head": 0.5, "stage1": 0.5}) == 0.5
    assert math.isnan(E._last_stage({"head": 1.0}))
    assert math.isnan(E._last_stage({}))


def test_decisive_seeds_default_to_at_least_seeds():
    assert E.seed_counts("cpu", 8, None) == (8, 8)
    assert E.seed_counts("cpu", 2, None) == (2, 6)


def test_gap_growth_leaves_out_a_criterion_without_a_complete_seed():
    rows = [("SNIP", "all-ones (BN eval)", 90.0, 0, 40.0), ("SNIP", "images", 90.0, 0, 50.0),
            ("SNIP", "all-ones (BN eval)", 95.0, 1, 30.0), ("SNIP", "images", 95.0, 1, 45.0)]
    runs = pd.DataFrame(rows, columns=["criterion", "material", "sparsity %", "seed",
                                       "accuracy %"])
    out = E.gap_growth(runs, {"SNIP": "all-ones (BN eval)"}, "images", 90, 95)
    assert out["count"].tolist() == [0] and out["mean"].isna().all()


def test_planned_cells_get_rows_with_no_runs(grids):
    runs = grids["dop_sparsity"]
    table = runs_table(cells("SNIP", {("images", 90): [60, 61], ("DOP", 90): [62, 64]}))
    summ = E.summary(table.assign(samples=100, rounds=1, **{
        "empty layers": 0, "sparsest layer %": 1.0, "last stage %": 30.0}), runs)
    assert len(summ) == len(E.planned_cells(runs)) == 21  # 16 material cells, dense, 4 random
    got = summ.set_index(["criterion", "material", "sparsity %"])
    assert got.loc[("SNIP", "DOP", 90.0), "count"] == 2
    assert got.loc[("GraSP", "DOP", 95.0), "count"] == 0
    eff = E.effects(table, "images", runs).set_index(["criterion", "material", "sparsity %"])
    assert len(eff) == 8  # DOP against images: 2 criteria x 4 sparsities
    assert eff.loc[("SNIP", "DOP", 90.0), "per_seed"] == pytest.approx([2.0, 3.0])
    assert eff.loc[("GraSP", "DOP", 60.0), "count"] == 0
    assert eff.loc[("GraSP", "DOP", 60.0), "per_seed"] == []
    judged = V.with_paper(eff.reset_index(), "images")
    assert set(judged.loc[judged["count"] == 0, "verdict"]) == {"unresolved"}
    cross = E.effects(table, ("random", "random (uniform)"), runs)
    assert len(cross) == 16 and (cross["count"] == 0).all()  # 4 arms x 4 sparsities, no random


def test_effects_against_a_reference_with_no_runs_yet_list_the_planned_pairs(grids):
    table = runs_table(cells("SNIP", {("images", 90): [50, 52], ("one patch", 90): [40, 41]}))
    out = E.effects(table, "DOP", grids["ablations"])  # no DOP run has finished
    assert len(out) == 2 * 4 * 5  # 2 criteria x 4 sparsities x the 5 other materials
    assert (out["count"] == 0).all() and out["sparsity %"].dtype == float
    patch = out[(out["criterion"] == "SNIP") & (out["material"] == "one patch")]
    assert list(patch["sparsity %"]) == [60.0, 80.0, 90.0, 95.0]
    # a grid without the reference (the smoke profile's ablations) has no pair to plan
    planned = [r for r in grids["ablations"] if r.arm.label != "DOP"]
    assert E.effects(table, "DOP", planned).empty


def test_claims_judge_each_cell_of_the_papers_claims():
    dop = runs_table(
        cells("SNIP", {("images", 90): [50, 52, 51], ("DOP", 90): [54, 56, 55]})  # +4 each
        + cells("GraSP", {("images", 95): [60, 61, 62], ("DOP", 95): [62, 63, 64]}))  # +2
    ablations = runs_table(cells("SNIP", {
        ("images", 90): [50, 52, 51], ("all-ones (BN eval)", 90): [40, 42, 41],  # -10
        ("images", 95): [40, 42, 41], ("all-ones (BN eval)", 95): [20, 22, 21]}))  # -20
    stitching = runs_table(cells("GraSP", {("images", 95): [60, 61, 62, 63],
                                           ("stitching σ=0.75", 95): [60, 62, 61, 64]}))
    out = V.claims({"dop_sparsity": dop, "ablations": ablations,
                    "super_stitching": stitching})
    assert len(out) == 6 + 8 + 2 + 3  # C1 cells, C2 cells, C3 cells, C1 growth rows
    row = out[(out["claim"] == "C2") & (out["criterion"] == "SNIP")
              & (out["sparsity %"] == 90)].iloc[0]
    assert row["mean"] == pytest.approx(4.0) and row["count"] == 3
    assert row["paper"] == "+3.06" and row["verdict"] == "supported"
    grasp95 = out[(out["claim"] == "C2") & (out["criterion"] == "GraSP")
                  & (out["sparsity %"] == 95)].iloc[0]
    assert grasp95["paper"] == "-1.74" and grasp95["verdict"] == "contradicted"  # DOP better
    ones = out[(out["claim"] == "C1") & (out["sparsity %"] == 95)
               & (out["criterion"] == "SNIP")].iloc[0]
    assert ones["mean"] == pytest.approx(-20.0) and ones["verdict"] == "supported"
    growth = out[out["material"].str.contains("gap")]
    growth = growth.set_index(["criterion", growth["material"].str.split(":").str[0]])
    own = ("SNIP", "all-ones (BN eval)")
    assert growth.loc[own, "mean"] == pytest.approx(-10.0)  # wider at 95 %: as claimed
    assert growth.loc[own, "verdict"] == "supported"
    assert growth.loc[own, "paper"] == "falls (negative)"
    for cell in (("SNIP", "all-ones (BN train)"), ("GraSP", "all-ones (BN train)")):
        assert growth.loc[cell, "count"] == 0 and growth.loc[cell, "verdict"] == "unresolved"
    missing = out[(out["claim"] == "C3") & (out["material"] == "stitching σ=0.5")].iloc[0]
    assert missing["count"] == 0 and missing["verdict"] == "unresolved"
    sigma = out[(out["claim"] == "C3") & (out["material"] == "stitching σ=0.75")].iloc[0]
    assert sigma["count"] == 4 and sigma["mean"] == pytest.approx(0.25)

    c2 = out[out["claim"] == "C2"].set_index(["criterion", "sparsity %"])["decisive"]
    assert list(c2[c2].index) == [("SNIP", 90), ("SNIP", 95), ("GraSP", 90), ("GraSP", 95)]
    # the own-mode all-ones cells and their gap rows are decisive; SNIP's other mode, which
    # the paper may have run (PAPER_ALL_ONES), is judged on the planned seeds
    other = out["material"].str.startswith("all-ones (BN train)") & (out["criterion"] == "SNIP")
    assert out.loc[out["claim"].isin(["C1", "C3"]) & ~other, "decisive"].all()
    assert other.sum() == 3 and not out.loc[other, "decisive"].any()
    assert (out.loc[other, "sign"] == -1).all()
    assert list(out.loc[out["claim"] == "C2", "sign"]) == [1] * 7 + [-1]  # GraSP at 95 %

    c4 = pd.DataFrame([{"claim": "C4", "criterion": "RReg", "material": "m", "count": 0,
                        "verdict": "unresolved"}])
    tally = V.tally(pd.concat([out, c4], ignore_index=True))
    assert list(tally.index) == ["DOP", "expanders"]
    dop_row = tally.loc["DOP"]
    # SNIP all-ones at 90 and 95 %, its gap growth and SNIP DOP at 90 %; GraSP DOP at 95 %
    assert dop_row["supported"] == 4 and dop_row["contradicted"] == 1
    assert dop_row["cells"] == 19 == dop_row[list(V.VERDICTS)].sum()
    # SNIP DOP at 60, 80, 95 %, GraSP DOP at 60, 80, 90 %, GraSP all-ones and SNIP's in
    # train mode (2 cells and a growth row each), σ=0.5
    assert dop_row["no pairs yet"] == 13 == dop_row["unresolved"]
    assert tally.loc["expanders"].tolist() == [1, 0, 0, 0, 0, 1, 1]
    with pytest.raises(ValueError, match=r"claims \['C9'\] belong to no paper"):
        V.tally(c4.assign(claim="C9"))


def test_over_looks_widens_the_decisive_cells_to_bonferroni_over_every_allowed_look():
    per_seed = [3.0, 0.0, 2.0, 0.5, 2.5, -0.5, 1.5, 1.0]  # t = 2.89 on 7 degrees of freedom
    mean, sd = np.mean(per_seed), np.std(per_seed, ddof=1)
    half = stats.t.ppf(0.975, 7) * sd / math.sqrt(8)
    judged = pd.DataFrame({"mean": [mean, mean, 5.0], "ci95": [half, half, math.nan],
                           "count": [8, 8, 1], "sign": [1, 1, 1],
                           "decisive": [True, False, True]})
    out = V.over_looks(judged, planned=6, most=10)
    assert list(out["looks"]) == [5, 1, 5]
    # 5 looks: each a two-sided interval at level 0.05 / 5
    assert out["ci over looks"][0] == pytest.approx(stats.t.ppf(1 - 0.005, 7) * sd / math.sqrt(8))
    assert out["ci over looks"][1] == pytest.approx(half)
    assert math.isnan(out["ci over looks"][2])
    assert list(out["verdict over looks"]) == ["unresolved", "supported", "unresolved"]
    # another overall level: one look of a 90 % interval, five of 98 %
    wide = V.over_looks(judged, planned=6, most=10, alpha=0.10)["ci over looks"]
    assert wide[1] == pytest.approx(stats.t.ppf(0.95, 7) * sd / math.sqrt(8))
    assert wide[0] == pytest.approx(stats.t.ppf(1 - 0.01, 7) * sd / math.sqrt(8))
    with pytest.raises(ValueError, match="most"):
        V.over_looks(judged, planned=6, most=5)
    with pytest.raises(ValueError, match="8 pairs, more than most=7"):
        V.over_looks(judged, planned=6, most=7)  # the study allowed more than it says


def test_over_looks_holds_the_level_that_the_stopping_rule_breaks():
    """With no effect, extending a cell from 6 to 10 pairs while its interval is
    unresolved finds an effect more often than 5 %; judged over its looks, at most 5 %."""
    trials, sd = 20000, 3.0
    diffs = np.random.default_rng(0).normal(0.0, sd, (trials, 10))
    stop = np.full(trials, 10)
    for n in range(9, 5, -1):  # the first n at which the rule's verdict resolves
        m, s = diffs[:, :n].mean(1), diffs[:, :n].std(1, ddof=1)
        h = stats.t.ppf(0.975, n - 1) * s / math.sqrt(n)
        lo, hi = m - h, m + h
        resolved = (lo > 0) | (hi < 0) | ((lo > -V.MARGIN) & (hi < V.MARGIN))
        stop[resolved] = n
    take = np.arange(10)[None, :] < stop[:, None]
    mean = (diffs * take).sum(1) / stop
    std = np.sqrt(((diffs - mean[:, None]) ** 2 * take).sum(1) / (stop - 1))
    judged = pd.DataFrame({"mean": mean, "ci95": stats.t.ppf(0.975, stop - 1) * std
                           / np.sqrt(stop), "count": stop, "sign": 1, "decisive": True})
    out = V.over_looks(judged, planned=6, most=10)
    found = ["supported", "contradicted"]
    naive = pd.Series([V.verdict(m, h, 1) for m, h in
                       zip(judged["mean"], judged["ci95"], strict=True)])
    assert naive.isin(found).mean() > 0.08  # optional stopping: about twice the level
    # Bonferroni over all allowed looks is conservative: about 1 %, under half the level
    # (over only the looks a cell took it would be about 5 %)
    assert out["verdict over looks"].isin(found).mean() < 0.025


def test_extension_adds_the_next_seed_to_unresolved_decisive_cells_only():
    clear = {("images", 90): [50, 52, 51], ("DOP", 90): [60, 62, 61]}  # +10 each: supported
    noisy = {("images", 95): [50, 52, 51], ("DOP", 95): [40, 62, 55]}  # unresolved
    table = runs_table(cells("SNIP", {**clear, **noisy}))
    ext = V.extension("dop_sparsity", CPU, table)
    got = {(r.arm.criterion, r.arm.label, r.sparsity, r.seed) for r in ext}
    # SNIP at 95 % gets seed 3 of both arms; GraSP's cells have no pair yet: seed 0
    assert got == {("SNIP", "images", 0.95, 3), ("SNIP", "DOP", 0.95, 3),
                   ("GraSP", "images", 0.9, 0), ("GraSP", "DOP", 0.9, 0),
                   ("GraSP", "images", 0.95, 0), ("GraSP", "DOP", 0.95, 0)}
    assert len({r.config.key() for r in ext}) == len(ext)
    # the same cell at the most seeds allowed is not extended
    assert not any(r.arm.criterion == "SNIP" for r in V.extension("dop_sparsity", CPU, table,
                                                                    most=3))


def test_tables_read_seeds_added_beyond_the_plan(tmp_path):
    """Seeds that the stopping rule added (past decisive_seeds) are read, and the next one
    asked for is the smallest without a pair."""
    exp = E.EXPERIMENTS["dop_sparsity"]
    wide = exp.runs(CPU, seeds=3, decisive_seeds=8)
    store = Store(tmp_path)
    cell = [r for r in wide if r.arm.method == "snip" and r.sparsity == 0.95]
    for r in cell:  # SNIP images and DOP at 95 %: seeds 0..7, but DOP lacks seed 3
        if not (r.arm.label == "DOP" and r.seed == 3):
            acc = 0.5 + 0.01 * r.seed + (0.05 * (-1) ** r.seed if r.arm.label == "DOP" else 0)
            store.write(r.config.key(), fake(r, acc))
    planned, table = E.record_table("dop_sparsity", CPU, store=tmp_path)
    assert max(r.seed for r in planned) == 5  # the plan: 6 decisive seeds
    seeds = set(table.loc[(table["material"] == "DOP"), "seed"])
    assert seeds == {0, 1, 2, 4, 5, 6, 7}  # seeds 6 and 7 read although not planned
    ext = V.extension("dop_sparsity", CPU, table)
    snip95 = {(r.arm.label, r.seed) for r in ext if r.arm.method == "snip" and r.sparsity == 0.95}
    assert snip95 == {("images", 3), ("DOP", 3)}  # the gap first


def test_a_cell_shared_by_two_chapters_reads_the_same_seeds_in_both(tmp_path):
    """SNIP fed DOP at 90 % is decisive in dop_sparsity (extended there to 8 seeds) and an
    ordinary 3-seed cell of the ablations: both chapters read all 8 stored runs."""
    store = Store(tmp_path)
    wide = E.EXPERIMENTS["dop_sparsity"].runs(CPU, seeds=3, decisive_seeds=8)
    for r in wide:
        if r.arm.method == "snip" and r.sparsity == 0.9 and r.arm.label in ("images", "DOP"):
            store.write(r.config.key(), fake(r, 0.5 + 0.01 * r.seed))
    for name in ("dop_sparsity", "ablations"):
        _, table = E.record_table(name, CPU, store=tmp_path)
        dop = table[(table["material"] == "DOP") & (table["criterion"] == "SNIP")]
        assert sorted(dop["seed"]) == list(range(8)), name


def test_a_chapter_counts_its_planned_runs_apart_from_added_seeds(monkeypatch, capsys):
    """The prose says how many of the planned runs the record holds: seeds added past the
    plan are counted apart, never as planned runs (once 96 of 87)."""
    import myst_nb

    glued = {}
    monkeypatch.setattr(myst_nb, "glue", lambda key, value, display=True: glued.update(
        {key: value}))
    P = config.get_profile("smoke")
    store = Store(study.store_dir(P.name))
    planned = E.EXPERIMENTS["dop_sparsity"].runs(P, seeds=1, decisive_seeds=1)
    wide = E.EXPERIMENTS["dop_sparsity"].runs(P, seeds=1, decisive_seeds=2)
    for r in wide:
        store.write(r.config.key(), fake(r, 0.5))  # the plan's seed 0 and added seeds 1
    E.chapter("dop_sparsity", "smoke", "resnet20", None, None, None, False, None)
    added = sum(r.seed == 1 for r in wide)
    assert glued["planned_runs"] == len(planned) and glued["runs"] == len(planned)
    assert glued["extra_runs"] == added > 0
    assert f"{len(planned)} of the {len(planned)} planned runs" in capsys.readouterr().out


def test_report_draws_shows_and_glues_an_effect_table(monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import myst_nb

    glued, shown = {}, []
    monkeypatch.setattr(myst_nb, "glue",
                        lambda key, value, display=True: glued.update({key: value}))
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    rows = V.with_paper(E.effects(runs_table(cells("SNIP", {
        ("images", 90): [50, 52, 51], ("DOP", 90): [54, 56, 55]})), "images"), "images")
    V.report(rows)
    assert glued["snip_dop_90_mean"] == pytest.approx(4.0) and glued["snip_dop_90_n"] == 3
    assert glued["snip_dop_90_verdict"] == "supported" and len(shown) == 1
    # every pair differs by exactly 4: the interval [4, 4] excludes the paper's +3.06
    assert (glued["paper_numbers"], glued["paper_outside"]) == (1, 1)
    import matplotlib.pyplot as plt

    plt.close("all")


def test_the_smoke_grids_keep_only_the_sparsities_arms_and_budgets_their_prose_quotes():
    smoke, cpu = config.get_profile("smoke"), config.get_profile("cpu")

    def grid(name, profile, **kwargs):
        runs = E.get_experiment(name).runs(profile, **kwargs)
        return ({r.sparsity for r in runs if r.sparsity}, {r.arm.label for r in runs},
                {r.epochs for r in runs})

    for name in ("dop_sparsity", "ablations"):
        assert grid(name, smoke)[0] == {0.9, 0.95}
        assert grid(name, cpu)[0] == set(E.get_experiment(name).sparsities)
        assert grid(name, smoke, sparsities=[0.6])[0] == {0.6}  # a given grid wins
    assert grid("ablations", smoke)[1] == {"images", "all-ones (BN eval)", "all-ones (BN train)"}
    assert grid("ablations", cpu)[1] == set(E.ABLATION_LABELS)
    assert grid("super_stitching", smoke)[0] == {0.95}
    assert grid("super_stitching", cpu)[0] == {0.9, 0.95}
    assert grid("super_stitching", smoke)[1] == grid("super_stitching", cpu)[1]  # every method
    assert grid("budget", smoke)[2] == {1, 2} and grid("budget", cpu)[2] == {4, 8, 16}
    assert grid("sanity_checks", smoke)[:2] == ({0.9}, {"DOP"})
    assert grid("sanity_checks", cpu)[:2] == ({0.9, 0.95}, {"images", "DOP", "stitching σ=0.5"})
    assert grid("material_draws", smoke)[0] == grid("material_draws", cpu)[0] == {0.9}


@pytest.mark.parametrize("smoke, error", [
    ({"seeds": (1, 1)}, "smoke may replace"),  # a field that changes what cells mean
    ({"sparsities": (0.5,)}, "smoke sparsities"),  # not a sparsity of the full grid
    ({"epoch_factors": (3,)}, "smoke epoch_factors")])
def test_a_smoke_grid_only_shrinks_the_full_grid(smoke, error):
    with pytest.raises(ValueError, match=error):
        E.Experiment("x", E.dop_arms, "images", smoke=smoke)


def test_labels_that_name_no_arm_are_an_error():
    exp = E.Experiment("x", E.dop_arms, "images", smoke={"labels": ("images", "DOPE")})
    assert {r.arm.label for r in exp.runs(CPU)} >= {"images", "DOP"}  # cpu: no smoke fields
    with pytest.raises(ValueError, match=r"labels \['DOPE'\] name no arm"):
        exp.runs(config.get_profile("smoke"))
    with pytest.raises(TypeError):  # the published grids' smoke fields cannot drift
        E.EXPERIMENTS["ablations"].smoke["labels"] = ("images",)


@pytest.mark.parametrize("own, workers, expected", [(None, None, 1), (2, None, 2), (None, 3, 3)])
def test_a_chapter_trains_in_the_profiles_processes_unless_told(tmp_path, monkeypatch, own,
                                                              workers, expected):
    # the smoke profile's runs (under a second) train in the notebook's own process: a
    # pool of two takes seconds to start; the published record's in two
    assert (config.PROFILES["smoke"].workers, config.PROFILES["cpu"].workers) == (1, 2)
    calls = []
    monkeypatch.setattr(study, "sweep", lambda cfgs, store, workers: calls.append(workers))
    P = config.get_profile("smoke", **({} if own is None else {"workers": own}))
    E.record_table("budget", P, compute=True, workers=workers, store=tmp_path)
    expander_study.collect(P, expander_study.scale(P, 1), compute=True, workers=workers)
    assert calls == [expected, expected]
    with pytest.raises(ValueError, match="workers must be an integer >= 1, got 0"):
        E.record_table("budget", P, compute=True, workers=0, store=tmp_path)
    assert len(calls) == 2  # refused before any run
    with pytest.raises(ValueError, match="Profile.workers"):
        config.get_profile("smoke", workers=0)


def test_glue_setting_names_the_recipe_the_data_and_the_cpus(monkeypatch):
    import myst_nb

    glued = {}
    monkeypatch.setattr(myst_nb, "glue",
                        lambda key, value, display=True: glued.update({key: value}))
    table = pd.DataFrame({"cpu": ["Intel Xeon", "AMD EPYC", "AMD EPYC"]})
    E.glue_setting(config.get_profile("smoke"), table, prefix="check")
    # the smoke profile: 1 epoch, 32 training images per class of the synthetic set
    assert (glued["check_epochs"], glued["check_train_per_class"]) == (1, 32)
    assert glued["check_cpus"] == "AMD EPYC, Intel Xeon"  # sorted, each once
    assert E.machines(table.iloc[:0]) == "no machine yet"

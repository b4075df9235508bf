"""The study's grids, their tables and verdicts, and the ``sweep`` command, checked by hand.

Nothing here trains a network: grids are RunConfigs (cheap to build), records are made up.
"""

import math

import pandas as pd
import pytest
from scipy import stats

from opai_lib import __main__ as cli
from opai_lib import config, study
from opai_lib import experiments as E
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
}
# Runs with 3 seeds per cell, 6 per decisive cell:
# dop_sparsity: 16 material cells (8 decisive) + dense (1 cell) + random (4 cells) -> 48+24+3+12
# ablations: 12 arms x 4 sparsities, 8 decisive -> 48 + 40*3
# super_stitching: 11 arms x 2 sparsities, 3 decisive -> 18 + 19*3
TOTAL = {"dop_sparsity": 87, "ablations": 168, "super_stitching": 75}


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
    (3.0, 1.0, 0, "unresolved"),           # excludes 0, no claimed sign, wider than margin
    (-3.0, 0.5, 0, "unresolved"),
])
def test_verdict_outcomes(mean, half, sign, expected):
    assert E.verdict(mean, half, sign) == expected


def test_verdict_margin_is_a_parameter():
    assert E.verdict(0.5, 1.0, 1, margin=1.0) == "unresolved"  # [-0.5, 1.5] reaches past 1
    assert E.verdict(1.0, 2.0, 1, margin=5.0) == "smaller than 5 points"  # [-1, 3]
    assert E.verdict(0.5, 1.0, 1, margin=2.5) == "smaller than 2.5 points"


@pytest.mark.parametrize("sign", [2, -2, 0.5, "1", None])
def test_verdict_rejects_other_signs(sign):
    with pytest.raises(ValueError, match="paper_sign"):
        E.verdict(1.0, 1.0, sign)


# ---------------------------------------------------------------------------------------
# Experiment.runs


@pytest.mark.parametrize("name", sorted(E.EXPERIMENTS))
def test_runs_seeds_per_cell(grids, name):
    runs = grids[name]
    assert len(runs) == TOTAL[name]
    seeds = {}
    for r in runs:
        seeds.setdefault(cell(r), []).append(r.seed)
        assert r.decisive == (cell(r) in DECISIVE[name])
        assert r.config.seed == r.seed
        assert r.config.sparsity == pytest.approx(r.sparsity)
    assert {c for c in seeds if c in DECISIVE[name]} == DECISIVE[name]
    for c, s in seeds.items():
        assert sorted(s) == list(range(6 if c in DECISIVE[name] else 3)), c


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
            assert r.config.options.on_collapse == "error"
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
    smoke = config.get_profile("smoke")  # score_per_class 4
    per_class = {(a.method, a.label): a.material.per_class for a in E.stitching_arms(smoke)
                 if a.material is not None}
    assert per_class[("grasp", "images")] == 12
    assert per_class[("grasp", "stitching σ=0.5")] == 12
    assert per_class[("grasp", "stitching σ=0.75")] == 4
    assert per_class[("force", "images")] == 4


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
    assert first["samples"] == 100
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
    assert dense["samples"] == 0 and dense["empty layers"] == 0
    assert dense["sparsest layer %"] == 100 and math.isnan(dense["last stage %"])
    assert dense["accuracy %"] == pytest.approx(70.0)


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
    judged = E.with_paper(out, "images").iloc[0]
    assert judged["paper effect"] == pytest.approx(64.12 - 61.06)
    # [2 - 2.48, 2 + 2.48] includes 0 and reaches past 2 points: three seeds are too few
    assert judged["verdict"] == "unresolved"


# ---------------------------------------------------------------------------------------
# The paper


def test_paper_effect():
    assert E.paper_effect("SNIP", "DOP", "images", 90) == pytest.approx(64.12 - 61.06)
    assert E.paper_effect("SNIP", "DOP", "images", 90.0) == pytest.approx(3.06)
    assert E.paper_effect("GraSP", "DOP", "images", 95) == pytest.approx(60.02 - 61.76)
    assert E.paper_effect("GraSP", "stitching σ=0.75", "images", 60) == pytest.approx(
        73.94 - 73.87)
    assert math.isnan(E.paper_effect("SNIP", "random segments", "images", 90))
    assert math.isnan(E.paper_effect("SNIP", "DOP", "images", 70))
    assert math.isnan(E.paper_effect("FORCE", "images", "images", 90))


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
    out = E.with_paper(rows, "images")
    assert out["verdict"].tolist() == [
        "supported", "contradicted", "supported", "supported", "contradicted",
        "unresolved", "smaller than 2 points", "unresolved"]
    paper = out["paper effect"].tolist()
    assert paper[0] == pytest.approx(3.06) and paper[2] == pytest.approx(-1.74)
    assert all(math.isnan(p) for p in paper[3:7])
    assert len(rows.columns) == 5  # the input is left as it was


def test_paper_sign_covers_the_all_ones_arms():
    assert E.PAPER_SIGN == {("SNIP", "all-ones (BN eval)"): -1, ("SNIP", "all-ones (BN train)"): -1,
                            ("GraSP", "all-ones (BN eval)"): -1,
                            ("GraSP", "all-ones (BN train)"): -1}


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

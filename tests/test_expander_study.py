"""The expander chapter's grid, sizing, tables and C4 verdicts, checked by hand.

Nothing here trains a network: grids are RunConfigs, masks are drawn without training,
records and run tables are made up.
"""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from opai_lib import config, expanders, study, verdicts
from opai_lib import expander_study as es

CPU, SMOKE = config.get_profile("cpu"), config.get_profile("smoke")


def t95(values):
    """Mean and 95 % t half-width of ``values``, computed here from scipy."""
    v = np.asarray(values, dtype=float)
    return v.mean(), stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))


# ---------------------------------------------------------------------------------------
# Parameters


@pytest.mark.parametrize("kwargs, message", [
    ({"seeds": 0}, "seeds must be an integer >= 1, got 0"),
    ({"seeds": 2.0}, "seeds must be an integer >= 1, got 2.0"),
    ({"vgg_width": 1.5}, r"vgg_width = 1.5; allowed: a number in \(0, 1\]"),
    ({"resnet_width": "0.5"}, "resnet_width = '0.5'; allowed"),
    ({"degrees": (4,)}, r"degrees = \(4,\); allowed: a list of at least 1 distinct values of "
                        r"\(60, 30, 15, 3\)"),
    ({"degrees": [3, 3]}, r"degrees = \[3, 3\]"),
    ({"degrees": []}, r"degrees = \[\]"),
    ({"resnet_depths": [20]}, r"resnet_depths = \[20\]; allowed: a list of at least 2"),
    ({"resnet_depths": [20, 21]}, r"resnet_depths = \[20, 21\]"),
    ({"train_per_class": -1}, "train_per_class must be an integer >= 0, got -1"),
    ({"best_of": 0}, "best_of must be an integer >= 1, got 0"),
])
def test_bad_scale_names_the_parameter_and_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        es.scale(CPU, **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"compute": "yes"}, "compute = 'yes'; allowed: True or False"),
    ({"workers": 0}, "workers must be an integer >= 1, got 0"),
    ({"profile": "gpu"}, "unknown profile 'gpu'"),
    ({"profile": "imagenet"}, "profile = 'imagenet'; allowed: a profile whose dataset"),
    ({"seeds": -1}, "seeds must be an integer >= 1, got -1"),
])
def test_chapter_stops_before_any_compute(kwargs, message):
    kwargs = {"profile": "smoke", **kwargs}
    with pytest.raises(ValueError, match=message):
        es.chapter(**kwargs)


def test_scale_by_profile_and_overrides():
    assert es.scale(CPU).seeds >= 3 and es.scale(SMOKE).seeds <= 2
    s = es.scale(CPU, seeds=4, degrees=[3, 60], resnet_depths=[56, 20])
    assert (s.seeds, s.degrees, s.resnet_depths) == (4, (3, 60), (20, 56))
    assert s.vgg_width == es.SCALES["cpu"].vgg_width  # the rest by profile


# ---------------------------------------------------------------------------------------
# The grid


@pytest.fixture(scope="module")
def cpu_runs():
    return es.runs(CPU, es.scale(CPU))


def test_grid_size_and_pairing_by_seed(cpu_runs):
    s = es.scale(CPU)
    # per seed: VGG dense + 3 generators x 4 degrees; budget: deep RReg, deep Random,
    # shallow dense; ResNets: 3 depths x 3 generators
    per_seed = 1 + 3 * 4 + 3 + 3 * 3
    assert len(cpu_runs) == s.seeds * per_seed == 75
    # the budget's deep arms are ResNet cells: 2 configs per seed are shared
    assert len(es.configs("cpu")) == s.seeds * (per_seed - 2) == 69
    for seed in range(s.seeds):
        mine = [r for r in cpu_runs if r.seed == seed]
        assert len(mine) == per_seed and {r.config.seed for r in mine} == {seed}
    cells = {(r.part, r.config.model, r.config.width, r.arm, r.degree) for r in cpu_runs}
    assert len(cells) == per_seed  # every cell at every seed
    # a cell's runs differ only in the seed; the three generators of a cell share a density
    for part, model, _, _, degree in cells:
        sparsity = {r.config.sparsity for r in cpu_runs if r.arm != "dense" and
                    (r.part, r.config.model, r.degree) == (part, model, degree)}
        assert len(sparsity) <= 1


def test_same_seed_same_initial_network_for_every_generator():
    planned = es.runs(SMOKE, es.scale(SMOKE))
    vgg = [r for r in planned if r.part == "vgg" and r.degree == 3]
    nets = {(r.arm, r.seed): study.initial_model(r.config, 10).state_dict() for r in vgg}
    for seed in (0, 1):
        ref = nets["random", seed]
        for arm in ("xnet", "rreg"):
            assert all(torch.equal(ref[k], v) for k, v in nets[arm, seed].items())
    assert not torch.equal(nets["random", 0]["features.0.weight"],
                           nets["random", 1]["features.0.weight"])


def test_equal_kept_counts_per_layer_and_first_conv_dense():
    planned = es.runs(SMOKE, es.scale(SMOKE))
    for part, model, degree in (("vgg", "vgg16_bn", 15), ("vgg", "vgg16_bn", 3),
                                ("resnets", "resnet32", 3)):
        cell = [r for r in planned if (r.part, r.config.model, r.degree, r.seed)
                == (part, model, degree, 0)]
        assert sorted(r.arm for r in cell) == sorted(es.GENERATORS)
        kept = {}
        for r in cell:
            mask = study.make_mask(r.config, study.initial_model(r.config, 10), None)
            first = next(iter(mask))
            assert mask[first].all(), (r.arm, first)  # VGG's first conv, a ResNet's stem
            assert not list(mask.values())[1].all()  # the next layer is sparse
            kept[r.arm] = [int(m.sum()) for m in mask.values()]
        assert kept["random"] == kept["xnet"] == kept["rreg"]
    vgg = [r for r in planned if r.part == "vgg" and r.arm != "dense"]
    assert all(r.config.options.first_layer is False for r in vgg)
    assert all(r.config.options.best_of == (2 if r.arm == "rreg" else 1) for r in vgg)


def test_degree_density_by_hand():
    # VGG-16 at width 0.125: channels 8, 8, 16, 16, 32 x3, 64 x6; first conv dense,
    # X-Net keeps n_in * min(d, n_out) kernels of 9 in every other conv; classifier dense.
    plan = [8, 8, 16, 16, 32, 32, 32, 64, 64, 64, 64, 64, 64]
    shapes = list(zip([3, *plan[:-1]], plan, strict=True))
    for d in (3, 15):
        kept = 3 * 8 * 9 + sum(i * min(d, o) * 9 for i, o in shapes[1:]) + 64 * 10
        total = sum(i * o * 9 for i, o in shapes) + 64 * 10
        assert es.degree_density("vgg16_bn", 0.125, d) == pytest.approx(kept / total)


def resnet20_weights(width):
    """Prunable weights of a CIFAR ResNet-20 (option-A shortcuts) at ``width``, by hand."""
    a, b, c = (max(1, round(k * width)) for k in (16, 32, 64))
    return 9 * (3 * a + 6 * a * a + a * b + 5 * b * b + b * c + 5 * c * c) + 10 * c


def test_channel_range_of_vgg16_by_hand():
    # VGG-16: 64 channels in the first block, 512 in the last two
    assert es.channel_range("vgg16_bn", 1.0) == (64, 512)
    assert es.channel_range("vgg16_bn", 0.25) == (16, 128)
    assert es.channel_range("resnet20", 0.5) == (8, 32)


def test_matched_width_holds_the_budget():
    for w in (0.17, 0.31, 0.5, 1.0):
        assert es.prunable_count("resnet20", w) == resnet20_weights(w)
    budget = 12345.6
    widths = [round(0.01 * k, 2) for k in range(5, 51)]
    best = min(widths, key=lambda w: abs(resnet20_weights(w) - budget))
    assert es.matched_width("resnet20", budget, 0.5) == best
    deep, shallow, narrow = es.budget_pair(es.scale(CPU))
    kept = es.degree_density(deep, 0.5, 3) * es.prunable_count(deep, 0.5)
    assert (deep, shallow) == ("resnet56", "resnet20")
    assert abs(resnet20_weights(narrow) - kept) <= min(
        abs(resnet20_weights(narrow + step) - kept) for step in (-0.01, 0.01))


# ---------------------------------------------------------------------------------------
# Channels


def conv_mask(*graphs):
    """A mask of 3x3 convolutions from (n_in, n_out) 0/1 channel graphs."""
    return {f"c{i}.weight": torch.tensor(g, dtype=torch.bool).T[:, :, None, None]
            .expand(-1, -1, 3, 3).clone() for i, g in enumerate(graphs)}


def test_live_channels_follow_paths():
    first = [[1, 0], [0, 0], [0, 0]]          # only input 0 -> channel 0
    second = [[0, 1, 0], [1, 1, 1]]           # channel 0 -> 1; channel 1 (dead) -> all
    third = [[1, 0], [0, 0], [0, 1]]          # 0 -> 0 (dead path), 2 -> 1 (dead path)
    assert es.live_channels(conv_mask(first, second)) == pytest.approx(100 / 3)
    assert es.live_channels(conv_mask(first, second, third)) == 0.0
    full = [[1, 1]] * 3
    assert es.live_channels(conv_mask(full, second, third)) == 100.0
    with pytest.raises(ValueError, match="not a chain"):
        es.live_channels(conv_mask(first, third))


def test_cut_off_counts_the_channels_of_sparse_layers():
    dense = [[1, 1]] * 3
    sparse = [[1, 0, 0], [0, 0, 0]]  # input 1 and outputs 1, 2 have no edge
    assert es.cut_off(conv_mask(dense, sparse)) == pytest.approx(100 * 3 / 5)


def test_liveness_sizes_three_ways():
    s = es.scale(SMOKE, degrees=[3])
    live = es.liveness(s)
    assert len(live) == 3 * 3
    ours = live[live["sizing"] == "degree, first dense"]
    assert ours["density %"].tolist() == [100 * es.degree_density("vgg16_bn", 0.125, 3)] * 3
    assert np.allclose(live.loc[live["sizing"] != "degree, first dense", "density %"], 0.79)


# ---------------------------------------------------------------------------------------
# Records to tables


def fake_record(cfg, mask, accuracy):
    return {"key": cfg.key(), "config": {}, "accuracy": accuracy,
            "density": sum(int(m.sum()) for m in mask.values())
            / sum(m.numel() for m in mask.values()) if mask else 1.0,
            "mask_shapes": {n: list(m.shape) for n, m in mask.items()} if mask else {},
            "seconds": 10.0, "machine": {"cpu": "test cpu"}}


def test_frame_reads_what_the_store_holds():
    P, s = SMOKE, es.scale(SMOKE)
    planned = es.runs(P, s)
    store = study.open_store(study.store_dir(P.name))
    written = [r for r in planned if r.part == "vgg" and r.seed == 0][:4]
    masks_ = {}
    for i, r in enumerate(written):
        mask = study.make_mask(r.config, study.initial_model(r.config, 10), None)
        masks_[r.config.key()] = mask
        store.write(r.config.key(), fake_record(r.config, mask, 0.1 * (i + 1)),
                    study.pack_mask(mask) if mask else None)
    _, table = es.collect(P, s, compute=False)
    assert list(table.columns) == es.FRAME_COLUMNS
    assert table["key"].tolist() == [r.config.key() for r in written]
    assert table["accuracy %"].tolist() == pytest.approx([10, 20, 30, 40])
    for _, row in table.iterrows():
        mask = masks_[row["key"]]
        if row["arm"] == "dense":
            assert math.isnan(row["expansion"])
            continue
        e = expanders.network_expansion(mask, seed=0)
        assert row["expansion"] == pytest.approx(e["expansion"])
        assert row["live channels %"] == es.live_channels(mask)
        assert row["density %"] == pytest.approx(100 * e["density"])


def runs_table(rows):
    """A ``frame`` from (part, model, width, arm, degree, density %, seed, accuracy %,
    expansion) tuples."""
    out = pd.DataFrame([dict(zip(["part", "model", "width", "arm", "degree", "density %",
                                  "seed", "accuracy %", "expansion"], r, strict=True))
                        for r in rows], columns=es.FRAME_COLUMNS)
    return out.astype({"degree": "Int64"})


ACC = {  # VGG degree 3 at 2.9 %, per generator and seed; expansion per generator and seed
    "random": ([50.0, 52.0, 54.0], [1.5, 1.6, 1.7]),
    "xnet": ([51.0, 51.0, 58.0], [1.8, 1.5, 1.6]),
    "rreg": ([53.0, 56.0, 57.5], [1.9, 1.9, 1.8]),
}
BUDGET = {("resnet56", 0.5, "rreg", 3, 12.7): [60.0, 61.0, 63.0],
          ("resnet20", 0.31, "dense", None, 100.0): [55.0, 59.0, 58.0]}


@pytest.fixture
def table():
    rows = [("vgg", "vgg16_bn", 0.25, arm, 3, 2.9, seed, acc[seed], exp[seed])
            for arm, (acc, exp) in ACC.items() for seed in range(3)]
    rows += [("vgg", "vgg16_bn", 0.25, "dense", None, 100.0, seed, 60.0 + seed, math.nan)
             for seed in range(3)]
    rows += [("budget", m, w, arm, d, dens, seed, acc[seed], math.nan)
             for (m, w, arm, d, dens), acc in BUDGET.items() for seed in range(3)]
    return runs_table(rows)


def test_vgg_table_means_intervals_and_paper(table):
    vgg = es.vgg_table(table)
    assert vgg["arm"].tolist() == ["dense", "Random", "X-Net", "RReg"]
    rreg = vgg[vgg["arm"] == "RReg"].iloc[0]
    assert (rreg["mean"], rreg["ci95"]) == pytest.approx(t95(ACC["rreg"][0]))
    assert (rreg["paper %"], rreg["paper PP %"], rreg["count"]) == (87.02, 0.79, 3)
    assert vgg[vgg["arm"] == "dense"]["paper %"].iloc[0] == 94.24


def test_effects_pair_by_seed_with_paper_and_verdict(table):
    eff = es.effects(table, "vgg")
    assert eff["criterion"].tolist() == ["X-Net", "RReg"]
    for name, arm, paper in (("X-Net", "xnet", 86.06 - 85.81), ("RReg", "rreg", 87.02 - 85.81)):
        row = eff[eff["criterion"] == name].iloc[0]
        diffs = np.subtract(ACC[arm][0], ACC["random"][0])
        mean, half = t95(diffs)
        assert (row["mean"], row["ci95"], row["count"]) == pytest.approx((mean, half, 3))
        assert row["per_seed"] == pytest.approx(diffs.tolist())
        assert row["paper effect"] == pytest.approx(paper)
        assert row["verdict"] == verdicts.verdict(mean, half, 1)
    # RReg - Random = 3, 4, 3.5: [3.5 -+ 1.24] excludes 0 on the paper's side
    assert eff.loc[eff["criterion"] == "RReg", "verdict"].iloc[0] == "supported"


def test_effects_leave_out_unpaired_seeds(table):
    eff = es.effects(table[~((table["arm"] == "random") & (table["seed"] == 2))], "vgg")
    row = eff[eff["criterion"] == "RReg"].iloc[0]
    assert row["count"] == 2 and row["mean"] == pytest.approx(3.5)


def test_expansion_effects_pick_most_and_least_per_seed(table):
    grown = es.expansion_effects(table)
    # expansion (Random, X-Net, RReg): seed 0 (1.5, 1.8, 1.9): RReg 53 - Random 50;
    # seed 1 (1.6, 1.5, 1.9): RReg 56 - X-Net 51; seed 2 (1.7, 1.6, 1.8): RReg 57.5 - X-Net 58
    diffs = [53 - 50, 56 - 51, 57.5 - 58]
    row = grown.iloc[0]
    assert row["per_seed"] == pytest.approx(diffs)
    assert (row["mean"], row["ci95"]) == pytest.approx(t95(diffs))
    assert (row["most expanding"], row["least expanding"]) == ("RReg", "Random, X-Net")
    assert row["verdict"] == verdicts.verdict(*t95(diffs), 1) == "unresolved"


def test_budget_effects_and_table(table):
    eff = es.budget_effects(table)
    row = eff.iloc[0]
    diffs = np.subtract(*BUDGET.values())
    assert row["criterion"] == "RReg" and row["count"] == 3
    assert (row["mean"], row["ci95"]) == pytest.approx(t95(diffs))
    assert row["paper effect"] == pytest.approx(62.01 - 59.36)
    assert row["comparison"] == "resnet56 sparse minus resnet20 dense (width 0.31)"
    kept = es.budget_table(table).set_index("model")["weights kept"]
    assert kept["resnet20"] == resnet20_weights(0.31)
    assert kept["resnet56"] == round(0.127 * es.prunable_count("resnet56", 0.5))


def test_claims_rows_columns_and_verdicts(table):
    rows = es.claims(table)
    assert list(rows.columns) == ["claim", "criterion", "material", "sparsity %", "mean",
                                  "ci95", "count", "paper", "verdict", "paper in interval",
                                  "sign", "decisive"]
    assert (rows["claim"] == "C4").all() and len(rows) == 1 + 4 + 1
    low, budget = rows.iloc[0], rows.iloc[-1]
    mean, half = t95([3.0, 4.0, 3.5])
    assert (low["criterion"], low["paper"], low["count"]) == ("RReg", "+1.21", 3)
    assert (low["mean"], low["ci95"], low["sparsity %"]) == pytest.approx((mean, half, 97.1))
    assert low["verdict"] == "supported" and low["sign"] == 1 and not rows["decisive"].any()
    assert low["paper in interval"] == "no"  # +1.21 is below 3.5 - 1.24
    assert (budget["paper"], budget["sparsity %"]) == ("+2.65", pytest.approx(87.3))
    assert budget["verdict"] == verdicts.verdict(*t95(np.subtract(*BUDGET.values())), 1)
    untrained = rows[rows["material"].str.contains("degree 60|degree 30|degree 15")]
    assert len(untrained) == 3 and (untrained["count"] == 0).all()
    assert (untrained["verdict"] == "unresolved").all()
    grown = rows[rows["material"].str.startswith("VGG-16-BN degree 3: most")].iloc[0]
    assert grown["paper"] == "rising" and grown["count"] == 3
    assert grown["paper in interval"] is None  # a claim without a number


def test_claims_of_an_empty_store_are_unresolved():
    rows = es.claims(runs_table([]))
    assert len(rows) == 6 and (rows["verdict"] == "unresolved").all()
    assert (rows["count"] == 0).all()


def test_expansion_figure_plots_every_sparse_run(table):
    axes = es.expansion_figure(table)
    points = sum(len(c.get_offsets()) for c in axes[0].collections)
    assert points == 9  # the 9 sparse VGG runs; dense and budget runs are left out
    import matplotlib.pyplot as plt
    plt.close("all")


def test_pp_table_reproduces_the_papers_column():
    pp = es.pp_table()
    assert (abs(pp["official mean %"] - pp["paper PP %"]) < 0.06).all()
    # RReg puts d on the larger side: more weights than X-Net wherever a layer widens
    assert (pp["RReg %"] > pp["X-Net %"]).all()
    assert (pp["RReg without merging %"] >= pp["RReg %"]).all()



def test_matching_table_reads_the_deepest_networks_masks():
    store = study.open_store(study.store_dir("smoke"))
    eye = np.eye(4, dtype=int)
    cut = eye.copy()
    cut[3, 3] = 0  # input 3 and output 3 left without an edge
    widen = np.kron(eye, [[1, 1]])  # 4 -> 8, every input two outputs
    graphs = {"rreg": (eye, eye, widen), "random": (cut, eye, widen)}
    rows = []
    for arm, gs in graphs.items():
        mask = conv_mask(*gs)
        store.write(f"k_{arm}", {"key": f"k_{arm}",
                                 "mask_shapes": {n: list(m.shape) for n, m in mask.items()}},
                    study.pack_mask(mask))
        rows.append(("resnets", "resnet56", 0.5, arm, 3, 10.0, 0, 50.0, math.nan))
    rows.append(("resnets", "resnet20", 0.5, "rreg", 3, 10.0, 0, 50.0, math.nan))  # not deepest
    table = runs_table(rows).assign(key=["k_rreg", "k_random", "k_missing"])
    out = es.matching_table(table, store).set_index(["channels", "generator"])
    assert out.loc[("4->4", "RReg"), ["layers", "perfect matchings",
                                      "layers with a channel cut off"]].tolist() == [2, 2, 0]
    assert out.loc[("4->4", "Random"), ["layers", "perfect matchings",
                                        "layers with a channel cut off"]].tolist() == [2, 1, 1]
    assert out.loc[("4->8", "RReg"), "edges per channel"] == 1.0  # 8 edges, 8 outputs
    assert es.narrowest_matchings(out.reset_index()) == (2, 2)


def test_expansion_table_means_over_seeds(table):
    exp = es.expansion_table(table).set_index("generator")
    for arm, (_, values) in ACC.items():
        assert exp.loc[es.NAMES[arm], "expansion"] == pytest.approx(np.mean(values))
        assert exp.loc[es.NAMES[arm], "masks"] == 3
    assert es.most_expanding(exp.reset_index()).to_dict() == {3: "RReg"}


def test_most_expanding_by_either_measure():
    exp = pd.DataFrame({"degree": [3, 3, 15, 15], "generator": ["Random", "RReg"] * 2,
                        "expansion": [1.0, 2.0, 3.0, 2.5],
                        "sigma2 / bound": [0.9, 0.8, 0.5, 0.7]})
    assert es.most_expanding(exp).to_dict() == {3: "RReg", 15: "Random"}
    # sigma_2 over the bound: smaller is the better expander
    assert es.most_expanding(exp, "sigma2 / bound").to_dict() == {3: "RReg", 15: "Random"}
    exp["sigma2 / bound"] = [0.7, 0.8, 0.5, 0.4]  # the spectral order disagrees
    assert es.most_expanding(exp, "sigma2 / bound").to_dict() == {3: "Random", 15: "RReg"}
    with pytest.raises(ValueError, match="measure='sigma2'"):
        es.most_expanding(exp, "sigma2")


def test_tables_of_a_partial_store(table):
    """Cells whose reference arm has no run yet give no effect row, not an error."""
    partial = table[~table["arm"].isin(["random", "dense"])]
    assert es.effects(partial, "vgg").empty and es.budget_effects(partial).empty
    assert (es.claims(partial)["count"] == 0).all()
    no_xnet = es.claims(table[table["arm"] != "xnet"])  # (b) needs all three generators
    assert no_xnet["count"].tolist() == [3, 0, 0, 0, 0, 3]

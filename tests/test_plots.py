"""Numbers glued into the book's prose, glue keys, and the chapters' two figures."""

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import myst_nb  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.container import ErrorbarContainer  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from opai_lib import plots  # noqa: E402


@pytest.fixture
def glued(monkeypatch):
    """What ``myst_nb.glue`` is called with, in order: [(key, value, display)]."""
    calls = []
    monkeypatch.setattr(myst_nb, "glue",
                        lambda key, value, display: calls.append((key, value, display)))
    return calls


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_glued_numbers_are_plain_python_numbers(monkeypatch):
    glued = {}
    monkeypatch.setattr(myst_nb, "glue", lambda key, value, display: glued.update({key: value}))
    assert plots.glue_number("a", np.float64(0.25)) == 0.25
    assert plots.glue_number("b", np.int64(3)) == 3
    assert type(glued["a"]) is float and type(glued["b"]) is int
    assert repr(glued["a"]) == "0.25"  # what myst-nb parses back to format it


# ---------------------------------------------------------------------------------------
# slug


@pytest.mark.parametrize("parts, expected", [
    (("GraSP", "stitching σ=0.5", 95.0), "grasp_stitching_sigma_0_5_95"),
    (("SNIP: images", 90.0), "snip_images_90"),
    (("growth", "SNIP"), "growth_snip"),
    (("", "SNIP", "all-ones (BN eval)", 90.0), "snip_all_ones_bn_eval_90"),
    (("GraSP", "stitching σ=0.75", 92.5), "grasp_stitching_sigma_0_75_92_5"),
    (("random", "random (ERK)", np.float64(60.0)), "random_random_erk_60"),
    (("x", 3), "x_3"),
])
def test_slug(parts, expected):
    assert plots.slug(*parts) == expected


# ---------------------------------------------------------------------------------------
# glue_effects


EFFECTS = pd.DataFrame(
    [("SNIP", 90.0, "DOP", np.float64(2.0), np.float64(2.5), 3, [1.0, 2.0, 3.0], "unresolved"),
     ("GraSP", 95.0, "stitching σ=0.5", np.float64(-1.25), math.nan, 1, [-1.25], "unresolved"),
     ("SNIP", 95.0, "all-ones (BN eval)", np.float64(-5.0), np.float64(0.5), 6,
      [-5.0] * 6, "supported")],
    columns=["criterion", "sparsity %", "material", "mean", "ci95", "count", "per_seed",
             "verdict"])


def test_glue_effects_keys_and_values(glued):
    keys = plots.glue_effects(EFFECTS)
    assert keys == ["snip_dop_90", "grasp_stitching_sigma_0_5_95", "snip_all_ones_bn_eval_95"]
    values = {k: v for k, v, _ in glued}
    assert len(values) == len(glued) == 3 * 5  # no key glued twice
    assert all(display is False for _, _, display in glued)
    assert values["snip_dop_90_mean"] == 2.0 and type(values["snip_dop_90_mean"]) is float
    assert values["snip_dop_90_ci95"] == 2.5 and type(values["snip_dop_90_ci95"]) is float
    assert values["snip_dop_90_n"] == 3 and type(values["snip_dop_90_n"]) is int
    assert values["snip_dop_90_verdict"] == "unresolved"
    one = "grasp_stitching_sigma_0_5_95"
    assert values[f"{one}_mean"] == -1.25 and values[f"{one}_n"] == 1
    assert type(values[f"{one}_ci95"]) is float and math.isnan(values[f"{one}_ci95"])
    assert values["snip_all_ones_bn_eval_95_verdict"] == "supported"
    assert values["snip_all_ones_bn_eval_95_n"] == 6
    assert values["snip_dop_90_direction"] == "not measurably different"  # [-0.5, 4.5]
    assert values["snip_all_ones_bn_eval_95_direction"] == "lower"  # [-5.5, -4.5]
    assert values[f"{one}_direction"] == "undetermined from one pair"


@pytest.mark.parametrize("mean, half, word", [
    (3.5, 1.0, "higher"), (-3.5, 1.0, "lower"), (0.5, 1.0, "not measurably different"),
    (1.0, 1.0, "not measurably different"),  # the interval touches zero
    (2.0, math.nan, "undetermined from one pair"), (math.nan, 1.0, "not measured")])
def test_direction_follows_the_interval(mean, half, word):
    assert plots.direction(mean, half) == word


def test_glue_directions_counts_each_end_of_the_grid(glued):
    plots.glue_directions(EFFECTS, "vs")
    values = {k: v for k, v, _ in glued}
    # 90 %: one row, [-0.5, 4.5]; 95 %: one pair (no interval) and one lower, [-5.5, -4.5]
    assert (values["vs_lowest"], values["vs_lowest_rows"]) == (90, 1)
    assert (values["vs_lowest_higher"], values["vs_lowest_lower"]) == (0, 0)
    assert (values["vs_highest"], values["vs_highest_rows"]) == (95, 2)
    assert (values["vs_highest_higher"], values["vs_highest_lower"]) == (0, 1)
    glued.clear()
    plots.glue_directions(EFFECTS.iloc[1:], "one")  # a grid of one sparsity: both ends
    values = {k: v for k, v, _ in glued}
    assert values["one_lowest"] == values["one_highest"] == 95
    glued.clear()
    plots.glue_directions(EFFECTS.iloc[:0], "none")  # nothing trained yet: no error
    values = {k: v for k, v, _ in glued}
    assert math.isnan(values["none_lowest"]) and values["none_highest_rows"] == 0


def test_glue_effects_without_verdict_with_label_and_prefix(glued):
    arms = EFFECTS.drop(columns=["criterion", "material", "verdict"]).assign(
        arm=["SNIP: DOP", "GraSP: stitching σ=0.5", "SNIP: all-ones (BN eval)"])
    keys = plots.glue_effects(arms, label="arm", prefix="vs random")
    assert keys == ["vs_random_snip_dop_90", "vs_random_grasp_stitching_sigma_0_5_95",
                    "vs_random_snip_all_ones_bn_eval_95"]
    assert [k for k, _, _ in glued][:3] == [f"{keys[0]}_mean", f"{keys[0]}_ci95",
                                            f"{keys[0]}_n"]
    assert not any(k.endswith("_verdict") for k, _, _ in glued)
    assert len(glued) == 3 * 4
    assert plots.glue_effects(EFFECTS.iloc[:0]) == []


def test_glue_effects_and_intervals_with_two_label_columns(glued):
    """Sanity-check effects name a row by material and check."""
    rows = EFFECTS.assign(check=["shuffled", "inverted", "shuffled"])
    keys = plots.glue_effects(rows, label=("material", "check"), prefix="check")
    assert keys == ["check_snip_dop_shuffled_90", "check_grasp_stitching_sigma_0_5_inverted_95",
                    "check_snip_all_ones_bn_eval_shuffled_95"]
    ax = plots.effect_intervals(rows, label=("material", "check"))
    assert [t.get_text() for t in ax.get_yticklabels()][0] == "SNIP | 90.0 | DOP | shuffled"
    plt.close("all")


def test_glue_rows_one_key_per_row(glued):
    table = pd.DataFrame({"criterion": ["SNIP", "GraSP"], "material": ["DOP", "SynFlow"],
                          "sparsity %": [90.0, 95.0], "ratio": [2.5, 3.0]})
    keys = plots.glue_rows(table, ["criterion", "material", "sparsity %"], "ratio", "ratio")
    assert keys == ["snip_dop_90_ratio", "grasp_synflow_95_ratio"]
    assert [(k, v) for k, v, _ in glued] == [("snip_dop_90_ratio", 2.5),
                                             ("grasp_synflow_95_ratio", 3.0)]
    assert all(type(v) is float for _, v, _ in glued)  # plain numbers, not numpy scalars


def test_glue_effects_gap_growth_rows(glued):
    """``gap_growth`` rows have no sparsity: the key is prefix, criterion, material."""
    rows = pd.DataFrame([("SNIP", "DOP", 4.0, 4.97, 3, [4.0, 2.0, 6.0])],
                        columns=["criterion", "material", "mean", "ci95", "count", "per_seed"])
    assert plots.glue_effects(rows, prefix="growth") == ["growth_snip_dop"]
    assert {k for k, _, _ in glued} == {"growth_snip_dop_mean", "growth_snip_dop_ci95",
                                        "growth_snip_dop_n", "growth_snip_dop_direction"}


# ---------------------------------------------------------------------------------------
# accuracy_curves and effect_intervals


def errorbars(ax):
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


SUMMARY = pd.DataFrame(
    [("SNIP", "images", 90.0, 60.0, 1.0), ("SNIP", "images", 95.0, 40.0, 2.0),
     ("SNIP", "DOP", 90.0, 62.0, math.nan), ("SNIP", "DOP", 95.0, 45.0, 1.5),
     ("GraSP", "images", 90.0, 66.0, 1.0), ("GraSP", "images", 95.0, 50.0, 1.0),
     ("GraSP", "DOP", 90.0, 67.0, 1.0), ("GraSP", "DOP", 95.0, 51.0, 1.0),
     ("GraSP", "stitching σ=0.5", 95.0, 52.0, 1.0)],
    columns=["criterion", "material", "sparsity %", "mean", "ci95"])


def test_accuracy_curves_one_panel_per_criterion():
    axes = plots.accuracy_curves(SUMMARY, dense=80.0)
    assert len(axes) == 2
    assert [ax.get_title() for ax in axes] == ["SNIP", "GraSP"]
    assert [len(errorbars(ax)) for ax in axes] == [2, 3]
    for ax, crit in zip(axes, ["SNIP", "GraSP"], strict=True):
        rows = SUMMARY[SUMMARY["criterion"] == crit]
        for c, material in zip(errorbars(ax), dict.fromkeys(rows["material"]), strict=True):
            line = c.lines[0]
            assert c.get_label() == material
            mine = rows[rows["material"] == material]
            assert list(line.get_xdata()) == mine["sparsity %"].tolist()
            assert list(line.get_ydata()) == mine["mean"].tolist()
        dashed = [ln for ln in ax.get_lines() if list(ln.get_ydata()) == [80.0, 80.0]]
        assert len(dashed) == 1  # the dense reference
    legend = [t.get_text() for t in axes[-1].get_legend().get_texts()]
    assert sorted(legend) == sorted(["images", "DOP", "stitching σ=0.5", "dense"])
    assert axes[0].get_ylabel() == "test accuracy (%)"


def test_accuracy_curves_on_given_axes():
    _, given = plt.subplots(1, 2)
    out = plots.accuracy_curves(SUMMARY, axes=given)
    assert out is given
    assert [len(errorbars(ax)) for ax in given] == [2, 3]
    assert not [ln for ax in given for ln in ax.get_lines() if ln.get_label() == "dense"]


def test_effect_intervals_rows_zero_line_and_margin():
    ax = plots.effect_intervals(EFFECTS, margin=2)
    ticks = ax.get_yticks()
    assert len(ticks) == len(EFFECTS) == 3
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "SNIP | 90.0 | DOP", "GraSP | 95.0 | stitching σ=0.5",
        "SNIP | 95.0 | all-ones (BN eval)"]
    assert ax.yaxis_inverted()  # the first row on top
    (bars,) = errorbars(ax)
    assert list(bars.lines[0].get_xdata()) == [2.0, -1.25, -5.0]
    zero = [ln for ln in ax.get_lines() if list(ln.get_xdata()) == [0, 0]]
    assert len(zero) == 1
    spans = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(spans) == 1
    assert spans[0].get_x() == -2 and spans[0].get_width() == 4


def test_effect_intervals_without_margin_and_by_arm():
    arms = EFFECTS.drop(columns=["criterion", "material"]).assign(
        arm=["SNIP: DOP", "GraSP: DOP", "random: random (ERK)"])
    _, ax = plt.subplots()
    out = plots.effect_intervals(arms, label="arm", ax=ax)
    assert out is ax
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "90.0 | SNIP: DOP", "95.0 | GraSP: DOP", "95.0 | random: random (ERK)"]
    assert not ax.patches  # no margin band
    assert len([ln for ln in ax.get_lines() if list(ln.get_xdata()) == [0, 0]]) == 1


def test_heatmap_draws_one_cell_per_entry():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = pd.DataFrame([[0.1, -0.2, 0.0], [0.3, 0.4, -0.5]], index=["a", "b"],
                         columns=["layer1.0.conv1.weight", "fc.weight", "conv1.weight"])
    ax = plots.heatmap(table, title="t")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["layer1.0.conv1", "fc", "conv1"]
    assert len(ax.collections[0].get_array().ravel()) == 6 and ax.get_title() == "t"
    plt.close("all")


def test_percents_reads_as_prose():
    assert plots.percents([0.9]) == "90 %"
    assert plots.percents([0.95, 0.9, 0.9]) == "90 and 95 %"
    assert plots.percents([0.6, 0.8, 0.9, 0.95]) == "60, 80, 90 and 95 %"
    with pytest.raises(ValueError, match="at least one"):
        plots.percents([])


def test_listed_reads_as_prose():
    assert plots.listed([8, 4, 16, 4]) == "4, 8 and 16"
    assert plots.listed([2]) == "2" and plots.listed([1, 2], " epochs") == "1 and 2 epochs"
    with pytest.raises(ValueError, match="at least one"):
        plots.listed([])

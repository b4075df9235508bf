"""The book's figure style, the per-layer density plot, and numbers glued into its prose."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns


def setup_style() -> None:
    """One look for every figure of the book: seaborn's whitegrid, readable sizes."""
    sns.set_theme(style="whitegrid", context="notebook", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 110, "savefig.bbox": "tight"})


def glue_number(key: str, value) -> float | int:
    """Glue ``value`` (a number, numpy scalars included) under ``key`` for the prose of any
    page (``{glue:text}`page.ipynb::key:.1f```), as a plain Python number: myst-nb formats
    the glued text, which it cannot parse from a numpy repr such as ``np.float64(0.5)``."""
    from myst_nb import glue

    number = int(value) if isinstance(value, int | np.integer) else float(value)
    glue(key, number, display=False)
    return number


def slug(*parts) -> str:
    """A glue key from labels and numbers: ``("GraSP", "stitching σ=0.5", 95.0)`` ->
    ``grasp_stitching_sigma_0_5_95``."""
    import re

    text = "_".join(f"{p:g}" if isinstance(p, float) else str(p) for p in parts)
    text = text.lower().replace("σ", "sigma").replace(".", "_")
    return re.sub(r"[^a-z0-9]+", "_", text).strip("_")


def glue_rows(table: pd.DataFrame, keys: list[str], value: str, suffix: str) -> list[str]:
    """Glue column ``value`` of every row of ``table`` under ``slug(*row[keys], suffix)``;
    returns the keys, for the prose."""
    out = []
    for _, row in table.iterrows():
        out.append(slug(*[row[k] for k in keys], suffix))
        glue_number(out[-1], row[value])
    return out


def _labels(label: str | tuple[str, ...] | None) -> tuple[str, ...]:
    """The column(s) naming an effect row besides criterion and sparsity."""
    return () if label is None else (label,) if isinstance(label, str) else tuple(label)


def direction(mean: float, half_width: float) -> str:
    """The word prose uses for a paired difference: *higher* or *lower* when its 95 %
    interval excludes zero, else *not measurably different*; one pair has no interval and
    says so rather than read as no difference."""
    if math.isnan(mean):
        return "not measured"
    if math.isnan(half_width):
        return "undetermined from one pair"
    if mean - half_width > 0:
        return "higher"
    return "lower" if mean + half_width < 0 else "not measurably different"


def glue_effects(effects: pd.DataFrame, label: str | tuple[str, ...] | None = "material",
                 prefix: str = "") -> list[str]:
    """Glue the mean, 95 % half-width and pair count of every row of
    ``experiments.effects`` under ``slug(prefix, criterion, label, sparsity)`` (the columns
    it has; ``label`` one column, several, or None for none; and epochs, where they vary)
    + ``_mean`` / ``_ci95`` / ``_n``, its ``direction`` (``_direction``), and its verdict
    as text if it has one; returns the keys, for the prose."""
    from myst_nb import glue

    parts = [c for c in ("criterion", *_labels(label), "sparsity %") if c in effects]
    if "epochs" in effects and effects["epochs"].nunique() > 1:  # only where it varies
        parts.append("epochs")
    keys = []
    for _, row in effects.iterrows():
        key = slug(prefix, *[row[c] for c in parts])
        glue_number(f"{key}_mean", row["mean"])
        glue_number(f"{key}_ci95", row["ci95"])
        glue_number(f"{key}_n", row["count"])
        glue(f"{key}_direction", direction(row["mean"], row["ci95"]), display=False)
        if "verdict" in row.index:
            glue(f"{key}_verdict", row["verdict"], display=False)
        keys.append(key)
    return keys


def glue_directions(effects: pd.DataFrame, prefix: str, column: str = "sparsity %") -> None:
    """Glue, at the lowest and the highest value of ``column`` in ``effects`` (the same
    on a grid of one), how many rows there are and how many read *higher* or *lower*
    (``direction``), under ``slug(prefix, "lowest" | "highest")`` + ``_rows`` /
    ``_higher`` / ``_lower``, and that value itself: keys the prose can quote whatever
    the grid (NaN and zero counts for a table with no rows yet)."""
    for end, pick in (("lowest", min), ("highest", max)):
        at = effects[effects[column] == pick(effects[column])] if len(effects) else effects
        words = [direction(m, h) for m, h in zip(at["mean"], at["ci95"], strict=True)]
        key = slug(prefix, end)
        glue_number(key, at[column].iloc[0] if len(at) else math.nan)
        glue_number(f"{key}_rows", len(at))
        glue_number(f"{key}_higher", words.count("higher"))
        glue_number(f"{key}_lower", words.count("lower"))


def short_layer_name(name: str) -> str:
    """``layer2.0.conv1.weight`` -> ``layer2.0.conv1``."""
    return name.removesuffix(".weight")


def layer_density_plot(densities: pd.DataFrame, ax=None, log: bool = False,
                       title: str | None = None):
    """One line per column (a method), one point per row (a layer, in network order).

    ``densities``: fractions kept, indexed by layer name; a ``total`` row is left out and
    drawn as a dashed horizontal line when all columns share it.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(densities)), 4.0))
    table = densities.drop(index="total", errors="ignore")
    long = table.reset_index(drop=True).rename_axis("layer index").reset_index().melt(
        id_vars="layer index", var_name="method", value_name="density")
    sns.lineplot(data=long, x="layer index", y="density", hue="method", style="method",
                 markers=True, dashes=False, ax=ax)
    if "total" in densities.index and densities.loc["total"].nunique() == 1:
        ax.axhline(densities.loc["total"].iloc[0], color="grey", ls="--", lw=1,
                   label="overall density")
    ax.set_xticks(range(len(table)))
    ax.set_xticklabels([short_layer_name(n) for n in table.index], rotation=70, ha="right",
                       fontsize=8)
    ax.set_xlabel("")
    ax.set_ylabel("fraction of weights kept")
    if log:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return ax


def accuracy_curves(summary: pd.DataFrame, dense: float | None = None, axes=None):
    """Mean accuracy (%) against sparsity with 95 % intervals, one panel per criterion and
    one line per material (``experiments.summary`` rows); ``dense``: a dashed reference."""
    criteria = list(dict.fromkeys(summary["criterion"]))
    if axes is None:
        _, axes = plt.subplots(1, len(criteria), figsize=(4.2 * len(criteria), 3.4),
                               sharey=True, squeeze=False)
        axes = axes[0]
    for ax, crit in zip(axes, criteria, strict=True):
        for material, g in summary[summary["criterion"] == crit].groupby("material",
                                                                         sort=False):
            ax.errorbar(g["sparsity %"], g["mean"], yerr=g["ci95"], marker="o",  # no bar:
                        capsize=3, label=material)  # one seed, no interval
        if dense is not None:
            ax.axhline(dense, color="grey", ls="--", lw=1, label="dense")
        ax.set_title(crit)
        ax.set_xlabel("sparsity (%)")
    axes[0].set_ylabel("test accuracy (%)")
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=8)
    return axes


def effect_intervals(effects: pd.DataFrame, label: str | tuple[str, ...] = "material", ax=None,
                     margin: float | None = None):
    """Paired differences (``experiments.effects`` rows) as points with 95 % intervals, one
    row per (criterion, sparsity, ``label``: one column or several); a zero line and, with
    ``margin``, the band of effects too small to claim."""
    rows = effects.reset_index(drop=True)
    names = [" | ".join(str(v) for v in r) for r in
             rows[[c for c in ("criterion", "sparsity %", *_labels(label)) if c in rows]
                  ].itertuples(index=False)]
    if ax is None:
        _, ax = plt.subplots(figsize=(6.0, 0.32 * len(rows) + 1.0))
    y = np.arange(len(rows))
    ax.errorbar(rows["mean"], y, xerr=rows["ci95"], fmt="o", capsize=3)  # no bar: one pair
    ax.axvline(0, color="black", lw=1)
    if margin:
        ax.axvspan(-margin, margin, color="grey", alpha=0.15, lw=0)
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("accuracy difference, paired by seed (points)")
    return ax


def heatmap(table: pd.DataFrame, ax=None, title: str | None = None, center: float | None = 0,
            fmt: str = ".2f", label: str = ""):
    """``table`` (rows x columns of numbers) as an annotated heat map; diverging colours
    around ``center`` (None: sequential)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(max(5.0, 0.45 * table.shape[1] + 2.5),
                                      0.35 * table.shape[0] + 1.5))
    cmap = "vlag" if center is not None else "rocket_r"
    sns.heatmap(table.astype(float), ax=ax, center=center, cmap=cmap, annot=table.shape[1] <= 12,
                fmt=fmt, annot_kws={"fontsize": 7}, cbar_kws={"label": label})
    ax.set_xticklabels([short_layer_name(t.get_text()) for t in ax.get_xticklabels()],
                       rotation=70, ha="right", fontsize=8)
    ax.set_ylabel("")
    if title:
        ax.set_title(title)
    return ax


def difference_maps(tests: pd.DataFrame):
    """``anatomy.tests`` as one heat map per criterion: within minus between overlap, by
    material (rows) and sparsity (columns)."""
    crits = list(dict.fromkeys(tests["criterion"]))
    _, axes = plt.subplots(1, len(crits), figsize=(5.5 * len(crits), 4.2), squeeze=False)
    for ax, crit in zip(axes[0], crits, strict=True):
        rows = tests[tests["criterion"] == crit]
        table = rows.pivot(index="material", columns="sparsity %", values="difference")
        heatmap(table.loc[list(dict.fromkeys(rows["material"]))], ax=ax, title=crit,
                label="within - between overlap")
    return axes[0]


def layer_maps(density: pd.DataFrame, overlap: pd.DataFrame, title: str):
    """``anatomy.layer_table``'s two tables, density above overlap, material x layer."""
    _, axes = plt.subplots(2, 1, figsize=(max(8.0, 0.45 * density.shape[1] + 3), 9))
    heatmap(density, ax=axes[0], center=None, label="fraction kept", title=f"{title}: density")
    heatmap(overlap, ax=axes[1], center=None, label="overlap with the reference's masks",
            title=f"{title}: overlap with the reference's masks")
    plt.tight_layout()
    return axes


# ---------------------------------------------------------------------------------------
# The teaching chapters (``lessons``).


def listed(numbers, unit: str = "") -> str:
    """Distinct numbers as prose, smallest first: ``[8, 4, 16]`` -> "4, 8 and 16"."""
    words = [f"{n:g}" for n in sorted(set(numbers))]
    if not words:
        raise ValueError("listed needs at least one number")
    head = ", ".join(words[:-1])
    return (f"{head} and {words[-1]}" if head else words[-1]) + unit


def percents(fractions) -> str:
    """Fractions as prose: ``[0.9]`` -> "90 %", ``[0.6, 0.9, 0.95]`` -> "60, 90 and 95 %"."""
    return listed((100 * f for f in fractions), " %")


def glue_text(key: str, text: str) -> str:
    """Glue a word or phrase under ``key`` for the prose (``{glue:text}`key```)."""
    from myst_nb import glue

    glue(key, str(text), display=False)
    return str(text)


def glue_all(values: dict) -> dict:
    """Glue every entry of ``values`` under its key: numbers by ``glue_number``, anything
    else as text (``glue_text``); returns ``values``."""
    for key, value in values.items():
        if isinstance(value, int | float | np.integer | np.floating) and \
                not isinstance(value, bool):
            glue_number(key, value)
        else:
            glue_text(key, value)
    return values


def comparison(a: float, b: float, tolerance: float = 0.0) -> str:
    """How ``a`` compares with ``b``, in words for the prose: 'above', 'below', or 'level
    with' when they differ by ``tolerance`` or less."""
    if abs(a - b) <= tolerance:
        return "level with"
    return "above" if a > b else "below"


def glue_comparison(key: str, a: float, b: float, tolerance: float = 0.0) -> str:
    """Glue ``comparison(a, b, tolerance)`` under ``key``."""
    return glue_text(key, comparison(a, b, tolerance))


def accuracy_lines(table: pd.DataFrame, x: str, y: str, hue: str,
                   references: dict[str, float] | None = None, ax=None,
                   xlabel: str | None = None, ylabel: str | None = None):
    """Column ``y`` against ``x``, one line with markers per value of ``hue`` (in order of
    appearance); ``references``: dashed horizontal lines, e.g. ``{"dense": 91.2}``."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6.0, 3.6))
    for i, (label, g) in enumerate(table.groupby(hue, sort=False)):
        g = g.sort_values(x)
        ax.plot(g[x], g[y], marker="os^vDP"[i % 6], label=label)
    for i, (label, value) in enumerate((references or {}).items()):
        ax.axhline(value, color="0.4", ls=("--", ":", "-.")[i % 3], lw=1, label=label)
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=8)
    return ax


def pruning_trace(steps: pd.DataFrame, ax=None):
    """Test accuracy through each pruning schedule (``lessons.steps_table`` rows): at the
    retraining epochs done before a step, a drop from the accuracy before pruning to the
    accuracy right after it (the step's instability), then a dotted line to the accuracy
    after that step's retraining. One colour per schedule."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6.0, 3.6))
    groups = list(steps.groupby("schedule", sort=False))
    for colour, (label, g) in zip(sns.color_palette(n_colors=max(1, len(groups))), groups,
                                  strict=False):
        for i, (_, row) in enumerate(g.sort_values("step").iterrows()):
            x0 = row["epochs before"]
            ax.plot([x0, x0], [row["before %"], row["pruned %"]], color=colour, lw=2,
                    label=label if i == 0 else None)
            ax.plot([x0, x0 + row["epochs per step"]], [row["pruned %"], row["retrained %"]],
                    color=colour, ls=":", marker="o", markersize=4)
    ax.set_xlabel("retraining epochs done")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.01), ncol=3, frameon=False, fontsize=8)
    return ax


def stability_scatter(table: pd.DataFrame, ax=None):
    """Bartoldson et al.'s axes: each schedule's mean pruning instability against its
    final test accuracy (``lessons.retraining_table`` rows), labelled by schedule."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.6))
    ax.scatter(table["mean instability"], table["after retraining %"], s=40, zorder=3)
    for row in table.itertuples(index=False):
        ax.annotate(row.schedule, (row[table.columns.get_loc("mean instability")],
                                   row[table.columns.get_loc("after retraining %")]),
                    xytext=(5, 3), textcoords="offset points", fontsize=8)
    ax.set_xlabel("mean pruning instability")
    ax.set_ylabel("final test accuracy (%)")
    return ax


def speedup_bars(table: pd.DataFrame, ax=None):
    """CPU inference speed-up over the dense network (``lessons.filter_table`` rows), one
    group of bars per fraction of filters removed, one bar per pruned network; a line at 1."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.0, 3.4))
    pruned = table[table["network"] != "dense"]
    sns.barplot(pruned, x="filters removed %", y="speed-up", hue="network", ax=ax)
    ax.axhline(1.0, color="black", lw=1)
    ax.set_ylabel("speed-up over dense (x)")
    ax.legend(loc="upper left", frameon=False, fontsize=8)
    return ax


# ---------------------------------------------------------------------------------------
# What pruning-at-initialisation scores reward (``toy``, ``collapse``).


def score_ranks(scores) -> dict:
    """Every score's rank among all of ``scores`` ({name: tensor}), scaled to [0, 1] (0: the
    lowest; ties share their mean rank), as numpy arrays of the tensors' shapes. Ranks put
    signed (GraSP) and heavy-tailed (SynFlow) scores on one colour scale."""
    from scipy import stats

    flat = np.concatenate([s.detach().double().cpu().flatten().numpy() for s in scores.values()])
    ranks = (stats.rankdata(flat) - 1) / max(1, len(flat) - 1)
    pieces = np.split(ranks, np.cumsum([s.numel() for s in scores.values()])[:-1])
    return {n: p.reshape(tuple(s.shape)) for (n, s), p in zip(scores.items(), pieces,
                                                               strict=True)}


def network_graph(scores, mask, ax=None, title: str | None = None, cmap: str = "viridis"):
    """A fully connected network drawn as a layered graph: one column of nodes per layer of
    units, one edge per weight of ``scores`` ({name: (out, in) tensor}, layers in order),
    coloured by its score's rank (``score_ranks``); the edges ``mask`` keeps are drawn
    thick, the pruned ones thin and faint. Returns the axes."""
    from matplotlib.collections import LineCollection

    shapes = [tuple(s.shape) for s in scores.values()]
    if any(len(s) != 2 for s in shapes) or any(
            b[1] != a[0] for a, b in zip(shapes, shapes[1:], strict=False)):
        raise ValueError(f"scores must be (out, in) matrices of a chain of layers, got {shapes}")
    if ax is None:
        _, ax = plt.subplots(figsize=(1.3 * len(shapes) + 1, 3.2))
    widths = [shapes[0][1]] + [s[0] for s in shapes]
    y = [np.arange(w) - (w - 1) / 2 for w in widths]
    ranks = score_ranks(scores)
    colour = plt.get_cmap(cmap)
    for kept in (False, True):  # pruned edges underneath
        segments, colours = [], []
        for i, name in enumerate(scores):
            out_units, in_units = np.nonzero(mask[name].cpu().numpy() == kept)
            segments += [[(i, y[i][a]), (i + 1, y[i + 1][b])]
                         for b, a in zip(out_units, in_units, strict=True)]
            colours += [colour(r) for r in ranks[name][out_units, in_units]]
        ax.add_collection(LineCollection(segments, colors=colours, linewidths=2.6 if kept
                                         else 0.6, alpha=1.0 if kept else 0.35,
                                         zorder=2 if kept else 1))
    for i, units in enumerate(y):
        ax.scatter(np.full(len(units), i), units, s=70, color="white", edgecolor="0.2",
                   zorder=3)
    ax.set_xlim(-0.3, len(shapes) + 0.3)
    ax.set_ylim(-max(widths) / 2, max(widths) / 2)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def network_graphs(scores, found, cmap: str = "viridis"):
    """``network_graph`` of every label of ``found`` (label -> mask) with ``scores[label]``,
    side by side, and one colour bar for the score ranks. Returns the axes."""
    from matplotlib.cm import ScalarMappable

    fig, axes = plt.subplots(1, len(found), figsize=(3.0 * len(found) + 0.8, 3.4),
                             squeeze=False)
    for ax, (label, mask) in zip(axes[0], found.items(), strict=True):
        network_graph(scores[label], mask, ax=ax, title=label, cmap=cmap)
    fig.colorbar(ScalarMappable(cmap=cmap), ax=list(axes[0]), fraction=0.02, pad=0.02,
                 label="score rank (0 lowest, 1 highest)")
    return axes[0]


def collapse_curves(table: pd.DataFrame, axes=None):
    """A ``collapse.curves`` table as two panels against sparsity (log of the density,
    sparser to the right): the number of empty layers, and the density of the sparsest
    layer (dashed: the overall density, the most it can be). A dotted line in a criterion's
    colour marks the first sparsity of the grid where it empties a layer. Returns the axes."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11.5, 3.8))
    groups = list(table.groupby("criterion", sort=False))
    for i, (colour, (label, g)) in enumerate(zip(sns.color_palette(n_colors=len(groups)),
                                                 groups, strict=True)):
        g = g.sort_values("sparsity")
        style = {"color": colour, "marker": "os^vDP"[i % 6], "markersize": 4, "label": label}
        axes[0].plot(g["density"], g["empty layers"], **style)
        alive = g[g["sparsest layer density"] > 0]
        axes[1].plot(alive["density"], alive["sparsest layer density"], **style)
        broken = g[g["empty layers"] > 0]
        if len(broken):
            for ax in axes:
                ax.axvline(broken["density"].iloc[0], color=colour, ls=":", lw=1.2)
    grid = np.sort(table["density"].unique())
    axes[1].plot(grid, grid, color="0.4", ls="--", lw=1, label="overall density")
    axes[1].set_yscale("log")
    axes[0].set_ylabel("empty layers")
    axes[0].yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1].set_ylabel("density of the sparsest layer")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlim(grid.max() * 1.15, grid.min() / 1.15)  # sparser to the right
        ax.xaxis.set_major_formatter(FuncFormatter(lambda d, _: f"{100 * (1 - d):.4g} %"))
        ax.set_xlabel("sparsity (log scale of the fraction kept)")
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=8)
    return axes

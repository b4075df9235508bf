"""The book's figure style, the per-layer density plot, and numbers glued into its prose."""

from __future__ import annotations

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

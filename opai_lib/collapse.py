"""Layer collapse: how sparse a criterion's mask gets before a whole layer is empty.

A mask that keeps no weight of a layer cuts every path through that layer; Tanaka et al.
(2020) call the highest sparsity a criterion reaches without cutting the network its
*critical compression*. ``curves`` measures, over a grid of sparsities, how many layers each
criterion's masks leave empty, how dense the sparsest layer still is and (given the model)
whether any kept weight still lies on an input-output path; ``critical_sparsity`` gives the
exact point where a one-shot global ranking empties its first layer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn

from opai_lib import anatomy, criteria, masks, prune
from opai_lib.config import check_integer, check_parameter

# An arm: a label for the tables and figures -> (criterion name, its options).
Arms = Mapping[str, tuple[str, dict]]


def sparsity_grid(lowest: float, highest: float, points: int) -> list[float]:
    """``points`` sparsities from ``lowest`` to ``highest``, evenly spaced in the logarithm
    of the density (as many between 99 and 99.9 % as between 90 and 99 %)."""
    check_integer("points", points, 2)
    check_parameter(isinstance(lowest, int | float) and isinstance(highest, int | float)
                    and 0 < lowest < highest < 1, "lowest, highest", (lowest, highest),
                    "0 < lowest < highest < 1")
    densities = np.geomspace(1 - lowest, 1 - highest, points)
    return [float(s) for s in 1 - densities]


def masks_by_arm(model: nn.Module, arms: Arms, material, sparsities, seed: int = 0
                 ) -> dict[str, dict[float, masks.Mask]]:
    """Every arm's masks of ``model`` at ``sparsities`` (``prune.masks_at_init``: a one-shot
    criterion scores once), layers left empty kept empty so that collapse can be seen."""
    return {label: prune.masks_at_init(model, crit, material, sparsities, seed,
                                       on_collapse="allow", **options)
            for label, (crit, options) in arms.items()}


def dense_scores(model: nn.Module, arms: Arms, material, seed: int = 0
                 ) -> dict[str, dict[str, torch.Tensor]]:
    """Every arm's scores of the dense ``model``: for an arm of several rounds, the scores
    of its first round (``prune.scores_at_init``)."""
    return {label: prune.scores_at_init(model, crit, material, seed, **{**options, "rounds": 1})
            for label, (crit, options) in arms.items()}


def one_shot_global(arms: Arms) -> list[str]:
    """The arms that select their mask from one global ranking of one scoring: those whose
    ``critical_sparsity`` is exact."""
    out = []
    for label, (crit, options) in arms.items():
        chosen = criteria.CRITERIA.get(crit).options(**options)
        if chosen.rounds == 1 and chosen.scope == "global":
            out.append(label)
    return out


def curve(found: Mapping[float, masks.Mask], model: nn.Module | None = None) -> pd.DataFrame:
    """One row per sparsity of ``found`` (sparsity -> mask): the overall density, the number
    of empty layers, the first of them in network order, and the density of the sparsest
    layer; with ``model``, also ``cut``: whether no kept weight lies on any input-output path
    (``anatomy.effective_sparsity``; in a ResNet a residual branch can empty without that)."""
    rows = []
    for sparsity, mask in sorted(found.items()):
        empty = masks.empty_layers(mask)
        density = masks.density(mask)
        row = {"sparsity": sparsity, "density": density.pop("total"),
               "empty layers": len(empty), "first empty": empty[0] if empty else "",
               "sparsest layer density": min(density.values())}
        if model is not None:
            row["cut"] = anatomy.effective_sparsity(model, mask)["effective sparsity"] == 1
        rows.append(row)
    return pd.DataFrame(rows)


def curves(found: Mapping[str, Mapping[float, masks.Mask]], model: nn.Module | None = None
           ) -> pd.DataFrame:
    """``curve`` of every criterion of ``found`` (label -> sparsity -> mask), one table with
    a ``criterion`` column."""
    return pd.concat([curve(by_sparsity, model).assign(criterion=label)
                      for label, by_sparsity in found.items()], ignore_index=True)


def first_collapse(table: pd.DataFrame) -> pd.DataFrame:
    """Per criterion of a ``curves`` table, where on the grid it first empties a layer
    (``empty layer at``, the layer first in network order, and ``whole up to``, the grid
    point before) and, if measured, where it first cuts the network (``cut at``,
    ``connected up to``); NaN where the grid never reaches it, or starts past it."""
    rows = {}
    for label, g in table.groupby("criterion", sort=False):
        g = g.sort_values("sparsity").reset_index(drop=True)
        events = [("whole up to", "empty layer at", g["empty layers"] > 0)]
        if "cut" in g:
            events.append(("connected up to", "cut at", g["cut"].astype(bool)))
        row = {}
        for before, at, happened in events:
            hits = np.flatnonzero(happened.to_numpy())
            if len(hits) == 0:
                row[before], row[at] = g["sparsity"].iloc[-1], math.nan
            else:
                row[before] = g["sparsity"][hits[0] - 1] if hits[0] else math.nan
                row[at] = g["sparsity"][hits[0]]
            if at == "empty layer at":
                row["layer emptied"] = g["first empty"][hits[0]] if len(hits) else ""
        rows[label] = row
    return pd.DataFrame(rows).T.rename_axis("criterion")


def layer_totals(scores: Mapping[str, Mapping[str, torch.Tensor]]) -> pd.DataFrame:
    """Layer x criterion: the sum of each criterion's scores over each layer's weights
    (``scores``: criterion -> its scores). SynFlow's are all R in a chain of layers, so its
    mean score in a layer of n weights is R / n: one global ranking prunes the largest
    layers first."""
    return pd.DataFrame({crit: {n: float(s.double().sum()) for n, s in by_layer.items()}
                         for crit, by_layer in scores.items()})


def in_words(before: float, at: float) -> str:
    """A bracket of ``first_collapse`` (the grid point before an event, the first at which
    it happens) for the prose: 'between 99.386 and 99.553 %', 'at or below 80 %' when the
    grid starts past it, 'nowhere up to 99.99 %' when the grid never reaches it (``before``
    then is the grid's last point). Five digits tell neighbouring points apart up to 99.99 %."""
    if math.isnan(at):
        return f"nowhere up to {100 * before:.5g} %"
    if math.isnan(before):
        return f"at or below {100 * at:.5g} %"
    return f"between {100 * before:.5g} and {100 * at:.5g} %"


def critical_sparsity(scores: Mapping[str, torch.Tensor]) -> tuple[float, str]:
    """The highest sparsity at which one global ranking of ``scores`` (keep the highest, as
    ``prune.select`` with scope "global") leaves no layer empty, and the layer it empties
    next. A layer keeps a weight as long as its best score ranks among the kept ones, so
    with K* the worst such rank over the layers, K* kept weights are the fewest that keep
    every layer: the sparsity is 1 - K* / N. Exact when no score ties a layer's best."""
    flat = torch.cat([s.detach().flatten().double().cpu() for s in scores.values()])
    ranks = {n: int((flat > s.detach().double().max()).sum()) + 1 for n, s in scores.items()}
    weakest = max(ranks, key=ranks.get)
    return 1 - ranks[weakest] / flat.numel(), weakest


def critical_table(scores: Mapping[str, Mapping[str, torch.Tensor]], labels) -> pd.DataFrame:
    """``critical_sparsity`` of the scores of each of ``labels`` (the one-shot global arms):
    columns ``critical sparsity`` and ``layer emptied next``."""
    return pd.DataFrame({label: critical_sparsity(scores[label]) for label in labels},
                        index=["critical sparsity", "layer emptied next"]).T


def summary(first: pd.DataFrame, exact: pd.DataFrame, sizes: Mapping[str, int]) -> dict:
    """What the prose quotes, keyed ``plots.slug(label, what)``: every arm's brackets of
    ``first_collapse`` in words (``empties``, ``cuts``); the exact critical sparsity in %
    (``critical``), the layer emptied next (``next``) and its size (``next_size``) of the
    arms of ``critical_table``; and, from ``sizes`` (layer -> weights), the smallest and
    largest layer and ``random_bound``, the sparsity in % up to which a layerwise mask
    keeps a weight in every layer."""
    from opai_lib.plots import short_layer_name, slug

    out = {"smallest_layer": min(sizes.values()), "largest_layer": max(sizes.values()),
           "random_bound": 100 * (1 - 1 / min(sizes.values()))}
    for label, row in first.iterrows():
        out[slug(label, "empties")] = in_words(row["whole up to"], row["empty layer at"])
        if "cut at" in row:
            out[slug(label, "cuts")] = in_words(row["connected up to"], row["cut at"])
    for label, row in exact.iterrows():
        out[slug(label, "critical")] = 100 * row["critical sparsity"]
        out[slug(label, "next")] = short_layer_name(row["layer emptied next"])
        out[slug(label, "next_size")] = sizes[row["layer emptied next"]]
    return out


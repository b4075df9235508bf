"""The expander chapter: Stewart, Michieli and Ozay (CVPR-W 2023) on the book's scale.

Three data-free masks (``expanders``: Random, X-Net, RReg) are trained at equal weight
counts in every layer, paired by seed (seed s draws the same initial network for every
generator), in three parts:

* ``vgg``: VGG-16-BN at the degrees of the paper's CIFAR-10 table, with the dense network;
* ``resnets``: CIFAR ResNets of several depths at degree 3;
* ``budget``: the deepest ResNet, sparse, against the shallowest one dense at the width that
  holds about as many prunable weights (the paper: sparse RReg ResNet-152 above dense
  ResNet-50).

Every sparse cell is sized by a degree d: all three generators keep as many weights as
X-Net keeps at degree d on the network trained (``degree_density``), spread as one density
over the sparse layers. At reduced width this keeps the degree of a channel, where the
paper's parameter fraction would give it a fraction of one (``liveness`` shows what that
does). VGG's first convolution (3 input channels) stays dense, as a ResNet's stem does.

``runs`` builds the grid (``configs``: its RunConfigs, for a background sweep), ``frame``
turns records into one row per run with its mask's expansion, and the rest are the tables,
paired differences and the C4 rows of the conclusions' verdict table (``claims``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from opai_lib import config, expanders, experiments, masks, models, plots, study, verdicts
from opai_lib.methods import EXPANDER_PREFIX

GENERATORS = ("random", "xnet", "rreg")
NAMES = {"random": "Random", "xnet": "X-Net", "rreg": "RReg", "dense": "dense"}
CLASSES = 10  # CIFAR-10 and the smoke set: the dense classifier counts in a mask's density
DATASETS = ("cifar10", "synthetic")
RESNET_DEPTHS = (20, 32, 44, 56, 110)
LOW_DEGREE = 3  # the ResNet and budget cells, and claim C4 (a)

# The paper's CIFAR-10 VGG-16 table (300 epochs, all of CIFAR-10, full width, one run
# each): degree -> (PP %, accuracy % of Random, X-Net, RReg). Dense ("Original"): 94.24 %.
PAPER_VGG = {60: (13.79, 93.50, 93.46, 93.50), 30: (7.07, 92.51, 92.65, 93.05),
             15: (3.62, 91.30, 91.38, 91.50), 3: (0.79, 85.81, 86.06, 87.02)}
PAPER_VGG_DENSE = 94.24
# Its Tiny-ImageNet table at d = 3 (ImageNet-style ResNets): model -> (PP %, Random, X-Net,
# RReg), and its same-budget comparison on Tiny-ImageNet: (sparse RReg model, parameters in
# M, accuracy %) against (dense model, parameters in M, accuracy %).
PAPER_RESNETS = {"RN18": (3.45, 44.02, 42.69, 44.30), "RN34": (2.33, 47.34, 46.97, 46.30),
                 "RN50": (14.24, 46.77, 45.36, 48.27), "RN101": (8.52, 49.56, 49.45, 51.04),
                 "RN152": (6.62, 49.05, 49.47, 51.21)}
PAPER_BUDGET = (("RN152", 21.9, 62.01), ("RN50", 23.9, 59.36))


# ---------------------------------------------------------------------------------------
# The chapter's scale, checked before any compute.


@dataclass(frozen=True)
class Scale:
    """What the chapter trains on a profile: seeds (0 .. seeds - 1, paired), widths,
    training images per class (0: all), rreg's best-of draws, the paper's VGG degrees and
    the ResNet depths (the deepest and the shallowest make the same-budget pair)."""

    seeds: int
    vgg_width: float
    resnet_width: float
    train_per_class: int
    best_of: int
    degrees: tuple[int, ...]
    resnet_depths: tuple[int, ...]


FULL = Scale(seeds=3, vgg_width=1.0, resnet_width=1.0, train_per_class=0, best_of=100,
             degrees=(60, 30, 15, 3), resnet_depths=(20, 32, 56))
# The cpu profile trains narrow networks on half its training subset (cost falls with the
# square of the width); the smoke profile checks that the chapter runs, in seconds.
SCALES = {"smoke": dataclasses.replace(FULL, seeds=2, vgg_width=0.125, resnet_width=0.25,
                                       train_per_class=16, best_of=2, degrees=(15, 3),
                                       resnet_depths=(20, 32)),
          "cpu": dataclasses.replace(FULL, vgg_width=0.25, resnet_width=0.5,
                                     train_per_class=1000)}


def _check_choices(name: str, value, allowed: tuple, least: int) -> tuple:
    """``value`` as a tuple of at least ``least`` distinct members of ``allowed``."""
    ok = (isinstance(value, list | tuple) and len(value) >= least
          and len(set(value)) == len(value)
          and all(not isinstance(v, bool) and v in allowed for v in value))
    config.check_parameter(ok, name, value, f"a list of at least {least} distinct values "
                           f"of {allowed}")
    return tuple(value)


def _check_width(name: str, value) -> float:
    config.check_parameter(isinstance(value, int | float) and not isinstance(value, bool)
                           and 0 < value <= 1, name, value, "a number in (0, 1]")
    return float(value)


def scale(profile: config.Profile, seeds: int | None = None, vgg_width: float | None = None,
          resnet_width: float | None = None, train_per_class: int | None = None,
          best_of: int | None = None, degrees=None, resnet_depths=None) -> Scale:
    """The chapter's scale on ``profile``: each argument as given (checked; the error
    names it and its value), None for the profile's (``SCALES``, else ``FULL``)."""
    config.check_parameter(profile.dataset in DATASETS, "profile", profile.name,
                           f"a profile whose dataset is one of {DATASETS} (the paper's "
                           "VGG table is CIFAR-10's)")
    base = SCALES.get(profile.name, FULL)
    given = {name: getattr(base, name) if value is None else value for name, value in
             dict(seeds=seeds, vgg_width=vgg_width, resnet_width=resnet_width,
                  train_per_class=train_per_class, best_of=best_of, degrees=degrees,
                  resnet_depths=resnet_depths).items()}
    config.check_integer("seeds", given["seeds"], 1)
    config.check_integer("train_per_class", given["train_per_class"], 0)
    config.check_integer("best_of", given["best_of"], 1)
    given["vgg_width"] = _check_width("vgg_width", given["vgg_width"])
    given["resnet_width"] = _check_width("resnet_width", given["resnet_width"])
    given["degrees"] = _check_choices("degrees", given["degrees"], tuple(PAPER_VGG), 1)
    given["resnet_depths"] = tuple(sorted(_check_choices("resnet_depths",
                                                         given["resnet_depths"],
                                                         RESNET_DEPTHS, 2)))
    return Scale(**given)


# ---------------------------------------------------------------------------------------
# Sizing: degrees, densities, budgets.


def _is_vgg(model: str) -> bool:
    return model.startswith("vgg")


def first_layer(model: str) -> bool | None:
    """``ExpanderOptions.first_layer`` of ``model``: False (dense) for VGG, whose first
    convolution has 3 input channels, too few for an expander; None for ResNets, whose
    stem is dense by default (spelled None so their published records keep their keys)."""
    return False if _is_vgg(model) else None


def generator_options(model: str, generator: str, best_of: int
                      ) -> expanders.ExpanderOptions:
    """The options of ``generator``'s masks on ``model``: the best of ``best_of`` draws
    for rreg (the paper's selection by expansion), one draw for the others."""
    return expanders.ExpanderOptions(best_of=best_of if generator == "rreg" else 1,
                                     first_layer=first_layer(model))


@functools.cache
def degree_density(model: str, width: float, degree: int) -> float:
    """Fraction of ``model``'s prunable weights (at ``width``) that X-Net keeps at
    ``degree`` (every input channel of a sparse layer joined to ``degree`` outputs, the
    official convention; dense layers count as kept): the density of degree d here."""
    net = models.get_model(model, CLASSES, width)
    mask = expanders.expander_mask(net, "xnet", degree=degree, first_layer=first_layer(model))
    return masks.density(mask)["total"]


@functools.cache
def prunable_count(model: str, width: float) -> int:
    """Prunable weights (conv and linear) of ``model`` at ``width``."""
    return sum(p.numel() for p in models.prunable(models.get_model(model, CLASSES, width)
                                                  ).values())


def channel_range(model: str, width: float) -> tuple[int, int]:
    """The fewest and the most output channels among ``model``'s convolutions at ``width``."""
    outs = [w.shape[0] for w in models.prunable(models.get_model(model, CLASSES, width)
                                                ).values() if w.dim() == 4]
    return min(outs), max(outs)


def matched_width(model: str, weights: float, widest: float, step: float = 0.01) -> float:
    """The width (a multiple of ``step`` from 0.05 up to ``widest``) at which dense
    ``model`` holds the number of prunable weights closest to ``weights`` (the smaller
    width on a tie)."""
    widths = [round(k * step, 2) for k in range(round(0.05 / step), round(widest / step) + 1)]
    return min(widths, key=lambda w: abs(prunable_count(model, w) - weights))


def budget_pair(scale: Scale) -> tuple[str, str, float]:
    """(deep model, shallow model, the shallow one's width): the deepest ResNet sparse at
    degree 3 and the shallowest dense, narrowed to hold as many prunable weights."""
    deep, shallow = (f"resnet{d}" for d in (scale.resnet_depths[-1], scale.resnet_depths[0]))
    kept = degree_density(deep, scale.resnet_width, LOW_DEGREE) * prunable_count(
        deep, scale.resnet_width)
    return deep, shallow, matched_width(shallow, kept, scale.resnet_width)


# ---------------------------------------------------------------------------------------
# The grid.


@dataclass(frozen=True)
class Run:
    """One cell of the chapter at one seed: its part (``vgg``, ``resnets`` or ``budget``),
    arm (a generator or ``dense``), degree (None for dense) and the config computing it."""

    part: str
    arm: str
    degree: int | None
    seed: int
    config: study.RunConfig


def _config(profile: config.Profile, scale: Scale, model: str, width: float, arm: str,
            degree: int | None, seed: int) -> study.RunConfig:
    fields = dict(model=model, width=width, seed=seed, train_per_class=scale.train_per_class)
    if arm == "dense":
        return study.config_from_profile(profile, **fields)
    return study.config_from_profile(profile, method=EXPANDER_PREFIX + arm,
                                     sparsity=1 - degree_density(model, width, degree),
                                     options=generator_options(model, arm, scale.best_of),
                                     **fields)


def cells(scale: Scale) -> list[tuple[str, str, float, str, int | None]]:
    """(part, model, width, arm, degree) of every cell: VGG, the same-budget pair (its
    deep arms are ResNet cells too), then the ResNets of every depth."""
    vgg = [("vgg", "vgg16_bn", scale.vgg_width, "dense", None)] + [
        ("vgg", "vgg16_bn", scale.vgg_width, g, d) for d in scale.degrees for g in GENERATORS]
    deep, shallow, narrow = budget_pair(scale)
    budget = [("budget", deep, scale.resnet_width, g, LOW_DEGREE) for g in ("rreg", "random")]
    budget.append(("budget", shallow, narrow, "dense", None))
    resnets = [("resnets", f"resnet{k}", scale.resnet_width, g, LOW_DEGREE)
               for k in scale.resnet_depths for g in GENERATORS]
    return vgg + budget + resnets


def runs(profile: config.Profile, scale: Scale) -> list[Run]:
    """Every run of the chapter, seed-major (a sweep stopped early leaves every cell with
    about the same seeds); seed s gives every arm the same initial network."""
    return [Run(part, arm, degree, seed,
                _config(profile, scale, model, width, arm, degree, seed))
            for seed in range(scale.seeds) for part, model, width, arm, degree in cells(scale)]


def configs(profile: str, seeds: int | None = None) -> list[study.RunConfig]:
    """The chapter's RunConfigs on ``profile`` at its scale, each once, for a sweep run
    outside the notebook (``study.sweep(configs("cpu"), study.store_dir("cpu"))``)."""
    P = config.get_profile(profile)
    return list({r.config.key(): r.config for r in runs(P, scale(P, seeds))}.values())


# ---------------------------------------------------------------------------------------
# What a mask does to the network's channels.


def cut_off(mask: masks.Mask) -> float:
    """Percent of the channels of the sparse layers (those not kept whole) left with no
    edge at all."""
    graphs = [expanders.channel_graph(m) for m in mask.values() if not m.all()]
    if not graphs:
        return 0.0
    dead = sum(int((g.sum(1) == 0).sum() + (g.sum(0) == 0).sum()) for g in graphs)
    return 100 * dead / sum(sum(g.shape) for g in graphs)


def live_channels(mask: masks.Mask) -> float:
    """Percent of the last convolution's output channels joined to the input by a path of
    kept edges, in a network whose convolutions form a chain (VGG: pooling keeps the
    channels). A channel no path reaches sees a constant, whatever the image."""
    graphs = [expanders.channel_graph(m) for m in mask.values() if m.dim() == 4]
    if not graphs:
        raise ValueError("the mask has no convolution")
    live = np.ones(graphs[0].shape[0], dtype=bool)
    for g in graphs:
        if g.shape[0] != len(live):
            raise ValueError(f"a convolution with {g.shape[0]} inputs follows one with "
                             f"{len(live)} outputs: not a chain (skip connections are not "
                             "followed)")
        live = g[live].any(0)
    return 100 * float(live.mean())


CONVENTIONS = {"pp, first sparse": "the paper's PP, first convolution sparse",
               "pp, first dense": "the paper's PP, first convolution dense",
               "degree, first dense": "degree d, first convolution dense (this chapter)"}


def liveness(scale: Scale, seed: int = 0) -> pd.DataFrame:
    """VGG-16-BN at the chapter's width, each degree and generator sized three ways
    (``CONVENTIONS``; rreg drawn once): density, live output channels and channels cut off
    (%), one mask each, no training."""
    net = models.get_model("vgg16_bn", CLASSES, scale.vgg_width)
    rows = []
    for d in scale.degrees:
        sizes = {"pp, first sparse": (PAPER_VGG[d][0] / 100, None),
                 "pp, first dense": (PAPER_VGG[d][0] / 100, False),
                 "degree, first dense": (degree_density("vgg16_bn", scale.vgg_width, d), False)}
        for convention, (density, first) in sizes.items():
            for g in GENERATORS:
                mask = expanders.expander_mask(net, g, density, seed, first_layer=first)
                rows.append({"degree": d, "sizing": convention,
                             "convention": CONVENTIONS[convention],
                             "generator": NAMES[g], "density %": 100 * density,
                             "live channels %": live_channels(mask),
                             "channels cut off %": cut_off(mask)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------
# From records to one row per run.

FRAME_COLUMNS = ["part", "model", "width", "arm", "degree", "density %", "seed", "accuracy %",
                 "expansion", "sigma2 / bound", "channels cut off %", "live channels %",
                 "key", "seconds", "cpu"]


def mask_measures(mask: masks.Mask, model: str, seed: int) -> dict:
    """Sampled expansion and sigma_2 / Ramanujan bound (means over the sparse layers,
    ``expanders.network_expansion``), channels cut off and, for VGG, live channels."""
    e = expanders.network_expansion(mask, seed=seed)
    return {"expansion": e["expansion"], "sigma2 / bound": e["sigma2_over_bound"],
            "channels cut off %": cut_off(mask),
            "live channels %": live_channels(mask) if _is_vgg(model) else math.nan}


def frame(planned: list[Run], records: list[dict | None], store) -> pd.DataFrame:
    """One row per planned run that has a record: part, model, width, arm, degree,
    density (%), seed, accuracy (%), the measures of the mask it trained (read from the
    record; NaN for dense runs) and its cost."""
    if len(planned) != len(records):
        raise ValueError(f"{len(planned)} runs but {len(records)} records")
    measured: dict[str, dict] = {}
    rows = []
    for run, r in zip(planned, records, strict=True):
        if r is None:
            continue
        cfg = run.config
        if r["key"] not in measured:
            mask = study.read_mask(r, store)
            measured[r["key"]] = ({} if mask is None
                                  else mask_measures(mask, cfg.model, cfg.seed))
        rows.append({"part": run.part, "model": cfg.model, "width": cfg.width,
                     "arm": run.arm, "degree": run.degree, "density %": 100 * r["density"],
                     "seed": run.seed, "accuracy %": 100 * r["accuracy"],
                     **measured[r["key"]], "key": r["key"], "seconds": r["seconds"],
                     "cpu": r["machine"]["cpu"]})
    return pd.DataFrame(rows, columns=FRAME_COLUMNS).astype({"degree": "Int64"})


def collect(profile: config.Profile, scale: Scale, compute: bool = False,
            workers: int | None = None) -> tuple[list[Run], pd.DataFrame]:
    """The chapter's planned runs and the ``frame`` of those in the profile's store; with
    ``compute``, the missing ones are computed first (``workers`` processes; None: the
    profile's)."""
    planned = runs(profile, scale)
    store = study.store_dir(profile.name)
    if compute:
        study.sweep([r.config for r in planned], store,
                    workers=config.workers(profile, workers))
    return planned, frame(planned, study.finished([r.config for r in planned], store), store)


def record_table(profile: str = "cpu", seeds: int | None = None) -> pd.DataFrame:
    """The ``frame`` of the chapter's runs already in ``profile``'s store, at its scale,
    computing nothing (what the conclusions read: ``claims(record_table())``)."""
    P = config.get_profile(profile)
    return collect(P, scale(P, seeds))[1]


def chapter(profile: str, seeds=None, vgg_width=None, resnet_width=None, train_per_class=None,
            best_of=None, degrees=None, resnet_depths=None, compute: bool = True,
            workers: int | None = None
            ) -> tuple[config.Profile, Scale, list[Run], pd.DataFrame]:
    """The chapter's first cell: check every parameter, compute the missing runs
    (``compute``) or read only those in the store, print what was measured on what, glue
    the scale for the prose. Returns the profile, the scale, the planned runs and the
    ``frame`` of those with a record."""
    config.check_parameter(isinstance(compute, bool), "compute", compute, "True or False")
    P = config.get_profile(profile)
    workers = config.workers(P, workers)
    s = scale(P, seeds, vgg_width, resnet_width, train_per_class, best_of, degrees,
              resnet_depths)
    planned, table = collect(P, s, compute, workers)
    train_set = study.run_data(P.dataset, s.train_per_class, P.test_per_class)[0]
    done = table.drop_duplicates("key")
    hours = done["seconds"].sum() / 3600
    print(f"profile {P.name}: {train_set.name}, {len(train_set)} training images, "
          f"{P.recipe.epochs} epochs in {P.recipe.precision}, seeds 0-{s.seeds - 1}\n"
          f"VGG-16-BN width {s.vgg_width}, ResNets width {s.resnet_width}, rreg best of "
          f"{s.best_of}\n{len(done)} of {len({r.config.key() for r in planned})} runs in "
          f"the store; they took {hours:.1f} CPU-hours, on\n  {experiments.machines(done)}")
    for key, value in {"seeds": s.seeds, "vgg_width": s.vgg_width,
                       "resnet_width": s.resnet_width, "epochs": P.recipe.epochs,
                       "train_per_class": len(train_set) // train_set.num_classes,
                       "cpu_hours": hours, "chance": 100 / train_set.num_classes,
                       "gpu_epochs": config.get_profile("cifar-gpu").recipe.epochs}.items():
        plots.glue_number(key, value)
    for key, width in {"vgg_channels": s.vgg_width, "vgg_full_channels": 1.0}.items():
        plots.glue_text(key, "{} to {}".format(*channel_range("vgg16_bn", width)))
    plots.glue_text("cpus", experiments.machines(done))
    return P, s, planned, table


# ---------------------------------------------------------------------------------------
# Tables.


def pp_table(seed: int = 0) -> pd.DataFrame:
    """The paper's PP column recounted: per degree, each generator's kept fraction of the
    official VGG-16-BN's parameters as the official code counts them (%), their mean and
    spread (the paper's PP and its "+-"), and rreg's count without the configuration
    model's merged multi-edges (d on the larger side of every layer)."""
    rows = []
    for d, (pp, *_) in PAPER_VGG.items():
        counts = {g: expanders.official_parameter_count(g, d, seed=seed) for g in GENERATORS}
        pct = {g: 100 * c["kept"] / c["dense"] for g, c in counts.items()}
        xnet = counts["xnet"]
        exact = xnet["kept"] + sum((max(i, o) - i) * d * k
                                   for i, o, k in expanders.PAPER_VGG16_SPARSE)
        rows.append({"degree": d, "paper PP %": pp, "official mean %": np.mean(list(pct.values())),
                     "official std %": np.std(list(pct.values())),
                     **{f"{NAMES[g]} %": pct[g] for g in GENERATORS},
                     "RReg without merging %": 100 * exact / xnet["dense"]})
    return pd.DataFrame(rows)


def _part(table: pd.DataFrame, part: str, sparse: bool = True) -> pd.DataFrame:
    rows = table[table["part"] == part]
    return rows[rows["arm"] != "dense"] if sparse else rows


def _ordered(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows by degree, high to low (the paper's order), then by arm in ``NAMES`` order
    (the columns of the two that ``rows`` has)."""
    order = {a: i for i, a in enumerate(NAMES)}
    by = [c for c in ("degree", "arm") if c in rows]
    return rows.sort_values(by, ascending=[c != "degree" for c in by], na_position="first",
                            key=lambda c: c.map(order) if c.name == "arm" else c,
                            kind="stable").reset_index(drop=True)


def expansion_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per VGG degree and generator, the means over seeds of the trained masks' density,
    live channels, channels cut off, sampled expansion and sigma_2 / Ramanujan bound."""
    columns = ["density %", "live channels %", "channels cut off %", "expansion",
               "sigma2 / bound"]
    rows = _part(table, "vgg")
    out = rows.groupby(["degree", "arm"])[columns].mean().reset_index()
    out.insert(2, "masks", rows.groupby(["degree", "arm"]).size().to_numpy())
    out = _ordered(out)
    out["arm"] = out["arm"].map(NAMES)
    return out.rename(columns={"arm": "generator"})


MEASURES = {"expansion": "max", "sigma2 / bound": "min"}  # which end expands best


def most_expanding(expansion: pd.DataFrame, measure: str = "expansion") -> pd.Series:
    """Per degree, the generator of ``expansion_table`` whose masks expand most by
    ``measure``: the largest sampled expansion, or the smallest sigma_2 / Ramanujan
    bound (the two need not agree)."""
    if measure not in MEASURES:
        raise ValueError(f"measure={measure!r}; allowed: {sorted(MEASURES)}")
    by = expansion.groupby("degree", sort=False)[measure]
    best = expansion.loc[by.idxmax() if MEASURES[measure] == "max" else by.idxmin()]
    return best.set_index("degree")["generator"]


def _accuracy(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy (%) with its 95 % t-interval over seeds, and mean density (%), per
    (model, width, arm, degree)."""
    by = ["model", "width", "arm", "degree"]
    out = study.table(rows, by, "accuracy %").drop(columns="std")
    out.insert(4, "density %", rows.groupby(by, sort=False, dropna=False)["density %"]
               .mean().to_numpy())
    return out


def vgg_table(table: pd.DataFrame) -> pd.DataFrame:
    """VGG-16-BN per degree and generator (and dense): the paper's PP and accuracy beside
    our density, mean accuracy, 95 % interval and seeds."""
    rows = _part(table, "vgg", sparse=False)
    if rows.empty:
        return pd.DataFrame(columns=["arm", "degree", "paper PP %", "density %", "count",
                                     "mean", "ci95", "paper %"])
    out = _ordered(_accuracy(rows))
    paper = [PAPER_VGG_DENSE if a == "dense" else PAPER_VGG[d][1 + GENERATORS.index(a)]
             for a, d in zip(out["arm"], out["degree"], strict=True)]
    pp = [100.0 if a == "dense" else PAPER_VGG[d][0]
          for a, d in zip(out["arm"], out["degree"], strict=True)]
    out = out.assign(arm=out["arm"].map(NAMES), **{"paper PP %": pp, "paper %": paper})
    return out[["arm", "degree", "paper PP %", "density %", "count", "mean", "ci95", "paper %"]]


def resnet_table(table: pd.DataFrame) -> pd.DataFrame:
    """CIFAR ResNets at degree 3, per depth and generator: density, mean accuracy, 95 %
    interval and seeds (the paper's ResNets are other models: ``paper_resnet_table``)."""
    out = _accuracy(_part(table, "resnets"))
    return out.assign(arm=out["arm"].map(NAMES)).drop(columns=["width", "degree"])


def paper_resnet_table() -> pd.DataFrame:
    """The paper's Tiny-ImageNet ResNets at d = 3: PP, accuracies, and X-Net and RReg
    minus Random (points)."""
    rows = [{"model": m, "paper PP %": pp,
             **{f"{NAMES[g]} %": a for g, a in zip(GENERATORS, acc, strict=True)},
             "X-Net - Random": acc[1] - acc[0], "RReg - Random": acc[2] - acc[0]}
            for m, (pp, *acc) in PAPER_RESNETS.items()]
    return pd.DataFrame(rows)


def paper_vgg_effect(generator: str, degree: int) -> float:
    """The paper's VGG accuracy of ``generator`` minus Random's at ``degree`` (points)."""
    acc = dict(zip(GENERATORS, PAPER_VGG[degree][1:], strict=True))
    return acc[generator] - acc["random"]


def _judged(rows: pd.DataFrame, paper: list[float]) -> pd.DataFrame:
    """``rows`` (mean, ci95) with the paper's effect and ``verdicts.verdict``."""
    return rows.assign(**{"paper effect": paper, "verdict": [
        verdicts.verdict(m, h, verdicts.effect_sign(p)) for m, h, p in
        zip(rows["mean"], rows["ci95"], paper, strict=True)]})


def _paired(rows: pd.DataFrame, by: list[str], reference: str) -> pd.DataFrame:
    """``study.paired_differences`` of accuracy between arms, each against ``reference``
    within groups of equal ``by``; empty while no run of ``reference`` is in ``rows``."""
    if not (rows["arm"] == reference).any():
        return pd.DataFrame()
    return study.paired_differences(rows, by, "arm", reference, "accuracy %")


EFFECT_COLUMNS = ["criterion", "model", "degree", "density %", "mean", "ci95", "count",
                  "per_seed", "paper effect", "verdict"]


def effects(table: pd.DataFrame, part: str) -> pd.DataFrame:
    """X-Net and RReg minus Random in ``part`` (``vgg`` or ``resnets``), paired by seed
    within each model and degree: mean, 95 % interval, pairs, per-seed differences, the
    paper's difference (VGG; NaN for the ResNets, which the paper ran on other models)
    and the verdict."""
    rows = _part(table, part)
    diffs = _paired(rows, ["model", "degree"], "random")
    if diffs.empty:
        return pd.DataFrame(columns=EFFECT_COLUMNS)
    density = rows.groupby(["model", "degree"])["density %"].mean()
    diffs = _ordered(diffs).assign(
        criterion=lambda d: d["arm"].map(NAMES),
        **{"density %": lambda d: [density[m, g] for m, g in zip(d["model"], d["degree"],
                                                                   strict=True)]})
    paper = [paper_vgg_effect(a, d) if part == "vgg" else math.nan
             for a, d in zip(diffs["arm"], diffs["degree"], strict=True)]
    return _judged(diffs, paper)[EFFECT_COLUMNS]


def budget_table(table: pd.DataFrame) -> pd.DataFrame:
    """The same-budget comparison: per network, its width, prunable weights kept, density,
    mean accuracy with 95 % interval and seeds."""
    out = _accuracy(_part(table, "budget", sparse=False))
    out.insert(3, "weights kept", [round(d / 100 * prunable_count(m, w)) for m, w, d in
                                   zip(out["model"], out["width"], out["density %"],
                                       strict=True)])
    return out.assign(arm=out["arm"].map(NAMES)).drop(columns="degree")


def budget_effects(table: pd.DataFrame) -> pd.DataFrame:
    """The deep sparse network (RReg, and Random) minus the shallow dense one of about the
    same prunable weights, paired by seed, beside the paper's ResNet-152 RReg minus dense
    ResNet-50 (Tiny-ImageNet), with the verdict."""
    rows = _part(table, "budget", sparse=False)
    diffs = _paired(rows, ["part"], "dense")
    columns = ["criterion", "comparison", "density %", "mean", "ci95", "count", "per_seed",
               "paper effect", "verdict"]
    if diffs.empty:
        return pd.DataFrame(columns=columns)
    sparse = rows["arm"] != "dense"
    deep, shallow = rows[sparse].iloc[0], rows[~sparse].iloc[0]
    (_, _, sparse_acc), (_, _, dense_acc) = PAPER_BUDGET
    density = rows.groupby("arm")["density %"].mean()
    diffs = diffs.assign(criterion=diffs["arm"].map(NAMES), comparison=(
        f"{deep['model']} sparse minus {shallow['model']} dense (width {shallow['width']:g})"),
        **{"density %": diffs["arm"].map(density)})
    paper = [sparse_acc - dense_acc if a == "rreg" else math.nan for a in diffs["arm"]]
    return _judged(diffs, paper)[columns]


def expansion_effects(table: pd.DataFrame) -> pd.DataFrame:
    """Does the mask that expands more train better, at equal density? Per VGG degree and
    seed (with all three generators), accuracy of the most expanding mask (sampled
    expansion) minus the least expanding one's; mean, 95 % interval, pairs, per-seed
    differences, and which generators expanded most and least."""
    rows = _part(table, "vgg")
    out = []
    for d, cell in rows.groupby("degree", sort=False):
        diffs, most, least = [], set(), set()
        for _, seed in cell.groupby("seed"):
            if set(seed["arm"]) != set(GENERATORS):
                continue
            top, bottom = (seed.loc[seed["expansion"].agg(f)] for f in ("idxmax", "idxmin"))
            diffs.append(top["accuracy %"] - bottom["accuracy %"])
            most.add(NAMES[top["arm"]])
            least.add(NAMES[bottom["arm"]])
        out.append({"degree": d, "density %": cell["density %"].mean(),
                    "most expanding": ", ".join(sorted(most)),
                    "least expanding": ", ".join(sorted(least)),
                    "mean": np.mean(diffs) if diffs else math.nan,
                    "ci95": study.t_half_width(np.std(diffs, ddof=1), len(diffs))
                    if len(diffs) > 1 else math.nan, "count": len(diffs), "per_seed": diffs})
    out = _ordered(pd.DataFrame(out, columns=["degree", "density %", "most expanding",
                                              "least expanding", "mean", "ci95", "count",
                                              "per_seed"]))
    return out.assign(verdict=[verdicts.verdict(m, h, 1) for m, h in
                               zip(out["mean"], out["ci95"], strict=True)])


def _deepest(models_: pd.Series) -> str | None:
    """The deepest ResNet among ``models_`` (None if there is none)."""
    return max(models_, key=lambda m: int(m.removeprefix("resnet")), default=None)


def matching_table(table: pd.DataFrame, store) -> pd.DataFrame:
    """The deepest ResNet's Random and RReg masks (smallest seed), per layer shape: layers,
    edges per channel (of the larger side), perfect matchings (every channel exactly one
    neighbour on both sides), layers with a channel cut off, mean sampled expansion."""
    rows = _part(table, "resnets")
    rows = rows[(rows["model"] == _deepest(rows["model"])) & rows["arm"].isin(["random", "rreg"])]
    out = []
    for _, run in rows.sort_values("seed").drop_duplicates("arm").iterrows():
        mask = study.read_mask(study.open_store(store).read(run["key"]), store)
        for r in expanders.layer_report({n: m for n, m in mask.items() if not m.all()}):
            out.append({"channels": f"{r['n_in']}->{r['n_out']}", "width": r["n_out"],
                        "generator": NAMES[run["arm"]],
                        "edges per channel": r["edges"] / max(r["n_in"], r["n_out"]),
                        "matching": r["left_degree"] == r["right_degree"] == (1, 1),
                        "cut": min(r["left_degree"][0], r["right_degree"][0]) == 0,
                        "expansion": r["expansion"]})
    columns = ["channels", "width", "generator", "layers", "edges per channel",
               "perfect matchings", "layers with a channel cut off", "expansion"]
    if not out:
        return pd.DataFrame(columns=columns)
    return pd.DataFrame(out).groupby(["channels", "width", "generator"], sort=False).agg(
        layers=("expansion", "size"), **{"edges per channel": ("edges per channel", "mean"),
                                        "perfect matchings": ("matching", "sum"),
                                        "layers with a channel cut off": ("cut", "sum"),
                                        "expansion": ("expansion", "mean")}).reset_index()


def narrowest_matchings(matching: pd.DataFrame) -> tuple[int, int]:
    """RReg's layers in the narrowest stage of ``matching_table`` (the smallest output
    width), and how many of them are perfect matchings."""
    rreg = matching[matching["generator"] == "RReg"]
    narrow = rreg[rreg["width"] == rreg["width"].min()]
    return int(narrow["layers"].sum()), int(narrow["perfect matchings"].sum())


# ---------------------------------------------------------------------------------------
# Claim C4 of the conclusions' verdict table, the figure, the glued numbers.

CLAIM_COLUMNS = ["claim", "criterion", "material", "sparsity %", "mean", "ci95", "count",
                 "paper", "verdict", "paper in interval", "sign", "decisive"]


def _claim(criterion: str, material: str, row, paper: float | str, sign: int) -> dict:
    """A C4 row from an effect row (mean, ci95, count, density %; None: no pair yet) and
    the paper's effect (a number, or the words of a claim without one)."""
    number = paper if isinstance(paper, float) else math.nan
    out = {"claim": "C4", "criterion": criterion, "material": material,
           "paper": f"{number:+.2f}" if isinstance(paper, float) else paper, "sign": sign,
           "decisive": False}
    if row is None or row["count"] == 0:
        return {**out, "sparsity %": math.nan, "mean": math.nan, "ci95": math.nan,
                "count": 0, "verdict": "unresolved", "paper in interval": None}
    return {**out, "sparsity %": round(100 - row["density %"], 2), "mean": row["mean"],
            "ci95": row["ci95"], "count": int(row["count"]),
            "verdict": verdicts.verdict(row["mean"], row["ci95"], sign),
            "paper in interval": verdicts.paper_inside(row["mean"], row["ci95"], number)}


def _row(rows: pd.DataFrame, **match):
    hit = rows
    for column, value in match.items():
        hit = hit[hit[column] == value]
    return hit.iloc[0] if len(hit) else None


def claims(table: pd.DataFrame) -> pd.DataFrame:
    """One row per cell of the paper's claim C4, in the columns of ``verdicts.claims``:
    (a) RReg above Random at low degree (VGG-16-BN, degree 3); (b) accuracy rising with
    expansion: the most expanding mask minus the least, at each of the paper's degrees;
    (c) the deep sparse RReg network above the shallow dense one of the same budget. A
    cell with no pair is unresolved."""
    vgg, grown, budget = effects(table, "vgg"), expansion_effects(table), budget_effects(table)
    rows = [_claim("RReg", f"VGG-16-BN degree {LOW_DEGREE}: RReg minus Random",
                   _row(vgg, criterion="RReg", degree=LOW_DEGREE),
                   float(paper_vgg_effect("rreg", LOW_DEGREE)), 1)]
    rows += [_claim("expansion", f"VGG-16-BN degree {d}: most minus least expanding mask",
                    _row(grown, degree=d), "rising", 1) for d in PAPER_VGG]
    (_, _, sparse_acc), (_, _, dense_acc) = PAPER_BUDGET
    deep = _row(budget, criterion="RReg")
    rows.append(_claim("RReg", "same budget: " + (deep["comparison"] if deep is not None
                                                   else "deep sparse minus shallow dense"),
                       deep, float(sparse_acc - dense_acc), 1))
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def expansion_figure(table: pd.DataFrame):
    """Accuracy of every trained mask against its sampled expansion and its sigma_2 /
    Ramanujan bound; colour: generator, marker: network (VGG circles, ResNets squares)."""
    import matplotlib.pyplot as plt

    rows = table[table["part"].isin(["vgg", "resnets"]) & (table["arm"] != "dense")]
    _, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, column, label in [(axes[0], "expansion", "sampled expansion (mean over layers)"),
                              (axes[1], "sigma2 / bound", "sigma_2 / Ramanujan bound")]:
        for (model, arm), g in rows.groupby(["model", "arm"], sort=False):
            ax.scatter(g[column], g["accuracy %"], marker="o" if model.startswith("vgg")
                       else "s", color=f"C{GENERATORS.index(arm)}", alpha=0.8,
                       label=f"{model} {NAMES[arm]}")
        ax.set_xlabel(label)
    axes[0].set_ylabel("test accuracy (%)")
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=8)
    return axes


def glue_vgg(vgg: pd.DataFrame) -> None:
    """Glue, for every degree of the paper's table, its PP (``vgg_<d>_pp``), our density
    (``vgg_<d>_density``) and each generator's mean accuracy (``vgg_<d>_<generator>``;
    NaN where not trained), and the dense network's (``vgg_dense``)."""
    for d, (pp, *_) in PAPER_VGG.items():
        plots.glue_number(f"vgg_{d}_pp", pp)
        cells = vgg[vgg["degree"] == d].set_index("arm")
        plots.glue_number(f"vgg_{d}_density", cells["density %"].mean())
        for g in GENERATORS:
            plots.glue_number(f"vgg_{d}_{g}", cells["mean"].get(NAMES[g], math.nan))
    plots.glue_number("vgg_dense", vgg.loc[vgg["arm"] == "dense", "mean"].mean())


CLAIM_KEYS = ["c4_low_degree", *[f"c4_expansion_{d}" for d in PAPER_VGG], "c4_budget"]


def glue_claims(rows: pd.DataFrame) -> None:
    """Glue the mean, 95 % half-width and pairs of every ``claims`` row under
    ``CLAIM_KEYS`` + ``_mean`` / ``_ci95`` / ``_n``."""
    for key, (_, row) in zip(CLAIM_KEYS, rows.iterrows(), strict=True):
        plots.glue_number(f"{key}_mean", row["mean"])
        plots.glue_number(f"{key}_ci95", row["ci95"])
        plots.glue_number(f"{key}_n", row["count"])

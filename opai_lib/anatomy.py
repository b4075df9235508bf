"""Mask anatomy: how two masks differ, and which kept weights can matter at all.

Measures that need no training, for asking whether the material fed to a criterion
changes its mask by more than the mask's own draw-to-draw noise:

- ``layer_overlap``: per tensor, the fraction of one mask's kept weights the other keeps
  (``masks.overlap`` is the same over all tensors); ``density_difference`` per layer.
- ``score_spearman``: rank correlation of two score sets over all weights.
- ``effective_mask`` (``PathCounter``): the kept weights on at least one input-output path
  of the masked network (Vysogorets and Kempe 2021); the others cannot change the output,
  so a mask's *effective* sparsity can exceed its nominal one, up to 100 % for a cut network.
- ``material_masks``: a criterion's masks for independent draws of one material on one
  initial network; ``overlap_matrix`` and ``within_between``: overlaps of masks drawn from
  the same material against masks from two materials, with a permutation test.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from opai_lib import config, experiments, masks, methods, models, plots, prune, record, study
from opai_lib import data as data_mod
from opai_lib.config import build, check_integer, check_types, param, require
from opai_lib.criteria import CRITERIA
from opai_lib.materials import Material
from opai_lib.record import KINDS

Mask = masks.Mask


def _same_tensors(a: Mapping, b: Mapping) -> None:
    if a.keys() != b.keys():
        raise ValueError(f"masks over different tensors: {sorted(a.keys() ^ b.keys())}")


def layer_overlap(a: Mask, b: Mask) -> dict[str, float]:
    """Per tensor, the fraction of ``a``'s kept weights that ``b`` keeps too (NaN where
    ``a`` keeps none)."""
    _same_tensors(a, b)
    out = {}
    for name, m in a.items():
        kept = int(m.sum())
        out[name] = int((m & b[name]).sum()) / kept if kept else math.nan
    return out


def density_difference(a: Mask, b: Mask) -> dict[str, float]:
    """Per tensor, the fraction of weights ``a`` keeps minus the fraction ``b`` keeps."""
    _same_tensors(a, b)
    return {name: m.float().mean().item() - b[name].float().mean().item()
            for name, m in a.items()}


def score_spearman(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """Spearman rank correlation of two score sets over all weights together (ties get
    their average rank; -inf, a weight excluded from selection, ranks lowest)."""
    from scipy import stats

    _same_tensors(a, b)
    x = torch.cat([a[n].detach().flatten().double().cpu() for n in a]).numpy()
    y = torch.cat([b[n].detach().flatten().double().cpu() for n in a]).numpy()
    for name, v in (("first", x), ("second", y)):
        if np.isnan(v).any():
            raise ValueError(f"the {name} scores contain NaN")
    finite = np.nan_to_num  # -inf -> the lowest finite value, so it ranks last
    return float(stats.spearmanr(finite(x), finite(y)).statistic)


# ---------------------------------------------------------------------------------------
# Effective sparsity.

class PathCounter:
    """A float64 copy of a model with BatchNorm replaced by the identity, built once and
    re-weighted for each mask: weights 1 where kept, 0 where pruned, biases 0. Its output
    counts input-output paths. One copy serves every mask of a table (a deep copy of a
    ResNet costs more than its path count)."""

    def __init__(self, model: nn.Module):
        self.net = copy.deepcopy(model).double().eval()
        for name, module in list(self.net.named_modules()):
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                parent, _, attr = name.rpartition(".")
                setattr(self.net.get_submodule(parent), attr, nn.Identity())
        self.params = dict(self.net.named_parameters())
        self.prunable = set(models.prunable(self.net))
        self.channels = models.io_sizes(self.net)[0] or 3

    def _weigh(self, mask: Mask) -> None:
        unknown = sorted(set(mask) - set(self.params))
        if unknown:
            raise ValueError(f"mask names {unknown}, which are not parameters of the model")
        with torch.no_grad():
            for name, p in self.params.items():
                if name in mask:
                    p.copy_(mask[name].to(torch.float64))
                elif name in self.prunable:  # a layer left dense (e.g. first_layer=False)
                    p.fill_(1.0)
                else:
                    p.zero_()
                p.requires_grad_(name in mask)
                p.grad = None

    def effective_mask(self, mask: Mask, image_size: int = 32) -> Mask:
        """The kept weights that lie on at least one path from the input to the output.

        Every activation is a non-negative path count, ReLU passes it unchanged and
        nothing cancels, so the gradient of the summed output by a kept weight is (paths
        into its input) x (paths out of its output): it is positive exactly when the
        weight is on some input-output path."""
        self._weigh(mask)
        ones = torch.ones(1, self.channels, image_size, image_size, dtype=torch.float64)
        out = self.net(ones).sum()
        if not torch.isfinite(out):
            raise ValueError("path counts overflow float64 for this network; effective "
                             "sparsity needs a shallower network or a rescaled count")
        out.backward()
        return {n: mask[n] & (self.params[n].grad > 0) for n in mask}

    def effective_sparsity(self, mask: Mask, image_size: int = 32) -> dict:
        """Nominal and effective sparsity of ``mask``, the kept weights that no path uses,
        and the layers left with no effective weight (a collapsed network)."""
        eff = self.effective_mask(mask, image_size)
        total = sum(m.numel() for m in mask.values())
        kept = sum(int(m.sum()) for m in mask.values())
        used = sum(int(m.sum()) for m in eff.values())
        return {"sparsity": 1 - kept / total, "effective sparsity": 1 - used / total,
                "unused kept": kept - used, "dead layers": masks.empty_layers(eff),
                "layer effective density": {n: m.float().mean().item() for n, m in eff.items()}}


def effective_mask(model: nn.Module, mask: Mask, image_size: int = 32) -> Mask:
    """``PathCounter.effective_mask`` of one mask on ``model``."""
    return PathCounter(model).effective_mask(mask, image_size)


def effective_sparsity(model: nn.Module, mask: Mask, image_size: int = 32) -> dict:
    """``PathCounter.effective_sparsity`` of one mask on ``model``."""
    return PathCounter(model).effective_sparsity(mask, image_size)


# ---------------------------------------------------------------------------------------
# Within against between.

def material_masks(model: nn.Module, criterion: str, material: Material, dataset: str,
                   data: data_mod.ImageSet, draws: Sequence[int], sparsities: Sequence[float],
                   options=None, seed: int = 0) -> dict[int, dict[float, Mask]]:
    """``criterion``'s masks of ``model`` at each sparsity, for each draw of ``material``
    (``draws``: the seeds its examples are drawn with) from ``data``, the training images
    of registered dataset ``dataset`` (whose default discovery concept materials use); one
    score per draw for a one-shot criterion (``prune.masks_at_init``). The criterion's own
    randomness (``seed``: GraSP's re-drawn linear layer, ties) is the same for every draw,
    so the masks differ only by the examples they were fed."""
    if not isinstance(material, Material):
        raise ValueError(f"material must be a materials.Material, got {type(material).__name__}")
    material = material.for_dataset(dataset)
    # a mask that empties a layer is measured here, not refused (``effective_table``)
    options = dataclasses.replace(options or CRITERIA.get(criterion).options_class(),
                                  on_collapse="allow")
    out, seen = {}, []  # (batches, masks) already scored
    for d in draws:
        batches = material.make(data, d)
        same = next((m for b, m in seen if _same_batches(b, batches)), None)
        out[d] = same if same is not None else prune.masks_at_init(
            model, criterion, batches, sparsities, seed, options)
        if same is None:
            seen.append((batches, out[d]))
    return out


def _same_batches(a, b) -> bool:
    """Whether two materials' batches are identical (a material with nothing to draw, such
    as constant inputs, gives the same batches at every draw, and so the same masks)."""
    return len(a) == len(b) and all(torch.equal(xa, xb) and torch.equal(ya, yb)
                                    for (xa, ya), (xb, yb) in zip(a, b, strict=True))


def overlap_matrix(mask_list: Sequence[Mask]) -> np.ndarray:
    """``M[i, j]``: the fraction of mask i's kept weights that mask j keeps."""
    if not mask_list:
        raise ValueError("no masks given")
    for m in mask_list[1:]:
        _same_tensors(mask_list[0], m)
    names = list(mask_list[0])
    flat = torch.stack([torch.cat([m[n].flatten().cpu() for n in names]) for m in mask_list])
    x = flat.to(torch.float64)
    both = (x @ x.T).numpy()
    kept = flat.sum(1).numpy().astype(np.float64)
    if (kept == 0).any():
        raise ValueError(f"masks {np.flatnonzero(kept == 0).tolist()} keep no weight")
    return both / kept[:, None]


def within_between(first: Sequence[Mask], second: Sequence[Mask], permutations: int = 2000,
                   seed: int = 0) -> dict:
    """Do masks from two materials differ more than masks from one material do?

    ``first`` and ``second`` are independent draws of each material (same network, same
    criterion and sparsity). Returns the mean overlap within each material, between the
    two, the difference (within, pooled, minus between) and its one-sided permutation
    p-value: the draws' material labels are shuffled, which under the hypothesis that
    the material does not matter changes nothing. Where the draws allow no more than
    ``permutations`` distinct relabellings, each is taken once (an exact test); else
    ``permutations`` random ones."""
    n_a, n_b = len(first), len(second)
    if n_a < 2 or n_b < 2:
        raise ValueError(f"need at least 2 draws of each material, got {n_a} and {n_b}")
    m = overlap_matrix([*first, *second])
    m = (m + m.T) / 2  # equal counts make it symmetric already; this averages rounding

    def statistic(labels: np.ndarray) -> tuple[float, float, float]:
        same = labels[:, None] == labels[None, :]
        off = ~np.eye(len(labels), dtype=bool)
        within = m[same & off].mean()
        between = m[~same].mean()
        return within - between, within, between

    labels = np.array([0] * n_a + [1] * n_b)
    observed, within, between = statistic(labels)
    relabellings = math.comb(n_a + n_b, n_a)
    if relabellings <= permutations:  # few enough to take each once: the exact p-value
        draws = np.arange(n_a + n_b)
        p = sum(statistic(np.isin(draws, first_ones, invert=True).astype(int))[0] >= observed
                for first_ones in itertools.combinations(draws, n_a)) / relabellings
    else:
        rng = np.random.default_rng(seed)
        more = sum(statistic(rng.permutation(labels))[0] >= observed
                   for _ in range(permutations))
        p = (1 + more) / (1 + permutations)
    idx_a, idx_b = np.arange(n_a), np.arange(n_a, n_a + n_b)
    within_a = m[np.ix_(idx_a, idx_a)][~np.eye(n_a, dtype=bool)].mean()
    within_b = m[np.ix_(idx_b, idx_b)][~np.eye(n_b, dtype=bool)].mean()
    return {"within first": float(within_a), "within second": float(within_b),
            "within": float(within), "between": float(between),
            "difference": float(observed), "p": p,
            "draws": (n_a, n_b)}


# ---------------------------------------------------------------------------------------
# The tables of the mask-anatomy chapter: masks of one criterion, keyed by material label,
# draw and sparsity (``arm_masks``).

Draws = dict[str, dict[int, dict[float, Mask]]]


DRAW_STRIDE = 10_000  # arm i draws its examples with seeds i * DRAW_STRIDE + d


def arm_masks(model: nn.Module, arms: Sequence, dataset: str, data: data_mod.ImageSet,
              draws: int | Mapping[str, int], sparsities: Sequence[float], seed: int = 0
              ) -> Draws:
    """``material_masks`` of each arm (``experiments.Arm``: a criterion, a material and
    options, under a label), keyed by the arm's label, for ``draws`` draws each (or
    ``draws[label]``). Each arm draws with its own seeds, so no two arms share images (the
    controls start from image batches: with shared seeds, draw d of two arms would hold the
    same images, and the permutation test's exchangeability would fail)."""
    counts = {a.label: draws[a.label] if isinstance(draws, Mapping) else draws for a in arms}
    _check_arms(arms, max(counts.values(), default=0))
    return {arm.label: material_masks(model, arm.method, arm.material, dataset, data,
                                      _draw_seeds(i, counts[arm.label]), sparsities,
                                      arm.options, seed)
            for i, arm in enumerate(arms)}


def _check_arms(arms: Sequence, draws: int) -> None:
    labels = [arm.label for arm in arms]
    if len(set(labels)) != len(labels):
        raise ValueError(f"arms must have distinct labels, got {labels}")
    if draws >= DRAW_STRIDE:
        raise ValueError(f"draws must be below {DRAW_STRIDE}, got {draws}")


def _draw_seeds(arm_index: int, draws: int) -> list[int]:
    return [arm_index * DRAW_STRIDE + d for d in range(draws)]


def score_table(model: nn.Module, arms: Sequence, dataset: str, data: data_mod.ImageSet,
                draws: int, reference: str, seed: int = 0) -> pd.DataFrame:
    """Rank correlation (Spearman) of the scores themselves, which a mask only cuts: per
    arm (one-shot criteria), the mean over pairs of two of its draws (*within*) and over
    pairs of one of its draws and one of ``reference``'s (*between*). Draws as in
    ``arm_masks`` (the same examples). A between close to the reference's within says the
    material reorders the weights no more than a new batch of images does."""
    from scipy import stats

    check_integer("draws", draws, 2)
    _check_arms(arms, draws)
    labels = [arm.label for arm in arms]
    if reference not in labels:
        raise ValueError(f"reference {reference!r} is not an arm; the arms are {labels}")
    ranks = {}
    for i, arm in enumerate(arms):
        material = arm.material.for_dataset(dataset)
        ranks[arm.label] = []
        for d in _draw_seeds(i, draws):
            scores = prune.scores_at_init(model, arm.method, material.make(data, d), seed,
                                          arm.options)
            flat = torch.cat([s.detach().flatten().double().cpu() for s in scores.values()])
            ranks[arm.label].append(stats.rankdata(np.nan_to_num(flat.numpy())))

    def mean_corr(a, b, same):
        pairs = [(i, j) for i in range(len(a)) for j in range(len(b)) if not same or i < j]
        return float(np.mean([np.corrcoef(a[i], b[j])[0, 1] for i, j in pairs]))

    within_ref = mean_corr(ranks[reference], ranks[reference], True)
    return pd.DataFrame([{"material": label, "within": mean_corr(r, r, True),
                          "within reference": within_ref,
                          "between": mean_corr(r, ranks[reference], False), "draws": draws}
                         for label, r in ranks.items() if label != reference])


def yardstick(found: Draws, reference: str, fixed: Mapping[float, Mask]) -> pd.DataFrame:
    """How far one fixed mask per sparsity (a data-free criterion's, such as SynFlow's)
    lies from ``reference``'s masks, as ``within_between_table`` measures a material: the
    mean overlap with the reference's draws and its ``distance_ratio``. A scale for the
    materials' ratios: how far a criterion that reads no data at all moves the mask."""
    rows = []
    for s, mask in fixed.items():
        ref = [m[s] for m in found[reference].values()]
        within = overlap_matrix(ref)[~np.eye(len(ref), dtype=bool)].mean()
        between = float(np.mean([overlap_matrix([mask, r])[0, 1] for r in ref]))
        rows.append({"sparsity %": round(100 * s, 2), "within reference": within,
                     "between": between, "distance ratio": distance_ratio(between, within)})
    return pd.DataFrame(rows)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of ``pvalues`` for testing them together."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (len(p) - rank) * p[i])
        adjusted[i] = min(1.0, running)
    return adjusted.tolist()


def distance_ratio(between: float, within_reference: float) -> float:
    """How far a material's masks are from the reference's, in units of how far two draws
    of the reference are from each other: (1 - between) / (1 - within reference). 1: no
    farther than redrawing the reference; 2: twice as far. Infinite when the reference
    never varies."""
    noise = 1 - within_reference
    return (1 - between) / noise if noise > 0 else math.inf


def within_between_table(found: Draws, reference: str, permutations: int = 1000,
                         seed: int = 0) -> pd.DataFrame:
    """For every material but ``reference`` and every sparsity: mean overlap of two draws
    of the material, of two draws of the reference, and of one draw of each; the
    difference (within minus between), its size as a ``distance_ratio`` and its
    permutation p-value (see ``tests`` for the adjustment over many cells)."""
    if reference not in found:
        raise ValueError(f"no masks of the reference {reference!r}; there are {list(found)}")
    rows = []
    for label, by_draw in found.items():
        if label == reference:
            continue
        for s in next(iter(by_draw.values())):
            r = within_between([m[s] for m in by_draw.values()],
                               [m[s] for m in found[reference].values()], permutations, seed)
            rows.append({"material": label, "sparsity %": round(100 * s, 2),
                         "within": r["within first"], "within reference": r["within second"],
                         "between": r["between"], "difference": r["difference"],
                         "distance ratio": distance_ratio(r["between"], r["within second"]),
                         "p": r["p"], "draws": r["draws"][0]})
    return pd.DataFrame(rows)


def tests(found: dict[str, Draws], reference: str, permutations: int, seed: int = 0
          ) -> pd.DataFrame:
    """``within_between_table`` of every criterion, stacked, with the p-values
    Holm-adjusted over all its rows together (one family of tests; ``min_permutations``
    says how many shufflings such a family needs)."""
    out = by_criterion(found, within_between_table, reference, permutations, seed)
    out["p (Holm)"] = holm(out["p"]) if len(out) else []
    return out


def min_permutations(cells: int, alpha: float = 0.05) -> int:
    """Permutations under which the smallest attainable p, 1 / (n + 1), passes Holm's
    first step at level ``alpha`` over ``cells`` tests, with a factor 4 to spare. Draws
    too few for that many relabellings get the exact test instead (``within_between``),
    whose smallest p is 2 / C(2d, d) for d draws of each material (a split and its mirror
    tie): 1/3 with 2 draws, so no smoke-sized cell can pass."""
    return math.ceil(4 * cells / alpha)


def layer_table(found: Draws, reference: str, sparsity: float) -> tuple:
    """Per material (rows) and layer (columns), at ``sparsity``: the mean density over
    draws, and the mean per-layer overlap of the material's masks with the reference's
    (over pairs of draws; for the reference itself, pairs of distinct draws)."""
    ref = [m[sparsity] for m in found[reference].values()]
    density, overlap = {}, {}
    for label, by_draw in found.items():
        own = [m[sparsity] for m in by_draw.values()]
        density[label] = pd.DataFrame([masks.density(m) for m in own]).drop(
            columns="total").mean()
        pairs = [layer_overlap(a, b) for i, a in enumerate(own) for j, b in enumerate(ref)
                 if label != reference or i != j]
        overlap[label] = pd.DataFrame(pairs).mean()
    return pd.DataFrame(density).T, pd.DataFrame(overlap).T


def effective_table(found: Draws, model: nn.Module, draws: int = 3,
                    image_size: int = 32) -> pd.DataFrame:
    """Nominal and effective sparsity (``effective_sparsity``), mean over the first
    ``draws`` draws of each material and sparsity, and the most dead layers among them."""
    rows, counter = [], PathCounter(model)
    for label, by_draw in found.items():
        chosen = list(by_draw.values())[:draws]
        for s in chosen[0]:
            got = [counter.effective_sparsity(m[s], image_size) for m in chosen]
            rows.append({"material": label, "sparsity %": round(100 * s, 2),
                         "effective sparsity %": 100 * np.mean(
                             [g["effective sparsity"] for g in got]),
                         "unused kept": np.mean([g["unused kept"] for g in got]),
                         "dead layers": max(len(g["dead layers"]) for g in got),
                         "draws": len(got)})
    return pd.DataFrame(rows)


def scores_by_criterion(model: nn.Module, profile, arms: Sequence, draws: int,
                        reference: str = "images", seed: int = 0) -> pd.DataFrame:
    """``score_table`` of each criterion's ``arms`` (``MaskDraws.arms``, so the draws of
    its masks) on ``profile``'s training images, stacked with a ``criterion`` column first."""
    train, _ = study.profile_data(profile)
    parts = [score_table(model, [a for a in arms if a.method == c], profile.dataset, train,
                         draws, reference, seed).assign(
                             criterion=experiments.CRITERION_NAMES[c])
             for c in dict.fromkeys(a.method for a in arms)]
    out = pd.concat(parts, ignore_index=True)
    return out[["criterion", *[c for c in out.columns if c != "criterion"]]]


def synflow_yardstick(found: dict[str, Draws], model: nn.Module, reference: str = "images",
                      seed: int = 0, options=None) -> pd.DataFrame:
    """SynFlow's mask (data-free; ``options``, None: its defaults) at every sparsity of
    ``found`` as the ``yardstick`` of each criterion's ``reference`` masks, stacked by
    criterion (its ``material`` column says SynFlow)."""
    some_arm = next(iter(next(iter(found.values())).values()))  # {draw: {sparsity: mask}}
    fixed = prune.masks_at_init(model, "synflow", None, list(some_arm[next(iter(some_arm))]),
                                seed, options)
    out = by_criterion(found, yardstick, reference, fixed)
    out.insert(1, "material", "SynFlow")
    return out


def by_criterion(found: dict[str, Draws], table, *args, **kwargs) -> pd.DataFrame:
    """``table(draws, *args, **kwargs)`` (a function of this module returning a DataFrame)
    for every criterion of ``found``, stacked with a ``criterion`` column first."""
    parts = [table(d, *args, **kwargs).assign(criterion=c) for c, d in found.items()]
    out = pd.concat(parts, ignore_index=True)
    return out[["criterion", *[c for c in out.columns if c != "criterion"]]]


def glue_tests(table: pd.DataFrame, labels: Sequence[str] = ("DOP", "stitching σ=0.5"),
               alpha: float = 0.05, prefix: str = "") -> None:
    """Glue, for the prose, each key led by ``prefix``: the cells tested, those where the
    material changes the masks' distribution (Holm-adjusted p < ``alpha``), those of them
    whose masks lie no farther from the reference's than a redraw of it (``cells_moved_near``:
    distance ratio <= 1, so the test found a change in spread, not in place), for each
    criterion and material of ``labels`` how many of its sparsities pass
    (``<criterion>_<material>_moved`` / ``_cells``), and every row's distance ratio
    (``<criterion>_<material>_<sparsity>_ratio``)."""
    moved = table["p (Holm)"] < alpha
    plots.glue_number(plots.slug(prefix, "cells"), len(table))
    plots.glue_number(plots.slug(prefix, "cells_moved"), int(moved.sum()))
    plots.glue_number(plots.slug(prefix, "cells_moved_near"),
                      int((moved & (table["distance ratio"] <= 1)).sum()))
    for crit in dict.fromkeys(table["criterion"]):
        for label in labels:
            rows = (table["criterion"] == crit) & (table["material"] == label)
            plots.glue_number(plots.slug(prefix, crit, label, "moved"), int((moved & rows).sum()))
            plots.glue_number(plots.slug(prefix, crit, label, "cells"), int(rows.sum()))
    plots.glue_rows(table.assign(prefix=prefix),
                    ["prefix", "criterion", "material", "sparsity %"], "distance ratio", "ratio")


# ---------------------------------------------------------------------------------------
# The chapter's record: its tables are experiments (``record.KINDS``), kept in the store
# ``<profile>-anatomy`` (``store_dir``), so that the book reads them back and makes the
# masks only when a table is missing.

SUFFIX = "-anatomy"


def store_dir(profile: str) -> Path:
    """Where the mask-anatomy tables of ``profile`` are kept: ``study.store_dir``'s rules
    for the folder ``<profile>-anatomy`` (committed in ``book/record/cpu-anatomy``)."""
    return study.store_dir(profile, SUFFIX)


@dataclass(frozen=True)
class MaskDraws:
    """Every criterion's masks of one initial network for independent draws of every
    material and control (``experiments.anatomy_arms``), at every sparsity."""

    profile: str = param("smoke", "data, width and materials: a name of config.PROFILES")
    model: str = param("resnet20", "the initial network: a name of models.MODELS")
    draws: int = param(20, "independent draws of every material")
    control_draws: int = param(10, "draws of each control (experiments.CONTROL_LABELS)")
    sparsities: tuple = param((0.6, 0.8, 0.9, 0.95, 0.98), "sparsities of the masks")
    seed: int = param(0, "the initial network and the criteria's own randomness")
    criteria: tuple = param(("snip", "grasp"), "criteria of experiments.anatomy_arms")
    materials: tuple = param((), "only these material labels, images among them (): all")

    def __post_init__(self):
        check_types(self)
        P = config.get_profile(self.profile)
        models.MODELS.get(self.model)
        for name in ("draws", "control_draws"):
            require(getattr(self, name) >= 2 and getattr(self, name) < DRAW_STRIDE, self,
                    name, f"an integer in 2..{DRAW_STRIDE - 1}")
        require(self.sparsities == config.check_sparsities("sparsities", self.sparsities),
                self, "sparsities", "a tuple of distinct floats in (0, 1)")
        require(self.seed >= 0, self, "seed", "an integer >= 0")
        arms = experiments.anatomy_arms(P)
        labels = list(dict.fromkeys(a.label for a in arms))
        require(self.materials == () or ("images" in self.materials and len(set(
            self.materials)) == len(self.materials) and all(m in labels for m in self.materials)),
            self, "materials", f"() or distinct labels of {labels} with 'images' among them")
        known = sorted({a.method for a in arms})
        require(len(self.criteria) > 0 and all(c in known for c in self.criteria), self,
                "criteria", f"a non-empty tuple of {known}")

    def arms(self) -> list:
        """The arms (``experiments.anatomy_arms``) of the chosen criteria and materials."""
        return [a for a in experiments.anatomy_arms(config.get_profile(self.profile))
                if a.method in self.criteria and (not self.materials or a.label in self.materials)]

    def counts(self) -> dict[str, int]:
        """Draws of each material label: the controls' own count, ``draws`` otherwise."""
        return {a.label: self.control_draws if a.label in experiments.CONTROL_LABELS
                else self.draws for a in self.arms()}

    def cells(self) -> int:
        """Rows of the within/between table: every material but images, each sparsity."""
        return len(self.criteria) * (len(self.counts()) - 1) * len(self.sparsities)

    def network(self) -> nn.Module:
        P = config.get_profile(self.profile)
        return models.get_model(self.model, study.profile_data(P)[0].num_classes, P.width,
                                seed=self.seed)

    def found(self) -> dict[str, Draws]:
        """``{criterion name: Draws}``, made once per process (``_found``)."""
        return _found(self)


@functools.lru_cache(maxsize=1)  # the tables of one setting share its masks
def _found(setting: MaskDraws) -> dict[str, Draws]:
    P = config.get_profile(setting.profile)
    train, _ = study.profile_data(P)
    model, counts = setting.network(), setting.counts()
    t0 = time.perf_counter()
    found = {experiments.CRITERION_NAMES[c]: arm_masks(
        model, [a for a in setting.arms() if a.method == c], P.dataset, train, counts,
        setting.sparsities, setting.seed) for c in setting.criteria}
    print(f"{setting.model} masks ({setting.draws} draws of each material, "
          f"{setting.control_draws} of each control) in {time.perf_counter() - t0:.0f} s on "
          f"{config.cpu_model()}, {torch.get_num_threads()} thread(s)")
    return found


def _frame_json(frame: pd.DataFrame) -> dict:
    split = frame.to_dict(orient="split")
    return {"index": split["index"], "columns": split["columns"], "data": split["data"]}


class _Table:
    """A table of ``MaskDraws`` (field ``masks``): ``frames()`` computes it, ``compute``
    (``record.run``) keeps it as JSON, ``read`` gives the DataFrames back."""

    def __post_init__(self):
        check_types(self)
        self.check()

    def check(self) -> None:
        """The table's own checks beyond its fields' types (none by default)."""

    def frames(self) -> dict[str, pd.DataFrame]:
        raise NotImplementedError

    def compute(self, store) -> tuple[dict, None]:
        return {"frames": {k: _frame_json(f) for k, f in self.frames().items()}}, None

    @property
    def profile(self) -> str:
        return self.masks.profile


@KINDS.register("WithinBetween")
@dataclass(frozen=True)
class WithinBetween(_Table):
    """``tests``: every criterion's within/between table against images, Holm-adjusted."""

    masks: MaskDraws = param(MaskDraws(), "the masks")
    permutations: int = param(20000, "label shufflings of each test")

    def check(self) -> None:
        least = min_permutations(self.masks.cells())
        require(self.permutations >= least, self, "permutations",
                f"an integer >= {least} (anatomy.min_permutations of "
                f"{self.masks.cells()} cells)")

    def frames(self):
        return {"tests": tests(self.masks.found(), "images", self.permutations,
                               self.masks.seed)}


@KINDS.register("ScoreCorrelations")
@dataclass(frozen=True)
class ScoreCorrelations(_Table):
    """``scores_by_criterion``: Spearman of the scores within and between materials."""

    masks: MaskDraws = param(MaskDraws(), "the network, materials and criteria")
    draws: int = param(4, "draws of every material whose scores are rank-correlated")

    def check(self) -> None:
        require(2 <= self.draws <= self.masks.draws, self, "draws",
                f"an integer in 2..{self.masks.draws} (the masks' draws)")

    def frames(self):
        m = self.masks
        return {"spearman": scores_by_criterion(m.network(), config.get_profile(m.profile),
                                                m.arms(), self.draws, seed=m.seed)}


@KINDS.register("SynflowYardstick")
@dataclass(frozen=True)
class SynflowYardstick(_Table):
    """``synflow_yardstick``: SynFlow's mask against each criterion's image masks, in the
    profile's rounds (``methods.profile_options``: the smoke profile caps them)."""

    masks: MaskDraws = param(MaskDraws(), "the masks")

    def frames(self):
        options = methods.profile_options(config.get_profile(self.profile), "synflow")
        return {"synflow": synflow_yardstick(self.masks.found(), self.masks.network(),
                                             seed=self.masks.seed, options=options)}


@KINDS.register("LayerMaps")
@dataclass(frozen=True)
class LayerMaps(_Table):
    """``layer_table`` of every criterion at one sparsity: ``<criterion> density`` and
    ``<criterion> overlap``, materials by layers."""

    masks: MaskDraws = param(MaskDraws(), "the masks")
    sparsity: float = param(0.95, "the sparsity of the maps, one of the masks'")

    def check(self) -> None:
        require(self.sparsity in self.masks.sparsities, self, "sparsity",
                f"one of the masks' sparsities {self.masks.sparsities}")

    def frames(self):
        out = {}
        for crit, draws_of in self.masks.found().items():
            density, overlap = layer_table(draws_of, "images", self.sparsity)
            out[f"{crit} density"], out[f"{crit} overlap"] = density, overlap
        return out


@KINDS.register("EffectiveSparsity")
@dataclass(frozen=True)
class EffectiveSparsity(_Table):
    """``effective_table`` of every criterion, over the first ``draws`` draws."""

    masks: MaskDraws = param(MaskDraws(), "the masks")
    draws: int = param(2, "draws whose effective sparsity is computed")

    def check(self) -> None:
        require(1 <= self.draws <= min(self.masks.counts().values()), self, "draws",
                f"an integer in 1..{min(self.masks.counts().values())} (the fewest draws)")

    def frames(self):
        return {"effective": by_criterion(self.masks.found(), effective_table,
                                          self.masks.network(), self.draws)}


def read(table: _Table) -> dict[str, pd.DataFrame] | pd.DataFrame:
    """The DataFrames of ``table`` from its profile's store, computed first if missing (a
    single frame by itself)."""
    stored = record.run(table, store_dir(table.profile))["frames"]
    frames = {k: pd.DataFrame(f["data"], index=f["index"], columns=f["columns"])
              for k, f in stored.items()}
    return next(iter(frames.values())) if len(frames) == 1 else frames


def cost(tables: Sequence[_Table]) -> tuple[float, str]:
    """CPU-minutes the kept ``tables`` took (masks included, counted where first made)
    and the CPUs that computed them (``record.cost``)."""
    return record.cost([r for r in record.finished(tables, store_dir(tables[0].profile)) if r])


# The materials the chapter's prose quotes by name: the smoke profile draws only these,
# and rank-correlates the scores of only the second set.
PROSE_MATERIALS = ("images", "DOP", "stitching σ=0.5", "all-ones (BN eval)",
                   "all-ones (BN train)", "random labels")
PROSE_SCORES = ("images", "DOP")


def chapter(profile: str, model_name: str, draws: int | None, sparsities, seed: int,
            control_draws: int | None = None, materials: Sequence[str] | None = None,
            criteria: Sequence[str] = ("snip", "grasp"), glue_prefix: str = "",
            full_draws: tuple[int, int] = (20, 10)) -> MaskDraws:
    """The masks of the mask-anatomy chapter from its parameters, checked before any
    compute: None draws are the profile's (``full_draws``: draws of each material and of
    each control; 2 on the smoke profile), None sparsities 60 to 98 % (smoke: 90 and 95 %),
    None materials all of them (smoke: ``PROSE_MATERIALS``). Glues the draws under
    ``glue_prefix``."""
    P = config.get_profile(profile)
    small = P.name == "smoke"
    if materials is None and small:
        materials = PROSE_MATERIALS
    draws = (2 if small else full_draws[0]) if draws is None else draws
    control_draws = (2 if small else full_draws[1]) if control_draws is None else control_draws
    if sparsities is None:
        sparsities = [0.9, 0.95] if small else [0.6, 0.8, 0.9, 0.95, 0.98]
    for name, value in (("materials", materials), ("criteria", criteria)):
        config.check_parameter(value is None or isinstance(value, list | tuple), name, value,
                               "a list of labels" + (" or None" if name == "materials" else ""))
    setting = build(MaskDraws, profile=P.name, model=model_name, draws=draws,
                    control_draws=control_draws, seed=seed, criteria=tuple(criteria),
                    sparsities=config.check_sparsities("sparsities", sparsities),
                    materials=tuple(materials or ()))
    plots.glue_number(plots.slug(glue_prefix, "draws"), draws)
    plots.glue_number(plots.slug(glue_prefix, "control_draws"), control_draws)
    return setting


def chapter_tables(first: MaskDraws, second: MaskDraws, permutations: int,
                   score_draws: int | None, layer_sparsity: float, effective_draws: int,
                   score_materials: Sequence[str] | None = None) -> dict[str, _Table]:
    """Every table of the mask-anatomy chapter, built (so checked) before any compute:
    ``first``'s tests, score correlations (``score_draws``; None: 4, at most its draws;
    ``score_materials``: None, all of ``first``'s, smoke: those of ``PROSE_SCORES``), SynFlow
    yardstick, layer maps and effective sparsity, and ``second``'s tests."""
    if score_draws is None:
        score_draws = min(4, first.draws)
    drawn = list(dict.fromkeys(a.label for a in first.arms()))
    quoted = [m for m in drawn if m in PROSE_SCORES]
    if score_materials is None and first.profile == "smoke" and len(quoted) > 1:
        score_materials = quoted  # else all: a table needs one material beside images
    config.check_parameter(score_materials is None or (
        isinstance(score_materials, list | tuple) and "images" in score_materials
        and set(score_materials) <= set(drawn)), "score_materials", score_materials,
        f"None or a list of the drawn materials {drawn}, images among them")
    chosen = drawn if score_materials is None else [m for m in drawn if m in score_materials]
    scored = first if chosen == drawn else dataclasses.replace(first, materials=tuple(chosen))
    return {"tests": WithinBetween(first, permutations),
            "spearman": ScoreCorrelations(scored, score_draws),
            "synflow": SynflowYardstick(first),
            "layers": LayerMaps(first, layer_sparsity),
            "effective": EffectiveSparsity(first, effective_draws),
            "second": WithinBetween(second, permutations)}

"""From scores to masks: exact top-k selection, schedules, layer collapse, ``prune_at_init``.

Selection keeps exactly ``round(density * N)`` weights, never a value threshold (a
``<= threshold`` rule over-prunes when scores tie, Synaptic-Flow issue #12). Ties are broken
at the cut by a draw from the seed, so the same seed gives the same mask and tied weights are
not favoured by their position. The *scope* decides how many weights each layer keeps:

* ``global``: one ranking over all layers; the scores decide the layer densities.
* ``layerwise``: every layer keeps the same fraction (SynFlow's "local" scope).
* ``er`` / ``erk``: Erdos-Renyi layer densities, proportional to (c_out + c_in) / (c_out c_in),
  or to the sum over the product of all kernel dimensions (ERK, Evci et al. 2020), with
  layers that would exceed density 1 kept dense (VITA-Group/Random_Pruning).

In every scope but ``global`` the per-layer counts are apportioned by largest remainder, so
the total is still exactly ``round(density * N)``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from opai_lib import criteria, data, masks, models, sanity
from opai_lib.config import check_integer, options_of
from opai_lib.criteria import ON_COLLAPSE, SCHEDULES, SCOPES  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    import pandas as pd

# ---------------------------------------------------------------------------------------
# How many weights each layer keeps.


def _apportion(targets: list[float], caps: list[int], total: int) -> list[int]:
    """Integers close to ``targets`` (each at most its cap) summing to ``total``."""
    counts = [min(cap, max(0, math.floor(t))) for t, cap in zip(targets, caps, strict=True)]
    order = sorted(range(len(targets)), key=lambda i: (-(targets[i] - math.floor(targets[i])), i))
    while sum(counts) < total:
        for i in order:
            if sum(counts) == total:
                break
            if counts[i] < caps[i]:
                counts[i] += 1
    return counts


def erk_densities(shapes: Mapping[str, torch.Size], density: float, kind: str = "erk"
                  ) -> dict[str, float]:
    """Per-layer densities of the Erdos-Renyi family averaging to ``density``.

    A layer's density is eps * raw with raw = (c_out + c_in) / (c_out * c_in) for ``er``
    and sum(shape) / prod(shape) for ``erk``; eps is solved so that the kept weights add up
    to density * N. A layer whose eps * raw would exceed 1 is made dense (the largest raw
    first) and eps is solved again over the others.
    """
    if kind not in ("er", "erk"):
        raise ValueError(f"kind must be 'er' or 'erk', got {kind!r}")
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    raw = {n: (sum(s) / math.prod(s)) if kind == "erk" else (s[0] + s[1]) / (s[0] * s[1])
           for n, s in shapes.items()}
    dense: set[str] = set()
    budget = density * sum(sizes.values())
    while True:
        rest = [n for n in shapes if n not in dense]
        weight = sum(raw[n] * sizes[n] for n in rest)
        eps = (budget - sum(sizes[n] for n in dense)) / weight if weight else 0.0
        over = [n for n in rest if eps * raw[n] > 1]
        if not over:
            break
        dense.add(max(over, key=lambda n: raw[n]))
    return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}


def layer_budgets(shapes: Mapping[str, torch.Size], density: float, scope: str
                  ) -> dict[str, int] | None:
    """Weights kept per layer under ``scope`` (None for ``global``: the scores decide)."""
    _check_scope(scope)
    if scope == "global":
        return None
    sizes = [math.prod(s) for s in shapes.values()]
    if scope == "layerwise":
        per_layer = dict.fromkeys(shapes, density)
    else:
        per_layer = erk_densities(shapes, density, scope)
    targets = [per_layer[n] * size for n, size in zip(shapes, sizes, strict=True)]
    counts = _apportion(targets, sizes, round(density * sum(sizes)))
    return dict(zip(shapes, counts, strict=True))


# ---------------------------------------------------------------------------------------
# Selection.


def _check_scope(scope) -> None:
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")


def _check_fraction(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a float in [0, 1), got {value!r}")


def _keep(values: np.ndarray, k: int, alive: np.ndarray, generator: torch.Generator
          ) -> torch.Tensor:
    """Flat boolean mask of the ``k`` highest of ``values`` (flat float32 or float64) among
    the ``alive`` ones; the others, and -inf scores, count as -inf: kept only when ``k``
    reaches past the finite alive scores. Ties at the cut are drawn from ``generator``."""
    if k == 0:
        return torch.zeros(values.size, dtype=torch.bool)
    # The k-th largest by numpy's introselect (0.6 ms against torch.kthvalue's 3.3 ms on
    # ResNet-20's 272k scores), over the finite alive scores only: introselect slows 7 to 13
    # times on many equal values (an iterative criterion's pruned weights). Boolean masks
    # scattered over a layer make branchy kernels slow (1.1-1.7 ms for masked_fill, boolean
    # indexing or torch.nonzero on 272k scores, one thread of a Xeon), so np.compress and
    # np.flatnonzero (0.37 and 0.05 ms) do the work, and pruned weights never become -inf.
    live = alive & (values != -np.inf)
    finite = np.compress(live, values)
    cut = np.partition(finite, finite.size - k)[finite.size - k] if k <= finite.size \
        else -np.inf
    keep = (values > cut) & alive
    tied = np.flatnonzero(~live if cut == -np.inf else (values == cut) & alive)
    draw = torch.randperm(len(tied), generator=generator)[: k - int(keep.sum())]
    keep[tied[draw.numpy()]] = True
    return torch.from_numpy(keep)


def select(scores: Mapping[str, torch.Tensor], sparsity: float, scope: str = "global",
           seed: int = 0, within: Mapping[str, torch.Tensor] | None = None) -> masks.Mask:
    """Keep exactly ``round((1 - sparsity) * N)`` weights of highest score.

    ``scores`` may hold -inf (never kept unless a budget forces it) but not NaN. The
    weights a mask ``within`` prunes (a layer it does not name is all alive) are treated as
    scoring -inf: an iterative criterion's earlier rounds, or a mask already attached.
    """
    _check_fraction("sparsity", sparsity)
    _check_scope(scope)
    dtype = functools.reduce(torch.promote_types, [s.dtype for s in scores.values()])
    flat = torch.cat([s.detach().flatten().cpu().to(dtype) for s in scores.values()])
    if torch.isnan(flat.sum()) and torch.isnan(flat).any():  # a sum is 30x cheaper
        bad = next(n for n, s in scores.items() if torch.isnan(s).any())
        raise ValueError(f"scores of {bad} contain NaN")
    values = (flat if dtype in (torch.float32, torch.float64) else flat.double()).numpy()
    within = within or {}
    alive = np.concatenate([within[n].detach().flatten().cpu().numpy() if n in within
                            else np.ones(s.numel(), dtype=bool) for n, s in scores.items()])
    g = torch.Generator().manual_seed(seed)
    density = 1 - sparsity
    sizes = [s.numel() for s in scores.values()]
    budgets = layer_budgets({n: s.shape for n, s in scores.items()}, density, scope)
    if budgets is None:
        keep = _keep(values, round(density * flat.numel()), alive, g).split(sizes)
    else:
        bounds = np.cumsum([0, *sizes])
        keep = [_keep(values[a:b], budgets[n], alive[a:b], g)
                for n, a, b in zip(scores, bounds[:-1], bounds[1:], strict=True)]
    return {n: k.view(s.shape).to(s.device)
            for (n, s), k in zip(scores.items(), keep, strict=True)}


def schedule_densities(density: float, rounds: int, schedule: str = "exponential"
                       ) -> list[float]:
    """Density after each of ``rounds`` rounds; the last is exactly ``density``.

    ``exponential``: density ** (t / T) (SynFlow, FORCE's kappa^(t/T)); ``linear``:
    1 - (1 - density) t / T.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    check_integer("rounds", rounds, 1)
    steps = [t / rounds for t in range(1, rounds)]
    if schedule == "exponential":
        return [density ** f for f in steps] + [density]
    return [1 - (1 - density) * f for f in steps] + [density]


def repair_collapse(mask: Mapping[str, torch.Tensor], scores: Mapping[str, torch.Tensor]
                    ) -> masks.Mask:
    """Give every empty layer its best-scored weight, taken from the lowest-scored kept
    weight of a layer that keeps at least two, so the total count is unchanged."""
    mask = {n: m.clone() for n, m in mask.items()}
    for dead in masks.empty_layers(mask):
        donors = [n for n, m in mask.items() if int(m.sum()) >= 2]
        if not donors:
            raise ValueError("cannot repair a layer collapse: no layer keeps two weights")
        worst = min(donors, key=lambda n: scores[n][mask[n]].min().item())
        flat = mask[worst].view(-1)
        kept = torch.nonzero(flat).flatten()
        flat[kept[scores[worst].flatten()[kept].argmin()]] = False
        mask[dead].view(-1)[scores[dead].flatten().argmax()] = True
    return mask


def density_report(mask: Mapping[str, torch.Tensor]) -> pd.DataFrame:
    """One row per masked tensor (shape, weights, kept, density) and a ``total`` row."""
    import pandas as pd  # imported here: a training worker needs no tables

    rows = [{"layer": n, "shape": tuple(m.shape), "weights": m.numel(), "kept": int(m.sum())}
            for n, m in mask.items()]
    rows.append({"layer": "total", "shape": (), "weights": sum(r["weights"] for r in rows),
                 "kept": sum(r["kept"] for r in rows)})
    table = pd.DataFrame(rows).set_index("layer")
    table["density"] = table["kept"] / table["weights"]
    return table


# ---------------------------------------------------------------------------------------
# Material: what a data-dependent criterion is fed.


def scoring_batches(images: data.ImageSet, per_class: int = 10, num_batches: int = 1,
                    seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``num_batches`` class-balanced batches of ``per_class`` images of every class.

    Images are distinct across batches, normalised with the set's statistics, not augmented.
    Reference defaults on CIFAR-10: GraSP 10 per class in 1 batch (CIFAR-100: 5 per class x 2
    for ResNet-32); SNIP one random batch of 100 (not balanced); Synaptic-Flow a random
    subset of 10 x classes images (not balanced); FORCE 1 batch (10 on CIFAR-100).
    """
    check_integer("per_class", per_class, 1)
    check_integer("num_batches", num_batches, 1)
    idx = data.balanced_indices(images.labels, per_class * num_batches, seed,
                                num_classes=images.num_classes)
    idx = idx.view(images.num_classes, num_batches, per_class)
    out = []
    for b in range(num_batches):
        part = images.subset(idx[:, b].flatten())
        out.append(next(iter(data.batches(part, len(part), train=False))))
    return out


def _as_batches(material, model: nn.Module | None = None
                ) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """A list of (x, y) batches from one batch, an iterable of batches, or None; with
    ``model``, each batch's channels and labels are checked against it (``models.io_sizes``)."""
    if material is None:
        return None
    if isinstance(material, (tuple, list)) and len(material) == 2 and \
            all(isinstance(t, torch.Tensor) for t in material):
        material = [material]
    if not isinstance(material, Iterable):
        raise ValueError("material must be a batch (x, y), an iterable of batches, or None; "
                         f"got {type(material).__name__}")
    batches = list(material)
    if not batches:
        raise ValueError("material holds no batch")
    for i, b in enumerate(batches):
        ok = isinstance(b, (tuple, list)) and len(b) == 2 and \
            all(isinstance(t, torch.Tensor) for t in b)
        if not ok or not b[0].is_floating_point() or b[0].ndim < 2 or b[1].ndim != 1 \
                or len(b[0]) != len(b[1]) or len(b[1]) == 0 or b[1].is_floating_point():
            raise ValueError(f"material batch {i} must be (x float (B, ...), y integer (B,)) "
                             f"with B >= 1, got {type(b).__name__}")
    channels, outputs = models.io_sizes(model) if model is not None else (None, None)
    for i, (x, y) in enumerate(batches):
        if channels is not None and x.shape[1] != channels:
            raise ValueError(f"material batch {i}: x of shape {tuple(x.shape)} has {x.shape[1]} "
                             f"channels; allowed: {channels} (the model's first convolution)")
        if outputs is not None and not 0 <= int(y.min()) <= int(y.max()) < outputs:
            bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
            raise ValueError(f"material batch {i}: label {bad}; allowed: 0..{outputs - 1} "
                             f"(the model's {outputs} outputs)")
    return batches


# ---------------------------------------------------------------------------------------
# The one entry point.


def prune_at_init(model: nn.Module, criterion: str, material, sparsity: float, seed: int = 0,
                  options: criteria.PruneOptions | None = None, invert: bool = False,
                  **kwargs) -> masks.Mask:
    """The mask that ``criterion`` fed ``material`` chooses at ``sparsity``; the model is
    left untouched (apply the mask with ``masks.apply_mask``).

    ``material``: a batch (x, y), an iterable of batches, or None for a data-free criterion.
    ``options``: the criterion's options (``criteria.CRITERIA.get(criterion).options_class``),
    or given as keywords (``scope="erk"``, ``rounds=5``, ``bn_mode="eval"``; defaults are the
    criterion's). With several ``rounds`` the density follows ``schedule`` and the criterion
    re-scores the masked net each round. ``on_collapse``: a layer left with no weight raises
    ("error"), gets its best-scored weight back ("repair", see ``repair_collapse``), or stays
    empty ("allow"). ``first_layer``/``last_layer`` False keep that layer dense (not in the
    mask). ``seed`` drives every random draw (random scores, GraSP's re-initialisation, ties);
    the global RNG is not used. ``invert``: keep the lowest-scored weights instead (the
    sanity check of ``sanity``; one-shot criteria only).
    """
    return masks_at_init(model, criterion, material, [sparsity], seed, options, invert,
                         **kwargs)[sparsity]


def _prepared(model: nn.Module, criterion: str, material, seed, options, invert, kwargs):
    """The checked arguments of a pruning call: the criterion, its options, the batches
    (None for a data-free criterion) and the names of the weights it scores."""
    crit = criteria.CRITERIA.get(criterion)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    options = options_of(crit.options_class, options, kwargs, repr(criterion))
    if not isinstance(invert, bool) or (invert and options.rounds > 1):
        raise ValueError(f"invert must be True or False, and False when the criterion prunes "
                         f"in several rounds; got invert={invert!r}, rounds={options.rounds}")
    batches = _as_batches(material, model)
    if crit.needs_data and batches is None:
        free = [n for n in criteria.CRITERIA.names() if not criteria.CRITERIA.get(n).needs_data]
        raise ValueError(f"criterion {criterion!r} needs material (a batch or batches); "
                         f"the data-free criteria are {free}")
    return crit, options, batches, list(models.prunable(model, options.first_layer,
                                                        options.last_layer))


def scores_at_init(model: nn.Module, criterion: str, material, seed: int = 0,
                   options: criteria.PruneOptions | None = None, **kwargs
                   ) -> dict[str, torch.Tensor]:
    """The scores a one-shot ``criterion`` fed ``material`` gives every prunable weight
    (same arguments as ``prune_at_init``): what its masks are selected from."""
    crit, options, batches, names = _prepared(model, criterion, material, seed, options,
                                              False, kwargs)
    if options.rounds > 1:
        raise ValueError(f"scores_at_init: {criterion!r} with rounds={options.rounds} "
                         "re-scores between rounds; allowed: rounds=1")
    return crit.score(model, batches, names, None, torch.Generator().manual_seed(seed),
                      **options.scoring())


def masks_at_init(model: nn.Module, criterion: str, material, sparsities, seed: int = 0,
                  options: criteria.PruneOptions | None = None, invert: bool = False,
                  **kwargs) -> dict[float, masks.Mask]:
    """``prune_at_init`` at each of ``sparsities`` (same arguments): a one-shot criterion
    scores once and selects at every sparsity, giving the masks ``prune_at_init`` gives
    one by one; an iterative one prunes again for each."""
    sparsities = list(sparsities)
    if not sparsities:
        raise ValueError("sparsities must name at least one sparsity")
    for sparsity in sparsities:
        _check_fraction("sparsity", sparsity)
    crit, options, batches, names = _prepared(model, criterion, material, seed, options,
                                              invert, kwargs)
    out, scores, within = {}, None, None
    for sparsity in sparsities:
        densities = schedule_densities(1 - sparsity, options.rounds, options.schedule)
        if options.rounds > 1 or scores is None:  # one shot: the same scores at every sparsity
            generator = torch.Generator().manual_seed(seed)
            mask = None
            for t, density in enumerate(densities):
                scores = crit.score(model, batches, names, mask, generator, **options.scoring())
                if invert:
                    scores = sanity.inverted(scores)
                within = None if crit.revive else mask  # pruned before: scored -inf
                mask = select(scores, 1 - density, options.scope, seed=seed * 1000 + t,
                              within=within)
        else:
            mask = select(scores, sparsity, options.scope, seed=seed * 1000)
        out[sparsity] = _check_collapse(mask, scores, criterion, sparsity, options.on_collapse,
                                        within)
    return out


def _check_collapse(mask: masks.Mask, scores, criterion: str, sparsity: float,
                    on_collapse: str, within: masks.Mask | None = None) -> masks.Mask:
    """``mask`` with the ``on_collapse`` rule applied to its empty layers, if any (a repair
    reads the weights ``within`` prunes as scoring -inf, as the selection did)."""
    dead = masks.empty_layers(mask)
    if dead and on_collapse == "error":
        raise ValueError(
            f"layer collapse: {criterion} at sparsity {sparsity} kept no weight in "
            f"{', '.join(dead)}. Lower the sparsity, choose another scope, or pass "
            "on_collapse='repair' (or 'allow' to keep the empty layers).")
    if dead and on_collapse == "repair":
        if within is not None:
            scores = {n: s.masked_fill(~within[n], -math.inf) for n, s in scores.items()}
        mask = repair_collapse(mask, scores)
    return mask

"""Mask anatomy: how two masks differ, and which kept weights can matter at all.

Measures that need no training, for asking whether the material fed to a criterion
changes its mask by more than the mask's own draw-to-draw noise:

- ``layer_overlap``: per tensor, the fraction of one mask's kept weights the other keeps
  (``masks.overlap`` is the same over all tensors); ``density_difference`` per layer.
- ``score_spearman``: rank correlation of two score sets over all weights.
- ``effective_mask``: the kept weights on at least one input-output path of the masked
  network (Vysogorets and Kempe 2021); the others cannot change the output, so a mask's
  *effective* sparsity can exceed its nominal one, up to 100 % for a cut network.
- ``shuffle_within_layers`` and ``inverted``: the sanity checks of Frankle et al. (2021),
  a layer's kept positions redrawn at the same count, and scores turned upside down.
- ``material_masks``: a criterion's masks for independent draws of one material on one
  initial network; ``overlap_matrix`` and ``within_between``: overlaps of masks drawn from
  the same material against masks from two materials, with a permutation test.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from opai_lib import data as data_mod
from opai_lib import masks, models, prune
from opai_lib.materials import Material

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

def _connectivity_net(model: nn.Module, mask: Mask) -> tuple[nn.Module, dict[str, nn.Parameter]]:
    """A float64 copy of ``model`` whose weights are 1 where kept (0 where pruned), biases
    0, BatchNorm replaced by the identity: its output counts input-output paths."""
    net = copy.deepcopy(model).double().eval()
    for name, module in list(net.named_modules()):
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            parent, _, attr = name.rpartition(".")
            setattr(net.get_submodule(parent), attr, nn.Identity())
    params = dict(net.named_parameters())
    prunable = set(models.prunable(net))
    unknown = sorted(set(mask) - set(params))
    if unknown:
        raise ValueError(f"mask names {unknown}, which are not parameters of the model")
    with torch.no_grad():
        for name, p in params.items():
            if name in mask:
                p.copy_(mask[name].to(torch.float64))
            elif name in prunable:  # a layer left dense (e.g. first_layer=False)
                p.fill_(1.0)
            else:
                p.zero_()
            p.requires_grad_(name in mask)
    return net, {n: params[n] for n in mask}


def effective_mask(model: nn.Module, mask: Mask, image_size: int = 32) -> Mask:
    """The kept weights that lie on at least one path from the input to the output.

    In the connectivity copy (``_connectivity_net``) every activation is a non-negative
    path count, ReLU passes it unchanged and nothing cancels, so the gradient of the summed
    output by a kept weight is (paths into its input) x (paths out of its output): it is
    positive exactly when the weight is on some input-output path."""
    net, weights = _connectivity_net(model, mask)
    channels = models.io_sizes(net)[0] or 3
    out = net(torch.ones(1, channels, image_size, image_size, dtype=torch.float64)).sum()
    if not torch.isfinite(out):
        raise ValueError("path counts overflow float64 for this network; effective "
                         "sparsity needs a shallower network or a rescaled count")
    out.backward()
    return {n: mask[n] & (w.grad > 0) for n, w in weights.items()}


def effective_sparsity(model: nn.Module, mask: Mask, image_size: int = 32) -> dict:
    """Nominal and effective sparsity of ``mask`` on ``model``, the kept weights that no
    path uses, and the layers left with no effective weight (a collapsed network)."""
    eff = effective_mask(model, mask, image_size)
    total = sum(m.numel() for m in mask.values())
    kept = sum(int(m.sum()) for m in mask.values())
    used = sum(int(m.sum()) for m in eff.values())
    return {"sparsity": 1 - kept / total, "effective sparsity": 1 - used / total,
            "unused kept": kept - used, "dead layers": masks.empty_layers(eff),
            "layer effective density": {n: m.float().mean().item() for n, m in eff.items()}}


# ---------------------------------------------------------------------------------------
# Sanity checks of Frankle et al. (2021).

def shuffle_within_layers(mask: Mask, seed: int) -> Mask:
    """Each tensor's kept positions redrawn uniformly at random, its count unchanged: what
    is left of a mask when only its layer-wise densities are kept."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, m in mask.items():
        flat = m.flatten().cpu()
        out[name] = flat[torch.randperm(flat.numel(), generator=g)].view(m.shape).to(m.device)
    return out


def inverted(scores: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Scores negated: a selection that keeps the highest then keeps the lowest."""
    return {name: -s for name, s in scores.items()}


# ---------------------------------------------------------------------------------------
# Within against between.

def material_masks(model: nn.Module, criterion: str, material: Material,
                   data: data_mod.ImageSet, draws: Sequence[int], sparsities: Sequence[float],
                   options=None, seed: int = 0) -> dict[int, dict[float, Mask]]:
    """``criterion``'s masks of ``model`` at each sparsity, for each draw of ``material``
    (``draws``: the seeds its examples are drawn with); one score per draw for a one-shot
    criterion (``prune.masks_at_init``). The criterion's own randomness (``seed``: GraSP's
    re-drawn linear layer, ties) is the same for every draw, so the masks differ only by
    the examples they were fed."""
    if not isinstance(material, Material):
        raise ValueError(f"material must be a materials.Material, got {type(material).__name__}")
    return {d: prune.masks_at_init(model, criterion, material.make(data, d), sparsities, seed,
                                   options) for d in draws}


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
    the material does not matter changes nothing."""
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
    rng = np.random.default_rng(seed)
    more = sum(statistic(rng.permutation(labels))[0] >= observed for _ in range(permutations))
    idx_a, idx_b = np.arange(n_a), np.arange(n_a, n_a + n_b)
    within_a = m[np.ix_(idx_a, idx_a)][~np.eye(n_a, dtype=bool)].mean()
    within_b = m[np.ix_(idx_b, idx_b)][~np.eye(n_b, dtype=bool)].mean()
    return {"within first": float(within_a), "within second": float(within_b),
            "within": float(within), "between": float(between),
            "difference": float(observed), "p": (1 + more) / (1 + permutations),
            "draws": (n_a, n_b)}

"""Sanity checks of Frankle et al. (2021): what is left of a criterion's mask when it loses
its positions, its weights or its ranking. A check that leaves accuracy unchanged says the
criterion's choice did not matter there.

* ``shuffle``: each layer's kept positions redrawn at random at the same count, so only the
  layer-wise densities survive. (Synaptic-Flow's ``Pruner.shuffle`` assigns the shuffled
  mask to a local name and changes nothing, a no-op that later baselines copied.)
* ``reinit``: the same mask on freshly drawn initial weights.
* ``invert``: the lowest-scored weights kept instead of the highest.

A run names its check in ``study.RunConfig.sanity``; ``prune.masks_at_init(invert=True)``
does the inversion, ``study`` the other two.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from opai_lib import masks

CHECKS = ("shuffle", "reinit", "invert")
# How tables name a run's check (None: the mask as its criterion chose it).
NAMES = {None: "none", "shuffle": "shuffled", "reinit": "reinitialised", "invert": "inverted"}
# A reinitialised run draws its new weights with seed + REINIT_STREAM: far from every seed
# the study uses, so the new network is never another run's initial one.
REINIT_STREAM = 1_000_003


def shuffle_within_layers(mask: masks.Mask, seed: int) -> masks.Mask:
    """Each tensor's kept positions redrawn uniformly at random, its count unchanged."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, m in mask.items():
        flat = m.flatten().cpu()
        out[name] = flat[torch.randperm(flat.numel(), generator=g)].view(m.shape).to(m.device)
    return out


def inverted(scores: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Scores negated: a selection that keeps the highest then keeps the lowest."""
    return {name: -s for name, s in scores.items()}


def reinit_seed(seed: int) -> int:
    """The seed of the fresh initial weights a ``reinit`` run trains its mask on."""
    return seed + REINIT_STREAM

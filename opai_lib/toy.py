"""A problem small enough to draw: a ReLU MLP on two moons, and what its criteria are fed.

The chapter on what pruning-at-initialisation scores reward (``notebooks/pai_scores.py``)
scores every weight of such a network with the library's criteria, draws the network with
the edges each criterion keeps, and feeds the data-dependent criteria other inputs
(``MATERIALS``) to see where the data enters a score. The registered models take 32x32
images, so this network and its points live here rather than in ``models`` and ``data``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import pairwise

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from opai_lib import anatomy, masks, models, prune
from opai_lib.config import check_integer, check_parameter

# What a data-dependent criterion can be fed in place of the moons, named as the study's
# controls (``materials``); every material has the moons' class-balanced labels.
MATERIALS = ("moons", "random_labels", "gaussian", "all_ones")


class MLP(nn.Module):
    """Fully connected layers with a ReLU between consecutive ones."""

    def __init__(self, sizes: Sequence[int]):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(sizes))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == 0 else layer(F.relu(x))
        return x


def mlp(sizes: Sequence[int], seed: int = 0) -> MLP:
    """An MLP with layer widths ``sizes`` (inputs first, classes last), initialised as the
    registered models are (``models.init_weights``: Kaiming normal, zero biases) from
    ``seed``; the global RNG is left alone."""
    check_parameter(isinstance(sizes, list | tuple) and len(sizes) >= 2 and all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes) and
        sizes[-1] >= 2, "sizes", sizes,
        "a list of at least two positive integers, inputs first, at least 2 classes last")
    check_integer("seed", seed, 0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = MLP(sizes)
        models.init_weights(net)
    return net


def two_moons(per_class: int, noise: float = 0.1, seed: int = 0
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` points of each of two interleaved half circles (class 0 above, class 1
    below), with Gaussian noise of standard deviation ``noise``, centred on the origin;
    labels ``per_class`` zeros then ones."""
    check_integer("per_class", per_class, 1)
    check_parameter(isinstance(noise, int | float) and not isinstance(noise, bool)
                    and 0 <= noise < math.inf, "noise", noise, "a number >= 0")
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(2, per_class, generator=g, dtype=torch.float64) * math.pi
    upper = torch.stack([torch.cos(t[0]), torch.sin(t[0])], 1)
    lower = torch.stack([1 - torch.cos(t[1]), 0.5 - torch.sin(t[1])], 1)
    x = torch.cat([upper, lower]) - torch.tensor([0.5, 0.25], dtype=torch.float64)
    x = x + noise * torch.randn(x.shape, generator=g, dtype=torch.float64)
    return x.float(), torch.arange(2).repeat_interleave(per_class)


def material(name: str, per_class: int, seed: int, noise: float = 0.1
             ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One batch of material ``name`` (see ``MATERIALS``) drawn with ``seed``: the moons,
    the moons with their labels permuted, standard normal points, or points of exactly one;
    always with the moons' class-balanced labels (permuted for ``random_labels``)."""
    check_parameter(name in MATERIALS, "material", name, f"one of {MATERIALS}")
    x, y = two_moons(per_class, noise, seed)
    other = torch.Generator().manual_seed(seed * 7919 + 1)  # the draws beside the moons
    if name == "random_labels":
        y = y[torch.randperm(len(y), generator=other)]
    elif name == "gaussian":
        x = torch.randn(x.shape, generator=other)
    elif name == "all_ones":
        x = torch.ones_like(x)
    return [(x, y)]


def material_masks(model: nn.Module, arms: Mapping[str, tuple[str, dict]], per_class: int,
                   draws: int, sparsity: float, seed: int = 0
                   ) -> dict[str, dict[str, list[masks.Mask]]]:
    """``found[label][material]``: the masks at ``sparsity`` of ``model`` that each arm
    (label -> (criterion, options)) chooses when fed each of ``MATERIALS``, one mask per
    draw (the material drawn with seeds 0 .. draws - 1); layers left empty are kept empty.
    The criterion's own randomness (``seed``) is the same for every draw."""
    check_integer("draws", draws, 1)
    return {label: {name: [prune.prune_at_init(model, crit, material(name, per_class, d),
                                               sparsity, seed, on_collapse="allow", **options)
                           for d in range(draws)] for name in MATERIALS}
            for label, (crit, options) in arms.items()}


def overlap_table(found: Mapping[str, Mapping[str, Sequence[masks.Mask]]],
                  reference: str = "moons") -> pd.DataFrame:
    """Arm x material: the mean fraction of a material's kept weights that a mask from
    ``reference`` keeps too, over every pair of draws; for ``reference`` itself, over pairs
    of different draws (how much a second draw of the same data moves the mask)."""
    rows = {}
    for label, by_material in found.items():
        ref = list(by_material[reference])
        row = {}
        for name, drawn in by_material.items():
            m = anatomy.overlap_matrix([*drawn, *ref])[:len(drawn), len(drawn):]
            if name == reference:
                check_parameter(len(ref) >= 2, "draws", len(ref),
                                "at least 2 (the reference against its own other draws)")
                m = m[~np.eye(len(ref), dtype=bool)]
            row[name] = float(m.mean())
        rows[label] = row
    return pd.DataFrame(rows).T


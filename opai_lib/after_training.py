"""Pruning after training (Han et al. 2015): prune a trained network by weight magnitude,
then retrain the survivors, in one shot or in several steps to the same final sparsity.

Each step keeps exactly ``round(density * N)`` prunable weights of largest |w| (selection is
``prune.select``: global or per-layer counts, ties drawn from the seed); weights pruned by an
earlier step are never brought back. The densities of the steps follow
``prune.schedule_densities``, so every schedule ends at exactly the target count. Retraining
is ``train.train`` with the mask attached, which keeps pruned weights at exactly zero.

Every step records the test accuracy before pruning, right after pruning and after
retraining. The drop right after pruning is the *pruning instability* of Bartoldson et al.
(2020): (acc_before - acc_pruned) / acc_before, as in their code
(bbartoldson/GeneralizationStabilityTradeoff, ``add_stability_vars``); they relate its mean
over the pruning steps to the final test accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from opai_lib import criteria, masks, models, prune
from opai_lib.config import Recipe, check_parameter, check_types, options_of, param, require
from opai_lib.train import evaluate, train


@dataclass(frozen=True)
class MagnitudeOptions:
    """How a trained network is pruned by magnitude: to what sparsity, in how many steps."""

    sparsity: float = param(0.9, "final fraction of the prunable weights removed, in [0, 1)")
    rounds: int = param(1, "pruning steps to reach it (1 = one shot)")
    schedule: str = param("exponential", "density after each step, see "
                          "prune.schedule_densities", prune.SCHEDULES)
    scope: str = param("global", "how many weights each layer keeps, see prune.SCOPES",
                       prune.SCOPES)
    first_layer: bool = param(True, "prune the first layer (False keeps it dense)")
    last_layer: bool = param(True, "prune the last layer (False keeps it dense)")

    def __post_init__(self):
        check_types(self)
        require(0 <= self.sparsity < 1, self, "sparsity", "a number in [0, 1)")
        require(self.rounds >= 1, self, "rounds", "an integer >= 1")

    def densities(self) -> list[float]:
        """Fraction of the prunable weights kept after each step; the last is the target."""
        return prune.schedule_densities(1 - self.sparsity, self.rounds, self.schedule)


def magnitude_mask(model: nn.Module, sparsity: float, scope: str = "global", seed: int = 0,
                   first_layer: bool = True, last_layer: bool = True) -> masks.Mask:
    """The mask keeping exactly ``round((1 - sparsity) * N)`` prunable weights of largest
    |w|; weights that a mask attached to ``model`` prunes are kept last (never, unless a
    layer's count needs them). A layer left empty is an error."""
    MagnitudeOptions(sparsity=sparsity, scope=scope, first_layer=first_layer,
                     last_layer=last_layer)  # the arguments checked before any compute
    names = list(models.prunable(model, first_layer, last_layer))
    scores = criteria.magnitude(model, None, names, None, None)
    mask = prune.select(scores, sparsity, scope, seed, within=masks.get_mask(model))
    dead = masks.empty_layers(mask)
    if dead:
        raise ValueError(f"layer collapse: magnitude pruning at sparsity {sparsity} "
                         f"({scope} scope) kept no weight in {', '.join(dead)}; lower the "
                         "sparsity or use scope='layerwise'")
    return mask


def _check_retraining(train_batches, recipe) -> None:
    """Retraining needs both the batches and the recipe, or neither."""
    check_parameter((train_batches is None) == (recipe is None), "(train_batches, recipe)",
                    (type(train_batches).__name__, recipe),
                    "both given (retrain after each step) or both None (no retraining)")
    check_parameter(recipe is None or isinstance(recipe, Recipe), "recipe", recipe,
                    "a config.Recipe or None")


def prune_and_retrain(model: nn.Module, train_batches, recipe: Recipe | None, eval_batches,
                      options: MagnitudeOptions | None = None, device=None, seed: int = 0,
                      **kwargs) -> list[dict]:
    """Prune the trained ``model`` in place by magnitude in ``options.rounds`` steps,
    retraining by ``recipe`` after each (no retraining when ``recipe`` and
    ``train_batches`` are None); one record per step.

    A record holds the step, its sparsity and kept count, the test accuracy before the step
    (``accuracy_before``), right after pruning (``accuracy_pruned``) and after retraining
    (``accuracy_retrained``, None without retraining), the ``drop`` between the first two
    and the ``instability`` (the drop relative to ``accuracy_before``). Options may be given
    as keywords (``sparsity=0.9, rounds=3``); ``seed`` draws ties and seeds retraining.
    """
    options = options_of(MagnitudeOptions, options, kwargs, "prune_and_retrain")
    _check_retraining(train_batches, recipe)
    accuracy = evaluate(model, eval_batches)["accuracy"]
    steps = []
    for step, density in enumerate(options.densities(), start=1):
        mask = magnitude_mask(model, 1 - density, options.scope, seed, options.first_layer,
                              options.last_layer)
        masks.apply_mask(model, mask)
        pruned = evaluate(model, eval_batches)["accuracy"]
        retrained = None
        if recipe is not None:
            train(model, train_batches, recipe, device=device, progress=False, seed=seed)
            retrained = evaluate(model, eval_batches)["accuracy"]
        kept = sum(int(m.sum()) for m in mask.values())
        steps.append({"step": step, "sparsity": 1 - kept / sum(m.numel() for m in mask.values()),
                      "kept": kept, "accuracy_before": accuracy, "accuracy_pruned": pruned,
                      "accuracy_retrained": retrained, "drop": accuracy - pruned,
                      "instability": (accuracy - pruned) / accuracy if accuracy else math.nan})
        accuracy = pruned if retrained is None else retrained
    return steps


def mean_instability(steps: list[dict]) -> float:
    """Bartoldson et al.'s pruning instability of a schedule: the mean over its steps of the
    relative accuracy drop right after pruning (0 = pruning never hurt)."""
    check_parameter(len(steps) > 0, "steps", steps, "the records of at least one step")
    return sum(s["instability"] for s in steps) / len(steps)


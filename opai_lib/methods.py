"""Every way a run gets its mask, behind one registry: the dense baseline, each
pruning-at-initialisation criterion (``criteria``), each expander generator (``expanders``).

A method has a kind, a typed options dataclass (checked when built, part of the run key)
and says whether it feeds data to a criterion. ``Method.mask`` is the one place that turns
(model, options, material, sparsity, seed) into a mask.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from opai_lib import criteria, expanders, masks, prune
from opai_lib.config import Profile, build, options_of
from opai_lib.registry import Registry

EXPANDER_PREFIX = "expander:"


@dataclass(frozen=True)
class DenseOptions:
    """The dense baseline has no option."""


@dataclass(frozen=True)
class Method:
    """One way to get a mask: its kind ("dense", "criterion" or "expander"), its options
    class, whether it needs data, and the family member it calls (criterion or generator)."""

    name: str
    kind: str
    options_class: type
    needs_data: bool
    member: str | None = None

    def options(self, **kwargs):
        """The checked options; an unknown name is an error listing the known ones."""
        return build(self.options_class, **kwargs)

    def mask(self, model: nn.Module, options, material: Sequence | None, sparsity: float,
             seed: int, invert: bool = False) -> masks.Mask | None:
        """The mask of this method for ``model`` (None for the dense baseline); ``invert``
        keeps a criterion's lowest-scored weights (``sanity``)."""
        if invert and self.kind != "criterion":
            raise ValueError(f"invert: method {self.name!r} has no scores to invert; "
                             "allowed: a criterion")
        if self.kind == "dense":
            return None
        if self.kind == "expander":
            return expanders.expander_mask(model, self.member, density=1 - sparsity, seed=seed,
                                           options=options)
        return prune.prune_at_init(model, self.member, material, sparsity, seed=seed,
                                   options=options, invert=invert)


METHODS: Registry[Method] = Registry("method")
METHODS.add("dense", Method("dense", "dense", DenseOptions, needs_data=False))
for _name in criteria.CRITERIA.names():
    _crit = criteria.CRITERIA.get(_name)
    METHODS.add(_name, Method(_name, "criterion", _crit.options_class, _crit.needs_data, _name))
for _name in expanders.GENERATORS.names():
    METHODS.add(EXPANDER_PREFIX + _name, Method(EXPANDER_PREFIX + _name, "expander",
                                                expanders.ExpanderOptions, False, _name))


def profile_options(profile: Profile, method: str, options=None, **kwargs):
    """The options of ``method`` (``options``, or built from ``kwargs``) at ``profile``'s
    scale: an iterative criterion runs at most ``profile.max_rounds`` rounds (0: no cap), so
    the smoke profile's runs take seconds."""
    options = options_of(METHODS.get(method).options_class, options, kwargs, method)
    rounds = getattr(options, "rounds", 1)
    if profile.max_rounds and rounds > profile.max_rounds:
        options = dataclasses.replace(options, rounds=profile.max_rounds)
    return options

"""Pruning-at-initialisation criteria: one signature, one registry, scores only.

Every criterion is a function

    score(model, batches, names, mask, generator, **options) -> {param_name: score tensor}

that scores the tensors ``names`` (what ``models.prunable`` returned) of ``model``. A higher
score means *keep*. ``batches`` is a list of ``(x, y)`` pairs (None for data-free criteria),
``mask`` the mask of an earlier pruning round (None for a dense net), ``generator`` the
seeded source of every random draw. A criterion never changes ``model``: it works on a
copy (or, for SynFlow, on fresh tensors passed through ``functional_call``, the modules'
train/eval modes restored after), so weights, BatchNorm statistics, gradients and modes of
the caller's model stay as they were. Turning scores into a mask (exact top-k, schedules,
layer collapse) is ``prune``'s job.

Options are typed, frozen dataclasses (one per criterion, extending ``PruneOptions``, the
options of selection that every criterion shares) checked when built, before any compute;
``Criterion.options(**kwargs)`` builds them. Where the reference codes disagree, the default
is the reference's and the docstring says who does what (``shared/reference/methods.md``).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from opai_lib import double_backward
from opai_lib.config import build, check_types, param, require
from opai_lib.registry import Registry

Scores = dict[str, torch.Tensor]
Batch = tuple[torch.Tensor, torch.Tensor]
BN_MODES = ("train", "eval")
SCOPES = ("global", "layerwise", "er", "erk")
SCHEDULES = ("exponential", "linear")
ON_COLLAPSE = ("error", "repair", "allow")


# ---------------------------------------------------------------------------------------
# Options.


@dataclass(frozen=True)
class PruneOptions:
    """How scores become a mask (``prune.prune_at_init``); every criterion's options extend
    these, overriding the defaults where the criterion's reference differs."""

    scope: str = param("global", "how many weights each layer keeps, see prune.SCOPES", SCOPES)
    rounds: int = param(1, "pruning rounds (1 = one shot); each re-scores the masked net")
    schedule: str = param("exponential", "density after each round, see "
                          "prune.schedule_densities", SCHEDULES)
    on_collapse: str = param("error", "a layer left empty: raise, give it its best weight "
                             "back, or allow it", ON_COLLAPSE)
    first_layer: bool = param(True, "prune the first layer (False keeps it dense)")
    last_layer: bool = param(True, "prune the last layer (False keeps it dense)")

    def __post_init__(self):
        check_types(self)
        require(self.rounds >= 1, self, "rounds", "an integer >= 1")

    def scoring(self) -> dict:
        """The options the score function reads (those beyond ``PruneOptions``)."""
        shared = {f.name for f in dataclasses.fields(PruneOptions)}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in shared}


@dataclass(frozen=True)
class SnipOptions(PruneOptions):
    bn_mode: str = param("eval", "BatchNorm mode while scoring (official SNIP: eval)", BN_MODES)


@dataclass(frozen=True)
class IterSnipOptions(SnipOptions):
    rounds: int = param(60, "pruning rounds (naver/force README: 60)")
    bn_mode: str = param("train", "BatchNorm mode while scoring (FORCE's code: train)",
                         BN_MODES)


@dataclass(frozen=True)
class ForceOptions(IterSnipOptions):
    """FORCE's options are Iterative SNIP's (one code base, naver/force)."""


@dataclass(frozen=True)
class GraspOptions(PruneOptions):
    temperature: float = param(200.0, "T of the cross-entropy of logits / T (official: 200)")
    bn_mode: str = param("train", "BatchNorm mode while scoring (official GraSP: train)",
                         BN_MODES)
    reinit_linear: bool = param(True, "re-draw the Linear weights of the scoring copy from "
                                "Xavier normal, as the official code does")

    def __post_init__(self):
        super().__post_init__()
        require(self.temperature > 0, self, "temperature", "a positive number")


@dataclass(frozen=True)
class SynflowOptions(PruneOptions):
    rounds: int = param(100, "pruning rounds (Synaptic-Flow's runs: 100)")
    double: bool = param(False, "score in float64 (deep nets can overflow float32)")
    input_shape: tuple | None = param(None, "(C, H, W) of the all-ones input; None: the "
                                      "batches' shape, else (3, 32, 32)")

    def __post_init__(self):
        super().__post_init__()
        require(self.input_shape is None or (
            len(self.input_shape) >= 1 and all(isinstance(s, int) and not isinstance(s, bool)
                                               and s > 0 for s in self.input_shape)),
                self, "input_shape", "None or a tuple of positive integers")


@dataclass(frozen=True)
class RandomOptions(PruneOptions):
    scope: str = param("layerwise", "how many weights each layer keeps, see prune.SCOPES",
                       SCOPES)


@dataclass(frozen=True)
class ProsprOptions(PruneOptions):
    steps: int = param(3, "SGD steps differentiated through (reference CLI: 3)")
    lr: float = param(0.1, "learning rate of those steps (reference CLI: 0.1)")
    momentum: float = param(0.0, "momentum of those steps (reference CLI: 0)")
    bn_mode: str = param("train", "BatchNorm mode while scoring (reference: train)", BN_MODES)

    def __post_init__(self):
        super().__post_init__()
        require(self.steps >= 1, self, "steps", "an integer >= 1")
        require(self.lr > 0, self, "lr", "a positive number")
        require(0 <= self.momentum < 1, self, "momentum", "0 <= momentum < 1")


def _scoring_copy(model: nn.Module, names: Sequence[str], bn_mode: str,
                  all_params: bool = False) -> tuple[nn.Module, list[nn.Parameter]]:
    """A copy of ``model`` in the given BatchNorm mode whose parameters ``names`` need grad.

    Only the scored weights require gradients (unless ``all_params``), which spares the
    backward pass the BatchNorm and bias gradients nobody reads.
    """
    net = copy.deepcopy(model)
    net.train(bn_mode == "train")
    params = dict(net.named_parameters())
    for p in net.parameters():
        p.requires_grad_(all_params)
        p.grad = None
    for n in names:
        params[n].requires_grad_(True)
    return net, [params[n] for n in names]


@torch.no_grad()
def _apply(weights: Sequence[torch.Tensor], names: Sequence[str], mask) -> None:
    """Zero the pruned entries of ``weights`` in place (no-op for a dense ``mask=None``)."""
    if mask is not None:
        for w, n in zip(weights, names, strict=True):
            w.mul_(mask[n].to(w.device))


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """Images in channels-last layout, the faster one for oneDNN's convolutions."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def _loss(net: nn.Module, batch: Batch, temperature: float = 1.0) -> torch.Tensor:
    x, y = batch
    device = next(net.parameters()).device
    return F.cross_entropy(net(x.to(device)) / temperature, y.to(device))


def _summed_gradients(net, weights, batches, temperature: float = 1.0) -> list[torch.Tensor]:
    """Sum over batches of the gradient of each batch's mean cross-entropy."""
    total = None
    for batch in batches:
        grads = torch.autograd.grad(_loss(net, batch, temperature), weights)
        total = list(grads) if total is None else \
            [t + g for t, g in zip(total, grads, strict=True)]
    return total


# ---------------------------------------------------------------------------------------
# Gradient saliencies: SNIP, Iterative SNIP, FORCE.


def snip(model, batches, names, mask, generator, *, bn_mode: str) -> Scores:
    """SNIP (Lee et al. 2019): |theta * dL/dtheta|, i.e. |dL/dm| at an all-ones mask m.

    On a masked net (Iterative SNIP rounds) the weights and gradients are those of the
    masked net, so pruned weights score 0. BatchNorm mode: the official SNIP and the
    Synaptic-Flow port use inference mode ("eval", the default here); FORCE's Iter-SNIP
    and the mil-ad port leave the net in train mode. Gradients are summed over batches
    (Synaptic-Flow); the official code scores one batch. The loss is cross-entropy (the
    FORCE repository used nll_loss on raw logits, a bug).
    """
    net, weights = _scoring_copy(model, names, bn_mode)
    _apply(weights, names, mask)
    grads = _summed_gradients(net, weights, batches)
    return {n: (w.detach() * g).abs() for n, w, g in zip(names, weights, grads, strict=True)}


def force(model, batches, names, mask, generator, *, bn_mode: str) -> Scores:
    """FORCE (de Jorge et al. 2021): |theta_dense * dL/dtheta| with the gradient of the
    masked net and the dense initial weights, so weights pruned earlier can come back.

    BatchNorm mode: the FORCE code leaves the net in train mode (the default here).
    """
    net, weights = _scoring_copy(model, names, bn_mode)
    _apply(weights, names, mask)
    grads = _summed_gradients(net, weights, batches)
    dense = dict(model.named_parameters())
    return {n: (dense[n].detach() * g).abs() for n, g in zip(names, grads, strict=True)}


# ---------------------------------------------------------------------------------------
# GraSP: gradient signal preservation through the Hessian-gradient product.


def grasp(model, batches, names, mask, generator, *, temperature: float, bn_mode: str,
          reinit_linear: bool) -> Scores:
    """GraSP (Wang et al. 2020) as the official code computes it, returned as theta * Hg.

    The official code scores S = -theta * (H g) with g the gradient of the cross-entropy
    of logits / T and H its Hessian (both restricted to the scored weights), and removes
    the weights of *largest* S. Returning -S = theta * Hg, "keep the highest" does the same.
    Options: ``temperature`` T = 200 (official). ``bn_mode``: the official code leaves
    BatchNorm in train mode (default here), Synaptic-Flow uses eval mode.
    ``reinit_linear``: the official code re-draws every Linear weight of its scoring copy
    from Xavier normal (default True here, drawn from ``generator``); Synaptic-Flow does not.
    Hg is summed over batches as the official code sums it over its half-batches. The
    double backward runs through ``double_backward.fuse``d layers (same values, ~0.7x the time).
    """
    net, weights = _scoring_copy(model, names, bn_mode)
    if reinit_linear:
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, nn.Linear):  # drawn on the CPU: the same on any device
                    m.weight.copy_(nn.init.xavier_normal_(torch.empty_like(m.weight, device="cpu"),
                                                          generator=generator))
    _apply(weights, names, mask)
    double_backward.fuse(net)
    batches = [(_channels_last(x), y) for x, y in batches]
    if len(batches) == 1:  # one batch: reuse its graph for both g and Hg
        graph = torch.autograd.grad(_loss(net, batches[0], temperature), weights,
                                    create_graph=True)
        g = [t.detach() for t in graph]
        graphs = [graph]
    else:
        g = _summed_gradients(net, weights, batches, temperature)
        graphs = (torch.autograd.grad(_loss(net, b, temperature), weights, create_graph=True)
                  for b in batches)
    hg = [torch.zeros_like(w) for w in weights]
    for graph in graphs:
        z = sum((gi * ti).sum() for gi, ti in zip(g, graph, strict=True))
        hg = [h + t for h, t in zip(hg, torch.autograd.grad(z, weights), strict=True)]
    return {n: w.detach() * h for n, w, h in zip(names, weights, hg, strict=True)}


# ---------------------------------------------------------------------------------------
# SynFlow: data-free synaptic flow.


def synflow(model, batches, names, mask, generator, *, double: bool,
            input_shape: tuple | None) -> Scores:
    """SynFlow (Tanaka et al. 2020): theta * dR/dtheta with R = 1^T (prod_l |W_l|) 1.

    R is the summed output of the net whose parameters and buffers are all replaced by
    their absolute values fed one all-ones input; the replacements are fresh tensors passed
    through ``functional_call``, so the caller's weights keep their signs and no copy of
    the module is made (a copy per round cost more than the round's own passes). BatchNorm
    is in eval mode, as in the reference code: a batch of one constant image has zero
    variance in train mode. ``double`` scores in float64 (the reference added it and
    reverted it the next day; deep nets can overflow float32). ``input_shape`` (C, H, W):
    taken from the first batch when batches are given, else (3, 32, 32), the CIFAR input.
    """
    if batches:
        shape = tuple(batches[0][0].shape[1:])
        if input_shape is not None and tuple(input_shape) != shape:
            raise ValueError(f"input_shape {tuple(input_shape)} differs from the batches' {shape}")
    else:
        shape = tuple(input_shape) if input_shape is not None else (3, 32, 32)
    dtype = torch.float64 if double else torch.float32
    state = {n: t.detach().to(dtype).abs() if t.is_floating_point() else t
             for n, t in [*model.named_parameters(), *model.named_buffers()]}
    weights = [state[n] for n in names]
    _apply(weights, names, mask)
    for w in weights:
        w.requires_grad_(True)
    x = torch.ones((1, *shape), dtype=dtype, device=weights[0].device)
    with _modes(model, training=False):
        out = functional_call(model, state, (x,))
    grads = torch.autograd.grad(out.sum(), weights)
    return {n: w.detach() * g for n, w, g in zip(names, weights, grads, strict=True)}


@contextlib.contextmanager
def _modes(model: nn.Module, training: bool):
    """Every module of ``model`` in train (or eval) mode inside, its own mode restored after."""
    before = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield
    finally:
        for m, mode in before:
            m.training = mode


# ---------------------------------------------------------------------------------------
# Baselines: magnitude and random.


def magnitude(model, batches, names, mask, generator) -> Scores:
    """|theta| at initialisation: keeps the largest initial weights."""
    params = dict(model.named_parameters())
    scores = {n: params[n].detach().abs() for n in names}
    return scores if mask is None else {n: s * mask[n] for n, s in scores.items()}


def random(model, batches, names, mask, generator) -> Scores:
    """Uniform noise from ``generator``: the per-layer densities come from the scope
    (``prune`` scopes "layerwise" = uniform per layer, "er", "erk", or "global")."""
    params = dict(model.named_parameters())
    return {n: torch.rand(params[n].shape, generator=generator).to(params[n].device)
            for n in names}


# ---------------------------------------------------------------------------------------
# ProsPr: the meta-gradient of the loss after a few SGD steps.


def prospr(model, batches, names, mask, generator, *, steps: int, lr: float,
           momentum: float, bn_mode: str) -> Scores:
    """ProsPr (Alizadeh et al. 2022): |dL(theta_K)/dm| after K SGD steps from theta * m.

    The mask m (all ones, or the given mask) multiplies the scored weights once at the
    start; every parameter (BatchNorm and biases too) then takes ``steps`` SGD steps on the
    batches in turn, and the loss on the next batch is differentiated through all steps
    back to m. Defaults are the reference CLI's (3 steps, lr 0.1, momentum 0; its README
    example uses lr 0.5, momentum 0.9), train-mode BatchNorm as in the reference.
    """
    net, _ = _scoring_copy(model, names, bn_mode, all_params=True)
    params = dict(net.named_parameters())
    buffers = dict(net.named_buffers())
    m = {n: (torch.ones_like(params[n]) if mask is None else mask[n].to(params[n]))
         .requires_grad_(True) for n in names}
    fast = {k: p * m[k] if k in m else p for k, p in params.items()}
    velocity = None

    def loss(state, batch):
        x, y = batch
        out = functional_call(net, (state, buffers), (x.to(params[names[0]].device),))
        return F.cross_entropy(out, y.to(out.device))

    for k in range(steps):
        grads = torch.autograd.grad(loss(fast, batches[k % len(batches)]), list(fast.values()),
                                    create_graph=True)
        velocity = grads if velocity is None else \
            [momentum * v + g for v, g in zip(velocity, grads, strict=True)]
        fast = {key: p - lr * v for (key, p), v in zip(fast.items(), velocity, strict=True)}
    meta = torch.autograd.grad(loss(fast, batches[steps % len(batches)]), [m[n] for n in names])
    return {n: g.abs() for n, g in zip(names, meta, strict=True)}


# ---------------------------------------------------------------------------------------
# The registry.


@dataclass(frozen=True)
class Criterion:
    """A scoring function, its options, and whether it needs data or revives weights."""

    score: Callable[..., Scores]
    options_class: type[PruneOptions]
    needs_data: bool
    revive: bool = False    # may a weight pruned in an earlier round come back?

    def options(self, **kwargs) -> PruneOptions:
        """The checked options; an unknown name is an error listing the known ones."""
        return build(self.options_class, **kwargs)


CRITERIA: Registry[Criterion] = Registry("criterion")
CRITERIA.add("snip", Criterion(snip, SnipOptions, needs_data=True))
CRITERIA.add("grasp", Criterion(grasp, GraspOptions, needs_data=True))
CRITERIA.add("synflow", Criterion(synflow, SynflowOptions, needs_data=False))
CRITERIA.add("magnitude", Criterion(magnitude, PruneOptions, needs_data=False))
CRITERIA.add("random", Criterion(random, RandomOptions, needs_data=False))
# Iter-SNIP keeps pruned weights pruned, FORCE may revive them.
CRITERIA.add("iter_snip", Criterion(snip, IterSnipOptions, needs_data=True))
CRITERIA.add("force", Criterion(force, ForceOptions, needs_data=True, revive=True))
CRITERIA.add("prospr", Criterion(prospr, ProsprOptions, needs_data=True))


def score(name: str, model, batches, names, mask, generator, **options) -> Scores:
    """Scores of criterion ``name`` with its checked ``options`` (defaults otherwise)."""
    crit = CRITERIA.get(name)
    return crit.score(model, batches, names, mask, generator, **crit.options(**options).scoring())

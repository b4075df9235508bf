"""Lottery tickets (Frankle and Carbin 2019) and rewinding (Frankle et al. 2020).

Iterative magnitude pruning (IMP): train the network, prune the smallest-magnitude surviving
weights (``after_training.magnitude_mask``), reset the survivors to their values at the
rewind step, and train again; repeat until the target sparsity. Rewinding to step 0 resets
them to the initial weights theta_0 (Frankle and Carbin). Rewinding to step k > 0 resets them
to the weights theta_k after k optimizer steps of the dense network's training, and every
round then trains the recipe's remaining steps (the schedule from step k on, a fresh
optimizer), as in Frankle et al. 2020 and facebookresearch/open_lth; this finds tickets in
deeper networks, where rewinding to theta_0 fails.

A ticket is a mask and the rewound weights: ``Ticket.network`` rebuilds it bit for bit.
Frankle and Carbin's control lays the same mask on freshly drawn weights (``reinitialised``)
and trains over the same steps, so ticket and control differ only in their weights.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from opai_lib import masks, models
from opai_lib.after_training import MagnitudeOptions, magnitude_mask
from opai_lib.config import Recipe, check_parameter, options_of, param, require
from opai_lib.masks import Mask
from opai_lib.train import evaluate, train


@dataclass(frozen=True)
class LotteryOptions(MagnitudeOptions):
    """How IMP prunes (the magnitude options, one round per pruning) and where it rewinds."""

    rounds: int = param(3, "pruning rounds after the dense training; each prunes, rewinds "
                        "and trains")
    rewind_step: int = param(0, "optimizer step whose weights the survivors are reset to: 0 "
                             "= the initial weights, k > 0 = after k steps of training")

    def __post_init__(self):
        super().__post_init__()
        require(self.rewind_step >= 0, self, "rewind_step", "an integer >= 0")


@dataclass
class Ticket:
    """What IMP found: the dense state it rewinds to, and each round's mask and result.

    ``masks[0]`` keeps every weight (the dense round); ``rounds[r]`` holds round r's
    sparsity, kept count, and test accuracy and loss after training.
    """

    rewind_step: int
    rewind_state: dict[str, torch.Tensor]
    masks: list[Mask]
    rounds: list[dict]

    def network(self, model: nn.Module, round: int = -1) -> nn.Module:
        """Round ``round``'s ticket before training: a copy of ``model`` holding the rewound
        weights under that round's mask (pruned weights zero, the others bit for bit)."""
        net = copy.deepcopy(model)
        net.load_state_dict(self.rewind_state)
        masks.apply_mask(net, self.masks[round])
        return net


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of every parameter and buffer of ``model``."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def train_ticket(net: nn.Module, train_batches, recipe: Recipe, eval_batches,
                 start_step: int = 0, device=None, seed: int = 0) -> dict:
    """Train a ticket (or its control) in place over the recipe's steps from ``start_step``
    on; its test accuracy and loss."""
    train(net, train_batches, recipe, device=device, progress=False, seed=seed,
          start_step=start_step)
    return evaluate(net, eval_batches)


def find_ticket(model: nn.Module, train_batches, recipe: Recipe, eval_batches,
                options: LotteryOptions | None = None, device=None, seed: int = 0,
                **kwargs) -> Ticket:
    """Iterative magnitude pruning of the dense ``model`` (left untouched) with rewinding.

    Round 0 trains the dense network; each of the ``options.rounds`` rounds after it prunes
    the previous round's trained weights to the schedule's next density, rewinds the
    survivors to ``options.rewind_step`` and trains. Options may be given as keywords
    (``sparsity=0.8, rounds=3, rewind_step=20``); ``seed`` draws ties and seeds training.
    """
    options = options_of(LotteryOptions, options, kwargs, "find_ticket")
    check_parameter(isinstance(recipe, Recipe), "recipe", recipe, "a config.Recipe")
    total = recipe.epochs * len(train_batches)
    check_parameter(options.rewind_step < total, "LotteryOptions.rewind_step",
                    options.rewind_step, f"below the recipe's {total} steps ({recipe.epochs} "
                    f"epochs of {len(train_batches)})")
    attached = masks.get_mask(model)
    check_parameter(not attached, "model", type(model).__name__,
                    f"a dense network (it carries a mask over {sorted(attached)})")
    net = copy.deepcopy(model)
    if options.rewind_step:
        train(net, train_batches, recipe, device=device, progress=False, seed=seed,
              stop_step=options.rewind_step)
    names = models.prunable(model, options.first_layer, options.last_layer)
    ticket = Ticket(options.rewind_step, _state(net),
                    [{n: torch.ones_like(p, dtype=torch.bool) for n, p in names.items()}], [])
    for r, density in enumerate([1.0, *options.densities()]):
        if r:
            ticket.masks.append(magnitude_mask(net, 1 - density, options.scope, seed,
                                               options.first_layer, options.last_layer))
        net = ticket.network(model, r)
        result = train_ticket(net, train_batches, recipe, eval_batches, options.rewind_step,
                              device, seed)
        kept = sum(int(m.sum()) for m in ticket.masks[r].values())
        ticket.rounds.append({"round": r, "sparsity": 1 - kept / sum(p.numel() for p in
                                                                    names.values()),
                              "kept": kept, **result})
    return ticket


def reinitialised(model: nn.Module, mask: Mask, seed: int) -> nn.Module:
    """Frankle and Carbin's control: a copy of ``model`` with every weight drawn afresh
    from ``seed`` (``models.init_weights``, the initialisation ``get_model`` gives CIFAR
    models; BatchNorm statistics reset) under the same ``mask``."""
    net = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        models.init_weights(net)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
    masks.apply_mask(net, mask)
    return net

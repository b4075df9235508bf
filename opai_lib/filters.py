"""Structured pruning: whole filters by their L1 norm (Li et al., ICLR 2017).

Removing filter j of a convolution removes feature map j, and with it the kernels of the
next convolution that read that map. Expressed as a weight mask, both are zeroed: the filter
(an output channel of the producer) and the input channel j of the consumer. BatchNorm
between them still adds a constant to the dead map, but the consumer no longer reads it,
so the masked network computes exactly what the physically smaller network would.

As Li et al. do for ResNets, only the first convolution of each residual block is pruned:
its output feeds nothing but the block's second convolution, while the block outputs are
tied together by the identity shortcuts.
"""

from __future__ import annotations

import torch
from torch import nn

from opai_lib.masks import Mask
from opai_lib.models import BasicBlock, CifarVGG


def producer_consumer_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(producer conv, consumer conv) names whose filters can be removed together."""
    if isinstance(model, CifarVGG):
        convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        return list(zip(convs[:-1], convs[1:], strict=True))
    pairs = [(f"{n}.conv1", f"{n}.conv2") for n, m in model.named_modules()
             if isinstance(m, BasicBlock)]
    if not pairs:
        raise ValueError(f"filter pruning knows CIFAR ResNets and VGGs, not {type(model).__name__}")
    return pairs


def l1_filter_mask(model: nn.Module, fraction: float) -> Mask:
    """Masks removing ``fraction`` of the filters of every producer, smallest L1 norm first.

    Ties are broken by filter index; at least one filter of each layer survives.
    """
    if not (isinstance(fraction, float) and 0.0 <= fraction < 1.0):
        raise ValueError(f"fraction must be a float in [0, 1), got {fraction!r}")
    modules = dict(model.named_modules())
    mask: Mask = {}

    def entry(name: str) -> torch.Tensor:
        weight = modules[name].weight
        return mask.setdefault(f"{name}.weight", torch.ones_like(weight, dtype=torch.bool))

    for producer, consumer in producer_consumer_pairs(model):
        norms = modules[producer].weight.detach().abs().sum(dim=(1, 2, 3))
        n_out = len(norms)
        n_drop = min(round(fraction * n_out), n_out - 1)
        order = sorted(range(n_out), key=lambda j: (norms[j].item(), j))
        keep = torch.ones(n_out, dtype=torch.bool)
        keep[order[:n_drop]] = False
        entry(producer).logical_and_(keep.view(-1, 1, 1, 1))
        entry(consumer).logical_and_(keep.view(1, -1, 1, 1))
    return mask

"""Structured pruning: whole filters by their L1 norm (Li et al., ICLR 2017).

Removing filter j of a convolution removes feature map j, and with it the kernels of the
next convolution that read that map. Expressed as a weight mask, both are zeroed: the filter
(an output channel of the producer) and the input channel j of the consumer. BatchNorm
between them still adds a constant to the dead map, but the consumer no longer reads it,
so the masked network computes exactly what the physically smaller network would.
``remove_filters`` builds that smaller network: the producer's filters, its BatchNorm's
channels and the consumer's input channels are cut out of the tensors, so dense kernels do
less work, which an unstructured mask of the same size does not achieve.

As Li et al. do for ResNets, only the first convolution of each residual block is pruned:
its output feeds nothing but the block's second convolution, while the block outputs are
tied together by the identity shortcuts. In a VGG every convolution but the last feeds the
next one and is pruned.

``same_size_networks`` sets the smaller network beside an unstructured mask keeping as many
weights, and ``time_inference`` measures what each costs on the CPU (interleaved repeats,
medians): what ``benchmarks/filter_speedup.py`` prints and the filter-pruning chapter shows.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import nn

from opai_lib import after_training, masks
from opai_lib.config import check_integer
from opai_lib.masks import Mask, get_mask
from opai_lib.models import BasicBlock, CifarVGG, io_sizes, prunable


class Pair(NamedTuple):
    """Modules whose channels go together when the producer's filters are removed."""

    producer: str  # the convolution whose filters are ranked and removed
    norm: str      # the BatchNorm right after it: its channels go with the filters
    consumer: str  # the convolution reading those maps: its input channels go too


def producer_consumer_pairs(model: nn.Module) -> list[Pair]:
    """The (producer, norm, consumer) module names whose filters can be removed together."""
    if isinstance(model, CifarVGG):
        convs = [i for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)]
        return [Pair(f"features.{i}", f"features.{i + 1}", f"features.{j}")
                for i, j in zip(convs[:-1], convs[1:], strict=True)]
    pairs = [Pair(f"{n}.conv1", f"{n}.bn1", f"{n}.conv2") for n, m in model.named_modules()
             if isinstance(m, BasicBlock)]
    if not pairs:
        raise ValueError(f"filter pruning knows the CIFAR ResNets and VGGs of models.MODELS "
                         f"(resnet*, vgg*_bn), not {type(model).__name__}: it has no "
                         "producer-consumer pair of convolutions")
    return pairs


def l1_filters(model: nn.Module, fraction: float) -> dict[str, torch.Tensor]:
    """Which filters of every producer survive when ``fraction`` of them, smallest L1 norm
    first, are removed: ``{producer: bool vector over its filters}``.

    Ties are broken by filter index; at least one filter of each layer survives.
    """
    if not (isinstance(fraction, float) and 0.0 <= fraction < 1.0):
        raise ValueError(f"fraction must be a float in [0, 1), got {fraction!r}")
    modules = dict(model.named_modules())
    keep = {}
    for pair in producer_consumer_pairs(model):
        norms = modules[pair.producer].weight.detach().abs().sum(dim=(1, 2, 3))
        n_out = len(norms)
        n_drop = min(round(fraction * n_out), n_out - 1)
        order = sorted(range(n_out), key=lambda j: (norms[j].item(), j))
        keep[pair.producer] = torch.ones(n_out, dtype=torch.bool)
        keep[pair.producer][order[:n_drop]] = False
    return keep


def _checked(model: nn.Module, keep: Mapping[str, torch.Tensor]) -> list[Pair]:
    """The pairs of ``model`` after checking that ``keep`` names exactly their producers,
    each with a bool vector over its filters that keeps at least one."""
    pairs = producer_consumer_pairs(model)
    producers = [p.producer for p in pairs]
    if sorted(keep) != sorted(producers):
        raise ValueError(f"keep must name exactly the producers {producers}, got {sorted(keep)}")
    modules = dict(model.named_modules())
    for name, k in keep.items():
        n_out = modules[name].out_channels
        if k.dtype != torch.bool or tuple(k.shape) != (n_out,) or not bool(k.any()):
            raise ValueError(f"keep[{name!r}] must be a bool vector of {n_out} filters keeping "
                             f"at least one, got {k.dtype} of shape {tuple(k.shape)} keeping "
                             f"{int(k.sum())}")
    return pairs


def as_mask(model: nn.Module, keep: Mapping[str, torch.Tensor]) -> Mask:
    """The weight mask that removes the filters ``keep`` drops: the producers' output
    channels and the consumers' matching input channels."""
    modules = dict(model.named_modules())
    mask: Mask = {}

    def entry(name: str) -> torch.Tensor:
        weight = modules[name].weight
        return mask.setdefault(f"{name}.weight", torch.ones_like(weight, dtype=torch.bool))

    for pair in _checked(model, keep):
        k = keep[pair.producer].to(modules[pair.producer].weight.device)
        entry(pair.producer).logical_and_(k.view(-1, 1, 1, 1))
        entry(pair.consumer).logical_and_(k.view(1, -1, 1, 1))
    return mask


def l1_filter_mask(model: nn.Module, fraction: float) -> Mask:
    """Masks removing ``fraction`` of the filters of every producer, smallest L1 norm first
    (``l1_filters`` expressed by ``as_mask``)."""
    return as_mask(model, l1_filters(model, fraction))


def _slice(module: nn.Module, dim: int, keep: torch.Tensor) -> None:
    """Keep only the entries ``keep`` selects along ``dim`` of every parameter and buffer of
    ``module`` that has that dimension (a consumer's bias and a BatchNorm's batch count
    have none and stay as they are; an attached mask is cut like its weight)."""
    index = torch.nonzero(keep).flatten()
    tensors = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
    for name, t in tensors:
        if t.ndim <= dim:
            continue
        cut = t.detach().index_select(dim, index.to(t.device)).clone()
        setattr(module, name, nn.Parameter(cut, t.requires_grad)
                if isinstance(t, nn.Parameter) else cut)


@torch.no_grad()
def remove_filters(model: nn.Module, keep: Mapping[str, torch.Tensor]) -> nn.Module:
    """A physically smaller copy of ``model`` without the filters ``keep`` drops: each
    producer keeps only those filters, its BatchNorm only those channels, its consumer only
    those input channels. It computes what ``model`` under ``as_mask(model, keep)`` does."""
    pairs = _checked(model, keep)
    small = copy.deepcopy(model)
    modules = dict(small.named_modules())
    for pair in pairs:
        k = keep[pair.producer]
        producer, norm, consumer = (modules[n] for n in pair)
        _slice(producer, 0, k)
        _slice(norm, 0, k)
        _slice(consumer, 1, k)
        producer.out_channels = norm.num_features = consumer.in_channels = int(k.sum())
    return small


def parameter_count(model: nn.Module) -> int:
    """Numbers the network needs: every parameter (weights, biases, BatchNorm affine) that
    no attached mask removes."""
    pruned = sum(int((~m).sum()) for m in get_mask(model).values())
    return sum(p.numel() for p in model.parameters()) - pruned


@torch.no_grad()
def multiply_adds(model: nn.Module, image_size: int = 32) -> int:
    """Multiply-accumulates of the convolutions and linear layers for one image of
    ``image_size`` x ``image_size`` pixels, as dense kernels compute them (a mask saves
    none). Found by one forward pass of a zero image on a copy of ``model``."""
    check_integer("image_size", image_size, 1)
    net = copy.deepcopy(model).eval()
    counts = []

    def count(module, inputs, out):
        per_output = module.in_features if isinstance(module, nn.Linear) else \
            module.weight[0].numel()  # in_channels / groups * kernel size
        counts.append(out[0].numel() * per_output)

    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.register_forward_hook(count)
    param = next(net.parameters())
    net(torch.zeros(1, io_sizes(net)[0] or 3, image_size, image_size, dtype=param.dtype,
                    device=param.device))
    return sum(counts)


def kept_weights(model: nn.Module) -> int:
    """Prunable weights (``models.prunable``) that no attached mask removes."""
    pruned = sum(int((~m).sum()) for m in get_mask(model).values())
    return sum(p.numel() for p in prunable(model).values()) - pruned


def same_size_networks(model: nn.Module, fraction: float) -> dict[str, nn.Module]:
    """Two copies of ``model`` that keep the same number of prunable weights: the physically
    smaller network without ``fraction`` of every producer's filters (``l1_filters``), and
    ``model`` under a global magnitude mask removing exactly as many prunable weights
    (unstructured: its kernels stay dense and still multiply the zeros)."""
    keep = l1_filters(model, fraction)
    small = remove_filters(model, keep)
    unstructured = copy.deepcopy(model)
    removed = 1 - kept_weights(small) / kept_weights(model)
    masks.apply_mask(unstructured, after_training.magnitude_mask(unstructured, removed))
    return {"unstructured mask": unstructured, "filter-pruned (smaller)": small}


@torch.no_grad()
def time_inference(nets: Mapping[str, nn.Module], batch: int = 256, repeats: int = 30,
                   threads: int = 1, image_size: int = 32, seed: int = 0) -> dict[str, float]:
    """Median seconds of one forward pass of a batch of ``batch`` random images through
    each of ``nets`` on the CPU (eval mode, no gradients, channels-last, ``threads`` torch
    threads, restored afterwards).

    Every network runs once first (oneDNN builds its kernels then); the networks are then
    timed in turn within each of ``repeats`` repeats, so a change of load on the machine
    falls on all of them alike, and the median of each network's repeats is returned.
    """
    for name, value, low in (("batch", batch, 1), ("repeats", repeats, 1),
                             ("threads", threads, 1), ("image_size", image_size, 1)):
        check_integer(name, value, low)
    if not nets:
        raise ValueError("nets must name at least one network to time")
    nets = {label: copy.deepcopy(net).to(device="cpu", memory_format=torch.channels_last)
            .eval() for label, net in nets.items()}
    channels = io_sizes(next(iter(nets.values())))[0] or 3
    x = torch.randn(batch, channels, image_size, image_size,
                    generator=torch.Generator().manual_seed(seed))
    x = x.contiguous(memory_format=torch.channels_last)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for net in nets.values():
                net(x)
            times: dict[str, list[float]] = {label: [] for label in nets}
            for _ in range(repeats):
                for label, net in nets.items():
                    start = time.perf_counter()
                    net(x)
                    times[label].append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    return {label: statistics.median(t) for label, t in times.items()}

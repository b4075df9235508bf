"""Binary weight masks: applying them, keeping pruned weights at zero, measuring density.

A mask is a plain ``{param_name: bool tensor}`` dict over tensors ``prunable(model)`` names.
``apply_mask`` stores each entry as a buffer ``<param>_mask`` on the owning module (so it
follows ``.to()``, DistributedDataParallel and ``state_dict``) and zeroes the pruned weights.

Why pruned weights stay at zero: the training step calls ``mask_gradients_`` between
``backward`` and ``optimizer.step``. With a weight w = 0 and gradient g = 0, SGD's weight
decay (g + lambda w), momentum buffer (mu b + g, starting from b = 0) and Nesterov update
(g + mu b) are all zero, so the step leaves w exactly 0; no re-masking after the step is needed.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

Mask = dict[str, torch.Tensor]
SUFFIX = "_mask"


def _owner(model: nn.Module, param_name: str) -> tuple[nn.Module, str]:
    module_name, _, attr = param_name.rpartition(".")
    return model.get_submodule(module_name), attr


def apply_mask(model: nn.Module, mask: Mapping[str, torch.Tensor]) -> None:
    """Attach ``mask`` to ``model`` and zero the pruned weights (replaces earlier masks)."""
    params = dict(model.named_parameters())
    for name, m in mask.items():
        if name not in params:
            raise KeyError(f"mask names {name!r}, which is not a parameter of the model")
        if m.shape != params[name].shape:
            raise ValueError(f"mask for {name} has shape {tuple(m.shape)}, "
                             f"the parameter has {tuple(params[name].shape)}")
        if m.dtype != torch.bool:
            raise TypeError(f"mask for {name} must be a bool tensor, got {m.dtype}")
    for name, m in mask.items():
        module, attr = _owner(model, name)
        m = m.to(params[name].device)
        if hasattr(module, attr + SUFFIX):
            getattr(module, attr + SUFFIX).copy_(m)
        else:
            module.register_buffer(attr + SUFFIX, m.clone())
        with torch.no_grad():
            params[name].mul_(m)


def get_mask(model: nn.Module) -> Mask:
    """The mask attached to ``model`` (an empty dict for a dense model)."""
    params = dict(model.named_parameters())
    mask = {}
    for buf_name, buf in model.named_buffers():
        if buf_name.endswith(SUFFIX) and buf_name.removesuffix(SUFFIX) in params:
            mask[buf_name.removesuffix(SUFFIX)] = buf
    return mask


def _masked_pairs(model: nn.Module):
    params = dict(model.named_parameters())
    return [(params[name], m) for name, m in get_mask(model).items()]


@torch.no_grad()
def mask_gradients_(model: nn.Module) -> None:
    """Zero the gradients of pruned weights; call between ``backward`` and ``step``."""
    for p, m in _masked_pairs(model):
        if p.grad is not None:
            p.grad.mul_(m)


def pruned_nonzero(model: nn.Module) -> int:
    """How many pruned weights are not exactly zero (0 unless something broke the mask)."""
    return sum(int(((p != 0) & ~m).sum()) for p, m in _masked_pairs(model))


def prepare_for_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Register the mask buffers a saved ``state_dict`` holds, so that it loads strictly."""
    params = dict(model.named_parameters())
    masks = {k.removesuffix(SUFFIX): v.bool() for k, v in state_dict.items()
             if k.endswith(SUFFIX) and k.removesuffix(SUFFIX) in params}
    if masks:
        apply_mask(model, masks)


def density(mask: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Fraction of weights kept, per tensor and (key ``"total"``) over all masked tensors."""
    out = {name: m.float().mean().item() for name, m in mask.items()}
    kept = sum(int(m.sum()) for m in mask.values())
    total = sum(m.numel() for m in mask.values())
    out["total"] = kept / total if total else 1.0
    return out


def overlap(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """Fraction of ``a``'s kept weights that ``b`` keeps too (1 for equal masks; about the
    density of ``b`` for masks drawn independently at random)."""
    if a.keys() != b.keys():
        raise ValueError(f"masks over different tensors: {sorted(a.keys() ^ b.keys())}")
    kept = sum(int(m.sum()) for m in a.values())
    if kept == 0:
        raise ValueError("the first mask keeps no weight; overlap is undefined")
    return sum(int((a[n] & b[n]).sum()) for n in a) / kept


def removed_fraction(model: nn.Module, mask: Mapping[str, torch.Tensor]) -> float:
    """Fraction of all of ``model``'s prunable weights that ``mask`` removes."""
    from opai_lib.models import prunable

    total = sum(p.numel() for p in prunable(model).values())
    return sum(int((~m).sum()) for m in mask.values()) / total


def empty_layers(mask: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the tensors with no weight left: such a layer cuts the network in two."""
    return [name for name, m in mask.items() if not bool(m.any())]


def diagnostics(mask: Mapping[str, torch.Tensor], stages: Mapping[str, str]) -> dict:
    """What a record says about its mask: total and per-layer density, kept counts, empty
    layers, the sparsest layer, and the share of all kept weights in each stage
    (``stages`` maps every masked tensor to its stage, see ``models.stages``)."""
    missing = sorted(set(mask) - set(stages))
    if missing:
        raise ValueError(f"no stage given for masked tensors {missing}")
    kept = {name: int(m.sum()) for name, m in mask.items()}
    total = sum(kept.values())
    layer_density = {name: kept[name] / m.numel() for name, m in mask.items()}
    sparsest = min(layer_density, key=layer_density.get)
    share: dict[str, float] = {}
    for name in mask:
        share[stages[name]] = share.get(stages[name], 0.0) + (kept[name] / total if total else 0.0)
    return {"density": total / sum(m.numel() for m in mask.values()),
            "layer_density": layer_density, "layer_kept": kept,
            "empty_layers": empty_layers(mask),
            "sparsest_layer": {"name": sparsest, "density": layer_density[sparsest]},
            "stage_share": share}

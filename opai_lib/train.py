"""Training and evaluation of a (masked) network.

One loop for every setting: SGD with momentum or Nesterov, weight decay, step or cosine
schedule with warm-up, pruned gradients zeroed before each step (see ``masks``), a
checkpoint after every epoch that a rerun resumes from, channels-last memory on CPU,
mixed precision (bf16 on CPU, fp16 or bf16 on CUDA) and DistributedDataParallel when the
process was started by ``torchrun``.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import itertools
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from opai_lib import masks
from opai_lib.config import Recipe, check_integer, check_parameter, resolve_precision
from opai_lib.store import atomic_write, read_torch


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep freed memory for reuse (True if it could).

    PyTorch's CPU allocator has no cache: every activation is a fresh ``malloc``, and glibc
    serves blocks of a few MB by ``mmap`` and returns them on ``free``, so each training
    step faults in and zeroes its activations' pages again (about 5,000 page faults per
    ResNet-20 step at batch 128). Raising the mmap and trim thresholds keeps those pages;
    it changes no number, only the time (``benchmarks/train_throughput.py``). Called once
    per process by ``train``; False where the C library is not glibc.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    # 32 MiB is the largest mmap threshold glibc accepts on 64-bit systems.
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))


def init_distributed() -> tuple[int, int]:
    """Join the process group ``torchrun`` describes in the environment; (rank, world size).

    Without torchrun (no ``WORLD_SIZE``) this is a single process: (0, 1). The backend is
    NCCL on CUDA and gloo on CPU.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return dist.get_rank(), dist.get_world_size()


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def show_progress() -> bool:
    """A progress bar on an interactive terminal, none under CI or in executed notebooks."""
    return sys.stderr.isatty() and not os.environ.get("CI")


def autocast(device: torch.device, precision: str):
    """Mixed precision for a resolved ``precision`` ("fp32", "bf16" or "fp16"; see
    ``config.resolve_precision``, which train and evaluate call once, not every step)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def prepare(model: nn.Module, device: torch.device) -> nn.Module:
    """Move ``model`` to ``device``, in channels-last layout (faster convolutions on CPU)."""
    return model.to(device=device, memory_format=torch.channels_last)


@torch.no_grad()
def evaluate(model: nn.Module, batches, device=None, precision: str = "fp32") -> dict:
    """Top-1 accuracy and mean cross-entropy, summed over all processes under DDP."""
    device = torch.device(device) if device else next(model.parameters()).device
    precision = resolve_precision(precision, device.type)
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=device)
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, precision):
            logits = model(x.contiguous(memory_format=torch.channels_last))
        totals[0] += F.cross_entropy(logits.float(), y, reduction="sum")
        totals[1] += (logits.argmax(1) == y).sum()
        totals[2] += len(y)
    if _distributed():
        dist.all_reduce(totals)
    model.train(was_training)
    loss, correct, count = totals.tolist()
    return {"accuracy": correct / count, "loss": loss / count}


def save_checkpoint(path: Path, **state) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_weights(model: nn.Module, state_dict: dict) -> None:
    """Load a state dict, registering the masks it carries first."""
    masks.prepare_for_state_dict(model, state_dict)
    model.load_state_dict(state_dict)


def train(model: nn.Module, train_batches, recipe: Recipe, eval_batches=None,
          checkpoint: str | Path | None = None, device=None, progress: bool | None = None,
          seed: int = 0, start_step: int = 0, stop_step: int | None = None) -> list[dict]:
    """Train ``model`` in place by ``recipe``; return one record per epoch.

    With ``checkpoint``, the state is saved after every epoch and a call that finds a
    checkpoint continues from it, giving the same weights as an uninterrupted run.
    ``start_step`` and ``stop_step`` take only the optimizer steps start_step .. stop_step - 1
    of the recipe (the batches and learning rates an uninterrupted run takes there, with a
    fresh optimizer): how a lottery ticket rewound to step k trains on (``lottery``). Such a
    cut run keeps no checkpoint.
    """
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a Recipe, got {type(recipe).__name__}")
    steps_per_epoch = len(train_batches)
    total = recipe.epochs * steps_per_epoch
    stop = total if stop_step is None else stop_step
    check_integer("start_step", start_step, 0)
    check_parameter(isinstance(stop, int) and not isinstance(stop, bool)
                    and start_step < stop <= total, "(start_step, stop_step)",
                    (start_step, stop_step), f"integers with 0 <= start_step < stop_step <= "
                    f"{total}, the recipe's steps ({recipe.epochs} epochs of {steps_per_epoch})")
    check_parameter(checkpoint is None or (start_step, stop) == (0, total), "checkpoint",
                    checkpoint, "None when start_step or stop_step cut the run")
    device = torch.device(device) if device else default_device()
    progress = show_progress() if progress is None else progress
    keep_freed_memory()
    torch.manual_seed(seed)
    model = prepare(model, device)
    net = nn.parallel.DistributedDataParallel(model) if _distributed() else model
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                          nesterov=recipe.nesterov, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: recipe.lr_factor((start_step + step) / steps_per_epoch))
    precision = resolve_precision(recipe.precision, device.type)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    history, start = [], start_step // steps_per_epoch
    # a damaged checkpoint is moved aside with a warning, and training starts over
    state = read_torch(checkpoint, map_location=device) if checkpoint else None
    if state is not None:
        if state["recipe"] != dataclasses.asdict(recipe):
            raise ValueError(f"checkpoint {checkpoint} was written with another recipe: "
                             f"{state['recipe']}; delete it or use that recipe")
        load_weights(model, state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        history, start = state["history"], len(state["history"])

    rank0 = not _distributed() or dist.get_rank() == 0
    for epoch in range(start, recipe.epochs):
        first = epoch * steps_per_epoch
        if first >= stop:
            break
        for obj in (train_batches, getattr(train_batches, "sampler", None)):
            if hasattr(obj, "set_epoch"):
                obj.set_epoch(epoch)
        net.train()
        t0, loss_sum, correct, count = time.perf_counter(), 0.0, 0, 0
        steps = range(max(start_step, first) - first, min(stop, first + steps_per_epoch) - first)
        bar = tqdm(itertools.islice(train_batches, steps.start, steps.stop), total=len(steps),
                   desc=f"epoch {epoch + 1}/{recipe.epochs}",
                   disable=not (progress and rank0), leave=False)
        for x, y in bar:
            x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            y = y.to(device, non_blocking=True)
            with autocast(device, precision):
                logits = net(x)
                loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            masks.mask_gradients_(model)
            scaler.step(opt)
            scaler.update()
            sched.step()
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            count += len(y)
            bar.set_postfix(loss=f"{loss_sum / count:.3f}")
        record = {"epoch": epoch + 1, "train_loss": loss_sum / count,
                  "train_accuracy": correct / count, "lr": opt.param_groups[0]["lr"],
                  "seconds": time.perf_counter() - t0}
        if eval_batches is not None:
            record.update({f"test_{k}": v for k, v in
                           evaluate(model, eval_batches, device, precision).items()})
        history.append(record)
        if checkpoint and rank0:
            save_checkpoint(checkpoint, model=model.state_dict(), optimizer=opt.state_dict(),
                            scheduler=sched.state_dict(), history=history,
                            recipe=dataclasses.asdict(recipe))
    return history

"""Hyper-parameters as frozen dataclasses that check themselves before any compute.

Each field's meaning is in its ``help`` metadata; a wrong type or an out-of-range value
raises a ``ValueError`` naming the field, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import platform
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path


def param(default, help: str, choices: tuple | None = None):
    return field(default=default, metadata={"help": help, "choices": choices})


def matches(value, kind) -> bool:
    """isinstance for an annotation: int, float (an int is a fine float), bool, str, tuple,
    a class, ``list[X]`` (a list or tuple of X: YAML and papermill give lists, Python code
    often tuples), or a union of them (``str | None``); a bool is never an int or float."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, k) for k in typing.get_args(kind))
    if origin is list:
        return isinstance(value, list | tuple) and all(
            matches(v, typing.get_args(kind)[0]) for v in value)
    kind = origin or kind
    if kind is type(None):
        return value is None
    if kind in (int, float) and isinstance(value, bool):
        return False
    return isinstance(value, (int, float) if kind is float else kind)


def check_types(obj) -> None:
    """Check every field of dataclass ``obj`` against its annotation and its choices."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, kind = getattr(obj, f.name), hints[f.name]
        if not matches(value, kind):
            raise ValueError(f"{type(obj).__name__}.{f.name} must be of type "
                             f"{getattr(kind, '__name__', kind)}, got {value!r}")
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ValueError(f"{type(obj).__name__}.{f.name} must be one of {choices}, "
                             f"got {value!r}")


def build(cls, **kwargs):
    """Dataclass ``cls`` from keywords; an unknown name is an error listing the known ones."""
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} of {cls.__name__}; its options are "
                         f"{known}")
    return cls(**kwargs)


def options_of(cls, options, kwargs: dict, owner: str):
    """The options of ``owner``: ``options`` (exactly a ``cls``), or a ``cls`` built from
    ``kwargs``; never both, so a keyword cannot be silently dropped."""
    if options is None:
        return build(cls, **kwargs)
    if kwargs or type(options) is not cls:
        raise ValueError(f"options of {owner} must be one {cls.__name__} (no extra keywords), "
                         f"got {type(options).__name__} and {sorted(kwargs)}")
    return options


def _from_json(value, kind):
    """``value`` read back from JSON as annotation ``kind`` wants it: lists become tuples,
    dicts become the dataclass the annotation names."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kinds = typing.get_args(kind)
    else:
        kinds = (typing.get_origin(kind) or kind,)
    for k in kinds:
        if dataclasses.is_dataclass(k) and isinstance(value, dict):
            return from_dict(k, value)
        if k is tuple and isinstance(value, list):
            return tuple(_from_json(v, tuple) if isinstance(v, list) else v for v in value)
    return value


def from_dict(cls, values: dict):
    """Dataclass ``cls`` from its ``dataclasses.asdict`` read back from JSON (checked as
    when built; an unknown name is an error)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    return build(cls, **{k: _from_json(v, hints[k]) if k in fields else v
                         for k, v in values.items()})


def require(condition: bool, obj, name: str, allowed: str) -> None:
    """A field check of dataclass ``obj``; the error names the field, value and rule."""
    check_parameter(condition, f"{type(obj).__name__}.{name}", getattr(obj, name), allowed)


def check_integer(name: str, value, low: int) -> None:
    """An integer (not a bool) of at least ``low``, or a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def workers(profile: Profile, value: int | None) -> int:
    """A chapter's training processes: ``value`` (an integer >= 1), None the profile's."""
    if value is None:
        return profile.workers
    check_integer("workers", value, 1)
    return value


def check_sparsities(name: str, value) -> tuple[float, ...]:
    """A non-empty list (or tuple) of distinct sparsities in (0, 1), as a tuple; a
    ValueError naming ``name`` otherwise."""
    ok = isinstance(value, list | tuple) and len(value) > 0 and all(
        isinstance(s, int | float) and not isinstance(s, bool) and 0 < s < 1 for s in value)
    check_parameter(ok and len(set(value)) == len(value), name, value,
                    "a non-empty list of distinct numbers in (0, 1)")
    return tuple(float(s) for s in value)


def check_parameter(condition: bool, name: str, value, allowed: str) -> None:
    """A notebook parameter check, run before any compute."""
    if not condition:
        raise ValueError(f"{name} = {value!r}; allowed: {allowed}")


# ---------------------------------------------------------------------------------------
# The machine: what a run's precision resolves to.


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())


@functools.cache
def cpu_model() -> str:
    """The CPU's model name with its family and model numbers (virtual machines often show
    only a generic name), e.g. 'Intel(R) Xeon(R) Processor (family 6, model 207)'."""
    try:
        info = dict(line.split(":", 1) for line in
                    Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
                    if ":" in line)
    except OSError:
        return platform.processor() or platform.machine()
    info = {k.strip(): v.strip() for k, v in info.items()}
    return f"{info.get('model name', '?')} (family {info.get('cpu family', '?')}, " \
           f"model {info.get('model', '?')})"


# oneDNN's instruction sets without bf16 arithmetic, as ONEDNN_MAX_CPU_ISA names them
ONEDNN_NO_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE",
                  "AVX512_CORE_VNNI")


def native_bf16() -> bool:
    """Whether torch computes bf16 natively here: the CPU has AVX512-BF16 or AMX-BF16, and
    neither ATen (``ATEN_CPU_CAPABILITY``) nor oneDNN (``ONEDNN_MAX_CPU_ISA``) is held
    below them. Otherwise oneDNN emulates bf16: training ran 14x slower than fp32 on a
    Zen 3 (AVX2), and 12x on an AMX Xeon with both held at AVX2."""
    import torch  # here, not at the top: the profiles and their checks need no torch

    capped = (torch.backends.cpu.get_cpu_capability() != "AVX512"
              or os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper() in ONEDNN_NO_BF16)
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags()) and not capped


def resolve_precision(precision: str, device: str) -> str:
    """The training precision ``precision`` means on ``device``: ``auto`` is bf16 on CUDA
    and on CPUs with native bf16, else fp32; bf16 that a CPU would emulate is refused."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bf16" if device == "cuda" or native_bf16() else "fp32"
    if precision == "fp16" and device != "cuda":
        raise ValueError("precision 'fp16' needs CUDA; use 'fp32' (or 'bf16' on a CPU with "
                         "native bf16)")
    if precision == "bf16" and device == "cpu" and not native_bf16():
        raise ValueError(f"precision 'bf16' on this CPU ({cpu_model()}) would be emulated "
                         "without AVX512-BF16 or AMX, about 14x slower than fp32; use "
                         "precision 'fp32' (or 'auto', which picks fp32 here)")
    return precision


# ---------------------------------------------------------------------------------------
# Training recipes and profiles.

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Recipe:
    """How a network is trained."""

    epochs: int = param(160, "passes over the training set")
    batch_size: int = param(128, "examples per step, summed over all processes")
    lr: float = param(0.1, "peak learning rate")
    momentum: float = param(0.9, "SGD momentum (0 for plain SGD)")
    nesterov: bool = param(False, "Nesterov momentum")
    weight_decay: float = param(1e-4, "L2 penalty added to the gradient")
    schedule: str = param("step", "learning-rate schedule", ("step", "cosine", "constant"))
    milestones: tuple = param((80, 120), "epochs where the step schedule multiplies by gamma")
    gamma: float = param(0.1, "factor of the step schedule")
    warmup_epochs: float = param(0.0, "linear warm-up from 0 to lr over this many epochs")
    precision: str = param("fp32", "fp32; mixed precision bf16 (CUDA, or a CPU with native "
                           "bf16) or fp16 (CUDA); auto: bf16 where native, else fp32",
                           PRECISIONS)

    def __post_init__(self):
        check_types(self)
        require(self.epochs >= 1, self, "epochs", "an integer >= 1")
        require(self.batch_size >= 1, self, "batch_size", "an integer >= 1")
        require(self.lr > 0, self, "lr", "a positive number")
        require(0 <= self.momentum < 1, self, "momentum", "0 <= momentum < 1")
        require(not self.nesterov or self.momentum > 0, self, "nesterov",
                "False when momentum is 0")
        require(self.weight_decay >= 0, self, "weight_decay", "a number >= 0")
        require(all(isinstance(m, int) and m > 0 for m in self.milestones), self, "milestones",
                "a tuple of positive integers")
        require(0 < self.gamma <= 1, self, "gamma", "0 < gamma <= 1")
        require(0 <= self.warmup_epochs < self.epochs, self, "warmup_epochs",
                "0 <= warmup_epochs < epochs")

    def lr_factor(self, epoch_progress: float) -> float:
        """Multiplier of ``lr`` after ``epoch_progress`` epochs (a fraction is allowed)."""
        if epoch_progress < self.warmup_epochs:
            return epoch_progress / self.warmup_epochs
        if self.schedule == "step":
            return self.gamma ** sum(epoch_progress >= m for m in self.milestones)
        if self.schedule == "cosine":
            t = (epoch_progress - self.warmup_epochs) / (self.epochs - self.warmup_epochs)
            return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
        return 1.0

    def on(self, device: str) -> Recipe:
        """This recipe with its precision resolved for ``device`` (see ``resolve_precision``)."""
        return dataclasses.replace(self, precision=resolve_precision(self.precision, device))


@dataclass(frozen=True)
class Profile:
    """The scale a notebook runs at: data, budget and seeds chosen together."""

    name: str = param("cpu", "the profile's name")
    dataset: str = param("cifar10", "dataset name, see data.DATASETS")
    train_per_class: int = param(0, "training images per class (class-balanced); 0 = all")
    test_per_class: int = param(0, "test images per class; 0 = all")
    score_per_class: int = param(10, "images per class fed to a data-dependent criterion")
    width: float = param(1.0, "width multiplier of CIFAR models (cost falls with its square)")
    seeds: tuple = param((0,), "seeds of repeated runs, paired across methods")
    recipe: Recipe = param(Recipe(), "training recipe")
    device: str = param("cpu", "torch device", ("cpu", "cuda"))
    max_rounds: int = param(0, "the most pruning rounds of an iterative criterion (SynFlow, "
                            "Iterative SNIP, FORCE); 0: each criterion's own (see "
                            "methods.profile_options)")
    workers: int = param(2, "single-threaded processes a chapter trains in (1: its own "
                         "process, no pool to start)")

    def __post_init__(self):
        check_types(self)
        require(self.workers >= 1, self, "workers", "an integer >= 1")
        require(self.max_rounds >= 0, self, "max_rounds", "an integer >= 0 (0: no cap)")
        require(self.train_per_class >= 0 and self.test_per_class >= 0, self,
                "train_per_class", "an integer >= 0")
        require(self.score_per_class >= 1, self, "score_per_class", "an integer >= 1")
        require(len(self.seeds) >= 1 and all(isinstance(s, int) for s in self.seeds), self,
                "seeds", "a non-empty tuple of integers")


PROFILES = {
    # Seconds per notebook: half the synthetic images (enough for two disjoint blocks of
    # concept discovery), one epoch of 5 steps, two examples per class fed to a criterion
    # (GraSP's 3x: 6; with 4, the mask-anatomy chapter took 21-24 s from a cold cache,
    # with 2, 19 s, on 2 cores of an AMD EPYC), iterative criteria in 5 rounds (FORCE's
    # 60 took 41 s of the criteria chapter), runs in the notebook's process (a pool of two
    # takes about 4 s to start, a smoke run under 1 s). Used by the tests.
    "smoke": Profile("smoke", "synthetic", train_per_class=32, test_per_class=32,
                     score_per_class=2, width=0.25, seeds=(0,),
                     recipe=Recipe(epochs=1, batch_size=64, lr=0.05, schedule="constant"),
                     max_rounds=5, workers=1),
    # The default of `make book` and the published record: real CIFAR-10 (JPEG q75), a
    # 2,000-image-per-class subset, short cosine schedules in fp32 (portable: every CPU can
    # check the record). The recipe won benchmarks/recipe_pilot.py (dense ResNet-20 67.2 %
    # against 60.0 % at lr 0.1).
    "cpu": Profile("cpu", "cifar10", train_per_class=2000, test_per_class=0, score_per_class=10,
                   seeds=(0, 1), recipe=Recipe(epochs=4, batch_size=128, lr=0.2, nesterov=True,
                                               schedule="cosine", warmup_epochs=1.0,
                                               weight_decay=5e-4, precision="fp32")),
    # The published CIFAR recipe (160 epochs, x0.1 at 80 and 120), three seeds, on a GPU.
    "cifar-gpu": Profile("cifar-gpu", "cifar10", seeds=(0, 1, 2), device="cuda",
                         recipe=Recipe(epochs=160, milestones=(80, 120), precision="auto")),
    # The DOP paper's ImageNet setting: ResNet-50, 120 epochs, x0.1 at 30/60/90.
    "imagenet": Profile("imagenet", "imagenet", score_per_class=1, seeds=(0,), device="cuda",
                        recipe=Recipe(epochs=120, milestones=(30, 60, 90), precision="auto")),
}


def get_profile(name: str, **overrides) -> Profile:
    """Profile ``name`` with some fields replaced (e.g. ``seeds=(0, 1, 2)``)."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    return dataclasses.replace(PROFILES[name], **overrides)

"""Hyper-parameters as frozen dataclasses that check themselves before any compute.

Each field's meaning is in its ``help`` metadata; a wrong type or an out-of-range value
raises a ``ValueError`` naming the field, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field


def param(default, help: str, choices: tuple | None = None):
    return field(default=default, metadata={"help": help, "choices": choices})


def check_types(obj) -> None:
    """Check every field against its annotation (int, float, bool, str, tuple) and choices."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, kind = getattr(obj, f.name), hints[f.name]
        origin = typing.get_origin(kind) or kind
        if origin is float:  # an int is a fine float; a bool is neither here
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif origin is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, origin)
        if not ok:
            raise ValueError(f"{type(obj).__name__}.{f.name} must be of type "
                             f"{getattr(kind, '__name__', kind)}, got {value!r}")
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ValueError(f"{type(obj).__name__}.{f.name} must be one of {choices}, "
                             f"got {value!r}")


def require(condition: bool, obj, name: str, allowed: str) -> None:
    """A field check of dataclass ``obj``; the error names the field, value and rule."""
    check_parameter(condition, f"{type(obj).__name__}.{name}", getattr(obj, name), allowed)


def check_integer(name: str, value, low: int) -> None:
    """An integer (not a bool) of at least ``low``, or a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def check_parameter(condition: bool, name: str, value, allowed: str) -> None:
    """A notebook parameter check, run before any compute."""
    if not condition:
        raise ValueError(f"{name} = {value!r}; allowed: {allowed}")


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
    precision: str = param("fp32", "fp32, or mixed precision: bf16 (CPU or CUDA), fp16 (CUDA)",
                            ("fp32", "bf16", "fp16"))

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

    def __post_init__(self):
        check_types(self)
        require(self.train_per_class >= 0 and self.test_per_class >= 0, self,
                "train_per_class", "an integer >= 0")
        require(self.score_per_class >= 1, self, "score_per_class", "an integer >= 1")
        require(len(self.seeds) >= 1 and all(isinstance(s, int) for s in self.seeds), self,
                "seeds", "a non-empty tuple of integers")


PROFILES = {
    # Seconds per notebook: synthetic images, one short epoch. Used by the tests.
    "smoke": Profile("smoke", "synthetic", score_per_class=4, width=0.25, seeds=(0,),
                     recipe=Recipe(epochs=1, batch_size=64, lr=0.05, schedule="constant")),
    # The default of `make book`: real CIFAR-10 (JPEG q75), a 2,000-image-per-class subset,
    # short cosine schedules in bf16; the whole book fits in an hour on 2 CPU cores. The
    # recipe won benchmarks/recipe_pilot.py (dense ResNet-20 67.2 % against 60.0 % at lr 0.1).
    "cpu": Profile("cpu", "cifar10", train_per_class=2000, test_per_class=0, score_per_class=10,
                   seeds=(0, 1), recipe=Recipe(epochs=4, batch_size=128, lr=0.2, nesterov=True,
                                               schedule="cosine", warmup_epochs=1.0,
                                               weight_decay=5e-4, precision="bf16")),
    # The published CIFAR recipe (160 epochs, x0.1 at 80 and 120), three seeds, on a GPU.
    "cifar-gpu": Profile("cifar-gpu", "cifar10", seeds=(0, 1, 2), device="cuda",
                         recipe=Recipe(epochs=160, milestones=(80, 120), precision="bf16")),
    # The DOP paper's ImageNet setting: ResNet-50, 120 epochs, x0.1 at 30/60/90.
    "imagenet": Profile("imagenet", "imagenet", score_per_class=1, seeds=(0,), device="cuda",
                        recipe=Recipe(epochs=120, milestones=(30, 60, 90), precision="bf16")),
}


def get_profile(name: str, **overrides) -> Profile:
    """Profile ``name`` with some fields replaced (e.g. ``seeds=(0, 1, 2)``)."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    return dataclasses.replace(PROFILES[name], **overrides)

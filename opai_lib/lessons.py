"""The teaching chapters' experiments, each computed once and kept in a store of its own.

The study's runs are ``study.RunConfig`` records. The background chapters run other
experiments: pruning a trained network and retraining it (``Retraining``), lottery tickets
(``TicketSearch`` and the ``Reinitialised`` control), filter pruning (``FilterRetraining``)
and the CPU time of the networks it makes (``Timing``). Each experiment is a frozen options
dataclass naming everything that decides its numbers (network, data subset, recipe, seed,
pruning schedule...), checked when built and registered in ``record.KINDS``, so that
``record.run`` keys, computes and keeps it like every experiment (``key``, ``run``,
``run_all``, ``cost`` and ``finished`` are ``record``'s, named here for the chapters).

The records live beside the study's, in ``<profile>-lessons`` (``store_dir``), so that
the study's tables never meet them (``python -m opai_lib verify --store`` checks them):
committed in ``book/record/cpu-lessons`` for the cpu profile, git-ignored under ``runs/``
for the others, and under ``$OPAI_RUNS_DIR`` when it is set.

``*_plan`` turn a chapter's parameters into its experiments (a bad parameter is an error
naming it, before any compute); ``*_table`` turn records into the chapters' tables.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import torch

from opai_lib import after_training, data, filters, lottery, masks, models, prune, study
from opai_lib.after_training import MagnitudeOptions
from opai_lib.config import (
    Profile,
    Recipe,
    check_integer,
    check_parameter,
    check_sparsities,
    check_types,
    cpu_model,
    param,
    require,
)
from opai_lib.lottery import LotteryOptions
from opai_lib.record import KINDS, cost, finished, key, run, run_all  # noqa: F401 (chapters' API)
from opai_lib.store import Store
from opai_lib.train import evaluate, prepare, train

SUFFIX = "-lessons"
EVAL_BATCH = 500


def store_dir(profile: str) -> Path:
    """Where the lessons of ``profile`` keep their records: ``study.store_dir``'s rules for
    the folder ``<profile>-lessons`` (``$OPAI_RUNS_DIR/<profile>-lessons`` when set; else
    ``book/record/cpu-lessons`` for the published cpu profile, ``runs/<profile>-lessons``,
    git-ignored, for the others)."""
    return study.store_dir(profile, SUFFIX)


# ---------------------------------------------------------------------------------------
# What every experiment starts from.


@dataclass(frozen=True)
class Setting:
    """The network, data, recipe and seed an experiment trains with."""

    model: str = param("resnet20", "model name, see models.MODELS")
    width: float = param(1.0, "width multiplier of CIFAR models")
    pretrained: bool = param(False, "start from the published CIFAR-10 weights "
                             "(models.PRETRAINED) instead of the seed's initial weights")
    dataset: str = param("cifar10", "dataset name, see data.DATASETS")
    train_per_class: int = param(0, "training images per class (fixed subset); 0 = all")
    test_per_class: int = param(0, "test images per class (fixed subset); 0 = all")
    recipe: Recipe = param(Recipe(), "how the network is trained (or retrained)")
    seed: int = param(0, "seed of the initial weights, the batches and the ties")
    device: str = param("cpu", "torch device", ("cpu", "cuda"))

    def __post_init__(self):
        study.check_network_and_data(self)
        if self.pretrained:
            require(self.model in models.PRETRAINED, self, "model",
                    f"one of {sorted(models.PRETRAINED)} (published weights exist only for them)")
            require(self.width == 1 and self.dataset == "cifar10", self, "pretrained",
                    "True only at width 1 on cifar10 (what the published weights were "
                    f"trained for), got width {self.width} on {self.dataset}")
        object.__setattr__(self, "recipe", self.recipe.on(self.device))

    def datasets(self):
        """The training and test sets (fixed class-balanced subsets, ``study.run_data``)."""
        return study.run_data(self.dataset, self.train_per_class, self.test_per_class)

    def network(self, num_classes: int) -> torch.nn.Module:
        """The published trained network, or the seed's initial one, on the device."""
        net = models.load_pretrained(self.model) if self.pretrained else \
            models.get_model(self.model, num_classes, self.width, seed=self.seed)
        return prepare(net, torch.device(self.device))

    def batches(self, train_set, test_set):
        """Training batches (shuffled and augmented from the seed) and test batches; the
        published weights read inputs normalised as they were trained."""
        norm = models.PRETRAINED_NORMALIZATION if self.pretrained else None
        return (data.batches(train_set, self.recipe.batch_size, True, self.seed, self.device,
                             normalization=norm),
                data.batches(test_set, EVAL_BATCH, False, device=self.device,
                             normalization=norm))

    def start(self):
        """Everything an experiment begins with: (network, training batches, test batches)."""
        train_set, test_set = self.datasets()
        return (self.network(train_set.num_classes), *self.batches(train_set, test_set))


def retraining_recipe(profile: Profile, epochs: int, lr: float) -> Recipe:
    """How a pruned trained network is retrained: the profile's batch size, momentum,
    weight decay and precision, ``epochs`` of a cosine decay from ``lr``, no warm-up."""
    check_integer("epochs", epochs, 1)
    r = profile.recipe
    return Recipe(epochs=epochs, batch_size=r.batch_size, lr=lr, momentum=r.momentum,
                  nesterov=r.nesterov, weight_decay=r.weight_decay, schedule="cosine",
                  milestones=r.milestones, precision=r.precision)


def _require_start(obj, pretrained: bool, why: str) -> None:
    check_parameter(obj.setting.pretrained == pretrained, f"{type(obj).__name__}.setting",
                    obj.setting, f"a Setting with pretrained={pretrained} ({why})")


# ---------------------------------------------------------------------------------------
# The experiments.


@KINDS.register("Retraining")
@dataclass(frozen=True)
class Retraining:
    """Han et al.: the trained network pruned by magnitude in ``pruning.rounds`` steps,
    retrained by ``setting.recipe`` after each (``after_training.prune_and_retrain``).
    Sparsity 0 retrains the dense network by the same recipe: the control."""

    setting: Setting = param(Setting(pretrained=True), "the trained network and its data")
    pruning: MagnitudeOptions = param(MagnitudeOptions(), "sparsity, steps and schedule")

    def __post_init__(self):
        check_types(self)
        _require_start(self, True, "pruning after training starts from a trained network")

    @property
    def device(self) -> str:
        return self.setting.device

    def compute(self, store: Store) -> tuple[dict, None]:
        model, train_batches, test_batches = self.setting.start()
        majority = None
        if self.pruning.rounds == 1:  # what one-shot pruning does before any retraining
            pruned = copy.deepcopy(model)
            masks.apply_mask(pruned, after_training.magnitude_mask(
                pruned, self.pruning.sparsity, self.pruning.scope, self.setting.seed,
                self.pruning.first_layer, self.pruning.last_layer))
            majority = majority_share(pruned, test_batches)
        steps = after_training.prune_and_retrain(
            model, train_batches, self.setting.recipe, test_batches, self.pruning,
            device=self.setting.device, seed=self.setting.seed)
        density = masks.density(masks.get_mask(model))
        density.pop("total")
        sparsest = min(density, key=density.get)
        return {"steps": steps, "mean_instability": after_training.mean_instability(steps),
                "majority_share_pruned": majority, "sparsest_layer": sparsest,
                "sparsest_density": density[sparsest],
                "parameters": filters.parameter_count(model),
                "multiply_adds": filters.multiply_adds(model)}, None


@torch.no_grad()
def majority_share(model: torch.nn.Module, batches) -> float:
    """The share of the images of ``batches`` given the class ``model`` predicts most
    often: 1 / classes when it spreads them evenly, 1 when it answers one class for all."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    counts = None
    for x, _ in batches:
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        logits = model(x)
        c = torch.bincount(logits.argmax(1), minlength=logits.shape[1])
        counts = c if counts is None else counts + c
    model.train(was_training)
    return float(counts.max() / counts.sum())


@KINDS.register("TicketSearch")
@dataclass(frozen=True)
class TicketSearch:
    """Frankle and Carbin: iterative magnitude pruning of the seed's initial network with
    rewinding (``lottery.find_ticket``); the record keeps every round's mask."""

    setting: Setting = param(Setting(), "the initial network, its data and recipe")
    lottery: LotteryOptions = param(LotteryOptions(), "sparsity, rounds and rewind step")

    def __post_init__(self):
        check_types(self)
        _require_start(self, False, "a lottery ticket is found from the initial weights")

    @property
    def device(self) -> str:
        return self.setting.device

    def compute(self, store: Store) -> tuple[dict, dict[str, np.ndarray]]:
        model, train_batches, test_batches = self.setting.start()
        ticket = lottery.find_ticket(model, train_batches, self.setting.recipe, test_batches,
                                     self.lottery, device=self.setting.device,
                                     seed=self.setting.seed)
        arrays = {f"{r}:{name}": bits for r, mask in enumerate(ticket.masks)
                  for name, bits in study.pack_mask(mask).items()}
        return {"rounds": ticket.rounds, "rewind_step": ticket.rewind_step,
                "steps_per_epoch": len(train_batches),
                "mask_shapes": {n: list(m.shape) for n, m in ticket.masks[0].items()}}, arrays


def ticket_masks(record: dict, store: str | Path | Store) -> list[masks.Mask]:
    """The mask of every round of a ``TicketSearch`` record, read from its arrays."""
    arrays = study.open_store(store).read_arrays(record["key"])
    out = []
    for r in range(len(record["rounds"])):
        mask = {}
        for name, shape in record["mask_shapes"].items():
            bits = np.unpackbits(arrays[f"{r}:{name}"])[:math.prod(shape)]
            mask[name] = torch.from_numpy(bits.astype(bool)).view(*shape)
        out.append(mask)
    return out


@KINDS.register("Reinitialised")
@dataclass(frozen=True)
class Reinitialised:
    """Frankle and Carbin's control: round ``round``'s mask of ``ticket`` laid on weights
    drawn afresh from ``init_seed`` (``lottery.reinitialised``) and trained from step 0 with
    the ticket's batches and recipe, so the two differ only in their weights."""

    ticket: TicketSearch = param(TicketSearch(), "the search whose mask is reused")
    round: int = param(1, "which round's mask: 1 .. ticket.lottery.rounds")
    init_seed: int = param(1, "seed of the fresh weights (not the ticket's seed)")

    def __post_init__(self):
        check_types(self)
        require(1 <= self.round <= self.ticket.lottery.rounds, self, "round",
                f"an integer in 1..{self.ticket.lottery.rounds} (the search's pruned rounds)")
        require(self.init_seed >= 0 and self.init_seed != self.ticket.setting.seed, self,
                "init_seed", f"an integer >= 0 other than the ticket's seed "
                f"{self.ticket.setting.seed}")

    @property
    def device(self) -> str:
        return self.ticket.setting.device

    def compute(self, store: Store) -> tuple[dict, None]:
        searched = run(self.ticket, store)  # read back, or computed (or awaited) first
        t0 = time.perf_counter()  # the control's own time, without the search's
        mask = ticket_masks(searched, store)[self.round]
        setting = self.ticket.setting
        model, train_batches, test_batches = setting.start()
        net = lottery.reinitialised(model, mask, self.init_seed)
        result = lottery.train_ticket(net, train_batches, setting.recipe, test_batches,
                                      device=setting.device, seed=setting.seed)
        return {"sparsity": searched["rounds"][self.round]["sparsity"], **result,
                "seconds": time.perf_counter() - t0}, None


@KINDS.register("FilterRetraining")
@dataclass(frozen=True)
class FilterRetraining:
    """Li et al.: ``fraction`` of the filters of every producer of the trained network
    removed by L1 norm (``filters.remove_filters``: a physically smaller network), then
    retrained by ``setting.recipe``."""

    setting: Setting = param(Setting(pretrained=True), "the trained network and its data")
    fraction: float = param(0.5, "fraction of each producer's filters removed, in [0, 1)")

    def __post_init__(self):
        check_types(self)
        require(0 <= self.fraction < 1, self, "fraction", "a number in [0, 1)")
        _require_start(self, True, "filter pruning starts from a trained network")

    @property
    def device(self) -> str:
        return self.setting.device

    def compute(self, store: Store) -> tuple[dict, None]:
        model, train_batches, test_batches = self.setting.start()
        keep = filters.l1_filters(model, float(self.fraction))
        small = filters.remove_filters(model, keep)
        pruned = evaluate(small, test_batches)["accuracy"]
        train(small, train_batches, self.setting.recipe, device=self.setting.device,
              progress=False, seed=self.setting.seed)
        return {"removed": 1 - filters.kept_weights(small) / filters.kept_weights(model),
                "kept": filters.kept_weights(small),
                "parameters": filters.parameter_count(small),
                "multiply_adds": filters.multiply_adds(small),
                "accuracy_before": evaluate(model, test_batches)["accuracy"],
                "accuracy_pruned": pruned,
                "accuracy_retrained": evaluate(small, test_batches)["accuracy"]}, None


@KINDS.register("Timing")
@dataclass(frozen=True)
class Timing:
    """CPU inference time of the dense network and, for every fraction, of the two
    networks ``filters.same_size_networks`` makes (``filters.time_inference``: interleaved
    repeats, medians). The weights are the seed-0 initial ones (a dense kernel's time does
    not depend on them); the CPU is part of the key, so every CPU model gets its own."""

    model: str = param("resnet20", "model name, see models.MODELS")
    width: float = param(1.0, "width multiplier of CIFAR models")
    fractions: tuple = param((0.5,), "fractions of each producer's filters removed")
    batch: int = param(256, "images of 32 x 32 pixels per forward pass")
    repeats: int = param(30, "interleaved repeats; each network's median is kept")
    threads: int = param(1, "torch threads of the timing")
    cpu: str = param("", "the CPU timed, as config.cpu_model() names it")

    measures_time: ClassVar[bool] = True  # its numbers are timings: ``record.verify`` skips it

    def __post_init__(self):
        check_types(self)
        models.MODELS.get(self.model)
        require(0 < self.width < math.inf, self, "width", "a positive finite number")
        require(len(self.fractions) > 0 and all(
            isinstance(f, float) and 0 < f < 1 for f in self.fractions), self, "fractions",
            "a non-empty tuple of floats in (0, 1)")
        for name in ("batch", "repeats", "threads"):
            require(getattr(self, name) >= 1, self, name, "an integer >= 1")
        require(bool(self.cpu), self, "cpu", "the CPU's name, config.cpu_model()")

    def compute(self, store: Store) -> tuple[dict, None]:
        check_parameter(self.cpu == cpu_model(), "Timing.cpu", self.cpu,
                        f"this machine's CPU, {cpu_model()!r}: a timing is measured where "
                        "it is named")
        dense = models.get_model(self.model, width=self.width, seed=0)
        nets, rows = {"dense": dense}, [{"network": "dense", "fraction": 0.0}]
        for f in self.fractions:
            for label, net in filters.same_size_networks(dense, f).items():
                nets[f"{label} {f}"] = net
                rows.append({"network": label, "fraction": f,
                             "kept": filters.kept_weights(net),
                             "parameters": filters.parameter_count(net),
                             "multiply_adds": filters.multiply_adds(net)})
        seconds = filters.time_inference(nets, self.batch, self.repeats, self.threads)
        for row, label in zip(rows, nets, strict=True):
            row["seconds"] = seconds[label]
        return {"timings": rows, "torch": torch.__version__}, None


# ---------------------------------------------------------------------------------------
# Chapters' parameters -> experiments. Every check runs before any compute.


# The published network is evaluated twice a pruning step: on the cpu profile, 250 test
# images per class keep that cheap. A profile that reads other data (the smoke profile's
# synthetic images) reads ``OTHER_DATA`` CIFAR-10 images per class of each split instead.
PRETRAINED_TEST = {"cpu": 250}
OTHER_DATA = 10
# A lottery chapter trains its network about a dozen times: on the cpu profile at half width
# on half the images (a training step at half width took 0.4 times as long as at full
# width on one core, so a training costs about a fifth of a study run); other profiles at
# their own scale (the smoke profile's is small already).
REDUCED = {"cpu": {"width": 0.5, "train_per_class": 1000}}


def _per_class(value: int | None, name: str, default: int, most: int) -> int:
    if value is None:
        return default
    check_parameter(isinstance(value, int) and not isinstance(value, bool)
                    and 0 <= value <= most, name, value, f"None, or 0 (all) or an integer in "
                    f"1..{most}")
    return value


def pretrained_setting(profile: Profile, model: str, train_per_class: int | None,
                       test_per_class: int | None, seed: int) -> Setting:
    """The published CIFAR-10 network ``model`` with ``train_per_class`` CIFAR-10 training
    images per class (None: the profile's) and ``test_per_class`` test images (None: the
    profile's, 250 on the cpu profile); ``OTHER_DATA`` of each where the profile reads
    other data."""
    check_parameter(model in models.PRETRAINED, "model_name", model,
                    f"a network with published CIFAR-10 weights: {sorted(models.PRETRAINED)}")
    own = profile.dataset == "cifar10"
    train_n = _per_class(train_per_class, "train_per_class",
                         profile.train_per_class if own else OTHER_DATA, 5000)
    test_n = _per_class(test_per_class, "test_per_class", PRETRAINED_TEST.get(
        profile.name, profile.test_per_class) if own else OTHER_DATA, 1000)
    check_integer("seed", seed, 0)
    return Setting(model=model, pretrained=True, dataset="cifar10", train_per_class=train_n,
                   test_per_class=test_n, recipe=profile.recipe, seed=seed,
                   device=profile.device)


def initial_setting(profile: Profile, model: str, width: float | None,
                    train_per_class: int | None, seed: int) -> Setting:
    """The seed's initial ``model`` at ``width`` on ``train_per_class`` images per class of
    the profile's data, with its recipe and test set; None: the profile's width and images,
    reduced on the cpu profile (``REDUCED``)."""
    check_parameter(model in models.MODELS, "model_name", model,
                    f"a name of models.MODELS: {models.MODELS.names()}")
    reduced = REDUCED.get(profile.name, {})
    width = reduced.get("width", profile.width) if width is None else width
    check_parameter(isinstance(width, int | float) and not isinstance(width, bool)
                    and 0 < width < math.inf, "width", width, "None or a positive number")
    most = data.max_per_class(profile.dataset, "train") or 10**9
    train_n = _per_class(train_per_class, "train_per_class",
                         reduced.get("train_per_class", profile.train_per_class), most)
    check_integer("seed", seed, 0)
    return Setting(model=model, width=float(width), dataset=profile.dataset,
                   train_per_class=train_n, test_per_class=profile.test_per_class,
                   recipe=profile.recipe, seed=seed, device=profile.device)


def _retrained(profile: Profile, setting: Setting, epochs: int, lr: float) -> Setting:
    check_parameter(isinstance(lr, int | float) and not isinstance(lr, bool) and lr > 0,
                    "retrain_lr", lr, "a positive number")
    return dataclasses.replace(setting, recipe=retraining_recipe(profile, epochs, float(lr)))


def one_shot_plan(profile: Profile, setting: Setting, sparsities, epochs: int,
                  lr: float) -> list[Retraining]:
    """The dense control (sparsity 0) and one-shot magnitude pruning at each sparsity, each
    retrained for ``epochs`` epochs from ``lr``."""
    sparsities = check_sparsities("sparsities", sparsities)
    check_integer("retrain_epochs", epochs, 1)
    setting = _retrained(profile, setting, epochs, lr)
    return [Retraining(setting, MagnitudeOptions(sparsity=s)) for s in (0.0, *sparsities)]


def schedule_plan(profile: Profile, setting: Setting, sparsity: float, rounds,
                  shapes, epochs: int, lr: float) -> list[Retraining]:
    """Magnitude pruning to ``sparsity`` in each number of ``rounds`` steps, the density
    falling by each of ``shapes`` (``prune.schedule_densities``; one step has no shape), with
    ``epochs`` of retraining in all, split equally over the steps: every schedule gets the
    same retraining budget."""
    check_sparsities("schedule_sparsity", [sparsity])
    check_parameter(isinstance(rounds, list | tuple) and len(rounds) > 0 and all(
        isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in rounds)
        and len(set(rounds)) == len(rounds), "rounds", rounds,
        "a non-empty list of distinct integers >= 1")
    check_parameter(isinstance(shapes, list | tuple) and len(shapes) > 0 and all(
        s in prune.SCHEDULES for s in shapes) and len(set(shapes)) == len(shapes), "shapes",
        shapes, f"a non-empty list of distinct names of {prune.SCHEDULES}")
    check_integer("schedule_epochs", epochs, 1)
    check_parameter(all(epochs % r == 0 for r in rounds), "schedule_epochs", epochs,
                    f"a multiple of every entry of rounds {list(rounds)} (each step retrains "
                    "for schedule_epochs / rounds epochs)")
    plan = []
    for r in rounds:
        steps = _retrained(profile, setting, epochs // r, lr)
        for shape in (shapes[:1] if r == 1 else shapes):  # one step: every shape is the same
            plan.append(Retraining(steps, MagnitudeOptions(sparsity=float(sparsity), rounds=r,
                                                           schedule=shape)))
    return plan


@dataclass(frozen=True)
class LotteryPlan:
    """A lottery chapter's experiments: IMP rewound to step 0 and to step k, and the random
    re-initialisation of every pruned round's step-0 mask."""

    rewind_to_init: TicketSearch
    rewind_early: TicketSearch
    controls: tuple

    def all(self) -> list:
        return [self.rewind_to_init, self.rewind_early, *self.controls]


def lottery_plan(setting: Setting, sparsity: float, rounds: int,
                 rewind_epochs: float) -> LotteryPlan:
    """IMP to ``sparsity`` in ``rounds`` rounds, rewound to the initial weights and to the
    step ``rewind_epochs`` epochs into training (at least step 1), with the controls."""
    check_sparsities("sparsity", [sparsity])
    check_integer("rounds", rounds, 1)
    train_set, _ = setting.datasets()
    per_epoch = len(data.batches(train_set, setting.recipe.batch_size, True))
    total = setting.recipe.epochs * per_epoch
    check_parameter(isinstance(rewind_epochs, int | float) and not isinstance(rewind_epochs, bool)
                    and 0 < rewind_epochs * per_epoch < total, "rewind_epochs", rewind_epochs,
                    f"a number of epochs in (0, {setting.recipe.epochs}) (the recipe's "
                    f"{total} steps, {per_epoch} an epoch)")
    k = min(max(1, round(rewind_epochs * per_epoch)), total - 1)
    search = {step: TicketSearch(setting, LotteryOptions(sparsity=float(sparsity),
                                                         rounds=rounds, rewind_step=step))
              for step in (0, k)}
    controls = tuple(Reinitialised(search[0], r, init_seed=setting.seed + 1)
                     for r in range(1, rounds + 1))
    return LotteryPlan(search[0], search[k], controls)


def filter_plan(profile: Profile, setting: Setting, fractions, epochs: int, lr: float
                ) -> tuple[list[FilterRetraining], list[Retraining]]:
    """For every fraction: filter pruning retrained for ``epochs``, and global magnitude
    pruning that removes exactly as many prunable weights, retrained alike; the second list
    starts with the dense control (sparsity 0)."""
    fractions = check_sparsities("fractions", fractions)
    check_integer("retrain_epochs", epochs, 1)
    setting = _retrained(profile, setting, epochs, lr)
    shape = models.get_model(setting.model, width=setting.width)  # the counts need no weights
    removed = [1 - filters.kept_weights(filters.remove_filters(
        shape, filters.l1_filters(shape, f))) / filters.kept_weights(shape) for f in fractions]
    return ([FilterRetraining(setting, f) for f in fractions],
            [Retraining(setting, MagnitudeOptions(sparsity=s)) for s in (0.0, *removed)])


# Images per timed forward pass and interleaved repeats, by profile (the smoke profile
# checks that the chapter runs; it measures nothing).
TIMING = {"smoke": (16, 3)}
DEFAULT_TIMING = (256, 30)


def timing_plan(profile: Profile, setting: Setting, fractions, batch: int | None,
                repeats: int | None, threads: int) -> Timing:
    """The timing of ``setting``'s network and its filter-pruned and unstructured versions
    at ``fractions``, on this machine's CPU; ``batch`` and ``repeats`` None: the profile's
    (``TIMING``, else 256 images and 30 repeats)."""
    default_batch, default_repeats = TIMING.get(profile.name, DEFAULT_TIMING)
    batch = default_batch if batch is None else batch
    repeats = default_repeats if repeats is None else repeats
    check_integer("timing_batch", batch, 1)
    check_integer("timing_repeats", repeats, 1)
    check_integer("threads", threads, 1)
    return Timing(setting.model, setting.width, check_sparsities("fractions", fractions),
                  batch, repeats, threads, cpu_model())


# ---------------------------------------------------------------------------------------
# Tables.


def schedule_label(options: MagnitudeOptions) -> str:
    """'one shot', or '3 steps, linear'."""
    return "one shot" if options.rounds == 1 else f"{options.rounds} steps, {options.schedule}"


def _pruning(record: dict) -> MagnitudeOptions:
    return MagnitudeOptions(**record["options"]["pruning"])


def retraining_table(records: Sequence[dict]) -> pd.DataFrame:
    """One row per ``Retraining`` record: its target sparsity (%), schedule, retraining
    epochs (per step and in all), the dense accuracy, the accuracy right after the last
    pruning step and after its retraining (%), the mean pruning instability, the sparsest
    layer of the final mask and its density (%), and (one shot only, else NaN) the share
    of test images given the most frequent class right after pruning (%)."""
    rows = []
    for rec in records:
        steps, pruning = rec["steps"], _pruning(rec)
        per_step = rec["options"]["setting"]["recipe"]["epochs"]
        majority = rec["majority_share_pruned"]
        rows.append({"sparsity %": round(100 * pruning.sparsity, 6),
                     "schedule": schedule_label(pruning), "steps": len(steps),
                     "epochs per step": per_step, "retraining epochs": per_step * len(steps),
                     "dense %": 100 * steps[0]["accuracy_before"],
                     "after pruning %": 100 * steps[-1]["accuracy_pruned"],
                     "after retraining %": 100 * steps[-1]["accuracy_retrained"],
                     "mean instability": rec["mean_instability"],
                     "sparsest layer": rec["sparsest_layer"].removesuffix(".weight"),
                     "sparsest layer %": 100 * rec["sparsest_density"],
                     "most frequent class %": math.nan if majority is None else 100 * majority})
    return pd.DataFrame(rows)


def standard_error(accuracy_percent: float, images: int) -> float:
    """Standard error, in points, of a test accuracy (%) measured on ``images`` images:
    100 sqrt(p (1 - p) / n) with p the accuracy as a fraction."""
    check_integer("images", images, 1)
    p = accuracy_percent / 100
    check_parameter(0 <= p <= 1, "accuracy_percent", accuracy_percent, "a number in [0, 100]")
    return 100 * math.sqrt(p * (1 - p) / images)


def steps_table(records: Sequence[dict]) -> pd.DataFrame:
    """One row per pruning step of every ``Retraining`` record: its schedule, step,
    sparsity (%), retraining epochs per step and done before it, and the accuracy before pruning,
    right after and after retraining (%), and its instability."""
    rows = []
    for rec in records:
        per_step = rec["options"]["setting"]["recipe"]["epochs"]
        for s in rec["steps"]:
            rows.append({"schedule": schedule_label(_pruning(rec)), "step": s["step"],
                         "sparsity %": 100 * s["sparsity"], "epochs per step": per_step,
                         "epochs before": per_step * (s["step"] - 1),
                         "before %": 100 * s["accuracy_before"],
                         "pruned %": 100 * s["accuracy_pruned"],
                         "retrained %": 100 * s["accuracy_retrained"],
                         "instability": s["instability"]})
    return pd.DataFrame(rows)


TICKET_ARMS = {"init": "rewound to the initial weights", "early": "rewound to step k",
               "reinit": "random re-initialisation"}


def ticket_table(plan_records: Mapping[str, dict | Sequence[dict]]) -> pd.DataFrame:
    """The lottery chapter's table: one row per (arm, round) with the round's sparsity
    (%, to 0.01) and test accuracy (%). ``plan_records`` maps ``init`` and ``early`` to
    ``TicketSearch`` records and ``reinit`` to the list of ``Reinitialised`` records."""
    rows = []
    for arm in ("init", "early"):
        rec = plan_records[arm]
        for r in rec["rounds"]:
            rows.append({"arm": TICKET_ARMS[arm], "round": r["round"],
                         "sparsity %": round(100 * r["sparsity"], 2),
                         "accuracy %": 100 * r["accuracy"],
                         "rewind step": rec["rewind_step"]})
    for rec in plan_records["reinit"]:
        rows.append({"arm": TICKET_ARMS["reinit"], "round": rec["options"]["round"],
                     "sparsity %": round(100 * rec["sparsity"], 2),
                     "accuracy %": 100 * rec["accuracy"],
                     "rewind step": 0})
    return pd.DataFrame(rows)


def filter_table(filter_records: Sequence[dict], magnitude_records: Sequence[dict],
                 timing: dict) -> pd.DataFrame:
    """The filter chapter's table: the dense network (the dense control of
    ``magnitude_records``), and for every fraction the filter-pruned and the unstructured
    network that keeps as many weights: weights kept, parameters, multiply-adds (M),
    accuracy right after pruning and after retraining (%), and from ``timing`` (a
    ``Timing`` record) milliseconds per batch and the speed-up over the dense network."""
    seconds = {(t["network"], t["fraction"]): t["seconds"] for t in timing["timings"]}
    dense_time = seconds[("dense", 0.0)]
    by_kept = {r["steps"][-1]["kept"]: r for r in magnitude_records}
    dense = next(r for r in magnitude_records if r["options"]["pruning"]["sparsity"] == 0)
    rows = [{"network": "dense", "filters removed %": 0.0, "weights kept": dense["steps"][0]
             ["kept"], "parameters": dense["parameters"],
             "multiply-adds (M)": dense["multiply_adds"] / 1e6,
             "after pruning %": 100 * dense["steps"][0]["accuracy_pruned"],
             "after retraining %": 100 * dense["steps"][0]["accuracy_retrained"],
             "ms / batch": 1000 * dense_time, "speed-up": 1.0}]
    for rec in filter_records:
        f = rec["options"]["fraction"]
        twin = by_kept.get(rec["kept"])
        if twin is None:
            raise ValueError(f"no magnitude record keeps {rec['kept']} weights, as filter "
                             f"pruning of {f:g} does: plan both with filter_plan")
        for label, kept, params, macs, pruned, retrained in (
                ("filter-pruned (smaller)", rec["kept"], rec["parameters"],
                 rec["multiply_adds"], rec["accuracy_pruned"], rec["accuracy_retrained"]),
                ("unstructured mask", twin["steps"][-1]["kept"], twin["parameters"],
                 twin["multiply_adds"], twin["steps"][-1]["accuracy_pruned"],
                 twin["steps"][-1]["accuracy_retrained"])):
            t = seconds.get((label, f), math.nan)
            rows.append({"network": label, "filters removed %": 100 * f, "weights kept": kept,
                         "parameters": params, "multiply-adds (M)": macs / 1e6,
                         "after pruning %": 100 * pruned, "after retraining %": 100 * retrained,
                         "ms / batch": 1000 * t, "speed-up": dense_time / t})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------
# What the chapters' prose quotes: numbers (and a few words) by role, not by parameter, so
# the prose holds whatever sparsities or fractions a reader chooses.


def one_shot_summary(curve: pd.DataFrame, chance: float, margin: float = 1.0) -> dict:
    """From ``retraining_table`` of a one-shot plan (the dense control and each sparsity):
    the dense accuracy before and after the control's retraining, and for the lowest
    (``low_``) and highest (``top_``) sparsity the accuracy right after pruning and after
    retraining, with the highest one's share of its most frequent class and sparsest
    layer. ``collapse_``: the same for the lowest sparsity at which the network
    *collapses*, its accuracy right after pruning within ``margin`` points of ``chance``
    (a network answering one class for every image); NaN, and no layer, where none does."""
    rows = curve.sort_values("sparsity %").reset_index(drop=True)
    check_parameter(len(rows) >= 2 and rows.loc[0, "sparsity %"] == 0, "curve",
                    f"{len(rows)} rows", "the dense control (sparsity 0) and a sparsity")
    check_parameter(0 < chance < 100 and margin >= 0, "(chance, margin)", (chance, margin),
                    "chance in (0, 100) and margin >= 0, in points")
    dense, low, top = rows.iloc[0], rows.iloc[1], rows.iloc[-1]
    pruned = rows.iloc[1:]
    hit = pruned[(pruned["after pruning %"] - chance).abs() <= margin]
    cut = hit.iloc[0] if len(hit) else pd.Series(math.nan, index=rows.columns)
    return {"dense": dense["after pruning %"], "dense_retrained": dense["after retraining %"],
            "low_sparsity": low["sparsity %"], "low_pruned": low["after pruning %"],
            "low_drop": dense["after pruning %"] - low["after pruning %"],
            "top_sparsity": top["sparsity %"], "top_pruned": top["after pruning %"],
            "top_retrained": top["after retraining %"],
            "top_cost": dense["after retraining %"] - top["after retraining %"],
            "top_majority": top["most frequent class %"],
            "top_sparsest": top["sparsest layer %"], "top_sparsest_layer": top["sparsest layer"],
            "chance": chance, "collapse_margin": margin,
            "collapse_sparsity": cut["sparsity %"], "collapse_pruned": cut["after pruning %"],
            "collapse_majority": cut["most frequent class %"],
            "collapse_sparsest": cut["sparsest layer %"],
            "collapse_sparsest_layer": cut["sparsest layer"] if len(hit) else "none",
            "collapse_retrained": cut["after retraining %"],
            "collapse_cost": dense["after retraining %"] - cut["after retraining %"]}


def schedule_summary(table: pd.DataFrame, tolerance: float) -> dict:
    """From ``retraining_table`` of a schedule plan: the least (``unstable_``) and the most
    (``stable_``) stable schedule, each with its mean instability and final accuracy, and
    how the first's accuracy compares with the second's (``plots.comparison``)."""
    from opai_lib.plots import comparison

    out = {}
    for role, row in [("unstable", table.loc[table["mean instability"].idxmax()]),
                      ("stable", table.loc[table["mean instability"].idxmin()])]:
        out.update({f"{role}_label": row["schedule"],
                    f"{role}_instability": row["mean instability"],
                    f"{role}_accuracy": row["after retraining %"]})
    out["unstable_vs_stable"] = comparison(out["unstable_accuracy"], out["stable_accuracy"],
                                           tolerance)
    return out


def ticket_summary(table: pd.DataFrame, test_images: int) -> dict:
    """From ``ticket_table``: the dense accuracy (round 0 of the ticket rewound to the
    initial weights), the standard error of an accuracy near it on ``test_images``
    images, and at the last round the accuracy of each arm, the gains of the two tickets
    over the control, and how they compare (``plots.comparison``; within one standard
    error: level)."""
    from opai_lib.plots import comparison

    init = table["arm"] == TICKET_ARMS["init"]
    dense = table.loc[init & (table["round"] == 0), "accuracy %"].iloc[0]
    tolerance = standard_error(dense, test_images)
    last = table[table["round"] == table["round"].max()].set_index("arm")["accuracy %"]
    ticket, rewound, control = (last[TICKET_ARMS[a]] for a in ("init", "early", "reinit"))
    return {"dense": dense, "standard_error": tolerance,
            "ticket": ticket, "rewound": rewound, "control": control,
            "ticket_gain": ticket - control, "rewound_gain": rewound - control,
            "ticket_vs_control": comparison(ticket, control, tolerance),
            "rewound_vs_ticket": comparison(rewound, ticket, tolerance),
            "ticket_vs_dense": comparison(ticket, dense, tolerance)}


def filter_summary(table: pd.DataFrame) -> dict:
    """From ``filter_table``: the dense network's accuracy (before and after the control's
    retraining) and time; for the smallest (``low_``) and largest (``high_``) fraction, the
    share of prunable weights removed, both networks' accuracy right after pruning and
    after retraining, their speed-ups and the smaller network's share of the dense
    multiply-adds; the unstructured speed-ups' range; and the speed-up the largest fraction
    would give were time proportional to multiply-adds, against the measured one."""
    from opai_lib.plots import comparison

    dense = table.iloc[0]
    check_parameter(dense["network"] == "dense", "table", dense["network"],
                    "filter_table's rows, the dense network first")
    filt = table[table["network"] == "filter-pruned (smaller)"].sort_values(
        "filters removed %").reset_index(drop=True)
    mask = table[table["network"] == "unstructured mask"].sort_values(
        "filters removed %").reset_index(drop=True)
    out = {"dense": dense["after pruning %"], "dense_retrained": dense["after retraining %"],
           "dense_ms": dense["ms / batch"], "mask_speedup_min": mask["speed-up"].min(),
           "mask_speedup_max": mask["speed-up"].max()}
    for role, i in [("low", 0), ("high", len(filt) - 1)]:
        out.update({f"{role}_fraction": filt.loc[i, "filters removed %"],
                    f"{role}_weights": 100 * (1 - filt.loc[i, "weights kept"]
                                              / dense["weights kept"]),
                    f"{role}_filter_pruned": filt.loc[i, "after pruning %"],
                    f"{role}_filter_retrained": filt.loc[i, "after retraining %"],
                    f"{role}_mask_pruned": mask.loc[i, "after pruning %"],
                    f"{role}_mask_retrained": mask.loc[i, "after retraining %"],
                    f"{role}_speedup": filt.loc[i, "speed-up"],
                    f"{role}_mask_speedup": mask.loc[i, "speed-up"],
                    f"{role}_macs": filt.loc[i, "multiply-adds (M)"]
                    / dense["multiply-adds (M)"]})
    out["high_ideal"] = 1 / out["high_macs"]
    out["high_vs_ideal"] = comparison(out["high_speedup"], out["high_ideal"], 0.05)
    return out

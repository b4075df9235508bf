"""Runs of the study: one RunConfig in, one result record out, never computed twice.

A run is: data -> model(seed) -> mask (a method of ``methods.METHODS``: a criterion fed a
material, an expander graph, or none) -> masked training -> evaluation -> a record named by
the hash of its config, carrying its mask (packed bits beside the JSON), per-layer
diagnostics and the machine that computed it. Records live in a ``store.Store``: a run is
claimed before it starts, so two processes never compute it twice; an interrupted run
continues from its last epoch checkpoint. The cpu profile's store is the published record,
committed in ``book/record/cpu``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import subprocess
import time
import typing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from opai_lib import data, masks, models, sanity
from opai_lib.config import (
    Profile,
    Recipe,
    check_types,
    cpu_model,
    from_dict,
    native_bf16,
    param,
    require,
)
from opai_lib.materials import Material
from opai_lib.methods import METHODS, profile_options
from opai_lib.store import Store
from opai_lib.store import sweep as store_sweep
from opai_lib.train import evaluate, train

RECORD_DIR = data.PROJECT_ROOT / "book" / "record"
PUBLISHED_PROFILES = ("cpu",)


def store_dir(profile: str, suffix: str = "") -> Path:
    """Where a profile's run records live (folder ``<profile><suffix>``): under
    ``$OPAI_RUNS_DIR`` when set; else the published record ``book/record/`` for the cpu
    profile, ``runs/`` (git-ignored) for the others."""
    name = f"{profile}{suffix}"
    runs = data.env_dir("OPAI_RUNS_DIR")
    if runs is not None:
        return runs / name
    if profile in PUBLISHED_PROFILES:
        return RECORD_DIR / name
    return data.PROJECT_ROOT / "runs" / name


def check_network_and_data(cfg) -> None:
    """The checks of a config that names a network and its data (fields ``model``,
    ``width``, ``dataset``, ``train_per_class``, ``test_per_class``, ``seed``): types, the
    registries, a positive width, a seed >= 0, subsets no larger than a class."""
    check_types(cfg)
    models.MODELS.get(cfg.model)
    data.DATASETS.get(cfg.dataset)
    require(0 < cfg.width < math.inf, cfg, "width", "a positive finite number")
    require(cfg.seed >= 0, cfg, "seed", "an integer >= 0")
    for split in ("train", "test"):
        name, most = f"{split}_per_class", data.max_per_class(cfg.dataset, split)
        require(getattr(cfg, name) >= 0 and (most is None or getattr(cfg, name) <= most),
                cfg, name, f"0 (all) or an integer in 1..{most or 'the class size'}")


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines the numbers of one run; checked when built."""

    model: str = param("resnet20", "model name, see models.MODELS")
    width: float = param(1.0, "width multiplier of CIFAR models")
    dataset: str = param("cifar10", "dataset name, see data.DATASETS")
    train_per_class: int = param(0, "training images per class (fixed subset); 0 = all")
    test_per_class: int = param(0, "test images per class (fixed subset); 0 = all")
    method: str = param("dense", "how the mask is made, see methods.METHODS")
    sparsity: float = param(0.0, "fraction of prunable weights removed, in [0, 1)")
    options: object = param(None, "the method's options (METHODS.get(method).options_class); "
                            "None: its defaults")
    material: Material | None = param(None, "what a data-dependent criterion is fed; None: "
                                      "10 images per class (None for the other methods)")
    seed: int = param(0, "seed of the initial weights, the material, the mask and the batches")
    recipe: Recipe = param(Recipe(), "training recipe; its precision is resolved for device")
    device: str = param("cpu", "torch device", ("cpu", "cuda"))
    draw: int | None = param(None, "seed of the material's draw when it is not the run's seed "
                             "(many draws for one initial network); None: the run's seed")
    sanity: str | None = param(None, "a sanity check of the mask (see sanity.CHECKS); None: "
                               "the mask as its method chose it", (None, *sanity.CHECKS))

    # Fields added after the record was first published: left out of the key while None,
    # so every record written before them keeps its name (tests pin both).
    LATE_FIELDS: typing.ClassVar[tuple[str, ...]] = ("draw", "sanity")

    def __post_init__(self):
        check_network_and_data(self)
        method = METHODS.get(self.method)
        require(0.0 <= self.sparsity < 1.0, self, "sparsity", "a number in [0, 1)")
        require(method.kind != "dense" or self.sparsity == 0, self, "sparsity",
                "0 for the dense method")
        options = method.options() if self.options is None else self.options
        require(type(options) is method.options_class, self, "options",
                f"None or a {method.options_class.__name__} (the options of {self.method!r})")
        object.__setattr__(self, "options", options)
        require(getattr(options, "degree", None) is None or self.sparsity == 0, self,
                "sparsity", "0 when the expander's degree sizes the mask")
        if method.needs_data:
            material = (self.material or Material()).for_dataset(self.dataset)
            object.__setattr__(self, "material", material)
            available = self.train_per_class or data.max_per_class(self.dataset, "train")
            require(material.name != "image" or available is None
                    or material.per_class * material.batches <= available, self, "material",
                    f"at most {available} training images per class in all batches")
        require(method.needs_data or self.material is None, self, "material",
                f"None: method {self.method!r} reads no data")
        require(self.draw is None or (method.needs_data and self.draw >= 0), self, "draw",
                f"None, or an integer >= 0 for a method that reads data ({self.method!r} "
                f"{'does' if method.needs_data else 'does not'})")
        if self.draw == self.seed:  # the run's own draw: one run, one key
            object.__setattr__(self, "draw", None)
        require(self.sanity is None or method.kind != "dense", self, "sanity",
                "None for the dense baseline (it has no mask)")
        require(self.sanity != "invert" or (method.kind == "criterion" and options.rounds == 1),
                self, "sanity", "'invert' only for a one-shot criterion (it inverts scores)")
        object.__setattr__(self, "recipe", self.recipe.on(self.device))

    @classmethod
    def from_dict(cls, values: dict) -> RunConfig:
        """The config a record's ``config`` field was written from."""
        values = dict(values)
        options = values.pop("options", None)
        cfg = from_dict(cls, values)
        if options is not None:
            cfg = dataclasses.replace(
                cfg, options=from_dict(METHODS.get(cfg.method).options_class, options))
        return cfg

    def key(self) -> str:
        """A short hash of every field (the record's name); tests pin a few."""
        values = dataclasses.asdict(self)
        for name in self.LATE_FIELDS:
            if values[name] is None:
                del values[name]
        text = json.dumps(values, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_from_profile(profile: Profile, material: str | Material | None = None,
                        **fields) -> RunConfig:
    """A RunConfig at the scale of ``profile`` (its data, width, recipe, device, the most
    rounds of an iterative criterion). A ``material`` given by name gets the profile's
    ``score_per_class`` examples per class."""
    if material is None and METHODS.get(fields.get("method", "dense")).needs_data:
        material = "image"
    if isinstance(material, str):  # less_patch is one patch per class by definition
        material = Material(material, per_class=1 if material == "less_patch"
                            else profile.score_per_class)
    base = dict(dataset=profile.dataset, train_per_class=profile.train_per_class,
                test_per_class=profile.test_per_class, width=profile.width,
                recipe=profile.recipe, device=profile.device)
    fields["options"] = profile_options(profile, fields.get("method", "dense"),
                                        fields.get("options"))
    return RunConfig(**{**base, **fields, "material": material})


@functools.lru_cache(maxsize=4)
def run_data(dataset: str, train_per_class: int, test_per_class: int):
    """Train and test sets; subsets are drawn with seed 0, the same for every run."""
    train_set, test_set = data.load_dataset(dataset, "train"), data.load_dataset(dataset, "test")
    if train_per_class:
        train_set = train_set.subset(data.balanced_indices(train_set.labels, train_per_class, 0))
    if test_per_class:
        test_set = test_set.subset(data.balanced_indices(test_set.labels, test_per_class, 0))
    return train_set, test_set


def profile_data(profile: Profile):
    """The train and test sets of ``profile`` (``run_data`` at its scale)."""
    return run_data(profile.dataset, profile.train_per_class, profile.test_per_class)


def make_mask(cfg: RunConfig, model, train_set) -> masks.Mask | None:
    """The mask of ``cfg``'s method for ``model`` (None for the dense baseline), its
    material drawn with ``cfg.draw`` (else the seed), shuffled or inverted as ``cfg.sanity``
    says."""
    draw = cfg.seed if cfg.draw is None else cfg.draw
    material = cfg.material.make(train_set, draw) if cfg.material else None
    mask = METHODS.get(cfg.method).mask(model, cfg.options, material, cfg.sparsity, cfg.seed,
                                        invert=cfg.sanity == "invert")
    if cfg.sanity == "shuffle":
        mask = sanity.shuffle_within_layers(mask, cfg.seed)
    return mask


class Start(typing.NamedTuple):
    """What a run starts from: its data, its initial network and the mask chosen on it
    (None for the dense baseline)."""

    train_set: object  # data.ImageSet, or an ImageFolderSet (run_data)
    test_set: object
    model: torch.nn.Module
    mask: masks.Mask | None


def chosen_mask(cfg: RunConfig) -> Start:
    """What a run of ``cfg`` starts from, before it trains (``Start``)."""
    train_set, test_set = run_data(cfg.dataset, cfg.train_per_class, cfg.test_per_class)
    model = initial_model(cfg, train_set.num_classes)
    return Start(train_set, test_set, model, make_mask(cfg, model, train_set))


def initial_model(cfg: RunConfig, num_classes: int, seed: int | None = None):
    """``cfg``'s network with the initial weights of ``seed`` (None: the run's)."""
    return models.get_model(cfg.model, num_classes, cfg.width,
                            seed=cfg.seed if seed is None else seed)


@functools.cache
def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=data.PROJECT_ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=data.PROJECT_ROOT, text=True, capture_output=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def machine(device: str) -> dict:
    """What computed a record: identical numbers are expected only on the same CPU
    family (vector capability), thread count and torch version."""
    info = {"cpu": cpu_model(), "capability": torch.backends.cpu.get_cpu_capability(),
            "native_bf16": native_bf16(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "device": device, "commit": _commit()}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def pack_mask(mask: masks.Mask) -> dict[str, np.ndarray]:
    """The mask as packed bits, one array per layer (the record's ``.npz``)."""
    return {name: np.packbits(m.detach().cpu().numpy().ravel()) for name, m in mask.items()}


def mask_sha256(mask: masks.Mask) -> str:
    """A hash of the mask's layer names, shapes and packed bits: equal masks, equal hashes."""
    h = hashlib.sha256()
    for (name, m), bits in zip(mask.items(), pack_mask(mask).values(), strict=True):
        h.update(f"{name}{tuple(m.shape)}".encode())
        h.update(bits.tobytes())
    return h.hexdigest()


def read_mask(record: dict, store: str | Path | Store) -> masks.Mask | None:
    """The mask a record was trained with (None for a dense run), from its store."""
    if not record["mask_shapes"]:
        return None
    arrays = open_store(store).read_arrays(record["key"])
    out = {}
    for name, shape in record["mask_shapes"].items():
        bits = np.unpackbits(arrays[name])[:math.prod(shape)]
        out[name] = torch.from_numpy(bits.astype(bool)).view(*shape)
    return out


def open_store(store: str | Path | Store) -> Store:
    """A Store from a folder (or the Store itself)."""
    return store if isinstance(store, Store) else Store(store)


def _compute(cfg: RunConfig, store: Store) -> tuple[dict, dict | None]:
    """Train and evaluate ``cfg``: its record and its packed mask."""
    t0 = time.perf_counter()
    train_set, test_set, model, mask = chosen_mask(cfg)
    if cfg.sanity == "reinit":  # the mask chosen on one network, trained on another
        model = initial_model(cfg, train_set.num_classes, sanity.reinit_seed(cfg.seed))
    if mask is not None:
        masks.apply_mask(model, mask)
    mask_seconds = time.perf_counter() - t0
    recipe = cfg.recipe
    history = train(model, data.batches(train_set, recipe.batch_size, True, cfg.seed,
                                        device=cfg.device),
                    recipe, checkpoint=store.checkpoint_path(cfg.key()), device=cfg.device,
                    seed=cfg.seed)
    result = evaluate(model, data.batches(test_set, 500, False, device=cfg.device),
                      precision=recipe.precision)
    record = {
        "key": cfg.key(), "config": dataclasses.asdict(cfg), **result,
        **(masks.diagnostics(mask, models.stages(model, train_set.images.shape[1])) if mask
           else {"density": 1.0}),
        "mask_shapes": {n: list(m.shape) for n, m in mask.items()} if mask else {},
        "mask_sha256": mask_sha256(mask) if mask else None,
        "pruned_nonzero": masks.pruned_nonzero(model), "history": history,
        "mask_seconds": mask_seconds, "seconds": time.perf_counter() - t0,
        "data": train_set.name, "train_images": len(train_set), "test_images": len(test_set),
        "machine": machine(cfg.device),
    }
    return record, pack_mask(mask) if mask else None


def run(cfg: RunConfig, store: str | Path | Store) -> dict:
    """The record of ``cfg`` from ``store``, computing it first if it is not there."""
    store = open_store(store)
    return store.compute(cfg.key(), functools.partial(_compute, cfg, store))


def _key(cfg: RunConfig) -> str:
    return cfg.key()


def worker_threads(workers: int) -> int:
    """Torch threads of each of ``workers`` sweep processes: an equal share of the CPUs."""
    return max(1, (os.cpu_count() or 1) // workers)


def sweep(cfgs: list[RunConfig], store: str | Path | Store, workers: int = 1,
          executor=None) -> list[dict]:
    """Records of all ``cfgs`` (in order), running the missing ones ``workers`` at a time in
    single-threaded processes (or on ``executor``, any ``concurrent.futures.Executor``).

    Independent runs in separate processes use a small CPU better than one process on all
    cores (two single-threaded runs gave 1.3x the throughput of one on two threads).
    """
    store = open_store(store)
    return store_sweep(store, list(cfgs), _key, functools.partial(_compute, store=store),
                       workers=workers, executor=executor, threads=worker_threads(workers))


def finished(cfgs: list[RunConfig], store: str | Path | Store) -> list[dict | None]:
    """The records of ``cfgs`` already in ``store`` (None where a run is missing), computing
    nothing: what a chapter shows while its sweep is still running elsewhere."""
    store = open_store(store)
    return [store.read(cfg.key()) for cfg in cfgs]


def t_half_width(std: float, n: int) -> float:
    """Half-width of the 95 % t-interval of a mean of ``n`` values (NaN for one value)."""
    from scipy import stats

    return stats.t.ppf(0.975, n - 1) * std / math.sqrt(n) if n > 1 else float("nan")


def config_value(record: dict, field: str):
    """A field of a record's config; a dotted name reaches into a nested one
    (``material.name``, ``options.bn_mode``; None where the run has no such part)."""
    value = record["config"]
    for part in field.split("."):
        value = None if value is None else value[part]
    if isinstance(value, dict):
        raise ValueError(f"config field {field!r} is a group ({sorted(value)}); name one of "
                         f"its fields, e.g. {field}.{next(iter(value), 'name')}")
    return tuple(value) if isinstance(value, list) else value


def _columns(runs, fields: list[str]):
    """A DataFrame of ``fields``: the columns of a DataFrame ``runs``, or, from a list of
    records, their config fields (dotted names allowed, see ``config_value``) or top-level
    values (``accuracy``)."""
    import pandas as pd

    if isinstance(runs, pd.DataFrame):
        missing = sorted(set(fields) - set(runs.columns))
        if missing:
            raise ValueError(f"no column(s) {missing}; the table has {list(runs.columns)}")
        return runs[fields].copy()
    return pd.DataFrame([{k: r[k] if k in r and k != "config" else config_value(r, k)
                          for k in fields} for r in runs], columns=fields)


def table(runs, by: list[str], value: str = "accuracy"):
    """Mean, standard deviation, count and 95 % t-interval of ``value`` over seeds, in
    groups of equal ``by`` (config fields of records, or columns of a DataFrame; see
    ``_columns``)."""
    g = _columns(runs, [*by, value]).groupby(by, sort=False, dropna=False)[value]
    out = g.agg(["mean", "std", "count"]).reset_index()
    out["ci95"] = [t_half_width(s, n) for s, n in zip(out["std"], out["count"], strict=True)]
    return out


def paired_differences(runs, by: list[str], vary: str, reference, value: str = "accuracy"):
    """``value`` of each setting of ``vary`` minus that of ``reference``, paired by seed.

    Within each group of equal ``by`` fields, runs are matched on their seed; a seed
    without both runs is left out. One row per group and setting: mean difference, 95 %
    t-interval half-width, number of pairs, and the per-seed differences (in seed order).
    ``runs`` are records (fields: config fields, dotted names allowed) or a DataFrame.
    """
    import pandas as pd

    long = _columns(runs, [*by, vary, "seed", value])
    twice = long[long.duplicated([*by, vary, "seed"], keep=False)]
    if len(twice):
        raise ValueError(f"runs repeat a (group, {vary}, seed): {twice.head(3).to_dict('records')}"
                         "; pairing by seed needs one run each")
    wide = long.pivot_table(index=[*by, "seed"], columns=vary, values=value, sort=False)
    columns = [*by, vary, "mean", "ci95", "count", "per_seed"]
    if wide.empty:
        return pd.DataFrame(columns=columns)
    if reference not in wide.columns:
        raise ValueError(f"no run has {vary} = {reference!r}; there are {list(wide.columns)}")
    out = []
    for group, g in wide.groupby(level=by if len(by) > 1 else by[0], sort=False):
        group = group if isinstance(group, tuple) else (group,)
        for setting in [c for c in g.columns if c != reference]:
            d = (g[setting] - g[reference]).dropna()
            if d.empty:  # this setting has no run paired with the reference in this group
                continue
            out.append({**dict(zip(by, group, strict=True)), vary: setting,
                        "mean": d.mean(), "ci95": t_half_width(d.std(), len(d)),
                        "count": len(d), "per_seed": d.tolist()})
    return pd.DataFrame(out, columns=columns)

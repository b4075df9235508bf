"""Runs of the study: one RunConfig in, one result record out, never computed twice.

A run is: data -> model(seed) -> mask (a criterion fed a material, an expander graph, or
none) -> masked training -> evaluation -> a JSON record named by the hash of its config.
``sweep`` runs the missing records of a grid in parallel processes; an interrupted sweep
resumes where it stopped (finished runs are read back, an unfinished one continues from its
last epoch checkpoint).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import torch

from opai_lib import data, masks, models
from opai_lib.config import Profile, Recipe, check_types, param, require
from opai_lib.train import evaluate, train

EXPANDER_PREFIX = "expander:"


def store_dir(profile: str) -> Path:
    """Where a profile's run records live: ``$OPAI_RUNS_DIR`` or ``runs/`` (git-ignored)."""
    return Path(os.environ.get("OPAI_RUNS_DIR") or data.PROJECT_ROOT / "runs") / profile


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines the numbers of one run."""

    model: str = param("resnet20", "model name, see models.MODELS")
    width: float = param(1.0, "width multiplier of CIFAR models")
    dataset: str = param("cifar10", "dataset name, see data.DATASETS")
    train_per_class: int = param(0, "training images per class (fixed subset); 0 = all")
    test_per_class: int = param(0, "test images per class (fixed subset); 0 = all")
    method: str = param("dense", "'dense', a criterion name, or 'expander:<generator>'")
    sparsity: float = param(0.0, "fraction of prunable weights removed, in [0, 1)")
    method_options: tuple = param((), "extra keyword arguments of the method: (name, value) pairs")
    material: str = param("image", "what a data-dependent criterion is fed, see materials")
    material_per_class: int = param(10, "material examples per class")
    seed: int = param(0, "seed of the initial weights, the material, the mask and the batches")
    recipe: Recipe = param(Recipe(), "training recipe")
    device: str = param("cpu", "torch device", ("cpu", "cuda"))

    def __post_init__(self):
        check_types(self)
        models.MODELS.get(self.model)
        data.DATASETS.get(self.dataset)
        require(0.0 <= self.sparsity < 1.0, self, "sparsity", "a number in [0, 1)")
        require(self.method != "dense" or self.sparsity == 0, self, "sparsity",
                "0 for the dense method")
        require(all(isinstance(o, tuple) and len(o) == 2 and isinstance(o[0], str)
                    for o in self.method_options), self, "method_options",
                "a tuple of (name, value) pairs")
        if self.method.startswith(EXPANDER_PREFIX):
            from opai_lib import expanders

            expanders.GENERATORS.get(self.method.removeprefix(EXPANDER_PREFIX))
        elif self.method != "dense":
            from opai_lib import criteria

            criteria.CRITERIA.get(self.method)
        if self.uses_material():
            from opai_lib import materials

            materials.MATERIALS.get(self.material)
            require(self.material_per_class >= 1, self, "material_per_class",
                    "an integer >= 1")
        else:  # one key for runs that differ only in a material nobody reads
            object.__setattr__(self, "material", "none")
            object.__setattr__(self, "material_per_class", 0)

    def uses_material(self) -> bool:
        """Whether the method feeds data to its criterion."""
        if self.method == "dense" or self.method.startswith(EXPANDER_PREFIX):
            return False
        from opai_lib import criteria

        return criteria.CRITERIA.get(self.method).needs_data

    def key(self) -> str:
        """A short hash naming the run's record."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_from_profile(profile: Profile, **fields) -> RunConfig:
    """A RunConfig at the scale of ``profile`` (its data, width, recipe, device)."""
    base = dict(dataset=profile.dataset, train_per_class=profile.train_per_class,
                test_per_class=profile.test_per_class, width=profile.width,
                material_per_class=profile.score_per_class, recipe=profile.recipe,
                device=profile.device)
    return RunConfig(**{**base, **fields})


@functools.lru_cache(maxsize=4)
def run_data(dataset: str, train_per_class: int, test_per_class: int):
    """Train and test sets; subsets are drawn with seed 0, the same for every run."""
    train_set, test_set = data.load_dataset(dataset, "train"), data.load_dataset(dataset, "test")
    if train_per_class:
        train_set = train_set.subset(data.balanced_indices(train_set.labels, train_per_class, 0))
    if test_per_class:
        test_set = test_set.subset(data.balanced_indices(test_set.labels, test_per_class, 0))
    return train_set, test_set


def make_mask(cfg: RunConfig, model, train_set) -> masks.Mask | None:
    """The mask of ``cfg``'s method for ``model`` (None for the dense baseline)."""
    options = dict(cfg.method_options)
    if cfg.method == "dense":
        return None
    if cfg.method.startswith(EXPANDER_PREFIX):
        from opai_lib import expanders

        return expanders.expander_mask(model, cfg.method.removeprefix(EXPANDER_PREFIX),
                                       seed=cfg.seed, density=1 - cfg.sparsity, **options)
    from opai_lib import materials, prune

    material = materials.make_material(cfg.material, train_set, cfg.material_per_class,
                                       seed=cfg.seed) if cfg.uses_material() else None
    return prune.prune_at_init(model, cfg.method, material, cfg.sparsity, seed=cfg.seed,
                               **options)


def run(cfg: RunConfig, store: str | Path) -> dict:
    """The record of ``cfg`` from ``store``, computing it first if it is not there."""
    store = Path(store)
    path = store / f"{cfg.key()}.json"
    if path.exists():
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    train_set, test_set = run_data(cfg.dataset, cfg.train_per_class, cfg.test_per_class)
    model = models.get_model(cfg.model, train_set.num_classes, cfg.width, seed=cfg.seed)
    mask = make_mask(cfg, model, train_set)
    if mask is not None:
        masks.apply_mask(model, mask)
    mask_seconds = time.perf_counter() - t0
    recipe = cfg.recipe
    history = train(model, data.batches(train_set, recipe.batch_size, True, cfg.seed,
                                        device=cfg.device),
                    recipe, checkpoint=store / f"{cfg.key()}.ckpt", device=cfg.device,
                    seed=cfg.seed)
    result = evaluate(model, data.batches(test_set, 500, False, device=cfg.device),
                      precision=recipe.precision)
    record = {
        "key": cfg.key(), "config": dataclasses.asdict(cfg), **result,
        "density": masks.density(mask)["total"] if mask else 1.0,
        "layer_density": masks.density(mask) if mask else {},
        "pruned_nonzero": masks.pruned_nonzero(model), "history": history,
        "mask_seconds": mask_seconds,
        "seconds": time.perf_counter() - t0, "data": train_set.name,
        "train_images": len(train_set), "test_images": len(test_set),
        "hardware": {"machine": platform.machine(), "processor": platform.processor(),
                     "threads": torch.get_num_threads(), "torch": torch.__version__,
                     "device": cfg.device},
    }
    store.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)
    (store / f"{cfg.key()}.ckpt").unlink(missing_ok=True)
    return record


def _run_in_worker(cfg: RunConfig, store: str, threads: int) -> dict:
    torch.set_num_threads(threads)
    return run(cfg, store)


def sweep(cfgs: list[RunConfig], store: str | Path, workers: int = 1) -> list[dict]:
    """Records of all ``cfgs`` (in order), running the missing ones ``workers`` at a time.

    Independent runs in separate single-threaded processes use a small CPU better than one
    process on all cores; each worker gets an equal share of the threads.
    """
    store = Path(store)
    todo = list({c.key(): c for c in cfgs if not (store / f"{c.key()}.json").exists()}.values())
    if workers > 1 and len(todo) > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            list(pool.map(_run_in_worker, todo, [str(store)] * len(todo),
                          [threads] * len(todo)))
    else:
        for cfg in todo:
            run(cfg, store)
    return [run(c, store) for c in cfgs]


def _t_half_width(std: float, n: int) -> float:
    """Half-width of the 95 % t-interval of a mean of ``n`` values (NaN for one value)."""
    from scipy import stats

    return stats.t.ppf(0.975, n - 1) * std / math.sqrt(n) if n > 1 else float("nan")


def table(records: list[dict], by: list[str], value: str = "accuracy"):
    """Mean, standard deviation, count and 95 % t-interval of ``value`` over seeds."""
    import pandas as pd

    rows = [{**{k: r["config"][k] for k in by}, value: r[value]} for r in records]
    g = pd.DataFrame(rows).groupby(by, sort=False)[value]
    out = g.agg(["mean", "std", "count"]).reset_index()
    out["ci95"] = [_t_half_width(s, n) for s, n in zip(out["std"], out["count"], strict=True)]
    return out


def paired_differences(records: list[dict], by: list[str], vary: str, reference,
                       value: str = "accuracy"):
    """``value`` of each setting of ``vary`` minus that of ``reference``, paired by seed.

    Within each group of equal ``by`` fields, runs are matched on their seed; a seed
    without both runs is left out. One row per group and setting: mean difference, 95 %
    t-interval half-width, number of pairs, and the per-seed differences (in seed order).
    """
    import pandas as pd

    rows = [{**{k: r["config"][k] for k in [*by, vary, "seed"]}, value: r[value]}
            for r in records]
    wide = pd.DataFrame(rows).pivot_table(index=[*by, "seed"], columns=vary, values=value)
    out = []
    for group, g in wide.groupby(level=by, sort=False):
        group = group if isinstance(group, tuple) else (group,)
        for setting in [c for c in g.columns if c != reference]:
            d = (g[setting] - g[reference]).dropna()
            out.append({**dict(zip(by, group, strict=True)), vary: setting,
                        "mean": d.mean(), "ci95": _t_half_width(d.std(), len(d)),
                        "count": len(d), "per_seed": d.tolist()})
    return pd.DataFrame(out)

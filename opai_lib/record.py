"""The published record: keyed experiments, and checking that they come out again.

The study's runs are ``study.RunConfig`` records (``study.run``). Every other computation
that a chapter keeps (the teaching chapters' experiments, the mask-anatomy tables) is an
*experiment*: a frozen options dataclass, registered in ``KINDS``, naming everything that
decides its numbers and computing them in ``options.compute(store) -> (result, arrays)``.
``key`` hashes it, ``run`` returns its record from a store, computing it first if it is
missing (``store.Store.compute``: claimed, computed once, written atomically, resumable).

The cpu profile's stores (``book/record/cpu`` and its ``-lessons`` and ``-anatomy``
siblings) are committed in git. ``verify`` re-runs a few records of a store from their
configs or options into a scratch store; ``compare`` sets a recomputed store of runs beside
the published one. Each row says whether the numbers (accuracy and mask, or every field of
an experiment's result) came out identical and whether the machine matches (same CPU model
and vector capability, thread count and torch version): identical numbers are expected
only then. Elsewhere a run's difference is set beside the seed-to-seed spread of the same
setting.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from opai_lib import study
from opai_lib.config import check_integer, from_dict
from opai_lib.registry import Registry
from opai_lib.store import Store
from opai_lib.store import sweep as store_sweep

# Options dataclasses whose records ``verify`` can re-create, by class name.
KINDS: Registry[type] = Registry("experiment kind")


# ---------------------------------------------------------------------------------------
# Experiments: keys, records, runs.


def key(options) -> str:
    """A short hash of the experiment's kind and every one of its options (nested
    dataclasses included): the name of its record."""
    if not dataclasses.is_dataclass(options) or isinstance(options, type):
        raise TypeError(f"options must be an experiment's options dataclass, got {options!r}")
    text = json.dumps({"kind": type(options).__name__, **dataclasses.asdict(options)},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _compute(options, store: Store) -> tuple[dict, dict | None]:
    """The record of ``options``: what its ``compute`` returns, under its key, kind and
    options, with the seconds it took and the machine (``options.device``, else the CPU)
    that computed it."""
    t0 = time.perf_counter()
    result, arrays = options.compute(store)
    seconds = result.pop("seconds", time.perf_counter() - t0)  # its own, if it says so
    record = {"key": key(options), "kind": type(options).__name__,
              "options": dataclasses.asdict(options), **result, "seconds": seconds,
              "machine": study.machine(getattr(options, "device", "cpu"))}
    return record, arrays


def run(options, store: str | Path | Store) -> dict:
    """The record of experiment ``options`` from ``store``, computed first if missing."""
    store = study.open_store(store)
    return store.compute(key(options), functools.partial(_compute, options, store))


def run_all(experiments: Sequence, store: str | Path | Store, workers: int = 1) -> list[dict]:
    """The records of ``experiments`` (in order), the missing ones computed ``workers`` at
    a time in single-threaded processes (``store.sweep``); each exactly once."""
    check_integer("workers", workers, 1)
    store = study.open_store(store)
    return store_sweep(store, list(experiments), key, functools.partial(_compute, store=store),
                       workers=workers, threads=study.worker_threads(workers))


def cost(records: Sequence[dict]) -> tuple[float, str]:
    """Minutes the records took to compute (the sum of their seconds: CPU-minutes for
    single-threaded runs) and the machines that computed them (their CPUs, each once)."""
    minutes = sum(r["seconds"] for r in records) / 60
    cpus = ", ".join(sorted({r["machine"]["cpu"] for r in records})) or "no machine"
    return minutes, cpus


def finished(experiments: Sequence, store: str | Path | Store) -> list[dict | None]:
    """The records already in ``store`` (None where missing), computing nothing."""
    store = study.open_store(store)
    return [store.read(key(e)) for e in experiments]


def options_of(record: dict):
    """The options an experiment's record was computed from (its kind, from ``KINDS``)."""
    return from_dict(KINDS.get(record["kind"]), record["options"])


# ---------------------------------------------------------------------------------------
# Verifying the published record.

SAME_MACHINE = ("cpu", "capability", "threads", "torch", "device")  # identical numbers need all


def _setting(record: dict) -> str:
    """A record's config without its seed: runs of one setting."""
    cfg = dict(record["config"])
    cfg.pop("seed")
    return repr(sorted(cfg.items()))


def seed_spread(records: list[dict]) -> dict[str, float]:
    """Standard deviation of accuracy over the seeds of each setting (two seeds or more)."""
    by: dict[str, list[float]] = {}
    for r in records:
        by.setdefault(_setting(r), []).append(r["accuracy"])
    return {k: statistics.stdev(v) for k, v in by.items() if len(v) > 1}


def _describe(cfg: dict) -> str:
    return f"{cfg['model']} {cfg['method']} s={cfg['sparsity']:g} seed {cfg['seed']}"


def _judged(wrote: dict, here: dict, identical: bool, elsewhere: str = "") -> dict:
    """A row's machine columns and verdict: ``identical``, else a difference the machine
    that wrote the record (``wrote``: its CPU family, thread count, torch and device) must
    not show on machine ``here``, or one that another machine may (``elsewhere``: how
    large)."""
    same = {k: wrote.get(k) == here.get(k) for k in SAME_MACHINE}
    same_machine = all(same.values())
    verdict = ("identical" if identical else "DIFFERS on the same machine" if same_machine
               else "differs on another machine" + (f" ({elsewhere})" if elsewhere else ""))
    return {"identical": identical, "same_machine": same_machine,
            "same_cpu": same["cpu"] and same["capability"], "same_threads": same["threads"],
            "verdict": verdict}


def comparison(published: dict, fresh: dict, spread: dict[str, float]) -> dict:
    """One row: published and recomputed accuracy, mask and machine match, and a verdict."""
    same_mask = published.get("mask_sha256") == fresh.get("mask_sha256")
    diff = fresh["accuracy"] - published["accuracy"]
    sd = spread.get(_setting(published))
    elsewhere = f"{diff:+.4f}; seed sd " + (f"{sd:.4f}" if sd is not None else "unknown")
    return {"key": published["key"], "run": _describe(published["config"]),
            "published": published["accuracy"], "recomputed": fresh["accuracy"],
            "difference": diff, "same_mask": same_mask, "seed_sd": sd,
            **_judged(published["machine"], fresh["machine"], diff == 0 and same_mask, elsewhere)}


def largest_difference(a, b) -> float:
    """The largest absolute difference between the numbers of two JSON values: 0 when they
    are identical, infinite when they differ in anything but numbers (shape, keys, text)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return math.inf
        return max((largest_difference(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return math.inf
        return max((largest_difference(x, y) for x, y in zip(a, b, strict=True)), default=0.0)
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b))
    if numbers and not (a == b or (math.isnan(a) and math.isnan(b))):
        diff = abs(a - b)
        return diff if math.isfinite(diff) else math.inf
    return 0.0 if numbers or a == b else math.inf


# What an experiment's record says beyond its result: not compared.
_NOT_RESULT = ("key", "kind", "options", "seconds", "machine")


def experiment_comparison(published: dict, fresh: dict) -> dict:
    """One row for an experiment's record: the largest difference of any number of its
    result (every field but key, options, seconds and machine), machine match, verdict."""
    diff = largest_difference(*({k: v for k, v in r.items() if k not in _NOT_RESULT}
                                for r in (published, fresh)))
    return {"key": published["key"], "run": published["kind"], "published": None,
            "recomputed": None, "difference": diff, "same_mask": None, "seed_sd": None,
            **_judged(published["machine"], fresh["machine"], diff == 0,
                      f"largest difference {diff:.4g}")}


def _checkable(record: dict) -> bool:
    """A run, or an experiment whose numbers are not timings (``measures_time``)."""
    return "config" in record or not getattr(KINDS.get(record["kind"]), "measures_time", False)


def _picked(store: str | Path | Store, n: int | None, seed: int | None, wanted
            ) -> tuple[list[dict], list, list[dict]]:
    """``n`` records of ``store`` that ``wanted`` accepts (None: all of them), chosen at
    random by ``seed``, with what each was made from (a RunConfig, or an experiment's
    options), checked to have the record's key still; and every record ``wanted`` accepts."""
    published = study.open_store(store)
    keys = published.finished()
    if not keys:
        raise ValueError(f"no finished record in {published.root}")
    records = [r for r in (published.read(k) for k in keys) if wanted(r)]
    picked = records if n is None else random.Random(seed).sample(records,
                                                                  min(n, len(records)))
    made = [study.RunConfig.from_dict(r["config"]) if "config" in r else options_of(r)
            for r in picked]
    for record, what in zip(picked, made, strict=True):
        now = what.key() if "config" in record else key(what)
        if now != record["key"]:
            raise ValueError(f"record {record['key']} has a config whose key is now "
                             f"{now}: the code's keys changed since it was written")
    return picked, made, records


@contextlib.contextmanager
def _threads_of(record: dict):
    """Torch on the thread count that wrote ``record`` inside, its own count restored."""
    threads = torch.get_num_threads()
    torch.set_num_threads(record["machine"]["threads"])
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def verify(store: str | Path | Store, n: int, seed: int | None = None,
           scratch: str | Path | None = None) -> list[dict]:
    """Re-run ``n`` randomly chosen records of ``store`` (study runs, or experiments of
    ``KINDS`` other than timings) into a scratch store, each with the thread count that
    wrote it, and compare."""
    picked, made, records = _picked(store, n, seed, _checkable)
    spread = seed_spread([r for r in records if "config" in r])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        fresh_store = Store(scratch or tmp)
        for record, what in zip(picked, made, strict=True):
            with _threads_of(record):
                if "config" in record:
                    rows.append(comparison(record, study.run(what, fresh_store), spread))
                else:
                    rows.append(experiment_comparison(record, run(what, fresh_store)))
    return rows


def verify_masks(store: str | Path | Store, n: int | None = None, seed: int | None = None
                 ) -> list[dict]:
    """Choose again the mask of ``n`` randomly chosen runs of ``store`` (None: every run
    with a mask), without training, each with the thread count that wrote it, and compare
    its hash with the record's: a change to a criterion, a material or the selection
    checked against the whole record in minutes, where ``verify`` trains for hours."""
    picked, made, _ = _picked(store, n, seed, lambda r: bool(r.get("mask_sha256")))
    rows = []
    for record, cfg in zip(picked, made, strict=True):
        with _threads_of(record):
            same_mask = study.mask_sha256(study.chosen_mask(cfg).mask) == record["mask_sha256"]
            here = study.machine(cfg.device)
        rows.append({"key": record["key"], "run": _describe(record["config"]),
                     "published": None, "recomputed": None, "difference": None,
                     "same_mask": same_mask, "seed_sd": None,
                     **_judged(record["machine"], here, same_mask)})
    return rows


def compare(fresh: str | Path | Store, published: str | Path | Store) -> list[dict]:
    """Rows for every record of ``fresh`` that ``published`` holds too."""
    fresh, published = study.open_store(fresh), study.open_store(published)
    records = {k: published.read(k) for k in published.finished()}
    spread = seed_spread(list(records.values()))
    return [comparison(records[k], fresh.read(k), spread)
            for k in fresh.finished() if k in records]


def failed(rows: list[dict]) -> bool:
    """Whether a row broke the promise: a difference on the machine that wrote the record."""
    return any(r["same_machine"] and not r["identical"] for r in rows)

"""The published record: checking that its runs come out again.

The cpu profile's store (``book/record/cpu``) is committed in git. ``verify`` re-runs a few
of its records from their configs into a scratch store; ``compare`` sets a recomputed store
beside the published one. Each row says whether accuracy and mask came out identical and
whether the machine matches (same CPU model and vector capability, thread count and torch
version): identical numbers are expected only then. Elsewhere the difference is set beside
the seed-to-seed spread of the same setting.
"""

from __future__ import annotations

import random
import statistics
import tempfile
from pathlib import Path

import torch

from opai_lib import study
from opai_lib.store import Store

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


def comparison(published: dict, fresh: dict, spread: dict[str, float]) -> dict:
    """One row: published and recomputed accuracy, mask and machine match, and a verdict."""
    same = {k: published["machine"].get(k) == fresh["machine"].get(k) for k in SAME_MACHINE}
    same_machine = all(same.values())
    same_mask = published.get("mask_sha256") == fresh.get("mask_sha256")
    diff = fresh["accuracy"] - published["accuracy"]
    sd = spread.get(_setting(published))
    identical = diff == 0 and same_mask
    if identical:
        verdict = "identical"
    elif same_machine:
        verdict = "DIFFERS on the same machine"
    else:
        verdict = f"differs on another machine ({diff:+.4f}; seed sd " + \
                  (f"{sd:.4f})" if sd is not None else "unknown)")
    return {"key": published["key"], "run": _describe(published["config"]),
            "published": published["accuracy"], "recomputed": fresh["accuracy"],
            "difference": diff, "identical": identical, "same_mask": same_mask,
            "same_machine": same_machine,
            "same_cpu": same["cpu"] and same["capability"], "same_threads": same["threads"],
            "seed_sd": sd, "verdict": verdict}


def verify(store: str | Path | Store, n: int, seed: int | None = None,
           scratch: str | Path | None = None) -> list[dict]:
    """Re-run ``n`` randomly chosen records of ``store`` into a scratch store (each with the
    thread count that wrote it) and compare."""
    published = study.open_store(store)
    keys = published.finished()
    if not keys:
        raise ValueError(f"no finished record in {published.root}")
    records = [published.read(k) for k in keys]
    spread = seed_spread(records)
    picked = random.Random(seed).sample(records, min(n, len(records)))
    configs = [study.RunConfig.from_dict(r["config"]) for r in picked]
    for record, cfg in zip(picked, configs, strict=True):
        if cfg.key() != record["key"]:
            raise ValueError(f"record {record['key']} has a config whose key is now "
                             f"{cfg.key()}: the code's keys changed since it was written")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        fresh_store = Store(scratch or tmp)
        threads = torch.get_num_threads()
        for record, cfg in zip(picked, configs, strict=True):
            torch.set_num_threads(record["machine"]["threads"])
            try:
                fresh = study.run(cfg, fresh_store)
            finally:
                torch.set_num_threads(threads)
            rows.append(comparison(record, fresh, spread))
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

"""The published record: configs read back from records, verify and compare."""

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
import typing

import pytest
import torch

from opai_lib import config, criteria, expanders, masks, record, study
from opai_lib.__main__ import main
from opai_lib.materials import Material
from opai_lib.store import Store

SMOKE = config.get_profile("smoke")


@pytest.mark.parametrize("cfg", [
    study.RunConfig(),
    study.RunConfig(method="grasp", sparsity=0.9, material=Material("stitch", sigma=0.75)),
    study.RunConfig(method="expander:rreg", sparsity=0.9,
                    options=expanders.ExpanderOptions(best_of=3)),
    study.RunConfig(method="synflow", sparsity=0.9,
                    options=criteria.SynflowOptions(input_shape=(3, 32, 32))),
])
def test_config_reads_back_from_its_json(cfg):
    back = study.RunConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert back == cfg and back.key() == cfg.key()


def _record(accuracy, seed=0, machine=None, mask="m"):
    return {"key": f"k{seed}", "accuracy": accuracy, "mask_sha256": mask,
            "config": {"model": "resnet20", "method": "snip", "sparsity": 0.9, "seed": seed},
            "machine": machine or {"cpu": "A", "capability": "AVX2", "threads": 1,
                                   "torch": "2", "device": "cpu"}}


def test_comparison_verdicts():
    pub = [_record(0.50, 0), _record(0.54, 1)]
    spread = record.seed_spread(pub)
    assert list(spread.values()) == [pytest.approx(0.04 / 2 ** 0.5)]
    assert record.comparison(pub[0], _record(0.50), spread)["verdict"] == "identical"
    same = record.comparison(pub[0], _record(0.51), spread)
    assert same["verdict"] == "DIFFERS on the same machine" and record.failed([same])
    masked = record.comparison(pub[0], _record(0.50, mask="other"), spread)
    assert masked["verdict"].startswith("DIFFERS") and not masked["same_mask"]
    other = record.comparison(pub[0], _record(0.51, machine={"cpu": "B", "threads": 1}), spread)
    assert other["verdict"].startswith("differs on another machine (+0.0100; seed sd 0.0283")
    assert not record.failed([other])


def test_largest_difference_of_json_values():
    a = {"x": [1, 2.5, {"y": float("nan")}], "name": "snip", "ok": True}
    assert record.largest_difference(a, json.loads(json.dumps(a))) == 0
    assert record.largest_difference(a, {**a, "x": [1, 2.0, {"y": float("nan")}]}) == 0.5
    assert record.largest_difference(a, {**a, "name": "grasp"}) == float("inf")
    assert record.largest_difference(a, {**a, "ok": False}) == float("inf")
    assert record.largest_difference(a, {**a, "x": [1, 2.5]}) == float("inf")
    assert record.largest_difference({"x": 1}, {"x": 1, "z": 0}) == float("inf")
    assert record.largest_difference(1.0, float("inf")) == float("inf")


@record.KINDS.register("_DrawNumbers")
@dataclasses.dataclass(frozen=True)
class _DrawNumbers:
    """A cheap experiment for the tests: seeded random numbers."""

    seed: int = 0
    count: int = 3

    def compute(self, store):
        g = torch.Generator().manual_seed(self.seed)
        return {"numbers": torch.rand(self.count, generator=g).tolist()}, None


@record.KINDS.register("_TimeSomething")
@dataclasses.dataclass(frozen=True)
class _TimeSomething:
    measures_time: typing.ClassVar[bool] = True

    def compute(self, store):
        return {"took": time.perf_counter()}, None


def test_verify_recomputes_experiments_and_catches_a_changed_one(tmp_path, capsys):
    published = Store(tmp_path)
    made = [record.run(_DrawNumbers(seed), published) for seed in (0, 1)]
    record.run(_TimeSomething(), published)  # a timing cannot come out again: never picked
    rows = record.verify(published, n=5, seed=0)
    assert sorted(r["key"] for r in rows) == sorted(m["key"] for m in made)
    assert all(r["verdict"] == "identical" and r["run"] == "_DrawNumbers" for r in rows)
    edited = {**made[0], "numbers": [x + 0.25 for x in made[0]["numbers"]]}
    published.write(made[0]["key"], edited, published.read_arrays(made[0]["key"]))
    rows = {r["key"]: r for r in record.verify(published, n=5, seed=0)}
    assert rows[made[0]["key"]]["verdict"] == "DIFFERS on the same machine"
    assert rows[made[0]["key"]]["difference"] == pytest.approx(0.25)
    assert rows[made[1]["key"]]["verdict"] == "identical" and record.failed(list(rows.values()))
    assert main(["verify", "--n", "5", "--store", str(tmp_path)]) == 1  # the lines print
    assert "largest difference 0.25" in capsys.readouterr().out


@pytest.mark.slow
def test_verify_recomputes_identically_and_catches_a_changed_record(tmp_path):
    published = Store(tmp_path / "published")
    cfgs = [study.config_from_profile(SMOKE, model="tiny", method=m, sparsity=s)
            for m, s in [("dense", 0.0), ("snip", 0.8)]]
    records = study.sweep(cfgs, published)
    rows = record.verify(published, n=2, seed=0)
    assert [r["verdict"] for r in rows] == ["identical", "identical"]
    assert all(r["same_machine"] and r["same_mask"] for r in rows)
    assert main(["verify", "--n", "1", "--store", str(published.root)]) == 0
    # a record edited by hand no longer verifies
    snip = records[1]
    published.write(snip["key"], {**snip, "accuracy": snip["accuracy"] + 0.01},
                    published.read_arrays(snip["key"]))
    rows = record.verify(published, n=2, seed=0)
    assert record.failed(rows)
    assert main(["verify", "--n", "2", "--store", str(published.root)]) == 1
    # a recomputed store beside the published one
    fresh = Store(tmp_path / "fresh")
    study.sweep(cfgs, fresh)
    verdicts = {r["key"]: r["verdict"] for r in record.compare(fresh, published)}
    assert verdicts == {records[0]["key"]: "identical",
                        snip["key"]: "DIFFERS on the same machine"}


@pytest.mark.slow
def test_verify_masks_chooses_every_mask_again_without_training(tmp_path, monkeypatch, capsys):
    published = Store(tmp_path)
    cfgs = [study.config_from_profile(SMOKE, model="tiny", method=m, sparsity=s, **extra)
            for m, s, extra in [("dense", 0.0, {}), ("snip", 0.8, {}), ("grasp", 0.8, {}),
                                ("force", 0.9, {}), ("snip", 0.8, {"sanity": "shuffle"})]]
    records = study.sweep(cfgs, published)
    monkeypatch.setattr(study, "train", lambda *a, **k: pytest.fail("trained"))
    rows = record.verify_masks(published)
    assert sorted(r["key"] for r in rows) == sorted(r["key"] for r in records[1:])  # no dense
    assert all(r["verdict"] == "identical" and r["same_mask"] for r in rows)
    assert len(record.verify_masks(published, n=2, seed=0)) == 2
    # a record whose mask is not the one its config chooses (here: another run's)
    snip, grasp = records[1], records[2]
    published.write(snip["key"], {**snip, "mask_sha256": grasp["mask_sha256"]},
                    published.read_arrays(snip["key"]))
    rows = {r["key"]: r for r in record.verify_masks(published)}
    assert rows[snip["key"]]["verdict"] == "DIFFERS on the same machine"
    assert rows[grasp["key"]]["verdict"] == "identical" and record.failed(list(rows.values()))
    assert main(["verify", "--masks", "--store", str(published.root)]) == 1
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(snip["key"]))
    assert "mask DIFFERENT" in line and "DIFFERS on the same machine" in line


@pytest.mark.slow
def test_sweep_with_one_and_two_workers_gives_the_same_records(tmp_path):
    cfgs = [study.config_from_profile(SMOKE, model="tiny", method=m, sparsity=s, seed=seed)
            for m, s in [("dense", 0.0), ("grasp", 0.8), ("expander:rreg", 0.3)]
            for seed in (0, 1)]
    torch.set_num_threads(study.worker_threads(2))  # numbers depend on the thread count
    one = study.sweep(cfgs, tmp_path / "one", workers=1)
    two = study.sweep(cfgs, tmp_path / "two", workers=2)
    for a, b in zip(one, two, strict=True):
        assert a["key"] == b["key"]
        assert (a["accuracy"], a["loss"], a["mask_sha256"]) == \
            (b["accuracy"], b["loss"], b["mask_sha256"])
        assert a["history"][-1]["train_loss"] == b["history"][-1]["train_loss"]
        assert a["machine"]["threads"] == b["machine"]["threads"]


SWEEP_SCRIPT = """
import sys
from opai_lib import config, study
if __name__ == "__main__":
    P = config.get_profile("smoke")
    cfgs = [study.config_from_profile(P, model="tiny", method=m, sparsity=s, seed=seed,
                                      recipe=config.Recipe(epochs=3, batch_size=64, lr=0.05))
            for m, s in [("dense", 0.0), ("snip", 0.8)] for seed in (0, 1, 2)]
    study.sweep(cfgs, sys.argv[1], workers=2)
"""


@pytest.mark.slow
def test_a_killed_sweep_resumes_to_the_uninterrupted_records(tmp_path):
    script = tmp_path / "sweep.py"
    script.write_text(SWEEP_SCRIPT)
    env = {**os.environ, "OPAI_SWEEP_TEST": str(tmp_path)}
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    subprocess.run([sys.executable, str(script), str(reference)], check=True, env=env)
    proc = subprocess.Popen([sys.executable, str(script), str(resumed)], env=env)
    time.sleep(random.Random(os.getpid()).uniform(6, 12))  # mid-sweep, often mid-epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 15  # a loaded machine may take a moment to schedule exits
    while survivors := [p for p in os.listdir("/proc") if p.isdigit()
                        and p != str(os.getpid())
                        and _has_env(p, f"OPAI_SWEEP_TEST={tmp_path}")]:
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not survivors, "sweep workers outlived their sweep"
    subprocess.run([sys.executable, str(script), str(resumed)], check=True, env=env)
    ref, res = Store(reference), Store(resumed)
    assert ref.finished() == res.finished() and len(ref.finished()) == 6
    for k in ref.finished():
        a, b = ref.read(k), res.read(k)
        assert (a["accuracy"], a["loss"], a["mask_sha256"], a["history"][-1]["train_loss"]) == \
            (b["accuracy"], b["loss"], b["mask_sha256"], b["history"][-1]["train_loss"])
    assert not list(res.root.glob("*.claim")) and not list(res.root.glob("*.ckpt"))


def _has_env(pid: str, marker: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return marker.encode() in f.read().split(b"\0")
    except OSError:
        return False


def test_the_published_record_is_whole_and_named_by_todays_keys():
    store = Store(study.RECORD_DIR / "cpu")
    keys = store.finished()
    assert keys, "no published record"
    for key in keys:
        r = store.read(key)
        cfg = study.RunConfig.from_dict(r["config"])
        assert cfg.key() == key == r["key"], f"{key}: the code's keys changed; make record"
        assert cfg.recipe.precision == "fp32"
        assert {"cpu", "capability", "threads", "torch", "commit"} <= set(r["machine"])
        mask = study.read_mask(r, store)
        if mask is None:
            assert cfg.method == "dense" and r["density"] == 1.0
            continue
        assert study.mask_sha256(mask) == r["mask_sha256"]
        assert masks.density(mask)["total"] == pytest.approx(r["density"])
        assert r["pruned_nonzero"] == 0


def _published(method: str, material: str | None) -> dict:
    """The first record (by key) of the published cpu store with this method and material."""
    published = study.open_store(study.RECORD_DIR / "cpu")
    for key in sorted(published.finished()):
        r = published.read(key)
        if r["config"]["method"] == method and (r["config"]["material"] or {}).get("name") \
                == material and r["config"].get("sanity") is None:
            return r
    pytest.skip(f"no published {method} record on {material}")


@pytest.mark.parametrize("method, material", [("snip", "image"), ("grasp", "image"),
                                              ("random", None)])
def test_masks_of_the_published_record_come_out_again(method, material):
    """Today's code re-creates the masks the record was trained with (written by the code
    of its commit): bit for bit on the CPU that wrote it, nearly so on another."""
    r = _published(method, material)
    cfg = study.RunConfig.from_dict(r["config"])
    train_set, _ = study.run_data(cfg.dataset, cfg.train_per_class, cfg.test_per_class)
    mask = study.make_mask(cfg, study.initial_model(cfg, train_set.num_classes), train_set)
    if r["machine"]["cpu"] == config.cpu_model():
        assert study.mask_sha256(mask) == r["mask_sha256"]
    else:  # fp32 sums in another order may swap weights at the cut
        assert masks.overlap(mask, study.read_mask(r, study.RECORD_DIR / "cpu")) > 0.99

"""The result store: atomic files, damaged files moved aside, claims, and sweeps that never
compute an item twice, even when killed or run twice at once.

Module level stays free of torch: worker processes import it for ``compute_item``.
"""

import contextlib
import datetime
import json
import multiprocessing
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pytest

from opai_lib.store import (
    HOST,
    Store,
    _process_start,
    atomic_write,
    read_json,
    read_torch,
    sweep,
)

ROOT = Path(__file__).resolve().parents[1]
on_linux = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def item_key(item) -> str:
    return f"item{item[1]}"


def compute_item(item):
    """A cheap deterministic computation of ``(log, n, seconds)`` that logs each call."""
    log, n, seconds = item
    with open(log, "a") as f:
        f.write(f"{n} {os.getpid()}\n")
    time.sleep(seconds)
    record = {"n": n, "square": n * n, "pair": (n, -n)}
    return record, {"range": np.arange(n), "half": np.full(2, n / 2)}


def failing_compute(item):
    if item[1] == 1:
        raise ValueError("item 1 fails")
    return compute_item(item)


def computations(log: Path) -> dict[int, int]:
    """How often each item was computed, from the log."""
    counts: dict[int, int] = {}
    for line in log.read_text().splitlines():
        counts[int(line.split()[0])] = counts.get(int(line.split()[0]), 0) + 1
    return counts


def items(log: Path, n: int, seconds: float) -> list:
    return [(str(log), i, seconds) for i in range(n)]


def assert_moved_aside(path: Path) -> None:
    assert not path.exists()
    assert len(list(path.parent.glob(f"{path.name}.corrupt-*"))) == 1


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_claim(store: Store, key: str, **fields) -> Path:
    """A claim file as another process would write it (default: this process)."""
    info = {"host": HOST, "pid": os.getpid(), "start": _process_start(os.getpid()),
            "time": "", "token": "someone-else", **fields}
    path = store.claim_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info))
    return path


# atomic_write, read_json, read_torch


def test_atomic_write_content_and_callable(tmp_path):
    assert atomic_write(tmp_path / "a", "text é").read_text() == "text é"
    assert atomic_write(tmp_path / "b", b"\x00\x01").read_bytes() == b"\x00\x01"
    atomic_write(tmp_path / "sub" / "c", lambda p: p.write_text("by a function"))
    assert (tmp_path / "sub" / "c").read_text() == "by a function"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b", "c", "sub"]


def test_a_failing_writer_leaves_the_old_file(tmp_path):
    path = atomic_write(tmp_path / "a", "old")

    def fail(p):
        p.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, fail)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["a"]


def test_read_json(tmp_path):
    assert read_json(tmp_path / "missing.json") is None
    good = atomic_write(tmp_path / "good.json", json.dumps({"a": [1, 2]}))
    assert read_json(good) == {"a": [1, 2]}
    text = json.dumps({"a": 1, "b": "x" * 50})
    for name, content in [("truncated", text[:20]), ("garbage", "\x00\xff{]"), ("list", "[1]")]:
        path = tmp_path / f"{name}.json"
        path.write_text(content, errors="surrogateescape")
        with pytest.warns(UserWarning, match=re.escape(str(path))):
            assert read_json(path) is None
        assert_moved_aside(path)
        assert read_json(path) is None  # now simply missing


def test_read_torch(tmp_path):
    import torch

    assert read_torch(tmp_path / "missing.pt") is None
    path = tmp_path / "state.pt"
    torch.save({"w": torch.arange(500)}, path)
    assert torch.equal(read_torch(path, map_location="cpu")["w"], torch.arange(500))
    whole = path.read_bytes()
    for cut in (0, 100, len(whole) // 2, len(whole) - 1):
        path.write_bytes(whole[:cut])
        with pytest.warns(UserWarning, match=re.escape(str(path))):
            assert read_torch(path) is None
        assert not path.exists()
    assert len(list(tmp_path.glob("state.pt.corrupt-*"))) >= 1
    # a whole file the loader refuses is an error of the caller, not damage: it stays
    torch.save({"when": datetime.date(2020, 1, 1)}, path)
    with pytest.raises(Exception, match="date"):
        read_torch(path, weights_only=True)
    assert path.exists()


# Store: records and arrays


def test_store_round_trip(tmp_path):
    store = Store(tmp_path / "store")
    assert store.read("k") is None and store.finished() == []
    store.checkpoint_path("k").parent.mkdir()
    store.checkpoint_path("k").write_text("a checkpoint")
    store.write("k", {"x": 1.5, "pair": (1, 2)}, {"m": np.eye(3, dtype=bool), "v": np.arange(4)})
    assert store.read("k") == {"x": 1.5, "pair": [1, 2]}
    arrays = store.read_arrays("k")
    assert sorted(arrays) == ["m", "v"] and arrays["m"].dtype == bool
    assert (arrays["m"] == np.eye(3)).all() and (arrays["v"] == np.arange(4)).all()
    assert not store.checkpoint_path("k").exists()
    assert json.loads(store.record_path("k").read_text()) == {"x": 1.5, "pair": [1, 2]}
    store.write("plain", {"y": 2})
    assert store.read("plain") == {"y": 2} and store.read_arrays("plain") == {}
    assert store.finished() == ["k", "plain"]
    with pytest.raises(TypeError):  # an unserialisable record writes nothing
        store.write("bad", {"f": object()})
    assert store.finished() == ["k", "plain"] and not store.arrays_path("bad").exists()


def test_a_record_without_its_arrays_is_unfinished(tmp_path):
    store = Store(tmp_path)
    store.write("gone", {"a": 1}, {"v": np.arange(3)})
    store.write("cut", {"a": 2}, {"v": np.arange(1000)})
    store.arrays_path("gone").unlink()
    assert store.finished() == ["cut"]
    with pytest.warns(UserWarning, match=re.escape(str(store.record_path("gone")))):
        assert store.read("gone") is None
    assert_moved_aside(store.record_path("gone"))
    npz = store.arrays_path("cut")
    npz.write_bytes(npz.read_bytes()[:-30])
    with pytest.warns(UserWarning) as warned:
        assert store.read("cut") is None
    assert [str(npz), str(store.record_path("cut"))] == [
        str(w.message).split()[0] for w in warned]
    assert_moved_aside(npz)
    assert_moved_aside(store.record_path("cut"))
    assert store.finished() == []


def test_compute_computes_once_and_waits_for_a_live_claim(tmp_path):
    store = Store(tmp_path)
    store.poll = 0.02
    log = tmp_path / "log"
    assert store.compute("item3", lambda: compute_item((log, 3, 0))) == {
        "n": 3, "square": 9, "pair": [3, -3]}
    assert store.compute("item3", lambda: compute_item((log, 3, 0)))["square"] == 9
    assert computations(log) == {3: 1}
    # a live claim (this process): compute waits for the holder's record instead
    claim = store.claim("item4")
    assert claim is not None and store.claim("item4") is None
    done = threading.Timer(0.3, lambda: store.write("item4", {"by": "holder"}))
    done.start()
    assert store.compute("item4", lambda: compute_item((log, 4, 0))) == {"by": "holder"}
    assert computations(log) == {3: 1}
    claim.release()
    assert not store.claim_path("item4").exists()


class LateStore(Store):
    """A store where another process finishes each key just before this one claims it."""

    def claim(self, key):
        if not self.record_path(key).exists():
            self.write(key, {"by": "other"})
        return super().claim(key)


def test_compute_does_not_redo_a_record_written_before_its_claim(tmp_path):
    log = tmp_path / "log"
    assert LateStore(tmp_path).compute("item1", lambda: compute_item((log, 1, 0))) == {
        "by": "other"}
    assert not log.exists()


# Store: claims


def test_claims_are_exclusive_and_released_only_by_their_holder(tmp_path):
    store = Store(tmp_path)
    with store.claim("k") as claim:
        assert store.claim("k") is None
        info = json.loads(claim.path.read_text())
        assert info["pid"] == os.getpid() and info["host"] == HOST
        assert info["start"] == _process_start(os.getpid())
    assert not claim.path.exists()
    claim = store.claim("k")
    write_claim(store, "k")  # taken over by someone else meanwhile
    claim.release()
    assert claim.path.exists()


@on_linux
def test_claims_of_dead_processes_are_taken_over(tmp_path):
    store = Store(tmp_path)
    write_claim(store, "dead", pid=dead_pid(), start=12345)
    write_claim(store, "dead-no-start", pid=dead_pid(), start=None)  # as written off Linux
    start = _process_start(os.getpid())
    write_claim(store, "reused", start=start + 1)  # our pid, another process's start time
    write_claim(store, "live", start=start)
    zombie = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    write_claim(store, "zombie", pid=zombie.pid, start=_process_start(zombie.pid))
    assert store.claim("zombie") is None
    while Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        time.sleep(0.02)  # exited, not yet reaped
    for key in ("dead", "dead-no-start", "reused", "zombie"):
        claim = store.claim(key)
        assert claim is not None, key
        assert json.loads(claim.path.read_text())["pid"] == os.getpid()
    zombie.wait()
    assert store.claim("live") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{k}.claim" for k in ("dead", "dead-no-start", "live", "reused", "zombie"))


def test_claims_of_other_hosts_live_by_heartbeat(tmp_path):
    store = Store(tmp_path)
    path = write_claim(store, "k", host="elsewhere", pid=1)
    assert store.claim("k") is None
    old = time.time() - store.timeout - 60
    os.utime(path, (old, old))
    claim = store.claim("k")
    assert claim is not None
    os.utime(path, (old, old))
    claim.heartbeat()
    assert path.stat().st_mtime > time.time() - 60


def _race_for_claims(root: str, keys: list[str], barrier, out: str) -> None:
    store, won = Store(root), []
    for key in keys:
        barrier.wait(timeout=60)
        if store.claim(key) is not None:
            won.append(key)
    Path(out).write_text(json.dumps({"pid": os.getpid(), "won": won}))


@pytest.mark.slow
@on_linux
def test_two_processes_taking_over_a_stale_claim_one_wins(tmp_path):
    store = Store(tmp_path / "store")
    keys = [f"k{i}" for i in range(60)]
    old, dead = time.time() - store.timeout - 60, dead_pid()
    for i, key in enumerate(keys):  # stale: a dead process here, or a silent other host
        if i % 2:
            os.utime(write_claim(store, key, host="elsewhere"), (old, old))
        else:
            write_claim(store, key, pid=dead, start=1)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_race_for_claims,
                         args=(str(store.root), keys, barrier, str(tmp_path / f"{i}.json")))
             for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    results = [json.loads((tmp_path / f"{i}.json").read_text()) for i in range(2)]
    for key in keys:
        winners = [r["pid"] for r in results if key in r["won"]]
        assert len(winners) == 1, key
        assert json.loads(store.claim_path(key).read_text())["pid"] == winners[0]
    assert sorted(p.name for p in store.root.iterdir()) == sorted(f"{k}.claim" for k in keys)


# sweep


@pytest.mark.slow
def test_sweep_in_process_and_in_workers_agree(tmp_path):
    log = tmp_path / "log"
    grid = items(log, 5, 0.05)
    one, two = Store(tmp_path / "one"), Store(tmp_path / "two")
    records = sweep(one, grid + grid[:2], item_key, compute_item)
    assert records == sweep(two, grid + grid[:2], item_key, compute_item, workers=2)
    assert records[3] == {"n": 3, "square": 9, "pair": [3, -3]} and records[5] == records[0]
    for key in one.finished():
        a, b = one.read_arrays(key), two.read_arrays(key)
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert computations(log) == {n: 2 for n in range(5)}  # once per store
    assert sweep(one, grid, item_key, compute_item, workers=2) == records[:5]
    assert computations(log) == {n: 2 for n in range(5)}
    with pytest.raises(ValueError, match="item 1 fails"):
        sweep(Store(tmp_path / "three"), grid, item_key, failing_compute, workers=2)


def dying_compute(item):
    os._exit(1)  # a worker killed mid-item (out of memory, a signal)


def worker_pids(log: Path) -> set[int]:
    return {int(line.split()[1]) for line in log.read_text().splitlines()}


def child_pids() -> set[int]:
    """This process's living children (from /proc: the 4th field of stat is the parent)."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == os.getpid() and fields[0] != "Z":
                out.add(int(stat.parent.name))
    return out


@pytest.mark.slow
@on_linux
def test_sweeps_of_one_process_share_their_workers_until_the_environment_changes(
        tmp_path, monkeypatch):
    logs = [tmp_path / f"log{i}" for i in range(6)]

    def run(i, compute=compute_item, n=4, seconds=0.05):
        return sweep(Store(tmp_path / f"s{i}"), items(logs[i], n, seconds), item_key, compute,
                     workers=2)

    run(0)
    pool = child_pids()
    assert worker_pids(logs[0]) <= pool and os.getpid() not in worker_pids(logs[0])
    run(1)
    assert worker_pids(logs[1]) <= pool  # no new worker started
    monkeypatch.setenv("OPAI_DATA_DIR", str(tmp_path))  # workers would read stale folders
    run(2)
    assert not worker_pids(logs[2]) & pool
    for pid in worker_pids(logs[2]):  # Ctrl-C in a notebook signals the process group
        os.kill(pid, signal.SIGINT)
    time.sleep(0.5)
    assert [r["n"] for r in run(3)] == list(range(4))  # a pool with a dead worker is replaced
    with pytest.raises(BrokenProcessPool):
        run(4, dying_compute, n=2, seconds=0)
    thread = threading.Thread(target=run, args=(5,))  # a thread's sweep: a pool of its own
    thread.start()
    thread.join()
    assert [r["n"] for r in run(4)] == list(range(4)) and logs[5].exists()


SWEEP_SCRIPT = """
import sys
from opai_lib.store import Store, sweep
from tests.test_store import compute_item, item_key, items
store = Store(sys.argv[1])
store.poll = 0.05
sweep(store, items(sys.argv[2], int(sys.argv[3]), float(sys.argv[4])), item_key, compute_item,
      workers=2)
"""


def start_sweep(root: Path, log: Path, n: int, seconds: float, out: Path,
                marker: str = "") -> subprocess.Popen:
    """A sweep in a new process, its output in ``out`` (a pipe would wait for orphans)."""
    with open(out, "w") as f:
        return subprocess.Popen(
            [sys.executable, "-c", SWEEP_SCRIPT, str(root), str(log), str(n), str(seconds)],
            cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
            env={**os.environ, "SWEEP_MARKER": marker})


def processes_with(marker: str) -> list[int]:
    """Running processes whose environment holds ``marker`` (zombies have none)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker.encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            pass
    return found


@pytest.mark.slow
@on_linux
def test_a_killed_sweep_leaves_no_worker_and_resumes(tmp_path):
    root, log, marker = tmp_path / "store", tmp_path / "log", uuid.uuid4().hex
    proc = start_sweep(root, log, 8, 0.6, tmp_path / "out", marker)
    deadline = time.time() + 60
    while not (log.exists() and log.read_text()) and time.time() < deadline:
        time.sleep(0.02)
    delay = random.uniform(0, 2.4)  # 8 items of 0.6 s on 2 workers take 2.4 s
    time.sleep(delay)
    proc.kill()
    proc.wait()
    finished = Store(root).finished()
    deadline = time.time() + 10
    while (left := processes_with(marker)) and time.time() < deadline:
        time.sleep(0.05)
    for pid in left:  # only after a failure: leave no orphan behind
        os.kill(pid, signal.SIGKILL)
    assert left == [], f"workers left running (killed after {delay:.2f} s)"

    store = Store(root)
    records = sweep(store, items(log, 8, 0.6), item_key, compute_item, workers=2)
    assert [r["n"] for r in records] == list(range(8))
    assert all(json.loads(store.record_path(f"item{n}").read_text()) for n in range(8))
    counts = computations(log)
    assert all(counts.get(n, 0) >= 1 for n in range(8))
    assert all(counts[int(k.removeprefix("item"))] == 1 for k in finished), (delay, counts)
    assert not list(root.glob("*.claim"))


@pytest.mark.slow
def test_two_sweeps_on_one_grid_compute_each_item_once(tmp_path):
    for attempt in range(3):
        root, log = tmp_path / f"store{attempt}", tmp_path / f"log{attempt}"
        outs = [tmp_path / f"out{attempt}-{i}" for i in range(2)]
        procs = [start_sweep(root, log, 8, 0.2, out) for out in outs]
        for p, out in zip(procs, outs, strict=True):
            assert p.wait(timeout=120) == 0, out.read_text()
        assert computations(log) == {n: 1 for n in range(8)}, attempt
        assert Store(root).finished() == sorted(f"item{n}" for n in range(8))


# train: checkpoints


def test_train_starts_over_after_a_damaged_checkpoint(toy, tmp_path):
    import torch

    from opai_lib import data, models
    from opai_lib.config import Recipe
    from opai_lib.train import train

    train_set = toy[0].subset(data.balanced_indices(toy[0].labels, 8, 0))  # 3 batches
    recipe = Recipe(epochs=2, batch_size=32, lr=0.05)
    batches = data.batches(train_set, 32, True, seed=11)
    ckpt = tmp_path / "run.ckpt"
    straight = models.get_model("tiny", seed=7)
    train(straight, batches, recipe, checkpoint=ckpt, device="cpu", progress=False)
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    again = models.get_model("tiny", seed=7)
    with pytest.warns(UserWarning, match=re.escape(str(ckpt))):
        hist = train(again, batches, recipe, checkpoint=ckpt, device="cpu", progress=False)
    assert [h["epoch"] for h in hist] == [1, 2]
    assert len(list(tmp_path.glob("run.ckpt.corrupt-*"))) == 1
    assert len(read_torch(ckpt)["history"]) == 2  # rewritten whole
    for (name, p), q in zip(straight.state_dict().items(), again.state_dict().values(),
                            strict=True):
        assert torch.equal(p, q), name


def test_a_sweep_moves_past_an_item_held_elsewhere_and_waits_for_it_last(tmp_path):
    store, log = Store(tmp_path / "store"), tmp_path / "log"
    store.poll = 0.05
    grid = [(str(log), 0, 0.0), (str(log), 1, 0.0)]
    held = store.claim(item_key(grid[0]))  # a live process (this one) computes item 0
    done: list = []
    worker = threading.Thread(target=lambda: done.append(sweep(store, grid, item_key,
                                                               compute_item)))
    worker.start()
    deadline = time.monotonic() + 10
    while store.read("item1") is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert store.read("item1") is not None, "the sweep waited on the held item first"
    assert worker.is_alive() and store.read("item0") is None  # and now waits for item 0
    held.release()  # its holder gives up without a record: the sweep takes it over
    worker.join(10)
    assert [r["n"] for r in done[0]] == [0, 1]
    assert computations(log) == {0: 1, 1: 1}

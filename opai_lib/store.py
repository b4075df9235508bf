"""Files that are either complete or absent, and a result store built on them.

Records, checkpoints and caches are written through ``atomic_write``: the bytes go to a
temporary file unique to this process and call, are flushed to disk, and the file is then
renamed over the target. A reader (or a crash) never sees half a file, and two writers of
the same path never share a temporary name.

``read_json`` and ``read_torch`` read such files back; a file that is unreadable anyway
(written by an older, non-atomic version, or damaged) is renamed to
``<name>.corrupt-<UTC time>`` with a warning, and reads as missing, so it is recomputed.

``Store`` keeps one record (JSON) and its arrays (``.npz``) per key, whatever a key's
computation is; ``Store.compute`` and ``sweep`` compute each missing key exactly once, even
with several processes or several sweeps on one folder, and resume after a crash or a kill.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import signal
import socket
import sys
import threading
import time
import uuid
import warnings
import zipfile
import zlib
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Executor, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np

T = TypeVar("T")
HOST = socket.gethostname()
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
MAIN_THREAD = threading.main_thread()


def atomic_write(path: str | Path, content: bytes | str | Callable[[Path], None]) -> Path:
    """Write ``content`` to ``path`` atomically and return the path.

    ``content`` is bytes, text (UTF-8), or a function that writes the file it is given
    (e.g. ``lambda p: torch.save(state, p)``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        if callable(content):
            content(tmp)
        else:
            tmp.write_bytes(content.encode() if isinstance(content, str) else content)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class _Unreadable(Exception):
    """The bytes of a file cannot be what was written: truncated, partial or garbage."""


def _read(path: str | Path, load: Callable[[IO[bytes]], T]) -> T | None:
    """``load`` of the open file, None if it is missing or unreadable (then moved aside)."""
    path = Path(path)
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below; only opening means "missing")
    except FileNotFoundError:
        return None
    with f:
        try:
            return load(f)
        except _Unreadable as err:
            _move_aside(path, os.fstat(f.fileno()), str(err))
            return None


def _move_aside(path: Path, seen: os.stat_result, reason: str) -> None:
    """Rename an unreadable file so it is recomputed, yet kept for inspection."""
    aside = path.with_name(f"{path.name}.corrupt-{datetime.now(timezone.utc):%Y%m%dT%H%M%S.%fZ}")
    with contextlib.suppress(FileNotFoundError):
        if os.stat(path).st_ino == seen.st_ino:  # not replaced by a good file meanwhile
            path.rename(aside)
    warnings.warn(f"{path} is unreadable ({reason}); moved aside to {aside.name}",
                  stacklevel=4)


def _load_json(f: IO[bytes]) -> dict:
    try:
        value = json.loads(f.read())
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise _Unreadable(f"not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise _Unreadable(f"a JSON {type(value).__name__}, not an object")
    return value


def _check_zip(f: IO[bytes]) -> None:
    """Raise _Unreadable unless ``f`` is a whole zip archive (torch.save and .npz files are).

    Checking the archive and its CRCs first tells damage apart from a genuine error of the
    loader (a wrong ``map_location``, a class ``weights_only`` refuses), which propagates.
    """
    try:
        with zipfile.ZipFile(f) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, zlib.error) as err:
        raise _Unreadable(f"not a complete zip archive: {err}") from None
    if bad is not None:
        raise _Unreadable(f"member {bad} fails its CRC check")
    f.seek(0)


def read_json(path: str | Path) -> dict | None:
    """The JSON object in ``path``; None if missing, or unreadable (then moved aside)."""
    return _read(path, _load_json)


def read_torch(path: str | Path, **torch_load_kwargs) -> object | None:
    """``torch.load(path, **torch_load_kwargs)``; None if missing, or damaged (moved aside)."""
    import torch

    def load(f: IO[bytes]) -> object:
        _check_zip(f)
        return torch.load(f, **torch_load_kwargs)

    return _read(path, load)


def _read_npz(path: Path) -> dict[str, np.ndarray] | None:
    def load(f: IO[bytes]) -> dict[str, np.ndarray]:
        _check_zip(f)
        with np.load(f, allow_pickle=False) as z:
            return {name: z[name] for name in z.files}

    return _read(path, load)


def _process_start(pid: int) -> int | None:
    """Start time of running process ``pid`` (clock ticks after boot) from /proc.

    None when it is gone or a zombie, and off Linux. With the pid, it names a process
    uniquely: a pid reused by a new process comes with another start time.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _alive(pid: int, start: int | None) -> bool:
    """Whether the process of a claim made on this host still runs."""
    if start is not None:
        return _process_start(pid) == start
    try:  # no start time recorded (not Linux): the pid alone
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


Snapshot = tuple[int, int, bytes]  # inode, mtime (ns), content of a claim file


def _snapshot(path: Path) -> Snapshot | None:
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            return st.st_ino, st.st_mtime_ns, f.read()
    except FileNotFoundError:
        return None


class Claim:
    """The exclusive right of this process to compute one key, held by a claim file.

    As a context manager, it touches the file every ``heartbeat_every`` seconds (so other
    hosts see it is live) and removes it on exit.
    """

    def __init__(self, path: Path, token: str, heartbeat_every: float):
        self.path, self.token, self.heartbeat_every = path, token, heartbeat_every
        self._stop = threading.Event()

    def heartbeat(self) -> None:
        """Mark the claim live now: other hosts judge it by the file's modification time."""
        with contextlib.suppress(FileNotFoundError):
            os.utime(self.path)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_every):
            self.heartbeat()

    def held(self) -> bool:
        """Whether the claim file is still this claim (not taken over as stale)."""
        snap = _snapshot(self.path)
        return snap is not None and self.token.encode() in snap[2]

    def release(self) -> None:
        """Stop the heartbeat and remove the claim file if it is still ours."""
        self._stop.set()
        if self.held():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> Claim:
        threading.Thread(target=self._beat, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class Store:
    """Records of keyed computations in a folder: ``<key>.json`` and ``<key>.npz``.

    A key is finished when both files are there and readable: the arrays are written first,
    the JSON last, both atomically. ``<key>.ckpt`` is the place for a checkpoint of an
    unfinished computation and ``<key>.claim`` names the process computing it.
    """

    poll: float = 1.0  # seconds between looks at a key another process computes
    timeout: float = 1800.0  # a claim from another host without heartbeat this long is stale

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def record_path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def arrays_path(self, key: str) -> Path:
        return self.root / f"{key}.npz"

    def checkpoint_path(self, key: str) -> Path:
        return self.root / f"{key}.ckpt"

    def claim_path(self, key: str) -> Path:
        return self.root / f"{key}.claim"

    def read(self, key: str) -> dict | None:
        """The finished record of ``key``, None if there is none (damaged files moved aside)."""
        record = read_json(self.record_path(key))
        if record is None or _read_npz(self.arrays_path(key)) is not None:
            return record
        path = self.record_path(key)
        with contextlib.suppress(FileNotFoundError):
            _move_aside(path, os.stat(path), f"its arrays {self.arrays_path(key).name} are "
                        "missing or damaged, so it counts as unfinished")
        return None

    def read_arrays(self, key: str) -> dict[str, np.ndarray]:
        """The arrays written with the record of ``key``."""
        arrays = _read_npz(self.arrays_path(key))
        if arrays is None:
            raise FileNotFoundError(f"no arrays of {key!r} in {self.root}")
        return arrays

    def write(self, key: str, record: dict, arrays: dict[str, np.ndarray] | None = None) -> None:
        """Store ``record`` and ``arrays`` as finished, then drop the key's checkpoint."""
        text = json.dumps(record, indent=1)  # before any file: an unserialisable record fails

        def save_arrays(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a path
                np.savez_compressed(f, **(arrays or {}))

        atomic_write(self.arrays_path(key), save_arrays)
        atomic_write(self.record_path(key), text)
        self.checkpoint_path(key).unlink(missing_ok=True)

    def finished(self) -> list[str]:
        """Keys of finished records (both files present)."""
        return sorted(p.stem for p in self.root.glob("*.json") if p.with_suffix(".npz").exists())

    def _stale(self, snap: Snapshot) -> bool:
        """Whether the claim ``snap`` belongs to no live process."""
        try:
            info = json.loads(snap[2])
        except ValueError:  # empty or partial: its writer died between creating and writing
            info = {}
        if info.get("host") == HOST:
            return not _alive(info["pid"], info["start"])
        return time.time() - snap[1] / 1e9 > self.timeout

    def claim(self, key: str) -> Claim | None:
        """The claim to compute ``key``, None while a live process holds it.

        A stale claim is taken over: renamed to a unique name, so of two processes that both
        judged it stale only one removes it, then created anew by a hard link, which only one
        process can make. A rename that caught a newer claim instead puts it back.
        """
        path = self.claim_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        body = json.dumps({"host": HOST, "pid": os.getpid(), "start": _process_start(os.getpid()),
                           "time": datetime.now(timezone.utc).isoformat(), "token": token})
        # The claim is written whole to a private file, then hard-linked into place: linking
        # fails if the claim exists, and a claim is never seen empty or half-written.
        mine = path.with_name(f".{path.name}.{token}.tmp")
        atomic_write(mine, body)
        try:
            return self._take(path, mine, token)
        finally:
            mine.unlink(missing_ok=True)

    def _take(self, path: Path, mine: Path, token: str) -> Claim | None:
        while True:
            try:
                os.link(mine, path)
            except FileExistsError:
                snap = _snapshot(path)
                if snap is None:  # released meanwhile
                    continue
                if not self._stale(snap):
                    return None
                grave = path.with_name(f".{path.name}.{uuid.uuid4().hex}.stale")
                with contextlib.suppress(FileNotFoundError):
                    os.rename(path, grave)
                    if _snapshot(grave) == snap:
                        grave.unlink()
                    else:
                        os.replace(grave, path)
                continue
            return Claim(path, token, self.timeout / 4)

    def compute(self, key: str, fn: Callable[[], tuple[dict, dict[str, np.ndarray] | None]],
                wait: bool = True) -> dict | None:
        """The record of ``key``, computed by ``fn`` unless finished or computed elsewhere.

        While another live process holds the key, wait for its record (or, with
        ``wait=False``, return None at once); if that process dies, take over. ``fn`` may
        resume from ``checkpoint_path(key)``.
        """
        while (record := self.read(key)) is None:
            claim = self.claim(key)
            if claim is None:
                if not wait:
                    return None
                time.sleep(self.poll)
                continue
            with claim:
                if (record := self.read(key)) is not None:  # finished before our claim
                    return record
                record, arrays = fn()
                self.write(key, record, arrays)
                return json.loads(json.dumps(record))  # what a later read gives
        return record


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _init_worker(parent: int, threads: int | None) -> None:
    """Tie a worker's life to the process that started it, so a killed sweep leaves none."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    else:
        threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    # Ctrl-C (or a kernel's shutdown) signals the whole process group: end without the
    # traceback every idle worker would print; an item cut short is recomputed later.
    signal.signal(signal.SIGINT, lambda *_: os._exit(1))
    if threads:
        import torch

        torch.set_num_threads(threads)


def process_pool(workers: int, threads: int | None = None) -> ProcessPoolExecutor:
    """A "spawn" pool whose workers die with this process (even if it is SIGKILLed).

    On Linux a worker dies with the thread that created it: use the pool from one thread.
    ``threads``: torch threads of each worker.
    """
    return ProcessPoolExecutor(workers, mp_context=get_context("spawn"),
                               initializer=_init_worker, initargs=(os.getpid(), threads))


_shared: tuple[tuple, ProcessPoolExecutor] | None = None  # (its key, the pool)


def _shared_pool(workers: int, threads: int | None) -> ProcessPoolExecutor:
    """A ``process_pool`` kept for the next sweep of this process (the main thread's), so
    that a notebook's sweeps share workers instead of each starting its own (a worker takes
    seconds to import torch). Workers keep the working directory and environment of their
    start (not later edits of the library's code): a change of the directory or of an
    ``OPAI_`` variable (data, cache or store folders), or of the worker or thread count,
    replaces the pool, as does a worker's death (an interrupt, out of memory)."""
    global _shared
    key = (workers, threads, os.getcwd(),
           tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("OPAI_"))))
    if _shared is not None and (_shared[0] != key or not _usable(_shared[1])):
        _shared[1].shutdown(wait=False, cancel_futures=True)
        _shared = None
    if _shared is None:
        _shared = (key, process_pool(workers, threads))
    return _shared[1]


def _usable(pool: ProcessPoolExecutor) -> bool:
    """Whether ``pool`` takes work: once a worker has died it refuses any item at once."""
    try:
        pool.submit(int).cancel()
    except BrokenProcessPool:
        return False
    return True


def _compute_item(store: Store, key: str, compute: Callable, item: Any) -> None:
    """Compute an item unless another process holds it: a worker moves on to the next item
    instead of waiting, and the sweep waits for such items at the end."""
    store.compute(key, functools.partial(compute, item), wait=False)


def _run_all(executor: Executor, store: Store, todo: dict[str, Any], compute: Callable) -> None:
    """Compute ``todo`` on ``executor``; after a failure, cancel what has not started,
    wait for what runs, and raise the first failure."""
    futures = [executor.submit(_compute_item, store, k, compute, item)
               for k, item in todo.items()]
    try:
        wait(futures, return_when=FIRST_EXCEPTION)
    finally:  # also on an interrupt: items no worker has taken yet are dropped
        for f in futures:
            f.cancel()
    wait(futures)
    for f in futures:
        if not f.cancelled() and f.exception() is not None:
            raise f.exception()


def sweep(store: Store, items: list, key: Callable[[Any], str],
          compute: Callable[[Any], tuple[dict, dict[str, np.ndarray] | None]],
          workers: int = 1, executor: Executor | None = None,
          threads: int | None = None) -> list[dict]:
    """Records of all ``items`` (in order), computing the missing ones.

    ``key(item)`` names an item's record, ``compute(item)`` returns ``(record, arrays)``;
    both are top-level functions (pickled to workers). Missing items run ``workers`` at a
    time in processes (``threads`` torch threads each; from the main thread, the pool is
    kept for this process's next sweep), or on ``executor``, or in this process; each
    through ``Store.compute``, so sweeps sharing a store never compute an item twice, and a
    killed sweep, rerun, continues where it stopped.
    """
    todo: dict[str, Any] = {}
    for item in items:
        k = key(item)
        if k not in todo and store.read(k) is None:
            todo[k] = item
    if executor is not None:
        _run_all(executor, store, todo, compute)
    elif workers > 1 and len(todo) > 1:
        if threading.current_thread() is MAIN_THREAD:
            _run_all(_shared_pool(workers, threads), store, todo, compute)
        else:  # workers die with the thread that started them: a pool of this sweep only
            pool = process_pool(min(workers, len(todo)), threads)
            try:
                _run_all(pool, store, todo, compute)
            finally:
                pool.shutdown(cancel_futures=True)
    else:
        for k, item in todo.items():
            _compute_item(store, k, compute, item)
    return [store.compute(key(item), functools.partial(compute, item)) for item in items]

"""Sweeps spread out: on a real Dask cluster through ``executor=``, and in shards of the
command line; either way the store ends with exactly the records of a local sweep."""

import os

import pytest
import torch

from opai_lib import __main__ as cli
from opai_lib import config, store, study

# What must agree between two computations of a run (not its timings or machine).
NUMBERS = ("key", "config", "accuracy", "loss", "density", "mask_sha256")


def tiny_runs() -> list[study.RunConfig]:
    smoke = config.get_profile("smoke")
    return [study.config_from_profile(smoke, model="tiny", method=m, sparsity=s, seed=seed)
            for m, s, seed in [("dense", 0.0, 0), ("snip", 0.8, 0), ("random", 0.8, 1)]]


def numbers(record: dict) -> dict:
    return {**{k: record[k] for k in NUMBERS},
            "history": [{k: v for k, v in h.items() if k != "seconds"} for h in record["history"]]}


@pytest.fixture
def one_thread():
    """One torch thread here, as in a Dask worker process (it sets OMP_NUM_THREADS=1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def own_environment():
    """This process's environment as it was: a LocalCluster writes OMP_NUM_THREADS=1,
    MKL_NUM_THREADS=1, MALLOC_TRIM_THRESHOLD_=65536 and more into it, and every later
    subprocess inherited them (the notebook tests' kernels ran single-threaded, mask_anatomy
    44 s instead of 28)."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.slow
def test_a_sweep_on_a_dask_cluster_gives_the_local_records(tmp_path, one_thread,
                                                           own_environment):
    distributed = pytest.importorskip("distributed")
    cfgs = tiny_runs()
    local = study.sweep(cfgs, tmp_path / "local")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client, \
            distributed.get_task_stream(client) as tasks:
        remote = study.sweep(cfgs, tmp_path / "dask", executor=client.get_executor())
    assert len(tasks.data) == 3  # every run was a task of the cluster's worker process
    assert [numbers(r) for r in remote] == [numbers(r) for r in local]
    assert [r["machine"]["threads"] for r in remote] == [1, 1, 1]
    assert sorted(store.Store(tmp_path / "dask").finished()) == sorted(c.key() for c in cfgs)


@pytest.mark.slow
def test_two_shards_of_the_command_line_make_the_whole_grids_records(tmp_path, monkeypatch,
                                                                     capsys, one_thread):
    cfgs = tiny_runs()
    monkeypatch.setitem(cli.GRIDS, "tiny_grid",
                        lambda args, profile, store: [(c, c.method) for c in cfgs])
    for shard, part in (("0/2", "2 runs, 2 missing"), ("1/2", "1 runs, 1 missing")):
        assert cli.main(["sweep", "tiny_grid", "--profile", "smoke", "--shard", shard,
                         "--workers", "1", "--store", str(tmp_path / "shards")]) == 0
        assert part in capsys.readouterr().out  # each shard computed only its part
    whole = study.sweep(cfgs, tmp_path / "whole")
    sharded = store.Store(tmp_path / "shards")
    assert sorted(sharded.finished()) == sorted(c.key() for c in cfgs)
    assert [numbers(sharded.read(c.key())) for c in cfgs] == [numbers(r) for r in whole]

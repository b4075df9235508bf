"""Shared fixtures. Tests never write into the repository's caches or run store."""

import pytest
import torch

from opai_lib import data


@pytest.fixture(scope="session")
def _session_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory, monkeypatch, _session_cache):
    """Run records per test, one cache per session (decoded CIFAR-10, concepts)."""
    monkeypatch.setenv("OPAI_RUNS_DIR", str(tmp_path_factory.mktemp("runs")))
    monkeypatch.setenv("OPAI_CACHE_DIR", _session_cache)
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def toy():
    """A small learnable dataset: (train, test)."""
    return data.synthetic(train=True, per_class=32), data.synthetic(train=False, per_class=16)


def shared_cifar_available() -> bool:
    return (data.shared_data_dir() / "cifar10-jpeg" / "cifar10-jpeg.tar.gz").exists()

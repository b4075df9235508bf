"""python -m opai_lib run and show: one run into a store, and what a store holds."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from opai_lib import __main__ as cli
from opai_lib import config, store, study

RUN = ["run", "--profile", "smoke", "--model", "tiny", "--method", "snip", "--sparsity", "0.8",
       "--seed", "1"]


def expected_config() -> study.RunConfig:
    return study.config_from_profile(config.get_profile("smoke"), model="tiny", method="snip",
                                     sparsity=0.8, seed=1)


def test_run_computes_one_run_into_the_store_then_reads_it_back(tmp_path, capsys, monkeypatch):
    assert cli.main([*RUN, "--store", str(tmp_path)]) == 0
    key = expected_config().key()
    line = capsys.readouterr().out
    record = store.Store(tmp_path).read(key)
    assert line.startswith(f"{key}  tiny") and "snip" in line and "image" in line
    assert f"accuracy {record['accuracy']:.4f}" in line
    assert record["density"] == pytest.approx(0.2, abs=0.005) and record["config"]["seed"] == 1

    def boom(*args, **kwargs):
        raise AssertionError("a stored run was computed again")

    monkeypatch.setattr(study, "_compute", boom)
    assert cli.main([*RUN, "--store", str(tmp_path)]) == 0
    assert capsys.readouterr().out == line
    # show: the store's summary, then the record in full
    assert cli.main(["show", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"{tmp_path}: 1 records\n  {line}"
    assert cli.main(["show", str(tmp_path), "--key", key]) == 0
    assert json.loads(capsys.readouterr().out) == record
    assert cli.main(["show", str(tmp_path), "--key", "0" * 16]) == 1
    assert f"no record '{'0' * 16}'" in capsys.readouterr().err


@pytest.mark.parametrize("option, message", [
    (["--method", "snipp"], "unknown method 'snipp'"),
    (["--sparsity", "1"], "RunConfig.sparsity"),
    (["--material", "dopp"], "unknown material 'dopp'"),
    (["--dataset", "mnist"], "unknown dataset 'mnist'"),
    (["--device", "tpu"], "argument --device: invalid choice: 'tpu'")])
def test_run_refuses_bad_options_before_any_compute(tmp_path, capsys, option, message):
    with pytest.raises(SystemExit) as exc:
        cli.main([*RUN, *option, "--store", str(tmp_path)])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_show_lists_a_stores_records_in_order(tmp_path, capsys):
    s = store.Store(tmp_path)
    for method, sparsity, seed in [("synflow", 0.9, 0), ("dense", 0.0, 1), ("dense", 0.0, 0)]:
        cfg = study.config_from_profile(config.get_profile("smoke"), model="tiny",
                                        method=method, sparsity=sparsity, seed=seed)
        s.write(cfg.key(), {"key": cfg.key(), "config": dataclasses.asdict(cfg),
                            "accuracy": 0.5, "density": 1 - sparsity, "seconds": 3.0})
    s.write("experiment0", {"key": "experiment0", "kind": "lesson", "result": {}})
    assert cli.main(["show", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{tmp_path}: 4 records"
    assert [line.split()[2] for line in lines[1:4]] == ["dense", "dense", "synflow"]
    assert [line.split("seed ")[1].split()[0] for line in lines[1:4]] == ["0", "1", "0"]
    assert lines[4] == "  experiment0  kind, result"


@pytest.mark.slow
def test_the_module_runs_as_a_command(tmp_path):
    out = subprocess.run([sys.executable, "-m", "opai_lib", *RUN, "--store", str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith(expected_config().key())


def test_run_options_override_the_profiles_dataset_and_device(tmp_path, capsys, monkeypatch):
    seen = []

    def fake_run(cfg, store):
        seen.append((cfg, store))
        return {"key": cfg.key(), "config": dataclasses.asdict(cfg), "accuracy": 0.5,
                "density": 0.1, "seconds": 1.0}

    monkeypatch.setattr(study, "run", fake_run)
    assert cli.main(["run", "--profile", "imagenet", "--dataset", "imagenet64", "--device",
                     "cpu", "--model", "resnet50", "--method", "snip", "--sparsity",
                     "0.9", "--store", str(tmp_path)]) == 0
    (cfg, where), = seen
    assert (cfg.dataset, cfg.device, cfg.model, where) == ("imagenet64", "cpu",
                                                           "resnet50", str(tmp_path))
    assert cfg.recipe.epochs == 120 and cfg.recipe.precision in ("fp32", "bf16")
    assert capsys.readouterr().out.startswith(cfg.key())


@pytest.mark.parametrize("grid", sorted(cli.GRIDS))
def test_every_grid_names_the_notebook_that_reads_it(grid):
    source = (Path(__file__).parents[1] / "notebooks" / f"{cli.CHAPTERS[grid]}.py").read_text()
    reads = ("expander_study as es", "es.chapter(") if grid == "expanders" else (f'("{grid}"',)
    assert all(r in source for r in reads)


def test_planned_is_what_a_sweep_plans():
    from opai_lib import expander_study, experiments

    budget = cli.planned("budget", "smoke")  # 3 arms x 2 budgets x 1 seed
    assert len(budget) == 6 and {c.recipe.epochs for c in budget} == {1, 2}
    assert budget == [r.config for r in experiments.EXPERIMENTS["budget"].runs(
        config.get_profile("smoke"))]
    assert cli.planned("expanders", "smoke") == expander_study.configs("smoke")
    with pytest.raises(SystemExit):  # argparse names the grids
        cli.planned("nope", "smoke")

"""Tables of run records: means, t-intervals and seed-paired differences, computed by hand."""

import dataclasses
import json
import math
import subprocess
import sys

import pytest

from opai_lib import study
from opai_lib.materials import Material

T_975_1 = 12.706204736  # Student t quantile 0.975 with one degree of freedom


def record(method, material, seed, accuracy, sparsity=0.9):
    """A record as a run writes it (its config from a real RunConfig), with a given accuracy."""
    cfg = study.RunConfig(method=method, sparsity=sparsity, seed=seed,
                          material=Material(material, per_class=10))
    return {"config": json.loads(json.dumps(dataclasses.asdict(cfg))), "accuracy": accuracy}


def test_table_gives_mean_and_t_interval_over_seeds():
    out = study.table([record("snip", "image", 0, 0.50), record("snip", "image", 1, 0.54)],
                      by=["method"])
    row = out.iloc[0]
    assert row["mean"] == pytest.approx(0.52)
    std = math.sqrt(2 * 0.02 ** 2)  # sample standard deviation of {0.50, 0.54}
    assert row["ci95"] == pytest.approx(T_975_1 * std / math.sqrt(2))


def test_paired_differences_match_runs_by_seed():
    records = [record("snip", "image", 0, 0.50), record("snip", "dop", 0, 0.51),
               record("snip", "image", 1, 0.40), record("snip", "dop", 1, 0.43),
               record("snip", "dop", 2, 0.99),  # no image run with seed 2: left out
               record("grasp", "image", 0, 0.30), record("grasp", "dop", 0, 0.20)]
    out = study.paired_differences(records, by=["method", "sparsity"], vary="material.name",
                                   reference="image").set_index("method")
    snip = out.loc["snip"]
    assert snip["material.name"] == "dop" and snip["count"] == 2
    assert snip["per_seed"] == pytest.approx([0.01, 0.03])
    assert snip["mean"] == pytest.approx(0.02)
    std = math.sqrt(2 * 0.01 ** 2)
    assert snip["ci95"] == pytest.approx(T_975_1 * std / math.sqrt(2))
    grasp = out.loc["grasp"]
    assert grasp["per_seed"] == pytest.approx([-0.10]) and math.isnan(grasp["ci95"])


def test_config_fields_by_dotted_name():
    r = record("grasp", "stitch", 0, 0.5)
    assert study.config_value(r, "material.sigma") == 0.5
    assert study.config_value(r, "options.bn_mode") == "train"
    assert study.config_value(r, "recipe.milestones") == (80, 120)
    with pytest.raises(ValueError, match="config field 'material' is a group"):
        study.config_value(r, "material")
    dense = {"config": json.loads(json.dumps(dataclasses.asdict(study.RunConfig())))}
    assert study.config_value(dense, "material.name") is None
    out = study.table([r, record("grasp", "stitch", 1, 0.6), {**dense, "accuracy": 0.7}],
                      by=["method", "material.name"])
    assert out["count"].tolist() == [2, 1] and out["mean"].tolist() == pytest.approx([0.55, 0.7])


def test_a_training_worker_imports_no_table_or_statistics_library():
    # spawned workers import opai_lib.study to train; scipy.stats and pandas would add
    # about a second to every worker's start
    code = ("import sys, opai_lib.study; "
            "print(sorted(m for m in ('pandas', 'scipy.stats') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"

"""The teaching chapters' experiments: keys, the store, plans, tables and figures."""

import dataclasses
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import myst_nb  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from opai_lib import (  # noqa: E402
    after_training,
    config,
    data,
    filters,
    lessons,
    lottery,
    masks,
    models,
    plots,
    record,
)
from opai_lib.after_training import MagnitudeOptions  # noqa: E402
from opai_lib.config import Recipe  # noqa: E402
from opai_lib.lottery import LotteryOptions  # noqa: E402
from opai_lib.store import Store  # noqa: E402
from tests.conftest import shared_cifar_available  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = lessons.Setting(model="tiny", dataset="synthetic", train_per_class=16,
                       test_per_class=8, seed=0,
                       recipe=Recipe(epochs=2, batch_size=32, lr=0.1, schedule="cosine"))
SEARCH = lessons.TicketSearch(TINY, LotteryOptions(sparsity=0.75, rounds=2))


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def glued(monkeypatch):
    calls = {}
    monkeypatch.setattr(myst_nb, "glue",
                        lambda key, value, display: calls.__setitem__(key, value))
    return calls


@pytest.fixture
def counted(monkeypatch):
    """How often each experiment class's ``compute`` really runs."""
    calls = []
    for cls in (lessons.TicketSearch, lessons.Reinitialised):
        original = cls.compute

        def compute(self, store, original=original):
            calls.append(type(self).__name__)
            return original(self, store)

        monkeypatch.setattr(cls, "compute", compute)
    return calls


# ---------------------------------------------------------------------------------------
# Where the records live, and what names them.


def test_store_dir_follows_the_studys_rules(monkeypatch, tmp_path):
    monkeypatch.setenv("OPAI_RUNS_DIR", str(tmp_path))
    assert lessons.store_dir("cpu") == tmp_path / "cpu-lessons"
    monkeypatch.delenv("OPAI_RUNS_DIR")
    assert lessons.store_dir("cpu") == ROOT / "book" / "record" / "cpu-lessons"
    assert lessons.store_dir("smoke") == ROOT / "runs" / "smoke-lessons"
    assert lessons.store_dir("cpu") != ROOT / "book" / "record" / "cpu"  # never the study's


def test_same_options_same_key_and_every_option_in_it():
    again = lessons.TicketSearch(dataclasses.replace(TINY),
                                 LotteryOptions(sparsity=0.75, rounds=2))
    assert lessons.key(again) == lessons.key(SEARCH)
    assert len(lessons.key(SEARCH)) == 16
    changed = [
        dataclasses.replace(SEARCH, setting=dataclasses.replace(TINY, seed=1)),
        dataclasses.replace(SEARCH, setting=dataclasses.replace(TINY, width=0.5)),
        dataclasses.replace(SEARCH, setting=dataclasses.replace(TINY, train_per_class=8)),
        dataclasses.replace(SEARCH, setting=dataclasses.replace(
            TINY, recipe=dataclasses.replace(TINY.recipe, lr=0.05))),
        dataclasses.replace(SEARCH, lottery=LotteryOptions(sparsity=0.75, rounds=2,
                                                           rewind_step=3)),
        dataclasses.replace(SEARCH, lottery=LotteryOptions(sparsity=0.75, rounds=2,
                                                           schedule="linear")),
        lessons.Reinitialised(SEARCH, 1, init_seed=1),
        lessons.Reinitialised(SEARCH, 2, init_seed=1),
        lessons.Reinitialised(SEARCH, 1, init_seed=2),
    ]
    keys = {lessons.key(SEARCH), *(lessons.key(c) for c in changed)}
    assert len(keys) == len(changed) + 1


def test_the_kind_is_in_the_key():
    """Two experiments with equal fields but of different kinds never share a record."""
    @dataclasses.dataclass(frozen=True)
    class Other:
        setting: lessons.Setting = TINY
        lottery: LotteryOptions = LotteryOptions(sparsity=0.75, rounds=2)

    assert dataclasses.asdict(Other()) == dataclasses.asdict(SEARCH)
    assert lessons.key(Other()) != lessons.key(SEARCH)
    with pytest.raises(TypeError, match="options dataclass"):
        lessons.key({"sparsity": 0.5})


def test_every_experiment_reads_back_from_its_record_for_verify():
    kinds = [SEARCH, lessons.Reinitialised(SEARCH, init_seed=5),
             lessons.Retraining(lessons.Setting(pretrained=True),
                                MagnitudeOptions(sparsity=0.5, rounds=2)),
             lessons.FilterRetraining(lessons.Setting(pretrained=True), 0.25),
             lessons.Timing(fractions=(0.5,), cpu="A")]
    for options in kinds:
        stored = {"kind": type(options).__name__,
                  "options": json.loads(json.dumps(dataclasses.asdict(options)))}
        back = record.options_of(stored)
        assert back == options and lessons.key(back) == lessons.key(options)


def test_a_record_is_computed_once_then_read_back(tmp_path, counted):
    first = lessons.run(SEARCH, tmp_path)
    assert counted == ["TicketSearch"]
    assert first["key"] == lessons.key(SEARCH) and first["kind"] == "TicketSearch"
    assert (tmp_path / f"{first['key']}.json").exists()
    assert json.loads((tmp_path / f"{first['key']}.json").read_text()) == first
    assert first["options"]["lottery"]["rounds"] == 2 and first["machine"]["cpu"]
    again = lessons.run(dataclasses.replace(SEARCH), Store(tmp_path))
    assert counted == ["TicketSearch"] and again == first  # read back, not recomputed
    assert lessons.finished([SEARCH, dataclasses.replace(SEARCH, setting=dataclasses.replace(
        TINY, seed=3))], tmp_path) == [first, None]
    other = lessons.run_all([SEARCH, dataclasses.replace(SEARCH, setting=dataclasses.replace(
        TINY, seed=3))], tmp_path)
    assert counted == ["TicketSearch", "TicketSearch"]  # only the new one
    assert other[0] == first and other[1]["key"] != first["key"]


def test_ticket_masks_come_back_bit_for_bit(tmp_path):
    record = lessons.run(SEARCH, tmp_path)
    stored = lessons.ticket_masks(record, tmp_path)
    model, batches, test_batches = TINY.start()
    ticket = lottery.find_ticket(model, batches, TINY.recipe, test_batches, SEARCH.lottery)
    assert len(stored) == len(ticket.masks) == 3
    for a, b in zip(stored, ticket.masks, strict=True):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[n], b[n].cpu()) for n in a)
    assert [r["accuracy"] for r in record["rounds"]] == [r["accuracy"] for r in ticket.rounds]
    kept = [sum(int(m.sum()) for m in mask.values()) for mask in stored]
    assert kept[0] > kept[1] > kept[2] and [r["kept"] for r in record["rounds"]] == kept


def test_the_control_reads_the_tickets_mask_and_changes_only_the_weights(tmp_path, counted):
    control = lessons.Reinitialised(SEARCH, 2, init_seed=5)
    record = lessons.run(control, tmp_path)
    assert counted == ["Reinitialised", "TicketSearch"]  # the search, computed on demand
    searched = lessons.run(SEARCH, tmp_path)
    assert counted == ["Reinitialised", "TicketSearch"]  # then read back
    assert record["sparsity"] == searched["rounds"][2]["sparsity"]
    # the same network, rebuilt by hand, gives the same accuracy
    mask = lessons.ticket_masks(searched, tmp_path)[2]
    model, batches, test_batches = TINY.start()
    net = lottery.reinitialised(model, mask, 5)
    assert not torch.equal(net.conv1.weight, model.conv1.weight * mask["conv1.weight"])
    by_hand = lottery.train_ticket(net, batches, TINY.recipe, test_batches)
    assert by_hand["accuracy"] == record["accuracy"]


def test_experiments_refuse_a_wrong_start_or_control():
    with pytest.raises(ValueError, match="TicketSearch.setting .* pretrained=False"):
        lessons.TicketSearch(dataclasses.replace(TINY, model="resnet20", dataset="cifar10",
                                                 pretrained=True))
    with pytest.raises(ValueError, match="Retraining.setting .* pretrained=True"):
        lessons.Retraining(TINY)
    with pytest.raises(ValueError, match="FilterRetraining.setting .* pretrained=True"):
        lessons.FilterRetraining(TINY)
    with pytest.raises(ValueError, match="Reinitialised.init_seed .* other than the ticket's"):
        lessons.Reinitialised(SEARCH, 1, init_seed=0)
    with pytest.raises(ValueError, match=r"Reinitialised.round .* 1..2"):
        lessons.Reinitialised(SEARCH, 3)
    with pytest.raises(ValueError, match="Setting.model .*published weights"):
        lessons.Setting(model="tiny", pretrained=True)
    with pytest.raises(ValueError, match="Setting.pretrained .* width 0.5 on cifar10"):
        lessons.Setting(width=0.5, pretrained=True)
    with pytest.raises(ValueError, match="Setting.train_per_class"):
        lessons.Setting(dataset="synthetic", train_per_class=65)
    with pytest.raises(ValueError, match="Timing.cpu"):
        lessons.Timing()
    with pytest.raises(ValueError, match="Timing.fractions"):
        lessons.Timing(fractions=(0.0,), cpu="x")


def test_a_timing_is_measured_only_on_the_cpu_it_names(tmp_path):
    elsewhere = lessons.Timing(model="tiny", cpu="Some Other CPU (family 1, model 1)")
    with pytest.raises(ValueError, match="Timing.cpu .* this machine's CPU"):
        lessons.run(elsewhere, tmp_path)
    assert lessons.key(elsewhere) != lessons.key(dataclasses.replace(elsewhere, cpu="B"))


def test_a_timing_record_times_every_network(tmp_path):
    timing = lessons.Timing("resnet20", 0.25, (0.25, 0.5), batch=4, repeats=2, threads=1,
                            cpu=config.cpu_model())
    record = lessons.run(timing, tmp_path)
    rows = record["timings"]
    assert [(r["network"], r["fraction"]) for r in rows] == [
        ("dense", 0.0), ("unstructured mask", 0.25), ("filter-pruned (smaller)", 0.25),
        ("unstructured mask", 0.5), ("filter-pruned (smaller)", 0.5)]
    assert all(r["seconds"] > 0 for r in rows)
    assert rows[1]["kept"] == rows[2]["kept"] and rows[3]["kept"] == rows[4]["kept"]
    assert rows[2]["multiply_adds"] < rows[1]["multiply_adds"]


# ---------------------------------------------------------------------------------------
# Chapters' parameters -> experiments.


def test_initial_and_pretrained_settings_by_profile():
    cpu, smoke = config.get_profile("cpu"), config.get_profile("smoke")
    s = lessons.initial_setting(cpu, "resnet20", None, None, 0)
    assert (s.width, s.train_per_class, s.test_per_class) == (0.5, 1000, 0)
    assert s.recipe == cpu.recipe.on("cpu")
    s = lessons.initial_setting(smoke, "resnet20", None, None, 2)
    assert (s.width, s.train_per_class, s.dataset, s.seed) == (0.25, 32, "synthetic", 2)
    s = lessons.initial_setting(cpu, "resnet20", 1, 500, 0)
    assert (s.width, s.train_per_class) == (1.0, 500)
    p = lessons.pretrained_setting(cpu, "resnet56", None, None, 0)
    assert (p.model, p.pretrained, p.train_per_class, p.test_per_class) == \
        ("resnet56", True, 2000, 250)
    p = lessons.pretrained_setting(smoke, "resnet20", None, None, 0)
    assert (p.dataset, p.train_per_class, p.test_per_class) == ("cifar10", 10, 10)
    with pytest.raises(ValueError, match=r"model_name = 'vgg16_bn'; allowed: a network with "
                                         r"published CIFAR-10 weights"):
        lessons.pretrained_setting(cpu, "vgg16_bn", None, None, 0)
    with pytest.raises(ValueError, match="train_per_class = 6000"):
        lessons.pretrained_setting(cpu, "resnet20", 6000, None, 0)
    with pytest.raises(ValueError, match="width = 0"):
        lessons.initial_setting(cpu, "resnet20", 0, None, 0)


def test_schedules_share_one_budget_and_one_shot_has_one_shape():
    cpu = config.get_profile("cpu")
    setting = lessons.pretrained_setting(cpu, "resnet20", None, None, 0)
    plan = lessons.schedule_plan(cpu, setting, 0.9, [1, 2, 3], ["exponential", "linear"], 6,
                                 0.01)
    shapes = [(r.pruning.rounds, r.pruning.schedule, r.setting.recipe.epochs) for r in plan]
    assert shapes == [(1, "exponential", 6), (2, "exponential", 3), (2, "linear", 3),
                      (3, "exponential", 2), (3, "linear", 2)]
    assert all(r.pruning.sparsity == 0.9 and r.setting.recipe.lr == 0.01 for r in plan)
    recipe = plan[0].setting.recipe
    assert (recipe.schedule, recipe.warmup_epochs, recipe.batch_size, recipe.weight_decay) == \
        ("cosine", 0.0, cpu.recipe.batch_size, cpu.recipe.weight_decay)
    with pytest.raises(ValueError, match="schedule_epochs = 4; allowed: a multiple of every"):
        lessons.schedule_plan(cpu, setting, 0.9, [1, 3], ["linear"], 4, 0.01)
    with pytest.raises(ValueError, match="shapes"):
        lessons.schedule_plan(cpu, setting, 0.9, [1, 3], ["cubic"], 3, 0.01)
    with pytest.raises(ValueError, match="rounds"):
        lessons.schedule_plan(cpu, setting, 0.9, [0], ["linear"], 3, 0.01)
    with pytest.raises(ValueError, match="retrain_lr"):
        lessons.schedule_plan(cpu, setting, 0.9, [1], ["linear"], 3, -1)
    one_shot = lessons.one_shot_plan(cpu, setting, [0.5, 0.9], 1, 0.01)
    assert [r.pruning.sparsity for r in one_shot] == [0.0, 0.5, 0.9]  # the dense control first
    with pytest.raises(ValueError, match="sparsities"):
        lessons.one_shot_plan(cpu, setting, [0.5, 1.0], 1, 0.01)


def test_lottery_plan_rewinds_to_a_step_counted_in_epochs():
    smoke = config.get_profile("smoke")
    setting = lessons.initial_setting(smoke, "resnet20", None, None, 0)
    plan = lessons.lottery_plan(setting, 0.8, 2, 0.5)
    per_epoch = len(data.batches(setting.datasets()[0], setting.recipe.batch_size, True))
    assert per_epoch == 5  # 320 synthetic images in batches of 64
    assert plan.rewind_to_init.lottery.rewind_step == 0
    assert plan.rewind_early.lottery.rewind_step == round(0.5 * per_epoch)
    assert [c.round for c in plan.controls] == [1, 2]
    assert all(c.ticket == plan.rewind_to_init and c.init_seed == 1 for c in plan.controls)
    assert plan.all() == [plan.rewind_to_init, plan.rewind_early, *plan.controls]
    with pytest.raises(ValueError, match=r"rewind_epochs = 1; allowed: a number of epochs in "
                                         r"\(0, 1\)"):
        lessons.lottery_plan(setting, 0.8, 2, 1)


def test_filter_plan_pairs_each_fraction_with_a_mask_of_the_same_size():
    cpu = config.get_profile("cpu")
    setting = lessons.pretrained_setting(cpu, "resnet20", None, None, 0)
    structured, unstructured = lessons.filter_plan(cpu, setting, [0.25, 0.5], 2, 0.01)
    assert [f.fraction for f in structured] == [0.25, 0.5]
    assert unstructured[0].pruning.sparsity == 0.0
    model = models.get_model("resnet20", seed=3)  # other weights: the counts do not change
    for f, r in zip(structured, unstructured[1:], strict=True):
        small = filters.remove_filters(model, filters.l1_filters(model, f.fraction))
        mask = after_training.magnitude_mask(model, r.pruning.sparsity)
        assert sum(int(m.sum()) for m in mask.values()) == filters.kept_weights(small)
        assert r.setting.recipe.epochs == f.setting.recipe.epochs == 2


def test_timing_plan_defaults_by_profile():
    for name, expected in [("smoke", (16, 3)), ("cpu", (256, 30))]:
        P = config.get_profile(name)
        setting = lessons.pretrained_setting(P, "resnet20", None, None, 0)
        t = lessons.timing_plan(P, setting, [0.5], None, None, 1)
        assert (t.batch, t.repeats, t.cpu, t.fractions) == (*expected, config.cpu_model(),
                                                            (0.5,))
    with pytest.raises(ValueError, match="timing_batch must be an integer >= 1"):
        lessons.timing_plan(P, setting, [0.5], 0, None, 1)


# ---------------------------------------------------------------------------------------
# Tables, against hand computations.


def retraining_record(sparsity, rounds, schedule, epochs, steps, majority=None):
    """A Retraining record as ``run`` writes it, with the fields the tables read."""
    return {"options": {"setting": {"recipe": {"epochs": epochs}},
                        "pruning": dataclasses.asdict(MagnitudeOptions(
                            sparsity=sparsity, rounds=rounds, schedule=schedule))},
            "steps": steps, "mean_instability": sum(s["instability"] for s in steps)
            / len(steps), "majority_share_pruned": majority,
            "sparsest_layer": "layer3.2.conv2.weight", "sparsest_density": 0.0125,
            "parameters": 1000, "multiply_adds": 5_000_000, "seconds": 60.0,
            "machine": {"cpu": "CPU A"}}


def step(n, sparsity, before, pruned, retrained, kept=100):
    return {"step": n, "sparsity": sparsity, "kept": kept, "accuracy_before": before,
            "accuracy_pruned": pruned, "accuracy_retrained": retrained,
            "drop": before - pruned, "instability": (before - pruned) / before}


def test_retraining_and_steps_tables_by_hand():
    one = retraining_record(0.9, 1, "exponential", 3, [step(1, 0.9, 0.8, 0.1, 0.6)], 1.0)
    three = retraining_record(0.9, 3, "linear", 1, [
        step(1, 0.3, 0.8, 0.7, 0.75), step(2, 0.6, 0.75, 0.5, 0.7),
        step(3, 0.9, 0.7, 0.35, 0.65)])
    table = lessons.retraining_table([one, three])
    assert table["schedule"].tolist() == ["one shot", "3 steps, linear"]
    assert table["retraining epochs"].tolist() == [3, 3]
    assert table["epochs per step"].tolist() == [3, 1]
    assert table["after pruning %"].tolist() == pytest.approx([10.0, 35.0])
    assert table["after retraining %"].tolist() == pytest.approx([60.0, 65.0])
    assert table["dense %"].tolist() == pytest.approx([80.0, 80.0])
    # (0.8 - 0.1) / 0.8 = 0.875; (0.1/0.8 + 0.25/0.75 + 0.35/0.7) / 3 = 0.31944...
    assert table["mean instability"].tolist() == pytest.approx([0.875, 0.3194444])
    assert table["most frequent class %"].iloc[0] == 100.0
    assert math.isnan(table["most frequent class %"].iloc[1])
    assert table["sparsest layer"].iloc[0] == "layer3.2.conv2"
    assert table["sparsest layer %"].iloc[0] == pytest.approx(1.25)
    steps = lessons.steps_table([one, three])
    assert steps["epochs before"].tolist() == [0, 0, 1, 2]
    assert steps["epochs per step"].tolist() == [3, 1, 1, 1]
    assert steps["pruned %"].tolist() == pytest.approx([10.0, 70.0, 50.0, 35.0])
    assert steps["instability"].iloc[2] == pytest.approx(1 / 3)


def test_ticket_table_by_hand():
    def search(step_k, accs):
        return {"rewind_step": step_k, "rounds": [
            {"round": r, "sparsity": s, "accuracy": a}
            for r, (s, a) in enumerate(zip([0.0, 0.5, 0.75], accs, strict=True))]}

    controls = [{"options": {"round": r}, "sparsity": s, "accuracy": a}
                for r, s, a in [(1, 0.5, 0.6), (2, 0.75, 0.5)]]
    table = lessons.ticket_table({"init": search(0, [0.8, 0.78, 0.7]),
                                  "early": search(20, [0.8, 0.79, 0.75]),
                                  "reinit": controls})
    assert len(table) == 8
    wide = table.pivot_table(index="sparsity %", columns="arm", values="accuracy %")
    assert wide.loc[75.0, "rewound to the initial weights"] == pytest.approx(70.0)
    assert wide.loc[75.0, "rewound to step k"] == pytest.approx(75.0)
    assert wide.loc[75.0, "random re-initialisation"] == pytest.approx(50.0)
    assert table.loc[table["arm"] == "rewound to step k", "rewind step"].unique() == [20]


def test_filter_table_by_hand():
    dense = retraining_record(0.0, 1, "exponential", 2, [step(1, 0.0, 0.8, 0.8, 0.82, 400)])
    twin = retraining_record(0.5, 1, "exponential", 2, [step(1, 0.5, 0.8, 0.78, 0.81, 200)])
    filt = {"options": {"fraction": 0.5}, "kept": 200, "parameters": 210,
            "multiply_adds": 2_500_000, "accuracy_pruned": 0.3, "accuracy_retrained": 0.7}
    timing = {"timings": [
        {"network": "dense", "fraction": 0.0, "seconds": 0.2},
        {"network": "unstructured mask", "fraction": 0.5, "seconds": 0.25},
        {"network": "filter-pruned (smaller)", "fraction": 0.5, "seconds": 0.125}]}
    table = lessons.filter_table([filt], [dense, twin], timing)
    assert table["network"].tolist() == ["dense", "filter-pruned (smaller)",
                                         "unstructured mask"]
    assert table["speed-up"].tolist() == pytest.approx([1.0, 1.6, 0.8])
    assert table["ms / batch"].tolist() == pytest.approx([200.0, 125.0, 250.0])
    assert table["weights kept"].tolist() == [400, 200, 200]
    assert table["multiply-adds (M)"].tolist() == pytest.approx([5.0, 2.5, 5.0])
    assert table["after retraining %"].tolist() == pytest.approx([82.0, 70.0, 81.0])
    with pytest.raises(ValueError, match="no magnitude record keeps 200 weights"):
        lessons.filter_table([filt], [dense], timing)


def test_standard_error_and_cost_by_hand():
    assert lessons.standard_error(80.0, 100) == pytest.approx(4.0)  # sqrt(.8 * .2 / 100)
    assert lessons.standard_error(50.0, 2500) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="accuracy_percent"):
        lessons.standard_error(120.0, 100)
    records = [{"seconds": 90.0, "machine": {"cpu": "B"}},
               {"seconds": 30.0, "machine": {"cpu": "A"}},
               {"seconds": 60.0, "machine": {"cpu": "B"}}]
    assert lessons.cost(records) == (3.0, "A, B")


class Constant(nn.Module):
    """Predicts the class ``label_of`` gives each image (the mean of its first channel)."""

    def __init__(self, label_of):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.label_of = label_of

    def forward(self, x):
        labels = self.label_of(x)
        return nn.functional.one_hot(labels, 4).float() + 0 * self.w


def test_majority_share_counts_the_most_frequent_prediction():
    x = torch.arange(8.0).view(8, 1, 1, 1).expand(8, 1, 2, 2)
    batches = [(x[:5], None), (x[5:], None)]
    assert lessons.majority_share(Constant(lambda v: torch.zeros(len(v), dtype=torch.long)),
                                  batches) == 1.0
    spread = Constant(lambda v: v[:, 0, 0, 0].long() % 4)
    assert lessons.majority_share(spread, batches) == 0.25
    skewed = Constant(lambda v: (v[:, 0, 0, 0] > 1).long())  # 6 of 8 images in class 1
    assert lessons.majority_share(skewed, batches) == 0.75


# ---------------------------------------------------------------------------------------
# Figures and words glued into the prose.


def test_comparison_words(glued):
    assert plots.comparison(70.0, 60.0) == "above"
    assert plots.comparison(60.0, 70.0) == "below"
    assert plots.comparison(60.4, 60.0, tolerance=0.5) == "level with"
    assert plots.glue_comparison("k", 1.0, 2.0) == "below" and glued == {"k": "below"}
    plots.glue_text("name", "layer3.2.conv2")
    assert glued["name"] == "layer3.2.conv2"


def test_accuracy_lines_draw_each_group_and_reference():
    table = pd.DataFrame({"x": [90, 50, 50, 90], "y": [10.0, 80.0, 70.0, 60.0],
                          "arm": ["a", "a", "b", "b"]})
    ax = plots.accuracy_lines(table, "x", "y", "arm", references={"dense": 85.0})
    lines = ax.get_lines()
    assert len(lines) == 3
    assert list(lines[0].get_xdata()) == [50, 90] and list(lines[0].get_ydata()) == [80, 10]
    assert list(lines[1].get_ydata()) == [70, 60]
    assert list(lines[2].get_ydata()) == [85.0, 85.0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b", "dense"]


def test_pruning_trace_draws_a_drop_and_a_recovery_per_step():
    three = retraining_record(0.9, 3, "linear", 1, [
        step(1, 0.3, 0.8, 0.7, 0.75), step(2, 0.6, 0.75, 0.5, 0.7),
        step(3, 0.9, 0.7, 0.35, 0.65)])
    ax = plots.pruning_trace(lessons.steps_table([three]))
    lines = ax.get_lines()
    assert len(lines) == 6
    drop, recovery = lines[2], lines[3]  # the second step
    assert list(drop.get_xdata()) == [1, 1]
    assert list(drop.get_ydata()) == pytest.approx([75.0, 50.0])
    assert list(recovery.get_xdata()) == [1, 2]
    assert list(recovery.get_ydata()) == pytest.approx([50.0, 70.0])


def test_stability_scatter_and_speedup_bars():
    table = pd.DataFrame({"schedule": ["one shot", "3 steps"], "mean instability": [0.9, 0.3],
                          "after retraining %": [60.0, 65.0]})
    ax = plots.stability_scatter(table)
    points = ax.collections[0].get_offsets()
    assert points.tolist() == [[0.9, 60.0], [0.3, 65.0]]
    assert [t.get_text() for t in ax.texts] == ["one shot", "3 steps"]
    speed = pd.DataFrame({"network": ["dense", "filter-pruned (smaller)", "unstructured mask"],
                          "filters removed %": [0.0, 50.0, 50.0],
                          "speed-up": [1.0, 1.6, 1.02]})
    ax = plots.speedup_bars(speed)
    heights = sorted(p.get_height() for p in ax.patches if p.get_height() > 0)
    assert heights == pytest.approx([1.02, 1.6])


# ---------------------------------------------------------------------------------------
# What the filter chapter times.


def test_same_size_networks_keep_as_many_weights():
    model = models.get_model("resnet20", width=0.25, seed=0)
    nets = filters.same_size_networks(model, 0.5)
    small, masked = nets["filter-pruned (smaller)"], nets["unstructured mask"]
    assert filters.kept_weights(small) == filters.kept_weights(masked) < \
        filters.kept_weights(model)
    assert filters.kept_weights(model) == sum(p.numel() for p in models.prunable(model).values())
    assert masks.pruned_nonzero(masked) == 0 and not masks.get_mask(model)  # model untouched
    assert filters.multiply_adds(small) < filters.multiply_adds(masked) == \
        filters.multiply_adds(model)


def test_time_inference_times_every_network_and_restores_threads():
    nets = {"a": models.get_model("tiny", seed=0), "b": models.get_model("tiny", width=2)}
    before = torch.get_num_threads()
    seconds = filters.time_inference(nets, batch=2, repeats=3, threads=1)
    assert list(seconds) == ["a", "b"] and all(s > 0 for s in seconds.values())
    assert torch.get_num_threads() == before
    assert nets["a"].training  # timed on copies, in eval mode
    with pytest.raises(ValueError, match="repeats must be an integer >= 1"):
        filters.time_inference(nets, repeats=0)
    with pytest.raises(ValueError, match="nets must name at least one network"):
        filters.time_inference({})


# ---------------------------------------------------------------------------------------
# The experiments that start from the published network (CIFAR-10 and its weights).


@pytest.mark.slow
@pytest.mark.skipif(not shared_cifar_available(), reason="needs the shared CIFAR-10 copy")
def test_retraining_and_filter_records_on_the_published_network(tmp_path):
    setting = lessons.Setting(pretrained=True, train_per_class=2, test_per_class=2,
                              recipe=Recipe(epochs=1, batch_size=10, lr=0.01,
                                            schedule="cosine"))
    one_shot = lessons.run(lessons.Retraining(setting, MagnitudeOptions(sparsity=0.9)),
                           tmp_path)
    assert len(one_shot["steps"]) == 1 and one_shot["majority_share_pruned"] >= 0.1
    assert 0 < one_shot["sparsest_density"] < 0.1
    steps = lessons.run(lessons.Retraining(setting, MagnitudeOptions(sparsity=0.9, rounds=2)),
                        tmp_path)
    assert len(steps["steps"]) == 2 and steps["majority_share_pruned"] is None
    assert steps["steps"][1]["accuracy_before"] == steps["steps"][0]["accuracy_retrained"]
    dense = lessons.run(lessons.Retraining(setting, MagnitudeOptions(sparsity=0.0)), tmp_path)
    assert dense["steps"][0]["instability"] == 0.0
    filt = lessons.run(lessons.FilterRetraining(setting, 0.5), tmp_path)
    model = models.load_pretrained("resnet20")
    small = filters.remove_filters(model, filters.l1_filters(model, 0.5))
    assert filt["kept"] == filters.kept_weights(small)
    assert filt["multiply_adds"] == filters.multiply_adds(small)
    assert filt["accuracy_before"] == dense["steps"][0]["accuracy_before"]


@pytest.mark.slow
@pytest.mark.parametrize("name, parameters, message", [
    ("pruning_after_training", {"schedule_epochs": 4}, "schedule_epochs = 4; allowed: a "
     "multiple of every entry of rounds"),
    ("pruning_after_training", {"sparsities": "0.9"}, "sparsities = '0.9'; allowed: a list"),
    ("lottery_tickets", {"rewind_epochs": 9.0}, r"rewind_epochs = 9.0; allowed: a number of "
     r"epochs in \(0, 1\)"),
    ("lottery_tickets", {"model_name": "resnet21"}, "model_name = 'resnet21'"),
    ("filter_pruning", {"model_name": "vgg16_bn"}, "model_name = 'vgg16_bn'; allowed: a "
     "network with published CIFAR-10 weights"),
    ("filter_pruning", {"fractions": [0.5, 1.0]}, r"fractions = \[0.5, 1.0\]"),
])
def test_bad_chapter_parameters_stop_before_any_compute(tmp_path, monkeypatch, name,
                                                        parameters, message):
    import jupytext
    import nbformat
    import papermill

    monkeypatch.setenv("OPAI_RUNS_DIR", str(tmp_path / "runs"))
    nb = tmp_path / f"{name}.ipynb"
    nbformat.write(jupytext.read(ROOT / "notebooks" / f"{name}.py"), nb)
    with pytest.raises(papermill.PapermillExecutionError, match=message) as err:
        papermill.execute_notebook(nb, nb, parameters={"profile": "smoke", **parameters},
                                   cwd=str(tmp_path), kernel_name="python3",
                                   progress_bar=False)
    assert "parameters.check(globals())" in err.value.source  # the first cell after them
    assert not (tmp_path / "runs").exists()  # nothing was computed


# ---------------------------------------------------------------------------------------
# The numbers the prose quotes, by role.


def test_one_shot_and_schedule_summaries_by_hand():
    curve = lessons.retraining_table([
        retraining_record(0.9, 1, "exponential", 1, [step(1, 0.9, 0.8, 0.1, 0.6)], 1.0),
        retraining_record(0.0, 1, "exponential", 1, [step(1, 0.0, 0.8, 0.8, 0.85)], 0.12),
        retraining_record(0.5, 1, "exponential", 1, [step(1, 0.5, 0.8, 0.75, 0.84)], 0.11)])
    s = lessons.one_shot_summary(curve, chance=10.0)  # sorted by sparsity, any record order
    assert (s["dense"], s["dense_retrained"]) == pytest.approx((80.0, 85.0))
    assert (s["low_sparsity"], s["low_pruned"], s["low_drop"]) == pytest.approx((50, 75, 5))
    assert (s["top_sparsity"], s["top_pruned"], s["top_retrained"], s["top_cost"]) == \
        pytest.approx((90, 10, 60, 25))
    assert s["top_majority"] == 100.0 and s["top_sparsest_layer"] == "layer3.2.conv2"
    # 90 % scores 10 % right after pruning, chance with ten classes: the collapse
    assert (s["collapse_sparsity"], s["collapse_pruned"], s["collapse_retrained"],
            s["collapse_cost"]) == pytest.approx((90, 10, 60, 25))
    assert s["collapse_sparsest_layer"] == "layer3.2.conv2"
    alive = lessons.one_shot_summary(curve[curve["sparsity %"] < 90], chance=10.0)
    assert math.isnan(alive["collapse_sparsity"]) and alive["collapse_sparsest_layer"] == "none"
    near = lessons.one_shot_summary(curve, chance=10.0, margin=0.0)  # 10.0 exactly: still in
    assert near["collapse_sparsity"] == 90
    assert math.isnan(lessons.one_shot_summary(curve, chance=12.0, margin=1.0)
                      ["collapse_sparsity"])  # 10 % is 2 points from 12 %
    with pytest.raises(ValueError, match="the dense control"):
        lessons.one_shot_summary(curve.iloc[:1].iloc[[0]], chance=10.0)
    with pytest.raises(ValueError, match=r"\(chance, margin\)"):
        lessons.one_shot_summary(curve, chance=0.1, margin=-1)
    table = pd.DataFrame({"schedule": ["one shot", "3 steps, linear", "3 steps, exponential"],
                          "mean instability": [0.9, 0.3, 0.4],
                          "after retraining %": [60.0, 61.0, 65.0]})
    s = lessons.schedule_summary(table, tolerance=2.0)
    assert (s["unstable_label"], s["stable_label"]) == ("one shot", "3 steps, linear")
    assert (s["unstable_accuracy"], s["stable_accuracy"]) == (60.0, 61.0)
    assert s["unstable_vs_stable"] == "level with"  # 1 point, within the tolerance
    assert lessons.schedule_summary(table, tolerance=0.5)["unstable_vs_stable"] == "below"


def test_ticket_and_filter_summaries_by_hand():
    rows = [("rewound to the initial weights", 0, 0.0, 80.0),
            ("rewound to the initial weights", 2, 75.0, 78.0),
            ("rewound to step k", 0, 0.0, 81.0), ("rewound to step k", 2, 75.0, 79.0),
            ("random re-initialisation", 2, 75.0, 70.0)]
    table = pd.DataFrame(rows, columns=["arm", "round", "sparsity %", "accuracy %"])
    s = lessons.ticket_summary(table, 100)
    assert s["dense"] == 80.0 and s["standard_error"] == pytest.approx(4.0)
    assert (s["ticket"], s["rewound"], s["control"]) == (78.0, 79.0, 70.0)
    assert (s["ticket_gain"], s["rewound_gain"]) == (8.0, 9.0)
    assert (s["ticket_vs_control"], s["rewound_vs_ticket"], s["ticket_vs_dense"]) == \
        ("above", "level with", "level with")
    filt = pd.DataFrame([
        ("dense", 0.0, 400, 40.0, 80.0, 82.0, 200.0, 1.0),
        ("filter-pruned (smaller)", 75.0, 100, 10.0, 10.0, 60.0, 80.0, 2.5),
        ("unstructured mask", 75.0, 100, 40.0, 40.0, 75.0, 200.0, 1.0),
        ("filter-pruned (smaller)", 25.0, 300, 30.0, 50.0, 79.0, 160.0, 1.25),
        ("unstructured mask", 25.0, 300, 40.0, 80.0, 82.0, 190.0, 200 / 190)],
        columns=["network", "filters removed %", "weights kept", "multiply-adds (M)",
                 "after pruning %", "after retraining %", "ms / batch", "speed-up"])
    s = lessons.filter_summary(filt)
    assert (s["low_fraction"], s["high_fraction"]) == (25.0, 75.0)
    assert (s["low_weights"], s["high_weights"]) == pytest.approx((25.0, 75.0))
    assert (s["high_filter_retrained"], s["high_mask_retrained"]) == (60.0, 75.0)
    assert (s["low_macs"], s["high_macs"]) == pytest.approx((0.75, 0.25))
    assert s["high_ideal"] == pytest.approx(4.0) and s["high_vs_ideal"] == "below"
    assert (s["mask_speedup_min"], s["mask_speedup_max"]) == pytest.approx((1.0, 200 / 190))
    assert s["dense_ms"] == 200.0
    with pytest.raises(ValueError, match="the dense network first"):
        lessons.filter_summary(filt.iloc[1:])


def test_glue_all_glues_numbers_and_words(glued):
    values = {"a": 1, "b": 0.5, "c": "one shot"}
    assert plots.glue_all(values) is values
    assert glued == {"a": 1, "b": 0.5, "c": "one shot"}
    assert type(glued["a"]) is int and type(glued["b"]) is float

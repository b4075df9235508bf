import math
import os
import platform
import subprocess
import sys
import textwrap

import pytest
import torch

from opai_lib import config, data, masks, models
from opai_lib.config import Recipe, get_profile
from opai_lib.train import evaluate, show_progress, train


def test_step_and_cosine_schedules():
    step = Recipe(epochs=10, milestones=(4, 8), gamma=0.5)
    assert [step.lr_factor(e) for e in (0, 3.9, 4, 7.99, 8, 9.5)] == [1, 1, .5, .5, .25, .25]
    cos = Recipe(epochs=10, schedule="cosine", warmup_epochs=2)
    assert cos.lr_factor(1) == 0.5  # halfway through the linear warm-up
    assert cos.lr_factor(2) == 1 and abs(cos.lr_factor(6) - 0.5) < 1e-12
    assert abs(cos.lr_factor(10)) < 1e-12
    assert abs(cos.lr_factor(4) - 0.5 * (1 + math.cos(math.pi / 4))) < 1e-12


@pytest.mark.parametrize("field, value, message", [
    ("epochs", "3", "Recipe.epochs must be of type int, got '3'"),
    ("epochs", 0, "Recipe.epochs = 0; allowed: an integer >= 1"),
    ("lr", True, "Recipe.lr must be of type float"),
    ("schedule", "linear", "Recipe.schedule must be one of"),
    ("momentum", 1.0, "momentum"),
    ("precision", "int8", "precision must be one of"),
])
def test_recipe_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        Recipe(**{field: value})


def test_profiles():
    assert get_profile("smoke").dataset == "synthetic"
    with pytest.raises(ValueError, match="unknown profile 'gpu'"):
        get_profile("gpu")
    with pytest.raises(ValueError, match="Profile.seeds"):
        get_profile("cpu", seeds=[0, 1])


def test_progress_bar_is_quiet_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "1")
    assert not show_progress()


def test_evaluate_matches_a_direct_computation(toy):
    _, test = toy
    model = models.get_model("tiny", seed=0).eval()
    b = data.batches(test, 50, False)
    with torch.no_grad():
        x = torch.cat([x for x, _ in b])
        logits = model(x)
    expected = (logits.argmax(1) == test.labels).float().mean().item()
    out = evaluate(model, b)
    assert out["accuracy"] == pytest.approx(expected)
    assert out["loss"] == pytest.approx(
        torch.nn.functional.cross_entropy(logits, test.labels).item(), rel=1e-5)


def test_training_learns_the_toy_task(toy):
    train_set, test = toy
    model = models.get_model("tiny", seed=0)
    hist = train(model, data.batches(train_set, 32, True), Recipe(epochs=8, batch_size=32,
                 lr=0.1, schedule="cosine"), eval_batches=data.batches(test, 80, False),
                 device="cpu", progress=False)
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert hist[-1]["test_accuracy"] > 0.5  # chance is 0.1


def _train_tiny(toy):
    train_set, _ = toy
    model = models.get_model("tiny", seed=7)
    recipe = Recipe(epochs=2, batch_size=32, lr=0.05, nesterov=True, schedule="cosine",
                    warmup_epochs=1.0)
    train(model, data.batches(train_set, 32, True, seed=11), recipe, device="cpu",
          progress=False, seed=3)
    return model


def test_same_seed_same_weights(toy):
    a, b = _train_tiny(toy), _train_tiny(toy)
    for (n, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), n


def test_resume_from_checkpoint_gives_the_uninterrupted_run(toy, tmp_path):
    train_set, _ = toy
    recipe = Recipe(epochs=3, batch_size=32, lr=0.05, nesterov=True, schedule="cosine",
                    warmup_epochs=1.0)
    batches = data.batches(train_set, 32, True, seed=11)
    straight = models.get_model("tiny", seed=7)
    train(straight, batches, recipe, device="cpu", progress=False)

    ckpt = tmp_path / "run.ckpt"

    class Interrupt(Exception):
        pass

    class StopAfter:  # batches that raise after one epoch and a half, like a killed process
        def __init__(self, inner, steps):
            self.inner, self.steps = inner, steps

        def __len__(self):
            return len(self.inner)

        def set_epoch(self, e):
            self.inner.set_epoch(e)

        def __iter__(self):
            for batch in self.inner:
                if self.steps == 0:
                    raise Interrupt
                self.steps -= 1
                yield batch

    first = models.get_model("tiny", seed=7)
    with pytest.raises(Interrupt):
        train(first, StopAfter(batches, len(batches) * 3 // 2), recipe, checkpoint=ckpt,
              device="cpu", progress=False)
    assert len(torch.load(ckpt)["history"]) == 1
    resumed = models.get_model("tiny", seed=99)  # its own weights are overwritten on resume
    hist = train(resumed, batches, recipe, checkpoint=ckpt, device="cpu", progress=False)
    assert len(hist) == 3
    for (n, p), q in zip(straight.state_dict().items(), resumed.state_dict().values(),
                         strict=True):
        assert torch.equal(p, q), n
    with pytest.raises(ValueError, match="another recipe"):
        train(resumed, batches, Recipe(epochs=4, batch_size=32), checkpoint=ckpt,
              device="cpu", progress=False)


def test_bf16_autocast_trains(toy, monkeypatch):
    train_set, _ = toy
    model = models.get_model("tiny", seed=0)
    monkeypatch.setattr(config, "native_bf16", lambda: True)  # emulated or not: it must train
    hist = train(model, data.batches(train_set, 32, True), Recipe(epochs=2, batch_size=32,
                 lr=0.05, precision="bf16"), device="cpu", progress=False)
    assert math.isfinite(hist[-1]["train_loss"]) and hist[-1]["train_loss"] < hist[0]["train_loss"]
    with pytest.raises(ValueError, match="needs CUDA"):
        train(model, data.batches(train_set, 32, True), Recipe(epochs=1, precision="fp16"),
              device="cpu", progress=False)
    monkeypatch.setattr(config, "native_bf16", lambda: False)
    with pytest.raises(ValueError, match="would be emulated"):
        train(model, data.batches(train_set, 32, True), Recipe(epochs=1, precision="bf16"),
              device="cpu", progress=False)


DDP_SCRIPT = textwrap.dedent("""
    import sys, torch
    from torch import nn
    from opai_lib import data, masks
    from opai_lib.config import Recipe
    from opai_lib.train import init_distributed, train

    rank, world = init_distributed()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    masks.apply_mask(model, {"1.weight": torch.rand(10, 192) < 0.3})
    images = data.synthetic(train=True, per_class=16, size=8)
    batches = data.batches(images, 32, train=True, seed=1, augment=False)
    hist = train(model, batches, Recipe(epochs=2, batch_size=32, lr=0.1, weight_decay=1e-3),
                 device="cpu", progress=False)
    torch.save({"state": model.state_dict(), "world": world, "steps": len(batches)},
               f"{sys.argv[1]}/rank{rank}.pt")
""")


@pytest.mark.slow
def test_ddp_under_torchrun_matches_one_process(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    env_single = {"WORLD_SIZE": "1"}
    subprocess.run([sys.executable, str(script), str(tmp_path / "one")], check=True,
                   env={**os.environ, **env_single}, timeout=300)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                    "--master_port", "29731", str(script), str(tmp_path / "two")],
                   check=True, timeout=300)
    one = torch.load(tmp_path / "one" / "rank0.pt")
    r0, r1 = (torch.load(tmp_path / "two" / f"rank{r}.pt") for r in (0, 1))
    assert r0["world"] == 2 and one["world"] == 1 and r0["steps"] == one["steps"]
    for name, p in one["state"].items():
        assert torch.equal(r0["state"][name], r1["state"][name]), name  # replicas agree
        # two half-batches averaged by DDP give the one-process step, up to summation order
        assert torch.allclose(r0["state"][name].float(), p.float(), atol=1e-5), name
    w, m = r0["state"]["1.weight"], r0["state"]["1.weight_mask"]
    assert (w[~m] == 0).all() and masks.density({"w": m})["total"] < 0.4


_FAULTS = """
import resource, sys, torch, torch.nn.functional as F
from opai_lib import models, train
torch.set_num_threads(1)
if sys.argv[1] == "keep":
    assert train.keep_freed_memory()
model, x = models.get_model("resnet20", seed=0), torch.randn(64, 3, 32, 32)
step = lambda: F.cross_entropy(model(x), torch.arange(64) % 10).backward()
step(), step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")
def test_keeping_freed_memory_spares_each_step_its_page_faults():
    """Property of the allocator setting: training steps stop faulting their pages in again."""
    faults = {how: int(subprocess.run([sys.executable, "-c", _FAULTS, how], check=True,
                                      capture_output=True, text=True).stdout)
              for how in ("default", "keep")}
    assert faults["keep"] < faults["default"] / 4, faults

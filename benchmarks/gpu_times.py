"""One GPU's figures for book/reproduce.md: training speed and each chapter's expected time.

Prepared for a machine with CUDA, to run there once (not yet run on one). It prints:

1. the device, torch and CUDA;
2. for every network of the study's grids on the ``--profile`` (cifar-gpu: CIFAR-sized
   images, batch 128, precision auto, i.e. bf16 autocast on CUDA), the images per second of
   ``train.train`` over ``--steps`` optimizer steps after ``--warmup`` steps, timed between
   device synchronisations. The data are synthetic images of CIFAR's shape and count held
   on the device (``data.batches`` crops and flips them there: no batch is copied from the
   host), so the figure is the speed of training, whatever the data; ResNet-20 in fp32 too;
3. the seconds of SNIP, GraSP and SynFlow (100 rounds) pruning ResNet-20 at 90 % on the
   host's CPU, where a run scores; and how far the masks scored on the device agree with
   the CPU's (a user may prune a network already on the GPU);
4. each grid's expected hours on this device: per run, epochs x training images / the
   speed of its network, plus the slowest of the three scorings (a bound: dense and random
   runs score nothing); the chapter that reads the grid beside it.

``--device cpu`` runs the same on the CPU: how it was checked without a GPU.
Usage: python benchmarks/gpu_times.py [--device cuda] [--steps 200] [--warmup 20]
"""

import argparse
import dataclasses
import time

import torch
from timing import timed

from opai_lib import __main__ as cli
from opai_lib import config, data, models, prune
from opai_lib.train import train


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def speed(model_name: str, width: float, recipe, images, steps: int, warmup: int,
          device: torch.device) -> float:
    """Training images per second of ``model_name`` at ``width`` by ``recipe`` (its first
    ``warmup + steps`` steps on ``images``; the first ``warmup`` untimed)."""
    model = models.get_model(model_name, images.num_classes, width, seed=0)
    batches = data.batches(images, recipe.batch_size, True, 0, device=device)
    if len(batches) < warmup + steps:
        raise ValueError(f"{len(batches)} batches, fewer than warmup + steps = "
                         f"{warmup + steps}")
    train(model, batches, recipe, device=device, progress=False, stop_step=warmup)
    synchronize(device)
    t0 = time.perf_counter()
    train(model, batches, recipe, device=device, progress=False, start_step=warmup,
          stop_step=warmup + steps)
    synchronize(device)
    return steps * recipe.batch_size / (time.perf_counter() - t0)


CRITERIA = ("snip", "grasp", "synflow")


def score_seconds(images) -> tuple[dict[str, float], dict]:
    """Seconds of each criterion pruning ResNet-20 to 90 % (its defaults: SynFlow 100
    rounds) fed 10 images per class, on the host's CPU, where ``study`` runs score before
    training moves the network to the device (the fastest of two), and each one's mask."""
    batch = prune.scoring_batches(images, 10, 1, seed=0)[0]
    model = models.get_model("resnet20", images.num_classes, seed=0)
    seconds, found = {}, {}
    for criterion in CRITERIA:
        runs = [timed(lambda c=criterion: prune.prune_at_init(model, c, batch, 0.9))
                for _ in range(2)]
        seconds[criterion], found[criterion] = min(t for t, _ in runs), runs[-1][1]
    return seconds, found


def device_agreement(images, device: torch.device, on_cpu: dict) -> dict[str, float]:
    """For each criterion, the share of the kept weights of its CPU mask (``on_cpu``, from
    ``score_seconds``) that the mask scored on ``device`` keeps too (1: the same mask;
    float sums in another order may swap a few weights at the cut)."""
    x, y = prune.scoring_batches(images, 10, 1, seed=0)[0]
    model = models.get_model("resnet20", images.num_classes, seed=0).to(device)
    out = {}
    for criterion, cpu in on_cpu.items():
        other = prune.prune_at_init(model, criterion, (x.to(device), y.to(device)), 0.9)
        kept = sum(int(m.sum()) for m in cpu.values())
        out[criterion] = sum(int((m & other[n].cpu()).sum()) for n, m in cpu.items()) / kept
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--profile", default="cifar-gpu")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; --device cpu measures the CPU instead")
    profile = config.get_profile(args.profile)
    if profile.dataset != "cifar10":
        raise SystemExit(f"--profile must train on cifar10 (its images are mimicked), got "
                         f"{args.profile!r} on {profile.dataset!r}")
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else config.cpu_model())
    print(f"device {name}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    recipe = profile.recipe
    per_class = -(-(args.warmup + args.steps) * recipe.batch_size // 10)
    images = data.synthetic(train=True, per_class=per_class)
    runs = {grid: cli.planned(grid, profile.name) for grid in cli.GRIDS}
    networks = sorted({(c.model, c.width) for configs in runs.values() for c in configs})
    print(f"\ntraining ({recipe.batch_size} per step, precision {recipe.precision}), "
          f"{args.steps} steps after {args.warmup}:")
    rates = {}
    for model_name, width in networks:
        rates[model_name, width] = speed(model_name, width, recipe, images, args.steps,
                                         args.warmup, device)
        print(f"  {model_name} width {width:g}: {rates[model_name, width]:,.0f} img/s")
    fp32 = dataclasses.replace(recipe, precision="fp32")
    print(f"  resnet20 width 1 in fp32: "
          f"{speed('resnet20', 1.0, fp32, images, args.steps, args.warmup, device):,.0f} img/s")
    scores, on_cpu = score_seconds(images)
    print(f"\nscoring ResNet-20 at 90 % on {config.cpu_model()}, {torch.get_num_threads()} "
          "thread(s): " + ", ".join(f"{c} {s:.2f} s" for c, s in scores.items()))
    print("masks scored on the device against the CPU's, share of kept weights in common: "
          + ", ".join(f"{c} {v:.4f}" for c, v in device_agreement(images, device, on_cpu).items()))
    print(f"\n| grid | chapter | runs | expected hours on {name} |\n| --- | --- | --- | --- |")
    train_images = 10 * data.max_per_class(profile.dataset, "train")
    for grid, configs in runs.items():
        seconds = sum(c.recipe.epochs * (c.train_per_class * 10 or train_images)
                      / rates[c.model, c.width] + max(scores.values()) for c in configs)
        print(f"| {grid} | {cli.CHAPTERS[grid]} | {len(configs)} | {seconds / 3600:.1f} |")


if __name__ == "__main__":
    main()

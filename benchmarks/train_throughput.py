"""Training throughput of ResNet-20 on CIFAR-sized batches: dense, masked at 90 %, bf16.

Prints images per second for each setting (batch 128, channels-last, this machine's CPU
threads). Usage: python benchmarks/train_throughput.py [--steps N] [--device cpu|cuda]
"""

import argparse
import time

import torch

from opai_lib import data, masks, models, prune
from opai_lib.config import Recipe
from opai_lib.train import train


def random_mask(model, density, seed):
    """Uniform random pruning: every layer keeps the fraction ``density``."""
    return prune.prune_at_init(model, "random", None, 1 - density, seed=seed)


def images_per_second(model, batches, recipe, device):
    train(model, batches, Recipe(**{**vars(recipe), "epochs": 1}), device=device,
          progress=False)  # warm-up epoch
    t0 = time.perf_counter()
    train(model, batches, recipe, device=device, progress=False)
    return recipe.epochs * len(batches) * batches.batch_size / (time.perf_counter() - t0)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    images = data.synthetic(train=True, per_class=128 * args.steps // 10)
    batches = data.batches(images, 128, train=True, seed=0, device=args.device)
    print(f"ResNet-20, batch 128, {len(batches)} steps per epoch, "
          f"{torch.get_num_threads()} threads, device {args.device}")
    for label, density, precision in [("dense fp32", 1.0, "fp32"),
                                      ("masked 90% fp32", 0.1, "fp32"),
                                      ("dense bf16 autocast", 1.0, "bf16"),
                                      ("masked 90% bf16 autocast", 0.1, "bf16")]:
        model = models.get_model("resnet20", seed=0)
        if density < 1:
            masks.apply_mask(model, random_mask(model, density, seed=0))
        recipe = Recipe(epochs=2, schedule="constant", lr=0.05, precision=precision)
        ips = images_per_second(model, batches, recipe, args.device)
        print(f"{label:28s} {ips:8.1f} img/s")


if __name__ == "__main__":
    main()

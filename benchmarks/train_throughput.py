"""Training throughput of ResNet-20 on CIFAR-sized batches: dense and masked at 90 %, in fp32
and (on a CPU with native bf16, or CUDA) in bf16 autocast.

Prints the CPU, the precision the cpu profile and ``precision="auto"`` resolve to here, and
images per second for each setting (batch 128, channels-last), the median of ``--repeats``
interleaved measurements in one process.
Usage: python benchmarks/train_throughput.py [--steps N] [--repeats R] [--threads T]
"""

import argparse
import statistics
import time

import torch

from opai_lib import config, data, masks, models, prune
from opai_lib.config import Recipe
from opai_lib.train import train


def images_per_second(density: float, precision: str, batches, device: str) -> float:
    model = models.get_model("resnet20", seed=0)
    if density < 1:
        masks.apply_mask(model, prune.prune_at_init(model, "random", None, 1 - density))
    recipe = Recipe(epochs=1, schedule="constant", lr=0.05, precision=precision)
    train(model, batches, recipe, device=device, progress=False)  # warm-up: oneDNN kernels
    t0 = time.perf_counter()
    train(model, batches, recipe, device=device, progress=False)
    return len(batches) * batches.batch_size / (time.perf_counter() - t0)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = data.synthetic(train=True, per_class=128 * args.steps // 10)
    batches = data.batches(images, 128, train=True, seed=0, device=args.device)
    print(f"CPU {config.cpu_model()}, vector capability "
          f"{torch.backends.cpu.get_cpu_capability()}, native bf16: {config.native_bf16()}")
    print(f"precision: cpu profile {config.get_profile('cpu').recipe.precision}; 'auto' here "
          f"{config.resolve_precision('auto', args.device)}")
    print(f"ResNet-20, batch 128, {len(batches)} steps, {torch.get_num_threads()} threads, "
          f"device {args.device}, median of {args.repeats} interleaved repeats")
    precisions = ["fp32"] + (["bf16"] if config.resolve_precision("auto", args.device) ==
                             "bf16" else [])
    settings = [(label, d, p) for p in precisions
                for label, d in [(f"dense {p}", 1.0), (f"masked 90% {p}", 0.1)]]
    measured = {label: [] for label, _, _ in settings}
    for _ in range(args.repeats):
        for label, density, precision in settings:
            measured[label].append(images_per_second(density, precision, batches, args.device))
    for label, values in measured.items():
        print(f"{label:22s} {statistics.median(values):8.1f} img/s  "
              f"(range {min(values):.1f}-{max(values):.1f})")


if __name__ == "__main__":
    main()

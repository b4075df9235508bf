"""CPU inference time of filter pruning against an unstructured mask of the same size.

Three networks on one batch of CIFAR-size images (eval mode, no gradients, channels-last):
the dense network; the same network under a global magnitude mask that removes exactly as
many prunable weights as filter pruning does (dense kernels still multiply the zeros, so
expect no speed-up); and the physically smaller network without the pruned filters
(``filters.remove_filters`` of the L1 filter ranking). The three are timed in turn within
each repeat, so load on the machine falls on all of them alike, at 1 and at 2 threads;
the figures are medians over the repeats. Weights are the initial ones (seed 0): the time
of a dense kernel does not depend on the values.

Usage: python benchmarks/filter_speedup.py [--model resnet20] [--fraction 0.5]
       [--batch 256] [--repeats 30] [--threads 1,2]
"""

import argparse
import statistics
import time

import torch

from opai_lib import after_training, filters, masks, models
from opai_lib.config import cpu_model
from opai_lib.train import prepare


def networks(name: str, fraction: float) -> dict[str, torch.nn.Module]:
    """The dense, unstructured-masked and filter-pruned networks, in eval mode."""
    dense = models.get_model(name, seed=0)
    keep = filters.l1_filters(dense, fraction)
    removed = masks.removed_fraction(dense, filters.as_mask(dense, keep))
    unstructured = models.get_model(name, seed=0)
    masks.apply_mask(unstructured, after_training.magnitude_mask(unstructured, removed))
    nets = {"dense": dense, "unstructured mask": unstructured,
            "filter-pruned (smaller)": filters.remove_filters(dense, keep)}
    return {k: prepare(net, torch.device("cpu")).eval() for k, net in nets.items()}


def kept_weights(net: torch.nn.Module) -> int:
    """Prunable weights that no mask removes."""
    pruned = sum(int((~m).sum()) for m in masks.get_mask(net).values())
    return sum(p.numel() for p in models.prunable(net).values()) - pruned


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--fraction", type=float, default=0.5,
                        help="fraction of the filters of every producer removed")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args()
    nets = networks(args.model, args.fraction)
    x = torch.randn(args.batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x = x.contiguous(memory_format=torch.channels_last)

    print(f"{args.model}, {args.fraction:.0%} of the filters of every producer removed; "
          f"batch of {args.batch} images 32x32; median of {args.repeats} interleaved repeats")
    print(f"CPU: {cpu_model()}; torch {torch.__version__}")
    print(f"{'network':24s} {'kept weights':>12s} {'parameters':>10s} {'mult-adds':>12s}")
    for label, net in nets.items():
        print(f"{label:24s} {kept_weights(net):12d} {filters.parameter_count(net):10d} "
              f"{filters.multiply_adds(net):12d}")
    with torch.inference_mode():
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            for net in nets.values():  # warm-up: oneDNN builds its kernels
                net(x)
            times = {label: [] for label in nets}
            for _ in range(args.repeats):
                for label, net in nets.items():
                    t0 = time.perf_counter()
                    net(x)
                    times[label].append(time.perf_counter() - t0)
            median = {label: statistics.median(t) for label, t in times.items()}
            print(f"\n{threads} thread(s)      {'ms / batch':>12s} {'speed-up':>10s}")
            for label, seconds in median.items():
                print(f"{label:24s} {1000 * seconds:12.2f} "
                      f"{median['dense'] / seconds:9.2f}x")


if __name__ == "__main__":
    main()

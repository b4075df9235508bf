"""CPU inference time of filter pruning against an unstructured mask of the same size.

Three networks on one batch of CIFAR-size images (eval mode, no gradients, channels-last):
the dense network; the same network under a global magnitude mask that removes exactly as
many prunable weights as filter pruning does (dense kernels still multiply the zeros, so
expect no speed-up); and the physically smaller network without the pruned filters
(``filters.remove_filters`` of the L1 filter ranking); both from ``filters.same_size_networks``.
``filters.time_inference`` times the three in turn within each repeat, so load on the machine
falls on all of them alike, at 1 and at 2 threads; the figures are medians over the repeats.
Weights are the initial ones (seed 0): the time of a dense kernel does not depend on the values.

Usage: python benchmarks/filter_speedup.py [--model resnet20] [--fraction 0.5]
       [--batch 256] [--repeats 30] [--threads 1,2]
"""

import argparse

import torch

from opai_lib import filters, models
from opai_lib.config import cpu_model


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--fraction", type=float, default=0.5,
                        help="fraction of the filters of every producer removed")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args()
    dense = models.get_model(args.model, seed=0)
    nets = {"dense": dense, **filters.same_size_networks(dense, args.fraction)}

    print(f"{args.model}, {args.fraction:.0%} of the filters of every producer removed; "
          f"batch of {args.batch} images 32x32; median of {args.repeats} interleaved repeats")
    print(f"CPU: {cpu_model()}; torch {torch.__version__}")
    print(f"{'network':24s} {'kept weights':>12s} {'parameters':>10s} {'mult-adds':>12s}")
    for label, net in nets.items():
        print(f"{label:24s} {filters.kept_weights(net):12d} {filters.parameter_count(net):10d} "
              f"{filters.multiply_adds(net):12d}")
    for threads in (int(t) for t in args.threads.split(",")):
        median = filters.time_inference(nets, args.batch, args.repeats, threads)
        print(f"\n{threads} thread(s)      {'ms / batch':>12s} {'speed-up':>10s}")
        for label, seconds in median.items():
            print(f"{label:24s} {1000 * seconds:12.2f} {median['dense'] / seconds:9.2f}x")


if __name__ == "__main__":
    main()

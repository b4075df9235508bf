"""Cost of expander masks: building every mask of a network, and measuring its expansion.

For full-width VGG-16-BN and ResNet-56 (CIFAR-10), prints the seconds to build the mask of
each generator (one graph per layer; and best-of-N rreg, the paper's selection), and to
measure the network's expansion (sampled vertex expansion with 1000 subset pairs per layer,
plus the singular values of every layer). The target is under 10 s per network for one
graph per layer. Usage: python benchmarks/expanders.py [--degree D] [--best-of N]
[--threads T]. NumPy's BLAS threads follow OMP_NUM_THREADS; on a loaded machine,
OMP_NUM_THREADS=1 avoids threads spinning against other processes.
"""

import argparse
import os
import time

import torch

from opai_lib import expanders, masks, models


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--degree", type=int, default=15, help="degree of every sparse layer")
    parser.add_argument("--best-of", type=int, default=100, help="rreg draws kept from")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{torch.get_num_threads()} torch threads, load average "
          f"{os.getloadavg()[0]:.1f} (other processes slow this down)")
    for name in ("vgg16_bn", "resnet56"):
        model = models.get_model(name)
        print(f"\n{name}, full width, degree {args.degree}")
        print(f"{'mask':<22}{'density':>9}{'build s':>9}{'measure s':>11}{'expansion':>11}"
              f"{'s2/bound':>10}")
        settings = [(g, 1) for g in expanders.GENERATORS.names()] + [("rreg", args.best_of)]
        for generator, best_of in settings:
            mask, build = timed(lambda m=model, g=generator, b=best_of: expanders.expander_mask(
                m, g, degree=args.degree, best_of=b))
            measure, seconds = timed(lambda m=mask: expanders.network_expansion(m))
            label = generator if best_of == 1 else f"{generator} best of {best_of}"
            print(f"{label:<22}{masks.density(mask)['total']:>9.4f}{build:>9.2f}{seconds:>11.2f}"
                  f"{measure['expansion']:>11.2f}{measure['sigma2_over_bound']:>10.3f}")


if __name__ == "__main__":
    main()

"""The mask-only part of the mask-anatomy chapter: how long its masks take to make.

Makes, in this process and with this process's torch threads, the masks of the chapter's
default settings (``anatomy.chapter``: ResNet-20 with 20 draws of every material and 10 of
each control; VGG-16-BN with 10 draws of images and DOP; SNIP and GraSP at 60 to 98 %)
and prints the seconds each network took, the total and the CPU. Only the masks: the
tests, correlations and maps of the chapter are not timed (and nothing is stored).
Usage: python benchmarks/anatomy_masks.py [--profile cpu] [--threads 2]
"""

import argparse
import time

import torch

from opai_lib import anatomy, config


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = [anatomy.MaskDraws(profile=args.profile, model="resnet20",
                                  sparsities=(0.6, 0.8, 0.9, 0.95, 0.98)),
                anatomy.MaskDraws(profile=args.profile, model="vgg16_bn", draws=10,
                                  sparsities=(0.6, 0.8, 0.9, 0.95, 0.98),
                                  materials=("images", "DOP"))]
    total = 0.0
    for setting in settings:
        setting.network()  # the decoded images and the network, made before the clock starts
        t0 = time.perf_counter()
        found = setting.found()
        seconds = time.perf_counter() - t0
        total += seconds
        count = sum(len(by_draw) for draws in found.values() for by_draw in draws.values())
        print(f"{setting.model}: {count} (material, draw) pairs x {len(setting.sparsities)} "
              f"sparsities, criteria {setting.criteria}: {seconds:.0f} s")
    print(f"total {total:.0f} s ({total / 60:.1f} min) on {config.cpu_model()}, "
          f"{torch.get_num_threads()} thread(s)")


if __name__ == "__main__":
    main()

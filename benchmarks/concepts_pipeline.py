"""Cost of concept discovery (ACE with calibrated TCAV) for all ten CIFAR-10 classes.

Default settings (``concepts.ACESettings()``): pretrained ResNet-20, bottleneck ``layer3.1``,
50 discovery and 50 TCAV images per class, 20 negative sets of random patches, 50 null
concepts. Nothing is read from or written to the cache. Prints seconds per stage, the
total (wall clock and this process's CPU time), and per class the segments, concepts,
significant concepts under each test and each test's false-positive rate on null concepts.
Usage: python benchmarks/concepts_pipeline.py [--classes 0 1 ...] [--threads N]
"""

import argparse
import time

import torch

from opai_lib import concepts, data


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--classes", type=int, nargs="*", default=None)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    train = data.load_dataset("cifar10", "train")
    clf = concepts.reference_classifier("resnet20")
    t_load = time.perf_counter() - t0
    t0, cpu0 = time.perf_counter(), time.process_time()
    found = concepts.discover(clf, train, classes=args.classes, seed=args.seed,
                              use_cache=False)
    total, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    print(f"{train.name}, {clf.name} at {clf.layer}, {len(found.classes)} classes, "
          f"{torch.get_num_threads()} threads, settings {found.settings}")
    print(f"{'load data and classifier':32s} {t_load:7.1f} s (not in the total)")
    for stage, sec in found.timings().items():
        print(f"{stage:32s} {sec:7.1f} s")
    print(f"{'total discovery':32s} {total:7.1f} s wall, {cpu:.1f} s CPU of this process "
          f"(CPU / wall well below the thread count means other processes shared the cores)")
    rates = found.false_positive_rates()
    print(f"\n{'class':12s} {'segments':>8s} {'concepts':>8s} {'t-test':>7s} {'null':>5s}"
          f" {'FPR t-test':>10s} {'FPR null':>8s}")
    for k, cc in found.classes.items():
        print(f"{train.classes[k]:12s} {len(cc.segments):8d} {len(cc.concepts):8d} "
              f"{len(found.top(k, 99, 'ttest')):7d} {len(found.top(k, 99, 'null')):5d} "
              f"{rates[k]['ttest']:10.2f} {rates[k]['null']:8.2f}")


if __name__ == "__main__":
    main()

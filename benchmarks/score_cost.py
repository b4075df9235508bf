"""Cost of each pruning criterion, in units of one forward+backward pass.

ResNet-20 (seed 0) on one class-balanced CIFAR-10 training batch of 100 images (10 per
class). For each criterion, the wall time of ``prune_at_init`` at 90 % sparsity with the
criterion's default schedule (SynFlow 100 rounds, Iter-SNIP and FORCE 60, others one
shot; copies and selection included) divided by the time of one forward+backward pass of
the model in train mode on the same batch. Each figure is the median of ``--repeats`` runs,
each ratio taken against the forward+backward time measured just before it, so a machine
whose load changes still gives comparable ratios.
Targets of issue 3: SNIP <= 1.3, GraSP <= 4, SynFlow (100 rounds) <= 60.

Usage: python benchmarks/score_cost.py [--repeats N] [--threads N] [--criteria a,b,...]
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from opai_lib import criteria, data, models, prune

TARGETS = {"snip": 1.3, "grasp": 4.0, "synflow": 60.0}


def seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--criteria", default=",".join(criteria.CRITERIA.names()))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.criteria.split(",")
    for name in names:
        criteria.CRITERIA.get(name)

    images = data.load_dataset("cifar10", "train")
    x, y = prune.scoring_batches(images, per_class=10, num_batches=1, seed=0)[0]
    model = models.get_model("resnet20", seed=0)

    def forward_backward():
        model.train()
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    print(f"ResNet-20, {images.name}, batch of {len(y)} (10 per class), "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"{'criterion':10s} {'rounds':>6s} {'seconds':>8s} {'x fwd+bwd':>10s} {'target':>7s}")
    for name in names:
        ratios, times = [], []
        rounds = criteria.CRITERIA.get(name).rounds
        repeats = args.repeats if rounds == 1 else max(1, args.repeats // 2)
        for _ in range(repeats):
            base = seconds(forward_backward, 5)
            t = seconds(lambda n=name: prune.prune_at_init(model, n, (x, y), 0.9, seed=0), 1)
            ratios.append(t / base)
            times.append(t)
        target = TARGETS.get(name)
        ratio = statistics.median(ratios)
        verdict = "" if target is None else f"{'<=' if ratio <= target else '>'} {target:g}"
        print(f"{name:10s} {rounds:6d} {statistics.median(times):8.3f} {ratio:10.2f} "
              f"{verdict:>7s}")


if __name__ == "__main__":
    main()

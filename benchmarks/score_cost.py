"""Cost of each pruning criterion, in units of one forward+backward pass.

ResNet-20 (seed 0) on one class-balanced CIFAR-10 training batch of 100 images (10 per
class). For each criterion, the wall time of ``prune_at_init`` at 90 % sparsity with the
criterion's default schedule (SynFlow 100 rounds, Iter-SNIP and FORCE 60, others one
shot; copies and selection included) divided by the time of one forward+backward pass of
the model in train mode on the same batch. Both times are the fastest of ``--repeats``
runs, interleaved, so that other processes on a shared machine inflate neither figure; on
a busy machine prefer ``--threads 1``, which suffers far less from contention. Each thread
count of ``--threads`` gets its own table.
Targets: SNIP <= 1.3, GraSP <= 4 (issue 3), SynFlow (100 rounds) <= 5.5 (issue 13: at most
Synaptic-Flow's own cost, measured at 5.3 on a Zen 3), and no slower on 2 threads than on 1
in seconds (the last lines: a pass gains more from a second thread than SynFlow's rounds of
one image do, so its count of passes grows with the threads even where its time falls).
``benchmarks/synflow_reference.py`` times Synaptic-Flow's own pruner on the same weights.

Usage: python benchmarks/score_cost.py [--repeats N] [--threads 1,2] [--criteria a,b,...]
"""

import argparse

import torch
import torch.nn.functional as F
from timing import timed

from opai_lib import criteria, data, models, prune

TARGETS = {"snip": 1.3, "grasp": 4.0, "synflow": 5.5}
# Extra rows: a criterion with options other than its defaults.
VARIANTS = {"grasp/evalBN": ("grasp", {"bn_mode": "eval"})}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", default=",".join(sorted({"1", str(torch.get_num_threads())})))
    parser.add_argument("--criteria", default=",".join([*criteria.CRITERIA.names(), *VARIANTS]))
    args = parser.parse_args()
    names = args.criteria.split(",")
    runs = {name: VARIANTS.get(name, (name, {})) for name in names}
    for criterion, _ in runs.values():
        criteria.CRITERIA.get(criterion)

    images = data.load_dataset("cifar10", "train")
    x, y = prune.scoring_batches(images, per_class=10, num_batches=1, seed=0)[0]
    model = models.get_model("resnet20", seed=0)

    def forward_backward():
        model.train()
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    seconds: dict[int, dict[str, float]] = {}  # threads -> criterion -> fastest run
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        seconds[threads] = {}
        forward_backward()  # warm-up
        print(f"ResNet-20, {images.name}, batch of {len(y)} (10 per class), "
              f"{threads} thread(s), fastest of {args.repeats}")
        print(f"{'criterion':12s} {'rounds':>6s} {'seconds':>8s} {'x fwd+bwd':>10s} {'target':>7s}")
        everything = []
        for name, (criterion, options) in runs.items():
            base, times = [], []
            rounds = criteria.CRITERIA.get(criterion).options(**options).rounds
            if rounds == 1:  # warm-up: oneDNN builds its kernels
                prune.prune_at_init(model, criterion, (x, y), 0.9, **options)
            for _ in range(args.repeats):
                base += [timed(forward_backward)[0] for _ in range(3)]
                times.append(timed(lambda c=criterion, o=options:
                                   prune.prune_at_init(model, c, (x, y), 0.9, **o))[0])
            everything += base
            seconds[threads][name] = min(times)
            ratio = min(times) / min(base)
            target = TARGETS.get(name)
            verdict = "" if target is None else f"{'<=' if ratio <= target else '>'} {target:g}"
            print(f"{name:12s} {rounds:6d} {min(times):8.3f} "
                  f"{ratio:10.2f} {verdict:>7s}", flush=True)
        print(f"one forward+backward pass: {min(everything):.3f} s\n")
    if 1 in seconds and len(seconds) > 1:  # the target in wall time: more threads, no slower
        for threads in sorted(set(seconds) - {1}):
            print(f"{threads} threads / 1 thread, seconds: " + ", ".join(
                f"{name} {seconds[threads][name] / seconds[1][name]:.2f}" for name in runs))


if __name__ == "__main__":
    main()

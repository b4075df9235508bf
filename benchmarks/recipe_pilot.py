"""Which short training recipe should the cpu profile use? A pilot over a few candidates.

Trains ResNet-20 dense and pruned by SNIP at 98 % sparsity (where criteria separate) with
each candidate recipe (4 epochs, weight decay 5e-4 unless named otherwise; bf16 where the CPU
computes it natively, else fp32: the pilot that chose the recipe ran in bf16) on the cpu
profile's data (CIFAR-10 JPEG q75, 2,000 images per class, full test set), two
single-threaded runs side by side, and prints test accuracy and training time. Records go
to the run store ``recipe-pilot``; a second call only prints.
Usage: python benchmarks/recipe_pilot.py [--seeds 0] [--workers 2]
"""

import argparse
import dataclasses

from opai_lib import config, study

# The cpu profile's recipe before this pilot; the pilot chose "lr .2 warm 1 nesterov".
BASE = config.Recipe(epochs=4, batch_size=128, lr=0.1, schedule="cosine", warmup_epochs=0.5,
                     weight_decay=5e-4, precision="auto")
CANDIDATES = {
    "lr .1 warm .5": BASE,
    "lr .2 warm 1 nesterov": dataclasses.replace(BASE, lr=0.2, warmup_epochs=1.0, nesterov=True),
    "lr .4 warm 1 nesterov": dataclasses.replace(BASE, lr=0.4, warmup_epochs=1.0, nesterov=True),
    "lr .2 warm 1 wd 1e-4": dataclasses.replace(BASE, lr=0.2, warmup_epochs=1.0,
                                                weight_decay=1e-4),
    "batch 64 lr .1 warm 1": dataclasses.replace(BASE, batch_size=64, warmup_epochs=1.0),
}
METHODS = {"dense": ("dense", 0.0), "snip 98%": ("snip", 0.98)}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    profile = config.get_profile("cpu")
    grid = [(name, label, seed, study.config_from_profile(
                profile, method=method, sparsity=sparsity, seed=seed, recipe=recipe))
            for name, recipe in CANDIDATES.items()
            for label, (method, sparsity) in METHODS.items() for seed in args.seeds]
    records = study.sweep([cfg for *_, cfg in grid], study.store_dir("recipe-pilot"),
                          workers=args.workers)
    print(f"ResNet-20, {profile.train_per_class} images/class, {BASE.epochs} epochs, "
          f"{records[0]['config']['recipe']['precision']}; test accuracy % (training seconds)")
    for (name, label, seed, _), r in zip(grid, records, strict=True):
        seconds = sum(h["seconds"] for h in r["history"])
        print(f"{name:24s} {label:9s} seed {seed}: {100 * r['accuracy']:6.2f}  ({seconds:.0f} s, "
              f"{r['machine']['threads']} threads)")


if __name__ == "__main__":
    main()

"""Does bf16 autocast on CPU keep accuracy? Dense ResNet-20 on the cpu profile, fp32 vs bf16.

Trains with the cpu profile's recipe (CIFAR-10 JPEG q75, 2,000 images per class, 4 epochs)
in both precisions for each seed and prints test accuracy and wall time. Records go to the
run store, so a second call only prints. Usage: python benchmarks/bf16_accuracy.py [--seeds 0 1]
"""

import argparse
import dataclasses

from opai_lib import config, study


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--model", default="resnet20")
    args = parser.parse_args()
    profile = config.get_profile("cpu")
    print(f"{args.model}, {profile.train_per_class} images/class, recipe {profile.recipe}")
    precisions = ("fp32", "bf16") if config.native_bf16() else ("fp32",)
    if not config.native_bf16():
        print(f"{config.cpu_model()} has no native bf16 (it would be emulated): fp32 only")
    for precision in precisions:
        recipe = dataclasses.replace(profile.recipe, precision=precision)
        for seed in args.seeds:
            cfg = study.config_from_profile(profile, model=args.model, seed=seed, recipe=recipe)
            r = study.run(cfg, study.store_dir("benchmarks"))
            train_s = sum(h["seconds"] for h in r["history"])
            print(f"{precision} seed {seed}: test accuracy {100 * r['accuracy']:.2f} %, "
                  f"training {train_s:.0f} s ({r['machine']['threads']} threads)")


if __name__ == "__main__":
    main()

"""SynFlow's cost against the reference implementation (Synaptic-Flow), on the same weights.

Issue 13 asks the project's SynFlow (``prune_at_init(model, "synflow", None, 0.9)``: 100
rounds, exponential schedule, global scope) to cost at most what Tanaka et al.'s own code
costs. This measures both on this machine, in one process, interleaved: the reference's
``prune_loop`` with its ``SynFlow`` pruner on ``masked_parameters(model, bias=False,
batchnorm=False, residual=False)`` (its defaults), on its ``resnet20`` (Models/lottery_resnet.py,
masked layers) loaded with the weights of the project's ``resnet20_proj`` (seed 0). The
reference's ResNet-20 has projection (option B) shortcuts, the project's ``resnet20``
zero-padding (option A) ones, so the same-weights comparison uses ``resnet20_proj``; the
project's ``resnet20`` row is the figure of ``score_cost.py``. Times are in the unit of
``score_cost.py``: one forward+backward pass of ``resnet20`` (seed 0) in train mode on one
class-balanced CIFAR-10 batch of 100; every figure is the fastest of ``--repeats``
interleaved runs, one table per thread count of ``--threads``. Also printed: the IoU (kept
in both / kept in either) of the two final masks on the same weights, and the number of
rounds in which the reference keeps one weight more than the project: it prunes
``int((1 - d) N)`` of the N weights, the project keeps ``round(d N)``. That alone separates
the masks (IoU about 0.94 at the end, seed 0): each round re-scores the net that the
previous one left, and a one-weight difference grows over the 100 rounds; with the
reference's count the two masks are equal in every round (scores agree to float32 round-off).

The reference is imported from a Synaptic-Flow checkout (github.com/ganguli-lab/Synaptic-Flow),
never copied here: ``--reference PATH``, else $SYNFLOW_REFERENCE, else /work/synflow-ref.
Its progress bar is silenced; ``prune_loop`` is given the batch as a one-item
list (its real runs re-iterate a DataLoader every round, for the input's shape only).

Usage: OPAI_CACHE_DIR=data/cache python benchmarks/synflow_reference.py
           [--reference PATH] [--repeats N] [--threads 1,2]
"""

import argparse
import functools
import importlib
import os
import re
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from timing import median_interval, timed

from opai_lib import config, data, models, prune

DENSITY, ROUNDS = 0.1, 100  # the reference's "sparsity" is the fraction kept


def import_reference(path: Path):
    """The reference's modules: lottery_resnet, pruners, generator, prune (prune_loop)."""
    if not (path / "Pruners" / "pruners.py").is_file():
        sys.exit(f"no Synaptic-Flow checkout at {path}: put github.com/ganguli-lab/Synaptic-Flow "
                 "there, or pass --reference PATH or set SYNFLOW_REFERENCE")
    sys.path.insert(0, str(path))
    names = ["Models.lottery_resnet", "Pruners.pruners", "Utils.generator", "prune"]
    modules = [importlib.import_module(n) for n in names]
    for m in modules:
        if not Path(m.__file__).resolve().is_relative_to(path.resolve()):
            sys.exit(f"{m.__name__} was imported from {m.__file__}, not from {path}")
    modules[-1].tqdm = functools.partial(modules[-1].tqdm, disable=True)  # prune_loop's bar
    return modules


def reference_key(name: str) -> str:
    """The reference's name of a tensor of the project's resnet20_proj."""
    name = re.sub(r"^conv1\.", "conv.", re.sub(r"^bn1\.", "bn.", re.sub(r"^linear\.", "fc.", name)))
    stage = re.match(r"layer(\d)\.(\d)\.(.*)", name)
    return f"blocks.{3 * (int(stage[1]) - 1) + int(stage[2])}.{stage[3]}" if stage else name


def reference_model(lottery_resnet, project: torch.nn.Module) -> torch.nn.Module:
    """The reference's resnet20 holding ``project``'s parameters and buffers, masks all ones."""
    ref = lottery_resnet.resnet20((3, 32, 32), 10)
    target, copied = ref.state_dict(), set()
    with torch.no_grad():
        for name, tensor in project.state_dict().items():
            key = reference_key(name)
            assert key in target and target[key].shape == tensor.shape, (name, key)
            target[key].copy_(tensor)
            copied.add(key)
    # Left alone: the masks and the identity shortcuts' constant (all-ones) weights.
    missed = [k for k in target if k not in copied
              and not k.endswith("_mask") and not k.endswith("shortcut.weight")]
    assert not missed, f"reference tensors with no project counterpart: {missed}"
    return ref


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path,
                        default=Path(os.environ.get("SYNFLOW_REFERENCE", "/work/synflow-ref")))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args()
    lottery_resnet, pruners, generator, reference = import_reference(args.reference)

    images = data.load_dataset("cifar10", "train")
    x, y = prune.scoring_batches(images, per_class=10, num_batches=1, seed=0)[0]
    model = models.get_model("resnet20", seed=0)  # the unit's net
    same = models.get_model("resnet20_proj", seed=0)  # the reference's architecture
    names = list(models.prunable(same))

    def forward_backward():
        model.train()
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    def project(net, **warm_up):
        return lambda: prune.prune_at_init(net, "synflow", None, 0.9, **warm_up)

    def run_reference(ref, rounds=ROUNDS):
        """The reference's SynFlow as its main.py runs it; returns the final mask."""
        pruner = pruners.SynFlow(generator.masked_parameters(ref, False, False, False))
        params = dict(ref.named_parameters())
        assert {id(p) for _, p in pruner.masked_parameters} == \
            {id(params[reference_key(n)]) for n in names}, "the two prune different tensors"
        try:
            reference.prune_loop(ref, torch.nn.CrossEntropyLoss(), pruner, [(x, y)],
                                 torch.device("cpu"), DENSITY, "exponential", "global", rounds)
        except SystemExit:  # its check of the final count calls quit()
            raise RuntimeError("the reference's prune_loop rejected its final count") from None
        buffers = dict(ref.named_buffers())
        return {n: buffers[reference_key(n)[: -len("weight")] + "weight_mask"].bool()
                for n in names}

    def reference_row():
        ref = reference_model(lottery_resnet, same)  # fresh masks, built untimed
        return timed(lambda: run_reference(ref))

    rows = {"project   resnet20 (shortcut A)": lambda: timed(project(model)),
            "project   resnet20_proj (B)": lambda: timed(project(same)),
            "reference resnet20 (B)": reference_row}
    print(f"CPU: {config.cpu_model()}; torch {torch.__version__}")
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        forward_backward()  # warm-up, and one round of each SynFlow (kernels for a batch of 1)
        project(model, rounds=1, on_collapse="allow")()  # one shot empties layers
        project(same, rounds=1, on_collapse="allow")()
        run_reference(reference_model(lottery_resnet, same), 1)
        base, times, last = [], {row: [] for row in rows}, {}
        for _ in range(args.repeats):
            base += [timed(forward_backward)[0] for _ in range(3)]
            for row, fn in rows.items():
                seconds, last[row] = fn()
                times[row].append(seconds)
        unit = min(base)
        print(f"\n{threads} thread(s), fastest of {args.repeats}; one forward+backward pass of "
              f"ResNet-20 on a batch of {len(y)}: {unit:.3f} s")
        print(f"SynFlow, {ROUNDS} rounds, sparsity 0.9   {'seconds':>8s} {'x fwd+bwd':>10s}")
        for row, t in times.items():
            print(f"{row:36s} {min(t):8.3f} {min(t) / unit:10.2f}")
        ours, theirs = (min(times[r]) for r in list(rows)[1:])
        mid, lo, hi, coverage = median_interval(
            [a / b for a, b in zip(*(times[r] for r in list(rows)[1:]), strict=True)])
        a, b = (last[r] for r in list(rows)[1:])
        both = sum(int((a[n] & b[n]).sum()) for n in names)
        either = sum(int((a[n] | b[n]).sum()) for n in names)
        kept = [sum(int(m[n].sum()) for n in names) for m in (a, b)]
        total = sum(a[n].numel() for n in names)
        print(f"project / reference (same net and weights): {ours / theirs:.2f} (fastest); "
              f"per paired repeat median {mid:.2f}, {100 * coverage:.1f} % interval "
              f"{lo:.2f}-{hi:.2f}")
        more = sum(total - int((1 - d) * total) != round(d * total)
                   for d in prune.schedule_densities(DENSITY, ROUNDS))
        print(f"masks: kept {kept[0]} (project), {kept[1]} (reference) of {total}; "
              f"IoU {both / either:.4f}; the reference keeps one weight more in {more} of "
              f"{ROUNDS} rounds", flush=True)


if __name__ == "__main__":
    main()

"""Training throughput of ResNet-20 on CIFAR-sized batches against the machine's own limits.

For each thread count: plain PyTorch (a bare channels-last fp32 SGD loop, the yardstick;
and the same loop through ``torch.compile``, what the record's eager step leaves on the
table), the net's convolutions alone at its own shapes (forward and backward, nothing else),
the project's training step (``train.train``) dense and with a 90 % mask, in fp32, and in
bf16 autocast where this machine computes bf16 natively; the ratios project/plain,
project/convolutions and masked/dense, and the mask's own share of a step (which bounds
masked/dense where a noisy machine's repeats cannot resolve a few percent); the machine's
fp32 multiply rate, the faster of two libraries' (GFLOP/s of a 1024 x 1024 product, which
torch hands to the BLAS, MKL; and of a large 3 x 3 convolution in channels-last, which it
hands to oneDNN: on AMD CPUs MKL takes a slower path), the ceiling it implies for training,
rate / (3 x 2 x multiply-adds of one image: forward and a backward of twice its cost), and
the fraction of that ceiling each setting reaches. The convolutions alone say how much of
the gap to the ceiling is the convolutions' own (ResNet-20's have 16 to 64 channels, fewer
than the large products') and how much the rest of a step.

Images per second are the median of ``--repeats`` measurements, all settings interleaved
in one process, each warmed up once before (oneDNN builds its kernels on first use). The
ratios are taken per repeat (settings measured side by side) and given as their median with
a distribution-free interval (``median_interval``): where it includes 1 the machine's noise
hides any difference. Run it on an idle machine: wall time is what is measured.
Usage: python benchmarks/train_throughput.py [--steps N] [--repeats R] [--threads 1,2]
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from timing import median_interval

from opai_lib import config, data, filters, masks, models, prune
from opai_lib.config import Recipe
from opai_lib.train import train

BATCH = 128


def matmul_gflops(size: int = 1024, repeats: int = 10) -> float:
    """fp32 GFLOP/s of a square product (torch's BLAS)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return repeats * 2 * size ** 3 / (time.perf_counter() - t0) / 1e9


def conv_gflops(channels: int = 256, size: int = 32, batch: int = 16, repeats: int = 3) -> float:
    """fp32 GFLOP/s of a 3 x 3 convolution in channels-last (oneDNN)."""
    x = torch.randn(batch, channels, size, size).contiguous(memory_format=torch.channels_last)
    w = torch.randn(channels, channels, 3, 3).contiguous(memory_format=torch.channels_last)
    F.conv2d(x, w, padding=1)
    t0 = time.perf_counter()
    for _ in range(repeats):
        F.conv2d(x, w, padding=1)
    return repeats * 2 * 9 * batch * size ** 2 * channels ** 2 / (time.perf_counter() - t0) / 1e9


def plain_pytorch(batches, compiled: bool = False):
    """One epoch of a bare loop: channels-last ResNet-20, SGD with momentum, no mask; with
    ``compiled`` its forward goes through ``torch.compile`` (inductor fuses BatchNorm and
    ReLU around oneDNN's convolutions; fp32 sums in another order, so not the record's)."""
    model = models.get_model("resnet20", seed=0).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    forward = torch.compile(model) if compiled else model

    def epoch():
        for x, y in batches:
            loss = F.cross_entropy(forward(x.contiguous(memory_format=torch.channels_last)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return epoch


def convolutions_only(batches):
    """One epoch of ResNet-20's convolutions alone, at the net's own shapes and in its
    layout: each one's forward and backward (input and weight gradients; no input gradient
    for the first), nothing else of a step. The rate a step could reach if BatchNorm, ReLU,
    the loss and the optimiser cost nothing: the attainable bound for this small net."""
    model = models.get_model("resnet20", seed=0).to(memory_format=torch.channels_last)
    shapes = []
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append((m, i[0].shape)))
             for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    model(batches[0][0].contiguous(memory_format=torch.channels_last))
    for h in hooks:
        h.remove()
    convs = []
    for i, (m, shape) in enumerate(shapes):
        x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
        w = m.weight.detach().clone().requires_grad_(True)
        convs.append((x.requires_grad_(i > 0), w, m.stride, m.padding))

    def epoch():
        for _ in batches:
            for x, w, stride, padding in convs:
                out = F.conv2d(x, w, stride=stride, padding=padding)
                out.backward(torch.ones_like(out))
    return epoch


def project(batches, density: float, precision: str):
    """One epoch of ``train.train`` (a 90 % random mask when density is 0.1)."""
    model = models.get_model("resnet20", seed=0)
    if density < 1:
        masks.apply_mask(model, prune.prune_at_init(model, "random", None, 1 - density))
    recipe = Recipe(epochs=1, schedule="constant", lr=0.05, precision=precision)
    return lambda: train(model, batches, recipe, device="cpu", progress=False)


def mask_share(batches, repeats: int) -> float:
    """What the mask adds to a training step, measured apart from the step's noise: the
    median time of ``masks.mask_gradients_`` (zeroing pruned gradients, all the mask does
    per step) over the median time of a forward and backward pass of the masked model."""
    model = models.get_model("resnet20", seed=0).train()
    masks.apply_mask(model, prune.prune_at_init(model, "random", None, 0.9))
    model = model.to(memory_format=torch.channels_last)  # as train.train runs it
    passes, zeroing = [], []
    for _ in range(repeats):
        for x, y in batches:
            t0 = time.perf_counter()
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x.contiguous(memory_format=torch.channels_last)), y).backward()
            t1 = time.perf_counter()
            masks.mask_gradients_(model)
            zeroing.append(time.perf_counter() - t1)
            passes.append(t1 - t0)
    return statistics.median(zeroing) / statistics.median(passes)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", default=",".join(sorted({"1", str(torch.get_num_threads())})))
    args = parser.parse_args()
    images = data.synthetic(train=True, per_class=BATCH * args.steps // 10)
    batches = list(data.batches(images, BATCH, train=True, seed=0))
    flop_per_image = 3 * 2 * filters.multiply_adds(models.get_model("resnet20"))
    bf16 = config.resolve_precision("auto", "cpu") == "bf16"
    print(f"CPU {config.cpu_model()}, vector capability "
          f"{torch.backends.cpu.get_cpu_capability()}, native bf16: {config.native_bf16()}")
    print(f"ResNet-20, batch {BATCH}, {len(batches)} steps per measurement, median of "
          f"{args.repeats} interleaved repeats; training {flop_per_image / 1e6:.0f} MFLOP "
          "per image")
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        settings = {"convolutions alone fp32": convolutions_only(batches),
                    "plain PyTorch fp32": plain_pytorch(batches),
                    "plain PyTorch compiled fp32": plain_pytorch(batches, compiled=True),
                    "project dense fp32": project(batches, 1.0, "fp32"),
                    "project masked 90% fp32": project(batches, 0.1, "fp32")}
        if bf16:
            settings |= {"project dense bf16": project(batches, 1.0, "bf16"),
                         "project masked 90% bf16": project(batches, 0.1, "bf16")}
        measured = {label: [] for label in [*settings, "matmul", "conv"]}
        for epoch in settings.values():
            epoch()
        for _ in range(args.repeats):
            measured["matmul"].append(matmul_gflops())
            measured["conv"].append(conv_gflops())
            for label, epoch in settings.items():
                t0 = time.perf_counter()
                epoch()
                measured[label].append(len(batches) * BATCH / (time.perf_counter() - t0))
        med = {label: statistics.median(v) for label, v in measured.items()}
        rate = max(med["matmul"], med["conv"])
        ceiling = rate * 1e9 / flop_per_image
        print(f"\n{threads} thread(s): fp32 matmul {med['matmul']:.0f} GFLOP/s, 3x3 "
              f"convolution {med['conv']:.0f} GFLOP/s; training ceiling at {rate:.0f} GFLOP/s: "
              f"{ceiling:.0f} img/s")
        for label in settings:
            values = measured[label]
            print(f"  {label:28s} {med[label]:7.1f} img/s (range {min(values):.1f}-"
                  f"{max(values):.1f}), {med[label] / ceiling:.2f} of the ceiling")
        for a, b in (("project dense fp32", "plain PyTorch fp32"),
                     ("project dense fp32", "convolutions alone fp32"),
                     ("project masked 90% fp32", "project dense fp32")):
            ratios = [x / y for x, y in zip(measured[a], measured[b], strict=True)]
            mid, lo, hi, coverage = median_interval(ratios)
            print(f"  {a} / {b}: median of the paired repeats {mid:.3f}, "
                  f"{100 * coverage:.1f} % interval {lo:.3f}-{hi:.3f}")
        share = mask_share(batches, args.repeats)
        print(f"  the mask's own work (zeroing pruned gradients) {100 * share:.2f} % of a "
              f"forward and backward pass: masked / dense at least {1 / (1 + share):.3f}")


if __name__ == "__main__":
    main()

# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The machinery: data, models, masks and training
#
# Every experiment in this book runs through the same few pieces of `opai_lib`. This page
# exercises each of them once, on the data and hardware the book was built with, so that
# the numbers in later chapters can be trusted:
#
# - the dataset copy the study trains on, and how far it is from the original CIFAR-10;
# - the model registry, checked by loading published weights into our own ResNet-20;
# - a mask that keeps 10 % of the weights, and a short training run showing that the pruned
#   weights stay pruned while the network learns.

# %% tags=["parameters"]
from typing import Optional

profile: str = "cpu"  # data, recipe and seeds together: a name of config.PROFILES
model_name: str = "resnet20"  # the network: a name of models.MODELS
sparsity: float = 0.9  # the random mask's sparsity, in [0, 1)
seeds: Optional[list[int]] = None  # seeds of the dense and random runs; None: the profile's

# %%
import time

import matplotlib.pyplot as plt
import pandas as pd
import torch

from opai_lib import config, data, models, parameters, plots, study
from opai_lib.train import evaluate

parameters.check(globals())
P = config.get_profile(profile, **({} if seeds is None else {"seeds": tuple(seeds)}))
# The runs of this page, built first: a bad parameter fails here, before any compute.
grid = [study.config_from_profile(P, model=model_name, seed=s, method=m, sparsity=sp)
        for s in P.seeds for m, sp in [("dense", 0.0), ("random", sparsity)]]
plots.glue_number("train_per_class", P.train_per_class)
plots.glue_number("epochs", P.recipe.epochs)
plots.glue_number("seed_count", len(P.seeds))
print(f"profile {P.name}: dataset {P.dataset}, {P.train_per_class or 'all'} training images "
      f"per class, seeds {P.seeds}\nrecipe {P.recipe}")
print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")

# %% [markdown]
# ## The data
#
# Offline, the study reads **CIFAR-10 (JPEG q75)**: the 60,000 CIFAR-10 images
# {cite}`krizhevsky2009cifar` re-encoded as JPEG at quality 75 (the provenance and checksum
# are in `data/README.md`). JPEG moves pixels by a few levels out of 255, and a network
# trained on the lossless originals pays for it: the published ResNet-20 scores
# {glue:text}`published_accuracy:.2f` % on the original test set and
# {glue:text}`jpeg_accuracy:.2f` % on this copy, {glue:text}`jpeg_cost:.1f` points less
# (measured below, under *The models*). So every network the study trains is trained *and*
# tested on this copy, and its numbers are compared only with other numbers of the book;
# the published network, trained on the originals, appears only where a chapter needs a
# trained network (the background chapters, and concept discovery), and is then scored on
# this copy too.

# %%
train_set, test_set = study.run_data(P.dataset, P.train_per_class, P.test_per_class)
full_train = data.load_dataset(P.dataset, "train")
print(f"{train_set.name}: {len(full_train)} training images, of which the profile uses "
      f"{len(train_set)}; {len(test_set)} test images; classes {train_set.classes}")

fig, axes = plt.subplots(1, train_set.num_classes, figsize=(train_set.num_classes, 1.4))
for c, ax in enumerate(axes):
    ax.imshow(train_set.images[train_set.labels == c][0])
    ax.set_title(train_set.classes[c], fontsize=8)
    ax.axis("off")
plt.show()

# %% [markdown]
# ## The models
#
# The registry holds CIFAR ResNets (option-A zero-padding shortcuts as in
# {cite}`he2016resnet`, and a variant with 1x1 projection shortcuts), VGG-16/19 with
# BatchNorm, torchvision's ImageNet ResNets and a tiny network for tests. `prunable(model)`
# decides, in one place, which tensors a criterion may score: every convolution and linear
# weight; biases and BatchNorm parameters are never pruned.

# %%
rows = []
for name in ["resnet20", "resnet32", "resnet56", "resnet20_proj", "vgg16_bn", "vgg19_bn"]:
    m = models.get_model(name)
    rows.append({"model": name,
                 "parameters": sum(p.numel() for p in m.parameters()),
                 "prunable": sum(p.numel() for p in models.prunable(m).values()),
                 "prunable tensors": len(models.prunable(m))})
pd.DataFrame(rows).set_index("model")

# %% [markdown]
# Our ResNet-20 must be the network of the published checkpoints, key for key. Loading the
# weights of `akamaster/pytorch_resnet_cifar10` and scoring the JPEG copy checks the model
# and the data pipeline at once. The published accuracy, {glue:text}`published_accuracy:.2f` %
# on the original CIFAR-10 test set, is the one its author stored in the checkpoint.

# %%
# The pretrained network is a CIFAR-10 classifier, so this check reads CIFAR-10 on any
# profile (on the smoke profile only 20 test images per class, for speed).
_, test_cifar = study.run_data("cifar10", 0, 20 if P.name == "smoke" else 0)
pretrained = models.load_pretrained("resnet20")  # checks the checkpoint's sha256 first
published = plots.glue_number("published_accuracy", models.published_accuracy("resnet20"))
jpeg = plots.glue_number("jpeg_accuracy", 100 * evaluate(pretrained, data.batches(
    test_cifar, 500, False, normalization=models.PRETRAINED_NORMALIZATION))["accuracy"])
plots.glue_number("jpeg_cost", published - jpeg)
print(f"pretrained ResNet-20 on {test_cifar.name}, {len(test_cifar)} test images: top-1 "
      f"{jpeg:.2f} %; published, on the original test set: {published:.2f} %")

# %% [markdown]
# ## A mask, and training under it
#
# A mask is a dict of boolean tensors, one per prunable weight. Applied to a model it is
# stored beside the weights it masks (a buffer that moves with the model and is saved with
# it), and the training step zeroes the gradients of pruned weights before the optimiser
# moves. With weight and gradient both zero, SGD's weight decay, momentum and Nesterov terms
# are all zero too, so a pruned weight never comes back.
#
# Below, the dense network and one with a random mask at the chosen sparsity are trained
# with the profile's recipe, for each of its seeds.

# %%
t0 = time.perf_counter()
records = study.sweep(grid, study.store_dir(P.name), workers=P.workers)
print(f"{len(records)} runs ready in {time.perf_counter() - t0:.0f} s "
      f"(finished runs are read back from the store)")
summary = study.table(records, by=["model", "method", "sparsity"])
summary[["sparsity", "mean", "std", "ci95"]] *= 100  # fractions -> %
for method, accuracy in summary.set_index("method")["mean"].items():  # dense, random
    plots.glue_number(f"{method}_accuracy", accuracy)
plots.glue_number("sparsity_pct", 100 * sparsity)
summary.rename(columns={"sparsity": "sparsity %", "mean": "accuracy %", "std": "sd %",
                        "count": "seeds", "ci95": "± 95 %"}).round(2)

# %%
curves = pd.DataFrame([{**h, "method": r["config"]["method"], "seed": r["config"]["seed"]}
                       for r in records for h in r["history"]])
fig, ax = plt.subplots(figsize=(5, 3))
for (method, seed), g in curves.groupby(["method", "seed"]):
    ax.plot(g["epoch"], g["train_loss"], marker="o", label=f"{method}, seed {seed}")
ax.set_xlabel("epoch")
ax.set_ylabel("training loss")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# This is the budget every experiment chapter trains on: after
# {glue:text}`epochs:d` epochs the dense ResNet-20 reaches {glue:text}`dense_accuracy:.1f` %
# and the network under a random mask at {glue:text}`sparsity_pct:g` % sparsity
# {glue:text}`random_accuracy:.1f` % (means over {glue:text}`seed_count:d` seeds), far
# below the published network's {glue:text}`published_accuracy:.2f` %. So the book's
# accuracies rank methods under one short schedule; they are not what the methods reach
# when trained to convergence, and a ranking that holds here may not hold there
# ({doc}`dop_sparsity` checks this on one cell).
#
# Each record counts, after the last training step, the pruned weights that are not exactly
# zero: it must be 0.

# %%
for r in records:
    if r["config"]["method"] != "dense":
        print(f"seed {r['config']['seed']}: mask keeps {100 * r['density']:.2f} % of the "
              f"prunable weights (target {100 * (1 - sparsity):.2f} %); pruned weights not "
              f"zero after training: {r['pruned_nonzero']}")

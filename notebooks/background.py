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
# # Background: pruning a trained network
#
# Pruning at initialisation borrows its ideas from pruning *after* training. This page
# measures the classic ones on a network everybody can load, the published CIFAR-10
# ResNet-20 (the architecture of He et al. {cite}`he2016resnet`, the trained weights of the
# public repository `akamaster/pytorch_resnet_cifar10`), so that the rest of the book has
# a reference point.
#
# You will see:
#
# - **unstructured** pruning, which removes individual weights wherever they are, against
#   **structured** pruning, which removes whole filters;
# - the **train, prune, retrain** pipeline of Han et al. {cite}`han2015learning`;
# - how the **lottery ticket hypothesis** {cite}`frankle2019lth` turned that pipeline into the
#   question this book studies.

# %% tags=["parameters"]
from typing import Optional

profile: str = "cpu"  # data, recipe and seeds together: a name of config.PROFILES
fractions: list[float] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8,
                          0.9]  # fractions of filters removed per block, each in (0, 1)
retrain_sparsity: float = 0.9  # sparsity of the magnitude mask that is retrained, in (0, 1)
eval_per_class: Optional[int] = None  # test images per class; None: 250 (smoke: 20)

# %%
import copy

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from opai_lib import config, data, filters, masks, models, parameters, prune, study
from opai_lib.config import Recipe
from opai_lib.train import evaluate, train

parameters.check(globals())
P = config.get_profile(profile)
if eval_per_class is None:
    eval_per_class = 20 if P.name == "smoke" else 250
config.check_parameter(all(0 < f < 1 for f in fractions), "fractions", fractions,
                       "a list of numbers in (0, 1)")
config.check_parameter(0 < retrain_sparsity < 1, "retrain_sparsity", retrain_sparsity,
                       "a number in (0, 1)")
config.check_parameter(1 <= eval_per_class <= 1000, "eval_per_class", eval_per_class,
                       "None or an integer in 1..1000")

# The pretrained network is a CIFAR-10 classifier, so this page reads CIFAR-10 on any profile.
train_set, test_set = study.run_data("cifar10", 20 if P.name == "smoke" else P.train_per_class,
                                     eval_per_class)
norm = models.PRETRAINED_NORMALIZATION
test_batches = data.batches(test_set, 500, train=False, normalization=norm)
trained = models.load_pretrained("resnet20")
dense_accuracy = evaluate(trained, test_batches)["accuracy"]
print(f"pretrained ResNet-20 on {len(test_set)} images of {test_set.name}: "
      f"{100 * dense_accuracy:.2f} %")

# %% [markdown]
# ## Unstructured against structured pruning
#
# *Unstructured* pruning ranks single weights. The simplest rank is the magnitude
# $|\theta_i|$ of the trained weight, compared across all layers at once (global magnitude
# pruning). The resulting mask is scattered: it saves memory in a sparse format but no
# time on ordinary hardware.
#
# *Structured* pruning removes whole units so that the network becomes genuinely smaller.
# Li et al. {cite}`li2017filters` rank the filters of a convolution by the $\ell_1$ norm of
# their kernels and remove the weakest, together with the kernels of the next layer that
# read the removed feature maps; in a ResNet they prune only the first convolution of each
# residual block.
# `opai_lib.filters` expresses this as a mask, and a test checks that the masked network
# computes exactly what the physically smaller one does.
#
# Both are applied below to the trained ResNet-20 *without any retraining*, at increasing
# fractions of filters (structured) and at the same fraction of all prunable weights
# removed (unstructured).

# %%
rows = []
for f in fractions:
    filter_mask = filters.l1_filter_mask(trained, f)
    removed = masks.removed_fraction(trained, filter_mask)
    magnitude_mask = prune.prune_at_init(trained, "magnitude", None, removed)
    for kind, mask in [("structured (L1 filters)", filter_mask),
                       ("unstructured (global magnitude)", magnitude_mask)]:
        net = copy.deepcopy(trained)
        masks.apply_mask(net, mask)
        rows.append({"pruning": kind, "filters removed per block": f,
                     "weights removed": masks.removed_fraction(net, mask),
                     "accuracy %": 100 * evaluate(net, test_batches)["accuracy"]})
after_training = pd.DataFrame(rows)
after_training.pivot(index="filters removed per block", columns="pruning",
                     values="accuracy %").round(2)

# %%
sns.set_theme(style="whitegrid")
fig, ax = plt.subplots(figsize=(5.5, 3.2))
sns.lineplot(after_training, x="weights removed", y="accuracy %", hue="pruning", marker="o",
             ax=ax)
ax.axhline(100 * dense_accuracy, color="grey", ls="--", lw=1, label="dense")
ax.set_xlabel("fraction of prunable weights removed")
ax.set_ylabel("test accuracy (%), no retraining")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# At the same number of weights removed, removing whole filters costs far more accuracy
# than removing scattered small weights: a filter holds large and small weights alike, and
# its feature map is gone for every later layer. Structured pruning pays that price for
# speed: the pruned ResNet is a smaller dense network. Unstructured masks keep accuracy
# longer, and they are the masks the rest of this book studies.
#
# ## Train, prune, retrain
#
# Han et al. {cite}`han2015learning` observed that a network pruned after training recovers
# most of its accuracy when the surviving weights are trained a little more. Below, the
# global-magnitude mask at the chosen sparsity is applied to the trained ResNet-20, which is
# then fine-tuned for one epoch on the profile's training images at a small learning rate.

# %%
retrained = copy.deepcopy(trained)
masks.apply_mask(retrained, prune.prune_at_init(trained, "magnitude", None, retrain_sparsity))
pruned_accuracy = evaluate(retrained, test_batches)["accuracy"]
fine_tune = Recipe(epochs=1, batch_size=128, lr=0.01, schedule="cosine", weight_decay=1e-4,
                   precision=P.recipe.precision)
train(retrained, data.batches(train_set, 128, True, seed=0, normalization=norm), fine_tune,
      device=P.device)
retrained_accuracy = evaluate(retrained, test_batches)["accuracy"]
print(f"global magnitude pruning at sparsity {retrain_sparsity}: "
      f"{100 * dense_accuracy:.2f} % dense -> {100 * pruned_accuracy:.2f} % pruned -> "
      f"{100 * retrained_accuracy:.2f} % after one epoch of retraining on "
      f"{len(train_set)} images; pruned weights not zero: {masks.pruned_nonzero(retrained)}")

# %% [markdown]
# Note that the network was trained on the lossless CIFAR-10 and is retrained here on the
# JPEG copy, so part of the recovery is adaptation to the copy itself.
#
# ## From lottery tickets to pruning at initialisation
#
# Train, prune, retrain finds a sparse network only after paying for the dense one. Frankle
# and Carbin {cite}`frankle2019lth` asked whether the sparse network could have been trained
# from the start. Their procedure, iterative magnitude pruning with rewinding, trains the
# dense network $f(x; \theta_0)$ to $\theta_j$, removes the $p\,\%$ smallest-magnitude weights
# to get a mask $m$, *resets* the survivors to their initial values, and trains
# $f(x; m \odot \theta_0)$; repeating the cycle prunes further. On small networks the rewound
# sparse network (a "winning ticket") matches the dense one, while the same mask with a fresh
# random initialisation does not: the mask and the initial values fit each other.
#
# Finding a ticket still costs several full trainings. *Pruning at initialisation* tries to
# read a good mask off the untrained network in one shot, from a score computed on
# $\theta_0$ and, for most criteria, on a batch of data. The next chapters build those
# scores, and then ask whether the batch they are fed matters.

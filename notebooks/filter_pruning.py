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
# # Filter pruning: a smaller network, and what it saves
#
# A mask that zeroes scattered weights leaves every tensor its shape: ordinary (dense)
# kernels still multiply the zeros, and only sparse kernels could skip them. Li et al.
# {cite}`li2017filters` remove whole filters of a trained network instead, so that what is
# left is a smaller *dense* network; on CIFAR-10 they cut the inference cost of VGG-16 by
# up to 34 % and of ResNet-110 by up to 38 %, regaining close to the original accuracy by
# retraining.
#
# **What you will learn**
#
# - how filters are ranked by the $\ell_1$ norm of their kernels, and what removing one
#   removes downstream: its feature map, its BatchNorm channel and the kernels of the next
#   layer that read the map;
# - why, in a ResNet, only the first convolution of each residual block is pruned;
# - how to count the parameters and multiply-adds of the smaller network, and set it
#   beside an unstructured mask that keeps exactly as many weights;
# - how to *measure* a speed-up on a CPU (interleaved repeats, medians), and why the
#   unstructured mask gives none.

# %% tags=["parameters"]
from typing import Optional

profile: str = "cpu"  # data, recipe and seeds together: a name of config.PROFILES
model_name: str = "resnet20"  # the trained network: a name of models.PRETRAINED
fractions: list[float] = [0.25, 0.5, 0.75]  # of the filters removed from every pruned conv
retrain_epochs: int = 2  # retraining after pruning, in epochs
retrain_lr: float = 0.01  # peak learning rate of retraining (cosine decay, no warm-up)
seed: int = 0  # seed of the training batches and of ties between equal weights
train_per_class: Optional[int] = None  # CIFAR-10 training images per class; None: the profile's
test_per_class: Optional[int] = None  # test images per class; None: 250 (smoke: 10)
timing_batch: Optional[int] = None  # images per timed forward pass; None: 256 (smoke: 16)
timing_repeats: Optional[int] = None  # interleaved timing repeats; None: 30 (smoke: 3)
threads: int = 1  # torch threads of the timing
workers: int = 1  # single-threaded processes computing the missing retrainings

# %%
import matplotlib.pyplot as plt
from IPython.display import display

from opai_lib import config, lessons, parameters, plots

parameters.check(globals())
P = config.get_profile(profile)
config.check_integer("workers", workers, 1)
setting = lessons.pretrained_setting(P, model_name, train_per_class, test_per_class, seed)
structured, unstructured = lessons.filter_plan(P, setting, fractions, retrain_epochs,
                                               retrain_lr)
timing = lessons.timing_plan(P, setting, fractions, timing_batch, timing_repeats, threads)
plots.setup_style()

# %% [markdown]
# ## Ranking and removing filters
#
# A convolution with weight $W \in \mathbb{R}^{n_\text{out} \times n_\text{in} \times
# k \times k}$ has $n_\text{out}$ filters; filter $j$ produces feature map $j$. Li et al.
# score each filter by the sum of the absolute values of its kernel weights,
#
# $$
# s_j = \sum_{c=1}^{n_\text{in}} \sum_{u,v=1}^{k} |W_{j,c,u,v}| ,
# $$
#
# and remove the $m$ filters of smallest $s_j$. Feature map $j$ then no longer exists, so
# three tensors shrink together: the filters of the convolution
# ($n_\text{out} \to n_\text{out} - m$ rows of $W$), the channels of the BatchNorm after it,
# and the input channels of the *next* convolution, whose weight $W' \in
# \mathbb{R}^{n' \times n_\text{out} \times k \times k}$ keeps only the columns of the
# surviving maps. A convolution computes $H W \, n_\text{out} n_\text{in} k^2$
# multiply-adds on an $H \times W$ output, so removing a fraction $f$ of the filters cuts
# the multiply-adds of *both* convolutions by the factor $1 - f$.
#
# In a ResNet the output of a residual block is added to the block's input by the
# shortcut, which ties the number of maps of every block in a stage together. Li et al.
# therefore prune only the first convolution of each block, whose maps feed nothing but
# the block's second convolution {cite}`li2017filters`; here, $f$ of those filters in
# every block, after which the network is retrained. The unstructured rival is global
# magnitude pruning ({doc}`pruning_after_training`) of the same trained network, removing
# exactly as many prunable weights, retrained alike.

# %%
store = lessons.store_dir(P.name)
records = lessons.run_all([*structured, *unstructured], store, workers)
timed = lessons.run(timing, store)  # in this process, after the trainings
minutes, cpus = lessons.cost([*records, timed])
train_set, test_set = setting.datasets()
print(f"profile {P.name}: {model_name} (published weights), retrained for {retrain_epochs} "
      f"epoch(s) on {len(train_set)} images of {train_set.name}, tested on {len(test_set)}\n"
      f"{len(records) + 1} experiments, {minutes:.1f} CPU-minutes, on\n  {cpus}")
table = lessons.filter_table(records[:len(structured)], records[len(structured):], timed)
display(table.round({"filters removed %": 0, "multiply-adds (M)": 1, "after pruning %": 1,
                     "after retraining %": 1, "ms / batch": 1, "speed-up": 2}))

# %% [markdown]
# The table gives, for the dense network and for each fraction of filters removed, the
# two pruned networks: prunable weights kept (equal by construction), all parameters
# (BatchNorm included), multiply-adds per image, test accuracy right after pruning and
# after {glue:text}`retrain_epochs:d` epoch(s) of retraining (the dense row is retrained
# alike: the dense control), and the time of one forward pass of
# {glue:text}`timing_batch:d` images with its speed-up over the dense network.
#
# ## What the smaller network costs in accuracy

# %%
plots.glue_all({**lessons.filter_summary(table), "retrain_epochs": retrain_epochs,
                "timing_batch": timing.batch, "repeats": timing.repeats,
                "threads": timing.threads, "cpu": timing.cpu})
dense = table.iloc[0]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
plots.accuracy_lines(table[table["network"] != "dense"], "filters removed %",
                     "after retraining %", "network", ax=axes[0],
                     references={"dense control": dense["after retraining %"]},
                     ylabel="test accuracy after retraining (%)")
plots.speedup_bars(table, ax=axes[1])
plt.tight_layout()
plt.show()

# %% [markdown]
# Removing {glue:text}`high_fraction:.0f` % of the filters of every block's first
# convolution removes {glue:text}`high_weights:.1f` % of the prunable weights. Right after
# pruning, the smaller network scores {glue:text}`high_filter_pruned:.1f` %, the
# unstructured mask of the same size {glue:text}`high_mask_pruned:.1f` % (dense network:
# {glue:text}`dense:.1f` %). A filter holds large and small weights alike, and its map is
# gone for every later layer, while the unstructured mask removes only the smallest
# weights wherever they are. After retraining the smaller network reaches
# {glue:text}`high_filter_retrained:.1f` % and the masked one
# {glue:text}`high_mask_retrained:.1f` %, beside {glue:text}`dense_retrained:.1f` % for
# the dense control. At {glue:text}`low_fraction:.0f` % of the filters the same numbers
# are {glue:text}`low_filter_pruned:.1f` % and {glue:text}`low_mask_pruned:.1f` % right
# after pruning, {glue:text}`low_filter_retrained:.1f` % and
# {glue:text}`low_mask_retrained:.1f` % after retraining.
#
# ## What it saves in time
#
# The timing runs each network in turn within every repeat, so a change in the load of
# the machine falls on all of them alike, and keeps the median of
# {glue:text}`repeats:d` repeats; the first pass of each network, in which the CPU
# library builds its kernels, is not timed. The CPU was the {glue:text}`cpu`, with
# {glue:text}`threads:d` thread(s); there the dense network takes {glue:text}`dense_ms:.1f`
# ms per batch of {glue:text}`timing_batch:d` images.
#
# With {glue:text}`high_fraction:.0f` % of the filters removed, the smaller network does
# {glue:text}`high_macs:.0%` of the dense network's multiply-adds and runs
# {glue:text}`high_speedup:.2f` times as fast; at {glue:text}`low_fraction:.0f` %,
# {glue:text}`low_macs:.0%` of the multiply-adds and {glue:text}`low_speedup:.2f` times as
# fast. The unstructured masks, with just as many weights, run between
# {glue:text}`mask_speedup_min:.2f` and {glue:text}`mask_speedup_max:.2f` times as fast as
# the dense network: their kernels are the dense network's, zeros included.
#
# Were time proportional to multiply-adds, removing {glue:text}`high_fraction:.0f` % of
# the filters would make the network {glue:text}`high_ideal:.2f` times as fast; the
# measured speed-up is {glue:text}`high_vs_ideal` that. Not all of the time goes to the
# pruned convolutions: the first convolution, the classifier, and the BatchNorms,
# activations and shortcut additions on the block outputs keep their full width, and a
# layer has a fixed cost of its own, whatever its size.

# %% [markdown]
# ## Exercises
#
# ```{exercise}
# :label: filters-batch-one
#
# Re-run with `timing_batch = 1`, as when a single image is classified at a time. What do
# you expect of the two speed-ups?
# ```
#
# ```{solution} filters-batch-one
# :class: dropdown
#
# With one image, each layer does little arithmetic, and the fixed cost of calling it
# (dispatch, memory allocation, thread coordination) weighs more; that cost is the same
# for a layer with half the filters. The smaller network's speed-up should shrink toward
# 1. The unstructured mask stays at about 1, as at any batch size: its kernels do the
# dense network's work. Only the timing is recomputed; the retrainings are read back.
# ```
#
# ```{exercise}
# :label: filters-retrain-longer
#
# Re-run with `retrain_epochs = 4`. Which of the two pruned networks do you expect to
# gain more, and does the speed-up change?
# ```
#
# ```{solution} filters-retrain-longer
# :class: dropdown
#
# The filter-pruned network starts far lower right after pruning (it lost whole feature
# maps, the mask only the smallest weights), so it has more to regain, and its accuracy
# after retraining should rise more; the dense control rises too, so read each network
# against it. The speed-up does not change: it depends on the shapes of the tensors, not
# on their values, and the timing is read back from the store. Retraining twice as long
# doubles the cost of the chapter's experiment.
# ```
#
# ```{exercise}
# :label: filters-ninety
#
# Re-run with `fractions = [0.9]`. How large could the speed-up be at most, and what
# happens to accuracy?
# ```
#
# ```{solution} filters-ninety
# :class: dropdown
#
# Every pruned pair of convolutions keeps about a tenth of its multiply-adds (at least
# one filter survives, and the counts are rounded), but the first convolution, the
# classifier and the work on the block outputs (the second BatchNorm of every block, the
# shortcut additions and activations) keep theirs, so the total multiply-adds fall by
# less than ten times, and the time by less still: that unpruned share bounds the
# speed-up. Accuracy right after pruning should collapse, since nine of
# every ten maps inside every block are gone, and retraining recovers only part of it:
# the smaller network has lost capacity, not only its trained state. The unstructured
# mask of the same size removes nearly 90 % of all prunable weights, where
# {doc}`pruning_after_training` saw the network answer one class for every image before
# retraining; whatever
# its accuracy, it runs no faster.
# ```

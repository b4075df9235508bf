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
# # Pruning after training: train, prune, retrain
#
# The oldest recipe for a sparse network starts from a dense one that is already trained.
# Han et al. {cite}`han2015learning` train the network, remove the connections whose
# weights are small, and train the survivors again; on ImageNet this cut the parameters of
# AlexNet 9-fold and those of VGG-16 13-fold without loss of accuracy. Every later method,
# pruning at initialisation included, is measured against this pipeline.
#
# **What you will learn**
#
# - what magnitude pruning keeps, and why a trained network can fall to chance accuracy
#   when pruned hard without retraining;
# - how much a little retraining gives back, read from accuracy against sparsity with and
#   without it, beside a dense network retrained alike;
# - how to compare one-shot and iterative pruning fairly: the same final sparsity *and*
#   the same retraining budget;
# - what *pruning instability* is {cite}`bartoldson2020stability`, and how to set it
#   against final accuracy across pruning schedules.

# %% tags=["parameters"]
from typing import Optional

profile: str = "cpu"  # data, recipe and seeds together: a name of config.PROFILES
model_name: str = "resnet20"  # the trained network: a name of models.PRETRAINED
sparsities: list[float] = [0.5, 0.8, 0.9, 0.95]  # one-shot pruning, each then retrained
retrain_epochs: int = 1  # retraining after a one-shot pruning, in epochs
schedule_sparsity: float = 0.9  # the final sparsity every schedule reaches
rounds: list[int] = [1, 3]  # pruning steps of the schedules compared (1: one shot)
shapes: list[str] = ["exponential", "linear"]  # how the density falls over the steps
schedule_epochs: int = 3  # retraining epochs of each schedule, split equally over its steps
retrain_lr: float = 0.01  # peak learning rate of retraining (cosine decay, no warm-up)
seed: int = 0  # seed of the training batches and of ties between equal weights
train_per_class: Optional[int] = None  # CIFAR-10 training images per class; None: the profile's
test_per_class: Optional[int] = None  # test images per class; None: 250 (smoke: 10)
workers: int = 1  # single-threaded processes computing the missing experiments

# %%
import matplotlib.pyplot as plt
from IPython.display import display

from opai_lib import config, lessons, parameters, plots

parameters.check(globals())
P = config.get_profile(profile)
config.check_integer("workers", workers, 1)
setting = lessons.pretrained_setting(P, model_name, train_per_class, test_per_class, seed)
one_shot = lessons.one_shot_plan(P, setting, sparsities, retrain_epochs, retrain_lr)
schedules = lessons.schedule_plan(P, setting, schedule_sparsity, rounds, shapes,
                                  schedule_epochs, retrain_lr)
plots.setup_style()

# %% [markdown]
# ## The pipeline
#
# Write $\theta^\star$ for the trained weights and $N$ for the number of prunable weights
# (every convolution and the classifier). *Global magnitude pruning* at sparsity $s$ keeps
# the $k = \mathrm{round}((1-s)N)$ weights of largest $|\theta^\star_i|$, compared across
# all layers at once:
#
# $$
# m_i = \begin{cases} 1 & \text{if } |\theta^\star_i| \text{ is among the } k
# \text{ largest,}\\ 0 & \text{otherwise,}\end{cases}
# \qquad \theta \leftarrow m \odot \theta^\star .
# $$
#
# *Retraining* then runs SGD on the survivors only: the gradient of a pruned weight is
# zeroed before every step, so it stays exactly zero. Han et al. repeat prune-and-retrain
# several times, each step removing part of what is left {cite}`han2015learning`.
#
# The trained network here is the published CIFAR-10 ResNet-20 (He et al.'s architecture
# {cite}`he2016resnet`, the weights of `akamaster/pytorch_resnet_cifar10`, as in the
# background chapter). It is evaluated and retrained on the book's
# CIFAR-10 copy, which is stored as JPEG: the network never saw that compression, so
# retraining also adapts it to the copy. The *dense control*, the unpruned network
# retrained by the same recipe, measures that part, and the cost of pruning is read
# against it.

# %%
records = lessons.run_all(one_shot + schedules, lessons.store_dir(P.name), workers)
minutes, cpus = lessons.cost(records)
train_set, test_set = setting.datasets()
plots.glue_all({"minutes": minutes, "test_images": len(test_set),
                "train_images": len(train_set), "retrain_epochs": retrain_epochs,
                "schedule_sparsity": 100 * schedule_sparsity,
                "schedule_epochs": schedule_epochs})
print(f"profile {P.name}: {model_name} (published weights), retrained on {len(train_set)} "
      f"images of {train_set.name}, tested on {len(test_set)}\n"
      f"{len(records)} experiments, {minutes:.1f} CPU-minutes, on\n  {cpus}")

# %% [markdown]
# ## Accuracy against sparsity, with and without retraining
#
# Each row prunes the trained network once, at one sparsity, and retrains it for
# {glue:text}`retrain_epochs:d` epoch(s) of {glue:text}`train_images:d` images; the first
# row is the dense control. *After pruning* is the test accuracy right after the mask is
# applied, *after retraining* the accuracy at the end.

# %%
curve = lessons.retraining_table(records[:len(one_shot)])
display(curve[["sparsity %", "after pruning %", "after retraining %", "sparsest layer %",
               "most frequent class %"]].round(2))
long = curve.melt(id_vars="sparsity %", value_vars=["after pruning %", "after retraining %"],
                  var_name="accuracy", value_name="test accuracy %")
plots.accuracy_lines(long, "sparsity %", "test accuracy %", "accuracy",
                     references={"chance": 100 / train_set.num_classes},
                     xlabel="sparsity (%)")
# collapsed: accuracy right after pruning within 1 point of chance (one class for every image)
summary = plots.glue_all(lessons.one_shot_summary(curve, chance=100 / train_set.num_classes))
plt.show()

# %% [markdown]
# The published network scores {glue:text}`dense:.1f` % on these
# {glue:text}`test_images:d` test images, and {glue:text}`dense_retrained:.1f` % after the
# dense control's retraining. Pruning {glue:text}`low_sparsity:.0f` % of its weights
# without any retraining leaves {glue:text}`low_pruned:.1f` %: the smallest
# {glue:text}`low_sparsity:.0f` % of the weights carried {glue:text}`low_drop:.1f` points
# of accuracy.
#
# Pruned harder, the network *collapses*: we call it so when its accuracy right after
# pruning is within {glue:text}`collapse_margin:.0f` point of chance,
# {glue:text}`chance:.0f` %, which is what a network scores when it answers one class for
# every image of the balanced test set. The first sparsity of the table where this happens
# is {glue:text}`collapse_sparsity:.0f` %: right after pruning the network scores
# {glue:text}`collapse_pruned:.1f` %, and it gives {glue:text}`collapse_majority:.1f` % of
# the test images the same class. Why does it collapse although no layer is empty? Global
# magnitude pruning compares weights *across* layers, and layers differ in scale: a layer
# whose weights are small overall loses nearly all of them. At
# {glue:text}`collapse_sparsity:.0f` % the sparsest layer, {glue:text}`collapse_sparsest_layer`,
# keeps only {glue:text}`collapse_sparsest:.2f` % of its weights. A layer left with so few
# connections passes on almost nothing about the image, so what reaches the classifier
# barely depends on the input. Retraining repairs much of this: the collapsed network gets
# back to {glue:text}`collapse_retrained:.1f` %, {glue:text}`collapse_cost:.1f` points below
# the dense control, and at the highest sparsity, {glue:text}`top_sparsity:.0f` %, to
# {glue:text}`top_retrained:.1f` %, {glue:text}`top_cost:.1f` points below it.

# %% [markdown]
# ## One shot or several steps?
#
# Han et al. prune iteratively {cite}`han2015learning`: each step removes part of the
# weights that are left and retrains before the next. A fair comparison with one-shot
# pruning fixes two things: the final sparsity (here {glue:text}`schedule_sparsity:.0f` %)
# and the *total* retraining budget (here {glue:text}`schedule_epochs:d` epochs, split
# equally over the steps); otherwise an iterative schedule wins simply by training longer.
# The density after step $t$ of $T$ falls either *exponentially*, $d_t = d^{t/T}$, which
# removes the same fraction of the survivors at every step, or *linearly*,
# $d_t = 1 - (1-d)\,t/T$, which removes the same number of weights at every step and so
# an ever larger fraction of the survivors.
#
# Bartoldson et al. {cite}`bartoldson2020stability` measure each step by its *pruning
# instability*, the accuracy lost right after the step relative to the accuracy before it,
#
# $$
# \text{instability}_t = \frac{a_t^{\text{before}} - a_t^{\text{pruned}}}
# {a_t^{\text{before}}},
# $$
#
# and describe a schedule by the mean over its steps. They find that pruning's benefit to
# generalization grows with its instability (the *generalization-stability tradeoff*), and
# explain it as a regulariser akin to noise injection; their experiments prune *during*
# training, with the rest of training to recover. Below, the same measure is taken on
# schedules that prune a trained network with a short retraining budget.

# %%
table = lessons.retraining_table(records[len(one_shot):])
error = plots.glue_number("standard_error",
                          lessons.standard_error(summary["dense"], len(test_set)))
plots.glue_all(lessons.schedule_summary(table, tolerance=error))
display(table[["schedule", "steps", "epochs per step", "mean instability",
               "after retraining %"]].round(3))
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1.4, 1]})
plots.pruning_trace(lessons.steps_table(records[len(one_shot):]), ax=axes[0])
plots.stability_scatter(table, ax=axes[1])
plt.tight_layout()
plt.show()

# %% [markdown]
# On the left, each schedule's path: a vertical drop at every pruning step (its
# instability), then a dotted line to the accuracy after that step's retraining. On the
# right, each schedule's mean instability against its final accuracy.
#
# The least stable schedule, *{glue:text}`unstable_label`* (mean instability
# {glue:text}`unstable_instability:.2f`), ends at {glue:text}`unstable_accuracy:.1f` %,
# {glue:text}`unstable_vs_stable` the most stable one, *{glue:text}`stable_label`*
# ({glue:text}`stable_instability:.2f`), at {glue:text}`stable_accuracy:.1f` %. Two
# accuracies count as level here when they differ by less than one standard error of a
# test accuracy on this many images (about {glue:text}`standard_error:.1f` points at the
# dense accuracy), and a single seed of each schedule cannot tell smaller differences
# apart.
#
# Read the two papers against this. Han et al.'s advice, prune in steps, predicts that
# the stable schedules end higher. Bartoldson et al.'s tradeoff predicts the opposite
# *when the network has ample training left to recover*, which a short retraining of a
# trained network is not. Which regime a given budget is in is an empirical question, and
# the exercises below change the budget.

# %% [markdown]
# ## Exercises
#
# ```{exercise}
# :label: after-training-retrain-longer
#
# Re-run the chapter with `retrain_epochs = 3`. What do you expect of the *after
# retraining* column at every sparsity, and of the dense control? Which number should you
# read to judge whether longer retraining repairs pruning?
# ```
#
# ```{solution} after-training-retrain-longer
# :class: dropdown
#
# Every *after retraining* value should rise, the dense control's included: part of what
# retraining buys has nothing to do with pruning (the published network adapts to the
# JPEG copy, and a few more epochs of SGD help any network). So read the *gap* between a
# pruned row and the dense control. At moderate sparsity the gap is small already and
# should close further; at the highest sparsity the network has lost capacity as well as
# its trained state, so the gap should shrink but not vanish. The *after pruning* column
# does not move: it is measured before any retraining.
# ```
#
# ```{exercise}
# :label: after-training-more-steps
#
# Re-run with `rounds = [1, 2, 3, 6]` and `schedule_epochs = 6`. How should the mean
# instability change with the number of steps, for each shape of schedule? And what would
# each of the two papers predict for the final accuracies?
# ```
#
# ```{solution} after-training-more-steps
# :class: dropdown
#
# With more steps each step removes less, so each drop is smaller and the *mean*
# instability should fall for both shapes. They differ in where the drops fall: the
# exponential shape removes the same fraction of the survivors every time, so its drops
# are even; the linear shape removes the same fraction of the *original* weights, gentle
# steps first and a harsh last one (it removes most of what is left). Which has the
# smaller mean depends on how fast the drop grows with the fraction removed, so it is a
# measurement, not a rule: compare the three-step rows of the table above. Han et al.'s
# practice predicts that more, gentler steps end higher; Bartoldson et al.'s tradeoff
# predicts that less stable schedules generalise better when enough training follows.
# With six epochs in all, each step of the six-step schedule retrains for one epoch: if
# the stable schedules win, this budget is still short of the regime Bartoldson et al.
# describe.
# ```
#
# ```{exercise}
# :label: after-training-test-size
#
# Re-run with `test_per_class = 1000` (the whole CIFAR-10 test set). Which numbers of
# this chapter should change, and by about how much?
# ```
#
# ```{solution} after-training-test-size
# :class: dropdown
#
# A test accuracy $p$ measured on $n$ images has a standard error of
# $\sqrt{p(1-p)/n}$: about {glue:text}`standard_error:.1f` points on the
# {glue:text}`test_images:d` images used here, and half as much on four times as many.
# Every accuracy should move by about that much, no more, and the collapse to a single
# class at high sparsity does not go away: it is a property of the pruned network, not of
# the images it is asked about. Differences between schedules smaller than about two
# standard errors were never resolved on the smaller test set; the larger one resolves
# some of them, but the spread between seeds of the retraining (its batches) remains, and
# only more seeds measure it.
# ```

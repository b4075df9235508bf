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
# # Lottery tickets: rewinding against re-initialisation
#
# Pruning after training (previous chapter) finds a sparse network only after paying for
# the dense one, and the sparse network it finds is *trained*. Could it have been trained
# sparse from the start? Frankle and Carbin {cite}`frankle2019lth` answered with an
# experiment: prune a trained network, reset the surviving weights to the values they had
# at initialisation, and train that sparse network alone. In fully connected and
# convolutional networks on MNIST and CIFAR-10, they found such subnetworks, smaller than
# 10 to 20 % of the original network, that train to its accuracy; the same masks with
# freshly drawn weights did worse. They called the lucky subnetworks *winning tickets*.
#
# **What you will learn**
#
# - iterative magnitude pruning (IMP) with rewinding, as an algorithm and as formulas;
# - why the decisive comparison is with a *random re-initialisation* of the same mask:
#   it keeps the structure and changes only the initial values;
# - rewinding to an early step of training instead of to the initial weights
#   {cite}`frankle2020linear`, and why it was needed for deeper networks;
# - how much a single seed on a short schedule can and cannot say.

# %% tags=["parameters"]
from typing import Optional

profile: str = "cpu"  # data, recipe and seeds together: a name of config.PROFILES
model_name: str = "resnet20"  # the network: a name of models.MODELS
width: Optional[float] = None  # width multiplier; None: 0.5 on cpu, else the profile's
train_per_class: Optional[int] = None  # images per class; None: 1000 on cpu, else the profile's
sparsity: float = 0.9  # sparsity after the last round, in (0, 1)
rounds: int = 3  # pruning rounds after the dense training; each prunes, rewinds and trains
rewind_epochs: float = 0.25  # the early rewinding point, in epochs of training
seed: int = 0  # seed of the initial weights, the batches and the ties
workers: int = 1  # single-threaded processes computing the missing experiments

# %%
import matplotlib.pyplot as plt
from IPython.display import display

from opai_lib import config, lessons, parameters, plots

parameters.check(globals())
P = config.get_profile(profile)
config.check_integer("workers", workers, 1)
setting = lessons.initial_setting(P, model_name, width, train_per_class, seed)
plan = lessons.lottery_plan(setting, sparsity, rounds, rewind_epochs)
plots.setup_style()

# %% [markdown]
# ## Iterative magnitude pruning with rewinding
#
# Draw the initial weights $\theta_0$ and train the dense network for $T$ steps to
# $\theta_T$. Then, for rounds $r = 1, \dots, R$:
#
# 1. **prune**: the mask $m_r$ keeps the weights of largest $|\theta_T|$ among the
#    survivors of $m_{r-1}$ (global magnitude, as Frankle and Carbin do for their deeper
#    networks), down to the density $d_r = d^{\,r/R}$, where $d = 1 - s$ is the final
#    density; every round thus removes the same fraction $1 - d^{1/R}$ of the survivors;
# 2. **rewind**: reset the survivors to their values at step $k$,
#    $\theta \leftarrow m_r \odot \theta_k$; with $k = 0$, to the initial weights;
# 3. **train** the sparse network from step $k$ to $T$ (the same learning-rate schedule
#    from step $k$ on), which gives the next $\theta_T$.
#
# The subnetwork $f(x; m_r \odot \theta_k)$ is a *winning ticket* when it reaches the
# dense network's accuracy. The control draws new weights $\theta'_0$ for the same mask and
# trains $f(x; m_r \odot \theta'_0)$ from step 0 on the same batches: ticket and control
# differ only in where the surviving weights start.
#
# Rewinding to $\theta_0$ failed on deeper networks: Frankle and Carbin needed a
# learning-rate warm-up (or a lower rate) to find tickets in VGG-19 and ResNet-18
# {cite}`frankle2019lth`. Frankle et al. {cite}`frankle2020linear` found that IMP's
# subnetworks reach full accuracy only once training has become stable to the noise of
# SGD (the order and augmentation of the batches), which in larger settings happens early
# in training rather than at initialisation; rewinding to such an early step $k$ finds
# tickets where rewinding to step 0 does not.

# %%
records = lessons.run_all(plan.all(), lessons.store_dir(P.name), workers)
init, early, controls = records[0], records[1], records[2:]
minutes, cpus = lessons.cost(records)
train_set, test_set = setting.datasets()
r = setting.recipe
plots.glue_all({"model": model_name, "width": setting.width, "train_images": len(train_set),
                "test_images": len(test_set), "epochs": r.epochs, "warmup": r.warmup_epochs,
                "lr": r.lr, "minutes": minutes, "rounds": rounds, "sparsity": 100 * sparsity,
                "per_round": 100 * (1 - (1 - sparsity) ** (1 / rounds)),
                "rewind_step": early["rewind_step"],
                "rewind_share": early["rewind_step"] / (r.epochs * early["steps_per_epoch"])})
print(f"profile {P.name}: {model_name} at width {setting.width:g}, {len(train_set)} training "
      f"images of {train_set.name}, {r.epochs} epoch(s) of {early['steps_per_epoch']} steps "
      f"per training\n{len(records)} experiments, {minutes:.1f} CPU-minutes, on\n  {cpus}")

# %% [markdown]
# Every training here is the profile's recipe: {glue:text}`epochs:d` epochs of
# {glue:text}`train_images:d` images, a peak learning rate of {glue:text}`lr:g` reached
# after a warm-up of {glue:text}`warmup:g` epoch(s), then a cosine decay; the network is
# {glue:text}`model` at width {glue:text}`width:g`. IMP reaches {glue:text}`sparsity:.0f` % in
# {glue:text}`rounds:d` rounds, each removing {glue:text}`per_round:.1f` % of the
# survivors. The early rewinding point is step {glue:text}`rewind_step:d`,
# {glue:text}`rewind_share:.1%` of the way through training. Three arms share every mask
# size: the ticket rewound to $\theta_0$, the ticket rewound to $\theta_k$ (its own masks,
# found from its own trainings), and the random re-initialisation of the first arm's
# masks. In the table, the first row is round 0, the dense network, trained from step 0
# and, for the second arm, from step $k$ with a fresh optimizer; the control has no dense
# round.

# %%
table = lessons.ticket_table({"init": init, "early": early, "reinit": controls})
display(table.pivot_table(index="sparsity %", columns="arm", values="accuracy %",
                          sort=False).round(2))
summary = plots.glue_all(lessons.ticket_summary(table, len(test_set)))
plots.accuracy_lines(table[table["round"] > 0], "sparsity %", "accuracy %", "arm",
                     references={"dense": summary["dense"]}, xlabel="sparsity (%)",
                     ylabel="test accuracy (%)")
plt.show()

# %% [markdown]
# The dense network reaches {glue:text}`dense:.1f` % on the {glue:text}`test_images:d`
# test images. In this single seed, at {glue:text}`sparsity:.0f` %, the ticket rewound to
# the initial weights reaches {glue:text}`ticket:.1f` %, {glue:text}`ticket_vs_control` its
# random
# re-initialisation ({glue:text}`control:.1f` %, a difference of
# {glue:text}`ticket_gain:+.1f` points) and {glue:text}`ticket_vs_dense` the dense
# network. The ticket rewound to step {glue:text}`rewind_step:d` reaches
# {glue:text}`rewound:.1f` %, {glue:text}`rewound_vs_ticket` the ticket rewound to
# $\theta_0$. "Level with" means a difference within one standard error of a test accuracy
# on these images (about {glue:text}`standard_error:.1f` points).
#
# Read these numbers with their scale in mind. Every arm is one seed: the seed draws the
# initial weights, the batches and the control's fresh weights, and trainings that differ
# only in their seed differ in accuracy (the DOP chapter measures that spread for the
# study's runs). A difference between arms counts as a finding only when it keeps its sign
# over several seeds, as the exercises ask. And Frankle and Carbin trained for tens of
# thousands of steps; here a training is a few hundred, so a ticket's advantage, if any,
# has little time to show.

# %% [markdown]
# ## Exercises
#
# ```{exercise}
# :label: lottery-late-rewind
#
# Re-run with `rewind_epochs = 1`, so that the early rewinding point lies after the
# learning-rate warm-up. What do you expect of the arm rewound to step $k$, compared with
# the one rewound to the initial weights? What does the arm rewound to $\theta_0$ do?
# ```
#
# ```{solution} lottery-late-rewind
# :class: dropdown
#
# The arm rewound to $\theta_0$ and its control are the same experiments as before: the
# store reads them back and they do not change. Rewinding later hands the sparse network
# weights that have already moved toward a trained state, and Frankle et al. found that
# subnetworks rewound to a point where training has become stable to SGD noise reach the
# dense accuracy where rewinding to $\theta_0$ fails. Expect the late-rewound arm to do at
# least as well as before, the more so the more its masks depend on where training was
# heading. Rewinding ever later approaches fine-tuning the pruned trained network (the
# previous chapter), which keeps less and less of the "trained from the start" question.
# Each of its rounds also trains for fewer steps, since training resumes at step $k$.
# ```
#
# ```{exercise}
# :label: lottery-one-shot
#
# Re-run with `rounds = 1`: the same final sparsity in a single round of pruning. What do
# you expect, and why is this run much cheaper?
# ```
#
# ```{solution} lottery-one-shot
# :class: dropdown
#
# One round costs two trainings per arm (the dense one and the pruned one) instead of
# $R + 1$, and one control instead of $R$. Frankle and Carbin found that iterative pruning
# finds winning tickets at smaller sizes than one-shot pruning does
# {cite}`frankle2019lth`: one round chooses the whole mask from the dense network's
# weights, while later rounds of IMP re-rank the survivors after they have trained sparse.
# Expect the one-shot tickets at the same sparsity to
# end at or below the iterative ones, and their advantage over the random
# re-initialisation to be smaller.
# ```
#
# ```{exercise}
# :label: lottery-seeds
#
# Re-run with `seed = 1`, then `seed = 2`. How would you decide whether this chapter's
# ticket really beats its random re-initialisation at this scale?
# ```
#
# ```{solution} lottery-seeds
# :class: dropdown
#
# A new seed draws a new initial network, new batches and new weights for the control,
# so each seed gives one paired difference, ticket minus control. Collect the differences
# over the seeds and look at their mean and spread: with three seeds, a 95 % t-interval
# is wide (about 2.5 standard deviations on each side of the mean), so only a difference
# that is large compared with the seed-to-seed spread, and has the same sign every time,
# supports the claim. Differences that change sign between seeds say that at this budget
# the initial values matter less than the noise of training.
# ```

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
# # Ablations: what is left when the material loses its content
#
# If SNIP and GraSP did not depend on their input, any input would give the same mask and
# the same accuracy. Yang et al. {cite}`yang2022dop` (section 4.2, Figure 4) test this by
# taking content away from the material step by step:
#
# - **all-ones** (the paper's *All-One Matrix*): every input is a tensor of ones (with the
#   real labels): no content at all;
# - **random segments** (*Random Segment*): superpixels of the class's images picked at
#   random rather than by concept (the same segmentation and canvas as DOP);
# - **one patch** (*Less Patch*): a single discriminative patch per class instead of ten or
#   thirty.
#
# They report that all-ones does worse in every trial, by more as sparsity grows; that
# random segments match DOP at low sparsity and fall behind at high; and that one patch
# does worse than DOP, GraSP more so (with GraSP, at some sparsities, even worse than
# all-ones). Figure 4 gives curves, not numbers, so this chapter compares signs with the
# paper, not sizes.
#
# One difference of setting: the paper feeds every ablation but one patch the same number
# of examples, 10 per class for both criteria (section 4.2). This book feeds each criterion
# what Table 1 feeds it, 10 per class to SNIP and 30 to GraSP, in every arm (the *samples*
# column), so that each ablation row differs from its criterion's image and DOP rows in
# content only.
#
# One ablation hides a trap. A constant input gives each channel of the first convolution
# the same value at every position of every example, except along the zero-padded border.
# In *train* mode, BatchNorm subtracts the batch mean, so what the network passes on is
# mostly the border; in *eval* mode at initialisation BatchNorm is the identity and the
# constant flows through. The official SNIP code scores in eval mode and the official GraSP
# code in train mode. The paper ran both criteria through the GraSP code ("we adopt the
# open codes of Wang *et al.*", section 4.1), which has no SNIP of its own, so its GraSP
# scored in train mode and the mode of its SNIP is not stated. Its all-ones result may
# therefore be a BatchNorm effect rather than a data effect. We score all-ones in **both**
# modes, labelled, judge the paper's claim for SNIP in both and for GraSP in train mode,
# and print beside every row what its masks look like: empty layers, the sparsest layer's
# density, and the share of kept weights in the last stage, each the worst over the row's
# seeds. A mask that starves a stage is shown as such, not averaged in.

# %% tags=["parameters"]
from typing import Optional

profile: str = "cpu"  # data, recipe and seeds together: a name of config.PROFILES
model_name: str = "resnet20"  # the network: a name of models.MODELS
seeds: Optional[int] = None  # seeds of every cell (0 to seeds - 1, paired); None: 3 (smoke: 1)
decisive_seeds: Optional[int] = None  # seeds of all-ones, images at 90, 95 %; None: 6 (smoke: 1)
sparsities: Optional[list[float]] = None  # None: the paper's 60, 80, 90, 95 % (smoke: 90, 95 %)
compute: bool = True  # False: show only the runs already in the store, compute none
workers: Optional[int] = None  # training processes; None: the profile's (2; smoke: 1, in-process)

# %%
import matplotlib.pyplot as plt
from IPython.display import display

from opai_lib import experiments, parameters, plots, verdicts

parameters.check(globals())
plots.setup_style()
P, runs, table = experiments.chapter("ablations", profile, model_name, seeds, decisive_seeds,
                               sparsities, compute, workers)

# %% [markdown]
# (ablation-table)=
# ## Accuracy and the masks behind it
#
# Means over seeds with 95 % intervals. SNIP's official code scores in eval mode, GraSP's
# in train mode; the all-ones arm in each criterion's own mode is the decisive cell (more
# seeds), and the other mode shows how much of the result BatchNorm decides. The paper's
# column is ResNet-50 on ImageNet, set beside ours for its ordering, not its level.
# The record holds {glue:text}`runs:d` of the {glue:text}`planned_runs:d` runs this chapter
# plans, and {glue:text}`extra_runs:d` more seeds of its cells (added by the stopping
# rule, or run by another chapter with the same settings); a row none of whose runs is in
# it yet shows n = 0 and no accuracy.

# %%
summary = experiments.summary(table, runs)
plots.accuracy_curves(summary)
plt.show()
display(experiments.shown(verdicts.beside_paper(summary)))
thin = experiments.thinnest_last_stage(summary)
plots.glue_text("thin_arm", thin["arm"])
for key in ("last stage %", "sparsest layer %", "reference last stage %"):
    plots.glue_number(plots.slug("thin", key), thin[key])

# %% [markdown]
# The most reshaped network in the table is {glue:text}`thin_arm`: its worst seed keeps
# {glue:text}`thin_last_stage:.1f` % of its weights in the last stage (fed images, the
# same criterion keeps {glue:text}`thin_reference_last_stage:.1f` %) and
# {glue:text}`thin_sparsest_layer:.2f` % of its sparsest layer. Whatever its accuracy
# below, it is the accuracy of a network with a different shape, not only a measure of
# what its input carried.

# %% [markdown]
# (ablation-effects)=
# ## Each ablation minus images, seed by seed
#
# The verdict compares the sign of our paired difference with the paper's claim: all-ones
# worse than images, for SNIP in either BatchNorm mode and for GraSP in train mode (the
# modes the paper may have run). *Supported* and *contradicted* say the interval excludes
# zero on the claim's side or the other; *smaller than 2 points* that it excludes a
# difference of 2 points either way, so the claimed deficit, if real, is small here. GraSP
# in eval mode and the other ablations have no claim against images in the paper (theirs
# are against DOP, in {ref}`ablation-vs-dop`), so their verdict here is *differs (no
# claim)* where the interval excludes zero and reaches past two points, *smaller than 2
# points* where it stays within them, *unresolved* otherwise. The DOP rows repeat Table 1's
# comparison ({doc}`dop_sparsity`) on this chapter's seeds. These are plain verdicts, cell
# by cell; the decisive cells grew one seed at a time, and the conclusions
# ({ref}`verdict-table`) judge them again over the looks that allowed.

# %%
ablation = verdicts.with_paper(experiments.effects(table, "images", runs), "images")
verdicts.report(ablation)

# %% [markdown]
# (ablation-growth)=
# ## Does the all-ones gap grow with sparsity?
#
# The paper's second claim: the gap between all-ones and images widens as sparsity grows.
# Per seed, all-ones minus images at 95 % minus the same at 90 %, for the arms of the
# claim. Negative means all-ones falls further behind images at 95 % (the paper's claim),
# or, where all-ones is ahead, that its lead shrinks; positive, the reverse.

# %%
growth = experiments.gap_growth(table, experiments.PAPER_ALL_ONES, "images", 90, 95)
plots.glue_effects(growth, label="material", prefix="growth")
display(experiments.shown(growth))

# %% [markdown]
# From 90 to 95 %, SNIP's all-ones difference from images changes by
# {glue:text}`growth_snip_all_ones_bn_eval_mean:+.1f` ±
# {glue:text}`growth_snip_all_ones_bn_eval_ci95:.1f` points in eval mode and
# {glue:text}`growth_snip_all_ones_bn_train_mean:+.1f` ±
# {glue:text}`growth_snip_all_ones_bn_train_ci95:.1f` in train mode, GraSP's (train mode)
# by {glue:text}`growth_grasp_all_ones_bn_train_mean:+.1f` ±
# {glue:text}`growth_grasp_all_ones_bn_train_ci95:.1f` (95 % intervals; the conclusions
# judge them). Where an interval includes zero, this budget cannot tell whether the gap
# grows.


# %% [markdown]
# (ablation-vs-dop)=
# ## Every ablation against DOP
#
# The paper also measures its ablations against DOP {cite}`yang2022dop`: all-ones does
# worse than the network pruned "by the image or discriminative image patches"; random
# segments perform "similarly to DOP at lower sparsity but worse than DOP at higher
# sparsity"; one patch per class does worse than DOP. We read *higher* as 90 and 95 %; at
# 60 and 80 % the random-segment claim is no difference, so there the verdict has no sign to
# check: *smaller than 2 points* agrees with the paper and *differs (no claim)* does not.
# All-ones is judged as above: SNIP in both BatchNorm modes, GraSP in train mode.

# %%
against_dop = verdicts.with_paper(experiments.effects(table, "DOP", runs), "DOP")
verdicts.report(against_dop[against_dop["material"] != "images"], prefix="vs dop")

# %% [markdown]
# Read each row's verdict against the claim above: *supported* where our interval excludes
# zero below it, *contradicted* where it excludes zero above. The paper adds that GraSP
# suffers more than SNIP from one patch, and with GraSP one patch does even worse than
# all-ones at some sparsities; neither is judged here. In the paper both criteria went
# from 10 examples per class to one; here GraSP goes from 30 to one and SNIP from 10 (the
# *samples* column of {ref}`ablation-table`), so a larger GraSP loss could come from its
# larger cut, not from GraSP's need for informative data.

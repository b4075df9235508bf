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
# - **all-ones**: every input is a tensor of ones (with the real labels): no content at all;
# - **random segments**: superpixels of the class's images picked at random rather than by
#   concept (the same segmentation and canvas as DOP);
# - **one patch**: a single discriminative patch per class instead of ten or thirty.
#
# They report that all-ones does worse in every trial, by more as sparsity grows; that
# random segments match DOP at low sparsity and fall behind at high; and that one patch
# does worse than DOP, GraSP more so. Figure 4 gives curves, not numbers, so this chapter
# compares signs with the paper, not sizes.
#
# One ablation hides a trap. A constant input gives each channel of the first convolution
# the same value at every position of every example, except along the zero-padded border.
# In *train* mode, BatchNorm subtracts the batch mean, so what the network passes on is
# mostly the border; in *eval* mode at initialisation BatchNorm is the identity and the
# constant flows through. The official SNIP code scores in eval mode and the official GraSP
# code in train mode, so the paper's all-ones result may be a BatchNorm effect rather than a
# data effect. We score all-ones in **both** modes, labelled, and print beside every row what
# its masks look like: empty layers, the sparsest layer's density, and the share of kept
# weights in the last stage. A mask that starves a stage is shown as such, not averaged in.

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
# Means over seeds with 95 % intervals. SNIP's own BatchNorm mode is eval, GraSP's is
# train: the all-ones arm in the criterion's own mode is the paper's ablation, the other
# mode shows how much of it BatchNorm decides.
# The record holds {glue:text}`runs:d` of the {glue:text}`planned_runs:d` runs this chapter
# plans, and {glue:text}`extra_runs:d` more seeds of its cells (added by the stopping
# rule, or run by another chapter with the same settings); a row none of whose runs is in
# it yet shows n = 0 and no accuracy.

# %%
summary = experiments.summary(table, runs)
plots.accuracy_curves(summary)
plt.show()
display(experiments.shown(verdicts.beside_paper(summary)))

# %% [markdown]
# (ablation-effects)=
# ## Each ablation minus images, seed by seed
#
# The verdict compares the sign of our paired difference with the paper's claim: all-ones
# worse than images, in the criterion's own BatchNorm mode, the one the paper ran. The
# other mode and the other ablations have no claim against images in the paper (theirs are
# against DOP, in {ref}`ablation-vs-dop`), so their verdict here is *differs (no claim)*
# where the interval excludes zero and reaches past two points, *smaller than 2 points*
# where it stays within them, *unresolved* otherwise.

# %%
ablation = verdicts.with_paper(experiments.effects(table, "images", runs), "images")
verdicts.report(ablation)

# %% [markdown]
# (ablation-growth)=
# ## Does the all-ones gap grow with sparsity?
#
# The paper's second claim: the gap between all-ones and images widens as sparsity grows.
# Per seed, the gap at 95 % minus the gap at 90 % (negative: wider at 95 %), for the
# all-ones arm in each criterion's own BatchNorm mode.

# %%
growth = experiments.gap_growth(table, experiments.OWN_ALL_ONES, "images", 90, 95)
plots.glue_effects(growth, label=None, prefix="growth")
display(experiments.shown(growth))

# %% [markdown]
# SNIP's all-ones gap changes by {glue:text}`growth_snip_mean:.1f` ±
# {glue:text}`growth_snip_ci95:.1f` points from 90 to 95 %, GraSP's by
# {glue:text}`growth_grasp_mean:.1f` ± {glue:text}`growth_grasp_ci95:.1f`
# (95 % intervals; the conclusions judge both). Where an interval includes zero, this budget
# cannot tell whether the gap grows.


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
# All-ones is judged in each criterion's own BatchNorm mode, as above.

# %%
against_dop = verdicts.with_paper(experiments.effects(table, "DOP", runs), "DOP")
verdicts.report(against_dop[against_dop["material"] != "images"], prefix="vs dop")

# %% [markdown]
# Read each row's verdict against the claim above: *supported* where our interval excludes
# zero below it, *contradicted* where it excludes zero above. The paper adds that GraSP
# suffers more than SNIP from one patch; that is not judged here, because it is confounded:
# the paper feeds GraSP three times as many DOP examples as SNIP, and so does this book (the
# *samples* column of {ref}`ablation-table`), so one patch per class cuts GraSP's batch
# three times as much, and a larger GraSP loss could come from that, not from GraSP's need
# for informative data.

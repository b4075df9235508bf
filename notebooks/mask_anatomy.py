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
# # Mask anatomy: does the material move the mask beyond its own noise?
#
# The trained chapters ask whether a material changes *accuracy*, which needs many seeds of
# training to resolve. This chapter asks the question one step earlier, where no training
# is needed: **does the material change the mask** more than a second draw of the same
# material does? If DOP masks differ from image masks no more than two batches of images
# differ from each other, the material cannot be what changes accuracy.
#
# For one initial ResNet-20 and each criterion (SNIP, GraSP), every material of the study
# and the controls from the literature is drawn many times, each draw scored once, and
# the mask selected at each sparsity (`opai_lib.anatomy`):
#
# - *within*: the mean overlap of two masks from different draws of one material (the
#   fraction of one mask's kept weights that the other keeps);
# - *between*: the mean overlap of a mask from the material with one from images;
# - the difference (within, pooled over both materials, minus between) and a permutation
#   test: shuffling which draw came from which material, how often is the difference as
#   large? The p-values are adjusted for the number of cells tested (Holm).
#
# The controls are images with their labels shuffled and images with their pixels
# shuffled (the corrupted inputs of Su et al. {cite}`su2020sanity`), and standard normal
# inputs. Then, per layer, where the masks differ; and how many kept weights sit on no path
# from input to output (*effective* sparsity, Vysogorets and Kempe
# {cite}`vysogorets2021connectivity`), so that a nominally sparse mask that starves a stage
# is seen for what it is.

# %% tags=["parameters"]
from typing import Optional

profile: str = "cpu"  # data, recipe and seeds together: a name of config.PROFILES
model_name: str = "resnet20"  # the network: a name of models.MODELS
draws: Optional[int] = None  # independent draws of every material; None: 20 (smoke: 2)
control_draws: Optional[int] = None  # draws of each control; None: 10 (smoke: 2)
sparsities: Optional[list[float]] = None  # None: 60, 80, 90, 95 and 98 % (smoke: 90 and 95 %)
seed: int = 0  # the initial network and the criteria's own randomness
permutations: int = 20000  # label shufflings of each test (at least anatomy.min_permutations)
layer_sparsity: float = 0.95  # the sparsity of the per-layer heat maps
effective_draws: int = 2  # draws whose effective sparsity is computed (at most the fewest draws)
score_draws: Optional[int] = None  # draws whose scores are rank-correlated; None: 4 (smoke: 2)
score_materials: Optional[list[str]] = None  # those rank-correlated; None: all (smoke: images, DOP)
second_model: str = "vgg16_bn"  # a second network for the within/between test
second_draws: Optional[int] = None  # its draws of every material; None: 10 (smoke: 2)
second_materials: list[str] = ["images", "DOP"]  # its materials, images first
check_seeds: Optional[int] = None  # seeds of the trained sanity checks; None: 4 (smoke: 1)
compute: bool = True  # False: show only the trained runs already in the store, compute none
workers: Optional[int] = None  # training processes; None: the profile's (2; smoke: 1, in-process)

# %%
import matplotlib.pyplot as plt
from IPython.display import display

from opai_lib import anatomy, config, experiments, parameters, plots, verdicts

parameters.check(globals())
plots.setup_style()
P = config.get_profile(profile)
workers = config.workers(P, workers)
first = anatomy.chapter(profile, model_name, draws, sparsities, seed, control_draws)
second = anatomy.chapter(profile, second_model, second_draws, sparsities, seed, second_draws,
                         materials=second_materials, glue_prefix="second", full_draws=(10, 10))
tables = anatomy.chapter_tables(first, second, permutations, score_draws, layer_sparsity,
                                effective_draws, score_materials)

# %% [markdown]
# The tables below are kept in the record (`book/record/cpu-anatomy` for the cpu profile,
# one JSON file each, written by `opai_lib.anatomy` and checked by
# `python -m opai_lib verify --store book/record/cpu-anatomy`); the masks are made only
# for a table that is not there yet.

# %%
kept = {name: anatomy.read(table) for name, table in tables.items()}
minutes, cpus = anatomy.cost(list(tables.values()))
plots.glue_number("table_minutes", minutes)
plots.glue_text("table_cpus", cpus)
print(f"the tables took {minutes:.1f} minutes on {cpus}, masks included")

# %% [markdown]
# The masks, their tests and measures took {glue:text}`table_minutes:.1f` minutes to compute
# on {glue:text}`table_cpus` (the threads of each table's record), once; a re-execution
# reads them back.

# %% [markdown]
# (anatomy-within-between)=
# ## Within against between
#
# One row per criterion, material and sparsity. The test asks whether a material's masks
# and the image masks could be draws of one distribution: it compares the overlap of two
# masks of the same material (pooled over both) with that of a mask of each. A small
# *p (Holm)* (adjusted over every row of the table) says they could not, which can mean
# that the material's masks lie farther from the image masks, or only that they are more
# alike among themselves than two image batches' masks are; a large one says that at this
# many draws the test finds no difference. The *distance ratio* below tells the two
# apart. Each material has {glue:text}`draws:d` draws, each control (images with shuffled
# labels, *random labels*; pixels shuffled within each image; standard normal inputs,
# *gaussian*) {glue:text}`control_draws:d` (the *draws* column). All-ones inputs are the
# same at every draw, so their masks differ between draws only through the criterion's own
# randomness, if any (within overlap 1 where there is none).

# %%
wb = kept["tests"]
display(experiments.shown(wb, digits=3))
anatomy.glue_tests(wb)

# %% [markdown]
# Of {glue:text}`cells:d` cells, {glue:text}`cells_moved:d` pass the test (Holm-adjusted
# p < 0.05), {glue:text}`cells_moved_near:d` of them with masks no farther from the image
# masks than a second image batch's (distance ratio at most 1: the material changed only
# how alike its own masks are). With this many draws the test detects very small
# differences, so the size is what to read. The *distance ratio* gives it: how far the
# material's masks are
# from image masks, in units of how far two batches of images put their masks apart
# (1 = no farther than redrawing the images). At 90 % sparsity DOP's ratio is
# {glue:text}`snip_dop_90_ratio:.2f` with SNIP and {glue:text}`grasp_dop_90_ratio:.2f` with
# GraSP; stitching at σ = 0.5 {glue:text}`snip_stitching_sigma_0_5_90_ratio:.2f` and
# {glue:text}`grasp_stitching_sigma_0_5_90_ratio:.2f`; all-ones in each criterion's own
# BatchNorm mode {glue:text}`snip_all_ones_bn_eval_90_ratio:.2f` and
# {glue:text}`grasp_all_ones_bn_train_90_ratio:.2f`; and images with shuffled labels
# {glue:text}`snip_random_labels_90_ratio:.2f` and
# {glue:text}`grasp_random_labels_90_ratio:.2f`. A ratio near 1 leaves the material little
# room to change accuracy through the mask; a large one says the mask did change, not that
# the change helps, which only training can tell. These masks come from one initial
# network (seed 0).

# %%
plots.difference_maps(wb)
plt.show()

# %% [markdown]
# ### The scores behind the masks
#
# A mask keeps the top of a ranking and discards the rest, so two rankings that agree at
# the top can still disagree below it, where a higher sparsity would cut. The rank
# correlation (Spearman) of the scores themselves, over every weight, for
# {glue:text}`score_draws:d` draws of each material: *within* two draws of the material,
# *between* a draw of it and a draw of images; *within reference* is the images' own.

# %%
spearman = kept["spearman"]
plots.glue_number("score_draws", tables["spearman"].draws)
plots.glue_rows(spearman, ["criterion", "material"], "between", "rho")
plots.glue_rows(spearman.drop_duplicates("criterion"), ["criterion"], "within reference",
                "images_rho")
display(experiments.shown(spearman, digits=3))

# %% [markdown]
# Two batches of images rank SNIP's weights with a correlation of
# {glue:text}`snip_images_rho:.3f` and GraSP's with {glue:text}`grasp_images_rho:.3f`;
# DOP against images, {glue:text}`snip_dop_rho:.3f` and {glue:text}`grasp_dop_rho:.3f`.
# A between value well below the images' own says the material reorders the weights as a
# whole, not only near the cut.
#
# ### A data-free yardstick
#
# How far is far? SynFlow {cite}`tanaka2020synflow` reads no data at all: its mask on the
# same initial network, set against each criterion's image masks in the same units (its
# *distance ratio*), is how far a criterion that ignores the data entirely would move
# the mask.

# %%
synflow = kept["synflow"]
plots.glue_rows(synflow, ["criterion", "material", "sparsity %"], "distance ratio", "ratio")
display(experiments.shown(synflow, digits=3))

# %% [markdown]
# At 90 % SynFlow's mask lies at a distance ratio of {glue:text}`snip_synflow_90_ratio:.2f`
# from SNIP's image masks and {glue:text}`grasp_synflow_90_ratio:.2f` from GraSP's, against
# DOP's {glue:text}`snip_dop_90_ratio:.2f` and {glue:text}`grasp_dop_90_ratio:.2f` above.

# %% [markdown]
# (anatomy-second)=
# ### A second network
#
# One initial ResNet-20 is one network. The same test on a network of another shape,
# {glue:text}`second_model`, with {glue:text}`second_draws:d` draws of each of
# {glue:text}`second_materials` and the same criteria, sparsities and seed:

# %%
second_wb = kept["second"]
anatomy.glue_tests(second_wb, prefix="second")
plots.glue_text("second_model", second_model)
plots.glue_text("second_materials", ", ".join(second_materials))
display(experiments.shown(second_wb, digits=3))

# %% [markdown]
# On {glue:text}`second_model`, {glue:text}`second_cells_moved:d` of
# {glue:text}`second_cells:d` cells pass the test ({glue:text}`second_cells_moved_near:d` of
# them at a distance ratio of at most 1); at 90 % DOP's distance ratio is
# {glue:text}`second_snip_dop_90_ratio:.2f` with SNIP and
# {glue:text}`second_grasp_dop_90_ratio:.2f` with GraSP (ResNet-20:
# {glue:text}`snip_dop_90_ratio:.2f` and {glue:text}`grasp_dop_90_ratio:.2f`).

# %% [markdown]
# (anatomy-layers)=
# ## Where the masks differ, layer by layer
#
# At the sparsity chosen above, for each material: the fraction of each layer's weights
# kept (mean over draws), and the overlap of its masks with image masks in that layer. The
# `images` row of the overlap map is the within-images overlap: the level any other row has
# to fall below before the material is moving that layer.

# %%
for crit in first.criteria:
    name = experiments.CRITERION_NAMES[crit]
    plots.layer_maps(kept["layers"][f"{name} density"], kept["layers"][f"{name} overlap"],
                     title=f"{name} at {100 * layer_sparsity:g} % sparsity")
    plt.show()

# %% [markdown]
# (anatomy-effective)=
# ## Effective sparsity
#
# Weights on no input-output path cannot affect the network. The table gives, for the
# first draws of each material, the mean effective sparsity, the kept weights no path
# uses, and the most layers left with no effective weight.

# %%
eff = kept["effective"]
plots.glue_number("most_unused", eff["unused kept"].max())
plots.glue_number("dead_cells", int((eff["dead layers"] > 0).sum()))
display(experiments.shown(eff, digits=2))

# %% [markdown]
# In {glue:text}`dead_cells:d` of these cells a mask leaves a layer with no effective weight,
# and at most {glue:text}`most_unused:,.0f` kept weights sit on no path. Where a material
# starves a layer this way, its trained accuracy measures a cut network. A dead layer need
# not be empty (its kept weights may lie on no path), so the chapters on accuracy, which
# print empty layers, the sparsest layer and the last stage's share beside every row, flag
# only the starker cases; a cell here that no accuracy chapter trains (their grids stop at
# 95 %) is not flagged anywhere else.

# %% [markdown]
# (anatomy-sanity)=
# ## Sanity checks, trained
#
# The measures above say whether a material moves the mask; training says whether the
# move matters. Frankle et al. {cite}`frankle2021missing` ask of a criterion's mask three
# questions, each by destroying one thing and keeping the rest (`opai_lib.sanity`):
#
# - *shuffled*: each layer's kept weights redrawn at random positions, the layer's count
#   kept. If this costs nothing, the criterion acts only through its layer densities.
# - *reinitialised*: the same mask trained from a fresh draw of the initial weights. If
#   this costs nothing, the mask was not chosen for these particular weights.
# - *inverted*: the lowest-scored weights kept instead of the highest, at the same count.
#   If the ranking carries information this hurts; it may also empty layers (the table's
#   collapse columns), and then it measures a cut network instead.
#
# They found that shuffling and reinitialising cost SNIP and GraSP little, that is, these
# criteria at initialisation choose layer densities rather than weights. (The shuffle in
# SynFlow's public code {cite}`tanaka2020synflow`, `Pruner.shuffle` in
# ganguli-lab/Synaptic-Flow, changes nothing: it assigns the shuffled mask to a local name
# and drops it. Here the shuffled mask is what is trained, and a test checks it differs.)
# Each of SNIP's masks (fed images, DOP) and GraSP's (images, DOP, stitching at σ = 0.5) is
# trained at {glue:text}`check_sparsities` as chosen and after each check,
# {glue:text}`check_seeds:d` paired seeds, with the profile's recipe
# ({glue:text}`check_epochs:d` epochs, {glue:text}`check_train_per_class:,d` training
# images per class, one thread per run on {glue:text}`check_cpus`); every row is the check
# minus the mask as chosen. The collapse columns of the last table are the worst over each
# row's seeds, and the mask as chosen has more seeds than its checks (its runs serve the
# accuracy chapters too), so its worst case can differ from the shuffled mask's although
# shuffling keeps every layer's count.
# If the shuffled DOP mask trains as well as the DOP mask, whatever DOP changes, it changes
# through layer densities.

# %%
check_runs, checks = experiments.record_table("sanity_checks", P, model_name, check_seeds,
                                              check_seeds, compute=compute, workers=workers)
check_effects = experiments.check_effects(checks, check_runs)
verdicts.report(check_effects, label=("material", "check"), prefix="check")
plots.glue_number("check_seeds", int(check_effects["count"].max()) if len(check_effects) else 0)
plots.glue_text("check_sparsities", plots.percents(r.sparsity for r in check_runs))
experiments.glue_setting(P, checks, prefix="check")
collapsed, collapsed_kept = experiments.collapsed_counts(checks)
plots.glue_number("check_collapsed", collapsed)
plots.glue_number("check_collapsed_kept", collapsed_kept)
inverted = experiments.inverted_cuts(checks)
plots.glue_rows(inverted, ["criterion"], "runs", "inverted_runs")
plots.glue_rows(inverted, ["criterion"], "cut", "inverted_cut")
display(experiments.shown(experiments.summary(checks, check_runs)))

# %% [markdown]
# Shuffling SNIP's DOP mask at 90 % changes accuracy by
# {glue:text}`check_snip_dop_shuffled_90_mean:.2f` ±
# {glue:text}`check_snip_dop_shuffled_90_ci95:.2f` points
# ({glue:text}`check_snip_dop_shuffled_90_n:d` pairs) and GraSP's by
# {glue:text}`check_grasp_dop_shuffled_90_mean:.2f` ±
# {glue:text}`check_grasp_dop_shuffled_90_ci95:.2f`; reinitialising them,
# {glue:text}`check_snip_dop_reinitialised_90_mean:.2f` ±
# {glue:text}`check_snip_dop_reinitialised_90_ci95:.2f` and
# {glue:text}`check_grasp_dop_reinitialised_90_mean:.2f` ±
# {glue:text}`check_grasp_dop_reinitialised_90_ci95:.2f`; inverting them,
# {glue:text}`check_snip_dop_inverted_90_mean:.2f` ±
# {glue:text}`check_snip_dop_inverted_90_ci95:.2f` and
# {glue:text}`check_grasp_dop_inverted_90_mean:.2f` ±
# {glue:text}`check_grasp_dop_inverted_90_ci95:.2f`. In words, against the mask as chosen
# the shuffled DOP mask trains to an accuracy that is
# {glue:text}`check_snip_dop_shuffled_90_direction` with SNIP and
# {glue:text}`check_grasp_dop_shuffled_90_direction` with GraSP, and the reinitialised one
# {glue:text}`check_snip_dop_reinitialised_90_direction` and
# {glue:text}`check_grasp_dop_reinitialised_90_direction`. Where a check comes out *higher*,
# the criterion's choice of positions (or of these initial weights) costs accuracy on this
# budget against the same layer densities placed at random: the criterion helps, if at
# all, through its densities. An interval that includes zero says the check found no
# difference at this many seeds, not that there is none; the grey band marks differences
# under 2 points.
#
# Inverting emptied a layer in {glue:text}`snip_inverted_cut:d` of SNIP's
# {glue:text}`snip_inverted_runs:d` inverted runs and {glue:text}`grasp_inverted_cut:d` of
# GraSP's {glue:text}`grasp_inverted_runs:d`. An empty layer can cut the network, and then
# the inverted difference measures the cut, not how much the ranking knows. In all,
# {glue:text}`check_collapsed:d` trained runs had an empty layer,
# {glue:text}`check_collapsed_kept:d` of them with a mask that was not inverted.


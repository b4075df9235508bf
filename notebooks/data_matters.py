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
# # Does the data matter? SNIP and GraSP fed images, DOP and Super Stitching
#
# SNIP {cite}`lee2019snip` and GraSP {cite}`wang2020grasp` score each weight of a freshly
# initialised network with gradients computed on a small batch of training images. Yang et
# al. {cite}`yang2022dop` ask whether *which* data goes into that batch matters, and answer
# yes: fed *discriminative image patches* (DOP: the segments of each class's most important
# ACE concepts, the rest of the image grey), SNIP pruned ResNet-50 on ImageNet to better
# accuracy than with random images at 60 to 95 % sparsity (a gap of about 3 points at 90 %),
# while GraSP gained a little at 90 % and lost at 95 %. Their *Super Stitching* images,
# several concepts of one class pasted into one picture, helped GraSP most at high
# sparsity. Their ablations fed all-one inputs, random segments, or one patch per class,
# and found each worse than DOP.
#
# This chapter runs the same comparison at the scale of the rest of the book: CIFAR-10
# (JPEG q75), ResNet-20, the profile's short training recipe, paired seeds (every material
# prunes the same initial network with the same seed). It asks three questions in order:
#
# 1. Does the material change the mask at all, beyond what drawing another batch of random
#    images changes?
# 2. Does it change the accuracy after training?
# 3. Do the paper's ablations (all-one inputs, random segments, fewer patches) rank as the
#    paper found?
#
# The materials themselves, and the concepts they come from, are shown in the
# [concepts chapter](concepts.ipynb).
#
# A criterion can empty a whole layer at high sparsity, which disconnects the network. The
# reference implementations do not check for it; here `on_collapse="allow"` (the default
# of this page) trains such a network anyway, so a collapse shows up as chance accuracy and
# in the layer densities, rather than being repaired into a different method.

# %% tags=["parameters"]
profile = "cpu"
model_name = "resnet20"
criteria_names = ["snip", "grasp"]
main_materials = ["image", "dop", "stitch"]
sparsities = [0.9, 0.98]
ablation_materials = ["all_ones", "random_segment", "less_patch"]
ablation_sparsity = 0.98
seeds = None  # None: the profile's seeds
ablation_seeds = None  # None: the first of the seeds
other_criteria = ["synflow", "iter_snip", "force", "prospr"]  # fed images, at ablation_sparsity
on_collapse = "allow"  # a criterion that empties a layer: "allow", "repair" or "error"
stability_sizes = [1, 10, 50]  # images per class of the mask-stability check
workers = 2

# %%
import itertools
import time

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch

from opai_lib import concepts, config, masks, materials, models, plots, prune, study

plots.setup_style()
P = config.get_profile(profile, **({} if seeds is None else {"seeds": tuple(seeds)}))
ablation_seeds = tuple(ablation_seeds or P.seeds[:1])
config.check_parameter(on_collapse in prune.ON_COLLAPSE, "on_collapse", on_collapse,
                       f"one of {prune.ON_COLLAPSE}")
config.check_parameter("image" in main_materials, "main_materials", main_materials,
                       "a list that includes 'image', the reference of every comparison")
for size in stability_sizes:
    config.check_integer("stability_sizes entry", size, 1)


def cfg(method, sparsity=0.0, material="image", seed=0):
    scored = method in criteria_names or method in other_criteria
    options = (("on_collapse", on_collapse),) if scored else ()
    return study.config_from_profile(P, model=model_name, method=method, sparsity=sparsity,
                                     material=material, seed=seed, method_options=options)


# Every run of the page, built first: a bad name or value fails here, before any compute.
main_grid = [cfg(c, s, m, seed) for c, m, s, seed in
             itertools.product(criteria_names, main_materials, sparsities, P.seeds)]
baseline_grid = ([cfg("dense", seed=seed) for seed in P.seeds]
                 + [cfg("random", s, seed=seed) for s in sparsities for seed in P.seeds])
ablation_grid = [cfg(c, ablation_sparsity, m, seed) for c, m, seed in
                 itertools.product(criteria_names, ablation_materials, ablation_seeds)]
other_grid = [cfg(c, ablation_sparsity, "image", seed)
              for c, seed in itertools.product(other_criteria, ablation_seeds)]
print(f"profile {P.name}: {P.dataset}, {P.train_per_class or 'all'} training images per class, "
      f"{P.score_per_class} material examples per class, seeds {P.seeds}; recipe {P.recipe}")
print(f"{len(main_grid)} main runs, {len(baseline_grid)} baseline runs, {len(ablation_grid)} "
      f"ablation runs, {len(other_grid)} runs of other criteria; torch {torch.__version__}, "
      f"{torch.get_num_threads()} CPU threads")

# %% [markdown]
# ## The concepts behind the materials
#
# DOP and Super Stitching need concepts: ACE run with a trained reference classifier (on
# the cpu profile the published CIFAR-10 ResNet-20, see the concepts chapter), on the
# profile's training images. The discovery is cached on disk, so this cell costs its full
# time once. Only concepts that pass the calibrated null test feed a material.

# %%
train_set, test_set = study.run_data(P.dataset, P.train_per_class, P.test_per_class)
t0 = time.perf_counter()
found = concepts.discover_default(train_set)
print(f"concepts of {len(found.classes)} classes ready in {time.perf_counter() - t0:.0f} s")

# %% [markdown]
# ## 1. Does the material change the mask?
#
# Before any training: for each criterion and sparsity, masks of the same initial network
# (the profile's first seed) from each material, compared by the fraction of kept weights they
# share. Every mask keeps exactly the same number of weights, so this overlap is 1 for
# identical masks and equals the density for two masks drawn independently at random. The
# yardstick is the first column, *another batch of images*: the same criterion fed a second,
# independently drawn batch of random training images. A material matters to the mask only
# if it moves the mask further than that.

# %%
def material_batch(name: str, seed: int):
    return materials.make_material(name, train_set, P.score_per_class, seed=seed,
                                   concepts=found)


seed0 = P.seeds[0]
model = models.get_model(model_name, train_set.num_classes, P.width, seed=seed0)
compared = main_materials + [m for m in ablation_materials if m not in main_materials]
batches = {name: material_batch(name, seed0) for name in compared}
batches["another batch of images"] = material_batch("image", seed0 + 1000)
rows, layer_rows = [], []
for criterion, sparsity in itertools.product(criteria_names, sparsities):
    mask_of = {name: prune.prune_at_init(model, criterion, batch, sparsity, seed=seed0,
                                         on_collapse=on_collapse)
               for name, batch in batches.items()}
    resampled = mask_of.pop("another batch of images")
    row = {"criterion": criterion, "sparsity": sparsity,
           "another batch of images": masks.overlap(mask_of["image"], resampled)}
    row.update({name: masks.overlap(mask_of["image"], mask_of[name]) for name in compared[1:]})
    row["random masks (expected)"] = 1 - sparsity
    rows.append(row)
    for name, m in mask_of.items():
        layer_rows.append({"criterion": criterion, "sparsity": sparsity, "material": name,
                           **masks.density(m)})
overlaps = pd.DataFrame(rows).set_index(["criterion", "sparsity"])
print("fraction of the image mask's kept weights also kept by the other mask")
overlaps.round(3)

# %% [markdown]
# How stable is a criterion's mask under its own sampling noise? Two independently drawn
# batches of random training images, at several batch sizes per class, at the highest
# sparsity: if two batches of the same kind already disagree on most kept weights, no
# material can matter to the mask beyond that noise unless it also changes the batch size.

# %%
stability = []
for criterion, per_class in itertools.product(criteria_names, stability_sizes):
    pair = [prune.prune_at_init(model, criterion, materials.make_material(
                "image", train_set, per_class, seed=s), max(sparsities), seed=seed0,
                on_collapse=on_collapse) for s in (seed0, seed0 + 1000)]
    stability.append({"criterion": criterion, "images per class": per_class,
                      "overlap of two batches": masks.overlap(*pair)})
pd.DataFrame(stability).pivot(index="images per class", columns="criterion",
                              values="overlap of two batches").round(3)

# %% [markdown]
# The per-layer densities show *where* the masks differ: the criterion decides how much of
# each layer survives, and a material that shifts those layer budgets changes the network's
# shape, not only which weights inside a layer are kept.

# %%
layer_table = pd.DataFrame(layer_rows)
top = max(sparsities)
fig, axes = plt.subplots(1, len(criteria_names), figsize=(7 * len(criteria_names), 4),
                         squeeze=False)
for ax, criterion in zip(axes[0], criteria_names, strict=True):
    sel = layer_table[(layer_table.criterion == criterion) & (layer_table.sparsity == top)]
    dens = sel.set_index("material").drop(columns=["criterion", "sparsity"]).T
    plots.layer_density_plot(dens, ax=ax, log=True,
                             title=f"{criterion}, {100 * top:g} % sparsity, by material")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 2. Does the material change the accuracy?
#
# Each mask is applied to its initial network, which is then trained with the profile's
# recipe and tested on the full test set. Dense networks and uniformly random masks (the
# same per-layer density everywhere) frame the comparison. Runs are stored by the hash of
# their configuration: the dense runs are those of the machinery chapter, and re-executing
# this page only trains what is missing.

# %%
t0 = time.perf_counter()
records = study.sweep(baseline_grid + main_grid + ablation_grid + other_grid,
                      study.store_dir(P.name),
                      workers=workers)
print(f"{len(records)} runs ready in {time.perf_counter() - t0:.0f} s "
      f"(finished runs are read back from the store)")
by_key = {r["key"]: r for r in records}
baseline = [by_key[c.key()] for c in baseline_grid]
main = [by_key[c.key()] for c in main_grid]
ablation = [by_key[c.key()] for c in ablation_grid]
others = [by_key[c.key()] for c in other_grid]
for r in records:
    assert r["pruned_nonzero"] == 0, r["key"]

summary = study.table(baseline + main, by=["method", "material", "sparsity"])
summary[["mean", "std", "ci95"]] = 100 * summary[["mean", "std", "ci95"]]
print(f"test accuracy %, mean over seeds {P.seeds} with 95 % t-interval half-width "
      f"({main[0]['test_images']} test images, {main[0]['train_images']} training images, "
      f"{P.recipe.epochs} epochs)")
summary.round(2)

# %%
acc = pd.DataFrame([{**{k: r["config"][k] for k in ("method", "material", "sparsity", "seed")},
                     "accuracy": 100 * r["accuracy"]} for r in baseline + main])
dense_mean = acc[acc.method == "dense"].accuracy.mean()
fig, axes = plt.subplots(1, len(criteria_names), figsize=(5 * len(criteria_names), 3.6),
                         sharey=True, squeeze=False)
for ax, criterion in zip(axes[0], criteria_names, strict=True):
    sel = acc[acc.method.isin([criterion, "random"])].copy()
    sel["fed"] = ["random mask" if c == "random" else m
                  for c, m in zip(sel.method, sel.material, strict=True)]
    sns.pointplot(data=sel, x="sparsity", y="accuracy", hue="fed", errorbar=None,
                  dodge=0.3, markers="o", ax=ax)
    sns.stripplot(data=sel, x="sparsity", y="accuracy", hue="fed", dodge=0.3, alpha=0.5,
                  legend=False, ax=ax, size=4)
    ax.axhline(dense_mean, color="grey", ls="--", lw=1, label="dense")
    ax.set(title=criterion, ylabel="test accuracy (%)", xlabel="sparsity")
    ax.legend(fontsize=8, frameon=False)
plt.tight_layout()
plt.show()

# %% [markdown]
# Because every material prunes the same initial network with the same training seed, the
# fair comparison is the *paired* difference: for each seed, the accuracy with a material
# minus the accuracy with random images. Its mean over seeds, a 95 % t-interval, and the
# difference of each seed (with two seeds the t-interval is wide, 12.7 standard errors,
# so the per-seed signs say more than the interval):

# %%
paired = study.paired_differences(main, by=["method", "sparsity"], vary="material",
                                  reference="image")
paired[["mean", "ci95"]] *= 100
paired["per_seed"] = [[round(100 * v, 2) for v in d] for d in paired["per_seed"]]
differences = paired.rename(columns={"method": "criterion", "mean": "minus image (points)",
                                     "count": "seeds", "per_seed": "per seed"}).set_index(
    ["criterion", "sparsity", "material"])
differences.round(2)

# %% [markdown]
# ## 3. The ablations
#
# The paper's section 4.2 replaces DOP by inputs of ones (*all-one matrix*, with the real
# labels), by segments drawn at random from the class's images instead of from its top
# concepts (*random segment*, same count and grey fill as DOP), or by a single patch per
# class (*less patch*). They run here at the highest sparsity, where the paper saw the
# largest effects, for the first seed; the image and DOP runs of the same seed are repeated
# from the main grid for comparison.

# %%
same = [r for r in main if r["config"]["sparsity"] == ablation_sparsity
        and r["config"]["seed"] in ablation_seeds]
ablation_table = pd.DataFrame([{"criterion": r["config"]["method"],
                                "material": r["config"]["material"],
                                "seed": r["config"]["seed"],
                                "accuracy": 100 * r["accuracy"]} for r in same + ablation])
print(f"test accuracy % at {100 * ablation_sparsity:g} % sparsity, seeds {ablation_seeds}")
ablation_table.pivot_table(index="material", columns="criterion", values="accuracy").loc[
    main_materials + ablation_materials].round(2)

# %% [markdown]
# The paper also sets its results beside iterative and data-free criteria. The same runs
# here, fed random images where they take data, at the same sparsity and seeds: SynFlow
# {cite}`tanaka2020synflow` (data-free, 100 rounds), Iterative SNIP and FORCE
# {cite}`dejorge2021force` (60 rounds each) and ProsPr {cite}`alizadeh2022prospr` (a
# meta-gradient through three SGD steps), beside the one-shot rows above and the random mask.

# %%
random_same = [r for r in baseline if r["config"]["method"] == "random"
               and r["config"]["sparsity"] == ablation_sparsity
               and r["config"]["seed"] in ablation_seeds]
pd.DataFrame([{"criterion": r["config"]["method"], "fed": r["config"]["material"],
               "seed": r["config"]["seed"], "accuracy": 100 * r["accuracy"]}
              for r in others + same + random_same]).sort_values("accuracy",
                                                                  ascending=False).round(2)

# %% [markdown]
# ## What this page measured
#
# The lines below are computed from the records above, so they stay true when the page is
# re-executed with other parameters. The reading that follows them is of the record
# published with this book: the cpu profile (CIFAR-10 JPEG q75, 2,000 training images per
# class, full test set, ResNet-20, 4 epochs in bf16, seeds 0 and 1, 10 material examples per
# class, two single-threaded runs at a time on a 2-core CPU).

# %%
def verdict(row_index, row):
    criterion, sparsity, material = row_index
    d, half, seeds = row["minus image (points)"], row["ci95"], row["per seed"]
    signs = ("higher in every seed" if min(seeds) > 0 else
             "lower in every seed" if max(seeds) < 0 else "mixed across seeds")
    interval = ("" if pd.isna(half) else
                f" +- {half:.2f} (95 % interval {'excludes' if abs(d) > half else 'includes'} 0)")
    per_seed = " ".join(f"{v:+.2f}" for v in seeds)
    return (f"{criterion} at {100 * sparsity:g} %: {material} {d:+.2f}{interval} points "
            f"against random images, {signs} ({per_seed})")


for index, row in differences.iterrows():
    print(verdict(index, row))
for column in overlaps.columns.drop("random masks (expected)"):
    print(f"overlap of the image mask with {column}: {overlaps[column].min():.2f} to "
          f"{overlaps[column].max():.2f} over criteria and sparsities")


# %% [markdown]
# **Reading the published record.**
#
# - *SNIP's mask is a stable function of its batch*: two batches of ten random images per
#   class share about 94 % of their kept weights. DOP moves the mask further than that (83
#   to 87 % shared), Super Stitching hardly (92 to 94 %). At 90 % sparsity SNIP fed DOP
#   trained 2.3 points better than SNIP fed images in both seeds, the direction and roughly
#   the size the paper reports at 90 % for ResNet-50 on ImageNet (about 3 points); at 98 %
#   the two seeds disagree.
# - *GraSP's mask is mostly batch noise at this batch size*: two batches of ten images per
#   class share only 30 to 37 % of their kept weights (58 % at fifty per class), which makes
#   the mask from any one batch of random images a noisy draw. Fed DOP instead, GraSP trained
#   4.4 and 3.9 points better at 90 and 98 % (both seeds), the largest effect on this page;
#   at 98 % GraSP with DOP is the best pruned network here (54.8 % against 49.5 % for random
#   masks). This agrees with the paper at 90 % and disagrees at its highest sparsity, where
#   the paper saw GraSP with DOP fail.
# - *The ablations point at noise, not at concepts* (one seed, 98 %): for GraSP, inputs of
#   ones (53.1 %) and one patch per class (54.2 %) also beat random images (50.5 %), and come
#   close to DOP (55.1 %). The paper found all-one inputs worse than images in every trial; we
#   find them better for both criteria (SNIP 51.0 % against 49.0 %). What DOP shares with
#   these inputs is low variety: the criterion is fed a few repeated, mostly grey
#   patterns instead of a hundred unrelated photographs.
# - *Super Stitching did not help*: for GraSP at 98 % it matches random images (seeds +0.94
#   and -0.97 points), where the paper found its largest gains.
# - *Random masks are a hard baseline on this budget*: at 90 % sparsity a uniform random mask
#   (62.6 %) beats SNIP and GraSP fed images (58.5 %, 58.2 %) and ties GraSP fed DOP.
# - *Iterative and data-free criteria* (one seed, 98 %): FORCE (53.3 %), SynFlow (52.9 %) and
#   Iterative SNIP (52.3 %) beat one-shot SNIP and GraSP fed images, ProsPr (48.2 %) does not;
#   GraSP fed DOP (55.1 %) is ahead of all of them, as the paper's Table 2 has DOP and Super
#   Stitching ahead of the iterative methods on ImageNet.
#
# Two seeds and one ablation seed cannot settle differences of a point or two; the t-intervals
# above say so. Run the page with more `seeds`, or with `-p profile cifar-gpu` for the full
# recipe, to tighten them.


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
# # Discriminative image patches: concepts, their significance, Super Stitching
#
# DOP {cite}`yang2022dop` feeds a pruning criterion *discriminative image patches* instead
# of training images: segments of the training images that a trained classifier finds
# important for their class, found by ACE {cite}`ghorbani2019ace` and ranked by TCAV
# {cite}`kim2018tcav`. This page runs that pipeline on the data of this book and asks what
# comes out:
#
# - which concepts ACE finds for several CIFAR-10 classes, with their TCAV scores (the
#   analogue of the paper's Figure 2), and the images they were cut from;
# - whether these concepts are significant: ACE's own paired t-test, and a test calibrated
#   on *null concepts* made of random patches, with the false-positive rate of each test;
# - whether the reference classifier itself assigns a concept's patches to their class;
# - whether a disjoint set of discovery images finds the same concepts;
# - Super Stitching images at coverage 0.5 and 0.75 (the paper's Figure 3), and every
#   material the pruning chapters feed the criteria.
#
# The words, in the order the pipeline uses them. The *bottleneck* is one layer of the
# trained classifier whose activations stand for an image (the printout below names it).
# ACE (*Automatic Concept-based Explanation*) cuts the images of a class into superpixel
# *segments* at several scales, embeds each segment by the bottleneck activations of its
# crop (averaged over positions) and clusters them: a cluster that passes ACE's rules is a
# *concept*. A *CAV* (concept activation vector) is the unit normal of a linear classifier
# that separates a concept's activations from those of a *negative set* (here patches of
# random images). The *TCAV score* of a concept for its class is the fraction of held-out
# images of the class whose class-logit gradient at the bottleneck points along the CAV:
# how often moving towards the concept raises the class's score. DOP (*discriminative
# image patches*, the paper's method) feeds the criteria the segments of each class's top
# concepts by TCAV score, each on a blank canvas at its original position.
#
# The library code is `opai_lib.concepts` (ACE, TCAV, tests) and `opai_lib.materials`.

# %% tags=["parameters"]
from typing import Optional

profile: str = "cpu"  # data, recipe and seeds together: a name of config.PROFILES
shown_classes: Optional[list[int]] = None  # classes drawn; None: the profile's choice
stability_classes: Optional[list[int]] = None  # rediscovered on disjoint images; None: shown
seed: int = 0  # concept discovery's images and segments, and the materials

# %%
import dataclasses
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from opai_lib import concepts as C
from opai_lib import config, data, materials, parameters, plots, study
from opai_lib.train import evaluate

parameters.check(globals())
P = config.get_profile(profile)
shown = list(shown_classes or ((0, 1) if P.dataset == "synthetic" else (0, 1, 3, 7)))
stable = list(stability_classes or shown)
train_set, test_set = study.run_data(P.dataset, P.train_per_class, P.test_per_class)
if any(not 0 <= k < train_set.num_classes for k in shown + stable):
    raise ValueError(f"classes must be in 0..{train_set.num_classes - 1}, got {shown}, {stable}")
clf = C.default_classifier(train_set)
settings = C.default_settings(train_set)
test = settings.material_test  # the test a concept passes to feed materials: 'null' on cpu
print(f"profile {P.name}: {train_set.name}, {len(train_set)} training images\n"
      f"classifier {clf.name}, bottleneck {clf.layer}; {torch.get_num_threads()} CPU threads")
print(settings)

# %% [markdown]
# ## The reference classifier
#
# ACE needs a *trained* classifier. On the cpu profile it is the published CIFAR-10
# ResNet-20 (`models.load_pretrained`, trained on the original lossless CIFAR-10; it
# expects inputs normalised with ImageNet statistics), on the smoke profile a tiny net
# trained on the synthetic set for two epochs. Its accuracy on our test copy:

# %%
test_idx = data.balanced_indices(test_set.labels, min(200, len(test_set) // 10), 0)
acc = evaluate(clf.model, data.batches(test_set.subset(test_idx), 250, train=False,
                                       normalization=clf.normalization))["accuracy"]
print(f"{clf.name}: top-1 accuracy {100 * acc:.1f} % on {len(test_idx)} test images of "
      f"{test_set.name} (class-balanced)")

# %% [markdown]
# ## Discovery
#
# For every class: the superpixels of its discovery images at three resolutions (SLIC),
# each segment as a crop resized to 32x32, the crops' activations at the bottleneck
# clustered with KMeans, clusters kept by ACE's rules, one CAV per negative set (random
# patches), and TCAV scores on held-out images of the class. Discovery is cached on disk:
# the pruning chapters draw their materials from the same result.

# %%
t0 = time.perf_counter()
found = C.discover(clf, train_set, settings=settings, seed=seed)
print(f"discovery: {time.perf_counter() - t0:.1f} s here (cached results load in seconds); "
      "seconds per stage when computed:")
print({stage: round(sec, 1) for stage, sec in found.timings().items()})
rates = found.false_positive_rates()
summary = pd.DataFrame([{
    "class": train_set.classes[k],
    "segments": len(cc.segments),
    "concepts": len(cc.concepts),
    "t-test significant": len(found.top(k, 99, "ttest")),
    "null-test significant": len(found.top(k, 99, "null")),
    "null 95th pct": float(cc.null_means.quantile(0.95)),
    "FPR t-test": rates[k]["ttest"],
    "FPR null test": rates[k]["null"],
} for k, cc in found.classes.items()]).set_index("class")
fpr_t, fpr_n = summary["FPR t-test"].mean(), summary["FPR null test"].mean()
plots.glue_number("fpr_ttest", fpr_t)
plots.glue_number("fpr_null", fpr_n)
print(f"false-positive rate on {settings.num_null} null concepts, mean over classes: "
      f"ACE's t-test (p < {settings.ttest_p}) {fpr_t:.2f}; "
      f"null test (level {settings.level}) {fpr_n:.2f}")
summary.round(2)

# %% [markdown]
# **How to read the two tests.** ACE keeps a concept when a paired t-test separates its
# TCAV scores (one per negative set) from those of one random concept. A *null concept*,
# a set of random patches from random images of all classes, is not about any class, so a
# test should call it significant no more often than its level. The table shows how often
# the t-test does: the "FPR t-test" column. The reason is that one random concept is a
# single draw from a wide distribution: null concepts' mean TCAV scores spread over much
# of [0, 1] (the figure below), so a t-test over the negative sets compares a concept with
# one arbitrary point of that spread. The calibrated test compares a concept's mean TCAV
# with the null concepts' mean scores instead (permutation p-value, one-sided). Its
# false-positive rate in the table tests each null concept against the other ones; null
# concepts are exchangeable, so this rate is at most the level by construction (two of 50
# without ties) and checks the code rather than the idea. The library's tests check the
# idea on fresh null concepts that were not part of the calibration. What the calibrated
# test does not cover: a *coherent* set of irrelevant patches (a KMeans cluster is more
# coherent than a random set, so its CAVs and TCAV scores are more consistent); its null
# hypothesis is "a set of random patches", no more.

# %%
fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 2.6), squeeze=False)
for ax, k in zip(axes[0], shown, strict=True):
    cc = found.classes[k]
    ax.hist(cc.null_means.numpy(), bins=np.linspace(0, 1, 21), color="0.7",
            label="null concepts")
    for c in cc.concepts:
        ax.axvline(c.mean_tcav, color="tab:red" if c.significant("null", settings)
                   else "tab:blue", lw=1)
    ax.axvline(float(cc.null_means.quantile(0.95)), color="k", ls="--", lw=1,
               label="null 95th pct")
    ax.set(title=train_set.classes[k], xlabel="mean TCAV score", xlim=(0, 1))
axes[0][0].legend(fontsize=7)
axes[0][0].set_ylabel("null concepts")
fig.suptitle("Mean TCAV of null concepts (grey) and of the discovered concepts "
             "(lines: red significant, blue not)", fontsize=9)
fig.tight_layout()

# %% [markdown]
# ## The top concepts
#
# For each class shown, the five highest-ranked concepts that pass the calibrated test
# (on the smoke profile, where TCAV under the tiny net is noise, the five highest-ranked).
# Above: a concept's patches (the segment at its original position, the rest at the
# dataset mean: the material DOP feeds a criterion); below: the training images they were
# cut from. The tables give each concept's mean TCAV score, both tests' verdicts, and how
# often the reference classifier itself assigns the concept's patches (and its resized
# crops) to the class.

# %%
def concept_table(k):
    cc = found.classes[k]
    agree = C.classifier_agreement(clf, found, k, 5, test)
    rows = []
    for rank, (c, a) in enumerate(zip(found.top(k, 5, test), agree, strict=True), 1):
        rows.append({"class": train_set.classes[k], "rank": rank,
                     "mean TCAV": c.mean_tcav, "sd TCAV": float(c.tcav.std()),
                     "CAV accuracy %": 100 * c.cav_accuracy,
                     "t-test p": c.ttest_p, "t-test": c.significant("ttest", settings),
                     "null p": c.null_p, "null test": c.significant("null", settings),
                     "classified as class (patch) %": 100 * a["patch"],
                     "(crop) %": 100 * a["crop"], "members": len(c.members),
                     "source images": len(set(cc.segments.image_of[c.members].tolist()))})
    return rows


def show_concepts(k, per_concept=4):
    cc, top = found.classes[k], found.top(k, 5, test)
    if not top:
        print(f"{train_set.classes[k]}: no concept passes the {test!r} test")
        return
    fig, axes = plt.subplots(2 * len(top), per_concept,
                             figsize=(1.1 * per_concept, 2.3 * len(top)), squeeze=False)
    for i, c in enumerate(top):
        members = cc.segments.subset(c.members[:per_concept])
        for j, (patch, source) in enumerate(zip(C.patches(members, train_set.mean),
                                                cc.segments.images[members.image_of],
                                                strict=True)):
            axes[2 * i][j].imshow(patch.numpy())
            axes[2 * i + 1][j].imshow(source.numpy())
        axes[2 * i][0].set_title(f"#{i + 1} TCAV {c.mean_tcav:.2f}", fontsize=7, loc="left")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(train_set.classes[k], fontsize=9)
    fig.tight_layout()


table = pd.DataFrame([row for k in shown for row in concept_table(k)])
table.round({c: 1 if c.endswith("%") else 3 for c in table.columns})

# %%
for k in shown:
    show_concepts(k)

# %%
agree_all = pd.DataFrame([
    {"class": train_set.classes[k], "patch %": 100 * a["patch"], "crop %": 100 * a["crop"]}
    for k in found.classes for a in C.classifier_agreement(clf, found, k, 5, test)])
per_class = agree_all.groupby("class")[["patch %", "crop %"]].mean()
chance = plots.glue_number("class_chance", 100 / train_set.num_classes)
plots.glue_number("patch_agreement", agree_all["patch %"].mean())
print("share of the top concepts' members the classifier assigns to their class, mean over "
      f"all classes: patches {agree_all['patch %'].mean():.1f} %, "
      f"crops {agree_all['crop %'].mean():.1f} % (chance: {chance:.1f} %)")
print("classes whose top-concept patches the classifier mostly assigns to the class: "
      f"{list(per_class.index[per_class['patch %'] > 50])} of {len(per_class)}")
per_class.round(1)

# %% [markdown]
# ## Does another set of discovery images find the same concepts?
#
# Discovery is repeated on a disjoint set of images of the same class (same TCAV images,
# same negatives and null concepts). For each top concept of one discovery set, the
# concept of the other set with the closest direction (the unit mean of its CAVs) is
# found among *all* its concepts; "agreement" is how often that match is among the other
# set's top concepts, "chance" the rate for a match drawn at random, "cosine" the mean
# cosine of the matches.

# %%
other = C.discover(clf, train_set, classes=stable, settings=settings, seed=seed, split=1)
stab = pd.DataFrame([{"class": train_set.classes[k],
                      **C.stability([found, other], k, 5, test)} for k in stable])
stab[["agreement", "chance"]] *= 100  # fractions -> %
stab = stab.rename(columns={"agreement": "agreement %", "chance": "chance %"})
plots.glue_number("stability_agreement", stab["agreement %"].mean())
plots.glue_number("stability_chance", stab["chance %"].mean())
stab.set_index("class").round({"agreement %": 1, "chance %": 1, "cosine": 2})

# %% [markdown]
# Over these classes, a top concept's closest match on the disjoint images lands among the
# other set's top five {glue:text}`stability_agreement:.0f` % of the time, against
# {glue:text}`stability_chance:.0f` % for a match drawn at random. The further the
# agreement lies below 100 %, the more a DOP material depends on which images discovery
# happened to see: one more source of the draw-to-draw spread that {doc}`dop_sparsity`
# measures on trained networks.

# %% [markdown]
# ## Random patches or whole images as negatives
#
# ACE trains each CAV against sets of random *images*. Our concepts are patches on a flat
# mean-grey background, so a linear classifier can separate them from whole photos by
# "patch or photo" alone, whatever the concept. Discovery is repeated for two classes with
# whole-image negatives (ACE's choice) next to the default random-patch negatives; if all
# CAVs share that component, the concept directions are similar to one another.

# %%
neg_rows = []
for negatives in ("patches", "images"):
    variant = C.discover(clf, train_set, classes=stable[:2], seed=seed,
                         settings=dataclasses.replace(settings, negatives=negatives))
    fpr = variant.false_positive_rates()
    neg_rows.append({"negatives": negatives,
                     "mean cosine between concept directions": C.shared_direction(variant),
                     "t-test significant": sum(len(variant.top(k, 99, "ttest"))
                                               for k in variant.classes),
                     "null-test significant": sum(len(variant.top(k, 99, "null"))
                                                  for k in variant.classes),
                     "FPR t-test": np.mean([r["ttest"] for r in fpr.values()]),
                     "FPR null test": np.mean([r["null"] for r in fpr.values()])})
print(f"classes {[train_set.classes[k] for k in stable[:2]]}")
pd.DataFrame(neg_rows).set_index("negatives").round(2)

# %% [markdown]
# Against whole images the concept directions share a large common component (first
# column): much of what such a CAV encodes is "a patch on grey, not a photo", the same for
# every concept. Against random patches the directions are close to orthogonal, so a CAV
# encodes what sets its concept apart from other patches. This is why random patches are
# the default negatives here.

# %% [markdown]
# ## Super Stitching and the materials
#
# Algorithm 2 of the paper stitches, per image, one randomly popped segment of each top
# concept in ascending order of importance (the most important pasted last, on top),
# round after round, until the fraction of covered pixels reaches sigma. It checks the
# coverage after each full round, so the coverage reached can exceed sigma: with segments
# that cover a tenth to a half of a 32x32 image, one round often goes well past it. The
# table gives the coverage reached over 20 stitched images per class. Both rows of a class
# use the same seed, so where the first round already passes 0.75 the two images are the
# same.

# %%
cover = []
fig, axes = plt.subplots(2 * len(shown), 6, figsize=(6.6, 2.3 * len(shown)), squeeze=False)
for i, k in enumerate(shown):
    for j, sigma in enumerate((0.5, 0.75)):
        images, coverage = materials.stitched(found, k, sigma, 20, seed)
        cover.append({"class": train_set.classes[k], "sigma": sigma,
                      "mean coverage": np.mean(coverage), "min": np.min(coverage),
                      "max": np.max(coverage)})
        for m in range(6):
            axes[2 * i + j][m].imshow(images[m].numpy())
            axes[2 * i + j][m].set_xticks([])
            axes[2 * i + j][m].set_yticks([])
        axes[2 * i + j][0].set_ylabel(f"{train_set.classes[k]}\nσ={sigma}", fontsize=7)
fig.suptitle("Super Stitching images", fontsize=9)
fig.tight_layout()
pd.DataFrame(cover).round(2)

# %% [markdown]
# Every material of the pruning chapters for one class, as the criterion sees it before
# augmentation (`materials.make_material`, shown de-normalised).

# %%
k = shown[0]
names = ["image", "dop", "stitch", "random_segment", "less_patch", "all_ones"]
fig, axes = plt.subplots(len(names), 6, figsize=(6.6, 1.2 * len(names)), squeeze=False)
mean = torch.tensor(train_set.mean).view(1, -1, 1, 1)
std = torch.tensor(train_set.std).view(1, -1, 1, 1)
for i, name in enumerate(names):
    x, y = materials.make_material(name, train_set, 6, seed, concepts=found, augment=False)
    pixels = x[y == k] if name == "all_ones" else x[y == k] * std + mean
    for m in range(6):
        ax = axes[i][m]
        if m < len(pixels):
            ax.imshow(pixels[m].permute(1, 2, 0).clamp(0, 1).numpy())
        ax.set_xticks([])
        ax.set_yticks([])
    axes[i][0].set_ylabel(name, fontsize=7)
fig.suptitle(f"materials of class {train_set.classes[k]} (6 per class requested)", fontsize=9)
fig.tight_layout()

# %% [markdown]
# ## What the concepts are at this resolution
#
# On the cpu profile (CIFAR-10 (JPEG q75), the pretrained ResNet-20 at `layer3.1`, the
# settings printed at the top, one seed, a 2-core CPU) the concepts are regions, not parts.
# A 32x32 image cut into 3 to 12 superpixels gives segments of roughly a tenth to a half of
# the image, and what passes the calibrated test is of two kinds:
#
# - **context**: sky for airplanes (white and blue sky, often with the plane's outline cut
#   into it), the dark band of road and shadow under cars, grass and bright background
#   strips behind horses;
# - **whole objects or large object regions**: car bodies, horse silhouettes, fur-coloured
#   pieces of cats.
#
# There are no part-level concepts (wheels, legs, faces, ears): the paper's concepts
# (its Figure 2) come from ImageNet images of 299x299 pixels cut into 15 to 80 segments;
# at 32x32 a segment is a region of colour and a part is a handful of pixels. The
# classifier's own verdict on the patches (the agreement table) says how much of the class
# a patch alone carries: for most classes the classifier does not call most of a concept's
# patches by the concept's class, even though the concept raises that class's logit on
# images of the class. A high TCAV score means "moving the activation of a class image in
# this direction raises the logit", not "this patch looks like the class".
#
# ACE's t-test accepts a large share of null concepts made of random patches (the
# false-positive rates in the discovery table), so the concepts it keeps cannot be called
# discriminative without a calibrated test; the pruning chapters draw DOP and Super
# Stitching materials from the concepts that pass the null test. Where the paper shows
# semantically meaningful patches, we find at this resolution mostly context and colour
# regions; whether that matters for pruning is the question of the next chapters.

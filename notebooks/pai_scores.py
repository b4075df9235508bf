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
# # What pruning-at-initialisation scores reward
#
# A pruning-at-initialisation criterion turns a freshly initialised network into one number
# per weight, and the mask keeps the weights with the highest numbers. The previous chapter
# showed the layer densities these numbers lead to on ResNet-20. This chapter opens the
# formulas of the three criteria the study leans on, SNIP {cite}`lee2019snip`, GraSP
# {cite}`wang2020grasp` and SynFlow {cite}`tanaka2020synflow`, computes them on a network
# small enough to draw every weight of, and follows them to the sparsities where a whole
# layer disappears.
#
# **What you will learn**
#
# - the three scores as formulas, with GraSP's sign as its official code uses it, and what
#   each of them rewards;
# - how to read them on a drawn network, and why SynFlow's scores add up to the same total
#   in every layer;
# - layer collapse: why one global ranking can empty a whole layer, at which sparsity each
#   criterion first does so on ResNet-20, and what SynFlow's iterations change;
# - where the data enters SNIP's and GraSP's scores, and how far their masks move when the
#   data is replaced by noise, by constant inputs or by shuffled labels: the question the
#   study asks of real images.

# %% tags=["parameters"]
from typing import Optional

profile: str = "cpu"  # data, recipe and seeds together: a name of config.PROFILES
model_name: str = "resnet20"  # the network of the collapse curves: a name of models.MODELS
hidden: list[int] = [6, 6]  # hidden layer widths of the drawn MLP (2 inputs, 2 classes)
per_class: int = 50  # two-moons points per class fed to the drawn network's criteria
draw_sparsity: float = 0.85  # sparsity of the drawn masks and of the data question, in (0, 1)
draws: int = 8  # draws of every material in the data question (at least 2)
grasp_reinit: bool = False  # GraSP re-draws the MLP's linear layers first (official code: True)
lowest: float = 0.8  # lowest sparsity of the collapse curves
highest: float = 0.9999  # highest sparsity of the collapse curves
points: Optional[int] = None  # sparsities on the collapse curves; None: 25 (smoke: 6)
synflow_rounds: Optional[int] = None  # rounds of iterated SynFlow; None: 100 (smoke: 10)
seed: int = 0  # the initial networks, the images, the points and the criteria's own draws

# %%
import matplotlib.pyplot as plt
import pandas as pd

from opai_lib import collapse, config, data, masks, models, parameters, plots, prune, toy

parameters.check(globals())
P = config.get_profile(profile)
models.MODELS.get(model_name)
config.check_parameter(len(hidden) >= 1 and min(hidden) >= 1, "hidden", hidden,
                       "a non-empty list of positive integers")
config.check_integer("per_class", per_class, 1)
config.check_parameter(0 < draw_sparsity < 1, "draw_sparsity", draw_sparsity, "a number in (0, 1)")
config.check_integer("draws", draws, 2)
grid = collapse.sparsity_grid(lowest, highest, (6 if P.name == "smoke" else 25)
                              if points is None else points)
rounds = (10 if P.name == "smoke" else 100) if synflow_rounds is None else synflow_rounds
config.check_integer("synflow_rounds", rounds, 2)
config.check_integer("seed", seed, 0)
plots.setup_style()

# %% [markdown]
# ## Three scores
#
# The network $f(x; \theta)$ has its prunable weights in $\theta \in \mathbb{R}^N$ (every
# convolution and linear weight, `models.prunable`), a mask $c \in \{0, 1\}^N$ multiplies
# them, and $L(\theta)$ is the mean cross-entropy over a batch of examples $(x, y)$. At
# initialisation, write $g = \nabla_\theta L$ for the gradient, $H = \nabla^2_\theta L$ for
# the Hessian and $\odot$ for the elementwise product.
#
# **SNIP** {cite}`lee2019snip` asks how sensitive the loss is to each connection:
#
# $$
# S_{\mathrm{SNIP}}(\theta) = \left| \frac{\partial L(c \odot \theta)}{\partial c}
# \right|_{c = \mathbf{1}} = \left| \theta \odot g \right| .
# $$
#
# To first order, removing weight $q$ changes the loss by
# $L(\theta - \theta_q e_q) - L(\theta) \approx -\theta_q g_q$, so SNIP keeps the weights
# whose removal would change the loss on this batch the most, in either direction. It
# rewards weights that are large *and* to which the loss on the batch is sensitive.
#
# **GraSP** {cite}`wang2020grasp` asks what removing weights does to training rather than
# to the loss. A small gradient step lowers the loss by an amount proportional to
# $g^\top g$, and a change $\delta$ of the weights changes that amount, to first order, by
#
# $$
# \Delta\left(g^\top g\right) \approx 2\, \delta^\top H g .
# $$
#
# The official code computes, with $g$ and $H$ of the cross-entropy of the logits divided
# by a temperature $T = 200$,
#
# $$
# S(-\theta) = -\theta \odot H g ,
# $$
#
# and removes the weights of **largest** $S$. This library returns $-S = \theta \odot Hg$
# and keeps the largest, which selects the same mask (`opai_lib.criteria.grasp`). Removing
# weight $q$ alone is $\delta = -\theta_q e_q$, so
# $\Delta(g^\top g) \approx -2\, \theta_q (Hg)_q = 2 S_q$: GraSP removes the weights whose
# removal would raise the gradient norm, or lower it least, and keeps those whose removal
# would lower it most. It rewards weights that carry the gradient. Its score has a sign
# and no absolute value, so a large weight can rank last. $Hg$ is computed without forming
# $H$, by differentiating $g^\top \nabla_\theta L$ once more with $g$ held fixed.
#
# **SynFlow** {cite}`tanaka2020synflow` uses no data. It replaces every weight by its
# absolute value, feeds one input of ones and adds up the outputs; for a chain of $L$
# layers without biases, that sum and the score are
#
# $$
# R(\theta) = \mathbf{1}^\top \Big( \prod_{l=L}^{1} \big|\theta^{(l)}\big| \Big) \mathbf{1},
# \qquad
# S_{\mathrm{SF}}(\theta) = \theta \odot \frac{\partial R}{\partial \theta} .
# $$
#
# (The code runs the network on the absolute values of all its parameters and statistics,
# biases and BatchNorm included, passed in as new tensors so that the network itself keeps
# its signs, with BatchNorm in inference mode; every ReLU then
# passes its input unchanged.) For the weight from unit $j$ of layer $l-1$ to unit $i$ of
# layer $l$,
#
# $$
# S_{\mathrm{SF}}\big(\theta^{(l)}_{ij}\big) =
# \Big[ \mathbf{1}^\top \prod_{k=L}^{l+1} \big|\theta^{(k)}\big| \Big]_i \,
# \big|\theta^{(l)}_{ij}\big| \,
# \Big[ \prod_{k=l-1}^{1} \big|\theta^{(k)}\big| \, \mathbf{1} \Big]_j ,
# $$
#
# the sum, over every input-output path through that edge, of the product of the absolute
# weights along the path. $R$ is linear in the absolute weights of each layer, so every
# layer's scores add up to $R$ itself:
#
# $$
# \sum_{i, j} S_{\mathrm{SF}}\big(\theta^{(l)}_{ij}\big) = R \quad \text{for every layer } l .
# $$
#
# SynFlow rewards weights that lie on many strong paths, whatever the data. It is applied
# in rounds: over $T$ rounds (100 in the paper's runs) the density falls as $d^{\,t/T}$ to
# its target $d$, and every round scores the masked network again, so the survivors'
# scores are recomputed without the weights already pruned.

# %% [markdown]
# ## A network small enough to draw
#
# The network below is a ReLU MLP initialised as the study's networks are (Kaiming normal
# weights, zero biases). SNIP and GraSP are fed points of two interleaved half moons, one
# class each, centred on the origin. Each panel draws one criterion: every edge is a
# weight, coloured by the rank of its score among all the network's weights (the same
# scale for every criterion, whatever the range of its scores), and the thick edges are
# the ones its mask keeps. The iterated SynFlow panel is coloured by the scores of its
# first round, which are those of the one-shot panel; only the edges it keeps differ.

# %%
net = toy.mlp([2, *hidden, 2], seed=seed)
moons = toy.material("moons", per_class, seed)
drawn_arms = {"SNIP": ("snip", {}), "GraSP": ("grasp", {"reinit_linear": grasp_reinit}),
              "SynFlow, one shot": ("synflow", {"rounds": 1}),
              "SynFlow, iterated": ("synflow", {"rounds": rounds})}
drawn_scores = collapse.dense_scores(net, drawn_arms, moons, seed)
drawn = {label: found[draw_sparsity] for label, found in
         collapse.masks_by_arm(net, drawn_arms, moons, [draw_sparsity], seed).items()}
plots.network_graphs(drawn_scores, drawn)
plt.show()

# %% [markdown]
# Per layer (in network order): its number of weights, how many each mask keeps, and the
# sum of each criterion's scores over the layer's weights (SynFlow's first round, the same
# for both SynFlow masks).

# %%
report = {label: prune.density_report(m) for label, m in drawn.items()}
kept = pd.DataFrame({"weights": report["SNIP"]["weights"],
                     **{label: r["kept"] for label, r in report.items()}})
totals = collapse.layer_totals({label: drawn_scores[label]
                                for label in ("SNIP", "GraSP", "SynFlow, one shot")})
layers = pd.concat({"kept": kept, "score total": totals}, axis=1).rename(
    index=plots.short_layer_name)
empty = {label: ", ".join(map(plots.short_layer_name, masks.empty_layers(m))) or "none"
         for label, m in drawn.items()}
synflow_total = totals["SynFlow, one shot"]
plots.glue_all({"mlp_sizes": "-".join(map(str, [2, *hidden, 2])),
                "mlp_weights": int(kept.loc["total", "weights"]),
                "mlp_kept": int(kept.loc["total", "SNIP"]), "mlp_points": 2 * per_class,
                "draw_sparsity": 100 * draw_sparsity, "synflow_r": synflow_total.iloc[0],
                "synflow_spread": synflow_total.max() / synflow_total.min() - 1,
                "rounds": rounds, "grasp_reinit": str(grasp_reinit),
                **{plots.slug(label, "empty"): text for label, text in empty.items()}})
layers.style.format("{:.4g}", na_rep="")

# %% [markdown]
# The network has {glue:text}`mlp_sizes` units per layer, {glue:text}`mlp_weights:d`
# weights in all, of which every mask keeps {glue:text}`mlp_kept:d`
# ({glue:text}`draw_sparsity:.0f` % sparsity); SNIP and GraSP were fed
# {glue:text}`mlp_points:d` points, GraSP with `reinit_linear` set to
# {glue:text}`grasp_reinit`.
# SynFlow's layer totals are all $R$ = {glue:text}`synflow_r:.4g` (the largest exceeds the
# smallest by a relative {glue:text}`synflow_spread:.1e`, rounding), as the formula says.
# So the mean SynFlow score in a layer of $n$ weights is $R / n$: the larger the layer, the
# lower its mean score, and one global ranking tends to thin the largest layer first.
# Layers the masks leave empty: SNIP {glue:text}`snip_empty`, GraSP
# {glue:text}`grasp_empty`, one-shot SynFlow {glue:text}`synflow_one_shot_empty`, SynFlow
# iterated over {glue:text}`rounds:d` rounds {glue:text}`synflow_iterated_empty`.
#
# Two things to look for in the panels. Thick edges that do not join into a path from an
# input to an output cannot change the output, however high they scored: the mask anatomy
# chapter counts such weights (the *effective* sparsity of Vysogorets and Kempe
# {cite}`vysogorets2021connectivity`). And a layer with no thick edge cuts every path:
# that is layer collapse, the subject of the next section.

# %% [markdown]
# ## Layer collapse as it happens
#
# One global ranking keeps a layer as long as the layer's best weight ranks among the kept
# ones. With $r_l$ the rank of layer $l$'s best score among all $N$ scores, a mask that
# keeps $K$ weights leaves every layer non-empty exactly when $K \ge \max_l r_l$, so a
# one-shot criterion empties its first layer past the sparsity $1 - \max_l r_l / N$
# (`collapse.critical_sparsity`; exact unless scores tie). Tanaka et al.
# {cite}`tanaka2020synflow` call the highest sparsity reached without emptying a layer the
# *critical compression*, and explain why one-shot criteria reach it early. In a chain
# of ReLU layers with zero biases, every score of the form
# $\theta \odot \partial R / \partial \theta$, with $R$ any function of the network's
# output, adds up to the same total over each layer: SynFlow's exactly, SNIP's before its
# absolute value is taken ($R = L$). The weights of the largest layers then score lowest
# on average, and one global ranking tends to empty those layers first. Iterating counters
# this: once a round has thinned a layer, its survivors share the layer's total and score
# higher, and the next rounds prune elsewhere. Random pruning keeps the same fraction of
# every layer, so it cannot empty one before that fraction of the smallest layer rounds to
# nothing.
#
# The study's chapters prune to at most 98 %; the curves below go from
# {glue:text}`lowest:.0f` % to {glue:text}`highest:.4g` %, on the profile's ResNet-20 at
# initialisation, each data-dependent criterion fed one class-balanced batch of training
# images. In a ResNet a block's convolutions sit beside an identity shortcut, so an empty
# convolution removes that block's residual branch and leaves a path around it; the
# network is *cut* only when no kept weight lies on any input-output path, which the table
# reports separately.

# %%
images = data.load_dataset(P.dataset, "train")
material = prune.scoring_batches(images, per_class=P.score_per_class, num_batches=1, seed=seed)
model = models.get_model(model_name, num_classes=images.num_classes, width=P.width, seed=seed)
arms = {"SNIP": ("snip", {}), "GraSP": ("grasp", {}),
        "SynFlow, one shot": ("synflow", {"rounds": 1}),
        "SynFlow, iterated": ("synflow", {"rounds": rounds}),
        "Magnitude": ("magnitude", {}), "Random": ("random", {})}
curves = collapse.curves(collapse.masks_by_arm(model, arms, material, grid, seed), model)
first = collapse.first_collapse(curves)
scores = collapse.dense_scores(model, arms, material, seed)
exact = collapse.critical_table(scores, collapse.one_shot_global(arms))
sizes = {n: p.numel() for n, p in models.prunable(model).items()}
print(f"profile {P.name}: {model_name} (width {P.width}, seed {seed}), {sum(sizes.values()):,} "
      f"prunable weights in {len(sizes)} layers (from {min(sizes.values())} to "
      f"{max(sizes.values()):,} weights)\n"
      f"material: {len(material[0][1])} {images.name} "
      f"training images; {len(grid)} sparsities")
first.join(exact).style.format(lambda v: f"{100 * v:.3f} %" if isinstance(v, float) else v,
                               na_rep="-")

# %% [markdown]
# The first two columns bracket, on the grid, the sparsity at which each criterion first
# empties a layer, and the third names that layer (the first in network order, if it
# empties several at once); the next two bracket the sparsity at which it first cuts the
# network. The last two are exact, for the criteria that select from one global ranking of
# one scoring: the highest sparsity with every layer kept, and the layer one more pruned
# weight would empty.

# %%
plots.collapse_curves(curves)
plt.show()
synflow_resnet = collapse.layer_totals({"SynFlow": scores["SynFlow, one shot"]})["SynFlow"]
glued = plots.glue_all({"lowest": 100 * lowest, "highest": 100 * highest,
                        "resnet_synflow_share": synflow_resnet.min() / synflow_resnet.max(),
                        **collapse.summary(first, exact, sizes)})

# %% [markdown]
# Left, the number of empty layers; right, the density of the sparsest layer, which can
# never exceed the overall density (dashed) and leaves the log scale where it reaches zero.
# From one global ranking, SNIP keeps every layer up to {glue:text}`snip_critical:.3f` %
# sparsity (the next to empty is {glue:text}`snip_next`), GraSP up to
# {glue:text}`grasp_critical:.3f` % ({glue:text}`grasp_next`), magnitude up to
# {glue:text}`magnitude_critical:.3f` % ({glue:text}`magnitude_next`) and one-shot SynFlow
# up to {glue:text}`synflow_one_shot_critical:.3f` % ({glue:text}`synflow_one_shot_next`).
# On the grid, SynFlow over {glue:text}`rounds:d` rounds first empties a layer
# {glue:text}`synflow_iterated_empties`, and random pruning
# {glue:text}`random_empties`, which it could not do below {glue:text}`random_bound:.3f` %
# sparsity, where the fraction kept falls below one weight of the smallest layer
# ({glue:text}`smallest_layer:d` weights).
#
# Emptying a layer is not yet cutting the network. Where each criterion first cuts it,
# on the grid: SNIP {glue:text}`snip_cuts`, GraSP {glue:text}`grasp_cuts`, one-shot
# SynFlow {glue:text}`synflow_one_shot_cuts`, iterated SynFlow
# {glue:text}`synflow_iterated_cuts`, magnitude {glue:text}`magnitude_cuts` and random
# pruning {glue:text}`random_cuts`.
#
# One-shot SynFlow shows the conservation argument at work. In ResNet-20 its per-layer
# totals are nearly equal (the layer that carries least of $R$ still carries
# {glue:text}`resnet_synflow_share:.1%` of what the stem and the classifier carry, the rest
# taking a block's shortcut), while the layers hold from {glue:text}`smallest_layer:d` to
# {glue:text}`largest_layer:d` weights. A weight of a large layer scores far lower on
# average than one of a small layer, so a single ranking is expected to strip the large
# layers first: the layer it empties first, {glue:text}`synflow_one_shot_next`, holds
# {glue:text}`synflow_one_shot_next_size:d` weights.
# Iterated over {glue:text}`rounds:d` rounds, the same score empties its first layer
# {glue:text}`synflow_iterated_empties` instead: iteration, not the score alone, is what
# postpones collapse.

# %% [markdown]
# ## The data question
#
# Where does the data enter these formulas? SNIP's score is $|\theta \odot g|$ with
# $g = \frac{1}{|B|} \sum_{(x, y) \in B} \nabla_\theta \ell\big(f(x; \theta), y\big)$: the
# inputs enter through every layer's activations and the labels through
# $\partial \ell / \partial f = \mathrm{softmax}(f) - e_y$. In the first layer of the MLP,
# for instance, $g_{ij}$ is the batch mean of (the backpropagated error at unit $i$) times
# (input coordinate $j$). GraSP's score $\theta \odot Hg$ takes the batch twice, in $g$ and
# in $H$. SynFlow's $R$ takes neither: only the input's shape. With every input equal to
# one, every example has the same activations, so the labels enter only through their
# proportions, as if the batch were one example whose target is the class frequencies.
#
# The study asks whether what a data-dependent criterion is fed matters: Yang et al.
# {cite}`yang2022dop` feed SNIP and GraSP discriminative image patches instead of images
# ({doc}`dop_sparsity`), and the mask anatomy chapter ({doc}`mask_anatomy`) measures
# whether such materials move the mask more than a second draw of images does. Here is the
# same question on the drawn network, with the controls the study uses: the moons with
# their labels shuffled, standard normal points, and points of exactly one, each with the
# moons' balanced labels. Every material is drawn {glue:text}`draws:d` times, each draw
# scored once, and every mask selected at {glue:text}`draw_sparsity:.0f` % sparsity. A
# cell is the mean fraction of a material's kept weights that a mask from the moons keeps
# too; in the moons' own column, over pairs of different draws.

# %%
found = toy.material_masks(net, {label: drawn_arms[label] for label in ("SNIP", "GraSP")}
                           | {"SynFlow": drawn_arms["SynFlow, iterated"]},
                           per_class, draws, draw_sparsity, seed)
overlaps = toy.overlap_table(found)
plots.heatmap(overlaps, center=None, label="overlap",
              title=f"kept weights shared with the moons' masks, {draw_sparsity:.0%} sparsity")
plt.show()
glued = plots.glue_all({"draws": draws, "density": 1 - draw_sparsity,
                        **{plots.slug(arm, name, "overlap"): value
                           for (arm, name), value in overlaps.stack().items()}})

# %% [markdown]
# A second draw of the moons shares {glue:text}`snip_moons_overlap:.2f` of SNIP's kept
# weights and {glue:text}`grasp_moons_overlap:.2f` of GraSP's. Shuffling the labels leaves
# {glue:text}`snip_random_labels_overlap:.2f` (SNIP) and
# {glue:text}`grasp_random_labels_overlap:.2f` (GraSP), standard normal points
# {glue:text}`snip_gaussian_overlap:.2f` and {glue:text}`grasp_gaussian_overlap:.2f`, and
# inputs of ones {glue:text}`snip_all_ones_overlap:.2f` and
# {glue:text}`grasp_all_ones_overlap:.2f`. Two masks drawn at random would share about
# {glue:text}`density:.2f` of their weights, the fraction kept. SynFlow's row is all ones:
# its mask cannot depend on what it is fed, only on the input's shape.
#
# On this network, a control moves a mask by more than a second draw of the moons does
# wherever its overlap lies below the moons' own column. Whether the same holds for
# ResNet-20 fed images, patches or noise, at the sparsities the study trains, is what
# {doc}`mask_anatomy` measures with many draws and a permutation test; whether it changes
# accuracy, what {doc}`dop_sparsity` trains networks to find out.

# %% [markdown]
# ## Exercises
#
# ```{exercise}
# :label: scores-grasp-reinit
#
# Re-run with `grasp_reinit = True`, as the official GraSP code does. What do you expect of
# GraSP's panel in the drawing, and of its row in the data question?
# ```
#
# ```{solution} scores-grasp-reinit
# :class: dropdown
#
# The official code re-draws every linear layer of its scoring copy from a Xavier normal
# distribution before scoring; in a convolutional network that is only the classifier, in
# an MLP it is every layer. GraSP then scores another network: the $\theta$ in
# $\theta \odot Hg$, and the $g$ and $H$, are those of the re-drawn weights, and the mask
# is applied to the network that will be trained, whose weights it never saw. Expect the
# drawn mask to bear no more relation to the network's own weights than a random mask of
# the same layer densities would: its colours and thick edges change. In the data
# question the re-drawn copy is the same for every draw (it is drawn from the seed), so the
# overlaps still measure how much the data moves the mask, now on the re-drawn network.
# ```
#
# ```{exercise}
# :label: scores-projection
#
# Re-run with `model_name = "resnet20_proj"`, whose downsampling blocks have 1x1
# convolutions on their shortcuts instead of a parameter-free shortcut. What do you expect
# of the layers each criterion empties first, and of the sparsity at which it cuts the
# network?
# ```
#
# ```{solution} scores-projection
# :class: dropdown
#
# The two 1x1 shortcut convolutions are small prunable layers that sit in parallel with a
# block's two 3x3 convolutions. For SynFlow, the flow through a downsampling block splits
# between its branch and its shortcut, and the branch, a product of two convolutions with
# nine times as many weights per output each, carries almost all of it: the shortcut's
# layer total is a small fraction of $R$ and its weights score low, so expect one-shot
# SynFlow to empty the shortcuts first, at a moderate sparsity. Emptying a shortcut does
# not cut the network, as the branch still carries paths, but a downsampling block no
# longer has a path around its branch that needs no weight: once neither the branch nor
# the shortcut of one such block keeps a path, the network is cut. Expect every criterion
# that empties large last-stage convolutions to cut the network at a lower sparsity than
# with the parameter-free shortcuts.
# ```
#
# ```{exercise}
# :label: scores-few-points
#
# Re-run with `per_class = 2`, so that SNIP and GraSP see four points. What do you expect
# of the moons' own column of the data question, and of the gap between it and the
# controls?
# ```
#
# ```{solution} scores-few-points
# :class: dropdown
#
# The gradient and the Hessian-gradient product are means over the batch, and a mean over
# four points varies much more from draw to draw than one over a hundred: two draws of the
# moons now give noticeably different masks, and the moons' own column drops. The controls
# keep little of what the moons' masks share either way (and the inputs of ones still give
# one and the same mask at every draw, since their labels stay balanced), so the gap
# between the moons' column and the controls' shrinks, and it can vanish or reverse: with
# little data per score, which sample the criterion was fed matters about as much as what
# kind of data it was. This is why the study compares materials against the draw-to-draw
# spread of images rather than against a single draw.
# ```

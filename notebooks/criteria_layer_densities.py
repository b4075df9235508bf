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
# # What each criterion keeps: per-layer densities at one sparsity
#
# A pruning-at-initialisation criterion gives every weight a score, and a mask keeps the
# weights of highest score. Frankle et al. {cite}`frankle2021missing` found that what
# matters most in such a mask is how many weights it leaves in each layer, not which ones.
# This page shows, for one ResNet-20 at initialisation, the layer densities that each
# criterion of `opai_lib.criteria` chooses when it keeps {glue:text}`cld_density:.3g` % of the
# weights over the whole network (sparsity {glue:text}`cld_sparsity:.3g` %; global ranking,
# exactly that fraction of the N prunable weights kept, rounded).
#
# What each criterion rewards:
#
# - **SNIP** {cite}`lee2019snip` keeps the weights whose removal would change the loss on the
#   scoring batch the most, to first order: large |weight x gradient|.
# - **Iterative SNIP** {cite}`dejorge2021force` applies SNIP's score again and again on the
#   masked network as the density shrinks along kappa^(t/T), so it rewards weights that stay
#   salient once others are gone.
# - **FORCE** {cite}`dejorge2021force` scores the dense initial weights with the gradient of
#   the masked network, so it rewards weights that would matter if they were restored;
#   a weight pruned earlier may come back.
# - **GraSP** {cite}`wang2020grasp` keeps the weights whose removal would most reduce the
#   gradient norm (θ·Hg high), so it rewards weights that carry the gradient flow.
# - **ProsPr** {cite}`alizadeh2022prospr` keeps the weights whose mask most changes the loss
#   reached after a few SGD steps, rewarding weights that matter for early training.
# - **SynFlow** {cite}`tanaka2020synflow` needs no data: it keeps the weights that carry most of
#   the product of absolute weights along input-output paths, re-scored over 100 rounds, so
#   it rewards connectivity and avoids emptying a layer.
# - **Magnitude** keeps the largest initial weights, which favours layers initialised with
#   a large variance (Kaiming init: small fan-in).
# - **Random** rewards nothing: it keeps the same fraction of every layer.

# %% tags=["parameters"]
profile: str = "cpu"  # data, recipe and seeds together: a name of config.PROFILES
model_name: str = "resnet20"  # the network: a name of models.MODELS
sparsity: float = 0.9  # the sparsity every criterion's mask is selected at, in [0, 1)
seed: int = 0  # the initial network and the material's images

# %%
import time

import matplotlib.pyplot as plt
import pandas as pd
import torch

from opai_lib import config, criteria, data, methods, models, parameters, plots, prune

parameters.check(globals())
P = config.get_profile(profile)
names = criteria.CRITERIA.names()
models.MODELS.get(model_name)
config.check_parameter(0 <= sparsity < 1, "sparsity", sparsity, "a number in [0, 1)")
plots.glue_all({"cld_sparsity": 100 * sparsity, "cld_density": 100 * (1 - sparsity)})
plots.setup_style()

# %% [markdown]
# The material of the data-dependent criteria is one class-balanced batch of training
# images, the profile's number per class, drawn with the page's seed. The network is the
# profile's width of the model, initialised from the same seed.

# %%
images = data.load_dataset(P.dataset, "train")
material = prune.scoring_batches(images, per_class=P.score_per_class, num_batches=1,
                                 seed=seed)
model = models.get_model(model_name, num_classes=images.num_classes, width=P.width, seed=seed)
n_weights = sum(p.numel() for p in models.prunable(model).values())
print(f"profile {P.name}: {model_name} (width {P.width}, seed {seed}), {n_weights:,} prunable "
      f"weights in {len(models.prunable(model))} tensors\n"
      f"material: {len(material[0][1])} "
      f"{images.name} training images ({P.score_per_class} per class), "
      f"{torch.get_num_threads()} CPU threads")

# %%
found, seconds = {}, {}
options = {name: methods.profile_options(P, name, on_collapse="allow") for name in names}
for name in names:
    t0 = time.perf_counter()
    found[name] = prune.prune_at_init(model, name, material, sparsity, seed=seed,
                                      options=options[name])
    seconds[name] = time.perf_counter() - t0
densities = pd.DataFrame({name: prune.density_report(m)["density"] for name, m in found.items()})
rounds = {name: o.rounds for name, o in options.items()}
scopes = {name: o.scope for name, o in options.items()}
pd.DataFrame({"scope": scopes, "rounds": rounds, "seconds": seconds,
              "empty layers": {n: int((densities[n].drop("total") == 0).sum()) for n in names}})

# %% [markdown]
# Per-layer densities, layers in network order (`linear` is the classifier). The dashed line
# is the overall density every mask keeps exactly.

# %%
fig, ax = plt.subplots(figsize=(11, 4.5))
plots.layer_density_plot(densities, ax=ax, log=True,
                         title=f"{model_name} at {sparsity:.0%} sparsity: fraction kept per layer")
plt.show()

# %%
table = densities.copy()
table.index = [plots.short_layer_name(n) for n in table.index]
table.insert(0, "weights", prune.density_report(found[names[0]])["weights"].to_numpy())
table.style.format({n: "{:.3f}" for n in names}).background_gradient(
    subset=names, cmap="viridis", axis=None)

# %% [markdown]
# Summaries of the figure, computed from the table: the density of the first convolution
# and of the classifier, and how unequal each criterion's layer densities are (largest over
# smallest non-empty layer density).

# %%
layers = densities.drop(index="total")
summary = pd.DataFrame({
    "first conv": layers.iloc[0],
    "classifier": layers.iloc[-1],
    "densest layer": layers.idxmax().map(plots.short_layer_name),
    "sparsest layer": layers.idxmin().map(plots.short_layer_name),
    "max / min density": layers.max() / layers.where(layers > 0).min(),
})
summary.style.format({"first conv": "{:.3f}", "classifier": "{:.3f}",
                      "max / min density": "{:.1f}"})

# %% [markdown]
# Which criteria favour the two ends of the network, where layers are small (the first
# convolution and the classifier), over the large convolutions of the last stage?

# %%
last_stage = [n for n in layers.index if n.startswith("layer3.")]
ends_denser = [n for n in names
               if min(layers[n].iloc[0], layers[n].iloc[-1]) > layers[n][last_stage].max()]
print(f"criteria whose first convolution and classifier are both denser than every layer of "
      f"the last stage:\n  {ends_denser or 'none'}")
print(f"most unequal layer densities: {summary['max / min density'].idxmax()} "
      f"(max / min = {summary['max / min density'].max():.1f})\n"
      f"most even: {summary['max / min density'].idxmin()} "
      f"(max / min = {summary['max / min density'].min():.1f})")

# %% [markdown]
# The criteria printed first keep both ends of the network denser than every convolution
# of the last stage; that says where the ends stand, not that the whole last stage is
# thinned (a criterion can still keep one last-stage layer above the overall density, as
# the layer table shows). They differ most in how unequal they make the layers (last
# column of the summary). The chapters that follow ask
# whether feeding the data-dependent criteria other material changes these densities and
# the accuracy the masks reach after training.

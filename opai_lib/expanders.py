"""Data-free masks from expander graphs: Random, X-Net and RReg, and how well they expand.

Stewart, Michieli and Ozay (CVPRW 2023, "Data-free model pruning at initialization via
expanders") model each layer as a bipartite graph between its input and output units and
keep exactly the weights on the graph's edges. No data and no criterion are involved: the
mask is a random graph with good *expansion* (every small set of units reaches many others).

Three generators, all drawing a simple bipartite graph (no multi-edges) with a given number
of edges ``E`` over ``n_in`` left and ``n_out`` right nodes:

* ``random``: Erdos-Renyi, E distinct pairs chosen uniformly (G(n, M)). Sized by degree, E is
  Binomial(n_in * n_out, d / n_out), so the graph is G(n, p) with p = d / n_out, as the
  official code draws it.
* ``xnet``: X-Net's left-regular graph (Prabhu et al., ECCV 2018): every input node picks
  its neighbours uniformly among the outputs; input degrees differ by at most one
  (exactly d when sized by degree).
* ``rreg``: the paper's random "regular" graph: degrees as equal as possible on *both*
  sides (exactly d on the larger side when sized by degree). Sampled with the switch chain
  (start from a simple circulant graph, permute labels, then swap the ends of random edge
  pairs), which converges to the uniform distribution over simple graphs with these degrees
  and mixes rapidly when one side is regular (Miklos, Erdos and Soukup, Electron. J. Combin.
  2013). The official code instead merges the multi-edges of a configuration model, which
  leaves degrees below d; ``official_parameter_count`` simulates that, to explain the paper's
  PP column.

A layer becomes a graph over its channels: a linear weight (out, in) over (in, out) features,
a convolution weight (out, in, k, k) over (in, out) channels, where one edge keeps the whole
k x k kernel (X-Net and the official code). Which layers stay dense follows the official code:
the last layer (classifier) always; the first layer for ResNets (their stem) but not for VGG,
whose 13 convolutions are all sparse (see ``expander_mask``).

Two ways to size a mask:

* by degree ``d``, with the official code's convention per generator (``Generator.edges_at``):
  random and xnet keep d / n_out of a layer, rreg keeps d * max(n_in, n_out) edges, so rreg is
  denser than the others at the same d wherever n_in != n_out. Counted as the official code
  counts (every trainable parameter, BatchNorm and biases included, with configuration-model
  merging for rreg) and averaged over the three generators, this reproduces the paper's PP
  column for VGG-16 within 0.04 points; its "+-" is the spread over the generators (see
  ``official_parameter_count``).
* by ``density``: the kept fraction of all prunable weights (dense first/last layers count
  as kept), one layer density shared by the sparse layers, rounded to whole edges: every
  generator gets exactly the same number of edges in every layer. The fair comparison.

Each layer draws its own graph from (seed, layer name): equal-shaped layers get different
graphs, and a new seed gives new graphs (the official code caches graphs by shape on disk).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from opai_lib import models
from opai_lib.config import check_integer, check_types, options_of, param, require
from opai_lib.registry import Registry

Biadjacency = np.ndarray  # bool (n_in, n_out): entry [i, o] is an edge from input i to output o


# ---------------------------------------------------------------------------------------
# Generators: (n_in, n_out, edges, rng) -> simple bipartite graph with exactly `edges` edges.


def balanced_degrees(edges: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Degrees of ``n`` nodes summing to ``edges``, all floor or ceil of the mean (which
    nodes get the extra one is random)."""
    degrees = np.full(n, edges // n, dtype=np.int64)
    degrees[rng.permutation(n)[: edges % n]] += 1
    return degrees


def random_graph(n_in: int, n_out: int, edges: int, rng: np.random.Generator) -> Biadjacency:
    """Erdos-Renyi G(n, M): ``edges`` distinct pairs, uniformly at random."""
    graph = np.zeros(n_in * n_out, dtype=bool)
    graph[rng.choice(n_in * n_out, size=edges, replace=False)] = True
    return graph.reshape(n_in, n_out)


def xnet_graph(n_in: int, n_out: int, edges: int, rng: np.random.Generator) -> Biadjacency:
    """X-Net: each input node connects to its degree's worth of distinct random outputs."""
    degrees = balanced_degrees(edges, n_in, rng)
    order = np.argsort(rng.random((n_in, n_out)), axis=1)
    graph = np.zeros((n_in, n_out), dtype=bool)
    graph[np.arange(n_in)[:, None], order] = np.arange(n_out)[None, :] < degrees[:, None]
    return graph


def rreg_graph(n_in: int, n_out: int, edges: int, rng: np.random.Generator,
               sweeps: int = 10) -> Biadjacency:
    """A near-uniform simple graph with degrees as equal as possible on both sides.

    More than half full, the complement (also balanced) is drawn instead, where switches
    are rarely blocked. ``sweeps`` passes of the switch chain each propose one swap per
    pair of edges.
    """
    if 2 * edges > n_in * n_out:
        return ~rreg_graph(n_in, n_out, n_in * n_out - edges, rng, sweeps)
    left = balanced_degrees(edges, n_in, rng)
    u = np.repeat(np.arange(n_in), left)
    # Circulant start: the edges of input i go to consecutive outputs (mod n_out), which
    # are distinct as left[i] <= n_out, and every output gets floor or ceil(edges / n_out).
    v = rng.permutation(n_out)[np.arange(edges) % n_out]
    v = _switch(u, v, n_in, n_out, sweeps, rng)
    graph = np.zeros((n_in, n_out), dtype=bool)
    graph[u, v] = True
    return graph


def _switch(u: np.ndarray, v: np.ndarray, n_in: int, n_out: int, sweeps: int,
            rng: np.random.Generator) -> np.ndarray:
    """The switch chain, vectorised without bias; returns the new right ends ``v``.

    Each round pairs random edges (a, b), (c, d) and swaps them to (a, d), (c, b) when both
    new pairs are absent. A pair is swapped only if its block {a, c} x {b, d} shares no
    cell with the block of any other pair of the round: then no swap changes what another
    swap reads, so a round is a product of independent, symmetric switches and the uniform
    distribution stays stationary. ``sweeps`` is the expected number of isolated swap
    proposals per edge.
    """
    v = v.copy()
    edges = len(u)
    if edges < 2:
        return v
    present = np.zeros(n_in * n_out, dtype=bool)
    present[u * n_out + v] = True
    # Another pair's block meets a given block with probability ~16 / (n_in * n_out), so
    # with P pairs a block is isolated with probability ~exp(-16 P / (n_in n_out)). P is
    # chosen to maximise isolated proposals per round (that probability near 1/e).
    pairs = max(1, min(edges // 2, n_in * n_out // 16))
    rate = math.exp(-16 * pairs / (n_in * n_out))
    for _ in range(math.ceil(sweeps * edges / (2 * pairs * rate))):
        chosen = rng.choice(edges, size=2 * pairs, replace=False)
        a, b = chosen[:pairs], chosen[pairs:]
        ua, ub, va, vb = u[a] * n_out, u[b] * n_out, v[a], v[b]
        blocks = np.stack([ua + va, ua + vb, ub + va, ub + vb])
        isolated = (np.bincount(blocks.ravel(), minlength=n_in * n_out)[blocks] == 1).all(0)
        ok = isolated & ~present[blocks[1]] & ~present[blocks[2]]
        present[blocks[:, ok]] ^= True  # the two old cells empty, the two new ones fill
        v[a[ok]], v[b[ok]] = vb[ok], va[ok]
    return v


@dataclass(frozen=True)
class Generator:
    """A graph model and the official code's edge count at degree d."""

    sample: Callable[[int, int, int, np.random.Generator], Biadjacency]
    edges_at: Callable[[int, int, int, np.random.Generator], int]


GENERATORS: Registry[Generator] = Registry("expander generator")
GENERATORS.add("random", Generator(
    random_graph, lambda n_in, n_out, d, rng: int(rng.binomial(n_in * n_out, min(1, d / n_out)))))
GENERATORS.add("xnet", Generator(xnet_graph, lambda n_in, n_out, d, rng: n_in * min(d, n_out)))
GENERATORS.add("rreg", Generator(
    rreg_graph, lambda n_in, n_out, d, rng: min(n_in * n_out, d * max(n_in, n_out))))


# ---------------------------------------------------------------------------------------
# Expansion.


def channel_graph(mask: torch.Tensor) -> Biadjacency:
    """The (n_in, n_out) graph of a weight mask: an edge where any kernel weight is kept."""
    if mask.dim() < 2:
        raise ValueError(f"a weight mask has >= 2 dimensions (out, in, ...), got {mask.shape}")
    return mask.reshape(mask.shape[0], mask.shape[1], -1).any(-1).T.cpu().numpy()


def _random_subsets(n: int, samples: int, rng: np.random.Generator
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """``samples`` indicator rows of random subsets of size k, k uniform in [1, ceil(n/2))."""
    sizes = rng.integers(1, max(2, math.ceil(n / 2)), size=samples)
    ranks = np.argsort(np.argsort(rng.random((samples, n)), axis=1), axis=1)
    return torch.from_numpy((ranks < sizes[:, None]).astype(np.float32)), torch.from_numpy(sizes)


class ExpansionSampler:
    """The official code's Monte-Carlo vertex expansion of (n_in, n_out) graphs.

    Each of ``samples`` draws takes a random left set S_L and right set S_R (sizes uniform
    in [1, ceil(n/2))) and scores |N(S_L)| / |S_L| + |N(S_R)| / |S_R|; the estimate is the
    total over 2 * samples. One sampler reuses its sets for every graph it scores, so
    candidates of a best-of-N selection are compared on the same sets. The products run in
    torch, so they use the threads ``torch.set_num_threads`` allows (one per sweep worker).
    """

    def __init__(self, n_in: int, n_out: int, samples: int = 1000, seed=0):
        rng = np.random.default_rng(seed)
        self.left, self.left_sizes = _random_subsets(n_in, samples, rng)
        self.right, self.right_sizes = _random_subsets(n_out, samples, rng)

    def __call__(self, graph: Biadjacency) -> float:
        g = torch.from_numpy(graph.astype(np.float32))
        reach_left = ((self.left @ g) > 0).sum(1) / self.left_sizes
        reach_right = ((self.right @ g.T) > 0).sum(1) / self.right_sizes
        return float((reach_left.sum() + reach_right.sum()) / (2 * len(self.left_sizes)))


def spectral(graph: Biadjacency) -> dict[str, float]:
    """Singular values of the biadjacency against the Ramanujan bound.

    The adjacency eigenvalues of a bipartite graph are +-(singular values of its
    biadjacency). A (dL, dR)-biregular graph has sigma_1 = sqrt(dL * dR) and is Ramanujan
    when sigma_2 <= sqrt(dL - 1) + sqrt(dR - 1); average degrees stand in for dL, dR on
    irregular graphs (Hoang et al., ICLR 2023).
    """
    n_in, n_out = graph.shape
    sigma = torch.linalg.svdvals(torch.from_numpy(graph.astype(np.float64)))
    edges = int(graph.sum())
    bound = math.sqrt(max(edges / n_in - 1, 0)) + math.sqrt(max(edges / n_out - 1, 0))
    return {"sigma1": float(sigma[0]), "sigma2": float(sigma[1]) if len(sigma) > 1 else 0.0,
            "ramanujan_bound": bound}


def layer_report(mask: Mapping[str, torch.Tensor], samples: int = 1000, seed: int = 0
                 ) -> list[dict]:
    """Per tensor of ``mask``: shape, kept edges and weights, degree ranges, sampled
    expansion, sigma_2 and the Ramanujan bound of its channel graph."""
    rows = []
    for name, m in mask.items():
        graph = channel_graph(m)
        n_in, n_out = graph.shape
        left, right = graph.sum(1), graph.sum(0)
        sampler = ExpansionSampler(n_in, n_out, samples, _layer_seed(seed, name, "expansion"))
        rows.append({"layer": name, "n_in": n_in, "n_out": n_out,
                     "kernel": m[0, 0].numel() if m.dim() > 2 else 1,
                     "edges": int(graph.sum()), "kept": int(m.sum()), "weights": m.numel(),
                     "density": float(m.float().mean()),
                     "left_degree": (int(left.min()), int(left.max())),
                     "right_degree": (int(right.min()), int(right.max())),
                     "expansion": sampler(graph), **spectral(graph)})
    return rows


def network_expansion(mask: Mapping[str, torch.Tensor], samples: int = 1000, seed: int = 0
                      ) -> dict[str, float]:
    """A network's expansion: means over its sparse tensors of the sampled expansion and of
    sigma_2 / Ramanujan bound, with the total density over all tensors of ``mask``.

    Tensors kept whole (the dense first or last layer) are left out: a complete graph says
    nothing about a generator. So are layers whose Ramanujan bound is 0 (average degrees at
    most 1 on both sides: a partial matching) from the spectral mean; NaN if none is left.
    """
    rows = layer_report({n: m for n, m in mask.items() if not m.all()}, samples, seed)
    kept = sum(int(m.sum()) for m in mask.values())
    total = sum(m.numel() for m in mask.values())
    ratios = [r["sigma2"] / r["ramanujan_bound"] for r in rows if r["ramanujan_bound"] > 0]
    return {"expansion": float(np.mean([r["expansion"] for r in rows])) if rows else math.nan,
            "sigma2_over_bound": float(np.mean(ratios)) if ratios else math.nan,
            "density": kept / total if total else 1.0}


# ---------------------------------------------------------------------------------------
# Masks for a model.


def _layer_seed(seed: int, name: str, purpose: str) -> np.random.SeedSequence:
    """A stream per (run seed, layer, purpose): no two layers share a graph."""
    return np.random.SeedSequence([seed, zlib.crc32(name.encode()), zlib.crc32(purpose.encode())])


def _is_vgg(model: nn.Module) -> bool:
    return isinstance(model, models.CifarVGG)


def sparse_layers(model: nn.Module, first_layer: bool | None = None,
                  last_layer: bool = False) -> tuple[dict[str, nn.Parameter], list[str]]:
    """(all prunable tensors, the names of those that get an expander graph).

    ``first_layer=None`` follows the official code: the first convolution is sparse in VGG
    (all 13 convolutions are expander layers) and dense in ResNets (the stem). The last
    layer (classifier) is dense unless ``last_layer=True``.
    """
    params = models.prunable(model)
    first = _is_vgg(model) if first_layer is None else first_layer
    sparse = models.prunable(model, first_layer=first, last_layer=last_layer)
    if not sparse:
        raise ValueError(f"{type(model).__name__} has no layer left to sparsify; "
                         "set first_layer=True or last_layer=True")
    return params, list(sparse)


def _shape(param: torch.Tensor) -> tuple[int, int]:
    return param.shape[1], param.shape[0]


def _edges_for_density(params: Mapping[str, torch.Tensor], sparse: list[str],
                       density: float) -> dict[str, int]:
    """Edges per sparse layer so that all prunable tensors together keep ``density``: one
    layer density for all sparse layers, each rounded to the nearest edge (at least one)."""
    total = sum(p.numel() for p in params.values())
    dense = sum(p.numel() for n, p in params.items() if n not in sparse)
    fraction = (density * total - dense) / (total - dense)
    if fraction <= 0:
        raise ValueError(f"density {density} is below what the dense layers alone keep "
                         f"({dense / total:.4f}); raise it or sparsify the first/last layer")
    return {n: max(1, round(fraction * math.prod(_shape(params[n])))) for n in sparse}


def _to_mask(graph: Biadjacency, param: torch.Tensor) -> torch.Tensor:
    m = torch.from_numpy(np.ascontiguousarray(graph.T))
    return m.reshape(*m.shape, *([1] * (param.dim() - 2))).expand(param.shape).clone()


@dataclass(frozen=True)
class ExpanderOptions:
    """How an expander mask is drawn (``expander_mask``); checked when built."""

    degree: int | None = param(None, "size every graph by the official degree convention "
                               "(see Generator.edges_at); None: by the run's density")
    best_of: int = param(1, "graphs drawn per layer, the one of largest sampled expansion "
                         "kept (the paper: 100 for rreg)")
    samples: int = param(1000, "subset pairs sampled to measure expansion (best_of > 1)")
    first_layer: bool | None = param(None, "sparsify the first layer; None: the official "
                                     "choice (sparse in VGG, dense stem in ResNets)")
    last_layer: bool = param(False, "sparsify the classifier (official: dense)")

    def __post_init__(self):
        check_types(self)
        require(self.degree is None or self.degree >= 1, self, "degree", "None or an integer >= 1")
        require(self.best_of >= 1, self, "best_of", "an integer >= 1")
        require(self.samples >= 1, self, "samples", "an integer >= 1")


def expander_mask(model: nn.Module, generator: str, density: float | None = None,
                  seed: int = 0, options: ExpanderOptions | None = None, **kwargs
                  ) -> dict[str, torch.Tensor]:
    """A data-free mask ``{param_name: bool tensor}`` over the tensors ``prunable(model)``
    names, from one ``generator`` graph per sparse layer (dense layers are all True).

    ``options`` (an ``ExpanderOptions``, or its fields as keywords) size it by ``degree``
    (the official convention, see ``Generator.edges_at``); without a degree, by ``density``:
    the kept fraction of all prunable weights, dense layers included, with the same number
    of edges per layer for every generator (when a degree is given, ``density`` is ignored;
    the mask's real density is ``masks.density(mask)["total"]``). ``best_of = N`` draws N
    graphs per layer and keeps the one of largest sampled expansion, measured with
    ``samples`` subset pairs. ``first_layer`` / ``last_layer``: see ``sparse_layers``.
    """
    gen = GENERATORS.get(generator)
    options = options_of(ExpanderOptions, options, kwargs, f"expander {generator!r}")
    degree, best_of, samples = options.degree, options.best_of, options.samples
    first_layer, last_layer = options.first_layer, options.last_layer
    if degree is None and density is None:
        raise ValueError("give a degree (int >= 1) or a density (0 < density <= 1)")
    if degree is None and (isinstance(density, bool) or not isinstance(density, (int, float))
                           or not 0 < density <= 1):
        raise ValueError(f"density must be a number in (0, 1], got {density!r}")
    check_integer("seed", seed, 0)

    params, sparse = sparse_layers(model, first_layer, last_layer)
    target = None if degree is not None else _edges_for_density(params, sparse, density)
    mask = {n: torch.ones_like(p, dtype=torch.bool) for n, p in params.items()}
    for name in sparse:
        n_in, n_out = _shape(params[name])
        rng = np.random.default_rng(_layer_seed(seed, name, "graph"))
        edges = target[name] if target else gen.edges_at(n_in, n_out, degree, rng)
        candidates = [gen.sample(n_in, n_out, edges, rng) for _ in range(best_of)]
        if best_of > 1:
            score = ExpansionSampler(n_in, n_out, samples, _layer_seed(seed, name, "select"))
            candidates = [max(candidates, key=score)]
        mask[name] = _to_mask(candidates[0], params[name])
    return mask


# ---------------------------------------------------------------------------------------
# The paper's parameter counts (PP column of its CIFAR-10 VGG-16 table).

# The official VGG-16-BN for CIFAR-10 (SamsungLabs/ExpandersPruning, vgg16bn.py): 13 sparse
# 3x3 convolutions without bias, each followed by BatchNorm, five max-pools, then a sparse
# 512->512 linear and a dense 512->10 linear, both with bias. Its dense baseline has conv
# biases. (n_in, n_out, kernel area) of the sparse layers:
PAPER_VGG16_SPARSE = [(3, 64, 9), (64, 64, 9), (64, 128, 9), (128, 128, 9), (128, 256, 9),
                      (256, 256, 9), (256, 256, 9), (256, 512, 9)] + [(512, 512, 9)] * 5 \
                     + [(512, 512, 1)]


def configuration_model_edges(n_in: int, n_out: int, degree: int,
                              rng: np.random.Generator) -> int:
    """Edges left by the official rreg: a configuration model (d on the larger side,
    balanced on the other) whose multi-edges are merged into one."""
    if n_in > n_out:
        left = np.full(n_in, degree)
        right = balanced_degrees(degree * n_in, n_out, rng)
    else:
        right = np.full(n_out, degree)
        left = balanced_degrees(degree * n_out, n_in, rng)
    stubs = rng.permutation(np.repeat(np.arange(n_out), right))
    return len(np.unique(np.repeat(np.arange(n_in), left) * n_out + stubs))


def official_parameter_count(generator: str, degree: int, seed: int = 0) -> dict[str, int]:
    """Trainable parameters of the official sparse VGG-16-BN (CIFAR-10) at ``degree``, as
    its counter reports them (all parameters, BatchNorm and biases included, minus masked
    weights), with the dense baseline's count: PP = kept / dense."""
    rng = np.random.default_rng(seed)
    convs = [n_out for _, n_out, k in PAPER_VGG16_SPARSE if k > 1]
    dense_extra = 2 * sum(convs) + 512 + 512 * 10 + 10  # BN, hidden and last linear biases, fc
    dense = sum(i * o * k for i, o, k in PAPER_VGG16_SPARSE) + sum(convs) + dense_extra
    kept = dense_extra
    for n_in, n_out, k in PAPER_VGG16_SPARSE:
        if generator == "rreg":
            edges = configuration_model_edges(n_in, n_out, degree, rng)
        else:
            edges = GENERATORS.get(generator).edges_at(n_in, n_out, degree, rng)
        kept += edges * k
    return {"kept": kept, "dense": dense}

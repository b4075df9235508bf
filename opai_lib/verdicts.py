"""The DOP paper beside our runs: its numbers, one rule for verdicts, its claims.

Yang et al. (2022) report ResNet-50 on ImageNet, one run per cell. Accuracies on another
scale cannot be compared, so a verdict compares *effects*: a method minus the same
criterion fed images, paired by seed (``experiments.effects``), against the sign of the
paper's effect. ``verdict`` is the rule, ``claims`` applies it to every cell where the
paper makes a claim, ``extension`` grows the seeds of a decisive cell while its verdict is
unresolved, and ``detectable_effect`` says what a number of seeds can resolve.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from opai_lib.config import Profile, check_integer
from opai_lib.experiments import (
    MOST_SEEDS,
    PAPER_ALL_ONES,
    PAPER_SPARSITIES,
    Run,
    effects,
    gap_growth,
    get_experiment,
)

# An effect under this many points is too small to claim either way.
MARGIN = 2.0


# The paper beside us (Yang et al. 2022; ResNet-50 on ImageNet, one seed, top-1 %).

PAPER_DENSE = 76.47
PAPER = {  # (criterion, material) -> {sparsity %: accuracy %}; Tables 1 and 2
    ("SNIP", "images"): {60: 74.00, 80: 70.94, 90: 61.06, 95: 36.43},
    ("SNIP", "DOP"): {60: 74.29, 80: 71.15, 90: 64.12, 95: 48.14},
    ("GraSP", "images"): {60: 73.87, 80: 71.14, 90: 67.07, 95: 61.76},
    ("GraSP", "DOP"): {60: 74.19, 80: 71.76, 90: 67.65, 95: 60.02},
    ("GraSP", "stitching σ=0.5"): {60: 74.14, 80: 71.57, 90: 67.59, 95: 62.70},
    ("GraSP", "stitching σ=0.75"): {60: 73.94, 80: 71.65, 90: 68.02, 95: 62.06},
}
# Table 2's lower half: numbers its sources report under their own settings.
PAPER_REPORTED = pd.DataFrame(
    [("GraSP (Wang et al.)", "images", 37500, 68.14, None),
     ("GraSP (de Jorge et al.)", "images", 614440, 65.4, 46.2),
     ("GraSP (Frankle et al.)", "images", 10000, 67.0, None),
     ("GraSP (Hayou et al.)", "images", None, 66.41, 62.1),
     ("FORCE (de Jorge et al.)", "images", 614440, 64.9, 59.0),
     ("Iterative SNIP (de Jorge et al.)", "images", 614440, 63.7, 54.7),
     ("SynFlow (Hayou et al.)", "all-ones", None, 66.2, 62.05),
     ("SBP-SR (Hayou et al.)", "images", None, 67.02, 62.66),
     ("ProsPr (Alizadeh et al.)", "images", None, 66.86, 59.62)],
    columns=["method (source)", "material", "samples", "90 %", "95 %"])


# Figure 4 gives curves, not numbers; its claims are signs, by (criterion, material,
# reference, sparsity %) (section 4.2): all-ones inputs do worse than images and than DOP
# (scored in each criterion's own BatchNorm mode, as the paper ran them); random segments
# do worse than DOP at higher sparsity (read: 90 and 95 %; at 60 and 80 % the paper calls
# them similar, so no sign); one patch per class does worse than DOP.
_PCTS = [round(100 * s) for s in PAPER_SPARSITIES]
PAPER_SIGN = {
    **{(c, ones, ref, s): -1
       for c, ones in PAPER_ALL_ONES for ref in ("images", "DOP") for s in _PCTS},
    **{(c, "random segments", "DOP", s): -1 for c in ("SNIP", "GraSP") for s in (90, 95)},
    **{(c, "one patch", "DOP", s): -1 for c in ("SNIP", "GraSP") for s in _PCTS}}


def beside_paper(summary_rows: pd.DataFrame) -> pd.DataFrame:
    """``summary`` rows with the paper's accuracy of the same cell (%, NaN where it has
    none; the dense row gets its dense ResNet-50)."""
    out = summary_rows.copy()
    out["paper %"] = [PAPER_DENSE if c == "dense" else
                      PAPER.get((c, m), {}).get(round(s), math.nan)
                      for c, m, s in zip(out["criterion"], out["material"], out["sparsity %"],
                                         strict=True)]
    return out


def paper_effect(criterion: str, material: str, reference: str, sparsity_pct: float) -> float:
    """The paper's accuracy of ``material`` minus ``reference`` (points); NaN if absent."""
    a = PAPER.get((criterion, material), {}).get(round(sparsity_pct))
    b = PAPER.get((criterion, reference), {}).get(round(sparsity_pct))
    return math.nan if a is None or b is None else a - b


def effect_sign(effect: float) -> int:
    """The sign a paper claims with ``effect`` (0 for NaN or exactly 0: no claim)."""
    return 0 if math.isnan(effect) or effect == 0 else int(math.copysign(1, effect))


def paper_sign(criterion: str, material: str, reference: str, sparsity_pct: float,
               effect: float) -> int:
    """The sign the paper claims for ``material`` minus ``reference`` in a cell: Figure
    4's (``PAPER_SIGN``), else its ``effect``'s."""
    return PAPER_SIGN.get((criterion, material, reference, round(sparsity_pct)),
                          effect_sign(effect))


def paper_inside(mean: float, half_width: float, paper: float) -> str | None:
    """Whether the paper's effect lies in our interval (``"yes"``/``"no"``; None where the
    paper gives no number or we have no interval): a verdict judges the sign, this the
    size."""
    if any(math.isnan(x) for x in (mean, half_width, paper)):
        return None
    return "yes" if abs(paper - mean) <= half_width else "no"


def with_paper(effect_rows: pd.DataFrame, reference: str) -> pd.DataFrame:
    """``effects`` rows with the paper's effect beside ours (``paper effect``), the sign it
    claims (``sign``: Figure 4's where it gives no number), a verdict for each
    (``verdict``) and whether the paper's number lies in our interval (``paper in
    interval``, ``paper_inside``)."""
    out = effect_rows.copy()
    out["paper effect"] = [paper_effect(c, m, reference, s) for c, m, s in
                           zip(out["criterion"], out["material"], out["sparsity %"],
                               strict=True)]
    signs = [paper_sign(c, m, reference, s, p) for c, m, s, p in
             zip(out["criterion"], out["material"], out["sparsity %"], out["paper effect"],
                 strict=True)]
    out["verdict"] = [verdict(m, h, s) for m, h, s in
                      zip(out["mean"], out["ci95"], signs, strict=True)]
    out["paper in interval"] = [paper_inside(m, h, p) for m, h, p in
                                zip(out["mean"], out["ci95"], out["paper effect"], strict=True)]
    out["sign"] = signs
    return out


VERDICTS = ("supported", "contradicted", f"smaller than {MARGIN:g} points", "differs (no claim)",
            "unresolved")


def verdict(mean: float, half_width: float, paper_sign: int, margin: float = MARGIN) -> str:
    """Our paired effect (mean and 95 % half-width) judged against the sign of the paper's
    (+1, -1; 0 where the paper claims none):

    - *supported*: the interval excludes 0 on the paper's side;
    - *contradicted*: it excludes 0 on the other side;
    - *smaller than* ``margin`` *points*: otherwise, when it lies inside (-margin, margin),
      so an effect as large as the margin is ruled out (with no claim to check, whether
      or not it includes 0);
    - *differs (no claim)*: no claim to check, and the interval excludes 0 and reaches
      past the margin;
    - *unresolved*: otherwise (too few seeds for the effect's size)."""
    if paper_sign not in (-1, 0, 1):
        raise ValueError(f"paper_sign must be -1, 0 or 1, got {paper_sign!r}")
    if math.isnan(half_width) or math.isnan(mean):
        return "unresolved"
    lo, hi = mean - half_width, mean + half_width
    if paper_sign and (lo > 0 or hi < 0):
        return "supported" if (lo > 0) == (paper_sign > 0) else "contradicted"
    if -margin < lo and hi < margin:
        return f"smaller than {margin:g} points"
    if lo > 0 or hi < 0:
        return "differs (no claim)"
    return "unresolved"


# ---------------------------------------------------------------------------------------
# The paper's claims, one verdict per cell.

CLAIMS = {
    "C1": ("ablations", "all-ones inputs do worse than images, more so as sparsity grows",
           [(c, m, s) for c, m in PAPER_ALL_ONES for s in (90, 95)]),
    "C2": ("dop_sparsity", "DOP does better than images for SNIP at every sparsity and for "
           "GraSP except at 95 %", [(c, "DOP", s) for c in ("SNIP", "GraSP")
                                    for s in (60, 80, 90, 95)]),
    "C3": ("super_stitching", "Super Stitching does better than images at 95 %, at "
           "sigma 0.75 with a third of the examples",
           [("GraSP", m, 95) for m in ("stitching σ=0.5", "stitching σ=0.75")]),
}


def claims(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per cell of ``CLAIMS``: our paired effect against images (mean, 95 %
    half-width, pairs), the paper's effect (or claimed sign), the verdict, the sign it
    judged (``sign``) and whether the cell is one of its experiment's decisive cells
    (``decisive``, grown by ``extension``); for C1 also the change of the all-ones
    difference from 90 to 95 % (``gap_growth``; the paper: all-ones falls further behind
    as sparsity grows, a negative change). ``tables``: each experiment's ``frame``; a cell
    with no pair is unresolved."""
    rows = []
    for claim, (name, _, cells) in CLAIMS.items():
        found = with_paper(effects(tables[name], "images"), "images")
        decisive = set(get_experiment(name).decisive_cells())
        for crit, material, sparsity in cells:
            hit = found[(found["criterion"] == crit) & (found["material"] == material)
                        & (found["sparsity %"] == sparsity)]
            paper = paper_effect(crit, material, "images", sparsity)
            row = hit.iloc[0] if len(hit) else None
            rows.append({"claim": claim, "criterion": crit, "material": material,
                         "sparsity %": sparsity,
                         "mean": row["mean"] if row is not None else math.nan,
                         "ci95": row["ci95"] if row is not None else math.nan,
                         "count": int(row["count"]) if row is not None else 0,
                         "paper": "worse" if math.isnan(paper) else f"{paper:+.2f}",
                         "verdict": row["verdict"] if row is not None else "unresolved",
                         "paper in interval": None if row is None else row["paper in interval"],
                         "sign": paper_sign(crit, material, "images", sparsity, paper),
                         "decisive": (crit, material, sparsity) in decisive})
        if claim == "C1":
            for _, g in gap_growth(tables[name], PAPER_ALL_ONES, "images", 90, 95).iterrows():
                rows.append({"claim": claim, "criterion": g["criterion"],
                             "material": f"{g['material']}: gap at 95 % minus at 90 %",
                             "sparsity %": math.nan, "mean": g["mean"], "ci95": g["ci95"],
                             "count": int(g["count"]), "paper": "falls (negative)",
                             "verdict": verdict(g["mean"], g["ci95"], -1),
                             "paper in interval": None, "sign": -1,
                             "decisive": all((g["criterion"], g["material"], pct) in decisive
                                             for pct in (90, 95))})
    return pd.DataFrame(rows)


def over_looks(judged: pd.DataFrame, planned: int, most: int = MOST_SEEDS,
               alpha: float = 0.05) -> pd.DataFrame:
    """A ``claims`` table re-judged for the looks its stopping rule allowed. ``extension``
    gives a decisive cell its next seed, up to ``most``, each time its verdict is
    unresolved after ``planned`` seeds: up to ``most - planned + 1`` looks, and stopping at
    the first that resolves makes a 95 % interval err more often than 5 %. Bonferroni
    over every allowed look (each at level ``alpha / looks``, whether or not the cell
    used them) bounds that error by ``alpha`` whatever the stopping; cells outside the
    rule keep one look. It assumes what ``extension`` and ``claims`` do: seeds added in a
    fixed order, and ``ci95`` a 95 % t-interval on ``count - 1`` degrees of freedom.
    Adds ``looks``, ``ci over looks`` (the half-width at that level) and ``verdict over
    looks``."""
    from scipy import stats

    check_integer("planned", planned, 1)
    check_integer("most", most, planned)
    out = judged.copy()
    decisive = out["decisive"].eq(True).to_numpy()
    n = out["count"].to_numpy(int)
    if (decisive & (n > most)).any():
        raise ValueError(f"a decisive cell has {n[decisive].max()} pairs, more than most="
                         f"{most}: pass the most the study allowed")
    out["looks"] = np.where(decisive, most - planned + 1, 1)
    df = np.where(n > 1, n - 1, np.nan)  # one pair: no interval either way
    out["ci over looks"] = out["ci95"] * (stats.t.ppf(1 - alpha / (2 * out["looks"]), df)
                                          / stats.t.ppf(0.975, df))
    out["verdict over looks"] = [verdict(m, h, s) for m, h, s in zip(
        out["mean"], out["ci over looks"], out["sign"], strict=True)]
    return out


PAPERS = {"C1": "DOP", "C2": "DOP", "C3": "DOP", "C4": "expanders"}


def tally(judged: pd.DataFrame, column: str = "verdict") -> pd.DataFrame:
    """How many cells of a ``claims`` table got each verdict of ``column`` (or ``verdict
    over looks``, ``over_looks``), per paper (``PAPERS``: DOP for C1-C3, expanders for C4):
    columns ``cells``, every one of ``VERDICTS``, and ``no pairs yet`` (cells with no
    trained pair, counted among the unresolved)."""
    unknown = sorted(set(judged["claim"]) - set(PAPERS))
    if unknown:
        raise ValueError(f"claims {unknown} belong to no paper; known: {sorted(PAPERS)}")
    paper = judged["claim"].map(PAPERS).rename("paper")
    out = pd.crosstab(paper, judged[column]).reindex(columns=list(VERDICTS), fill_value=0)
    out.insert(0, "cells", paper.value_counts())
    out["no pairs yet"] = (judged["count"] == 0).groupby(paper).sum()
    return out.reindex([p for p in dict.fromkeys(PAPERS.values()) if p in out.index])


def extension(name: str, profile: Profile, table: pd.DataFrame, model: str = "resnet20",
              most: int = MOST_SEEDS) -> list[Run]:
    """The stopping rule of the study: every decisive cell of experiment ``name`` whose
    verdict is still *unresolved* gets its next seed (the smallest below ``most`` without
    a pair), that seed's run of the cell and of its reference. Run them and call again to
    grow such cells one seed at a time. Stopping when a verdict resolves is optional
    stopping: with up to ``most`` looks, a 95 % interval errs more often than 5 %."""
    check_integer("most", most, 2)
    exp = get_experiment(name)
    judged = with_paper(effects(table, exp.reference), exp.reference)
    out: dict[str, Run] = {}
    for (method, _, sparsity), (crit, label, pct) in zip(exp.decisive, exp.decisive_cells(),
                                                         strict=True):
        row = judged[(judged["criterion"] == crit) & (judged["material"] == label)
                     & (judged["sparsity %"] == pct)]
        if len(row) and row["count"].iloc[0] > 0 and row["verdict"].iloc[0] != "unresolved":
            continue
        cell = table[(table["criterion"] == crit) & (table["sparsity %"] == pct)]
        paired = (set(cell.loc[cell["material"] == label, "seed"])
                  & set(cell.loc[cell["material"] == exp.reference, "seed"]))
        seed = next((s for s in range(most) if s not in paired), None)
        if seed is None:
            continue
        for run in exp.runs(profile, model, 1, seed + 1, [sparsity]):
            if (run.seed == seed and run.arm.method == method
                    and run.arm.label in (label, exp.reference)):
                out[run.config.key()] = run
    return list(out.values())


def paired_sd(effect_rows: pd.DataFrame) -> float:
    """Standard deviation of the per-seed differences, pooled over the rows of ``effects``
    that have two pairs or more (each row's variance weighted by its pairs - 1)."""
    num = den = 0.0
    for d in effect_rows["per_seed"]:
        if len(d) > 1:
            mean = sum(d) / len(d)
            num += sum((x - mean) ** 2 for x in d)
            den += len(d) - 1
    return math.sqrt(num / den) if den else math.nan


def detectable_effect(sd: float, n: int, power: float = 0.8, alpha: float = 0.05) -> float:
    """The smallest mean paired difference a two-sided paired t-test at level ``alpha``
    detects with probability ``power`` from ``n`` pairs whose differences have standard
    deviation ``sd`` (the usual t approximation: (t_{1-alpha/2} + t_{power}) sd / sqrt n)."""
    from scipy import stats

    check_integer("n", n, 2)
    return (stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(power, n - 1)) * sd / math.sqrt(n)


def report(rows: pd.DataFrame, label: str | tuple[str, ...] | None = "material",
           prefix: str = "") -> None:
    """What a chapter shows of an ``effects`` (or ``with_paper``) table: the intervals
    against the margin, the table itself, and its numbers glued for the prose
    (``plots.glue_effects`` keys; for a ``with_paper`` table also ``paper_numbers``, the
    rows where the paper gives a number, and ``paper_outside``, those whose interval
    excludes it, led by ``prefix``)."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    from opai_lib import plots
    from opai_lib.experiments import shown

    plots.effect_intervals(rows, label=label or "material", margin=MARGIN)
    plt.show()
    display(shown(rows))
    plots.glue_effects(rows, label=label, prefix=prefix)
    if "paper in interval" in rows:
        glue_paper_sizes(rows, prefix)


def glue_paper_sizes(rows: pd.DataFrame, prefix: str = "") -> None:
    """Glue, led by ``prefix``, how many rows of a ``with_paper`` (or ``claims``) table
    have a number from the paper (``paper_numbers``) and in how many our interval excludes
    it (``paper_outside``): where the sign may agree and the size does not."""
    from opai_lib import plots

    inside = rows["paper in interval"]
    plots.glue_number(plots.slug(prefix, "paper_numbers"), int(inside.notna().sum()))
    plots.glue_number(plots.slug(prefix, "paper_outside"), int((inside == "no").sum()))

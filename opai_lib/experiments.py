"""The study's experiments: arms x sparsities x seeds, and the tables of their runs.

An ``Arm`` is one row of a chapter's table: a method, the material it is fed and its
options, under a label ("DOP", "all-ones (BN train)"). ``EXPERIMENTS`` holds each chapter's
arms, sparsities and *decisive* cells (where the paper makes a claim); ``Experiment.runs``
crosses them into RunConfigs, decisive cells with more seeds. Seeds count from 0 in every
arm, so runs pair by seed: seed s draws the same initial network for every arm, and each
arm its own material. ``frame`` turns records into one row per run, beside its mask's
collapse diagnostics; ``summary`` gives a cell's mean and interval over seeds; ``effects``
pairs every arm with its method's reference arm by seed. The paper's numbers and the
verdicts on its claims are in ``verdicts``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import pandas as pd

from opai_lib import config, sanity, study
from opai_lib.config import Profile, check_integer, check_sparsities
from opai_lib.criteria import GraspOptions, RandomOptions, SnipOptions
from opai_lib.materials import Material
from opai_lib.methods import METHODS

CRITERION_NAMES = {"snip": "SNIP", "grasp": "GraSP", "synflow": "SynFlow",
                   "iter_snip": "Iterative SNIP", "force": "FORCE", "prospr": "ProsPr",
                   "random": "random", "magnitude": "magnitude", "dense": "dense"}
PAPER_SPARSITIES = (0.6, 0.8, 0.9, 0.95)
# Seeds of every cell and of the decisive cells, by profile (the smoke profile checks
# that the chapters run, in seconds, with one seed a cell; it measures nothing).
SEEDS = {"smoke": (1, 1)}
DEFAULT_SEEDS = (3, 6)
# The most seeds a decisive cell gets while its verdict is unresolved (``verdicts.extension``);
# the tables read every seed up to it.
MOST_SEEDS = 10



@dataclass(frozen=True)
class Arm:
    """A row of a table: ``method`` (``methods.METHODS``) fed ``material`` with ``options``
    (None: the method's defaults), labelled for tables. ``check``: a sanity check of the
    mask (``sanity.CHECKS``). ``network``: the seed of one initial network shared by all
    seeds, which then draw only the material (``RunConfig.draw``)."""

    label: str
    method: str
    material: Material | None = None
    options: object = None
    check: str | None = None
    network: int | None = None

    @property
    def criterion(self) -> str:
        return CRITERION_NAMES.get(self.method, self.method)

    @property
    def check_name(self) -> str:
        return sanity.NAMES[self.check]

    def config(self, profile: Profile, model: str, sparsity: float, seed: int,
               epochs: int | None = None) -> study.RunConfig:
        """The run of this arm at ``sparsity`` and ``seed`` on ``profile``'s scale, trained
        for ``epochs`` (None: the profile's recipe; else the same recipe, stretched)."""
        dense = METHODS.get(self.method).kind == "dense"
        recipe = profile.recipe if epochs is None else dataclasses.replace(profile.recipe,
                                                                           epochs=epochs)
        seeds = dict(seed=seed) if self.network is None else dict(seed=self.network, draw=seed)
        return study.config_from_profile(profile, material=self.material, model=model,
                                         method=self.method, options=self.options,
                                         sparsity=0.0 if dense else sparsity, recipe=recipe,
                                         sanity=self.check, **seeds)


@dataclass(frozen=True)
class Run:
    """One cell of an experiment at one seed, with the config that computes it."""

    arm: Arm
    sparsity: float
    seed: int
    decisive: bool
    config: study.RunConfig

    @property
    def epochs(self) -> int:
        return self.config.recipe.epochs


# The fields an experiment's smoke grid may replace: what makes it smaller, nothing that
# changes what its cells mean (the decisive cells, the reference, the seeds).
SMOKE_FIELDS = ("sparsities", "labels", "epoch_factors")


@dataclass(frozen=True)
class Experiment:
    """A chapter's grid: arms (built for a profile's scale), sparsities, the label of the
    reference arm each method is compared with, and the decisive (method, label, sparsity)
    cells that get more seeds (their reference cells with them; ``all_decisive``: every
    masked cell). ``epoch_factors`` multiply the profile's epochs (each arm is trained at
    each budget). ``seeds``: the seeds of every cell and of the decisive cells. ``chapter``:
    the notebook that reads the grid. ``labels``: only the arms of these labels (empty:
    all). ``smoke``: the ``SMOKE_FIELDS`` replaced on the smoke profile (``on``), which
    keeps the sparsities, arms and budgets the chapter's prose quotes, so that the chapter
    runs in seconds."""

    name: str
    arms: object  # Profile -> list[Arm]
    reference: str
    decisive: tuple = ()
    sparsities: tuple = PAPER_SPARSITIES
    epoch_factors: tuple = (1,)
    seeds: tuple = DEFAULT_SEEDS
    all_decisive: bool = False
    chapter: str = ""
    labels: tuple = ()
    smoke: Mapping = field(default_factory=dict, hash=False)

    def __post_init__(self):
        unknown = set(self.smoke) - set(SMOKE_FIELDS)
        if unknown:
            raise ValueError(f"Experiment {self.name!r}: smoke may replace {SMOKE_FIELDS}, "
                             f"got {sorted(unknown)}")
        for name in ("sparsities", "epoch_factors"):
            if not set(self.smoke.get(name, ())) <= set(getattr(self, name)):
                raise ValueError(f"Experiment {self.name!r}: smoke {name} "
                                 f"{self.smoke[name]} must be some of {getattr(self, name)}")
        object.__setattr__(self, "smoke", MappingProxyType(dict(self.smoke)))

    def on(self, profile: Profile) -> Experiment:
        """This grid as run on ``profile``: with the ``smoke`` fields on the smoke profile."""
        return dataclasses.replace(self, **self.smoke) if profile.name == "smoke" else self

    def decisive_cells(self) -> list[tuple[str, str, float]]:
        """The decisive cells as the tables name them: (criterion, material, sparsity %)."""
        return [(CRITERION_NAMES[m], label, round(100 * s, 2)) for m, label, s in self.decisive]

    def is_decisive(self, arm: Arm, sparsity: float) -> bool:
        cells = {(m, s) for m, _, s in self.decisive}
        return (self.all_decisive or (arm.method, arm.label, sparsity) in self.decisive
                or (arm.label == self.reference and (arm.method, sparsity) in cells))

    def runs(self, profile: Profile, model: str = "resnet20", seeds: int | None = None,
             decisive_seeds: int | None = None, sparsities=None) -> list[Run]:
        """Every run of the grid, decisive cells first, seed-major (so a sweep stopped
        early leaves every cell with about the same number of seeds). A dense arm runs
        once per seed, whatever the sparsities. Seeds: see ``seed_counts``."""
        exp = self.on(profile)
        seeds, decisive_seeds = seed_counts(profile.name, seeds, decisive_seeds, exp.seeds)
        check_integer("seeds", seeds, 1)
        check_integer("decisive_seeds", decisive_seeds, seeds)
        sparsities = check_sparsities("sparsities", exp.sparsities if sparsities is None
                                      else sparsities)
        arms = exp.arms(profile)
        missing = set(exp.labels) - {arm.label for arm in arms}
        if missing:
            raise ValueError(f"Experiment {self.name!r}: labels {sorted(missing)} name no arm")
        cells = []
        for arm in [a for a in arms if not exp.labels or a.label in exp.labels]:
            dense = METHODS.get(arm.method).kind == "dense"
            for s in (0.0,) if dense else sparsities:
                decisive = not dense and exp.is_decisive(arm, s)
                cells.append((arm, s, decisive, decisive_seeds if decisive else seeds))
        epochs = [None if f == 1 else f * profile.recipe.epochs for f in exp.epoch_factors]
        return [Run(arm, s, seed, decisive, arm.config(profile, model, s, seed, e))
                for first in (True, False) for seed in range(max(c[3] for c in cells))
                for e in epochs for arm, s, decisive, n in cells
                if decisive == first and seed < n]


def samples(material: Material | None, num_classes: int) -> int:
    """Examples a criterion is fed in all (0 for a data-free method)."""
    return 0 if material is None else material.per_class * material.batches * num_classes


def _scored(profile: Profile) -> tuple[int, int]:
    """Examples per class fed to SNIP and to GraSP: the paper feeds 10 and 30 on ImageNet
    (2 and 6 per concept of the top 5); a profile's ``score_per_class`` stands for 10."""
    n = profile.score_per_class
    return n, 3 * n


def _criterion_arms(method: str, n: int, options_class, labels: tuple[str, ...]) -> list[Arm]:
    """The material arms of one criterion, each fed ``n`` examples per class."""
    own = options_class().bn_mode
    made = {
        "images": Arm("images", method, Material("image", per_class=n)),
        "DOP": Arm("DOP", method, Material("dop", per_class=n)),
        "random segments": Arm("random segments", method,
                               Material("random_segment", per_class=n)),
        "one patch": Arm("one patch", method, Material("less_patch", per_class=1)),
        # Super Stitching: as many examples at sigma 0.5, a third as many at 0.75 (Table 2)
        "stitching σ=0.5": Arm("stitching σ=0.5", method,
                               Material("stitch", per_class=n, sigma=0.5)),
        "stitching σ=0.75": Arm("stitching σ=0.75", method,
                                Material("stitch", per_class=max(1, n // 3), sigma=0.75)),
        # controls from the literature (issue 11): what a criterion makes of broken data
        "random labels": Arm("random labels", method, Material("random_labels", per_class=n)),
        "shuffled pixels": Arm("shuffled pixels", method,
                               Material("shuffled_pixels", per_class=n)),
        "gaussian": Arm("gaussian", method, Material("gaussian", per_class=n)),
    }
    for mode in ("eval", "train"):  # constant inputs in both BatchNorm modes, let collapse
        options = options_class(bn_mode=mode, on_collapse="allow")  # happen and show it
        made[f"all-ones (BN {mode})"] = Arm(f"all-ones (BN {mode})", method,
                                            Material("all_ones", per_class=n), options)
    made["all-ones"] = made[f"all-ones (BN {own})"]
    return [made[label] for label in labels]


BASELINES = [Arm("dense", "dense"), Arm("random (uniform)", "random")]


def dop_arms(profile: Profile) -> list[Arm]:
    """Table 1 of the DOP paper: SNIP and GraSP, each fed images and DOP."""
    snip_n, grasp_n = _scored(profile)
    return (_criterion_arms("snip", snip_n, SnipOptions, ("images", "DOP"))
            + _criterion_arms("grasp", grasp_n, GraspOptions, ("images", "DOP")) + BASELINES)


ABLATION_LABELS = ("images", "DOP", "all-ones (BN eval)", "all-ones (BN train)",
                   "random segments", "one patch")


def ablation_arms(profile: Profile) -> list[Arm]:
    """Figure 4: what is left of the data question when the material loses its content."""
    snip_n, grasp_n = _scored(profile)
    return (_criterion_arms("snip", snip_n, SnipOptions, ABLATION_LABELS)
            + _criterion_arms("grasp", grasp_n, GraspOptions, ABLATION_LABELS))


def stitching_arms(profile: Profile) -> list[Arm]:
    """Table 2: GraSP fed images, DOP and Super Stitching (sigma 0.5 with as many examples,
    0.75 with a third), beside the state of the art and data-free baselines."""
    snip_n, n = _scored(profile)
    grasp = _criterion_arms("grasp", n, GraspOptions,
                            ("images", "DOP", "stitching σ=0.5", "stitching σ=0.75"))
    return grasp + [
        Arm("all-ones", "synflow"),
        Arm("images", "iter_snip", Material("image", per_class=snip_n)),
        Arm("images", "force", Material("image", per_class=snip_n)),
        Arm("images", "prospr", Material("image", per_class=snip_n)),
        Arm("random (uniform)", "random"),
        Arm("random (ERK)", "random", options=RandomOptions(scope="erk")),
        Arm("weights", "magnitude"),
    ]


def budget_arms(profile: Profile) -> list[Arm]:
    """Do the criteria pay off on this budget? SNIP and GraSP fed images against a random
    mask of the same sparsity, at longer schedules."""
    snip_n, grasp_n = _scored(profile)
    return (_criterion_arms("snip", snip_n, SnipOptions, ("images",))
            + _criterion_arms("grasp", grasp_n, GraspOptions, ("images",))
            + [Arm("random (uniform)", "random")])


def sanity_arms(profile: Profile) -> list[Arm]:
    """The sanity checks of Frankle et al. (2021) on the masks of SNIP fed images and DOP
    and of GraSP fed images, DOP and Super Stitching: each mask as chosen, shuffled within
    its layers, trained from reinitialised weights, and inverted (layers may collapse)."""
    snip_n, grasp_n = _scored(profile)
    chosen = (_criterion_arms("snip", snip_n, SnipOptions, ("images", "DOP"))
              + _criterion_arms("grasp", grasp_n, GraspOptions,
                                ("images", "DOP", "stitching σ=0.5")))
    return [dataclasses.replace(arm, check=check, options=_allow_collapse(arm) if
                                check == "invert" else arm.options)
            for arm in chosen for check in (None, *sanity.CHECKS)]


def _allow_collapse(arm: Arm):
    """``arm``'s options letting a layer collapse: an inverted ranking may empty layers, a
    result to show (``frame``'s empty layers), not an error."""
    options = arm.options or METHODS.get(arm.method).options()
    return dataclasses.replace(options, on_collapse="allow")


def draw_arms(profile: Profile) -> list[Arm]:
    """SNIP and GraSP fed images and DOP on one initial network (seed 0), each seed a new
    draw of the material: the part of the seed-to-seed spread that the draw alone makes."""
    return [dataclasses.replace(arm, network=0) for arm in dop_arms(profile)
            if arm.material is not None]


# The controls from the literature: corrupted labels or pixels (Su et al. 2020), noise.
CONTROL_LABELS = ("random labels", "shuffled pixels", "gaussian")
ANATOMY_LABELS = ("images", "DOP", "stitching σ=0.5", "stitching σ=0.75",
                  "all-ones (BN eval)", "all-ones (BN train)", "random segments", "one patch",
                  *CONTROL_LABELS)


def anatomy_arms(profile: Profile) -> list[Arm]:
    """Every material of the study and the controls, for SNIP and GraSP (mask anatomy)."""
    snip_n, grasp_n = _scored(profile)
    return (_criterion_arms("snip", snip_n, SnipOptions, ANATOMY_LABELS)
            + _criterion_arms("grasp", grasp_n, GraspOptions, ANATOMY_LABELS))


# The all-ones ablation in each criterion's own BatchNorm mode (its official code's): the
# decisive cells of the ablations.
OWN_ALL_ONES = {"SNIP": f"all-ones (BN {SnipOptions().bn_mode})",
                "GraSP": f"all-ones (BN {GraspOptions().bn_mode})"}
# The all-ones arms the paper's claim may mean. It ran both criteria through the official
# GraSP code, which scores in GraSP's mode and has no SNIP of its own, so the mode of the
# paper's SNIP is not stated: SNIP is judged in both modes, GraSP in its own.
PAPER_ALL_ONES = (("SNIP", OWN_ALL_ONES["SNIP"]), ("SNIP", OWN_ALL_ONES["GraSP"]),
                  ("GraSP", OWN_ALL_ONES["GraSP"]))


EXPERIMENTS = {
    # Table 1: DOP against images for SNIP and GraSP
    "dop_sparsity": Experiment(
        "dop_sparsity", dop_arms, "images",
        decisive=tuple((m, "DOP", s) for m in ("snip", "grasp") for s in (0.9, 0.95)),
        chapter="dop_sparsity", smoke={"sparsities": (0.9, 0.95)}),
    # Figure 4: all-ones inputs, random segments and one patch
    "ablations": Experiment(
        "ablations", ablation_arms, "images",
        decisive=tuple((m, OWN_ALL_ONES[CRITERION_NAMES[m]], s) for m in ("snip", "grasp")
                       for s in (0.9, 0.95)),
        chapter="ablations",
        smoke={"sparsities": (0.9, 0.95),  # images and all-ones: the growth of the gap
               "labels": ("images", "all-ones (BN eval)", "all-ones (BN train)")}),
    # Table 2: Super Stitching against the state of the art
    "super_stitching": Experiment(
        "super_stitching", stitching_arms, "images",
        decisive=(("grasp", "stitching σ=0.5", 0.95), ("grasp", "stitching σ=0.75", 0.95)),
        sparsities=(0.9, 0.95), chapter="super_stitching", smoke={"sparsities": (0.95,)}),
    # SNIP and GraSP fed images against random masks at 1, 2 and 4 times the epochs
    "budget": Experiment(
        "budget", budget_arms, "images", sparsities=(0.9,), epoch_factors=(1, 2, 4),
        seeds=(3, 3), chapter="dop_sparsity", smoke={"epoch_factors": (1, 2)}),
    # Frankle et al. (2021): shuffled, reinitialised and inverted masks, 4 seeds each
    "sanity_checks": Experiment(
        "sanity_checks", sanity_arms, "images", sparsities=(0.9, 0.95), seeds=(4, 4),
        all_decisive=True, chapter="mask_anatomy",
        smoke={"sparsities": (0.9,), "labels": ("DOP",)}),
    # the material's draw-to-draw spread on one initial network, 6 draws
    "material_draws": Experiment(
        "material_draws", draw_arms, "images", sparsities=(0.9,), seeds=(6, 6),
        all_decisive=True, chapter="dop_sparsity"),
}


def get_experiment(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {sorted(EXPERIMENTS)}")
    return EXPERIMENTS[name]


# ---------------------------------------------------------------------------------------
# From records to tables.

def _last_stage(stage_share: dict) -> float:
    """Share of the kept weights in the deepest convolutional stage (``stage<k>``, the
    largest k; see ``models.stages``)."""
    stages = [s for s in stage_share if s != "head"]
    return stage_share[max(stages, key=lambda s: int(s.removeprefix("stage")))] if stages \
        else math.nan


FRAME_COLUMNS = ["criterion", "material", "check", "sparsity %", "epochs", "seed", "accuracy %",
                 "samples", "rounds",
                 "empty layers", "sparsest layer %", "last stage %", "decisive", "key", "cpu",
                 "seconds"]


def frame(runs: list[Run], records: list[dict | None], num_classes: int) -> pd.DataFrame:
    """One row per run that has a record: its arm, sparsity and seed, accuracy (%), the
    examples its criterion was fed and the rounds it pruned in (each round scores them
    again; NaN for the dense network), and the collapse diagnostics of its mask (empty
    layers, the sparsest layer's density, the last stage's share of kept weights, in %)."""
    if len(runs) != len(records):
        raise ValueError(f"{len(runs)} runs but {len(records)} records")
    rows = []
    for run, r in zip(runs, records, strict=True):  # strict: lengths checked above
        if r is None:
            continue
        masked = bool(r.get("mask_shapes"))
        rows.append({
            "criterion": run.arm.criterion, "material": run.arm.label,
            "check": run.arm.check_name, "sparsity %": round(100 * run.sparsity, 2),
            "epochs": run.epochs, "seed": run.seed,
            "accuracy %": 100 * r["accuracy"],
            "samples": samples(run.arm.material, num_classes),
            "rounds": getattr(run.config.options, "rounds", math.nan),
            "empty layers": len(r["empty_layers"]) if masked else 0,
            "sparsest layer %": 100 * r["sparsest_layer"]["density"] if masked else 100.0,
            "last stage %": 100 * _last_stage(r["stage_share"]) if masked else math.nan,
            "decisive": run.decisive, "key": r["key"], "cpu": r["machine"]["cpu"],
            "seconds": r["seconds"]})
    return pd.DataFrame(rows, columns=FRAME_COLUMNS)


CELL = ["criterion", "material", "check", "sparsity %", "epochs"]


def ordered(rows: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``rows`` sorted by ``columns``: text in order of first appearance (the grid's
    order of arms), numbers ascending; ties keep their order."""
    def key(col):
        if col.dtype.kind in "biuf":
            return col
        first = {v: i for i, v in enumerate(dict.fromkeys(col))}
        return col.map(first)

    return rows.sort_values(columns, key=key, kind="stable").reset_index(drop=True)


def planned_cells(planned: list[Run]) -> pd.DataFrame:
    """The cells (``CELL``) of a grid's runs, once each, in grid order."""
    return pd.DataFrame([(r.arm.criterion, r.arm.label, r.arm.check_name,
                          round(100 * r.sparsity, 2), r.epochs) for r in planned],
                        columns=CELL).drop_duplicates(ignore_index=True)


def _fill(rows: pd.DataFrame, want: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``rows`` for every row of ``want`` (matched on ``keys``): a cell without runs gets
    count 0 and NaN (no per-seed values), so a table shows what is still missing."""
    out = want[keys].merge(rows, on=keys, how="left")
    out["count"] = pd.to_numeric(out["count"]).fillna(0).astype(int)
    if "per_seed" in out:
        out["per_seed"] = [p if isinstance(p, list) else [] for p in out["per_seed"]]
    return out


def summary(runs: pd.DataFrame, planned: list[Run] | None = None) -> pd.DataFrame:
    """Per cell: mean accuracy with its 95 % t-interval over seeds, the number of seeds,
    and the worst collapse diagnostics of its masks (most empty layers, sparsest layer,
    smallest last-stage share). With ``planned`` (the grid's runs), every planned cell has
    a row, with n = 0 where no run has finished."""
    acc = study.table(runs, CELL, "accuracy %")
    worst = runs.groupby(CELL, sort=False).agg(
        **{"samples": ("samples", "first"), "rounds": ("rounds", "first"),
           "empty layers (max)": ("empty layers", "max"),
           "sparsest layer % (min)": ("sparsest layer %", "min"),
           "last stage % (min)": ("last stage %", "min")}).reset_index()
    out = acc.merge(worst, on=CELL)
    if planned is not None:
        out = _fill(out, planned_cells(planned), CELL)
    return ordered(out, CELL)


def thinnest_last_stage(summary_rows: pd.DataFrame, reference: str = "images") -> dict:
    """The masked cell of a ``summary`` whose worst seed keeps the smallest share of its
    weights in the last stage: the most reshaped network the table trains (``arm``, in
    words), its share, its sparsest layer and the ``reference`` material's last-stage share
    at the same criterion and sparsity (NaN where that cell has none; every number NaN
    where no cell has a share yet)."""
    masked = summary_rows[(summary_rows["criterion"] != "dense")
                          & summary_rows["last stage % (min)"].notna()]
    if masked.empty:
        return {"arm": "no masked cell yet", "last stage %": math.nan,
                "sparsest layer %": math.nan, "reference last stage %": math.nan}
    row = masked.loc[masked["last stage % (min)"].idxmin()]
    ref = masked[(masked["criterion"] == row["criterion"]) & (masked["material"] == reference)
                 & (masked["sparsity %"] == row["sparsity %"])]["last stage % (min)"]
    return {"arm": f"{row['criterion']} fed {row['material']} at {row['sparsity %']:g} %",
            "last stage %": row["last stage % (min)"],
            "sparsest layer %": row["sparsest layer % (min)"],
            "reference last stage %": ref.iloc[0] if len(ref) else math.nan}


def _against(runs: pd.DataFrame, by: list[str], vary: str, reference: str, cells
             ) -> pd.DataFrame:
    """``study.paired_differences`` of accuracy: each ``vary`` setting minus ``reference``
    within groups of equal ``by``. With planned ``cells`` (``planned_cells``, carrying a
    ``vary`` column), every planned comparison has a row, n = 0 where no seed has both."""
    if cells is not None and not (runs[vary] == reference).any():
        out = pd.DataFrame(columns=[*by, vary, "mean", "ci95", "count", "per_seed"]).astype(
            cells[[*by, vary]].dtypes.to_dict())  # the keys' types, so _fill can merge
    else:
        out = study.paired_differences(runs, by, vary, reference, "accuracy %")
    if cells is None:
        return out
    refs = cells.loc[cells[vary] == reference, by]
    return _fill(out, cells[cells[vary] != reference].merge(refs, on=by), [*by, vary])


def effects(runs: pd.DataFrame, reference: str | tuple[str, str],
            planned: list[Run] | None = None) -> pd.DataFrame:
    """Accuracy points of each arm minus a reference arm at the same sparsity and epochs,
    paired by seed: mean, 95 % interval half-width, pairs, per-seed differences.
    ``reference`` is a material label (each criterion's arms against that criterion's) or
    a (criterion, material) pair (every arm against that one, e.g. ``("random", "random
    (uniform)")``). With ``planned`` (the grid's runs), every planned comparison has a row,
    with n = 0 where no seed has both runs yet."""
    cells = None if planned is None else planned_cells(planned)
    if isinstance(reference, str):
        out = _against(runs, ["criterion", "check", "sparsity %", "epochs"], "material",
                       reference, cells)
        return ordered(out, CELL)

    def arm(t):
        return t.assign(arm=t["criterion"] + ": " + t["material"])

    out = _against(arm(runs), ["check", "sparsity %", "epochs"], "arm", ": ".join(reference),
                   None if cells is None else arm(cells))
    return ordered(out[out["arm"] != "dense: dense"], ["arm", "sparsity %", "epochs"])


def check_effects(runs: pd.DataFrame, planned: list[Run] | None = None) -> pd.DataFrame:
    """Accuracy points of each sanity check minus the same cell's mask as chosen, paired by
    seed (as ``effects``): what the criterion's choice of positions, weights or ranking
    was worth."""
    cells = None if planned is None else planned_cells(planned)
    out = _against(runs, ["criterion", "material", "sparsity %", "epochs"], "check",
                   sanity.NAMES[None], cells)
    return ordered(out, CELL)


def inverted_cuts(runs: pd.DataFrame) -> pd.DataFrame:
    """Per criterion, its inverted sanity-check runs (``runs``: ``record_table`` of
    ``sanity_checks``) and how many of them left a layer empty: there the inverted
    difference measures a cut network rather than the ranking."""
    inverted = runs[runs["check"] == "inverted"]
    return inverted.assign(cut=inverted["empty layers"] > 0).groupby(
        "criterion", as_index=False, sort=False).agg(runs=("cut", "size"), cut=("cut", "sum"))


def collapsed_counts(runs: pd.DataFrame) -> tuple[int, int]:
    """How many trained runs of ``runs`` (``record_table`` of ``sanity_checks``) had an
    empty layer, and how many of those trained a mask that was not inverted (inverting
    is expected to cut layers; a shuffled or chosen mask that does was degenerate as
    chosen)."""
    collapsed = runs["empty layers"] > 0
    return int(collapsed.sum()), int((collapsed & (runs["check"] != "inverted")).sum())


def draw_spread(draws: pd.DataFrame, seeds: pd.DataFrame, planned: list[Run] | None = None
                ) -> pd.DataFrame:
    """How much of the seed-to-seed spread the material's draw makes alone: per cell of
    ``draws`` (runs of ``material_draws``: one network, each seed a new draw), the standard
    deviation of accuracy over draws beside that over seeds in ``seeds`` (a chapter's runs
    of the same cells: each seed a new network *and* draw), with their counts and the
    ratio of the variances (``variance ratio``: over draws / over seeds). With ``planned``
    (the draws' grid), every planned cell has a row, with 0 draws where none has run."""
    def spread(runs, sd, n):
        return study.table(runs, CELL, "accuracy %")[[*CELL, "std", "count"]].rename(
            columns={"std": sd, "count": n})

    out = spread(draws, "sd over draws", "draws")
    if planned is not None:
        out = planned_cells(planned).merge(out, on=CELL, how="left")
    out = out.merge(spread(seeds, "sd over seeds", "seeds"), on=CELL, how="left")
    for n in ("draws", "seeds"):
        out[n] = pd.to_numeric(out[n]).fillna(0).astype(int)
    out["variance ratio"] = out["sd over draws"] ** 2 / out["sd over seeds"] ** 2
    return ordered(out, CELL)


def gap_growth(runs: pd.DataFrame, materials: Mapping[str, str] | Sequence[tuple[str, str]],
               reference: str, low: float, high: float) -> pd.DataFrame:
    """How does a material's difference from ``reference`` change from sparsity ``low`` to
    ``high`` (in %)? For each (criterion, material) of ``materials`` (a mapping or pairs),
    per seed: (material - reference at ``high``) - (the same at ``low``), over the seeds
    with all four runs; mean, 95 % half-width, n and the per-seed values (n = 0 and NaN
    where no seed has all four yet). Negative: the material falls further behind, or its
    lead shrinks, as sparsity grows."""
    out = []
    pairs = materials.items() if isinstance(materials, Mapping) else materials
    for crit, material in pairs:
        cells = runs[(runs["criterion"] == crit) & runs["material"].isin([material, reference])
                     & runs["sparsity %"].isin([low, high])]
        wide = cells.pivot_table(index="seed", columns=["material", "sparsity %"],
                                 values="accuracy %")
        need = [(m, s) for m in (material, reference) for s in (low, high)]
        w = wide.reindex(columns=pd.MultiIndex.from_tuples(need)).dropna()
        d = (w[(material, high)] - w[(reference, high)]) - (w[(material, low)]
                                                             - w[(reference, low)])
        out.append({"criterion": crit, "material": material, "mean": d.mean(),
                    "ci95": study.t_half_width(d.std(), len(d)) if len(d) else math.nan,
                    "count": len(d), "per_seed": d.tolist()})
    return pd.DataFrame(out, columns=["criterion", "material", "mean", "ci95", "count",
                                      "per_seed"])


def seed_counts(profile: str, seeds: int | None, decisive_seeds: int | None,
                default: tuple[int, int] = DEFAULT_SEEDS) -> tuple[int, int]:
    """Seeds of every cell and of the decisive cells: as given, or None for the profile's
    (``SEEDS``, else ``default``, an experiment's ``seeds``; decisive cells never fewer
    than ``seeds``)."""
    default = SEEDS.get(profile, default)
    seeds = default[0] if seeds is None else seeds
    if decisive_seeds is None:  # never fewer than every cell has
        decisive_seeds = max(default[1], seeds) if isinstance(seeds, int) else default[1]
    return seeds, decisive_seeds


def record_table(name: str, profile: Profile, model: str = "resnet20", seeds: int | None = None,
                 decisive_seeds: int | None = None, sparsities=None, compute: bool = False,
                 workers: int | None = None, store=None) -> tuple[list[Run], pd.DataFrame]:
    """Experiment ``name``'s planned runs and the ``frame`` of the runs in ``store`` (None:
    the profile's): with ``compute``, the missing planned runs are computed first
    (``workers`` processes; None: the profile's). Every cell is read up to ``MOST_SEEDS``
    seeds: seeds added by ``verdicts.extension`` count, here and in every other experiment
    that holds the same run, so a comparison reads the same numbers in every chapter."""
    exp = get_experiment(name)
    seeds, decisive_seeds = seed_counts(profile.name, seeds, decisive_seeds, exp.seeds)
    planned = exp.runs(profile, model, seeds, decisive_seeds, sparsities)
    store = study.store_dir(profile.name) if store is None else store
    if compute:
        study.sweep([r.config for r in planned], store, workers=config.workers(profile, workers))
    most = max(seeds, decisive_seeds, MOST_SEEDS)
    readable = exp.runs(profile, model, most, most, sparsities)
    records = study.finished([r.config for r in readable], store)
    return planned, frame(readable, records, study.profile_data(profile)[0].num_classes)


def machines(*tables: pd.DataFrame) -> str:
    """The CPU models that computed the runs of ``tables`` (their ``cpu`` column), named
    for the prose and the printed summaries."""
    cpus = sorted({c for t in tables if len(t) for c in t["cpu"]})
    return ", ".join(cpus) or "no machine yet"


def glue_setting(profile: Profile, table: pd.DataFrame, prefix: str = "") -> None:
    """Glue what the runs of ``table`` were trained on, for the prose, each key led by
    ``prefix``: the profile's epochs, its training images per class and the CPUs that
    computed them (``machines``)."""
    from opai_lib import plots

    train_set = study.profile_data(profile)[0]
    plots.glue_number(plots.slug(prefix, "epochs"), profile.recipe.epochs)
    plots.glue_number(plots.slug(prefix, "train_per_class"),
                      len(train_set) // train_set.num_classes)
    plots.glue_text(plots.slug(prefix, "cpus"), machines(table))


def chapter(name: str, profile: str, model: str, seeds: int | None,
            decisive_seeds: int | None, sparsities, compute: bool, workers: int | None
            ) -> tuple[Profile, list[Run], pd.DataFrame]:
    """What the first cell of an experiment's notebook does: check every parameter (the
    runs are built, so a bad one stops here, before any compute), then collect the runs'
    table (``collect``), print what was measured on what, and glue the run count, seeds,
    epochs and CPU-hours for the prose. Returns the profile, the planned runs and the
    table of those that have a record."""
    import time

    from opai_lib import plots

    config.check_parameter(isinstance(compute, bool), "compute", compute, "True or False")
    P = config.get_profile(profile)
    workers = config.workers(P, workers)
    seeds, decisive_seeds = seed_counts(P.name, seeds, decisive_seeds,
                                        get_experiment(name).seeds)
    t0 = time.perf_counter()
    runs, table = record_table(name, P, model, seeds, decisive_seeds, sparsities, compute,
                               workers)
    train_set, _ = study.profile_data(P)
    hours = table["seconds"].sum() / 3600 if len(table) else 0.0
    done = int(table["key"].isin({r.config.key() for r in runs}).sum()) if len(table) else 0
    print(f"profile {P.name}: {train_set.name} ({len(train_set)} training images), {model}, "
          f"{P.recipe.epochs} epochs in {P.recipe.precision}\n"
          f"{done} of the {len(runs)} planned runs in the store and {len(table) - done} more "
          f"seeds of its cells, read or computed in {time.perf_counter() - t0:.0f} s\n"
          f"they took {hours:.1f} CPU-hours, on\n  {machines(table)}")
    plots.glue_number("seeds", seeds)
    plots.glue_number("decisive_seeds", decisive_seeds)
    plots.glue_number("runs", done)
    plots.glue_number("extra_runs", len(table) - done)
    plots.glue_number("planned_runs", len(runs))
    glue_setting(P, table)
    plots.glue_number("cpu_hours", hours)
    return P, runs, table


SHOWN = {"criterion": "criterion", "material": "material", "sparsity %": "sparsity %",
         "samples": "samples", "rounds": "rounds", "count": "n", "mean": "accuracy %",
         "ci95": "± 95 %",
         "paper %": "paper %", "empty layers (max)": "empty layers (worst)",
         "sparsest layer % (min)": "sparsest layer % (worst)",
         "last stage % (min)": "last stage % (worst)",
         "paper effect": "paper", "verdict": "verdict", "arm": "arm", "claim": "claim",
         "paper": "paper", "ci over looks": "± over looks"}
HIDDEN = ("per_seed", "std", "decisive", "key", "cpu", "seconds", "seed", "sign")


def shown(rows: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """A table as the book prints it: short column names (``SHOWN``), the per-seed lists,
    standard deviations and bookkeeping columns left out (and epochs, sanity checks and
    pruning rounds where they do not vary), numbers rounded, no index. The ``mean`` of an
    effect table (per-seed differences) or a verdict table becomes ``difference``; where
    the paper claims a sign without a number (``sign``), its column says *worse* or
    *better*."""
    names = dict(SHOWN)
    if "per_seed" in rows or "verdict" in rows:
        names["mean"] = "difference"
    if "sign" in rows and "paper effect" in rows:  # Figure 4 claims a sign, not a number
        rows = rows.assign(**{"paper effect": [
            ("worse" if s < 0 else "better") if s and math.isnan(p) else p
            for p, s in zip(rows["paper effect"], rows["sign"], strict=True)]})
    hidden = set(HIDDEN) | {c for c in ("epochs", "check", "rounds")
                            if c in rows and rows[c].nunique() <= 1}
    table = rows[[c for c in rows.columns if c not in hidden]].rename(columns=names)
    table = table.round(digits)
    plain = [c for c in ("sparsity %", "epochs", "samples", "rounds", "n", "empty layers",
                         "empty layers (worst)", "draws", "seeds")
             if c in table]
    return table.style.hide(axis="index").format(precision=digits, na_rep="–").format(
        "{:g}", subset=plain, na_rep="–")

"""Command line: ``python -m opai_lib run|sweep|show|fold|verify|compare|params``.

``run`` computes one run, given by its options at a profile's scale, into a store (or reads
it back when it is there) and prints it; ``show`` prints a stored record, or one line per
record of a store.
``sweep EXPERIMENT`` computes the runs of one chapter's grid (``opai_lib.experiments``) into
the profile's store, decisive cells first; ``--shard I/N`` takes every N-th run from the
I-th, so N machines sharing the store (or not) split a chapter. ``fold`` folds papermill's
injected-parameters cell of executed notebooks (``opai_lib.pages``). ``verify`` and
``compare`` check the published record (``opai_lib.record``). ``params`` prints every
notebook parameter as a Markdown table (``opai_lib.parameters``), or writes it into
``book/reproduce.md``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from opai_lib import config, expander_study, experiments, pages, parameters, record, study, verdicts


def _print(rows: list[dict]) -> None:
    """A line per row of ``record.verify``, ``verify_masks`` or ``compare``: a run's
    accuracies, an experiment's largest difference, the mask where there is one."""
    yes = {True: "same", False: "other"}
    for r in rows:
        result = (f"published {r['published']:.4f}  recomputed {r['recomputed']:.4f}  "
                  if r["published"] is not None else
                  f"largest difference {r['difference']:.4g}  "
                  if r["difference"] is not None else "")
        mask = "" if r["same_mask"] is None else \
            f"mask {'same' if r['same_mask'] else 'DIFFERENT'}  "
        print(f"{r['key']}  {r['run']:<42} {result}{mask}cpu {yes[r['same_cpu']]}  "
              f"threads {yes[r['same_threads']]}  {r['verdict']}")


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard must be I/N (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise argparse.ArgumentTypeError(f"--shard I/N needs N >= 1 and 0 <= I < N, got {text!r}")
    return i, n


def _experiment_runs(args, profile, store) -> list[tuple[study.RunConfig, str]]:
    """The runs of an ``experiments.EXPERIMENTS`` grid as the options select them, each
    with the line ``--list`` prints."""
    exp = experiments.get_experiment(args.experiment)
    seeds, decisive = experiments.seed_counts(profile.name, args.seeds, args.decisive_seeds,
                                              exp.seeds)
    runs = exp.runs(profile, args.model, seeds, decisive)
    if args.extend:  # one more seed for each decisive cell still unresolved
        table = experiments.record_table(args.experiment, profile, args.model, seeds,
                                         decisive, store=store)[1]
        runs = verdicts.extension(args.experiment, profile, table, args.model, args.most)
    runs = [r for r in runs if r.decisive or not args.decisive_only]
    return [(r.config, f"{r.arm.criterion} {r.arm.label}"
             f"{'' if r.arm.check is None else f' ({r.arm.check_name})'} s={r.sparsity:g} "
             f"seed {r.seed}{'  (decisive)' if r.decisive else ''}") for r in runs]


def _expander_runs(args, profile, store) -> list[tuple[study.RunConfig, str]]:
    """The expander chapter's runs (``expander_study.configs``; --seeds counts them)."""
    return [(c, f"{c.model} width {c.width:g} {c.method} density {1 - c.sparsity:.4f} "
             f"seed {c.seed}") for c in expander_study.configs(profile.name, args.seeds)]


# Grids a sweep can run (the experiments, and the expander chapter's grid, built in
# expander_study), and the notebook that reads each.
GRIDS = {**dict.fromkeys(experiments.EXPERIMENTS, _experiment_runs),
         "expanders": _expander_runs}
CHAPTERS = {**{name: e.chapter for name, e in experiments.EXPERIMENTS.items()},
            "expanders": "expander_masks"}


def planned(grid: str, profile: str) -> list[study.RunConfig]:
    """Every run that ``sweep GRID --profile PROFILE`` plans, stored or not."""
    args = _parser().parse_args(["sweep", grid, "--profile", profile])
    P = config.get_profile(profile)
    return [c for c, _ in GRIDS[grid](args, P, study.store_dir(P.name))]


def sweep(args, parser) -> int:
    """Run (or, with --list, list) the missing runs of one grid."""
    profile = config.get_profile(args.profile)
    store = args.store or study.store_dir(profile.name)
    runs = GRIDS[args.experiment](args, profile, store)[args.shard[0]::args.shard[1]]
    missing = [(c, line) for (c, line), rec in zip(
        runs, study.finished([c for c, _ in runs], store), strict=True) if rec is None]
    print(f"{args.experiment} on profile {profile.name}: {len(runs)} runs, {len(missing)} "
          f"missing, store {store}", flush=True)
    for c, line in missing if args.list else []:
        print(f"  {c.key()}  {line}")
    if not args.list and missing:
        study.sweep([c for c, _ in missing], store, workers=args.workers)
        print("done", flush=True)
    return 0


def _line(record: dict) -> str:
    """One record in one line: a run's key, what it ran and its accuracy; another record's
    (an experiment of ``opai_lib.record``) key and fields."""
    c = record.get("config", {})
    if "method" not in c:
        return f"{record['key']}  {', '.join(sorted(set(record) - {'key'}))}"
    material = (c.get("material") or {}).get("name", "-")
    return (f"{record['key']}  {c['model']:<18} {c['method']:<14} {material:<16} "
            f"s={c['sparsity']:<6g} seed {c['seed']:<3} accuracy {record['accuracy']:.4f}  "
            f"density {record['density']:.4f}  {record['seconds']:.0f} s")


def run(args, parser) -> int:
    """Compute one run into the store (or read it back) and print its line; bad options
    stop before any compute."""
    profile = config.get_profile(args.profile)
    fields = dict(model=args.model, method=args.method, sparsity=args.sparsity, seed=args.seed)
    fields.update({k: getattr(args, k) for k in ("dataset", "device")
                   if getattr(args, k) is not None})
    try:
        cfg = study.config_from_profile(profile, args.material, **fields)
    except ValueError as err:
        parser.error(str(err))
    store = args.store or study.store_dir(profile.name)
    print(_line(study.run(cfg, store)))
    return 0


def show(args, parser) -> int:
    """A stored record as JSON (``--key``), else one line per record of the store."""
    store = study.open_store(args.store)
    if args.key is not None:
        record = store.read(args.key)
        if record is None:
            print(f"no record {args.key!r} in {args.store}", file=sys.stderr)
            return 1
        print(json.dumps(record, indent=1, sort_keys=True))
        return 0
    records = [r for r in (store.read(k) for k in store.finished()) if r is not None]
    print(f"{args.store}: {len(records)} records")
    for r in sorted(records, key=_order):
        print(f"  {_line(r)}")
    return 0


def _order(record: dict) -> tuple:
    """Runs by method, sparsity and seed; other records after them."""
    c = record.get("config", {})
    return ("method" not in c, c.get("method", ""), c.get("sparsity", 0), c.get("seed", 0),
            record["key"])


def params(args, parser) -> int:
    """Print every notebook parameter as a Markdown table, or write it into a file's
    generated block."""
    table = parameters.table()
    if args.write is None:
        print(table, end="")
    else:
        path = Path(args.write)
        path.write_text(parameters.with_table(path.read_text(), table))
    return 0


def fold(args, parser) -> int:
    for path in args.notebooks:
        pages.fold_injected_parameters(path)
    return 0


def verify(args, parser) -> int:
    """Re-run records of a published store (with --masks, only choose their masks again);
    exit status 1 if one differs on its machine."""
    if args.n is not None and args.n < 1:
        parser.error(f"--n must be at least 1, got {args.n}")
    rows = record.verify_masks(args.store, args.n, args.seed) if args.masks else \
        record.verify(args.store, 3 if args.n is None else args.n, args.seed)
    _print(rows)
    return 1 if record.failed(rows) else 0


def compare(args, parser) -> int:
    """A recomputed store against the published one; exit status as ``verify``."""
    rows = record.compare(args.fresh, args.published)
    if not rows:
        print(f"no record of {args.fresh} is in {args.published}")
    _print(rows)
    return 1 if record.failed(rows) else 0


COMMANDS = {"run": run, "sweep": sweep, "show": show, "fold": fold, "verify": verify,
            "compare": compare, "params": params}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m opai_lib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("sweep", help="compute the runs of one experiment's grid")
    w.add_argument("experiment", choices=sorted(GRIDS))
    w.add_argument("--profile", default="cpu", choices=sorted(config.PROFILES))
    w.add_argument("--model", default="resnet20")
    w.add_argument("--seeds", type=int, default=None,
                   help="seeds of every cell (default: the experiment's, 3 for the chapters; "
                   "smoke profile 1)")
    w.add_argument("--decisive-seeds", type=int, default=None,
                   help="seeds of the decisive cells (default: the experiment's, 6 for the "
                   "chapters; smoke profile 1)")
    w.add_argument("--decisive-only", action="store_true", help="only the decisive cells")
    w.add_argument("--extend", action="store_true",
                   help="one more seed for each decisive cell whose verdict is unresolved")
    w.add_argument("--most", type=int, default=experiments.MOST_SEEDS,
                   help="with --extend: the most seeds a decisive cell gets (default "
                        f"{experiments.MOST_SEEDS})")
    w.add_argument("--shard", type=_shard, default=(0, 1), help="I/N: every N-th run from I")
    w.add_argument("--workers", type=int, default=2, help="single-threaded processes")
    w.add_argument("--store", default=None, help="store folder (default: the profile's)")
    w.add_argument("--list", action="store_true", help="list the missing runs, compute none")
    r = sub.add_parser("run", help="compute one run (or read it back) and print it")
    r.add_argument("--profile", default="cpu", choices=sorted(config.PROFILES))
    r.add_argument("--dataset", default=None, help="the profile's dataset unless given")
    r.add_argument("--device", default=None, choices=("cpu", "cuda"),
                   help="the profile's device unless given")
    r.add_argument("--model", default="resnet20")
    r.add_argument("--method", default="dense", help="a name of methods.METHODS")
    r.add_argument("--sparsity", type=float, default=0.0)
    r.add_argument("--material", default=None,
                   help="what a data-dependent criterion is fed (default: image)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--store", default=None, help="store folder (default: the profile's)")
    s = sub.add_parser("show", help="a stored record, or a line per record of a store")
    s.add_argument("store", help="store folder")
    s.add_argument("--key", default=None, help="print this record in full (JSON)")
    f = sub.add_parser("fold", help="fold papermill's injected-parameters cell of notebooks")
    f.add_argument("notebooks", nargs="+")
    v = sub.add_parser("verify", help="re-run N random records of the published record")
    v.add_argument("--n", type=int, default=None,
                   help="how many records (default 3; with --masks, every run with a mask)")
    v.add_argument("--masks", action="store_true",
                   help="choose the runs' masks again, without training, and compare hashes")
    v.add_argument("--seed", type=int, default=None, help="seed of the random choice")
    v.add_argument("--store", default=str(study.RECORD_DIR / "cpu"),
                   help="the record's folder: cpu (runs), cpu-lessons or cpu-anatomy")
    c = sub.add_parser("compare", help="a recomputed store against the published record")
    c.add_argument("fresh", help="folder of the recomputed records")
    c.add_argument("--published", default=str(study.RECORD_DIR / "cpu"))
    p = sub.add_parser("params", help="every notebook parameter as a Markdown table")
    p.add_argument("--write", metavar="FILE", default=None,
                   help="replace the generated table in FILE (book/reproduce.md), print nothing")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    return COMMANDS[args.command](args, parser)


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `sweep --list | head` ends quietly
    sys.exit(main())

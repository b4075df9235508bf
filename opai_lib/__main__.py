"""Command line: ``python -m opai_lib verify|compare`` (see ``opai_lib.record``)."""

from __future__ import annotations

import argparse
import sys

from opai_lib import record, study


def _print(rows: list[dict]) -> None:
    for r in rows:
        yes = {True: "same", False: "other"}
        print(f"{r['key']}  {r['run']:<42} published {r['published']:.4f}  recomputed "
              f"{r['recomputed']:.4f}  mask {'same' if r['same_mask'] else 'DIFFERENT'}  "
              f"cpu {yes[r['same_cpu']]}  threads {yes[r['same_threads']]}  {r['verdict']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m opai_lib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="re-run N random records of the published record")
    v.add_argument("--n", type=int, default=3, help="how many records (default 3)")
    v.add_argument("--seed", type=int, default=None, help="seed of the random choice")
    v.add_argument("--store", default=str(study.RECORD_DIR / "cpu"), help="the record's folder")
    c = sub.add_parser("compare", help="a recomputed store against the published record")
    c.add_argument("fresh", help="folder of the recomputed records")
    c.add_argument("--published", default=str(study.RECORD_DIR / "cpu"))
    args = parser.parse_args(argv)
    if args.command == "verify":
        if args.n < 1:
            parser.error(f"--n must be at least 1, got {args.n}")
        rows = record.verify(args.store, args.n, args.seed)
    else:
        rows = record.compare(args.fresh, args.published)
        if not rows:
            print(f"no record of {args.fresh} is in {args.published}")
    _print(rows)
    return 1 if record.failed(rows) else 0


if __name__ == "__main__":
    sys.exit(main())

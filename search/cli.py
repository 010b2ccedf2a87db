"""``python -m experiments search --config experiments/search/<spec>.yaml [options]``

Runs (or resumes) the study the spec describes: the same command again keeps every finished trial
and retries the interrupted ones; several such commands (on several machines, with a PostgreSQL
``--storage``) share one study and its trial budget.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

__all__ = ["main"]


SPECS_DIR = Path(__file__).resolve().parent.parent / "experiments" / "search"


def shipped_specs() -> list[Path]:
    """The search specs that ship with convlab (``experiments/search/*.yaml``)."""
    return sorted(SPECS_DIR.glob("*.yaml"))


def _epilog() -> str:
    lines = ["search specs that ship (python -m experiments search --config <path>):"]
    for path in shipped_specs():
        first = next((line.lstrip("# ").strip() for line in path.read_text().splitlines() if line.startswith("#")), "")
        lines.append(f"  {path.relative_to(SPECS_DIR.parent.parent)}  {first}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments search", description=__doc__.split("\n\n")[0],
                                epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="search spec (experiments/search/<name>.yaml)")
    p.add_argument("--study-name", help="study name (default: the spec's study, else the spec file's stem)")
    p.add_argument("--storage", help="journal file or SQLAlchemy URL (default: runs/<study>/journal.log)")
    p.add_argument("--n-trials", type=int, help="trial budget of the whole study (default: the spec's)")
    p.add_argument("--timeout", type=float, help="seconds after which this driver starts no new trial")
    p.add_argument("--pruner", help="replace the spec's pruner by name, with its defaults (none: the same study without "
                   "pruning, to measure what pruning buys); the study is then <study>-pruner-<name> unless --study-name says")
    p.add_argument("--slots", type=int, help="trials run at once by this driver, each on its own devices")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra fixed override (YAML value), e.g. --set trainer.precision=bf16-mixed")
    p.add_argument("--retrain-top-k", type=int, help="retrain the k best trials and the default over --retrain-seeds at the base "
                   "config's budget, and judge the winner against the default (0: no retraining; default: the spec's retrain.top_k)")
    p.add_argument("--retrain-trials", help="comma-separated trial numbers to retrain beside the default instead (a Pareto front's), "
                   "e.g. 3,7")
    p.add_argument("--retrain-seeds", type=int, nargs="+", help="seeds of the retraining, at least 2 (default: the spec's or 1 2 3)")
    p.add_argument("--report-only", action="store_true", help="write the best config and the report of the study as it is "
                   "(the retrained runs that finished, none trained)")
    p.add_argument("--check", action="store_true", help="check the spec against the config and exit")
    p.add_argument("--no-report", action="store_true", help="do not write the report when the budget is done")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from search.spec import SpecError, load_spec

    try:
        extra = {}
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep:
                raise SpecError(f"--set {item}: expected KEY=VALUE")
            extra[key.strip()] = yaml.safe_load(value)
        spec = load_spec(args.config, extra, study=args.study_name, pruner=args.pruner)
        if args.n_trials is not None and args.n_trials < 1:
            raise SpecError("--n-trials: must be >= 1")
        if args.slots is not None and args.slots < 1:
            raise SpecError("--slots: must be >= 1")
        retrain_trials = None
        if args.retrain_trials:
            try:
                retrain_trials = [int(n) for n in args.retrain_trials.split(",") if n.strip()]
            except ValueError:
                raise SpecError(f"--retrain-trials {args.retrain_trials}: expected trial numbers separated by commas, e.g. 3,7") from None
        from search.driver import SearchDriver

        driver = SearchDriver(
            spec, storage=args.storage, n_trials=args.n_trials, slots=args.slots, timeout=args.timeout,
            report=not args.no_report, retrain_top_k=args.retrain_top_k, retrain_seeds=args.retrain_seeds,
            retrain_trials=retrain_trials,
        )
        if args.check:
            driver.prepare()
            print(f"convlab search: {args.config}: OK ({len(spec.entries)} parameters: {', '.join(e.name for e in spec.entries)})")
            return 0
        if args.report_only:
            driver.prepare()
            driver.finish(driver.open_study(), train=False)
            return 0
        return driver.run()
    except SpecError as error:
        print(f"convlab search: {args.config}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

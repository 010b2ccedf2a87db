"""``python -m experiments <command> ...``

Commands:
  fit | validate | test | predict   LightningCLI commands on a config (``--config <yaml>``)
  bench                             parameters, FLOPs, latency, throughput, Lightning/bare step ratio
  search                            Optuna study over a search spec (``--config experiments/search/<spec>.yaml``)
  reproduce <table>                 run a paper table's rows x seeds, report paper | ours | delta (experiments/tables/)
  report <table>                    rebuild a table's report from its finished runs, without training
"""
from __future__ import annotations

import sys

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def main(argv: list[str] | None = None) -> int:
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else ""
    if command in LIGHTNING_COMMANDS or command.startswith("-"):
        from experiments.cli import run_cli

        # LightningCLI reads sys.argv itself (and warns when given both).
        return run_cli(None if from_command_line else argv)
    if command == "bench":
        from experiments.bench import main as bench_main

        return bench_main(argv[1:])
    if command == "search":
        from search.cli import main as search_main

        return search_main(argv[1:])
    if command == "reproduce":
        from experiments.reproduce import main_reproduce

        return main_reproduce(argv[1:])
    if command == "report":
        from experiments.reproduce import main_report

        return main_report(argv[1:])
    print(__doc__.strip(), file=sys.stderr)
    return 0 if command in ("-h", "--help", "help") else 2


if __name__ == "__main__":
    sys.exit(main())

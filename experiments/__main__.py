"""usage: python -m experiments <command> [options]   (python -m experiments <command> --help for more)

Train, evaluate and predict (LightningCLI; every YAML key is an __init__ argument):
  fit        train a config:                  fit --config experiments/configs/<task>/<name>.yaml
  validate   evaluate a checkpoint on val:    validate --config <yaml> --ckpt_path runs/<name>/checkpoints/best.ckpt
  test       evaluate a checkpoint on test:   test --config <yaml> --ckpt_path ...
  predict    write runs/<name>/predictions.json from a checkpoint

Measure, tune, reproduce:
  bench      parameters, FLOPs, latency, data-loader and training throughput, Lightning/bare step ratio
  search     an Optuna study over a search spec (experiments/search/*.yaml); --help lists the specs
  reproduce  a paper table's rows x seeds, then its report (experiments/tables/*.yaml); --help lists the tables
  report     rebuild a table's report from its finished runs, without training
  dashboard  optuna-dashboard on a study: dashboard --study runs/<study> (pip install -r requirements-dashboard.txt)
  export     a submodule's weights (--module network.backbone --out <file>), or --format onnx: the network as ONNX

Runs, studies and tables write under runs/ (README.md, "The command line").
"""
from __future__ import annotations

import sys

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def main(argv: list[str] | None = None) -> int:
    from core.processes import watch_parent

    # A child of reproduce or search dies with its runner, even one killed with SIGKILL.
    watch_parent()
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else ""
    if command in LIGHTNING_COMMANDS:
        from experiments.cli import run_cli

        # LightningCLI reads sys.argv itself (and warns when given both).
        return run_cli(None if from_command_line else argv)
    if command == "bench":
        from experiments.bench import main as bench_main

        return bench_main(argv[1:])
    if command == "search":
        from search import main as search_main

        return search_main(argv[1:])
    if command == "reproduce":
        from experiments.reproduce.cli import main_reproduce

        return main_reproduce(argv[1:])
    if command == "report":
        from experiments.reproduce.cli import main_report

        return main_report(argv[1:])
    if command == "dashboard":
        from search import dashboard as dashboard_main

        return dashboard_main(argv[1:])
    if command == "export":
        from experiments.export import main as export_main

        return export_main(argv[1:])
    known = command in ("", "-h", "--help", "help")
    if not known:
        print(f"python -m experiments: unknown command {command!r}\n", file=sys.stderr)
    print(__doc__.strip(), file=sys.stdout if known else sys.stderr)
    return 0 if command in ("-h", "--help", "help") else 2


if __name__ == "__main__":
    sys.exit(main())

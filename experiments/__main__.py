"""usage: python -m experiments <command> [options]   (python -m experiments <command> --help for more)

Train, evaluate and predict (LightningCLI; every YAML key is an __init__ argument):
  fit        train a config:                  fit --config experiments/configs/<task>/<name>.yaml
  validate   evaluate a checkpoint on val:    validate --config <yaml> --ckpt_path runs/<name>/checkpoints/best.ckpt
  test       evaluate a checkpoint on test:   test --config <yaml> --ckpt_path ...
  predict    write runs/<name>/predictions.json from a checkpoint (the config's test split)
  infer      a run's predictions on your own images, drawn:  infer --ckpt runs/<name> --source <image | folder | glob>

Measure, tune, reproduce:
  bench      parameters, FLOPs, latency, data-loader and training throughput, Lightning/bare step ratio
  search     an Optuna study over a search spec (experiments/search/*.yaml); --help lists the specs
  reproduce  a paper table's rows x seeds, then its report (experiments/tables/*.yaml); --help lists the tables
  report     rebuild a table's report from its finished runs, without training
  dashboard  optuna-dashboard on a study: dashboard --study runs/<study> (pip install -r requirements-dashboard.txt)
  export     a submodule's weights (--module network.backbone --out <file>), or --format onnx: the network as ONNX

Runs, studies and tables write under runs/ (docs/command_line.md).
"""
from __future__ import annotations

import sys

from experiments import shipped_configs_text

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")

_LIGHTNING_USAGE = {
    "fit": "train a config; a run folder under runs/<name> holds its checkpoints, metrics and config",
    "validate": "evaluate a checkpoint on the validation split: --ckpt_path runs/<name>/checkpoints/best.ckpt",
    "test": "evaluate a checkpoint on the test split: --ckpt_path runs/<name>/checkpoints/best.ckpt",
    "predict": "write runs/<name>/predictions.json from a checkpoint (--ckpt_path), on the config's test split, else val",
}


def lightning_help(command: str) -> str:
    """The short help of ``fit|validate|test|predict --help`` without ``--config``: what the command
    does, its common options and the shipped configs. LightningCLI's own help needs Lightning imported
    (seconds) and says nothing of convlab's configs; ``<command> --config <yaml> --help`` still gives it."""
    lines = [f"usage: python -m experiments {command} --config <yaml> [--config <yaml> ...] [--<key> <value> ...]", "",
             _LIGHTNING_USAGE[command], "",
             "common options:",
             "  --config FILE            a config; several compose left to right (model config, then a data config)",
             "  --run.name NAME          the run folder runs/NAME (default: the first config's file name)",
             "  --ckpt_path PATH|last    a checkpoint (fit: resume it; last: the run's own last.ckpt)",
             "  --trainer.max_epochs N   any YAML key works the same way: --model.init_args.<arg>, --data.init_args.<arg>",
             "  --print_config           print the composed config and exit",
             "  --config <yaml> --help   LightningCLI's own help: every Trainer option; --model.help <class> for a model's", "",
             shipped_configs_text()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from core.processes import watch_parent

    # A child of reproduce or search dies with its runner, even one killed with SIGKILL.
    watch_parent()
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else ""
    if command in LIGHTNING_COMMANDS:
        if any(a in ("-h", "--help") for a in argv[1:]) and not any(a == "--config" or a.startswith("--config=") for a in argv[1:]):
            # Answers in a fraction of a second: importing Lightning alone takes several.
            print(lightning_help(command))
            return 0
        from experiments.cli import run_cli

        # LightningCLI reads sys.argv itself (and warns when given both).
        return run_cli(None if from_command_line else argv)
    if command == "infer":
        from experiments.infer import main as infer_main

        return infer_main(argv[1:])
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

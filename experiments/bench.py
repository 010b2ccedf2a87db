"""``python -m experiments bench --config <yaml> [options] [--key value ...]``

Measures, for the network and data of a config, through the task contract alone (the module's
``network``, ``example_input_array`` and ``loss(batch)``):

* parameters, and forward FLOPs per image (``torch.utils.flop_counter``, 2 x multiply-adds) on the
  module's ``example_input_array``;
* inference latency (eval mode, batch 1 and the training batch), median over repeats;
* data-loader throughput: images/s the config's training loader delivers with its own workers
  (augmentation and collation included), beside the training throughput it has to feed;
* training throughput (images/s) of one optimisation step;
* the ratio of a training step through the LightningModule and ``Trainer.fit`` to the same step in
  a bare PyTorch loop on the same network, batch, optimiser and precision. Both run in this
  process, in blocks whose order alternates from repeat to repeat (the second block of a pair
  finds the allocator and caches warm), on one batch that is collated once and replayed, so data
  loading and the machine's background load weigh on both alike; one untimed block of each comes
  first (a module's very first steps are slower than a block's warm-up steps absorb). The spread of
  the bare blocks' medians is reported beside the ratio: on a shared CPU it is often 10-20%, and a
  ratio inside it (also one below 1) says "no measurable overhead", not "Lightning is faster". The Lightning step time is the
  time between consecutive ``on_train_batch_start`` calls (the whole loop iteration: fetch,
  forward, loss, logging calls, backward, optimiser); the bare step time is one iteration of
  ``for batch in loader: zero_grad, forward, loss, backward, step``, where the loss is the
  module's own ``loss(batch)`` on its own state, the very function its ``training_step`` calls.

Writes a JSON file (``--out``, default ``runs/bench/<config stem>.json``) and prints a table.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from core.io import write_json_atomic
from experiments import shipped_configs_text

__all__ = ["main"]


def _table(result: dict[str, Any]) -> str:
    rows = [
        ("network", f"{result['network']} {result['input_shape']} x{result['batch_size']} {result['precision']}{' channels_last' if result['channels_last'] else ''}"),
        ("device", result["device"]),
        ("parameters", f"{result['params']:,}"),
        ("forward GFLOPs / image", f"{result['forward_gflops_per_image']:.3f}"),
        *[(f"latency {k}", f"{v:.2f} ms") for k, v in result["latency_ms"].items()],
        ("train step (Lightning)", f"{result['train_step_ms']['lightning']:.2f} ms"),
        ("train step (bare)", f"{result['train_step_ms']['bare']:.2f} ms"),
        ("train images/s (Lightning)", f"{result['train_images_per_s']['lightning']:.1f}"),
        (f"data loader images/s ({result['loader_workers']} workers)", f"{result['loader_images_per_s']:.1f}"
         + ("  (slower than training: the loader limits fit)" if result["loader_images_per_s"] < result["train_images_per_s"]["lightning"] else "")),
        ("Lightning / bare step", f"{result['lightning_to_bare_ratio']:.3f}  (per block: {', '.join(f'{r:.3f}' for r in result['ratio_per_repeat'])}; "
                                  f"bare blocks alone vary by {100 * result['bare_block_spread']:.0f}%)"),
        ("training TFLOP/s", f"{result['training_tflops_per_s']:.3f}"),
    ]
    if "peak_share" in result:
        rows.append(("share of peak", f"{100 * result['peak_share']:.1f}% of {result['peak_tflops']} TFLOP/s"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments bench", description=__doc__.split("\n\n")[0],
                                     epilog=shipped_configs_text(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", required=True, help="config file (repeat to compose)")
    parser.add_argument("--batch-size", type=int, default=None, help="training batch (default: the config's)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per block")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps at the start of each block")
    parser.add_argument("--repeats", type=int, default=3, help="alternating Lightning/bare blocks")
    parser.add_argument("--loader-batches", type=int, default=20, help="timed batches of the data-loader measurement")
    parser.add_argument("--precision", default=None, help="e.g. 32-true, bf16-mixed, 16-mixed (default: the config's)")
    parser.add_argument("--device", default=None, choices=["cpu", "gpu", "cuda"], help="default: the config's accelerator")
    parser.add_argument("--channels-last", dest="channels_last", action="store_true", default=None)
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, to report the share of it")
    parser.add_argument("--out", default=None, help="JSON output (default runs/bench/<config>.json)")
    args, overrides = parser.parse_known_args(argv)
    config_args = [a for c in args.config for a in ("--config", c)] + overrides
    from experiments.recipe.throughput import run_bench

    result = run_bench(
        config_args,
        batch_size=args.batch_size,
        steps=args.steps,
        repeats=args.repeats,
        warmup=args.warmup,
        precision=args.precision,
        device_name=args.device,
        channels_last=args.channels_last,
        loader_batches=args.loader_batches,
    )
    if args.peak_tflops:
        result["peak_tflops"] = args.peak_tflops
        result["peak_share"] = result["training_tflops_per_s"] / args.peak_tflops
    out = Path(args.out or Path("runs/bench") / f"{Path(args.config[-1]).stem}.json")
    write_json_atomic(out, result)
    print(_table(result))
    print(f"bench: wrote {out}")
    return 0 if math.isfinite(result["lightning_to_bare_ratio"]) else 1

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
import contextlib
import copy
import math
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from core.io import write_json_atomic
from experiments.cli import load_components

__all__ = ["main", "run_bench"]


class _Replay(Dataset):
    """One pre-collated batch, ``length`` times (``batch_size=None`` loaders yield it as is)."""

    def __init__(self, batch: Any, length: int) -> None:
        self.batch, self.length = batch, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Any:
        return self.batch


class _StepTimer(pl.Callback):
    def __init__(self, sync: Callable[[], None]) -> None:
        self.sync = sync
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        self.sync()
        self.starts.append(time.perf_counter())

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.sync()
        self.starts.append(time.perf_counter())


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _first_optimizer(configured: Any) -> torch.optim.Optimizer:
    if isinstance(configured, torch.optim.Optimizer):
        return configured
    if isinstance(configured, dict):
        return configured["optimizer"]
    if isinstance(configured, (list, tuple)):
        return _first_optimizer(configured[0])
    raise TypeError(f"cannot find the optimiser in {type(configured).__name__}")


def _autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision.startswith("bf16-mixed"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision.startswith("16-mixed"):
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def _median_ms(samples: list[float]) -> float:
    return 1e3 * statistics.median(samples)


def _loader_throughput(datamodule: pl.LightningDataModule, batches: int) -> tuple[float, int, Any]:
    """Images per second the data module's training loader delivers with its own workers (started,
    the first batch not timed), their number, and the first batch. The loader and its workers are
    gone when this returns, so that no worker shares the CPU with the timed steps."""
    loader = datamodule.train_dataloader()
    iterator = iter(loader)
    first = next(iterator)
    count, start = 0, time.perf_counter()
    for _, batch in zip(range(batches), iterator):
        count += len(batch[0])
    seconds = time.perf_counter() - start
    return (count / seconds if count else float("nan")), int(getattr(loader, "num_workers", 0)), first


def run_bench(config_args: list[str], *, batch_size: int | None, steps: int, repeats: int, warmup: int, precision: str | None,
              device_name: str | None, channels_last: bool | None, loader_batches: int = 20) -> dict[str, Any]:
    extra: list[str] = []
    if batch_size is not None:
        extra += ["--data.init_args.batch_size", str(batch_size)]
    if channels_last is not None:
        extra += ["--model.init_args.channels_last", str(channels_last).lower()]
    model, datamodule, config = load_components(config_args + extra)
    trainer_cfg = config["trainer"]
    precision = precision or str(trainer_cfg.get("precision") or "32-true")
    accelerator = device_name or trainer_cfg.get("accelerator") or "auto"
    device = torch.device("cuda" if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()) else "cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if not callable(getattr(model, "loss", None)):
        raise SystemExit(f"bench: {type(model).__name__} has no loss(batch) (the task contract, README)")

    datamodule.prepare_data()
    datamodule.setup("fit")
    loader_rate, loader_workers, batch = _loader_throughput(datamodule, batches=loader_batches)
    images = batch[0]
    n = len(images)
    example = model.example_input_array if model.example_input_array is not None else images[:1]
    example = example if isinstance(example, Tensor) else example[0]

    # ---- size and FLOPs (forward, one input)
    net: nn.Module = model.network
    params = sum(p.numel() for p in net.parameters())
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net.eval()
        net(example)
    flops = counter.get_total_flops()
    # The training blocks below copy the module: they must train as training does (batch-norm
    # statistics of the batch, dropout on; a network may return its losses only in train mode).
    net.train()

    # ---- inference latency
    net_dev = copy.deepcopy(net).to(device).eval()
    mf = torch.channels_last if getattr(model, "channels_last", False) else torch.contiguous_format
    latency = {}
    for label, x in (("batch1", example[:1]), (f"batch{n}", images)):
        # A batch of variably sized images stays a list: the network takes it as it is.
        x = [i.to(device) for i in x] if isinstance(x, (list, tuple)) else x.to(device).contiguous(memory_format=mf)
        times = []
        with torch.no_grad(), _autocast(precision, device):
            for i in range(warmup + steps):
                sync()
                t0 = time.perf_counter()
                net_dev(x)
                sync()
                if i >= warmup:
                    times.append(time.perf_counter() - t0)
        latency[label] = _median_ms(times)
    del net_dev

    # ---- training step: Lightning vs bare, interleaved blocks
    lit_module = copy.deepcopy(model)
    bare_module = copy.deepcopy(model).to(device).train()
    bare_opt = _first_optimizer(bare_module.configure_optimizers())
    scaler = torch.amp.GradScaler(device.type) if precision.startswith("16-mixed") and device.type == "cuda" else None

    class _ReplayData(pl.LightningDataModule):
        def train_dataloader(self) -> DataLoader:
            return DataLoader(_Replay(batch, warmup + steps), batch_size=None)

    lightning_times: list[float] = []
    bare_times: list[float] = []
    ratios: list[float] = []
    trainer_kwargs = dict(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        max_epochs=1,
    )
    def lightning_block() -> list[float]:
        timer = _StepTimer(sync)
        trainer = pl.Trainer(callbacks=[timer], **trainer_kwargs)
        trainer.fit(lit_module, datamodule=_ReplayData())
        return [b - a for a, b in zip(timer.starts[:-1], timer.starts[1:])][warmup:]

    def bare_block() -> list[float]:
        times = []
        sync()
        t_prev = time.perf_counter()
        for i, b in enumerate(DataLoader(_Replay(batch, warmup + steps), batch_size=None)):
            b = _to_device(b, device)
            bare_opt.zero_grad(set_to_none=True)
            with _autocast(precision, device):
                loss = bare_module.loss(b)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(bare_opt)
                scaler.update()
            else:
                loss.backward()
                bare_opt.step()
            sync()
            t_now = time.perf_counter()
            if i >= warmup:
                times.append(t_now - t_prev)
            t_prev = t_now
        return times

    bare_medians: list[float] = []
    # One untimed block of each first: the first steps a module object ever takes (allocator
    # growth, oneDNN primitive caches) are slower than the warm-up steps of a block can absorb.
    lightning_block()
    bare_block()
    for repeat in range(repeats):
        # The order alternates: whichever block runs second in a pair would otherwise find the
        # allocator and caches warmed by the first, and the ratio would carry that order.
        if repeat % 2 == 0:
            steps_l, steps_b = lightning_block(), bare_block()
        else:
            steps_b, steps_l = bare_block(), lightning_block()
        lightning_times += steps_l
        bare_times += steps_b
        bare_medians.append(statistics.median(steps_b))
        ratios.append(statistics.median(steps_l) / statistics.median(steps_b))

    step_l, step_b = statistics.median(lightning_times), statistics.median(bare_times)
    result = {
        "config": [str(c) for c in config.get("config", [])],
        "network": type(net).__name__,
        "input_shape": list(example.shape[1:]),
        "batch_size": n,
        "precision": precision,
        "channels_last": bool(getattr(model, "channels_last", False)),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "params": params,
        "forward_gflops_per_image": flops / 1e9,
        "latency_ms": latency,
        "train_step_ms": {"lightning": 1e3 * step_l, "bare": 1e3 * step_b},
        "train_images_per_s": {"lightning": n / step_l, "bare": n / step_b},
        "loader_images_per_s": loader_rate,
        "loader_workers": loader_workers,
        "lightning_to_bare_ratio": step_l / step_b,
        "ratio_per_repeat": ratios,
        # How much the bare loop alone varies from block to block: a ratio this far from 1 is noise.
        "bare_block_spread": (max(bare_medians) - min(bare_medians)) / statistics.median(bare_medians),
        "steps_per_block": steps,
        "repeats": repeats,
        "training_tflops_per_s": 3 * flops * n / step_l / 1e12,
        "versions": {"torch": torch.__version__, "lightning": pl.__version__},
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    return result


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
    parser = argparse.ArgumentParser(prog="python -m experiments bench", description=__doc__.split("\n\n")[0])
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

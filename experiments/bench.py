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
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from core.io import write_json_atomic
from experiments.cli import load_components
from experiments.recipe.measure import Measured, autocast_for, forward_latency_ms, measure_network

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
    """Build the config's model and data as ``fit`` does (``--batch-size`` and ``--channels-last``
    as overrides) and measure them; returns the result that ``main`` writes as JSON."""
    model, datamodule, config = _load(config_args, batch_size, channels_last)
    precision = precision or str(config["trainer"].get("precision") or "32-true")
    device = _device(device_name or config["trainer"].get("accelerator") or "auto")
    if not callable(getattr(model, "loss", None)):
        raise SystemExit(f"bench: {type(model).__name__} has no loss(batch) (the task contract, README)")
    datamodule.prepare_data()
    datamodule.setup("fit")
    loader_rate, loader_workers, batch = _loader_throughput(datamodule, batches=loader_batches)
    images = batch[0]
    example = model.example_input_array if model.example_input_array is not None else images[:1]
    example = example if isinstance(example, Tensor) else example[0]
    size = measure_network(model, example)
    # The training blocks copy the module: they must train as training does (batch-norm
    # statistics of the batch, dropout on; a network may return its losses only in train mode).
    model.network.train()
    latency = _latency(model, example, images, device, precision, warmup, steps)
    timed = _train_steps(model, batch, device, precision, warmup, steps, repeats)
    return _result(config, model, example, len(images), precision, device, size=size, latency=latency, timed=timed,
                   loader=(loader_rate, loader_workers), steps=steps, repeats=repeats)


def _load(config_args: list[str], batch_size: int | None, channels_last: bool | None) -> tuple[pl.LightningModule, pl.LightningDataModule, dict[str, Any]]:
    """Model, data module and resolved config of the command line, with bench's own overrides."""
    extra: list[str] = []
    if batch_size is not None:
        extra += ["--data.init_args.batch_size", str(batch_size)]
    if channels_last is not None:
        extra += ["--model.init_args.channels_last", str(channels_last).lower()]
    return load_components(config_args + extra)


def _device(accelerator: str) -> torch.device:
    """The device of ``--device`` or the config's accelerator (``auto``: CUDA when there is one)."""
    cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if cuda else "cpu")


def _sync(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def _latency(model: pl.LightningModule, example: Tensor, images: Any, device: torch.device, precision: str, warmup: int,
             steps: int) -> dict[str, float]:
    """Inference latency of a copy of the network on ``device`` (``forward_latency_ms``): batch 1
    (the example) and the training batch (a batch of variably sized images stays a list)."""
    net_dev = copy.deepcopy(model.network).to(device)
    latency = {}
    for label, x in (("batch1", example[:1]), (f"batch{len(images)}", images)):
        latency[label] = forward_latency_ms(net_dev, x, warmup=warmup, iterations=steps, precision=precision,
                                            channels_last=model.channels_last)
    return latency


class _Blocks:
    """The two training loops bench compares, on one replayed batch: ``lightning()`` runs
    ``Trainer.fit`` on a copy of the module, ``bare()`` the same steps in a plain PyTorch loop on
    another copy; each returns the seconds of its timed steps (after ``warmup``)."""

    def __init__(self, model: pl.LightningModule, batch: Any, device: torch.device, precision: str, warmup: int, steps: int) -> None:
        self.batch, self.device, self.precision, self.warmup, self.steps = batch, device, precision, warmup, steps
        self.sync = _sync(device)
        self.lit_module = copy.deepcopy(model)
        self.bare_module = copy.deepcopy(model).to(device).train()
        self.bare_opt = _first_optimizer(self.bare_module.configure_optimizers())
        self.scaler = torch.amp.GradScaler(device.type) if precision.startswith("16-mixed") and device.type == "cuda" else None
        self.trainer_kwargs = dict(
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

    def _loader(self) -> DataLoader:
        return DataLoader(_Replay(self.batch, self.warmup + self.steps), batch_size=None)

    def lightning(self) -> list[float]:
        blocks = self

        class _ReplayData(pl.LightningDataModule):
            def train_dataloader(self) -> DataLoader:
                return blocks._loader()

        timer = _StepTimer(self.sync)
        trainer = pl.Trainer(callbacks=[timer], **self.trainer_kwargs)
        trainer.fit(self.lit_module, datamodule=_ReplayData())
        return [b - a for a, b in zip(timer.starts[:-1], timer.starts[1:])][self.warmup:]

    def bare(self) -> list[float]:
        times = []
        self.sync()
        t_prev = time.perf_counter()
        for i, b in enumerate(self._loader()):
            self._bare_step(_to_device(b, self.device))
            self.sync()
            t_now = time.perf_counter()
            if i >= self.warmup:
                times.append(t_now - t_prev)
            t_prev = t_now
        return times

    def _bare_step(self, batch: Any) -> None:
        self.bare_opt.zero_grad(set_to_none=True)
        with autocast_for(self.precision, self.device):
            loss = self.bare_module.loss(batch)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.bare_opt)
            self.scaler.update()
        else:
            loss.backward()
            self.bare_opt.step()


def _train_steps(model: pl.LightningModule, batch: Any, device: torch.device, precision: str, warmup: int, steps: int,
                 repeats: int) -> dict[str, list[float]]:
    """Training-step seconds through Lightning and through the bare loop, in ``repeats`` pairs of
    blocks whose order alternates; ``bare_medians`` and ``ratios``: per pair."""
    blocks = _Blocks(model, batch, device, precision, warmup, steps)
    timed: dict[str, list[float]] = {"lightning": [], "bare": [], "bare_medians": [], "ratios": []}
    # One untimed block of each first: the first steps a module object ever takes (allocator
    # growth, oneDNN primitive caches) are slower than the warm-up steps of a block can absorb.
    blocks.lightning()
    blocks.bare()
    for repeat in range(repeats):
        # The order alternates: whichever block runs second in a pair would otherwise find the
        # allocator and caches warmed by the first, and the ratio would carry that order.
        if repeat % 2 == 0:
            steps_l, steps_b = blocks.lightning(), blocks.bare()
        else:
            steps_b, steps_l = blocks.bare(), blocks.lightning()
        timed["lightning"] += steps_l
        timed["bare"] += steps_b
        timed["bare_medians"].append(statistics.median(steps_b))
        timed["ratios"].append(statistics.median(steps_l) / statistics.median(steps_b))
    return timed


def _result(config: dict[str, Any], model: pl.LightningModule, example: Tensor, n: int, precision: str, device: torch.device, *,
            size: Measured, latency: dict[str, float], timed: dict[str, list[float]], loader: tuple[float, int], steps: int,
            repeats: int) -> dict[str, Any]:
    """The JSON result: the measurements, the set-up they were taken in, and the versions."""
    step_l, step_b = statistics.median(timed["lightning"]), statistics.median(timed["bare"])
    flops = size.gflops * 1e9
    return {
        "config": [str(c) for c in config.get("config", [])],
        "network": type(model.network).__name__,
        "input_shape": list(example.shape[1:]),
        "batch_size": n,
        "precision": precision,
        "channels_last": bool(model.channels_last),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "params": size.params,
        "forward_gflops_per_image": size.gflops,
        "latency_ms": latency,
        "train_step_ms": {"lightning": 1e3 * step_l, "bare": 1e3 * step_b},
        "train_images_per_s": {"lightning": n / step_l, "bare": n / step_b},
        "loader_images_per_s": loader[0],
        "loader_workers": loader[1],
        "lightning_to_bare_ratio": step_l / step_b,
        "ratio_per_repeat": timed["ratios"],
        # How much the bare loop alone varies from block to block: a ratio this far from 1 is noise.
        "bare_block_spread": (max(timed["bare_medians"]) - min(timed["bare_medians"])) / statistics.median(timed["bare_medians"]),
        "steps_per_block": steps,
        "repeats": repeats,
        "training_tflops_per_s": 3 * flops * n / step_l / 1e12,
        "versions": {"torch": torch.__version__, "lightning": pl.__version__},
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


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

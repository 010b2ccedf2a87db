"""The measurements behind ``python -m experiments bench`` (experiments/bench.py says what each
one is and how it is timed). Kept apart from the command so that ``bench --help`` does not import
torch and Lightning.
"""
from __future__ import annotations

import copy
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from core.precision import cpu_precision
from experiments.cli import load_components
from experiments.recipe.measure import Measured, autocast_for, forward_latency_ms, measure_network

__all__ = ["run_bench"]


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
    device = _device(device_name or config["trainer"].get("accelerator") or "auto")
    if precision is None:
        # The config's precision as fit would run it: a CPU without native bf16 trains in fp32.
        configured = config["trainer"].get("precision")
        precision = cpu_precision(configured).precision if device.type == "cpu" else str(configured or "32-true")
    if not callable(getattr(model, "loss", None)):
        raise SystemExit(f"bench: {type(model).__name__} has no loss(batch) (the task contract, docs/task_contract.md)")
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



"""Measure a network through the task contract (the module's ``network`` and
``example_input_array``): its size and forward FLOPs, and its latency.

One measurement of each kind for the whole suite: ``bench`` reports them, a search constrains or
optimises them (``params``, ``gflops``, ``latency_ms``), a table lists the parameters of its rows.
"""
from __future__ import annotations

import contextlib
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Measured", "measure_network", "forward_latency_ms", "autocast_for", "BUILD_LOCK"]

# jsonargparse parsers are not thread-safe (the slots of a study or a table share one composer),
# and FlopCounterMode counts the tensor operations of every thread: building models and counting
# FLOPs take turns under this one lock.
BUILD_LOCK = threading.RLock()


@dataclass
class Measured:
    """What a config builds: the network's parameter count, its forward GFLOPs on the module's
    ``example_input_array`` (None when the module has none), and the data's paths
    (``core.records.RequiredPath``): those ``missing``, every one ``required``, and ``owner``, the
    class path of the reader whose arguments name them; ``weights_missing``: the pretrained weights
    files that are not on disk, as ``(config key, path)``."""

    params: int | None = None
    gflops: float | None = None
    missing: list[Any] = field(default_factory=list)
    required: list[Any] = field(default_factory=list)
    owner: str | None = None
    weights_missing: list[tuple[str, str]] = field(default_factory=list)


def measure_network(module: Any, example: Any = None) -> Measured:
    """Parameters and forward GFLOPs (``torch.utils.flop_counter``, 2 x multiply-adds) of the
    module's ``network`` (the module itself when it has none) on ``example`` (default: the module's
    ``example_input_array``; a tuple is passed as several arguments), on its current device, in eval
    mode and without gradients; the network's train/eval mode is restored. ``gflops`` is None when
    there is no input to count on."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    network = getattr(module, "network", module)
    measured = Measured(params=int(sum(p.numel() for p in network.parameters())))
    example = getattr(module, "example_input_array", None) if example is None else example
    if example is not None:
        inputs = example if isinstance(example, tuple) else (example,)
        was_training = network.training
        network.eval()
        with BUILD_LOCK, torch.no_grad(), FlopCounterMode(display=False) as counter:
            network(*inputs)
        network.train(was_training)
        measured.gflops = counter.get_total_flops() / 1e9
    return measured


def autocast_for(precision: str, device: Any) -> contextlib.AbstractContextManager:
    """The autocast context of a Lightning ``precision`` (``bf16-mixed``, ``16-mixed``) on
    ``device``; a null context for full precision."""
    import torch

    if precision.startswith("bf16-mixed"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision.startswith("16-mixed"):
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def forward_latency_ms(network: Any, inputs: Any, *, warmup: int, iterations: int, precision: str = "32-true",
                       channels_last: bool = False) -> float:
    """Median wall-clock milliseconds (``statistics.median``) of one forward pass of ``network`` on
    ``inputs``, after ``warmup`` untimed passes.

    ``inputs``: a tensor (a batch), or a list of tensors for a network that takes variably sized
    images as a list; they are timed on the network's device (moved there first), a 4-D tensor in
    channels-last memory format when ``channels_last``. The passes run in eval mode without
    gradients, under the autocast of a mixed ``precision``; on CUDA each pass is synchronised before
    and after, so that it is timed whole. The network's train/eval mode is restored."""
    import torch

    device = next((p.device for p in network.parameters()), torch.device("cpu"))
    x = _on_device(inputs, device, channels_last)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    was_training = network.training
    network.eval()
    times = []
    with torch.no_grad(), autocast_for(precision, device):
        for i in range(warmup + iterations):
            sync()
            start = time.perf_counter()
            network(x)
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    network.train(was_training)
    return 1e3 * statistics.median(times)


def _on_device(inputs: Any, device: Any, channels_last: bool) -> Any:
    """``inputs`` on ``device``: a list stays a list of tensors (variably sized images), a 4-D
    tensor is made contiguous in the memory format the network's weights use."""
    import torch

    if isinstance(inputs, (list, tuple)):
        return [x.to(device) for x in inputs]
    fmt = torch.channels_last if channels_last and inputs.dim() == 4 else torch.contiguous_format
    return inputs.to(device).contiguous(memory_format=fmt)

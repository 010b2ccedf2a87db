"""``python -m experiments export``: a trained model out of its run, as a weights file or as ONNX.

    python -m experiments export --ckpt runs/<name>/checkpoints/last.ckpt --module network.backbone \\
        --out runs/<name>/backbone.pt
    python -m experiments export --format onnx --ckpt runs/<name> [--out runs/<name>/model.onnx]

``--format weights`` (the default): some paper recipes pretrain a network's convolutions on one task
(ImageNet classification) and then train another task's network from them. Here a pretraining run is
an ordinary ``fit``; this takes the state dict of the submodule ``--module`` (a dotted attribute path
of the LightningModule, ``network.backbone``) out of its checkpoint, with that prefix removed, so
that the file is what a ``*weights`` / ``backbone_weights`` key of another config loads.

``--format onnx``: the trained network (the LightningModule's ``network``) rebuilt from the run's
``config.yaml`` as ``fit`` builds it, with the checkpoint's weights, exported at the config's input
size (the data facts' ``input_shape``) and then run by onnxruntime on the same inputs as PyTorch
(a few validation images, or random ones); the max |Δ| of every output is printed, and the command
fails when one exceeds ``--tolerance``. docs/export.md says which exporter each kind of network
takes and what was measured.

Either file is written atomically; an existing one is replaced only when ``--force`` is given.
"""
from __future__ import annotations

import argparse
import io
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.checkpoints import read_checkpoint
from core.errors import CheckpointError, ConfigError, DataNotFoundError
from core.io import shown_path, write_atomic
from experiments.trained import find_checkpoint, load_trained_module, weights_under

if TYPE_CHECKING:
    from torch import Tensor, nn

__all__ = [
    "export_module", "export_run_onnx", "export_onnx", "check_onnx",
    "check_images", "OnnxExport", "Parity", "ExportError", "ParityError", "main",
]

# ``--exporter``: which of torch.onnx's exporters; what ``auto`` tries depends on the network's output (``export_onnx``).
EXPORTERS = ("auto", "dynamo", "torchscript")
# torchvision registers its detectors' own ops (nms, roi_align) for the TorchScript exporter from opset 11.
TORCHSCRIPT_OPSET = 17


class ExportError(ConfigError):
    """A network that cannot be exported, or an exported file onnxruntime cannot run."""


class ParityError(ExportError):
    """An exported graph whose outputs are not PyTorch's: another shape, another number of detections."""


# ---------------------------------------------------------------------------------------- weights
def export_module(ckpt: str | Path, module: str, out: str | Path, force: bool = False) -> int:
    """Write the tensors of ``ckpt``'s ``state_dict`` under ``module.`` to ``out`` as a plain
    state dict (keys without the prefix); returns how many tensors were written.

    The checkpoint is read by ``core.checkpoints.read_checkpoint``. Raises ``DataNotFoundError``
    (``CheckpointNotFoundError``) for a missing checkpoint, ``CheckpointError`` for a file that cannot
    be read safely, is not a Lightning checkpoint or holds nothing under ``module``, and
    ``FileExistsError`` when ``out`` exists and ``force`` is not set."""
    ckpt, out = Path(ckpt), Path(out)
    checkpoint = read_checkpoint(ckpt, "checkpoint (--ckpt)", map_location="cpu")
    if out.exists() and not force:
        raise FileExistsError(f"{shown_path(out)} exists; give --force to replace it")
    part = weights_under(checkpoint, ckpt, module)
    import torch

    buffer = io.BytesIO()
    torch.save(part, buffer)
    write_atomic(out, buffer.getvalue())
    return len(part)


# ----------------------------------------------------------------------------------------- ONNX
@dataclass
class OnnxExport:
    """What ``export_onnx`` wrote: the file, the exporter that made it, the names of the graph's
    input and outputs, and whether its batch axis is dynamic.

    ``per_image``: the network returns one dict of tensors per image (torchvision's detectors); the
    graph then takes a batch of exactly one image ``(1, C, H, W)`` and its outputs are that image's
    dict, rows of detections in any order."""

    path: Path
    exporter: str
    opset: int | None
    input_shape: tuple[int, ...]
    output_names: list[str]
    dynamic_batch: bool
    per_image: bool
    input_name: str = "images"
    failures: dict[str, str] = field(default_factory=dict)


@dataclass
class Parity:
    """One output's agreement of onnxruntime with PyTorch over the check inputs: ``max_abs`` is the
    max |Δ|, ``scale`` the largest |value| PyTorch gave (boxes in pixels are hundreds), ``rows``
    the detections compared (``per_image`` outputs; -1 otherwise)."""

    name: str
    max_abs: float
    scale: float
    rows: int = -1

    def relative(self) -> float:
        """|Δ| against ``max(1, scale)``: absolute for values up to 1, relative beyond."""
        return self.max_abs / max(1.0, self.scale)


def _flattened(network: nn.Module, per_image: bool) -> nn.Module:
    """The network with its output as a flat tuple of tensors, which every exporter and
    onnxruntime take: a tensor, a list of tensors (one per stack) or a dict of tensors as they are;
    a list of one dict per image (``per_image``) as the first image's dict."""
    from torch import nn

    class Flattened(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, images: Tensor) -> tuple[Tensor, ...]:
            output = self.network(images)
            return tuple(tensor for _, tensor in _named_outputs(output[0] if per_image else output))

    return Flattened().eval()


def _named_outputs(output: Any) -> list[tuple[str, Tensor]]:
    """``(name, tensor)`` of a network output: ``output``; ``output0``, ``output1``, ... of a list;
    the keys of a dict. ``ExportError`` for anything else."""
    from torch import Tensor

    if isinstance(output, Tensor):
        return [("output", output)]
    if isinstance(output, (list, tuple)) and all(isinstance(t, Tensor) for t in output):
        return [(f"output{i}", t) for i, t in enumerate(output)]
    if isinstance(output, dict) and all(isinstance(t, Tensor) for t in output.values()):
        return [(str(k), t) for k, t in output.items()]
    raise ExportError(f"its output is a {type(output).__name__} of {_describe(output)}, not tensors, a list or a dict of them")


def _describe(output: Any) -> str:
    """The types inside a network output that is not tensors, for the error that names it."""
    if isinstance(output, dict):
        return ", ".join(f"{k}: {type(v).__name__}" for k, v in list(output.items())[:4])
    if isinstance(output, (list, tuple)):
        return ", ".join(type(v).__name__ for v in output[:4])
    return type(output).__name__


def _is_per_image(output: Any, batch: int) -> bool:
    """A list of one dict per image (torchvision's detectors): the loop over images is Python, so
    a graph holds one image's outputs and its batch axis cannot be dynamic."""
    return isinstance(output, (list, tuple)) and len(output) == batch and all(isinstance(o, dict) for o in output)


def export_onnx(network: nn.Module, example: Tensor, out: str | Path, *, exporter: str = "auto", opset: int | None = None,
                force: bool = False) -> OnnxExport:
    """Export ``network`` (eval mode, fp32, on the CPU) to the ONNX file ``out``, written atomically.

    ``example``: ``(N, C, H, W)`` images at the config's size, N >= 2 (torch.export treats a
    batch of 1 as a constant); the graph's input ``images`` has that ``(C, H, W)``. A network with
    batched outputs gets a dynamic batch axis; one with an output per image (``per_image``) takes
    ``example[:1]`` and a batch of one image.

    ``exporter``: ``dynamo`` (``torch.onnx.export(dynamo=True)``, torch.export's graph),
    ``torchscript`` (the tracing exporter, through which torchvision exports its detectors with
    their own ops) or ``auto``: ``torchscript`` for a per-image output, else ``dynamo`` and,
    should it fail, ``torchscript``. Raises ``ExportError`` naming the network and why each exporter
    failed, ``FileExistsError`` when ``out`` exists and ``force`` is not set."""
    import torch

    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"{shown_path(out)} exists; give --force to replace it")
    if exporter not in EXPORTERS:
        raise ExportError(f"--exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    if example.ndim != 4 or len(example) < 2:
        raise ExportError(f"the example must be a batch of at least 2 images (N, C, H, W), got {tuple(example.shape)}")
    network = network.float().eval().to("cpu")
    example = example.float().contiguous()
    name = type(network).__name__
    with torch.no_grad():
        try:
            output = network(example[:2])
        except Exception as error:  # noqa: BLE001 - any failure to run is the one line the user gets
            raise ExportError(f"{name} does not run on a {tuple(example[:2].shape)} batch: {_first_line(error)}") from None
    per_image = _is_per_image(output, 2)
    try:
        names = [n for n, _ in _named_outputs(output[0] if per_image else output)]
    except ExportError as error:
        raise ExportError(f"{name} cannot be exported: {error}") from None
    wrapper = _flattened(network, per_image)
    order = {"auto": ("torchscript",) if per_image else ("dynamo", "torchscript")}.get(exporter, (exporter,))
    failures: dict[str, str] = {}
    for kind in order:
        make = _export_dynamo if kind == "dynamo" else _export_torchscript
        inputs = example[:1] if per_image else example
        try:
            data, used_opset = make(wrapper, inputs, names, dynamic=not per_image, opset=opset)
        except Exception as error:  # noqa: BLE001 - every exporter failure is reported, none re-raised
            failures[kind] = _first_line(error)
            continue
        write_atomic(out, data)
        return OnnxExport(out, kind, used_opset, tuple(example.shape[1:]), names, dynamic_batch=not per_image,
                          per_image=per_image, failures=failures)
    why = "; ".join(f"{kind} exporter: {reason}" for kind, reason in failures.items())
    raise ExportError(f"{name} cannot be exported to ONNX ({why})")


def _quiet(call: Callable[[], Any]) -> Any:
    """Run an exporter without its warnings (tracer warnings, deprecations, progress lines) and
    without what it prints: on a failure the TorchScript exporter writes the whole graph to the
    process's stderr from C++, so the file descriptors themselves are pointed elsewhere. What the
    user needs from an exporter is the file, or the one reason it failed (its exception)."""
    import logging
    import os
    import tempfile

    names = ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx.experimental.symbolic_shapes", "onnxscript")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with tempfile.TemporaryFile() as sink, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for logger in loggers:
                logger.setLevel(logging.ERROR)
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            try:
                return call()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        for descriptor in saved:
            os.close(descriptor)
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _export_dynamo(wrapper: nn.Module, example: Tensor, names: list[str], *, dynamic: bool, opset: int | None) -> tuple[bytes, int | None]:
    import torch

    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    program = _quiet(lambda: torch.onnx.export(wrapper, (example,), dynamo=True, verbose=False, input_names=["images"],
                                                output_names=names, dynamic_shapes=shapes, opset_version=opset,
                                                external_data=False))
    model = program.model_proto
    opset_used = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), opset)
    return model.SerializeToString(), opset_used


def _export_torchscript(wrapper: nn.Module, example: Tensor, names: list[str], *, dynamic: bool, opset: int | None) -> tuple[bytes, int]:
    import torch

    opset = opset or TORCHSCRIPT_OPSET
    axes = {name: {0: "batch"} for name in ["images", *names]} if dynamic else None
    buffer = io.BytesIO()
    _quiet(lambda: torch.onnx.export(wrapper, (example,), buffer, dynamo=False, input_names=["images"], output_names=names,
                                     dynamic_axes=axes, opset_version=opset))
    return buffer.getvalue(), opset


def _first_line(error: BaseException) -> str:
    """The reason of an exporter's error in one line: torch.onnx wraps torch.export's error in
    paragraphs of advice, whose "Exception summary" (or the cause) says what went wrong."""
    text = str(error)
    if "## Exception summary" in text:
        text = text.split("## Exception summary", 1)[1]
    elif error.__cause__ is not None:
        text = str(error.__cause__) or text
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[0] if lines else type(error).__name__
    line = line.split(" Please feel free to request support", 1)[0]  # the TorchScript exporter's boilerplate
    line = re.sub(r"^<class '[\w.]+'>: ", "", line)  # torch.onnx's summary names the exception class first
    return line if len(line) <= 300 else line[:297] + "..."


def check_onnx(export: OnnxExport, network: nn.Module, images: list[Tensor]) -> list[Parity]:
    """Run the exported file in onnxruntime (CPU) and ``network`` in PyTorch (eval, no gradients)
    on the same ``images`` (each ``(C, H, W)`` at ``export.input_shape``); one ``Parity`` per output.

    A batched graph runs all images as one batch (of more than one: its batch axis is dynamic) and
    then the first alone; a per-image graph runs each image alone, and its outputs, rows of
    detections in any order (equal scores have no order), are compared row to the row it matches
    best (``scipy.optimize.linear_sum_assignment`` on the largest scaled |Δ| of a row). A different
    number of rows or another shape is a ``ParityError``; a file onnxruntime cannot load or run, an
    ``ExportError``."""
    import numpy as np
    import onnxruntime
    import torch

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # its warnings about unused initialisers are not the user's business
    try:
        session = onnxruntime.InferenceSession(str(export.path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001 - onnxruntime's own exception types
        raise ExportError(f"onnxruntime cannot load {shown_path(export.path)}: {_first_line(error)}") from None
    network = network.float().eval()
    if export.dynamic_batch and len(images) > 1:
        batches = [torch.stack(images), images[0][None]]
    else:
        batches = [image[None] for image in images]
    worst = {name: Parity(name, 0.0, 0.0, 0 if export.per_image else -1) for name in export.output_names}
    for batch in batches:
        with torch.no_grad():
            output = network(batch.contiguous())
        reference = [t.detach().numpy() for _, t in _named_outputs(output[0] if export.per_image else output)]
        try:
            got = session.run(None, {export.input_name: batch.numpy()})
        except Exception as error:  # noqa: BLE001 - e.g. a batch size the graph took as a constant
            shape = tuple(batch.shape)
            raise ExportError(f"onnxruntime cannot run {shown_path(export.path)} on a {shape} batch: {_first_line(error)}") from None
        if export.per_image:
            got = _match_rows(reference, got, export.output_names)
        for name, ref, onnx_value in zip(export.output_names, reference, got):
            if ref.shape != onnx_value.shape:
                raise ParityError(f"output {name}: onnxruntime gives shape {onnx_value.shape}, PyTorch {ref.shape}")
            parity = worst[name]
            if ref.size:
                parity.max_abs = max(parity.max_abs, float(np.abs(ref.astype(np.float64) - onnx_value.astype(np.float64)).max()))
                parity.scale = max(parity.scale, float(np.abs(ref).max()))
            if export.per_image:
                parity.rows += len(ref)
    return list(worst.values())


def _match_rows(reference: list[Any], got: list[Any], names: list[str]) -> list[Any]:
    """onnxruntime's rows reordered to PyTorch's: each output is one row per detection, the same
    count in every output; rows are paired to minimise their largest |Δ| (scaled as ``Parity``)
    over the outputs of a few numbers per row (boxes, labels, scores, keypoints; a mask row of
    H x W values would make the pairing cost count² x H x W), and every output follows that order."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    count, onnx_count = len(reference[0]), len(got[0])
    if count != onnx_count:
        raise ParityError(f"onnxruntime gives {onnx_count} detections ({names[0]}), PyTorch {count}")
    if count == 0:
        return got
    pairs = [(r.reshape(count, -1), g.reshape(count, -1)) for r, g in zip(reference, got)]
    small = [(r, g) for r, g in pairs if r.shape[1] <= 64] or pairs
    cost = np.zeros((count, count))
    for ref, onnx_value in small:
        ref64, onnx64 = ref.astype(np.float64), onnx_value.astype(np.float64)
        scale = max(1.0, float(np.abs(ref64).max()) if ref64.size else 1.0)
        for row in range(count):  # one row against all: memory of one output, not count times it
            cost[row] = np.maximum(cost[row], np.abs(onnx64 - ref64[row]).max(-1, initial=0.0) / scale)
    rows, cols = linear_sum_assignment(cost)
    order = cols[np.argsort(rows)]
    return [onnx_value[order] for onnx_value in got]


def check_images(datamodule: Any, example: Tensor, count: int, source: str) -> list[Tensor]:
    """``count`` images ``(C, H, W)`` at the example's size to compare the runtimes on: the first
    of the validation split (``source="val"``; resized bilinearly where they differ in size) or
    uniform random ones (``"random"``, seeded)."""
    import torch

    shape = tuple(example.shape[1:])
    if source == "random":
        generator = torch.Generator().manual_seed(0)
        return [torch.rand(shape, generator=generator) for _ in range(count)]
    datamodule.prepare_data()
    datamodule.setup("validate")
    dataset = datamodule.val_dataloader().dataset
    images = []
    for index in range(min(count, len(dataset))):
        image = dataset[index][0]
        if tuple(image.shape) != shape:
            image = torch.nn.functional.interpolate(image[None].float(), size=shape[1:], mode="bilinear", align_corners=False)[0]
        images.append(image.float())
    if not images:
        raise ExportError("the validation split is empty; give --check-inputs random")
    return images


def export_run_onnx(run_or_ckpt: str | Path, out: str | Path | None, *, exporter: str = "auto", opset: int | None = None,
                    check_inputs: str = "val", check_count: int = 4, force: bool = False) -> tuple[OnnxExport, list[Parity], int]:
    """``--format onnx``: rebuild the run's trained network (``load_trained_module``), export it at
    the config's input size (``out`` default: ``<run>/model.onnx``) and compare onnxruntime with
    PyTorch on ``check_count`` inputs (``check_images``); returns the export, the parity of each
    output and how many inputs were compared (fewer than ``check_count`` when the split is smaller)."""
    import torch

    run, _ = find_checkpoint(run_or_ckpt)
    out = Path(out) if out is not None else run / "model.onnx"
    if out.exists() and not force:  # before the minutes of building and exporting
        raise FileExistsError(f"{shown_path(out)} exists; give --force to replace it")
    trained = load_trained_module(run_or_ckpt)
    model, datamodule = trained.model, trained.datamodule
    example = getattr(model, "example_input_array", None)
    if not isinstance(example, torch.Tensor):
        raise ExportError(f"{type(model).__name__} has no example_input_array: its data gives no fixed input size "
                          "(the data facts' input_shape)")
    images = check_images(datamodule, example, max(1, check_count), check_inputs)
    # torch.export needs a batch of two to keep the batch axis dynamic (see export_onnx).
    export = export_onnx(model.network, torch.stack((images * 2)[:2]), out, exporter=exporter, opset=opset, force=force)
    return export, check_onnx(export, model.network, images), len(images)


# ------------------------------------------------------------------------------------- the command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments export", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", choices=("weights", "onnx"), default="weights",
                        help="weights: a submodule's state dict (--module, --out); onnx: the whole network, checked against onnxruntime")
    parser.add_argument("--ckpt", required=True, help="a checkpoint written by fit (runs/<name>/checkpoints/last.ckpt); "
                                                       "for onnx also a run folder (its best.ckpt, else last.ckpt)")
    parser.add_argument("--module", help="weights: the LightningModule's submodule to save, e.g. network.backbone")
    parser.add_argument("--out", help="the file to write (weights: a state dict, loadable with weights_only; "
                                      "onnx: default <run>/model.onnx)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    onnx = parser.add_argument_group("onnx")
    onnx.add_argument("--exporter", choices=EXPORTERS, default="auto",
                      help="torch.onnx's exporter: auto (torchscript for torchvision's detectors, else dynamo, then torchscript)")
    onnx.add_argument("--opset", type=int, help=f"ONNX opset (default: the exporter's own; torchscript: {TORCHSCRIPT_OPSET})")
    onnx.add_argument("--tolerance", type=float, default=1e-4,
                      help="largest max |Δ| onnxruntime vs PyTorch allowed per output, of max(1, |output|) (default 1e-4)")
    onnx.add_argument("--check-inputs", choices=("val", "random"), default="val",
                      help="what both runtimes are given: validation images (default) or random ones")
    onnx.add_argument("--check-count", type=int, default=4, help="how many inputs (default 4)")
    args = parser.parse_args(argv)
    if args.format == "weights":
        if not args.module or not args.out:
            parser.error("--format weights needs --module and --out")
        return _main_weights(args)
    if args.module:
        parser.error("--module is for --format weights; --format onnx exports the whole network")
    if args.check_count < 1:
        parser.error("--check-count must be at least 1")
    return _main_onnx(args)


def _main_weights(args: argparse.Namespace) -> int:
    try:
        count = export_module(args.ckpt, args.module, args.out, args.force)
    except (DataNotFoundError, CheckpointError, FileExistsError) as error:
        print(f"python -m experiments export: {error}", file=sys.stderr)
        return 2
    print(f"convlab export: {count} tensors of {args.module} -> {shown_path(args.out)}")
    return 0


def _main_onnx(args: argparse.Namespace) -> int:
    from experiments.recipe.config_errors import OneLineErrors

    with OneLineErrors(prefix="python -m experiments export", what="the run's config.yaml: ") as failed:
        try:
            export, parities, checked = export_run_onnx(args.ckpt, args.out, exporter=args.exporter, opset=args.opset,
                                                        check_inputs=args.check_inputs, check_count=args.check_count, force=args.force)
        except FileExistsError as error:
            print(f"python -m experiments export: {error}", file=sys.stderr)
            return 2
        except ParityError as error:
            print(f"python -m experiments export: onnxruntime differs from PyTorch: {error}", file=sys.stderr)
            return 1
    if failed.status:
        return failed.status
    batch = "dynamic batch" if export.dynamic_batch else "one image per run, its detections out"
    shape = "x".join(str(s) for s in ("N" if export.dynamic_batch else 1, *export.input_shape))
    print(f"convlab export: {shown_path(export.path)} ({export.exporter} exporter, opset {export.opset}; "
          f"input {export.input_name} {shape}, {batch})")
    for kind, reason in export.failures.items():
        print(f"  the {kind} exporter failed first: {reason}")
    print(f"  onnxruntime vs PyTorch on {checked} {args.check_inputs} input(s), max |Δ| per output "
          f"(tolerance {args.tolerance:g} of max(1, |output|)):")
    for parity in parities:
        rows = f", {parity.rows} rows" if parity.rows >= 0 else ""
        print(f"    {parity.name:<12} {parity.max_abs:.3g}  (|output| up to {parity.scale:.3g}{rows})")
    failed = [p for p in parities if not p.relative() <= args.tolerance]
    if failed:
        worst = max(failed, key=Parity.relative)
        print(f"python -m experiments export: onnxruntime differs from PyTorch: output {worst.name} by {worst.max_abs:.3g} "
              f"({worst.relative():.3g} of max(1, |output|), tolerance {args.tolerance:g}); {shown_path(export.path)} is kept",
              file=sys.stderr)
        return 1
    return 0

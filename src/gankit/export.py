"""A trained generator as a file other programs can load: safetensors or ONNX.

The file holds the network the task says (`Task.exported()`): for a GAN and a VAE the
generator alone, the function z -> images that `gankit sample` uses (the task's `sampler()`):
- a GAN: G, or the moving average of G's weights for a run trained with --ema;
- a VAE: the decoder, with the sigmoid that turns its logits into the mean image.
Input z: float32 (N, nz) ~ N(0, I). Output: float32 images (N, C, S, S) in [-1, 1] at the
network's size S. A flow writes its velocity network instead (the EMA's with --ema):
inputs x (N, C, S, S) and t (N,) (and labels), output the velocity dx/dt, which an ODE
solver integrates from noise at t = 0 to an image at t = 1 (docs/usage.md has a numpy one);
metadata "input" and "output" say each file's. MNIST-like runs pad 28x28 to 32x32, so their images carry a 2-pixel
border of background: crop it with ``images[..., 2:30, 2:30]`` (metadata "crop" gives
the pixels per side, 0 when nothing is padded) to get what `gankit sample` writes.
A conditional DCGAN (--conditional) takes a second input, labels: int64 (N,) in
[0, num_classes); metadata "num_classes" says how many (0 for every other generator).

Metadata (key "gankit", a JSON object; safetensors metadata is str -> str, ONNX
metadata_props the same): the run's TrainConfig, nz, image_size, native_size, channels,
crop, step, and the gankit versions that trained and exported it. `build_generator`
rebuilds the network from it; `load_safetensors` does that and loads the weights.
"""

from __future__ import annotations

import inspect
import io
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from gankit.checkpoint import about
from gankit.config import TrainConfig
from gankit.data import border
from gankit.errors import UserError
from gankit.files import write_atomic
from gankit.models import eval_mode
from gankit.registry import task_class
from gankit.runs import load_run, saved_config
from gankit.training.task import Exported
from gankit.version import __version__

FORMATS = {"safetensors": ".safetensors", "onnx": ".onnx"}
ONNX_OPSET = 17  # ONNX Runtime 1.12+ and onnxruntime-web run it
INSTALL_HINT = "pip install 'gankit[export]'"


def build_generator(meta: dict) -> nn.Module:
    """A fresh, untrained network of the shape an export's metadata describes, in eval mode:
    the model's task class builds it (Task.build_sampler)."""
    config = saved_config(meta["config"], "the export's metadata")
    return task_class(config.model).build_sampler(config, meta).eval()


def metadata(config: TrainConfig, state: dict, nz: int, native: int, exported: Exported) -> dict:
    crop = 0 if native == config.image_size else border(native, config.image_size)
    facts = about(state)
    classes = (config.num_classes or 0) if config.conditional else 0
    return {
        "config": config.to_dict(),
        "model": config.model,
        "nz": nz,
        "image_size": config.image_size,
        "native_size": native,
        "channels": config.channels,
        # Pixels per side to cut off for the native frame; None: not a border, resize instead.
        "crop": crop,
        "step": facts.step,
        "trained_with": facts.trained_with,
        "gankit_version": __version__,
        "num_classes": classes,
        "inputs": list(exported.inputs),
        "input": exported.input_doc,
        "output": exported.output_doc,
    }


def check_target(fmt: str | None, out: Path) -> str:
    """The format to write, from --format or out's suffix; UserError when they cannot work."""
    by_suffix = {suffix: name for name, suffix in FORMATS.items()}
    if fmt is None:
        if out.suffix.lower() not in by_suffix:
            raise UserError(f"cannot tell the format from '{out}'; name it *.safetensors or *.onnx, or give --format")
        fmt = by_suffix[out.suffix.lower()]
    if fmt not in FORMATS:
        raise UserError(f"unknown format '{fmt}'; use one of: {', '.join(FORMATS)}")
    if out.suffix.lower() != FORMATS[fmt]:
        raise UserError(f"--out '{out}' does not end in {FORMATS[fmt]}; name it "
                        f"'{out.with_suffix(FORMATS[fmt]).name}' or pick the format that fits it")
    if not out.parent.is_dir():
        raise UserError(f"folder '{out.parent}' does not exist; create it or pick another path")
    if fmt == "onnx":
        require_onnx()
    return fmt


def require_onnx():
    try:
        import onnx
    except ImportError:
        raise UserError(f"ONNX export needs the onnx package: {INSTALL_HINT}") from None
    return onnx


def safetensors_bytes(net: nn.Module, meta: dict) -> bytes:
    from safetensors.torch import save

    # contiguous: the trained G is channels_last, and safetensors stores plain row-major tensors.
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    return save(tensors, metadata={"gankit": json.dumps(meta), "format": "pt"})


def onnx_bytes(exported: Exported, meta: dict) -> bytes:
    """ONNX of the exported network on its named inputs (z (N, nz) -> images; a conditional
    generator takes (z, labels (N,) int64); a flow's velocity network (x, t[, labels]))."""
    net = exported.net
    onnx = require_onnx()
    buf = io.BytesIO()
    kwargs = {}
    # The TorchScript exporter: this graph is plain convolutions, BatchNorm, ReLU and tanh,
    # which it handles; the torch.export-based one (the default since PyTorch 2.9) needs
    # onnxscript besides onnx and takes ~5 s instead of ~0.2 s here. Torch before 2.5 has
    # no `dynamo` argument and only the TorchScript exporter.
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    with eval_mode(net), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notes: nothing a user can act on
        names, out = list(exported.inputs), exported.output
        torch.onnx.export(net, tuple(exported.inputs.values()), buf, input_names=names, output_names=[out],
                          dynamic_axes={**{k: {0: "batch"} for k in names}, out: {0: "batch"}},
                          opset_version=ONNX_OPSET, **kwargs)
    model = onnx.load_from_string(buf.getvalue())
    entry = model.metadata_props.add()
    entry.key, entry.value = "gankit", json.dumps(meta)
    model.doc_string = f"gankit {meta['model']} {exported.output} network: {meta['input']} -> {meta['output']}"
    return model.SerializeToString()


def export_run(run: Path, out: Path, fmt: str | None = None) -> dict:
    """Write a run's generator to `out` (safetensors or ONNX, atomically); returns its metadata."""
    fmt = check_target(fmt, Path(out))
    config, task, state, native = load_run(Path(run), device="cpu")
    exported = task.exported()
    meta = metadata(config, state, task.nz, native, exported)
    data = safetensors_bytes(exported.net, meta) if fmt == "safetensors" else onnx_bytes(exported, meta)
    try:
        write_atomic(Path(out), data)
    except OSError as e:
        raise UserError(f"cannot write '{out}' ({e.strerror}); pick a writable path") from None
    return meta


def read_metadata(path: Path) -> dict:
    """The "gankit" metadata of an exported .safetensors or .onnx file."""
    path = Path(path)
    if path.suffix == ".onnx":
        model = require_onnx().load(str(path), load_external_data=False)
        props = {p.key: p.value for p in model.metadata_props}
    else:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            props = f.metadata() or {}
    if "gankit" not in props:
        raise UserError(f"'{path}' has no gankit metadata; it was not written by `gankit export`")
    return json.loads(props["gankit"])


def load_safetensors(path: Path) -> tuple[nn.Module, dict]:
    """(the exported network in eval mode, metadata) of a .safetensors file from `gankit export`:
    the generator, or a flow's velocity network."""
    from safetensors.torch import load_file

    meta = read_metadata(path)
    net = build_generator(meta)
    net.load_state_dict(load_file(str(path)))
    return net, meta

"""gankit from Python: train, load, sample, show and judge, as the CLI does.

    import gankit
    run = gankit.train(epochs=10)       # the tutorial's DCGAN on MNIST, as `gankit train`
    run                                 # in Jupyter: the real and the generated grid side by side
    images = run.sample(16, seed=0)     # uint8 (16, 28, 28), as `gankit sample --n 16 --seed 0`
    run.evaluate()                      # FID, KID, ... beside the real floor, as `gankit eval`

Each function is a thin layer over the modules the CLI calls, so the two give the same
images, figures and errors: a mistake raises gankit.UserError (a GankitError) with the
CLI's one-line message, and nothing here exits the interpreter. Stopping `train` (Ctrl+C,
or the stop button of a notebook) finishes the step, saves, and returns the Run; its
`resume()` goes on exactly as `gankit train --resume` does.
"""

from __future__ import annotations

import base64
import dataclasses
import difflib
import html
import inspect
import io
import os
import textwrap
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gankit import report, sampling
from gankit.checkpoint import about, find_checkpoint
from gankit.checks import whole_number
from gankit.config import TrainConfig
from gankit.errors import Stopped, UserError
from gankit.export import export_run
from gankit.metrics.judge import judge_run
from gankit.registry import load_dataset, task_class
from gankit.runs import default_out, load_run, load_split, resume_with
from gankit.training.loop import real_images
from gankit.training.loop import train as loop_train
from gankit.training.signals import signal_name
from gankit.training.task import SAMPLE_GRID


def say(message: str) -> None:
    """What training tells the user: a line on stdout, which a notebook shows as plain output
    (stderr would be shown as an error)."""
    print(message, flush=True)


class Run:
    """A run folder (or a checkpoint file) seen from Python: its settings, its figures, and
    its generator, loaded without optimizers on first use and again when the checkpoint
    changes. gankit.train and gankit.load make one; in Jupyter it shows itself."""

    def __init__(self, path: str | os.PathLike, *, device: str = "cpu", note: str | None = None,
                 sampling: dict | None = None):
        self.path = Path(path)
        self.device = device      # where sample, grid and walk run (cpu: the same images as `gankit sample`)
        self.note = note          # how its last training ended, when not by finishing
        # How it samples, in place of the run's own settings (gankit.runs.SAMPLING_OVERRIDES:
        # a flow's ode_steps, solver, guidance), as `gankit sample --ode-steps N` etc.
        self.sampling = {k: plain(v) for k, v in (sampling or {}).items()}
        self._cache: dict = {}    # device -> (checkpoint's identity, LoadedRun)
        self.loaded()             # a path that is not a run fails here, not at the first sample

    # --- what it is -------------------------------------------------------------------------
    def loaded(self, device: str | None = None):
        """The run loaded for sampling on `device` (default: the Run's): gankit.runs.LoadedRun."""
        device = device or self.device
        checkpoint = find_checkpoint(self.path)
        stat = checkpoint.stat()
        key = (str(checkpoint), stat.st_mtime_ns, stat.st_size)
        if self._cache.get(device, (None,))[0] != key:
            self._cache[device] = (key, load_run(self.path, device=device, sampling=self.sampling))
        return self._cache[device][1]

    @property
    def config(self) -> TrainConfig:
        """Every setting of the run, recipe resolved (what config.json holds)."""
        return self.loaded().config

    @property
    def folder(self) -> Path:
        """The run folder: the path given, or the folder of a checkpoint file's checkpoints/."""
        if self.path.is_file():
            return self.path.parent.parent if self.path.parent.name == "checkpoints" else self.path.parent
        return self.path

    @property
    def step(self) -> int:
        return about(self.loaded().state).step

    @property
    def metrics(self) -> list[dict]:
        """metrics.jsonl's rows, one per finished epoch (losses, images/s, eval_* figures)."""
        path = self.folder / "metrics.jsonl"
        return report.read_metrics(path) if path.is_file() else []

    def summary(self) -> str:
        """One line: model, data, progress, the last epoch's losses and judge's figures."""
        config, metrics = self.config, self.metrics
        facts = about(self.loaded().state)
        per_epoch = facts.dataset_size // (config.batch_size * task_class(config.model).batches_per_step(config))
        text = f"{config.model}{task_class(config.model).summary(config)} on {config.dataset}: step {facts.step}"
        if per_epoch:
            text += f", epoch {facts.step // per_epoch} of {config.epochs}"
        if metrics:
            last = metrics[-1]
            names = [k for k in ("loss_d", "loss_g", "neg_elbo", "test_neg_elbo", "loss", "eval_fid") if k in last]
            text += "; " + ", ".join(f"{k} {last[k]:.4g}" for k in names)
        return text + (f" ({self.note})" if self.note else "")

    def __repr__(self) -> str:
        return f"<gankit.Run '{self.path}': {self.summary()}>"

    # --- images -----------------------------------------------------------------------------
    def sample(self, n: int, seed: int = 0, label: int | None = None, *, batch_size: int = 500) -> np.ndarray:
        """n generated images as uint8 (n, H, W), or (n, H, W, 3) for RGB, at the data's size:
        the array `gankit sample RUN --n N --seed S` writes. `label`: a conditional run's class
        (default: the classes in turn)."""
        whole_number(n, "n")
        return sampling.to_array(self._generate(n, seed, label, batch_size))

    def grid(self, n: int = 64, seed: int = 0, label: int | None = None, *, nrow: int | None = None) -> Image.Image:
        """n generated images as one picture, nrow a row (default: a square): `sample --grid`."""
        whole_number(n, "n")
        return picture(sampling.grid(self._generate(n, seed, label, 500), nrow=nrow))

    def real_grid(self) -> Image.Image:
        """The 64 training images the run shows beside its own (samples/real.png)."""
        path = self.folder / "samples" / "real.png"
        if path.is_file():
            with Image.open(path) as image:
                return image.copy()
        config = self.config
        return picture(sampling.grid(real_images(load_split(config, "train"), config.seed), nrow=8))

    def pictures(self, epoch: int | None = None) -> dict[str, Image.Image]:
        """The grids training drew after `epoch` (default: the last): "fake", the fixed noise's
        images; a VAE's "recon", rows of test images each above its reconstruction."""
        found = {}
        for path in sorted((self.folder / "samples").glob("*_epoch_*.png")):
            name, _, number = path.stem.rpartition("_epoch_")
            if number.isdigit() and (epoch is None or int(number) == epoch):
                found[name] = path  # sorted: the last epoch's wins
        if epoch is not None and not found:
            raise UserError(f"no pictures of epoch {epoch} in '{self.folder}/samples'; epochs 1 to "
                            f"{len(self.metrics)} have some")
        pictures = {}
        for name, path in found.items():
            with Image.open(path) as image:
                pictures[name] = image.copy()
        return pictures

    def walk(self, rows: int = 8, steps: int = 8, seed: int = 0, label: int | None = None) -> Image.Image:
        """Latent walks, one a row: `steps` images from one random z to another by slerp, as
        `gankit sample --interpolate` draws them."""
        whole_number(rows, "rows")
        _, task, _, native = self.loaded()
        sampling.check_label(task, label, self.path)
        images = sampling.walks(task, rows, steps, seed=seed, native=native, label=label)
        return picture(sampling.grid(images, nrow=steps))

    def _generate(self, n: int, seed: int, label: int | None, batch_size: int) -> torch.Tensor:
        _, task, _, native = self.loaded()
        sampling.check_label(task, label, self.path)
        return sampling.generate(task, n, seed=seed, native=native, batch_size=batch_size, label=label)

    # --- figures ----------------------------------------------------------------------------
    def evaluate(self, n: int = 10000, seed: int = 0, *, features: str = "evaluator", reference=None,
                 feature_weights=None, device: str = "auto", progress: bool = True) -> dict:
        """The judge's figures for n samples, with the real floor under "floor": the object
        `gankit eval RUN --json` prints. features="evaluator": gankit's own MNIST classifier
        (FID, KID, classifier score, precision, recall, modes, KL to uniform; a conditional run's
        class accuracy); "inception": Inception-v3, the figures papers quote, against the run's
        training images or the folder `reference`, with the network file `feature_weights`
        (default: gankit's cache)."""
        whole_number(n, "n")
        return judge_run(self.loaded(device), n=n, seed=seed, features=features, progress=progress,
                         reference=plain(reference), feature_weights=plain(feature_weights), device=device)

    def plot_losses(self):
        """A matplotlib Figure of the per-epoch losses and judge's figures (losses.png)."""
        return report.loss_figure(self.metrics)

    # --- going on ---------------------------------------------------------------------------
    def resume(self, epochs: int | None = None, **changes) -> Run:
        """Go on training to `epochs` in all (default: the run's own), exactly as `gankit train
        --resume RUN` does; `changes`: the settings a resume may change (max_steps, device,
        progress, data_dir, save_every, eval_every, precision, cuda_graph, tensorboard).
        Returns this Run, at its new checkpoint."""
        if epochs is not None:
            changes["epochs"] = epochs
        config, state = resume_with(self.path, changes)  # a checkpoint file: its run folder, as the CLI
        self.note = train_config(config, state).note
        self._cache.clear()
        return self

    def export(self, path: str | os.PathLike, format: str | None = None) -> dict:
        """Write the generator alone, as `gankit export` does (format from the suffix:
        .safetensors or .onnx); returns the metadata written with it."""
        return export_run(self.path, Path(path), format)

    # --- in Jupyter -------------------------------------------------------------------------
    def _showcase(self) -> tuple[Image.Image, Image.Image, str]:
        """(real grid, generated grid, caption of the generated one) for the notebook display."""
        fake = self.pictures().get(SAMPLE_GRID)
        caption = f"generated, epoch {len(self.metrics)}"
        if fake is None:  # no epoch finished yet: the fixed noise's images, drawn now
            fake, caption = self.grid(64, seed=self.config.seed, nrow=8), f"generated, step {self.step}"
        return self.real_grid(), fake, caption

    def _repr_html_(self) -> str:
        real, fake, caption = self._showcase()
        cells = "".join(f'<td style="text-align:center">{label}<br>{img_tag(image)}</td>'
                        for label, image in (("real", real), (caption, fake)))
        return (f"<div><code>{self.path}</code>: {html.escape(self.summary())}"
                f"<table><tr>{cells}</tr></table></div>")

    def _repr_png_(self) -> bytes:
        real, fake, _ = self._showcase()
        return png_bytes(side_by_side(real, fake))


# --- building a run ---------------------------------------------------------------------------
def train(**settings) -> Run:
    # The signature and the help text are made from TrainConfig below the function.
    config = config_from(settings)
    if config.out is None:  # picked here, so that a run stopped early is still found
        config = dataclasses.replace(config, out=str(default_out(config)))
    return train_config(config, None)


def config_from(settings: dict) -> TrainConfig:
    """A TrainConfig of keyword arguments, or UserError naming the one that is wrong."""
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    for name in settings:
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise UserError(f"gankit.train has no setting '{name}'; {hint}help(gankit.train) lists them "
                            "(go on with a run: gankit.load(RUN).resume())")
    return TrainConfig(**{k: plain(v) for k, v in settings.items()})


def plain(value):
    """A NumPy number as the Python number it holds, a path as a string: what config.json keeps."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def train_config(config: TrainConfig, state: dict | None) -> Run:
    """Train from scratch (state None) or go on from a checkpoint's state; the Run it made.
    A stop request (SIGINT: Ctrl+C, a notebook's stop button) ends the step and saves; an
    interrupt that cannot wait (a second one) leaves the last checkpoint, which is exact too."""
    try:
        return Run(loop_train(config, resume=state, log=say))
    except Stopped as e:
        run = Run(config.out)
        run.note = f"stopped by {signal_name(e.signum)} at step {run.step}, checkpoint saved; run.resume() goes on"
    except KeyboardInterrupt:
        try:
            run = Run(config.out)
        except UserError:  # before the first checkpoint: nothing to go on from
            raise KeyboardInterrupt from None
        run.note = f"interrupted; the last checkpoint is at step {run.step}; run.resume() goes on from there"
    say(run.note)
    return run


def settings_help() -> str:
    """Every TrainConfig field as `name: type = default` and its meaning, for help(gankit.train)."""
    lines = []
    for f in dataclasses.fields(TrainConfig):
        lines.append(f"        {f.name}: {f.type} = {f.default!r}")
        lines += textwrap.wrap(f.metadata["doc"], 92, initial_indent=" " * 12, subsequent_indent=" " * 12)
    return "\n".join(lines)


train.__signature__ = inspect.Signature(
    [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
     for f in dataclasses.fields(TrainConfig)], return_annotation="Run")
train.__doc__ = f"""Train a model into a run folder and return it as a Run: `gankit train` from Python.

    The keyword arguments are the CLI's flags (--batch-size is batch_size), with the same
    defaults: gankit.train() trains the tutorial's DCGAN on MNIST for 10 epochs into
    runs/dcgan-mnist. A bad value raises gankit.UserError with the CLI's message. Stopping it
    (Ctrl+C, a notebook's stop button) ends the step, saves and returns the Run: run.resume()
    goes on, exactly.

    Settings:
{settings_help()}
    """


def load(path: str | os.PathLike, device: str = "cpu", **sampling) -> Run:
    """A run folder (or a checkpoint file) as a Run, for sampling, judging, exporting and going
    on. Its generator is built without optimizers, on `device` (cpu: the images of `gankit
    sample`; cuda: faster, equal to float rounding). `sampling`: how it samples, in place of
    the run's own settings, as the flags of `gankit sample`, `eval` and `serve`: a flow's
    ode_steps, solver and guidance (gankit.load(run, ode_steps=50).sample(16))."""
    return Run(path, device=device, sampling=sampling)


# --- data and pictures ------------------------------------------------------------------------
def load_data(dataset: str = TrainConfig.dataset, split: str = "train", data_dir: str | None = None,
              ) -> tuple[np.ndarray, np.ndarray]:
    """A dataset as gankit trains on it: (images, labels), uint8 (N, H, W) or (N, H, W, 3) and
    int64 (N,) (-1 where unlabelled). MNIST is fetched on first use, as by `gankit train`."""
    data = load_dataset(dataset, split=split, data_dir=plain(data_dir))
    return sampling.to_array(data.images), data.labels.numpy()


def show(images, nrow: int | None = None) -> Image.Image:
    """uint8 images, (N, H, W) or (N, H, W, 3) as `sample` and `load_data` give them, as one
    grid picture, nrow a row (default: a square)."""
    array = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if array.ndim not in (3, 4) or len(array) == 0:
        raise UserError(f"show takes images of shape (N, H, W) or (N, H, W, 3), got an array of shape "
                        f"{tuple(array.shape)}; for one image, show(image[None])")
    if array.dtype != np.uint8:
        raise UserError(f"show takes uint8 images (0 to 255), got {array.dtype}; convert with "
                        "((x + 1) * 127.5).round().clip(0, 255).astype('uint8') for images in [-1, 1]")
    return picture(sampling.grid(sampling.from_array(array, "images"), nrow=nrow))


def picture(array: np.ndarray) -> Image.Image:
    """A (rows, cols, C) uint8 picture as a PIL image (grayscale for one channel)."""
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


def side_by_side(left: Image.Image, right: Image.Image, gap: int = 8) -> Image.Image:
    mode = "L" if left.mode == right.mode == "L" else "RGB"
    canvas = Image.new(mode, (left.width + gap + right.width, max(left.height, right.height)), 255 if
                       mode == "L" else (255, 255, 255))
    canvas.paste(left.convert(mode), (0, 0))
    canvas.paste(right.convert(mode), (left.width + gap, 0))
    return canvas


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def img_tag(image: Image.Image) -> str:
    """An <img> of the picture, scaled up without blur so that 28 px digits can be seen."""
    width = image.width * max(1, 256 // image.width)
    data = base64.b64encode(png_bytes(image)).decode()
    return f'<img src="data:image/png;base64,{data}" style="width:{width}px;image-rendering:pixelated">'

"""The task protocol: everything the loop, sampling, serving and export may ask of a model.

A task owns a model's modules and optimizers and knows its training step. The loop
(gankit.training.loop), the samplers (gankit.sampling), the explorer (gankit.serve) and
export (gankit.export) use the members below and nothing else, so a new model is a task
class in gankit/training/, its nn.Modules in gankit/models/, and one line in
gankit/registry.py.

Class members (read before a task exists):
- `title`, `maker`: how a person calls the model and the part that draws images
  ("DCGAN", "the generator"), for the explorer's page.
- `defaults`: the model's defaults for settings the user left as None (lr, betas, width, ...).
- `settings()`: the config fields the model reads; another model's are refused for it.
- `resolve(config)`: those defaults for this config (a GAN adds its recipe's); explicit values win.
- `check(config)`: refuse settings that cannot work for this model, with a UserError.
- `summary(config)`: what the log line that starts training adds after the model's name.
- `metric_names`: the step's metrics; the first two go on the progress bar.
- `hparam_tags`: the TensorBoard tags shown beside the run's settings in the HPARAMS tab.
- `shape_settings`: the config fields its weights take their shapes from (besides the image
  size, channels and classes), named when a checkpoint does not fit.
- `native_pixels`: True when the network works at the data's native size (no padding).
- `takes_ema`, `takes_labels`: whether `--ema` (sampling from averaged weights) and
  `--conditional` (class labels for G and D) apply to this model.
- `build_sampler(config, meta)`: a fresh, untrained network of an export's shape (what
  `exported()` writes: the sampler, or a flow's velocity network).
- `sampling_summary(config)`: how sampling draws an image, for `gankit eval`'s speed line
  ("" for one network pass; a flow: its solver, steps and network evaluations).

Instance members:
- `__init__(config, *, channels, device, native_size, optimizers=True)`: modules with their
  seeded initial weights; optimizers=False for a task that only samples.
- `modules` (name -> nn.Module, what a checkpoint stores) and `optimizers` (name -> optimizer).
- `nz`: the length of z; `channels`: of the images it makes; `num_classes`: classes the
  sampler is conditioned on (0: none); `grid_columns`: images a row in the per-epoch grids.
- `noise(n, rng=None)`, `generate(z, labels=None)`, `sampler()`: z, images in [-1, 1] from z,
  and the module that does that.
- `exported()`: what `gankit export` writes (Exported: the network, example inputs by name,
  what they and the output are). The base class's: the sampler, z (and labels); a flow
  writes its velocity network, v(x, t, labels), which an ODE solver of the user's drives.
- `step(real, labels=None, *, regularize=False) -> {name: 0-d tensor}`: one training step.
  `batches_per_step(config)` (a class method): how many batches of batch_size real images
  one step takes (a GAN with several D updates per G update); `regularizes(step)`: whether step number `step` (from 0)
  runs with regularize=True (a lazy penalty: a step of another shape, its own CUDA graph).
- `pictures(fixed_z, shown)`, `evaluate(test, rng)`: the per-epoch grids and test figures.
- `distribute(ranks)`: train as one of several torchrun ranks.

The rule for `step`: it must be capturable as a CUDA graph (gankit.training.runner
replays it). So no host sync (no .item(), float() or printing of a tensor), no Python
branching on tensor values, random draws on the device, and metrics returned as 0-d
device tensors that the loop reads when it chooses.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

# The per-epoch grid of generated images, samples/fake_epoch_NNN.png: the name gankit 0.1.0
# gave it, which run folders and gankit.Run.pictures() keep.
SAMPLE_GRID = "fake"


class Exported(NamedTuple):
    """What `gankit export` writes of a task: `net` called on `inputs` (name -> an example
    tensor, batch 2; the batch axis is dynamic in ONNX), with the output named `output`;
    `input_doc` and `output_doc` say what they are, for the file's metadata."""
    net: nn.Module
    inputs: dict[str, torch.Tensor]
    output: str
    input_doc: str
    output_doc: str


class Task:
    """The members every task shares; subclasses fill in the rest of the protocol."""

    title = "model"
    maker = "the model"
    defaults: dict = {}
    metric_names: tuple[str, ...] = ()
    hparam_tags: tuple[str, ...] = ()
    shape_settings: tuple[str, ...] = ()
    native_pixels = False
    takes_ema = False
    takes_labels = False
    nz: int
    channels: int
    device: torch.device
    num_classes = 0
    grid_columns = 8  # 64 images as 8x8, as in the tutorial

    @classmethod
    def resolve(cls, config) -> dict:
        return dict(cls.defaults)

    @classmethod
    def settings(cls) -> set[str]:
        return set(cls.defaults)

    @classmethod
    def batches_per_step(cls, config) -> int:
        return 1

    @classmethod
    def check(cls, config) -> None:
        pass

    @classmethod
    def summary(cls, config) -> str:
        return ""

    @classmethod
    def sampling_summary(cls, config) -> str:
        return ""

    @property
    def modules(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def noise(self, n: int, rng: torch.Generator | None = None) -> torch.Tensor:
        """z ~ N(0, I), (n, nz). Drawn on the CPU when an rng is given, so that a seed
        gives the same z on every device; on the device otherwise (the step's draws)."""
        if rng is not None:
            return torch.randn(n, self.nz, generator=rng).to(self.device)
        return torch.randn(n, self.nz, device=self.device)

    def sampler(self) -> nn.Module:
        raise NotImplementedError

    def exported(self) -> Exported:
        """The sampler, z (N, nz) -> images (N, C, S, S); a conditional one takes labels too."""
        inputs = {"z": torch.zeros(2, self.nz)}
        doc = "z: float32 (N, nz) ~ N(0, I)"
        if self.num_classes:
            inputs["labels"] = torch.zeros(2, dtype=torch.long)
            doc += f"; labels: int64 (N,) in [0, {self.num_classes})"
        return Exported(self.sampler(), inputs, "images", doc,
                        "images: float32 (N, channels, image_size, image_size) in [-1, 1]")

    def regularizes(self, step: int) -> bool:
        return False

    def evaluate(self, test: torch.Tensor, rng: torch.Generator) -> dict[str, float]:
        """Per-epoch figures on the test split; none unless a task has some."""
        return {}

    def distribute(self, ranks) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot train under torchrun")

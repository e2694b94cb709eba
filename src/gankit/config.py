"""Every setting of a training run, with its default and the reason for it.

One dataclass; the CLI fills it, the run folder keeps it as config.json, and a
checkpoint carries it so that `--resume` and `gankit sample` rebuild the same model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from gankit.errors import UserError
from gankit.registry import (
    DEFAULT_DATASET,
    DEFAULT_MODEL,
    conditional_needs_labels,
    dataset_spec,
    models_that,
    task_class,
)
from gankit.training.gan import DEFAULT_RECIPE


@dataclass
class TrainConfig:
    # What to learn from.
    dataset: str = DEFAULT_DATASET
    data_dir: str | None = None       # None: $GANKIT_DATA, else the per-user cache folder
    image_size: int | None = None     # None: 32 for MNIST-like 28x28 data (padded), else 64
    channels: int | None = None       # None: from the data (1 for MNIST; folder images: 3)
    fake_size: int = 1024             # images in the `fake` dataset (smoke tests)
    stacked_size: int = 60000         # images in stacked-mnist's train split (VEEGAN/PacGAN: 128k; 60k = MNIST's size)

    # The model (gankit.registry.MODELS; the DCGAN: the tutorial's blocks, nz and width as in
    # the DCGAN paper). Settings left as None come from the model's task class (`defaults`).
    model: str = DEFAULT_MODEL
    nz: int = 100                     # GAN: length of z (DCGAN paper: 100)
    latent_dim: int | None = None     # VAE: length of z
    width: int | None = None          # base width of the conv nets (DCGAN: 64)
    recipe: str = DEFAULT_RECIPE
    init: str | None = None           # "normal" N(0, 0.02) | "pytorch" (PyTorch's default)
    d_input_bn: bool | None = None    # BatchNorm on D's first block
    edge: str | None = None           # "4x4": 1x1 <-> 4x4 with stride 1; "1x1": k4 s2 p1 all the way
    # DCGAN only: feed the class label to G (an embedding beside z) and D (a projection
    # discriminator, Miyato & Koyama 2018); models/dcgan.py says why that form.
    conditional: bool = False
    num_classes: int | None = None    # None: from the data (the dataset's classes, else labels.max() + 1)
    # GAN: the field's options since 2015 (training/gan.py lists them; None: from the
    # recipe, else off). docs/results.md ("Modern recipes") measures each.
    arch: str | None = None           # "dcgan" (the tutorial's) | "resnet" (SNGAN's, appendix B)
    loss: str | None = None           # gankit.training.losses.LOSSES; bce (the tutorial's) | hinge | lsgan
    sn: bool | None = None            # spectral normalization of every layer of D (Miyato et al. 2018)
    d_bn: bool | None = None          # BatchNorm in D's hidden blocks (dcgan arch; SNGAN's D has none)
    r1: float | None = None           # R1 penalty weight gamma on reals (Mescheder et al. 2018); 0: off
    r1_every: int | None = None       # add it every k steps, scaled by k (lazy, StyleGAN2: 16)
    lr_d: float | None = None         # D's learning rate (None: lr); TTUR (Heusel et al. 2017) sets two
    lr_g: float | None = None         # G's learning rate (None: lr)
    d_steps: int | None = None        # D updates per G update, each on its own batch (SNGAN: 5)
    diffaugment: str | None = None    # DiffAugment policy (Zhao et al. 2020): color,translation,cutout | none
    pack: int | None = None           # D judges this many samples at once (PacGAN, Lin et al. 2018); 1: off

    # The optimizer: Adam, lr and beta1 from the DCGAN paper (Sec. 4); beta2 from the recipe.
    lr: float | None = None
    beta1: float | None = None
    beta2: float | None = None
    # DCGAN: sample from an exponential moving average of G's weights with this decay
    # (Yazici et al. 2019); 0 = off, sample from G itself. docs/results.md has the measurement.
    ema: float | None = None

    # The run.
    batch_size: int | None = None     # None: the model's (128 for every model) or its recipe's
    epochs: int = 10
    max_steps: int | None = None      # stop after this many steps in total (smoke tests)
    seed: int = 0
    device: str = "auto"
    # bf16 autocast where the hardware has it (auto), else fp32; docs/performance.md measures it.
    precision: str = "auto"
    # On CUDA: capture the whole step once as a CUDA graph and replay it (no effect on a CPU).
    cuda_graph: bool = True
    out: str | None = None
    progress: bool = True
    # Log losses, eval figures, grids and these settings to RUN/tensorboard for `tensorboard
    # --logdir runs`; a writer that cannot be made costs a warning, never the run.
    tensorboard: bool = True
    # Judge samples with the evaluator (FID, KID, modes, ...; mnist, fashion-mnist,
    # stacked-mnist) every E epochs and at the end; 0: never. None: at the end only.
    eval_every: int | None = None
    # Checkpoint also inside epochs: every N steps ("500") or every N minutes ("10m");
    # "0" saves at epoch ends only. 10 minutes bounds what a crash can cost on a slow CPU.
    save_every: str = "10m"

    def resolved(self) -> "TrainConfig":
        """A copy with every None filled in from the model's defaults (for the DCGAN, with
        its recipe's); explicit values always win."""
        defaults = task_class(self.model).resolve(self)
        values = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        return dataclasses.replace(self, **values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """A saved config (config.json, a checkpoint's, an export's). Settings that gankit
        has gained since it was saved take their defaults, which leave the model as it was."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names}).resolved()


PRECISIONS = ("auto", "fp32", "bf16")


def validate(config: TrainConfig) -> None:
    """Refuse values that cannot work, each with a message that says what to use instead.
    The model's own settings are its task class's to check (Task.check)."""
    from gankit.models.dcgan import IMAGE_SIZES

    def positive(name: str, value) -> None:
        if value is not None and value <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be a positive number, got {value}")

    spec = dataset_spec(config.dataset)
    task = task_class(config.model)
    for name in ("epochs", "batch_size", "max_steps", "nz", "width", "latent_dim", "fake_size", "stacked_size", "lr",
                 "lr_d", "lr_g", "num_classes"):
        positive(name, getattr(config, name))
    for name in ("lr", "lr_d", "lr_g"):
        value = getattr(config, name)
        if value is not None and not value <= 10:  # also refuses inf and nan
            raise UserError(f"--{name.replace('_', '-')} {value} is far beyond any learning rate that trains; "
                            "use a value like 2e-4")
    foreign_settings(config, task)
    if config.image_size is not None and config.image_size not in IMAGE_SIZES:
        raise UserError(
            f"--image-size {config.image_size} is not supported: use a power of two from "
            f"{IMAGE_SIZES[0]} to {IMAGE_SIZES[-1]} ({', '.join(map(str, IMAGE_SIZES))})"
        )
    if config.channels is not None and config.channels not in (1, 3):
        raise UserError(f"--channels must be 1 (grayscale) or 3 (RGB), got {config.channels}")
    for name in ("beta1", "beta2"):
        value = getattr(config, name)
        if value is not None and not 0.0 <= value < 1.0:
            raise UserError(f"--{name} must be in [0, 1), got {value}")
    if config.ema is not None and not 0.0 <= config.ema < 1.0:
        raise UserError(f"--ema must be in [0, 1) (a decay like 0.999; 0 turns it off), got {config.ema}")
    if config.ema and not task.takes_ema:
        raise UserError(f"--ema applies to the {models_that('takes_ema')} model only, not --model {config.model}")
    if config.conditional and not task.takes_labels:
        raise UserError(f"--conditional applies to the {models_that('takes_labels')} model only, "
                        f"not --model {config.model}")
    task.check(config)
    if config.conditional and not spec.labelled:  # random labels: nothing to learn from them
        raise UserError(conditional_needs_labels())
    if config.device not in ("auto", "cpu", "cuda") and not config.device.startswith("cuda:"):
        raise UserError(f"--device must be auto, cpu or cuda, got '{config.device}'")
    if config.precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{config.precision}'")
    parse_save_every(config.save_every)


def foreign_settings(config: TrainConfig, task) -> None:
    """Refuse a setting that belongs to another model (`--sn` for a VAE): it would be
    silently ignored. A model's own settings are its task's `settings()`."""
    from gankit.registry import MODELS

    for name, other in MODELS.items():
        for field in sorted(other.settings() - task.settings()):
            if getattr(config, field, None) not in (None, False, 0):
                raise UserError(f"--{field.replace('_', '-')} applies to the {name} model only, not --model "
                                f"{config.model}")


def parse_save_every(text: str) -> tuple[int, float]:
    """"500" -> (500 steps, 0 s); "10m" -> (0 steps, 600 s); "0" -> (0, 0): epoch ends only."""
    value = str(text).strip().lower()
    try:
        if value.endswith(("m", "min")):
            minutes = float(value.rstrip("min"))
            if minutes > 0:
                return 0, minutes * 60.0
        elif int(value) >= 0:
            return int(value), 0.0
    except ValueError:
        pass
    raise UserError(f"--save-every '{text}' is not a step count (500) or minutes (10m); "
                    "use 0 to save at epoch ends only")

"""Every setting of a training run, with its default and the reason for it.

One dataclass; the CLI fills it, the run folder keeps it as config.json, and a
checkpoint carries it so that `--resume` and `gankit sample` rebuild the same model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from gankit.errors import UserError

# The two readings of the tutorial's recipe. "tutorial" is the text taken literally;
# it collapsed in our trials. "dcgan" adds the DCGAN paper's details that the
# tutorial leaves out; README "Recipes" has the measurements behind the choice.
RECIPES: dict[str, dict] = {
    "tutorial": {"init": "pytorch", "d_input_bn": True, "edge": "1x1", "beta2": 0.9},
    "dcgan": {"init": "normal", "d_input_bn": False, "edge": "4x4", "beta2": 0.999},
}
DEFAULT_RECIPE = "dcgan"
RECIPE_FIELDS = ("init", "d_input_bn", "edge", "beta2")

DATASETS = ("mnist", "fashion-mnist", "stacked-mnist", "folder", "fake")
MODELS = ("dcgan", "vae", "vae-mlp")

# Per-model defaults for the settings left as None. DCGAN: Adam lr 2e-4, beta1 0.5
# (DCGAN paper, Sec. 4). VAEs: Adam 1e-3 with PyTorch's default betas, as in PyTorch's
# classic VAE example; vae-mlp is that example (784-400-20). The conv VAE's width and
# latent size: README "VAE" has the measurements.
MODEL_DEFAULTS: dict[str, dict] = {
    "dcgan": {"lr": 2e-4, "beta1": 0.5, "width": 64, "latent_dim": None},
    "vae": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "width": 32, "latent_dim": 32},
    "vae-mlp": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "width": None, "latent_dim": 20},
}


@dataclass
class TrainConfig:
    # What to learn from.
    dataset: str = "mnist"
    data_dir: str | None = None       # None: $GANKIT_DATA, else the per-user cache folder
    image_size: int | None = None     # None: 32 for MNIST-like 28x28 data (padded), else 64
    channels: int | None = None       # None: from the data (1 for MNIST; folder images: 3)
    fake_size: int = 1024             # images in the `fake` dataset (smoke tests)
    stacked_size: int = 60000         # images in stacked-mnist's train split (VEEGAN/PacGAN: 128k; 60k = MNIST's size)

    # The model (DESIGN.md: the tutorial's blocks; nz and width as in the DCGAN paper).
    model: str = "dcgan"
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
    num_classes: int | None = None    # None: from the data (labels.max() + 1; stacked-mnist 1000)

    # The optimizer: Adam, lr and beta1 from the DCGAN paper (Sec. 4); beta2 from the recipe.
    lr: float | None = None
    beta1: float | None = None
    beta2: float | None = None
    # DCGAN: sample from an exponential moving average of G's weights with this decay
    # (Yazici et al. 2019); 0 = off, sample from G itself. README "Judging" has the measurement.
    ema: float = 0.0

    # The run.
    batch_size: int = 128
    epochs: int = 10
    max_steps: int | None = None      # stop after this many steps in total (smoke tests)
    seed: int = 0
    device: str = "auto"
    # bf16 autocast where the hardware has it (auto), else fp32; README "Speed" measures it.
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
        """A copy with every None filled in from the model's defaults and (for the DCGAN)
        the recipe; explicit values always win."""
        if self.model not in MODELS:
            raise UserError(f"unknown model '{self.model}'; use one of: {', '.join(MODELS)}")
        if self.recipe not in RECIPES:
            raise UserError(f"unknown recipe '{self.recipe}'; use one of: {', '.join(RECIPES)}")
        defaults = dict(MODEL_DEFAULTS[self.model])
        if self.model == "dcgan":
            defaults.update(RECIPES[self.recipe])
        values = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        return dataclasses.replace(self, **values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def validate(config: TrainConfig) -> None:
    """Refuse values that cannot work, each with a message that says what to use instead."""
    from gankit.models.dcgan import IMAGE_SIZES

    def positive(name: str, value) -> None:
        if value is not None and value <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be a positive number, got {value}")

    if config.dataset not in DATASETS:
        raise UserError(f"unknown dataset '{config.dataset}'; use one of: {', '.join(DATASETS)}")
    if config.model not in MODELS:
        raise UserError(f"unknown model '{config.model}'; use one of: {', '.join(MODELS)}")
    for name in ("epochs", "batch_size", "max_steps", "nz", "width", "latent_dim", "fake_size", "stacked_size", "lr",
                 "num_classes"):
        positive(name, getattr(config, name))
    if config.lr is not None and not config.lr <= 10:  # also refuses inf and nan
        raise UserError(f"--lr {config.lr} is far beyond any learning rate that trains; use a value like 2e-4")
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
    if not 0.0 <= config.ema < 1.0:
        raise UserError(f"--ema must be in [0, 1) (a decay like 0.999; 0 turns it off), got {config.ema}")
    if config.ema and config.model != "dcgan":
        raise UserError("--ema applies to the dcgan model only (a VAE samples from its decoder)")
    if config.conditional and config.model != "dcgan":
        raise UserError(f"--conditional applies to the dcgan model only, not --model {config.model}")
    if config.conditional and config.dataset == "fake":  # its labels are random: nothing to learn from them
        raise UserError(CONDITIONAL_NEEDS_LABELS)
    if config.init is not None and config.init not in ("normal", "pytorch"):
        raise UserError(f"--init must be 'normal' or 'pytorch', got '{config.init}'")
    if config.edge is not None and config.edge not in ("4x4", "1x1"):
        raise UserError(f"--edge must be '4x4' or '1x1', got '{config.edge}'")
    if config.device not in ("auto", "cpu", "cuda") and not config.device.startswith("cuda:"):
        raise UserError(f"--device must be auto, cpu or cuda, got '{config.device}'")
    if config.precision not in ("auto", "fp32", "bf16"):
        raise UserError(f"--precision must be auto, fp32 or bf16, got '{config.precision}'")
    parse_save_every(config.save_every)
    if config.dataset == "folder" and not config.data_dir:
        raise UserError("--dataset folder needs --data-dir pointing at a folder of PNG/JPEG images")


CONDITIONAL_NEEDS_LABELS = ("--conditional needs labelled data (mnist, fashion-mnist, stacked-mnist, "
                            "or a folder with one subfolder per class)")


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

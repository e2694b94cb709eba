"""Every setting of a training run, with its default and the reason for it.

One dataclass; the CLI fills it, the run folder keeps it as config.json, and a
checkpoint carries it so that `--resume` and `gankit sample` rebuild the same model.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field

from gankit.errors import UserError
from gankit.registry import (
    DEFAULT_DATASET,
    DEFAULT_MODEL,
    conditional_needs_labels,
    dataset_spec,
    models_that,
    task_class,
)
from gankit.training.gan import DEFAULT_RECIPE, recipe_settings


def setting(default, doc: str):
    """A TrainConfig field with its meaning: `gankit.train`'s signature and help are built from
    these (gankit.api), so a setting's one description lives here, beside its default."""
    return field(default=default, metadata={"doc": doc})


@dataclass
class TrainConfig:
    # What to learn from.
    dataset: str = setting(DEFAULT_DATASET, "what to learn from: mnist, fashion-mnist, stacked-mnist, folder "
                           "(a folder of images, given as data_dir) or fake (random pixels, for smoke tests)")
    data_dir: str | None = setting(None, "where the data is; None: $GANKIT_DATA, else ~/.cache/gankit (MNIST is "
                                   "fetched there on first use)")
    image_size: int | None = setting(None, "the network's image size, 16 to 128; None: 32 for 28x28 data (padded), "
                                     "else 64")
    channels: int | None = setting(None, "1 (grayscale) or 3 (RGB); None: from the data")
    subset: int | None = setting(None, "train on the first N images of the train split only (a quick look on a "
                                 "slow machine); None: all of them")
    # Folders: CelebA's aligned faces are 178x218; the usual crop before resizing to 64 is 108 or 140.
    crop: str | int = setting("center", "folders: center (the centre square), none (the whole image, squeezed to "
                              "a square) or N (a centre crop of N x N pixels) before resizing")
    cache_dir: str | None = setting(None, "folders: where the decoded images are cached between runs; None: the "
                                    "data root (GANKIT_DATA, else ~/.cache/gankit), under folders/")
    hflip: bool = setting(False, "flip each training image left-right with probability 1/2, drawn on the training "
                          "device (faces, objects; not digits)")
    fake_size: int = setting(1024, "images in the fake dataset (smoke tests)")
    # stacked-mnist's train split: VEEGAN/PacGAN draw 128k; 60k is MNIST's size.
    stacked_size: int = setting(60000, "images in stacked-mnist's train split")

    # The model (gankit.registry.MODELS; the DCGAN: the tutorial's blocks, nz and width as in
    # the DCGAN paper). Settings left as None come from the model's task class (`defaults`).
    model: str = setting(DEFAULT_MODEL, "dcgan (the tutorial's), vae (a convolutional VAE) or vae-mlp (the "
                         "classic 784-400-20 VAE)")
    nz: int = setting(100, "GAN: the length of z (DCGAN paper: 100)")
    latent_dim: int | None = setting(None, "VAE: the length of z; None: vae 32, vae-mlp 20")
    width: int | None = setting(None, "base width of the conv nets; None: dcgan 64, vae 32")
    recipe: str = setting(DEFAULT_RECIPE, "GAN: a named set of settings (gankit.RECIPES): dcgan, tutorial (the text "
                          "taken literally), dcgan-b64-r1 (the best measured), sngan, ...; explicit settings win")
    init: str | None = setting(None, "GAN weight init: normal (N(0, 0.02), DCGAN paper), pytorch or xavier; None: "
                               "the recipe's")
    d_input_bn: bool | None = setting(None, "GAN: BatchNorm on D's first block; None: the recipe's")
    edge: str | None = setting(None, "GAN: 4x4 (1x1 <-> 4x4 with stride 1) or 1x1 (k4 s2 p1 all the way) for G's "
                               "first and D's last layer; None: the recipe's")
    # DCGAN only: an embedding beside z in G and a projection discriminator (Miyato &
    # Koyama 2018); models/dcgan.py says why that form.
    conditional: bool = setting(False, "DCGAN: feed the class label to G and D (labelled data only)")
    num_classes: int | None = setting(None, "conditional: classes; None: from the data")
    # GAN: the field's options since 2015 (training/gan.py lists them; None: from the
    # recipe, else off). docs/results.md ("Modern recipes") measures each.
    arch: str | None = setting(None, "GAN architecture: dcgan (the tutorial's) or resnet (SNGAN's, appendix B)")
    loss: str | None = setting(None, "GAN loss: bce (the tutorial's), hinge (SNGAN's) or lsgan (least squares)")
    sn: bool | None = setting(None, "GAN: spectral normalization of every layer of D (Miyato et al. 2018)")
    d_bn: bool | None = setting(None, "GAN: BatchNorm in D's hidden blocks (dcgan arch; off in the SN recipes)")
    r1: float | None = setting(None, "GAN: R1 penalty weight gamma on reals (Mescheder et al. 2018), e.g. 1; 0: off")
    r1_every: int | None = setting(None, "GAN: add R1 every k steps, scaled by k (lazy, as in StyleGAN2: 16)")
    lr_d: float | None = setting(None, "GAN: D's learning rate; None: lr (two rates: TTUR, Heusel et al. 2017)")
    lr_g: float | None = setting(None, "GAN: G's learning rate; None: lr")
    d_steps: int | None = setting(None, "GAN: D updates per G update, each on its own batch (SNGAN: 5); None: 1")
    diffaugment: str | None = setting(None, "GAN: DiffAugment policy for all D sees (Zhao et al. 2020), a "
                                      "comma-separated list of color, translation, cutout; None or none: off")
    pack: int | None = setting(None, "GAN: D judges this many samples at once (PacGAN, Lin et al. 2018); 1: off")

    # The optimizer: Adam, lr and beta1 from the DCGAN paper (Sec. 4); beta2 from the recipe.
    lr: float | None = setting(None, "Adam's learning rate; None: dcgan 2e-4 (DCGAN paper), VAEs 1e-3")
    beta1: float | None = setting(None, "Adam's beta1; None: dcgan 0.5 (DCGAN paper), VAEs 0.9")
    beta2: float | None = setting(None, "Adam's beta2; None: the recipe's (dcgan 0.999, tutorial 0.9)")
    # docs/results.md has the measurement.
    ema: float | None = setting(None, "DCGAN: sample from a moving average of G's weights with this decay, e.g. "
                                "0.999 (Yazici et al. 2019); 0: off")

    # The run.
    batch_size: int | None = setting(None, "images a batch; None: 128, or the recipe's")
    epochs: int = setting(10, "epochs in total, counted from the run's start")
    max_steps: int | None = setting(None, "stop after this many steps in total; None: epochs decide")
    seed: int = setting(0, "the seed of the weights, the data order and the noise: same seed, same run")
    device: str = setting("auto", "auto (a CUDA GPU when there is one), cpu, cuda or cuda:N")
    # docs/performance.md measures it.
    precision: str = setting("auto", "auto: bf16 autocast on hardware with native bf16 (recent GPUs, CPUs with "
                             "AMX or AVX512-BF16), else fp32; or fp32, bf16")
    cuda_graph: bool = setting(True, "on CUDA, capture the whole step once as a CUDA graph and replay it")
    out: str | None = setting(None, "the run folder; None: runs/<model>-<dataset>, numbered when taken")
    progress: bool = setting(True, "show progress bars")
    # A writer that cannot be made costs a warning, never the run.
    tensorboard: bool = setting(True, "log losses, figures, grids and settings to RUN/tensorboard (`tensorboard "
                                "--logdir runs`)")
    eval_every: int | None = setting(None, "judge 10,000 samples (FID, KID, modes, ...; mnist, fashion-mnist, "
                                     "stacked-mnist) every E epochs and at the end; 0: never; None: at the end")
    # 10 minutes bounds what a crash can cost on a slow CPU.
    save_every: str = setting("10m", "checkpoint also inside epochs: every N steps (\"500\") or N minutes "
                              "(\"10m\"); \"0\": at epoch ends only")

    def resolved(self) -> "TrainConfig":
        """A copy with every None filled in from the model's defaults (for the DCGAN, with
        its recipe's); explicit values always win. Settings of the wrong type are refused
        first (check_types): the defaults are looked up by them."""
        check_types(self)
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

    recipe_settings(config.recipe)  # a VAE's run must not ignore an unknown recipe either
    spec = dataset_spec(config.dataset)
    task = task_class(config.model)
    for name in ("epochs", "batch_size", "max_steps", "nz", "width", "latent_dim", "fake_size", "stacked_size", "lr",
                 "lr_d", "lr_g", "num_classes", "subset"):
        positive(name, getattr(config, name))
    for name in ("lr", "lr_d", "lr_g"):
        value = getattr(config, name)
        if value is not None and not value <= 10:  # also refuses inf and nan
            raise UserError(f"--{name.replace('_', '-')} {value} is far beyond any learning rate that trains; "
                            "use a value like 2e-4")
    foreign_settings(config, task)
    dataset_settings(config, spec)
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


# What each annotation of TrainConfig admits, and how a message names it. bool is an int in
# Python, so it is refused where a number is meant (epochs=True is a mistake, not 1 epoch).
TYPES = {"int": (numbers.Integral, "a whole number"), "float": (numbers.Real, "a number"),
         "str": (str, "text"), "bool": (bool, "True or False")}


def check_types(config: TrainConfig) -> None:
    """Refuse a setting of the wrong type (the Python API takes any object; the CLI's parser
    has already converted its text). TrainConfig.resolved calls it, so every run is checked."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        kinds = [k.strip() for k in str(f.type).split("|")]
        if value is None and "None" in kinds:
            continue
        if not any(isinstance(value, TYPES[k][0]) and (k == "bool" or not isinstance(value, bool))
                   for k in kinds if k != "None"):
            meaning = " or ".join(TYPES[k][1] if k != "None" else "None" for k in kinds)
            raise UserError(f"--{f.name.replace('_', '-')} must be {meaning}, got {value!r:.40}")


def foreign_settings(config: TrainConfig, task) -> None:
    """Refuse a setting that belongs to another model (`--sn` for a VAE): it would be
    silently ignored. A model's own settings are its task's `settings()`."""
    from gankit.registry import MODELS

    for model, other in MODELS.items():
        for name in sorted(other.settings() - task.settings()):
            if getattr(config, name, None) not in (None, False, 0):
                raise UserError(f"--{name.replace('_', '-')} applies to the {model} model only, not --model "
                                f"{config.model}")


def dataset_settings(config: TrainConfig, spec) -> None:
    """Refuse a setting of another dataset (`--crop` for MNIST), and check the dataset's own:
    a DatasetSpec names its settings and checks their values (`check`)."""
    from gankit.registry import DATASETS

    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for name, other in DATASETS.items():
        for setting_name in sorted(set(other.settings) - set(spec.settings)):
            if getattr(config, setting_name) != defaults[setting_name]:
                raise UserError(f"--{setting_name.replace('_', '-')} applies to --dataset {name} only, not "
                                f"--dataset {config.dataset}")
    if spec.check:
        spec.check(config)


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

"""Every setting of a training run, with its default and the reason for it.

One dataclass of plain values (names as strings, no lookups): the CLI's `gankit train`
flags and `gankit.train`'s keywords are built from its fields, the run folder keeps it as
config.json, and a checkpoint carries it so that `--resume` and `gankit sample` rebuild
the same model. What the names mean, and whether the values can work, is
gankit.resolve's to say (one pass, for the CLI, the API and resume alike).

A field's doc names no model, dataset, loss or recipe: the CLI lists each name-valued
setting's choices from the tables (gankit.registry.CHOICES), so the help cannot go stale.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from gankit.errors import UserError


def setting(default, doc: str):
    """A TrainConfig field with its meaning: `gankit train --help` and `gankit.train`'s help
    are built from these, so a setting's one description lives here, beside its default."""
    return field(default=default, metadata={"doc": doc})


@dataclass
class TrainConfig:
    # What to learn from.
    dataset: str = setting("mnist", "what to learn from: one of the datasets listed; folder: a folder of your own "
                           "images, given as data_dir (--data-dir)")
    data_dir: str | None = setting(None, "where the data is; None: $GANKIT_DATA, else ~/.cache/gankit (MNIST is "
                                   "fetched there on first use)")
    image_size: int | None = setting(None, "the network's image size, 16 to 128; None: the dataset's (32 for 28x28 "
                                     "digits, padded; 64 for folders)")
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
    fake_size: int = setting(1024, "images in the random-pixel dataset of the smoke tests")
    # stacked-mnist's train split: VEEGAN/PacGAN draw 128k; 60k is MNIST's size.
    stacked_size: int = setting(60000, "images in the train split of Stacked MNIST")

    # The model (gankit.registry.MODELS; the DCGAN: the tutorial's blocks, nz and width as in
    # the DCGAN paper). Settings left as None come from the model's task class (`defaults`).
    model: str = setting("dcgan", "the model family: the tutorial's DCGAN, a convolutional VAE, the classic "
                         "784-400-20 VAE, or Flow matching on the straight path (Lipman et al. 2023)")
    nz: int = setting(100, "GAN: the length of z (DCGAN paper: 100)")
    latent_dim: int | None = setting(None, "VAE: the length of z; None: the model's")
    width: int | None = setting(None, "base width of the conv nets; None: the model's")
    # The default is the best recipe measured at 10 epochs (docs/results.md, "The default");
    # a run folder keeps the recipe it was trained with, so changing it changes no old run.
    recipe: str = setting("dcgan-b64-r1-adam0", "GAN: a named set of settings (gankit.RECIPES; docs/results.md "
                          "measures them); explicit settings win")
    init: str | None = setting(None, "GAN weight init (N(0, 0.02) is the DCGAN paper's); None: the recipe's")
    d_input_bn: bool | None = setting(None, "GAN: BatchNorm on D's first block; None: the recipe's")
    edge: str | None = setting(None, "GAN: G's first and D's last layer, 1x1 <-> 4x4 with stride 1, or k4 s2 p1 "
                               "all the way; None: the recipe's")
    # DCGAN only: an embedding beside z in G and a projection discriminator (Miyato &
    # Koyama 2018); models/dcgan.py says why that form.
    conditional: bool = setting(False, "DCGAN and Flow matching: feed the class label to the networks (labelled data "
                                "only)")
    num_classes: int | None = setting(None, "conditional: classes; None: from the data")
    # GAN: the field's options since 2015 (training/gan.py lists them; None: from the
    # recipe, else off). docs/results.md ("Modern recipes") measures each.
    arch: str | None = setting(None, "GAN architecture: the tutorial's, or SNGAN's ResNet (its appendix B); None: "
                               "the recipe's")
    loss: str | None = setting(None, "GAN loss: the tutorial's BCE, SNGAN's hinge, or least squares; None: the "
                               "recipe's")
    sn: bool | None = setting(None, "GAN: spectral normalization of every layer of D (Miyato et al. 2018)")
    d_bn: bool | None = setting(None, "GAN: BatchNorm in D's hidden blocks (the DCGAN arch; off in the SN "
                                "recipes)")
    r1: float | None = setting(None, "GAN: R1 penalty weight gamma on reals (Mescheder et al. 2018), e.g. 1; 0: off")
    r1_every: int | None = setting(None, "GAN: add R1 every k steps, scaled by k (lazy, as in StyleGAN2: 16)")
    lr_d: float | None = setting(None, "GAN: D's learning rate; None: lr (two rates: TTUR, Heusel et al. 2017)")
    lr_g: float | None = setting(None, "GAN: G's learning rate; None: lr")
    d_steps: int | None = setting(None, "GAN: D updates per G update, each on its own batch (SNGAN: 5); None: 1")
    diffaugment: str | None = setting(None, "GAN: DiffAugment policy for all D sees (Zhao et al. 2020), a "
                                      "comma-separated list of its transforms; None or none: off")
    pack: int | None = setting(None, "GAN: D judges this many samples at once (PacGAN, Lin et al. 2018); 1: off")
    # Flow matching (training/flow.py): how training draws t, and how sampling solves the ODE;
    # None: the task's defaults, which measurement picks. The sampling three may also be given
    # to `gankit sample`, `eval` and `serve` (and gankit.load) to override a run's own.
    ode_steps: int | None = setting(None, "Flow matching: ODE solver steps from noise to image when sampling "
                                    "(heun: two network evaluations a step)")
    solver: str | None = setting(None, "Flow matching: the ODE solver of sampling: Euler, or Heun's trapezoid "
                                 "predictor-corrector")
    guidance: float | None = setting(None, "Flow matching, conditional: classifier-free guidance weight W >= 0, "
                                     "v = v_cond + W (v_cond - v_uncond) (Ho & Salimans 2022); 0: none")
    time_dist: str | None = setting(None, "Flow matching: how training draws t in [0, 1]: uniform, or logit-normal, "
                                    "sigmoid of N(0, 1) (Esser et al. 2024)")

    # The optimizer: Adam, lr and beta1 from the DCGAN paper (Sec. 4); beta2 from the recipe.
    lr: float | None = setting(None, "Adam's learning rate; None: the model's (the DCGAN paper's 2e-4 for the GAN)")
    beta1: float | None = setting(None, "Adam's beta1; None: the model's (the DCGAN paper's 0.5 for the GAN)")
    beta2: float | None = setting(None, "Adam's beta2; None: the recipe's (the tutorial's 0.9, the paper's 0.999)")
    # docs/results.md has the measurement.
    ema: float | None = setting(None, "DCGAN and Flow matching: sample from a moving average of the weights (G's, the "
                                "velocity network's) with this decay, e.g. 0.999 (Yazici et al. 2019); 0: off")

    # The run.
    batch_size: int | None = setting(None, "images a batch; None: 128, or the recipe's")
    epochs: int = setting(10, "epochs in total, counted from the run's start")
    max_steps: int | None = setting(None, "stop after this many steps in total; None: epochs decide")
    seed: int = setting(0, "the seed of the weights, the data order and the noise: same seed, same run")
    device: str = setting("auto", "auto (a CUDA GPU when there is one), cpu, cuda or cuda:N")
    # docs/performance.md measures it.
    precision: str = setting("auto", "auto: bf16 autocast on hardware with native bf16 (recent GPUs, CPUs with "
                             "AMX or AVX512-BF16), else fp32; or either of those always")
    cuda_graph: bool = setting(True, "on CUDA, capture the whole step once as a CUDA graph and replay it")
    out: str | None = setting(None, "the run folder; None: runs/<model>-<dataset>, numbered when taken")
    progress: bool = setting(True, "show progress bars")
    # A writer that cannot be made costs a warning, never the run.
    tensorboard: bool = setting(True, "log losses, figures, grids and settings to RUN/tensorboard (`tensorboard "
                                "--logdir runs`)")
    eval_every: int | None = setting(None, "judge 10,000 samples (FID, KID, modes, ...; datasets the evaluator "
                                     "knows) every E epochs and at the end; 0: never; None: at the end")
    # 10 minutes bounds what a crash can cost on a slow CPU.
    save_every: str = setting("10m", "checkpoint also inside epochs: every N steps (\"500\") or N minutes "
                              "(\"10m\"); \"0\": at epoch ends only")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """A saved config (config.json, a checkpoint's, an export's), as saved: settings that
        gankit has gained since take their defaults (None: resolved as the run was, which
        leaves the model as it was). gankit.resolve fills in and checks the rest."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


PRECISIONS = ("auto", "fp32", "bf16")


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

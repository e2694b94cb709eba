"""The GAN task, and its training step as the tutorial writes it: (1) update D, (2) update G.

Also the recipes (RECIPES: named settings, measured in docs/results.md), the two
architectures (ARCHS) and the model's defaults: the settings that only a GAN has live
here, beside the task that uses them. Each of the field's modern options is one setting
with its own switch, so that any combination can be tried and a recipe is only data:
- the loss (`--loss`, training/losses.py: the tutorial's BCE, hinge, least squares);
- spectral normalization of D (`--sn`, models/spectral.py) and BatchNorm in D (`--d-bn`);
- the R1 penalty on reals (`--r1 GAMMA`, every `--r1-every` steps, training/losses.py);
- separate learning rates (`--lr-d`, `--lr-g`) and D steps per G step (`--d-steps`);
- DiffAugment for everything D sees (`--diffaugment`, training/augment.py);
- packing, D judging m samples at once (`--pack m`);
- the architecture (`--arch dcgan|resnet`, models/dcgan.py, models/resnet.py).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
from torch import nn

from gankit.errors import UserError
from gankit.models import Ema, eval_mode
from gankit.models.dcgan import IMAGE_SIZES, Discriminator, Generator, dcgan_init
from gankit.models.resnet import RESNET_SIZES, ResDiscriminator, ResGenerator, sngan_init
from gankit.models.spectral import spectral_norm
from gankit.sampling import balanced_labels
from gankit.training.augment import DiffAugment, parse_policy
from gankit.training.losses import LOSSES, r1_penalty
from gankit.training.task import SAMPLE_GRID, Task

_DCGAN = {"init": "normal", "d_input_bn": False, "edge": "4x4", "beta2": 0.999}

# Named settings. "tutorial" is the text taken literally; it collapsed in our trials.
# "dcgan" adds the DCGAN paper's details that the tutorial leaves out (the default until
# the modern options were measured). The others are the field's published recipes, each
# with the optimizer settings it was published with, and the best we measured, which is
# the default (TrainConfig.recipe); docs/results.md ("Modern recipes") has the
# measurements. Explicit flags override a recipe.
RECIPES: dict[str, dict] = {
    "tutorial": {"init": "pytorch", "d_input_bn": True, "edge": "1x1", "beta2": 0.9},
    "dcgan": _DCGAN,
    # SNGAN (Miyato et al. 2018): hinge loss, SN in a D without BatchNorm, Adam (0, 0.9),
    # five D steps per G step, the ResNet of its appendix B with its Xavier init.
    "sngan": {"arch": "resnet", "init": "xavier", "loss": "hinge", "sn": True, "d_bn": False,
              "beta1": 0.0, "beta2": 0.9, "d_steps": 5},
    # SNGAN's "standard CNN" setting on the DCGAN architecture: hinge, SN, no BatchNorm in D,
    # one D step, Adam (0.5, 0.999) (its Table 1, setting C).
    "dcgan-sn": {**_DCGAN, "loss": "hinge", "sn": True, "d_bn": False},
    # The DCGAN with R1 (Mescheder et al. 2018), lazily every 16 steps as in StyleGAN2. Gamma 1:
    # Mescheder et al. use 10 at 64x64 and up; on 32x32 MNIST 1 is what we measured
    # (docs/results.md).
    "dcgan-r1": {**_DCGAN, "r1": 1.0},
    # The DCGAN with DiffAugment's full policy (Zhao et al. 2020).
    "dcgan-diffaugment": {**_DCGAN, "diffaugment": "color,translation,cutout"},
    # The paper's recipe with batch 64 (twice the updates an epoch) and R1 gamma 1
    # (docs/results.md, "Modern recipes, measured": FID less than half of the paper's
    # recipe's, over three seeds); the default until dcgan-b64-r1-adam0 was measured.
    "dcgan-b64-r1": {**_DCGAN, "batch_size": 64, "r1": 1.0},
    # The best we measured at 10 epochs on the DCGAN, and the default: dcgan-b64-r1 with the
    # Adam of StyleGAN2 (Karras et al. 2020), which trains with R1: beta1 0 (no momentum, so
    # G and D answer each other's latest move) and beta2 0.99 (docs/results.md, "The
    # default": below dcgan-b64-r1's three seeds in FID at every second epoch).
    "dcgan-b64-r1-adam0": {**_DCGAN, "batch_size": 64, "r1": 1.0, "beta1": 0.0, "beta2": 0.99},
}


def xavier_init(module: nn.Module) -> None:
    """SNGAN's init on its ResNet (models/resnet.sngan_init: Xavier-uniform, gain sqrt(2) in
    the residual paths); on any other net Xavier-uniform with gain 1 on every layer."""
    if any(isinstance(m, (ResGenerator, ResDiscriminator)) for m in module.modules()):
        sngan_init(module)
        return
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


INIT_FUNCTIONS: dict[str, Callable[[nn.Module], None]] = {
    "normal": dcgan_init,            # N(0, 0.02) (DCGAN paper, Sec. 4)
    "pytorch": lambda module: None,  # PyTorch's default
    "xavier": xavier_init,           # Xavier uniform (SNGAN's code)
}
EDGES = ("4x4", "1x1")         # models/dcgan.py says what each means


class Arch(NamedTuple):
    """An architecture: its G and D from the settings, the image sizes it supports, and the
    init it was published with (what `--arch NAME` brings along unless `--init` is given)."""
    generator: Callable[..., nn.Module]      # (config, image_size, channels, num_classes)
    discriminator: Callable[..., nn.Module]  # (config, image_size, channels, num_classes)
    sizes: tuple[int, ...]
    init: str


def _dcgan_g(config, image_size: int, channels: int, num_classes: int) -> nn.Module:
    return Generator(image_size=image_size, channels=channels, nz=config.nz, width=config.width,
                     edge=config.edge, num_classes=num_classes)


def _dcgan_d(config, image_size: int, channels: int, num_classes: int) -> nn.Module:
    return Discriminator(image_size=image_size, channels=channels, width=config.width, edge=config.edge,
                         d_input_bn=config.d_input_bn, norm=config.d_bn, num_classes=num_classes)


def _resnet_g(config, image_size: int, channels: int, num_classes: int) -> nn.Module:
    return ResGenerator(image_size=image_size, channels=channels, nz=config.nz, width=config.width,
                        num_classes=num_classes)


def _resnet_d(config, image_size: int, channels: int, num_classes: int) -> nn.Module:
    return ResDiscriminator(image_size=image_size, channels=channels, width=config.width, num_classes=num_classes)


ARCHS: dict[str, Arch] = {
    "dcgan": Arch(_dcgan_g, _dcgan_d, IMAGE_SIZES, "normal"),     # the tutorial's (models/dcgan.py)
    "resnet": Arch(_resnet_g, _resnet_d, RESNET_SIZES, "xavier"),  # SNGAN's (models/resnet.py)
}


def pack(x: torch.Tensor, m: int) -> torch.Tensor:
    """PacGAN (Lin et al. 2018): m images side by side along the channels, (N, C, H, W) ->
    (N/m, m C, H, W). D judges m samples at once, so a G that repeats itself is caught by
    the lack of variety inside a pack, which no single sample shows."""
    n, c, h, w = x.shape
    return x.reshape(n // m, m * c, h, w)


class GanTask(Task):
    """Generator, discriminator, their Adam optimizers, and the step that trains them."""

    title, maker = "DCGAN", "the generator"
    # Adam lr 2e-4, beta1 0.5 (DCGAN paper, Sec. 4); beta2 comes from the recipe. The
    # rest is off unless a recipe or a flag turns it on: the tutorial's model as it was.
    defaults = {"lr": 2e-4, "beta1": 0.5, "width": 64, "latent_dim": None, "batch_size": 128, "arch": "dcgan",
                "loss": "bce",
                "sn": False, "d_bn": True, "r1": 0.0, "r1_every": 16, "d_steps": 1, "diffaugment": "none",
                "pack": 1, "ema": 0.0}
    metric_names = ("loss_d", "loss_g", "d_real", "d_fake")
    hparam_tags = ("epoch/loss_d", "epoch/loss_g")
    shape_settings = ("arch", "nz", "width", "edge", "d_input_bn", "d_bn", "sn", "pack")
    takes_ema = True
    takes_labels = True

    @classmethod
    def resolve(cls, config) -> dict:
        settings = {**cls.defaults, **RECIPES[config.recipe]}  # the name was checked (gankit.resolve)
        if config.arch in ARCHS and config.init is None:  # --arch given: its own init, not the recipe's
            settings["init"] = ARCHS[config.arch].init
        lr = config.lr if config.lr is not None else settings["lr"]
        return {**settings, "lr_d": lr, "lr_g": lr}  # TTUR only when asked for

    @classmethod
    def settings(cls) -> set[str]:
        return set(cls.defaults) | {key for recipe in RECIPES.values() for key in recipe} | {"lr_d", "lr_g"}

    @classmethod
    def batches_per_step(cls, config) -> int:
        return config.d_steps  # each D update on its own batch of reals, as SNGAN's code does

    @classmethod
    def check(cls, config) -> None:
        """The GAN's own values (its names are gankit.resolve's to check, against CHOICES)."""
        try:
            parse_policy(config.diffaugment)
        except ValueError as e:
            raise UserError(f"--diffaugment: {e}") from None
        if config.r1 is not None and not (math.isfinite(config.r1) and config.r1 >= 0):
            raise UserError(f"--r1 must be a penalty weight >= 0 (gamma, e.g. 10; 0 turns it off), got {config.r1}")
        cls._check_shapes(config)

    @classmethod
    def _check_shapes(cls, config) -> None:
        sizes = ARCHS[config.arch or "dcgan"].sizes
        if config.image_size is not None and config.image_size not in sizes:
            raise UserError(f"--arch {config.arch} does not support --image-size {config.image_size}; "
                            f"use one of {', '.join(map(str, sizes))}")
        if config.pack and config.pack > 1:
            if config.conditional:
                raise UserError("--pack and --conditional do not go together: a pack holds images of "
                                "several classes; drop one of them")
            if config.batch_size % config.pack:
                raise UserError(f"--batch-size {config.batch_size} is not a multiple of --pack {config.pack}; "
                                f"use a batch size that {config.pack} divides")

    @classmethod
    def summary(cls, config) -> str:
        """" (dcgan recipe)", with every option that is not the tutorial model's own:
        " (dcgan-sn recipe: loss hinge, sn, no d_bn)"."""
        shown = []
        for name in ("batch_size", "arch", "loss", "sn", "d_bn", "r1", "d_steps", "diffaugment", "pack", "ema"):
            value = getattr(config, name)
            if value != cls.defaults[name]:
                shown.append(name if value is True else f"no {name}" if value is False else f"{name} {value}")
        if config.lr_d != config.lr_g:
            shown.append(f"lr_d {config.lr_d:g}, lr_g {config.lr_g:g}")
        if config.conditional:
            shown.append("conditional")
        return f" ({config.recipe} recipe{': ' + ', '.join(shown) if shown else ''})"

    def __init__(self, config, *, channels: int, device: torch.device, native_size: int | None = None,
                 optimizers: bool = True, channels_last: bool = True):
        self.nz = config.nz
        self.channels = channels
        self.device = device
        # --conditional: G and D take the class label (0: unconditional, as before).
        self.num_classes = (config.num_classes or 0) if config.conditional else 0
        if config.conditional and not self.num_classes:
            raise ValueError("a conditional GanTask needs config.num_classes")
        # The per-epoch grid: one row per class, the same 10 z's in every row (a column is
        # one z, one style, across the classes); else 8 a row, as in the tutorial.
        self.grid_columns = 10 if 0 < self.num_classes <= 10 else 8
        self.pack = config.pack
        arch = ARCHS[config.arch]
        self.generator = arch.generator(config, config.image_size, channels, self.num_classes).to(device)
        self.discriminator = arch.discriminator(config, config.image_size, channels * self.pack,
                                                self.num_classes).to(device)
        init = INIT_FUNCTIONS[config.init]
        init(self.generator)
        init(self.discriminator)
        if config.sn:  # after the init: the power iteration starts from the initial weights
            spectral_norm(self.discriminator)
        # channels_last: oneDNN's and cuDNN's preferred layout, same math; docs/performance.md
        # (benchmarks/cpu_options.py, which turns it off to compare) has the measurement.
        self.layout = torch.channels_last if channels_last else torch.contiguous_format
        for m in (self.generator, self.discriminator):
            m.to(memory_format=self.layout)
        self.loss = LOSSES[config.loss]
        self.augment = DiffAugment(config.diffaugment)
        self.r1, self.r1_every = config.r1, config.r1_every
        self.recipe = config.recipe
        self.d_steps = config.d_steps
        self._optimizers = {}
        if optimizers:
            betas = (config.beta1, config.beta2)
            self._optimizers = {
                "generator": torch.optim.Adam(self.generator.parameters(), lr=config.lr_g, betas=betas),
                "discriminator": torch.optim.Adam(self.discriminator.parameters(), lr=config.lr_d, betas=betas)}
        # Made after the init and the layout change, so that it starts as an exact copy of G.
        self.generator_ema = Ema(self.generator, config.ema) if config.ema else None
        # What the step calls for the passes that update weights: under torchrun, the DDP wrappers.
        self.train_generator, self.train_discriminator = self.generator, self.discriminator

    def distribute(self, ranks) -> None:
        """Train as one of several ranks (gankit.distributed.Ranks.wrap: synchronized
        BatchNorm, DistributedDataParallel) in the forward passes whose backward updates a
        net. The other passes (G's fakes for D's update, D's verdict for G's) call the bare
        module: DDP expects a backward into the weights of every pass it sees."""
        if self.r1:  # DDP's reducer does not take torch.autograd.grad's double backward
            # The default recipe has R1 on: say how to go without it, not only that it is on.
            raise UserError(f"--r1 does not run under torchrun yet (this run's recipe {self.recipe} has r1 "
                            f"{self.r1:g}); pass --r1 0 or --recipe dcgan to train without it, or train in one process")
        self.train_generator = ranks.wrap(self.generator)
        self.train_discriminator = ranks.wrap(self.discriminator)

    @property
    def modules(self) -> dict[str, nn.Module]:
        modules = {"generator": self.generator, "discriminator": self.discriminator}
        if self.generator_ema is not None:
            modules["generator_ema"] = self.generator_ema
        return modules

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self._optimizers

    def fake_labels(self, n: int) -> torch.Tensor | None:
        """Labels for n fakes, uniform over the classes, drawn on the device (no host sync,
        and a CUDA graph can hold the draw); None for an unconditional GAN."""
        if not self.num_classes:
            return None
        return torch.randint(0, self.num_classes, (n,), device=self.device)

    def regularizes(self, step: int) -> bool:
        """Whether step number `step` (from 0) adds the R1 penalty: every r1_every-th step,
        lazy regularization as in StyleGAN2 (Karras et al. 2020, Sec. 3.1), the penalty
        scaled by r1_every so that its weight per step stays gamma / 2."""
        return bool(self.r1) and step % self.r1_every == 0

    def discriminate(self, images: torch.Tensor, labels: torch.Tensor | None, discriminator: nn.Module) -> torch.Tensor:
        """D's logits for images as D sees them: augmented (DiffAugment, a fresh draw at
        every call) and packed m to a judgement (PacGAN)."""
        if self.augment:
            images = self.augment(images)
        if self.pack > 1:
            images = pack(images, self.pack)
        return discriminator(images.contiguous(memory_format=self.layout), labels)

    def step(self, real: torch.Tensor, labels: torch.Tensor | None = None, *,
             regularize: bool = False) -> dict[str, torch.Tensor]:
        """One training step on real images (N, C, S, S) in [-1, 1], and for a conditional
        GAN their labels (N,) int64: d_steps updates of D, each on its own N / d_steps of
        the reals, then one update of G. `regularize`: add the R1 penalty (regularizes()).

        Returns 0-d tensors on the device; the caller decides when to read them,
        so a step never waits for the host.
        """
        if self.num_classes and labels is None:
            raise ValueError("a conditional GAN's step needs the real images' labels")
        if not self.num_classes:
            labels = None  # an unconditional GAN ignores labels
        n = real.shape[0] // self.d_steps
        for k in range(self.d_steps):
            part = slice(k * n, (k + 1) * n)
            # R1 on the last D update of the step, the one that sees the freshest D.
            loss_d, logits_real, logits_fake = self.update_d(
                real[part], None if labels is None else labels[part], regularize and k == self.d_steps - 1)
        loss_g = self.update_g(n)
        return {
            "loss_d": loss_d.detach(),
            "loss_g": loss_g.detach(),
            # float(): under bf16 autocast the logits are bf16, and the loop sums these over an epoch.
            "d_real": torch.sigmoid(logits_real.detach().float()).mean(),
            "d_fake": torch.sigmoid(logits_fake.detach().float()).mean(),
        }

    def update_d(self, real: torch.Tensor, labels: torch.Tensor | None, regularize: bool):
        """(1) Update D on real images and fakes (the loss table says how: losses.py).
        no_grad: D's loss must not send gradients into G (the tutorial's fake.detach()).
        Conditional: D sees real images with their labels, fakes with the labels they were made for."""
        n = real.shape[0]
        z = self.noise(n)
        y = self.fake_labels(n)
        with torch.no_grad():
            fake = self.generator(z, y)
        if regularize:  # R1 needs D's gradient with respect to the real images themselves
            real = real.detach().requires_grad_(True)
        logits_real = self.discriminate(real, labels, self.train_discriminator)   # (N,) or (N / pack,)
        logits_fake = self.discriminate(fake, y, self.train_discriminator)
        loss_d = self.loss.d(logits_real, logits_fake)
        objective = loss_d
        if regularize:
            objective = loss_d + (self.r1 / 2) * self.r1_every * r1_penalty(logits_real, real)
        opt_d = self._optimizers["discriminator"]
        opt_d.zero_grad(set_to_none=True)
        objective.backward()
        opt_d.step()
        return loss_d, logits_real, logits_fake

    def update_g(self, n: int) -> torch.Tensor:
        """(2) Update G on n fresh fakes.
        D's weights get no gradient here: the G update does not use it, and the next D
        update would throw it away (its zero_grad). The same training, less work."""
        z = self.noise(n)
        y = self.fake_labels(n)  # a fresh draw with the fresh z
        fake = self.train_generator(z, y)
        self.discriminator.requires_grad_(False)
        loss_g = self.loss.g(self.discriminate(fake, y, self.discriminator))
        opt_g = self._optimizers["generator"]
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.discriminator.requires_grad_(True)
        opt_g.step()
        if self.generator_ema is not None:
            self.generator_ema.update(self.generator)
        return loss_g

    def sampler(self) -> nn.Module:
        """The module that draws images: the averaged G with --ema (G itself is only trained)."""
        return self.generator if self.generator_ema is None else self.generator_ema.module

    @torch.no_grad()
    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [-1, 1] from z (from the averaged G when --ema is on), with BatchNorm
        in eval mode: an image depends on its own z only, not on the rest of the batch.
        A conditional GAN draws image i as class labels[i] (default: balanced_labels)."""
        sampler = self.sampler()
        with eval_mode(sampler):
            if not self.num_classes:
                return sampler(z)
            if labels is None:
                labels = balanced_labels(z.shape[0], self.num_classes)
            return sampler(z, labels.to(self.device))

    def pictures(self, fixed_z: torch.Tensor, shown: torch.Tensor) -> dict[str, torch.Tensor]:
        """The per-epoch grids, in [-1, 1]: the fixed noise's images. Conditional, with at
        most 10 classes: one row per class, the first 10 fixed z's in every row."""
        if 0 < self.num_classes <= 10:
            cols = self.grid_columns
            z = fixed_z[:cols].repeat(self.num_classes, 1)                       # row r: z_0 .. z_9
            labels = torch.arange(self.num_classes, device=self.device).repeat_interleave(cols)
            return {SAMPLE_GRID: self.generate(z, labels)}
        return {SAMPLE_GRID: self.generate(fixed_z)}

    @classmethod
    def build_sampler(cls, config, meta: dict) -> nn.Module:
        """A fresh G of the shape an export's metadata describes."""
        return ARCHS[config.arch].generator(config, meta["image_size"], meta["channels"],
                                            meta.get("num_classes") or 0)

"""The DCGAN task, and its training step as the tutorial writes it: (1) update D, (2) update G.

Also the two readings of the tutorial's recipe (RECIPES) and the model's defaults: the
settings that only a DCGAN has live here, beside the task that uses them.
"""

from __future__ import annotations

import torch
from torch import nn

from gankit.errors import UserError
from gankit.models import Ema, eval_mode
from gankit.models.dcgan import Discriminator, Generator, dcgan_init
from gankit.sampling import balanced_labels
from gankit.training.losses import LOSSES
from gankit.training.task import FAKE_GRID, Task

# The two readings of the tutorial's recipe. "tutorial" is the text taken literally; it
# collapsed in our trials. "dcgan" adds the DCGAN paper's details that the tutorial
# leaves out; docs/results.md ("The tutorial read literally") has the measurements.
RECIPES: dict[str, dict] = {
    "tutorial": {"init": "pytorch", "d_input_bn": True, "edge": "1x1", "beta2": 0.9},
    "dcgan": {"init": "normal", "d_input_bn": False, "edge": "4x4", "beta2": 0.999},
}
DEFAULT_RECIPE = "dcgan"
INITS = ("normal", "pytorch")  # N(0, 0.02) (DCGAN paper, Sec. 4) | PyTorch's default
EDGES = ("4x4", "1x1")         # models/dcgan.py says what each means


class GanTask(Task):
    """Generator, discriminator, their Adam optimizers, and the step that trains them."""

    title, maker = "DCGAN", "the generator"
    # Adam lr 2e-4, beta1 0.5 (DCGAN paper, Sec. 4); beta2 comes from the recipe.
    defaults = {"lr": 2e-4, "beta1": 0.5, "width": 64, "latent_dim": None}
    metric_names = ("loss_d", "loss_g", "d_real", "d_fake")
    hparam_tags = ("epoch/loss_d", "epoch/loss_g")
    takes_ema = True
    takes_labels = True

    @classmethod
    def resolve(cls, config) -> dict:
        if config.recipe not in RECIPES:
            raise UserError(f"unknown recipe '{config.recipe}'; use one of: {', '.join(RECIPES)}")
        return {**cls.defaults, **RECIPES[config.recipe]}

    @classmethod
    def check(cls, config) -> None:
        if config.init is not None and config.init not in INITS:
            raise UserError(f"--init must be one of {', '.join(INITS)}, got '{config.init}'")
        if config.edge is not None and config.edge not in EDGES:
            raise UserError(f"--edge must be one of {', '.join(EDGES)}, got '{config.edge}'")
        if config.loss not in LOSSES:
            raise UserError(f"unknown loss '{config.loss}'; use one of: {', '.join(LOSSES)}")

    @classmethod
    def summary(cls, config) -> str:
        return f" ({config.recipe} recipe)"

    def __init__(self, config, *, channels: int, device: torch.device, native_size: int | None = None,
                 optimizers: bool = True, channels_last: bool = True):
        self.nz = config.nz
        self.device = device
        # --conditional: G and D take the class label (0: unconditional, as before).
        self.num_classes = (config.num_classes or 0) if config.conditional else 0
        if config.conditional and not self.num_classes:
            raise ValueError("a conditional GanTask needs config.num_classes")
        # The per-epoch grid: one row per class, the same 10 z's in every row (a column is
        # one z, one style, across the classes); else 8 a row, as in the tutorial.
        self.grid_columns = 10 if 0 < self.num_classes <= 10 else 8
        self.generator = Generator(image_size=config.image_size, channels=channels, nz=config.nz,
                                   width=config.width, edge=config.edge,
                                   num_classes=self.num_classes).to(device)
        self.discriminator = Discriminator(image_size=config.image_size, channels=channels,
                                           width=config.width, edge=config.edge,
                                           d_input_bn=config.d_input_bn,
                                           num_classes=self.num_classes).to(device)
        if config.init == "normal":
            dcgan_init(self.generator)
            dcgan_init(self.discriminator)
        # channels_last: oneDNN's and cuDNN's preferred layout, same math; docs/performance.md
        # (benchmarks/cpu_options.py, which turns it off to compare) has the measurement.
        self.layout = torch.channels_last if channels_last else torch.contiguous_format
        for m in (self.generator, self.discriminator):
            m.to(memory_format=self.layout)
        self.loss = LOSSES[config.loss]
        self._optimizers = {}
        if optimizers:
            betas = (config.beta1, config.beta2)
            self._optimizers = {
                "generator": torch.optim.Adam(self.generator.parameters(), lr=config.lr, betas=betas),
                "discriminator": torch.optim.Adam(self.discriminator.parameters(), lr=config.lr, betas=betas)}
        # Made after the init and the layout change, so that it starts as an exact copy of G.
        self.generator_ema = Ema(self.generator, config.ema) if config.ema else None
        # What the step calls for the passes that update weights: under torchrun, the DDP wrappers.
        self.train_generator, self.train_discriminator = self.generator, self.discriminator

    def distribute(self, ranks) -> None:
        """Train as one of several ranks (gankit.distributed.Ranks.wrap: synchronized
        BatchNorm, DistributedDataParallel) in the forward passes whose backward updates a
        net. The other passes (G's fakes for D's update, D's verdict for G's) call the bare
        module: DDP expects a backward into the weights of every pass it sees."""
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

    def step(self, real: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One training step on a batch of real images (N, C, S, S) in [-1, 1], and for a
        conditional GAN their labels (N,) int64.

        Returns 0-d tensors on the device; the caller decides when to read them,
        so a step never waits for the host.
        """
        n = real.shape[0]
        if self.num_classes and labels is None:
            raise ValueError("a conditional GAN's step needs the real images' labels")
        if not self.num_classes:
            labels = None  # an unconditional GAN ignores labels
        real = real.contiguous(memory_format=self.layout)
        opt_g, opt_d = self._optimizers["generator"], self._optimizers["discriminator"]

        # (1) Update D on real images and fakes (the loss table says how: losses.py).
        # no_grad: D's loss must not send gradients into G (the tutorial's fake.detach()).
        # Conditional: D sees real images with their labels, fakes with the labels they were made for.
        z = self.noise(n)
        y = self.fake_labels(n)
        with torch.no_grad():
            fake = self.generator(z, y)
        logits_real = self.train_discriminator(real, labels)   # (N,)
        logits_fake = self.train_discriminator(fake, y)        # (N,)
        loss_d = self.loss.d(logits_real, logits_fake)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

        # (2) Update G on fresh fakes.
        # D's weights get no gradient here: the G update does not use it, and the next D
        # update would throw it away (its zero_grad). The same training, less work.
        z = self.noise(n)
        y = self.fake_labels(n)  # a fresh draw with the fresh z
        fake = self.train_generator(z, y)
        self.discriminator.requires_grad_(False)
        loss_g = self.loss.g(self.discriminator(fake, y))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.discriminator.requires_grad_(True)
        opt_g.step()
        if self.generator_ema is not None:
            self.generator_ema.update(self.generator)

        return {
            "loss_d": loss_d.detach(),
            "loss_g": loss_g.detach(),
            # float(): under bf16 autocast the logits are bf16, and the loop sums these over an epoch.
            "d_real": torch.sigmoid(logits_real.detach().float()).mean(),
            "d_fake": torch.sigmoid(logits_fake.detach().float()).mean(),
        }

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
            return {FAKE_GRID: self.generate(z, labels)}
        return {FAKE_GRID: self.generate(fixed_z)}

    @classmethod
    def build_sampler(cls, config, meta: dict) -> nn.Module:
        """A fresh G of the shape an export's metadata describes."""
        return Generator(image_size=meta["image_size"], channels=meta["channels"], nz=config.nz,
                         width=config.width, edge=config.edge, num_classes=meta.get("num_classes") or 0)

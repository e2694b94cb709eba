"""Flow matching with the straight path: rectified flow (Lipman et al. 2023; Liu et al. 2023).

For data x1 and noise x0 ~ N(0, I), x_t = (1 - t) x0 + t x1 moves in a straight line from
noise (t = 0) to data (t = 1) at the constant velocity x1 - x0. The network v(x_t, t)
regresses that velocity (mean squared error over the pixels); its minimizer is the
velocity field whose ODE dx/dt = v(x, t) carries N(0, I) to the data (Lipman et al. 2023,
Thm. 2). Sampling draws x0 and integrates the ODE from t = 0 to 1 with a solver (SOLVERS).

The tables of this model's names: TIME_DISTRIBUTIONS (how training draws t: `--time-dist`)
and SOLVERS (`--solver`). A conditional model (`--conditional`) learns with the label
dropped to a "no label" token 10% of the time, which gives the unconditional velocity
that classifier-free guidance (Ho & Salimans 2022) needs (`--guidance W`).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gankit.errors import UserError
from gankit.models import Ema, eval_mode
from gankit.models.unet import UNet
from gankit.sampling import balanced_labels
from gankit.training.task import SAMPLE_GRID, Exported, Task

LABEL_DROP = 0.1  # Ho & Salimans 2022 train with p_uncond 0.1 or 0.2; 0.1 is their best FID (Table 1)

# How training draws t in [0, 1], on the device (a CUDA graph holds the draw): (n, device) -> (n,).
TIME_DISTRIBUTIONS: dict[str, Callable[[int, torch.device], torch.Tensor]] = {
    "uniform": lambda n, device: torch.rand(n, device=device),
    # Esser et al. 2024 (Sec. 3.1, "logit-normal sampling", m = 0, s = 1): more weight on the
    # middle of the path, where the velocity is hardest to predict; their best rectified flow.
    "logit-normal": lambda n, device: torch.sigmoid(torch.randn(n, device=device)),
}

Velocity = Callable[[torch.Tensor, float], torch.Tensor]


def euler(v: Velocity, x: torch.Tensor, steps: int) -> torch.Tensor:
    """x at t = 1 from x at t = 0 by `steps` Euler steps of dx/dt = v(x, t): `steps` network
    evaluations, first order (the error of a step is O(h^2), of the path O(h))."""
    h = 1.0 / steps
    for i in range(steps):
        x = x + h * v(x, i * h)
    return x


def heun(v: Velocity, x: torch.Tensor, steps: int) -> torch.Tensor:
    """x at t = 1 from x at t = 0 by `steps` steps of Heun's method (the explicit trapezoid
    rule: an Euler predictor, then the mean of the two slopes): 2 * `steps` network
    evaluations, second order (Karras et al. 2022, Alg. 1, who use it for diffusion ODEs).
    It integrates a velocity linear in t exactly."""
    h = 1.0 / steps
    for i in range(steps):
        t = i * h
        d0 = v(x, t)
        d1 = v(x + h * d0, t + h)
        x = x + (h / 2) * (d0 + d1)
    return x


# The ODE solvers of sampling: (v, x0, steps) -> x1, and network evaluations for `steps`.
SOLVERS: dict[str, Callable[[Velocity, torch.Tensor, int], torch.Tensor]] = {"euler": euler, "heun": heun}
EVALUATIONS: dict[str, int] = {"euler": 1, "heun": 2}  # network evaluations a step


def flow_loss(velocity: Callable, x1: torch.Tensor, x0: torch.Tensor, t: torch.Tensor,
              labels: torch.Tensor | None = None) -> torch.Tensor:
    """The flow-matching loss on the straight path: mean over pixels of (v(x_t, t) - (x1 - x0))^2,
    in fp32 whatever the network's precision (bf16 autocast)."""
    tt = t.view(-1, *([1] * (x1.dim() - 1)))                             # (N, 1, 1, 1)
    xt = (1 - tt) * x0 + tt * x1
    pred = velocity(xt, t) if labels is None else velocity(xt, t, labels)
    return F.mse_loss(pred.float(), (x1 - x0).float())


def guided(net: nn.Module, labels: torch.Tensor | None, guidance: float, null: int) -> Velocity:
    """The velocity the solver follows, v(x, t) with t a number. Conditional with W > 0:
    v_cond + W (v_cond - v_uncond), so W = 0 is the conditional model itself (and then the
    unconditional pass is not run at all); both passes go through the net as one batch."""
    def v(x: torch.Tensor, t: float) -> torch.Tensor:
        tt = torch.full((x.shape[0],), float(t), device=x.device, dtype=x.dtype)
        if labels is None:
            return net(x, tt)
        if not guidance:
            return net(x, tt, labels)
        both = net(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([labels, torch.full_like(labels, null)]))
        cond, uncond = both.chunk(2)
        return cond + guidance * (cond - uncond)
    return v


class FlowSampler(nn.Module):
    """z (N, C*S*S) ~ N(0, I) -> images (N, C, S, S) in [-1, 1]: the ODE solved from noise
    (t = 0) to data (t = 1) with the velocity network, then clamped."""

    def __init__(self, velocity: nn.Module, *, shape: tuple[int, int, int], solver: str, steps: int,
                 guidance: float, num_classes: int):
        super().__init__()
        self.velocity = velocity
        self.shape, self.solve, self.steps = shape, SOLVERS[solver], steps
        self.guidance, self.num_classes = guidance, num_classes

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x0 = z.reshape(z.shape[0], *self.shape)                          # (N, C, S, S)
        if self.num_classes and labels is None:  # a conditional net without a label: unconditional
            labels = torch.full((z.shape[0],), self.num_classes, dtype=torch.long, device=z.device)
        v = guided(self.velocity, labels if self.num_classes else None, self.guidance, self.num_classes)
        return self.solve(v, x0, self.steps).clamp(-1, 1)


class FlowTask(Task):
    """The velocity network (models/unet.py), its EMA and Adam optimizer, and the step that
    regresses the straight path's velocity."""

    title, maker = "flow matching", "the velocity network"
    # Adam 1e-3 with the default betas: for this small U-Net, DDPM's 2e-4 (Ho et al. 2020,
    # appendix B, a 35 M-parameter net) learns far slower: after 200 steps at batch 128 the
    # test loss of the EMA's velocity is 0.16 at 1e-3 against 0.63 at 2e-4 (the development
    # machine, seed 0; docs/results.md, "Flow matching"). Sampling from an EMA of the
    # weights (0.999, warmed up: models.Ema), as every diffusion and flow code does. Width
    # 16: 0.64 M parameters (models/unet.py says why this shape). Sampling: Heun, 16 steps
    # (32 network evaluations), the fewest measured within 5 % of the FID of 100 Euler steps
    # (FID of 2,000 samples after 10 epochs: Heun 8 steps 0.90, 16 steps 0.69, Euler 100
    # steps 0.67; docs/results.md, "Flow matching", has the curve).
    defaults = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "width": 16, "batch_size": 128, "ema": 0.999,
                "ode_steps": 16, "solver": "heun", "guidance": 0.0, "time_dist": "logit-normal"}
    metric_names = ("loss",)
    hparam_tags = ("epoch/loss",)
    shape_settings = ("width",)
    takes_ema = True
    takes_labels = True

    @classmethod
    def check(cls, config) -> None:
        """The flow's own values (its names are gankit.resolve's to check; --ode-steps is a count there)."""
        w = config.guidance
        if w is not None and not (math.isfinite(w) and 0 <= w <= 100):
            raise UserError(f"--guidance must be a weight from 0 (none) to 100, e.g. 1 or 2, got {w}")
        if w and not config.conditional:
            raise UserError("--guidance needs a conditional run (trained with --conditional); this one is not")

    @classmethod
    def summary(cls, config) -> str:
        shown = [f"{name} {getattr(config, name)}" for name in ("time_dist", "solver", "ode_steps", "guidance", "ema")
                 if getattr(config, name) != cls.defaults[name]]
        shown += ["conditional"] if config.conditional else []
        return f" ({', '.join(shown)})" if shown else ""

    @classmethod
    def sampling_summary(cls, config) -> str:
        evaluations = config.ode_steps * EVALUATIONS[config.solver] * (2 if config.guidance else 1)
        return f"{config.solver}, {config.ode_steps} steps: {evaluations} network evaluations an image"

    @classmethod
    def make_net(cls, config, image_size: int, channels: int, num_classes: int) -> nn.Module:
        return UNet(image_size=image_size, channels=channels, width=config.width, num_classes=num_classes)

    def __init__(self, config, *, channels: int, device: torch.device, native_size: int | None = None,
                 optimizers: bool = True):
        self.channels, self.device, self.size = channels, device, config.image_size
        self.nz = channels * config.image_size ** 2  # z is x0, flattened: sampling's slerp works on it as is
        self.num_classes = (config.num_classes or 0) if config.conditional else 0
        if config.conditional and not self.num_classes:
            raise ValueError("a conditional FlowTask needs config.num_classes")
        self.grid_columns = 10 if 0 < self.num_classes <= 10 else 8  # one row per class, as the GAN's
        self.velocity = self.make_net(config, config.image_size, channels, self.num_classes).to(device)
        self.velocity_ema = Ema(self.velocity, config.ema) if config.ema else None
        self.time_dist = TIME_DISTRIBUTIONS[config.time_dist]
        self.solver, self.ode_steps, self.guidance = config.solver, config.ode_steps, config.guidance
        self._optimizers = {}
        if optimizers:
            self._optimizers = {"velocity": torch.optim.Adam(self.velocity.parameters(), lr=config.lr,
                                                             betas=(config.beta1, config.beta2))}
        self.train_velocity = self.velocity  # what the step calls: under torchrun, the DDP wrapper

    def distribute(self, ranks) -> None:
        """Train as one of several ranks: the step's forward pass through Ranks.wrap (DDP)."""
        self.train_velocity = ranks.wrap(self.velocity)

    @property
    def modules(self) -> dict[str, nn.Module]:
        modules = {"velocity": self.velocity}
        if self.velocity_ema is not None:
            modules["velocity_ema"] = self.velocity_ema
        return modules

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self._optimizers

    def step(self, real: torch.Tensor, labels: torch.Tensor | None = None, *,
             regularize: bool = False) -> dict[str, torch.Tensor]:
        """One step on data x1 (N, C, S, S) in [-1, 1] (and, conditional, labels (N,)): noise,
        t and the label drop all drawn on the device, no host sync (a CUDA graph holds it)."""
        n = real.shape[0]
        x0 = torch.randn_like(real)
        t = self.time_dist(n, real.device)
        if self.num_classes:
            if labels is None:
                raise ValueError("a conditional flow's step needs the real images' labels")
            drop = torch.rand(n, device=real.device) < LABEL_DROP
            labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        else:
            labels = None
        loss = flow_loss(self.train_velocity, real, x0, t, labels)
        opt = self._optimizers["velocity"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if self.velocity_ema is not None:
            self.velocity_ema.update(self.velocity)
        return {"loss": loss.detach()}

    def sampling_net(self) -> nn.Module:
        """The velocity network that samples: the EMA's with --ema (the default), else the trained one."""
        return self.velocity if self.velocity_ema is None else self.velocity_ema.module

    def sampler(self) -> nn.Module:
        return FlowSampler(self.sampling_net(), shape=(self.channels, self.size, self.size), solver=self.solver,
                           steps=self.ode_steps, guidance=self.guidance, num_classes=self.num_classes)

    @torch.no_grad()
    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [-1, 1] from z (N, nz), the ODE's start; a conditional flow draws image
        i as class labels[i] (default: balanced_labels)."""
        sampler = self.sampler()
        with eval_mode(sampler):
            if self.num_classes and labels is None:
                labels = balanced_labels(z.shape[0], self.num_classes)
            return sampler(z, None if labels is None else labels.to(self.device))

    def pictures(self, fixed_z: torch.Tensor, shown: torch.Tensor) -> dict[str, torch.Tensor]:
        """The fixed noise's images; conditional, with at most 10 classes: one row per class,
        the first 10 fixed z's in every row (as GanTask.pictures)."""
        if 0 < self.num_classes <= 10:
            cols = self.grid_columns
            z = fixed_z[:cols].repeat(self.num_classes, 1)
            labels = torch.arange(self.num_classes, device=self.device).repeat_interleave(cols)
            return {SAMPLE_GRID: self.generate(z, labels)}
        return {SAMPLE_GRID: self.generate(fixed_z)}

    def exported(self) -> Exported:
        """The velocity network itself: a solver of the user's drives it (docs/usage.md has one)."""
        c, s = self.channels, self.size
        inputs = {"x": torch.zeros(2, c, s, s), "t": torch.full((2,), 0.5)}
        doc = "x: float32 (N, channels, image_size, image_size), the state at time t; t: float32 (N,) in [0, 1]"
        if self.num_classes:
            inputs["labels"] = torch.zeros(2, dtype=torch.long)
            doc += f"; labels: int64 (N,) in [0, {self.num_classes}] ({self.num_classes}: no label)"
        return Exported(self.sampling_net(), inputs, "velocity", doc,
                        "velocity: float32 (N, channels, image_size, image_size), dx/dt; integrate from x ~ "
                        "N(0, I) at t = 0 to t = 1, then clamp to [-1, 1]")

    @classmethod
    def build_sampler(cls, config, meta: dict) -> nn.Module:
        """A fresh velocity network of the shape an export's metadata describes."""
        return cls.make_net(config, meta["image_size"], meta["channels"], meta.get("num_classes") or 0)

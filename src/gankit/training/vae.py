"""The VAE's step and its bounds, in nats per image.

negative ELBO = reconstruction + KL, with
  reconstruction = -E_q[log p(x|z)], one reparameterized sample (Kingma & Welling 2014, Eq. 7),
                   p(x|z) Bernoulli per pixel: binary cross-entropy summed over pixels;
  KL             = KL(q(z|x) || N(0, I)) in closed form (ibid., Appendix B).
IWAE bound (Burda et al. 2016, Eq. 8): log p(x) >= E[log 1/k sum_i p(x, z_i) / q(z_i|x)];
its negative is reported, so it is <= the negative ELBO and falls towards -log p(x) as k grows.

Pixels count only inside the dataset's native frame: MNIST is padded 28 -> 32 for the
conv nets, and those 240 padding pixels are cropped off before the likelihood, so the
nats are per 28x28 image and compare with the classic 784-pixel MLP.
For RGB data the same Bernoulli likelihood is used on intensities in [0, 1] (as the
classic example does for grayscale): one likelihood for all data, a decoder whose mean
is the image; the price is that for non-binary pixels the nats are a score, not a
normalized density.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from gankit.data import border, to_model
from gankit.models import eval_mode
from gankit.models.vae import ConvVAE, MeanImage, MlpVAE
from gankit.training.task import SAMPLE_GRID, Task

LOG_2PI = math.log(2 * math.pi)


def native_frame(t: torch.Tensor, native: int) -> torch.Tensor:
    """The native image region of a padded tensor (N, C, S, S); unchanged when not padded."""
    pad = border(native, t.shape[-1])
    return t if pad is None else t[..., pad:pad + native, pad:pad + native]


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) per image (N,): BCE with logits, summed over pixels."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per image (N,), closed form."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)


def gaussian_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, exp(logvar)), summed over the last dimension."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) / logvar.exp()).sum(-1)


def elbo_terms(model: nn.Module, x: torch.Tensor, native: int, eps: torch.Tensor | None = None):
    """(reconstruction (N,), KL (N,), logits) for x in [0, 1]; eps ~ N(0, I) may be given."""
    mu, logvar, logits = model(x, eps)      # one forward pass (gankit.models.vae.VAE.forward)
    recon = bernoulli_nll(native_frame(logits, native), native_frame(x, native))
    return recon, gaussian_kl(mu, logvar), logits


@torch.no_grad()
def iwae_nll(model: nn.Module, x: torch.Tensor, native: int, k: int, *, chunk: int = 8192,
             rng: torch.Generator | None = None) -> torch.Tensor:
    """-(IWAE bound) per image (N,) for x in [0, 1], with k importance samples per image,
    decoding about `chunk` latents per call. k=1 is a one-sample estimate of the negative ELBO."""
    mu, logvar = model.encode(x)                                   # (N, L)
    out = torch.empty(x.shape[0], device=x.device)
    per = max(1, chunk // k)                                       # images per decoder call
    for start in range(0, x.shape[0], per):
        m, lv = mu[start:start + per, None], logvar[start:start + per, None]   # (B, 1, L)
        b, latent = m.shape[0], m.shape[-1]
        eps = torch.randn((b, k, latent), generator=rng, device="cpu").to(x.device)
        z = m + eps * torch.exp(0.5 * lv)                          # (B, k, L)
        logits = native_frame(model.decode(z.reshape(b * k, latent)), native)   # (B*k, C, H, W)
        target = native_frame(x[start:start + per], native)
        target = target.unsqueeze(1).expand(b, k, *target.shape[1:]).reshape(logits.shape)
        log_px = -bernoulli_nll(logits, target).view(b, k)
        log_pz = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z))
        log_qz = gaussian_log_density(z, m, lv)
        log_w = log_px + log_pz - log_qz                           # (B, k)
        out[start:start + b] = -(torch.logsumexp(log_w, 1) - math.log(k))
    return out


@torch.no_grad()
def test_bounds(model: nn.Module, images: torch.Tensor, *, size: int, native: int, rng: torch.Generator,
                k: int | None = None, batch_size: int = 500, progress=None) -> dict[str, float]:
    """The mean negative ELBO and its parts over uint8 images (N, C, h, w), nats per image,
    with eps from `rng` (on the CPU: the same figures on every device); with k, also the
    IWAE bound with k importance samples. `progress(n)` is told of each chunk done."""
    device = next(model.parameters()).device
    sums = torch.zeros(3, dtype=torch.float64)
    with eval_mode(model):
        for chunk in images.split(batch_size):
            x = (to_model(chunk.to(device), size) + 1) / 2
            eps = torch.randn(len(chunk), model.latent_dim, generator=rng).to(device)
            recon, kl, _ = elbo_terms(model, x, native, eps)
            iwae = iwae_nll(model, x, native, k, rng=rng).sum() if k else torch.zeros((), device=device)
            sums += torch.stack([recon.sum(), kl.sum(), iwae]).double().cpu()
            if progress is not None:
                progress(len(chunk))
    recon, kl, iwae = (sums / len(images)).tolist()
    figures = {"neg_elbo": recon + kl, "recon": recon, "kl": kl}
    if k:
        figures["iwae_nll"] = iwae
    return figures


class VaeTask(Task):
    """The convolutional VAE, its Adam optimizer, and the step that maximizes the ELBO."""

    title, maker = "convolutional VAE", "the decoder"
    # Adam 1e-3 with PyTorch's default betas, as in PyTorch's classic VAE example; the
    # width and latent size: docs/results.md ("VAE") has the measurements.
    defaults = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "width": 32, "latent_dim": 32, "batch_size": 128}
    metric_names = ("neg_elbo", "recon", "kl")
    hparam_tags = ("epoch/neg_elbo", "epoch/test_neg_elbo")
    shape_settings = ("latent_dim", "width")

    @classmethod
    def make_model(cls, config, channels: int) -> nn.Module:
        return ConvVAE(image_size=config.image_size, channels=channels, latent_dim=config.latent_dim,
                       width=config.width)

    def __init__(self, config, *, channels: int, device: torch.device, native_size: int,
                 optimizers: bool = True):
        self.device = device
        self.channels = channels
        self.native = native_size
        self.size = config.image_size
        self.nz = config.latent_dim
        self.model = self.make_model(config, channels).to(device)
        self.mean_image = MeanImage(self.model.decoder_net())  # shares the decoder's layers
        self._optimizers = {}
        if optimizers:
            self._optimizers = {"vae": torch.optim.Adam(self.model.parameters(), lr=config.lr,
                                                        betas=(config.beta1, config.beta2))}
        self.train_model = self.model  # what the step calls: under torchrun, the DDP wrapper

    def distribute(self, ranks) -> None:
        """Train as one of several ranks: the step's forward pass through Ranks.wrap
        (synchronized BatchNorm, DistributedDataParallel)."""
        self.train_model = ranks.wrap(self.model)

    @property
    def modules(self) -> dict[str, nn.Module]:
        return {"vae": self.model}

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self._optimizers

    def step(self, real: torch.Tensor, labels: torch.Tensor | None = None, *,
             regularize: bool = False) -> dict[str, torch.Tensor]:
        """One step on a batch in [-1, 1] (the loop's scale); the VAE works in [0, 1].
        `labels` is ignored: the same call as GanTask.step, for the loop and the Stepper."""
        x = (real + 1) / 2
        recon, kl, _ = elbo_terms(self.train_model, x, self.native)
        loss = (recon + kl).mean()                             # negative ELBO, nats per image
        opt = self._optimizers["vae"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"neg_elbo": loss.detach(), "recon": recon.mean().detach(), "kl": kl.mean().detach()}

    def sampler(self) -> nn.Module:
        """The decoder with the sigmoid that turns its logits into the mean image."""
        return self.mean_image

    @torch.no_grad()
    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's mean image in [-1, 1]; `labels` is ignored (an unconditional model)."""
        with eval_mode(self.model):
            return self.sampler()(z)

    @torch.no_grad()
    def pictures(self, fixed_z: torch.Tensor, shown: torch.Tensor) -> dict[str, torch.Tensor]:
        """fake: decoded fixed noise; recon: rows of images, each above its reconstruction."""
        with eval_mode(self.model):
            mu, _ = self.model.encode((shown + 1) / 2)
            recon = self.generate(mu)                          # the posterior mean's decoding
        rows = [t for pair in zip(shown.split(8), recon.split(8)) for t in pair]
        return {SAMPLE_GRID: self.generate(fixed_z), "recon": torch.cat(rows)}

    def evaluate(self, test: torch.Tensor, rng: torch.Generator) -> dict[str, float]:
        """Test-set negative ELBO and its parts, nats per image; eps from `rng`."""
        bounds = test_bounds(self.model, test, size=self.size, native=self.native, rng=rng)
        return {f"test_{k}": v for k, v in bounds.items()}

    @classmethod
    def build_sampler(cls, config, meta: dict) -> nn.Module:
        """A fresh decoder of the shape an export's metadata describes."""
        shape = dataclasses.replace(config, image_size=meta["image_size"])
        return MeanImage(cls.make_model(shape, meta["channels"]).decoder_net())


class MlpVaeTask(VaeTask):
    """The classic MLP VAE (PyTorch's examples/vae: 784-400-20), on the data's native pixels."""

    title = "MLP VAE"
    defaults = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "width": None, "latent_dim": 20, "batch_size": 128}
    native_pixels = True  # an MLP sees the native pixels: no padding, no resize

    @classmethod
    def make_model(cls, config, channels: int) -> nn.Module:
        return MlpVAE(image_size=config.image_size, channels=channels, latent_dim=config.latent_dim)

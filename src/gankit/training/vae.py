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

import math

import torch
import torch.nn.functional as F
from torch import nn

from gankit.config import TrainConfig
from gankit.data import _pad
from gankit.models import eval_mode
from gankit.models.vae import ConvVAE, MlpVAE

LOG_2PI = math.log(2 * math.pi)


def native_frame(t: torch.Tensor, native: int) -> torch.Tensor:
    """The native image region of a padded tensor (N, C, S, S); unchanged when not padded."""
    pad = _pad(native, t.shape[-1])
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
             generator: torch.Generator | None = None) -> torch.Tensor:
    """-(IWAE bound) per image (N,) for x in [0, 1], with k importance samples per image,
    decoding about `chunk` latents per call. k=1 is a one-sample estimate of the negative ELBO."""
    mu, logvar = model.encode(x)                                   # (N, L)
    out = torch.empty(x.shape[0], device=x.device)
    per = max(1, chunk // k)                                       # images per decoder call
    for start in range(0, x.shape[0], per):
        m, lv = mu[start:start + per, None], logvar[start:start + per, None]   # (B, 1, L)
        b, latent = m.shape[0], m.shape[-1]
        eps = torch.randn((b, k, latent), generator=generator, device="cpu").to(x.device)
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


class VaeTask:
    """A VAE, its Adam optimizer, and the step that maximizes the ELBO."""

    metric_names = ("neg_elbo", "recon", "kl")

    def __init__(self, config: TrainConfig, *, channels: int, device: torch.device, native_size: int):
        self.device = device
        self.native = native_size
        self.size = config.image_size
        self.nz = config.latent_dim
        if config.model == "vae-mlp":
            self.model = MlpVAE(image_size=config.image_size, channels=channels, latent_dim=config.latent_dim)
        else:
            self.model = ConvVAE(image_size=config.image_size, channels=channels,
                                 latent_dim=config.latent_dim, width=config.width)
        self.model.to(device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=config.lr, betas=(config.beta1, config.beta2))
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
        return {"vae": self.opt}

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if generator is not None:
            return torch.randn(n, self.nz, generator=generator).to(self.device)
        return torch.randn(n, self.nz, device=self.device)

    def step(self, real: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One step on a batch in [-1, 1] (the loop's scale); the VAE works in [0, 1].
        `labels` is ignored: the same call as GanTask.step, for the loop and the Stepper."""
        x = (real + 1) / 2
        recon, kl, _ = elbo_terms(self.train_model, x, self.native)
        loss = (recon + kl).mean()                             # negative ELBO, nats per image
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"neg_elbo": loss.detach(), "recon": recon.mean().detach(), "kl": kl.mean().detach()}

    @torch.no_grad()
    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's mean image in [-1, 1]; `labels` is ignored (an unconditional model)."""
        with eval_mode(self.model):
            return torch.sigmoid(self.model.decode(z)) * 2 - 1

    @torch.no_grad()
    def pictures(self, fixed_z: torch.Tensor, shown: torch.Tensor) -> dict[str, torch.Tensor]:
        """fake: decoded fixed noise; recon: rows of images, each above its reconstruction."""
        with eval_mode(self.model):
            x = (shown + 1) / 2
            mu, _ = self.model.encode(x)
            recon = torch.sigmoid(self.model.decode(mu)) * 2 - 1   # the posterior mean's decoding
        rows = [t for pair in zip(shown.split(8), recon.split(8)) for t in pair]
        return {"fake": self.generate(fixed_z), "recon": torch.cat(rows)}

    @torch.no_grad()
    def evaluate(self, test: torch.Tensor, generator: torch.Generator, batch_size: int = 500) -> dict[str, float]:
        """Test-set negative ELBO and its parts, nats per image; eps from `generator`."""
        from gankit.data import to_model

        sums = torch.zeros(2, dtype=torch.float64)
        with eval_mode(self.model):
            for chunk in test.split(batch_size):
                x = (to_model(chunk.to(self.device), self.size) + 1) / 2
                eps = torch.randn(len(chunk), self.nz, generator=generator).to(self.device)
                recon, kl, _ = elbo_terms(self.model, x, self.native, eps)
                sums += torch.stack([recon.sum(), kl.sum()]).double().cpu()
        recon, kl = (sums / test.shape[0]).tolist()
        return {"test_neg_elbo": recon + kl, "test_recon": recon, "test_kl": kl}

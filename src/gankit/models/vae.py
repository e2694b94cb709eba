"""The tutorial's supplement: variational autoencoders (Kingma & Welling 2014).

An encoder maps an image to the mean and log-variance of a Gaussian q(z|x); a
decoder maps z back to per-pixel Bernoulli logits p(x|z); the prior is N(0, I).

ConvVAE: the encoder is the DCGAN discriminator's stack of blocks with 2 * latent
outputs, the decoder the generator's stack with logits instead of tanh, so it
fits every image size the DCGAN does.
MlpVAE: the classic baseline, 784-400-latent and back (PyTorch's examples/vae).

Both return logits at the network's size; the loss crops them to the native
frame (see gankit.training.vae), so padding pixels never count as data.
"""

from __future__ import annotations

import torch
from torch import nn

from gankit.models.dcgan import Discriminator, Generator


def mean_image(logits: torch.Tensor) -> torch.Tensor:
    """The mean of the Bernoulli pixels p(x|z), scaled to [-1, 1] like every image gankit draws."""
    return torch.sigmoid(logits) * 2 - 1


class MeanImage(nn.Module):
    """A decoder as a generator: z -> the mean image in [-1, 1] (what sampling and export use)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return mean_image(self.net(z))


class VAE(nn.Module):
    """What both VAEs share: one forward pass x -> (mu, logvar, logits), so that
    DistributedDataParallel, which hooks forward(), sees the whole training pass."""

    def decoder_net(self) -> nn.Module:
        """decode() as one module, z -> logits (its layers, shared, not copied)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None):
        """x in [0, 1] -> mu, logvar (fp32, also under autocast: the bound is taken in fp32)
        and the logits of the decoding of z = mu + eps * sigma (eps ~ N(0, I) unless given)."""
        mu, logvar = (t.float() for t in self.encode(x))
        if eps is None:
            eps = torch.randn_like(mu)
        z = mu + eps * torch.exp(0.5 * logvar)                     # reparameterization trick
        return mu, logvar, self.decode(z)


class ConvVAE(VAE):
    def __init__(self, *, image_size: int = 32, channels: int = 1, latent_dim: int = 32, width: int = 32):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = Discriminator(image_size=image_size, channels=channels, width=width,
                                     out_dim=2 * latent_dim)                       # (N, 2 * latent)
        self.decoder = Generator(image_size=image_size, channels=channels, nz=latent_dim,
                                 width=width, tanh=False)                          # (N, C, S, S) logits

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x in [0, 1] (N, C, S, S) -> mu, logvar (N, latent). The encoder sees [-1, 1] like D."""
        mu, logvar = self.encoder(x * 2 - 1).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def decoder_net(self) -> nn.Module:
        return self.decoder


class MlpVAE(VAE):
    """784-400-20, ReLU, sigmoid output (here: logits; the loss applies the sigmoid)."""

    def __init__(self, *, image_size: int = 28, channels: int = 1, latent_dim: int = 20, hidden: int = 400):
        super().__init__()
        self.latent_dim = latent_dim
        self.shape = (channels, image_size, image_size)
        pixels = channels * image_size * image_size
        self.fc1 = nn.Linear(pixels, hidden)
        self.fc_mu = nn.Linear(hidden, latent_dim)
        self.fc_logvar = nn.Linear(hidden, latent_dim)
        self.fc3 = nn.Linear(latent_dim, hidden)
        self.fc4 = nn.Linear(hidden, pixels)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.fc1(x.flatten(1)))                  # (N, 400)
        return self.fc_mu(h), self.fc_logvar(h)                 # (N, latent) each

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc3(z))                             # (N, 400)
        return self.fc4(h).view(-1, *self.shape)                # (N, C, H, W) logits

    def decoder_net(self) -> nn.Module:
        return nn.Sequential(self.fc3, nn.ReLU(), self.fc4, nn.Unflatten(1, self.shape))

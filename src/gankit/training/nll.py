"""`gankit eval-nll`: how well a VAE explains the test set, in nats per image."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from tqdm import tqdm

from gankit.data import load_dataset, to_model
from gankit.errors import UserError
from gankit.models import eval_mode
from gankit.training.loop import load_run
from gankit.training.vae import VaeTask, elbo_terms, iwae_nll


def evaluate_nll(run: Path, *, k: int = 1000, n: int | None = None, seed: int = 0, device: str = "auto",
                 progress: bool = True, batch_size: int = 100) -> dict:
    config, task, state, native = load_run(run, device=device)
    if not isinstance(task, VaeTask):
        raise UserError(f"'{run}' is a {config.model} run; eval-nll needs a vae or vae-mlp run")
    if config.dataset == "folder":
        raise UserError("eval-nll needs a dataset with a test split (mnist, fashion-mnist, fake); "
                        f"'{run}' was trained on a folder")
    test = load_dataset(config.dataset, split="test", data_dir=config.data_dir, image_size=config.image_size,
                        channels=config.channels, fake_size=max(config.fake_size // 4, 32), seed=config.seed)
    images = test.images[:n] if n else test.images
    gen = torch.Generator().manual_seed(seed)
    sums = torch.zeros(3, dtype=torch.float64)
    with eval_mode(task.model), torch.no_grad(), tqdm(total=len(images), desc=f"eval-nll k={k}", unit="img",
                                                      disable=not progress, file=sys.stderr) as bar:
        for chunk in images.split(batch_size):
            x = (to_model(chunk.to(task.device), config.image_size) + 1) / 2
            eps = torch.randn(len(chunk), task.nz, generator=gen).to(task.device)
            recon, kl, _ = elbo_terms(task.model, x, native, eps)
            iwae = iwae_nll(task.model, x, native, k, generator=gen)
            sums += torch.stack([recon.sum(), kl.sum(), iwae.sum()]).double().cpu()
            bar.update(len(chunk))
    recon, kl, iwae = (sums / len(images)).tolist()
    return {"run": str(run), "model": config.model, "step": state["step"], "images": len(images), "k": k,
            "neg_elbo": recon + kl, "recon": recon, "kl": kl, "iwae_nll": iwae}

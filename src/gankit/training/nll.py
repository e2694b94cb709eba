"""`gankit eval-nll`: how well a VAE explains the test set, in nats per image."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm  # a widget in Jupyter, text in a terminal

from gankit.checkpoint import about
from gankit.errors import UserError
from gankit.registry import MODELS
from gankit.runs import has_test_split, load_run, load_split
from gankit.training.vae import VaeTask, test_bounds


def evaluate_nll(run: Path, *, k: int = 1000, n: int | None = None, seed: int = 0, device: str = "auto",
                 progress: bool = True, batch_size: int = 100) -> dict:
    config, task, state, native = load_run(run, device=device)
    if not isinstance(task, VaeTask):
        vaes = " or ".join(name for name, task_class in MODELS.items() if issubclass(task_class, VaeTask))
        raise UserError(f"'{run}' is a {config.model} run; eval-nll needs a {vaes} run")
    if not has_test_split(config):
        raise UserError(f"eval-nll needs a dataset with a test split; '{run}' was trained on {config.dataset}, "
                        "which has none")
    images = load_split(config, "test").images
    images = images[:n] if n else images
    with tqdm(total=len(images), desc=f"eval-nll k={k}", unit="img", disable=not progress, file=sys.stderr) as bar:
        bounds = test_bounds(task.model, images, size=config.image_size, native=native, k=k,
                             rng=torch.Generator().manual_seed(seed), batch_size=batch_size, progress=bar.update)
    return {"run": str(run), "model": config.model, "step": about(state).step, "images": len(images), "k": k,
            **bounds}

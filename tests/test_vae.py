import json
import math

import numpy as np
import pytest
import torch

from conftest import MNIST_DIR, requires_mnist
from gankit.checkpoint import load_checkpoint
from gankit.cli import main
from gankit.models.vae import ConvVAE, MlpVAE
from gankit.training.vae import bernoulli_nll, elbo_terms, gaussian_kl, gaussian_log_density, iwae_nll

VAE_ARGS = ["--dataset", "fake", "--fake-size", "64", "--image-size", "16", "--width", "8",
            "--latent-dim", "4", "--batch-size", "16", "--no-progress"]


def test_closed_form_kl_matches_monte_carlo():
    torch.manual_seed(0)
    mu, logvar = torch.randn(3, 5), torch.randn(3, 5) * 0.5
    z = mu[:, None] + torch.randn(3, 200_000, 5) * torch.exp(0.5 * logvar)[:, None]
    mc = (gaussian_log_density(z, mu[:, None], logvar[:, None])
          - gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z))).mean(1)
    torch.testing.assert_close(mc, gaussian_kl(mu, logvar), rtol=0.02, atol=0.02)
    assert torch.allclose(gaussian_kl(torch.zeros(2, 4), torch.zeros(2, 4)), torch.zeros(2))


def test_bernoulli_nll_is_binary_cross_entropy_summed_over_pixels():
    logits = torch.tensor([[[[0.0, 2.0]]]])
    x = torch.tensor([[[[1.0, 0.0]]]])
    expected = math.log(2) + math.log(1 + math.exp(2.0))
    assert bernoulli_nll(logits, x).item() == pytest.approx(expected, rel=1e-6)


def test_elbo_is_reconstruction_plus_kl_and_crops_the_padding():
    torch.manual_seed(0)
    model = ConvVAE(image_size=32, latent_dim=3, width=4).eval()
    x = torch.zeros(2, 1, 32, 32)
    x[..., 2:30, 2:30] = torch.rand(2, 1, 28, 28)
    eps = torch.randn(2, 3)
    recon, kl, logits = elbo_terms(model, x, native=28, eps=eps)
    mu, logvar = model.encode(x)
    z = mu + eps * torch.exp(0.5 * logvar)
    by_hand = torch.nn.functional.binary_cross_entropy_with_logits(
        model.decode(z)[..., 2:30, 2:30], x[..., 2:30, 2:30], reduction="none").sum((1, 2, 3))
    torch.testing.assert_close(recon, by_hand)  # 784 pixels, not 1024
    torch.testing.assert_close(kl, gaussian_kl(mu, logvar))


def test_iwae_k1_estimates_the_elbo_and_never_exceeds_it():
    torch.manual_seed(0)
    model = MlpVAE(image_size=8, latent_dim=2, hidden=16).eval()
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        elbo = torch.stack([sum(elbo_terms(model, x, 8)[:2]) for _ in range(4000)]).mean(0)
        k1 = torch.stack([iwae_nll(model, x, 8, 1) for _ in range(4000)]).mean(0)
        k100 = iwae_nll(model, x, 8, 100, rng=torch.Generator().manual_seed(1))
    torch.testing.assert_close(k1, elbo, rtol=0.01, atol=0.05)
    assert (k100 <= elbo + 1e-3).all()


def test_iwae_bound_tightens_with_k_on_a_trained_model(tmp_path):
    """Train a tiny VAE for real, then: -ELBO >= IWAE(k=1..) and it falls as k grows."""
    run = tmp_path / "run"
    assert main(["train", *VAE_ARGS, "--model", "vae-mlp", "--epochs", "3", "--out", str(run)]) == 0
    assert main(["eval-nll", str(run), "--k", "10", "--json", "--no-progress"]) == 0
    from gankit.training.nll import evaluate_nll
    bounds = {k: evaluate_nll(run, k=k, progress=False, device="cpu") for k in (1, 10, 100)}
    assert bounds[1]["iwae_nll"] == pytest.approx(bounds[1]["neg_elbo"], rel=0.02)
    assert bounds[100]["iwae_nll"] <= bounds[10]["iwae_nll"] <= bounds[1]["iwae_nll"] + 0.5
    assert bounds[100]["iwae_nll"] < bounds[100]["neg_elbo"]


@pytest.mark.parametrize("model", ["vae", "vae-mlp"])
def test_vae_run_folder_and_metrics(tmp_path, model):
    run = tmp_path / "run"
    assert main(["train", *VAE_ARGS, "--model", model, "--epochs", "2", "--out", str(run)]) == 0
    for name in ("real.png", "fake_epoch_001.png", "recon_epoch_001.png", "recon_epoch_002.png"):
        assert (run / "samples" / name).exists(), name
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    for ln in lines:
        assert ln["neg_elbo"] == pytest.approx(ln["recon"] + ln["kl"], rel=1e-5)
        assert ln["test_neg_elbo"] == pytest.approx(ln["test_recon"] + ln["test_kl"], rel=1e-9)
        assert ln["kl"] >= 0 and ln["test_kl"] >= 0
    config = json.loads((run / "config.json").read_text())
    assert config["lr"] == 1e-3 and config["latent_dim"] == 4


def test_vae_resume_is_exact(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    args = [*VAE_ARGS, "--model", "vae"]
    assert main(["train", *args, "--max-steps", "6", "--out", str(straight)]) == 0
    assert main(["train", *args, "--max-steps", "3", "--out", str(split)]) == 0
    assert main(["train", "--resume", str(split), "--max-steps", "6", "--no-progress"]) == 0
    a = load_checkpoint(straight / "checkpoints" / "last.pt")["modules"]["vae"]
    b = load_checkpoint(split / "checkpoints" / "last.pt")["modules"]["vae"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ma = (straight / "metrics.jsonl").read_text().splitlines()
    mb = (split / "metrics.jsonl").read_text().splitlines()
    assert json.loads(ma[0])["test_neg_elbo"] == json.loads(mb[0])["test_neg_elbo"]


@requires_mnist
def test_vae_samples_export_at_native_size(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--model", "vae", "--data-dir", str(MNIST_DIR), "--width", "4", "--latent-dim", "2",
                 "--max-steps", "1", "--no-progress", "--out", str(run)]) == 0
    assert main(["sample", str(run), "--n", "7", "--seed", "1", "--out", str(tmp_path / "s.npz")]) == 0
    assert main(["sample", str(run), "--n", "7", "--seed", "1", "--out", str(tmp_path / "t.npz")]) == 0
    s, t = np.load(tmp_path / "s.npz")["images"], np.load(tmp_path / "t.npz")["images"]
    assert s.shape == (7, 28, 28) and s.dtype == np.uint8 and np.array_equal(s, t)


def test_eval_nll_refuses_a_gan_run(tmp_path, capsys):
    run = tmp_path / "gan"
    assert main(["train", "--dataset", "fake", "--fake-size", "32", "--image-size", "16", "--width", "4",
                 "--batch-size", "16", "--max-steps", "1", "--no-progress", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["eval-nll", str(run)]) == 2
    assert "needs a vae" in capsys.readouterr().err

"""The modern GAN options (issue 14): losses, spectral norm, R1, DiffAugment, packing, TTUR,
D steps, the ResNet, recipes; each against a reference value, each resuming exactly and
running under bf16, each bad value refused with one line."""

import math

import pytest
import torch
from test_training import assert_resume_is_exact
from torch import nn

from gankit.cli import main
from gankit.config import TrainConfig
from gankit.models.dcgan import Discriminator
from gankit.models.spectral import spectral_norm
from gankit.resolve import resolve
from gankit.training import augment
from gankit.training.gan import RECIPES, GanTask, pack
from gankit.training.losses import LOSSES, r1_penalty

REAL = torch.tensor([2.0, -1.0])
FAKE = torch.tensor([0.5, -3.0])


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


@pytest.mark.parametrize("name, d_value, g_value", [
    # BCE: D: mean softplus(-real) + mean softplus(fake); G: mean softplus(-fake).
    ("bce", (softplus(-2) + softplus(1)) / 2 + (softplus(0.5) + softplus(-3)) / 2,
     (softplus(-0.5) + softplus(3)) / 2),
    # Hinge: mean relu(1 - real) = (0 + 2) / 2; mean relu(1 + fake) = (1.5 + 0) / 2; G: -mean fake.
    ("hinge", 1.0 + 0.75, 1.25),
    # Least squares: 0.5 (mean (real - 1)^2 + mean fake^2) = 0.5 (2.5 + 4.625); G: 0.5 mean (fake - 1)^2.
    ("lsgan", 0.5 * (2.5 + 4.625), 0.5 * (0.25 + 16.0) / 2),
])
def test_each_loss_against_a_hand_computed_value(name, d_value, g_value):
    loss = LOSSES[name]
    assert float(loss.d(REAL, FAKE)) == pytest.approx(d_value, rel=1e-6)
    assert float(loss.g(FAKE)) == pytest.approx(g_value, rel=1e-6)


def largest_singular_value(layer: nn.Module) -> float:
    return float(torch.linalg.matrix_norm(layer.weight.detach().float().flatten(1), ord=2))


# Built inside the test, after the seed: a layer made at collection time would take its
# weights from whatever the global RNG held then, and the power iteration's pace with them.
@pytest.mark.parametrize("make", [lambda: nn.Conv2d(3, 16, 4, 2, 1), lambda: nn.Linear(40, 7),
                                  lambda: nn.Embedding(10, 32)], ids=["conv", "linear", "embedding"])
def test_spectral_norm_holds_the_largest_singular_value_at_one(make):
    torch.manual_seed(0)
    layer = make()
    with torch.no_grad():
        next(layer.parameters()).mul_(5.0)  # sigma far from 1 before normalization
    assert largest_singular_value(layer) > 2
    spectral_norm(layer).train()
    for _ in range(100):  # the training steps' power iterations, one each
        layer.weight
    assert largest_singular_value(layer) == pytest.approx(1.0, abs=2e-3)
    layer.eval()  # eval mode uses the stored estimate: the same weight every time
    assert torch.equal(layer.weight, layer.weight)


def test_spectral_norm_computes_in_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    layer = spectral_norm(nn.Conv2d(8, 8, 3)).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for _ in range(100):
            weight = layer.weight
    assert weight.dtype == torch.float32
    assert float(torch.linalg.matrix_norm(weight.detach().flatten(1), ord=2)) == pytest.approx(1.0, abs=2e-3)


def test_spectral_norm_discriminator_trains_and_checkpoints_its_vectors():
    torch.manual_seed(0)
    d = spectral_norm(Discriminator(image_size=16, width=8, norm=False))
    x = torch.randn(4, 1, 16, 16)
    d(x).sum().backward()  # two passes before one backward (reals, fakes) must work too
    d(x).sum().backward()
    keys = set(d.state_dict())
    assert any(k.endswith("parametrizations.weight.original") for k in keys)
    assert any(k.endswith("parametrizations.weight.0.u") for k in keys)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in d.modules())


def test_r1_against_a_finite_difference_gradient():
    torch.manual_seed(0)
    d = Discriminator(image_size=16, width=4, norm=False).double().eval()
    x = torch.randn(2, 1, 16, 16, dtype=torch.double)
    real = x.clone().requires_grad_(True)
    penalty = float(r1_penalty(d(real), real).detach())
    # Central differences of sum_i D(x_i), pixel by pixel: the gradient of each image.
    grad = torch.zeros_like(x)
    h = 1e-6
    with torch.no_grad():
        for idx in range(x.numel()):
            e = torch.zeros(x.numel(), dtype=torch.double)
            e[idx] = h
            e = e.view_as(x)
            grad.view(-1)[idx] = (d(x + e).sum() - d(x - e).sum()) / (2 * h)
    expected = float(grad.square().flatten(1).sum(1).mean())
    assert expected > 0
    assert penalty == pytest.approx(expected, rel=1e-5)


def test_r1_is_added_lazily_and_its_gradient_reaches_d():
    config = resolve(TrainConfig(image_size=16, width=8, nz=8, r1=10.0, r1_every=4))
    task = GanTask(config, channels=1, device=torch.device("cpu"))
    assert [task.regularizes(s) for s in range(8)] == [True, False, False, False] * 2
    plain = GanTask(resolve(TrainConfig(image_size=16, width=8, nz=8, recipe="dcgan")), channels=1,
                    device=torch.device("cpu"))
    assert not any(plain.regularizes(s) for s in range(20))
    real = torch.rand(8, 1, 16, 16) * 2 - 1
    torch.manual_seed(1)
    task.step(real, regularize=True)  # runs the double backward


def test_diffaugment_is_differentiable():
    x = (torch.rand(4, 3, 16, 16) * 2 - 1).requires_grad_(True)
    out = augment.DiffAugment("color,translation,cutout")(x)
    assert out.shape == x.shape
    out.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", "color,translation,cutout"])
def test_diffaugment_draw_is_the_same_for_reals_and_fakes(policy):
    """One seeded draw transforms any two batches alike: the same shift, square and color
    change for image i of either batch (so, transforms being affine in the image, the
    difference of two augmented batches is the augmented difference, up to the shift)."""
    real, fake = torch.rand(6, 3, 16, 16), torch.rand(6, 3, 16, 16)
    aug = augment.DiffAugment(policy)
    torch.manual_seed(3)
    a = aug(real)
    torch.manual_seed(3)
    b = aug(real.clone())
    assert torch.equal(a, b)
    if "color" not in policy:  # translation and cutout are linear in the image
        torch.manual_seed(3)
        mixed = aug(real + fake)
        torch.manual_seed(3)
        fa = aug(fake)
        assert torch.allclose(mixed, a + fa, atol=1e-6)
    torch.manual_seed(4)
    assert not torch.equal(aug(real), a)  # another draw, another transform


def test_translation_and_cutout_change_what_the_paper_says():
    ones = torch.ones(64, 1, 32, 32)
    torch.manual_seed(0)
    moved = augment.translation(ones)
    # At most 4 pixels (1/8 of 32) of zeros come in from each side; the rest is unchanged.
    zero_rows = (moved == 0).all(dim=3).sum(dim=(1, 2))
    assert int(zero_rows.max()) <= 4 and int(zero_rows.max()) > 0
    assert ((moved == 0) | (moved == 1)).all()
    cut = augment.cutout(ones)
    zeros = (cut == 0).flatten(1).sum(1)
    assert int(zeros.max()) <= 16 * 16 and int(zeros.min()) > 0  # a square of half the side, clipped at edges
    gray = torch.rand(8, 1, 16, 16)
    torch.manual_seed(0)
    saturated = augment.color(gray)
    assert torch.isfinite(saturated).all()


def test_unknown_policy_names_the_known_ones():
    with pytest.raises(ValueError, match="color, translation, cutout"):
        augment.parse_policy("color,blur")
    assert augment.parse_policy("none") == () and augment.parse_policy(" Color , cutout ") == ("color", "cutout")


def test_packing_shapes_and_a_packed_step():
    x = torch.arange(8 * 3 * 4 * 4, dtype=torch.float32).view(8, 3, 4, 4)
    packed = pack(x, 4)
    assert packed.shape == (2, 12, 4, 4)
    assert torch.equal(packed[1, 3:6], x[5])  # pack 1 holds images 4..7, in order
    config = resolve(TrainConfig(image_size=16, width=8, nz=8, pack=4))
    task = GanTask(config, channels=1, device=torch.device("cpu"))
    assert task.discriminator.net[0].in_channels == 4
    metrics = task.step(torch.rand(16, 1, 16, 16) * 2 - 1)
    assert all(torch.isfinite(v) for v in metrics.values())


def test_d_steps_take_their_own_batches_and_ttur_sets_two_learning_rates():
    config = resolve(TrainConfig(image_size=16, width=8, nz=8, d_steps=3, lr_d=4e-4, lr_g=1e-4))
    assert GanTask.batches_per_step(config) == 3
    task = GanTask(config, channels=1, device=torch.device("cpu"))
    assert task.optimizers["discriminator"].param_groups[0]["lr"] == 4e-4
    assert task.optimizers["generator"].param_groups[0]["lr"] == 1e-4
    steps = []
    original = task.update_d
    task.update_d = lambda real, labels, regularize: steps.append(real.clone()) or original(real, labels, regularize)
    real = torch.rand(3 * 8, 1, 16, 16) * 2 - 1
    task.step(real)
    assert len(steps) == 3 and all(torch.equal(s, real[8 * i:8 * (i + 1)]) for i, s in enumerate(steps))


def test_recipes_are_data_and_flags_override_them():
    sngan = resolve(TrainConfig(recipe="sngan"))
    assert (sngan.arch, sngan.loss, sngan.sn, sngan.d_bn, sngan.beta1, sngan.beta2, sngan.d_steps) == \
        ("resnet", "hinge", True, False, 0.0, 0.9, 5)
    assert resolve(TrainConfig(recipe="sngan", d_steps=1, loss="bce")).d_steps == 1
    best = resolve(TrainConfig(recipe="dcgan-b64-r1"))
    assert (best.batch_size, best.r1, best.r1_every, best.loss, best.edge) == (64, 1.0, 16, "bce", "4x4")
    assert resolve(TrainConfig(recipe="dcgan-b64-r1", batch_size=32)).batch_size == 32
    assert resolve(TrainConfig(recipe="dcgan")).batch_size == 128 == resolve(TrainConfig(model="vae")).batch_size
    # An architecture named on the command line brings its published init, unless --init is given.
    assert resolve(TrainConfig(arch="resnet")).init == "xavier"
    assert resolve(TrainConfig(recipe="sngan", arch="dcgan")).init == "normal"
    assert resolve(TrainConfig(arch="resnet", init="pytorch")).init == "pytorch"
    # The tutorial's and the DCGAN paper's recipes keep their meaning: none of the new options.
    for name in ("tutorial", "dcgan"):
        c = resolve(TrainConfig(recipe=name))
        assert (c.arch, c.loss, c.sn, c.d_bn, c.r1, c.d_steps, c.diffaugment, c.pack, c.ema) == \
            ("dcgan", "bce", False, True, 0.0, 1, "none", 1, 0.0)
        assert c.lr_d == c.lr_g == c.lr
    for name in RECIPES:
        resolve(TrainConfig(recipe=name))


# Each option, on the tiny fake dataset: runs, resumes exactly, and runs under bf16.
OPTIONS = {
    "hinge": ["--loss", "hinge"],
    "lsgan": ["--loss", "lsgan"],
    "sn": ["--sn", "--no-d-bn"],
    "r1": ["--r1", "1", "--r1-every", "2"],
    "diffaugment": ["--diffaugment", "color,translation,cutout"],
    "pack": ["--pack", "2"],
    "ttur": ["--lr-d", "4e-4", "--lr-g", "1e-4", "--d-steps", "2"],
    "resnet": ["--arch", "resnet", "--recipe", "sngan", "--d-steps", "2", "--width", "4"],
}


@pytest.mark.parametrize("option", list(OPTIONS))
def test_each_option_resumes_exactly(tmp_path, tiny_args, option):
    assert_resume_is_exact(tmp_path, [*tiny_args, "--fake-size", "96", *OPTIONS[option]], 5, 2)


@pytest.mark.parametrize("option", list(OPTIONS))
def test_each_option_steps_under_bf16_autocast(option):
    from gankit.cli import build_parser

    args = vars(build_parser().parse_args(["train", "--image-size", "16", "--width", "8", "--nz", "8",
                                           "--batch-size", "8", *OPTIONS[option]]))
    args.pop("command")
    config = resolve(TrainConfig(**args))
    torch.manual_seed(0)
    task = GanTask(config, channels=1, device=torch.device("cpu"))
    real = torch.rand(8 * GanTask.batches_per_step(config), 1, 16, 16) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
        for step in range(2):
            metrics = task.step(real, regularize=task.regularizes(step))
    assert all(torch.isfinite(v) for v in metrics.values())
    assert all(p.dtype == torch.float32 for p in task.generator.parameters())


@pytest.mark.parametrize("flags, message", [
    (["--r1", "-1"], "--r1 must be a penalty weight >= 0"),
    (["--pack", "0"], "--pack must be a positive whole number (at most 64), got 0"),
    (["--diffaugment", "blur"], "unknown DiffAugment policy 'blur'"),
    (["--loss", "wasserstein"], "unknown --loss 'wasserstein'; use one of: bce"),
    (["--arch", "resnet", "--image-size", "48"], "not supported"),
    (["--pack", "3"], "--batch-size 16 is not a multiple of --pack 3"),
    (["--lr-d", "0"], "--lr-d must be a positive number"),
    (["--d-steps", "0"], "--d-steps must be a positive whole number (at most 64), got 0"),
    (["--model", "vae", "--sn"], "--sn applies to the dcgan model only"),
])
def test_bad_values_get_one_line_and_exit_2(tmp_path, tiny_args, capsys, flags, message):
    out = tmp_path / "run"
    assert main(["train", *tiny_args, *flags, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("error:")
    assert not out.exists()  # nothing half-written


def test_pack_refuses_a_conditional_run(tmp_path, capsys):
    from conftest import make_class_folder

    folder = make_class_folder(tmp_path / "data", classes=2)
    assert main(["train", "--dataset", "folder", "--data-dir", str(folder), "--image-size", "16", "--width", "8",
                 "--batch-size", "8", "--conditional", "--pack", "2", "--no-progress",
                 "--out", str(tmp_path / "run")]) == 2
    assert "--pack and --conditional" in capsys.readouterr().err


@pytest.mark.parametrize("conditional", [False, True])
def test_a_resnet_run_samples_exports_and_reloads(tmp_path, conditional):
    """The ResNet goes through every path a DCGAN does: train, sample, export, rebuild."""
    import numpy as np

    from conftest import make_class_folder
    from gankit.export import load_safetensors
    from gankit.runs import load_run

    run = tmp_path / "run"
    data = ["--dataset", "fake", "--fake-size", "32"]
    if conditional:
        data = ["--dataset", "folder", "--data-dir", str(make_class_folder(tmp_path / "data", classes=2)),
                "--conditional"]
    assert main(["train", *data, "--arch", "resnet", "--image-size", "16", "--width", "4", "--nz", "8",
                 "--batch-size", "8", "--max-steps", "2", "--no-progress", "--out", str(run)]) == 0
    assert main(["sample", str(run), "--n", "6", "--out", str(tmp_path / "s.npz")]) == 0
    assert np.load(tmp_path / "s.npz")["images"].shape[0] == 6
    assert main(["export", str(run), "--out", str(tmp_path / "g.safetensors")]) == 0
    net, meta = load_safetensors(tmp_path / "g.safetensors")
    _, task, _, _ = load_run(run)
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 0, 1]) if conditional else None
    with torch.no_grad():
        exported = net(z, labels) if conditional else net(z)
    assert torch.allclose(exported, task.generate(z, labels), atol=1e-5)

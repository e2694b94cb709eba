import math

import pytest
import torch

from gankit.models import dcgan
from gankit.models.resnet import (
    RESNET_SIZES,
    DownBlock,
    ResDiscriminator,
    ResGenerator,
    UpBlock,
    check_resnet_size,
    sngan_init,
)
from gankit.models.spectral import spectral_norm

NZ = 8
WIDTH = 4  # ch_g 16, ch_d 8: every layer of the architecture, in milliseconds


@pytest.mark.parametrize("size", [16, 32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3, 2])  # 2: two 1-channel images packed (PacGAN)
def test_shapes_and_ranges(size, channels):
    g = ResGenerator(image_size=size, channels=channels, nz=NZ, width=WIDTH)
    d = ResDiscriminator(image_size=size, channels=channels, width=WIDTH)
    x = g(torch.randn(3, NZ))
    assert x.shape == (3, channels, size, size)
    assert x.min() >= -1 and x.max() <= 1  # tanh
    assert x.std() > 0
    logits = d(x)
    assert logits.shape == (3,) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    assert g(torch.randn(3, NZ, 1, 1)).shape == x.shape  # the DCGAN's z shape too


def test_table_4_at_32():
    """SNGAN's CIFAR-10 ResNet at width 64: dense to 4x4x256, three up-blocks of 256;
    D: first block, one down-block, two plain blocks of 128, a 128 -> 1 Linear."""
    g = ResGenerator(image_size=32, channels=3, nz=128, width=64)
    assert (g.linear.in_features, g.linear.out_features) == (128, 4 * 4 * 256)
    ups = [m for m in g.modules() if isinstance(m, UpBlock)]
    assert [(b.conv1.in_channels, b.conv2.out_channels) for b in ups] == [(256, 256)] * 3
    assert (g.out.in_channels, g.out.out_channels, g.out.kernel_size) == (256, 3, (3, 3))
    d = ResDiscriminator(image_size=32, channels=3, width=64)
    blocks = [m for m in d.modules() if isinstance(m, DownBlock)]
    assert [(b.first, b.down, b.shortcut is None) for b in blocks] == [
        (True, True, False), (False, True, False), (False, False, True), (False, False, True)]
    assert all(b.conv1.out_channels == 128 for b in blocks)
    assert (d.linear.in_features, d.linear.out_features) == (128, 1)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules())  # SNGAN's D has none
    # One more block each at 64x64.
    assert len(ResGenerator(image_size=64, width=4).blocks) == 4
    assert len(ResDiscriminator(image_size=64, width=4).blocks) == 5


def test_shortcuts_compute_the_papers_order():
    """G's shortcut runs conv1x1 before the upsampling and D's runs the pool before the conv1x1,
    on fewer pixels; both are the paper's function (upsample, then conv; conv, then pool)."""
    torch.manual_seed(0)
    up, down = UpBlock(4, 6), DownBlock(4, 6)
    x = torch.randn(2, 4, 8, 8)
    paper_up = up.shortcut(torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"))
    ours_up = up(x) - up.conv2(torch.relu(up.bn2(up.conv1(torch.nn.functional.interpolate(
        torch.relu(up.bn1(x)), scale_factor=2, mode="nearest")))))
    assert torch.allclose(ours_up, paper_up, atol=1e-5)
    paper_down = torch.nn.functional.avg_pool2d(down.shortcut(x), 2)
    residual = torch.nn.functional.avg_pool2d(down.conv2(torch.relu(down.conv1(torch.relu(x)))), 2)
    assert torch.allclose(down(x) - residual, paper_down, atol=1e-5)


def test_drop_in_for_the_dcgan_pair():
    """The keywords dcgan.py's pair takes (less its own edge switches) build these too."""
    kwargs = dict(image_size=16, channels=1, width=4)
    for old, new, extra in ((dcgan.Generator, ResGenerator, {"nz": NZ}), (dcgan.Discriminator, ResDiscriminator, {})):
        old(**kwargs, **extra, num_classes=3)
        new(**kwargs, **extra, num_classes=3)
    with pytest.raises(TypeError):
        ResGenerator(16)  # keyword-only, as dcgan's


def test_conditional_generator_uses_the_label():
    torch.manual_seed(0)
    g = ResGenerator(image_size=16, channels=1, nz=NZ, width=WIDTH, num_classes=3)
    # Conditional BN starts as plain BN (gamma 1, beta 0): move one class off it.
    with torch.no_grad():
        for m in g.modules():
            if hasattr(m, "gamma"):
                m.gamma.weight[1].uniform_(0.5, 1.5)
                m.beta.weight[1].normal_()
    g.eval()  # running statistics: each image depends on its own label only
    z = torch.randn(1, NZ).repeat(2, 1)
    x = g(z, torch.tensor([0, 1]))
    assert not torch.allclose(x[0], x[1])
    assert torch.allclose(g(z, torch.tensor([0, 0]))[0], x[0])
    assert not any(isinstance(m, torch.nn.BatchNorm2d) and m.affine for b in g.blocks for m in b.modules())
    with pytest.raises(ValueError, match="needs labels"):
        g(z)
    with pytest.raises(ValueError, match="unconditional generator"):
        ResGenerator(image_size=16, nz=NZ, width=WIDTH)(z, torch.tensor([0, 1]))


def test_projection_discriminator_uses_the_label():
    torch.manual_seed(0)
    d = ResDiscriminator(image_size=16, channels=1, width=WIDTH, num_classes=3)
    x = torch.randn(1, 1, 16, 16).repeat(3, 1, 1, 1)
    logits = d(x, torch.tensor([0, 1, 2]))
    assert logits.shape == (3,)
    assert logits.unique().numel() == 3
    with pytest.raises(ValueError, match="needs labels"):
        d(x)
    with pytest.raises(ValueError, match="unconditional discriminator"):
        ResDiscriminator(image_size=16, width=WIDTH)(x, torch.tensor([0, 1, 2]))


@pytest.mark.parametrize("num_classes", [0, 3])
def test_spectral_norm_applies_from_outside(num_classes):
    torch.manual_seed(0)
    d = spectral_norm(ResDiscriminator(image_size=16, channels=2, width=WIDTH, num_classes=num_classes))
    sngan_init(d)  # after spectral_norm: sets the raw weights and restarts the power iteration
    layers = [m for m in d.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.Embedding))]
    assert layers and all(hasattr(m, "parametrizations") for m in layers)
    for m in layers:  # each weight seen has largest singular value 1 (stale u, v of the old weights: off by 0.36)
        assert torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2) == pytest.approx(1.0, abs=0.05)
    labels = torch.tensor([0, 1, 2, 0]) if num_classes else None
    x = torch.randn(4, 2, 16, 16, requires_grad=True)
    d(x, labels).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in d.parameters() if p.grad is not None)


@pytest.mark.parametrize("num_classes", [0, 3])
def test_bf16_autocast_gives_finite_gradients(num_classes):
    torch.manual_seed(0)
    g = ResGenerator(image_size=16, channels=1, nz=NZ, width=WIDTH, num_classes=num_classes)
    d = spectral_norm(ResDiscriminator(image_size=16, channels=1, width=WIDTH, num_classes=num_classes))
    labels = torch.tensor([0, 1, 2, 1]) if num_classes else None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = d(g(torch.randn(4, NZ), labels), labels)
    assert logits.dtype == torch.float32  # the pooling, the Linear and the projection ran in fp32
    logits.mean().backward()
    for net in (g, d):
        grads = [p.grad for p in net.parameters()]
        assert all(grad is not None and torch.isfinite(grad).all() for grad in grads)
    assert g.linear.weight.grad.abs().sum() > 0


def test_unsupported_size_names_the_supported_ones():
    with pytest.raises(ValueError, match="16, 32, 64, 128"):
        ResGenerator(image_size=48)
    with pytest.raises(ValueError, match="not supported by the resnet architecture"):
        ResDiscriminator(image_size=8)
    for size in RESNET_SIZES:
        check_resnet_size(size)


def test_constructors_leave_pytorch_defaults_and_sngan_init_sets_xavier():
    torch.manual_seed(0)
    g = ResGenerator(image_size=16, nz=NZ, width=8, num_classes=3)
    d = ResDiscriminator(image_size=16, width=8, num_classes=3)
    block = g.blocks[0]
    default_bound = 1 / math.sqrt(block.shortcut.in_channels)  # kaiming_uniform(a=sqrt(5)) of a 1x1 conv
    assert block.shortcut.bias.abs().sum() > 0  # PyTorch's default bias, untouched
    assert block.shortcut.weight.abs().max() <= default_bound
    sngan_init(g)
    sngan_init(d)
    for net in (g, d):
        for m in net.modules():
            if isinstance(m, (UpBlock, DownBlock)) and m.shortcut is not None:
                w = m.shortcut.weight
                bound = math.sqrt(6 / (w.shape[0] + w.shape[1]))  # xavier, gain 1, 1x1 kernel
                assert w.abs().max() <= bound
                if w.numel() >= 64:  # enough draws to reach near the bound (PyTorch's is lower)
                    assert w.abs().max() > 0.8 * bound
                assert (m.shortcut.bias == 0).all()
                w3 = m.conv1.weight
                bound3 = math.sqrt(2) * math.sqrt(6 / (9 * (w3.shape[0] + w3.shape[1])))  # gain sqrt(2)
                assert w3.abs().max() <= bound3 and w3.abs().max() > 0.8 * bound3
    emb = d.embed.weight
    assert emb.abs().max() <= math.sqrt(6 / sum(emb.shape))
    gammas = [m.gamma.weight for m in g.modules() if hasattr(m, "gamma")]
    assert gammas and all((w == 1).all() for w in gammas)

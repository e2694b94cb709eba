import pytest
import torch

from gankit.data import to_model, to_native
from gankit.models.dcgan import Discriminator, Generator, dcgan_init


@pytest.mark.parametrize("size", [16, 32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("edge", ["4x4", "1x1"])
def test_shapes_and_ranges(size, channels, edge):
    g = Generator(image_size=size, channels=channels, nz=10, width=4, edge=edge)
    d = Discriminator(image_size=size, channels=channels, width=4, edge=edge)
    x = g(torch.randn(3, 10))
    assert x.shape == (3, channels, size, size)
    assert x.min() >= -1 and x.max() <= 1  # tanh output
    logits = d(x)
    assert logits.shape == (3,)
    assert torch.isfinite(logits).all()


def test_tutorial_blocks_at_32():
    """The layer plan the README describes: 4x4 edge layers, widths 256-128-64."""
    g = Generator(image_size=32, channels=1, nz=100, width=64, edge="4x4")
    convs = [m for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in convs] == [
        (100, 256, 1), (256, 128, 2), (128, 64, 2), (64, 1, 2)]
    g1 = Generator(image_size=32, channels=1, nz=100, width=64, edge="1x1")
    convs = [m for m in g1.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) and c.padding == (1, 1) for c in convs)
    assert len(convs) == 5  # 1 -> 2 -> 4 -> 8 -> 16 -> 32


def test_discriminator_input_batchnorm_switch():
    with_bn = Discriminator(image_size=32, width=8, d_input_bn=True)
    without = Discriminator(image_size=32, width=8, d_input_bn=False)
    assert isinstance(with_bn.net[1], torch.nn.BatchNorm2d)
    assert isinstance(without.net[1], torch.nn.LeakyReLU)
    assert not any(isinstance(m, torch.nn.Sigmoid) for m in without.modules())


def test_dcgan_init_statistics():
    torch.manual_seed(0)
    g = Generator(image_size=64, width=64)
    dcgan_init(g)
    w = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d)])
    assert abs(w.mean().item()) < 1e-3
    assert abs(w.std().item() - 0.02) < 1e-3


def test_mnist_padding_round_trip_is_exact():
    x = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    y = to_model(x, 32)
    assert y.shape == (5, 1, 32, 32)
    assert y[..., :2, :].eq(-1).all() and y[..., :, -2:].eq(-1).all()  # background border
    assert torch.equal(to_native(y, 28), x)


def test_resize_path_keeps_range_and_size():
    x = torch.randint(0, 256, (2, 3, 28, 28), dtype=torch.uint8)
    y = to_model(x, 64)
    assert y.shape == (2, 3, 64, 64) and y.min() >= -1.01 and y.max() <= 1.01
    back = to_native(y, 28)
    assert back.shape == (2, 3, 28, 28) and back.dtype == torch.uint8

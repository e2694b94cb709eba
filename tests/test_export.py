"""`gankit export`: the generator alone, in a file other programs load, with the run's settings."""

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from test_cli import assert_one_line_error, run_cli

from gankit.cli import main
from gankit.export import build_generator, load_safetensors, read_metadata
from gankit.models.dcgan import Generator
from gankit.runs import load_run

VAE_ARGS = ["--dataset", "fake", "--fake-size", "64", "--image-size", "16", "--width", "8",
            "--latent-dim", "4", "--batch-size", "16", "--no-progress"]


def train(tmp_path, args, *extra) -> Path:
    run = tmp_path / "run"
    assert main(["train", *args, *extra, "--max-steps", "3", "--eval-every", "0", "--out", str(run)]) == 0
    return run


def run_images(run: Path, z: torch.Tensor) -> torch.Tensor:
    """What `gankit sample` draws from z, before the uint8 rounding: the reference."""
    _, task, _, _ = load_run(run)
    return task.generate(z)


@pytest.mark.parametrize("ema", [False, True])
def test_safetensors_loads_into_a_fresh_generator_built_from_its_metadata(tmp_path, tiny_args, ema):
    from safetensors.torch import load_file

    run = train(tmp_path, tiny_args, *(["--ema", "0.9"] if ema else []))
    out = tmp_path / "g.safetensors"
    assert main(["export", str(run), "--out", str(out)]) == 0
    meta = read_metadata(out)
    assert meta["nz"] == 8 and meta["image_size"] == 16 and meta["native_size"] == 16 and meta["channels"] == 1
    assert meta["crop"] == 0 and meta["step"] == 3 and meta["gankit_version"]
    assert meta["config"]["width"] == 8 and meta["config"]["ema"] == (0.9 if ema else 0.0)

    # What a user does with the file: the model class, its settings from the metadata, the weights.
    c = meta["config"]
    g = Generator(image_size=meta["image_size"], channels=meta["channels"], nz=meta["nz"],
                  width=c["width"], edge=c["edge"])
    tensors = load_file(out)
    g.load_state_dict(tensors)  # strict: every weight there, none left over
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        mine = g.eval()(z)
    assert mine.shape == (5, 1, 16, 16)
    # The trained G runs channels_last, the fresh one row-major: equal up to float rounding.
    assert torch.allclose(mine, run_images(run, z), atol=1e-6, rtol=0)

    # With --ema the averaged G samples, so that is the one in the file, bit for bit.
    _, task, _, _ = load_run(run)
    sampler = task.generator_ema.module if ema else task.generator
    assert all(torch.equal(tensors[k], v) for k, v in sampler.state_dict().items())
    if ema:
        assert not torch.equal(tensors["net.0.weight"], task.generator.state_dict()["net.0.weight"])


@pytest.mark.parametrize("model", ["vae", "vae-mlp"])
def test_a_vae_exports_its_decoder_as_the_generator(tmp_path, model):
    run = train(tmp_path, VAE_ARGS, "--model", model)
    out = tmp_path / "decoder.safetensors"
    assert main(["export", str(run), "--out", str(out)]) == 0
    net, meta = load_safetensors(out)
    assert meta["model"] == model and meta["nz"] == 4
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        images = net(z)
    assert images.shape == (6, 1, 16, 16) and images.min() >= -1 and images.max() <= 1
    assert torch.allclose(images, run_images(run, z), atol=1e-6, rtol=0)


@pytest.mark.parametrize("model", ["dcgan", "vae", "vae-mlp"])
def test_onnx_matches_pytorch_with_any_batch_size(tmp_path, tiny_args, model):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    args = tiny_args if model == "dcgan" else [*VAE_ARGS, "--model", model]
    run = train(tmp_path, args)
    out = tmp_path / "g.onnx"
    assert main(["export", str(run), "--format", "onnx", "--out", str(out)]) == 0
    meta = read_metadata(out)
    assert meta["model"] == model and meta["image_size"] == 16

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "z" and isinstance(inp.shape[0], str) and inp.shape[1] == meta["nz"]
    for n in (1, 7):  # the export traced a batch of 2
        z = torch.randn(n, meta["nz"], generator=torch.Generator().manual_seed(n))
        (images,) = session.run(None, {"z": z.numpy()})
        assert images.shape == (n, 1, 16, 16)
        assert abs(torch.from_numpy(images) - run_images(run, z)).max() <= 1e-4


def test_metadata_rebuilds_the_same_architecture(tmp_path, tiny_args):
    """build_generator gives a network with exactly the exported tensors' names and shapes."""
    from safetensors import safe_open

    run = train(tmp_path, tiny_args, "--recipe", "tutorial")  # edge 1x1: a different layer stack
    out = tmp_path / "g.safetensors"
    assert main(["export", str(run), "--out", str(out)]) == 0
    fresh = build_generator(read_metadata(out)).state_dict()
    with safe_open(str(out), framework="pt") as f:
        assert sorted(f.keys()) == sorted(fresh)
        assert all(tuple(f.get_slice(k).get_shape()) == tuple(fresh[k].shape) for k in fresh)


def test_mnist_metadata_says_how_to_crop_the_padding():
    """MNIST runs make 32x32 images of 28x28 digits padded by 2: the metadata says so."""
    from gankit.config import TrainConfig
    from gankit.export import metadata
    from gankit.training.task import Exported

    z = Exported(None, {"z": torch.zeros(2, 100)}, "images", "z", "images")
    meta = metadata(TrainConfig(image_size=32, channels=1), {"step": 10}, 100, 28, z)
    assert (meta["image_size"], meta["native_size"], meta["crop"]) == (32, 28, 2)
    assert metadata(TrainConfig(image_size=64, channels=3), {}, 100, 64, z)["crop"] == 0


@pytest.mark.parametrize("args,needles", [
    (["export", "no-such-run", "--out", "g.safetensors"], ["no-such-run"]),
    (["export", "x", "--out", "g.bin"], ["g.bin", ".safetensors", ".onnx"]),
    (["export", "x", "--format", "pt", "--out", "g.pt"], ["--format", "pt"]),
    (["export", "x", "--format", "onnx", "--out", "g.safetensors"], ["g.safetensors", "g.onnx"]),
    (["export", "x", "--out", "no-such-folder/g.safetensors"], ["no-such-folder"]),
    (["export", "x"], ["--out"]),
])
def test_bad_export_flags(args, needles, capsys):
    before = set(Path.cwd().rglob("*"))
    code, err = run_cli(args, capsys)
    assert_one_line_error(code, err, *needles)
    assert set(Path.cwd().rglob("*")) == before


def test_onnx_without_the_packages_says_what_to_install(tmp_path, tiny_args, capsys, monkeypatch):
    run = train(tmp_path, tiny_args)
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
    code, err = run_cli(["export", str(run), "--out", str(tmp_path / "g.onnx")], capsys)
    assert_one_line_error(code, err, "pip install 'gankit[export]'")
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".g.onnx*"))


def test_unwritable_out_is_a_user_error(tmp_path, tiny_args, capsys):
    run = train(tmp_path, tiny_args)
    if os.geteuid() == 0:
        out = Path("/proc/gankit-cannot-write-here.safetensors")  # root ignores permission bits; /proc refuses anyone
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        out = ro / "g.safetensors"
    code, err = run_cli(["export", str(run), "--out", str(out)], capsys)
    assert_one_line_error(code, err, "cannot write", "writable")


def test_export_metadata_is_json_in_the_file(tmp_path, tiny_args):
    """Other tools see the settings without gankit: safetensors' header holds them as a JSON string."""
    run = train(tmp_path, tiny_args)
    out = tmp_path / "g.safetensors"
    assert main(["export", str(run), "--out", str(out)]) == 0
    raw = out.read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    meta = json.loads(header["__metadata__"]["gankit"])
    assert meta["config"] == json.loads((run / "config.json").read_text())


def test_a_conditional_generator_exports_with_its_labels(tmp_path, capsys):
    """safetensors: rebuilt from the metadata, the same images per (z, label); ONNX: two
    inputs, z (N, nz) float32 and labels (N,) int64, any batch size."""
    from conftest import make_class_folder

    root = make_class_folder(tmp_path / "classes", 3)
    args = ["--dataset", "folder", "--data-dir", str(root), "--image-size", "16", "--channels", "1",
            "--width", "8", "--nz", "8", "--batch-size", "16", "--no-progress", "--no-tensorboard", "--conditional"]
    run = train(tmp_path, args)
    out = tmp_path / "g.safetensors"
    assert main(["export", str(run), "--out", str(out)]) == 0
    assert "labels 0..2" in capsys.readouterr().out
    net, meta = load_safetensors(out)
    assert meta["num_classes"] == 3 and "labels" in meta["input"]
    z = torch.randn(6, 8, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    _, task, _, _ = load_run(run)
    with torch.no_grad():
        assert torch.allclose(net(z, labels), task.generate(z, labels), atol=1e-6, rtol=0)

    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    onnx_out = tmp_path / "g.onnx"
    assert main(["export", str(run), "--out", str(onnx_out)]) == 0
    session = ort.InferenceSession(str(onnx_out), providers=["CPUExecutionProvider"])
    zin, yin = session.get_inputs()
    assert (zin.name, yin.name) == ("z", "labels") and yin.type == "tensor(int64)"
    assert isinstance(zin.shape[0], str) and isinstance(yin.shape[0], str)
    for n in (1, 7):
        z = torch.randn(n, 8, generator=torch.Generator().manual_seed(n))
        y = torch.arange(n) % 3
        (images,) = session.run(None, {"z": z.numpy(), "labels": y.numpy()})
        assert images.shape == (n, 1, 16, 16)
        assert abs(torch.from_numpy(images) - task.generate(z, y)).max() <= 1e-4

"""Run folders and checkpoints of gankit 0.1.0 still work: sample, export, serve, eval, resume.

The fixtures (tests/fixtures/README.md) were written by the release itself; what it drew
from them is stored beside them. Images may differ by one level of 255 where another CPU
rounds a float differently; the release's numbers are the reference, not this machine's."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import MNIST_DIR, make_class_folder, requires_mnist
from gankit.checkpoint import load_checkpoint, make_state
from gankit.cli import main
from gankit.runs import load_run

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "v0.1.0"
RESUMED = {"dcgan-ema": 4, "vae": 4, "conditional": 5}  # the end of epoch 1
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


def release_run(name: str, tmp_path: Path) -> Path:
    """A fresh copy of a release run folder (resuming writes into it)."""
    run = tmp_path / name
    shutil.copytree(FIXTURES / name, run)
    return run


def images_of(path: Path) -> np.ndarray:
    return np.load(path)["images"].astype(np.int16)


def assert_same_images(got: Path, want: Path) -> None:
    a, b = images_of(got), images_of(want)
    assert a.shape == b.shape and np.abs(a - b).max() <= 1
    assert (a != b).mean() < 0.01


@pytest.mark.parametrize("name", ["dcgan-ema", "vae", "conditional", "dcgan-mnist"])
def test_a_release_run_samples_what_the_release_sampled(name, tmp_path):
    run = release_run(name, tmp_path)
    assert main(["sample", str(run), "--n", "8", "--seed", "3", "--out", str(tmp_path / "s.npz")]) == 0
    assert_same_images(tmp_path / "s.npz", run / "expected_samples.npz")


@pytest.mark.parametrize("name", sorted(RESUMED))
def test_a_release_run_resumes_as_the_release_did(name, tmp_path):
    run = release_run(name, tmp_path)
    extra = ["--data-dir", str(make_class_folder(tmp_path / "classes", 10))] if name == "conditional" else []
    assert main(["train", "--resume", str(run), "--max-steps", str(RESUMED[name]), "--no-progress", *extra]) == 0
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    want = EXPECTED[name]
    assert record["step"] == want["step"] == RESUMED[name]
    for key, value in want.items():
        if key not in ("images_per_s", "seconds"):
            assert record[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    assert main(["sample", str(run), "--n", "8", "--seed", "3", "--out", str(tmp_path / "s.npz")]) == 0
    assert_same_images(tmp_path / "s.npz", run / "expected_resumed.npz")


@pytest.mark.parametrize("name", ["dcgan-ema", "vae", "conditional"])
def test_a_release_run_exports_the_generator_it_samples_with(name, tmp_path):
    from gankit.data import to_native
    from gankit.export import load_safetensors

    run = release_run(name, tmp_path)
    assert main(["export", str(run), "--out", str(tmp_path / "g.safetensors")]) == 0
    net, meta = load_safetensors(tmp_path / "g.safetensors")
    z = torch.randn(8, meta["nz"], generator=torch.Generator().manual_seed(3))  # as `sample --seed 3` draws
    args = (z, torch.arange(8) % meta["num_classes"]) if meta["num_classes"] else (z,)
    with torch.no_grad():
        images = to_native(net(*args), meta["native_size"]).numpy()
    np.savez(tmp_path / "exported.npz", images=images[:, 0])
    assert_same_images(tmp_path / "exported.npz", run / "expected_samples.npz")


def test_a_release_run_serves(tmp_path):
    from gankit.serve import create_app

    client = create_app(release_run("conditional", tmp_path)).test_client()
    info = client.get("/api/info").get_json()
    assert info["conditional"] and info["num_classes"] == 10 and info["step"] == 2
    response = client.get("/samples.png?seed=3&n=8&class=4")
    assert response.status_code == 200 and response.data.startswith(b"\x89PNG")


@requires_mnist
def test_a_release_run_is_judged(tmp_path, monkeypatch, capsys):
    import gankit.metrics.judge_evaluator as judge_evaluator
    from gankit.metrics.evaluator import train_evaluator
    from gankit.registry import load_dataset

    data = load_dataset("mnist", split="train", data_dir=str(MNIST_DIR))
    small = train_evaluator(data.images[:1024], data.labels[:1024], epochs=1, progress=False)
    monkeypatch.setattr(judge_evaluator, "evaluator_for", lambda *a, **k: small)
    run = release_run("dcgan-mnist", tmp_path)
    assert main(["eval", str(run), "--data-dir", str(MNIST_DIR), "--n", "200", "--json", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 200 and 0 <= result["modes"] <= 10 and result["fid"] > 0


def test_the_checkpoint_format_is_the_release_format(tmp_path):
    release = load_checkpoint(FIXTURES / "dcgan-ema" / "checkpoints" / "last.pt")
    config, task, _, _ = load_run(FIXTURES / "dcgan-ema")
    ours = make_state(config, task, step=2, dataset_size=64, native_size=16, rng=release["rng"], epoch_sums={})
    assert set(ours) == set(release)
    assert set(ours["modules"]) == set(release["modules"])
    for name, state in release["modules"].items():
        assert set(ours["modules"][name]) == set(state)

"""Every user mistake: one line `error: ...` on stderr, exit code 2, no traceback, nothing written."""

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gankit.cli import main

REPO = Path(__file__).resolve().parents[1]


def run_cli(args, capsys):
    capsys.readouterr()  # drop what earlier setup calls printed
    code = main(args)
    err = capsys.readouterr().err
    return code, err


def assert_one_line_error(code, err, *needles):
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize("args,needles", [
    (["train", "--image-size", "48"], ["--image-size 48", "power of two"]),
    (["train", "--image-size", "256"], ["--image-size 256"]),
    (["train", "--epochs", "0"], ["--epochs", "positive"]),
    (["train", "--epochs", "-3"], ["--epochs"]),
    (["train", "--batch-size", "0"], ["--batch-size"]),
    (["train", "--batch-size", "ten"], ["--batch-size", "'ten'"]),
    (["train", "--max-steps", "0"], ["--max-steps"]),
    (["train", "--lr", "-1"], ["--lr"]),
    (["train", "--beta2", "1.5"], ["--beta2"]),
    (["train", "--ema", "1"], ["--ema", "[0, 1)"]),
    (["train", "--model", "vae", "--ema", "0.99"], ["--ema applies to the dcgan and flow models only"]),
    (["train", "--conditional", "--dataset", "fake"], ["--conditional needs labelled data", "one subfolder per class"]),
    (["train", "--conditional", "--model", "vae"], ["--conditional applies to the dcgan and flow models only"]),
    (["train", "--recipe", "magic"], ["--recipe", "magic"]),
    (["train", "--dataset", "cifar"], ["--dataset"]),
    (["train", "--device", "tpu"], ["--device"]),
    (["train", "--dataset", "folder"], ["--data-dir"]),
    (["train", "--dataset", "fake", "--fake-size", "8", "--batch-size", "16"], ["--batch-size 16", "8 images"]),
    (["train", "--bogus"], ["--bogus"]),
    (["sample", "does-not-exist"], ["does-not-exist"]),
    (["sample", "x", "--n", "0"], ["--n"]),
    (["train", "--channels", "2"], ["--channels"]),
    (["train", "--save-every", "5x"], ["--save-every", "10m"]),
    (["train", "--lr", "1e9"], ["--lr"]),
    (["train", "--lr", "nan"], ["--lr"]),
    (["train", "--beta1", "-0.1"], ["--beta1"]),
    (["train", "--width", "0"], ["--width"]),
    (["train", "--nz", "abc"], ["--nz", "'abc'"]),
    (["train", "--latent-dim", "0"], ["--latent-dim"]),
    (["train", "--model", "gan"], ["--model"]),
    (["train", "--init", "orthogonal"], ["--init"]),
    (["train", "--edge", "2x2"], ["--edge"]),
    (["train", "--resume", "no-such-run"], ["no-such-run"]),
    (["train", "--resume", "no-such-run", "--lr", "0.1"], ["--lr", "resuming"]),
    (["sample", "x", "--grid", "a.png", "--out", "b.npz"], ["--out", "--grid"]),
    (["sample", "x", "--out", "no-such-folder/s.npz"], ["no-such-folder"]),
    (["eval-nll", "no-such-run"], ["no-such-run"]),
    (["eval-nll", "x", "--k", "0"], ["--k"]),
    (["frobnicate"], ["frobnicate"]),
])
def test_bad_flags(args, needles, capsys, tmp_path):
    before = set(Path.cwd().rglob("*"))
    code, err = run_cli(args, capsys)
    assert_one_line_error(code, err, *needles)
    assert set(Path.cwd().rglob("*")) == before  # nothing half-written


def test_cuda_without_gpu(capsys, tiny_args):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code, err = run_cli(["train", *tiny_args, "--device", "cuda"], capsys)
    assert_one_line_error(code, err, "cuda", "--device cpu")


def test_unwritable_out_folder(capsys, tmp_path, tiny_args):
    if os.geteuid() == 0:
        target = "/proc/gankit-cannot-write-here"  # root ignores permission bits; /proc refuses anyone
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        target = str(ro / "run")
    code, err = run_cli(["train", *tiny_args, "--out", target], capsys)
    assert_one_line_error(code, err, "cannot write", "--out")


def test_out_folder_with_a_run_is_not_overwritten(capsys, tmp_path, tiny_args):
    run = tmp_path / "run"
    assert main(["train", *tiny_args, "--max-steps", "1", "--out", str(run)]) == 0
    before = (run / "checkpoints" / "last.pt").read_bytes()
    code, err = run_cli(["train", *tiny_args, "--out", str(run)], capsys)
    assert_one_line_error(code, err, "already holds a run", "--resume")
    assert (run / "checkpoints" / "last.pt").read_bytes() == before


def test_resume_refuses_changed_settings(capsys, tmp_path, tiny_args):
    run = tmp_path / "run"
    assert main(["train", *tiny_args, "--max-steps", "1", "--out", str(run)]) == 0
    code, err = run_cli(["train", "--resume", str(run), "--lr", "0.1"], capsys)
    assert_one_line_error(code, err, "--lr", "resuming")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "missing"])
def test_missing_or_corrupt_checkpoint(capsys, tmp_path, tiny_args, damage):
    run = tmp_path / "run"
    assert main(["train", *tiny_args, "--max-steps", "1", "--out", str(run)]) == 0
    for name in ("last.pt", "prev.pt"):
        ckpt = run / "checkpoints" / name
        if not ckpt.exists():
            continue
        data = ckpt.read_bytes()
        if damage == "garbage":
            ckpt.write_bytes(b"this is not a checkpoint" * 10)
        elif damage == "truncated":
            ckpt.write_bytes(data[: len(data) // 2])
        elif damage == "empty":
            ckpt.write_bytes(b"")
        else:
            ckpt.unlink()
    for args in (["sample", str(run), "--out", str(tmp_path / "s.npz")], ["train", "--resume", str(run)]):
        code, err = run_cli(args, capsys)
        assert_one_line_error(code, err, str(run))
    assert not (tmp_path / "s.npz").exists()


def test_checkpoint_from_another_model_shape(capsys, tmp_path, tiny_args):
    """A checkpoint whose weights do not fit its config is refused, not half-loaded."""
    import torch
    run = tmp_path / "run"
    assert main(["train", *tiny_args, "--max-steps", "1", "--out", str(run)]) == 0
    path = run / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    state["config"]["width"] = 16
    torch.save(state, path)
    code, err = run_cli(["sample", str(run), "--out", str(tmp_path / "s.npz")], capsys)
    assert_one_line_error(code, err, "does not fit")


@pytest.mark.parametrize("damage,needle", [
    ("magic", "magic"), ("truncated", "truncated"), ("checksum", "MD5"), ("gzip", "gzip"),
])
def test_corrupt_data_files(capsys, tmp_path, damage, needle):
    import numpy as np

    from gankit.data.idx import write_idx
    data = tmp_path / "mnist"
    data.mkdir()
    n = 60000 if damage == "checksum" else 10  # right shape, wrong bytes: only the MD5 can tell
    images = write_idx(np.zeros((n, 28, 28), np.uint8))
    labels = write_idx(np.zeros(n, np.uint8))
    if damage == "magic":
        images = b"\x01\x02" + images[2:]
    elif damage == "truncated":
        images = images[:-100]
    blob = gzip.compress(images)
    if damage == "gzip":
        blob = blob[:20] + b"\x00" * 10
    (data / "train-images-idx3-ubyte.gz").write_bytes(blob)
    (data / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))
    code, err = run_cli(["train", "--data-dir", str(data), "--no-progress", "--out", str(tmp_path / "r")], capsys)
    assert_one_line_error(code, err, "train-images-idx3-ubyte")
    assert needle.lower() in err.lower()
    assert not (tmp_path / "r").exists()


def test_python_dash_m_end_to_end(tmp_path):
    """The installed entry point, as a user runs it: train on fake data, then sample."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    common = ["--dataset", "fake", "--fake-size", "32", "--image-size", "16", "--width", "8", "--nz", "8",
              "--batch-size", "16", "--epochs", "2"]
    r = subprocess.run([sys.executable, "-m", "gankit", "train", *common, "--out", str(tmp_path / "run")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "run" / "samples" / "fake_epoch_002.png").exists()
    r = subprocess.run([sys.executable, "-m", "gankit", "sample", str(tmp_path / "run"), "--n", "10",
                        "--out", str(tmp_path / "s.npz")], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "wrote 10 images" in r.stdout
    r = subprocess.run([sys.executable, "-m", "gankit", "train", "--epochs", "0"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr

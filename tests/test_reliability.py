"""What gankit promises when things go wrong: kills, signals, divergence, hostile files, full disks."""

import errno
import os
import random
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from gankit.checkpoint import find_checkpoint, load_checkpoint
from gankit.cli import main
from gankit.data.idx import read_idx
from gankit.errors import UserError

REPO = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "fake", "--fake-size", "64", "--image-size", "16", "--width", "8", "--nz", "8",
        "--batch-size", "16", "--no-progress"]


def gankit(*args, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "gankit", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def test_sigkill_during_saves_never_loses_the_checkpoint(tmp_path):
    """20 SIGKILLs at random moments of a run that saves after every step."""
    run = tmp_path / "run"
    rng = random.Random(0)
    steps = []
    last = run / "checkpoints" / "last.pt"

    def mtime():
        try:
            return last.stat().st_mtime_ns
        except FileNotFoundError:
            return 0

    for i in range(20):
        args = (["train", *TINY, "--epochs", "100000", "--save-every", "1", "--out", str(run)] if i == 0 else
                ["train", "--resume", str(run), "--no-progress"])
        before = mtime()
        proc = gankit(*args)
        # Let it write at least one new checkpoint, then kill it at a random moment, often mid-save.
        wait_for(lambda: mtime() not in (0, before) or proc.poll() is not None)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.kill()
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
        assert last.exists()  # prev.pt is a hard link made before the rename: last.pt never goes missing
        state = load_checkpoint(last)
        steps.append(state["step"])
    assert steps == sorted(steps) and steps[-1] > 0  # every resume went on from where the last kill left it
    target = steps[-1] + 3
    assert main(["train", "--resume", str(run), "--max-steps", str(target), "--no-progress"]) == 0
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == target
    assert not list((run / "checkpoints").glob("*.tmp"))  # stale temporaries cleaned on resume


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_then_resume_is_exact(tmp_path, sig, code):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    total = "300"
    assert main(["train", *TINY, "--max-steps", total, "--save-every", "0", "--out", str(straight)]) == 0
    proc = gankit("train", *TINY, "--max-steps", total, "--save-every", "0", "--out", str(stopped))
    wait_for(lambda: (stopped / "metrics.jsonl").exists() and (stopped / "metrics.jsonl").read_text())
    proc.send_signal(sig)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == code, err
    assert f"resume with: gankit train --resume {stopped}" in err and "Traceback" not in err
    step = load_checkpoint(stopped / "checkpoints" / "last.pt")["step"]
    assert 0 < step < int(total)
    assert main(["train", "--resume", str(stopped), "--no-progress"]) == 0
    a = load_checkpoint(straight / "checkpoints" / "last.pt")
    b = load_checkpoint(stopped / "checkpoints" / "last.pt")
    for name in a["modules"]:
        for key, value in a["modules"][name].items():
            assert torch.equal(value, b["modules"][name][key]), (name, key)


def test_divergence_stops_with_exit_3_and_keeps_a_good_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    # lr 10 makes the VAE's KL term overflow within a few steps.
    code = main(["train", *TINY, "--model", "vae", "--latent-dim", "4", "--lr", "10", "--epochs", "50",
                 "--save-every", "1", "--out", str(run)])
    err = capsys.readouterr().err
    assert code == 3, err
    line = [ln for ln in err.splitlines() if ln.startswith("error:")][0]
    assert "diverged at step" in line and "nan" in line.lower() or "inf" in line.lower()
    state = load_checkpoint(find_checkpoint(run))
    for name, tensors in state["modules"].items():
        assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())
    assert main(["sample", str(run), "--n", "2", "--out", str(tmp_path / "s.npz")]) == 0


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_never_runs_code(tmp_path, capsys):
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"config": {}, "modules": {}, "payload": Payload(marker)}, run / "checkpoints" / "last.pt")
    for args in (["sample", str(run), "--out", str(tmp_path / "s.npz")], ["train", "--resume", str(run)]):
        capsys.readouterr()
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "not a gankit checkpoint" in err and len(err.splitlines()) == 1
    assert not marker.exists()


def test_checkpoint_from_another_model_names_what_differs(tmp_path, capsys):
    gan, vae = tmp_path / "gan", tmp_path / "vae"
    assert main(["train", *TINY, "--max-steps", "1", "--out", str(gan)]) == 0
    assert main(["train", *TINY, "--model", "vae", "--max-steps", "1", "--out", str(vae)]) == 0
    state = torch.load(vae / "checkpoints" / "last.pt", weights_only=True)
    state["config"]["model"] = "dcgan"  # the weights of one model under the config of another
    torch.save(state, vae / "checkpoints" / "last.pt")
    capsys.readouterr()
    assert main(["sample", str(vae), "--out", str(tmp_path / "s.npz")]) == 2
    err = capsys.readouterr().err  # the model the weights are, and the one the settings say
    assert "holds 'vae' weights" in err and "--model 'dcgan'" in err
    state = torch.load(gan / "checkpoints" / "last.pt", weights_only=True)
    state["config"]["nz"] = 12
    torch.save(state, gan / "checkpoints" / "last.pt")
    assert main(["sample", str(gan), "--out", str(tmp_path / "s.npz")]) == 2
    err = capsys.readouterr().err
    assert "nz=12" in err and "shape" in err


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_failed_save_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch, err):
    import gankit.checkpoint as ckpt
    run = tmp_path / "run"
    real_save, calls = ckpt.torch.save, []

    def flaky_save(obj, f):
        calls.append(1)
        if len(calls) > 2:  # step 0 and step 1 save; then the disk "fills up"
            raise OSError(err, os.strerror(err))
        real_save(obj, f)

    monkeypatch.setattr(ckpt.torch, "save", flaky_save)
    code = main(["train", *TINY, "--epochs", "5", "--save-every", "1", "--out", str(run)])
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and message.startswith("error: cannot save a checkpoint") and os.strerror(err) in message
    monkeypatch.undo()
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 1
    assert not list((run / "checkpoints").glob("*.tmp"))


def test_idx_header_claiming_a_billion_images_allocates_nothing():
    header = bytes([0, 0, 8, 3]) + (10**9).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    tracemalloc.start()
    with pytest.raises(UserError, match="truncated|size|bytes"):
        read_idx(header + b"\0" * 100)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.binary(max_size=64),
    st.builds(lambda kind, dims, sizes, tail: bytes([0, 0, kind, dims]) + b"".join(
        s.to_bytes(4, "big") for s in sizes) + tail,
        st.sampled_from([8, 9, 11, 13, 0]), st.integers(0, 6),
        st.lists(st.integers(0, 2**32 - 1), max_size=6), st.binary(max_size=256)),
))
def test_fuzz_idx_reader(data):
    tracemalloc.start()
    try:
        array = read_idx(data)
        assert array.dtype == np.uint8
    except UserError as e:
        assert "\n" not in str(e)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 4 << 20  # never allocates what a header merely claims


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(files=st.lists(st.one_of(
    st.binary(max_size=200),
    st.builds(lambda w, h, mode: (w, h, mode), st.integers(1, 40), st.integers(1, 40),
              st.sampled_from(["L", "RGB", "RGBA", "P", "1"])),
), min_size=1, max_size=4), fmt=st.sampled_from(["png", "jpeg"]))
def test_fuzz_folder_loader(tmp_path_factory, files, fmt):
    from gankit.data.folder import load_folder
    root = tmp_path_factory.mktemp("fuzz")
    good = 0
    for i, item in enumerate(files):
        path = root / f"{i}.{'png' if fmt == 'png' else 'jpg'}"
        if isinstance(item, bytes):
            path.write_bytes(item)
        else:
            w, h, mode = item
            img = Image.new(mode, (w, h))
            (img.convert("RGB") if fmt == "jpeg" and mode != "L" else img).save(path, format=fmt.upper())
            good += 1
    warnings = []
    try:
        data = load_folder(root, size=16, channels=3, log=warnings.append)
        assert data.images.shape[1:] == (3, 16, 16) and len(data) >= good
    except UserError as e:
        assert good == 0 and "\n" not in str(e)


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    from gankit.data.folder import load_folder
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow's limit, scaled down for the test
    Image.new("L", (40, 40)).save(tmp_path / "bomb.png")   # 1600 px: over the limit, under 2x: a warning
    Image.new("L", (100, 100)).save(tmp_path / "big.png")  # 10000 px: over 2x: an error
    Image.new("L", (20, 20)).save(tmp_path / "ok.png")
    warnings = []
    data = load_folder(tmp_path, size=16, channels=1, log=warnings.append)
    assert len(data) == 1 and "skipped 2 of 3" in warnings[0]


def test_second_sigint_aborts_at_once_and_leaves_the_checkpoint(tmp_path):
    run = tmp_path / "run"
    proc = gankit("train", *TINY, "--epochs", "100000", "--save-every", "0", "--out", str(run))
    wait_for(lambda: (run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text())
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert load_checkpoint(find_checkpoint(run))["step"] >= 4

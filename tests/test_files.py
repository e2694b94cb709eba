"""Files gankit writes: atomic, durable, and readable by whoever the umask lets read them."""

import os
import stat

import numpy as np
import pytest
from test_cli import assert_one_line_error, run_cli

from gankit.cli import main
from gankit.errors import Diverged, GankitError, Stopped, UserError
from gankit.files import remove_stale_temps, write_atomic


@pytest.fixture
def umask():
    """Set the process umask for a test, and put the old one back after it."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_write_atomic_gives_the_mode_open_would(tmp_path, umask, mask):
    umask(mask)
    write_atomic(tmp_path / "new.bin", b"data")
    with open(tmp_path / "plain.bin", "wb") as f:
        f.write(b"data")
    assert mode(tmp_path / "new.bin") == mode(tmp_path / "plain.bin") == 0o666 & ~mask
    assert (tmp_path / "new.bin").read_bytes() == b"data"


def test_a_run_folder_is_readable_by_the_group_and_others_under_umask_022(tmp_path, umask, tiny_args):
    umask(0o022)
    run = tmp_path / "run"
    assert main(["train", *tiny_args, "--max-steps", "4", "--no-tensorboard", "--out", str(run)]) == 0
    written = [p for p in run.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"config.json", "last.pt", "real.png", "fake_epoch_001.png", "metrics.jsonl"}
    assert {str(p.relative_to(run)): oct(mode(p)) for p in written if mode(p) != 0o644} == {}


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "config.json"
    target.write_bytes(b"old")

    def full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_stale_temporaries_go_and_whole_files_stay(tmp_path):
    for name in (".last.pt.1a2b3c4d.tmp", ".last-x8y.tmp", ".prev-link.tmp", "real.png", ".hidden"):
        (tmp_path / name).write_bytes(b"x")  # the second and third: names 0.1.0 gave its temporaries
    remove_stale_temps(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "real.png"]


def test_errors_carry_their_exit_codes():
    assert UserError("x").exit_code == 2 and Diverged("x").exit_code == 3 and Stopped(15, "x").exit_code == 143
    assert all(isinstance(e, GankitError) for e in (UserError("x"), Diverged("x"), Stopped(2, "x")))
    assert not isinstance(Diverged("x"), UserError)  # a diverged run is not the user's mistake


@pytest.mark.parametrize("array", [np.zeros((10, 5), np.float32), np.zeros(7, np.uint8),
                                   np.zeros((4, 28, 28, 5), np.uint8)])
def test_eval_refuses_an_npz_whose_images_are_not_images(tmp_path, capsys, array):
    np.savez(tmp_path / "bad.npz", images=array)
    code, err = run_cli(["eval", str(tmp_path / "bad.npz")], capsys)
    assert_one_line_error(code, err, "bad.npz", f"shape {array.shape}", "(N, H, W)")

"""One writer per run folder, and gankit writes only into its own folders (issue 22).

A training session (a new run or a resume) holds RUN/.lock from before its first write to
after its last save; a second writer is refused in one line naming the holder. A new run
goes into a missing or empty folder only; a run (checkpoints/last.pt or prev.pt) is never
started over; a folder of the user's is never touched.
"""

import json
import os
import shutil
import signal
import threading

import pytest
import torch
from test_cli import assert_one_line_error, run_cli
from test_reliability import gankit as gankit_process
from test_reliability import wait_for

import gankit as api
import gankit.training.loop as loop
from gankit.checkpoint import load_checkpoint
from gankit.cli import main
from gankit.errors import UserError
from gankit.runlock import LOCK, run_lock
from gankit.runs import is_run, resume_with

TINY = ["--dataset", "fake", "--fake-size", "64", "--image-size", "16", "--width", "8", "--nz", "8",
        "--batch-size", "16", "--no-progress", "--no-tensorboard", "--eval-every", "0"]
TINY_API = dict(dataset="fake", fake_size=64, image_size=16, width=8, nz=8, batch_size=16, progress=False,
                tensorboard=False, eval_every=0)
# A run that goes on until it is stopped: 32 steps an epoch, a checkpoint at every epoch's end.
LONG = ["--dataset", "fake", "--fake-size", "256", "--image-size", "16", "--width", "8", "--nz", "8",
        "--batch-size", "8", "--no-progress", "--no-tensorboard", "--eval-every", "0", "--epochs", "100000"]


def api_error(**settings) -> str:
    """The line gankit.train raises for these settings, as the CLI prints it."""
    with pytest.raises(UserError) as e:
        api.train(**TINY_API, **settings)
    return f"error: {e.value}"


def cli_line(args, capsys) -> str:
    code, err = run_cli(args, capsys)
    assert_one_line_error(code, err)
    return err.strip()


def holds_lock(folder) -> bool:
    try:
        with run_lock(folder):
            return False
    except UserError:
        return True


def snapshot(folder):
    """Every path under `folder` with its bytes and mtime: what 'untouched' means."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns)
            for p in [folder, *folder.rglob("*")]}


def start_long_run(out):
    """A `gankit train` subprocess into `out`, returned once it holds the folder's lock."""
    proc = gankit_process("train", *LONG, "--out", str(out))
    wait_for(lambda: (out / LOCK).is_file() and (out / LOCK).read_text().strip() or proc.poll() is not None)
    assert proc.poll() is None, proc.stderr.read()
    assert (out / LOCK).read_text().split()[0] == str(proc.pid)
    return proc


def test_a_second_writer_is_refused_and_the_first_run_keeps_its_own_files(tmp_path, capsys):
    run = tmp_path / "run"
    proc = start_long_run(run)
    try:
        wait_for(lambda: (run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").read_text())
        for args in (["train", *TINY, "--seed", "7", "--out", str(run)],  # a new run on top of it
                     ["train", "--resume", str(run), "--no-progress"]):   # and a resume beside it
            code, err = run_cli(args, capsys)
            assert_one_line_error(code, err, f"'{run}' is being written by another gankit process",
                                  f"PID {proc.pid} on ", "pick another --out")
        assert api_error(seed=7, out=run) == err.strip()
    finally:
        proc.send_signal(signal.SIGTERM)  # it saves and ends
        proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert load_checkpoint(run / "checkpoints" / "last.pt")["config"]["seed"] != 7
    assert '"seed": 7' not in (run / "config.json").read_text()
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == list(range(1, len(lines) + 1))  # its own lines, once each
    assert all(r["step"] == 32 * r["epoch"] for r in lines)
    assert (run / LOCK).read_text() == ""  # a session that ended by itself leaves the lock naming nobody


def test_the_lock_goes_with_a_killed_holder_and_a_resume_then_works(tmp_path):
    run = tmp_path / "run"
    proc = start_long_run(run)
    wait_for(lambda: (run / "checkpoints" / "last.pt").is_file())
    proc.kill()
    proc.wait()
    assert str(proc.pid) in (run / LOCK).read_text()  # its PID stays in the file, but the lock is gone
    step = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    assert main(["train", "--resume", str(run), "--max-steps", str(step + 2), "--no-progress"]) == 0
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == step + 2


def test_a_lock_held_in_this_process_refuses_a_writer_from_another_thread(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--max-steps", "1", "--out", str(run)]) == 0
    taken, release = threading.Event(), threading.Event()

    def hold():
        with run_lock(run):
            taken.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        taken.wait(30)
        line = cli_line(["train", "--resume", str(run), "--max-steps", "3", "--no-progress"], capsys)
        assert f"PID {os.getpid()} on " in line
        with pytest.raises(UserError) as e:
            api.load(run).resume(max_steps=3)
        assert f"error: {e.value}" == line
        with pytest.raises(UserError, match="being written"), run_lock(run):  # a second fd, same thread
            pass
    finally:
        release.set()
        holder.join()
    assert api.load(run).resume(max_steps=3).step == 3  # released: the next writer goes on


def test_the_lock_is_held_at_every_save_and_released_on_every_exit(tmp_path, monkeypatch):
    seen = []
    real_save = loop.save_checkpoint

    def save(state, folder):
        seen.append(holds_lock(folder.parent))
        return real_save(state, folder)

    monkeypatch.setattr(loop, "save_checkpoint", save)
    run = api.train(**TINY_API, max_steps=6, out=tmp_path / "done")  # 4 steps an epoch: saves at 0, 4, 6
    assert seen == [True, True, True] and not holds_lock(run.path)

    def fail(*a, **k):
        raise RuntimeError("a bug inside a step")

    monkeypatch.setattr(loop.Stepper, "__call__", fail)
    with pytest.raises(RuntimeError):
        api.train(**TINY_API, max_steps=6, out=tmp_path / "bug")
    assert not holds_lock(tmp_path / "bug")

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop.Stepper, "__call__", interrupt)
    interrupted = api.train(**TINY_API, max_steps=6, out=tmp_path / "interrupted")
    assert "interrupted" in interrupted.note and not holds_lock(interrupted.path)

    monkeypatch.setattr(loop.Stepper, "__call__", lambda *a, **k: signal.raise_signal(signal.SIGINT) or {})
    stopped = api.train(**TINY_API, max_steps=6, out=tmp_path / "stopped")
    assert "stopped by SIGINT" in stopped.note and not holds_lock(stopped.path)


def test_a_folder_of_the_users_is_left_untouched(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "own settings"}\n')
    os.utime(mine / "config.json", ns=(10**18, 10**18))
    before = snapshot(mine)
    line = cli_line(["train", *TINY, "--out", str(mine)], capsys)
    assert f"'{mine}' is not empty and holds no gankit run (config.json)" in line and "another --out" in line
    assert api_error(out=mine) == line
    assert snapshot(mine) == before  # same bytes, same mtimes, and no lock file either
    assert not is_run(mine)


def test_a_half_run_with_only_prev_pt_is_not_started_over(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--max-steps", "2", "--out", str(run)]) == 0
    (run / "checkpoints" / "last.pt").unlink()  # a crash between renames of a 0.1.0 save
    assert is_run(run)
    before = snapshot(run)
    line = cli_line(["train", *TINY, "--out", str(run)], capsys)
    assert f"'{run}' already holds a run; resume it with `gankit train --resume {run}`" in line
    assert api_error(out=run) == line
    assert snapshot(run) == before
    assert main(["sample", str(run), "--n", "2", "--out", str(tmp_path / "s.npz")]) == 0


def test_other_folders_a_new_run_refuses(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert "is a file, not a folder" in cli_line(["train", *TINY, "--out", str(afile)], capsys)
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / LOCK).symlink_to(afile)  # a link named .lock: the PID must not land in the user's file
    assert "is not a lock file gankit made" in cli_line(["train", *TINY, "--out", str(linked)], capsys)
    assert afile.read_text() == "mine"


def test_a_start_stopped_before_its_first_checkpoint_is_started_again(tmp_path, capsys, monkeypatch):
    started = tmp_path / "started"

    def interrupt(run):
        raise KeyboardInterrupt

    with monkeypatch.context() as mp:
        mp.setattr(loop, "log_start", interrupt)  # the end of setup: all but the step-0 checkpoint written
        assert main(["train", *TINY, "--max-steps", "1", "--out", str(started)]) == 130
    assert (started / "config.json").is_file() and (started / "samples" / "real.png").is_file()
    assert not is_run(started)
    shutil.copytree(started, tmp_path / "with-notes")
    (tmp_path / "with-notes" / "notes.txt").write_text("mine")  # something gankit did not write: refused
    line = cli_line(["train", *TINY, "--out", str(tmp_path / "with-notes")], capsys)
    assert "is not empty and holds no gankit run (notes.txt)" in line
    assert main(["train", *TINY, "--max-steps", "1", "--out", str(started)]) == 0 and is_run(started)


def test_an_empty_folder_takes_a_new_run_and_the_default_skips_existing_ones(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", *TINY, "--max-steps", "1", "--out", str(empty)]) == 0 and is_run(empty)
    (tmp_path / "runs" / "dcgan-fake").mkdir(parents=True)  # the user's own, empty: still not ours
    assert main(["train", *TINY, "--max-steps", "1"]) == 0
    assert list((tmp_path / "runs" / "dcgan-fake").iterdir()) == []
    assert is_run(tmp_path / "runs" / "dcgan-fake-2")


def test_resume_takes_a_checkpoint_file_in_its_run_folder(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--max-steps", "2", "--out", str(run)]) == 0
    twin = tmp_path / "twin"
    shutil.copytree(run, twin)
    assert main(["train", "--resume", str(run / "checkpoints" / "last.pt"), "--max-steps", "5",
                 "--no-progress"]) == 0
    assert main(["train", "--resume", str(twin), "--max-steps", "5", "--no-progress"]) == 0
    a, b = (load_checkpoint(r / "checkpoints" / "last.pt") for r in (run, twin))
    assert a["step"] == b["step"] == 5
    for name in a["modules"]:  # the file resumed the very run that its folder does
        assert all(torch.equal(v, b["modules"][name][k]) for k, v in a["modules"][name].items())
    assert api.load(run / "checkpoints" / "last.pt").resume(max_steps=6).step == 6
    # prev.pt, named on purpose, goes back to the checkpoint before (step 5), and on from there.
    assert main(["train", "--resume", str(run / "checkpoints" / "prev.pt"), "--max-steps", "9",
                 "--no-progress"]) == 0
    assert load_checkpoint(run / "checkpoints" / "prev.pt")["step"] == 8  # the epoch's end, then step 9
    assert [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()] == [4, 8]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "twin"]  # no folder made


def test_resume_refuses_a_checkpoint_file_outside_a_run_folder(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--max-steps", "1", "--out", str(run)]) == 0
    loose = tmp_path / "loose.pt"
    shutil.copy(run / "checkpoints" / "last.pt", loose)
    before = snapshot(tmp_path)
    line = cli_line(["train", "--resume", str(loose)], capsys)
    assert f"'{loose}' is a checkpoint file outside a run folder" in line and "pass the folder" in line
    with pytest.raises(UserError) as e:
        api.load(loose).resume(max_steps=3)
    assert f"error: {e.value}" == line
    assert snapshot(tmp_path) == before


def test_a_resume_whose_checkpoint_changed_before_it_held_the_lock_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--max-steps", "1", "--out", str(run)]) == 0
    config, state = resume_with(run, {"max_steps": 4})  # read; then another writer saves and ends
    assert main(["train", "--resume", str(run), "--max-steps", "2", "--no-progress"]) == 0
    with pytest.raises(UserError, match="got a new checkpoint while this resume was starting"):
        loop.train(config, resume=state)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 2  # the newer work stays

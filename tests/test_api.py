"""The Python API (gankit.train, gankit.load, gankit.Run): the same images, figures and
errors as the CLI, pictures for notebooks, and a stop that returns a Run which resumes exactly."""

import dataclasses
import io
import json
import pydoc
import signal

import numpy as np
import pytest
import torch
from PIL import Image
from test_training import assert_same_state, weights

import gankit
from conftest import MNIST_DIR, requires_mnist
from gankit.cli import main
from gankit.config import TrainConfig

TINY = dict(dataset="fake", fake_size=64, image_size=16, width=8, nz=8, batch_size=16, progress=False,
            tensorboard=False, eval_every=0)
TINY_FLAGS = ["--dataset", "fake", "--fake-size", "64", "--image-size", "16", "--width", "8", "--nz", "8",
              "--batch-size", "16", "--no-progress", "--no-tensorboard", "--eval-every", "0"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny DCGAN trained through the API for 2 epochs (8 steps)."""
    out = tmp_path_factory.mktemp("api") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GANKIT_DATA", str(out.parent / "data"))
        return gankit.train(**TINY, epochs=2, out=str(out))


def cli_error(args, capsys) -> str:
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    return err[len("error: "):]


def test_train_returns_the_run_it_wrote(run):
    assert isinstance(run, gankit.Run) and run.step == 8
    assert run.config.epochs == 2 and run.config.image_size == 16
    assert [row["epoch"] for row in run.metrics] == [1, 2]
    assert (run.path / "checkpoints" / "last.pt").is_file()
    assert "dcgan" in repr(run) and "step 8" in repr(run) and "epoch 2 of 2" in repr(run)


def test_load_then_sample_gives_the_cli_npz(run, tmp_path, capsys):
    loaded = gankit.load(run.path)
    assert main(["sample", str(run.path), "--n", "20", "--seed", "3", "--out", str(tmp_path / "s.npz")]) == 0
    expected = np.load(tmp_path / "s.npz")["images"]
    images = loaded.sample(20, seed=3)
    assert images.dtype == np.uint8 and images.shape == (20, 16, 16)
    assert np.array_equal(images, expected)
    assert not np.array_equal(images, loaded.sample(20, seed=4))
    assert np.array_equal(gankit.load(run.path / "checkpoints" / "last.pt").sample(20, seed=3), expected)


def test_a_conditional_run_samples_its_classes_as_the_cli(tmp_path):
    from conftest import make_class_folder

    folder = make_class_folder(tmp_path / "classes", classes=3)
    cond = gankit.train(dataset="folder", data_dir=folder, channels=1, conditional=True, image_size=16, width=8,
                        nz=8, batch_size=8, max_steps=2, progress=False, tensorboard=False, out=tmp_path / "c")
    assert main(["sample", str(cond.path), "--n", "6", "--class", "2", "--out", str(tmp_path / "c.npz")]) == 0
    assert np.array_equal(cond.sample(6, label=2), np.load(tmp_path / "c.npz")["images"])
    with pytest.raises(gankit.UserError, match="use 0 to 2"):
        cond.sample(4, label=3)


def test_grids_have_the_sizes_of_their_images(run):
    assert run.grid().size == (8 * 18 + 2, 8 * 18 + 2)  # 16 px images, 2 px padding
    assert run.grid(10, nrow=5).size == (5 * 18 + 2, 2 * 18 + 2)
    assert run.real_grid().size == (146, 146) and run.real_grid().mode == "L"
    assert run.walk(rows=3, steps=5).size == (5 * 18 + 2, 3 * 18 + 2)
    assert set(run.pictures()) == {"fake"} and run.pictures(epoch=1)["fake"].size == (146, 146)
    with pytest.raises(gankit.UserError, match="no pictures of epoch 9"):
        run.pictures(epoch=9)


def test_a_run_shows_both_grids_in_jupyter(run):
    html = run._repr_html_()
    assert html.count("<img") == 2 and "real" in html and "generated, epoch 2" in html
    assert "loss_d" in html and str(run.path) in html
    picture = Image.open(io.BytesIO(run._repr_png_()))
    assert picture.size == (146 + 8 + 146, 146)


def test_a_run_before_its_first_epoch_shows_a_fresh_grid(tmp_path):
    early = gankit.train(**TINY, max_steps=2, out=tmp_path / "early")
    assert early.metrics == [] and early.pictures() == {}
    assert "generated, step 2" in early._repr_html_()


def test_plot_losses_is_a_matplotlib_figure_with_a_png(run):
    from matplotlib.figure import Figure

    figure = run.plot_losses()
    assert isinstance(figure, Figure) and figure.axes[0].get_title() == "losses, mean per epoch"
    assert figure._repr_png_().startswith(b"\x89PNG")


def test_export_writes_the_generator(run, tmp_path):
    meta = run.export(tmp_path / "g.safetensors")
    assert (tmp_path / "g.safetensors").is_file() and meta["nz"] == 8 and meta["step"] == 8


def test_resume_goes_on_like_the_cli(tmp_path):
    api, cli = tmp_path / "api", tmp_path / "cli"
    assert main(["train", *TINY_FLAGS, "--epochs", "1", "--out", str(cli)]) == 0
    assert main(["train", "--resume", str(cli), "--epochs", "2", "--no-progress"]) == 0
    resumed = gankit.train(**TINY, epochs=1, out=api).resume(epochs=2)
    assert resumed.step == 8 and resumed.note is None
    assert_same_state(weights(api), weights(cli))


def stop_at(monkeypatch, step: int, how):
    """Make the `step`-th step (from 1) call how() after it ran (a SIGINT, as a notebook's stop
    button sends) or before (an exception inside the step)."""
    from gankit.training.runner import Stepper

    original, calls = Stepper.__call__, []

    def call(self, *batch, **kw):
        calls.append(1)
        if len(calls) == step and how is not signal.raise_signal:
            how()
        out = original(self, *batch, **kw)
        if len(calls) == step and how is signal.raise_signal:
            how(signal.SIGINT)
        return out

    monkeypatch.setattr(Stepper, "__call__", call)


def test_a_stop_request_finishes_the_step_saves_and_returns_a_run_that_resumes_exactly(tmp_path, monkeypatch):
    straight = gankit.train(**TINY, max_steps=7, save_every="0", out=tmp_path / "straight")
    with monkeypatch.context() as mp:
        stop_at(mp, 3, signal.raise_signal)
        stopped = gankit.train(**TINY, max_steps=7, save_every="0", out=tmp_path / "split")
    assert stopped.step == 3 and weights(stopped.path)["step"] == 3
    assert "stopped by SIGINT at step 3" in stopped.note and "run.resume()" in stopped.note
    assert stopped.resume().step == 7
    assert_same_state(weights(straight.path), weights(stopped.path))


def test_a_keyboard_interrupt_inside_a_step_returns_the_last_checkpoint(tmp_path, monkeypatch):
    straight = gankit.train(**TINY, max_steps=7, out=tmp_path / "straight")

    def interrupt():
        raise KeyboardInterrupt

    with monkeypatch.context() as mp:
        stop_at(mp, 6, interrupt)  # step 6 of 7: the checkpoint of epoch 1 (step 4) is the last
        stopped = gankit.train(**TINY, max_steps=7, out=tmp_path / "split")
    assert stopped.step == 4 and "interrupted" in stopped.note and "step 4" in stopped.note
    assert stopped.resume().step == 7
    assert_same_state(weights(straight.path), weights(stopped.path))


def test_an_interrupt_before_the_first_checkpoint_is_raised(tmp_path, monkeypatch):
    import gankit.training.loop as loop

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "load_split", interrupt)
    with pytest.raises(KeyboardInterrupt):
        gankit.train(**TINY, out=tmp_path / "never")


@pytest.mark.parametrize("settings, flags", [
    (dict(epochs=0), ["--epochs", "0"]),
    (dict(batch_size=-4), ["--batch-size", "-4"]),
    (dict(model="gan"), ["--model", "gan"]),
    (dict(dataset="cifar"), ["--dataset", "cifar"]),
    (dict(recipe="magic"), ["--recipe", "magic"]),
    (dict(loss="wasserstein"), ["--loss", "wasserstein"]),
    (dict(image_size=48), ["--image-size", "48"]),
    (dict(channels=2), ["--channels", "2"]),
    (dict(lr=1e9), ["--lr", "1e9"]),
    (dict(beta2=1.5), ["--beta2", "1.5"]),
    (dict(precision="fp16"), ["--precision", "fp16"]),
    (dict(save_every="5x"), ["--save-every", "5x"]),
    (dict(model="vae", sn=True), ["--model", "vae", "--sn"]),
    (dict(conditional=True, dataset="fake"), ["--conditional", "--dataset", "fake"]),
    (dict(dataset="folder"), ["--dataset", "folder"]),
    (dict(subset=0), ["--subset", "0"]),
    (dict(dataset="fake", fake_size=8, batch_size=16), ["--dataset", "fake", "--fake-size", "8", "--batch-size",
                                                         "16"]),
])
def test_bad_settings_raise_the_cli_message(settings, flags, capsys, tmp_path):
    with pytest.raises(gankit.UserError) as raised:
        gankit.train(**settings, out=tmp_path / "api")
    assert str(raised.value) == cli_error(["train", *flags, "--out", str(tmp_path / "cli")], capsys)
    assert not (tmp_path / "api").exists() and not (tmp_path / "cli").exists()


def test_settings_of_the_wrong_kind_or_name_are_refused_in_one_line(tmp_path):
    for settings, message in [(dict(epochs="10"), "--epochs must be a whole number, got '10'"),
                              (dict(epochs=True), "--epochs must be a whole number, got True"),
                              (dict(lr="fast"), "--lr must be a number or None, got 'fast'"),
                              (dict(conditional=1), "--conditional must be True or False, got 1"),
                              (dict(epoch=3), "no setting 'epoch'; did you mean epochs?")]:
        with pytest.raises(gankit.UserError, match=message):
            gankit.train(**settings, out=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_numpy_numbers_and_paths_are_plain_settings(tmp_path):
    done = gankit.train(**{**TINY, "batch_size": np.int64(16)}, max_steps=np.int32(1), lr=np.float32(2e-4),
                        out=tmp_path / "np")
    assert json.loads((done.path / "config.json").read_text())["max_steps"] == 1


def test_run_errors_are_the_cli_messages(run, tmp_path, capsys):
    with pytest.raises(gankit.UserError) as raised:
        gankit.load(tmp_path / "no-such-run")
    assert str(raised.value) == cli_error(["sample", str(tmp_path / "no-such-run")], capsys)
    with pytest.raises(gankit.UserError) as raised:
        run.sample(4, label=1)
    assert str(raised.value) == cli_error(["sample", str(run.path), "--class", "1"], capsys)
    with pytest.raises(gankit.UserError) as raised:
        run.resume(lr=0.1)
    assert str(raised.value) == cli_error(["train", "--resume", str(run.path), "--lr", "0.1"], capsys)
    with pytest.raises(gankit.UserError) as raised:
        run.export(tmp_path / "g.txt")
    assert str(raised.value) == cli_error(["export", str(run.path), "--out", str(tmp_path / "g.txt")], capsys)
    for call in (lambda: run.sample(0), lambda: run.grid(-1), lambda: run.walk(steps=1)):
        with pytest.raises(gankit.UserError):
            call()


def test_help_lists_every_setting_with_its_default_and_meaning():
    text = pydoc.render_doc(gankit.train, renderer=pydoc.plaintext)
    fields = dataclasses.fields(TrainConfig)
    for f in fields:
        assert f"{f.name}: {f.type} = {f.default!r}" in text, f.name
        assert f.metadata["doc"].split()[0] in text
    params = gankit.train.__signature__.parameters
    assert [(p.name, p.default) for p in params.values()] == [(f.name, f.default) for f in fields]
    assert all(p.kind == p.KEYWORD_ONLY for p in params.values())


def test_show_and_load_data(tmp_path):
    from conftest import make_class_folder

    folder = make_class_folder(tmp_path / "classes", classes=2, per_class=3)
    images, labels = gankit.load_data("folder", data_dir=folder)
    assert images.dtype == np.uint8 and images.shape == (6, 64, 64, 3) and sorted(labels) == [0, 0, 0, 1, 1, 1]
    assert gankit.show(images, nrow=3).size == (3 * 66 + 2, 2 * 66 + 2)
    assert gankit.show(images[..., 0]).mode == "L"
    with pytest.raises(gankit.UserError, match="uint8"):
        gankit.show(images.astype(np.float32))


@requires_mnist
def test_evaluate_gives_the_figures_of_gankit_eval(tmp_path, monkeypatch, capsys):
    import gankit.metrics.judge_evaluator as judge_evaluator
    from gankit.metrics.evaluator import train_evaluator
    from gankit.registry import load_dataset

    data = load_dataset("mnist", split="train", data_dir=str(MNIST_DIR))
    small = train_evaluator(data.images[:1024], data.labels[:1024], epochs=1, progress=False)
    monkeypatch.setattr(judge_evaluator, "evaluator_for", lambda *a, **k: small)
    done = gankit.train(data_dir=MNIST_DIR, subset=256, image_size=16, width=8, nz=8, batch_size=64, epochs=1,
                        progress=False, tensorboard=False, eval_every=0, out=tmp_path / "m")
    figures = done.evaluate(n=200, seed=1, device="cpu", progress=False)
    capsys.readouterr()
    assert main(["eval", str(done.path), "--n", "200", "--seed", "1", "--device", "cpu", "--json",
                 "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    # The same figures; the sampling speed is a clock's, measured anew by each call.
    assert printed.pop("sampling")["images_per_second"] > 0 and figures.pop("sampling")["seconds"] > 0
    assert printed == json.loads(json.dumps(figures))
    assert figures["n"] == 200 and set(figures["floor"]) >= {"fid", "precision", "recall"}


def test_no_api_call_exits_the_interpreter(run, tmp_path):
    calls = [lambda: gankit.train(epochs=-1), lambda: gankit.load(tmp_path / "nothing"),
             lambda: run.sample(1, label=5), lambda: run.resume(seed=3), lambda: gankit.show(np.zeros(3)),
             lambda: gankit.load_data("no-such-data")]
    for call in calls:
        try:
            call()
        except SystemExit:  # pragma: no cover - the failure this test exists for
            pytest.fail("an API call raised SystemExit")
        except gankit.GankitError:
            pass
    assert torch.get_num_threads() >= 1

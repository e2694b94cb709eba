"""gankit eval and the training-time judge: plumbing, tables and Stacked MNIST.

The evaluator itself is tested in test_evaluator.py; here a small one trained on 2048
digits for one epoch stands in, so that these tests take seconds."""

import json

import numpy as np
import pytest
import torch

from conftest import MNIST_DIR, requires_mnist
from gankit.cli import main
from gankit.registry import load_dataset

pytestmark = requires_mnist


@pytest.fixture(scope="module")
def small_evaluator():
    from gankit.metrics.evaluator import train_evaluator
    data = load_dataset("mnist", split="train", data_dir=str(MNIST_DIR))
    return train_evaluator(data.images[:2048], data.labels[:2048], epochs=1, progress=False)


@pytest.fixture(autouse=True)
def _use_small_evaluator(monkeypatch, small_evaluator):
    import gankit.metrics.judge_evaluator as judge_evaluator
    monkeypatch.setattr(judge_evaluator, "evaluator_for", lambda *a, **k: small_evaluator)


def test_stacked_mnist_is_three_real_digits_and_seeded():
    a = load_dataset("stacked-mnist", data_dir=str(MNIST_DIR), stacked_size=40, seed=1)
    b = load_dataset("stacked-mnist", data_dir=str(MNIST_DIR), stacked_size=40, seed=1)
    c = load_dataset("stacked-mnist", data_dir=str(MNIST_DIR), stacked_size=40, seed=2)
    assert a.images.shape == (40, 3, 28, 28) and a.images.dtype == torch.uint8
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    mnist = load_dataset("mnist", data_dir=str(MNIST_DIR))
    index = {bytes(img.numpy().tobytes()): int(lbl) for img, lbl in zip(mnist.images[:, 0], mnist.labels)}
    for img, label in zip(a.images[:5], a.labels[:5]):
        digits = [index[bytes(img[ch].numpy().tobytes())] for ch in range(3)]  # each channel is a real digit
        assert label == digits[0] * 100 + digits[1] * 10 + digits[2]
    test = load_dataset("stacked-mnist", split="test", data_dir=str(MNIST_DIR), seed=1)
    assert len(test) == 10000 and test.labels.max() < 1000


def test_eval_npz_prints_figures_beside_the_floor(tmp_path, capsys):
    real = load_dataset("mnist", split="train", data_dir=str(MNIST_DIR))
    np.savez(tmp_path / "real.npz", images=real.images[-500:, 0].numpy())
    np.savez(tmp_path / "blank.npz", images=np.zeros((500, 28, 28), np.uint8))
    assert main(["eval", str(tmp_path / "real.npz"), "--data-dir", str(MNIST_DIR), "--json", "--no-progress"]) == 0
    good = json.loads(capsys.readouterr().out)
    assert main(["eval", str(tmp_path / "blank.npz"), "--data-dir", str(MNIST_DIR), "--json", "--no-progress"]) == 0
    bad = json.loads(capsys.readouterr().out)
    assert good["n"] == 500 and set(good["floor"]) >= {"fid", "kid", "precision", "recall", "modes"}
    assert good["modes"] == 10 and bad["modes"] == 1  # blank images: one class
    assert good["fid"] < bad["fid"] and good["precision"] > bad["precision"]
    assert good["fid"] < bad["fid"] / 10 and good["recall"] > 0.5 > bad["recall"]
    assert main(["eval", str(tmp_path / "real.npz"), "--data-dir", str(MNIST_DIR), "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "real floor" in table and "FID" in table and "precision" in table


@pytest.mark.parametrize("content,needle", [
    (b"not a zip", "not a gankit samples file"),
    ("rgb", "must be uint8 of shape"),
])
def test_eval_refuses_bad_samples(tmp_path, capsys, content, needle):
    path = tmp_path / "s.npz"
    if content == "rgb":
        np.savez(path, images=np.zeros((20, 28, 28, 3), np.uint8))
    else:
        path.write_bytes(content)
    capsys.readouterr()
    assert main(["eval", str(path), "--data-dir", str(MNIST_DIR)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and len(err.splitlines()) == 1


def test_training_judges_stacked_mnist_at_the_end(tmp_path, monkeypatch):
    import gankit.training.loop as loop
    monkeypatch.setattr(loop, "EVAL_SAMPLES", 500)  # the plumbing, not the figure: fewer samples
    run = tmp_path / "run"
    assert main(["train", "--dataset", "stacked-mnist", "--stacked-size", "64", "--data-dir", str(MNIST_DIR),
                 "--width", "8", "--nz", "8", "--batch-size", "16", "--epochs", "2", "--no-progress",
                 "--out", str(run)]) == 0
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert "eval_fid" not in lines[0]  # default: judged at the end only
    last = lines[-1]
    assert {"eval_fid", "eval_kid", "eval_precision", "eval_recall", "eval_modes", "eval_kl_to_uniform"} <= set(last)
    assert 1 <= last["eval_modes"] <= 1000 and len(last["eval_histogram"]) == 1000
    assert main(["sample", str(run), "--n", "3", "--out", str(tmp_path / "s.npz")]) == 0
    assert np.load(tmp_path / "s.npz")["images"].shape == (3, 28, 28, 3)


def test_reference_figures_are_cached_and_a_bad_cache_is_rebuilt(tmp_path, monkeypatch):
    import gankit.metrics.judge_evaluator as judge_evaluator
    images = load_dataset("mnist", split="train", data_dir=str(MNIST_DIR)).images[:300]
    first = judge_evaluator.score_samples(images, "mnist", str(MNIST_DIR), progress=False)
    cached = list((tmp_path / "data-cache" / "evaluators").glob("reference-*.pt"))
    assert len(cached) == 1

    def boom(*a, **k):
        raise AssertionError("the test split's radii were recomputed")
    with monkeypatch.context() as m:
        m.setattr(judge_evaluator, "knn_radii", boom)
        again = judge_evaluator.score_samples(images, "mnist", str(MNIST_DIR), progress=False)
        assert again["fid"] == first["fid"] and again["floor"] == first["floor"]
        # a new floor, the same test radii
        fewer = judge_evaluator.score_samples(images[:200], "mnist", str(MNIST_DIR), progress=False)
        assert fewer["n"] == 200 and fewer["floor"]["fid"] != first["floor"]["fid"]
        unfloored = judge_evaluator.score_samples(images, "mnist", str(MNIST_DIR), progress=False, floor=False)
        assert "floor" not in unfloored and unfloored["fid"] == first["fid"]
    cached[0].write_bytes(b"truncated")
    rebuilt = judge_evaluator.score_samples(images, "mnist", str(MNIST_DIR), progress=False)
    assert rebuilt["fid"] == first["fid"] and rebuilt["floor"] == first["floor"]


def test_class_accuracy_is_the_share_classified_as_the_asked_for_class(small_evaluator):
    """Held-out digits with their true labels score the evaluator's own test accuracy (the
    small stand-in evaluator: about 0.89; the real one 0.995), shuffled labels about 0.1."""
    import gankit.metrics.judge_evaluator as judge_evaluator
    from gankit.metrics.evaluator import classify
    real = load_dataset("mnist", split="test", data_dir=str(MNIST_DIR))
    images, labels = real.images[:500], real.labels[:500]
    right = judge_evaluator.score_samples(images, "mnist", str(MNIST_DIR), progress=False, floor=False, labels=labels)
    shuffled = labels[torch.randperm(500, generator=torch.Generator().manual_seed(0))]
    wrong = judge_evaluator.score_samples(images, "mnist", str(MNIST_DIR), progress=False, floor=False, labels=shuffled)
    probs, _ = classify(small_evaluator, images)
    assert right["class_accuracy"] == pytest.approx((probs.argmax(1) == labels).float().mean().item())
    assert right["class_accuracy"] > 0.85 and wrong["class_accuracy"] < 0.3
    # Per class: the share of the digits of class k classified as k, by hand.
    predicted = probs.argmax(1)
    by_hand = [(predicted[labels == k] == k).float().mean().item() for k in range(10)]
    assert right["class_accuracy_per_class"] == pytest.approx(by_hand)
    assert max(wrong["class_accuracy_per_class"]) < 0.4
    unlabelled = judge_evaluator.score_samples(images, "mnist", str(MNIST_DIR), progress=False, floor=False)
    assert "class_accuracy" not in unlabelled


def test_a_conditional_run_is_judged_on_its_classes(tmp_path, capsys, monkeypatch):
    """stacked-mnist: 1000 classes; the end-of-run judge and `gankit eval` report class accuracy."""
    import gankit.training.loop as loop
    monkeypatch.setattr(loop, "EVAL_SAMPLES", 500)  # the plumbing, not the figure: fewer samples
    run = tmp_path / "run"
    assert main(["train", "--dataset", "stacked-mnist", "--stacked-size", "64", "--data-dir", str(MNIST_DIR),
                 "--conditional", "--width", "8", "--nz", "8", "--batch-size", "16", "--epochs", "1",
                 "--no-progress", "--no-tensorboard", "--out", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["num_classes"] == 1000
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0 <= last["eval_class_accuracy"] <= 1
    capsys.readouterr()
    assert main(["eval", str(run), "--n", "200", "--json", "--no-progress"]) == 0
    assert 0 <= json.loads(capsys.readouterr().out)["class_accuracy"] <= 1
    assert main(["eval", str(run), "--n", "200", "--no-progress"]) == 0
    assert "class accuracy" in capsys.readouterr().out


def near_copies(images: torch.Tensor, labels: torch.Tensor, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """per_class images of each class, each one real digit of the class with a little noise:
    what a generator that collapsed inside every class draws."""
    g = torch.Generator().manual_seed(0)
    picks = torch.stack([torch.nonzero(labels == k)[0, 0] for k in range(10)]).repeat_interleave(per_class)
    noise = torch.randint(-6, 7, (len(picks), 1, 28, 28), generator=g)
    return (images[picks].int() + noise).clamp(0, 255).to(torch.uint8), labels[picks]


def test_intra_class_fid_and_spread_tell_real_digits_from_near_copies(small_evaluator):
    import gankit.metrics.judge_evaluator as judge_evaluator
    train = load_dataset("mnist", split="train", data_dir=str(MNIST_DIR))
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(7))[:2000]
    images, labels = train.images[pick], train.labels[pick]  # real digits, drawn "for" their classes
    real = judge_evaluator.score_samples(images, "mnist", str(MNIST_DIR), progress=False, labels=labels)
    assert real["near_copy_classes"] == [] and all(0.8 < s < 1.25 for s in real["spread_per_class"])
    assert len(real["intra_fid_per_class"]) == 10 and real["floor"]["near_copy_classes"] == []
    assert real["intra_fid"] == pytest.approx(sum(real["intra_fid_per_class"]) / 10)
    assert real["intra_fid"] < 2 * real["floor"]["intra_fid"]  # real digits score about their floor
    copies, copy_labels = near_copies(images, labels, 100)
    collapsed = judge_evaluator.score_samples(copies, "mnist", str(MNIST_DIR), progress=False, labels=copy_labels)
    assert collapsed["near_copy_classes"] == list(range(10))
    assert all(s < judge_evaluator.SPREAD_FLAG for s in collapsed["spread_per_class"])
    assert collapsed["intra_fid"] > 3 * real["intra_fid"]
    unlabelled = judge_evaluator.score_samples(images, "mnist", str(MNIST_DIR), progress=False, floor=False)
    assert "intra_fid" not in unlabelled


def test_the_table_shows_the_intra_class_fid_and_the_near_copies(small_evaluator, capsys):
    import gankit.metrics.judge_evaluator as judge_evaluator
    train = load_dataset("mnist", split="train", data_dir=str(MNIST_DIR))
    copies, labels = near_copies(train.images[-2000:], train.labels[-2000:], 50)
    result = judge_evaluator.score_samples(copies, "mnist", str(MNIST_DIR), progress=False, labels=labels)
    footer = judge_evaluator.evaluator_footer(result)
    assert "intra-class FID" in footer and f"{result['floor']['intra_fid']:.3f}" in footer
    assert "near copies in classes 0 (" in footer and "9 (" in footer

"""Tests for gankit.metrics.evaluator (MNIST judge + mode coverage)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import MNIST_DIR, mnist_available
from gankit.errors import UserError
from gankit.metrics import (
    Evaluator,
    class_histogram,
    classify,
    load_or_train_evaluator,
    mode_coverage,
    prepare,
    train_evaluator,
)
from gankit.metrics import evaluator as ev
from gankit.registry import load_dataset


def _load(split: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    if not mnist_available():
        pytest.skip(f"MNIST files not found in {MNIST_DIR}")
    data = load_dataset("mnist", split=split, data_dir=str(MNIST_DIR))
    return data.images[:n].clone(), data.labels[:n].clone()


@pytest.fixture(scope="module")
def train_small():
    return _load("train", 2048)


@pytest.fixture(scope="module")
def test_small():
    return _load("test", 1000)


def _state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------- mode coverage

def test_mode_coverage_uniform():
    pred = torch.arange(10).repeat(7)
    r = mode_coverage(pred)
    assert r["histogram"] == [7] * 10
    assert r["modes"] == 10
    assert r["kl_to_uniform"] == pytest.approx(0.0, abs=1e-12)
    assert r["max_fraction"] == pytest.approx(0.1)
    assert r["num_samples"] == 70


def test_mode_coverage_single_class():
    r = mode_coverage(torch.full((50,), 3, dtype=torch.int64))
    assert r["histogram"] == [0, 0, 0, 50, 0, 0, 0, 0, 0, 0]
    assert r["modes"] == 1
    assert r["kl_to_uniform"] == pytest.approx(math.log(10))
    assert r["max_fraction"] == 1.0


def test_mode_coverage_missing_class():
    pred = torch.tensor([c for c in range(10) if c != 6] * 5)
    r = mode_coverage(pred)
    assert r["modes"] == 9
    assert r["histogram"][6] == 0
    assert r["kl_to_uniform"] == pytest.approx(math.log(10 / 9))


def test_mode_coverage_min_fraction_and_skew():
    # class 9 holds a single sample out of 91: covered by default, not at 2 %.
    pred = torch.tensor([c for c in range(9) for _ in range(10)] + [9])
    assert mode_coverage(pred)["modes"] == 10
    assert mode_coverage(pred, min_fraction=0.02)["modes"] == 9
    p = np.array([10] * 9 + [1]) / 91
    assert mode_coverage(pred)["kl_to_uniform"] == pytest.approx(float((p * np.log(p * 10)).sum()))


def test_class_histogram_from_probs_matches_argmax():
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(200, 10, generator=g).softmax(1)
    assert torch.equal(class_histogram(probs), torch.bincount(probs.argmax(1), minlength=10))
    assert mode_coverage(probs)["histogram"] == class_histogram(probs).tolist()


def test_mode_coverage_rejects_bad_input():
    with pytest.raises(UserError):
        mode_coverage(torch.zeros(0, dtype=torch.int64))
    with pytest.raises(UserError):
        mode_coverage(torch.tensor([0, 10]))
    with pytest.raises(UserError):
        class_histogram(torch.rand(5, 3))


# ---------------------------------------------------------------- model / classify

def test_prepare_scales_and_validates():
    x = torch.tensor([0, 255], dtype=torch.uint8).repeat(392).reshape(1, 1, 28, 28)
    y = prepare(x)
    assert y.dtype == torch.float32 and y.min() == 0.0 and y.max() == 1.0
    with pytest.raises(UserError):
        prepare(torch.zeros(2, 28, 28, dtype=torch.uint8))


def test_classify_shapes_and_probabilities(test_small):
    images, _ = test_small
    torch.manual_seed(0)
    model = Evaluator().train()
    probs, feats = classify(model, images[:250], batch_size=100)
    assert probs.shape == (250, 10) and feats.shape == (250, 128)
    assert probs.dtype == torch.float32 and feats.dtype == torch.float32
    assert torch.allclose(probs.sum(1), torch.ones(250), atol=1e-5)
    assert (probs >= 0).all()
    assert model.training  # classify restores the previous mode
    # uint8 and [0, 1] float inputs give the same result
    probs_f, feats_f = classify(model, images[:250].float() / 255)
    assert torch.allclose(probs, probs_f, atol=1e-6) and torch.allclose(feats, feats_f, atol=1e-5)


# ---------------------------------------------------------------- training

def test_training_is_deterministic_and_seed_dependent(train_small):
    images, labels = train_small[0][:256], train_small[1][:256]
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = train_evaluator(images, labels, seed=0, epochs=1, batch_size=64, progress=False)
    assert torch.equal(torch.rand(3), expected_next)  # global RNG left untouched
    b = train_evaluator(images, labels, seed=0, epochs=1, batch_size=64, progress=False)
    c = train_evaluator(images, labels, seed=1, epochs=1, batch_size=64, progress=False)
    assert _state_equal(a, b)
    assert not _state_equal(a, c)
    assert not a.training


def test_training_learns(train_small, test_small):
    images, labels = train_small
    model = train_evaluator(images, labels, seed=0, epochs=2, batch_size=128, progress=False)
    probs, _ = classify(model, test_small[0])
    acc = (probs.argmax(1) == test_small[1]).double().mean().item()
    assert acc > 0.85, acc


# ---------------------------------------------------------------- caching

def test_load_or_train_caches(train_small, tmp_path, monkeypatch):
    images, labels = train_small[0][:512], train_small[1][:512]
    calls = []
    real_train = ev.train_evaluator

    def counting_train(*args, **kwargs):
        calls.append(kwargs.get("seed"))
        kwargs["epochs"] = 1  # keep the test fast
        return real_train(*args, **kwargs)

    monkeypatch.setattr(ev, "train_evaluator", counting_train)
    messages: list[str] = []
    cache = tmp_path / "cache"

    first = load_or_train_evaluator(images, labels, cache, seed=0, progress=False, log=messages.append)
    assert calls == [0]
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 1 and files[0].startswith("evaluator-") and files[0].endswith(".pt")

    second = load_or_train_evaluator(images, labels, cache, seed=0, progress=False, log=messages.append)
    assert calls == [0]  # not retrained
    assert _state_equal(first, second)
    assert not second.training
    assert any("loaded" in m for m in messages)

    # a different seed or different data is a different cache entry
    load_or_train_evaluator(images, labels, cache, seed=1, progress=False)
    assert calls == [0, 1]
    labels2 = labels.clone()
    labels2[0] = (labels2[0] + 1) % 10
    assert ev.evaluator_cache_key(images, labels2, 0) != ev.evaluator_cache_key(images, labels, 0)
    assert len(list(cache.iterdir())) == 2  # no temp files left behind

    # a corrupt cache file is replaced by a fresh training
    (cache / files[0]).write_bytes(b"not a checkpoint")
    messages.clear()
    third = load_or_train_evaluator(images, labels, cache, seed=0, progress=False, log=messages.append)
    assert calls == [0, 1, 0]
    assert any("unreadable" in m for m in messages)
    assert _state_equal(first, third)  # deterministic retraining


def test_evaluator_train_command_builds_then_reuses_the_cache(monkeypatch, capsys, tmp_path):
    import json

    from gankit.cli import main
    if not mnist_available():
        pytest.skip(f"MNIST files not found in {MNIST_DIR}")
    calls = []

    def quick(images, labels, **kw):  # the real recipe takes a minute; 1024 digits, 1 epoch stand in
        calls.append(len(images))
        return train_evaluator(images[:1024], labels[:1024], epochs=1, progress=False)

    monkeypatch.setattr(ev, "train_evaluator", quick)
    args = ["evaluator", "train", "--dataset", "mnist", "--data-dir", str(MNIST_DIR), "--json", "--no-progress"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["trained"] is True and calls == [60000]
    assert first["path"].startswith(str(tmp_path / "data-cache" / "evaluators"))  # $GANKIT_DATA/evaluators
    assert 0.5 < first["test_accuracy"] <= 1.0
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["trained"] is False and calls == [60000]  # loaded, not retrained
    assert second["path"] == first["path"] and second["test_accuracy"] == first["test_accuracy"]
    assert main(args[:-2]) == 0
    assert "mnist evaluator (already cached): test accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("argv,needle", [
    (["evaluator"], "the following arguments are required: ACTION"),
    (["evaluator", "train", "--dataset", "folder"], "invalid choice: 'folder'"),
])
def test_evaluator_command_refuses_bad_input(capsys, argv, needle):
    from gankit.cli import main
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and len(err.splitlines()) == 1

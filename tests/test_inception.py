"""Judging with Inception-v3 features (gankit.metrics.inception, the network and its
features; gankit.metrics.judge_inception, the figures, the floor and the cached reference),
on a scripted stand-in.

The real inception-2015-12-05.pt cannot be downloaded here (and tests never touch the
network), so a small TorchScript module with the same calling convention stands in:
uint8 (N, 3, H, W) of any size in, resized inside, (N, D) features with
return_features=True, softmax probabilities (N, 1008) otherwise, the classifier's bias
left out with no_output_bias=True."""

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gankit.metrics.inception as inception
import gankit.metrics.judge_inception as judge_inception
import gankit.metrics.reference as reference_cache
from gankit.errors import UserError
from gankit.metrics import quality
from gankit.metrics.inception import (
    WEIGHTS_NAME,
    WEIGHTS_URL,
    inception_weights,
    load_feature_network,
    network_outputs,
)
from gankit.metrics.judge_inception import inception_judge, reference_split


def inception_outputs(net, images, **kwargs):
    """(features, probabilities) as float64 numpy arrays: the reference implementation's inputs."""
    features, probs = network_outputs(net, images, **kwargs)
    return features.to(torch.float64).numpy(), probs.to(torch.float64).numpy()


class StandIn(nn.Module):
    """The real network's calling convention on a fixed random projection of 8x8 images."""

    def __init__(self, dim: int = 2048, size: int = 8, temperature: float = 1.0, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.size = size
        self.temperature = temperature
        self.project = nn.Parameter(torch.randn(3 * size * size, dim, generator=g) / (3 * size * size) ** 0.5)
        self.output = nn.Linear(dim, 1008)
        with torch.no_grad():
            self.output.weight.copy_(torch.randn(1008, dim, generator=g) * 0.2)
            self.output.bias.copy_(torch.randn(1008, generator=g))

    def forward(self, img: torch.Tensor, return_features: bool = False, use_fp16: bool = False,
                no_output_bias: bool = False) -> torch.Tensor:
        assert img.shape[1] == 3
        x = F.interpolate(img.to(torch.float32), size=(self.size, self.size), mode="bilinear", align_corners=False)
        features = torch.relu((x.flatten(1) - 128.0) / 128.0 @ self.project)
        if return_features:
            return features
        if no_output_bias:
            logits = F.linear(features, self.output.weight)
        else:
            logits = self.output(features)
        return torch.softmax(logits / self.temperature, dim=1)


class Wrapped(nn.Module):
    """The stand-in without an `output` attribute: probabilities come from the network itself."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, img: torch.Tensor, return_features: bool = False, use_fp16: bool = False,
                no_output_bias: bool = False) -> torch.Tensor:
        return self.inner(img, return_features, use_fp16, no_output_bias)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Every fetch fails the test unless a test puts its own fake in place (pytest.fail is a
    BaseException: the downloader's `except Exception` cannot swallow it)."""
    monkeypatch.setattr(inception, "fetch_url", lambda url, *a, **k: pytest.fail(f"tried to fetch {url}"))


def save_scripted(module: nn.Module, path):
    torch.jit.save(torch.jit.script(module), str(path))
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Stand-in weights files: "full" with 2048-d features like the real one, "small" with 64
    for the tests that compute figures."""
    root = tmp_path_factory.mktemp("weights")
    return {"full": save_scripted(StandIn(2048), root / "full.pt"),
            "small": save_scripted(StandIn(64), root / "small.pt")}


def images(n, channels=3, size=20, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, channels, size, size), dtype=np.uint8))


def direct(net, x, batch_size=None):
    """Features and probabilities straight from the network, as float64 numpy, batch by batch."""
    parts = torch.split(x, batch_size or len(x))
    with torch.no_grad():
        features = torch.cat([net(part, return_features=True) for part in parts])
        probs = torch.cat([net(part, no_output_bias=True) for part in parts])
    return features.double().numpy(), probs.double().numpy()


@pytest.fixture
def count_passes(monkeypatch):
    """Record (desc, number of images) of every pass through the network (the judge's, which
    looks network_outputs up in its own module)."""
    calls = []
    original = judge_inception.network_outputs

    def counting(net, imgs, **kwargs):
        calls.append((kwargs.get("desc"), len(imgs)))
        return original(net, imgs, **kwargs)

    monkeypatch.setattr(judge_inception, "network_outputs", counting)
    return calls


# --------------------------------------------------------------------------- features
def test_outputs_follow_the_calling_convention_at_any_size(weights):
    net = load_feature_network(weights["full"], "cpu")
    for size in (12, 20, 33):  # resized inside the network
        x = images(6, size=size, seed=size)
        features, probs = inception_outputs(net, x)
        assert features.dtype == probs.dtype == np.float64
        assert features.shape == (6, 2048) and probs.shape == (6, 1008)
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
        want_features, want_probs = direct(net, x)
        np.testing.assert_array_equal(features, want_features)
        np.testing.assert_allclose(probs, want_probs, rtol=1e-5, atol=1e-7)  # from features @ output.weight
    x = images(3)
    with torch.no_grad():  # the shortcut (one pass per batch) is taken for a network like the real one
        assert inception._shortcut_weight(net, x, net(x, return_features=True)) is not None


def test_grayscale_is_repeated_to_three_channels(weights):
    net = load_feature_network(weights["small"], "cpu")
    gray = images(5, channels=1, size=14)
    features, probs = inception_outputs(net, gray)
    rgb_features, rgb_probs = inception_outputs(net, gray.repeat(1, 3, 1, 1))
    np.testing.assert_array_equal(features, rgb_features)
    np.testing.assert_array_equal(probs, rgb_probs)


def test_batches_give_the_same_outputs_as_one_batch(weights):
    net = load_feature_network(weights["small"], "cpu")
    x = images(23)
    whole = inception_outputs(net, x, batch_size=200)
    for batch_size in (1, 4, 22):
        parts = inception_outputs(net, x, batch_size=batch_size)
        for a, b in zip(whole, parts):
            # float32 round-off only: BLAS blocks a matrix product differently for other batch sizes.
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
            assert a.shape == b.shape and np.abs(a - b).max() < 1e-5


@pytest.mark.parametrize("make", [lambda: Wrapped(StandIn(64)), lambda: StandIn(64, temperature=2.0)],
                         ids=["no-output-attribute", "output-not-what-forward-uses"])
def test_probabilities_come_from_the_network_when_the_shortcut_does_not_apply(tmp_path, make):
    net = load_feature_network(save_scripted(make(), tmp_path / "net.pt"), "cpu")
    x = images(9)
    features, probs = inception_outputs(net, x, batch_size=4)
    want_features, want_probs = direct(net, x, batch_size=4)
    np.testing.assert_array_equal(features, want_features)
    np.testing.assert_allclose(probs, want_probs, rtol=1e-6, atol=1e-9)
    with torch.no_grad():
        assert inception._shortcut_weight(net, x, net(x, return_features=True)) is None


# --------------------------------------------------------------------------- figures
def test_figures_and_floor_equal_the_quality_functions(weights, tmp_path):
    # 64-d features: FID on 2048-d ones costs seconds per call here, and nothing depends on D.
    net = load_feature_network(weights["small"], "cpu")
    reference, samples = images(41, size=20, seed=1), images(16, channels=1, size=12, seed=2)
    result = inception_judge(samples, reference, net=net, seed=3, cache_dir=tmp_path / "cache")
    ref_f, _ = inception_outputs(net, reference)
    f, p = direct(net, samples.repeat(1, 3, 1, 1))
    assert f.shape == (16, 64)

    def expected(features, probs, real):
        precision, recall = quality.precision_recall(real, features, k=3)
        kid_mean, kid_std = quality.kid(features, real, seed=3)
        score, score_std = quality.classifier_score(probs)
        return {"fid": quality.fid(features, real), "kid": kid_mean, "kid_std": kid_std,
                "inception_score": score, "inception_score_std": score_std,
                "precision": precision, "recall": recall, "n": len(features)}

    want = expected(f, p, ref_f)
    assert {k: result[k] for k in want} == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert result["reference_n"] == 41 and result["fid"] > 0
    # The floor: the first 16 of the pool (the first 41 // 2 of a permutation seeded with the
    # seed) judged against the rest of the reference.
    order = torch.randperm(41, generator=torch.Generator().manual_seed(3))
    pool, rest = order[:20], order[20:]
    assert all(torch.equal(a, b) for a, b in zip(reference_split(41, 3), (pool, rest)))
    pool_f, pool_p = direct(net, reference[pool[:16]])
    assert result["floor"] == pytest.approx(expected(pool_f, pool_p, ref_f[rest.numpy()]), rel=1e-9, abs=1e-12)
    # More samples than the pool holds: the floor uses the whole pool and says so.
    more = inception_judge(images(25, seed=4), reference, net=net, seed=3, cache_dir=tmp_path / "cache")
    assert more["n"] == 25 and more["floor"]["n"] == 20
    assert "floor" not in inception_judge(samples, reference, net=net, seed=3, floor=False,
                                          cache_dir=tmp_path / "cache")


def test_reference_is_computed_once_and_reused(weights, tmp_path, count_passes):
    net = load_feature_network(weights["small"], "cpu")
    reference, samples, cache = images(30, seed=1), images(12, seed=2), tmp_path / "cache"
    first = inception_judge(samples, reference, net=net, cache_dir=cache)
    assert count_passes == [("reference features", 30), ("sample features", 12)]
    files = list(cache.glob("reference-*.pt"))
    assert len(files) == 1
    count_passes.clear()
    assert inception_judge(samples, reference, net=net, cache_dir=cache) == first
    assert count_passes == [("sample features", 12)]
    count_passes.clear()
    other_n = inception_judge(samples[:10], reference, net=net, cache_dir=cache)  # a new floor, from the cache
    assert count_passes == [("sample features", 10)] and other_n["floor"]["n"] == 10
    cached = torch.load(files[0], weights_only=True)
    assert set(cached["floors"]) == {10, 12} and cached["features"].shape == (30, 64)
    # Another seed or other reference images: another cache file.
    inception_judge(samples, reference, net=net, seed=1, cache_dir=cache)
    inception_judge(samples, images(30, seed=9), net=net, cache_dir=cache)
    assert len(list(cache.glob("reference-*.pt"))) == 3


def test_a_reference_key_spares_loading_the_reference(weights, tmp_path, count_passes):
    net = load_feature_network(weights["small"], "cpu")
    loads = []

    def load_reference():
        loads.append(1)
        return images(30, seed=1)

    samples = images(12, seed=2)
    first = inception_judge(samples, load_reference, net=net, cache_dir=tmp_path, reference_key="folder-abc")
    again = inception_judge(samples, load_reference, net=net, cache_dir=tmp_path, reference_key="folder-abc")
    assert first == again and len(loads) == 1
    by_bytes = inception_judge(samples, images(30, seed=1), net=net, cache_dir=tmp_path)
    assert by_bytes == first and len(list(tmp_path.glob("reference-*.pt"))) == 2


def test_a_damaged_cache_file_is_computed_afresh(weights, tmp_path, count_passes):
    net = load_feature_network(weights["small"], "cpu")
    reference, samples = images(30, seed=1), images(12, seed=2)
    first = inception_judge(samples, reference, net=net, cache_dir=tmp_path)
    (path,) = tmp_path.glob("reference-*.pt")
    for damage in (b"not a cache", path.read_bytes()[:100]):
        path.write_bytes(damage)
        count_passes.clear()
        assert inception_judge(samples, reference, net=net, cache_dir=tmp_path) == first
        assert count_passes[0] == ("reference features", 30)
        assert set(torch.load(path, weights_only=True)["floors"]) == {12}  # rewritten, readable


def test_a_read_only_cache_only_costs_time(weights, tmp_path, monkeypatch, count_passes):
    def refuse(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(reference_cache, "write_atomic", refuse)  # the one writer of reference files
    net = load_feature_network(weights["small"], "cpu")
    reference, samples = images(30, seed=1), images(12, seed=2)
    first = inception_judge(samples, reference, net=net, cache_dir=tmp_path)
    assert inception_judge(samples, reference, net=net, cache_dir=tmp_path) == first
    assert [desc for desc, _ in count_passes].count("reference features") == 2
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("samples, fragment", [
    (torch.zeros(12, 3, 16, 16), "must be uint8"),
    (torch.zeros(12, 16, 16, dtype=torch.uint8), "must be uint8"),
    (torch.zeros(12, 2, 16, 16, dtype=torch.uint8), "must be uint8"),
    (torch.zeros(9, 3, 16, 16, dtype=torch.uint8), "at least 10 sample"),
    (torch.zeros(1, 3, 16, 16, dtype=torch.uint8), "at least 10 sample"),
])
def test_bad_samples_are_a_user_error(weights, tmp_path, samples, fragment):
    net = load_feature_network(weights["small"], "cpu")
    with pytest.raises(UserError, match=fragment) as info:
        inception_judge(samples, images(30), net=net, cache_dir=tmp_path)
    assert "\n" not in str(info.value)


def test_a_too_small_reference_is_a_user_error(weights, tmp_path):
    net = load_feature_network(weights["small"], "cpu")
    with pytest.raises(UserError, match="at least 20 reference"):
        inception_judge(images(12), images(19), net=net, cache_dir=tmp_path)


# --------------------------------------------------------------------------- the weights file
def test_weights_are_found_where_given_or_cached(weights, tmp_path, monkeypatch):
    monkeypatch.setattr(inception, "download_weights", lambda *a: pytest.fail("must not download"))
    assert inception_weights(weights["small"], cache_dir=tmp_path) == weights["small"]
    with pytest.raises(UserError, match="--feature-weights"):
        inception_weights(tmp_path / "nowhere.pt", cache_dir=tmp_path)
    cached = tmp_path / WEIGHTS_NAME
    cached.write_bytes(weights["small"].read_bytes())
    assert inception_weights(cache_dir=tmp_path) == cached


def test_missing_weights_say_what_file_from_where_and_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.delenv("GANKIT_OFFLINE", raising=False)  # conftest turns downloads off; the fake fails them here

    def unreachable(dest, log):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(inception, "download_weights", unreachable)
    with pytest.raises(UserError) as info:
        inception_weights(cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert "\n" not in message and "Network is unreachable" in message
    for part in (WEIGHTS_NAME, WEIGHTS_URL, str(tmp_path / "cache" / WEIGHTS_NAME), "--feature-weights PATH"):
        assert part in message
    monkeypatch.setattr(inception, "download_weights", lambda *a: pytest.fail("must not download"))
    with pytest.raises(UserError, match=f"GANKIT_OFFLINE is set.*{WEIGHTS_URL}"):
        monkeypatch.setenv("GANKIT_OFFLINE", "1")
        inception_weights(cache_dir=tmp_path)
    with pytest.raises(UserError, match="downloading is turned off"):
        inception_weights(cache_dir=tmp_path, download=False)


def test_a_download_is_checked_then_stored_atomically(weights, tmp_path, monkeypatch):
    monkeypatch.delenv("GANKIT_OFFLINE", raising=False)  # conftest turns downloads off; fetch_url is faked here
    good = weights["small"].read_bytes()
    answers = {inception.WEIGHTS_URLS[0]: OSError("HTTP Error 404"), inception.WEIGHTS_URLS[1]: good}

    def fake_fetch(url, max_bytes, timeout=None):
        answer = answers[url]
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(inception, "fetch_url", fake_fetch)
    messages = []
    path = inception_weights(cache_dir=tmp_path, log=messages.append)
    assert path == tmp_path / WEIGHTS_NAME and path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == [WEIGHTS_NAME]  # no temporary file left
    assert any(inception.WEIGHTS_URLS[1] in m for m in messages)
    load_feature_network(path)
    path.unlink()
    answers[inception.WEIGHTS_URLS[1]] = b"<html>not found</html>"
    with pytest.raises(UserError, match="not a TorchScript feature network") as info:
        inception_weights(cache_dir=tmp_path)
    assert "HTTP Error 404" in str(info.value) and not list(tmp_path.iterdir())


def test_a_file_that_is_not_torchscript_is_a_user_error(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"these are not weights")
    state = tmp_path / "state.pt"
    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(3)}, buffer)  # a zip, but no TorchScript code
    state.write_bytes(buffer.getvalue())
    for path in (junk, state):
        with pytest.raises(UserError, match="is not a TorchScript module") as info:
            load_feature_network(path, "cpu")
        assert "\n" not in str(info.value) and "--feature-weights" in str(info.value)

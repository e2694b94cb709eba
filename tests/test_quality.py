"""Tests for gankit.metrics.quality (FID, KID, classifier score, precision/recall).

Everything here is tiny (tens to hundreds of points) and CPU-only.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gankit.errors import UserError
from gankit.metrics import quality as q
from gankit.metrics.quality import (
    classifier_score,
    feature_statistics,
    fid,
    frechet_distance,
    kid,
    mmd2_unbiased,
    precision_recall,
)


def _gaussian(rng: np.random.Generator, n: int, d: int, shift: float = 0.0) -> np.ndarray:
    """n samples of a d-dim Gaussian with a random (well-conditioned) covariance."""
    mix = rng.normal(size=(d, d)) + 2.0 * np.eye(d)
    return rng.normal(size=(n, d)) @ mix + shift


# --------------------------------------------------------------------------- FID
def _fid_scipy(a: np.ndarray, b: np.ndarray) -> float:
    """The reference FID formula (TTUR / pytorch-fid) with scipy.linalg.sqrtm."""
    scipy_linalg = pytest.importorskip("scipy.linalg", reason="scipy not installed (pip install scipy)")
    mu1, mu2 = a.mean(axis=0), b.mean(axis=0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy_linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def test_feature_statistics_match_numpy_and_accept_tensors():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6)).astype(np.float32)
    mu, sigma = feature_statistics(x)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    assert mu.shape == (6,) and sigma.shape == (6, 6)
    np.testing.assert_allclose(mu, x.astype(np.float64).mean(axis=0), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(sigma, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-12, atol=1e-14)
    mu_t, sigma_t = feature_statistics(torch.from_numpy(x))
    np.testing.assert_array_equal(mu_t, mu)
    np.testing.assert_array_equal(sigma_t, sigma)


def test_fid_matches_scipy_sqrtm_reference():
    rng = np.random.default_rng(1)
    a = _gaussian(rng, 500, 16)
    b = _gaussian(rng, 500, 16, shift=0.5)
    expected = _fid_scipy(a, b)
    got = fid(a, b)
    assert expected > 1.0  # the two sets really differ
    assert abs(got - expected) <= 1e-6 * expected
    # and frechet_distance on the statistics is the same number
    assert frechet_distance(*feature_statistics(a), *feature_statistics(b)) == got


def test_fid_of_a_set_with_itself_is_zero_and_fid_is_symmetric():
    rng = np.random.default_rng(2)
    a = _gaussian(rng, 500, 16)
    b = _gaussian(rng, 300, 16, shift=0.3)
    assert abs(fid(a, a)) < 1e-8
    assert abs(fid(a, b) - fid(b, a)) < 1e-8


def test_fid_fewer_samples_than_dimensions_is_finite_and_exact():
    # 10 samples in 64 dimensions: covariance of rank 9. Shifting a set does not
    # change its covariance, so FID(x, x + s) = ||s||^2 exactly.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(10, 64))
    s = 0.1 * rng.normal(size=64)
    value = fid(x, x + s)
    assert math.isfinite(value) and value >= 0.0
    assert abs(value - s @ s) <= 1e-9 * (s @ s)
    y = rng.normal(size=(10, 64))
    other = fid(x, y)
    assert math.isfinite(other) and other > 0.0
    assert abs(fid(x, x)) < 1e-8


def test_fid_exactly_singular_covariance():
    # a constant column and two collinear columns: sigma is exactly singular
    rng = np.random.default_rng(4)
    base = rng.normal(size=(200, 8))
    x = np.concatenate([base, 2.0 * base[:, :2], np.ones((200, 1))], axis=1)
    assert np.linalg.matrix_rank(np.cov(x, rowvar=False)) == 8
    s = 0.2 * rng.normal(size=11)
    value = fid(x, x + s)
    assert math.isfinite(value) and value >= 0.0
    assert abs(value - s @ s) <= 1e-9 * (s @ s)
    y = np.concatenate([base[::-1] * 1.5, np.zeros((200, 3))], axis=1)
    for v in (fid(x, y), fid(y, x), fid(x, x)):
        assert math.isfinite(v) and v >= 0.0
    # all-zero covariances: the distance is just the squared mean difference
    z = np.zeros((5, 4))
    assert fid(z, z + 1.0) == pytest.approx(4.0, abs=1e-12)


def test_fid_rejects_bad_input():
    rng = np.random.default_rng(5)
    with pytest.raises(UserError, match="dimension"):
        fid(rng.normal(size=(20, 3)), rng.normal(size=(20, 4)))
    with pytest.raises(UserError, match="at least 2"):
        fid(rng.normal(size=(1, 3)), rng.normal(size=(20, 3)))
    with pytest.raises(UserError, match="NaN"):
        fid(np.full((5, 2), np.nan), rng.normal(size=(5, 2)))
    with pytest.raises(UserError, match="shape"):
        frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))


# --------------------------------------------------------------------------- KID
def _mmd2_brute_force(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, as explicit loops over pairs."""
    d = x.shape[1]

    def k(a, b):
        return (float(np.dot(a, b)) / d + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j)
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n))
    return xx / (m * (m - 1)) + yy / (n * (n - 1)) - 2.0 * xy / (m * n)


def test_mmd2_unbiased_matches_double_loop():
    rng = np.random.default_rng(10)
    x = rng.normal(size=(30, 5))
    y = rng.normal(size=(40, 5)) * 1.3 + 0.4
    expected = _mmd2_brute_force(x, y)
    assert mmd2_unbiased(x, y) == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_kid_single_subset_of_everything_matches_double_loop():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(30, 5))
    y = rng.normal(size=(30, 5)) + 0.5
    # subset_size clipped to 30 = every point; the estimator ignores order
    mean, std = kid(x, y, subsets=1, subset_size=1000)
    assert mean == pytest.approx(_mmd2_brute_force(x, y), rel=1e-10, abs=1e-12)
    assert std == 0.0


def test_kid_subsets_follow_documented_sampling():
    # 30 and 40 points, subset_size "all": m is clipped to the smaller set (30).
    rng = np.random.default_rng(12)
    x = rng.normal(size=(30, 4))
    y = rng.normal(size=(40, 4)) + 0.3
    mean, std = kid(x, y, subsets=3, subset_size=10_000, seed=7)
    draw = np.random.default_rng(7)
    values = []
    for _ in range(3):
        ia = draw.choice(30, 30, replace=False)
        ib = draw.choice(40, 30, replace=False)
        values.append(_mmd2_brute_force(x[ia], y[ib]))
    assert mean == pytest.approx(np.mean(values), rel=1e-10, abs=1e-12)
    assert std == pytest.approx(np.std(values), rel=1e-8, abs=1e-12)
    assert std > 0.0  # different 30-of-40 subsets give different estimates


def test_kid_is_deterministic_given_seed():
    rng = np.random.default_rng(13)
    x = rng.normal(size=(60, 4))
    y = rng.normal(size=(50, 4))
    first = kid(x, y, subsets=5, subset_size=20, seed=3)
    assert kid(x, y, subsets=5, subset_size=20, seed=3) == first
    assert kid(torch.from_numpy(x), torch.from_numpy(y), subsets=5, subset_size=20, seed=3) == first
    assert kid(x, y, subsets=5, subset_size=20, seed=4) != first


def test_kid_far_shift_beats_resample():
    rng = np.random.default_rng(14)
    x = rng.normal(size=(200, 8))
    resampled = rng.normal(size=(200, 8))
    far = x + 5.0
    near_mean, _ = kid(x, resampled, subsets=10, subset_size=100)
    far_mean, _ = kid(x, far, subsets=10, subset_size=100)
    assert far_mean > near_mean
    assert far_mean > 100.0 * abs(near_mean)


def test_kid_rejects_bad_parameters():
    x = np.zeros((10, 3))
    with pytest.raises(UserError):
        kid(x, x, subsets=0)
    with pytest.raises(UserError):
        kid(x, x, subset_size=1)
    with pytest.raises(UserError, match="dimension"):
        kid(x, np.zeros((10, 4)))


# --------------------------------------------------------------------------- classifier score
def test_classifier_score_one_hot_evenly_spread_is_num_classes():
    labels = np.arange(100) % 10  # every split of 10 holds each class once
    probs = np.eye(10)[labels]
    mean, std = classifier_score(probs, splits=10)
    assert mean == pytest.approx(10.0, rel=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)
    assert classifier_score(torch.from_numpy(probs).float(), splits=1)[0] == pytest.approx(10.0, rel=1e-6)


def test_classifier_score_identical_probs_is_one():
    rng = np.random.default_rng(20)
    row = rng.dirichlet(np.ones(10))
    probs = np.tile(row, (40, 1))
    mean, std = classifier_score(probs, splits=4)
    assert mean == pytest.approx(1.0, abs=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_classifier_score_matches_entropy_formula_per_split():
    # exp(E KL(p(y|x) || p(y))) = exp(H(p(y)) - E H(p(y|x))), on contiguous halves
    rng = np.random.default_rng(21)
    probs = rng.dirichlet(np.full(10, 0.3), size=31)
    probs[0] = np.eye(10)[3]  # zeros in a row: 0 log 0 = 0

    def entropy(p):
        p = p[p > 0]
        return -float((p * np.log(p)).sum())

    expected = []
    for part in (probs[:16], probs[16:]):  # np.array_split(31, 2) -> 16 + 15
        h_marginal = entropy(part.mean(axis=0))
        h_cond = np.mean([entropy(r) for r in part])
        expected.append(math.exp(h_marginal - h_cond))
    mean, std = classifier_score(probs, splits=2)
    assert mean == pytest.approx(np.mean(expected), rel=1e-12)
    assert std == pytest.approx(np.std(expected), rel=1e-9)
    assert 1.0 < mean < 10.0


def test_classifier_score_rejects_bad_input():
    with pytest.raises(UserError, match="sum to 1"):
        classifier_score(np.random.default_rng(22).normal(size=(20, 10)) + 5.0, splits=2)
    with pytest.raises(UserError, match="non-negative"):
        classifier_score(np.array([[1.5, -0.5]] * 4), splits=2)
    with pytest.raises(UserError, match="at least splits"):
        classifier_score(np.eye(10)[:5], splits=10)


# --------------------------------------------------------------------------- precision / recall
def _grid(n: int, spacing: float = 1.0, origin=(0.0, 0.0)) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(n) * spacing, np.arange(n) * spacing, indexing="ij")
    return np.stack([xs.ravel() + origin[0], ys.ravel() + origin[1]], axis=1)


def _precision_recall_brute_force(real: np.ndarray, fake: np.ndarray, k: int):
    def radii(x):
        d = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=2)
        np.fill_diagonal(d, np.inf)  # exclude the point itself
        return np.sort(d, axis=1)[:, k - 1]

    def coverage(queries, centres, r):
        d = np.linalg.norm(queries[:, None, :] - centres[None, :, :], axis=2)
        return float((d <= r[None, :]).any(axis=1).mean())

    return coverage(fake, real, radii(real)), coverage(real, fake, radii(fake))


def test_precision_fakes_on_real_points_or_far_away():
    real = _grid(5)
    precision, recall = precision_recall(real, real.copy(), k=3)
    assert (precision, recall) == (1.0, 1.0)
    precision, _ = precision_recall(real, real + 100.0, k=3)
    assert precision == 0.0
    # half on real points, half far: exactly one half
    fake = np.concatenate([real[:12], real[:12] + 100.0])
    assert precision_recall(real, fake, k=3)[0] == 0.5


def test_precision_uses_kth_neighbour_radius():
    # 5x5 grid, k=3: corner radius sqrt(2) (neighbours at 1, 1, sqrt 2), edge and
    # interior radius 1.
    real = _grid(5)
    fake = np.array([
        [0.5, 0.5],    # 0.71 from corner (0, 0)            -> inside
        [-2.0, -2.0],  # 2.83 from corner (0, 0)            -> outside
        [-1.2, 0.0],   # 1.2 from corner, radius 1.41       -> inside
        [-1.2, 2.0],   # 1.2 from edge point (0, 2), radius 1; 1.56 from (0, 1) -> outside
    ])
    assert precision_recall(real, fake, k=3)[0] == 0.5


def test_precision_recall_excludes_self_and_includes_boundary():
    # 1-D, k=1. Real radii (nearest *other* real): 0->1, 1->1, 2->1, 10->8.
    real = np.array([[0.0], [1.0], [2.0], [10.0]])
    # 0.5 inside; 18 exactly on the boundary of 10's sphere (inside); 25 and -2 outside
    fake = np.array([[0.5], [18.0], [25.0], [-2.0]])
    # fake radii: -2->2.5, 0.5->2.5, 18->7, 25->7; real 0, 1, 2 covered, 10 is not
    precision, recall = precision_recall(real, fake, k=1)
    assert precision == 0.5
    assert recall == 0.75


def test_recall_half_of_the_clusters():
    # four 3x3 clusters far apart; fakes reproduce two of them (slightly moved)
    centres = [(0.0, 0.0), (100.0, 0.0), (0.0, 100.0), (100.0, 100.0)]
    clusters = [_grid(3, origin=c) for c in centres]
    real = np.concatenate(clusters)
    fake = np.concatenate(clusters[:2]) + 0.1
    precision, recall = precision_recall(real, fake, k=3)
    assert precision == 1.0
    assert recall == 0.5
    fake_one = clusters[3] - 0.1
    assert precision_recall(real, fake_one, k=3) == (1.0, 0.25)


def test_precision_recall_blocks_match_brute_force(monkeypatch):
    rng = np.random.default_rng(30)
    real = rng.normal(size=(50, 3))
    fake = rng.normal(size=(40, 3)) * 0.7 + 1.0
    expected = _precision_recall_brute_force(real, fake, k=3)
    assert 0.0 < expected[0] < 1.0 and 0.0 < expected[1] < 1.0
    assert precision_recall(real, fake, k=3) == pytest.approx(expected, abs=1e-12)

    # force tiny blocks and check that no distance block exceeds the bound
    bound = 64
    monkeypatch.setattr(q, "_PR_BLOCK_ELEMENTS", bound)
    shapes = []
    real_cdist = torch.cdist

    def recording_cdist(a, b, *args, **kwargs):
        shapes.append((a.shape[0], b.shape[0]))
        return real_cdist(a, b, *args, **kwargs)

    monkeypatch.setattr(q.torch, "cdist", recording_cdist)
    got = precision_recall(torch.from_numpy(real).float(), torch.from_numpy(fake).float(), k=3)
    assert len(shapes) > 4
    assert all(rows * cols <= bound for rows, cols in shapes)
    real32 = torch.from_numpy(real).float().double().numpy()
    fake32 = torch.from_numpy(fake).float().double().numpy()
    assert got == pytest.approx(_precision_recall_brute_force(real32, fake32, k=3), abs=1e-12)


def test_precision_recall_default_blocks_fit_10k_in_well_under_2gb():
    # 10,000 x 10,000 pairwise float64 distances in blocks of _PR_BLOCK_ELEMENTS
    rows = q._rows_per_block(10_000)
    assert rows >= 1
    assert rows * 10_000 * 8 <= 256 * 2 ** 20  # one block <= 256 MiB


def test_precision_recall_rejects_bad_input():
    x = np.zeros((3, 2))
    with pytest.raises(UserError, match="at least 4"):
        precision_recall(x, np.zeros((10, 2)), k=3)
    with pytest.raises(UserError, match="dimension"):
        precision_recall(np.zeros((10, 2)), np.zeros((10, 3)), k=3)
    with pytest.raises(UserError):
        precision_recall(np.zeros((10, 2)), np.zeros((10, 2)), k=0)


def test_precomputed_real_radii_give_the_same_answer():
    from gankit.metrics.quality import knn_radii
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(60, 4)), rng.normal(size=(50, 4)) + 0.5
    assert precision_recall(real, fake, real_radii=knn_radii(real)) == precision_recall(real, fake)


def test_intra_class_fid_is_the_fid_of_each_class_by_hand():
    g = torch.Generator().manual_seed(0)
    features, ref = torch.randn(300, 6, generator=g), torch.randn(400, 6, generator=g) + 0.3
    labels, ref_labels = torch.arange(300) % 3, torch.arange(400) % 4  # class 3: no samples
    per_class = q.intra_class_fid(features, labels, ref, ref_labels, 4)
    by_hand = [q.fid(features[labels == k], ref[ref_labels == k]) for k in range(3)]
    assert per_class[:3] == pytest.approx(by_hand) and per_class[3] is None


def test_mean_pairwise_distance_by_hand():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    assert q.mean_pairwise_distance(x) == pytest.approx((5 + 10 + 5) / 3)
    assert q.mean_pairwise_distance(x, max_rows=2) == pytest.approx(5.0)

"""Sample-quality metrics on evaluator features and class probabilities.

Pure functions, in pipeline order::

    features (N, D)  --feature_statistics-->  (mu, sigma)  --frechet_distance-->  FID
    features (N, D)  --kid-------------------------------------------------------> KID
    probs    (N, C)  --classifier_score------------------------------------------> IS-style score
    features (N, D)  --precision_recall------------------------------------------> precision, recall

Features and probabilities are what ``gankit.metrics.evaluator.classify``
returns (penultimate features of the MNIST judge, softmax probabilities); any
2-D float array works. Inputs may be numpy arrays or torch tensors; everything
is computed in float64 on the CPU. Mode coverage lives in ``evaluator.py``
(``mode_coverage``).

All default parameters are defined once, below (``KID_SUBSETS``, ...), in the
spirit of torch-fidelity's single defaults table. Values are comparable only
between runs that used the same evaluator (``ARCH_VERSION``) and the same
sample counts: FID and KID here are measured in the evaluator's feature space,
not Inception's, so they are not comparable with published ImageNet/Inception
numbers.

Bad input (wrong rank, mismatched dimensions, too few samples, non-finite
values) raises ``gankit.errors.UserError``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from gankit.errors import UserError

__all__ = [
    "KID_SUBSETS",
    "KID_SUBSET_SIZE",
    "IS_SPLITS",
    "PR_K",
    "feature_statistics",
    "frechet_distance",
    "fid",
    "polynomial_kernel",
    "mmd2_unbiased",
    "kid",
    "classifier_score",
    "precision_recall",
    "knn_radii",
]

# --------------------------------------------------------------------------- defaults
#: Number of random subsets KID is averaged over (Binkowski et al. 2018; torch-fidelity: 100).
KID_SUBSETS = 100
#: Size of each KID subset, clipped to the smaller of the two sets (torch-fidelity: 1000).
KID_SUBSET_SIZE = 1000
#: Number of splits for the Inception-Score formula (Salimans et al. 2016: 10).
IS_SPLITS = 10
#: Neighbourhood size k of the k-NN hyperspheres (Kynkaanniemi et al. 2019: 3).
PR_K = 3
#: Upper bound on the number of float64 entries in one block of pairwise distances
#: (2**23 entries = 64 MiB); bounds the memory of ``precision_recall``.
_PR_BLOCK_ELEMENTS = 2 ** 23
#: Tolerance on the row sums of class probabilities.
_PROB_SUM_TOL = 1e-3


# --------------------------------------------------------------------------- helpers
def _as_float64_2d(x, name: str, min_rows: int = 1) -> np.ndarray:
    """numpy float64 copy-or-view of a 2-D array / tensor, validated."""
    if isinstance(x, Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{name} must be a numeric 2-D array: {exc}") from exc
    if arr.ndim != 2:
        raise UserError(f"{name} must be 2-D (N, D), got shape {arr.shape}")
    if arr.shape[0] < min_rows:
        raise UserError(f"{name} needs at least {min_rows} rows, got {arr.shape[0]}")
    if arr.shape[1] < 1:
        raise UserError(f"{name} must have at least one column, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise UserError(f"{name} contains NaN or infinite values")
    return arr


def _same_dim(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise UserError(
            f"{name_a} and {name_b} have different feature dimensions "
            f"({a.shape[1]} vs {b.shape[1]})"
        )


def _clip_roundoff(eigenvalues: np.ndarray) -> np.ndarray:
    """Eigenvalues of a symmetric PSD matrix with round-off noise set to exactly 0.

    eigh is accurate to about n * eps * max|lambda| in absolute terms, so an
    eigenvalue at or below that level is indistinguishable from 0: negative
    ones are clipped (the matrix is PSD), and tiny positive ones are zeroed
    too, because their square roots (~ sqrt(eps)) would otherwise add noise of
    order 1e-8 * lambda_max each to the trace term on singular covariances.
    """
    w = np.asarray(eigenvalues, dtype=np.float64)
    if w.size == 0:
        return w
    tol = w.size * np.finfo(np.float64).eps * float(np.abs(w).max())
    return np.where(w > tol, w, 0.0)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric PSD square root via eigh, round-off eigenvalues set to 0."""
    w, v = np.linalg.eigh(0.5 * (matrix + matrix.T))
    return (v * np.sqrt(_clip_roundoff(w))) @ v.T


# --------------------------------------------------------------------------- FID
def feature_statistics(features: np.ndarray | Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of ``features`` (N, D), both float64.

    The covariance is the unbiased sample covariance (ddof=1, ``np.cov``'s
    default), as in the reference FID code (Heusel et al. 2017,
    https://github.com/bioinf-jku/TTUR). Needs N >= 2.
    """
    x = _as_float64_2d(features, "features", min_rows=2)
    mu = x.mean(axis=0)
    centred = x - mu
    sigma = centred.T @ centred / (x.shape[0] - 1)
    return mu, 0.5 * (sigma + sigma.T)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    d^2 = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))
    (Dowson & Landau 1982; used as FID by Heusel et al. 2017, "GANs Trained by
    a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium").

    The trace term is computed without complex arithmetic from the identity
    tr((S1 S2)^(1/2)) = sum_i sqrt(lambda_i(S1^(1/2) S2 S1^(1/2))): S1 S2 is
    similar to the symmetric PSD matrix S1^(1/2) S2 S1^(1/2), so its
    eigenvalues are real and >= 0. S1^(1/2) comes from a symmetric
    eigendecomposition. In both eigendecompositions, eigenvalues at round-off
    level (<= n * eps * max|lambda|, negative ones included) are set to 0
    before the square root: a plain clip at 0 would keep positive noise whose
    square roots cost ~1e-5 relative accuracy on singular covariances.
    Singular covariances (fewer samples than dimensions, dead ReLU units,
    collinear features) are therefore fine, with no NaN and no epsilon
    regularisation. The result is clipped at 0 and returned as a float.
    """
    mu1 = np.asarray(mu1, dtype=np.float64)
    mu2 = np.asarray(mu2, dtype=np.float64)
    s1 = np.asarray(sigma1, dtype=np.float64)
    s2 = np.asarray(sigma2, dtype=np.float64)
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise UserError(f"mu1 and mu2 must be vectors of equal length, got {mu1.shape} and {mu2.shape}")
    d = mu1.shape[0]
    if s1.shape != (d, d) or s2.shape != (d, d):
        raise UserError(
            f"sigma1 and sigma2 must have shape ({d}, {d}), got {s1.shape} and {s2.shape}"
        )
    for name, arr in (("mu1", mu1), ("mu2", mu2), ("sigma1", s1), ("sigma2", s2)):
        if not np.isfinite(arr).all():
            raise UserError(f"{name} contains NaN or infinite values")
    s1 = 0.5 * (s1 + s1.T)
    s2 = 0.5 * (s2 + s2.T)
    root1 = _sqrt_psd(s1)
    inner = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh(0.5 * (inner + inner.T))
    tr_covmean = float(np.sqrt(_clip_roundoff(eig)).sum())
    diff = mu1 - mu2
    value = float(diff @ diff) + float(np.trace(s1)) + float(np.trace(s2)) - 2.0 * tr_covmean
    return max(value, 0.0)


def fid(features_a: np.ndarray | Tensor, features_b: np.ndarray | Tensor) -> float:
    """Frechet Inception Distance (Heusel et al. 2017) between two feature sets.

    ``frechet_distance(*feature_statistics(a), *feature_statistics(b))``;
    features (N_a, D) and (N_b, D), N >= 2 each. FID is biased in the sample
    count: compare values computed from equal N only.
    """
    a = _as_float64_2d(features_a, "features_a", min_rows=2)
    b = _as_float64_2d(features_b, "features_b", min_rows=2)
    _same_dim(a, b, "features_a", "features_b")
    return frechet_distance(*feature_statistics(a), *feature_statistics(b))


# --------------------------------------------------------------------------- KID
def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cubic polynomial kernel k(x, y) = (x . y / d + 1)^3, as a (len(x), len(y)) matrix.

    The kernel of KID (Binkowski et al. 2018, "Demystifying MMD GANs"); d is
    the feature dimension.
    """
    d = x.shape[1]
    return (x @ y.T / d + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray | Tensor, y: np.ndarray | Tensor) -> float:
    """Unbiased estimate of MMD^2 between the samples x (m, D) and y (n, D).

    MMD^2_u = sum_{i!=j} k(x_i, x_j) / (m (m-1)) + sum_{i!=j} k(y_i, y_j) / (n (n-1))
              - 2 sum_{i,j} k(x_i, y_j) / (m n)
    with the cubic ``polynomial_kernel`` (Gretton et al. 2012, Lemma 6;
    Binkowski et al. 2018). Can be slightly negative. Needs m, n >= 2.
    """
    x = _as_float64_2d(x, "x", min_rows=2)
    y = _as_float64_2d(y, "y", min_rows=2)
    _same_dim(x, y, "x", "y")
    m, n = x.shape[0], y.shape[0]
    k_xx = polynomial_kernel(x, x)
    k_yy = polynomial_kernel(y, y)
    k_xy = polynomial_kernel(x, y)
    sum_xx = k_xx.sum() - np.trace(k_xx)
    sum_yy = k_yy.sum() - np.trace(k_yy)
    return float(sum_xx / (m * (m - 1)) + sum_yy / (n * (n - 1)) - 2.0 * k_xy.sum() / (m * n))


def kid(features_a: np.ndarray | Tensor, features_b: np.ndarray | Tensor, *,
        subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al. 2018): (mean, std) of MMD^2_u over subsets.

    For each of ``subsets`` rounds, m = min(subset_size, N_a, N_b) rows are
    drawn without replacement from each set and ``mmd2_unbiased`` (cubic
    polynomial kernel) is computed on them; the mean and the standard
    deviation (ddof=0, as torch-fidelity) of these estimates are returned.

    Sampling is deterministic given ``seed``: ``rng = np.random.default_rng(seed)``,
    then per round ``rng.choice(N_a, m, replace=False)`` followed by
    ``rng.choice(N_b, m, replace=False)``. The mean is unbiased, so it can be
    slightly negative for very similar distributions.
    """
    a = _as_float64_2d(features_a, "features_a", min_rows=2)
    b = _as_float64_2d(features_b, "features_b", min_rows=2)
    _same_dim(a, b, "features_a", "features_b")
    if int(subsets) < 1:
        raise UserError(f"subsets must be positive, got {subsets}")
    if int(subset_size) < 2:
        raise UserError(f"subset_size must be at least 2, got {subset_size}")
    m = min(int(subset_size), a.shape[0], b.shape[0])
    rng = np.random.default_rng(seed)
    values = np.empty(int(subsets), dtype=np.float64)
    for i in range(int(subsets)):
        ia = rng.choice(a.shape[0], m, replace=False)
        ib = rng.choice(b.shape[0], m, replace=False)
        values[i] = mmd2_unbiased(a[ia], b[ib])
    return float(values.mean()), float(values.std())


# --------------------------------------------------------------------------- IS
def classifier_score(probs: np.ndarray | Tensor, splits: int = IS_SPLITS) -> tuple[float, float]:
    """Inception-Score formula on class probabilities: (mean, std) over splits.

    score = exp(E_x KL(p(y|x) || p(y))), p(y) the mean of p(y|x) over the
    split (Salimans et al. 2016, "Improved Techniques for Training GANs").
    Here p(y|x) comes from the MNIST evaluator, not Inception, so the score
    ranges from 1 (every sample gets the same class distribution) to the
    number of classes (confident predictions, evenly spread over classes).

    probs: (N, C), non-negative, rows summing to 1 (within 1e-3; rows are
    renormalised). The N samples are cut, in order and without shuffling,
    into ``splits`` contiguous parts whose sizes differ by at most one
    (``np.array_split``); std is over the per-split scores with ddof=0, as
    in the original code. Needs N >= splits. 0 log 0 is taken as 0.
    """
    p = _as_float64_2d(probs, "probs", min_rows=1)
    splits = int(splits)
    if splits < 1:
        raise UserError(f"splits must be positive, got {splits}")
    if p.shape[0] < splits:
        raise UserError(f"classifier_score needs at least splits={splits} samples, got {p.shape[0]}")
    if (p < 0).any():
        raise UserError("probs must be non-negative")
    sums = p.sum(axis=1, keepdims=True)
    if not np.allclose(sums, 1.0, rtol=0.0, atol=_PROB_SUM_TOL):
        raise UserError("probs rows must sum to 1 (pass softmax probabilities, not logits)")
    p = p / sums
    scores = np.empty(splits, dtype=np.float64)
    for i, part in enumerate(np.array_split(p, splits, axis=0)):
        p_y = part.mean(axis=0, keepdims=True)
        # Where part > 0, p_y > 0 too; elsewhere the term is 0 log 0 = 0.
        ratio = np.divide(part, p_y, out=np.ones_like(part), where=part > 0)
        kl = (part * np.log(ratio)).sum(axis=1)
        scores[i] = math.exp(float(kl.mean()))
    return float(scores.mean()), float(scores.std())


# --------------------------------------------------------------------------- precision / recall
def _as_tensor64(x, name: str, min_rows: int) -> Tensor:
    return torch.tensor(_as_float64_2d(x, name, min_rows=min_rows), dtype=torch.float64)


def _rows_per_block(n_cols: int) -> int:
    return max(1, _PR_BLOCK_ELEMENTS // max(1, n_cols))


def _knn_radii(x: Tensor, k: int) -> Tensor:
    """Distance from each row of x to its k-th nearest other row (itself excluded)."""
    n = x.shape[0]
    radii = torch.empty(n, dtype=torch.float64)
    step = _rows_per_block(n)
    for start in range(0, n, step):
        stop = min(n, start + step)
        dist = torch.cdist(x[start:stop], x)
        rows = torch.arange(stop - start)
        dist[rows, rows + start] = -1.0  # the point itself: always the smallest, then skipped
        radii[start:stop] = torch.kthvalue(dist, k + 1, dim=1).values
    return radii


def _inside_any_ball(queries: Tensor, centres: Tensor, radii: Tensor) -> Tensor:
    """Boolean (len(queries),): query within radii[j] of at least one centres[j]."""
    inside = torch.empty(queries.shape[0], dtype=torch.bool)
    step = _rows_per_block(centres.shape[0])
    for start in range(0, queries.shape[0], step):
        stop = min(queries.shape[0], start + step)
        dist = torch.cdist(queries[start:stop], centres)
        inside[start:stop] = (dist <= radii[None, :]).any(dim=1)
    return inside


def knn_radii(features: np.ndarray | Tensor, k: int = PR_K) -> Tensor:
    """The k-NN radii of a reference set, to pass to precision_recall when one real set
    is compared with several fake sets (the radii are the costly part)."""
    return _knn_radii(_as_tensor64(features, "features", min_rows=int(k) + 1), int(k))


def precision_recall(real_features: np.ndarray | Tensor, fake_features: np.ndarray | Tensor,
                     k: int = PR_K, *, real_radii: Tensor | None = None) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019), as (precision, recall).

    Each real sample defines a hypersphere around it whose radius is the
    Euclidean distance to its k-th nearest neighbour among the other real
    samples; the union of these spheres estimates the real manifold.
    precision = fraction of fake samples inside at least one real sphere
    (boundary included); recall = fraction of real samples inside at least
    one fake sphere, the fake spheres built the same way from the fake set.

    Pairwise distances are computed with ``torch.cdist`` in float64, in row
    blocks of at most 2**23 entries (64 MiB), so 10,000 x 10,000 samples of
    dimension 128 stay far below 1 GB. Needs at least k + 1 samples per set.
    """
    k = int(k)
    if k < 1:
        raise UserError(f"k must be positive, got {k}")
    real = _as_tensor64(real_features, "real_features", min_rows=k + 1)
    fake = _as_tensor64(fake_features, "fake_features", min_rows=k + 1)
    if real.shape[1] != fake.shape[1]:
        raise UserError(
            f"real_features and fake_features have different feature dimensions "
            f"({real.shape[1]} vs {fake.shape[1]})"
        )
    with torch.no_grad():
        if real_radii is None:
            real_radii = _knn_radii(real, k)
        precision = _inside_any_ball(fake, real, real_radii).double().mean()
        recall = _inside_any_ball(real, fake, _knn_radii(fake, k)).double().mean()
    return float(precision), float(recall)


# --------------------------------------------------------------------------- per class
def intra_class_fid(features, labels, ref_features, ref_labels, classes: int) -> list[float | None]:
    """FID of each class k: the features labelled k against the reference features labelled
    k (StudioGAN's intra-class FID: the samples a conditional generator drew for class k
    against real images of class k). None for a class with fewer than 2 rows on either side."""
    features = _as_float64_2d(features, "features")
    ref_features = _as_float64_2d(ref_features, "ref_features")
    labels, ref_labels = _as_labels(labels, features), _as_labels(ref_labels, ref_features)
    out: list[float | None] = []
    for k in range(int(classes)):
        mine, theirs = labels == k, ref_labels == k
        out.append(fid(features[mine], ref_features[theirs]) if mine.sum() >= 2 and theirs.sum() >= 2 else None)
    return out


def mean_pairwise_distance(features, max_rows: int = 1000) -> float:
    """The mean Euclidean distance between two different rows of ``features`` (N, D), N >= 2,
    over its first ``max_rows`` rows (the cost is quadratic; a seeded caller shuffles first)."""
    x = _as_tensor64(features, "features", min_rows=2)[:max_rows]
    n = x.shape[0]
    with torch.no_grad():
        return float(torch.cdist(x, x).sum() / (n * (n - 1)))


def _as_labels(labels, features) -> np.ndarray:
    array = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if array.shape != (len(features),):
        raise UserError(f"labels of shape {array.shape} for {len(features)} feature rows")
    return array

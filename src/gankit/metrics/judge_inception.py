"""Judging samples on Inception-v3 features: the numbers papers quote, beside the floor
(`gankit eval --features inception`).

Pipeline::

    samples, reference --inception_judge--> FID, KID, IS, precision, recall, and the floor
    samples, Request   --judge_with_inception--> the same, the network loaded and the
                                                 reference images found for a run or a file

The figures are the pure functions of ``gankit.metrics.quality`` on the features of
``gankit.metrics.inception``: FID and KID against the whole reference set, the
Inception-Score formula on the samples' probabilities, precision and recall with k = 3
against the reference set.

The floor, beside every figure, says what real images score: the reference set is cut
once, by a permutation seeded with ``seed`` (``reference_split``), into a *pool* (the
first floor(M / 2) images of the permutation) and the *rest*. The floor is the same
figures for the first n images of the pool judged against the rest, n = the number of
samples (or the pool's size, when there are more samples than that; the floor's "n" says
which). So the floor's real images are never part of the statistics they are judged
against, as the MNIST judge judges training images against the test split. The samples
themselves are judged against the whole reference set, as papers do; the floor's
reference is half as large, which makes the floor a slightly pessimistic anchor.

What the reference costs (its features, their mean and covariance, the k-NN radii, the
pool's probabilities, floors by n) is cached under ``cache_dir`` by
``gankit.metrics.reference``, in a file named by a hash of the network (its TorchScript
code and weights), the reference images (their bytes, or a caller's ``reference_key``)
and the seed. An unreadable cache file is computed afresh; a read-only cache only costs time.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from gankit.data.folder import load_folder
from gankit.metrics.inception import (
    BATCH_SIZE,
    check_images,
    default_cache_dir,
    inception_weights,
    load_feature_network,
    network_outputs,
)
from gankit.metrics.quality import (
    PR_K,
    classifier_score,
    feature_statistics,
    frechet_distance,
    kid,
    knn_radii,
    precision_recall,
)
from gankit.metrics.reference import read_reference, reference_path, write_reference
from gankit.metrics.request import Request
from gankit.paths import default_data_root
from gankit.registry import load_dataset
from gankit.runs import load_split, pick_device

__all__ = [
    "MIN_SAMPLES",
    "figures",
    "reference_split",
    "reference_statistics",
    "inception_judge",
    "reference_for",
    "judge_with_inception",
    "inception_header",
    "inception_footer",
]

#: The fewest samples all figures are defined for: the Inception-Score formula uses 10
#: splits (quality.IS_SPLITS) and precision/recall need k + 1 = 4 points.
MIN_SAMPLES = 10
#: What a cached reference must hold to be used (reference.read_reference checks them).
REFERENCE_KEYS = ("features", "mu", "sigma", "radii", "pool", "rest", "pool_probs", "floors")


def figures(features, probs, ref_features, ref_radii: Tensor, seed: int, mu=None, sigma=None) -> dict:
    """FID, KID, Inception Score, precision and recall of (features, probs) against the
    reference features (their k-NN radii given; their mean and covariance too when known).
    Each is the quality.py function; ``kid`` is seeded with ``seed``."""
    if mu is None or sigma is None:
        mu, sigma = feature_statistics(ref_features)
    precision, recall = precision_recall(ref_features, features, k=PR_K, real_radii=ref_radii)
    kid_mean, kid_std = kid(features, ref_features, seed=seed)
    score, score_std = classifier_score(probs)
    return {
        "fid": frechet_distance(*feature_statistics(features), mu, sigma),
        "kid": kid_mean, "kid_std": kid_std,
        "inception_score": score, "inception_score_std": score_std,
        "precision": precision, "recall": recall, "n": len(features),
    }


def reference_split(count: int, seed: int) -> tuple[Tensor, Tensor]:
    """(pool, rest): indices of a reference set of ``count`` images, cut by a permutation
    seeded with ``seed``; the pool is its first count // 2 entries, the rest the others.
    The floor judges the pool's first n images against the rest."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return order[:count // 2], order[count // 2:]


def _reference_file(cache_dir, net, seed: int, images: Tensor | None, reference_key: str | None) -> Path:
    """Where the reference of these images (or of this key) on ``net`` with ``seed`` is cached."""
    what = ("key", reference_key) if reference_key is not None else ("images", images)
    return reference_path(cache_dir, "inception", seed, net, *what)


def _compute_reference(net, images: Tensor, seed: int, batch_size: int, device, progress: bool) -> dict:
    features, probs = network_outputs(net, images, batch_size=batch_size, device=device, progress=progress,
                                      desc="reference features")
    mu, sigma = feature_statistics(features)
    pool, rest = reference_split(len(images), seed)
    return {
        "features": features,
        "mu": torch.from_numpy(mu), "sigma": torch.from_numpy(sigma), "radii": knn_radii(features, PR_K),
        "pool": pool, "rest": rest, "pool_probs": probs[pool], "floors": {},
    }


def _add_floor(ref: dict, n: int, seed: int) -> None:
    """ref["floors"][n]: the figures of the pool's first n images against the rest."""
    rest = ref["features"][ref["rest"]]
    if "rest_radii" not in ref:
        ref["rest_radii"] = knn_radii(rest, PR_K)
    ref["floors"][n] = figures(ref["features"][ref["pool"][:n]], ref["pool_probs"][:n], rest, ref["rest_radii"],
                               seed)


def reference_statistics(net, reference: Tensor | Callable[[], Tensor], *, seed: int = 0,
                         cache_dir: str | os.PathLike, reference_key: str | None = None, n_floor: int = 0,
                         batch_size: int = BATCH_SIZE, device=None, progress: bool = False) -> dict:
    """What every judgement against ``reference`` compares with, cached (module docstring):
    "features" (M, D), "mu", "sigma", "radii" (k = 3), the split "pool" / "rest",
    "pool_probs" and "floors" {n: figures}; with ``n_floor`` > 0, the floor for
    min(n_floor, pool size) images is in "floors". ``reference`` is a uint8 tensor
    (M, 1 or 3, H, W), M >= 2 * MIN_SAMPLES, or a function returning one: with a
    ``reference_key`` it is called only when the cache lacks the reference."""
    images = None if reference_key is not None else _reference_images(reference)
    path = _reference_file(cache_dir, net, seed, images, reference_key)
    ref = read_reference(path, REFERENCE_KEYS)
    if ref is not None and (not n_floor or _floor_size(ref, n_floor) in ref["floors"]):
        return ref
    if ref is None:
        images = images if images is not None else _reference_images(reference)
        ref = _compute_reference(net, images, seed, batch_size, device, progress)
    if n_floor:
        _add_floor(ref, _floor_size(ref, n_floor), seed)
    write_reference(path, ref)
    return ref


def _floor_size(ref: dict, n_samples: int) -> int:
    """How many real images the floor for n_samples samples uses: as many, or the whole pool."""
    return min(int(n_samples), len(ref["pool"]))


def _reference_images(reference) -> Tensor:
    images = reference() if callable(reference) else reference
    check_images(images, "reference", 2 * MIN_SAMPLES)
    return images


def inception_judge(samples: Tensor, reference: Tensor | Callable[[], Tensor], *, net, seed: int = 0,
                    floor: bool = True, cache_dir: str | os.PathLike, reference_key: str | None = None,
                    progress: bool = False, batch_size: int = BATCH_SIZE, device=None) -> dict:
    """FID, KID (and kid_std), inception_score (and its std), precision and recall (k = 3)
    of uint8 ``samples`` (N, 1 or 3, H, W), N >= MIN_SAMPLES, on ``net``'s features against
    the ``reference`` images (see reference_statistics), with "n", "reference_n" and, when
    ``floor``, "floor": the same figures for real images, as the module docstring says.
    ``seed`` seeds KID's subsets and the floor's split. Values agree with
    gankit.metrics.quality called on network_outputs' features and probabilities."""
    check_images(samples, "sample", MIN_SAMPLES)
    ref = reference_statistics(net, reference, seed=seed, cache_dir=cache_dir, reference_key=reference_key,
                               n_floor=len(samples) if floor else 0, batch_size=batch_size, device=device,
                               progress=progress)
    features, probs = network_outputs(net, samples, batch_size=batch_size, device=device, progress=progress,
                                      desc="sample features")
    result = figures(features, probs, ref["features"], ref["radii"], seed, ref["mu"].numpy(), ref["sigma"].numpy())
    result["reference_n"] = len(ref["features"])
    if floor:
        result["floor"] = dict(ref["floors"][_floor_size(ref, len(samples))])
    return result


# --------------------------------------------------------------------------- a run or a file
def reference_for(request: Request, size: int, channels: int) -> tuple[Callable[[], Tensor], str]:
    """(a loader of the real images samples are judged against, how to call them): --reference
    DIR, decoded as the samples' size and channels (and cached, as a training folder is); else
    the run's own training images as it trained on them; else the dataset's train split."""
    if request.reference:
        root = Path(request.reference)
        return (lambda: load_folder(root, size=size, channels=channels, cache_dir=default_data_root(),
                                    progress=request.progress).images), f"the images under '{root}'"
    config = request.config
    if config is not None and request.dataset == config.dataset:
        config = dataclasses.replace(config, subset=None, progress=request.progress, data_dir=request.data_dir)
        return (lambda: load_split(config, "train").images), f"the run's training images ({config.dataset})"
    return (lambda: load_dataset(request.dataset, split="train", data_dir=request.data_dir,
                                 progress=request.progress).images), f"{request.dataset}'s training images"


def judge_with_inception(images: Tensor, request: Request) -> dict:
    """`gankit eval --features inception`: the figures papers quote, beside the floor."""
    check_images(images, "sample", MIN_SAMPLES)  # inception_judge checks too; here before the weights load
    weights = inception_weights(request.feature_weights, cache_dir=default_cache_dir(),
                                log=lambda message: print(message, file=sys.stderr))
    net = load_feature_network(weights, pick_device(request.device))
    load, name = reference_for(request, images.shape[-1], images.shape[1])
    result = inception_judge(images.contiguous(), load(), net=net, seed=request.seed, cache_dir=default_cache_dir(),
                             progress=request.progress)
    return {**result, "reference": name}


def inception_header(result: dict, dataset: str) -> str:
    return (f"{result['n']} samples against {result['reference_n']} real images ({result['reference']}), on "
            f"Inception-v3 features; floor: {result['floor']['n']} of those real images against the others")


def inception_footer(result: dict) -> str:
    return f"  (KID ± {result['kid_std']:.5f}; Inception Score ± {result['inception_score_std']:.3f})"

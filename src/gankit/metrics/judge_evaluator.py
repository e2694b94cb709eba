"""Judging samples with gankit's own evaluator (`gankit eval`, `--features evaluator`, the
default, and the training loop's judge): every figure next to the real-data floor.

Pipeline, for generated images and, as the floor, for as many real training images:
  images --evaluator--> features (N, 128) and class probabilities (N, 10)
         --quality-->   FID and KID against the test split, classifier score,
                        precision and recall (k=3) against the test split
         --evaluator--> class histogram, modes covered, KL to uniform;
                        with the labels the samples were drawn for (a conditional
                        generator): class accuracy, the share classified as their label.

A dataset whose images hold one digit per channel (Stacked MNIST: three digits in R, G,
B; its registry entry borrows the MNIST evaluator) is judged channel by channel: the class
is 100 r + 10 g + b (1000 modes) and the features are the three channels' features side
by side.

The test split's features and radii and the floors are cached beside the evaluator by
gankit.metrics.reference, the one reference cache of both judges.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from gankit.errors import UserError
from gankit.metrics.evaluator import classify, load_or_train_evaluator, mode_coverage
from gankit.metrics.quality import classifier_score, fid, kid, knn_radii, precision_recall
from gankit.metrics.reference import read_reference, reference_path, write_reference
from gankit.metrics.request import Request
from gankit.paths import default_data_root
from gankit.registry import dataset_spec, judged_datasets, load_dataset

__all__ = [
    "evaluator_for",
    "evaluator_cache",
    "classes_of",
    "sample_channels",
    "embed",
    "figures",
    "score_samples",
    "reference",
    "judge_with_evaluator",
    "evaluator_header",
    "evaluator_footer",
]

#: What a cached reference must hold to be used (reference.read_reference checks them).
REFERENCE_KEYS = ("test_features", "test_radii", "floors")


def evaluator_for(dataset: str, data_dir: str | None, progress: bool = True, train=None):
    """The cached evaluator of a labelled 28x28 dataset (trained on first use). `train`:
    the base dataset's train split when the caller has it already, to read it only once."""
    base = dataset_spec(dataset).evaluator
    if train is None or train.name != base:
        train = load_dataset(base, split="train", data_dir=data_dir)
    return load_or_train_evaluator(train.images, train.labels, evaluator_cache(),
                                   progress=progress, log=lambda m: print(m, file=sys.stderr))


def classes_of(dataset: str) -> int:
    return dataset_spec(dataset).num_classes


def sample_channels(dataset: str) -> int:
    return dataset_spec(dataset).channels or 1


def evaluator_cache() -> Path:
    return default_data_root() / "evaluators"


def embed(evaluator, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(features, probabilities, predicted class) of uint8 (N, C, 28, 28). C > 1 (Stacked
    MNIST): each channel is one digit, the class is the digits read as a number (100 r +
    10 g + b), the features are the channels' features side by side."""
    parts = [classify(evaluator, images[:, c:c + 1].contiguous()) for c in range(images.shape[1])]
    features = torch.cat([f for _, f in parts], dim=1)
    probs, predicted = parts[0][0], parts[0][0].argmax(1)
    for p, _ in parts[1:]:
        # The joint distribution, assuming the channels independent given the image.
        probs = (probs[:, :, None] * p[:, None, :]).reshape(len(images), -1)
        predicted = predicted * p.shape[1] + p.argmax(1)
    return features, probs, predicted


def figures(features, probs, predicted, test_features, test_radii, num_classes: int, seed: int) -> dict:
    precision, recall = precision_recall(test_features, features, real_radii=test_radii)
    kid_mean, kid_std = kid(features, test_features, seed=seed)
    score, score_std = classifier_score(probs)
    coverage = mode_coverage(predicted, num_classes=num_classes)
    return {
        "fid": fid(features, test_features), "kid": kid_mean, "kid_std": kid_std,
        "classifier_score": score, "classifier_score_std": score_std,
        "precision": precision, "recall": recall,
        "modes": coverage["modes"], "num_classes": num_classes, "kl_to_uniform": coverage["kl_to_uniform"],
        "histogram": coverage["histogram"],
    }


def score_samples(images: torch.Tensor, dataset: str, data_dir: str | None = None, *, seed: int = 0,
                  floor: bool = True, progress: bool = True, labels: torch.Tensor | None = None) -> dict:
    """All figures for uint8 images (N, C, 28, 28) of `dataset`, plus the floor for N real ones.
    `labels` (N,): the class each image was asked to be (stacked-mnist: 100 r + 10 g + b);
    given, the result has "class_accuracy", the share the evaluator puts in that class."""
    if dataset not in judged_datasets():
        raise UserError(f"gankit's evaluator judges {', '.join(judged_datasets())} samples; '{dataset}' "
                        "has none (it needs labelled 28x28 data); use --features inception")
    channels = sample_channels(dataset)
    if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != (channels, 28, 28):
        raise UserError(f"{dataset} samples must be uint8 of shape (N, 28, 28{', 3' if channels == 3 else ''}); "
                        f"got {images.dtype} {tuple(images.shape)}")
    if len(images) < 10:
        raise UserError(f"need at least 10 samples to judge, got {len(images)}")
    if labels is not None and tuple(labels.shape) != (len(images),):
        raise ValueError(f"labels of shape {tuple(labels.shape)} for {len(images)} images")
    evaluator = evaluator_for(dataset, data_dir, progress)
    num_classes = classes_of(dataset)
    ref = reference(evaluator, dataset, data_dir, seed, len(images) if floor else 0)
    features, probs, predicted = embed(evaluator, images)
    result = figures(features, probs, predicted, ref["test_features"], ref["test_radii"], num_classes, seed)
    result["n"] = len(images)
    if labels is not None:
        result["class_accuracy"] = (predicted.cpu() == labels.cpu().long()).float().mean().item()
    if floor:
        result["floor"] = ref["floor"]
    return result


def reference(evaluator, dataset: str, data_dir: str | None, seed: int, n_floor: int) -> dict:
    """What every judgement of `dataset` compares against: the test split's features and
    k-NN radii, and the floor (figures of n_floor real training images). They cost more
    than judging the samples and depend only on the evaluator, the data and the seed, so
    they are cached beside the evaluator under a hash of these; floors by n."""
    test = load_dataset(dataset, split="test", data_dir=data_dir, seed=seed)
    path = reference_path(evaluator_cache(), "evaluator", dataset, seed, evaluator, test.images, test.labels)
    ref = read_reference(path, REFERENCE_KEYS)
    if ref is not None and (not n_floor or n_floor in ref["floors"]):
        return {**ref, "floor": ref["floors"].get(n_floor)}
    if ref is None:
        test_features, _, _ = embed(evaluator, test.images)
        ref = {"test_features": test_features, "test_radii": knn_radii(test_features), "floors": {}}
    if n_floor:
        real = load_dataset(dataset, split="train", data_dir=data_dir, seed=seed)
        pick = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))[:n_floor]
        ref["floors"][n_floor] = figures(*embed(evaluator, real.images[pick]), ref["test_features"],
                                         ref["test_radii"], classes_of(dataset), seed)
    write_reference(path, ref)
    return {**ref, "floor": ref["floors"].get(n_floor)}


def judge_with_evaluator(images: torch.Tensor, request: Request) -> dict:
    if request.reference or request.feature_weights:
        raise UserError("--reference and --feature-weights go with --features inception; gankit's evaluator "
                        "judges against the dataset's own test split")
    return score_samples(images.contiguous(), request.dataset, request.data_dir, seed=request.seed,
                         progress=request.progress, labels=request.labels)


def evaluator_header(result: dict, dataset: str) -> str:
    return f"{result['n']} samples of {dataset} against its test split; floor: {result['n']} real training images"


def evaluator_footer(result: dict) -> str:
    lines = []
    if "class_accuracy" in result:  # a conditional run: did each sample come out as its class?
        lines.append(f"  {'class accuracy':<18}{result['class_accuracy']:>12.3f}{'-':>12}")
    lines.append(f"  (modes of {result['num_classes']}; KID ± {result['kid_std']:.5f})")
    return "\n".join(lines)

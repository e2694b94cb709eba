"""Judging samples with gankit's own evaluator (`gankit eval`, `--features evaluator`, the
default, and the training loop's judge): every figure next to the real-data floor.

Pipeline, for generated images and, as the floor, for as many real training images:
  images --evaluator--> features (N, 128) and class probabilities (N, 10)
         --quality-->   FID and KID against the test split, classifier score,
                        precision and recall (k=3) against the test split
         --evaluator--> class histogram, modes covered, KL to uniform;
                        with the labels the samples were drawn for (a conditional
                        generator): class accuracy, the share classified as their label;
                        intra-class FID (each class's samples against the test digits of
                        that class, and their mean) and each class's spread (how far apart
                        its samples lie, against how far apart real digits of the class do),
                        beside the floor of real training digits of each class.

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
from gankit.metrics.quality import (
    classifier_score,
    fid,
    intra_class_fid,
    kid,
    knn_radii,
    mean_pairwise_distance,
    precision_recall,
)
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
REFERENCE_KEYS = ("test_features", "test_labels", "test_radii", "floors")
#: A class whose samples lie on average closer together than this share of the distance
#: between real digits of the class is flagged as drawn as near copies (a collapse inside the
#: class, which accuracy and the pooled FID do not show); real training digits against the
#: test digits of their class measure about 1.
SPREAD_FLAG = 0.5
#: Per-class figures for datasets of at most this many classes: Stacked MNIST's 1000 classes
#: have about ten test images each, too few for the covariance of 128 features.
MAX_CLASSES_PER_CLASS_FIGURES = 100


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


def class_figures(features, labels, test_features, test_labels, num_classes: int, seed: int) -> dict:
    """Each class's figures: its intra-class FID against the test images of the class (and
    their mean over the classes that have one) and its spread, the mean distance between
    two of its samples over that between two real test images of the class."""
    labels, test_labels = labels.cpu().long(), test_labels.cpu().long()
    fids = intra_class_fid(features, labels, test_features, test_labels, num_classes)
    order = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed))
    features, labels = features[order], labels[order]  # the first 1000 of a class: a seeded pick
    spreads = []
    for k in range(num_classes):
        mine, real = features[labels == k], test_features[test_labels == k]
        spreads.append(mean_pairwise_distance(mine) / mean_pairwise_distance(real)
                       if len(mine) >= 2 and len(real) >= 2 else None)
    known = [f for f in fids if f is not None]
    return {"intra_fid": sum(known) / len(known) if known else None, "intra_fid_per_class": fids,
            "spread_per_class": spreads,
            "near_copy_classes": [k for k, s in enumerate(spreads) if s is not None and s < SPREAD_FLAG]}


def class_accuracies(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float | None]:
    """Per class asked for, the share of its samples the evaluator puts in it (None: none asked):
    a mean accuracy can hide one class that never comes out."""
    shares = []
    for k in range(num_classes):
        asked = labels == k
        shares.append((predicted[asked] == k).float().mean().item() if asked.any() else None)
    return shares


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
    per_class = labels is not None and num_classes <= MAX_CLASSES_PER_CLASS_FIGURES
    counts = tuple(torch.bincount(labels.cpu().long(), minlength=num_classes).tolist()) if per_class else None
    ref = reference(evaluator, dataset, data_dir, seed, len(images) if floor else 0, counts if floor else None)
    features, probs, predicted = embed(evaluator, images)
    result = figures(features, probs, predicted, ref["test_features"], ref["test_radii"], num_classes, seed)
    result["n"] = len(images)
    if labels is not None:
        result["class_accuracy"] = (predicted.cpu() == labels.cpu().long()).float().mean().item()
    if per_class:
        result["class_accuracy_per_class"] = class_accuracies(predicted.cpu(), labels.cpu().long(), num_classes)
        result.update(class_figures(features, labels, ref["test_features"], ref["test_labels"], num_classes, seed))
    if floor:
        result["floor"] = {**ref["floor"], **(ref["class_floor"] if per_class else {})}
    return result


def reference(evaluator, dataset: str, data_dir: str | None, seed: int, n_floor: int,
              counts: tuple[int, ...] | None = None) -> dict:
    """What every judgement of `dataset` compares against: the test split's features and
    k-NN radii, the floor (figures of n_floor real training images) and, given `counts`, the
    per-class floor (class_figures of as many real training images of each class). They cost
    more than judging the samples and depend only on the evaluator, the data and the seed,
    so they are cached beside the evaluator under a hash of these; floors by n and by counts.
    What is missing is computed, from one read of the train split, and written once."""
    test = load_dataset(dataset, split="test", data_dir=data_dir, seed=seed)
    path = reference_path(evaluator_cache(), "evaluator", dataset, seed, evaluator, test.images, test.labels)
    ref = read_reference(path, REFERENCE_KEYS)
    if ref is None:
        test_features, _, _ = embed(evaluator, test.images)
        ref = {"test_features": test_features, "test_labels": test.labels, "test_radii": knn_radii(test_features),
               "floors": {}}
        changed = True
    else:
        changed = False
    class_floors = ref.setdefault("class_floors", {})
    key = ",".join(map(str, counts)) if counts is not None else None
    wants_floor = bool(n_floor) and n_floor not in ref["floors"]
    wants_class_floor = key is not None and key not in class_floors
    if wants_floor or wants_class_floor:
        real = load_dataset(dataset, split="train", data_dir=data_dir, seed=seed)
        order = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))
        if wants_floor:
            ref["floors"][n_floor] = figures(*embed(evaluator, real.images[order[:n_floor]]), ref["test_features"],
                                             ref["test_radii"], classes_of(dataset), seed)
        if wants_class_floor:
            pick = torch.cat([order[real.labels[order] == k][:n] for k, n in enumerate(counts)])
            features, _, _ = embed(evaluator, real.images[pick])
            class_floors[key] = class_figures(features, real.labels[pick], ref["test_features"], ref["test_labels"],
                                              len(counts), seed)
        changed = True
    if changed:
        write_reference(path, ref)
    return {**ref, "floor": ref["floors"].get(n_floor), "class_floor": class_floors.get(key)}


def judge_with_evaluator(images: torch.Tensor, request: Request) -> dict:
    if request.reference or request.feature_weights:
        raise UserError("--reference and --feature-weights go with --features inception; gankit's evaluator "
                        "judges against the dataset's own test split")
    return score_samples(images.contiguous(), request.dataset, request.data_dir, seed=request.seed,
                         progress=request.progress, labels=request.labels)


def spread_line(result: dict) -> str:
    """What the classes' spreads say, in one line: the near copies flagged, or their range."""
    spreads = [s for s in result["spread_per_class"] if s is not None]
    flagged = result["near_copy_classes"]
    if flagged:
        shown = ", ".join(f"{k} ({result['spread_per_class'][k]:.2f})" for k in flagged)
        return (f"  near copies in classes {shown}: their samples lie closer together than "
                f"{SPREAD_FLAG:g} of the distance between real digits of the class")
    return f"  (spread within each class: {min(spreads):.2f} to {max(spreads):.2f} of real digits'; no near copies)"


def evaluator_header(result: dict, dataset: str) -> str:
    return f"{result['n']} samples of {dataset} against its test split; floor: {result['n']} real training images"


def evaluator_footer(result: dict) -> str:
    lines = []
    if "class_accuracy" in result:  # a conditional run: did each sample come out as its class?
        lines.append(f"  {'class accuracy':<18}{result['class_accuracy']:>12.3f}{'-':>12}")
        shares = result.get("class_accuracy_per_class") or []
        asked = [(share, k) for k, share in enumerate(shares) if share is not None]
        if asked:
            share, k = min(asked)
            lines.append(f"  (the class least often drawn as asked: {k}, {share:.3f})")
    if result.get("intra_fid") is not None:  # and did it draw each class in its variety?
        floor = result.get("floor", {}).get("intra_fid")
        lines.append(f"  {'intra-class FID':<18}{result['intra_fid']:>12.3f}"
                     f"{'-' if floor is None else format(floor, '.3f'):>12}")
        lines.append(spread_line(result))
    lines.append(f"  (modes of {result['num_classes']}; KID ± {result['kid_std']:.5f})")
    return "\n".join(lines)

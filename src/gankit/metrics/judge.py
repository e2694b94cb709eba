"""How good are the samples? Every figure of `gankit eval`, next to the real-data floor:
judging a run or a file with either feature set (FEATURES, the table of `--features`).

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
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from gankit import sampling
from gankit.data.folder import load_folder
from gankit.errors import UserError
from gankit.files import write_atomic
from gankit.metrics.evaluator import classify, load_or_train_evaluator, mode_coverage
from gankit.metrics.inception import (
    MIN_SAMPLES,
    check_images,
    default_cache_dir,
    inception_judge,
    inception_weights,
    load_feature_network,
)
from gankit.metrics.quality import classifier_score, fid, kid, knn_radii, precision_recall
from gankit.paths import default_data_root
from gankit.registry import dataset_spec, judged_datasets, load_dataset
from gankit.runs import load_split, pick_device

REFERENCE_VERSION = 1  # bump when the reference figures are computed differently


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


@dataclass
class Request:
    """What a judgement of samples needs besides the images (gankit eval's flags, a run's facts)."""

    dataset: str                          # the data the samples imitate
    data_dir: str | None = None
    seed: int = 0
    progress: bool = True
    labels: torch.Tensor | None = None    # the classes a conditional generator was asked for
    reference: str | None = None          # --reference DIR: a folder of real images (inception)
    feature_weights: str | None = None    # --feature-weights PATH (inception)
    device: str = "cpu"
    config: object = None                 # the run's TrainConfig, when judging a run


class Judge(NamedTuple):
    """A way of judging samples (an entry of FEATURES): `judge(images, request)`
    gives the figures and "floor"; `rows` are (label, key, format) of `gankit eval`'s table;
    `header(result, dataset)` its first line and `footer(result)` the lines under it."""

    judge: Callable[[torch.Tensor, Request], dict]
    rows: tuple[tuple[str, str, str], ...]
    header: Callable[[dict, str], str]
    footer: Callable[[dict], str]


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


EVALUATOR = Judge(judge_with_evaluator, (
    ("FID", "fid", ".3f"), ("KID", "kid", ".5f"), ("classifier score", "classifier_score", ".3f"),
    ("precision", "precision", ".3f"), ("recall", "recall", ".3f"), ("modes", "modes", "d"),
    ("KL to uniform", "kl_to_uniform", ".4f")), evaluator_header, evaluator_footer)


def reference_for(request, size: int, channels: int) -> tuple[Callable[[], Tensor], str]:
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


def judge_with_inception(images: Tensor, request) -> dict:
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


# How `gankit eval --features NAME` judges samples: whose features FID, KID, precision and
# recall are computed on, and against which real images (docs/usage.md says when each fits).
FEATURES: dict[str, Judge] = {
    # gankit's own MNIST classifier (metrics/evaluator.py): offline, MNIST-like data; also
    # modes, KL to uniform and the classifier score.
    "evaluator": EVALUATOR,
    # Inception-v3 (metrics/inception.py): the figures papers quote, for any images; needs
    # the network's weights file.
    "inception": Judge(judge_with_inception, (
        ("FID", "fid", ".3f"), ("KID", "kid", ".5f"), ("Inception Score", "inception_score", ".3f"),
        ("precision", "precision", ".3f"), ("recall", "recall", ".3f")), inception_header, inception_footer),
}
DEFAULT_FEATURES = "evaluator"


def feature_judge(name: str) -> Judge:
    try:
        return FEATURES[name]
    except KeyError:
        raise UserError(f"unknown --features '{name}'; use one of: {', '.join(FEATURES)}") from None


def judge_run(loaded, *, n: int, seed: int = 0, features: str = "evaluator", progress: bool = True,
              **request) -> dict:
    """n fresh samples of a loaded run (gankit.runs.load_run) judged with `features` (an entry
    of FEATURES), against the run's own dataset unless the request's `dataset`
    says otherwise: what `gankit eval RUN` and gankit.Run.evaluate report. A conditional run
    draws the classes in turn and is also scored on its class accuracy."""
    config, task, _, native = loaded
    images = sampling.generate(task, n, seed=seed, native=native)
    given = {k: v for k, v in request.items() if v is not None}  # dataset, data_dir, reference, ...
    request = Request(**{"dataset": config.dataset, "data_dir": config.data_dir, **given}, seed=seed,
                      progress=progress, labels=sampling.sample_labels(task, n), config=config)
    return judge_with(features, images, request)


def judge_with(features: str, images: torch.Tensor, request: Request) -> dict:
    """The figures of `features`' judge, with "features" saying which."""
    return {"features": features, **feature_judge(features).judge(images, request)}


def reference(evaluator, dataset: str, data_dir: str | None, seed: int, n_floor: int) -> dict:
    """What every judgement of `dataset` compares against: the test split's features and
    k-NN radii, and the floor (figures of n_floor real training images). They cost more
    than judging the samples and depend only on the evaluator, the data and the seed, so
    they are cached beside the evaluator under a hash of these; floors by n."""
    test = load_dataset(dataset, split="test", data_dir=data_dir, seed=seed)
    h = hashlib.sha256(f"{REFERENCE_VERSION}\0{dataset}\0{seed}\0".encode())
    for tensor in list(evaluator.state_dict().values()) + [test.images, test.labels]:
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    path = evaluator_cache() / f"reference-{h.hexdigest()[:24]}.pt"
    ref = None
    if path.is_file():
        try:
            ref = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # unreadable: computed afresh and rewritten below
            pass
    if ref is not None and (not n_floor or n_floor in ref["floors"]):
        return {**ref, "floor": ref["floors"].get(n_floor)}
    num_classes = classes_of(dataset)
    if ref is None:
        test_features, _, _ = embed(evaluator, test.images)
        ref = {"test_features": test_features, "test_radii": knn_radii(test_features), "floors": {}}
    if n_floor:
        real = load_dataset(dataset, split="train", data_dir=data_dir, seed=seed)
        pick = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))[:n_floor]
        ref["floors"][n_floor] = figures(*embed(evaluator, real.images[pick]), ref["test_features"],
                                         ref["test_radii"], num_classes, seed)
    buffer = io.BytesIO()
    torch.save(ref, buffer)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, buffer.getvalue())
    except OSError:  # a read-only cache only costs time
        pass
    return {**ref, "floor": ref["floors"].get(n_floor)}

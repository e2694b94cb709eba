"""How good are the samples? The judges of `gankit eval` and their table: a run or a file
judged with either feature set (FEATURES, the table of `--features`).

  judge_run(loaded run, n, features) -> n fresh samples -> judge_with(features, images, Request)
  judge_with -> FEATURES[features].judge(images, request) -> the figures, "floor" and "features"

Each judge lives in its own module: gankit's evaluator in metrics/judge_evaluator.py,
Inception-v3 in metrics/judge_inception.py; what they ask besides the images is
metrics/request.py's Request, and both cache their reference in metrics/reference.py.
Here each becomes a `Judge`: its function, the rows of `gankit eval`'s table, its header
and footer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

import torch

from gankit import sampling
from gankit.errors import UserError
from gankit.metrics.judge_evaluator import evaluator_footer, evaluator_header, judge_with_evaluator
from gankit.metrics.judge_inception import inception_footer, inception_header, judge_with_inception
from gankit.metrics.request import Request

__all__ = ["Judge", "FEATURES", "DEFAULT_FEATURES", "feature_judge", "judge_run", "judge_with"]


class Judge(NamedTuple):
    """A way of judging samples (an entry of FEATURES): `judge(images, request)`
    gives the figures and "floor"; `rows` are (label, key, format) of `gankit eval`'s table;
    `header(result, dataset)` its first line and `footer(result)` the lines under it."""

    judge: Callable[[torch.Tensor, Request], dict]
    rows: tuple[tuple[str, str, str], ...]
    header: Callable[[dict, str], str]
    footer: Callable[[dict], str]


# How `gankit eval --features NAME` judges samples: whose features FID, KID, precision and
# recall are computed on, and against which real images (docs/usage.md says when each fits).
FEATURES: dict[str, Judge] = {
    # gankit's own MNIST classifier (metrics/evaluator.py): offline, MNIST-like data; also
    # modes, KL to uniform and the classifier score.
    "evaluator": Judge(judge_with_evaluator, (
        ("FID", "fid", ".3f"), ("KID", "kid", ".5f"), ("classifier score", "classifier_score", ".3f"),
        ("precision", "precision", ".3f"), ("recall", "recall", ".3f"), ("modes", "modes", "d"),
        ("KL to uniform", "kl_to_uniform", ".4f")), evaluator_header, evaluator_footer),
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
    started = time.perf_counter()
    images = sampling.generate(task, n, seed=seed, native=native)
    seconds = time.perf_counter() - started
    given = {k: v for k, v in request.items() if v is not None}  # dataset, data_dir, reference, ...
    request = Request(**{"dataset": config.dataset, "data_dir": config.data_dir, **given}, seed=seed,
                      progress=progress, labels=sampling.sample_labels(task, n), config=config)
    # How fast the run draws images (a flow pays its solver's network evaluations for each).
    speed = {"images_per_second": n / max(seconds, 1e-9), "seconds": seconds, "device": str(task.device),
             "how": type(task).sampling_summary(config)}
    return {**judge_with(features, images, request), "sampling": speed}


def judge_with(features: str, images: torch.Tensor, request: Request) -> dict:
    """The figures of `features`' judge, with "features" saying which."""
    return {"features": features, **feature_judge(features).judge(images, request)}

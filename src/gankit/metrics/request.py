"""What a judgement of samples needs besides the images: `Request`, built by `gankit eval`
(its flags), gankit.Run.evaluate and the training loop (a run's facts), and read by both
judges (metrics/judge_evaluator.py, metrics/judge_inception.py). A plain dataclass in its
own module so that the judges and the table that holds them (metrics/judge.py) can all
import it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass

import torch


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

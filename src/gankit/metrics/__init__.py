"""Sample-quality metrics: an independent MNIST evaluator and mode coverage."""

from gankit.metrics.evaluator import (
    ARCH_VERSION,
    FEATURE_DIM,
    NUM_CLASSES,
    Evaluator,
    class_histogram,
    classify,
    evaluator_cache_key,
    load_or_train_evaluator,
    mode_coverage,
    prepare,
    train_evaluator,
)

__all__ = [
    "ARCH_VERSION",
    "FEATURE_DIM",
    "NUM_CLASSES",
    "Evaluator",
    "class_histogram",
    "classify",
    "evaluator_cache_key",
    "load_or_train_evaluator",
    "mode_coverage",
    "prepare",
    "train_evaluator",
]

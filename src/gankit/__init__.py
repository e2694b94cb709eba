"""gankit: train, sample and judge image generative models, starting with the tutorial's DCGAN."""

__version__ = "0.1.0"

from gankit.config import TrainConfig  # noqa: E402
from gankit.errors import Diverged, GankitError, Stopped, UserError  # noqa: E402
from gankit.training.gan import RECIPES  # noqa: E402

__all__ = ["__version__", "RECIPES", "Diverged", "GankitError", "Stopped", "TrainConfig", "UserError"]

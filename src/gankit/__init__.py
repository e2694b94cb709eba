"""gankit: train, sample and judge image generative models, starting with the tutorial's DCGAN."""

__version__ = "0.1.0"

from gankit.config import RECIPES, TrainConfig  # noqa: E402
from gankit.errors import UserError  # noqa: E402

__all__ = ["__version__", "RECIPES", "TrainConfig", "UserError"]

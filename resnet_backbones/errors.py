"""The error types of resnet_backbones, in one leaf module that imports nothing of the package.

Every layer raises these (the core, ``modeling`` and ``weights``, included), so no layer imports a
higher one for its errors. ``train_net`` maps them to exit status 2 with a one-line message.
"""

__all__ = ["ConfigError", "WeightsError"]


class ConfigError(ValueError):
    """A config that names an unknown key, a missing file or a value an engine cannot honour."""


class WeightsError(ValueError):
    """A weight file that cannot be read, or that does not fit the model it is loaded into."""

"""Exception hierarchy. Every error anyedit raises on bad input is an :class:`AnyEditError`.

Each class also subclasses the matching built-in so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class AnyEditError(Exception):
    """Base class of every anyedit error."""


class ConfigError(AnyEditError, ValueError):
    """A configuration value is invalid (the message names the field and the value)."""


class RequestError(AnyEditError, ValueError):
    """An edit request is unusable (empty answer, answer too long, ...)."""


class TokenizationError(RequestError):
    """A prompt or target tokenizes to something unusable."""


class UnsupportedArchitectureError(AnyEditError, ValueError):
    """The model's ``config.model_type`` has no architecture spec."""


class StatsError(AnyEditError, RuntimeError):
    """Covariance statistics could not be computed or loaded."""


class CorpusError(StatsError, ValueError):
    """A text corpus for statistics could not be read."""


class EditApplyError(AnyEditError, RuntimeError):
    """An edit cannot be applied or reverted (non-finite delta, already applied, ...)."""


class FingerprintMismatchError(EditApplyError, ValueError):
    """A saved edit does not belong to this model."""


class EditFormatError(AnyEditError, ValueError):
    """A saved edit directory is missing files or is corrupt."""


class ModelLoadError(AnyEditError, OSError):
    """A model or tokenizer could not be loaded."""

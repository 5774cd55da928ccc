"""anyedit: edit long-form knowledge in open-weight language models (AnyEdit, ICML 2025).

The public API is what this module exports; the subpackages hold the parts by role: ``model`` (architecture
specs, hooks, prompts, generation, loading, weight deltas), ``stats`` (corpora, covariance statistics,
preservation set), ``backends`` (the update methods), ``editing`` (chunking, value search, compute_edits, results,
presets), ``eval`` (datasets, metrics, locality, runner, reports) and ``cli``.
"""

from __future__ import annotations

import logging

from . import backends  # noqa: F401  (registers the built-in methods)
from ._version import __version__
from .backends import register_backend
from .backends.alphaedit import AlphaEditConfig
from .backends.ft import FtConfig
from .backends.memit import MemitConfig
from .backends.rome import RomeConfig
from .backends.unke import UnkeConfig
from .config import (
                     BackendConfig,
                     ChunkingConfig,
                     EditConfig,
                     PhrasingConfig,
                     PreserveConfig,
                     PromptConfig,
                     StatsConfig,
                     ValueConfig,
                     known_methods,
)
from .editing.compute import compute_edits, edit, prepare_statistics
from .editing.history import EditHistory
from .editing.presets import preset_config
from .editing.result import EditResult, load_edits
from .editing.stack import EditStack
from .editing.values import ValueCache
from .errors import (
                     AnyEditError,
                     ConfigError,
                     CorpusError,
                     EditApplyError,
                     EditFormatError,
                     FingerprintMismatchError,
                     ModelLoadError,
                     RequestError,
                     StatsError,
                     TokenizationError,
                     UnsupportedArchitectureError,
)
from .eval.locality import LocalityProbe
from .model.arch import ArchSpec, get_spec, register_arch
from .model.generation import generate
from .model.loading import load_model
from .stats.covariance import CovarianceCache
from .types import EditRequest

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    # editing
    "EditRequest", "compute_edits", "edit", "prepare_statistics", "EditResult", "load_edits", "EditHistory",
    "EditStack",
    "ValueCache", "CovarianceCache", "LocalityProbe", "generate", "load_model",
    # configuration
    "EditConfig", "ChunkingConfig", "ValueConfig", "StatsConfig", "PromptConfig", "PreserveConfig", "PhrasingConfig",
    "BackendConfig", "MemitConfig", "AlphaEditConfig", "UnkeConfig", "RomeConfig", "FtConfig", "preset_config",
    "known_methods", "register_backend", "ArchSpec", "get_spec", "register_arch",
    # errors
    "AnyEditError", "ConfigError", "RequestError", "TokenizationError", "UnsupportedArchitectureError", "StatsError",
    "CorpusError", "EditApplyError", "FingerprintMismatchError", "EditFormatError", "ModelLoadError",
    "__version__",
]

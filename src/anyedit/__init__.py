"""anyedit: edit long-form knowledge in open-weight language models (AnyEdit, ICML 2025)."""

from __future__ import annotations

import logging

__version__ = "0.1.0"

from . import backends  # noqa: E402,F401  (registers the built-in methods)
from .arch import ArchSpec, get_spec, register_arch  # noqa: E402
from .backends import register_backend  # noqa: E402
from .config import ChunkingConfig, EditConfig, PromptConfig, StatsConfig, ValueConfig  # noqa: E402
from .editing import compute_edits, edit, prepare_statistics  # noqa: E402
from .errors import AnyEditError  # noqa: E402
from .models import load_model  # noqa: E402
from .presets import preset_config  # noqa: E402
from .result import EditResult, load_edits  # noqa: E402
from .stats import CovarianceCache  # noqa: E402
from .generation import generate  # noqa: E402
from .history import EditHistory  # noqa: E402
from .types import EditRequest  # noqa: E402

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "AnyEditError", "ArchSpec", "ChunkingConfig", "CovarianceCache", "EditConfig", "EditRequest", "EditResult",
    "EditHistory",
    "PromptConfig", "StatsConfig", "ValueConfig", "__version__", "compute_edits", "edit", "generate", "get_spec",
    "load_edits", "load_model", "prepare_statistics", "preset_config", "register_arch", "register_backend",
]

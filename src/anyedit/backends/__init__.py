"""Update backends. Each module registers itself with one ``register_backend`` call."""

from . import memit  # noqa: F401  (registers "memit")
from .base import Backend, BackendOutput, EditContext, get_backend, register_backend

__all__ = ["Backend", "BackendOutput", "EditContext", "get_backend", "register_backend"]

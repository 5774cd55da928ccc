"""Update backends. Each module registers itself with one ``register_backend`` call."""

from . import alphaedit, ft, memit, rome, unke  # noqa: F401  (each registers itself)
from .base import Backend, BackendOutput, EditContext, get_backend, register_backend

__all__ = ["Backend", "BackendOutput", "EditContext", "get_backend", "register_backend"]

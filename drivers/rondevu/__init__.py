"""Rondevu for Python: the public, async API over the sans-IO core.

The client (``Rondevu``), the CLI and the runtime drivers grow here; the pure protocol
lives in `rondevu_core`, the wire models in `rondevu_schemas`.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]

"""fleetbench: benchmark LLM providers across a fleet of repositories.

The public surface is small: :mod:`fleetbench.plugin` (the plugin author's contract),
:mod:`fleetbench.hookspecs`, :mod:`fleetbench.records`, :mod:`fleetbench.errors`,
:mod:`fleetbench.testing` and the gRPC contract under ``protos/``. Everything in a
module whose name starts with ``_`` is private.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]

"""Where fleetbench keeps its state and caches, from the environment.

``FLEETBENCH_STATE_DIR`` (default ``$XDG_STATE_HOME/fleetbench``, i.e.
``~/.local/state/fleetbench``) holds the run store; ``FLEETBENCH_CACHE_DIR`` (default
``$XDG_CACHE_HOME/fleetbench``, i.e. ``~/.cache/fleetbench``) holds git checkouts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

STATE_ENV = "FLEETBENCH_STATE_DIR"
CACHE_ENV = "FLEETBENCH_CACHE_DIR"


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    """The folder of the run store."""
    return _dir(env, STATE_ENV, "XDG_STATE_HOME", Path(".local") / "state")


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """The folder of caches (git checkouts of repositories)."""
    return _dir(env, CACHE_ENV, "XDG_CACHE_HOME", Path(".cache"))


def _dir(env: Mapping[str, str] | None, own: str, xdg: str, fallback: Path) -> Path:
    env = os.environ if env is None else env
    if env.get(own):
        return Path(env[own]).expanduser()
    base = Path(env[xdg]).expanduser() if env.get(xdg) else Path.home() / fallback
    return base / "fleetbench"

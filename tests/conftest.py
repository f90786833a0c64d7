"""Shared fixtures: a small valid fleet on disk that tests mutate one fault at a time."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fleetbench._plugins import PluginHost, load_plugins

BASE_MANIFEST: dict[str, Any] = {
    "fleet_id": "test-fleet",
    "version": "1.0",
    "repositories": [
        {"repo_id": "api-gateway", "path": "repos/api", "adapter": "native",
         "scenarios": ["coding", "reasoning"]},
        {"repo_id": "user-service", "path": "repos/user", "adapter": "native",
         "scenarios": ["coding"]},
    ],
    "providers": [
        "simulated:fast",
        {"id": "simulated:slow", "concurrency": 2, "params": {"seed": 7}},
    ],
    "scenario_profiles": {
        "coding": {"dataset": "coding-tasks", "concurrency": 3,
                   "settings": {"temperature": 0.5}},
        "reasoning": {"dataset": "reasoning-tasks", "repeat": 2},
    },
    "output": {"base_dir": "./out"},
}

CODING: dict[str, Any] = {
    "name": "coding-tasks",
    "version": "1.0",
    "defaults": {"temperature": 0.1, "max_tokens": 100},
    "test_cases": [
        {"id": f"code-{i}", "category": "coding", "prompt": "Write {{lang}} code #" + str(i),
         "variables": {"lang": "Python"}, "expected": "def",
         "config": {"max_tokens": 50 + i}}
        for i in range(6)
    ],
}

REASONING: dict[str, Any] = {
    "name": "reasoning-tasks",
    "version": "1.0",
    "test_cases": [
        {"id": "r-1", "category": "logic", "prompt": "Is 2 > 1?", "expected": "yes"},
        {"id": "r-2", "category": "math", "prompt": "2 + 2 = ?"},
    ],
}


class FleetDir:
    """A fleet manifest plus repositories with datasets, written under a tmp folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.manifest: dict[str, Any] = copy.deepcopy(BASE_MANIFEST)
        self.datasets: dict[str, dict[str, Any]] = {
            "repos/api/datasets/coding-tasks.json": copy.deepcopy(CODING),
            "repos/api/datasets/reasoning-tasks.json": copy.deepcopy(REASONING),
            "repos/user/datasets/coding-tasks.json": copy.deepcopy(CODING),
        }

    def write(self, name: str = "fleet.json") -> Path:
        for relative, content in self.datasets.items():
            path = self.root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(content), encoding="utf-8")
        path = self.root / name
        path.write_text(json.dumps(self.manifest), encoding="utf-8")
        return path


@pytest.fixture
def fleet_dir(tmp_path: Path) -> FleetDir:
    return FleetDir(tmp_path)


@pytest.fixture(scope="session")
def host() -> PluginHost:
    return load_plugins(env={})


@pytest.fixture
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every cache and state folder at tmp so tests never touch $HOME."""
    for name in ("FLEETBENCH_STATE_DIR", "FLEETBENCH_CACHE_DIR", "XDG_CACHE_HOME",
                 "XDG_CONFIG_HOME", "PIP_CACHE_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "env" / name.lower()))
    return tmp_path / "env"


Mutation = Callable[[FleetDir], None]

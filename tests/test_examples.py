"""The shipped example manifests stay valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetbench._manifest import load_manifest_file
from fleetbench._plugins import PluginHost
from fleetbench._prepare import prepare_file

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
VENDOR_EXAMPLES = ["openai", "anthropic", "cohere", "gemini", "azure-openai"]


def test_quickstart_is_valid_and_plans_69_tests(host: PluginHost, tmp_path: Path) -> None:
    prepared = prepare_file(EXAMPLES / "quickstart.yaml", host=host, cache_dir=tmp_path)
    assert len(prepared.plan) == 69
    assert prepared.fleet.warnings == ()


@pytest.mark.parametrize("vendor", VENDOR_EXAMPLES)
def test_vendor_examples_are_well_formed(vendor: str) -> None:
    manifest = load_manifest_file(EXAMPLES / f"{vendor}.yaml")
    assert {p.provider for p in manifest.providers} == {vendor}
    assert all(p.api_key_env for p in manifest.providers)

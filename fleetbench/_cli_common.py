"""Small helpers shared by the local CLI (``_cli``) and the CLI over the API
(``_remote_cli``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click


def parse_labels(pairs: Sequence[str]) -> dict[str, str]:
    """``--label KEY=VALUE`` options as a dict; a malformed pair is a usage error."""
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--label")
        labels[key] = value
    return labels


def print_json(data: Any) -> None:
    """One JSON document on stdout, keys sorted, for scripts."""
    click.echo(json.dumps(data, indent=2, sort_keys=True))

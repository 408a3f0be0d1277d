"""Sources of people: CSV files, paged JSON APIs and SQL databases, all streamed.

`open_source()` is the one entry point: the engine hands it a source's stored config (see
README.md in this folder) and gets back something with `records()` and `describe()`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import httpx

from .base import Source, SourceConfigError, SourceError, SourceRecord
from .csv_source import CsvSource
from .http_json import HttpJsonSource
from .sql import SqlSource

__all__ = [
    "CsvSource",
    "HttpJsonSource",
    "Source",
    "SourceConfigError",
    "SourceError",
    "SourceRecord",
    "SqlSource",
    "environment_secret",
    "open_source",
]

KINDS = ("csv", "http", "sql")


def environment_secret(name: str) -> str:
    """Default secret look-up: the environment variable of that name."""
    try:
        value = os.environ[name]
    except KeyError:
        raise SourceConfigError(f"the secret {name!r} is not set (environment variable {name})") from None
    if not value:
        raise SourceConfigError(f"the secret {name!r} is empty: set the environment variable {name}")
    return value


def open_source(
    config: dict,
    *,
    secrets: Callable[[str], str] | None = None,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] | None = None,
) -> Source:
    """Build the source a config describes; nothing is read until `records()` is iterated.

    Secrets (an HTTP auth header value, an SQL DSN) are named in the config and fetched through
    `secrets(name)`, so the stored config can be shown and exported without leaking them.
    `transport` and `sleep` let tests put a fake server and a fake clock behind an HTTP source.
    """
    if not isinstance(config, dict):
        raise SourceConfigError("source config must be a JSON object")
    kind = config.get("kind")
    secrets = secrets or environment_secret
    if kind == "csv":
        return CsvSource.from_config(config)
    if kind == "http":
        return HttpJsonSource.from_config(config, secrets=secrets, transport=transport, sleep=sleep)
    if kind == "sql":
        return SqlSource.from_config(config, secrets=secrets)
    raise SourceConfigError(f"source config: 'kind' must be one of {', '.join(KINDS)}, not {kind!r}")

"""Form decoding the way PHP fills ``$_GET`` / ``$_POST``.

Two PHP behaviours matter to a web-service client and are reproduced here: bracketed names build
nested arrays (``users[0][username]=a``), and once ``max_input_vars`` variables have been read the
rest of the request is dropped without any error reaching the script.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

_CANONICAL_INT = re.compile(r"^(0|-?[1-9][0-9]*)$")


def parse(raw: str, max_input_vars: int) -> tuple[dict, int]:
    """Decode ``raw`` into PHP-style nested dicts; returns (variables, number of variables dropped)."""
    result: dict = {}
    pairs = [p for p in raw.split("&") if p]
    kept, dropped = pairs[:max_input_vars], max(0, len(pairs) - max_input_vars)
    for pair in kept:
        name, _, value = pair.partition("=")
        _register(result, unquote_plus(name), unquote_plus(value))
    return result, dropped


def _key(index: str) -> int | str:
    # PHP turns canonical decimal strings into integer keys; "01" stays a string.
    return int(index) if _CANONICAL_INT.match(index) else index


def _next_index(array: dict) -> int:
    ints = [k for k in array if isinstance(k, int)]
    return max(ints) + 1 if ints else 0


def _register(target: dict, name: str, value: str) -> None:
    name = name.lstrip(" ")
    open_at = name.find("[")
    if open_at > 0 and name.find("]", open_at) < 0:
        # An unmatched "[" is not an array marker; PHP turns it into "_".
        name = name[:open_at] + "_" + name[open_at + 1 :]
        open_at = -1
    base = name if open_at < 0 else name[:open_at]
    base = base.replace(" ", "_").replace(".", "_")
    if not base:
        return
    indices: list[str] = []
    rest = name[open_at:] if open_at >= 0 else ""
    while rest.startswith("["):
        close = rest.find("]")
        if close < 0:
            break
        indices.append(rest[1:close])
        rest = rest[close + 1 :]
    if not indices:
        target[base] = value
        return
    node = target
    key: int | str = base
    for index in indices:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
        key = _next_index(node) if index == "" else _key(index)
    node[key] = value


def count_variables(raw: str) -> int:
    """How many variables PHP would count in ``raw`` (before any limit)."""
    return len([p for p in raw.split("&") if p])

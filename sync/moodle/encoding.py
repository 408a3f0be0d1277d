"""PHP form encoding for Moodle web-service calls, and splitting calls under ``max_input_vars``.

Moodle reads parameters the way PHP parses a form: flat keys with brackets
(``users[0][customfields][0][type]=dept``). PHP silently drops every variable past
``max_input_vars``, so a batch that is too large loses records without any error. Everything
here counts variables exactly as they will be sent, so a call can be cut into requests that fit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import RequestTooLarge

# Sent with every request besides the call's own parameters.
FIXED_VARIABLES = 3  # wstoken, wsfunction, moodlewsrestformat


def encode_value(value: Any) -> str:
    """One scalar as Moodle expects it: booleans as 0/1 (``true`` fails validation)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _flatten_into(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if value is None:
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten_into(f"{prefix}[{key}]", item, out)
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
        for index, item in enumerate(value):
            _flatten_into(f"{prefix}[{index}]", item, out)
    else:
        out.append((prefix, encode_value(value)))


def flatten(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Turn nested dicts and lists into PHP bracket pairs, in order; ``None`` is left out.

    An empty list yields no pair at all, which is also what Moodle sees from a real form.
    """
    out: list[tuple[str, str]] = []
    for name, value in params.items():
        _flatten_into(str(name), value, out)
    return out


def count_variables(value: Any) -> int:
    """How many form variables ``value`` becomes (a scalar is one, ``None`` none)."""
    if value is None:
        return 0
    if isinstance(value, Mapping):
        return sum(count_variables(item) for item in value.values())
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return sum(count_variables(item) for item in value)
    return 1


def headroom(max_input_vars: int) -> int:
    """Variables kept spare below the site's limit: 10 %, at least 20.

    The limit we are told may be stale or counted differently by a proxy; the margin is cheap.
    """
    return max(20, math.ceil(max_input_vars * 0.10))


def request_budget(max_input_vars: int) -> int:
    """Variables one request may carry, the fixed ones included."""
    return max_input_vars - headroom(max_input_vars)


def split_params(
    params: Mapping[str, Any], list_param: str | None, max_input_vars: int, *, function: str = ""
) -> list[dict[str, Any]]:
    """Cut ``params`` into requests that each stay within the budget, splitting ``list_param``.

    Items keep their order and none is dropped or repeated. Raises ``RequestTooLarge`` when a
    single item, or the parameters besides the list, cannot fit in one request.
    """
    budget = request_budget(max_input_vars)
    items = params.get(list_param) if list_param else None
    if not list_param or not isinstance(items, Sequence) or isinstance(items, str | bytes) or not items:
        total = FIXED_VARIABLES + count_variables(params)
        if total > budget:
            raise RequestTooLarge(
                f"{function or 'call'} needs {total} form variables; with max_input_vars={max_input_vars} "
                f"a request may carry at most {budget}"
            )
        return [dict(params)]

    rest = {name: value for name, value in params.items() if name != list_param}
    base = FIXED_VARIABLES + count_variables(rest)
    room = budget - base
    chunks: list[list[Any]] = []
    current: list[Any] = []
    used = 0
    for index, item in enumerate(items):
        size = count_variables(item)
        if size > room:
            raise RequestTooLarge(
                f"{function or 'call'}: item {index} of {list_param!r} alone needs {size} form variables; "
                f"a request may carry {room} besides the other parameters (max_input_vars={max_input_vars})"
            )
        if current and used + size > room:
            chunks.append(current)
            current, used = [], 0
        current.append(item)
        used += size
    chunks.append(current)
    return [
        {name: chunk if name == list_param else value for name, value in params.items()} for chunk in chunks
    ]

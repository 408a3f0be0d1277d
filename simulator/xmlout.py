"""The REST server's XML answer, used when ``moodlewsrestformat`` is missing.

Moodle renders from the function's return description; without one here, the value's Python type
decides: dict -> SINGLE/KEY, list -> MULTIPLE, scalar -> VALUE.
"""

from __future__ import annotations

from html import escape
from typing import Any

from simulator.errors import MoodleError

_HEAD = '<?xml version="1.0" encoding="UTF-8" ?>\n'


def _value(value: Any) -> str:
    if value is None:
        return '<VALUE null="null"/>\n'
    if isinstance(value, dict):
        keys = "".join(f'<KEY name="{escape(str(k))}">{_value(v)}</KEY>\n' for k, v in value.items())
        return f"<SINGLE>\n{keys}</SINGLE>\n"
    if isinstance(value, list):
        return "<MULTIPLE>\n" + "".join(_value(v) for v in value) + "</MULTIPLE>\n"
    if isinstance(value, bool):
        value = int(value)
    return f"<VALUE>{escape(str(value), quote=False)}</VALUE>\n"


def response(result: Any) -> str:
    body = "" if result is None else _value(result)
    return f"{_HEAD}<RESPONSE>\n{body}</RESPONSE>\n"


def error(exc: MoodleError, debug: bool | str) -> str:
    data = exc.as_dict(debug)
    parts = [
        f'<EXCEPTION class="{escape(data["exception"])}">\n',
        f"<ERRORCODE>{escape(data['errorcode'], quote=False)}</ERRORCODE>\n",
        f"<MESSAGE>{escape(data['message'], quote=False)}</MESSAGE>\n",
    ]
    if "debuginfo" in data:
        parts.append(f"<DEBUGINFO>{escape(data['debuginfo'], quote=False)}</DEBUGINFO>\n")
    parts.append("</EXCEPTION>\n")
    return _HEAD + "".join(parts)

"""What every source yields and how it fails.

A source is read once per run and may hold hundreds of thousands of people, so the contract is a
stream: `records()` is a generator that never holds more than a page or a row of data at a time.
A row that cannot be read is still yielded (with `error` set) so the run can report it by line and
nothing disappears silently; only a failure of the whole source raises `SourceError`.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class SourceRecord:
    """One person as the source describes them, before mapping.

    `origin` says where the row was ("line 17", "page 3 item 5", "row 12") so an operator can find it.
    `error` is set when the row could not be read; `fields` then holds whatever could be salvaged.
    """

    external_id: str
    fields: dict[str, str]
    origin: str
    error: str | None = None


class SourceError(Exception):
    """The whole source failed (file missing, authentication refused, SQL error).

    Messages are shown to operators and stored in run rows, so they never contain a secret."""


class SourceConfigError(ValueError):
    """A source configuration is invalid; the message names the offending key."""


@runtime_checkable
class Source(Protocol):
    def records(self) -> Iterator[SourceRecord]: ...

    def describe(self) -> str: ...


def scalar_to_str(value: object) -> str:
    """Render a JSON or SQL scalar the way Moodle expects to receive it.

    Booleans become "1"/"0" because Moodle rejects "true" for its boolean parameters; None becomes ""
    so a cleared value in the source clears the field in Moodle too.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        # 1234.0 from a JSON number or a float column is the id 1234, not "1234.0".
        return str(int(value))
    if isinstance(value, decimal.Decimal):
        return format(value.normalize(), "f") if value == value.to_integral_value() else str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return str(value)


# Keys any source config may carry without being read by the source: the dispatcher's own key and
# free-text notes an operator may keep in the stored JSON.
COMMON_KEYS = frozenset({"kind", "name", "description"})
_MISSING = object()


class ConfigReader:
    """Typed access to one source's config that names the key in every complaint.

    Unknown keys are refused: a misspelt "delimeter" silently ignored would cost an operator an hour.
    """

    def __init__(self, config: dict, kind: str, known: set[str]) -> None:
        if not isinstance(config, dict):
            raise SourceConfigError(f"{kind} source config must be a JSON object")
        unknown = sorted(set(config) - set(known) - COMMON_KEYS)
        if unknown:
            raise SourceConfigError(
                f"{kind} source config: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})"
            )
        self.config = config
        self.kind = kind

    def _get(self, key: str, default: object) -> object:
        value = self.config.get(key, default)
        if value is _MISSING:
            raise SourceConfigError(f"{self.kind} source config: {key!r} is required")
        return value

    def text(self, key: str, default: object = _MISSING, *, allow_empty: bool = False) -> str | None:
        value = self._get(key, default)
        if value is None and default is None:
            return None
        if not isinstance(value, str) or (not value and not allow_empty):
            raise SourceConfigError(f"{self.kind} source config: {key!r} must be a non-empty string")
        return value

    def integer(self, key: str, default: int, *, minimum: int = 0) -> int:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise SourceConfigError(f"{self.kind} source config: {key!r} must be an integer >= {minimum}")
        return value

    def number(self, key: str, default: float) -> float:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise SourceConfigError(f"{self.kind} source config: {key!r} must be a positive number")
        return float(value)

    def text_dict(self, key: str) -> dict[str, str]:
        value = self._get(key, {})
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str | int) for k, v in value.items()
        ):
            raise SourceConfigError(f"{self.kind} source config: {key!r} must be an object of strings")
        return {k: str(v) for k, v in value.items()}

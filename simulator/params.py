"""Parameter descriptions and validation in the manner of Moodle's external API.

Moodle validates a call's parameters against the function's description before running it:
required keys must be there, unknown keys are refused, scalars are cleaned with their PARAM_* type
and any change made by cleaning is an error (so ``Alice`` is not silently lowercased, it is
refused). Every failure is ``invalidparameter`` with the reason only in debuginfo.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from simulator.errors import MoodleError, invalid_parameter

REQUIRED, OPTIONAL, DEFAULT = "required", "optional", "default"


_EMAIL = re.compile(
    r"^[-!#$%&'*+/0-9=?A-Z^_`a-z{|}~]+(\.[-!#$%&'*+/0-9=?A-Z^_`a-z{|}~]+)*"
    r"@[-!#$%&'*+/0-9=?A-Z^_`a-z{|}~]+\.[-!#$%&'*+./0-9=?A-Z^_`a-z{|}~]+$"
)
_INT = re.compile(r"^(0|-?[1-9][0-9]*)$")
# PHP's strip_tags(): any "<" not followed by white space opens a tag, which runs to ">" or to the end.
_TAG = re.compile(r"<(?!\s)[^>]*>?")
_PLUGIN = re.compile(r"^[a-z][a-z0-9_]*[a-z0-9]$")
_TIMEZONE = re.compile(
    r"^(([+-]?(0?[0-9](\.[50])?|1[0-3](\.0)?|1[0-2]\.5))|(99)|[A-Za-z0-9]+(/?[A-Za-z_-])+)$"
)


def is_valid_email(value: str) -> bool:
    return bool(_EMAIL.match(value))


def clean_username(value: str) -> str:
    """PARAM_USERNAME: no spaces, lowercase, only ``a-z0-9-.@_`` (extended characters off)."""
    value = value.replace(" ", "").strip().lower()
    return re.sub(r"[^-.@_a-z0-9]", "", value)


def _clean(value: str, ptype: str, langs: tuple[str, ...]) -> Any:
    """Return the cleaned value Moodle would compare against what was sent."""
    if ptype == "int":
        return int(value) if _INT.match(value) else None
    if ptype == "bool":
        return None
    if ptype in ("notags", "text"):
        return _TAG.sub("", value)
    if ptype == "username":
        return clean_username(value)
    if ptype == "email":
        return value if value == "" or is_valid_email(value) else ""
    if ptype == "alpha":
        return re.sub(r"[^a-zA-Z]", "", value)
    if ptype == "alphanumext":
        return re.sub(r"[^a-zA-Z0-9_-]", "", value)
    if ptype == "plugin":
        return value if _PLUGIN.match(value) and "__" not in value else ""
    if ptype == "lang":
        return value if value in langs else ""  # PARAM_LANG: only an installed language pack
    if ptype == "timezone":
        return value if _TIMEZONE.match(value) else ""
    return value  # raw


@dataclass(frozen=True)
class Value:
    """external_value: one scalar of a PARAM_* type."""

    ptype: str
    presence: str = REQUIRED
    default: Any = None


@dataclass(frozen=True)
class Single:
    """external_single_structure: a dict with known keys only."""

    keys: dict[str, Any]
    presence: str = REQUIRED
    default: Any = None


@dataclass(frozen=True)
class Multiple:
    """external_multiple_structure: a PHP array whose keys are ignored, read in order."""

    content: Any
    presence: str = REQUIRED
    default: Any = field(default=None)


def validate(desc: Any, params: Any, langs: tuple[str, ...] = ("en",)) -> Any:
    """Validate and convert ``params`` (PHP-decoded form values); raises ``invalidparameter``. `langs` are
    the site's installed language packs."""
    if isinstance(desc, Value):
        return _validate_value(desc, params, langs)
    if isinstance(desc, Multiple):
        if not isinstance(params, dict):
            raise invalid_parameter(f"Only arrays accepted. The bad value is: '{params}'")
        return [validate(desc.content, item, langs) for item in params.values()]
    if not isinstance(params, dict):
        raise invalid_parameter(f"Only arrays accepted. The bad value is: '{params}'")
    remaining = dict(params)
    result: dict[str, Any] = {}
    for key, sub in desc.keys.items():
        if key not in remaining:
            if sub.presence == REQUIRED:
                raise invalid_parameter(f"Missing required key in single structure: {key}")
            if sub.presence == DEFAULT:
                result[key] = sub.default
            continue
        try:
            result[key] = validate(sub, remaining.pop(key), langs)
        except MoodleError as exc:
            raise invalid_parameter(f"{key} => {exc.message}: {exc.debuginfo}") from None
    if remaining:
        names = ", ".join(str(k) for k in remaining)
        raise invalid_parameter(f"Unexpected keys ({names}) detected in parameter array.")
    return result


def _validate_value(desc: Value, value: Any, langs: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        raise invalid_parameter("Scalar type expected, array or object received.")
    if desc.ptype == "bool" and value in ("0", "1"):
        return value == "1"
    cleaned = _clean(value, desc.ptype, langs)
    if cleaned is None or str(cleaned) != value:
        raise invalid_parameter(
            f'Invalid external api parameter: the value is "{value}", '
            f'the server was expecting "{desc.ptype}" type'
        )
    return cleaned

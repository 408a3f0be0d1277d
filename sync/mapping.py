"""Turning a source record into the Moodle user it should be, and deciding what to send.

Everything Moodle would refuse is caught here, before a call is made: Moodle answers a bad username
or email with a bare `invalidparameter` for the whole batch (debuginfo is off on production sites),
so a record it would reject must be named by us, with its line and field, and kept out of the batch.

The hash of the normalised payload is what makes incremental runs cheap: an unchanged person
hashes the same from one run to the next, whatever the source's column order or whitespace.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import re
import unicodedata
import zoneinfo
from collections.abc import Callable
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass
from functools import cache
from typing import Any

from sync.membership_rules import Desired, MembershipConfigError, MembershipRules, memberships_hash
from sync.sources.base import SourceRecord

MOODLE_FIELDS = (
    "username", "email", "firstname", "lastname", "idnumber", "auth", "suspended", "department",
    "institution", "city", "country", "lang", "timezone", "phone1", "address",
)  # fmt: skip
REQUIRED_FIELDS = ("username", "firstname", "lastname", "email")
MATCH_KEYS = ("idnumber", "username", "email")
UPDATE_POLICIES = ("always", "create")
# Column sizes of Moodle's user table: a longer value fails the insert as a dmlwriteexception,
# which would take a whole batch down with it.
MAX_LENGTHS = {
    "username": 100, "email": 100, "firstname": 100, "lastname": 100, "idnumber": 255, "auth": 20,
    "department": 255, "institution": 255, "city": 120, "lang": 30, "timezone": 100, "phone1": 20,
    "address": 255,
}  # fmt: skip
# Cleaned of HTML tags by Moodle (PARAM_NOTAGS, PARAM_TEXT); a value that has one is refused.
TEXT_FIELDS = ("firstname", "lastname", "department", "institution", "city", "address", "phone1")
# PHP's strip_tags(): any "<" not followed by white space opens a tag, which runs to ">" or to the end.
_TAG = re.compile(r"<(?!\s)[^>]*>?")
# Sent only when they have a value: an empty one would be refused (auth) or would replace the
# site's default (lang, timezone) with nothing.
_OMIT_WHEN_EMPTY = frozenset({"auth", "lang", "timezone"})
CUSTOMFIELD_PREFIX = "profile_field_"

TRANSFORMS: dict[str, Callable[[str], str]] = {
    "strip": str.strip,
    "lowercase": str.lower,
    "uppercase": str.upper,
    "title": str.title,
    "collapse_spaces": lambda value: " ".join(value.split()),
    # Some systems export decomposed accents (e + U+0301); Moodle compares bytes, so NFC avoids
    # a perpetual "changed" for the same visible name.
    "nfc": lambda value: unicodedata.normalize("NFC", value),
}

_TRUE = frozenset({"1", "true", "yes", "y"})
_FALSE = frozenset({"0", "false", "no", "n", ""})
_USERNAME_ALLOWED = re.compile(r"[-.@_a-z0-9]")
_AUTH_PLUGIN = re.compile(r"^[a-z][a-z0-9_]*$")
_SHORTNAME = re.compile(r"^[A-Za-z0-9_]+$")
_LANG = re.compile(r"^[a-z]{2,3}(?:_[a-z0-9]+)*$")
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LOCAL_PART = re.compile(rf'^(?:{_ATEXT}+(?:\.{_ATEXT}+)*|"(?:[^"\\\r\n]|\\[^\r\n])*")$')
_LABEL = re.compile(r"^(?:xn--)?[A-Za-z0-9]+(?:-+[A-Za-z0-9]+)*$")
_TLD = re.compile(r"^(?:[A-Za-z][A-Za-z0-9]*|xn--[A-Za-z0-9]+)(?:-+[A-Za-z0-9]+)*$")
_ISO_3166_ALPHA2 = """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS
    BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG
    EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR
    HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR
    LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG
    NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE
    SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA
    UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW"""
ISO_COUNTRIES = frozenset(_ISO_3166_ALPHA2.split())


class MappingConfigError(ValueError):
    """A mapping configuration is invalid; the message names the offending key."""


@dataclass(frozen=True)
class FieldSpec:
    """Where one Moodle field's value comes from and when it may be overwritten."""

    source: str | None
    constant: str | None
    transforms: tuple[str, ...]
    update: str
    default: str | None = None
    # A value map, as written in the config (source value -> value to send); looked up through
    # `lookup`, whose keys are trimmed and case-folded. None when the field has no map.
    values: tuple[tuple[str, str], ...] | None = None
    lookup: dict[str, str] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def value(self, fields: MappingABC[str, str], field: str = "") -> str:
        """The value for this field from a record's columns; with a value map, the mapped value.

        A value the map does not name takes the default, or makes the record invalid (_Invalid,
        naming `field`): sending an unknown HR status as-is would be a guess."""
        value = self.constant if self.constant is not None else fields.get(self.source or "", "")
        for name in self.transforms:
            value = TRANSFORMS[name](value)
        if self.values is not None:
            mapped = self.lookup.get(_map_key(value))
            if mapped is not None:
                return mapped
            if self.default is not None:
                return self.default
            known = ", ".join(key or '""' for key, _ in self.values)
            raise _Invalid(
                field, f'{self.source} "{_short(value)}" is not in the value map of {field} ({known})'
            )
        if not value and self.default is not None:
            value = self.default
        return value

    def origin(self) -> str:
        where = f"constant {self.constant!r}" if self.constant is not None else f"column {self.source!r}"
        if self.values is None:
            return where
        pairs = ", ".join(f"{key!r} → {value!r}" for key, value in self.values)
        otherwise = f"otherwise {self.default!r}" if self.default is not None else "anything else is refused"
        return f"{where} through the value map {pairs}; {otherwise}"


@dataclass(frozen=True)
class MappedRecord:
    """A person ready to send: the normalised Moodle payload and its hash."""

    external_id: str
    payload: dict[str, Any]
    create_only: frozenset[str]
    hash: str
    origin: str = ""
    # The courses and cohorts the source puts the person in, hashed apart from the user's fields.
    memberships: tuple[Desired, ...] = ()
    membership_hash: str = ""

    @classmethod
    def staged(cls, record: Any) -> MappedRecord:
        """The person as a run staged them (a SyncRecord's payload, hash and create-only fields)."""
        return cls(
            external_id=record.external_id,
            payload=record.payload,
            create_only=frozenset(record.create_only),
            hash=record.payload_hash,
        )


@dataclass(frozen=True)
class RecordProblem:
    """A record that must not be sent, with the field at fault and a message an operator can act on."""

    external_id: str
    origin: str
    field: str
    message: str


class _Invalid(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Mapping:
    """A source's field mapping: which column feeds which Moodle field, with which transforms and
    update policy, plus the match key and the auth method new users get."""

    match_key: str
    auth: str
    fields: dict[str, FieldSpec]
    customfields: dict[str, FieldSpec]
    extended_username_chars: bool = False
    # A new person the source already calls suspended (they left) is not created, unless this is on:
    # then they are created and suspended at once (Moodle's create has no suspended parameter).
    create_suspended: bool = False
    # The language packs installed on the site: another lang is refused here, before Moodle refuses the
    # whole call for it. Empty means the site does not say, and any well-formed code passes.
    languages: frozenset[str] = frozenset()
    memberships: MembershipRules = dataclasses.field(default_factory=MembershipRules)
    # The role shortnames the site's role table knows (MoodleSite.role_ids); empty: any role passes.
    roles: frozenset[str] = frozenset()

    def for_site(self, languages: list[str], roles: list[str] | None = None) -> Mapping:
        """This mapping, checking languages against the ones a site has installed and enrolment roles
        against the site's role table."""
        return dataclasses.replace(self, languages=frozenset(languages), roles=frozenset(roles or ()))

    def describe(self) -> list[tuple[str, str]]:
        """Each Moodle field with where its value comes from, in words: the site page shows it."""
        fields = {**self.fields, **self.customfields}
        return [(name, spec.origin()) for name, spec in fields.items()]

    @classmethod
    def from_config(cls, config: dict) -> Mapping:
        """Validate a mapping config (see sync/sources/README.md) and build the mapping."""
        if not isinstance(config, dict):
            raise MappingConfigError("mapping config must be a JSON object")
        known = {
            "match_key", "auth", "fields", "customfields", "extended_username_chars", "create_suspended",
            "memberships",
        }  # fmt: skip
        unknown = sorted(set(config) - known)
        if unknown:
            raise MappingConfigError(
                f"mapping: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})"
            )
        match_key = config.get("match_key", "idnumber")
        if match_key not in MATCH_KEYS:
            raise MappingConfigError(f"mapping: 'match_key' must be one of {', '.join(MATCH_KEYS)}")
        auth = config.get("auth", "manual")
        if not isinstance(auth, str) or not _AUTH_PLUGIN.match(auth):
            raise MappingConfigError(
                "mapping: 'auth' must be an auth plugin name such as manual, saml2, oauth2"
            )
        extended = config.get("extended_username_chars", False)
        if not isinstance(extended, bool):
            raise MappingConfigError("mapping: 'extended_username_chars' must be true or false")
        create_suspended = config.get("create_suspended", False)
        if not isinstance(create_suspended, bool):
            raise MappingConfigError("mapping: 'create_suspended' must be true or false")
        raw_fields = config.get("fields")
        if not isinstance(raw_fields, dict):
            raise MappingConfigError("mapping: 'fields' must be an object of Moodle field -> column")
        fields = {}
        for name, spec in raw_fields.items():
            if name not in MOODLE_FIELDS:
                raise MappingConfigError(
                    f"mapping: 'fields.{name}' is not a Moodle user field the hub maps "
                    f"(allowed: {', '.join(MOODLE_FIELDS)}; custom profile fields go under 'customfields')"
                )
            fields[name] = _field_spec(spec, f"fields.{name}")
        missing = [name for name in REQUIRED_FIELDS if name not in fields]
        if missing:
            raise MappingConfigError(
                f"mapping: 'fields.{missing[0]}' is required (Moodle needs it to create users)"
            )
        if "idnumber" in fields and match_key == "idnumber":
            raise MappingConfigError(
                "mapping: 'fields.idnumber' cannot be mapped when match_key is idnumber "
                "(the external id is the idnumber)"
            )
        raw_custom = config.get("customfields", {})
        if not isinstance(raw_custom, dict):
            raise MappingConfigError("mapping: 'customfields' must be an object of shortname -> column")
        customfields = {}
        for shortname, spec in raw_custom.items():
            if not _SHORTNAME.match(shortname):
                raise MappingConfigError(
                    f"mapping: 'customfields.{shortname}' is not a valid profile field shortname"
                )
            customfields[shortname] = _field_spec(spec, f"customfields.{shortname}")
        try:
            memberships = MembershipRules.from_config(config.get("memberships"))
        except MembershipConfigError as exc:
            raise MappingConfigError(str(exc)) from None
        return cls(match_key, auth, fields, customfields, extended, create_suspended, memberships=memberships)

    def apply(self, record: SourceRecord) -> MappedRecord | RecordProblem:
        """Map, normalise and validate one record; a problem is returned, never raised."""
        if record.error:
            message = record.error
            if message.startswith(f"{record.origin}: "):
                message = message[len(record.origin) + 2 :]
            return self._problem(record, "", message)
        try:
            payload = self._payload(record)
        except _Invalid as problem:
            return self._problem(record, problem.field, problem.message)
        create_only = {name for name, spec in self.fields.items() if spec.update == "create"}
        create_only |= {
            CUSTOMFIELD_PREFIX + name for name, spec in self.customfields.items() if spec.update == "create"
        }
        memberships = self.memberships.desired(
            record.fields,
            f"record {record.external_id} ({record.origin})",
            self.roles,
            suspended=payload.get("suspended") == 1,
        )
        return MappedRecord(
            record.external_id,
            payload,
            frozenset(create_only),
            payload_hash(payload),
            record.origin,
            memberships,
            memberships_hash(memberships) if not self.memberships.empty else "",
        )

    def _payload(self, record: SourceRecord) -> dict[str, Any]:
        values = {name: spec.value(record.fields, name) for name, spec in self.fields.items()}
        for name in REQUIRED_FIELDS:
            if not values[name].strip():
                raise _Invalid(
                    name, f"{name} is required but {self.fields[name].origin()} is empty or missing"
                )
        # suspended is sent only when mapped: a default of 0 would undo every suspension made in Moodle.
        payload: dict[str, Any] = {"auth": self.auth, "idnumber": record.external_id}
        for name, value in values.items():
            if name in MAX_LENGTHS and len(value) > MAX_LENGTHS[name]:
                raise _Invalid(
                    name, f'{name} "{_short(value)}" is longer than {MAX_LENGTHS[name]} characters'
                )
            payload[name] = _CHECKS.get(name, _as_is)(value, self)
        for name in _OMIT_WHEN_EMPTY:
            if payload.get(name) == "":
                del payload[name]
        payload.setdefault("auth", self.auth)
        payload["idnumber"] = payload["idnumber"] or record.external_id
        payload["customfields"] = sorted(
            (
                {"type": name, "value": spec.value(record.fields, CUSTOMFIELD_PREFIX + name)}
                for name, spec in self.customfields.items()
            ),
            key=lambda item: item["type"],
        )
        return payload

    def _problem(self, record: SourceRecord, field: str, message: str) -> RecordProblem:
        who = (
            f"record {record.external_id} ({record.origin})"
            if record.external_id
            else f"record at {record.origin}"
        )
        return RecordProblem(record.external_id, record.origin, field, f"{who}: {message}")


def parse_languages(text: str) -> list[str]:
    """The codes in a comma-separated list of language packs, in order; ValueError names a malformed one."""
    codes = [code.strip().lower() for code in text.split(",") if code.strip()]
    bad = next((code for code in codes if not _LANG.match(code)), None)
    if bad is not None:
        raise ValueError(f'"{_short(bad)}" is not a Moodle language code (like "en" or "pt_br")')
    if not codes:
        raise ValueError('name at least one language pack (every Moodle has "en")')
    return list(dict.fromkeys(codes))


def payload_hash(payload: dict[str, Any]) -> str:
    """sha256 over a canonical JSON of the payload: key order and formatting never change it."""
    canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def payload_for_create(mapped: MappedRecord) -> dict[str, Any]:
    """The user for `core_user_create_users`: every mapped value, without empty optional ones (nothing
    to set, and Moodle's defaults apply) and without suspended, which create does not take (Moodle
    refuses the whole call for it; a suspension is an update after the create). The password choice is
    the engine's."""
    payload = {
        key: value
        for key, value in mapped.payload.items()
        if value != "" and key not in ("customfields", "suspended")
    }
    customfields = [item for item in mapped.payload.get("customfields", []) if item["value"] != ""]
    if customfields:
        payload["customfields"] = customfields
    return payload


def payload_for_update(mapped: MappedRecord, moodle_user: dict[str, Any]) -> dict[str, Any]:
    """The user for `core_user_update_users`: `id` plus only the fields Moodle holds differently.

    Fields with update policy "create" are never overwritten. Values are compared exactly, since
    Moodle stores what it was sent, except emails, compared case-insensitively: Moodle's own
    duplicate check ignores case, and rewriting "Bob@X.org" to "bob@x.org" is not worth a call.
    A field Moodle did not return counts as empty. Returns {} when nothing changed.
    """
    changes: dict[str, Any] = {}
    for key, value in mapped.payload.items():
        if key == "customfields" or key in mapped.create_only:
            continue
        if not _same(key, value, moodle_user.get(key)):
            changes[key] = value
    current = {
        str(item.get("shortname") or item.get("type")): _text(item.get("value"))
        for item in moodle_user.get("customfields") or []
    }
    changed_custom = [
        item
        for item in mapped.payload.get("customfields", [])
        if CUSTOMFIELD_PREFIX + item["type"] not in mapped.create_only
        and current.get(item["type"], "") != item["value"]
    ]
    if changed_custom:
        changes["customfields"] = changed_custom
    if not changes:
        return {}
    moodle_id = moodle_user.get("id")
    return {"id": moodle_id, **changes} if moodle_id not in (None, "") else changes


# Per-field normalisation and validation: each returns the value to send or raises _Invalid.


def _as_is(value: str, _mapping: Mapping) -> str:
    return value


def _check_username(value: str, mapping: Mapping) -> str:
    if value != value.strip():
        raise _Invalid("username", f'username "{value}" has spaces around it (add the "strip" transform)')
    if value != value.lower():
        raise _Invalid(
            "username", f'username "{value}" must be lowercase for Moodle (add the "lowercase" transform)'
        )
    if not mapping.extended_username_chars:
        for position, char in enumerate(value, start=1):
            if not _USERNAME_ALLOWED.fullmatch(char):
                shown = "a space" if char.isspace() else f'"{char}"'
                raise _Invalid(
                    "username",
                    f'username "{value}" contains {shown} at position {position}; '
                    "Moodle allows only a-z, 0-9, _, -, . and @",
                )
    return value


def _check_email(value: str, _mapping: Mapping) -> str:
    reason = email_problem(value)
    if reason:
        raise _Invalid("email", f'email "{_short(value)}" is not a valid email address ({reason})')
    return value


def email_problem(address: str) -> str | None:
    """Why Moodle's validate_email() would refuse the address, or None.

    Moodle accepts what PHP's FILTER_VALIDATE_EMAIL accepts (ASCII only, a dotted domain whose last
    label starts with a letter, or an IP literal), minus addresses containing < or >."""
    if len(address) > MAX_LENGTHS["email"]:
        return f"longer than {MAX_LENGTHS['email']} characters"
    odd = next((c for c in address if not c.isascii() or c.isspace() or c in "<>"), None)
    if odd is not None:
        return "contains a space" if odd.isspace() else f'contains "{odd}"'
    local, at, domain = address.rpartition("@")
    if not at or not local:
        return "no name before @" if at else "no @"
    if not domain:
        return "no domain after @"
    if len(local) > 64 or not _LOCAL_PART.match(local):
        return "bad name before @"
    if domain.startswith("[") and domain.endswith("]"):
        literal = domain[1:-1]
        literal = literal[5:] if literal.lower().startswith("ipv6:") else literal
        try:
            ipaddress.ip_address(literal)
        except ValueError:
            return "bad address literal"
        return None
    labels = domain.split(".")
    if len(labels) < 2:
        return "the domain has no dot"
    if any(len(label) > 63 or not _LABEL.match(label) for label in labels[:-1]) or not _TLD.match(labels[-1]):
        return "bad domain"
    return None


def _check_suspended(value: str, _mapping: Mapping) -> int:
    flag = value.strip().lower()
    if flag in _TRUE:
        return 1
    if flag in _FALSE:
        return 0
    raise _Invalid("suspended", f'suspended "{_short(value)}" must be 0/1, true/false or yes/no')


def _check_country(value: str, _mapping: Mapping) -> str:
    code = value.upper()
    if code and code not in ISO_COUNTRIES:
        raise _Invalid("country", f'country "{_short(value)}" is not a 2-letter ISO 3166 code (like "DE")')
    return code


def _check_lang(value: str, mapping: Mapping) -> str:
    if value and not _LANG.match(value):
        raise _Invalid("lang", f'lang "{_short(value)}" is not a Moodle language code (like "en" or "pt_br")')
    if value and mapping.languages and value not in mapping.languages:
        installed = ", ".join(sorted(mapping.languages))
        raise _Invalid(
            "lang",
            f'lang "{_short(value)}" is not a language pack installed on the site (installed: {installed}); '
            "Moodle would refuse the person. Install the pack in Moodle and add it to the site's languages, "
            "or fix the source",
        )
    return value


def _check_no_tags(field: str) -> Callable[[str, Mapping], str]:
    """Moodle cleans names, department, institution, city and address of HTML tags, and refuses the whole
    call when cleaning changes a value: refuse the person here, naming the field."""

    def check(value: str, _mapping: Mapping) -> str:
        tag = _TAG.search(value)
        if tag:
            raise _Invalid(
                field,
                f'{field} "{_short(value)}" contains an HTML tag ({tag.group(0)}), which Moodle refuses',
            )
        return value

    return check


def _check_timezone(value: str, _mapping: Mapping) -> str:
    if value and value != "99" and value not in _timezones():
        raise _Invalid(
            "timezone", f'timezone "{_short(value)}" is not a time zone name (like "Europe/Berlin")'
        )
    return value


def _check_auth(value: str, _mapping: Mapping) -> str:
    if value and not _AUTH_PLUGIN.match(value):
        raise _Invalid("auth", f'auth "{_short(value)}" is not an auth plugin name')
    return value


_CHECKS: dict[str, Callable[[str, Mapping], Any]] = {
    **{name: _check_no_tags(name) for name in TEXT_FIELDS},
    "username": _check_username,
    "email": _check_email,
    "suspended": _check_suspended,
    "country": _check_country,
    "lang": _check_lang,
    "timezone": _check_timezone,
    "auth": _check_auth,
}


@cache
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _field_spec(spec: object, where: str) -> FieldSpec:
    if isinstance(spec, str):
        if not spec:
            raise MappingConfigError(f"mapping: '{where}' must name a source column")
        return FieldSpec(source=spec, constant=None, transforms=("strip",), update="always")
    if not isinstance(spec, dict):
        raise MappingConfigError(f"mapping: '{where}' must be a column name or an object")
    unknown = sorted(set(spec) - {"source", "constant", "transforms", "update", "default", "values"})
    if unknown:
        raise MappingConfigError(f"mapping: unknown key '{where}.{unknown[0]}'")
    source, constant = spec.get("source"), spec.get("constant")
    if (source is None) == (constant is None):
        raise MappingConfigError(f"mapping: '{where}' needs exactly one of 'source' or 'constant'")
    if source is not None and (not isinstance(source, str) or not source):
        raise MappingConfigError(f"mapping: '{where}.source' must be a column name")
    if constant is not None and not isinstance(constant, str):
        raise MappingConfigError(f"mapping: '{where}.constant' must be a string")
    transforms = spec.get("transforms", ["strip"])
    if not isinstance(transforms, list) or not all(isinstance(name, str) for name in transforms):
        raise MappingConfigError(f"mapping: '{where}.transforms' must be a list of names")
    for name in transforms:
        if name not in TRANSFORMS:
            known = ", ".join(TRANSFORMS)
            raise MappingConfigError(f"mapping: '{where}.transforms': unknown {name!r} (known: {known})")
    update = spec.get("update", "always")
    if update not in UPDATE_POLICIES:
        raise MappingConfigError(f"mapping: '{where}.update' must be one of {', '.join(UPDATE_POLICIES)}")
    default = spec.get("default")
    values = spec.get("values")
    if values is None:
        if default is not None and not isinstance(default, str):
            raise MappingConfigError(f"mapping: '{where}.default' must be a string")
        return FieldSpec(source, constant, tuple(transforms), update, default)
    if source is None:
        raise MappingConfigError(
            f"mapping: '{where}.values' needs a 'source' column (a constant has only one value)"
        )
    if not isinstance(values, dict) or not values:
        raise MappingConfigError(
            f"mapping: '{where}.values' must be a non-empty object of source value -> value to send"
        )
    pairs, lookup, written = [], {}, {}
    for key, target in values.items():
        if not isinstance(key, str):
            raise MappingConfigError(f"mapping: '{where}.values' keys must be strings, not {key!r}")
        normalised = _map_key(key)
        if normalised in lookup:
            raise MappingConfigError(
                f"mapping: '{where}.values' has {written[normalised]!r} and {key!r}, which are the same "
                "value once trimmed and compared without case"
            )
        text = _map_value(target, f"{where}.values.{key}")
        pairs.append((key, text))
        lookup[normalised] = text
        written[normalised] = key
    if default is not None:
        default = _map_value(default, f"{where}.default")
    return FieldSpec(source, constant, tuple(transforms), update, default, tuple(pairs), lookup)


def _map_key(value: str) -> str:
    return value.strip().casefold()


def _map_value(value: object, where: str) -> str:
    """A value-map target as the string the field's checks expect: `1` and `true` read as "1", as the
    HTTP source turns JSON numbers and booleans into text."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | str):
        return str(value)
    raise MappingConfigError(f"mapping: '{where}' must be a string, a whole number or true/false")


def _same(key: str, ours: Any, theirs: Any) -> bool:
    if key == "suspended":
        return ours == _flag(theirs)
    if key == "email":
        return str(ours).casefold() == _text(theirs).casefold()
    return str(ours) == _text(theirs)


def _flag(value: Any) -> int:
    if isinstance(value, bool | int):
        return int(bool(value))
    return 1 if _text(value).strip().lower() in _TRUE else 0


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _short(value: str, limit: int = 60) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"

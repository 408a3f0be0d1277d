"""Which courses and cohorts a source person belongs in: the `memberships` part of a site's mapping.

    "memberships": {
      "cohorts": [{"source": "department", "idnumber": "dept-{slug}", "name": "Department of {value}"}],
      "courses": [{"source": "courses", "separator": ";", "match": "shortname", "role": "student",
                   "start": "start_date", "end": "end_date"}],
      "on_leave": "suspend"
    }

A rule reads one column; with a `separator` the column holds a list. Cohorts are named by idnumber (made
from a template: {value} is the source value, {slug} the value in lowercase ASCII with dashes); a missing
cohort is created with `name`. Courses are named by shortname or idnumber and the role by its shortname
(`role`, or `role_source` for a column), mapped to an id by the site's role table. Dates are YYYY-MM-DD
(midnight UTC) or Unix seconds. A value that cannot be used (an unknown role, a bad date) makes that one
membership an error naming the record and the column; the person and their other memberships go on.

Nothing here knows Django: it is part of the mapping (sync.mapping) and hashed with it.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass

COURSE, COHORT = "course", "cohort"
ACTIVE, SUSPENDED, REMOVED = "active", "suspended", "removed"
COURSE_MATCHES = ("shortname", "idnumber")
LEAVE_POLICIES = ("suspend", "unenrol")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


class MembershipConfigError(ValueError):
    """The memberships part of a mapping is invalid; the message names the offending key."""


@dataclass(frozen=True)
class Desired:
    """One course or cohort the source puts a person in. `problem` is set when it cannot be sent."""

    kind: str
    key: str
    match: str = "idnumber"
    name: str = ""
    role: str = ""
    timestart: int = 0
    timeend: int = 0
    state: str = ACTIVE
    problem: str = ""

    def as_json(self) -> list:
        return [
            self.kind,
            self.key,
            self.match,
            self.name,
            self.role,
            self.timestart,
            self.timeend,
            self.state,
        ]


@dataclass(frozen=True)
class CohortRule:
    source: str
    separator: str
    idnumber: str
    name: str


@dataclass(frozen=True)
class CourseRule:
    source: str
    separator: str
    match: str
    role: str
    role_source: str
    start: str
    end: str


@dataclass(frozen=True)
class MembershipRules:
    cohorts: tuple[CohortRule, ...] = ()
    courses: tuple[CourseRule, ...] = ()
    on_leave: str = "suspend"
    cohort_category: int | None = None  # None: cohorts are made in the system context

    @property
    def empty(self) -> bool:
        return not self.cohorts and not self.courses

    @classmethod
    def from_config(cls, config: object) -> MembershipRules:
        if config is None:
            return cls()
        if not isinstance(config, dict):
            raise MembershipConfigError("mapping: 'memberships' must be an object")
        _only(config, {"cohorts", "courses", "on_leave", "cohort_category"}, "memberships")
        on_leave = config.get("on_leave", "suspend")
        if on_leave not in LEAVE_POLICIES:
            raise MembershipConfigError(
                f"mapping: 'memberships.on_leave' must be one of {', '.join(LEAVE_POLICIES)}"
            )
        category = config.get("cohort_category")
        if category is not None and (
            not isinstance(category, int) or isinstance(category, bool) or category < 1
        ):
            raise MembershipConfigError(
                "mapping: 'memberships.cohort_category' must be a course category id (leave it out for "
                "cohorts in the system context)"
            )
        cohorts = tuple(
            _cohort_rule(r, f"memberships.cohorts[{i}]") for i, r in enumerate(_list(config, "cohorts"))
        )
        courses = tuple(
            _course_rule(r, f"memberships.courses[{i}]") for i, r in enumerate(_list(config, "courses"))
        )
        return cls(cohorts, courses, on_leave, category)

    def columns(self) -> set[str]:
        """The source columns the rules read."""
        names = {r.source for r in self.cohorts} | {r.source for r in self.courses}
        names |= {c for r in self.courses for c in (r.role_source, r.start, r.end) if c}
        return names

    def desired(
        self, fields: MappingABC[str, str], who: str, roles: frozenset[str], *, suspended: bool = False
    ) -> tuple[Desired, ...]:
        """The person's memberships from their source columns; `who` names them in problems. A person the
        source calls suspended keeps their course list, with every enrolment suspended."""
        found: dict[tuple[str, str], Desired] = {}
        for rule in self.cohorts:
            for value in _values(fields, rule.source, rule.separator):
                key = _fill(rule.idnumber, value)
                found.setdefault(
                    (COHORT, key), Desired(COHORT, key, "idnumber", _fill(rule.name, value)[:254])
                )
        for rule in self.courses:
            for value in _values(fields, rule.source, rule.separator):
                item = _course(rule, value, fields, who, roles)
                if suspended and not item.problem:
                    item = dataclasses.replace(item, state=SUSPENDED)
                found.setdefault((COURSE, value), item)
        return tuple(sorted(found.values(), key=lambda d: (d.kind, d.key)))


def memberships_hash(items: tuple[Desired, ...]) -> str:
    """sha256 of the memberships: the same list in any order hashes the same."""
    canonical = json.dumps(
        [[*d.as_json(), d.problem] for d in items], ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def slug(value: str) -> str:
    """ "Économie & Droit" -> "economie-droit": lowercase ASCII, other characters as single dashes."""
    folded = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]+", "-", folded).strip("-")


def _course(
    rule: CourseRule, value: str, fields: MappingABC[str, str], who: str, roles: frozenset[str]
) -> Desired:
    base = {"kind": COURSE, "key": value, "match": rule.match}
    role = (fields.get(rule.role_source, "").strip().lower() if rule.role_source else rule.role) or rule.role
    where = f"{who}: course {value}"
    if roles and role not in roles:
        column = f"column {rule.role_source}" if rule.role_source else "the mapping"
        known = ", ".join(sorted(roles))
        return Desired(
            **base,
            role=role,
            problem=f'{where}: role "{role}" (from {column}) is not in the site\'s '
            f"role table ({known}); add it under the site's settings with its Moodle role id",
        )
    try:
        start = _date(fields, rule.start)
        end = _date(fields, rule.end)
    except ValueError as exc:
        return Desired(**base, role=role, problem=f"{where}: {exc}")
    if start and end and end <= start:
        return Desired(**base, role=role, problem=f"{where}: {rule.end} ends before {rule.start} starts")
    return Desired(**base, role=role, timestart=start, timeend=end)


def _date(fields: MappingABC[str, str], column: str) -> int:
    if not column:
        return 0
    text = fields.get(column, "").strip()
    if not text:
        return 0
    if text.isdigit():
        return int(text)
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f'{column} "{text[:40]}" is not a date (YYYY-MM-DD) or Unix seconds') from None
    return calendar.timegm(day.timetuple())


def _values(fields: MappingABC[str, str], column: str, separator: str) -> list[str]:
    text = fields.get(column, "") or ""
    parts = text.split(separator) if separator else [text]
    return list(dict.fromkeys(p.strip() for p in parts if p.strip()))


def _fill(template: str, value: str) -> str:
    return template.replace("{value}", value).replace("{slug}", slug(value))


def _only(config: dict, known: set[str], where: str) -> None:
    unknown = sorted(set(config) - known)
    if unknown:
        raise MembershipConfigError(
            f"mapping: unknown key '{where}.{unknown[0]}' (known: {', '.join(sorted(known))})"
        )


def _list(config: dict, name: str) -> list:
    value = config.get(name, [])
    if not isinstance(value, list):
        raise MembershipConfigError(f"mapping: 'memberships.{name}' must be a list of rules")
    return value


def _column(rule: dict, name: str, where: str, *, required: bool = False) -> str:
    value = rule.get(name, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise MembershipConfigError(f"mapping: '{where}.{name}' must name a source column")
    return value.strip()


def _separator(rule: dict, where: str) -> str:
    value = rule.get("separator", "")
    if not isinstance(value, str):
        raise MembershipConfigError(f"mapping: '{where}.separator' must be a string, e.g. \";\"")
    return value


def _template(rule: dict, name: str, where: str, default: str) -> str:
    value = rule.get(name, default)
    if not isinstance(value, str) or not value.strip():
        raise MembershipConfigError(f"mapping: '{where}.{name}' must be a non-empty text")
    unknown = sorted(set(_PLACEHOLDER.findall(value)) - {"value", "slug"})
    if unknown:
        raise MembershipConfigError(
            f"mapping: '{where}.{name}' has {{{unknown[0]}}}; only {{value}} and {{slug}} are known"
        )
    return value


def _cohort_rule(rule: object, where: str) -> CohortRule:
    if not isinstance(rule, dict):
        raise MembershipConfigError(f"mapping: '{where}' must be an object")
    _only(rule, {"source", "separator", "idnumber", "name"}, where)
    return CohortRule(
        source=_column(rule, "source", where, required=True),
        separator=_separator(rule, where),
        idnumber=_template(rule, "idnumber", where, "{value}"),
        name=_template(rule, "name", where, "{value}"),
    )


def _course_rule(rule: object, where: str) -> CourseRule:
    if not isinstance(rule, dict):
        raise MembershipConfigError(f"mapping: '{where}' must be an object")
    _only(rule, {"source", "separator", "match", "role", "role_source", "start", "end"}, where)
    match = rule.get("match", "shortname")
    if match not in COURSE_MATCHES:
        raise MembershipConfigError(f"mapping: '{where}.match' must be one of {', '.join(COURSE_MATCHES)}")
    role = rule.get("role", "student")
    if not isinstance(role, str) or not re.fullmatch(r"[a-z0-9_]+", role):
        raise MembershipConfigError(f"mapping: '{where}.role' must be a role shortname such as student")
    return CourseRule(
        source=_column(rule, "source", where, required=True),
        separator=_separator(rule, where),
        match=match,
        role=role,
        role_source=_column(rule, "role_source", where),
        start=_column(rule, "start", where),
        end=_column(rule, "end", where),
    )

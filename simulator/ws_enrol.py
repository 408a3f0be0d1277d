"""enrol_manual_* and core_enrol_get_enrolled_users."""

from __future__ import annotations

import re
import time

from simulator.context import CallContext
from simulator.errors import invalid_parameter, missing_record, moodle_exception
from simulator.params import DEFAULT, OPTIONAL, Multiple, Single, Value
from simulator.state import DEFAULT_ASSIGNABLE_ROLES, ROLES
from simulator.userview import user_details

ENROL_PARAMS = Single(
    {
        "enrolments": Multiple(
            Single(
                {
                    "roleid": Value("int"),
                    "userid": Value("int"),
                    "courseid": Value("int"),
                    "timestart": Value("int", OPTIONAL),
                    "timeend": Value("int", OPTIONAL),
                    "suspend": Value("bool", OPTIONAL),
                }
            )
        )
    }
)
UNENROL_PARAMS = Single(
    {
        "enrolments": Multiple(
            Single(
                {
                    "userid": Value("int"),
                    "courseid": Value("int"),
                    "roleid": Value("int", OPTIONAL),
                }
            )
        )
    }
)
ENROLLED_PARAMS = Single(
    {
        "courseid": Value("int"),
        "options": Multiple(Single({"name": Value("alphanumext"), "value": Value("raw")}), DEFAULT, []),
    }
)


def manual_instance(ctx: CallContext, courseid: int) -> dict | None:
    for instance in ctx.state.enrol_instances.values():
        if instance["courseid"] == courseid and instance["enrol"] == "manual" and instance["status"] == 0:
            return instance
    return None


def _course(ctx: CallContext, courseid: int) -> dict:
    course = ctx.state.courses.get(courseid)
    if course is None:
        raise missing_record("course", "SELECT id,category FROM {course} WHERE id = ?", ctx.debug)
    return course


def enrol_users(ctx: CallContext, params: dict) -> None:
    staged = []
    assignable = ctx.state.user_assignable_roles.get(ctx.userid, DEFAULT_ASSIGNABLE_ROLES)
    for item in params["enrolments"]:
        if item["courseid"] not in ctx.state.courses:
            raise invalid_parameter("Context does not exist")
        ctx.require("enrol/manual:enrol")
        if item["roleid"] not in assignable:
            raise moodle_exception(
                "wsusercannotassign",
                f"You don't have the permission to assign this role ({item['roleid']}) to this user "
                f"({item['userid']}) in this course({item['courseid']}).",
            )
        instance = manual_instance(ctx, item["courseid"])
        if instance is None:
            raise moodle_exception(
                "wsnoinstance",
                f"Manual enrolment plugin instance doesn't exist or is disabled for the course "
                f"(id = {item['courseid']})",
            )
        user = ctx.state.users.get(item["userid"])
        if user is None or user["deleted"]:
            raise missing_record("user", "SELECT id FROM {user} WHERE id = ? AND deleted = 0", ctx.debug)
        staged.append((instance, item))
    # One transaction per call: nothing is written unless every enrolment passed.
    for instance, item in staged:
        existing = _find(ctx, instance["id"], item["userid"])
        if existing is None:
            existing = {
                "instanceid": instance["id"],
                "courseid": instance["courseid"],
                "userid": item["userid"],
                "roles": [],
                "status": 0,
                "timestart": 0,
                "timeend": 0,
                "timecreated": int(time.time()),
            }
            ctx.state.enrolments.append(existing)
        if item["roleid"] not in existing["roles"]:
            existing["roles"].append(item["roleid"])
        existing["status"] = int(item.get("suspend", False))
        existing["timestart"] = item.get("timestart", existing["timestart"])
        existing["timeend"] = item.get("timeend", existing["timeend"])
    return None


def _find(ctx: CallContext, instanceid: int, userid: int) -> dict | None:
    return next(
        (e for e in ctx.state.enrolments if e["instanceid"] == instanceid and e["userid"] == userid), None
    )


def unenrol_users(ctx: CallContext, params: dict) -> None:
    staged = []
    for item in params["enrolments"]:
        _course(ctx, item["courseid"])
        ctx.require("enrol/manual:unenrol")
        instance = manual_instance(ctx, item["courseid"])
        if instance is None:
            raise moodle_exception(
                "wsnoinstance",
                f"Manual enrolment plugin instance doesn't exist or is disabled for the course "
                f"(id = {item['courseid']})",
            )
        if item["userid"] not in ctx.state.users:
            raise invalid_parameter(f"User id not exist: {item['userid']}")
        staged.append((instance, item))
    for instance, item in staged:
        existing = _find(ctx, instance["id"], item["userid"])
        if existing is not None:
            ctx.state.enrolments.remove(existing)
    return None


def _read_options(options: list[dict]) -> dict:
    """Known options only; Moodle silently ignores any other name (``limitnum`` included)."""
    result: dict = {"limitfrom": 0, "limitnumber": 0, "onlyactive": False, "userfields": None}
    for option in options:
        name, value = option["name"], option["value"]
        if name in ("limitfrom", "limitnumber"):
            match = re.match(r"\s*-?\d+", value)
            result[name] = max(0, int(match.group())) if match else 0
        elif name == "onlyactive":
            result["onlyactive"] = value not in ("", "0")
        elif name == "userfields":
            result["userfields"] = [re.sub(r"[^a-zA-Z0-9_-]", "", f) for f in value.split(",")]
    return result


def get_enrolled_users(ctx: CallContext, params: dict) -> list[dict]:
    options = _read_options(params["options"])
    course = _course(ctx, params["courseid"])
    ctx.require("moodle/course:viewparticipants")
    now = int(time.time())
    by_user: dict[int, list[dict]] = {}
    for enrolment in ctx.state.enrolments:
        if enrolment["courseid"] != course["id"]:
            continue
        user = ctx.state.users.get(enrolment["userid"])
        if user is None or user["deleted"]:
            continue
        if options["onlyactive"]:
            active = (
                enrolment["status"] == 0
                and enrolment["timestart"] <= now
                and (enrolment["timeend"] == 0 or enrolment["timeend"] > now)
                and not user["suspended"]
            )
            if not active:
                continue
        by_user.setdefault(user["id"], []).append(enrolment)
    ids = sorted(by_user)
    if options["limitfrom"] or options["limitnumber"]:
        end = options["limitfrom"] + options["limitnumber"] if options["limitnumber"] else None
        ids = ids[options["limitfrom"] : end]
    result = []
    for userid in ids:
        details = user_details(ctx, ctx.state.users[userid], in_course=True) or {}
        roles = sorted({r for e in by_user[userid] for r in e["roles"]})
        details["roles"] = [
            {"roleid": r, "name": ROLES[r]["name"], "shortname": ROLES[r]["shortname"], "sortorder": 0}
            for r in roles
            if r in ROLES
        ]
        details["enrolledcourses"] = [
            {"id": c["id"], "fullname": c["fullname"], "shortname": c["shortname"]}
            for c in _courses_of(ctx, userid)
        ]
        if options["userfields"] is not None:
            wanted = set(options["userfields"]) | {"id"}
            details = {k: v for k, v in details.items() if k in wanted}
        result.append(details)
    return result


def _courses_of(ctx: CallContext, userid: int) -> list[dict]:
    ids = sorted({e["courseid"] for e in ctx.state.enrolments if e["userid"] == userid})
    return [ctx.state.courses[i] for i in ids if i in ctx.state.courses]

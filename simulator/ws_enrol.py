"""enrol_manual_* and core_enrol_get_enrolled_users, as Moodle 5.1 runs them.

Read from Moodle's enrol/manual/externallib.php (enrol_users, unenrol_users), lib/enrollib.php
(enrol_plugin::enrol_user, unenrol_user, get_enrolled_join, enrol_get_users_courses),
enrol/externallib.php (get_enrolled_users) and user/lib.php (user_get_user_details).
"""

from __future__ import annotations

import math
import re
import time

from simulator.context import CallContext
from simulator.errors import MoodleError, coding_error, invalid_parameter, missing_record, moodle_exception
from simulator.hook import event_task
from simulator.params import DEFAULT, OPTIONAL, Multiple, Single, Value
from simulator.state import DEFAULT_ASSIGNABLE_ROLES, GUEST_ID, ROLES
from simulator.userview import collation_key, user_details

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
                    "suspend": Value("int", OPTIONAL),  # PARAM_INT: any non-zero value suspends
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
                    "roleid": Value("int", OPTIONAL),  # accepted, never read
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
# user_get_default_fields(): what `userfields` may name; anything else is `invaliduserfield`.
USER_FIELDS = (
    "id", "username", "fullname", "firstname", "lastname", "email", "address", "phone1", "phone2",
    "department", "institution", "interests", "firstaccess", "lastaccess", "auth", "confirmed", "idnumber",
    "lang", "theme", "timezone", "mailformat", "description", "descriptionformat", "city", "country",
    "profileimageurlsmall", "profileimageurl", "customfields", "groups", "roles", "preferences",
    "enrolledcourses", "suspended", "lastcourseaccess", "trackforums",
)  # fmt: skip
_SORTBY = ("id", "firstname", "lastname", "siteorder")


def manual_instance(ctx: CallContext, courseid: int, *, enabled_only: bool = True) -> dict | None:
    for instance in ctx.state.enrol_instances.values():
        mine = instance["courseid"] == courseid and instance["enrol"] == "manual"
        if mine and (instance["status"] == 0 or not enabled_only):
            return instance
    return None


def _no_instance(courseid: int) -> MoodleError:
    return moodle_exception(
        "wsnoinstance",
        f"Manual enrolment plugin instance doesn't exist or is disabled for the course (id = {courseid})",
    )


_CONTEXT_SQL = "SELECT id,category FROM {course} WHERE id = ?"  # context_course::instance(MUST_EXIST)


def _course(ctx: CallContext, courseid: int, sql: str = _CONTEXT_SQL) -> dict:
    course = ctx.state.courses.get(courseid)
    if course is None:
        raise missing_record("course", sql, ctx.debug)
    return course


def _active_user(ctx: CallContext, userid: int) -> dict:
    """core_user::get_user(MUST_EXIST) and require_active_user(): a suspended user passes."""
    user = ctx.state.users.get(userid)
    if user is None:
        raise missing_record("user", "SELECT * FROM {user} WHERE id = ?", ctx.debug)
    if user["deleted"]:
        raise moodle_exception("userdeleted", "This user account has been deleted")
    if not user["confirmed"]:
        raise moodle_exception("usernotconfirmed", f"Could not confirm {user['username']}")
    if user["id"] == GUEST_ID:
        raise moodle_exception("guestsarenotallowed", "The guest user is not allowed to do this")
    return user


def _find(ctx: CallContext, instanceid: int, userid: int) -> dict | None:
    return next(
        (e for e in ctx.state.enrolments if e["instanceid"] == instanceid and e["userid"] == userid), None
    )


# enrol_manual_enrol_users -----------------------------------------------------------------------


def _check_enrolment(ctx: CallContext, item: dict, assignable: list[int]) -> dict:
    """One enrolment's checks in Moodle's order; returns the course's enabled manual instance."""
    if item["courseid"] not in ctx.state.courses:
        raise invalid_parameter("Context does not exist")
    ctx.require("enrol/manual:enrol")
    _active_user(ctx, item["userid"])
    if item["roleid"] not in assignable:
        raise moodle_exception(
            "wsusercannotassign",
            f"You don't have the permission to assign this role ({item['roleid']}) to this user "
            f"({item['userid']}) in this course ({item['courseid']}).",
        )
    instance = manual_instance(ctx, item["courseid"])
    if instance is None:
        raise _no_instance(item["courseid"])
    return instance


def _enrol_user(ctx: CallContext, instance: dict, item: dict) -> None:
    """enrol_user(): the web service always passes dates (0 when omitted) and a status (active unless
    ``suspend``), so an existing enrolment takes them all; the role is added to the user's roles.

    Events as Moodle triggers them: user_enrolment_created for a new enrolment; user_enrolment_updated
    only when the status or a date changed (update_user_enrol() returns early otherwise); a role added
    to an existing enrolment is role_assigned, which the plugin does not observe."""
    wanted = {
        "status": 1 if item.get("suspend") else 0,
        "timestart": item.get("timestart", 0),
        "timeend": item.get("timeend", 0),
    }
    enrolment = _find(ctx, instance["id"], item["userid"])
    if enrolment is None:
        enrolment = {
            "instanceid": instance["id"],
            "courseid": instance["courseid"],
            "userid": item["userid"],
            "roles": [],
            "timecreated": int(time.time()),
        }
        ctx.state.enrolments.append(enrolment)
        ctx.events.append(event_task("user_enrolment_created", item["userid"], instance["courseid"]))
    elif any(enrolment[k] != v for k, v in wanted.items()):
        ctx.events.append(event_task("user_enrolment_updated", item["userid"], instance["courseid"]))
    enrolment.update(wanted)
    if item["roleid"] not in enrolment["roles"]:
        enrolment["roles"].append(item["roleid"])


def enrol_users(ctx: CallContext, params: dict) -> None:
    assignable = ctx.state.user_assignable_roles.get(ctx.userid, DEFAULT_ASSIGNABLE_ROLES)
    staged = [(_check_enrolment(ctx, item, assignable), item) for item in params["enrolments"]]
    # One transaction per call: nothing is written unless every enrolment passed.
    for instance, item in staged:
        _enrol_user(ctx, instance, item)
    return None


# enrol_manual_unenrol_users ---------------------------------------------------------------------


def _check_unenrolment(ctx: CallContext, item: dict) -> dict:
    _course(ctx, item["courseid"])
    ctx.require("enrol/manual:unenrol")
    # $DB->get_record('enrol', [courseid, enrol => manual]): a disabled instance is found too.
    instance = manual_instance(ctx, item["courseid"], enabled_only=False)
    if instance is None:
        raise _no_instance(item["courseid"])
    _active_user(ctx, item["userid"])
    return instance


def unenrol_users(ctx: CallContext, params: dict) -> None:
    staged = [(_check_unenrolment(ctx, item), item) for item in params["enrolments"]]
    for instance, item in staged:
        # unenrol_user($instance, $userid): the whole enrolment goes with every role; `roleid` is ignored.
        existing = _find(ctx, instance["id"], item["userid"])
        if existing is not None:
            ctx.state.enrolments.remove(existing)
            ctx.events.append(event_task("user_enrolment_deleted", item["userid"], instance["courseid"]))
    return None


# core_enrol_get_enrolled_users ------------------------------------------------------------------


def _php_int(value: str) -> int:
    """clean_param(PARAM_INT) is PHP's (int) cast: "12abc" is 12, "abc" is 0."""
    match = re.match(r"\s*[+-]?\d+", value)
    return int(match.group()) if match else 0


def _sort_option(name: str, value: str) -> str:
    if name == "sortby":
        if value not in _SORTBY:
            raise invalid_parameter(
                f"Invalid value for sortby parameter (value: {value}), "
                f"allowed values are: {','.join(_SORTBY)}"
            )
        return value
    direction = value.upper()
    if direction not in ("ASC", "DESC"):
        raise invalid_parameter(
            "Invalid value for sortdirection parameter\n                        "
            f"(value: {direction}),allowed values are: ASC,DESC"
        )
    return direction


def _read_options(options: list[dict]) -> dict:
    """Known options only; Moodle silently ignores any other name (``limitnum`` included)."""
    result: dict = {"limitfrom": 0, "limitnumber": 0, "onlyactive": False, "onlysuspended": False,
                    "userfields": [], "sortby": "id", "sortdirection": "ASC"}  # fmt: skip
    for option in options:
        name, value = option["name"], option["value"]
        if name in ("limitfrom", "limitnumber"):
            result[name] = _php_int(value)
        elif name in ("onlyactive", "onlysuspended"):
            result[name] = value not in ("", "0")  # PHP's !empty()
        elif name == "userfields":
            result["userfields"] += [re.sub(r"[^A-Za-z0-9_-]", "", f) for f in value.split(",")]
        elif name in ("sortby", "sortdirection"):
            result[name] = _sort_option(name, value)
    return result


def _now() -> int:
    """get_enrolled_join() compares with round(time(), -2)."""
    return math.floor(time.time() / 100 + 0.5) * 100


def _active(ctx: CallContext, enrolment: dict, now: int) -> bool:
    """An active enrolment: its status, its instance's status and its dates. The user's own
    ``suspended`` flag plays no part."""
    instance = ctx.state.enrol_instances.get(enrolment["instanceid"], {"status": 1})
    return (
        enrolment["status"] == 0
        and instance["status"] == 0
        and enrolment["timestart"] < now
        and (enrolment["timeend"] == 0 or enrolment["timeend"] > now)
    )


def _enrolled(ctx: CallContext, courseid: int, options: dict) -> list[int]:
    """get_enrolled_join(): non-deleted users with an enrolment in the course; `onlyactive` keeps those
    with an active one, `onlysuspended` those with none."""
    now = _now()
    by_user: dict[int, list[dict]] = {}
    for enrolment in ctx.state.enrolments:
        user = ctx.state.users.get(enrolment["userid"])
        if enrolment["courseid"] == courseid and user is not None and not user["deleted"]:
            by_user.setdefault(user["id"], []).append(enrolment)
    if options["onlyactive"]:
        return sorted(u for u, es in by_user.items() if any(_active(ctx, e, now) for e in es))
    if options["onlysuspended"]:
        return sorted(u for u, es in by_user.items() if not any(_active(ctx, e, now) for e in es))
    return sorted(by_user)


def _ordered(ctx: CallContext, ids: list[int], options: dict) -> list[int]:
    """ORDER BY us.<sortby> <direction> (us.id ASC by default); for siteorder, users_order_by_sql()
    gives "lastname, firstname, id", so the direction applies to id alone."""
    users = [ctx.state.users[i] for i in ids]
    reverse = options["sortdirection"] == "DESC"
    if options["sortby"] in ("id", "siteorder"):
        users.sort(key=lambda u: u["id"], reverse=reverse)
    if options["sortby"] == "siteorder":
        users.sort(key=lambda u: (collation_key(u["lastname"]), collation_key(u["firstname"])))
    elif options["sortby"] != "id":
        users.sort(key=lambda u: collation_key(u[options["sortby"]]), reverse=reverse)
    return [u["id"] for u in users]


def _page(ids: list[int], options: dict) -> list[int]:
    start = max(0, options["limitfrom"])
    return ids[start : start + options["limitnumber"]] if options["limitnumber"] > 0 else ids[start:]


def _roles(mine: list[dict]) -> list[dict]:
    """get_user_roles() from the user's enrolments in the course: ``name`` is the role table's, empty for
    the standard roles (their names come from language strings); ``sortorder`` is always 0."""
    ids = {r for e in mine for r in e["roles"]}
    known = sorted((r for r in ids if r in ROLES), key=lambda r: ROLES[r]["sortorder"])
    return [{"roleid": r, "name": "", "shortname": ROLES[r]["shortname"], "sortorder": 0} for r in known]


def _courses_of(ctx: CallContext, userid: int) -> list[dict]:
    """enrol_get_users_courses($userid, onlyactive=true): active enrolments only, no site course, a hidden
    course only for a user who may see hidden courses; visible ones first, then in course order."""
    now = _now()
    sees_hidden = "moodle/course:viewhiddencourses" in ctx.state.user_capabilities.get(userid, [])
    ids = {e["courseid"] for e in ctx.state.enrolments if e["userid"] == userid and _active(ctx, e, now)}
    courses = [ctx.state.courses[i] for i in sorted(ids) if i in ctx.state.courses]
    courses = [c for c in courses if c["categoryid"] and (c["visible"] or sees_hidden)]
    courses.sort(key=lambda c: not c["visible"])
    return [{"id": c["id"], "fullname": c["fullname"], "shortname": c["shortname"]} for c in courses]


def _participant(ctx: CallContext, user: dict, mine: list[dict], userfields: list[str]) -> dict:
    """user_get_user_details($user, $course, $userfields): id and fullname always come back."""
    for name in userfields:
        if name not in USER_FIELDS:
            raise moodle_exception("invaliduserfield", f"Invalid user field: {name}")
    wanted = set(userfields or USER_FIELDS) | {"id", "fullname"}
    if "description" in wanted:
        wanted.add("descriptionformat")
    details = dict(user_details(ctx, user, in_course=True) or {}, lastcourseaccess=0)
    if "roles" in wanted:
        details["roles"] = _roles(mine)
    courses = _courses_of(ctx, user["id"]) if "enrolledcourses" in wanted else []
    if courses:
        details["enrolledcourses"] = courses
    return {k: v for k, v in details.items() if k in wanted}


def get_enrolled_users(ctx: CallContext, params: dict) -> list[dict]:
    options = _read_options(params["options"])
    course = _course(ctx, params["courseid"], "SELECT * FROM {course} WHERE id = ?")
    ctx.require("moodle/course:viewparticipants")
    if options["onlyactive"] or options["onlysuspended"]:
        ctx.require("moodle/course:enrolreview")
    if options["onlyactive"] and options["onlysuspended"]:
        raise coding_error("Both onlyactive and onlysuspended are set, this is probably not what you want!")
    ids = _page(_ordered(ctx, _enrolled(ctx, course["id"], options), options), options)
    # One pass over the site's enrolments per call, not one per user listed.
    in_course: dict[int, list[dict]] = {}
    for enrolment in ctx.state.enrolments:
        if enrolment["courseid"] == course["id"]:
            in_course.setdefault(enrolment["userid"], []).append(enrolment)
    return [_participant(ctx, ctx.state.users[i], in_course.get(i, []), options["userfields"]) for i in ids]

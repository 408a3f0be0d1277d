"""core_course_get_courses_by_field, core_course_create_courses and core_webservice_get_site_info."""

from __future__ import annotations

import re
import time

from simulator.context import CallContext
from simulator.errors import invalid_parameter, missing_record, moodle_exception
from simulator.params import DEFAULT, OPTIONAL, Multiple, Single, Value
from simulator.userview import fullname
from simulator.ws_cohorts import CATEGORIES

SITE_COURSE_ID = 1

BY_FIELD_PARAMS = Single({"field": Value("alpha", DEFAULT, ""), "value": Value("raw", DEFAULT, "")})
CREATE_PARAMS = Single(
    {
        "courses": Multiple(
            Single(
                {
                    "fullname": Value("text"),
                    "shortname": Value("text"),
                    "categoryid": Value("int"),
                    "idnumber": Value("raw", OPTIONAL),
                    "summary": Value("raw", OPTIONAL),
                    "summaryformat": Value("int", DEFAULT, 1),
                    "format": Value("plugin", DEFAULT, "topics"),
                    "startdate": Value("int", OPTIONAL),
                    "enddate": Value("int", OPTIONAL),
                    "visible": Value("int", OPTIONAL),
                    "lang": Value("lang", OPTIONAL),
                }
            )
        )
    }
)
SITE_INFO_PARAMS = Single({"serviceshortnames": Multiple(Value("alphanumext"), DEFAULT, [])})


# Shown only to a caller with moodle/course:update on the course ("information for managers only").
MANAGER_FIELDS = ("idnumber", "legacyfiles", "calendartype", "timecreated", "timemodified", "requested",
                  "cacherev")  # fmt: skip


def course_view(ctx: CallContext, course: dict) -> dict:
    category = CATEGORIES.get(course["categoryid"], {"name": ""})
    enrolmethods = sorted(
        {
            i["enrol"]
            for i in ctx.state.enrol_instances.values()
            if i["courseid"] == course["id"] and i["status"] == 0
        }
    )
    view = {
        "id": course["id"],
        "fullname": course["fullname"],
        "displayname": course["fullname"],
        "shortname": course["shortname"],
        "categoryid": course["categoryid"],
        "categoryname": category["name"],
        "sortorder": 10000 + course["id"],
        "summary": course["summary"],
        "summaryformat": 1,
        "summaryfiles": [],
        "overviewfiles": [],
        "showactivitydates": True,
        "showcompletionconditions": True,
        "contacts": [],
        "enrollmentmethods": enrolmethods,
        "idnumber": course["idnumber"],
        "format": course["format"],
        "showgrades": 1,
        "newsitems": 5,
        "startdate": course["startdate"],
        "enddate": course["enddate"],
        "maxbytes": 0,
        "showreports": 0,
        "visible": course["visible"],
        "groupmode": 0,
        "groupmodeforce": 0,
        "defaultgroupingid": 0,
        "enablecompletion": 1,
        "completionnotify": 0,
        "lang": "",
        "theme": "",
        "marker": 0,
        "legacyfiles": 0,
        "calendartype": "",
        "timecreated": course["timecreated"],
        "timemodified": course["timemodified"],
        "requested": 0,
        "cacherev": course["timemodified"],
        "filters": [],
        "courseformatoptions": [],
    }
    if not ctx.can("moodle/course:update"):
        view = {k: v for k, v in view.items() if k not in MANAGER_FIELDS}
    return view


def get_courses_by_field(ctx: CallContext, params: dict) -> dict:
    """The site course (id 1, category 0) is a course like the others here: no field lists it too."""
    field, value = params["field"], params["value"]
    courses = sorted(ctx.state.courses.values(), key=lambda c: c["id"])
    if field == "":
        pass
    elif field in ("id", "category"):
        if not re.fullmatch(r"0|-?[1-9][0-9]*", value):
            raise invalid_parameter(
                f'Invalid external api parameter: the value is "{value}", the server was expecting "int" type'
            )
        key = "id" if field == "id" else "categoryid"
        courses = [c for c in courses if c[key] == int(value)]
    elif field == "ids":
        wanted = dict.fromkeys(int(v) for v in value.split(",") if v.strip().isdigit())
        by_id = {c["id"]: c for c in courses}
        courses = [by_id[i] for i in wanted if i in by_id]  # validate_courses(): in the order asked
    elif field in ("shortname", "idnumber"):
        courses = [c for c in courses if c[field] == value]
    else:
        raise invalid_parameter("Invalid field name")
    # Courses the caller may not see are skipped, not reported.
    sees_hidden = ctx.can("moodle/course:viewhiddencourses") or ctx.can("moodle/course:update")
    visible = [c for c in courses if ctx.can("moodle/course:view") and (c["visible"] or sees_hidden)]
    return {"courses": [course_view(ctx, c) for c in visible], "warnings": []}


def create_courses(ctx: CallContext, params: dict) -> list[dict]:
    ctx.require("moodle/course:create")
    staged: list[dict] = []
    for data in params["courses"]:
        if data["categoryid"] not in CATEGORIES:
            raise missing_record(
                "course_categories", "SELECT * FROM {course_categories} WHERE id = ?", ctx.debug
            )
        existing = list(ctx.state.courses.values()) + staged
        if any(c["shortname"] == data["shortname"] for c in existing):
            raise moodle_exception(
                "shortnametaken", f"Short name is already used for another course ({data['shortname']})"
            )
        if data.get("idnumber") and any(c["idnumber"] == data["idnumber"] for c in existing):
            raise moodle_exception(
                "courseidnumbertaken", f"ID number is already used for another course ({data['idnumber']})"
            )
        now = int(time.time())
        staged.append(
            {
                "id": 0,
                "fullname": data["fullname"],
                "shortname": data["shortname"],
                "categoryid": data["categoryid"],
                "idnumber": data.get("idnumber", ""),
                "summary": data.get("summary", ""),
                "format": data["format"],
                "visible": data.get("visible", 1),
                "startdate": data.get("startdate", now),
                "enddate": data.get("enddate", 0),
                "timecreated": now,
                "timemodified": now,
            }
        )
    for course in staged:
        add_course(ctx.state, course)
    return [{"id": c["id"], "shortname": c["shortname"]} for c in staged]


def add_course(state, course: dict, *, manual: bool = True) -> dict:
    """Insert a course with the default manual enrolment instance (unless ``manual`` is False)."""
    course["id"] = state.take_id("course")
    state.courses[course["id"]] = course
    if manual:
        instanceid = state.take_id("enrol")
        state.enrol_instances[instanceid] = {
            "id": instanceid,
            "courseid": course["id"],
            "enrol": "manual",
            "status": 0,
            "roleid": 5,
        }
    return course


def get_site_info(ctx: CallContext, params: dict) -> dict:
    user = ctx.state.users[ctx.userid]
    allowed = ctx.token.get("functions")
    names = sorted(ctx.implemented) if allowed is None else [n for n in allowed if n in ctx.implemented]
    return {
        "sitename": ctx.config.sitename,
        "username": user["username"],
        "firstname": user["firstname"],
        "lastname": user["lastname"],
        "fullname": fullname(user),
        "lang": user["lang"],
        "userid": user["id"],
        "siteurl": ctx.wwwroot,
        "userpictureurl": f"{ctx.wwwroot}/theme/image.php/boost/core/1/u/f1",
        "functions": [{"name": n, "version": ctx.config.version} for n in names],
        "downloadfiles": 0,
        "uploadfiles": 0,
        "release": ctx.config.release,
        "version": ctx.config.version,
        "mobilecssurl": "",
        "advancedfeatures": [{"name": "usecomments", "value": 1}],
        "usercanmanageownfiles": True,
        "userquota": 104857600,
        "usermaxuploadfilesize": 104857600,
        "userhomepage": 1,
        "userprivateaccesskey": "",
        "siteid": SITE_COURSE_ID,
        "sitecalendartype": "gregorian",
        "usercalendartype": "gregorian",
        "userissiteadmin": False,
        "theme": "boost",
        "limitconcurrentlogins": 0,
        "policyagreed": 0,
    }

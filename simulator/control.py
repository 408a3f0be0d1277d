"""The ``/_sim/`` control API: tokens, direct user edits (drift), switches, faults and stats, and the
``local_integrationhub`` plugin's hook (``/_sim/hook``): a change made here fires the event Moodle would.

JSON in, JSON out. It exists only when the app is built with ``control=True`` because it lets
anyone rewrite the site.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from simulator.context import CallContext
from simulator.hook import WAIT_TIMEOUT_S, event_task, site_address
from simulator.state import DEFAULT_ASSIGNABLE_ROLES, ROLES, new_user
from simulator.tokens import create_token
from simulator.ws_course import add_course
from simulator.ws_users import scramble_and_delete

if TYPE_CHECKING:
    from simulator.app import SimulatorApp

Response = tuple[str, list, bytes]


class ControlError(Exception):
    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


def _json(status: str, data: Any) -> Response:
    return status, [("Content-Type", "application/json")], json.dumps(data, ensure_ascii=False).encode()


def _body(environ: dict) -> dict:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(length) if length else b""
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ControlError("400 Bad Request", f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ControlError("400 Bad Request", "body must be a JSON object")
    return data


def public_user(user: dict) -> dict:
    return {k: v for k, v in user.items() if k != "password"}


def handle(app: SimulatorApp, environ: dict) -> Response:
    method = environ.get("REQUEST_METHOD", "GET")
    path = environ.get("PATH_INFO", "")[len("/_sim") :].rstrip("/")
    try:
        for pattern, verb, view in _ROUTES:
            match = re.fullmatch(pattern, path)
            if match and verb == method:
                return view(app, environ, *match.groups())
        raise ControlError("404 Not Found", f"no control route {method} /_sim{path}")
    except ControlError as exc:
        return _json(exc.status, {"error": str(exc)})
    except (ValueError, KeyError, TypeError) as exc:
        return _json("400 Bad Request", {"error": f"{type(exc).__name__}: {exc}"})


def _post_token(app: SimulatorApp, environ: dict) -> Response:
    data = _body(environ)
    if not data.get("token"):
        raise ControlError("400 Bad Request", "token is required")
    result = create_token(
        app.state,
        data["token"],
        username=data.get("username") or "wsuser",
        functions=data.get("functions"),
        capabilities=data.get("capabilities"),
        valid_until=data.get("valid_until"),
        iprestriction=data.get("iprestriction"),
        service_enabled=data.get("service_enabled", True),
        authorised=data.get("authorised", True),
    )
    if "assignable_roles" in data:
        with app.state.lock:
            app.state.user_assignable_roles[result["userid"]] = [int(r) for r in data["assignable_roles"]]
    app.save_state()
    return _json("200 OK", result)


def _delete_token(app: SimulatorApp, environ: dict, token: str) -> Response:
    with app.state.lock:
        existed = app.state.tokens.pop(token, None) is not None
    app.save_state()
    return _json("200 OK", {"token": token, "deleted": existed})


def _user(app: SimulatorApp, userid: str) -> dict:
    user = app.state.users.get(int(userid))
    if user is None:
        raise ControlError("404 Not Found", f"no user {userid}")
    return user


def _set_suspended(app: SimulatorApp, userid: str, value: int) -> Response:
    """admin/user.php's suspend/unsuspend: user_update_user() (user_updated) only when it changes."""
    events = []
    with app.state.lock:
        user = _user(app, userid)
        if user["suspended"] != value and not user["deleted"]:
            events.append(event_task("user_updated", user["id"]))
        user["suspended"] = value
        result = public_user(user)
    app.save_state()
    app.hook.emit(events)
    return _json("200 OK", result)


def _suspend(app: SimulatorApp, environ: dict, userid: str) -> Response:
    return _set_suspended(app, userid, 1)


def _unsuspend(app: SimulatorApp, environ: dict, userid: str) -> Response:
    return _set_suspended(app, userid, 0)


def _list_users(app: SimulatorApp, environ: dict) -> Response:
    with app.state.lock:
        users = [public_user(u) for u in sorted(app.state.users.values(), key=lambda u: u["id"])]
    return _json("200 OK", {"users": users})


def _post_user(app: SimulatorApp, environ: dict) -> Response:
    data = _body(environ)
    missing = [f for f in ("username",) if not data.get(f)]
    if missing:
        raise ControlError("400 Bad Request", f"missing field(s): {', '.join(missing)}")
    data.pop("id", None)
    with app.state.lock:
        user = new_user(**data)
        user["id"] = app.state.take_id("user")
        app.state.users[user["id"]] = user
        result = public_user(user)
    app.save_state()
    return _json("200 OK", result)


def _patch_user(app: SimulatorApp, environ: dict, userid: str) -> Response:
    data = _body(environ)
    data.pop("id", None)
    events = []
    with app.state.lock:
        user = _user(app, userid)
        user.update(data)
        if not user["deleted"]:
            events.append(event_task("user_updated", user["id"]))
        result = public_user(user)
    app.save_state()
    app.hook.emit(events)
    return _json("200 OK", result)


def _delete_user(app: SimulatorApp, environ: dict, userid: str) -> Response:
    ctx = CallContext(app.state, app.config, int(userid), frozenset(), "", {})
    with app.state.lock:
        user = _user(app, userid)
        if not user["deleted"]:
            scramble_and_delete(ctx, user)
        result = public_user(user)
    app.save_state()
    app.hook.emit(ctx.events)
    return _json("200 OK", result)


def _get_config(app: SimulatorApp, environ: dict) -> Response:
    return _json("200 OK", app.config.as_dict())


def _post_config(app: SimulatorApp, environ: dict) -> Response:
    data = _body(environ)
    revoke = data.pop("revoke_after", None)
    changed = app.config.update(data)
    if "degrade" in changed:
        app.faults.degrade_changed()
    if "seed" in changed:
        app.faults.reseed()
    if revoke:
        with app._revoke_lock:
            app.revoke_after[revoke["token"]] = int(revoke["calls"])
        if int(revoke["calls"]) <= 0:
            with app.state.lock:
                app.state.tokens.pop(revoke["token"], None)
    return _json("200 OK", app.config.as_dict())


def _get_stats(app: SimulatorApp, environ: dict) -> Response:
    data = app.stats.snapshot()
    data["degrade_started_at"] = app.faults.degrade_started_at
    return _json("200 OK", data)


def _reset(app: SimulatorApp, environ: dict) -> Response:
    app.stats.reset()
    return _get_stats(app, environ)


def _inject(app: SimulatorApp, environ: dict) -> Response:
    data = _body(environ)
    app.faults.inject(list(data.get("kinds", [])), data.get("function"))
    return _json("200 OK", {"queued": data.get("kinds", []), "function": data.get("function")})


def _hold(app: SimulatorApp, environ: dict) -> Response:
    function = _body(environ).get("function")
    if not function:
        raise ControlError("400 Bad Request", "function is required")
    app.faults.hold(function)
    return _json("200 OK", {"held": function})


def _release(app: SimulatorApp, environ: dict) -> Response:
    function = _body(environ).get("function")
    app.faults.release(function)
    return _json("200 OK", {"released": function or "all"})


def _post_course(app: SimulatorApp, environ: dict) -> Response:
    data = _body(environ)
    manual = bool(data.pop("manual", True))
    if not data.get("shortname"):
        raise ControlError("400 Bad Request", "shortname is required")
    course = {
        "fullname": data.get("fullname", data["shortname"]),
        "shortname": data["shortname"],
        "categoryid": 1,
        "idnumber": "",
        "summary": "",
        "format": "topics",
        "visible": 1,
        "startdate": 0,
        "enddate": 0,
        "timecreated": 0,
        "timemodified": 0,
    }
    course.update({k: v for k, v in data.items() if k in course})
    with app.state.lock:
        if any(c["shortname"] == course["shortname"] for c in app.state.courses.values()):
            raise ControlError("409 Conflict", f"shortname {course['shortname']} is taken")
        add_course(app.state, course, manual=manual)
    app.save_state()
    return _json("200 OK", course)


def _get_state(app: SimulatorApp, environ: dict) -> Response:
    return _json("200 OK", app.state.to_json())


def _role_holder(app: SimulatorApp, data: dict) -> int:
    """The user named by ``userid``, or else the user of token ``token``."""
    if data.get("userid") is not None:
        return int(_user(app, str(data["userid"]))["id"])
    token = app.state.tokens.get(data.get("token") or "")
    if token is None:
        raise ControlError("400 Bad Request", "userid or an existing token is required")
    return int(token["userid"])


def _post_assignable_roles(app: SimulatorApp, environ: dict) -> Response:
    """The roles a user may assign in courses (get_assignable_roles); ``roleids: null`` restores 3, 4, 5."""
    data = _body(environ)
    if "roleids" not in data:
        raise ControlError("400 Bad Request", "roleids is required (a list, or null for the default)")
    with app.state.lock:
        userid = _role_holder(app, data)
        if data["roleids"] is None:
            app.state.user_assignable_roles.pop(userid, None)
        else:
            app.state.user_assignable_roles[userid] = [int(r) for r in data["roleids"]]
        roleids = app.state.user_assignable_roles.get(userid, DEFAULT_ASSIGNABLE_ROLES)
    app.save_state()
    return _json("200 OK", {"userid": userid, "roleids": list(roleids)})


def _enrolment_row(app: SimulatorApp, enrolment: dict) -> dict:
    user = app.state.users.get(enrolment["userid"], {})
    course = app.state.courses.get(enrolment["courseid"], {})
    return {
        "course": course.get("shortname"),
        "userid": enrolment["userid"],
        "username": user.get("username"),
        "roles": sorted(enrolment["roles"]),
        "status": enrolment["status"],
        "timestart": enrolment["timestart"],
        "timeend": enrolment["timeend"],
    }


def _get_enrolments(app: SimulatorApp, environ: dict) -> Response:
    """Every enrolment, or those of ``?course=<shortname>``, ordered by course then user id."""
    shortname = parse_qs(environ.get("QUERY_STRING", "")).get("course", [None])[0]
    with app.state.lock:
        courseids = {c["id"] for c in app.state.courses.values() if shortname in (None, c["shortname"])}
        if not courseids:
            raise ControlError("404 Not Found", f"no course {shortname}")
        rows = [_enrolment_row(app, e) for e in app.state.enrolments if e["courseid"] in courseids]
    rows.sort(key=lambda r: (r["course"] or "", r["userid"]))
    return _json("200 OK", {"enrolments": rows})


def _course_named(app: SimulatorApp, shortname: object) -> dict:
    if not isinstance(shortname, str) or not shortname:
        raise ControlError("400 Bad Request", "course (a shortname) is required")
    course = next((c for c in app.state.courses.values() if c["shortname"] == shortname), None)
    if course is None:
        raise ControlError("404 Not Found", f"no course {shortname}")
    return course


def _live_user(app: SimulatorApp, userid: object) -> dict:
    if userid is None:
        raise ControlError("400 Bad Request", "userid is required")
    user = _user(app, str(int(userid)))
    if user["deleted"]:
        raise ControlError("409 Conflict", f"user {user['id']} is deleted")
    return user


def _status(value: object) -> int:
    if value not in (0, 1):
        raise ControlError("400 Bad Request", "status must be 0 (active) or 1 (suspended)")
    return int(value)


def _post_enrolment(app: SimulatorApp, environ: dict) -> Response:
    """Enrol a user by hand through the course's manual enrolment, or change that enrolment: only the
    fields given (status, timestart, timeend) change, as enrol_user()/update_user_enrol() do; a new role
    is added to the others. Fires user_enrolment_created, or user_enrolment_updated when the status or a
    date changed (a role alone is role_assigned, which the plugin does not observe)."""
    data = _body(environ)
    roleid = int(data.get("roleid", 5))
    if roleid not in ROLES:
        raise ControlError("400 Bad Request", f"no role {roleid}")
    changes = {"status": _status(data["status"])} if "status" in data else {}
    changes.update({k: int(data[k]) for k in ("timestart", "timeend") if k in data})
    events = []
    with app.state.lock:
        course = _course_named(app, data.get("course"))
        user = _live_user(app, data.get("userid"))
        instance = next(
            (
                i
                for i in app.state.enrol_instances.values()
                if i["courseid"] == course["id"] and i["enrol"] == "manual"
            ),
            None,
        )
        if instance is None:
            raise ControlError("409 Conflict", f"course {course['shortname']} has no manual enrolment")
        enrolment = next(
            (
                e
                for e in app.state.enrolments
                if e["instanceid"] == instance["id"] and e["userid"] == user["id"]
            ),
            None,
        )
        if enrolment is None:
            enrolment = {
                "instanceid": instance["id"],
                "courseid": course["id"],
                "userid": user["id"],
                "roles": [],
                "timecreated": int(time.time()),
                "status": 0,
                "timestart": 0,
                "timeend": 0,
            }
            enrolment.update(changes)
            app.state.enrolments.append(enrolment)
            change = "created"
        elif any(enrolment[k] != v for k, v in changes.items()):
            enrolment.update(changes)
            change = "updated"
        else:
            change = "unchanged"
        if roleid not in enrolment["roles"]:
            enrolment["roles"].append(roleid)
        if change != "unchanged":
            events.append(event_task(f"user_enrolment_{change}", user["id"], course["id"]))
        row = _enrolment_row(app, enrolment)
    app.save_state()
    app.hook.emit(events)
    return _json("200 OK", {"enrolment": row, "change": change})


def _delete_enrolment(app: SimulatorApp, environ: dict) -> Response:
    """Unenrol ``?course=<shortname>&userid=N`` by hand: every enrolment of the user in the course goes
    (one user_enrolment_deleted each); someone not enrolled is no change."""
    query = parse_qs(environ.get("QUERY_STRING", ""))
    with app.state.lock:
        course = _course_named(app, query.get("course", [None])[0])
        userid = query.get("userid", [None])[0]
        if userid is None:
            raise ControlError("400 Bad Request", "userid is required")
        user = _user(app, str(int(userid)))
        mine = [
            e for e in app.state.enrolments if e["courseid"] == course["id"] and e["userid"] == user["id"]
        ]
        for enrolment in mine:
            app.state.enrolments.remove(enrolment)
        events = [event_task("user_enrolment_deleted", user["id"], course["id"]) for _ in mine]
    app.save_state()
    app.hook.emit(events)
    return _json("200 OK", {"course": course["shortname"], "userid": user["id"], "deleted": bool(mine)})


def _post_completion(app: SimulatorApp, environ: dict) -> Response:
    """Mark a user's course complete (``timecompleted`` defaults to now): course_completed, once; a course
    already complete is no change (completion_completion::mark_complete() returns early)."""
    data = _body(environ)
    events = []
    with app.state.lock:
        course = _course_named(app, data.get("course"))
        user = _live_user(app, data.get("userid"))
        completion = next(
            (c for c in app.state.completions if c["courseid"] == course["id"] and c["userid"] == user["id"]),
            None,
        )
        if completion is None:
            completion = {
                "courseid": course["id"],
                "userid": user["id"],
                "timecompleted": int(data.get("timecompleted") or time.time()),
            }
            app.state.completions.append(completion)
            events.append(event_task("course_completed", user["id"], course["id"]))
        row = {
            "course": course["shortname"],
            "userid": user["id"],
            "timecompleted": completion["timecompleted"],
        }
    app.save_state()
    app.hook.emit(events)
    return _json("200 OK", {"completion": row, "change": "created" if events else "unchanged"})


def _post_hook(app: SimulatorApp, environ: dict) -> Response:
    """Configure the plugin: hub URL and secret (both required), and optionally web_service_events,
    retry_delays, wwwroot (default: this request's address) and siteidentifier."""
    data = _body(environ)
    unknown = set(data) - {"url", "secret", "web_service_events", "retry_delays", "wwwroot", "siteidentifier"}
    if unknown:
        raise ControlError("400 Bad Request", f"unknown field(s): {', '.join(sorted(unknown))}")
    if not isinstance(data.get("web_service_events", True), bool):
        raise ControlError("400 Bad Request", "web_service_events must be true or false")
    app.hook.configure(
        data.get("url"),
        data.get("secret"),
        web_service_events=data.get("web_service_events", True),
        retry_delays=data.get("retry_delays"),
        wwwroot=data.get("wwwroot") or site_address(environ),
        siteidentifier=data.get("siteidentifier"),
    )
    return _json("200 OK", app.hook.describe())


def _delete_hook(app: SimulatorApp, environ: dict) -> Response:
    app.hook.disable()
    return _json("200 OK", app.hook.describe())


def _get_hook(app: SimulatorApp, environ: dict) -> Response:
    """The settings (never the secret) and the deliveries; ``?wait=1`` first waits until nothing is queued
    or in flight (``&timeout=S``, default 10, at most 60): ``drained`` says whether it got there."""
    query = parse_qs(environ.get("QUERY_STRING", ""))
    drained = None
    if query.get("wait", ["0"])[0] not in ("", "0", "false"):
        timeout = min(60.0, max(0.0, float(query.get("timeout", [WAIT_TIMEOUT_S])[0])))
        drained = app.hook.wait(timeout)
    answer = app.hook.describe()
    if drained is not None:
        answer["drained"] = drained
    return _json("200 OK", answer)


def _get_cohort_members(app: SimulatorApp, environ: dict, idnumber: str) -> Response:
    """The members of the cohort with this idnumber, by user id."""
    with contextlib.suppress(UnicodeError):
        idnumber = idnumber.encode("latin-1").decode("utf-8")  # WSGI hands the path over as latin-1
    with app.state.lock:
        cohort = next((c for c in app.state.cohorts.values() if c["idnumber"] == idnumber), None)
        if cohort is None:
            raise ControlError("404 Not Found", f"no cohort with idnumber {idnumber}")
        members = [
            {"userid": u, "username": app.state.users.get(u, {}).get("username")}
            for u in sorted(app.state.cohort_members.get(cohort["id"], []))
        ]
    summary = {"id": cohort["id"], "idnumber": idnumber, "name": cohort["name"]}
    return _json("200 OK", {"cohort": summary, "members": members})


_ROUTES = [
    (r"/tokens", "POST", _post_token),
    (r"/tokens/([^/]+)", "DELETE", _delete_token),
    (r"/users/(\d+)/suspend", "POST", _suspend),
    (r"/users/(\d+)/unsuspend", "POST", _unsuspend),
    (r"/users", "GET", _list_users),
    (r"/users", "POST", _post_user),
    (r"/users/(\d+)", "PATCH", _patch_user),
    (r"/users/(\d+)", "DELETE", _delete_user),
    (r"/config", "GET", _get_config),
    (r"/config", "POST", _post_config),
    (r"/stats", "GET", _get_stats),
    (r"/reset", "POST", _reset),
    (r"/inject", "POST", _inject),
    (r"/hold", "POST", _hold),
    (r"/release", "POST", _release),
    (r"/courses", "POST", _post_course),
    (r"/state", "GET", _get_state),
    (r"/assignable-roles", "POST", _post_assignable_roles),
    (r"/enrolments", "GET", _get_enrolments),
    (r"/enrolments", "POST", _post_enrolment),
    (r"/enrolments", "DELETE", _delete_enrolment),
    (r"/completions", "POST", _post_completion),
    (r"/hook", "GET", _get_hook),
    (r"/hook", "POST", _post_hook),
    (r"/hook", "DELETE", _delete_hook),
    (r"/cohorts/([^/]+)/members", "GET", _get_cohort_members),
]

"""The ``/_sim/`` control API: tokens, direct user edits (drift), switches, faults and stats.

JSON in, JSON out. It exists only when the app is built with ``control=True`` because it lets
anyone rewrite the site.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from simulator.context import CallContext
from simulator.state import DEFAULT_ASSIGNABLE_ROLES, new_user
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
    with app.state.lock:
        user = _user(app, userid)
        user["suspended"] = value
        result = public_user(user)
    app.save_state()
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
    with app.state.lock:
        user = _user(app, userid)
        user.update(data)
        result = public_user(user)
    app.save_state()
    return _json("200 OK", result)


def _delete_user(app: SimulatorApp, environ: dict, userid: str) -> Response:
    with app.state.lock:
        user = _user(app, userid)
        if not user["deleted"]:
            ctx = CallContext(app.state, app.config, user["id"], frozenset(), "", {})
            scramble_and_delete(ctx, user)
        result = public_user(user)
    app.save_state()
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
    (r"/cohorts/([^/]+)/members", "GET", _get_cohort_members),
]

"""core_cohort_* functions."""

from __future__ import annotations

import time

from simulator.context import CallContext
from simulator.errors import invalid_parameter, missing_record, nopermissions
from simulator.params import DEFAULT, OPTIONAL, Multiple, Single, Value
from simulator.userview import name_order

CATEGORIES = {1: {"id": 1, "name": "Category 1", "idnumber": ""}}

_TYPED = Single({"type": Value("alphanumext"), "value": Value("raw")})
CREATE_PARAMS = Single(
    {
        "cohorts": Multiple(
            Single(
                {
                    "categorytype": Single({"type": Value("text"), "value": Value("raw")}),
                    "name": Value("raw"),
                    "idnumber": Value("raw"),
                    "description": Value("raw", OPTIONAL),
                    "descriptionformat": Value("int", DEFAULT, 1),
                    "visible": Value("bool", OPTIONAL),
                    "theme": Value("plugin", OPTIONAL),
                }
            )
        )
    }
)
GET_PARAMS = Single({"cohortids": Multiple(Value("int"), DEFAULT, [])})
ADD_MEMBERS_PARAMS = Single({"members": Multiple(Single({"cohorttype": _TYPED, "usertype": _TYPED}))})
DELETE_MEMBERS_PARAMS = Single(
    {"members": Multiple(Single({"cohortid": Value("int"), "userid": Value("int")}))}
)
GET_MEMBERS_PARAMS = Single({"cohortids": Multiple(Value("int"))})


def cohort_view(cohort: dict) -> dict:
    return {
        "id": cohort["id"],
        "name": cohort["name"],
        "idnumber": cohort["idnumber"],
        "description": cohort["description"],
        "descriptionformat": cohort["descriptionformat"],
        "visible": bool(cohort["visible"]),
        "theme": cohort.get("theme", ""),
    }


def _require_view(ctx: CallContext) -> None:
    if not (ctx.can("moodle/cohort:view") or ctx.can("moodle/cohort:manage")):
        raise nopermissions("moodle/cohort:view")


def _require_assign(ctx: CallContext) -> None:
    if not (ctx.can("moodle/cohort:assign") or ctx.can("moodle/cohort:manage")):
        raise nopermissions("moodle/cohort:assign")


def create_cohorts(ctx: CallContext, params: dict) -> list[dict]:
    staged = []
    for data in params["cohorts"]:
        ctype = data["categorytype"]
        if ctype["type"] not in ("id", "idnumber", "system"):
            raise invalid_parameter(f"category type must be id, idnumber or system:{ctype['type']}")
        if ctype["type"] != "system" and not any(
            str(c[ctype["type"]]) == ctype["value"] for c in CATEGORIES.values()
        ):
            raise invalid_parameter(f"category not exists: category {ctype['type']} = {ctype['value']}")
        taken = {c["idnumber"] for c in ctx.state.cohorts.values()} | {c["idnumber"] for c in staged}
        if data["idnumber"] in taken:
            raise invalid_parameter(f"record already exists: idnumber={data['idnumber']}")
        ctx.require("moodle/cohort:manage")
        staged.append(
            {
                "id": 0,
                "name": data["name"],
                "idnumber": data["idnumber"],
                "description": data.get("description", ""),
                "descriptionformat": data["descriptionformat"],
                "visible": int(data.get("visible", True)),
                "theme": data.get("theme", ""),
                "contextid": 1,
                "timecreated": int(time.time()),
            }
        )
    for cohort in staged:
        cohort["id"] = ctx.state.take_id("cohort")
        ctx.state.cohorts[cohort["id"]] = cohort
        ctx.state.cohort_members[cohort["id"]] = []
    return [cohort_view(c) for c in staged]


def _cohort(ctx: CallContext, cohortid: int) -> dict:
    cohort = ctx.state.cohorts.get(cohortid)
    if cohort is None:
        raise missing_record("cohort", "SELECT * FROM {cohort} WHERE id = ?", ctx.debug)
    return cohort


def get_cohorts(ctx: CallContext, params: dict) -> list[dict]:
    """Unknown ids are skipped (get_records_list), not reported; the capability is checked per cohort."""
    ids = params["cohortids"] or sorted(ctx.state.cohorts)
    result = []
    for cohort in (ctx.state.cohorts[i] for i in sorted(set(ids)) if i in ctx.state.cohorts):
        _require_view(ctx)
        result.append(dict(cohort_view(cohort), customfields=[]))
    return result


def _warning(code: str, message: str) -> dict:
    return {"warningcode": code, "message": message}


def _lookup_member(ctx: CallContext, ctype: dict, utype: dict) -> tuple[int, int] | dict:
    """The (cohortid, userid) a member entry names, or the warning Moodle answers instead. Users are
    named by id or username only (not idnumber)."""
    if ctype["type"] not in ("id", "idnumber"):
        return _warning("1", f"invalid parameter: cohortype={ctype['type']}")
    if utype["type"] not in ("id", "username"):
        return _warning("1", f"invalid parameter: usertype={utype['type']}")
    cohort = next((c for c in ctx.state.cohorts.values() if str(c[ctype["type"]]) == ctype["value"]), None)
    if cohort is None:
        return _warning("2", f"cohort {ctype['type']}={ctype['value']} not exists")
    user = next(
        (
            u
            for u in ctx.state.users.values()
            if not u["deleted"] and u["mnethostid"] == 1 and str(u[utype["type"]]) == utype["value"]
        ),
        None,
    )
    if user is None:
        return _warning("2", f"user {utype['type']}={utype['value']} not exists")
    return cohort["id"], user["id"]


def add_cohort_members(ctx: CallContext, params: dict) -> dict:
    """One transaction: entries that only warn need no capability; the first real addition without
    moodle/cohort:assign (or :manage) fails the whole call."""
    warnings: list[dict] = []
    added: list[tuple[int, int]] = []
    for member in params["members"]:
        ctype, utype = member["cohorttype"], member["usertype"]
        found = _lookup_member(ctx, ctype, utype)
        if isinstance(found, dict):
            warnings.append(found)
        elif found in added or found[1] in ctx.state.cohort_members.get(found[0], []):
            warnings.append(
                _warning(
                    "3",
                    f"record already exists: cohort({ctype['type']}={ctype['value']} "
                    f"{utype['type']}={utype['value']})",
                )
            )
        else:
            _require_assign(ctx)
            added.append(found)
    for cohortid, userid in added:
        ctx.state.cohort_members.setdefault(cohortid, []).append(userid)
    return {"warnings": warnings}


def delete_cohort_members(ctx: CallContext, params: dict) -> None:
    """Per member: the cohort must exist, then the (non-deleted) user, then the capability."""
    pairs = []
    for member in params["members"]:
        _cohort(ctx, member["cohortid"])
        user = ctx.state.users.get(member["userid"])
        if user is None or user["deleted"]:
            raise missing_record(
                "user", "SELECT * FROM {user} WHERE id = ? AND deleted = ? AND mnethostid = ?", ctx.debug
            )
        _require_assign(ctx)
        pairs.append((member["cohortid"], member["userid"]))
    for cohortid, userid in pairs:
        members = ctx.state.cohort_members.setdefault(cohortid, [])
        if userid in members:
            members.remove(userid)
    return None


def get_cohort_members(ctx: CallContext, params: dict) -> list[dict]:
    """Members ORDER BY lastname, firstname (not by id, nor in the order they were added)."""
    result = []
    for cohortid in params["cohortids"]:
        _cohort(ctx, cohortid)
        _require_view(ctx)
        ids = [u for u in ctx.state.cohort_members.get(cohortid, []) if u in ctx.state.users]
        users = sorted((ctx.state.users[u] for u in ids), key=name_order)
        result.append({"cohortid": cohortid, "userids": [u["id"] for u in users]})
    return result

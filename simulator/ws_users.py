"""core_user_* functions: look-ups, create (all or nothing), update (per user), delete (scramble)."""

from __future__ import annotations

import hashlib
import re
import time

from simulator.context import CallContext
from simulator.errors import coding_error, invalid_parameter, missing_record, moodle_exception
from simulator.hook import deleted_user_task, event_task
from simulator.params import DEFAULT, OPTIONAL, Multiple, Single, Value, clean_username, is_valid_email
from simulator.state import ADMIN_ID, GUEST_ID, new_user
from simulator.userview import user_details

KNOWN_AUTHS = {"manual", "nologin", "email", "oauth2", "saml2", "ldap", "db", "cas", "shibboleth", "lti"}
INTERNAL_AUTHS = {"manual", "nologin", "email"}
# Every column of the user table; a look-up on anything else is a coding error in Moodle 5.x.
USER_PROPERTIES = {
    "id",
    "auth",
    "confirmed",
    "username",
    "idnumber",
    "firstname",
    "lastname",
    "email",
    "city",
    "country",
    "lang",
    "timezone",
    "department",
    "institution",
    "suspended",
    "deleted",
}

_CUSTOMFIELDS = Multiple(Single({"type": Value("alphanumext"), "value": Value("raw")}), OPTIONAL)
_PREFERENCES = Multiple(Single({"type": Value("raw"), "value": Value("raw")}), OPTIONAL)
_PROFILE = {
    "maildisplay": Value("int", OPTIONAL),
    "city": Value("notags", OPTIONAL),
    "country": Value("alpha", OPTIONAL),
    "timezone": Value("timezone", OPTIONAL),
    "description": Value("raw", OPTIONAL),
    "firstnamephonetic": Value("notags", OPTIONAL),
    "lastnamephonetic": Value("notags", OPTIONAL),
    "middlename": Value("notags", OPTIONAL),
    "alternatename": Value("notags", OPTIONAL),
    "interests": Value("text", OPTIONAL),
    "institution": Value("text", OPTIONAL),
    "department": Value("text", OPTIONAL),
    "phone1": Value("notags", OPTIONAL),
    "phone2": Value("notags", OPTIONAL),
    "address": Value("text", OPTIONAL),
    "theme": Value("plugin", OPTIONAL),
    "mailformat": Value("int", OPTIONAL),
    "customfields": _CUSTOMFIELDS,
    "preferences": _PREFERENCES,
}

CREATE_PARAMS = Single(
    {
        "users": Multiple(
            Single(
                {
                    "createpassword": Value("bool", OPTIONAL),
                    "username": Value("username"),
                    "auth": Value("plugin", DEFAULT, "manual"),
                    "password": Value("raw", OPTIONAL),
                    "firstname": Value("notags"),
                    "lastname": Value("notags"),
                    "email": Value("email"),
                    "idnumber": Value("raw", DEFAULT, ""),
                    "lang": Value("lang", DEFAULT, "en"),
                    "calendartype": Value("plugin", DEFAULT, "gregorian"),
                    **_PROFILE,
                }
            )
        )
    }
)
UPDATE_PARAMS = Single(
    {
        "users": Multiple(
            Single(
                {
                    "id": Value("int"),
                    "username": Value("username", OPTIONAL),
                    "auth": Value("plugin", OPTIONAL),
                    "suspended": Value("bool", OPTIONAL),
                    "password": Value("raw", OPTIONAL),
                    "firstname": Value("notags", OPTIONAL),
                    "lastname": Value("notags", OPTIONAL),
                    # Unlike create's, update's email is any string: a bad one is a per-user warning.
                    "email": Value("raw", OPTIONAL),
                    "idnumber": Value("raw", OPTIONAL),
                    "lang": Value("lang", OPTIONAL),
                    "calendartype": Value("plugin", OPTIONAL),
                    "userpicture": Value("int", OPTIONAL),
                    **_PROFILE,
                }
            )
        )
    }
)
DELETE_PARAMS = Single({"userids": Multiple(Value("int"))})
BY_FIELD_PARAMS = Single({"field": Value("alpha"), "values": Multiple(Value("raw"))})
GET_USERS_PARAMS = Single({"criteria": Multiple(Single({"key": Value("alpha"), "value": Value("raw")}))})


def password_policy_errors(password: str) -> str:
    """check_password_policy() with Moodle's default policy; the HTML it builds, empty when fine."""
    rules = [
        (len(password) >= 8, "Passwords must be at least 8 characters long."),
        (re.search(r"[0-9]", password), "Passwords must have at least 1 digit(s)."),
        (re.search(r"[a-z]", password), "Passwords must have at least 1 lower case letter(s)."),
        (re.search(r"[A-Z]", password), "Passwords must have at least 1 upper case letter(s)."),
        (
            re.search(r"[^a-zA-Z0-9]", password),
            "Passwords must have at least 1 special character(s) such as as *, -, or #.",
        ),
    ]
    return "".join(f"<div>{text}</div>" for ok, text in rules if not ok)


def _hash(password: str) -> str:
    return "sim$" + hashlib.sha256(password.encode()).hexdigest()


def _live_users(ctx: CallContext) -> list[dict]:
    return [u for u in ctx.state.users.values() if not u["deleted"]]


def _apply_profile(user: dict, fields: dict) -> None:
    for key, value in fields.items():
        if key == "customfields":
            # Unknown field types are dropped afterwards, silently, as profile_save_data() does.
            for item in value:
                user["customfields"][item["type"]] = item["value"]
        elif key == "preferences":
            for item in value:
                user["preferences"][item["type"]] = item["value"]
        elif key in ("createpassword", "userpicture"):
            continue
        elif key == "suspended":
            user["suspended"] = int(value)
        elif key == "password":
            user["password"] = _hash(value) if value else ""
        else:
            user[key] = value


def _drop_unknown_customfields(ctx: CallContext, user: dict) -> None:
    known = {f["shortname"] for f in ctx.state.profile_fields}
    user["customfields"] = {k: v for k, v in user["customfields"].items() if k in known}


def create_users(ctx: CallContext, params: dict) -> list[dict]:
    ctx.require("moodle/user:create")
    staged: list[dict] = []
    live = _live_users(ctx)
    for data in params["users"]:
        for name in ("username", "firstname", "lastname"):
            if data[name].strip() == "":
                raise invalid_parameter(f"The field {name} cannot be blank")
        if any(u["username"] == data["username"] for u in live + staged):
            raise invalid_parameter(f"Username already exists: {data['username']}")
        if data["auth"] not in KNOWN_AUTHS:
            raise invalid_parameter(f"Invalid authentication type: {data['auth']}")
        internal = data["auth"] in INTERNAL_AUTHS
        if internal and not data.get("password") and not data.get("createpassword"):
            raise invalid_parameter("Invalid password: you must provide a password, or set createpassword.")
        if not is_valid_email(data["email"]):
            raise invalid_parameter(f"Email address is invalid: {data['email']}")
        if not ctx.config.allowaccountssameemail:
            wanted = data["email"].lower()
            if any(u["email"].lower() == wanted for u in live + staged):
                raise invalid_parameter(f"Email address already exists: {data['email']}")
        if internal and not data.get("createpassword") and data.get("password"):
            errors = password_policy_errors(data["password"])
            if errors:
                raise moodle_exception(errors, f"error/{errors}")
        user = new_user(id=0)
        _apply_profile(user, data)
        if not internal or data.get("createpassword"):
            user["password"] = "not cached" if not internal else ""
        _drop_unknown_customfields(ctx, user)
        staged.append(user)
    # One transaction: ids are handed out only once every user has passed.
    for user in staged:
        user["id"] = ctx.state.take_id("user")
        ctx.state.users[user["id"]] = user
    return [{"id": u["id"], "username": u["username"]} for u in staged]


def _warning(userid: int, code: str, message: str) -> dict:
    return {"item": "user", "itemid": userid, "warningcode": code, "message": message}


def update_users(ctx: CallContext, params: dict) -> dict:
    ctx.require("moodle/user:update")
    warnings: list[dict] = []
    for data in params["users"]:
        userid = data["id"]
        existing = ctx.state.users.get(userid)
        if existing is None:
            warnings.append(_warning(userid, "invaliduserid", "Invalid user ID"))
            continue
        if existing["deleted"]:
            warnings.append(_warning(userid, "usernotupdateddeleted", "User is a deleted user"))
            continue
        if userid == GUEST_ID:
            warnings.append(_warning(userid, "usernotupdatedguest", "Cannot update guest account"))
            continue
        if userid == ADMIN_ID and ctx.userid != ADMIN_ID:
            warnings.append(_warning(userid, "usernotupdatedadmin", "Cannot update admin accounts"))
            continue
        if "email" in data and data["email"] != existing["email"]:
            if not is_valid_email(data["email"]):
                warnings.append(_warning(userid, "useremailinvalid", "Invalid email address"))
                continue
            if not ctx.config.allowaccountssameemail and any(
                u["email"].lower() == data["email"].lower() and u["id"] != userid for u in _live_users(ctx)
            ):
                warnings.append(_warning(userid, "useremailduplicate", "Duplicate email address"))
                continue
        if "username" in data and any(
            u["username"] == data["username"] and u["id"] != userid for u in ctx.state.users.values()
        ):
            # The unique index on username fails the update's own transaction.
            warnings.append(_warning(userid, "dmlwriteexception", "Error writing to database"))
            continue
        if data.get("password") and existing["auth"] in INTERNAL_AUTHS:
            errors = password_policy_errors(data["password"])
            if errors:
                warnings.append(_warning(userid, errors, f"error/{errors}"))
                continue
        changes = {k: v for k, v in data.items() if k != "id"}
        _apply_profile(existing, changes)
        _drop_unknown_customfields(ctx, existing)
        existing["timemodified"] = int(time.time())
        ctx.events.append(event_task("user_updated", userid))  # user_update_user() triggers it
    return {"warnings": warnings}


def scramble_and_delete(ctx: CallContext, user: dict) -> None:
    """delete_user(): keep the row, free the username/email/idnumber for reuse.

    Events, in Moodle's order: enrol_user_delete() unenrols the user from every course first (one
    user_enrolment_deleted each), then user_deleted, with the values from before the scramble."""
    ctx.events.extend(
        event_task("user_enrolment_deleted", user["id"], e["courseid"])
        for e in ctx.state.enrolments
        if e["userid"] == user["id"]
    )
    ctx.events.append(deleted_user_task(user))
    stamp = int(time.time())
    taken = {u["username"] for u in ctx.state.users.values()}
    delname = clean_username(f"{user['email']}.{stamp}")
    while delname in taken:
        stamp += 1
        delname = clean_username(f"{user['email']}.{stamp}")
    user.update(
        deleted=1,
        username=delname,
        email=hashlib.md5(user["username"].encode()).hexdigest(),  # noqa: S324
        idnumber="",
        timemodified=int(time.time()),
    )
    for members in ctx.state.cohort_members.values():
        if user["id"] in members:
            members.remove(user["id"])
    ctx.state.enrolments[:] = [e for e in ctx.state.enrolments if e["userid"] != user["id"]]


def delete_users(ctx: CallContext, params: dict) -> None:
    ctx.require("moodle/user:delete")
    targets = []
    for userid in params["userids"]:
        user = ctx.state.users.get(userid)
        if user is None or user["deleted"]:
            raise missing_record("user", "SELECT * FROM {user} WHERE id = ? AND deleted = ?", ctx.debug)
        if userid == ADMIN_ID:
            raise moodle_exception("useradminodelete", "You can not delete admin accounts")
        if userid == GUEST_ID:
            raise moodle_exception("guestnodeleteaccount", "The guest account can not be deleted")
        targets.append(user)
    for user in targets:
        scramble_and_delete(ctx, user)
    return None


_LOOKUP_TYPES = {"id": "int", "idnumber": "raw", "username": "username", "email": "email"}


def get_users_by_field(ctx: CallContext, params: dict) -> list[dict]:
    field = params["field"]
    if field not in USER_PROPERTIES:
        raise coding_error(f"Invalid property requested: {field}")
    if field not in _LOOKUP_TYPES:
        raise invalid_parameter(
            f"The search field '{field}' is not supported, look at the web service documentation"
        )
    wanted: list = []
    for value in params["values"]:
        cleaned = _clean_lookup(value, _LOOKUP_TYPES[field])
        if str(cleaned) != value:
            raise invalid_parameter(
                f"The field '{field}' value is invalid: {value}(cleaned value: {cleaned})"
            )
        wanted.append(cleaned)
    found = [u for u in sorted(ctx.state.users.values(), key=lambda u: u["id"]) if u[field] in wanted]
    # A user is returned only when the searched field is among what the caller may see of them.
    details = (user_details(ctx, user) for user in found)
    return [d for d in details if d is not None and d.get(field)]


def _clean_lookup(value: str, ptype: str) -> object:
    if ptype == "int":
        return int(value) if re.fullmatch(r"0|-?[1-9][0-9]*", value) else 0
    if ptype == "username":
        return clean_username(value)
    if ptype == "email":
        return value if is_valid_email(value) else ""
    return value


_CRITERIA_LIKE = {"firstname", "lastname", "email"}
_CRITERIA_ALLOWED = ("id", "idnumber", "username", "email", "auth", "lastname", "firstname")


def _like(pattern: str, value: str) -> bool:
    """SQL ILIKE: % and _ are wildcards, case-insensitive, whole value."""
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, flags=re.IGNORECASE | re.DOTALL) is not None


def get_users(ctx: CallContext, params: dict) -> dict:
    warnings: list[dict] = []
    used: dict[str, str] = {}
    for crit in params["criteria"]:
        key, value = crit["key"], crit["value"]
        if key not in _CRITERIA_ALLOWED:
            warnings.append(
                {
                    "item": key,
                    "warningcode": "invalidfieldparameter",
                    "message": f"The search key '{key}' is not supported, "
                    "look at the web service documentation",
                }
            )
            continue
        if key in used:
            raise moodle_exception("keyalreadyset", f"The key {key} can only be sent once")
        if key == "id" and not re.fullmatch(r"0|-?[1-9][0-9]*", value):
            warnings.append(
                {
                    "item": key,
                    "warningcode": "invalidfieldparameter",
                    "message": f"The search key '{key}' has invalid value",
                }
            )
            continue
        used[key] = value
    if not used:
        return {"users": [], "warnings": warnings}
    matches = []
    for user in sorted(_live_users(ctx), key=lambda u: u["id"]):
        if user["id"] == GUEST_ID:
            continue
        ok = True
        for key, value in used.items():
            if key in _CRITERIA_LIKE:
                ok = ok and _like(value, user[key])
            elif key == "id":
                ok = ok and user["id"] == int(value)
            else:
                ok = ok and user[key] == value
        if ok:
            details = user_details(ctx, user)
            if details is not None and all(details.get(key) for key in used):
                matches.append(details)
    return {"users": matches, "warnings": warnings}

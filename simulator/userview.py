"""A user record as the web services show it to a given caller (user_get_user_details).

Moodle leaves out empty optional fields and hides fields the caller may not see; without
``moodle/user:viewdetails`` another user is not shown at all, which is why a token lacking it gets an
empty list from look-ups instead of an error. The caller always sees itself in full: a service user
finding itself proves nothing about what it can see of others. Of others, the username, idnumber and
auth need ``moodle/user:viewalldetails``, names ``moodle/site:viewfullnames``, and the email
``moodle/site:viewuseridentity`` (email is in Moodle's default showuseridentity) unless the user shows it
to everyone (maildisplay 1).
"""

from __future__ import annotations

import unicodedata

from simulator.context import CallContext

_OPTIONAL_TEXT = ("address", "phone1", "phone2", "department", "institution", "interests", "city", "country")
# Shown to others only with viewalldetails (or when in the site's showuseridentity, not simulated).
_IDENTITY = ("department", "institution", "address", "phone1", "phone2")


def fullname(user: dict) -> str:
    return f"{user['firstname']} {user['lastname']}".strip()


def collation_key(text: str) -> tuple[str, str]:
    """About how PostgreSQL's en_US.UTF-8 collation orders names: accents and case only break ties."""
    folded = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return folded.casefold(), text


def name_order(user: dict) -> tuple:
    """ORDER BY lastname, firstname (then id, where the database would leave the order open)."""
    return collation_key(user["lastname"]), collation_key(user["firstname"]), user["id"]


def custom_fields(ctx: CallContext, user: dict) -> list[dict]:
    fields = {f["shortname"]: f for f in ctx.state.profile_fields}
    result = []
    for shortname, value in user.get("customfields", {}).items():
        meta = fields.get(shortname)
        if meta is None or value in ("", None):
            continue
        result.append(
            {
                "type": meta["datatype"],
                "value": value,
                "displayvalue": value,
                "name": meta["name"],
                "shortname": shortname,
            }
        )
    return result


def user_details(ctx: CallContext, user: dict, *, in_course: bool = False) -> dict | None:
    """The dict Moodle returns for ``user``, or None when the caller may not see it.

    ``in_course``: shown as a course participant, where viewparticipants (already checked by the
    caller) stands in for viewdetails.
    """
    itself = user["id"] == ctx.userid
    if not itself and not in_course and not ctx.can("moodle/user:viewdetails"):
        return None
    all_details = itself or ctx.can("moodle/user:viewalldetails")
    details: dict = {"id": user["id"]}
    if all_details:
        details["username"] = user["username"]
    if ctx.can("moodle/site:viewfullnames"):
        details.update(firstname=user["firstname"], lastname=user["lastname"])
    details["fullname"] = fullname(user)
    for name in _OPTIONAL_TEXT:
        if user.get(name) and (name not in _IDENTITY or all_details):
            details[name] = user[name]
    if itself or user.get("maildisplay") == 1 or ctx.can("moodle/site:viewuseridentity"):
        details["email"] = user["email"]
    if all_details:
        if user["idnumber"]:
            details["idnumber"] = user["idnumber"]
        details.update(auth=user["auth"], confirmed=bool(user["confirmed"]))
    details.update(
        suspended=bool(user["suspended"]),
        firstaccess=user["firstaccess"],
        lastaccess=user["lastaccess"],
        lang=user["lang"],
        calendartype=user["calendartype"],
        theme=user["theme"],
        timezone=user["timezone"],
        mailformat=user["mailformat"],
        description=user["description"],
        descriptionformat=user["descriptionformat"],
        profileimageurlsmall=f"{ctx.wwwroot}/theme/image.php/boost/core/1/u/f2",
        profileimageurl=f"{ctx.wwwroot}/theme/image.php/boost/core/1/u/f1",
    )
    fields = custom_fields(ctx, user)
    if fields:
        details["customfields"] = fields
    return details

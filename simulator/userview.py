"""A user record as the web services show it to a given caller (user_get_user_details).

Moodle leaves out empty optional fields and hides fields the caller may not see; without
``moodle/user:viewdetails`` the user is not shown at all, which is why a token lacking it gets an
empty list from look-ups instead of an error.
"""

from __future__ import annotations

from simulator.context import CallContext

_OPTIONAL_TEXT = ("address", "phone1", "phone2", "department", "institution", "interests", "city", "country")


def fullname(user: dict) -> str:
    return f"{user['firstname']} {user['lastname']}".strip()


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
    if not in_course and not ctx.can("moodle/user:viewdetails"):
        return None
    details: dict = {
        "id": user["id"],
        "username": user["username"],
        "firstname": user["firstname"],
        "lastname": user["lastname"],
        "fullname": fullname(user),
    }
    for name in _OPTIONAL_TEXT:
        if user.get(name):
            details[name] = user[name]
    # email, idnumber, auth, suspended...: Moodle gates them behind several capabilities
    # (course:useremail, user:viewalldetails, user:update); viewhiddendetails stands for all here.
    if ctx.can("moodle/user:viewhiddendetails"):
        details.update(
            email=user["email"],
            idnumber=user["idnumber"],
            auth=user["auth"],
            suspended=bool(user["suspended"]),
            confirmed=bool(user["confirmed"]),
            firstaccess=user["firstaccess"],
            lastaccess=user["lastaccess"],
        )
        if not details["idnumber"]:
            del details["idnumber"]
    details.update(
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

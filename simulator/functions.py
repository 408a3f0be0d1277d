"""The registry of implemented web-service functions and the capabilities a full token needs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from simulator import ws_cohorts, ws_course, ws_enrol, ws_users
from simulator.context import CallContext
from simulator.params import Single


@dataclass(frozen=True)
class FunctionSpec:
    """One external function: its parameter description, its body and whether it changes state."""

    params: Single
    handler: Callable[[CallContext, dict], Any]
    writes: bool
    capabilities: tuple[str, ...] = ()


# What a look-up needs to see other users the way a site administrator does.
_SEE_USERS = (
    "moodle/user:viewdetails", "moodle/user:viewalldetails", "moodle/site:viewfullnames",
    "moodle/site:viewuseridentity",
)  # fmt: skip

FUNCTIONS: dict[str, FunctionSpec] = {
    "core_webservice_get_site_info": FunctionSpec(ws_course.SITE_INFO_PARAMS, ws_course.get_site_info, False),
    "core_user_get_users_by_field": FunctionSpec(
        ws_users.BY_FIELD_PARAMS,
        ws_users.get_users_by_field,
        False,
        _SEE_USERS,
    ),
    "core_user_get_users": FunctionSpec(
        ws_users.GET_USERS_PARAMS,
        ws_users.get_users,
        False,
        _SEE_USERS,
    ),
    "core_user_create_users": FunctionSpec(
        ws_users.CREATE_PARAMS, ws_users.create_users, True, ("moodle/user:create",)
    ),
    "core_user_update_users": FunctionSpec(
        ws_users.UPDATE_PARAMS, ws_users.update_users, True, ("moodle/user:update",)
    ),
    "core_user_delete_users": FunctionSpec(
        ws_users.DELETE_PARAMS, ws_users.delete_users, True, ("moodle/user:delete",)
    ),
    "core_cohort_create_cohorts": FunctionSpec(
        ws_cohorts.CREATE_PARAMS, ws_cohorts.create_cohorts, True, ("moodle/cohort:manage",)
    ),
    "core_cohort_get_cohorts": FunctionSpec(
        ws_cohorts.GET_PARAMS, ws_cohorts.get_cohorts, False, ("moodle/cohort:view",)
    ),
    "core_cohort_add_cohort_members": FunctionSpec(
        ws_cohorts.ADD_MEMBERS_PARAMS, ws_cohorts.add_cohort_members, True, ("moodle/cohort:assign",)
    ),
    "core_cohort_delete_cohort_members": FunctionSpec(
        ws_cohorts.DELETE_MEMBERS_PARAMS, ws_cohorts.delete_cohort_members, True, ("moodle/cohort:assign",)
    ),
    "core_cohort_get_cohort_members": FunctionSpec(
        ws_cohorts.GET_MEMBERS_PARAMS, ws_cohorts.get_cohort_members, False, ("moodle/cohort:view",)
    ),
    "enrol_manual_enrol_users": FunctionSpec(
        ws_enrol.ENROL_PARAMS, ws_enrol.enrol_users, True, ("enrol/manual:enrol",)
    ),
    "enrol_manual_unenrol_users": FunctionSpec(
        ws_enrol.UNENROL_PARAMS, ws_enrol.unenrol_users, True, ("enrol/manual:unenrol",)
    ),
    "core_enrol_get_enrolled_users": FunctionSpec(
        ws_enrol.ENROLLED_PARAMS,
        ws_enrol.get_enrolled_users,
        False,
        ("moodle/course:viewparticipants", "moodle/course:enrolreview"),
    ),
    "core_course_get_courses_by_field": FunctionSpec(
        ws_course.BY_FIELD_PARAMS,
        ws_course.get_courses_by_field,
        False,
        ("moodle/course:view", "moodle/course:viewhiddencourses", "moodle/course:update"),
    ),
    # Not in the hub's list, but the only way to meet Moodle's ``shortnametaken``.
    "core_course_create_courses": FunctionSpec(
        ws_course.CREATE_PARAMS, ws_course.create_courses, True, ("moodle/course:create",)
    ),
}


def all_capabilities() -> list[str]:
    """What a token created without an explicit capability list gets: everything the functions need."""
    caps = {"webservice/rest:use"}
    for spec in FUNCTIONS.values():
        caps.update(spec.capabilities)
    return sorted(caps)

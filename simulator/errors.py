"""Moodle's exceptions as the REST server reports them.

Each helper builds the exception a real Moodle 5.1 raises in that situation, with the class name
the web-service layer prints (namespaced for ``core\\exception`` classes, plain for the webservice
and DML ones) and the debuginfo text that only leaves the site when debugging is on.
"""

from __future__ import annotations

NS = "core\\exception\\"

# Missing-record error codes by table, as dml_missing_record_exception picks them once the table
# name is known; with debugging off the table is not reported and the code is the generic one.
_MISSING_BY_TABLE = {"user": "invaliduser", "course_modules": "invalidcoursemodule"}

CAPABILITY_NAMES = {
    "moodle/user:create": "Create users",
    "moodle/user:update": "Update user profiles",
    "moodle/user:delete": "Delete users",
    "moodle/cohort:manage": "Create, delete and move cohorts",
    "moodle/cohort:assign": "Add and remove cohort members",
    "moodle/cohort:view": "View site-wide cohorts",
    "enrol/manual:enrol": "Enrol users",
    "enrol/manual:unenrol": "Unenrol users from the course",
    "moodle/course:create": "Create courses",
    "moodle/course:viewparticipants": "View participants",
    "moodle/course:enrolreview": "Review course enrolments",
}


class MoodleError(Exception):
    """An exception the REST server turns into ``{"exception", "errorcode", "message", "debuginfo"}``."""

    def __init__(self, exception: str, errorcode: str, message: str, debuginfo: str | None = None) -> None:
        super().__init__(message)
        self.exception = exception
        self.errorcode = errorcode
        self.message = message
        self.debuginfo = debuginfo

    def as_dict(self, debug: bool | str) -> dict:
        """The JSON body; debuginfo only with debugging, folded into the message at developer level."""
        body = {"exception": self.exception, "errorcode": self.errorcode, "message": self.message}
        if debug == "developer" and self.debuginfo:
            body["message"] = f"{self.message} ({self.debuginfo})"
        elif debug is True and self.debuginfo is not None:
            body["debuginfo"] = self.debuginfo
        return body


def invalid_parameter(debuginfo: str) -> MoodleError:
    return MoodleError(
        NS + "invalid_parameter_exception", "invalidparameter", "Invalid parameter value detected", debuginfo
    )


def moodle_exception(errorcode: str, message: str, debuginfo: str | None = None) -> MoodleError:
    return MoodleError(NS + "moodle_exception", errorcode, message, debuginfo)


def invalid_token() -> MoodleError:
    return moodle_exception("invalidtoken", "Invalid token - token not found")


def access_exception(reason: str) -> MoodleError:
    return MoodleError("webservice_access_exception", "accessexception", "Access control exception", reason)


def nopermissions(capability: str) -> MoodleError:
    name = CAPABILITY_NAMES.get(capability, capability)
    return MoodleError(
        NS + "required_capability_exception",
        "nopermissions",
        f"Sorry, but you do not currently have permissions to do that ({name}).",
        capability,
    )


def coding_error(hint: str) -> MoodleError:
    return MoodleError(
        NS + "coding_exception",
        "codingerror",
        f"Coding error detected, it must be fixed by a programmer: {hint}",
        "",
    )


def missing_record(table: str, sql: str, debug: bool | str) -> MoodleError:
    """dml_missing_record_exception: the errorcode itself shifts with the debug level."""
    if debug:
        code = _MISSING_BY_TABLE.get(table, "invalidrecord")
        message = {
            "invaliduser": "Invalid user",
            "invalidrecord": f"Can't find data record in database table {table}.",
        }.get(code, "Invalid record")
    else:
        code = "invalidrecordunknown"
        message = "Can't find data record in database."
    return MoodleError("dml_missing_record_exception", code, message, sql)


def dml_write(error: str, sql: str) -> MoodleError:
    """dml_write_exception: the message never says why; only debuginfo carries the driver's error."""
    return MoodleError(
        "dml_write_exception",
        "dmlwriteexception",
        "Error writing to database",
        f"{error}\n{sql}\n[array (\n)]",
    )

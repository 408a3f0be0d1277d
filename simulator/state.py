"""The simulated site's data: users, tokens, cohorts, courses and enrolments.

Everything lives in plain dicts so it can be written to one JSON file and read back; one
re-entrant lock guards it because the server answers requests on many threads.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from typing import Any

# Moodle's standard roles (lib/db/install.php). Their `name` in the role table is empty: the names come
# from language strings, so core_enrol_get_enrolled_users shows "" for them.
ROLES = {
    1: {"shortname": "manager", "name": "Manager", "sortorder": 1},
    2: {"shortname": "coursecreator", "name": "Course creator", "sortorder": 2},
    3: {"shortname": "editingteacher", "name": "Teacher", "sortorder": 3},
    4: {"shortname": "teacher", "name": "Non-editing teacher", "sortorder": 4},
    5: {"shortname": "student", "name": "Student", "sortorder": 5},
    6: {"shortname": "guest", "name": "Guest", "sortorder": 6},
    7: {"shortname": "user", "name": "Authenticated user", "sortorder": 7},
    8: {"shortname": "frontpage", "name": "Authenticated user on site home", "sortorder": 8},
}
DEFAULT_ASSIGNABLE_ROLES = [3, 4, 5]
GUEST_ID, ADMIN_ID = 1, 2

_COLLECTIONS = (
    "users",
    "tokens",
    "cohorts",
    "cohort_members",
    "courses",
    "enrol_instances",
    "user_capabilities",
    "user_assignable_roles",
)
_INT_KEYED = (
    "users",
    "cohorts",
    "cohort_members",
    "courses",
    "enrol_instances",
    "user_capabilities",
    "user_assignable_roles",
)


def new_user(**fields: Any) -> dict:
    """A user row with Moodle's defaults; ``fields`` override them."""
    now = int(time.time())
    user = {
        "id": 0,
        "username": "",
        "auth": "manual",
        "confirmed": 1,
        "mnethostid": 1,
        "deleted": 0,
        "suspended": 0,
        "firstname": "",
        "lastname": "",
        "middlename": "",
        "alternatename": "",
        "firstnamephonetic": "",
        "lastnamephonetic": "",
        "email": "",
        "idnumber": "",
        "institution": "",
        "department": "",
        "phone1": "",
        "phone2": "",
        "address": "",
        "city": "",
        "country": "",
        "lang": "en",
        "theme": "",
        "timezone": "99",
        "calendartype": "gregorian",
        "description": "",
        "descriptionformat": 1,
        "mailformat": 1,
        "maildisplay": 2,
        "interests": "",
        "password": "",
        "firstaccess": 0,
        "lastaccess": 0,
        "timecreated": now,
        "timemodified": now,
        "customfields": {},
        "preferences": {},
    }
    user.update(fields)
    return user


class SimState:
    """In-memory Moodle. Hold ``lock`` around every read-modify-write."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.users: dict[int, dict] = {}
        self.tokens: dict[str, dict] = {}
        self.cohorts: dict[int, dict] = {}
        self.cohort_members: dict[int, list[int]] = {}
        self.courses: dict[int, dict] = {}
        self.enrol_instances: dict[int, dict] = {}
        self.enrolments: list[dict] = []
        # course_completions: {"courseid", "userid", "timecompleted"}
        self.completions: list[dict] = []
        self.user_capabilities: dict[int, list[str]] = {}
        self.user_assignable_roles: dict[int, list[int]] = {}
        self.profile_fields: list[dict] = [
            {"shortname": "studentid", "name": "Student ID", "datatype": "text"},
            {"shortname": "programme", "name": "Programme", "datatype": "text"},
        ]
        self.next_ids: dict[str, int] = {"user": 3, "cohort": 1, "course": 2, "enrol": 1}
        self.users[GUEST_ID] = new_user(
            id=GUEST_ID,
            username="guest",
            auth="manual",
            firstname="Guest user",
            lastname=" ",
            email="root@localhost",
        )
        self.users[ADMIN_ID] = new_user(
            id=ADMIN_ID, username="admin", firstname="Admin", lastname="User", email="admin@example.org"
        )
        self.courses[1] = {
            "id": 1,
            "fullname": "Simulated Moodle",
            "shortname": "site",
            "categoryid": 0,
            "idnumber": "",
            "summary": "",
            "format": "site",
            "visible": 1,
            "startdate": 0,
            "enddate": 0,
            "timecreated": int(time.time()),
            "timemodified": int(time.time()),
        }

    def take_id(self, kind: str) -> int:
        value = self.next_ids[kind]
        self.next_ids[kind] = value + 1
        return value

    # Persistence --------------------------------------------------------------------------------

    def to_json(self) -> dict:
        with self.lock:
            data = {name: getattr(self, name) for name in _COLLECTIONS}
            data.update(
                enrolments=self.enrolments,
                completions=self.completions,
                profile_fields=self.profile_fields,
                next_ids=self.next_ids,
            )
            return json.loads(json.dumps(data))

    def load_json(self, data: dict) -> None:
        with self.lock:
            for name in (*_COLLECTIONS, "enrolments", "completions", "profile_fields", "next_ids"):
                if name not in data:
                    continue
                value = data[name]
                if name in _INT_KEYED:
                    value = {int(k): v for k, v in value.items()}
                setattr(self, name, value)

    def save(self, path: str) -> None:
        """Write atomically (temp file + rename) so a crash never leaves half a file."""
        payload = json.dumps(self.to_json(), ensure_ascii=False, indent=1)
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".simstate-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(payload)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str) -> SimState:
        state = cls()
        with open(path, encoding="utf-8") as fh:
            state.load_json(json.load(fh))
        return state

"""Asking Moodle now about one person, for the record page: who Moodle has behind the record.

It spends the site's call budget (through the throttled client), so the page offers it to operators only;
a failure is an answer in words, never an exception for the page to handle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis

from .models import SyncRecord
from .moodle.errors import SeamError
from .run.connect import NoActiveToken, client_for


@dataclass
class LookUp:
    users: list[dict[str, Any]] | None = None
    asked: str = ""
    error: str = ""
    notes: list[str] = field(default_factory=list)


def look_up(record: SyncRecord) -> LookUp:
    """The Moodle user(s) behind the record: by its linked id, else by idnumber, then username."""
    result = LookUp()
    try:
        with client_for(record.site) as client:
            if record.moodle_id:
                result.asked = f"Moodle user id {record.moodle_id}"
                result.users = client.get_users_by_field("id", [record.moodle_id])
            else:
                result.asked = f"idnumber {record.external_id}"
                result.users = client.get_users_by_field("idnumber", [record.external_id])
                if not result.users and record.username:
                    result.asked += f", then username {record.username}"
                    result.users = client.get_users_by_field("username", [record.username])
    except NoActiveToken:
        result.users = None
        result.error = (
            f"Moodle was not asked: {record.site.name} has no active service token. "
            "An administrator adds or promotes one on the site page."
        )
    except SeamError as exc:
        result.users = None
        result.error = f"Moodle did not answer the look-up: {exc}"
    except redis.RedisError:
        result.users = None
        result.error = (
            "Moodle was not asked: Redis, which paces the calls, did not answer; try again shortly."
        )
    return result

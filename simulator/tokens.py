"""Tokens: creating them and checking a call's token the way webservice/lib.php does.

The order of the checks matters to a client because each one hides the next: an unknown token
is ``invalidtoken``; an expired one is ``accessexception`` once (and then deleted, so
``invalidtoken`` afterwards); then the IP restriction, maintenance mode, the user's state, the
protocol capability, the function's existence and finally the service's function list.
"""

from __future__ import annotations

import ipaddress
import time

from simulator.errors import (
    access_exception,
    invalid_parameter,
    invalid_token,
    missing_record,
    moodle_exception,
)
from simulator.functions import FUNCTIONS, all_capabilities
from simulator.state import SimState, new_user

_FUNCTION_NOT_ALLOWED = (
    "Access to the function {name}() is not allowed. There could be multiple reasons for this: "
    "1. The service linked to the user token does not contain the function. "
    "2. The service is user-restricted and the user is not listed. "
    "3. The service is IP-restricted and the user IP is not listed. "
    "4. The service is time-restricted and the time has expired. "
    "5. The token is time-restricted and the time has expired. "
    "6. The service requires a specific capability which the user does not have. "
    "7. The function is called with username/password (no user token is sent) and the user has not "
    "been granted the capability. "
    "8. The web service is disabled."
)


def create_token(
    state: SimState,
    token: str,
    *,
    username: str = "wsuser",
    functions: list[str] | None = None,
    capabilities: list[str] | None = None,
    valid_until: float | None = None,
    iprestriction: str | None = None,
    service_enabled: bool = True,
    authorised: bool = True,
) -> dict:
    """Create (or replace) a token; its user is created if missing and given ``capabilities``."""
    with state.lock:
        user = next((u for u in state.users.values() if u["username"] == username and not u["deleted"]), None)
        if user is None:
            userid = state.take_id("user")
            user = new_user(
                id=userid,
                username=username,
                firstname="Web service",
                lastname="User",
                email=f"{username}@example.org",
                auth="manual",
            )
            state.users[userid] = user
        state.user_capabilities[user["id"]] = list(
            all_capabilities() if capabilities is None else capabilities
        )
        state.tokens[token] = {
            "userid": user["id"],
            "functions": None if functions is None else list(functions),
            "valid_until": valid_until,
            "iprestriction": iprestriction,
            "service_enabled": service_enabled,
            "authorised": authorised,
            "created": int(time.time()),
        }
        return {"token": token, "userid": user["id"]}


def ip_allowed(remote_addr: str, restriction: str) -> bool:
    """address_in_subnet(): exact IPs, CIDR blocks and "192.168." style prefixes."""
    for entry in (e.strip() for e in restriction.split(",")):
        if not entry:
            continue
        if entry.endswith("."):
            if remote_addr.startswith(entry):
                return True
            continue
        try:
            if ipaddress.ip_address(remote_addr) in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def authenticate(
    state: SimState, token: str | None, remote_addr: str, maintenance: str, debug: bool | str
) -> tuple[dict, dict]:
    """Return (token row, user) or raise what Moodle raises. Deletes an expired token."""
    row = state.tokens.get(token or "")
    if row is None:
        raise invalid_token()
    if row.get("valid_until") and row["valid_until"] < time.time():
        del state.tokens[token]
        raise access_exception("Invalid token - token expired - check validuntil time for the token")
    if row.get("iprestriction") and not ip_allowed(remote_addr, row["iprestriction"]):
        raise access_exception(
            f"Invalid service - IP:{remote_addr} is not supported - check this allowed user"
        )
    user = state.users.get(row["userid"])
    if user is None or user["deleted"]:
        raise missing_record("user", "SELECT * FROM {user} WHERE id = ? AND deleted = 0", debug)
    if maintenance == "admin":
        raise moodle_exception(
            "sitemaintenance", "The site is undergoing maintenance and is currently not available"
        )
    if user["suspended"]:
        raise moodle_exception(
            "wsaccessusersuspended", f"Refused web service access for suspended username: {user['username']}"
        )
    if user["auth"] == "nologin":
        raise moodle_exception(
            "wsaccessusernologin",
            f"Refused web service access for nologin authentication username: {user['username']}",
        )
    if "webservice/rest:use" not in state.user_capabilities.get(user["id"], []):
        raise access_exception(
            "You are not allowed to use the rest protocol (missing capability: webservice/rest:use)"
        )
    return row, user


def check_function(row: dict, function: str | None, debug: bool | str) -> None:
    """The function must be named (else invalidparameter), exist (else a missing record) and be in the
    token's service."""
    if not function:
        raise invalid_parameter("Missing function name")
    if function not in FUNCTIONS:
        raise missing_record("external_functions", "SELECT * FROM {external_functions} WHERE name = ?", debug)
    if not row.get("service_enabled", True):
        raise access_exception("Web service is not available (it doesn't exist or might be disabled)")
    if not row.get("authorised", True):
        raise access_exception(
            "The user is not allowed for this service. First you need to allow this user on the "
            "Authorised users page."
        )
    if row.get("functions") is not None and function not in row["functions"]:
        raise access_exception(_FUNCTION_NOT_ALLOWED.format(name=function))

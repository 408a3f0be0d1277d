"""The simulator as the local_integrationhub plugin: signed events posted to a hub after each change."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulator.server import serve
from simulator.tests.conftest import Site

SECRET = "s3cr\u00e9t & more"
SIGN_SCRIPT = Path(__file__).resolve().parents[2] / "moodle" / "tests_support" / "sign_event.php"


class Receiver:
    """A tiny hub: records every request and answers with the next of ``statuses`` (then 202)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.gate: threading.Event | None = None  # when set, each request waits for it
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if receiver.gate is not None:
                    receiver.gate.wait(10)
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status = receiver.statuses.pop(0) if receiver.statuses else 202
                answer = b'{"ok": true}' if status < 300 else b"<h1>Server error</h1>"
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hooks/moodle/demo/"
        # A short poll interval, so that shutdown() at the end of a test does not wait half a second.
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def bodies(self) -> list[dict]:
        return [json.loads(r["body"]) for r in self.requests]

    def events(self) -> list[str]:
        return [b["event"] for b in self.bodies()]

    def stop(self) -> None:
        if self.gate is not None:
            self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hub = Receiver()
    yield hub
    hub.stop()


def drain(site: Site) -> dict:
    """Wait until the site has nothing queued or in flight; the hook's state afterwards."""
    state = site.control("GET", "/hook?wait=1&timeout=10")
    assert state["drained"] is True and state["pending"] == 0
    return state


def hooked(make_site: Callable[..., Site], receiver: Receiver, **options: Any) -> Site:
    site = make_site()
    site.control(
        "POST", "/hook", {"url": receiver.url, "secret": SECRET, "retry_delays": [0.01, 0.01], **options}
    )
    return site


def make_user(site: Site, username: str = "ann", **fields: Any) -> dict:
    data = {
        "username": username,
        "email": f"{username}@example.org",
        "idnumber": f"S-{username}",
        "firstname": username.title(),
        "lastname": "Test",
        **fields,
    }
    return site.control("POST", "/users", data)


def make_course(site: Site, shortname: str = "BIO101", **fields: Any) -> dict:
    return site.control(
        "POST", "/courses", {"shortname": shortname, "idnumber": f"{shortname}-2026", **fields}
    )


def event_id(site_identifier: str, event: str, userid: int, courseid: int | None, when: int) -> str:
    key = f"{site_identifier}|{event}|{userid}|{'' if courseid is None else courseid}|{when}"
    return hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()


def check_signed(request: dict, secret: str = SECRET) -> None:
    headers = request["headers"]
    timestamp = headers["X-Hub-Timestamp"]
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + request["body"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Hub-Signature-256"], "sha256=" + mac)
    assert abs(time.time() - int(timestamp)) < 60
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Hub-Event-Id"] == json.loads(request["body"])["id"]


# Configuration -----------------------------------------------------------------------------------


def test_nothing_is_sent_while_the_hook_is_not_configured(plain: Site, receiver: Receiver) -> None:
    user = make_user(plain)
    make_course(plain)
    plain.control("PATCH", f"/users/{user['id']}", {"city": "Gdańsk"})
    plain.control("POST", "/enrolments", {"course": "BIO101", "userid": user["id"]})
    plain.call("core_user_update_users", users=[{"id": user["id"], "city": "Kraków"}])
    state = drain(plain)
    assert state["url"] is None and state["secret_set"] is False and state["deliveries"] == []
    assert receiver.requests == []


def test_hook_settings_never_show_the_secret(plain: Site, receiver: Receiver) -> None:
    answer = plain.client.post("/_sim/hook", json={"url": receiver.url, "secret": SECRET})
    assert answer.status_code == 200 and SECRET not in answer.text
    shown = plain.control("GET", "/hook")
    assert shown["url"] == receiver.url and shown["secret_set"] is True
    assert shown["web_service_events"] is True and shown["retry_delays"] == [0.5, 1.0]
    assert shown["wwwroot"] == "http://moodle.test" and shown["siteidentifier"].endswith("moodle.test")
    off = plain.control("DELETE", "/hook")
    assert off["url"] is None and off["secret_set"] is False
    for bad in ({"url": receiver.url}, {"secret": "x"}, {"url": "ftp://x", "secret": "x"}, {"url": 5}):
        assert plain.client.post("/_sim/hook", json=bad).status_code == 400
    assert (
        plain.client.post("/_sim/hook", json={"url": receiver.url, "secret": "x", "nope": 1}).status_code
        == 400
    )


# Control API changes -------------------------------------------------------------------------------


def test_user_updated_body_headers_and_signature(make_site: Callable[..., Site], receiver: Receiver) -> None:
    site = hooked(make_site, receiver)
    user = make_user(site, "ann", email="ann/ż@example.org")  # slash and non-ASCII stay unescaped
    before = int(time.time())
    site.control("PATCH", f"/users/{user['id']}", {"city": "Gdańsk"})
    state = drain(site)
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request["path"] == "/hooks/moodle/demo/"
    check_signed(request)
    body = json.loads(request["body"])
    assert before <= body["time"] <= int(time.time())
    expected = {
        "id": event_id(state["siteidentifier"], "user_updated", user["id"], None, body["time"]),
        "event": "user_updated",
        "time": body["time"],
        "site": "http://moodle.test",
        "user": {"id": user["id"], "idnumber": "S-ann", "username": "ann", "email": "ann/ż@example.org"},
        "course": None,
    }
    assert request["body"] == json.dumps(expected, separators=(",", ":"), ensure_ascii=False).encode()
    [delivery] = state["deliveries"]
    assert delivery["event"] == "user_updated" and delivery["id"] == expected["id"]
    assert delivery["delivered"] is True and delivery["status"] == 202 and delivery["attempts"] == 1
    assert delivery["error"] is None and delivery["time"] >= before


def test_suspend_fires_only_when_it_changes_something(
    make_site: Callable[..., Site], receiver: Receiver
) -> None:
    site = hooked(make_site, receiver)
    user = make_user(site)
    site.control("POST", f"/users/{user['id']}/suspend")
    drain(site)
    site.control("POST", f"/users/{user['id']}/suspend")  # already suspended: no change
    drain(site)
    site.control("POST", f"/users/{user['id']}/unsuspend")
    drain(site)
    assert receiver.events() == ["user_updated", "user_updated"]
    site.control("POST", "/users", {"username": "new"})  # user_created: not observed by the plugin
    assert drain(site)["deliveries"][-1]["event"] == "user_updated" and len(receiver.requests) == 2


def test_user_deleted_carries_the_values_from_before_deletion(
    make_site: Callable[..., Site], receiver: Receiver
) -> None:
    site = hooked(make_site, receiver)
    user = make_user(site, "bo")
    course = make_course(site)
    site.control("POST", "/enrolments", {"course": "BIO101", "userid": user["id"]})
    drain(site)
    receiver.requests.clear()
    deleted = site.control("DELETE", f"/users/{user['id']}")
    assert deleted["username"] != "bo"  # scrambled in the table
    drain(site)
    # delete_user() unenrols first (the task runs once the user is gone: nothing to read), then user_deleted.
    gone, removed = receiver.bodies()
    assert gone["event"] == "user_enrolment_deleted"
    assert gone["user"] == {"id": user["id"], "idnumber": None, "username": None, "email": None}
    assert gone["course"] == {"id": course["id"], "shortname": "BIO101", "idnumber": "BIO101-2026"}
    assert gone["enrolment"] is None
    assert removed["event"] == "user_deleted" and removed["course"] is None
    assert removed["user"] == {
        "id": user["id"],
        "idnumber": "S-bo",
        "username": "bo",
        "email": "bo@example.org",
    }
    assert list(removed) == ["id", "event", "time", "site", "user", "course"]
    site.control("DELETE", f"/users/{user['id']}")  # already deleted: no change
    site.control("PATCH", f"/users/{user['id']}", {"city": "X"})  # a deleted user: no user_updated
    drain(site)
    assert len(receiver.requests) == 2


def test_enrolments_by_hand(make_site: Callable[..., Site], receiver: Receiver) -> None:
    site = hooked(make_site, receiver)
    user = make_user(site)
    course = make_course(site)
    made = site.control(
        "POST", "/enrolments", {"course": "BIO101", "userid": user["id"], "timestart": 1767225600}
    )
    assert made["change"] == "created" and made["enrolment"]["roles"] == [5]
    drain(site)
    suspended = site.control("POST", "/enrolments", {"course": "BIO101", "userid": user["id"], "status": 1})
    assert suspended["change"] == "updated" and suspended["enrolment"]["status"] == 1
    drain(site)
    same = site.control("POST", "/enrolments", {"course": "BIO101", "userid": user["id"], "status": 1})
    teacher = site.control("POST", "/enrolments", {"course": "BIO101", "userid": user["id"], "roleid": 3})
    assert same["change"] == teacher["change"] == "unchanged" and teacher["enrolment"]["roles"] == [3, 5]
    drain(site)
    assert site.control("DELETE", f"/enrolments?course=BIO101&userid={user['id']}")["deleted"] is True
    drain(site)
    assert site.control("DELETE", f"/enrolments?course=BIO101&userid={user['id']}")["deleted"] is False
    drain(site)

    created, updated, deleted = receiver.bodies()
    assert [created["event"], updated["event"], deleted["event"]] == [
        "user_enrolment_created",
        "user_enrolment_updated",
        "user_enrolment_deleted",
    ]
    assert list(created) == ["id", "event", "time", "site", "user", "course", "enrolment"]
    assert created["course"] == {"id": course["id"], "shortname": "BIO101", "idnumber": "BIO101-2026"}
    assert created["enrolment"] == {"status": 0, "timestart": 1767225600, "timeend": 0, "roles": ["student"]}
    assert updated["enrolment"] == {"status": 1, "timestart": 1767225600, "timeend": 0, "roles": ["student"]}
    assert deleted["enrolment"] is None
    assert created["id"] == event_id(
        site.control("GET", "/hook")["siteidentifier"],
        "user_enrolment_created",
        user["id"],
        course["id"],
        created["time"],
    )
    for request in receiver.requests:
        check_signed(request)


def test_enrolment_and_completion_routes_refuse_bad_input(plain: Site) -> None:
    user = make_user(plain)
    make_course(plain)
    plain.control("POST", "/courses", {"shortname": "ORIENT", "manual": False})
    gone = make_user(plain, "gone")
    plain.control("DELETE", f"/users/{gone['id']}")
    cases = [
        ("POST", "/enrolments", {"course": "NOPE", "userid": user["id"]}, 404),
        ("POST", "/enrolments", {"course": "BIO101", "userid": 999}, 404),
        ("POST", "/enrolments", {"course": "BIO101", "userid": gone["id"]}, 409),
        ("POST", "/enrolments", {"course": "ORIENT", "userid": user["id"]}, 409),
        ("POST", "/enrolments", {"course": "BIO101", "userid": user["id"], "status": 2}, 400),
        ("POST", "/enrolments", {"course": "BIO101", "userid": user["id"], "roleid": 99}, 400),
        ("POST", "/enrolments", {"userid": user["id"]}, 400),
        ("DELETE", "/enrolments?course=BIO101", None, 400),
        ("DELETE", "/enrolments?course=NOPE&userid=3", None, 404),
        ("POST", "/completions", {"course": "BIO101"}, 400),
        ("POST", "/completions", {"course": "BIO101", "userid": gone["id"]}, 409),
    ]
    for method, path, body, status in cases:
        answer = plain.client.request(method, f"/_sim{path}", json=body)
        assert answer.status_code == status, (method, path, body, answer.text)


def test_course_completed_once(make_site: Callable[..., Site], receiver: Receiver) -> None:
    site = hooked(make_site, receiver)
    user = make_user(site)
    course = make_course(site)
    done = site.control(
        "POST", "/completions", {"course": "BIO101", "userid": user["id"], "timecompleted": 1767225500}
    )
    assert done == {
        "completion": {"course": "BIO101", "userid": user["id"], "timecompleted": 1767225500},
        "change": "created",
    }
    again = site.control("POST", "/completions", {"course": "BIO101", "userid": user["id"]})
    assert again["change"] == "unchanged"
    drain(site)
    [body] = receiver.bodies()
    assert list(body) == ["id", "event", "time", "site", "user", "course", "completion"]
    assert body["event"] == "course_completed" and body["completion"] == {"timecompleted": 1767225500}
    assert body["course"]["id"] == course["id"]
    assert site.app.state.completions == [
        {"courseid": course["id"], "userid": user["id"], "timecompleted": 1767225500}
    ]


# Web-service calls -----------------------------------------------------------------------------------


def test_web_service_changes_fire_events(make_site: Callable[..., Site], receiver: Receiver) -> None:
    site = hooked(make_site, receiver)
    ann, bo = make_user(site, "ann"), make_user(site, "bo")
    course = make_course(site)
    drain(site)
    answer = site.call(
        "core_user_update_users",
        users=[{"id": ann["id"], "city": "Kraków"}, {"id": bo["id"], "email": "not an email"}],
    )
    assert [w["warningcode"] for w in answer["warnings"]] == ["useremailinvalid"]
    drain(site)
    assert [(b["event"], b["user"]["id"]) for b in receiver.bodies()] == [("user_updated", ann["id"])]

    receiver.requests.clear()
    enrol = {"roleid": 5, "userid": bo["id"], "courseid": course["id"]}
    assert site.call("enrol_manual_enrol_users", enrolments=[enrol]) is None
    drain(site)
    site.call("enrol_manual_enrol_users", enrolments=[{**enrol, "roleid": 3}])  # a second role: no event
    drain(site)
    site.call("enrol_manual_enrol_users", enrolments=[{**enrol, "suspend": 1}])
    drain(site)
    site.call("enrol_manual_unenrol_users", enrolments=[{"userid": bo["id"], "courseid": course["id"]}])
    drain(site)
    site.call("enrol_manual_unenrol_users", enrolments=[{"userid": bo["id"], "courseid": course["id"]}])
    site.call("core_user_delete_users", userids=[ann["id"]])
    # A call that fails changes nothing and fires nothing.
    assert site.call("core_user_delete_users", userids=[999])["errorcode"] == "invalidrecordunknown"
    drain(site)
    bodies = receiver.bodies()
    assert [b["event"] for b in bodies] == [
        "user_enrolment_created",
        "user_enrolment_updated",
        "user_enrolment_deleted",
        "user_deleted",
    ]
    assert bodies[0]["enrolment"] == {"status": 0, "timestart": 0, "timeend": 0, "roles": ["student"]}
    assert bodies[1]["enrolment"] == {
        "status": 1,
        "timestart": 0,
        "timeend": 0,
        "roles": ["editingteacher", "student"],
    }
    assert bodies[2]["enrolment"] is None
    assert bodies[3]["user"] == {
        "id": ann["id"],
        "idnumber": "S-ann",
        "username": "ann",
        "email": "ann@example.org",
    }
    for request in receiver.requests:
        check_signed(request)
    assert all(d["delivered"] for d in site.control("GET", "/hook")["deliveries"])


def test_web_service_events_can_be_switched_off(make_site: Callable[..., Site], receiver: Receiver) -> None:
    site = hooked(make_site, receiver, web_service_events=False)
    assert site.control("GET", "/hook")["web_service_events"] is False
    user = make_user(site)
    course = make_course(site)
    site.call("core_user_update_users", users=[{"id": user["id"], "city": "Kraków"}])
    site.call(
        "enrol_manual_enrol_users", enrolments=[{"roleid": 5, "userid": user["id"], "courseid": course["id"]}]
    )
    drain(site)
    assert receiver.requests == []
    site.control("PATCH", f"/users/{user['id']}", {"city": "Gdańsk"})  # the control API still fires
    drain(site)
    assert receiver.events() == ["user_updated"]


# Delivery --------------------------------------------------------------------------------------------


def test_delivery_happens_after_the_request_never_inside_it(
    make_site: Callable[..., Site], receiver: Receiver
) -> None:
    site = hooked(make_site, receiver)
    user = make_user(site)
    receiver.gate = threading.Event()  # the hub holds every request until the gate opens
    site.control("PATCH", f"/users/{user['id']}", {"city": "Gdańsk"})  # returns while the hub still holds
    held = site.control("GET", "/hook?wait=1&timeout=0")
    assert held["drained"] is False and held["pending"] == 1 and held["deliveries"] == []
    receiver.gate.set()
    assert site.app.hook.wait(10) is True
    assert receiver.events() == ["user_updated"]


def test_a_failing_hub_is_retried_then_the_failure_recorded(
    make_site: Callable[..., Site], receiver: Receiver
) -> None:
    site = hooked(make_site, receiver)
    user = make_user(site)
    receiver.statuses = [500, 500, 500]
    site.control("PATCH", f"/users/{user['id']}", {"city": "Gdańsk"})
    [failed] = drain(site)["deliveries"]
    assert len(receiver.requests) == 3
    assert len({r["headers"]["X-Hub-Event-Id"] for r in receiver.requests}) == 1  # the same event each time
    for request in receiver.requests:
        check_signed(request)
    assert failed["delivered"] is False and failed["status"] == 500 and failed["attempts"] == 3
    assert failed["error"] == "HTTP 500" and "Server error" in failed["response"]

    receiver.requests.clear()
    receiver.statuses = [503]
    site.control("PATCH", f"/users/{user['id']}", {"city": "Kraków"})
    recovered = drain(site)["deliveries"][-1]
    assert recovered["delivered"] is True and recovered["status"] == 202 and recovered["attempts"] == 2
    assert len(receiver.requests) == 2


def test_an_unreachable_hub_is_recorded(make_site: Callable[..., Site]) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    site = make_site()
    site.control("POST", "/hook", {"url": f"http://127.0.0.1:{port}/", "secret": "k", "retry_delays": [0]})
    user = make_user(site)
    site.control("PATCH", f"/users/{user['id']}", {"city": "Gdańsk"})
    [failed] = drain(site)["deliveries"]
    assert failed["delivered"] is False and failed["status"] is None and failed["attempts"] == 2
    assert failed["error"].startswith("ConnectError")


def test_turning_the_hook_off_drops_what_is_queued(
    make_site: Callable[..., Site], receiver: Receiver
) -> None:
    site = hooked(make_site, receiver)
    user = make_user(site)
    receiver.gate = threading.Event()
    site.control("PATCH", f"/users/{user['id']}", {"city": "A"})
    site.control("PATCH", f"/users/{user['id']}", {"city": "B"})
    site.control("DELETE", "/hook")
    receiver.gate.set()
    drain(site)
    assert len(receiver.requests) <= 1  # the first may already be on its way; the second is never sent


def test_over_http_with_the_threaded_server(make_site: Callable[..., Site], receiver: Receiver) -> None:
    site = make_site()
    with serve(site.app) as server, httpx.Client(base_url=server.url) as client:
        client.post("/_sim/hook", json={"url": receiver.url, "secret": SECRET}).raise_for_status()
        user = client.post("/_sim/users", json={"username": "cy", "email": "cy@example.org"}).json()
        client.patch(f"/_sim/users/{user['id']}", json={"city": "Gdańsk"}).raise_for_status()
        state = client.get("/_sim/hook", params={"wait": 1}).json()
    assert state["drained"] is True and state["deliveries"][0]["delivered"] is True
    [body] = receiver.bodies()
    assert body["site"] == server.url and body["user"]["username"] == "cy"
    check_signed(receiver.requests[0])


def test_body_and_signature_match_the_php_plugin(make_site: Callable[..., Site], receiver: Receiver) -> None:
    """The same inputs through the plugin's own build_payload/encode/sign give the same bytes."""
    php = shutil.which("php")
    if php is None:
        pytest.skip("php-cli is not installed")
    site = hooked(make_site, receiver, wwwroot="https://moodle.example.org/sub", siteidentifier="abc123host")
    user = make_user(site, "dz", idnumber='S/1 \u2028 \u00e9\u65e5 "q" \\', email="d\u017a@example.org")
    course = make_course(site, "CHEM/101")
    site.control("POST", "/enrolments", {"course": "CHEM/101", "userid": user["id"], "roleid": 3})
    drain(site)  # the task reads the site when it runs: let it run before the user is deleted
    site.control("POST", "/completions", {"course": "CHEM/101", "userid": user["id"]})
    drain(site)
    site.control("DELETE", f"/users/{user['id']}")
    drain(site)
    assert len(receiver.requests) == 4
    for request in receiver.requests:
        body = json.loads(request["body"])
        data = {"eventname": body["event"], "userid": user["id"], "courseid": None, "time": body["time"]}
        if body["course"]:
            data["courseid"] = course["id"]
        if body["event"] == "user_deleted":
            data.update(body["user"])
        php_input = {
            "data": data,
            "siteidentifier": "abc123host",
            "wwwroot": "https://moodle.example.org/sub",
            "user": body["user"],
            "course": body["course"],
            "enrolment": body.get("enrolment"),
            "completion": body.get("completion"),
            "timestamp": int(request["headers"]["X-Hub-Timestamp"]),
            "secret": SECRET,
        }
        result = subprocess.run(
            [php, str(SIGN_SCRIPT)],
            input=json.dumps(php_input),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        out = json.loads(result.stdout)
        assert request["body"] == out["body"].encode("utf-8"), body["event"]
        assert request["headers"]["X-Hub-Signature-256"] == out["signature"]
        assert request["headers"]["X-Hub-Event-Id"] == out["id"]
    assert b"\\u2028" in receiver.requests[0]["body"] and b"S/1" in receiver.requests[0]["body"]

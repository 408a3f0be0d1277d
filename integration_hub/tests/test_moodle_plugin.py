"""The Moodle plugin in moodle/: PHP syntax, Moodle file headers, external observers, and the signature.

The PHP checks need php-cli. Without it they are skipped, except under CI (the CI variable set),
where a missing php-cli is a failure.
"""

import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

MOODLE_DIR = Path(__file__).resolve().parents[2] / "moodle"
PLUGIN_DIR = MOODLE_DIR / "local_integrationhub"
SIGN_SCRIPT = MOODLE_DIR / "tests_support" / "sign_event.php"
PHP_FILES = sorted(MOODLE_DIR.rglob("*.php"))

GPL_HEADER = """<?php
// This file is part of Moodle - https://moodle.org/
//
// Moodle is free software: you can redistribute it and/or modify
// it under the terms of the GNU General Public License as published by
// the Free Software Foundation, either version 3 of the License, or
// (at your option) any later version.
//
// Moodle is distributed in the hope that it will be useful,
// but WITHOUT ANY WARRANTY; without even the implied warranty of
// MERCHANTABILITY or FITNESS FOR A PARTICULAR PURPOSE.  See the
// GNU General Public License for more details.
//
// You should have received a copy of the GNU General Public License
// along with Moodle.  If not, see <https://www.gnu.org/licenses/>.
"""

OBSERVED_EVENTS = {
    "user_updated",
    "user_deleted",
    "user_enrolment_created",
    "user_enrolment_updated",
    "user_enrolment_deleted",
    "course_completed",
}


def _rel(path: Path) -> str:
    return str(path.relative_to(MOODLE_DIR))


@pytest.fixture(scope="module")
def php() -> str:
    found = shutil.which("php")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("php-cli must be installed to check the Moodle plugin (apt-get install php-cli)")
    pytest.skip("php-cli is not installed; the Moodle plugin's PHP is not checked")


def _run_php(php: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([php, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False)


def test_the_plugin_has_its_files():
    expected = {
        "version.php",
        "settings.php",
        "db/events.php",
        "classes/observer.php",
        "classes/task/deliver_event.php",
        "classes/privacy/provider.php",
        "lang/en/local_integrationhub.php",
        "README.md",
    }
    missing = sorted(name for name in expected if not (PLUGIN_DIR / name).is_file())
    assert not missing, f"missing from moodle/local_integrationhub: {missing}"


@pytest.mark.parametrize("path", PHP_FILES, ids=_rel)
def test_php_file_has_no_syntax_error(php, path):
    result = _run_php(php, "-l", str(path))
    assert result.returncode == 0, f"{_rel(path)}: {result.stdout}{result.stderr}"


@pytest.mark.parametrize("path", PHP_FILES, ids=_rel)
def test_php_file_has_the_moodle_header(path):
    text = path.read_text(encoding="utf-8")
    assert text.startswith(GPL_HEADER), f"{_rel(path)} does not start with Moodle's GPL header"
    assert re.search(r"^ \* @package\s+local_integrationhub$", text, re.MULTILINE), (
        f"{_rel(path)} does not name @package local_integrationhub"
    )
    assert re.search(r"^ \* @copyright\s+\S", text, re.MULTILINE), f"{_rel(path)} has no @copyright"
    assert re.search(r"^ \* @license\s+\S.*GPL v3 or later$", text, re.MULTILINE), (
        f"{_rel(path)} has no GPL @license"
    )


def _observer_blocks() -> list[str]:
    text = (PLUGIN_DIR / "db" / "events.php").read_text(encoding="utf-8")
    body = text.split("$observers = [", 1)[1]
    return re.findall(r"\[\s*('eventname'.*?)\]", body, re.DOTALL)


def test_every_observer_is_external():
    blocks = _observer_blocks()
    events = set()
    for block in blocks:
        name = re.search(r"'eventname'\s*=>\s*'\\core\\event\\(\w+)'", block)
        assert name, f"observer without a core event name: {block!r}"
        events.add(name.group(1))
        assert re.search(r"'internal'\s*=>\s*false\s*,?", block), (
            f"observer of {name.group(1)} is not marked 'internal' => false"
        )
        callback = re.search(r"'callback'\s*=>\s*'\\local_integrationhub\\observer::(\w+)'", block)
        assert callback, f"observer of {name.group(1)} has no callback in local_integrationhub"
    assert events == OBSERVED_EVENTS


def test_version_php_declares_the_component():
    text = (PLUGIN_DIR / "version.php").read_text(encoding="utf-8")
    assert "$plugin->component = 'local_integrationhub';" in text
    assert re.search(r"\$plugin->version\s*=\s*20\d{8};", text)
    assert re.search(r"\$plugin->requires\s*=\s*2024100700;", text)
    assert "MATURITY_STABLE" in text


def _sign(php: str, request: dict) -> dict:
    result = _run_php(php, str(SIGN_SCRIPT), stdin=json.dumps(request))
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def _event_id(site: str, event: str, userid: int, courseid: int | None, time: int) -> str:
    key = f"{site}|{event}|{userid}|{'' if courseid is None else courseid}|{time}"
    return hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()


def _python_signature(secret: str, timestamp: int, body: str) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body.encode(), hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def test_signature_and_body_of_a_deleted_user_match_python(php):
    secret = "s3cr\u00e9t with spaces & symbols"
    request = {
        "data": {
            "eventname": "user_deleted",
            "userid": 5,
            "courseid": None,
            "time": 1767225600,
            "idnumber": "S-1",
            "username": "ann",
            "email": "ann@example.org",
        },
        "siteidentifier": "abc123moodle.example.org",
        "wwwroot": "https://moodle.example.org",
        "user": {"id": 5, "idnumber": "S-1", "username": "ann", "email": "ann@example.org"},
        "timestamp": 1767225700,
        "secret": secret,
    }
    out = _sign(php, request)

    event_id = _event_id("abc123moodle.example.org", "user_deleted", 5, None, 1767225600)
    expected_body = {
        "id": event_id,
        "event": "user_deleted",
        "time": 1767225600,
        "site": "https://moodle.example.org",
        "user": {"id": 5, "idnumber": "S-1", "username": "ann", "email": "ann@example.org"},
        "course": None,
    }
    assert out["id"] == event_id
    assert out["body"] == json.dumps(expected_body, separators=(",", ":"), ensure_ascii=False)
    assert out["signature"] == _python_signature(secret, 1767225700, out["body"])
    assert out["headers"] == [
        "Content-Type: application/json",
        f"X-Hub-Event-Id: {event_id}",
        "X-Hub-Timestamp: 1767225700",
        f"X-Hub-Signature-256: {out['signature']}",
    ]


def test_enrolment_and_completion_bodies(php):
    base = {
        "siteidentifier": "site",
        "wwwroot": "https://moodle.example.org",
        "user": {"id": 9, "idnumber": "S-9", "username": "bo", "email": "b\u00f6@example.org"},
        "course": {"id": 7, "shortname": "BIO101", "idnumber": "BIO101-2026"},
        "timestamp": 1767225800,
        "secret": "k",
    }
    course = {"id": 7, "shortname": "BIO101", "idnumber": "BIO101-2026"}

    enrolled = _sign(
        php,
        base
        | {
            "data": {"eventname": "user_enrolment_created", "userid": 9, "courseid": 7, "time": 1767225600},
            "enrolment": {"status": 0, "timestart": 1767225600, "timeend": 0, "roles": ["student"]},
        },
    )
    body = json.loads(enrolled["body"])
    assert body["course"] == course
    assert body["user"]["email"] == "b\u00f6@example.org"
    assert body["enrolment"] == {"status": 0, "timestart": 1767225600, "timeend": 0, "roles": ["student"]}
    assert "completion" not in body
    assert enrolled["id"] == _event_id("site", "user_enrolment_created", 9, 7, 1767225600)
    assert enrolled["signature"] == _python_signature("k", 1767225800, enrolled["body"])

    gone = {"eventname": "user_enrolment_deleted", "userid": 9, "courseid": 7, "time": 1767225601}
    unenrolled = _sign(php, base | {"data": gone})
    assert json.loads(unenrolled["body"])["enrolment"] is None

    completed = _sign(
        php,
        base
        | {
            "data": {"eventname": "course_completed", "userid": 9, "courseid": 7, "time": 1767225602},
            "completion": {"timecompleted": 1767225500},
        },
    )
    body = json.loads(completed["body"])
    assert list(body) == ["id", "event", "time", "site", "user", "course", "completion"]
    assert body["completion"] == {"timecompleted": 1767225500}

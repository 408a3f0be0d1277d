"""State persistence: a JSON file written atomically and read back whole."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from simulator.app import SimConfig, create_app
from simulator.catalogue import COURSES as CATALOGUE
from simulator.seed import seed
from simulator.state import SimState
from simulator.tests.conftest import TOKEN, flatten
from simulator.tokens import create_token


def test_round_trip_keeps_everything(tmp_path: Path) -> None:
    state = SimState()
    create_token(state, "abc", functions=["core_webservice_get_site_info"], iprestriction="10.0.0.0/8")
    made = seed(state, 20)
    path = tmp_path / "state.json"
    state.save(str(path))
    loaded = SimState.load(str(path))
    assert loaded.to_json() == state.to_json()
    assert set(loaded.users) == set(state.users) and all(isinstance(k, int) for k in loaded.users)
    assert loaded.cohort_members[made["cohorts"][0]] == state.cohort_members[made["cohorts"][0]]
    assert not list(tmp_path.glob(".simstate-*"))  # no temp file left behind


def test_app_saves_after_writes_and_reloads(tmp_path: Path) -> None:
    path = str(tmp_path / "site.json")
    app = create_app(SimConfig(), state_file=path)
    create_token(app.state, TOKEN)
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://moodle.test") as client:
        body = [("wstoken", TOKEN), ("wsfunction", "core_user_create_users"), ("moodlewsrestformat", "json")]
        body += flatten(
            {
                "users": [
                    {
                        "username": "zoë",
                        "firstname": "Zoë",
                        "lastname": "Ñ",
                        "email": "z@x.org",
                        "createpassword": 1,
                    }
                ]
            }
        )
        response = client.post("/webservice/rest/server.php", data=dict(body))
        assert response.json()["errorcode"] == "invalidparameter"  # "zoë" is not a valid username
        body[3] = ("users[0][username]", "zoe")
        assert client.post("/webservice/rest/server.php", data=dict(body)).json()[0]["username"] == "zoe"
    saved = json.loads(Path(path).read_text(encoding="utf-8"))
    assert any(u["firstname"] == "Zoë" for u in saved["users"].values())
    again = create_app(SimConfig(), state_file=path)
    assert TOKEN in again.state.tokens
    assert any(u["username"] == "zoe" for u in again.state.users.values())


def test_seed_makes_multilingual_users_cohorts_and_courses() -> None:
    state = SimState()
    made = seed(state, 40)
    users = [state.users[i] for i in made["users"]]
    assert len(users) == 40 and len({u["username"] for u in users}) == 40
    assert any(not u["firstname"].isascii() for u in users)
    assert all(u["username"].isascii() and u["username"] == u["username"].lower() for u in users)
    assert len({u["lang"] for u in users}) == 8
    assert len(made["cohorts"]) == 3 and len(made["courses"]) == 4
    manual = {i["courseid"] for i in state.enrol_instances.values() if i["enrol"] == "manual"}
    assert len(manual - set(made["catalogue"])) == 3  # ORIENT has no manual enrolment (wsnoinstance)


def test_seed_adds_the_catalogue_with_manual_enrolment_and_few_enrolments() -> None:
    state = SimState()
    made = seed(state, 300)
    courses = [state.courses[i] for i in made["catalogue"]]
    assert [c["shortname"] for c in courses] == [s for s, _ in CATALOGUE]
    manual = {i["courseid"] for i in state.enrol_instances.values() if i["enrol"] == "manual"}
    assert set(made["catalogue"]) <= manual
    strays = [e for e in state.enrolments if e["courseid"] in made["catalogue"]]
    assert 0 < len(strays) <= 5 and all(e["roles"] == [5] for e in strays)
    kept = [state.courses[i]["shortname"] for i in made["courses"]]
    assert kept == ["MATH101", "GER201", "HIST110", "ORIENT"]

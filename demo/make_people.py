"""Make demo/people.csv: the HR export of the demo university.

    python -m demo.make_people        # from the project root (it imports the simulator)

The simulator started by `make demo --seed-users 300` already holds 300 users. Most of them are in
this file too, with the same employee id (= Moodle idnumber), so the first bootstrap links them instead
of creating them, and updates the few whose details changed. The rest are new people. On purpose, a
handful of rows are conflicts (a login or email already taken in Moodle by someone else) or bad rows
(an invalid email, a missing surname, a login with a space, a duplicated employee id), so the pages
have something to show. Each person also has a `programme` (from their department) and `courses`: three
to five of that programme's courses (simulator/catalogue.py), separated by ";". The few people the seed
already enrolled in a programme course (seed.STRAY_ENROLMENTS) do not list that course, so the first
reconciliation finds it. Deterministic: the same file every time.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

from simulator.app import SimConfig, create_app
from simulator.catalogue import shortnames
from simulator.seed import NAMES, STRAY_ENROLMENTS, ascii_fold, seed

SEEDED_IN_MOODLE = 300
IN_SOURCE_FROM_MOODLE = 260  # the other 40 Moodle users are not in HR: orphans for reconciliation
NEW_PEOPLE = 1740
COLUMNS = ["employee_id", "login", "first_name", "last_name", "email", "department", "institution",
           "city", "country", "language", "programme", "courses"]  # fmt: skip
DEPARTMENTS = ["Engineering", "Medicine", "Humanities", "Économie", "Sciences", "Law", "Nursing", "Library"]
CITIES = {"es": "Sevilla", "de": "München", "pl": "Kraków", "vi": "Hà Nội", "ar": "Amman", "ja": "Kyōto",
          "fr": "Besançon", "tr": "İzmir"}  # fmt: skip
COUNTRIES = {"es": "ES", "de": "DE", "pl": "PL", "vi": "VN", "ar": "JO", "ja": "JP", "fr": "FR", "tr": "TR"}
PROGRAMME_OF_DEPARTMENT = {
    "Engineering": "Mechanical Engineering",
    "Medicine": "Medicine and Health Sciences",
    "Nursing": "Medicine and Health Sciences",
    "Humanities": "Languages and Literature",
    "Library": "Languages and Literature",
    "Économie": "Economics",
    "Sciences": "Chemistry and Life Sciences",
    "Law": "Law",
}


def _login(first: str, last: str, taken: set[str]) -> str:
    base = "".join(
        c for c in ascii_fold(f"{first}.{last}").lower().replace(" ", "") if c.isalnum() or c in ".-"
    )
    login, n = base, 1
    while login in taken:
        n += 1
        login = f"{base}{n}"
    taken.add(login)
    return login


def moodle_users() -> list[dict]:
    """The users the demo simulator is seeded with (the same call, so the same people)."""
    app = create_app(SimConfig(), control=False)
    created = seed(app.state, SEEDED_IN_MOODLE)["users"]
    return [app.state.users[user_id] for user_id in created]


def rows() -> list[dict[str, str]]:
    rng = random.Random(2026)  # noqa: S311 - demo data
    existing = moodle_users()
    taken = {u["username"] for u in existing}
    out: list[dict[str, str]] = []
    for index, user in enumerate(existing[:IN_SOURCE_FROM_MOODLE]):
        row = {
            "employee_id": user["idnumber"],
            "login": user["username"],
            "first_name": user["firstname"],
            "last_name": user["lastname"],
            "email": user["email"],
            "department": user["department"],
            "institution": user["institution"],
            "city": user["city"],
            "country": user["country"],
            "language": user["lang"],
        }
        if index % 25 == 0:
            row["department"] = rng.choice(DEPARTMENTS)  # HR moved them: an update
        out.append(row)
    langs = list(NAMES)
    for index in range(NEW_PEOPLE):
        lang = langs[index % len(langs)]
        first, last = rng.choice(NAMES[lang][0]), rng.choice(NAMES[lang][1])
        login = _login(first, last, taken)
        out.append({
            "employee_id": f"E{200000 + index}",
            "login": login,
            "first_name": first,
            "last_name": last,
            "email": f"{login}@staff.example.edu",
            "department": rng.choice(DEPARTMENTS),
            "institution": "Universidad Simulada",
            "city": CITIES[lang],
            "country": COUNTRIES[lang],
            "language": lang,
        })  # fmt: skip
    # Conflicts: a new person whose login, or whose email (in other case), a Moodle user already has.
    for offset, user in enumerate(existing[IN_SOURCE_FROM_MOODLE : IN_SOURCE_FROM_MOODLE + 3]):
        out[IN_SOURCE_FROM_MOODLE + 10 + offset]["login"] = user["username"]
    for offset, user in enumerate(existing[IN_SOURCE_FROM_MOODLE + 3 : IN_SOURCE_FROM_MOODLE + 5]):
        out[IN_SOURCE_FROM_MOODLE + 20 + offset]["email"] = user["email"].upper()
    # Bad rows.
    out[400]["email"] = "amelie.girard@@example.edu"
    out[500]["last_name"] = ""
    out[600]["login"] = "jean pierre"
    out.insert(700, dict(out[699], login="duplicate.row", email="duplicate.row@staff.example.edu"))
    _add_memberships(out, existing)
    return out


def _add_memberships(out: list[dict[str, str]], existing: list[dict]) -> None:
    """Programme and courses for every row, drawn per person (the other columns' draws stay as they were)."""
    stray = {existing[i]["idnumber"]: course for i, course in STRAY_ENROLMENTS if i < len(existing)}
    for row in out:
        programme = PROGRAMME_OF_DEPARTMENT[row["department"]]
        choices = [c for c in shortnames(programme) if c != stray.get(row["employee_id"])]
        rng = random.Random(f"{row['employee_id']}/{row['login']}")  # noqa: S311 - demo data
        picked = set(rng.sample(choices, rng.randint(3, min(5, len(choices)))))
        row["programme"] = programme
        row["courses"] = ";".join(c for c in choices if c in picked)


def main() -> None:
    path = Path(__file__).with_name("people.csv")
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows())
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

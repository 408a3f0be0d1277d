"""Realistic demo data: users with names from several languages, cohorts, courses, enrolments.

Names carry accents and non-Latin transliterations on purpose, so encoding bugs show up in the
demo rather than in production.
"""

from __future__ import annotations

import random
import unicodedata

from simulator.catalogue import COURSES as CATALOGUE
from simulator.state import SimState, new_user
from simulator.ws_course import add_course

NAMES = {
    "es": (
        ["José", "María", "Lucía", "Álvaro", "Íñigo", "Begoña", "Martín", "Sofía"],
        ["García", "Núñez", "Peña", "Ibáñez", "Muñoz", "Sáenz", "Fernández", "Ortiz"],
    ),
    "de": (
        ["Jürgen", "Jörg", "Käthe", "Lukas", "Anneliese", "Björn", "Hannah", "Günther"],
        ["Müller", "Schröder", "Weiß", "Groß", "Köhler", "Schäfer", "Brandt", "Vogel"],
    ),
    "pl": (
        ["Łukasz", "Małgorzata", "Agnieszka", "Wojciech", "Zofia", "Paweł", "Jędrzej", "Katarzyna"],
        ["Wiśniewski", "Kowalczyk", "Zieliński", "Wójcik", "Łęcka", "Nowak", "Dąbrowska", "Szymański"],
    ),
    "vi": (
        ["Nguyễn Thị", "Trần Văn", "Lê Minh", "Phạm Thu", "Hoàng Anh", "Đặng Quốc", "Vũ Thanh", "Bùi Lan"],
        ["Hương", "Dũng", "Tuấn", "Thảo", "Đức", "Phương", "Hải", "Ngọc"],
    ),
    "ar": (
        ["Mohammed", "Fatima", "Abdulrahman", "Aisha", "Yousef", "Layla", "Omar", "Nour"],
        ["Al-Hashimi", "El-Sayed", "Haddad", "Abu Bakr", "Al-Farsi", "Khalil", "Mansour", "Nasser"],
    ),
    "ja": (
        ["Hiroshi", "Yūko", "Takumi", "Sakura", "Kenta", "Ayaka", "Shōta", "Yui"],
        ["Satō", "Suzuki", "Takahashi", "Itō", "Watanabe", "Yamamoto", "Nakamura", "Kobayashi"],
    ),
    "fr": (
        ["Amélie", "Benoît", "Céline", "Hélène", "François", "Gaëlle", "Jérôme", "Noël"],
        ["Lefèvre", "Dubois", "Girard", "Bézier", "Moreau", "Rousseau", "Faure", "Château"],
    ),
    "tr": (
        ["Ömer", "Şule", "Çağla", "Gökhan", "İlkay", "Yağmur", "Barış", "Ayşe"],  # noqa: RUF001 - Turkish dotless i
        ["Yılmaz", "Öztürk", "Çelik", "Şahin", "Doğan", "Aydın", "Kılıç", "Güneş"],  # noqa: RUF001
    ),
}
_LANG = {"es": "es", "de": "de", "pl": "pl", "vi": "vi", "ar": "ar", "ja": "ja", "fr": "fr", "tr": "tr"}
_CITIES = {
    "es": "Sevilla",
    "de": "München",
    "pl": "Kraków",
    "vi": "Hà Nội",
    "ar": "Amman",
    "ja": "Kyōto",
    "fr": "Besançon",
    "tr": "İzmir",
}
_COUNTRIES = {"es": "ES", "de": "DE", "pl": "PL", "vi": "VN", "ar": "JO", "ja": "JP", "fr": "FR", "tr": "TR"}
_DEPARTMENTS = ["Engineering", "Medicine", "Humanities", "Économie", "Sciences", "Law"]
_SPECIAL = str.maketrans({"ł": "l", "Ł": "L", "ß": "ss", "đ": "d", "Đ": "D", "ı": "i", "ø": "o"})  # noqa: RUF001


def ascii_fold(text: str) -> str:
    """Strip accents for usernames and emails (which Moodle keeps to a-z0-9 . - _ @)."""
    text = unicodedata.normalize("NFKD", text.translate(_SPECIAL))
    return "".join(c for c in text if not unicodedata.combining(c)).encode("ascii", "ignore").decode()


def _slug(text: str) -> str:
    return "".join(
        c for c in ascii_fold(text).lower().replace(" ", "").replace("'", "") if c.isalnum() or c == "-"
    )


# A handful of seeded people (by position among the seeded users) already in a course of their own
# programme that their row in demo/people.csv does not list (as if they had dropped it), so the demo's
# first reconciliation has something to show.
STRAY_ENROLMENTS = ((3, "MECH205"), (41, "PHAR220"), (97, "CHEM101"), (158, "NURS150"), (233, "ECO315"))


def _course_row(shortname: str, fullname: str) -> dict:
    return {
        "fullname": fullname,
        "shortname": shortname,
        "categoryid": 1,
        "idnumber": shortname.lower(),
        "summary": "",
        "format": "topics",
        "visible": 1,
        "startdate": 0,
        "enddate": 0,
        "timecreated": 0,
        "timemodified": 0,
    }


def _student(instance: dict, userid: int) -> dict:
    return {
        "instanceid": instance["id"],
        "courseid": instance["courseid"],
        "userid": userid,
        "roles": [5],
        "status": 0,
        "timestart": 0,
        "timeend": 0,
        "timecreated": 0,
    }


def _seed_catalogue(state: SimState, created: list[int]) -> list[int]:
    """The 30 programme courses, each with manual enrolment; only the stray enrolments are made."""
    ids = {}
    for shortname, fullname in CATALOGUE:
        ids[shortname] = add_course(state, _course_row(shortname, fullname))["id"]
    instances = {i["courseid"]: i for i in state.enrol_instances.values() if i["enrol"] == "manual"}
    for index, shortname in STRAY_ENROLMENTS:
        if index < len(created):
            state.enrolments.append(_student(instances[ids[shortname]], created[index]))
    return list(ids.values())


def seed(state: SimState, users: int, *, rng_seed: int = 7) -> dict:
    """Add ``users`` users, three cohorts, four courses (one without manual enrolment) with some
    enrolments, and the catalogue's 30 programme courses (manual enrolment, only the stray enrolments)."""
    rng = random.Random(rng_seed)  # noqa: S311 - demo data
    langs = list(NAMES)
    created: list[int] = []
    with state.lock:
        taken = {u["username"] for u in state.users.values()}
        for index in range(users):
            lang = langs[index % len(langs)]
            first, last = rng.choice(NAMES[lang][0]), rng.choice(NAMES[lang][1])
            base = f"{_slug(first)}.{_slug(last)}"
            username, n = base, 1
            while username in taken:
                n += 1
                username = f"{base}{n}"
            taken.add(username)
            userid = state.take_id("user")
            state.users[userid] = new_user(
                id=userid,
                username=username,
                firstname=first,
                lastname=last,
                email=f"{username}@example.edu",
                idnumber=f"S{100000 + userid}",
                lang=_LANG[lang],
                city=_CITIES[lang],
                country=_COUNTRIES[lang],
                department=rng.choice(_DEPARTMENTS),
                institution="Universidad Simulada",
                customfields={"studentid": f"S{100000 + userid}"},
            )
            created.append(userid)
        cohorts = []
        for name, idnumber in (
            ("Erstsemester 2026", "cohort-2026"),
            ("Étudiants en échange", "exchange"),
            ("Staff — Łódź campus", "staff-lodz"),
        ):
            cid = state.take_id("cohort")
            state.cohorts[cid] = {
                "id": cid,
                "name": name,
                "idnumber": idnumber,
                "description": "",
                "descriptionformat": 1,
                "visible": 1,
                "theme": "",
                "contextid": 1,
                "timecreated": 0,
            }
            state.cohort_members[cid] = [u for u in created if rng.random() < 0.3]
            cohorts.append(cid)
        courses = []
        for shortname, fullname, manual in (
            ("MATH101", "Mathématiques I", True),
            ("GER201", "Deutsche Literatur: Überblick", True),
            ("HIST110", "Historia de España", True),
            ("ORIENT", "Orientation (self enrolment only)", False),
        ):
            course = add_course(state, _course_row(shortname, fullname), manual=manual)
            courses.append(course["id"])
            instance = next(
                (i for i in state.enrol_instances.values() if i["courseid"] == course["id"]), None
            )
            if instance is None:
                continue
            for userid in created:
                if rng.random() < 0.25:
                    state.enrolments.append(_student(instance, userid))
        catalogue = _seed_catalogue(state, created)
    return {"users": created, "cohorts": cohorts, "courses": courses, "catalogue": catalogue}

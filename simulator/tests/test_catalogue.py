"""The demo catalogue (simulator/catalogue.py) and the programme/courses columns of demo/people.csv."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from simulator.catalogue import COURSES, PROGRAMMES, shortnames

PEOPLE = Path(__file__).resolve().parents[2] / "demo" / "people.csv"


def test_catalogue_has_30_courses_in_5_or_6_programmes() -> None:
    assert 5 <= len(PROGRAMMES) <= 6
    assert all(5 <= len(courses) <= 6 for courses in PROGRAMMES.values())
    names = [shortname for shortname, _ in COURSES]
    assert len(names) == 30 == len(set(names))
    assert all(re.fullmatch(r"[A-Z]+[0-9]+", n) for n in names)
    assert not {"MATH101", "GER201", "HIST110", "ORIENT"} & set(names)
    assert any(not fullname.isascii() for _, fullname in COURSES)


def test_every_person_has_a_programme_and_3_to_5_of_its_courses() -> None:
    with PEOPLE.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) > 2000 - 10
    for row in rows:
        courses = row["courses"].split(";")
        assert 3 <= len(courses) <= 5 and len(set(courses)) == len(courses)
        assert set(courses) <= set(shortnames(row["programme"])), row["employee_id"]
